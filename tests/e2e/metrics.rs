//! The server's own `/metrics` against real Prometheus tools: Debian's
//! `promtool check metrics` finds nothing wrong with the exposition, and a
//! real `prometheus` on loopback scrapes it (`up == 1`) and stores the
//! families an operator alerts on.

use anyhow::{anyhow, bail, ensure, Context, Result};
use metrolog_e2e::{eventually, Api, Proc, Server};
use serde_json::{json, Value};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

const PACKAGE: &str = "the Debian package prometheus (apt-get install prometheus)";

fn tool(name: &str) -> Result<()> {
    Command::new(name)
        .arg("--version")
        .output()
        .map(|_| ())
        .with_context(|| format!("{name} is missing: install {PACKAGE}"))
}

/// The value of the sample `line_start` (name and labels) in `text`.
fn sample(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(line_start) && l[line_start.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn promtool_accepts_metrics_and_prometheus_scrapes_them() -> Result<()> {
    tool("promtool")?;
    tool("prometheus")?;
    let mut server = Server::start(&[])?;
    let api = Api::new(&server.url, &server.token("viewer")?);
    // Some traffic, so the counters are not all zero: the local agent's
    // batches, and a failed API call.
    let (status, _) = api.get_with("/api/v1/hosts", Some("mlg_wrong"))?;
    ensure!(status == 401);
    let text = eventually(Duration::from_secs(30), || {
        let t = reqwest::blocking::get(format!("{}/metrics", server.url))?.text()?;
        Ok(sample(&t, "metrolog_ingest_batches_total")
            .filter(|n| *n > 0.0)
            .map(|_| t))
    })
    .map_err(|e| anyhow!("no batch counted: {e}\n{}", server.proc.log()))?;

    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context(PACKAGE)?;
    check
        .stdin
        .take()
        .ok_or_else(|| anyhow!("no stdin"))?
        .write_all(text.as_bytes())?;
    let out = check.wait_with_output()?;
    ensure!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The families docs/deployment.md ("Health") names.
    for (line, positive) in [
        ("metrolog_ingest_batches_total", true),
        ("metrolog_ingest_buckets_total", true),
        ("metrolog_storage_bytes{file=\"database\"}", true),
        ("metrolog_storage_bytes{file=\"logs-index\"}", true),
        ("metrolog_ingest_batches_in_flight_limit", true),
        ("metrolog_ingest_batches_in_flight", false),
        ("metrolog_outbox_backlog", false),
        ("metrolog_outbox_dead_letters", false),
        ("metrolog_auth_failures_total", true),
        ("metrolog_logs_index_lag_records", false),
        ("metrolog_alarm_evaluation_last_seconds", false),
        ("metrolog_alarm_evaluation_latency_seconds_count", false),
        (
            "metrolog_alarm_evaluation_latency_seconds_bucket{le=\"+Inf\"}",
            false,
        ),
        (
            "metrolog_records_dropped_total{kind=\"log\",source=\"syslog\",reason=\"queue_full\"}",
            false,
        ),
    ] {
        let v = sample(&text, line).ok_or_else(|| anyhow!("no {line} in:\n{text}"))?;
        ensure!(!positive || v > 0.0, "{line} is {v}");
    }

    // A real Prometheus scrapes it every second.
    let dir = tempfile::tempdir()?;
    let target = server.url.trim_start_matches("http://");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: metrolog\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut cmd = Command::new("prometheus");
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"));
    let mut prom = Proc::spawn("prometheus", cmd).context(PACKAGE)?;
    prom.wait_for_line(
        "Server is ready to receive web requests",
        Duration::from_secs(60),
    )?;
    let query = |q: &str| -> Result<Value> {
        let v: Value = reqwest::blocking::Client::new()
            .get(format!("http://127.0.0.1:{port}/api/v1/query"))
            .query(&[("query", q)])
            .send()?
            .json()?;
        if v["status"] != json!("success") {
            bail!("{q}: {v}");
        }
        Ok(v["data"]["result"].clone())
    };
    let up = eventually(Duration::from_secs(30), || {
        let r = query("up{job=\"metrolog\"}")?;
        Ok(r[0]["value"][1]
            .as_str()
            .filter(|v| *v == "1")
            .map(String::from))
    })
    .map_err(|e| {
        anyhow!(
            "Prometheus never scraped the server: {e}\n{}\n{}",
            prom.log(),
            server.proc.log()
        )
    })?;
    assert_eq!(up, "1");
    let db = query("metrolog_storage_bytes{file=\"database\"}")?;
    let bytes: f64 = db[0]["value"][1].as_str().unwrap_or("0").parse()?;
    ensure!(
        bytes > 0.0,
        "the database size as Prometheus stored it: {db}"
    );
    let batches = query("metrolog_ingest_batches_total")?;
    ensure!(
        batches[0]["value"][1].as_str().is_some_and(|v| v != "0"),
        "{batches}"
    );
    drop(prom);
    server.proc.terminate();
    let _ = server.proc.wait_exit(Duration::from_secs(20));
    Ok(())
}
