//! `metrolog-server backup DIR` against a running server, then the restore
//! procedure of docs/backup.md: the copies in a fresh data directory, a server
//! started on them, and what was written before the backup is all there
//! (series, log records and their full-text search, tokens, users).

use anyhow::{anyhow, ensure, Result};
use metrolog_e2e::{eventually, Api, Server};
use serde_json::json;
use std::time::Duration;

#[test]
fn a_backup_taken_while_the_server_writes_restores_into_a_fresh_data_dir() -> Result<()> {
    let mut server = Server::start(&[])?;
    let admin = Api::new(&server.url, &server.token("admin")?);
    let viewer_token = server.token("viewer")?;

    // Series: an imported hour at 10 s.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let start = now - now % 10 - 3600;
    let points: Vec<_> = (0..360)
        .map(|i| json!([start + i * 10, (i % 50) as f64]))
        .collect();
    let (status, body) = admin.post_json(
        "/api/v1/import",
        Some(&admin.token),
        &json!({"host": "restored-host", "series": [{"name": "backup.value", "points": points}]}),
    )?;
    ensure!(status == 200, "import: {status} {body}");
    // A log record, through an enrolled agent.
    let (status, enrolled) = admin.post_json(
        "/api/v1/agent/enroll",
        Some(&server.enroll_token),
        &json!({"hostname": "backup-agent", "group": "web", "labels": {}, "agent_version": "e2e"}),
    )?;
    ensure!(status == 200, "enroll: {status} {enrolled}");
    let agent = enrolled["agent_token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let batch = json!({
        "id": {"stream": "e2ebackup0000001", "seq": 1}, "sent_at": now,
        "logs": [{"ts": now * 1_000_000, "received_at": now * 1_000_000, "app_name": "backup",
                  "message": "restorable zanzibar record"}],
    });
    let (status, ack) = admin.post_json("/api/v1/agent/batch", Some(&agent), &batch)?;
    ensure!(status == 200, "batch: {status} {ack}");
    let search = "/api/v1/logs?q=zanzibar&from=-1d";
    eventually(Duration::from_secs(20), || {
        let (_, v) = admin.get(search)?;
        Ok((v["records"].as_array().map(Vec::len) == Some(1)).then_some(()))
    })
    .map_err(|e| anyhow!("the record is never found: {e}"))?;
    let query = format!(
        "/api/v1/query?host=restored-host&name=backup.value&from={start}&to={}",
        start + 3600
    );
    let (_, before) = admin.get(&query)?;
    let before_points = before["series"][0]["points"].clone();
    ensure!(
        before_points
            .as_array()
            .is_some_and(|p| p.iter().filter(|p| p[1].is_number()).count() > 300),
        "{before}"
    );

    // The backup, while the server and its local agent keep writing.
    let backup = tempfile::tempdir()?;
    let into = backup.path().join("copy");
    let out = server.subcommand(&["backup", &into.to_string_lossy()])?;
    ensure!(
        out.status.success(),
        "backup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = String::from_utf8_lossy(&out.stdout).to_string();
    ensure!(
        listed.contains("metrolog.logs-fts.db") && listed.contains("metrolog.db ->"),
        "the backup names both files: {listed}"
    );
    // A second backup into the same place is refused, not overwritten.
    let again = server.subcommand(&["backup", &into.to_string_lossy()])?;
    ensure!(
        !again.status.success(),
        "a second backup overwrote the first"
    );
    ensure!(
        String::from_utf8_lossy(&again.stderr).contains("already exists"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let (status, _) = admin.get("/readyz")?;
    ensure!(status == 200, "the server stays ready during the backup");
    server.proc.terminate();
    server.proc.wait_exit(Duration::from_secs(20))?;

    // Restore: the copies into a fresh data directory, then start.
    let fresh = tempfile::tempdir()?;
    for entry in std::fs::read_dir(&into)? {
        let entry = entry?;
        std::fs::copy(entry.path(), fresh.path().join(entry.file_name()))?;
    }
    let mut restored = Server::start_in(fresh.path(), &["--no-local-agent"])?;
    let reader = Api::new(&restored.url, &viewer_token);
    let (status, after) = reader.get(&query)?;
    ensure!(
        status == 200,
        "the viewer token of before the backup works: {status}"
    );
    assert_eq!(
        after["series"][0]["points"], before_points,
        "the series came back as it was"
    );
    let (_, v) = reader.get(search)?;
    assert_eq!(
        v["records"][0]["message"], "restorable zanzibar record",
        "the log record and its full-text search came back: {v}"
    );
    let (_, hosts) = reader.get("/api/v1/hosts")?;
    let names: Vec<_> = hosts
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h["hostname"].as_str())
        .collect();
    ensure!(
        names.contains(&"backup-agent") && names.contains(&"restored-host"),
        "{names:?}"
    );
    restored.proc.terminate();
    let _ = restored.proc.wait_exit(Duration::from_secs(20));
    Ok(())
}
