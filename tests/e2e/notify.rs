//! Notifications with the real server binary: a delivery that survives a
//! SIGKILL between two attempts and is accepted exactly once after the
//! restart, and a real Alertmanager (Debian `prometheus-alertmanager`)
//! holding the alert as active, then resolved.

use anyhow::{bail, Context, Result};
use metrolog_e2e::receiver::Receiver;
use metrolog_e2e::{eventually, Api, Proc, Server};
use serde_json::{json, Value};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

const RULE: &str = r#"
[[rules]]
name = "latency"
kind = "threshold"
metric = "app.latency_ms"
warning = "~:50"
critical = "~:100"
"#;

/// Imports `values` for `app.latency_ms` of host `web-1`, 10 s apart from `start`.
fn import(api: &Api, start: i64, values: &[f64]) -> Result<()> {
    let points: Vec<Value> = values
        .iter()
        .enumerate()
        .map(|(i, v)| json!([start + i as i64 * 10, v]))
        .collect();
    let (status, body) = api.post_json(
        "/api/v1/import",
        Some(&api.token),
        &json!({"host": "web-1", "series": [{"name": "app.latency_ms", "points": points}]}),
    )?;
    if status != 200 {
        bail!("import answered {status}: {body}");
    }
    Ok(())
}

fn write_config(dir: &Path, text: &str) -> Result<String> {
    let path = dir.join("server.toml");
    std::fs::write(&path, text)?;
    Ok(path.display().to_string())
}

fn deliveries(api: &Api, query: &str) -> Result<Vec<Value>> {
    let (status, v) = api.get(&format!("/api/v1/deliveries{query}"))?;
    if status != 200 {
        bail!("deliveries answered {status}: {v}");
    }
    Ok(v["deliveries"].as_array().cloned().unwrap_or_default())
}

#[test]
fn a_delivery_pending_across_a_kill_9_is_accepted_exactly_once_after_restart() -> Result<()> {
    // The first attempt fails with a Retry-After long enough to kill the
    // server before the second; the second is accepted.
    let hits = Receiver::start_with_retry_after(vec![(503, Some(3))])?;
    let url = format!("{}/hook", hits.url);
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let config = write_config(
        dir.path(),
        &format!(
            "{RULE}\n[[notify]]\nname = \"ops\"\nurl = \"{url}\"\ngroup_wait = \"0s\"\nretry_backoff = \"100ms\"\nretry_backoff_max = \"100ms\"\n"
        ),
    )?;
    let mut server = Server::start_in(&data, &["--config", &config])?;
    let api = Api::new(&server.url, &server.token("admin")?);
    let t = now() - 600;
    import(&api, t, &[20.0, 20.0, 150.0, 150.0, 150.0, 150.0])?;
    let first = hits
        .next(Duration::from_secs(15))
        .context("the first attempt never reached the receiver")?;
    assert_eq!(first.status, 503);
    assert_eq!(first.json()["status"], "firing");
    // Wait until the failed attempt is recorded, then kill -9.
    eventually(Duration::from_secs(10), || {
        let d = deliveries(&api, "")?;
        Ok(
            (d.len() == 1 && d[0]["attempt_count"] == 1 && d[0]["state"] == "pending")
                .then_some(()),
        )
    })?;
    server.proc.child.kill()?;
    server.proc.child.wait()?;
    assert!(
        hits.try_next().is_none(),
        "the second attempt came before the kill: the test did not kill between attempts"
    );

    let server = Server::start_in(&data, &["--config", &config])?;
    let api = Api::new(&server.url, &server.token("admin")?);
    let second = hits
        .next(Duration::from_secs(15))
        .context("the pending delivery was not sent after the restart")?;
    assert_eq!(second.status, 200);
    assert_eq!(
        second.header("idempotency-key"),
        first.header("idempotency-key"),
        "the same delivery, resent"
    );
    assert!(first.header("idempotency-key").is_some());
    assert_eq!(second.json(), first.json(), "the payload was frozen");
    let list = eventually(Duration::from_secs(10), || {
        let d = deliveries(&api, "")?;
        Ok(d.iter().all(|x| x["state"] == "delivered").then_some(d))
    })?;
    assert_eq!(
        list.len(),
        1,
        "the restart built no second notification: {list:?}"
    );
    let statuses: Vec<i64> = list[0]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["status"].as_i64())
        .collect();
    assert_eq!(statuses, [503, 200]);
    // Nothing is pending, so nothing more can come.
    assert!(hits.try_next().is_none(), "a duplicate arrived");
    drop(server);
    Ok(())
}

/// A free loopback port (bound, then released for the child to take).
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn require(path: &str) -> Result<()> {
    if !Path::new(path).exists() {
        bail!(
            "{path} is missing: install the Debian package prometheus-alertmanager \
             (apt-get install --no-install-recommends prometheus-alertmanager)"
        );
    }
    Ok(())
}

/// The alerts `amtool alert query` shows active, as JSON.
fn amtool_alerts(am: &str) -> Result<Vec<Value>> {
    let out = Command::new("/usr/bin/amtool")
        .args(["alert", "query", "--alertmanager.url", am, "-o", "json"])
        .output()
        .context("running amtool (Debian package prometheus-alertmanager)")?;
    if !out.status.success() {
        bail!("amtool failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("amtool printed {:?}", String::from_utf8_lossy(&out.stdout)))?;
    Ok(v.as_array().cloned().unwrap_or_default())
}

#[test]
fn a_real_alertmanager_holds_the_alert_active_then_resolved() -> Result<()> {
    require("/usr/bin/prometheus-alertmanager")?;
    require("/usr/bin/amtool")?;
    let dir = tempfile::tempdir()?;
    let am_config = dir.path().join("alertmanager.yml");
    std::fs::write(
        &am_config,
        "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n",
    )?;
    let port = free_port()?;
    let am_url = format!("http://127.0.0.1:{port}");
    let mut cmd = Command::new("/usr/bin/prometheus-alertmanager");
    cmd.arg(format!("--config.file={}", am_config.display()))
        .arg(format!(
            "--storage.path={}",
            dir.path().join("am").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=");
    let mut am = Proc::spawn("alertmanager", cmd)?;
    let probe = reqwest::blocking::Client::new();
    eventually(Duration::from_secs(20), || {
        if let Some(status) = am.child.try_wait()? {
            bail!("alertmanager exited ({status}):\n{}", am.log());
        }
        Ok(probe
            .get(format!("{am_url}/-/ready"))
            .send()
            .ok()
            .filter(|r| r.status().is_success())
            .map(|_| ()))
    })?;

    let config = write_config(
        dir.path(),
        &format!("{RULE}\n[[notify]]\nname = \"am\"\nkind = \"alertmanager\"\nurl = \"{am_url}\"\nresend_delay = \"1s\"\n"),
    )?;
    let server = Server::start_in(&dir.path().join("data"), &["--config", &config])?;
    let api = Api::new(&server.url, &server.token("admin")?);
    let t = now() - 600;
    import(&api, t, &[20.0, 20.0, 150.0, 150.0, 150.0, 150.0])?;
    let active = eventually(Duration::from_secs(20), || {
        let alerts = amtool_alerts(&am_url)?;
        Ok(alerts
            .into_iter()
            .find(|a| a["labels"]["alertname"] == "latency"))
    })?;
    assert_eq!(active["labels"]["instance"], "web-1");
    assert_eq!(active["labels"]["severity"], "critical");
    assert_eq!(active["status"]["state"], "active");
    let delivered = deliveries(&api, "?receiver=am&state=delivered")?;
    assert!(!delivered.is_empty());
    assert!(
        delivered[0]["payload"].is_array(),
        "API v2 takes an array of alerts"
    );

    // Recovery: Alertmanager is told endsAt = now and drops it from the active alerts.
    import(&api, t + 60, &[10.0, 10.0, 10.0, 10.0, 10.0, 10.0])?;
    eventually(Duration::from_secs(20), || {
        let alerts = amtool_alerts(&am_url)?;
        Ok((!alerts.iter().any(|a| a["labels"]["alertname"] == "latency")).then_some(()))
    })?;
    let resolved = probe
        .get(format!(
            "{am_url}/api/v2/alerts?active=false&silenced=false&inhibited=false&unprocessed=false"
        ))
        .send()?
        .json::<Value>()?;
    assert!(
        !resolved.as_array().is_some_and(|a| a
            .iter()
            .any(|x| x["labels"]["alertname"] == "latency" && x["status"]["state"] == "active")),
        "{resolved}"
    );
    assert!(deliveries(&api, "?state=dead")?.is_empty());
    drop(server);
    drop(am);
    Ok(())
}
