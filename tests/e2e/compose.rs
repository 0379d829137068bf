//! docker-compose.yml and the Dockerfile against the current binaries, with
//! no container engine (none runs here): Debian's `docker-compose` parses and
//! validates the file (`docker-compose config`), every `METROLOG_*` variable
//! the file and the Dockerfile set is one the binaries read, the demo's
//! server configuration passes `check-config`, and the server started with
//! the file's environment enrolls the two agents run with the file's
//! arguments into group `web`.

use anyhow::{anyhow, ensure, Context, Result};
use metrolog_e2e::{binary, eventually, Api, Proc};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const PACKAGE: &str = "the Debian package docker-compose (apt-get install docker-compose)";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `docker-compose config` of the repository's file, as JSON.
fn compose_config() -> Result<Value> {
    let out = Command::new("docker-compose")
        .args(["--project-directory", "."])
        .args(["-f", "docker-compose.yml", "config"])
        .current_dir(repo())
        .output()
        .with_context(|| format!("docker-compose is missing: install {PACKAGE}"))?;
    ensure!(
        out.status.success(),
        "docker-compose config refuses docker-compose.yml: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // docker-compose is Python and brings PyYAML: the normalized YAML as JSON.
    let mut py = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("python3 (a dependency of {PACKAGE})"))?;
    py.stdin
        .take()
        .ok_or_else(|| anyhow!("no stdin"))?
        .write_all(&out.stdout)?;
    let json = py.wait_with_output()?;
    ensure!(
        json.status.success(),
        "{}",
        String::from_utf8_lossy(&json.stderr)
    );
    Ok(serde_json::from_slice(&json.stdout)?)
}

/// The `env: NAME` entries of a binary's `--help`.
fn env_names(bin: &str) -> Result<Vec<String>> {
    let out = Command::new(binary(bin)).arg("--help").output()?;
    let help = String::from_utf8_lossy(&out.stdout).to_string();
    Ok(help
        .split("env: ")
        .skip(1)
        .filter_map(|s| s.split(['=', ']']).next())
        .map(str::to_string)
        .collect())
}

/// `ENV` keys of the Dockerfile's final stage.
fn dockerfile_env() -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(repo().join("Dockerfile"))?.replace("\\\n", " ");
    let last = text
        .rsplit("\nFROM ")
        .next()
        .ok_or_else(|| anyhow!("no stage"))?;
    Ok(last
        .lines()
        .filter_map(|l| l.trim().strip_prefix("ENV "))
        .flat_map(|l| {
            l.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        })
        .collect())
}

#[test]
fn docker_compose_parses_the_demo_and_its_settings_run_on_the_current_binaries() -> Result<()> {
    let config = compose_config()?;
    let services = config["services"]
        .as_object()
        .ok_or_else(|| anyhow!("no services: {config}"))?;
    let mut names: Vec<&str> = services.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["server", "web-1", "web-2", "webhook"]);

    // Every METROLOG_* the file and the image set is read by the server
    // (clap's env list), or by its first start (admin password, token).
    let server_env = services["server"]["environment"]
        .as_object()
        .ok_or_else(|| anyhow!("server has no environment"))?;
    let image_env = dockerfile_env()?;
    ensure!(!image_env.is_empty(), "the Dockerfile sets no ENV");
    let known = env_names("metrolog-server")?;
    for key in server_env
        .keys()
        .cloned()
        .chain(image_env.iter().map(|(k, _)| k.clone()))
    {
        ensure!(
            known.contains(&key)
                || ["METROLOG_ADMIN_PASSWORD", "METROLOG_ENROLL_TOKEN"].contains(&key.as_str()),
            "{key} is set for the server but no server option reads it (known: {known:?})"
        );
    }
    // The configuration file mounted into the server passes check-config.
    // The file the server is told to read (METROLOG_CONFIG) is mounted
    // from the repository; compose v1 writes volumes as `source:target:mode`.
    let target = server_env["METROLOG_CONFIG"]
        .as_str()
        .ok_or_else(|| anyhow!("the server is given no METROLOG_CONFIG"))?;
    let toml = services["server"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|v| match v {
            Value::String(s) => {
                let parts: Vec<&str> = s.split(':').collect();
                (parts.get(1) == Some(&target)).then(|| PathBuf::from(parts[0]))
            }
            v => (v["target"] == target).then(|| PathBuf::from(v["source"].as_str().unwrap_or(""))),
        })
        .ok_or_else(|| anyhow!("nothing mounted at {target}: {}", services["server"]))?;
    ensure!(
        toml.is_file(),
        "{} is not in the repository",
        toml.display()
    );
    let check = Command::new(binary("metrolog-server"))
        .arg("check-config")
        .arg(&toml)
        .output()?;
    ensure!(
        check.status.success(),
        "check-config {}: {}",
        toml.display(),
        String::from_utf8_lossy(&check.stderr)
    );

    // The server with the file's environment (and the image's), on a port
    // and a directory of the test's own.
    let data = tempfile::tempdir()?;
    let mut cmd = Command::new(binary("metrolog-server"));
    for (k, v) in &image_env {
        cmd.env(k, v);
    }
    for (k, v) in server_env {
        cmd.env(k, v.as_str().unwrap_or_default());
    }
    cmd.env("METROLOG_CONFIG", &toml)
        .env("METROLOG_DATA_DIR", data.path())
        .env("METROLOG_LISTEN", "127.0.0.1:0")
        .env("METROLOG_SYSLOG_UDP", "off")
        .env("METROLOG_SYSLOG_TCP", "off");
    let mut server = Proc::spawn("metrolog-server (compose environment)", cmd)?;
    let line = server.wait_for_line("Dashboard: http://", Duration::from_secs(30))?;
    let url = line
        .split("Dashboard: ")
        .nth(1)
        .ok_or_else(|| anyhow!("{line}"))?
        .trim()
        .trim_end_matches('/')
        .to_string();

    // The agents with the file's entrypoint and arguments, the server's
    // address and a state directory replaced.
    let mut agents = Vec::new();
    let mut states = Vec::new();
    for name in ["web-1", "web-2"] {
        let svc = &services[name];
        ensure!(
            svc["entrypoint"] == serde_json::json!(["metrolog-agent"]),
            "{name}: {svc}"
        );
        let state = tempfile::tempdir()?;
        let args: Vec<String> = svc["command"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|a| match a.split_once('=') {
                Some(("--server", _)) => format!("--server={url}"),
                Some(("--state-dir", _)) => format!("--state-dir={}", state.path().display()),
                _ => a.to_string(),
            })
            .collect();
        ensure!(
            args.iter().any(|a| a.starts_with("--enroll-token=")),
            "{name}: {args:?}"
        );
        let mut cmd = Command::new(binary("metrolog-agent"));
        cmd.args(&args).current_dir(state.path());
        agents.push(Proc::spawn(name, cmd)?);
        states.push(state);
    }
    let out = Command::new(binary("metrolog-server"))
        .args(["token", "create", "--role", "viewer"])
        .env("METROLOG_DATA_DIR", data.path())
        .output()?;
    let api = Api::new(&url, String::from_utf8(out.stdout)?.trim());
    let hosts = eventually(Duration::from_secs(40), || {
        let (_, v) = api.get("/api/v1/hosts?group=web")?;
        let mut names: Vec<String> = v
            .as_array()
            .into_iter()
            .flatten()
            .filter(|h| h["state"] == "up")
            .filter_map(|h| h["hostname"].as_str().map(String::from))
            .collect();
        names.sort();
        Ok((names.len() == 2).then_some(names))
    })
    .map_err(|e| {
        let logs: Vec<String> = agents.iter_mut().map(Proc::log).collect();
        anyhow!("the demo agents never enrolled: {e}\n{}", logs.join("\n"))
    })?;
    assert_eq!(hosts, ["web-1", "web-2"]);
    // The demo's scaling policy and hook came with the file.
    let (_, policies) = api.get("/api/v1/scaling/policies")?;
    ensure!(
        policies.to_string().contains("web-cpu"),
        "the demo policy: {policies}"
    );
    for a in &agents {
        a.terminate();
    }
    server.terminate();
    let _ = server.wait_exit(Duration::from_secs(20));
    Ok(())
}
