//! Prometheus exporters scraped by the real agent: Debian's
//! prometheus-node-exporter and prometheus-process-exporter started on
//! loopback ports of their own (never as services), a target over its
//! `sample_limit` and one that never answers, all beside each other.
//!
//! The node exporter's `node_cpu_seconds_total` becomes per-mode rates that
//! agree with the agent's own CPU collector: both read `/proc/stat`, so the
//! mean over a minute of 10 s buckets must agree within
//! [`CPU_TOLERANCE_PP`] percentage points (the windows differ by up to
//! two seconds: the scrape interval and the sampler's round).

use anyhow::{anyhow, ensure, Result};
use metrolog_e2e::{eventually, start_agent, Api, Proc, Server};
use std::collections::BTreeMap;
use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

const FAST: [&str; 4] = ["--sample-interval", "1s", "--ship-interval", "1s"];
const WAIT: Duration = Duration::from_secs(90);
/// Largest difference allowed between the node exporter's CPU split and the
/// agent's, as a mean over a minute, in percentage points.
const CPU_TOLERANCE_PP: f64 = 4.0;

/// A free loopback TCP port (the exporters take a port, not port 0).
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts a Debian exporter on a loopback port and waits until it answers.
fn exporter(bin: &str, package: &str, args: &[String]) -> Result<(Proc, String)> {
    let path = format!("/usr/bin/{bin}");
    ensure!(
        std::path::Path::new(&path).exists(),
        "{path} is missing: install the Debian package {package}"
    );
    let mut cmd = Command::new(&path);
    cmd.args(args);
    let mut proc = Proc::spawn(bin, cmd)?;
    let addr = args
        .iter()
        .find_map(|a| a.strip_prefix("--web.listen-address="))
        .or_else(|| {
            args.iter()
                .position(|a| a == "-web.listen-address")
                .and_then(|i| args.get(i + 1).map(String::as_str))
        })
        .ok_or_else(|| anyhow!("no listen address in {args:?}"))?;
    let url = format!("http://{addr}/metrics");
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    eventually(Duration::from_secs(30), || {
        Ok(http
            .get(&url)
            .send()
            .ok()
            .filter(|r| r.status().is_success())
            .map(|_| ()))
    })
    .map_err(|e| anyhow!("{bin} does not answer on {url}: {e}\n{}", proc.log()))?;
    Ok((proc, url))
}

/// Every series of the host as `name{labels}` text → labels.
fn series(api: &Api, host: i64) -> Result<Vec<(String, BTreeMap<String, String>)>> {
    let (status, rows) = api.get(&format!("/api/v1/series?host={host}"))?;
    ensure!(status == 200, "series: {status} {rows}");
    Ok(rows
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let labels = r["labels"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect();
            (r["name"].as_str().unwrap_or_default().to_string(), labels)
        })
        .collect())
}

type Labels = BTreeMap<String, String>;
/// Bucket end → value.
type Points = BTreeMap<i64, f64>;

/// Points of every series named `name` on `host` over the last `from`
/// (e.g. "-3m"): labels → (bucket → value).
fn points(api: &Api, host: i64, name: &str, from: &str) -> Result<Vec<(Labels, Points)>> {
    let (status, v) = api.get(&format!(
        "/api/v1/query?host={host}&name={name}&from={from}"
    ))?;
    ensure!(status == 200, "query {name}: {status} {v}");
    Ok(v["series"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let labels = s["labels"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect();
            let pts = s["points"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| Some((p[0].as_i64()?, p[1].as_f64()?)))
                .collect();
            (labels, pts)
        })
        .collect())
}

fn latest(api: &Api, host: i64, name: &str, want: &[(&str, &str)]) -> Result<Option<f64>> {
    Ok(points(api, host, name, "-5m")?
        .into_iter()
        .find(|(l, _)| {
            want.iter()
                .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .and_then(|(_, p)| p.values().last().copied()))
}

#[test]
fn node_and_process_exporters_are_scraped_and_cpu_agrees() -> Result<()> {
    let node_addr = format!("127.0.0.1:{}", free_port()?);
    let (mut node, node_url) = exporter(
        "prometheus-node-exporter",
        "prometheus-node-exporter",
        &[
            format!("--web.listen-address={node_addr}"),
            "--collector.disable-defaults".into(),
            "--collector.cpu".into(),
            "--collector.loadavg".into(),
            "--collector.meminfo".into(),
        ],
    )?;
    let proc_addr = format!("127.0.0.1:{}", free_port()?);
    let (mut process, proc_url) = exporter(
        "prometheus-process-exporter",
        "prometheus-process-exporter",
        &[
            "-web.listen-address".into(),
            proc_addr,
            "-procnames".into(),
            "metrolog-agent".into(),
            "-threads=false".into(),
            "-gather-smaps=false".into(),
        ],
    )?;
    // Accepts connections (the kernel's backlog) and never answers.
    let hanging = TcpListener::bind("127.0.0.1:0")?;
    let hang_url = format!("http://{}/metrics", hanging.local_addr()?);

    let server = Server::start(&["--no-local-agent"])?;
    let api = Api::new(&server.url, &server.token("viewer")?);
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[scrape]]
name = "node"
url = "{node_url}"
interval = "2s"
timeout = "1s"
[scrape.labels]
role = "test"

[[scrape]]
name = "process"
url = "{proc_url}"
interval = "2s"

[[scrape]]
name = "tight"
url = "{node_url}"
interval = "2s"
sample_limit = 10

[[scrape]]
name = "hang"
url = "{hang_url}"
interval = "2s"
timeout = "500ms"
"#
        ),
    )?;
    let config_arg = config.to_string_lossy().to_string();
    let mut args: Vec<&str> = FAST.to_vec();
    args.extend(["--config", config_arg.as_str()]);
    let mut agent = start_agent(
        &server,
        "scraper-1",
        "exporters",
        &dir.path().join("state"),
        &args,
    )?;
    let fail = |e: anyhow::Error, agent: &mut Proc| anyhow!("{e}\nagent:\n{}", agent.log());

    let host = eventually(WAIT, || api.host_id("scraper-1")).map_err(|e| fail(e, &mut agent))?;
    let ncpu = std::fs::read_to_string("/proc/stat")?
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();

    // Every CPU × mode as its own series, with the target's labels.
    eventually(WAIT, || {
        let all = series(&api, host)?;
        let cpu: Vec<_> = all
            .iter()
            .filter(|(n, l)| {
                n == "prom.node_cpu_seconds_total"
                    && l.get("job").map(String::as_str) == Some("node")
            })
            .collect();
        let modes: std::collections::BTreeSet<&str> = cpu
            .iter()
            .filter_map(|(_, l)| l.get("mode").map(String::as_str))
            .collect();
        Ok((cpu.len() >= ncpu * 8
            && ["user", "system", "idle", "iowait"]
                .iter()
                .all(|m| modes.contains(m)))
        .then_some(()))
    })
    .map_err(|e| fail(e, &mut agent))?;
    let all = series(&api, host)?;
    let user0 = all
        .iter()
        .find(|(n, l)| {
            n == "prom.node_cpu_seconds_total"
                && l.get("cpu").map(String::as_str) == Some("0")
                && l.get("mode").map(String::as_str) == Some("user")
        })
        .ok_or_else(|| anyhow!("no cpu 0 user series"))?;
    assert_eq!(
        user0.1.get("role").map(String::as_str),
        Some("test"),
        "{user0:?}"
    );
    assert!(
        all.iter().any(|(n, _)| n == "prom.node_load1"),
        "gauges are kept: {:?}",
        all.iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| n.starts_with("prom."))
            .collect::<Vec<_>>()
    );

    // The process exporter sees the agent itself.
    let procs = eventually(WAIT, || {
        latest(
            &api,
            host,
            "prom.namedprocess_namegroup_num_procs",
            &[("groupname", "metrolog-agent"), ("job", "process")],
        )
    })
    .map_err(|e| fail(e, &mut agent))?;
    assert!(procs >= 1.0, "{procs}");

    // The tight target fails whole on its sample_limit, counted; the hanging
    // one on its timeout; neither gives a prom.* series.
    eventually(WAIT, || {
        let limit = latest(
            &api,
            host,
            "agent.scrape.failures",
            &[("job", "tight"), ("reason", "sample_limit")],
        )?;
        let timeout = latest(
            &api,
            host,
            "agent.scrape.failures",
            &[("job", "hang"), ("reason", "timeout")],
        )?;
        Ok((limit.is_some_and(|n| n >= 2.0) && timeout.is_some_and(|n| n >= 2.0)).then_some(()))
    })
    .map_err(|e| fail(e, &mut agent))?;
    assert_eq!(
        latest(&api, host, "agent.scrape.up", &[("job", "tight")])?,
        Some(0.0)
    );
    assert_eq!(
        latest(&api, host, "agent.scrape.up", &[("job", "node")])?,
        Some(1.0)
    );
    let strays: Vec<_> = series(&api, host)?
        .into_iter()
        .filter(|(n, l)| {
            n.starts_with("prom.")
                && matches!(l.get("job").map(String::as_str), Some("tight" | "hang"))
        })
        .collect();
    assert!(strays.is_empty(), "failed scrapes gave series: {strays:?}");

    // CPU: a minute of buckets where both sides have values.
    let (node_pct, ours) = eventually(Duration::from_secs(150), || {
        let node_rates = points(&api, host, "prom.node_cpu_seconds_total", "-3m")?;
        let mut by_mode: BTreeMap<String, BTreeMap<i64, (f64, usize)>> = BTreeMap::new();
        for (labels, pts) in &node_rates {
            if labels.get("job").map(String::as_str) != Some("node") {
                continue;
            }
            let mode = labels.get("mode").cloned().unwrap_or_default();
            for (ts, v) in pts {
                let e = by_mode
                    .entry(mode.clone())
                    .or_default()
                    .entry(*ts)
                    .or_insert((0.0, 0));
                e.0 += v;
                e.1 += 1;
            }
        }
        // Per bucket, the share of each of our figures, in percent.
        let pct = |modes: &[&str], ts: i64| -> Option<f64> {
            let mut sum = 0.0;
            for m in modes {
                let (v, n) = by_mode.get(*m)?.get(&ts)?;
                if *n != ncpu {
                    return None;
                }
                sum += v;
            }
            Some(100.0 * sum / ncpu as f64)
        };
        let mut ours = BTreeMap::new();
        for name in ["cpu.user_pct", "cpu.system_pct", "cpu.busy_pct"] {
            let p = points(&api, host, name, "-3m")?;
            ours.insert(
                name,
                p.into_iter().next().map(|(_, p)| p).unwrap_or_default(),
            );
        }
        let figures: [(&str, &[&str]); 3] = [
            ("cpu.user_pct", &["user", "nice"]),
            ("cpu.system_pct", &["system", "irq", "softirq"]),
            (
                "cpu.busy_pct",
                &["user", "nice", "system", "irq", "softirq", "steal"],
            ),
        ];
        let mut common: Vec<i64> = ours["cpu.busy_pct"]
            .keys()
            .copied()
            .filter(|ts| {
                figures
                    .iter()
                    .all(|(name, modes)| ours[name].contains_key(ts) && pct(modes, *ts).is_some())
            })
            .collect();
        // The first and last buckets may be partial on one side.
        if common.len() < 8 {
            return Ok(None);
        }
        common.remove(0);
        common.pop();
        let mut node_mean = BTreeMap::new();
        let mut our_mean = BTreeMap::new();
        for (name, modes) in figures {
            let n = common.len() as f64;
            node_mean.insert(
                name,
                common.iter().filter_map(|ts| pct(modes, *ts)).sum::<f64>() / n,
            );
            our_mean.insert(
                name,
                common.iter().map(|ts| ours[name][ts]).sum::<f64>() / n,
            );
        }
        Ok(Some((node_mean, our_mean)))
    })
    .map_err(|e| fail(e, &mut agent))?;
    for (name, theirs) in &node_pct {
        let mine = ours[name];
        assert!(
            (theirs - mine).abs() <= CPU_TOLERANCE_PP,
            "{name}: node exporter says {theirs:.2} %, the agent {mine:.2} % (tolerance {CPU_TOLERANCE_PP} points)"
        );
    }
    eprintln!("cpu over a minute, node exporter vs agent: {node_pct:.2?} vs {ours:.2?}");
    let _ = (node.log(), process.log());
    drop(hanging);
    Ok(())
}
