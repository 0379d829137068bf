//! What an operator sees when starting the server: the local agent on first
//! run, clear errors for a bad configuration or an unusable data directory.

use metrolog_e2e::{binary, eventually, Api, Server};
use std::process::Command;
use std::time::Duration;

#[test]
fn first_start_shows_the_local_host() -> anyhow::Result<()> {
    let mut server = Server::start(&[])?;
    let api = Api::new(&server.url, &server.token("viewer")?);
    // The promise: the dashboard shows the local host within 15 s.
    eventually(Duration::from_secs(15), || {
        let (_, groups) = api.get("/api/v1/overview")?;
        let local = groups
            .as_array()
            .and_then(|g| g.iter().find(|g| g["group"] == "metrolog"))
            .and_then(|g| g["hosts"].get(0).cloned());
        Ok(local.filter(|h| h["state"] == "up" && h["current"]["cpu.busy_pct"].is_number()))
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", server.proc.log()))?;
    // The dashboard itself answers (login page for a stranger).
    let page = reqwest::blocking::get(format!("{}/login", server.url))?;
    assert_eq!(page.status(), 200);
    assert!(page.text()?.contains("Log in"));
    // On shutdown the local agent leaves.
    server.proc.terminate();
    assert!(server.proc.wait_exit(Duration::from_secs(20))?.success());
    Ok(())
}

#[test]
fn generated_secrets_are_printed_once() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let run = || -> anyhow::Result<String> {
        let mut cmd = Command::new(binary("metrolog-server"));
        cmd.args([
            "--listen",
            "127.0.0.1:0",
            "--no-local-agent",
            "--syslog-udp",
            "off",
            "--syslog-tcp",
            "off",
        ])
        .arg("--data-dir")
        .arg(dir.path());
        let mut p = metrolog_e2e::Proc::spawn("server", cmd)?;
        p.wait_for_line("Dashboard:", Duration::from_secs(30))?;
        p.terminate();
        p.wait_exit(Duration::from_secs(20))?;
        Ok(p.log())
    };
    let first = run()?;
    assert!(
        first.contains("created user `admin` with password"),
        "{first}"
    );
    assert!(
        first.contains("Enrollment token for agents:  mlg_"),
        "{first}"
    );
    let second = run()?;
    assert!(!second.contains("password"), "{second}");
    assert!(!second.contains("mlg_"), "{second}");
    Ok(())
}

#[test]
fn bad_config_reports_every_problem() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("server.toml");
    std::fs::write(
        &file,
        "listen = \"nowhere\"\nfavourite_colour = \"blue\"\n[hosts]\nexpire_after = \"soon\"\n[syslog]\nudp = \"127.0.0.1:99999\"\n",
    )?;
    let out = Command::new(binary("metrolog-server"))
        .arg("check-config")
        .arg(&file)
        .output()?;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for key in ["listen", "favourite_colour", "hosts", "syslog.udp"] {
        assert!(err.contains(key), "{key} missing from:\n{err}");
    }
    // The server refuses to start with it, with the same messages.
    let out = Command::new(binary("metrolog-server"))
        .arg("--config")
        .arg(&file)
        .output()?;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("favourite_colour"));
    // The committed example is valid.
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/server.example.toml");
    let out = Command::new(binary("metrolog-server"))
        .args(["check-config", example])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[test]
fn unusable_data_dir_is_one_clear_line() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory")?;
    let out = Command::new(binary("metrolog-server"))
        .args(["--listen", "127.0.0.1:0", "--no-local-agent"])
        .arg("--data-dir")
        .arg(file.join("data"))
        .output()?;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].starts_with("error: data directory") && lines[0].contains("not writable"),
        "{err}"
    );
    assert!(!err.contains("panicked"));
    Ok(())
}

#[test]
fn the_agent_and_server_refuse_to_run_on_a_busy_port() -> anyhow::Result<()> {
    let server = Server::start(&["--no-local-agent"])?;
    let addr = server.url.trim_start_matches("http://").to_string();
    let dir = tempfile::tempdir()?;
    let out = Command::new(binary("metrolog-server"))
        .args([
            "--listen",
            &addr,
            "--no-local-agent",
            "--syslog-udp",
            "off",
            "--syslog-tcp",
            "off",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .output()?;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("cannot listen on {addr}")));
    let _ = Api::new(&server.url, "");
    Ok(())
}
