//! The agent's spool and failover end to end (docs/agent-spool.md): a server
//! outage longer than the spool's finest tier, with the agent SIGKILLed and
//! restarted in the middle, costs resolution but no row and no log line;
//! a truncated spool file is set aside; with two servers, agents move to the
//! second when the first dies and come back when it returns.

use anyhow::{anyhow, ensure, Context, Result};
use metrolog_e2e::{binary, eventually, Api, Proc, ENROLL_TOKEN};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) const FAST: [&str; 4] = ["--sample-interval", "200ms", "--ship-interval", "1s"];

pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

pub(crate) fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A server on a fixed port, so that it can be killed and started again at
/// the same address the agents know.
pub(crate) struct FixedServer {
    pub(crate) proc: Proc,
    pub(crate) url: String,
    data: PathBuf,
    port: u16,
}

impl FixedServer {
    pub(crate) fn start(data: &Path, port: u16) -> Result<Self> {
        let mut cmd = Command::new(binary("metrolog-server"));
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data)
            .args([
                "--syslog-udp",
                "off",
                "--syslog-tcp",
                "off",
                "--no-local-agent",
            ])
            .env("METROLOG_ADMIN_PASSWORD", "e2e-admin-password")
            .env("METROLOG_ENROLL_TOKEN", ENROLL_TOKEN);
        let mut proc = Proc::spawn(&format!("metrolog-server :{port}"), cmd)?;
        proc.wait_for_line("Dashboard: http://", Duration::from_secs(30))?;
        Ok(Self {
            proc,
            url: format!("http://127.0.0.1:{port}"),
            data: data.to_path_buf(),
            port,
        })
    }

    pub(crate) fn kill9(&mut self) -> Result<()> {
        self.proc.child.kill()?;
        self.proc.child.wait()?;
        Ok(())
    }

    fn restart(&mut self) -> Result<()> {
        *self = Self::start(&self.data.clone(), self.port)?;
        Ok(())
    }

    pub(crate) fn api(&self) -> Result<Api> {
        let out = Command::new(binary("metrolog-server"))
            .args(["token", "create", "--role", "viewer", "--data-dir"])
            .arg(&self.data)
            .output()?;
        ensure!(
            out.status.success(),
            "token create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(Api::new(&self.url, String::from_utf8(out.stdout)?.trim()))
    }
}

pub(crate) fn start_agent(
    servers: &[&str],
    host: &str,
    state: &Path,
    config: &Path,
) -> Result<Proc> {
    let mut cmd = Command::new(binary("metrolog-agent"));
    for s in servers {
        cmd.args(["--server", s]);
    }
    cmd.args(["--enroll-token", ENROLL_TOKEN])
        .args(["--hostname", host])
        .args(["--group", "spool"])
        .arg("--state-dir")
        .arg(state)
        .arg("--config")
        .arg(config)
        .args(FAST);
    Proc::spawn(&format!("agent {host}"), cmd)
}

fn kill9(p: &mut Proc) -> Result<()> {
    p.child.kill()?;
    p.child.wait()?;
    Ok(())
}

/// Every stored log record of `host` and `app`: message → times stored.
fn stored_lines(api: &Api, host: &str, app: &str) -> Result<HashMap<String, u32>> {
    let mut out = HashMap::new();
    let mut before: Option<String> = None;
    loop {
        let mut path = format!("/api/v1/logs?host={host}&app={app}&limit=1000");
        if let Some(b) = &before {
            path.push_str(&format!("&before={b}"));
        }
        let (status, page) = api.get(&path)?;
        ensure!(status == 200, "GET {path}: {status} {page}");
        for r in page["records"].as_array().context("records")? {
            *out.entry(r["message"].as_str().unwrap_or_default().to_string())
                .or_default() += 1;
        }
        match page["next"].as_str() {
            Some(n) => before = Some(n.to_string()),
            None => return Ok(out),
        }
    }
}

/// `(ts, value)` rows of `name` on `host` over `[from, to]` at `step`.
pub(crate) fn rows(
    api: &Api,
    host: &str,
    name: &str,
    from: i64,
    to: i64,
    step: u32,
    cf: &str,
) -> Result<Vec<(i64, Option<f64>)>> {
    let (status, v) = api.get(&format!(
        "/api/v1/query?host={host}&name={name}&from={from}&to={to}&step={step}&cf={cf}"
    ))?;
    ensure!(status == 200, "query {name}: {status} {v}");
    Ok(v["series"][0]["points"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| (p[0].as_i64().unwrap_or_default(), p[1].as_f64()))
                .collect()
        })
        .unwrap_or_default())
}

/// The whole minutes of `[start, end]` (rows `T` covering `(T - 60, T]`), at
/// least one: when the span holds none, the minute after `start`, waited for
/// until it is complete and shipped.
fn whole_minutes(start: i64, end: i64) -> (i64, i64) {
    let from = (start / 60 + 1) * 60;
    let to = ((end / 60) * 60).max(from + 60);
    while now() < to + 12 {
        std::thread::sleep(Duration::from_millis(200));
    }
    (from, to)
}

fn line(seq: u32) -> String {
    format!("{seq:07} spooled line, padded to look like a real log line")
}

/// Appends a line every 20 ms until `stop`; returns how many.
fn writer(path: PathBuf, stop: Arc<AtomicBool>) -> Result<u32> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let mut seq = 0;
    while !stop.load(Ordering::SeqCst) {
        writeln!(f, "{}", line(seq))?;
        seq += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(seq)
}

fn spool_config(dir: &Path, logs: &Path) -> Result<PathBuf> {
    let path = dir.join("agent.toml");
    std::fs::write(
        &path,
        format!(
            "[logs]\npoll_interval = \"100ms\"\n\
             [[logs.files]]\npath = \"{}/*.log\"\napp = \"spooled\"\n\
             [spool]\nsegment_bytes = \"8KiB\"\nreplay_rate = 50\n\
             [[spool.tiers]]\nafter = \"6s\"\nstep = \"1m\"\n",
            logs.display()
        ),
    )?;
    Ok(path)
}

fn segments(state: &Path, suffix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(state.join("spool"))
        .map(|rd| {
            rd.flatten()
                .map(|d| d.path())
                .filter(|p| p.to_string_lossy().ends_with(suffix))
                .collect()
        })
        .unwrap_or_default()
}

/// The server is SIGKILLed for 75 s (longer than the spool's finest tier of
/// 6 s and than one 1-minute step); halfway, the agent is SIGKILLed and
/// started again. Once the server is back: every line written to the tailed
/// file is stored exactly once, and every minute of the outage has a value
/// and every 10 s row for the agent's series: re-consolidated (the agent
/// reports it) rather than dropped. About 100 s.
#[test]
fn an_outage_with_the_agent_killed_midway_costs_resolution_not_data() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs)?;
    let state = dir.path().join("state");
    let config = spool_config(dir.path(), &logs)?;
    let mut server = FixedServer::start(&dir.path().join("data"), free_port()?)?;
    let api = server.api()?;
    let url = server.url.clone();
    let mut agent = start_agent(&[&url], "spool-1", &state, &config)?;
    agent.wait_for_line("shipping to", Duration::from_secs(30))?;

    let stop = Arc::new(AtomicBool::new(false));
    let writing = {
        let (path, stop) = (logs.join("app.log"), stop.clone());
        std::thread::spawn(move || writer(path, stop))
    };
    eventually(Duration::from_secs(30), || {
        Ok((stored_lines(&api, "spool-1", "spooled")?.len() >= 20).then_some(()))
    })?;

    let down_at = now();
    server.kill9()?;
    agent.wait_for_line("server unreachable", Duration::from_secs(20))?;
    std::thread::sleep(Duration::from_secs(35));
    ensure!(
        !segments(&state, ".seg").is_empty(),
        "nothing spooled during the outage:\n{}",
        agent.log()
    );
    kill9(&mut agent)?;
    let first_run = agent.log();
    let mut agent = start_agent(&[&url], "spool-1", &state, &config)?;
    agent
        .wait_for_line("from an earlier run", Duration::from_secs(30))
        .map_err(|e| anyhow!("{e}\nfirst run:\n{first_run}"))?;
    while now() < down_at + 75 {
        std::thread::sleep(Duration::from_millis(200));
    }
    server.restart()?;
    let up_at = now();
    let api = server.api()?;
    agent.wait_for_line("server reachable again", Duration::from_secs(90))?;
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    let written = writing.join().map_err(|_| anyhow!("writer panicked"))??;

    // Every line once.
    let started = Instant::now();
    let counts = eventually(Duration::from_secs(60), || {
        let c = stored_lines(&api, "spool-1", "spooled")?;
        Ok((c.values().map(|n| *n as usize).sum::<usize>() >= written as usize).then_some(c))
    })
    .map_err(|e| anyhow!("{e}\nfirst run:\n{first_run}\nsecond run:\n{}", agent.log()))?;
    let missing: Vec<u32> = (0..written)
        .filter(|s| !counts.contains_key(&line(*s)))
        .collect();
    let twice: Vec<(&String, &u32)> = counts.iter().filter(|(_, n)| **n > 1).collect();
    ensure!(
        missing.is_empty() && twice.is_empty() && counts.len() == written as usize,
        "{written} lines written: {} missing (first {:?}), {} stored more than once (e.g. {:?})\n\
         first run:\n{first_run}\nsecond run:\n{}",
        missing.len(),
        &missing[..missing.len().min(10)],
        twice.len(),
        &twice[..twice.len().min(5)],
        agent.log()
    );
    eprintln!(
        "{written} lines through a 75 s outage and an agent SIGKILL, all stored once ({:.1}s after the writer ended)",
        started.elapsed().as_secs_f64()
    );

    // Every minute of the outage has a value (the minutes entirely inside it).
    let (from, to) = whole_minutes(down_at, up_at);
    let minutes = eventually(Duration::from_secs(30), || {
        let r = rows(&api, "spool-1", "load.1m", from, to, 60, "avg")?;
        let known = r
            .iter()
            .filter(|(t, v)| *t > from && *t <= to && v.is_some())
            .count();
        Ok((known as i64 >= (to - from) / 60).then_some(r))
    })
    .map_err(|e| anyhow!("{e}\nsecond run:\n{}", agent.log()))?;
    // Re-consolidated, not dropped: the agent's own count says so, and the
    // 10 s rows of a minute of the outage hold one value.
    let consolidated = rows(
        &api,
        "spool-1",
        "agent.spool.consolidated",
        up_at - 600,
        now() + 10,
        10,
        "max",
    )?;
    ensure!(
        consolidated.iter().any(|(_, v)| v.is_some_and(|v| v > 0.0)),
        "no re-consolidation reported: {consolidated:?}"
    );
    let (f10, t10) = ((down_at / 10 + 1) * 10, (up_at / 10) * 10);
    let fine = rows(&api, "spool-1", "load.1m", f10, t10, 10, "avg")?;
    let known = fine
        .iter()
        .filter(|(t, v)| *t > f10 && *t <= t10 && v.is_some())
        .count() as i64;
    ensure!(
        known >= (t10 - f10) / 10 - 1,
        "10 s rows of the outage missing ({known} of {}): {fine:?}",
        (t10 - f10) / 10
    );
    eprintln!("outage {down_at}..{up_at}: minutes {minutes:?}");
    agent.terminate();
    agent.wait_exit(Duration::from_secs(20))?;
    Ok(())
}

/// A spool file cut short (as by a crash in the middle of a write, or a
/// disk that lost its tail) is set aside with a log line; the agent goes on
/// spooling, and starts cleanly the next time.
#[test]
fn a_truncated_spool_file_is_set_aside() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, "[spool]\nsegment_bytes = \"64KiB\"\n")?;
    // Nobody listens there: every batch stays in the spool.
    let nowhere = format!("http://127.0.0.1:{}", free_port()?);
    let mut agent = start_agent(&[&nowhere], "trunc-1", &state, &config)?;
    agent.wait_for_line("server unreachable", Duration::from_secs(30))?;
    let seg = eventually(Duration::from_secs(30), || {
        Ok(segments(&state, ".seg")
            .into_iter()
            .find(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 2000)))
    })?;
    kill9(&mut agent)?;
    let len = std::fs::metadata(&seg)?.len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)?
        .set_len(len - 7)?;

    let mut agent = start_agent(&[&nowhere], "trunc-1", &state, &config)?;
    let warned = agent.wait_for_line("is damaged", Duration::from_secs(30))?;
    ensure!(warned.contains("set the file aside"), "{warned}");
    ensure!(
        segments(&state, ".corrupt").len() == 1,
        "{:?}",
        segments(&state, "")
    );
    agent.wait_for_line("from an earlier run", Duration::from_secs(10))?;
    // Still running and spooling.
    std::thread::sleep(Duration::from_secs(2));
    ensure!(
        agent.child.try_wait()?.is_none(),
        "agent exited:\n{}",
        agent.log()
    );
    agent.terminate();
    agent.wait_exit(Duration::from_secs(20))?;
    // The next start finds nothing damaged.
    let mut agent = start_agent(&[&nowhere], "trunc-1", &state, &config)?;
    agent.wait_for_line("from an earlier run", Duration::from_secs(30))?;
    agent.terminate();
    agent.wait_exit(Duration::from_secs(20))?;
    let log = agent.log();
    ensure!(!log.contains("is damaged"), "{log}");
    ensure!(segments(&state, ".corrupt").len() == 1);
    Ok(())
}

/// Two servers given: killing the first moves the agent to the second at
/// once (the same request tries it), and once the first is back the agent
/// returns to it within the probe cap (60 s).
#[test]
fn agents_fail_over_to_the_second_server_and_return_to_the_first() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, "")?;
    let mut first = FixedServer::start(&dir.path().join("one"), free_port()?)?;
    let second = FixedServer::start(&dir.path().join("two"), free_port()?)?;
    let (u1, u2) = (first.url.clone(), second.url.clone());
    let mut agent = start_agent(&[&u1, &u2], "fo-1", &dir.path().join("state"), &config)?;
    agent.wait_for_line(&format!("shipping to {u1}"), Duration::from_secs(30))?;

    first.kill9()?;
    let killed = Instant::now();
    agent.wait_for_line(&format!("shipping to {u2}"), Duration::from_secs(60))?;
    let api2 = second.api()?;
    eventually(Duration::from_secs(30), || {
        let r = rows(&api2, "fo-1", "load.1m", now() - 300, now() + 10, 10, "avg")?;
        Ok(r.iter().any(|(_, v)| v.is_some()).then_some(()))
    })?;
    eprintln!(
        "on the second server {:.1}s after the first died",
        killed.elapsed().as_secs_f64()
    );

    first.restart()?;
    let back = Instant::now();
    agent.wait_for_line(&format!("shipping to {u1}"), Duration::from_secs(75))?;
    let api1 = first.api()?;
    let t = now();
    eventually(Duration::from_secs(30), || {
        let r = rows(&api1, "fo-1", "load.1m", t - 5, now() + 10, 10, "avg")?;
        Ok(r.iter().any(|(_, v)| v.is_some()).then_some(()))
    })?;
    eprintln!(
        "back on the first server {:.1}s after it restarted",
        back.elapsed().as_secs_f64()
    );
    agent.terminate();
    agent.wait_exit(Duration::from_secs(20))?;
    Ok(())
}

/// Three agents tail files being written while the server is SIGKILLed and
/// started again three times (10 s down, 15 s up): afterwards every line is
/// stored exactly once and every minute of the run has a value for each
/// agent's series. About 90 s.
#[test]
fn three_agents_through_three_server_kills_lose_and_double_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut server = FixedServer::start(&dir.path().join("data"), free_port()?)?;
    let url = server.url.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let mut agents = Vec::new();
    let mut writers = Vec::new();
    for i in 0..3 {
        let d = dir.path().join(format!("a{i}"));
        let logs = d.join("logs");
        std::fs::create_dir_all(&logs)?;
        let config = spool_config(&d, &logs)?;
        let host = format!("chaos-{i}");
        let mut agent = start_agent(&[&url], &host, &d.join("state"), &config)?;
        agent.wait_for_line("shipping to", Duration::from_secs(30))?;
        agents.push((host, agent));
        let (path, stop) = (logs.join("app.log"), stop.clone());
        writers.push(std::thread::spawn(move || writer(path, stop)));
    }
    let started = now();
    for round in 0..3 {
        std::thread::sleep(Duration::from_secs(15));
        server.kill9()?;
        std::thread::sleep(Duration::from_secs(10));
        server
            .restart()
            .with_context(|| format!("restart {round}"))?;
    }
    std::thread::sleep(Duration::from_secs(5));
    stop.store(true, Ordering::SeqCst);
    let written: Vec<u32> = writers
        .into_iter()
        .map(|w| w.join().map_err(|_| anyhow!("writer panicked"))?)
        .collect::<Result<_>>()?;
    let ended = now();
    let api = server.api()?;
    for ((host, agent), written) in agents.iter_mut().zip(&written) {
        let counts = eventually(Duration::from_secs(90), || {
            let c = stored_lines(&api, host, "spooled")?;
            Ok((c.values().map(|n| *n as usize).sum::<usize>() >= *written as usize).then_some(c))
        })
        .map_err(|e| anyhow!("{host}: {e}\n{}", agent.log()))?;
        let missing = (0..*written)
            .filter(|s| !counts.contains_key(&line(*s)))
            .count();
        let twice = counts.values().filter(|n| **n > 1).count();
        ensure!(
            missing == 0 && twice == 0 && counts.len() == *written as usize,
            "{host}: {written} lines written, {missing} missing, {twice} stored more than once\n{}",
            agent.log()
        );
        let (from, to) = whole_minutes(started, ended);
        let r = eventually(Duration::from_secs(30), || {
            let r = rows(&api, host, "load.1m", from, to, 60, "avg")?;
            let known = r
                .iter()
                .filter(|(t, v)| *t > from && *t <= to && v.is_some())
                .count() as i64;
            Ok((known >= (to - from) / 60).then_some(r))
        })
        .map_err(|e| anyhow!("{host}: a minute without a value: {e}"))?;
        eprintln!("{host}: {written} lines once; minutes {r:?}");
    }
    for (_, agent) in &mut agents {
        agent.terminate();
        agent.wait_exit(Duration::from_secs(20))?;
    }
    Ok(())
}
