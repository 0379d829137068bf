//! The agent's footprint (docs/benchmarks.md, "Agent footprint"), side by
//! side in the same run:
//!
//! 1. **Steady state at defaults.** The shipped `metrolog-agent` (1 s
//!    sampling, 10 s shipping, one tailed file written at 100 lines/s, two
//!    checks) ships to the real `metrolog-server`; beside it collectd (cpu,
//!    memory, load, df, interface and disk plugins at 1 s, writing to the
//!    same server's Graphite listener) and prometheus-node-exporter scraped
//!    every 10 s. RSS (`VmRSS`, sampled every second: mean and peak) and CPU
//!    (`utime + stime`) of each over `--minutes` after a warm-up; binary
//!    sizes.
//! 2. **Replay after a one-hour outage.** A spool holding one hour of the
//!    agent's batches (its default collectors' series, 100 lines/s of logs)
//!    is written with the agent's own spool code, as an agent cut off for an
//!    hour leaves it; then the agent starts against a fresh server and the
//!    time until the server acknowledged the whole hour is measured, at the
//!    default `spool.replay_rate` and unthrottled.
//! 3. **100 agents replaying at once.** As 2, with `--agents` agents (an
//!    hour of metrics and 1 line/s each) started together: the server's
//!    ingest rate and CPU while it absorbs the replay.
//!
//! Every part runs the agent as shipped, built with its own profile
//! (target/agent/metrolog-agent); the bench fails if it is missing or older
//! than its sources.
//!
//! ```text
//! cargo build --release -p metrolog-server
//! cargo build --profile agent -p metrolog-agent
//! cargo bench -p metrolog-agent --bench footprint                  # 10 min, then replays
//! cargo bench -p metrolog-agent --bench footprint -- --minutes 1 --agents 20   # quick look
//! cargo bench -p metrolog-agent --bench footprint -- --only steady  # or replay, fleet
//! ```
//!
//! Needs collectd-core, prometheus-node-exporter and monitoring-plugins-basic
//! (Debian); fails, never skips, without them.
mod procfs;
use procfs::{clock_ticks, cpu_seconds, status_kib};

use metrolog_agent::collect::Collectors;
use metrolog_agent::downsample::Consolidator;
use metrolog_agent::spool::{Spool, SpoolPolicy};
use metrolog_protocol::syslog::LogRecord;
use metrolog_protocol::{Batch, BatchId};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const ENROLL: &str = "mlg_bench-enrollment-token-0123456789abcdef";
const WARM_UP: Duration = Duration::from_secs(20);
/// Batches of a one-hour outage at the default ship interval.
const HOUR_BATCHES: u64 = 360;

struct Args {
    minutes: f64,
    agents: usize,
    only: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        minutes: 10.0,
        agents: 100,
        only: None,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let next = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--minutes" => a.minutes = next.parse().expect("--minutes N"),
            "--agents" => a.agents = next.parse().expect("--agents N"),
            "--only" => a.only = Some(next),
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

fn need(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: install the Debian package {package}"
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn wait_tcp(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{addr} does not answer");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Terminates the child when dropped.
struct Running(Child);

impl Running {
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// Where `cargo bench` puts its binaries (target/release): the server's.
fn release_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_metrolog-agent"))
        .parent()
        .expect("the bench's binary directory")
        .to_path_buf()
}

/// The agent as shipped: its own size-optimised profile (Cargo.toml,
/// `[profile.agent]`), not the release build `cargo bench` makes beside the
/// bench (which also carries the dev-dependencies' features).
fn agent_bin() -> PathBuf {
    release_dir()
        .parent()
        .expect("the target directory")
        .join("agent")
        .join("metrolog-agent")
}

const AGENT_BUILD: &str = "cargo build --profile agent -p metrolog-agent";

/// Fails unless the agent build exists and is newer than the agent's and the
/// protocol's sources, so a run never measures a missing or stale agent.
fn check_agent_build() {
    let bin = agent_bin();
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| panic!("{} is missing: {AGENT_BUILD} first", bin.display()));
    let agent = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = agent.parent().expect("the workspace");
    // Sources only: a manifest or lock file edited for another crate does
    // not rebuild the agent, and would fail every later run.
    let sources = [agent.join("src"), root.join("protocol").join("src")];
    if let Some(newer) = sources.iter().find_map(|p| newer_than(p, built)) {
        panic!(
            "{} is older than {}: {AGENT_BUILD} again",
            bin.display(),
            newer.display()
        );
    }
}

/// A file under `path` modified after `t`.
fn newer_than(path: &Path, t: SystemTime) -> Option<PathBuf> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.is_dir() {
        std::fs::read_dir(path)
            .ok()?
            .flatten()
            .find_map(|e| newer_than(&e.path(), t))
    } else {
        meta.modified().ok().filter(|m| *m > t).map(|_| path.into())
    }
}

/// The release server beside the bench's binaries.
fn server_bin() -> PathBuf {
    let p = release_dir().join("metrolog-server");
    assert!(
        p.exists(),
        "{} is missing: cargo build --release -p metrolog-server first",
        p.display()
    );
    p
}

struct Server {
    proc: Running,
    url: String,
    addr: String,
}

fn start_server(data: &Path, graphite: Option<&str>) -> Server {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let log = std::fs::File::create(data.with_extension("log")).unwrap();
    let mut cmd = Command::new(server_bin());
    cmd.args(["--listen", &addr])
        .arg("--data-dir")
        .arg(data)
        .args([
            "--syslog-udp",
            "off",
            "--syslog-tcp",
            "off",
            "--no-local-agent",
        ])
        .args(["--graphite", graphite.unwrap_or("off")])
        .env("METROLOG_ADMIN_PASSWORD", "bench-admin-password")
        .env("METROLOG_ENROLL_TOKEN", ENROLL)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log);
    let proc = Running(cmd.spawn().unwrap());
    wait_tcp(&addr);
    Server {
        proc,
        url: format!("http://{addr}"),
        addr,
    }
}

/// A value of the server's `/metrics` (first line starting with `name `).
fn server_metric(addr: &str, name: &str) -> f64 {
    http_get(addr, "/metrics")
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A plain HTTP/1.0 GET; the body.
fn http_get(addr: &str, path: &str) -> String {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

fn start_agent(dir: &Path, name: &str, server: &str, config: &str) -> Running {
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(&file, config).unwrap();
    Running(
        Command::new(agent_bin())
            .args(["--server", server, "--enroll-token", ENROLL])
            .args(["--hostname", name])
            .arg("--state-dir")
            .arg(dir.join(name))
            .arg("--config")
            .arg(&file)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn nginx_line(n: u64) -> String {
    format!(
        "10.0.{}.{} - - [07/Dec/2026:12:00:00 +0000] \"GET /api/items/{n} HTTP/1.1\" 200 {} \"-\" \"Mozilla/5.0 (X11; Linux x86_64)\"",
        n % 200,
        n % 250,
        500 + n % 9000
    )
}

/// Appends `rate` lines per second to `path` (in 10 ms slices) until `stop`.
fn writer(path: PathBuf, rate: u64, stop: Arc<AtomicBool>) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let start = Instant::now();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        let mut chunk = String::new();
        while n < due {
            chunk.push_str(&nginx_line(n));
            chunk.push('\n');
            n += 1;
        }
        f.write_all(chunk.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// RSS mean and peak (KiB) of a process, sampled.
#[derive(Default, Clone, Copy)]
struct Rss {
    sum: u64,
    n: u64,
    peak: u64,
}

impl Rss {
    fn add(&mut self, kib: u64) {
        if kib > 0 {
            self.sum += kib;
            self.n += 1;
            self.peak = self.peak.max(kib);
        }
    }
    fn mean_mib(&self) -> f64 {
        self.sum as f64 / self.n.max(1) as f64 / 1024.0
    }
    fn peak_mib(&self) -> f64 {
        self.peak as f64 / 1024.0
    }
}

fn file_size(path: &str) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn collectd_conf(dir: &Path, graphite_port: u16) -> PathBuf {
    let conf = dir.join("collectd.conf");
    std::fs::write(
        &conf,
        format!(
            "Hostname \"bench-collectd\"\nFQDNLookup false\nInterval 1\n\
             BaseDir \"{d}/collectd\"\nPIDFile \"{d}/collectd.pid\"\n\
             PluginDir \"/usr/lib/collectd\"\nTypesDB \"/usr/share/collectd/types.db\"\n\
             LoadPlugin cpu\nLoadPlugin memory\nLoadPlugin load\nLoadPlugin df\n\
             LoadPlugin interface\nLoadPlugin disk\nLoadPlugin write_graphite\n\
             <Plugin write_graphite>\n  <Node \"metrolog\">\n    Host \"127.0.0.1\"\n    Port \"{graphite_port}\"\n    Protocol \"tcp\"\n  </Node>\n</Plugin>\n",
            d = dir.display()
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("collectd")).unwrap();
    conf
}

fn steady(a: &Args, dir: &Path, ticks: f64) {
    need("/usr/sbin/collectd", "collectd-core");
    need(
        "/usr/bin/prometheus-node-exporter",
        "prometheus-node-exporter",
    );
    need(
        "/usr/lib/nagios/plugins/check_load",
        "monitoring-plugins-basic",
    );
    let graphite_port = free_port();
    let server = start_server(
        &dir.join("server"),
        Some(&format!("127.0.0.1:{graphite_port}")),
    );
    wait_tcp(&format!("127.0.0.1:{graphite_port}"));

    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let w = {
        let (path, stop) = (logs.join("access.log"), stop.clone());
        std::thread::spawn(move || writer(path, 100, stop))
    };
    let agent = start_agent(
        dir,
        "bench-agent",
        &server.url,
        &format!(
            "[[logs.files]]\npath = \"{}/*.log\"\napp = \"nginx\"\n\
             [[checks]]\nname = \"load\"\ncommand = [\"/usr/lib/nagios/plugins/check_load\", \"-w\", \"15,10,5\", \"-c\", \"30,25,20\"]\n\
             [[checks]]\nname = \"disk_root\"\ncommand = [\"/usr/lib/nagios/plugins/check_disk\", \"-w\", \"5%\", \"-c\", \"2%\", \"-p\", \"/\"]\n",
            logs.display()
        ),
    );
    let collectd = Running(
        Command::new("/usr/sbin/collectd")
            .arg("-f")
            .arg("-C")
            .arg(collectd_conf(dir, graphite_port))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let node_addr = format!("127.0.0.1:{}", free_port());
    let node = Running(
        Command::new("/usr/bin/prometheus-node-exporter")
            .arg(format!("--web.listen-address={node_addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_tcp(&node_addr);
    let scraper = {
        let (addr, stop) = (node_addr.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut scrapes = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                if !http_get(&addr, "/metrics").is_empty() {
                    scrapes += 1;
                }
                while t.elapsed() < Duration::from_secs(10) && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            scrapes
        })
    };

    std::thread::sleep(WARM_UP);
    let pids = [agent.pid(), collectd.pid(), node.pid()];
    let cpu0: Vec<f64> = pids.iter().map(|p| cpu_seconds(*p, ticks)).collect();
    let mut rss = [Rss::default(); 3];
    let t0 = Instant::now();
    let span = Duration::from_secs_f64(a.minutes * 60.0);
    while t0.elapsed() < span {
        for (r, p) in rss.iter_mut().zip(pids) {
            r.add(status_kib(p, "VmRSS:"));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu: Vec<f64> = pids
        .iter()
        .zip(&cpu0)
        .map(|(p, c0)| cpu_seconds(*p, ticks) - c0)
        .collect();
    let shipped_lines = server_metric(&server.addr, "metrolog_ingest_batches_total");
    let threads = status_kib(agent.pid(), "Threads:");
    stop.store(true, Ordering::Relaxed);
    let _ = w.join();
    let scrapes = scraper.join().unwrap_or(0);
    drop((agent, collectd, node));

    let collectd_size = file_size("/usr/sbin/collectd")
        + [
            "cpu",
            "memory",
            "load",
            "df",
            "interface",
            "disk",
            "write_graphite",
        ]
        .iter()
        .map(|p| file_size(&format!("/usr/lib/collectd/{p}.so")))
        .sum::<u64>();
    let sizes = [
        file_size(agent_bin().to_str().unwrap_or_default()),
        collectd_size,
        file_size("/usr/bin/prometheus-node-exporter"),
    ];
    println!(
        "\nSteady state, {:.1} min after {} s warm-up ({} batches acknowledged by the server, {scrapes} node-exporter scrapes, agent threads {threads})\n",
        wall / 60.0,
        WARM_UP.as_secs(),
        shipped_lines
    );
    println!("| | RSS mean MiB | RSS peak MiB | CPU % of one core | binary MiB |");
    println!("| --- | --- | --- | --- | --- |");
    let names = [
        "metrolog-agent",
        "collectd (6 plugins at 1 s, write_graphite)",
        "prometheus-node-exporter (scraped every 10 s)",
    ];
    for i in 0..3 {
        println!(
            "| {} | {:.2} | {:.2} | {:.3} | {:.1} |",
            names[i],
            rss[i].mean_mib(),
            rss[i].peak_mib(),
            cpu[i] / wall * 100.0,
            sizes[i] as f64 / (1 << 20) as f64
        );
    }
    println!(
        "ratio agent/collectd: RSS mean {:.2}, RSS peak {:.2}, CPU {:.2}, binary {:.2}",
        rss[0].mean_mib() / rss[1].mean_mib(),
        rss[0].peak_mib() / rss[1].peak_mib(),
        cpu[0] / cpu[1].max(1e-9),
        sizes[0] as f64 / sizes[1] as f64
    );
    println!(
        "ratio agent/node-exporter: RSS mean {:.2}, CPU {:.2}",
        rss[0].mean_mib() / rss[2].mean_mib(),
        cpu[0] / cpu[2].max(1e-9)
    );
}

/// Writes one hour of batches of host `stream` (the default collectors'
/// series of this machine, `lines` log records per batch) into the spool of
/// `state`, as an agent cut off for that hour leaves it. Returns (batches,
/// metric buckets, log records).
fn prefill(state: &Path, stream: &str, lines: u64) -> (u64, u64, u64) {
    std::fs::create_dir_all(state).unwrap();
    let mut spool = Spool::open(state, SpoolPolicy::default(), 0);
    let mut collectors = Collectors::standard(Path::new("/proc"));
    // Twice: rates (cpu, disk, net) need a previous reading.
    collectors.sample(Instant::now());
    std::thread::sleep(Duration::from_secs(1));
    let keys: Vec<_> = collectors
        .sample(Instant::now())
        .samples
        .into_iter()
        .map(|s| (s.key, s.value))
        .collect();
    let end = (unix_now() as i64 / 10) * 10;
    let start = end - HOUR_BATCHES as i64 * 10;
    let mut cons = Consolidator::default();
    let (mut buckets, mut logs) = (0, 0);
    for i in 0..HOUR_BATCHES {
        let t0 = start + i as i64 * 10;
        for s in 0..10 {
            for (n, (key, v)) in keys.iter().enumerate() {
                let wave = ((t0 + s) as f64 / 300.0 + n as f64).sin();
                cons.add(key, (t0 + s) as f64 + 0.5, v + wave.abs());
            }
        }
        let metrics = cons.take_closed((t0 + 10) as f64);
        buckets += metrics.iter().map(|m| m.buckets.len() as u64).sum::<u64>();
        let batch_logs: Vec<LogRecord> = (0..lines)
            .map(|l| {
                let at =
                    chrono::DateTime::from_timestamp(t0, (l * 1_000_000) as u32 % 1_000_000_000)
                        .unwrap_or_default();
                let mut r = LogRecord::whole(nginx_line(i * lines + l), at);
                r.app_name = Some("nginx".into());
                r
            })
            .collect();
        logs += batch_logs.len() as u64;
        spool.push(
            Batch {
                id: BatchId {
                    stream: stream.to_string(),
                    seq: i + 1,
                },
                sent_at: t0 + 10,
                metrics,
                logs: batch_logs,
                checks: Vec::new(),
                series_meta: Vec::new(),
            },
            Vec::new(),
        );
    }
    (HOUR_BATCHES, buckets, logs)
}

/// The spool's acknowledged position (docs/agent-spool.md).
fn acked(state: &Path) -> u64 {
    std::fs::read_to_string(state.join("spool/acked"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|d| d.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Part 2: one agent replays an hour, at `replay_rate` (None: the default).
fn replay(dir: &Path, tag: &str, replay_rate: Option<u32>) {
    let run = dir.join(format!("replay-{tag}"));
    let name = format!("replay-{tag}");
    let state = run.join(&name);
    let (batches, buckets, lines) = prefill(&state, &format!("{:032x}", 0x5eed), 1000);
    let spooled = dir_bytes(&state.join("spool"));
    let server = start_server(&run.join("server"), None);
    let config = match replay_rate {
        Some(r) => format!("[spool]\nreplay_rate = {r}\n"),
        None => String::new(),
    };
    let t0 = Instant::now();
    let agent = start_agent(&run, &name, &server.url, &config);
    let deadline = Duration::from_secs(1800);
    while acked(&state) < batches {
        assert!(t0.elapsed() < deadline, "replay did not finish in 30 min");
        std::thread::sleep(Duration::from_millis(50));
    }
    let secs = t0.elapsed().as_secs_f64();
    let peak = status_kib(agent.pid(), "VmHWM:");
    drop(agent);
    drop(server);
    println!(
        "| {} | {batches} batches, {:.1} MB spooled, {buckets} buckets, {lines} lines | {secs:.1} s | {:.1} batches/s, {:.0} lines/s, {:.0} buckets/s | {:.1} |",
        replay_rate.map_or("default (5/s)".to_string(), |r| r.to_string()),
        spooled as f64 / 1e6,
        batches as f64 / secs,
        lines as f64 / secs,
        buckets as f64 / secs,
        peak as f64 / 1024.0
    );
}

/// Part 3: `n` agents replay an hour each at once into one server.
fn fleet(dir: &Path, n: usize, ticks: f64) {
    // Prefilled on a tmpfs when there is one: the prefill is not what is
    // measured, and 100 hours of fsynced spool writes would take a while.
    let base = if Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm").unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let mut totals = (0u64, 0u64, 0u64);
    for i in 0..n {
        let (b, m, l) = prefill(
            &base.path().join(format!("fleet-{i}")),
            &format!("{:032x}", 0xf1ee7000u64 + i as u64),
            10,
        );
        totals = (totals.0 + b, totals.1 + m, totals.2 + l);
    }
    let server = start_server(&dir.join("fleet-server"), None);
    let cpu0 = cpu_seconds(server.proc.pid(), ticks);
    let t0 = Instant::now();
    let agents: Vec<Running> = (0..n)
        .map(|i| start_agent(base.path(), &format!("fleet-{i}"), &server.url, ""))
        .collect();
    let deadline = Duration::from_secs(3600);
    let mut server_rss = Rss::default();
    loop {
        let done = (0..n)
            .filter(|i| acked(&base.path().join(format!("fleet-{i}"))) >= HOUR_BATCHES)
            .count();
        server_rss.add(status_kib(server.proc.pid(), "VmRSS:"));
        if done == n {
            break;
        }
        assert!(
            t0.elapsed() < deadline,
            "fleet replay: {done}/{n} after 1 h"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(server.proc.pid(), ticks) - cpu0;
    let ingested = server_metric(&server.addr, "metrolog_ingest_buckets_total");
    let busy = server_metric(&server.addr, "metrolog_ingest_batches_busy_total");
    drop(agents);
    println!(
        "\n{n} agents, each an hour spooled ({} batches, {} buckets, {} lines in all): drained in {secs:.1} s; server ingest {:.0} buckets/s ({:.0} batches/s), server CPU {:.0} % of one core, RSS peak {:.1} MiB; batches answered 503 busy: {busy}; buckets counted by the server: {ingested}",
        totals.0,
        totals.1,
        totals.2,
        totals.1 as f64 / secs,
        totals.0 as f64 / secs,
        cpu / secs * 100.0,
        server_rss.peak_mib()
    );
}

fn main() {
    let a = args();
    check_agent_build();
    let ticks = clock_ticks();
    let dir = tempfile::tempdir().unwrap();
    let part = |p: &str| a.only.as_deref().is_none_or(|o| o == p);
    if part("steady") {
        steady(&a, dir.path(), ticks);
    }
    if part("replay") {
        println!("\nReplay of a one-hour outage by one agent (100 lines/s of logs)\n");
        println!("| replay_rate | spooled | drained in | rate | agent RSS peak MiB |");
        println!("| --- | --- | --- | --- | --- |");
        replay(dir.path(), "default", None);
        replay(dir.path(), "unthrottled", Some(1000));
    }
    if part("fleet") {
        fleet(dir.path(), a.agents, ticks);
    }
}
