//! The agent against failures it cannot fix (issue 16, "Bad input";
//! docs/agent-spool.md): a server that accepts connections and never
//! answers, a credential revoked on the server, a full disk under the spool.

use super::agent_spool::{free_port, now, rows, start_agent, FixedServer, FAST};
use anyhow::{ensure, Context, Result};
use metrolog_e2e::{binary, csrf_field, eventually, login, Api, Proc, Tmpfs};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The agent's request timeout (agent/src/ship/client.rs, documented in
/// docs/agent-spool.md).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// The first server accepts connections and never answers: the agent gives
/// up on it after its request timeout, treats it as down and ships to the
/// second. About 30 s.
#[test]
fn a_server_that_never_answers_is_timed_out_and_failed_over() -> Result<()> {
    let silent = TcpListener::bind("127.0.0.1:0")?;
    let silent_url = format!("http://{}", silent.local_addr()?);
    let accepted = Arc::new(AtomicUsize::new(0));
    {
        let accepted = accepted.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for sock in silent.incoming().flatten() {
                accepted.fetch_add(1, Ordering::SeqCst);
                held.push(sock); // never read, never answered, never closed
            }
        });
    }
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, "")?;
    let second = FixedServer::start(&dir.path().join("two"), free_port()?)?;
    let started = Instant::now();
    let mut agent = start_agent(
        &[&silent_url, &second.url],
        "silent-1",
        &dir.path().join("state"),
        &config,
    )?;
    agent.wait_for_line(
        &format!("shipping to {}", second.url),
        Duration::from_secs(60),
    )?;
    let took = started.elapsed();
    ensure!(
        accepted.load(Ordering::SeqCst) >= 1,
        "the agent tried the first server first"
    );
    ensure!(
        took >= REQUEST_TIMEOUT - Duration::from_secs(1),
        "moved on only after its timeout: {took:?}"
    );
    let api = second.api()?;
    load_stored(&api, "silent-1", now() - 300)?;
    agent.terminate();
    agent.wait_exit(Duration::from_secs(30))?;
    Ok(())
}

/// Logs in to the admin pages; (client, session cookie, form CSRF token).
fn admin_session(
    base: &str,
    password: &str,
) -> Result<(reqwest::blocking::Client, String, String)> {
    let client = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let session = login(base, password)?;
    let home = client
        .get(format!("{base}/"))
        .header("cookie", format!("ml_session={session}"))
        .send()?
        .text()?;
    let form_csrf = csrf_field(&home)?;
    Ok((client, session, form_csrf))
}

/// Waits (30 s at most) until `host` has a stored `load.1m` value since `since`.
fn load_stored(api: &Api, host: &str, since: i64) -> Result<()> {
    eventually(Duration::from_secs(30), || {
        let r = rows(api, host, "load.1m", since, now() + 10, 10, "avg")?;
        Ok(r.iter().any(|(_, v)| v.is_some()).then_some(()))
    })
}

fn spool_bytes(state: &Path) -> u64 {
    std::fs::read_dir(state.join("spool"))
        .map(|rd| {
            rd.flatten()
                .filter(|d| d.file_name().to_string_lossy().ends_with(".seg"))
                .filter_map(|d| d.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// An agent started with no enrollment token (its stored credential only).
fn agent_without_token(url: &str, host: &str, state: &Path, config: &Path) -> Result<Proc> {
    let mut cmd = Command::new(binary("metrolog-agent"));
    cmd.args(["--server", url, "--hostname", host, "--group", "spool"])
        .arg("--state-dir")
        .arg(state)
        .arg("--config")
        .arg(config)
        .args(FAST);
    Proc::spawn(&format!("agent {host}"), cmd)
}

/// An admin revokes the agent's credential while it runs with no
/// enrollment token to fall back on: shipping stops with one clear line,
/// batches keep being spooled within `spool.max_bytes`, and once the agent
/// is enrolled again (restarted with a token) the spooled batches reach the
/// server: the minutes of the revocation have their values. About 60 s.
#[test]
fn a_revoked_credential_stops_shipping_keeps_spooling_and_resumes_after_reenrollment() -> Result<()>
{
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        "[spool]\nmax_bytes = \"256KiB\"\nsegment_bytes = \"8KiB\"\nreplay_rate = 50\n",
    )?;
    let server = FixedServer::start(&dir.path().join("srv"), free_port()?)?;
    let api = server.api()?;
    let state = dir.path().join("state");
    // Enrolled once, then running on its credential alone.
    let mut agent = start_agent(&[&server.url], "revoked-1", &state, &config)?;
    agent.wait_for_line("enrolled as host", Duration::from_secs(30))?;
    agent.terminate();
    agent.wait_exit(Duration::from_secs(30))?;
    let mut agent = agent_without_token(&server.url, "revoked-1", &state, &config)?;
    let host = eventually(Duration::from_secs(30), || api.host_id("revoked-1"))?;
    load_stored(&api, "revoked-1", now() - 60)?;

    let (client, session, csrf) = admin_session(&server.url, "e2e-admin-password")?;
    let resp = client
        .post(format!("{}/admin/agents/{host}/revoke", server.url))
        .header("cookie", format!("ml_session={session}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}"))
        .send()?;
    ensure!(resp.status() == 303, "revoke answered {}", resp.status());
    let revoked_at = now();

    let line = agent.wait_for_line("shipping stopped", Duration::from_secs(30))?;
    eprintln!("agent: {line}");
    // Several retries later, still one line, and the spool grows within its cap.
    let spooled = spool_bytes(&state);
    eventually(Duration::from_secs(60), || {
        Ok((spool_bytes(&state) > spooled + 2048 && now() >= revoked_at + 20).then_some(()))
    })?;
    let log = agent.log();
    ensure!(
        log.matches("shipping stopped").count() == 1,
        "one clear line, not one per retry:\n{log}"
    );
    ensure!(
        spool_bytes(&state) <= 256 * 1024 + 8 * 1024,
        "within spool.max_bytes: {}",
        spool_bytes(&state)
    );
    let gap_end = now();
    agent.terminate();
    agent.wait_exit(Duration::from_secs(30))?;

    // Enrolled again: the spool (kept over the restart) is replayed.
    let mut agent = start_agent(&[&server.url], "revoked-1", &state, &config)?;
    agent.wait_for_line("enrolled as host", Duration::from_secs(30))?;
    let (from, to) = ((revoked_at / 10 + 1) * 10, (gap_end / 10) * 10);
    let mut last = Vec::new();
    eventually(Duration::from_secs(60), || {
        last = rows(&api, "revoked-1", "load.1m", from, to, 10, "avg")?;
        Ok((!last.is_empty() && last.iter().all(|(_, v)| v.is_some())).then_some(()))
    })
    .with_context(|| format!("rows of the revoked window {from}..{to}: {last:?}"))?;
    agent.terminate();
    agent.wait_exit(Duration::from_secs(30))?;
    Ok(())
}

/// The spool's directory is a tiny tmpfs that fills up while no server
/// answers: spool writes fail cleanly (logged once, counted), batches wait
/// in memory up to `spool.memory_batches` (here 1: the oldest dropped and
/// counted beyond), so memory stays bounded; collection goes on; once a server answers, the drops and write
/// errors reach it as series and as a log record, and recent rows are there.
/// About 60 s.
#[test]
fn a_full_disk_under_the_spool_is_counted_and_collection_goes_on() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let Some(fs) = Tmpfs::mount(&state.join("spool"), "64k") else {
        return Ok(());
    };
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        "[spool]\nmemory_batches = 1\nsegment_bytes = \"4KiB\"\nreplay_rate = 50\n",
    )?;
    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let mut agent = start_agent(&[&url], "fulldisk-1", &state, &config)?;
    agent.wait_for_line("server unreachable", Duration::from_secs(30))?;
    fs.fill("filler")?;
    agent.wait_for_line("cannot write the spool", Duration::from_secs(30))?;
    // A batch per closed 10 s bucket: the second one in memory pushes the
    // first out.
    agent.wait_for_line("dropped batch", Duration::from_secs(60))?;
    let log = agent.log();
    ensure!(
        log.matches("cannot write the spool").count() == 1,
        "logged once:\n{log}"
    );
    ensure!(
        agent.child.try_wait()?.is_none(),
        "the agent keeps running:\n{log}"
    );

    let server = FixedServer::start(&dir.path().join("srv"), port)?;
    let api = server.api()?;
    let series = |name: &str| -> Result<Option<f64>> {
        let r = rows(&api, "fulldisk-1", name, now() - 300, now() + 10, 10, "max")?;
        Ok(r.iter().filter_map(|(_, v)| *v).reduce(f64::max))
    };
    eventually(Duration::from_secs(60), || {
        let errors = series("agent.spool.write_errors")?.unwrap_or(0.0);
        let dropped = series("agent.spool.dropped_batches")?.unwrap_or(0.0);
        Ok((errors >= 1.0 && dropped >= 1.0).then_some(()))
    })
    .with_context(|| agent.log())?;
    load_stored(&api, "fulldisk-1", now() - 20)?;
    let (status, logs) = api.get("/api/v1/logs?host=fulldisk-1&app=metrolog-agent&limit=100")?;
    ensure!(status == 200, "logs: {status} {logs}");
    ensure!(
        logs.to_string().contains("spool dropped"),
        "the drops are reported as a log record: {logs}"
    );
    agent.terminate();
    agent.wait_exit(Duration::from_secs(30))?;
    drop(fs);
    Ok(())
}
