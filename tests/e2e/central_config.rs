//! Central configuration (docs/agent-config.md): the server's `[[agents]]`
//! section for a group changes (the file is edited, the server gets SIGHUP),
//! and the running agent of that group tails the new file and runs the new
//! check within a few ship intervals — long before the 60 s fallback poll —
//! without a restart; heartbeats name the settings' version, the config
//! endpoint answers 304 to the version the agent has, and `show-config`
//! says which value came from the server and which from a flag.

use metrolog_e2e::{binary, eventually, start_agent, Api, Server};
use serde_json::Value;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Shorter than the agents' fallback poll of their settings (60 s): a
/// change seen within it came through the announced version.
const WAIT: Duration = Duration::from_secs(25);

/// The first version pushes `a.log`; the second (given the server's URL)
/// adds `b.log`, intervals, a check and the server's own `/metrics` as a
/// scrape target.
fn write_server_toml(path: &Path, logs: &Path, second: Option<&str>) -> anyhow::Result<()> {
    let mut text = format!(
        "[[agents]]\ngroup = \"web\"\nlogs.files = [{{ path = \"{}/a.log\", app = \"central\" }}",
        logs.display()
    );
    if let Some(url) = second {
        text.push_str(&format!(
            ", {{ path = \"{}/b.log\", app = \"central\" }}]\n\
             metrics = {{ sample_interval = \"500ms\", ship_interval = \"30s\" }}\n\
             checks = [{{ name = \"probe\", command = [\"/bin/echo\", \"OK - central | v=3\"], interval = \"1s\" }}]\n\
             scrape = [{{ name = \"self\", url = \"{url}/metrics\", interval = \"1s\" }}]\n",
            logs.display()
        ));
    } else {
        text.push_str("]\n");
    }
    // Written whole, then renamed: the server never reads half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn append(path: &Path, tag: &str, n: u32) -> anyhow::Result<Vec<String>> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let mut lines = Vec::new();
    for i in 0..n {
        let line = format!("{tag} line {i:03}");
        writeln!(f, "{line}")?;
        lines.push(line);
    }
    Ok(lines)
}

/// Messages stored for `host` that contain `tag`.
fn stored(api: &Api, host: &str, tag: &str) -> anyhow::Result<Vec<String>> {
    let (status, page) = api.get(&format!("/api/v1/logs?host={host}&q={tag}&limit=1000"))?;
    anyhow::ensure!(status == 200, "logs: {status} {page}");
    Ok(page["records"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["message"].as_str().map(str::to_string))
        .collect())
}

fn show_config(server: &Server, state: &Path) -> anyhow::Result<String> {
    let out = Command::new(binary("metrolog-agent"))
        .arg("show-config")
        .args(["--server", &server.url])
        .args(["--enroll-token", &server.enroll_token])
        .args(["--hostname", "web-1", "--group", "web"])
        .args(["--ship-interval", "1s"])
        .arg("--state-dir")
        .arg(state)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "show-config failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

#[test]
fn a_group_change_reaches_a_running_agent_without_restart() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs)?;
    let server_toml = dir.path().join("server.toml");
    write_server_toml(&server_toml, &logs, None)?;
    let mut server = Server::start(&[
        "--no-local-agent",
        "--config",
        server_toml.to_str().unwrap(),
    ])?;
    let api = Api::new(&server.url, &server.token("viewer")?);
    let state = dir.path().join("web-state");
    // The ship interval is set by flag: the server's 30 s must not apply.
    let mut agent = start_agent(&server, "web-1", "web", &state, &["--ship-interval", "1s"])?;

    let a = append(&logs.join("a.log"), "alpha", 5)?;
    append(&logs.join("b.log"), "bravo", 5)?;
    eventually(WAIT, || {
        Ok((stored(&api, "web-1", "alpha")?.len() >= a.len()).then_some(()))
    })
    .map_err(|e| anyhow::anyhow!("{e}\nagent:\n{}", agent.log()))?;
    assert!(
        stored(&api, "web-1", "bravo")?.is_empty(),
        "b.log is not pushed yet"
    );

    // The agent's own view of the protocol: heartbeats name the version,
    // the config endpoint answers 304 to it.
    let cred: Value = serde_json::from_slice(&std::fs::read(state.join("credential.json"))?)?;
    let token = cred["agent_token"].as_str().unwrap_or_default().to_string();
    let http = reqwest::blocking::Client::new();
    let config = http
        .get(format!("{}/api/v1/agent/config", server.url))
        .bearer_auth(&token)
        .send()?;
    assert_eq!(config.status(), 200);
    let etag = config.headers()["etag"].to_str()?.to_string();
    let hb: Value = http
        .post(format!("{}/api/v1/agent/heartbeat", server.url))
        .bearer_auth(&token)
        .send()?
        .json()?;
    assert_eq!(
        format!("\"{}\"", hb["settings_version"].as_str().unwrap_or("")),
        etag
    );
    let again = http
        .get(format!("{}/api/v1/agent/config", server.url))
        .bearer_auth(&token)
        .header("If-None-Match", &etag)
        .send()?;
    assert_eq!(again.status(), 304, "the version the agent has is current");

    // The group's section changes; SIGHUP reads it again.
    let url = server.url.clone();
    write_server_toml(&server_toml, &logs, Some(&url))?;
    let hup = Command::new("kill")
        .args(["-HUP", &server.proc.child.id().to_string()])
        .status()?;
    assert!(hup.success());
    server.proc.wait_for_line(
        "read again; new settings for these groups",
        Duration::from_secs(10),
    )?;
    let changed = Instant::now();

    // The new file is tailed (from its start) and the new check runs, with
    // its perfdata as a series.
    let b = eventually(WAIT, || {
        let got = stored(&api, "web-1", "bravo")?;
        Ok((got.len() >= 5).then_some(got))
    })
    .map_err(|e| anyhow::anyhow!("{e}\nagent:\n{}", agent.log()))?;
    assert_eq!(b.len(), 5, "each line once: {b:?}");
    let id = api.host_id("web-1")?.expect("web-1 enrolled");
    eventually(WAIT, || {
        let (status, v) = api.get(&format!(
            "/api/v1/query?host={id}&name=check.probe.v&from=-5m"
        ))?;
        anyhow::ensure!(status == 200, "query: {status} {v}");
        Ok(v["series"][0]["points"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|p| p[1].as_f64())
            .filter(|v| *v == 3.0))
    })
    .map_err(|e| anyhow::anyhow!("{e}\nagent:\n{}", agent.log()))?;
    // The scrape target runs: the server's own gauge is a series of web-1.
    eventually(WAIT, || {
        let (status, v) = api.get("/api/v1/series?host=web-1")?;
        anyhow::ensure!(status == 200, "series: {status} {v}");
        Ok(v.to_string()
            .contains("prom.metrolog_outbox_backlog")
            .then_some(()))
    })
    .map_err(|e| anyhow::anyhow!("{e}\nagent:\n{}", agent.log()))?;
    let took = changed.elapsed();

    // The running sampler takes the server's sample interval; the ship
    // interval stays the flag's.
    agent.wait_for_line("sample every 500ms, ship every 1s", WAIT)?;
    // No restart: the same process, started once.
    assert!(
        agent.child.try_wait()?.is_none(),
        "the agent exited:\n{}",
        agent.log()
    );
    let log = agent.log();
    assert_eq!(log.matches("starting as").count(), 1, "{log}");
    // The flag's ship interval still holds: a new line arrives well before
    // the server's 30 s would ship it.
    let c = append(&logs.join("a.log"), "charlie", 1)?;
    eventually(Duration::from_secs(15), || {
        Ok((stored(&api, "web-1", "charlie")?.len() == c.len()).then_some(()))
    })?;

    let text = eventually(WAIT, || {
        let text = show_config(&server, &state)?;
        Ok(text.contains("name = \"probe\"  # server").then_some(text))
    })?;
    for want in [
        "sample_interval = \"500ms\"  # server",
        "ship_interval = \"1s\"  # flag",
        "group = \"web\"  # flag",
        "enroll_token = \"<set>\"  # flag",
        "app = \"central\"  # server",
        "name = \"self\"  # server",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    assert!(
        text.contains(&format!("{}/b.log\"  # server", logs.display())),
        "{text}"
    );
    assert!(
        !text.contains(&server.enroll_token),
        "a secret printed:\n{text}"
    );
    eprintln!("the change reached the agent {took:?} after SIGHUP");
    Ok(())
}

/// Under HTTPS with a certificate of its own CA, an agent given `--ca-file`
/// enrolls and ships, one without it is refused at the handshake, and the
/// server's built-in agent reports its host (through its loopback listener,
/// which serves the agent API only).
#[test]
fn agents_trust_a_private_ca_and_the_local_agent_runs_under_https() -> anyhow::Result<()> {
    use metrolog_e2e::{run_ok, Proc, ENROLL_TOKEN};
    let dir = tempfile::tempdir()?;
    let openssl = |args: &[&str]| {
        run_ok(
            Command::new("openssl").current_dir(dir.path()).args(args),
            "apt-get install openssl",
        )
    };
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
    let ec: Vec<&str> = ec.split(' ').collect();
    let ca_args = [
        "req", "-x509", "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
    ];
    openssl(&[&ca_args[..], &ec, &["-subj", "/CN=metrolog-e2e-ca"]].concat())?;
    let leaf_args = ["req", "-keyout", "key.pem", "-out", "leaf.csr"];
    openssl(&[&leaf_args[..], &ec, &["-subj", "/CN=127.0.0.1"]].concat())?;
    std::fs::write(
        dir.path().join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "cert.pem",
        "-days",
        "1",
        "-extfile",
        "leaf.ext",
    ])?;
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\ntls_cert = {:?}\ntls_key = {:?}\n",
            dir.path().join("cert.pem"),
            dir.path().join("key.pem")
        ),
    )?;
    let data = dir.path().join("data");
    let mut cmd = Command::new(binary("metrolog-server"));
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--syslog-udp",
        "off",
        "--syslog-tcp",
        "off",
    ])
    .arg("--config")
    .arg(&config)
    .arg("--data-dir")
    .arg(&data)
    .env("METROLOG_ADMIN_PASSWORD", "e2e-admin-password")
    .env("METROLOG_ENROLL_TOKEN", ENROLL_TOKEN);
    let mut server = Proc::spawn("metrolog-server", cmd)?;
    let line = server.wait_for_line("Dashboard: https://", Duration::from_secs(30))?;
    let url = line
        .split("Dashboard: ")
        .nth(1)
        .unwrap_or_default()
        .trim()
        .trim_end_matches('/')
        .to_string();
    let token = Command::new(binary("metrolog-server"))
        .args(["token", "create", "--role", "viewer", "--data-dir"])
        .arg(&data)
        .output()?;
    let token = String::from_utf8(token.stdout)?.trim().to_string();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(dir.path().join("ca.pem"))?)?;
    let client = reqwest::blocking::Client::builder()
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(10))
        .build()?;
    let hosts = || -> anyhow::Result<Vec<Value>> {
        let v: Value = client
            .get(format!("{url}/api/v1/hosts"))
            .bearer_auth(&token)
            .send()?
            .json()?;
        Ok(v.as_array().cloned().unwrap_or_default())
    };

    let agent = |name: &str, ca_file: Option<&Path>| -> anyhow::Result<Proc> {
        let mut cmd = Command::new(binary("metrolog-agent"));
        cmd.args(["--server", &url, "--enroll-token", ENROLL_TOKEN])
            .args([
                "--hostname",
                name,
                "--group",
                "web",
                "--ship-interval",
                "1s",
            ])
            .arg("--state-dir")
            .arg(dir.path().join(name));
        if let Some(ca) = ca_file {
            cmd.arg("--ca-file").arg(ca);
        }
        Proc::spawn(name, cmd)
    };
    let mut trusting = agent("tls-1", Some(&dir.path().join("ca.pem")))?;
    let mut untrusting = agent("tls-2", None)?;

    // The trusting agent ships; so does the built-in one (group
    // "metrolog"), through the loopback listener: both hosts have series.
    let series = |host: &str| -> anyhow::Result<String> {
        Ok(client
            .get(format!("{url}/api/v1/series?host={host}"))
            .bearer_auth(&token)
            .send()?
            .text()?)
    };
    let found = eventually(WAIT, || {
        let h = hosts()?;
        let Some(local) = h.iter().find(|h| h["group"] == "metrolog") else {
            return Ok(None);
        };
        let local = local["hostname"].as_str().unwrap_or_default().to_string();
        Ok(
            (series("tls-1")?.contains("cpu.busy_pct") && series(&local)?.contains("cpu.busy_pct"))
                .then_some(h),
        )
    })
    .map_err(|e| anyhow::anyhow!("{e}\nagent:\n{}\nserver:\n{}", trusting.log(), server.log()))?;
    // The loopback listener serves the agent API only.
    let loopback = server.log();
    let loopback = loopback
        .split("shipping to http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_string);
    let loopback = loopback.expect("the local agent names its address");
    let r = reqwest::blocking::get(format!("http://{loopback}/api/v1/hosts"))?;
    assert_eq!(r.status(), 404, "only the agent API without TLS");
    untrusting.wait_for_line("certificate", Duration::from_secs(30))?;
    assert!(
        !found.iter().any(|h| h["hostname"] == "tls-2"),
        "an agent without the CA enrolled: {found:?}"
    );
    assert!(!server.log().contains("local agent does not run"));

    // A bad ca_file is a clear configuration error.
    std::fs::write(dir.path().join("junk.pem"), "not a certificate")?;
    let out = Command::new(binary("metrolog-agent"))
        .args([
            "--server",
            &url,
            "--enroll-token",
            ENROLL_TOKEN,
            "--ca-file",
        ])
        .arg(dir.path().join("junk.pem"))
        .arg("--state-dir")
        .arg(dir.path().join("junk-state"))
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("ca_file: "), "{err}");
    Ok(())
}
