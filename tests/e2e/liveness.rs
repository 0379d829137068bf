//! Liveness with real agents: an agent killed with SIGKILL falls silent and
//! its host goes down, CRITICAL for the liveness rule, and the receiver is
//! told once; an agent stopped with SIGTERM leaves and raises nothing.

use metrolog_e2e::receiver::Receiver;
use metrolog_e2e::{eventually, start_agent, Api, Server};
use serde_json::Value;
use std::time::Duration;

fn config(receiver: &str) -> String {
    format!(
        r#"
[hosts]
liveness_timeout = "3s"

[[rules]]
name = "host-down"
kind = "liveness"
timeout = "3s"

[[notify]]
name = "ops"
url = "{receiver}/hook"
group_wait = "0s"
"#
    )
}

fn alarms_of(api: &Api, host: &str) -> anyhow::Result<Vec<Value>> {
    let (status, all) = api.get("/api/v1/alarms?state=all")?;
    anyhow::ensure!(status == 200, "alarms: {status} {all}");
    Ok(all
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|a| a["hostname"] == host)
        .collect())
}

#[test]
fn sigkill_raises_host_down_and_sigterm_raises_nothing() -> anyhow::Result<()> {
    let receiver = Receiver::start(Vec::new())?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("server.toml");
    std::fs::write(&file, config(&receiver.url))?;
    let mut server = Server::start(&["--no-local-agent", "--config", file.to_str().unwrap()])?;
    let api = Api::new(&server.url, &server.token("viewer")?);
    let fast = ["--sample-interval", "200ms", "--ship-interval", "1s"];
    let mut killed = start_agent(&server, "web-1", "web", &dir.path().join("a1"), &fast)?;
    let mut stopped = start_agent(&server, "web-2", "web", &dir.path().join("a2"), &fast)?;
    eventually(Duration::from_secs(60), || {
        let (_, hosts) = api.get("/api/v1/hosts?group=web")?;
        let up = hosts
            .as_array()
            .map_or(0, |h| h.iter().filter(|h| h["state"] == "up").count());
        Ok((up == 2).then_some(()))
    })
    .map_err(|e| anyhow::anyhow!("{e}\nserver:\n{}", server.proc.log()))?;

    // No goodbye from web-1; web-2 leaves cleanly.
    killed.child.kill()?;
    killed.child.wait()?;
    stopped.terminate();
    assert!(stopped.wait_exit(Duration::from_secs(20))?.success());

    let alarm = eventually(Duration::from_secs(30), || {
        let a = alarms_of(&api, "web-1")?;
        Ok(a.into_iter()
            .find(|a| a["rule"] == "host-down" && a["state"] == "CRITICAL"))
    })
    .map_err(|e| anyhow::anyhow!("{e}\nserver:\n{}", server.proc.log()))?;
    assert_eq!(alarm["state_type"], "hard", "{alarm}");
    let (_, hosts) = api.get("/api/v1/hosts?group=web")?;
    let state = |name: &str| {
        hosts
            .as_array()
            .and_then(|h| h.iter().find(|h| h["hostname"] == name))
            .map(|h| h["state"].clone())
    };
    assert_eq!(state("web-1"), Some("down".into()), "{hosts}");
    assert_eq!(state("web-2"), Some("left".into()), "{hosts}");
    assert!(
        alarms_of(&api, "web-2")?.is_empty(),
        "a graceful leave raises nothing"
    );

    // The receiver is told once, about web-1 only.
    let got = receiver.next(Duration::from_secs(20))?;
    let body = got.json();
    assert_eq!(body["version"], "4", "{body}");
    assert_eq!(body["status"], "firing", "{body}");
    let alerts = body["alerts"].as_array().cloned().unwrap_or_default();
    assert_eq!(alerts.len(), 1, "{body}");
    assert_eq!(alerts[0]["labels"]["alertname"], "host-down");
    assert_eq!(alerts[0]["labels"]["instance"], "web-1");
    assert_eq!(alerts[0]["labels"]["severity"], "critical");
    let more = receiver.drain(Duration::from_secs(3));
    assert!(
        more.iter()
            .all(|r| !String::from_utf8_lossy(&r.body).contains("web-2")),
        "nothing about web-2: {more:?}"
    );
    Ok(())
}
