//! The agent's logs end to end: a file tailed through 50 rotations of each
//! kind and an agent restart, every line stored exactly once; the local
//! syslog receiver fed by util-linux `logger`.

use metrolog_e2e::{eventually, logger, start_agent, stored_logs, Api, Proc, Server};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

const FAST: [&str; 4] = ["--sample-interval", "200ms", "--ship-interval", "1s"];
const ROTATIONS_EACH: u32 = 50;
const LINES_PER_ROTATION: u32 = 60;

fn line(seq: u32) -> String {
    format!("{seq:07} e2e tail line, padded to look like a real log line")
}

/// Appends lines to `logs/app.log` and rotates it every
/// [`LINES_PER_ROTATION`] lines, alternately by rename and by copytruncate,
/// [`ROTATIONS_EACH`] times each; rotation `n` (from 0) waits, lines going
/// on meanwhile, until `allowed` is above `n`. Sends `report` the number
/// of rotations done after each one. Returns the number of lines written.
fn writer(dir: PathBuf, allowed: Arc<AtomicU32>, report: mpsc::Sender<u32>) -> anyhow::Result<u32> {
    let path = dir.join("app.log");
    let open = |p: &Path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
    };
    let mut file = open(&path)?;
    let mut seq = 0;
    let mut done = 0;
    while done < 2 * ROTATIONS_EACH {
        for _ in 0..LINES_PER_ROTATION {
            writeln!(file, "{}", line(seq))?;
            seq += 1;
            std::thread::sleep(Duration::from_micros(2500));
        }
        if done >= allowed.load(Ordering::SeqCst) {
            continue;
        }
        let rotated = dir.join(format!("app.log.{done}"));
        if done % 2 == 0 {
            std::fs::rename(&path, &rotated)?;
            file = open(&path)?;
        } else {
            std::fs::copy(&path, &rotated)?;
            file.set_len(0)?;
        }
        done += 1;
        let _ = report.send(done);
    }
    // A last partial line, completed a moment later.
    write!(file, "{}", &line(seq)[..10])?;
    file.flush()?;
    std::thread::sleep(Duration::from_millis(300));
    writeln!(file, "{}", &line(seq)[10..])?;
    Ok(seq + 1)
}

fn agent_config(dir: &Path, body: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join("agent.toml");
    std::fs::write(&path, body)?;
    Ok(path)
}

fn start(server: &Server, dir: &Path, config: &Path, host: &str) -> anyhow::Result<Proc> {
    let mut args: Vec<&str> = FAST.to_vec();
    let config = config.to_str().unwrap();
    args.extend(["--config", config]);
    start_agent(server, host, "logs", &dir.join("state"), &args)
}

/// Waits until the writer reports its `n`th rotation.
fn wait_rotations(rotated: &mpsc::Receiver<u32>, n: u32) -> anyhow::Result<()> {
    let timeout = Duration::from_secs(120);
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rotated.recv_timeout(left) {
            Ok(done) if done >= n => return Ok(()),
            Ok(_) => {}
            Err(e) => anyhow::bail!("the writer did not rotate {n} times within {timeout:?}: {e}"),
        }
    }
}

/// Waits until `agent` has `file` open: tailed from its start (new, or
/// rotated while the agent was down) or resumed at its saved offset. The
/// agent's first lines ("starting as") come before its tailer runs.
fn wait_until_tailing(agent: &mut Proc, file: &Path) -> anyhow::Result<String> {
    let file = file.display().to_string();
    let (tailing, resuming) = (
        format!("tailing {file}"),
        format!("resuming {file} at byte "),
    );
    agent.wait_for_line_where(
        &format!("tailing or resuming {file}"),
        Duration::from_secs(30),
        |l| l.trim_end().ends_with(&tailing) || l.contains(&resuming),
    )
}

#[test]
fn tailing_through_rotations_and_a_restart_stores_every_line_once() -> anyhow::Result<()> {
    let server = Server::start(&["--no-local-agent"])?;
    let api = Api::new(&server.url, &server.token("viewer")?);
    let dir = tempfile::tempdir()?;
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs)?;
    let config = agent_config(
        dir.path(),
        &format!(
            "[logs]\npoll_interval = \"50ms\"\n[[logs.files]]\npath = \"{}/*.log\"\napp = \"tailed\"\n",
            logs.display()
        ),
    )?;
    // The agent follows one rotation while it is down (docs/agent-logs.md),
    // not two; its first lines ("starting as") come before its tailer runs,
    // and it sees a rotation only at its next poll. So the writer starts once
    // the agent tails the file, and rotates while the agent is down exactly
    // once: after the agent saw the rotation before, and before the
    // restarted agent holds the file again.
    let app_log = logs.join("app.log");
    std::fs::File::create(&app_log)?;
    let mut agent = start(&server, dir.path(), &config, "tail-1")?;
    wait_until_tailing(&mut agent, &app_log)?;

    let allowed = Arc::new(AtomicU32::new(ROTATIONS_EACH));
    let (rotated_tx, rotated) = mpsc::channel();
    let writing = {
        let (logs, allowed) = (logs.clone(), allowed.clone());
        std::thread::spawn(move || writer(logs, allowed, rotated_tx))
    };

    // Restart in the middle: SIGTERM once the agent saw the last rotation
    // before the stop (a copytruncate), one rotation (a rename) while it is
    // down, then the same state directory again.
    let last_before = ROTATIONS_EACH - 1;
    agent.wait_for_line(
        &format!(
            "{} was truncated; reading its last lines from {}.{last_before}",
            app_log.display(),
            app_log.display()
        ),
        Duration::from_secs(120),
    )?;
    agent.terminate();
    let status = agent.wait_exit(Duration::from_secs(20))?;
    anyhow::ensure!(
        status.success(),
        "agent exited with {status}:\n{}",
        agent.log()
    );
    let first_run = agent.log();
    allowed.store(ROTATIONS_EACH + 1, Ordering::SeqCst);
    wait_rotations(&rotated, ROTATIONS_EACH + 1)?;
    let mut agent = start(&server, dir.path(), &config, "tail-1")?;
    wait_until_tailing(&mut agent, &app_log)?;
    allowed.store(2 * ROTATIONS_EACH, Ordering::SeqCst);

    let written = writing
        .join()
        .map_err(|_| anyhow::anyhow!("writer panicked"))??;
    assert_eq!(rotated.try_iter().last(), Some(2 * ROTATIONS_EACH));

    let started = Instant::now();
    let counts = eventually(Duration::from_secs(60), || {
        let records = stored_logs(&server, &api, "tail-1", Some("tailed"))?;
        let mut counts: HashMap<String, u32> = HashMap::new();
        for r in &records {
            *counts
                .entry(r["message"].as_str().unwrap_or_default().to_string())
                .or_default() += 1;
        }
        Ok((records.len() >= written as usize).then_some(counts))
    })
    .map_err(|e| anyhow::anyhow!("{e}\nfirst run:\n{first_run}\nsecond run:\n{}", agent.log()))?;
    let missing: Vec<u32> = (0..written)
        .filter(|s| !counts.contains_key(&line(*s)))
        .collect();
    let twice: Vec<(&String, &u32)> = counts.iter().filter(|(_, n)| **n > 1).collect();
    let strangers: Vec<&String> = counts
        .keys()
        .filter(|m| !(0..written).any(|s| line(s) == **m))
        .take(5)
        .collect();
    assert!(
        missing.is_empty() && twice.is_empty() && strangers.is_empty(),
        "{} lines written: {} missing (first {:?}), {} stored more than once (e.g. {:?}), \
         unexpected {:?}\nfirst run:\n{first_run}\nsecond run:\n{}",
        written,
        missing.len(),
        &missing[..missing.len().min(10)],
        twice.len(),
        &twice[..twice.len().min(5)],
        strangers,
        agent.log()
    );
    eprintln!(
        "{written} lines through {} rotations and a restart, all stored once ({:.1}s after the writer ended)",
        2 * ROTATIONS_EACH,
        started.elapsed().as_secs_f64()
    );
    // Quiet again: no duplicate shows up late.
    std::thread::sleep(Duration::from_millis(1500));
    let again = stored_logs(&server, &api, "tail-1", Some("tailed"))?;
    assert_eq!(again.len(), written as usize);
    agent.terminate();
    agent.wait_exit(Duration::from_secs(20))?;
    Ok(())
}

#[test]
fn local_syslog_receiver_takes_logger_over_unix_socket_and_udp() -> anyhow::Result<()> {
    let server = Server::start(&["--no-local-agent"])?;
    let api = Api::new(&server.url, &server.token("viewer")?);
    let dir = tempfile::tempdir()?;
    let sock = dir.path().join("run/log.sock");
    let port = std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let config = agent_config(
        dir.path(),
        &format!(
            "[logs.syslog]\nunix = \"{}\"\nudp = \"127.0.0.1:{port}\"\n\
             [logs.filter]\nexclude = [\"healthcheck\"]\n",
            sock.display()
        ),
    )?;
    let mut agent = start(&server, dir.path(), &config, "syslog-1")?;
    agent.wait_for_line("local syslog receiver on udp", Duration::from_secs(30))?;
    let sock_arg = sock.to_str().unwrap();
    let port_arg = port.to_string();
    logger(&[
        "--socket-errors=on",
        "-u",
        sock_arg,
        "-t",
        "unixapp",
        "-p",
        "local0.info",
        "healthcheck ok",
    ])?;
    logger(&[
        "--socket-errors=on",
        "-u",
        sock_arg,
        "-t",
        "unixapp",
        "-p",
        "local0.warning",
        "hello over the unix socket",
    ])?;
    logger(&[
        "-n",
        "127.0.0.1",
        "-P",
        &port_arg,
        "-d",
        "-t",
        "udpapp",
        "-p",
        "user.err",
        "hello over udp",
    ])?;
    logger(&[
        "-n",
        "127.0.0.1",
        "-P",
        &port_arg,
        "-d",
        "--rfc5424",
        "-t",
        "udpapp5424",
        "-p",
        "daemon.debug",
        "hello in rfc 5424",
    ])?;

    let records = eventually(Duration::from_secs(30), || {
        let records = stored_logs(&server, &api, "syslog-1", None)?;
        Ok(
            (records.len() >= 3 && records.iter().any(|r| r["app_name"] == "udpapp5424"))
                .then_some(records),
        )
    })
    .map_err(|e| anyhow::anyhow!("{e}\nagent:\n{}", agent.log()))?;
    let find = |msg: &str| -> Vec<&serde_json::Value> {
        records.iter().filter(|r| r["message"] == msg).collect()
    };
    for (msg, app, sev) in [
        ("hello over the unix socket", "unixapp", "warning"),
        ("hello over udp", "udpapp", "err"),
        ("hello in rfc 5424", "udpapp5424", "debug"),
    ] {
        let found = find(msg);
        assert_eq!(found.len(), 1, "{msg:?} stored once: {records:#?}");
        assert_eq!(found[0]["app_name"], app, "{:#}", found[0]);
        assert_eq!(found[0]["severity"], sev, "{:#}", found[0]);
    }
    assert!(find("healthcheck ok").is_empty(), "filtered at the source");
    assert_eq!(records.len(), 3, "{records:#?}");

    agent.terminate();
    agent.wait_exit(Duration::from_secs(20))?;
    assert!(!sock.exists(), "the socket file is removed at exit");
    Ok(())
}
