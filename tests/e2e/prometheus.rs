//! The Prometheus-compatible API against real Prometheus tools: `promtool
//! query` as the client, and a real Prometheus (Debian `prometheus`, 2.42)
//! holding the same samples, both asked the same node-exporter-style
//! expressions over the same range and step.

use anyhow::{anyhow, bail, ensure, Context, Result};
use metrolog_e2e::{run_ok, Proc, Server};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const PACKAGE: &str =
    "the Debian package `prometheus` (apt-get install --no-install-recommends prometheus)";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Fails (never skips) when a tool of the `prometheus` package is missing.
fn need(tool: &str) -> Result<()> {
    Command::new(tool)
        .arg("--version")
        .output()
        .map(|_| ())
        .with_context(|| format!("{tool} is missing: install {PACKAGE}"))
}

const HOSTS: [(&str, &str, f64); 3] = [
    ("web-1", "web", 20.0),
    ("web-2", "web", 35.0),
    ("db-1", "db", 60.0),
];

/// The value of a series in the minute ending at `minute_end`: smooth, so
/// that a 5-minute window that also holds one sample of the minute before
/// (Prometheus 2.x windows are closed) moves it little.
fn value(series: &str, base: f64, minute_end: i64) -> f64 {
    let x = minute_end as f64 / 60.0;
    let wave = (x / 40.0).sin();
    match series {
        "cpu_busy_pct" => base + 10.0 * wave,
        "load_1m" => (base / 10.0 + wave).max(0.0),
        "mem_used_bytes" => (base * 1e8 + 5e7 * wave).round(),
        "net_rx_bytes_per_s" => (base * 1000.0 + 400.0 * wave).round(),
        _ => 0.0,
    }
}

const SERIES: [&str; 4] = [
    "cpu_busy_pct",
    "load_1m",
    "mem_used_bytes",
    "net_rx_bytes_per_s",
];

/// Samples every 10 s over (start, end], constant within each minute (the
/// sample at t belongs to the minute ending at or after t).
fn samples(series: &str, base: f64, start: i64, end: i64) -> Vec<(i64, f64)> {
    ((start + 10)..=end)
        .step_by(10)
        .map(|t| (t, value(series, base, (t + 59).div_euclid(60) * 60)))
        .collect()
}

fn dotted(series: &str) -> String {
    series.replacen('_', ".", 1)
}

/// Imports the samples into Metrolog, one request per host.
fn import(server: &Server, admin: &str, start: i64, end: i64) -> Result<()> {
    let api = metrolog_e2e::Api::new(&server.url, admin);
    for (host, group, base) in HOSTS {
        let series: Vec<Value> = SERIES
            .iter()
            .map(|s| {
                let points: Vec<Value> = samples(s, base, start, end)
                    .into_iter()
                    .map(|(t, v)| json!([t, v]))
                    .collect();
                let mut j = json!({"name": dotted(s), "points": points});
                if *s == "net_rx_bytes_per_s" {
                    j["labels"] = json!({"iface": "eth0"});
                }
                j
            })
            .collect();
        let (status, body) = api.post_json(
            "/api/v1/import",
            Some(admin),
            &json!({"host": host, "group": group, "series": series}),
        )?;
        ensure!(status == 200, "import {host}: {status} {body}");
    }
    Ok(())
}

/// The same samples as OpenMetrics, plus `net_rx_bytes_total`: the counter
/// whose rate `net_rx_bytes_per_s` is (what Prometheus would have scraped).
fn openmetrics(start: i64, end: i64) -> String {
    let mut out = String::new();
    for s in SERIES {
        for (host, group, base) in HOSTS {
            let iface = if s == "net_rx_bytes_per_s" {
                ",iface=\"eth0\""
            } else {
                ""
            };
            for (t, v) in samples(s, base, start, end) {
                out.push_str(&format!(
                    "{s}{{host=\"{host}\",group=\"{group}\"{iface}}} {v} {t}\n"
                ));
            }
        }
    }
    for (host, group, base) in HOSTS {
        let mut total = 1e9;
        for (t, v) in samples("net_rx_bytes_per_s", base, start, end) {
            total += v * 10.0;
            out.push_str(&format!(
                "net_rx_bytes_total{{host=\"{host}\",group=\"{group}\",iface=\"eth0\"}} {total} {t}\n"
            ));
        }
    }
    out.push_str("# EOF\n");
    out
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A real Prometheus on loopback whose storage holds the backfilled samples.
fn start_prometheus(dir: &Path, start: i64, end: i64) -> Result<(Proc, String)> {
    need("promtool")?;
    need("prometheus")?;
    let om = dir.join("samples.om");
    std::fs::write(&om, openmetrics(start, end))?;
    let data = dir.join("tsdb");
    run_ok(
        Command::new("promtool")
            .args(["tsdb", "create-blocks-from", "openmetrics"])
            .arg(&om)
            .arg(&data),
        PACKAGE,
    )?;
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 1m\n")?;
    let port = free_port()?;
    let mut cmd = Command::new("prometheus");
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", data.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--storage.tsdb.retention.time=30d");
    let mut proc = Proc::spawn("prometheus", cmd)
        .with_context(|| format!("starting prometheus ({PACKAGE})"))?;
    proc.wait_for_line(
        "Server is ready to receive web requests",
        Duration::from_secs(60),
    )?;
    Ok((proc, format!("http://127.0.0.1:{port}")))
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

/// `query_range` answered as series label set (JSON) → [(t, value)].
fn range(
    base: &str,
    token: Option<&str>,
    q: &str,
    start: i64,
    end: i64,
    step: i64,
) -> Result<BTreeMap<String, Vec<(i64, f64)>>> {
    let mut req = http().get(format!("{base}/api/v1/query_range")).query(&[
        ("query", q.to_string()),
        ("start", start.to_string()),
        ("end", end.to_string()),
        ("step", step.to_string()),
    ]);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let body: Value = req.send()?.json()?;
    ensure!(body["status"] == "success", "{base} {q}: {body}");
    let mut out = BTreeMap::new();
    for s in body["data"]["result"]
        .as_array()
        .ok_or_else(|| anyhow!("{body}"))?
    {
        let points = s["values"]
            .as_array()
            .ok_or_else(|| anyhow!("{s}"))?
            .iter()
            .map(|p| {
                let t = p[0].as_f64().unwrap_or(f64::NAN) as i64;
                let v: f64 = p[1].as_str().unwrap_or("NaN").parse().unwrap_or(f64::NAN);
                (t, v)
            })
            .collect();
        out.insert(s["metric"].to_string(), points);
    }
    Ok(out)
}

#[test]
fn promtool_queries_metrolog() -> Result<()> {
    need("promtool")?;
    let server = Server::start(&[])?;
    let admin = server.token("admin")?;
    let viewer = server.token("viewer")?;
    let end = now() / 60 * 60 - 120;
    let start = end - 3600;
    import(&server, &admin, start, end)?;
    // promtool 2.42 has no auth flags: the token goes as the password of
    // basic auth in the URL, as Grafana's data source form sends it.
    let url = format!(
        "{}/prometheus",
        server
            .url
            .replacen("http://", &format!("http://grafana:{viewer}@"), 1)
    );
    let bare = format!("{}/prometheus", server.url);
    let promtool = |args: &[&str]| -> Result<String> {
        let out = run_ok(Command::new("promtool").arg("query").args(args), PACKAGE)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let out = promtool(&[
        "instant",
        &format!("--time={end}"),
        &url,
        "avg by (group) (cpu_busy_pct)",
    ])?;
    let want_web = (value("cpu_busy_pct", 20.0, end) + value("cpu_busy_pct", 35.0, end)) / 2.0;
    ensure!(out.contains("{group=\"web\"} => "), "{out}");
    let web: f64 = out
        .lines()
        .find(|l| l.contains("\"web\""))
        .and_then(|l| l.split("=> ").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no web value in {out}"))?;
    ensure!((web - want_web).abs() < 1e-9, "{web} != {want_web}");
    let out = promtool(&[
        "range",
        &format!("--start={}", end - 600),
        &format!("--end={end}"),
        "--step=1m",
        &url,
        "max(cpu_busy_pct)",
    ])?;
    ensure!(
        out.lines().filter(|l| l.contains(" @[")).count() == 11,
        "{out}"
    );
    let out = promtool(&["series", "--match=cpu_busy_pct{group=\"web\"}", &url])?;
    ensure!(
        out.contains("web-1") && out.contains("web-2") && !out.contains("db-1"),
        "{out}"
    );
    let out = promtool(&["labels", &url, "host"])?;
    ensure!(
        out.lines().map(str::trim).collect::<Vec<_>>() == ["db-1", "web-1", "web-2"],
        "{out}"
    );
    // Without a credential promtool reports the 401.
    let out = Command::new("promtool")
        .args(["query", "instant", &bare, "1+1"])
        .output()
        .with_context(|| format!("running promtool ({PACKAGE})"))?;
    ensure!(
        !out.status.success(),
        "unauthenticated promtool query succeeded"
    );
    Ok(())
}

/// (Metrolog's expression, Prometheus' expression, relative tolerance).
/// Exact cases agree to rounding; 5-minute windows differ by one sample
/// because Prometheus 2.x windows are closed (docs/prometheus.md).
const DASHBOARD: &[(&str, &str, f64)] = &[
    ("cpu_busy_pct", "cpu_busy_pct", 1e-9),
    (
        "avg by (group) (cpu_busy_pct)",
        "avg by (group) (cpu_busy_pct)",
        1e-9,
    ),
    ("max(cpu_busy_pct)", "max(cpu_busy_pct)", 1e-9),
    ("min by (group) (load_1m)", "min by (group) (load_1m)", 1e-9),
    (
        "count by (group) (cpu_busy_pct)",
        "count by (group) (cpu_busy_pct)",
        1e-9,
    ),
    (
        "sum by (group) (mem_used_bytes)",
        "sum by (group) (mem_used_bytes)",
        1e-9,
    ),
    ("topk(2, cpu_busy_pct)", "topk(2, cpu_busy_pct)", 1e-9),
    ("bottomk(1, load_1m)", "bottomk(1, load_1m)", 1e-9),
    ("100 - cpu_busy_pct", "100 - cpu_busy_pct", 1e-9),
    (
        "cpu_busy_pct{group=\"web\"} * 2 + 1",
        "cpu_busy_pct{group=\"web\"} * 2 + 1",
        1e-9,
    ),
    (
        "mem_used_bytes / 1024 / 1024",
        "mem_used_bytes / 1024 / 1024",
        1e-9,
    ),
    ("cpu_busy_pct > 50", "cpu_busy_pct > 50", 1e-9),
    ("cpu_busy_pct > bool 50", "cpu_busy_pct > bool 50", 1e-9),
    (
        "cpu_busy_pct / on(host, group) load_1m",
        "cpu_busy_pct / on(host, group) load_1m",
        1e-9,
    ),
    ("abs(cpu_busy_pct - 40)", "abs(cpu_busy_pct - 40)", 1e-9),
    (
        "clamp_max(cpu_busy_pct, 40)",
        "clamp_max(cpu_busy_pct, 40)",
        1e-9,
    ),
    ("round(load_1m)", "round(load_1m)", 1e-9),
    (
        "sum without (host) (net_rx_bytes_per_s)",
        "sum without (host) (net_rx_bytes_per_s)",
        1e-9,
    ),
    (
        "avg_over_time(cpu_busy_pct[5m])",
        "avg_over_time(cpu_busy_pct[5m])",
        0.01,
    ),
    (
        "max_over_time(load_1m[5m])",
        "max_over_time(load_1m[5m])",
        0.05,
    ),
    (
        "rate(net_rx_bytes_per_s[5m])",
        "rate(net_rx_bytes_total[5m])",
        1e-6,
    ),
    (
        "sum by (group) (rate(net_rx_bytes_per_s[5m]))",
        "sum by (group) (rate(net_rx_bytes_total[5m]))",
        1e-6,
    ),
    (
        "increase(net_rx_bytes_per_s[5m])",
        "increase(net_rx_bytes_total[5m])",
        1e-6,
    ),
];

#[test]
fn answers_equal_a_real_prometheus_on_the_same_samples() -> Result<()> {
    need("prometheus")?;
    let end = now() / 60 * 60 - 120;
    let start = end - 3 * 3600 - 600;
    let dir = tempfile::tempdir()?;
    let (_prom, prom_url) = start_prometheus(dir.path(), start, end)?;
    let server = Server::start(&[])?;
    let admin = server.token("admin")?;
    let viewer = server.token("viewer")?;
    import(&server, &admin, start, end)?;
    let ours = format!("{}/prometheus", server.url);
    let (q0, q1) = (end - 3 * 3600, end);
    let mut failures = Vec::new();
    for (mine, theirs, tol) in DASHBOARD {
        let a = range(&ours, Some(&viewer), mine, q0, q1, 60)?;
        let b = range(&prom_url, None, theirs, q0, q1, 60)?;
        if a.keys().collect::<Vec<_>>() != b.keys().collect::<Vec<_>>() {
            failures.push(format!(
                "{mine}: series {:?} vs Prometheus {:?}",
                a.keys(),
                b.keys()
            ));
            continue;
        }
        ensure!(!a.is_empty(), "{mine}: no series at all");
        for (labels, pa) in &a {
            let pb = &b[labels];
            if pa.len() != pb.len() {
                failures.push(format!(
                    "{mine} {labels}: {} points vs Prometheus {}",
                    pa.len(),
                    pb.len()
                ));
                continue;
            }
            for ((ta, va), (tb, vb)) in pa.iter().zip(pb) {
                let off = (va - vb).abs() > tol * vb.abs().max(1.0);
                if ta != tb || off {
                    failures.push(format!(
                        "{mine} {labels} at {ta}: {va} vs Prometheus {vb} at {tb}"
                    ));
                    break;
                }
            }
        }
    }
    if !failures.is_empty() {
        bail!("{} differences:\n{}", failures.len(), failures.join("\n"));
    }
    Ok(())
}

#[test]
fn unsupported_constructs_answer_bad_data() -> Result<()> {
    let server = Server::start(&[])?;
    let viewer = server.token("viewer")?;
    for q in [
        "label_replace(up, \"a\", \"$1\", \"b\", \"(.*)\")",
        "predict_linear(up[1h], 3600)",
        "deriv(up[5m])",
        "stddev(up)",
        "quantile(0.9, up)",
        "count_values(\"v\", up)",
        "up offset 5m",
        "up @ 100",
        "max_over_time(up[10m:1m])",
        "up and up",
        "up or up",
        "up unless up",
        "up * on(host) group_left up",
        "sort(up)",
        "absent(up)",
        "holt_winters(up[1h], 0.5, 0.5)",
        "sum(",
        "up{host=~\"(\"}",
    ] {
        let resp = http()
            .get(format!("{}/prometheus/api/v1/query", server.url))
            .query(&[("query", q)])
            .bearer_auth(&viewer)
            .send()?;
        let status = resp.status().as_u16();
        let body: Value = resp.json()?;
        ensure!(
            status == 400 && body["errorType"] == "bad_data" && body["status"] == "error",
            "{q}: {status} {body}"
        );
    }
    Ok(())
}
