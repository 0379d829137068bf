//! The binary's command line: check-config and start-up errors.

use std::process::Command;

fn agent() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_metrolog-agent"));
    // The tests' own environment must not leak into the agent's configuration.
    for (k, _) in std::env::vars() {
        if k.starts_with("METROLOG_AGENT_") {
            c.env_remove(k);
        }
    }
    c
}

#[test]
fn check_config_accepts_the_example() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/agent.example.toml");
    let out = agent().args(["check-config", example]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "config OK");
}

#[test]
fn check_config_prints_every_error_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(
        &path,
        "server = \"gopher://x\"\nbogus = 1\n[metrics]\nship_interval = \"soon\"\n[[checks]]\nname = \"Bad Name\"\ncommand = [\"/bin/true\"]\n",
    )
    .unwrap();
    let out = agent().arg("check-config").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    // Parse errors and semantic errors come together, each once.
    for key in [
        "bogus",
        "metrics.ship_interval",
        "server[0]",
        "checks[0].name",
    ] {
        assert_eq!(
            err.matches(&format!("error: {key}:")).count(),
            1,
            "{key} in {err}"
        );
    }
    assert_eq!(err.lines().count(), 4, "{err}");
}

#[test]
fn unwritable_state_dir_is_one_line_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    let out = agent()
        .args([
            "--server",
            "http://127.0.0.1:9",
            "--enroll-token",
            "t",
            "--state-dir",
        ])
        .arg(file.join("state"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(errors[0].contains("not writable"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn env_supplies_what_flags_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    // No --server flag: the env's server is used (and the bad state dir from the
    // env is reported, proving the env was read).
    let out = agent()
        .env("METROLOG_AGENT_SERVER", "http://127.0.0.1:9")
        .env("METROLOG_AGENT_ENROLL_TOKEN", "t")
        .env("METROLOG_AGENT_STATE_DIR", file.join("state"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("not writable"), "{err}");
    let out = agent().output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("error: server:"), "{err}");
}
