//! The server's disk fills up under a running agent: batches are refused with
//! 503 (counted, logged), reads go on, and once space is back every sample the
//! agent took meanwhile is stored — nothing lost, nothing doubled.

use anyhow::Result;
use metrolog_e2e::{eventually, metric, start_agent, Api, Server};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A small tmpfs of our own, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` on `dir`. `None` only when the operator set
    /// `METROLOG_SKIP_TMPFS=1` (README, "Test it"); otherwise a machine that
    /// cannot mount fails the test, so it never passes without having run.
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs(dir.to_path_buf())),
            _ if std::env::var_os("METROLOG_SKIP_TMPFS").is_some_and(|v| v == "1") => {
                eprintln!("METROLOG_SKIP_TMPFS=1: not run (it needs to mount a tmpfs)");
                None
            }
            Ok(o) => panic!(
                "cannot mount a tmpfs on {} ({}: {}): this test needs root (CAP_SYS_ADMIN); \
                 run it as root or set METROLOG_SKIP_TMPFS=1 to skip it",
                dir.display(),
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => panic!(
                "cannot run mount ({e}): install util-linux's mount and run as root, \
                 or set METROLOG_SKIP_TMPFS=1 to skip this test"
            ),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes zeros into `path` until the file system refuses more.
fn fill(path: &Path) -> Result<u64> {
    let mut f = std::fs::File::create(path)?;
    let block = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => return Err(e.into()),
        }
    }
    // Fill the last partial page too.
    while let Ok(n) = f.write(&block[..512]) {
        if n == 0 {
            break;
        }
        written += n as u64;
    }
    Ok(written)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[test]
fn full_disk_refuses_batches_then_stores_everything_once_space_is_back() -> Result<()> {
    let mnt = tempfile::tempdir()?;
    let Some(_fs) = Tmpfs::mount(mnt.path(), "24m") else {
        return Ok(());
    };
    let state = tempfile::tempdir()?;
    // Archive rows written at every flush tick (no write_delay), as a server
    // long past its first minutes writes all the time: the disk fills under
    // the batches' journal and the archives' chunks alike.
    let config = state.path().join("server.toml");
    std::fs::write(&config, "[archives]\nwrite_delay = \"0s\"\n")?;
    let config = config.to_string_lossy().into_owned();
    let mut server = Server::start_in(
        &mnt.path().join("data"),
        &["--no-local-agent", "--config", &config],
    )?;
    let api = Api::new(&server.url, &server.token("viewer")?);
    let fast = ["--sample-interval", "200ms", "--ship-interval", "1s"];
    let mut agent = start_agent(&server, "web-1", "web", &state.path().join("a"), &fast)?;
    let host = eventually(Duration::from_secs(60), || {
        let (_, hosts) = api.get("/api/v1/hosts?group=web")?;
        Ok(hosts[0]["id"]
            .as_i64()
            .filter(|_| hosts[0]["state"] == "up"))
    })?;
    let batches_before = eventually(Duration::from_secs(60), || {
        let n = metric(&api, "metrolog_ingest_batches_total ")?;
        Ok((n >= 2).then_some(n))
    })?;
    assert!(batches_before >= 2);

    // The disk fills up.
    let filler = mnt.path().join("filler");
    fill(&filler)?;
    let full_from = now();
    // Full for a while: several ship intervals, and writes refused more than once
    // (a write can still succeed now and then while SQLite reuses its WAL).
    let refused = eventually(Duration::from_secs(60), || {
        let n = metric(&api, "metrolog_storage_full_errors_total ")?;
        Ok((n >= 3 && now() >= full_from + 20).then_some(n))
    })
    .map_err(|e| anyhow::anyhow!("{e}\n{}", server.proc.log()))?;
    assert!(refused >= 3);
    // Reads are still served while writes are refused.
    let (status, h) = api.get(&format!("/api/v1/hosts/{host}"))?;
    assert_eq!(status, 200, "{h}");
    let log = server.proc.log();
    assert!(
        log.contains("disk is full"),
        "the operator is told why: {log}"
    );
    let full_to = now();

    // Space is freed: the agent's retries get through with what it kept.
    std::fs::remove_file(&filler)?;
    let window = format!(
        "/api/v1/query?host={host}&name=cpu.busy_pct&from={}&to={}&step=10",
        full_from - full_from % 10,
        full_to - full_to % 10
    );
    let mut last = serde_json::Value::Null;
    eventually(Duration::from_secs(120), || {
        let (_, v) = api.get(&window)?;
        let points = v["series"][0]["points"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        last = v;
        Ok((!points.is_empty() && points.iter().all(|p| p[1].is_number())).then_some(()))
    })
    .map_err(|e| {
        anyhow::anyhow!(
            "{e}\n{window}: {last}\nagent:\n{}\nserver:\n{}",
            agent.log(),
            server.proc.log()
        )
    })?;
    let dup = metric(&api, "metrolog_ingest_duplicate_batches_total ")?;
    assert_eq!(dup, 0, "no batch was committed and then sent again");

    agent.terminate();
    agent.wait_exit(Duration::from_secs(20))?;
    server.proc.terminate();
    let status = server.proc.wait_exit(Duration::from_secs(20))?;
    assert!(status.success(), "{}", server.proc.log());
    Ok(())
}
