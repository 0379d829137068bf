//! Checks end to end: an agent runs a real Nagios plugin (`check_tcp` from
//! Debian's monitoring-plugins-basic) against a port the test opens, closes
//! and re-opens; the server stores each result, judges it with a
//! `kind = "check"` rule (OK → soft CRITICAL → hard CRITICAL → OK) and keeps
//! the perfdata as series `check.<name>.time`. And checks pushed by the
//! server's `[[agents]]` section, where a local check of the same name wins.

use metrolog_e2e::receiver::Receiver;
use metrolog_e2e::{eventually, start_agent, unique, Api, Proc, Server};
use serde_json::Value;
use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

const FAST: [&str; 4] = ["--sample-interval", "200ms", "--ship-interval", "1s"];
const WAIT: Duration = Duration::from_secs(60);

/// A plugin of monitoring-plugins-basic; a missing one fails the test.
fn plugin(name: &str) -> String {
    let path = format!("/usr/lib/nagios/plugins/{name}");
    assert!(
        Path::new(&path).exists(),
        "{path} is missing: install the Debian package monitoring-plugins-basic"
    );
    path
}

/// The latest result of check `name` on `host`, once there is one.
fn check(api: &Api, host: &str, name: &str) -> anyhow::Result<Option<Value>> {
    let (status, list) = api.get(&format!("/api/v1/checks?host={host}"))?;
    if status == 404 {
        return Ok(None); // not enrolled yet
    }
    anyhow::ensure!(status == 200, "checks: {status} {list}");
    Ok(list
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == name)
        .cloned())
}

/// Waits until check `name` on `host` satisfies `ok`.
fn wait_check(
    api: &Api,
    host: &str,
    name: &str,
    agent: &mut Proc,
    ok: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let mut last = Value::Null;
    eventually(WAIT, || {
        let c = check(api, host, name)?;
        if let Some(c) = &c {
            last = c.clone();
        }
        Ok(c.filter(|c| ok(c)))
    })
    .map_err(|e| anyhow::anyhow!("{e}\nlast result: {last}\nagent:\n{}", agent.log()))
}

/// The transitions of `host`'s alarms, oldest first, as (from, to, state_type).
fn transitions(api: &Api, host: &str) -> anyhow::Result<Vec<(String, String, String)>> {
    let (status, list) = api.get(&format!("/api/v1/alarms/transitions?host={host}"))?;
    anyhow::ensure!(status == 200, "transitions: {status} {list}");
    let mut out: Vec<_> = list
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let s = |k: &str| t[k].as_str().unwrap_or_default().to_string();
            (s("from"), s("to"), s("state_type"))
        })
        .collect();
    out.reverse();
    Ok(out)
}

fn wait_transitions(
    api: &Api,
    host: &str,
    want: &[(&str, &str, &str)],
    agent: &mut Proc,
) -> anyhow::Result<()> {
    let want: Vec<(String, String, String)> = want
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect();
    let mut last = Vec::new();
    eventually(WAIT, || {
        last = transitions(api, host)?;
        Ok((last.len() >= want.len()).then_some(()))
    })
    .map_err(|e| anyhow::anyhow!("{e}\ntransitions: {last:?}\nagent:\n{}", agent.log()))?;
    assert_eq!(last, want, "agent:\n{}", agent.log());
    Ok(())
}

#[test]
fn check_tcp_drives_an_alarm_through_soft_and_hard_critical_and_back() -> anyhow::Result<()> {
    let tcp = plugin("check_tcp");
    let dir = tempfile::tempdir()?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    // The receiver an Alertmanager webhook config would point at.
    let receiver = Receiver::start(Vec::new())?;
    let server_toml = dir.path().join("server.toml");
    std::fs::write(
        &server_toml,
        format!(
            "[[rules]]\nname = \"tcp-down\"\nkind = \"check\"\ncheck = \"tcp\"\n\n\
             [[notify]]\nname = \"ops\"\nurl = \"{}/hook\"\ngroup_wait = \"0s\"\ngroup_interval = \"1s\"\n",
            receiver.url
        ),
    )?;
    let server = Server::start(&[
        "--no-local-agent",
        "--config",
        server_toml.to_str().unwrap(),
    ])?;
    let api = Api::new(&server.url, &server.token("viewer")?);
    let host = unique("tcp");
    let agent_toml = dir.path().join("agent.toml");
    std::fs::write(
        &agent_toml,
        format!(
            "[[checks]]\nname = \"tcp\"\n\
             command = [\"{tcp}\", \"-H\", \"127.0.0.1\", \"-p\", \"{port}\", \"-t\", \"3\"]\n\
             interval = \"1s\"\nretry_interval = \"1s\"\ntimeout = \"5s\"\nmax_attempts = 3\n"
        ),
    )?;
    let mut args = FAST.to_vec();
    args.extend(["--config", agent_toml.to_str().unwrap()]);
    let mut agent = start_agent(&server, &host, "web", &dir.path().join("state"), &args)?;

    let ok = wait_check(&api, &host, "tcp", &mut agent, |c| c["status"] == "OK")?;
    let output = ok["output"].as_str().unwrap_or_default();
    assert!(output.starts_with("TCP OK"), "{ok}");
    assert!(ok["last_run"].as_i64().unwrap_or(0) > 0, "{ok}");
    assert!(ok["last_run_at"].is_string(), "{ok}");
    assert!(
        ok["perfdata"]
            .as_str()
            .unwrap_or_default()
            .starts_with("time="),
        "{ok}"
    );

    // The port closes: soft CRITICAL for two results, hard at the third.
    drop(listener);
    let hard = wait_check(&api, &host, "tcp", &mut agent, |c| {
        c["status"] == "CRITICAL" && c["state_type"] == "hard"
    })?;
    assert_eq!(hard["attempt"], 3, "{hard}");
    assert!(
        hard["output"]
            .as_str()
            .unwrap_or_default()
            .contains("Connection refused"),
        "{hard}"
    );
    wait_transitions(
        &api,
        &host,
        &[("OK", "CRITICAL", "soft"), ("CRITICAL", "CRITICAL", "hard")],
        &mut agent,
    )?;
    let (_, alarms) = api.get(&format!("/api/v1/alarms?host={host}"))?;
    assert_eq!(alarms[0]["rule"], "tcp-down", "{alarms}");
    // Told once, at the hard state (the soft ones tell nobody).
    let fired = receiver.next(WAIT)?.json();
    assert_eq!(fired["status"], "firing", "{fired}");
    assert_eq!(
        fired["alerts"][0]["labels"]["alertname"], "tcp-down",
        "{fired}"
    );
    assert_eq!(fired["alerts"][0]["labels"]["check"], "tcp", "{fired}");
    assert_eq!(
        fired["alerts"][0]["labels"]["severity"], "critical",
        "{fired}"
    );
    assert_eq!(
        (&alarms[0]["state"], &alarms[0]["state_type"]),
        (&Value::from("CRITICAL"), &Value::from("hard")),
        "{alarms}"
    );

    // The port is back: OK at the next run.
    let _listener = TcpListener::bind(("127.0.0.1", port))?;
    wait_check(&api, &host, "tcp", &mut agent, |c| c["status"] == "OK")?;
    wait_transitions(
        &api,
        &host,
        &[
            ("OK", "CRITICAL", "soft"),
            ("CRITICAL", "CRITICAL", "hard"),
            ("CRITICAL", "OK", "hard"),
        ],
        &mut agent,
    )?;

    let resolved = receiver.next(WAIT)?.json();
    assert_eq!(resolved["status"], "resolved", "{resolved}");
    assert_eq!(resolved["alerts"][0]["status"], "resolved", "{resolved}");
    assert!(
        resolved["alerts"][0]["endsAt"]
            .as_str()
            .is_some_and(|t| !t.starts_with("0001")),
        "{resolved}"
    );

    // The perfdata is a series: response times in seconds.
    let id = api
        .host_id(&host)?
        .ok_or_else(|| anyhow::anyhow!("no host {host}"))?;
    let points = eventually(WAIT, || {
        let (status, v) = api.get(&format!(
            "/api/v1/query?host={id}&name=check.tcp.time&from=-5m"
        ))?;
        anyhow::ensure!(status == 200, "query: {status} {v}");
        let values: Vec<f64> = v["series"][0]["points"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p[1].as_f64())
            .collect();
        Ok((!values.is_empty()).then_some(values))
    })?;
    assert!(
        points.iter().all(|t| (0.0..3.0).contains(t)),
        "response times in seconds: {points:?}"
    );
    // Exactly one of each: nothing else was sent.
    let more = receiver.drain(Duration::from_secs(2));
    assert!(more.is_empty(), "more notifications: {more:?}");
    Ok(())
}

#[test]
fn checks_pushed_by_the_server_run_and_a_local_check_of_the_same_name_wins() -> anyhow::Result<()> {
    let dummy = plugin("check_dummy");
    let dir = tempfile::tempdir()?;
    let server_toml = dir.path().join("server.toml");
    std::fs::write(
        &server_toml,
        format!(
            "[[agents]]\ngroup = \"pushed\"\n\
             checks = [\n\
               {{ name = \"dummy\", command = [\"{dummy}\", \"1\", \"pushed warning | x=5\"], interval = \"1s\" }},\n\
               {{ name = \"shell\", command = [\"{dummy} 0 \\\"from a shell\\\"\"], shell = true, interval = \"1s\" }},\n\
             ]\n"
        ),
    )?;
    let server = Server::start(&[
        "--no-local-agent",
        "--config",
        server_toml.to_str().unwrap(),
    ])?;
    let api = Api::new(&server.url, &server.token("viewer")?);

    // An agent without a check of its own runs what its group is pushed.
    let plain = unique("pushed");
    let mut a = start_agent(&server, &plain, "pushed", &dir.path().join("a"), &FAST)?;
    let warn = wait_check(&api, &plain, "dummy", &mut a, |c| c["status"] == "WARNING")?;
    assert_eq!(warn["output"], "WARNING: pushed warning", "{warn}");
    let shell = wait_check(&api, &plain, "shell", &mut a, |c| c["status"] == "OK")?;
    assert_eq!(shell["output"], "OK: from a shell", "{shell}");
    let id = api
        .host_id(&plain)?
        .ok_or_else(|| anyhow::anyhow!("no host {plain}"))?;
    eventually(WAIT, || {
        let (_, v) = api.get(&format!(
            "/api/v1/query?host={id}&name=check.dummy.x&from=-5m"
        ))?;
        Ok(v["series"][0]["points"]
            .as_array()
            .and_then(|p| p.iter().find_map(|pt| pt[1].as_f64()))
            .filter(|x| *x == 5.0))
    })?;

    // An agent with a local check of the same name runs its own.
    let local = unique("local");
    let agent_toml = dir.path().join("agent.toml");
    std::fs::write(
        &agent_toml,
        format!(
            "[[checks]]\nname = \"dummy\"\ncommand = [\"{dummy}\", \"0\", \"local wins\"]\ninterval = \"1s\"\n"
        ),
    )?;
    let mut args = FAST.to_vec();
    args.extend(["--config", agent_toml.to_str().unwrap()]);
    let mut b = start_agent(&server, &local, "pushed", &dir.path().join("b"), &args)?;
    let own = wait_check(&api, &local, "dummy", &mut b, |c| {
        c["last_run"].as_i64() > Some(0)
    })?;
    assert_eq!(
        (&own["status"], &own["output"]),
        (&Value::from("OK"), &Value::from("OK: local wins")),
        "{own}"
    );
    // It still runs the pushed check it has no local one for.
    wait_check(&api, &local, "shell", &mut b, |c| c["status"] == "OK")?;
    // A result of the pushed "dummy" never shows up on this host.
    let again = wait_check(&api, &local, "dummy", &mut b, |c| {
        c["last_run"].as_i64() > own["last_run"].as_i64()
    })?;
    assert_eq!(again["output"], "OK: local wins", "{again}");
    Ok(())
}
