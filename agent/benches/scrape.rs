//! Footprint of scraping a Prometheus exporter: Debian's node exporter
//! (default collectors) scraped every 10 s by the real `metrolog-agent`
//! (release) and, in the same run, by Debian's Prometheus. A second agent
//! without any `[[scrape]]` runs beside them, so the cost of the scrape
//! itself (the difference) is told apart from the agent's own collectors.
//! Both agents ship to a fake server that decodes and acknowledges every
//! batch and counts the `prom.*` series, so the figures are the agents'
//! alone. CPU is `utime + stime` from `/proc/<pid>/stat` over the run after
//! a warm-up; memory is `VmRSS`/`VmHWM` from `/proc/<pid>/status`.
//!
//! ```text
//! cargo bench -p metrolog-agent --bench scrape             # 180 s after 25 s warm-up
//! SCRAPE_BENCH_SECS=60 cargo bench -p metrolog-agent --bench scrape
//! ```
//!
//! Needs the Debian packages prometheus-node-exporter and prometheus; fails
//! (does not skip) without them.
mod procfs;
use procfs::{clock_ticks, cpu_seconds, status_kib};

use metrolog_protocol::Batch;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Serves one agent connection: enroll, batch (decoded; `prom.*` series
/// counted), heartbeat, leave.
fn serve(sock: TcpStream, prom: Arc<AtomicU64>) -> std::io::Result<()> {
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
            let n = b
                .metrics
                .iter()
                .filter(|s| s.key.name.as_str().starts_with("prom."))
                .count();
            prom.fetch_max(n as u64, Ordering::Relaxed);
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

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn need(path: &str, package: &str) {
    assert!(
        std::path::Path::new(path).exists(),
        "{path} is missing: install the Debian package {package}"
    );
}

/// Kills the child when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

fn wait_http(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let addr = url
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or("");
        if TcpStream::connect(addr).is_ok() {
            return;
        }
        assert!(Instant::now() < deadline, "{url} does not answer");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn agent(dir: &std::path::Path, name: &str, server: &str, config: &str) -> Running {
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(&file, config).unwrap();
    Running(
        Command::new(env!("CARGO_BIN_EXE_metrolog-agent"))
            .args(["--server", server, "--enroll-token", "bench"])
            .args(["--hostname", name])
            .arg("--state-dir")
            .arg(dir.join(name))
            .arg("--config")
            .arg(&file)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    )
}

fn main() {
    let secs: u64 = std::env::var("SCRAPE_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(180);
    need(
        "/usr/bin/prometheus-node-exporter",
        "prometheus-node-exporter",
    );
    need("/usr/bin/prometheus", "prometheus");
    let ticks = clock_ticks();
    let dir = tempfile::tempdir().unwrap();

    let node_addr = format!("127.0.0.1:{}", free_port());
    let node = Running(
        Command::new("/usr/bin/prometheus-node-exporter")
            .arg(format!("--web.listen-address={node_addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let node_url = format!("http://{node_addr}/metrics");
    wait_http(&node_url);

    let prom_conf = dir.path().join("prometheus.yml");
    std::fs::write(
        &prom_conf,
        format!(
            "global:\n  scrape_interval: 10s\n  scrape_timeout: 5s\nscrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: ['{node_addr}']\n"
        ),
    )
    .unwrap();
    let prom_addr = format!("127.0.0.1:{}", free_port());
    let prometheus = Running(
        Command::new("/usr/bin/prometheus")
            .arg(format!("--config.file={}", prom_conf.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={prom_addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_http(&format!("http://{prom_addr}/"));

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = format!("http://{}", listener.local_addr().unwrap());
    let prom_series = Arc::new(AtomicU64::new(0));
    {
        let prom_series = prom_series.clone();
        std::thread::spawn(move || {
            for sock in listener.incoming().flatten() {
                let p = prom_series.clone();
                std::thread::spawn(move || serve(sock, p));
            }
        });
    }
    let scraping = agent(
        dir.path(),
        "scraping",
        &server,
        &format!("[[scrape]]\nname = \"node\"\nurl = \"{node_url}\"\ninterval = \"10s\"\n"),
    );
    let plain = agent(dir.path(), "plain", &server, "");

    let warmup = Duration::from_secs(25);
    std::thread::sleep(warmup);
    let pids = [
        ("agent with the scrape", scraping.0.id()),
        ("agent without", plain.0.id()),
        ("prometheus", prometheus.0.id()),
        ("node exporter", node.0.id()),
    ];
    let before: Vec<f64> = pids.iter().map(|(_, p)| cpu_seconds(*p, ticks)).collect();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let wall = t0.elapsed().as_secs_f64();
    let mut pct = Vec::new();
    println!("scraping one node exporter (default collectors) every 10 s, {wall:.0} s after {} s warm-up:", warmup.as_secs());
    for ((name, pid), cpu0) in pids.iter().zip(before) {
        let cpu = cpu_seconds(*pid, ticks) - cpu0;
        let p = 100.0 * cpu / wall;
        pct.push(p);
        println!(
            "  {name:22} CPU {cpu:6.2} s = {p:5.2} % of one core; RSS {:6.1} MiB (peak {:6.1} MiB)",
            status_kib(*pid, "VmRSS:") as f64 / 1024.0,
            status_kib(*pid, "VmHWM:") as f64 / 1024.0
        );
    }
    let scrape_cost = pct[0] - pct[1];
    println!(
        "  the scrape's own cost (with − without): {scrape_cost:.3} % of one core = {:.2}× Prometheus' whole CPU",
        scrape_cost / pct[2]
    );
    println!(
        "  agent RSS (with the scrape) ÷ Prometheus RSS: {:.2}×",
        status_kib(pids[0].1, "VmRSS:") as f64 / status_kib(pids[2].1, "VmRSS:").max(1) as f64
    );
    let n = prom_series.load(Ordering::Relaxed);
    println!("  prom.* series in the largest batch: {n}");
    assert!(n > 100, "the agent shipped the exporter's series ({n})");
}
