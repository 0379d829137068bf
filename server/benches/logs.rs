//! Central-logs benchmarks (docs/benchmarks.md, "Logs"):
//!
//! 1. Sustained TCP syslog ingest into searchable storage: the server's own
//!    receiver, writer, SQLite store and FTS5 indexer, fed over loopback by
//!    client threads, until the last line is indexed; then `rsyslogd` (imtcp →
//!    omfile) fed the same stream in the same run, and the ratio.
//! 2. Full-text search over LOGS_BENCH_ROWS stored lines (10 million by
//!    default, bulk-inserted through the store), newest 100 matches; then
//!    time-range (`from`/`to`) listings over the same lines.
//!
//! `cargo bench -p metrolog-server --bench logs`
//! Env: LOGS_BENCH_LINES (ingest, default 2 000 000), LOGS_BENCH_CONNS (4),
//! LOGS_BENCH_ROWS (search corpus, default 10 000 000), LOGS_BENCH_SKIP
//! (`ingest`, `rsyslog` or `search` to leave one out).

use metrolog_protocol::syslog::{parse, LogRecord, LogSource};
use metrolog_server::config::{FileConfig, Overrides, ServerConfig};
use metrolog_server::logs::feed::LogFeed;
use metrolog_server::logs::search::Search;
use metrolog_server::logs::Pipeline;
use metrolog_server::store::logs::{LogFilter, NewLog};
use metrolog_server::store::Store;
use metrolog_server::syslog::Listeners;
use metrolog_server::telemetry::ServerMetrics;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn skip(what: &str) -> bool {
    std::env::var("LOGS_BENCH_SKIP").is_ok_and(|s| s.split(',').any(|x| x == what))
}

/// Realistic lines: the RHEL secure log of the shared samples (sshd brute
/// force, PAM, sudo), with a PRI, and a counter so tokens vary.
fn line(i: usize, base: &[String]) -> String {
    let l = &base[i % base.len()];
    format!("<38>{l} seq={i}\n")
}

fn base_lines() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data/logs/system-auth-secure-rhel7.log");
    match std::fs::read_to_string(&path) {
        Ok(t) => t.lines().map(String::from).collect(),
        Err(_) => (0..1000)
            .map(|i| format!("Feb 22 16:45:20 slave22 sshd[{i}]: Failed password for root from 202.109.143.{} port {} ssh2", i % 256, 1000 + i))
            .collect(),
    }
}

/// The stream to send: `lines` lines cut in `conns` parts, built before the
/// clock starts so the senders cost only their `write` calls.
fn stream(lines: usize, conns: usize, base: &[String]) -> Vec<Arc<Vec<u8>>> {
    let per = lines / conns;
    (0..conns)
        .map(|c| {
            let mut buf = Vec::new();
            for i in c * per..(c + 1) * per {
                buf.extend_from_slice(line(i, base).as_bytes());
            }
            Arc::new(buf)
        })
        .collect()
}

/// Sends each part over its own connection to `addr`; returns when written.
fn send(addr: SocketAddr, parts: &[Arc<Vec<u8>>]) {
    let handles: Vec<_> = parts
        .iter()
        .map(|part| {
            let part = part.clone();
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).expect("connect");
                for chunk in part.chunks(1 << 20) {
                    s.write_all(chunk).expect("send");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("sender thread");
    }
}

fn ingest(lines: usize, conns: usize, parts: &[Arc<Vec<u8>>]) -> f64 {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let over = Overrides {
        data_dir: Some(dir.path().to_path_buf()),
        syslog_tcp: Some("127.0.0.1:0".into()),
        syslog_udp: Some("off".into()),
        ..Default::default()
    };
    let config = ServerConfig::merge(&over, FileConfig::default()).expect("config");
    let metrics = Arc::new(ServerMetrics::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (store, addr, pipeline) = rt.block_on(async {
        let store = Arc::new(Store::open(&config.database_url).await.expect("store"));
        let listeners = Listeners::bind(&config).await.expect("bind");
        let addr = listeners.tcp_addr().expect("tcp on");
        let pipeline = Pipeline::start(
            listeners,
            store.clone(),
            LogFeed::new(),
            &config,
            metrics.clone(),
            stop_rx,
        );
        (store, addr, pipeline)
    });
    let total = (lines / conns * conns) as u64;
    let t0 = Instant::now();
    send(addr, parts);
    let sent = t0.elapsed();
    while metrics.syslog_stored.get() < total {
        std::thread::sleep(Duration::from_millis(5));
    }
    let committed = t0.elapsed().as_secs_f64();
    // Searchable: the full-text index follows the commits on its own
    // connection; the clock stops once it holds the last line.
    while store.log_index_lag() > 0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let secs = t0.elapsed().as_secs_f64();
    let rate = total as f64 / secs;
    let cpu = thread_cpu();
    println!(
        "metrolog TCP ingest: {total} lines over {conns} connections committed in {committed:.2} s, \
         indexed (searchable) in {secs:.2} s (sent in {:.2} s): {rate:.0} lines/s",
        sent.as_secs_f64()
    );
    // CPU time per line, which the other load on a shared machine moves
    // less than the rate: the writer's SQLite work (sqlx's pooled connection
    // threads), the full-text indexer's (its connection's thread), and the
    // receivers plus the writer task (tokio's workers).
    let per = |prefix: &str| {
        cpu.iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(_, s)| s)
            .sum::<f64>()
            * 1e6
            / total as f64
    };
    println!(
        "  CPU per line: writer's SQLite threads {:.2} µs, indexer thread {:.2} µs, tokio workers {:.2} µs, background checkpoints {:.2} µs",
        per("sqlx-sqlite"),
        per("logs-indexer"),
        per("tokio-"),
        per("db-checkpoint") + per("logs-fts-checkpoint")
    );
    // A WAL file is reused, not shrunk, after a checkpoint: its size is the
    // most it held during the run.
    let wal = |p: &Path| std::fs::metadata(format!("{}-wal", p.display())).map_or(0, |m| m.len());
    println!(
        "  largest WAL: database {:.1} MiB, full-text index {:.1} MiB",
        wal(&dir.path().join("metrolog.db")) as f64 / 1048576.0,
        wal(Path::new(store.log_index_path())) as f64 / 1048576.0
    );
    let found = rt.block_on(async {
        store
            .logs(&LogFilter {
                search: Search::parse(&format!("seq={}", total - 1)).expect("query"),
                limit: 10,
                ..Default::default()
            })
            .await
            .expect("search")
            .len()
    });
    assert_eq!(found, 1, "the last line is searchable");
    let _ = stop_tx.send(true);
    rt.block_on(pipeline.finish());
    let db = file_bytes(&dir.path().join("metrolog.db"));
    let index = file_bytes(Path::new(store.log_index_path()));
    println!(
        "  database {:.0} MiB + full-text index {:.0} MiB ({:.0} bytes per line)",
        db as f64 / 1048576.0,
        index as f64 / 1048576.0,
        (db + index) as f64 / total as f64
    );
    rate
}

/// Bytes of a SQLite file and its write-ahead log.
fn file_bytes(path: &Path) -> u64 {
    let wal = format!("{}-wal", path.display());
    [path, Path::new(&wal)]
        .iter()
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum()
}

/// (thread name, user + system CPU seconds) of this process's threads,
/// from /proc (empty elsewhere).
fn thread_cpu() -> Vec<(String, f64)> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|t| {
            let stat = std::fs::read_to_string(t.path().join("stat")).ok()?;
            // "tid (name) state ppid ..."; utime and stime are fields 14, 15.
            let (name, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
            let f: Vec<&str> = rest.split(' ').collect();
            let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
            Some((name.to_string(), ticks / 100.0))
        })
        .collect()
}

/// Lines in `path`, counted incrementally from `pos`.
fn count_new_lines(path: &Path, pos: &mut u64, n: &mut u64) {
    let Ok(mut f) = std::fs::File::open(path) else {
        return;
    };
    if f.seek(SeekFrom::Start(*pos)).is_err() {
        return;
    }
    let mut buf = vec![0u8; 1 << 20];
    while let Ok(k) = f.read(&mut buf) {
        if k == 0 {
            break;
        }
        *n += buf[..k].iter().filter(|b| **b == b'\n').count() as u64;
        *pos += k as u64;
    }
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rsyslog(lines: usize, conns: usize, parts: &[Arc<Vec<u8>>]) -> Option<f64> {
    let dir = tempfile::tempdir().ok()?;
    let port = TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let out = dir.path().join("out.log");
    let conf = dir.path().join("rsyslog.conf");
    std::fs::write(
        &conf,
        format!(
            "global(workDirectory=\"{d}\")\nmodule(load=\"imtcp\")\n\
             input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\" ruleset=\"r\")\n\
             ruleset(name=\"r\") {{ action(type=\"omfile\" file=\"{o}\") }}\n",
            d = dir.path().display(),
            o = out.display()
        ),
    )
    .ok()?;
    let child = Command::new("rsyslogd")
        .arg("-n")
        .arg("-f")
        .arg(&conf)
        .arg("-i")
        .arg(dir.path().join("pid"))
        .spawn()
        .map_err(|e| println!("rsyslogd not run ({e}); apt-get install rsyslog"))
        .ok()?;
    let _guard = Killed(child);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().ok()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            println!("rsyslogd did not listen");
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let total = (lines / conns * conns) as u64;
    let (mut pos, mut n) = (0, 0);
    let t0 = Instant::now();
    send(addr, parts);
    while n < total {
        count_new_lines(&out, &mut pos, &mut n);
        if t0.elapsed() > Duration::from_secs(600) {
            println!("rsyslogd wrote only {n} of {total} lines");
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let secs = t0.elapsed().as_secs_f64();
    let rate = total as f64 / secs;
    println!("rsyslogd imtcp -> omfile: {total} lines in {secs:.2} s: {rate:.0} lines/s");
    Some(rate)
}

fn search(rows: usize, base: &[String]) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("search.db").display());
    let store = rt.block_on(Store::open(&url)).expect("store");
    let now = chrono::Utc::now();
    // Source times: 100 lines a second ending now (10 M lines span 28 h),
    // a few ms of jitter, and one line in 10 000 arriving an hour late.
    let start_us = now.timestamp_micros() - rows as i64 * 10_000;
    let ts_of = |j: usize| {
        let t = start_us + j as i64 * 10_000 + (j % 7) as i64 * 1_000;
        if j % 10_000 == 3 {
            t - 3_600_000_000
        } else {
            t
        }
    };
    let t0 = Instant::now();
    let chunk = 20_000;
    let mut i = 0;
    while i < rows {
        let recs: Vec<LogRecord> = (i..(i + chunk).min(rows))
            .map(|j| {
                let mut r = parse(line(j, base).trim_end().as_bytes(), now, 65536);
                r.ts = ts_of(j);
                r.received_at = r.ts.max(start_us + j as i64 * 10_000);
                // A rare word: one line in 100 000.
                if j % 100_000 == 7 {
                    r.message.push_str(" kernel panic quasar");
                }
                r
            })
            .collect();
        let new: Vec<NewLog<'_>> = recs
            .iter()
            .map(|r| NewLog {
                host_id: None,
                record: r,
                source: LogSource::SyslogTcp,
            })
            .collect();
        rt.block_on(store.insert_logs(&new, &[])).expect("insert");
        i += chunk;
    }
    let load = t0.elapsed().as_secs_f64();
    // The full-text index is built after the rows here (the rounds the
    // server's indexer runs alongside ingest).
    rt.block_on(store.catch_up_log_index()).expect("index");
    let indexed = t0.elapsed().as_secs_f64() - load;
    let db = file_bytes(&dir.path().join("search.db"));
    let index = file_bytes(Path::new(store.log_index_path()));
    println!(
        "search corpus: {rows} lines bulk-inserted through the store in {load:.1} s ({:.0} lines/s), \
         indexed in {indexed:.1} s ({:.0} lines/s); {:.0} MiB + index {:.0} MiB",
        rows as f64 / load,
        rows as f64 / indexed,
        db as f64 / 1048576.0,
        index as f64 / 1048576.0
    );
    for q in [
        "password",
        "\"Failed password\" root",
        "quasar",
        "pam_unix invalid",
        "accepted publickey",
        "nosuchword",
    ] {
        let filter = LogFilter {
            search: Search::parse(q).expect("query"),
            limit: 100,
            ..Default::default()
        };
        let mut times = Vec::new();
        let mut found = 0;
        for _ in 0..11 {
            let t = Instant::now();
            found = rt.block_on(store.logs(&filter)).expect("search").len();
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        println!(
            "  q={q:<26} newest {found:>3} matches: median {:.1} ms, max {:.1} ms",
            times[times.len() / 2],
            times[times.len() - 1]
        );
    }
    // Time ranges (`from`/`to`), through the zone map: the corpus spans
    // `rows / 100` seconds ending now.
    let minute = 60_000_000i64;
    let end_us = start_us + rows as i64 * 10_000;
    let ranges: [(&str, i64, i64, Option<&str>); 5] = [
        (
            "1 min, 2 h ago",
            end_us - 120 * minute,
            end_us - 119 * minute,
            None,
        ),
        (
            "1 min, 2 h ago, q=password",
            end_us - 120 * minute,
            end_us - 119 * minute,
            Some("password"),
        ),
        (
            "1 min, 2 h ago, q=quasar",
            end_us - 120 * minute,
            end_us - 119 * minute,
            Some("quasar"),
        ),
        (
            "10 min, at the start",
            start_us,
            start_us + 10 * minute,
            None,
        ),
        (
            "1 h, 20 h ago",
            end_us - 1200 * minute,
            end_us - 1140 * minute,
            None,
        ),
    ];
    for (what, from, to, q) in ranges {
        let filter = LogFilter {
            from: Some(from),
            to: Some(to),
            search: q.and_then(|q| Search::parse(q).expect("query")),
            limit: 100,
            ..Default::default()
        };
        let mut times = Vec::new();
        let mut found = 0;
        for _ in 0..11 {
            let t = Instant::now();
            found = rt.block_on(store.logs(&filter)).expect("range").len();
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        println!(
            "  time range {what:<28} newest {found:>3}: median {:.1} ms, max {:.1} ms",
            times[times.len() / 2],
            times[times.len() - 1]
        );
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let base = Arc::new(base_lines());
    let lines = env_num("LOGS_BENCH_LINES", 2_000_000);
    let conns = env_num("LOGS_BENCH_CONNS", 4).max(1);
    let parts = stream(lines, conns, &base);
    let ours = (!skip("ingest")).then(|| ingest(lines, conns, &parts));
    let theirs = if skip("rsyslog") {
        None
    } else {
        rsyslog(lines, conns, &parts)
    };
    if let (Some(a), Some(b)) = (ours, theirs) {
        println!(
            "ratio metrolog / rsyslog-to-file: {:.2} ({a:.0} vs {b:.0} lines/s)",
            a / b
        );
    }
    drop(parts);
    if !skip("search") {
        search(env_num("LOGS_BENCH_ROWS", 10_000_000), &base);
    }
}
