//! Agent footprint while tailing: the real `metrolog-agent` binary (release)
//! tails a file that a writer fills at a steady rate, and ships to a fake
//! server that acknowledges every batch (and counts its lines), so the
//! figure is the agent's alone. CPU time comes from `/proc/<pid>/stat`, memory
//! from `/proc/<pid>/status`.
//!
//! ```text
//! cargo bench -p metrolog-agent --bench tail                 # 10 000 lines/s for 30 s
//! TAIL_RATE=20000 TAIL_SECS=10 cargo bench -p metrolog-agent --bench tail
//! ```
mod procfs;
use procfs::{clock_ticks, cpu_seconds, status_kib};

use metrolog_protocol::Batch;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Serves one connection: enroll, batch (decoded and counted), heartbeat, leave.
fn serve(sock: TcpStream, lines: Arc<AtomicU64>, batches: Arc<AtomicU64>) -> std::io::Result<()> {
    let mut conn = BufReader::new(sock.try_clone()?);
    let mut out = sock;
    loop {
        let mut request = String::new();
        if conn.read_line(&mut request)? == 0 {
            return Ok(());
        }
        let path = request.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut len = 0;
        loop {
            let mut h = String::new();
            conn.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; len];
        conn.read_exact(&mut body)?;
        let answer = if path.ends_with("/enroll") {
            r#"{"host_id":1,"agent_token":"bench-token","settings":{}}"#.to_string()
        } else if path.ends_with("/batch") {
            let json = zstd::stream::decode_all(&body[..])?;
            let b: Batch = serde_json::from_slice(&json).map_err(std::io::Error::other)?;
            lines.fetch_add(b.logs.len() as u64, Ordering::Relaxed);
            batches.fetch_add(1, Ordering::Relaxed);
            format!(
                r#"{{"batch":{},"duplicate":false,"accepted":0,"rejected":0}}"#,
                serde_json::to_string(&b.id).map_err(std::io::Error::other)?
            )
        } else {
            "{}".to_string()
        };
        write!(
            out,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
            answer.len()
        )?;
    }
}

fn main() {
    let rate = env_or("TAIL_RATE", 10_000);
    let secs = env_or("TAIL_SECS", 30);
    let ticks = clock_ticks();

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let lines = Arc::new(AtomicU64::new(0));
    let batches = Arc::new(AtomicU64::new(0));
    {
        let (lines, batches) = (lines.clone(), batches.clone());
        std::thread::spawn(move || {
            for sock in listener.incoming().flatten() {
                let (lines, batches) = (lines.clone(), batches.clone());
                std::thread::spawn(move || serve(sock, lines, batches));
            }
        });
    }

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    std::fs::write(&log, "").unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[[logs.files]]\npath = \"{}/*.log\"\napp = \"nginx\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let mut agent = Command::new(env!("CARGO_BIN_EXE_metrolog-agent"))
        .args(["--server", &url, "--enroll-token", "bench"])
        .args(["--hostname", "bench"])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let pid = agent.id();
    std::thread::sleep(Duration::from_secs(1));

    // An nginx-like line of about 150 bytes, numbered.
    let line = |n: u64| {
        format!(
            "10.0.{}.{} - - [23/Nov/2026:04:00:00 +0000] \"GET /api/items/{n} HTTP/1.1\" 200 5123 \"-\" \"Mozilla/5.0 (X11; Linux x86_64)\"\n",
            n % 250,
            n % 200
        )
    };
    let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    let tick = Duration::from_millis(10);
    let per_tick = rate / 100;
    let warmup = 3;
    let mut written = 0u64;
    let start = Instant::now();
    let mut measured: Option<(Instant, f64)> = None;
    let mut next = start;
    while start.elapsed() < Duration::from_secs(secs + warmup) {
        if measured.is_none() && start.elapsed() >= Duration::from_secs(warmup) {
            measured = Some((Instant::now(), cpu_seconds(pid, ticks)));
        }
        let chunk: String = (written..written + per_tick).map(line).collect();
        file.write_all(chunk.as_bytes()).unwrap();
        written += per_tick;
        next += tick;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let (t0, cpu0) = measured.unwrap();
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid, ticks) - cpu0;
    let rss = status_kib(pid, "VmRSS:");
    let hwm = status_kib(pid, "VmHWM:");
    let achieved = (written as f64) / start.elapsed().as_secs_f64();

    // Everything written reaches the (fake) server.
    let deadline = Instant::now() + Duration::from_secs(60);
    while lines.load(Ordering::Relaxed) < written && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = agent.wait();
    let shipped = lines.load(Ordering::Relaxed);
    println!(
        "agent tailing {rate} lines/s (~150 B each) for {wall:.0} s: CPU {cpu:.2} s = {:.2} % of one core; \
         RSS {:.1} MiB (peak {:.1} MiB); {written} lines written ({achieved:.0}/s), {shipped} shipped in {} batches",
        100.0 * cpu / wall,
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        batches.load(Ordering::Relaxed),
    );
    assert_eq!(shipped, written, "every line reaches the server");
}
