//! Metrology benchmarks, each side by side with Debian's `rrdtool` in the same run
//! on the same data (results and discussion in docs/benchmarks.md):
//!
//! a. ingest of agent buckets across 10 000 series through the real ingest path
//!    (validation, one journal row per batch, committed with fsync before the
//!    answer), plus the flushes that move the rows into the archives, against
//!    `rrdtool update` with one file per series;
//! b. bytes on disk per series with the default ladder, for a series that lived one
//!    hour and for archives full, against the rrdtool file;
//! c. a one-week query of a 50-member group aggregate, against `rrdtool xport`
//!    averaging the 50 files.
//!
//! Run: `cargo bench -p metrolog-server --bench metrology` (needs `rrdtool`).
//! `METROLOG_BENCH_QUICK=1` shrinks every size for a smoke run.

use metrolog_protocol::rrd::Row;
use metrolog_protocol::{Batch, BatchId, Bucket, Labels, SeriesBuckets, SeriesKey};
use metrolog_server::ingest::Ingestor;
use metrolog_server::query::{self, Agg, Cf, QuerySpec, Target};
use metrolog_server::store::archive::chunk;
use metrolog_server::store::{HostFacts, HostSource, Store};
use metrolog_server::telemetry::ServerMetrics;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn quick() -> bool {
    std::env::var_os("METROLOG_BENCH_QUICK").is_some()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Seeded xorshift: the same data every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// A plausible gauge value with decimals (no easy compression).
    fn value(&mut self) -> f64 {
        (self.next() % 10_000_000) as f64 / 99_991.0
    }
}

fn bucket(ts: i64, rng: &mut Rng) -> Bucket {
    let avg = rng.value();
    let spread = (rng.next() % 1000) as f64 / 997.0;
    Bucket {
        ts,
        avg,
        min: avg - spread,
        max: avg + spread * 1.5,
        last: avg,
        count: 10,
    }
}

async fn open(dir: &Path) -> Res<Arc<Store>> {
    let url = format!("sqlite://{}", dir.join("bench.db").display());
    Ok(Arc::new(Store::open(&url).await?))
}

async fn hosts(store: &Store, n: usize, group: &str) -> Res<Vec<i64>> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        ids.push(
            store
                .upsert_host(
                    &HostFacts {
                        hostname: format!("{group}-{i}"),
                        instance_id: None,
                        group: Some(group.into()),
                        labels: Labels::new(),
                        agent_version: None,
                    },
                    HostSource::Agent,
                )
                .await?,
        );
    }
    Ok(ids)
}

fn keys(n: usize) -> Vec<SeriesKey> {
    (0..n)
        .map(|i| {
            let mut l = Labels::new();
            l.insert("n".into(), i.to_string());
            SeriesKey::new("bench.value", l).expect("valid series name")
        })
        .collect()
}

/// One agent batch: `per` buckets of step 10 for every key, ending at `t_end`.
fn batch(seq: u64, keys: &[SeriesKey], t_end: i64, per: i64, rng: &mut Rng) -> Batch {
    Batch {
        id: BatchId {
            stream: "bench0000000000000".into(),
            seq,
        },
        sent_at: t_end,
        logs: Vec::new(),
        checks: Vec::new(),
        metrics: keys
            .iter()
            .map(|k| SeriesBuckets {
                key: k.clone(),
                step: 10,
                buckets: (0..per)
                    .map(|j| bucket(t_end - (per - 1 - j) * 10, rng))
                    .collect(),
            })
            .collect(),
        series_meta: Vec::new(),
    }
}

/// `rrdtool -` (pipe mode) running `commands`; returns the wall time.
fn rrdtool_pipe(commands: impl Iterator<Item = String>) -> Res<Duration> {
    let mut child = Command::new("rrdtool")
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run rrdtool (apt-get install rrdtool): {e}"))?;
    let stdout = child.stdout.take().ok_or("no rrdtool stdout")?;
    let reader = std::thread::spawn(move || {
        let mut errors = 0usize;
        let mut first = None;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("ERROR") {
                errors += 1;
                first.get_or_insert(line);
            }
        }
        (errors, first)
    });
    let start = Instant::now();
    {
        let mut stdin = std::io::BufWriter::new(child.stdin.take().ok_or("no rrdtool stdin")?);
        for c in commands {
            stdin.write_all(c.as_bytes())?;
            stdin.write_all(b"\n")?;
        }
    }
    child.wait()?;
    let took = start.elapsed();
    let (errors, first) = reader.join().map_err(|_| "rrdtool reader panicked")?;
    if errors > 0 {
        return Err(format!("rrdtool reported {errors} errors, first: {first:?}").into());
    }
    Ok(took)
}

fn create_args(path: &Path, start: i64) -> String {
    let mut s = format!(
        "create {} --start {start} --step 10 DS:v:GAUGE:30:U:U",
        path.display()
    );
    for (pdp, rows) in [(1, 360), (6, 1440), (30, 2016), (360, 744), (8640, 730)] {
        for cf in ["AVERAGE", "MIN", "MAX", "LAST"] {
            s.push_str(&format!(" RRA:{cf}:0.5:{pdp}:{rows}"));
        }
    }
    s
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Metrolog's side of (a): agents of 100 series each ship `per` buckets per series
/// every `per` × 10 s; `rounds` ship intervals, one archive flush per interval.
/// Returns (samples, time to acknowledge, time flushing).
async fn ingest_metrolog(n_series: usize, rounds: i64, per: i64) -> Res<(u64, Duration, Duration)> {
    let per_host = 100;
    let n_hosts = n_series / per_host;
    let dir = tempfile::tempdir()?;
    let store = open(dir.path()).await?;
    let metrics = Arc::new(ServerMetrics::default());
    let ingestor = Ingestor::new(store.clone(), metrics.clone());
    let host_ids = hosts(&store, n_hosts, "ingest").await?;
    let keys = keys(per_host);
    let mut rng = Rng(42);
    let t0 = (now() - rounds * per * 10 - 60) / 10 * 10;
    // Warm-up round: creates the series (not timed).
    for id in &host_ids {
        ingestor
            .ingest(*id, batch(1, &keys, t0, 1, &mut rng), now())
            .await?;
    }
    store.flush_archives().await?;
    let mut ack = Duration::ZERO;
    let mut flush = Duration::ZERO;
    let mut samples = 0u64;
    for r in 1..=rounds {
        let batches: Vec<Batch> = host_ids
            .iter()
            .map(|_| batch(1 + r as u64, &keys, t0 + r * per * 10, per, &mut rng))
            .collect();
        // The hosts' agents ship at the same time, as a fleet does: concurrent
        // batches share one transaction and one fsync (group commit).
        let start = Instant::now();
        let tasks: Vec<_> = host_ids
            .iter()
            .zip(batches)
            .map(|(id, b)| {
                let (ingestor, id) = (ingestor.clone(), *id);
                tokio::spawn(async move { ingestor.ingest(id, b, now()).await })
            })
            .collect();
        for t in tasks {
            samples += t.await??.accepted;
        }
        ack += start.elapsed();
        let start = Instant::now();
        store.flush_archives().await?;
        flush += start.elapsed();
    }
    Ok((samples, ack, flush))
}

/// rrdtool's side of (a): one file per series, one `update` per series per 10 s.
/// Returns updates per second.
fn ingest_rrdtool(n_series: usize, rounds: i64) -> Res<f64> {
    let t0 = (now() - rounds * 10 - 60) / 10 * 10;
    let rdir = tempfile::tempdir()?;
    let files: Vec<_> = (0..n_series)
        .map(|i| rdir.path().join(format!("s{i}.rrd")))
        .collect();
    let create = rrdtool_pipe(files.iter().map(|f| create_args(f, t0 - 10)))?;
    let mut rng = Rng(42);
    let commands: Vec<String> = (1..=rounds)
        .flat_map(|r| (0..n_series).map(move |i| (r, i)))
        .map(|(r, i)| {
            format!(
                "update {} {}:{:.6}",
                files[i].display(),
                t0 + r * 10,
                rng.value()
            )
        })
        .collect();
    let k = commands.len();
    let update = rrdtool_pipe(commands.into_iter())?;
    let rate = k as f64 / update.as_secs_f64();
    println!(
        "rrdtool:  {k} updates (one file per series, one update per series per 10 s, through `rrdtool -`) in {:.2} s = {rate:.0} updates/s (creating the {n_series} files: {:.1} s, not counted)",
        update.as_secs_f64(),
        create.as_secs_f64()
    );
    Ok(rate)
}

/// The same updates through rrdcached (`-w 300 -z 300` like the server's
/// `write_delay`, a journal in `-j` like its `archive_journal`): `per`
/// values per series per `UPDATE`, every command of a round in one `BATCH`
/// over the unix socket, timed until rrdcached has answered the batch
/// (acknowledged, still in its queue); then `FLUSHALL` and the wait until
/// its queue is written, timed apart. Returns (acknowledged updates/s,
/// updates/s with the flush).
fn ingest_rrdcached(n_series: usize, rounds: i64, per: i64) -> Res<(f64, f64)> {
    use std::os::unix::net::UnixStream;
    let t0 = (now() - rounds * per * 10 - 60) / 10 * 10;
    let dir = tempfile::tempdir()?;
    let base = dir.path().join("rrd");
    let journal = dir.path().join("journal");
    std::fs::create_dir_all(&base)?;
    std::fs::create_dir_all(&journal)?;
    let files: Vec<_> = (0..n_series)
        .map(|i| base.join(format!("s{i}.rrd")))
        .collect();
    rrdtool_pipe(files.iter().map(|f| create_args(f, t0 - 10)))?;
    let sock = dir.path().join("rrdcached.sock");
    let mut daemon = Command::new("rrdcached")
        .args(["-g", "-w", "300", "-z", "300", "-t", "2", "-B", "-b"])
        .arg(&base)
        .arg("-j")
        .arg(&journal)
        .arg("-p")
        .arg(dir.path().join("pid"))
        .arg("-l")
        .arg(format!("unix:{}", sock.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run rrdcached (apt-get install rrdcached): {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let stream = loop {
        match UnixStream::connect(&sock) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("rrdcached did not open its socket: {e}").into()),
        }
    };
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = std::io::BufWriter::new(stream);
    let mut line = String::new();
    let answer = |reader: &mut BufReader<UnixStream>, line: &mut String| -> Res<i64> {
        line.clear();
        reader.read_line(line)?;
        let code: i64 = line
            .split_whitespace()
            .next()
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("rrdcached answered {line:?}"))?;
        // A positive status is followed by that many lines.
        for _ in 0..code.max(0) {
            let mut more = String::new();
            reader.read_line(&mut more)?;
        }
        Ok(code)
    };
    let mut rng = Rng(42);
    let mut updates = 0u64;
    let mut ack = Duration::ZERO;
    for r in 1..=rounds {
        let cmds: Vec<String> = (0..n_series)
            .map(|i| {
                let mut c = format!("UPDATE s{i}.rrd");
                for k in 0..per {
                    c.push_str(&format!(
                        " {}:{:.6}",
                        t0 + ((r - 1) * per + k + 1) * 10,
                        rng.value()
                    ));
                }
                c
            })
            .collect();
        let start = Instant::now();
        writer.write_all(b"BATCH\n")?;
        writer.flush()?;
        answer(&mut reader, &mut line)?;
        for c in &cmds {
            writer.write_all(c.as_bytes())?;
            writer.write_all(b"\n")?;
        }
        writer.write_all(b".\n")?;
        writer.flush()?;
        let errors = answer(&mut reader, &mut line)?;
        ack += start.elapsed();
        if errors != 0 {
            return Err(format!("rrdcached: {errors} errors in a batch ({line:?})").into());
        }
        updates += n_series as u64 * per as u64;
    }
    // Write everything queued: FLUSHALL starts it; the queue is empty when
    // STATS says so.
    let start = Instant::now();
    writer.write_all(b"FLUSHALL\n")?;
    writer.flush()?;
    answer(&mut reader, &mut line)?;
    loop {
        writer.write_all(b"STATS\n")?;
        writer.flush()?;
        line.clear();
        reader.read_line(&mut line)?;
        let n: usize = line
            .split_whitespace()
            .next()
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let mut queue = 1;
        for _ in 0..n {
            let mut l = String::new();
            reader.read_line(&mut l)?;
            if let Some(v) = l.strip_prefix("QueueLength:") {
                queue = v.trim().parse().unwrap_or(1);
            }
        }
        if queue == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let flush = start.elapsed();
    let _ = daemon.kill();
    let _ = daemon.wait();
    let acked = updates as f64 / ack.as_secs_f64();
    let total = updates as f64 / (ack + flush).as_secs_f64();
    println!(
        "rrdcached: {updates} updates ({per} value(s) per series per UPDATE, one BATCH per round, -w 300 -z 300, journal on) acknowledged in {:.2} s = {acked:.0} updates/s; with FLUSHALL until its queue is written ({:.2} s) {total:.0} updates/s",
        ack.as_secs_f64(),
        flush.as_secs_f64()
    );
    Ok((acked, total))
}

/// rrdtool given `per` values per series in one `update` (batched, as
/// rrdcached hands them to it). Returns updates per second.
fn ingest_rrdtool_batched(n_series: usize, rounds: i64, per: i64) -> Res<f64> {
    let t0 = (now() - rounds * per * 10 - 60) / 10 * 10;
    let rdir = tempfile::tempdir()?;
    let files: Vec<_> = (0..n_series)
        .map(|i| rdir.path().join(format!("s{i}.rrd")))
        .collect();
    rrdtool_pipe(files.iter().map(|f| create_args(f, t0 - 10)))?;
    let mut rng = Rng(42);
    let mut commands = Vec::new();
    for r in 1..=rounds {
        for f in &files {
            let mut c = format!("update {}", f.display());
            for k in 0..per {
                c.push_str(&format!(
                    " {}:{:.6}",
                    t0 + ((r - 1) * per + k + 1) * 10,
                    rng.value()
                ));
            }
            commands.push(c);
        }
    }
    let took = rrdtool_pipe(commands.into_iter())?;
    let k = n_series as f64 * (rounds * per) as f64;
    let rate = k / took.as_secs_f64();
    println!(
        "rrdtool:  {k} updates, {per} values per `update` (batched), in {:.2} s = {rate:.0} updates/s",
        took.as_secs_f64()
    );
    Ok(rate)
}

/// (a) Ingest across `n_series` series.
async fn ingest(n_series: usize, rounds: i64) -> Res<()> {
    println!("## (a) ingest across {n_series} series");
    let rrd_rate = ingest_rrdtool(n_series, rounds)?;
    for per in [1, 6] {
        let rrd_batched = if per > 1 {
            Some(ingest_rrdtool_batched(n_series, rounds, per)?)
        } else {
            None
        };
        let (cached_ack, cached_total) = ingest_rrdcached(n_series, rounds, per)?;
        let (samples, ack, flush) = ingest_metrolog(n_series, rounds, per).await?;
        let acked = samples as f64 / ack.as_secs_f64();
        let total = samples as f64 / (ack + flush).as_secs_f64();
        println!(
            "metrolog: agent batches of 100 series x {per} bucket(s), 100 agents at once: {samples} buckets acknowledged (journal committed with fsync, group commit) in {:.2} s = {acked:.0} samples/s ({:.2}x rrdcached acknowledged, {:.1}x rrdtool); with the {rounds} flushes into the archives ({:.2} s) {total:.0} samples/s ({:.2}x rrdcached with its flush, {:.1}x rrdtool{})",
            ack.as_secs_f64(),
            acked / cached_ack,
            acked / rrd_rate,
            flush.as_secs_f64(),
            total / cached_total,
            total / rrd_rate,
            rrd_batched
                .map(|b| format!(", {:.1}x rrdtool batched", total / b))
                .unwrap_or_default()
        );
    }
    println!();
    Ok(())
}

/// Feeds `hours` of buckets `step` seconds apart ending at `t_end` to every host ×
/// key, `chunk_hours` per agent batch, flushing the archives after each round of
/// batches. `gen(host, key, ts)` makes each bucket; it is called host by host, key
/// by key, oldest first.
#[allow(clippy::too_many_arguments)]
async fn feed_with(
    store: &Arc<Store>,
    ingestor: &Ingestor,
    host_ids: &[i64],
    keys: &[SeriesKey],
    t_end: i64,
    hours: i64,
    chunk_hours: i64,
    step: i64,
    gen: &mut dyn FnMut(usize, usize, i64) -> Bucket,
) -> Res<u64> {
    let per = chunk_hours * 3600 / step;
    let mut seq = 1;
    let mut n = 0;
    let start = t_end - hours * 3600;
    let mut t = start + chunk_hours * 3600;
    while t <= t_end {
        for (h, id) in host_ids.iter().enumerate() {
            let b = Batch {
                id: BatchId {
                    stream: "bench0000000000000".into(),
                    seq,
                },
                sent_at: t,
                logs: Vec::new(),
                checks: Vec::new(),
                metrics: keys
                    .iter()
                    .enumerate()
                    .map(|(k, key)| SeriesBuckets {
                        key: key.clone(),
                        step: 10,
                        buckets: (0..per)
                            .map(|j| gen(h, k, t - (per - 1 - j) * step))
                            .collect(),
                    })
                    .collect(),
                series_meta: Vec::new(),
            };
            n += ingestor.ingest(*id, b, now()).await?.accepted;
        }
        seq += 1;
        store.flush_archives().await?;
        t += chunk_hours * 3600;
    }
    Ok(n)
}

/// Feeds `hours` of 30 s buckets of [`bucket`] values (full mantissas): 30 s apart,
/// at the heartbeat, so every step is known.
#[allow(clippy::too_many_arguments)]
async fn feed(
    store: &Arc<Store>,
    ingestor: &Ingestor,
    host_ids: &[i64],
    keys: &[SeriesKey],
    t_end: i64,
    hours: i64,
    chunk_hours: i64,
    rng: &mut Rng,
) -> Res<u64> {
    let mut gen = |_: usize, _: usize, ts: i64| bucket(ts, rng);
    feed_with(
        store,
        ingestor,
        host_ids,
        keys,
        t_end,
        hours,
        chunk_hours,
        30,
        &mut gen,
    )
    .await
}

/// One agent-like series: what `metrolog-agent` would ship for it, 1-second samples
/// computed with the agent's own arithmetic (`agent/src/collect`) and consolidated
/// into 10-second buckets as `agent/src/downsample.rs` does (f64 sum of the ten
/// samples ÷ 10, min, max, last). Kinds (`kind % 4`):
///
/// 0. `cpu.busy_pct` of a 2-CPU machine: per second the kernel's jiffies (USER_HZ
///    100) advance by 200 in total, or by 199 or 201 (one read in four each, the
///    sampler's wake-up jitter across tick boundaries); busy jiffies follow a slowly
///    drifting load level ± 3; the sample is `busy / total × 100` (f64, as `pct`).
/// 1. `mem.used_bytes`: `/proc/meminfo` kB × 1024, a random walk of ± 1000 kB per
///    second around 2 GB.
/// 2. `load.1m`: the kernel's 5-second exponentially damped average of 0–4 running
///    tasks, read as its 2-decimal text and parsed.
/// 3. `net.rx_bytes_per_s`: an integer byte counter (a third of the seconds idle,
///    else 0–20 kB, with 1-in-50 bursts of up to 10 MB) over the measured elapsed
///    time, 1 s ± up to 1 ms (`Instant` differences).
struct AgentSim {
    kind: usize,
    rng: Rng,
    level: f64,
    kb: u64,
    load: f64,
    shown: f64,
    sec: u64,
}

impl AgentSim {
    fn new(kind: usize, seed: u64) -> Self {
        Self {
            kind: kind % 4,
            rng: Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1),
            level: 0.3,
            kb: 2_000_000,
            load: 0.5,
            shown: 0.5,
            sec: 0,
        }
    }

    fn unit(&mut self) -> f64 {
        (self.rng.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The next 1-second sample.
    fn sample(&mut self) -> f64 {
        self.sec += 1;
        match self.kind {
            0 => {
                let total = match self.rng.next() % 4 {
                    0 => 199.0,
                    3 => 201.0,
                    _ => 200.0,
                };
                self.level = (self.level + (self.unit() - 0.5) * 0.02).clamp(0.02, 0.95);
                let noise = (self.rng.next() % 7) as f64 - 3.0;
                let busy = (total * self.level + noise).round().clamp(0.0, total);
                (busy / total * 100.0).clamp(0.0, 100.0)
            }
            1 => {
                self.kb = (self.kb + self.rng.next() % 2001).saturating_sub(1000);
                (self.kb * 1024) as f64
            }
            2 => {
                if self.sec.is_multiple_of(5) {
                    let running = (self.rng.next() % 5) as f64;
                    let e = (-5.0f64 / 60.0).exp();
                    self.load = self.load * e + running * (1.0 - e);
                    self.shown = format!("{:.2}", self.load).parse().unwrap_or(0.0);
                }
                self.shown
            }
            _ => {
                let bytes = match self.rng.next() % 150 {
                    0..=49 => 0,
                    50..=52 => self.rng.next() % 10_000_000,
                    _ => self.rng.next() % 20_000,
                };
                let jitter_ns = (self.rng.next() % 2_000_001) as i64 - 1_000_000;
                let elapsed =
                    Duration::from_nanos((1_000_000_000 + jitter_ns) as u64).as_secs_f64();
                if bytes == 0 {
                    0.0
                } else {
                    bytes as f64 / elapsed
                }
            }
        }
    }

    /// The 10-second bucket ending at `ts`.
    fn bucket(&mut self, ts: i64) -> Bucket {
        let first = self.sample();
        let (mut sum, mut min, mut max, mut last) = (first, first, first, first);
        for _ in 1..10 {
            let v = self.sample();
            sum += v;
            min = min.min(v);
            max = max.max(v);
            last = v;
        }
        Bucket {
            ts,
            avg: sum / 10.0,
            min,
            max,
            last,
            count: 10,
        }
    }
}

fn agent_keys() -> Vec<SeriesKey> {
    let mut eth0 = Labels::new();
    eth0.insert("iface".into(), "eth0".into());
    [
        ("cpu.busy_pct", Labels::new()),
        ("mem.used_bytes", Labels::new()),
        ("load.1m", Labels::new()),
        ("net.rx_bytes_per_s", eth0),
    ]
    .into_iter()
    .map(|(n, l)| SeriesKey::new(n, l).expect("valid series name"))
    .collect()
}

/// What one (b) measurement found, per series.
struct SizeRun {
    series: usize,
    buckets: u64,
    secs: f64,
    /// Growth of the database pages in use.
    pages: f64,
    /// Encoded rows (`length(data)` of every chunk).
    rows: f64,
    chunks: f64,
    /// Database files after a checkpoint (hosts and schema included).
    file: f64,
}

/// Feeds one data set into a fresh database and measures it.
async fn size_run(agent: bool, full: bool) -> Res<SizeRun> {
    let dir = tempfile::tempdir()?;
    let store = open(dir.path()).await?;
    let ingestor = Ingestor::new(store.clone(), Arc::new(ServerMetrics::default()));
    let hours = match (full, quick()) {
        (false, _) => 1,
        (true, false) => 24 * 761,
        (true, true) => 24 * 40,
    };
    let (keys, n_hosts) = match (agent, full, quick()) {
        (true, false, q) => (agent_keys(), if q { 25 } else { 250 }),
        (true, true, q) => (agent_keys(), if q { 1 } else { 2 }),
        (false, false, q) => (keys(100), if q { 1 } else { 10 }),
        (false, true, q) => (keys(if q { 2 } else { 10 }), 1),
    };
    let host_ids = hosts(&store, n_hosts, "size").await?;
    // A day per agent batch (one flush each), or the whole hour.
    let per_batch = hours.min(24);
    let series = n_hosts * keys.len();
    let before = store.database_bytes().await?;
    let t_end = now() / 10 * 10;
    let start = Instant::now();
    let buckets = if agent {
        let mut sims: Vec<Vec<AgentSim>> = (0..n_hosts)
            .map(|h| {
                (0..keys.len())
                    .map(|k| AgentSim::new(k, (h * keys.len() + k + 1) as u64))
                    .collect()
            })
            .collect();
        let mut gen = |h: usize, k: usize, ts: i64| sims[h][k].bucket(ts);
        feed_with(
            &store, &ingestor, &host_ids, &keys, t_end, hours, per_batch, 10, &mut gen,
        )
        .await?
    } else {
        let mut rng = Rng(7);
        feed(
            &store, &ingestor, &host_ids, &keys, t_end, hours, per_batch, &mut rng,
        )
        .await?
    };
    let secs = start.elapsed().as_secs_f64();
    let after = store.database_bytes().await?;
    let (chunks, rows) = store.archive_chunk_bytes().await?;
    store.checkpoint().await?;
    store.close().await;
    let n = series as f64;
    Ok(SizeRun {
        series,
        buckets,
        secs,
        pages: (after - before) as f64 / n,
        rows: rows as f64 / n,
        chunks: chunks as f64 / n,
        file: dir_bytes(dir.path()) as f64 / n,
    })
}

/// 16 rows of `pdp` steps each, consolidated from `next()` buckets as the engine
/// does (average of the steps' averages, extremes of their extremes, last step).
fn chunk_rows(pdp: u32, next: &mut dyn FnMut() -> Bucket) -> Vec<Row> {
    (0..16)
        .map(|_| {
            let first = next();
            let (mut sum, mut min, mut max, mut last) =
                (first.avg, first.min, first.max, first.avg);
            for _ in 1..pdp {
                let b = next();
                sum += b.avg;
                min = min.min(b.min);
                max = max.max(b.max);
                last = b.avg;
            }
            let avg = sum / f64::from(pdp);
            Row {
                avg,
                min,
                max,
                last,
                count: pdp,
            }
        })
        .collect()
}

/// Microseconds to encode and to decode one 16-row chunk, and its bytes.
fn codec_cost(rows: &[Row], pdp: u32) -> Res<(f64, f64, usize)> {
    let runs = if quick() { 2_000 } else { 20_000 };
    let mut buf = Vec::new();
    let start = Instant::now();
    for _ in 0..runs {
        chunk::encode(std::hint::black_box(rows), pdp, &mut buf);
    }
    let enc = start.elapsed().as_secs_f64() * 1e6 / f64::from(runs);
    let start = Instant::now();
    for _ in 0..runs {
        std::hint::black_box(chunk::decode(std::hint::black_box(&buf), rows.len(), pdp)?);
    }
    let dec = start.elapsed().as_secs_f64() * 1e6 / f64::from(runs);
    Ok((enc, dec, buf.len()))
}

/// (b) Bytes per series.
async fn size() -> Res<()> {
    let rdir = tempfile::tempdir()?;
    let rfile = rdir.path().join("one.rrd");
    rrdtool_pipe(std::iter::once(create_args(&rfile, now() - 86400)))?;
    let rrd_bytes = std::fs::metadata(&rfile)?.len() as f64;
    println!("## (b) bytes on disk per series, default ladder (10s x360, 1m x1440, 5m x2016, 1h x744, 1d x730)");
    println!("rrdtool: {rrd_bytes} bytes per file (AVERAGE, MIN, MAX, LAST for the 5 archives), whatever it holds");
    println!("| data | lived | series | buckets fed (s) | pages in use / series | x rrdtool | encoded rows / series | chunks / series | rows / pages | file after checkpoint / series |");
    for (agent, name) in [
        (true, "agent-like (cpu, mem, load, net; 10 s buckets)"),
        (false, "worst case (random full mantissas; 30 s buckets)"),
    ] {
        for (full, lived) in [(false, "1 hour"), (true, "archives full")] {
            let r = size_run(agent, full).await?;
            println!(
                "| {name} | {lived} | {} | {} ({:.1} s) | {:.0} | {:.2} | {:.0} | {:.0} | {:.0} % | {:.0} |",
                r.series,
                r.buckets,
                r.secs,
                r.pages,
                r.pages / rrd_bytes,
                r.rows,
                r.chunks,
                100.0 * r.rows / r.pages,
                r.file
            );
        }
    }
    println!("chunk codec (format 2), one 16-row chunk: encode (what a flush does per chunk it touches) / decode (what a read does), bytes");
    for pdp in [1, 30] {
        let mut rng = Rng(11);
        let worst = chunk_rows(pdp, &mut || bucket(0, &mut rng));
        let mut cpu = AgentSim::new(0, 1);
        let cpu = chunk_rows(pdp, &mut || cpu.bucket(0));
        let mut mem = AgentSim::new(1, 2);
        let mem = chunk_rows(pdp, &mut || mem.bucket(0));
        for (name, rows) in [
            ("worst case", worst),
            ("agent cpu", cpu),
            ("agent mem", mem),
        ] {
            let (enc, dec, bytes) = codec_cost(&rows, pdp)?;
            println!(
                "  {name}, {pdp} step(s) per row: encode {enc:.2} us, decode {dec:.2} us, {bytes} bytes"
            );
        }
    }
    println!();
    Ok(())
}

/// (c) One week of a 50-member group aggregate.
async fn group_query() -> Res<()> {
    let members = 50;
    let dir = tempfile::tempdir()?;
    let store = open(dir.path()).await?;
    let ingestor = Ingestor::new(store.clone(), Arc::new(ServerMetrics::default()));
    let host_ids = hosts(&store, members, "web").await?;
    let key = vec![SeriesKey::new("cpu.busy_pct", Labels::new())?];
    let t_end = now() / 10 * 10;
    let hours = if quick() { 24 } else { 7 * 24 + 1 };
    let mut rng = Rng(9);
    feed(
        &store, &ingestor, &host_ids, &key, t_end, hours, 24, &mut rng,
    )
    .await?;
    // The group's own series, as the recorder (server/src/groups) writes it
    // every 10 s while the members report: `cpu.busy_pct{agg="avg"}`.
    let owner = store.group_owner_or_create("web").await?;
    let mut avg_labels = Labels::new();
    avg_labels.insert("agg".into(), "avg".into());
    let avg_key = SeriesKey::new("cpu.busy_pct", avg_labels)?;
    let mut t = t_end - hours * 3600 + 10;
    while t <= t_end {
        let points: Vec<(i64, f64)> = (0..8640)
            .map(|k| t + k * 10)
            .take_while(|&ts| ts <= t_end)
            .map(|ts| (ts, rng.value()))
            .collect();
        t += 8640 * 10;
        store
            .import_samples(owner, &[(avg_key.clone(), points)])
            .await?;
        store.flush_archives().await?;
    }
    let run = |agg| {
        let spec = QuerySpec {
            target: Target::Group {
                group: "web".into(),
                agg,
            },
            names: vec!["cpu.busy_pct".into()],
            from: t_end - 7 * 86400,
            to: t_end,
            cf: Cf::Avg,
            step: None,
        };
        let store = store.clone();
        async move {
            let mut times = Vec::new();
            let mut rows = 0;
            // METROLOG_BENCH_QUERIES: more rounds, to profile a query.
            let rounds: usize = std::env::var("METROLOG_BENCH_QUERIES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(21);
            for _ in 0..rounds {
                let start = Instant::now();
                let r = query::run(&store, &spec, now()).await?;
                times.push(start.elapsed());
                rows = r.series.first().map_or(0, |s| s.points.len());
            }
            times.sort();
            Ok::<_, Box<dyn std::error::Error>>((times[times.len() / 2], rows))
        }
    };
    // avg reads the recorded series; max was not recorded here, so it is
    // aggregated from the 50 members' archives row by row (the fallback).
    let (ours, rows) = run(Agg::Avg).await?;
    // Without the decoded-chunk cache every run reads and decodes every
    // member's chunks (a first look at a graph); with it, runs after the
    // first take the chunks from memory (the same graph looked at again,
    // as rrdtool's files come from the page cache).
    store.set_read_cache(0);
    let (members_cold, _) = run(Agg::Max).await?;
    store.set_read_cache(metrolog_server::store::archive::DEFAULT_READ_CACHE);
    let (members_path, _) = run(Agg::Max).await?;
    // Of the fallback, the part that reads and decodes the members' rows
    // (one statement for the 50 series, chunks decoded, pending rows laid over).
    let ids: Vec<i64> = store
        .group_member_series("web", "cpu.busy_pct")
        .await?
        .iter()
        .map(|s| s.id)
        .collect();
    // METROLOG_BENCH_READS: more rounds, to profile the read alone.
    let reads: usize = std::env::var("METROLOG_BENCH_READS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(21);
    let mut read_part = [Duration::ZERO; 2];
    for (k, cache) in [0, metrolog_server::store::archive::DEFAULT_READ_CACHE]
        .into_iter()
        .enumerate()
    {
        store.set_read_cache(cache);
        let mut read_times = Vec::new();
        for _ in 0..reads {
            let start = Instant::now();
            let rows = store
                .archive_rows_many(&ids, 300, t_end - 7 * 86400, t_end)
                .await?;
            read_times.push(start.elapsed());
            assert_eq!(rows.iter().flatten().count(), members);
        }
        read_times.sort();
        read_part[k] = read_times[read_times.len() / 2];
    }

    // rrdtool: the same 50 series in 50 files, averaged by `rrdtool xport`.
    let rdir = tempfile::tempdir()?;
    let files: Vec<_> = (0..members)
        .map(|i| rdir.path().join(format!("m{i}.rrd")))
        .collect();
    let start_ts = t_end - hours * 3600;
    rrdtool_pipe(files.iter().map(|f| create_args(f, start_ts - 30)))?;
    let mut rng = Rng(9);
    let mut cmds = Vec::new();
    for f in &files {
        let mut t = start_ts + 30;
        while t <= t_end {
            let mut c = format!("update {}", f.display());
            for _ in 0..500 {
                if t > t_end {
                    break;
                }
                c.push_str(&format!(" {t}:{:.6}", rng.value()));
                t += 30;
            }
            cmds.push(c);
        }
    }
    rrdtool_pipe(cmds.into_iter())?;
    let mut xport = vec![
        "xport".to_string(),
        "--start".into(),
        (t_end - 7 * 86400).to_string(),
        "--end".into(),
        t_end.to_string(),
    ];
    for (i, f) in files.iter().enumerate() {
        xport.push(format!("DEF:a{i}={}:v:AVERAGE", f.display()));
    }
    let names: Vec<String> = (0..members).map(|i| format!("a{i}")).collect();
    xport.push(format!("CDEF:avg={},{members},AVG", names.join(",")));
    xport.push("XPORT:avg:avg".into());
    let mut rtimes = Vec::new();
    for _ in 0..11 {
        let start = Instant::now();
        let out = Command::new("rrdtool").args(&xport).output()?;
        if !out.status.success() {
            return Err(format!("rrdtool xport: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        rtimes.push(start.elapsed());
    }
    rtimes.sort();
    let theirs = rtimes[rtimes.len() / 2];
    println!("## (c) one-week query of a {members}-member group aggregate (avg), default ladder");
    println!(
        "metrolog: query::run median {:.1} ms over 21 runs ({rows} rows of 5 min), from the group's recorded series",
        ours.as_secs_f64() * 1000.0
    );
    println!(
        "metrolog: {:.1} ms when aggregated from the {members} members' archives instead (rows the group did not record), read cache off",
        members_cold.as_secs_f64() * 1000.0
    );
    println!(
        "metrolog: {:.1} ms the same with the default read cache (runs after the first)",
        members_path.as_secs_f64() * 1000.0
    );
    println!(
        "metrolog: of which {:.1} ms reading the members' rows (Store::archive_rows_many) with the read cache off, {:.1} ms with it",
        read_part[0].as_secs_f64() * 1000.0,
        read_part[1].as_secs_f64() * 1000.0
    );
    println!(
        "rrdtool:  xport of {members} DEFs + CDEF AVG median {:.1} ms over 11 runs (process start included)",
        theirs.as_secs_f64() * 1000.0
    );
    println!(
        "ratio: metrolog takes {:.2}x rrdtool's time (target: under 50 ms); the members' fallback {:.2}x without the read cache, {:.2}x with it",
        ours.as_secs_f64() / theirs.as_secs_f64(),
        members_cold.as_secs_f64() / theirs.as_secs_f64(),
        members_path.as_secs_f64() / theirs.as_secs_f64()
    );
    println!();
    Ok(())
}

fn main() -> Res<()> {
    // `cargo bench` passes `--bench`; any other argument selects parts (a, b, c).
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let want = |p: &str| args.is_empty() || args.iter().any(|a| a == p);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        if want("a") {
            let (n, rounds) = if quick() { (1_000, 3) } else { (10_000, 6) };
            ingest(n, rounds).await?;
        }
        if want("b") {
            size().await?;
        }
        if want("c") {
            group_query().await?;
        }
        Ok(())
    })
}
