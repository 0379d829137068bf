//! Log settings pushed by the server's `[[agents]]` section: an agent of the
//! group with no log configuration of its own tails the group's files with
//! the group's filter, every line stored once, through a restart; an agent of
//! another group does not.

use metrolog_e2e::{eventually, start_agent, Api, Proc, Server};
use serde_json::Value;
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

const FAST: [&str; 4] = ["--sample-interval", "200ms", "--ship-interval", "1s"];

/// Appends lines `range` to `path`; every fourth is a health check the
/// group's filter drops. Returns the lines kept.
fn append(path: &Path, range: std::ops::Range<u32>) -> anyhow::Result<Vec<String>> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let mut kept = Vec::new();
    for i in range {
        if i % 4 == 3 {
            writeln!(f, "GET /healthcheck zebra {i:04}")?;
        } else {
            let line = format!("zebra {i:04} request served");
            writeln!(f, "{line}")?;
            kept.push(line);
        }
    }
    Ok(kept)
}

/// Every record of `host` that full-text search finds for `q`, all pages.
fn search(api: &Api, host: &str, q: &str) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let mut path = format!("/api/v1/logs?host={host}&q={q}&limit=1000");
        if let Some(b) = &before {
            path.push_str(&format!("&before={b}"));
        }
        let (status, page) = api.get(&path)?;
        anyhow::ensure!(status == 200, "GET {path}: {status} {page}");
        out.extend(page["records"].as_array().into_iter().flatten().cloned());
        match page["next"].as_str() {
            Some(n) => before = Some(n.to_string()),
            None => return Ok(out),
        }
    }
}

/// Messages found for `q` on `host`, with how many times each is stored.
fn counts(api: &Api, host: &str, q: &str) -> anyhow::Result<HashMap<String, u32>> {
    let mut counts = HashMap::new();
    for r in search(api, host, q)? {
        anyhow::ensure!(r["app_name"] == "pushed", "app of {r}");
        *counts
            .entry(r["message"].as_str().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    Ok(counts)
}

/// Waits until exactly `lines` are stored for `host`, each once.
fn wait_stored_once(
    api: &Api,
    host: &str,
    lines: &[String],
    agent: &mut Proc,
) -> anyhow::Result<()> {
    let found = eventually(Duration::from_secs(60), || {
        let c = counts(api, host, "zebra")?;
        Ok((c.values().sum::<u32>() as usize >= lines.len()).then_some(c))
    })
    .map_err(|e| anyhow::anyhow!("{e}\nagent:\n{}", agent.log()))?;
    let missing: Vec<&String> = lines.iter().filter(|l| !found.contains_key(*l)).collect();
    let twice: Vec<_> = found.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        missing.is_empty() && twice.is_empty() && found.len() == lines.len(),
        "{} lines expected: missing {missing:?}, stored twice {twice:?}, found {}\nagent:\n{}",
        lines.len(),
        found.len(),
        agent.log()
    );
    Ok(())
}

/// The newest value of the agent's own series `name`.
fn newest(api: &Api, host: i64, name: &str) -> anyhow::Result<Option<f64>> {
    let (status, v) = api.get(&format!("/api/v1/query?host={host}&name={name}&from=-5m"))?;
    anyhow::ensure!(status == 200, "query {name}: {status} {v}");
    Ok(v["series"][0]["points"]
        .as_array()
        .and_then(|p| p.iter().rev().find_map(|pt| pt[1].as_f64())))
}

#[test]
fn a_group_without_local_log_config_tails_what_the_server_pushes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs)?;
    let web_log = logs.join("web.log");
    let server_toml = dir.path().join("server.toml");
    std::fs::write(
        &server_toml,
        format!(
            "[[agents]]\ngroup = \"web\"\n\
             logs.files = [{{ path = \"{}/*.log\", app = \"pushed\" }}]\n\
             logs.filter = {{ exclude = [\"healthcheck\"] }}\n",
            logs.display()
        ),
    )?;
    let server = Server::start(&[
        "--no-local-agent",
        "--config",
        server_toml.to_str().unwrap(),
    ])?;
    let api = Api::new(&server.url, &server.token("viewer")?);

    // Lines already there when the instance starts are shipped too.
    let mut kept = append(&web_log, 0..20)?;
    let mut web = start_agent(
        &server,
        "web-1",
        "web",
        &dir.path().join("web-state"),
        &FAST,
    )?;
    let mut db = start_agent(&server, "db-1", "db", &dir.path().join("db-state"), &FAST)?;
    web.wait_for_line("tailing", Duration::from_secs(30))?;
    kept.extend(append(&web_log, 20..40)?);
    wait_stored_once(&api, "web-1", &kept, &mut web)?;
    assert!(
        search(&api, "web-1", "healthcheck")?.is_empty(),
        "the group's filter drops at the source"
    );

    // The drops are counted where the agent counts them.
    let web_id = api.host_id("web-1")?.expect("web-1 enrolled");
    let filtered = eventually(Duration::from_secs(40), || {
        Ok(newest(&api, web_id, "agent.logs.filtered")?.filter(|v| *v >= 10.0))
    })
    .map_err(|e| anyhow::anyhow!("{e}\nagent:\n{}", web.log()))?;
    assert_eq!(filtered, 10.0, "10 health checks in 40 lines");

    // A restart: the settings kept from the last run apply at once, the
    // offsets are kept, nothing is stored twice.
    web.terminate();
    anyhow::ensure!(
        web.wait_exit(Duration::from_secs(20))?.success(),
        "{}",
        web.log()
    );
    kept.extend(append(&web_log, 40..60)?);
    let mut web = start_agent(
        &server,
        "web-1",
        "web",
        &dir.path().join("web-state"),
        &FAST,
    )?;
    wait_stored_once(&api, "web-1", &kept, &mut web)?;

    // The other group's agent never tailed the file.
    let db_id = api.host_id("db-1")?.expect("db-1 enrolled");
    assert!(search(&api, "db-1", "zebra")?.is_empty());
    assert_eq!(
        newest(&api, db_id, "agent.logs.accepted")?,
        None,
        "db-1 reads no logs"
    );
    let db_log = db.log();
    assert!(!db_log.contains("tailing"), "db-1 tails nothing:\n{db_log}");

    for p in [&web, &db] {
        p.terminate();
    }
    web.wait_exit(Duration::from_secs(20))?;
    db.wait_exit(Duration::from_secs(20))?;
    Ok(())
}
