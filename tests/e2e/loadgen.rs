//! `metrolog-loadgen` against the real server: a small fleet for a short run
//! is acknowledged and read back whole; against a server killed with SIGKILL
//! mid-run and started again, every acknowledged sample is still there;
//! `prefill` makes a stopped server's rings full, its own rows kept.

use anyhow::{ensure, Context, Result};
use metrolog_e2e::{binary, Api, Server};
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn loadgen(server: &Server, args: &[&str], json: &Path) -> Result<Child> {
    let token = server.token("viewer")?;
    let mut cmd = Command::new(binary("metrolog-loadgen"));
    cmd.arg("run")
        .args(["--server", &server.url])
        .args(["--enroll-token", &server.enroll_token])
        .args(["--api-token", &token])
        .args(["--server-pid", &server.proc.child.id().to_string()])
        .arg("--data-dir")
        .arg(&server.data_dir)
        .arg("--json")
        .arg(json)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Ok(cmd.spawn()?)
}

fn finish(child: Child, json: &Path) -> Result<(i32, Value, String)> {
    let out = child.wait_with_output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = std::fs::read(json)
        .with_context(|| format!("no summary written:\n{text}"))
        .and_then(|b| Ok(serde_json::from_slice::<Value>(&b)?))?;
    Ok((out.status.code().unwrap_or(-1), summary, text))
}

#[test]
fn a_small_fleet_is_acknowledged_and_read_back_whole() -> Result<()> {
    let server = Server::start(&["--no-local-agent"])?;
    let dir = tempfile::tempdir()?;
    let json = dir.path().join("summary.json");
    let agents = 12;
    let child = loadgen(
        &server,
        &[
            "--agents",
            &agents.to_string(),
            "--duration",
            "35s",
            "--report-every",
            "5s",
            "--churn",
            "0.1",
            "--heartbeat-every",
            "1",
        ],
        &json,
    )?;
    let (code, s, text) = finish(child, &json)?;
    ensure!(code == 0, "loadgen exited {code}:\n{text}");
    // Every agent shipped its 46 series every 10 s after arriving.
    let batches = s["batches_acked"].as_u64().unwrap_or(0);
    ensure!(batches >= agents as u64 * 2, "{batches} batches:\n{text}");
    ensure!(
        s["samples_accepted"].as_u64() >= Some(batches * 46),
        "samples accepted short of 46 per batch: {s}"
    );
    ensure!(
        s["samples_rejected"] == 0 && s["errors"] == 0,
        "{s}\n{text}"
    );
    ensure!(s["heartbeats"].as_u64() > Some(0), "no heartbeats: {s}");
    ensure!(s["logs_acked"].as_u64() > Some(0), "no logs: {s}");
    ensure!(s["p99_ms"].as_f64() > Some(0.0), "no latency measured: {s}");
    ensure!(s["max_rss_bytes"].as_u64() > Some(0), "no server RSS: {s}");
    ensure!(s["db_bytes"].as_u64() > Some(0), "no database size: {s}");
    let check = &s["check"];
    ensure!(
        check["lost"] == 0 && check["acknowledged"].as_u64() >= Some(agents as u64 * 2),
        "read back: {check}\n{text}"
    );
    Ok(())
}

#[test]
fn a_server_killed_mid_run_loses_nothing_it_acknowledged() -> Result<()> {
    let data = tempfile::tempdir()?;
    let mut server = Server::start_in(data.path(), &["--no-local-agent"])?;
    let dir = tempfile::tempdir()?;
    let json = dir.path().join("summary.json");
    let ledger = dir.path().join("ledger.json");
    let child = loadgen(
        &server,
        &[
            "--agents",
            "20",
            "--duration",
            "30s",
            "--check-agents",
            "0",
            "--ledger",
            &ledger.display().to_string(),
        ],
        &json,
    )?;
    // Killed once batches are being acknowledged.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = reqwest::blocking::get(format!("{}/metrics", server.url))?.text()?;
        let batches = text
            .lines()
            .find_map(|l| l.strip_prefix("metrolog_ingest_batches_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        if batches >= 30 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "no batches committed:\n{}",
            server.proc.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    server.proc.child.kill()?;
    server.proc.child.wait()?;
    let (_, s, text) = finish(child, &json)?;
    ensure!(
        s["errors"].as_u64() > Some(0),
        "the kill went unnoticed: {s}\n{text}"
    );
    drop(server);

    let server = Server::start_in(data.path(), &["--no-local-agent"])?;
    let out = Command::new(binary("metrolog-loadgen"))
        .arg("verify")
        .args(["--server", &server.url])
        .args(["--api-token", &server.token("viewer")?])
        .arg("--ledger")
        .arg(&ledger)
        .args(["--check-agents", "20"])
        .arg("--json")
        .arg(dir.path().join("check.json"))
        .output()?;
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    let check: Value = serde_json::from_slice(&std::fs::read(dir.path().join("check.json"))?)?;
    ensure!(out.status.success(), "verify failed: {said}");
    ensure!(
        check["lost"] == 0 && check["acknowledged"].as_u64() >= Some(20),
        "acknowledged vs lost: {check}"
    );
    ensure!(said.contains("none lost"), "{said}");
    Ok(())
}

/// Known and unknown points of `name` on host `host` over the last `span`
/// seconds at `step`.
fn known_points(api: &Api, host: i64, name: &str, span: i64, step: i64) -> Result<(usize, usize)> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let (status, v) = api.get(&format!(
        "/api/v1/query?host={host}&name={name}&from={}&to={now}&step={step}",
        now - span
    ))?;
    ensure!(status == 200, "query answered {status}: {v}");
    let points: Vec<Value> = v["series"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["points"].as_array().cloned().unwrap_or_default())
        .collect();
    let known = points.iter().filter(|p| p[1].is_f64()).count();
    Ok((known, points.len() - known))
}

#[test]
fn prefill_fills_a_stopped_servers_rings_and_keeps_what_was_shipped() -> Result<()> {
    let data = tempfile::tempdir()?;
    let mut server = Server::start_in(data.path(), &["--no-local-agent"])?;
    let dir = tempfile::tempdir()?;
    let json = dir.path().join("summary.json");
    let ledger = dir.path().join("ledger.json");
    let child = loadgen(
        &server,
        &[
            "--agents",
            "3",
            "--duration",
            "25s",
            "--prefix",
            "pf",
            "--ledger",
            &ledger.display().to_string(),
        ],
        &json,
    )?;
    let (code, s, text) = finish(child, &json)?;
    ensure!(code == 0 && s["check"]["lost"] == 0, "loadgen: {text}");
    let api = Api::new(&server.url, &server.token("viewer")?);
    let host = api.host_id("pf-0")?.context("host pf-0 not enrolled")?;
    // A week at 5 minutes: the shipped seconds are one row at most.
    let (known_week, _) = known_points(&api, host, "cpu.busy_pct", 7 * 86_400, 300)?;
    ensure!(known_week <= 1, "{known_week} rows known before the fill");
    let (shipped, _) = known_points(&api, host, "cpu.busy_pct", 120, 10)?;
    ensure!(shipped >= 2, "only {shipped} rows shipped: {text}");
    server.proc.terminate();
    server.proc.wait_exit(Duration::from_secs(30))?;
    drop(server);

    let out = Command::new(binary("metrolog-loadgen"))
        .arg("prefill")
        .arg("--data-dir")
        .arg(data.path())
        .output()?;
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    ensure!(
        out.status.success(),
        "prefill failed: {said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 3 agents x 46 series, and the server's own about itself.
    let filled: u64 = said
        .strip_prefix("filled ")
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no count of series filled: {said}"))?;
    ensure!(filled >= 138, "{said}");

    let server = Server::start_in(data.path(), &["--no-local-agent"])?;
    let api = Api::new(&server.url, &server.token("viewer")?);
    // Every row of the week is known now but the newest: the one in
    // progress, and those the restart's seconds may have left unknown.
    let (known, unknown) = known_points(&api, host, "cpu.busy_pct", 7 * 86_400, 300)?;
    ensure!(
        known >= 2013 && unknown <= 3,
        "{known} known and {unknown} unknown rows of the week after the fill"
    );
    // The rows the agents shipped are still theirs (the generator's values).
    let out = Command::new(binary("metrolog-loadgen"))
        .arg("verify")
        .args(["--server", &server.url])
        .args(["--api-token", &server.token("viewer")?])
        .arg("--ledger")
        .arg(&ledger)
        .output()?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The same agents again, on the full rings: every acknowledged bucket
    // but each one's first (after the gap, unknown as rrdtool makes it) is
    // read back.
    let json = dir.path().join("resumed.json");
    let child = loadgen(
        &server,
        &[
            "--agents",
            "3",
            "--duration",
            "25s",
            "--prefix",
            "pf",
            "--resumed",
        ],
        &json,
    )?;
    let (code, s, text) = finish(child, &json)?;
    ensure!(
        code == 0 && s["check"]["lost"] == 0 && s["check"]["acknowledged"].as_u64() >= Some(6),
        "the resumed run: {text}"
    );
    ensure!(api.host_id("pf-0")? == Some(host), "pf-0 is a new host");
    Ok(())
}
