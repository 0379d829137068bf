//! The server's disk fills up under a running agent: batches are refused with
//! 503 (counted, logged), reads go on, and once space is back every sample the
//! agent took meanwhile is stored — nothing lost, nothing doubled.

use anyhow::Result;
use metrolog_e2e::{eventually, metric, start_agent, Api, Server, Tmpfs};
use std::time::Duration;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[test]
fn full_disk_refuses_batches_then_stores_everything_once_space_is_back() -> Result<()> {
    let mnt = tempfile::tempdir()?;
    let Some(fs) = Tmpfs::mount(mnt.path(), "24m") else {
        return Ok(());
    };
    let state = tempfile::tempdir()?;
    // Archive rows written at every flush tick (no write_delay), as a server
    // long past its first minutes writes all the time: the disk fills under
    // the batches' journal and the archives' chunks alike.
    let config = state.path().join("server.toml");
    std::fs::write(&config, "[archives]\nwrite_delay = \"0s\"\n")?;
    let config = config.to_string_lossy().into_owned();
    let mut server = Server::start_in(
        &mnt.path().join("data"),
        &["--no-local-agent", "--config", &config],
    )?;
    let api = Api::new(&server.url, &server.token("viewer")?);
    let fast = ["--sample-interval", "200ms", "--ship-interval", "1s"];
    let mut agent = start_agent(&server, "web-1", "web", &state.path().join("a"), &fast)?;
    let host = eventually(Duration::from_secs(60), || {
        let (_, hosts) = api.get("/api/v1/hosts?group=web")?;
        Ok(hosts[0]["id"]
            .as_i64()
            .filter(|_| hosts[0]["state"] == "up"))
    })?;
    let batches_before = eventually(Duration::from_secs(60), || {
        let n = metric(&api, "metrolog_ingest_batches_total ")?;
        Ok((n >= 2).then_some(n))
    })?;
    assert!(batches_before >= 2);

    // The disk fills up.
    let filler = mnt.path().join("filler");
    fs.fill("filler")?;
    let full_from = now();
    // Full for a while: several ship intervals, and writes refused more than once
    // (a write can still succeed now and then while SQLite reuses its WAL).
    let refused = eventually(Duration::from_secs(60), || {
        let n = metric(&api, "metrolog_storage_full_errors_total ")?;
        Ok((n >= 3 && now() >= full_from + 20).then_some(n))
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", server.proc.log()))?;
    assert!(refused >= 3);
    // Reads are still served while writes are refused.
    let (status, h) = api.get(&format!("/api/v1/hosts/{host}"))?;
    assert_eq!(status, 200, "{h}");
    let log = server.proc.log();
    assert!(
        log.contains("disk is full"),
        "the operator is told why: {log}"
    );
    let full_to = now();

    // Space is freed: the agent's retries get through with what it kept.
    std::fs::remove_file(&filler)?;
    let window = format!(
        "/api/v1/query?host={host}&name=cpu.busy_pct&from={}&to={}&step=10",
        full_from - full_from % 10,
        full_to - full_to % 10
    );
    let mut last = serde_json::Value::Null;
    eventually(Duration::from_secs(120), || {
        let (_, v) = api.get(&window)?;
        let points = v["series"][0]["points"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        last = v;
        Ok((!points.is_empty() && points.iter().all(|p| p[1].is_number())).then_some(()))
    })
    .map_err(|e| {
        anyhow::anyhow!(
            "{e}\n{window}: {last}\nagent:\n{}\nserver:\n{}",
            agent.log(),
            server.proc.log()
        )
    })?;
    let dup = metric(&api, "metrolog_ingest_duplicate_batches_total ")?;
    assert_eq!(dup, 0, "no batch was committed and then sent again");

    agent.terminate();
    agent.wait_exit(Duration::from_secs(20))?;
    server.proc.terminate();
    let status = server.proc.wait_exit(Duration::from_secs(20))?;
    assert!(status.success(), "{}", server.proc.log());
    Ok(())
}
