//! Two agents standing for `web-1` and `web-2` in group `web` report to a real
//! server; one leaves on SIGTERM; credentials are reused across restarts.

use metrolog_e2e::{eventually, start_agent, Api, Server};
use serde_json::{json, Value};
use std::time::Duration;

/// The series every agent must report, with a point that is not null.
const CORE: [&str; 3] = ["cpu.busy_pct", "mem.used_pct", "load.1m"];

fn host<'a>(hosts: &'a Value, name: &str) -> Option<&'a Value> {
    hosts.as_array()?.iter().find(|h| h["hostname"] == name)
}

fn has_points(api: &Api, host_id: i64, name: &str) -> anyhow::Result<bool> {
    let (status, v) = api.get(&format!(
        "/api/v1/query?host={host_id}&name={name}&from=-5m"
    ))?;
    anyhow::ensure!(status == 200, "query {name}: {status} {v}");
    Ok(v["series"][0]["points"]
        .as_array()
        .is_some_and(|p| p.iter().any(|pt| pt[1].is_number())))
}

/// The newest recorded `group.members` of group `web`.
fn newest_member_count(api: &Api) -> anyhow::Result<Option<f64>> {
    let (status, v) = api.get("/api/v1/query?group=web&name=group.members&from=-2m")?;
    anyhow::ensure!(status == 200, "members: {status} {v}");
    Ok(v["series"][0]["points"]
        .as_array()
        .and_then(|p| p.iter().rev().find_map(|pt| pt[1].as_f64())))
}

#[test]
fn two_agents_report_then_one_leaves() -> anyhow::Result<()> {
    let mut server = Server::start(&["--no-local-agent"])?;
    let api = Api::new(&server.url, &server.token("viewer")?);
    let dir = tempfile::tempdir()?;
    let fast = ["--sample-interval", "200ms", "--ship-interval", "1s"];
    let mut web1 = start_agent(&server, "web-1", "web", &dir.path().join("a1"), &fast)?;
    let mut web2 = start_agent(&server, "web-2", "web", &dir.path().join("a2"), &fast)?;

    // Both enroll, are up in group `web`, and their core series hold points.
    let ids = eventually(Duration::from_secs(60), || {
        let (status, hosts) = api.get("/api/v1/hosts?group=web")?;
        anyhow::ensure!(status == 200, "hosts: {status} {hosts}");
        let mut ids = Vec::new();
        for name in ["web-1", "web-2"] {
            let Some(h) = host(&hosts, name) else {
                return Ok(None);
            };
            if h["state"] != "up" {
                return Ok(None);
            }
            let id = h["id"].as_i64().unwrap();
            for s in CORE {
                if !has_points(&api, id, s)? {
                    return Ok(None);
                }
            }
            ids.push(id);
        }
        Ok(Some(ids))
    })
    .map_err(|e| {
        anyhow::anyhow!(
            "{e}\nweb-1:\n{}\nweb-2:\n{}\nserver:\n{}",
            web1.log(),
            web2.log(),
            server.proc.log()
        )
    })?;

    // The group aggregate spans both members, and the group records its own
    // member count every 10 s.
    let (_, agg) = api.get("/api/v1/query?group=web&agg=avg&name=cpu.busy_pct&from=-5m")?;
    assert_eq!(agg["series"][0]["members"], 2, "{agg}");
    eventually(Duration::from_secs(30), || {
        Ok((newest_member_count(&api)? == Some(2.0)).then_some(()))
    })?;

    // SIGTERM: web-1 ships what it has, leaves, and exits cleanly.
    web1.terminate();
    let status = web1.wait_exit(Duration::from_secs(20))?;
    assert!(
        status.success(),
        "agent exited with {status}:\n{}",
        web1.log()
    );
    let (_, h1) = api.get(&format!("/api/v1/hosts/{}", ids[0]))?;
    assert_eq!(h1["state"], "left", "{h1}");
    let (_, h2) = api.get(&format!("/api/v1/hosts/{}", ids[1]))?;
    assert_eq!(h2["state"], "up", "{h2}");
    eventually(Duration::from_secs(30), || {
        Ok((newest_member_count(&api)? == Some(1.0)).then_some(()))
    })?;

    // Restarted with the same state dir, web-1 reuses its credential: same host, up again.
    let mut again = start_agent(&server, "web-1", "web", &dir.path().join("a1"), &fast)?;
    eventually(Duration::from_secs(30), || {
        let (_, h) = api.get(&format!("/api/v1/hosts/{}", ids[0]))?;
        Ok((h["state"] == "up").then_some(()))
    })?;
    let (_, hosts) = api.get("/api/v1/hosts?group=web")?;
    assert_eq!(
        hosts.as_array().unwrap().len(),
        2,
        "no duplicate host: {hosts}"
    );
    again.terminate();
    again.wait_exit(Duration::from_secs(20))?;
    web2.terminate();
    web2.wait_exit(Duration::from_secs(20))?;

    // The members are removed (as expiry does after hosts.expire_after); the
    // group's own series outlive them.
    let admin = server.token("admin")?;
    for id in &ids {
        assert_eq!(api.delete(&format!("/api/v1/hosts/{id}"), &admin)?, 204);
    }
    let (_, hosts) = api.get("/api/v1/hosts?group=web")?;
    assert_eq!(hosts, json!([]), "members gone");
    let (status, agg) = api.get("/api/v1/query?group=web&agg=max&name=cpu.busy_pct&from=-5m")?;
    assert_eq!(status, 200, "{agg}");
    let points = agg["series"][0]["points"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        points.iter().any(|p| p[1].is_number()),
        "recorded aggregate outlives the members: {agg}"
    );
    assert!(agg["series"][0].get("members").is_none(), "{agg}");

    // SIGTERM on the server: clean exit.
    server.proc.terminate();
    let status = server.proc.wait_exit(Duration::from_secs(20))?;
    assert!(
        status.success(),
        "server exited with {status}:\n{}",
        server.proc.log()
    );
    Ok(())
}

#[test]
fn wrong_or_missing_token_gets_401_json() -> anyhow::Result<()> {
    let server = Server::start(&["--no-local-agent"])?;
    let api = Api::new(&server.url, "mlg_wrong-token");
    for token in [Some("mlg_wrong-token"), None] {
        let (status, body) = api.get_with("/api/v1/hosts", token)?;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"]["code"], "unauthorized", "{body}");
        let (status, body) = api.post_json(
            "/api/v1/agent/batch",
            token,
            &json!({"id": {"stream": "x", "seq": 1}, "sent_at": 0, "metrics": []}),
        )?;
        assert_eq!(status, 401, "{body}");
        assert!(body["error"]["message"].is_string(), "{body}");
    }
    // An agent with a wrong enrollment token is refused and says why.
    let dir = tempfile::tempdir()?;
    let mut cmd = std::process::Command::new(metrolog_e2e::binary("metrolog-agent"));
    cmd.args([
        "--server",
        &server.url,
        "--enroll-token",
        "mlg_nope",
        "--hostname",
        "intruder",
    ])
    .arg("--state-dir")
    .arg(dir.path());
    let mut agent = metrolog_e2e::Proc::spawn("intruder", cmd)?;
    agent.wait_for_line("401", Duration::from_secs(20))?;
    let admin = Api::new(&server.url, &server.token("admin")?);
    let (_, hosts) = admin.get("/api/v1/hosts")?;
    assert_eq!(hosts, json!([]));
    Ok(())
}
