//! The check runner and scheduler against real Nagios plugins (Debian's
//! monitoring-plugins-basic) and against scripts that misbehave: hang, fork
//! and exit, print megabytes, die by a signal.

use metrolog_agent::checks::runner::{self, TRUNCATED_MARK};
use metrolog_agent::checks::{CheckBook, Checks};
use metrolog_agent::config::CheckConfig;
use metrolog_protocol::nagios::{perfdata, CheckStatus, MAX_OUTPUT_BYTES};
use std::path::Path;
use std::time::{Duration, Instant};

const PLUGINS: &str = "/usr/lib/nagios/plugins";

/// A plugin of monitoring-plugins-basic; a missing one fails the test.
fn plugin(name: &str) -> String {
    let path = format!("{PLUGINS}/{name}");
    assert!(
        Path::new(&path).exists(),
        "{path} is missing: install the Debian package monitoring-plugins-basic \
         (apt-get install monitoring-plugins-basic)"
    );
    path
}

fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

fn script(dir: &Path, name: &str, body: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.to_string_lossy().into_owned()
}

/// Whether process `pid` exists (a zombie counts: it was not reaped).
fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn read_pid(path: &Path) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Ok(pid) = text.trim().parse() {
                return pid;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} never written",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (bounded) for `pid` to be gone: killing is asynchronous.
async fn gone(pid: u32) -> bool {
    for _ in 0..100 {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

const T: Duration = Duration::from_secs(10);

#[tokio::test]
async fn check_dummy_gives_each_status_and_its_text() {
    let dummy = plugin("check_dummy");
    for (code, status, text) in [
        ("0", CheckStatus::Ok, "OK: all good"),
        ("1", CheckStatus::Warning, "WARNING: all good"),
        ("2", CheckStatus::Critical, "CRITICAL: all good"),
        ("3", CheckStatus::Unknown, "UNKNOWN: all good"),
    ] {
        let r = runner::run(&argv(&[&dummy, code, "all good"]), T).await;
        assert_eq!((r.status, r.judged), (status, true), "{r:?}");
        assert_eq!(r.output, text);
        assert!(!r.truncated);
    }
}

#[tokio::test]
async fn real_plugins_give_their_perfdata() {
    let cases: [(&str, Vec<&str>, &[&str]); 3] = [
        (
            "check_load",
            vec!["-w", "1000,1000,1000", "-c", "2000,2000,2000"],
            &["load1", "load5", "load15"],
        ),
        ("check_disk", vec!["-w", "1", "-c", "1", "-p", "/"], &["/"]),
        (
            "check_procs",
            vec!["-w", "1000000", "-c", "2000000"],
            &["procs"],
        ),
    ];
    for (name, args, labels) in cases {
        let mut cmd = vec![plugin(name)];
        cmd.extend(args.iter().map(|s| s.to_string()));
        let r = runner::run(&cmd, T).await;
        assert_eq!(r.status, CheckStatus::Ok, "{name}: {r:?}");
        let p = perfdata::parse(&r.perfdata);
        assert_eq!(p.skipped, 0, "{name}: {:?}", p.first_skipped);
        let got: Vec<&str> = p.items.iter().map(|i| i.label.as_str()).collect();
        assert_eq!(got, labels, "{name}: {}", r.perfdata);
        assert!(p.items.iter().all(|i| i.value.is_some()));
    }
}

#[tokio::test]
async fn check_tcp_against_a_port_opened_then_closed() {
    let tcp = plugin("check_tcp");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let cmd = argv(&[&tcp, "-H", "127.0.0.1", "-p", &port, "-t", "5"]);
    let r = runner::run(&cmd, T).await;
    assert_eq!(r.status, CheckStatus::Ok, "{r:?}");
    assert!(r.output.starts_with("TCP OK"), "{}", r.output);
    let time = &perfdata::parse(&r.perfdata).items[0];
    assert_eq!((time.label.as_str(), time.uom.as_str()), ("time", "s"));
    drop(listener);
    let r = runner::run(&cmd, T).await;
    assert_eq!(r.status, CheckStatus::Critical, "{r:?}");
    assert!(r.output.contains("Connection refused"), "{}", r.output);
}

#[tokio::test]
async fn a_hanging_plugin_times_out_and_its_group_is_killed_and_reaped() {
    let dir = tempfile::tempdir().unwrap();
    let child_pid = dir.path().join("child.pid");
    // Ignores SIGTERM, so the SIGKILL after the grace is what ends it, and
    // leaves a child of its own in the group.
    let hang = script(
        dir.path(),
        "hang",
        &format!(
            "trap '' TERM\necho 'still thinking'\nsleep 300 &\necho $! > {}\nwait\nsleep 300",
            child_pid.display()
        ),
    );
    let started = Instant::now();
    let r = runner::run(&argv(&[&hang]), Duration::from_millis(700)).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(r.status, CheckStatus::Unknown);
    assert_eq!(r.output, "check timed out after 700ms");
    assert_eq!(r.long_output, "still thinking");
    let pid = r.pid.expect("started");
    assert!(
        gone(pid).await,
        "plugin {pid} still exists (zombie or alive)"
    );
    let child = read_pid(&child_pid);
    assert!(gone(child).await, "the plugin's child {child} survived");
}

#[tokio::test]
async fn a_plugin_that_forks_a_child_holding_stdout_and_exits_does_not_hang() {
    let dir = tempfile::tempdir().unwrap();
    let child_pid = dir.path().join("child.pid");
    let fork = script(
        dir.path(),
        "fork",
        &format!(
            "sleep 300 &\necho $! > {}\necho 'OK - forked | t=5ms'\nexit 0",
            child_pid.display()
        ),
    );
    let started = Instant::now();
    let r = runner::run(&argv(&[&fork]), T).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        (r.status, r.output.as_str()),
        (CheckStatus::Ok, "OK - forked")
    );
    assert_eq!(r.perfdata, "t=5ms");
    assert!(gone(r.pid.unwrap()).await);
    let child = read_pid(&child_pid);
    assert!(
        gone(child).await,
        "the child {child} holding stdout survived"
    );
}

#[tokio::test]
async fn ten_megabytes_of_output_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let loud = script(
        dir.path(),
        "loud",
        "echo 'WARNING - loud | n=1'\nhead -c 10000000 /dev/zero | tr '\\0' 'x'\nexit 1",
    );
    let r = runner::run(&argv(&[&loud]), T).await;
    assert_eq!(r.status, CheckStatus::Warning, "{}", r.output);
    assert_eq!(r.output, "WARNING - loud");
    assert!(r.truncated);
    assert!(r.long_output.ends_with(TRUNCATED_MARK));
    let total = r.output.len() + r.long_output.len() + r.perfdata.len();
    assert!(total <= MAX_OUTPUT_BYTES, "{total} bytes kept");
    assert!(total > MAX_OUTPUT_BYTES / 2, "{total} bytes kept");
}

#[tokio::test]
async fn missing_binaries_odd_exit_codes_and_signals_are_unknown_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let r = runner::run(&argv(&["/nonexistent/check_nothing", "-x"]), T).await;
    assert_eq!(r.status, CheckStatus::Unknown);
    assert_eq!(
        r.output,
        "cannot run /nonexistent/check_nothing: No such file or directory"
    );
    let not_exec = dir.path().join("plain");
    std::fs::write(&not_exec, "echo hi").unwrap();
    let r = runner::run(&[not_exec.to_string_lossy().into_owned()], T).await;
    assert_eq!(r.status, CheckStatus::Unknown);
    assert!(
        r.output.ends_with("plain: Permission denied"),
        "{}",
        r.output
    );

    let seven = script(dir.path(), "seven", "echo 'what now'\nexit 7");
    let r = runner::run(&argv(&[&seven]), T).await;
    assert_eq!(
        (r.status, r.output.as_str()),
        (CheckStatus::Unknown, "exit code 7: what now")
    );

    let shell_missing = argv(&["/bin/sh", "-c", "/nonexistent/check_x"]);
    let r = runner::run(&shell_missing, T).await;
    assert_eq!(r.status, CheckStatus::Unknown);
    assert!(r.output.starts_with("exit code 127: "), "{}", r.output);

    let killed = script(dir.path(), "killed", "echo 'about to die'\nkill -9 $$");
    let r = runner::run(&argv(&[&killed]), T).await;
    assert_eq!(r.status, CheckStatus::Unknown);
    assert_eq!(r.output, "killed by signal 9: about to die");
}

/// The scheduler: OK, then soft CRITICAL at the retry interval up to the
/// hard state, then OK again, each result in the book for the next batch
/// with its perfdata as a series.
#[tokio::test]
async fn soft_then_hard_then_ok_through_the_scheduler() {
    let dummy = plugin("check_dummy");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::write(&state, "0").unwrap();
    let flip = script(
        dir.path(),
        "flip",
        &format!(
            "s=$(cat {})\nexec {dummy} $s \"state $s | t=${{s}}00ms\"",
            state.display()
        ),
    );
    let book = std::sync::Arc::new(CheckBook::default());
    let config = CheckConfig {
        name: "flip".into(),
        command: vec![flip],
        interval: Duration::from_secs(1),
        retry_interval: Duration::from_secs(1),
        timeout: Duration::from_secs(5),
        max_attempts: 3,
        shell: false,
    };
    let checks = Checks::start(vec![config], None, book.clone());
    let mut seen: Vec<(CheckStatus, u32, bool)> = Vec::new();
    let mut series = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let (results, metrics) = book.take_batch();
        series.extend(metrics);
        for r in results {
            assert_eq!(r.name.as_str(), "flip");
            seen.push((r.status, r.attempt, r.is_hard()));
            match seen.len() {
                1 => std::fs::write(&state, "2").unwrap(),
                4 => std::fs::write(&state, "0").unwrap(),
                _ => {}
            }
        }
        if seen.len() >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    checks.stop().await;
    use CheckStatus::*;
    assert_eq!(
        seen[..5],
        [
            (Ok, 1, true),
            (Critical, 1, false),
            (Critical, 2, false),
            (Critical, 3, true),
            (Ok, 1, true)
        ]
    );
    let t: Vec<f64> = series
        .iter()
        .filter(|s| s.key.name.as_str() == "check.flip.t")
        .flat_map(|s| s.buckets.iter().map(|b| b.last))
        .collect();
    assert!(t.len() >= 4, "{series:?}");
    assert!(t.contains(&0.2), "{t:?}");
}
