//! The on-disk spool: every sealed batch waits here, in order, until the
//! server acknowledges it (SPEC §8 "Spool"; the operator's view is
//! `docs/agent-spool.md`).
//!
//! Batches are appended to segment files in `<state dir>/spool/` (see
//! [`record`] for the format) and fsynced before anything that depends on
//! them (the log offsets) is written; the highest acknowledged position is
//! kept in `spool/acked`. A segment whose batches were all acknowledged is
//! deleted. At start the segments are read back; a damaged one (a crash cut
//! its last write, a disk flipped a bit) keeps its good records and the file
//! itself is set aside as `*.corrupt`, logged and counted.
//!
//! The spool is bounded by `spool.max_bytes`. As batches age, their metrics
//! are re-consolidated to coarser steps (`spool.tiers`, 10 s → 1 min → 5 min
//! → 1 h by default) with the consolidation of the archives, so a long
//! outage costs resolution, not data; log records may take at most
//! `spool.log_share` of the cap, past which the oldest are dropped. When the
//! disk refuses a write, batches wait in memory (at most
//! `spool.memory_batches`), and the write is tried again with the next one.
//! Every drop is counted ([`SpoolStats`]); the drops not yet reported to a
//! server are kept in `spool/drops`, so that a restart carries them over.

pub mod record;

use crate::downsample::{self, STEP};
use metrolog_protocol::{Batch, BatchId, SeriesBuckets, SeriesKey};
use record::Record;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Sub-directory of the state directory.
pub const SPOOL_DIR: &str = "spool";
/// File holding the highest acknowledged position.
const ACKED_FILE: &str = "acked";
/// File holding the drops not yet reported to a server: "logs buckets
/// batches" (text), so that a restart does not forget them.
const DROPS_FILE: &str = "drops";
/// Damaged segments kept for inspection; older ones are deleted.
const KEEP_CORRUPT: usize = 4;
/// Segment rewrites (consolidation, log drops) per push, at most: bounds the
/// time a push takes; the rest waits for the next push.
const REWRITES_PER_PUSH: usize = 8;
/// Series whose last shipped bucket time is remembered, at most.
const SHIPPED_TS_KEYS: usize = 100_000;

/// One step of the consolidation ladder: batches older than `after` keep
/// their metrics in buckets of `step`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tier {
    pub after: Duration,
    pub step: u32,
}

/// The spool's limits (from `[spool]`).
#[derive(Debug, Clone)]
pub struct SpoolPolicy {
    pub max_bytes: u64,
    /// Percentage of `max_bytes` log records may take.
    pub log_share_pct: u8,
    /// A segment is closed (and becomes eligible for consolidation) past
    /// this size, or once its first batch is older than the first tier's
    /// `after` / 2.
    pub segment_bytes: u64,
    /// Batches kept in memory while the disk refuses writes.
    pub memory_batches: usize,
    /// Coarsest last; steps increasing, each a multiple of the previous.
    pub tiers: Vec<Tier>,
}

impl SpoolPolicy {
    pub fn default_tiers() -> Vec<Tier> {
        let h = |n: u64| Duration::from_secs(n * 3600);
        vec![
            Tier {
                after: h(1),
                step: 60,
            },
            Tier {
                after: h(6),
                step: 300,
            },
            Tier {
                after: h(24),
                step: 3600,
            },
        ]
    }

    fn log_cap(&self) -> u64 {
        self.max_bytes / 100 * u64::from(self.log_share_pct.min(100))
    }
}

impl Default for SpoolPolicy {
    fn default() -> Self {
        Self {
            max_bytes: 100 << 20,
            log_share_pct: 80,
            segment_bytes: 1 << 20,
            memory_batches: 360,
            tiers: Self::default_tiers(),
        }
    }
}

/// What the spool counted since start (sampled as `agent.spool.*`).
#[derive(Debug, Default)]
pub struct SpoolStats {
    /// Batches written to disk.
    pub written: AtomicU64,
    /// Writes the disk refused (full, read-only, …).
    pub write_errors: AtomicU64,
    /// Damaged segment files set aside.
    pub corrupt_files: AtomicU64,
    /// Batches lost with a damaged segment (or kept in memory and pushed
    /// out by newer ones while the disk refused writes).
    pub lost_batches: AtomicU64,
    /// Log records dropped: over the log share, or lost with a damaged
    /// segment or a batch pushed out of memory.
    pub dropped_logs: AtomicU64,
    /// Metric buckets dropped because the spool was full at the coarsest
    /// step.
    pub dropped_buckets: AtomicU64,
    /// Batch re-consolidations to a coarser step.
    pub consolidated: AtomicU64,
    /// Batches the server refused for good (a 4xx), dropped.
    pub refused: AtomicU64,
    /// Bytes on disk now.
    pub bytes: AtomicU64,
    /// Batches waiting now.
    pub batches: AtomicU64,
    /// Whether the last request to a server succeeded (set by the shipper):
    /// drops are reported once it is.
    pub connected: AtomicBool,
}

impl SpoolStats {
    /// Everything dropped so far: (log records, metric buckets, batches).
    pub fn drops(&self) -> (u64, u64, u64) {
        (
            self.dropped_logs.load(Ordering::Relaxed),
            self.dropped_buckets.load(Ordering::Relaxed),
            self.lost_batches.load(Ordering::Relaxed) + self.refused.load(Ordering::Relaxed),
        )
    }
}

#[derive(Debug)]
enum Loc {
    Disk { seg: u64, offset: u64, len: u32 },
    Memory(Box<Record>),
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    id: BatchId,
    sent_at: i64,
    /// Coarsest metric step in the batch.
    step: u32,
    logs: u64,
    /// Estimated bytes of the log records on disk.
    log_bytes: u64,
    loc: Loc,
}

impl Entry {
    fn of(record: &Record, loc: Loc, disk_len: u64) -> Self {
        let b = &record.batch;
        let log_est: u64 = b
            .logs
            .iter()
            .map(|l| crate::logs::backlog::record_bytes(l) as u64)
            .sum();
        let metric_est: u64 = b
            .metrics
            .iter()
            .map(|s| 64 + s.key.name.as_str().len() as u64 + 64 * s.buckets.len() as u64)
            .sum();
        let check_est = 256 * b.checks.len() as u64;
        let total = (log_est + metric_est + check_est).max(1);
        Self {
            seq: record.seq,
            id: b.id.clone(),
            sent_at: b.sent_at,
            step: b.metrics.iter().map(|s| s.step).max().unwrap_or(STEP),
            logs: b.logs.len() as u64,
            log_bytes: disk_len * log_est / total,
            loc,
        }
    }

    fn seg(&self) -> Option<u64> {
        match self.loc {
            Loc::Disk { seg, .. } => Some(seg),
            Loc::Memory(_) => None,
        }
    }
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    bytes: u64,
    /// Entries not yet acknowledged.
    live: usize,
}

#[derive(Debug)]
struct Active {
    id: u64,
    file: File,
    len: u64,
    opened_at: i64,
}

/// Where a batch went.
#[derive(Debug, Default)]
pub struct Pushed {
    /// Its position in the spool.
    pub seq: u64,
    /// Whether it is on disk (fsynced); `false`: in memory only.
    pub durable: bool,
    /// Batches dropped to make room (memory full while the disk refuses).
    pub dropped: Vec<BatchId>,
}

/// A batch that left the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Left {
    pub seq: u64,
    /// Log records it carried.
    pub logs: u64,
    /// Whether it was only in memory (its file offsets were not committed
    /// when it was spooled).
    pub memory: bool,
}

/// The spool (see the module docs). Blocking I/O: call from a blocking
/// context.
#[derive(Debug)]
pub struct Spool {
    /// `None` when the spool directory cannot be used: memory only.
    dir: Option<PathBuf>,
    policy: SpoolPolicy,
    stats: Arc<SpoolStats>,
    entries: VecDeque<Entry>,
    segments: BTreeMap<u64, Segment>,
    active: Option<Active>,
    next_seq: u64,
    acked: u64,
    front: Option<(u64, Batch)>,
    /// Newest bucket shipped per series: an expanded coarse bucket starts
    /// after it (the server refuses buckets not after the series' last).
    shipped_ts: HashMap<SeriesKey, i64>,
    /// Whether the last write failed (to log a change once).
    failing: bool,
    /// Drops (as [`SpoolStats::drops`]) already reported to a server.
    reported: (u64, u64, u64),
    /// Unreported drops last written to `spool/drops`.
    saved_drops: (u64, u64, u64),
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn segment_name(id: u64) -> String {
    format!("{id:020}.seg")
}

impl Spool {
    /// A spool in memory only (tests, or a state directory that refuses).
    pub fn in_memory(policy: SpoolPolicy) -> Self {
        Self {
            dir: None,
            policy,
            stats: Arc::default(),
            entries: VecDeque::new(),
            segments: BTreeMap::new(),
            active: None,
            next_seq: 1,
            acked: 0,
            front: None,
            shipped_ts: HashMap::new(),
            failing: false,
            reported: (0, 0, 0),
            saved_drops: (0, 0, 0),
        }
    }

    /// Opens (or creates) the spool in `state_dir/spool` and reads back what
    /// an earlier run left. Log records read from files that are in records
    /// after `files_through` (the position the saved log offsets cover) are
    /// removed: the tailer reads them again. Never fails: a directory that
    /// cannot be used leaves a memory-only spool (logged); a damaged segment
    /// is set aside (logged, counted).
    pub fn open(state_dir: &Path, policy: SpoolPolicy, files_through: u64) -> Self {
        let mut spool = Self::in_memory(policy);
        let dir = state_dir.join(SPOOL_DIR);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            tracing::error!(
                "cannot create the spool directory {}: {e}; batches wait in memory only",
                dir.display()
            );
            return spool;
        }
        spool.acked = std::fs::read_to_string(dir.join(ACKED_FILE))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        spool.dir = Some(dir.clone());
        spool.carry_drops(&dir);
        let mut ids: Vec<u64> = Vec::new();
        let mut corrupt: Vec<PathBuf> = Vec::new();
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for dent in rd.flatten() {
                let name = dent.file_name().to_string_lossy().into_owned();
                if let Some(id) = name.strip_suffix(".seg").and_then(|s| s.parse().ok()) {
                    ids.push(id);
                } else if name.ends_with(".corrupt") {
                    corrupt.push(dent.path());
                } else if name.ends_with(".tmp") {
                    let _ = std::fs::remove_file(dent.path());
                }
            }
        }
        ids.sort_unstable();
        let mut max_seq = spool.acked;
        for id in ids {
            max_seq = max_seq.max(spool.load_segment(id, files_through, &mut corrupt));
        }
        corrupt.sort();
        while corrupt.len() > KEEP_CORRUPT {
            let _ = std::fs::remove_file(corrupt.remove(0));
        }
        spool.next_seq = max_seq + 1;
        spool.update_gauges();
        spool.save_drops();
        if !spool.entries.is_empty() {
            tracing::info!(
                "spool holds {} batch(es) ({} bytes) from an earlier run; replaying them oldest first",
                spool.entries.len(),
                spool.disk_bytes()
            );
        }
        spool
    }

    /// Counts the drops an earlier run did not report (`spool/drops`) as
    /// this run's, so they are reported once a server answers.
    fn carry_drops(&mut self, dir: &Path) {
        let Ok(text) = std::fs::read_to_string(dir.join(DROPS_FILE)) else {
            return;
        };
        let n: Vec<u64> = text
            .split_whitespace()
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        let (logs, buckets, batches) = (
            n.first().copied().unwrap_or(0),
            n.get(1).copied().unwrap_or(0),
            n.get(2).copied().unwrap_or(0),
        );
        self.stats.dropped_logs.fetch_add(logs, Ordering::Relaxed);
        self.stats
            .dropped_buckets
            .fetch_add(buckets, Ordering::Relaxed);
        self.stats
            .lost_batches
            .fetch_add(batches, Ordering::Relaxed);
        self.saved_drops = (logs, buckets, batches);
        if self.saved_drops != (0, 0, 0) {
            tracing::info!(
                "the spool dropped {logs} log record(s), {buckets} metric bucket(s) and {batches} batch(es) before the last stop that no server was told of; they are reported once one answers"
            );
        }
    }

    /// Writes the drops not yet reported to `spool/drops` when they changed
    /// (drops are rare: this is not on the path of every batch).
    fn save_drops(&mut self) {
        let Some(dir) = &self.dir else { return };
        let (l, b, n) = self.stats.drops();
        let (rl, rb, rn) = self.reported;
        let unreported = (
            l.saturating_sub(rl),
            b.saturating_sub(rb),
            n.saturating_sub(rn),
        );
        if unreported == self.saved_drops {
            return;
        }
        let path = dir.join(DROPS_FILE);
        let written = if unreported == (0, 0, 0) {
            std::fs::remove_file(&path).or_else(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            })
        } else {
            let tmp = dir.join(format!("{DROPS_FILE}.tmp"));
            (|| {
                let mut f = File::create(&tmp)?;
                writeln!(f, "{} {} {}", unreported.0, unreported.1, unreported.2)?;
                f.sync_all()?;
                std::fs::rename(&tmp, &path)?;
                sync_dir(dir)
            })()
        };
        match written {
            Ok(()) => self.saved_drops = unreported,
            Err(e) => tracing::debug!("cannot save the spool's unreported drops: {e}"),
        }
    }

    /// A server was told of the drops `drops` (as [`SpoolStats::drops`]):
    /// they are no longer carried over a restart.
    pub fn reported(&mut self, drops: (u64, u64, u64)) {
        self.reported = drops;
        self.save_drops();
    }

    /// Reads segment `id`; returns the highest sequence seen in it.
    fn load_segment(&mut self, id: u64, files_through: u64, corrupt: &mut Vec<PathBuf>) -> u64 {
        let Some(dir) = self.dir.clone() else {
            return 0;
        };
        let path = dir.join(segment_name(id));
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!("cannot read spool segment {}: {e}", path.display());
                return 0;
            }
        };
        if let Some(max_seq) = self.load_intact_segment(id, &path, &bytes, files_through) {
            return max_seq;
        }
        let scan = record::scan(&bytes);
        let max_seq = scan.records.last().map_or(0, |f| f.record.seq);
        let mut rewrite = false;
        let mut stripped = 0;
        let mut keep = Vec::new();
        for f in scan.records {
            if f.record.seq <= self.acked {
                continue;
            }
            let mut rec = f.record;
            if rec.seq > files_through && !rec.file_logs.is_empty() {
                stripped += rec.strip_file_logs();
                rewrite = true;
            }
            keep.push((f.offset, f.len, rec));
        }
        if stripped > 0 {
            tracing::info!(
                "spool segment {}: {stripped} log line(s) whose file offsets were not saved before the agent stopped are read again from their files instead",
                path.display()
            );
        }
        if let Some(damage) = &scan.damage {
            self.stats.corrupt_files.fetch_add(1, Ordering::Relaxed);
            let aside = dir.join(format!("{}.{}.corrupt", segment_name(id), now_unix()));
            // Logged once the file is aside, so that the line is true when read.
            match std::fs::rename(&path, &aside).and_then(|()| sync_dir(&dir)) {
                Ok(()) => {
                    tracing::warn!(
                        "spool segment {} is damaged ({damage}); kept its {} good batch(es) and set the file aside as {}",
                        path.display(),
                        keep.len(),
                        aside.display()
                    );
                    corrupt.push(aside);
                }
                Err(e) => {
                    tracing::error!(
                        "spool segment {} is damaged ({damage}); kept its {} good batch(es); cannot set it aside ({e}), deleted it",
                        path.display(),
                        keep.len()
                    );
                    let _ = std::fs::remove_file(&path);
                }
            }
            rewrite = true;
        }
        if keep.is_empty() {
            if scan.damage.is_none() {
                let _ = std::fs::remove_file(&path);
            }
            return max_seq;
        }
        if rewrite {
            let records: Vec<Record> = keep.into_iter().map(|(_, _, r)| r).collect();
            if let Err(e) = self.write_segment(id, records) {
                tracing::error!("cannot rewrite spool segment {}: {e}", path.display());
            }
        } else {
            let mut live = 0;
            for (offset, len, rec) in keep {
                live += 1;
                self.entries.push_back(Entry::of(
                    &rec,
                    Loc::Disk {
                        seg: id,
                        offset,
                        len,
                    },
                    u64::from(len),
                ));
            }
            self.segments.insert(
                id,
                Segment {
                    path,
                    bytes: bytes.len() as u64,
                    live,
                },
            );
        }
        max_seq
    }

    /// Takes segment `id` as it is when it is intact and none of its
    /// records needs its file lines removed (the common case), decoding one
    /// record at a time; returns the highest sequence seen in it. `None`
    /// (nothing taken) when it needs the full treatment of
    /// [`Spool::load_segment`].
    fn load_intact_segment(
        &mut self,
        id: u64,
        path: &Path,
        bytes: &[u8],
        files_through: u64,
    ) -> Option<u64> {
        let acked = self.acked;
        let (mut entries, mut max_seq, mut strip) = (Vec::new(), 0, false);
        let damage = record::scan_each(bytes, |f| {
            max_seq = f.record.seq;
            if f.record.seq <= acked {
                return;
            }
            strip |= f.record.seq > files_through && !f.record.file_logs.is_empty();
            entries.push(Entry::of(
                &f.record,
                Loc::Disk {
                    seg: id,
                    offset: f.offset,
                    len: f.len,
                },
                u64::from(f.len),
            ));
        });
        if damage.is_some() || strip {
            return None;
        }
        if entries.is_empty() {
            let _ = std::fs::remove_file(path);
            return Some(max_seq);
        }
        let live = entries.len();
        self.entries.extend(entries);
        self.segments.insert(
            id,
            Segment {
                path: path.to_path_buf(),
                bytes: bytes.len() as u64,
                live,
            },
        );
        Some(max_seq)
    }

    /// Writes `records` as segment `id` (replacing it atomically and
    /// durably) and puts their entries in place of the segment's old ones.
    fn write_segment(&mut self, id: u64, records: Vec<Record>) -> std::io::Result<()> {
        let dir = self
            .dir
            .clone()
            .ok_or_else(|| std::io::Error::other("no spool directory"))?;
        let path = dir.join(segment_name(id));
        let tmp = dir.join(format!("{}.tmp", segment_name(id)));
        let mut body = record::MAGIC.to_vec();
        let mut placed = Vec::with_capacity(records.len());
        for r in &records {
            let framed = record::encode(r).map_err(std::io::Error::other)?;
            placed.push((body.len() as u64, framed.len() as u32));
            body.extend(framed);
        }
        let written = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            sync_dir(&dir)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        // The segment's entries are contiguous (segments hold seq ranges).
        let first = self.entries.iter().position(|e| e.seg() == Some(id));
        let old: usize = self.entries.iter().filter(|e| e.seg() == Some(id)).count();
        let at = match first {
            Some(i) => i,
            None => self
                .entries
                .iter()
                .position(|e| e.seq > records.first().map_or(0, |r| r.seq))
                .unwrap_or(self.entries.len()),
        };
        for _ in 0..old {
            self.entries.remove(at);
        }
        for (i, (r, (offset, len))) in records.iter().zip(placed).enumerate() {
            self.entries.insert(
                at + i,
                Entry::of(
                    r,
                    Loc::Disk {
                        seg: id,
                        offset,
                        len,
                    },
                    u64::from(len),
                ),
            );
        }
        if self
            .front
            .as_ref()
            .is_some_and(|(seq, _)| records.iter().any(|r| r.seq == *seq))
        {
            self.front = None;
        }
        self.segments.insert(
            id,
            Segment {
                path,
                bytes: body.len() as u64,
                live: records.len(),
            },
        );
        Ok(())
    }

    pub fn stats(&self) -> Arc<SpoolStats> {
        self.stats.clone()
    }

    /// Batches waiting.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of the segment files.
    pub fn disk_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.bytes).sum()
    }

    /// Estimated bytes of log records on disk.
    pub fn log_bytes(&self) -> u64 {
        self.entries
            .iter()
            .filter(|e| e.seg().is_some())
            .map(|e| e.log_bytes)
            .sum()
    }

    fn update_gauges(&self) {
        self.stats.bytes.store(self.disk_bytes(), Ordering::Relaxed);
        self.stats
            .batches
            .store(self.entries.len() as u64, Ordering::Relaxed);
    }

    /// Appends a batch. `file_logs` are the index ranges of its log records
    /// read from tailed files. The batch is on disk and fsynced when this
    /// returns with `durable`; otherwise it waits in memory.
    pub fn push(&mut self, batch: Batch, file_logs: Vec<(u32, u32)>) -> Pushed {
        let now = now_unix();
        let seq = self.next_seq;
        self.next_seq += 1;
        let record = Record {
            seq,
            batch,
            file_logs,
        };
        let mut pushed = Pushed {
            seq,
            ..Pushed::default()
        };
        if self.dir.is_some() {
            self.maintain(now);
            match self.append(&record, now) {
                Ok(loc) => {
                    let len = match &loc {
                        Loc::Disk { len, .. } => u64::from(*len),
                        Loc::Memory(_) => 0,
                    };
                    self.entries.push_back(Entry::of(&record, loc, len));
                    self.stats.written.fetch_add(1, Ordering::Relaxed);
                    pushed.durable = true;
                    if self.failing {
                        self.failing = false;
                        tracing::info!("the spool is written to disk again");
                    }
                }
                Err(e) => {
                    self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                    if !self.failing {
                        self.failing = true;
                        tracing::error!(
                            "cannot write the spool: {e}; batches wait in memory (at most spool.memory_batches = {}) and the write is tried again with each batch",
                            self.policy.memory_batches
                        );
                    }
                }
            }
        }
        if !pushed.durable {
            let entry = Entry::of(&record, Loc::Memory(Box::new(record.clone())), 0);
            self.entries.push_back(entry);
            pushed.dropped = self.bound_memory();
        }
        self.update_gauges();
        self.save_drops();
        pushed
    }

    /// Drops the oldest memory-only batches past `memory_batches` (never the
    /// one in flight).
    fn bound_memory(&mut self) -> Vec<BatchId> {
        let mut dropped = Vec::new();
        loop {
            let in_memory = self.entries.iter().filter(|e| e.seg().is_none()).count();
            if in_memory <= self.policy.memory_batches.max(1) {
                return dropped;
            }
            let Some(i) = self
                .entries
                .iter()
                .enumerate()
                .skip(1)
                .find(|(_, e)| e.seg().is_none())
                .map(|(i, _)| i)
            else {
                return dropped;
            };
            if let Some(e) = self.entries.remove(i) {
                self.stats.lost_batches.fetch_add(1, Ordering::Relaxed);
                self.stats.dropped_logs.fetch_add(e.logs, Ordering::Relaxed);
                tracing::warn!(
                    "spool: dropped batch {} kept in memory while the disk refuses writes",
                    e.id
                );
                dropped.push(e.id);
            }
        }
    }

    fn append(&mut self, record: &Record, now: i64) -> std::io::Result<Loc> {
        let framed = record::encode(record).map_err(std::io::Error::other)?;
        let roll_age = self
            .policy
            .tiers
            .first()
            .map_or(i64::MAX, |t| (t.after.as_secs() / 2).max(1) as i64);
        let roll = self.active.as_ref().is_some_and(|a| {
            (a.len > record::MAGIC.len() as u64
                && a.len + framed.len() as u64 > self.policy.segment_bytes)
                || now - a.opened_at >= roll_age
        });
        if roll {
            self.active = None;
        }
        if self.active.is_none() {
            let dir = self
                .dir
                .clone()
                .ok_or_else(|| std::io::Error::other("no spool directory"))?;
            let id = record.seq;
            let path = dir.join(segment_name(id));
            let mut file = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(&path)?;
            if let Err(e) = file.write_all(record::MAGIC).and_then(|()| file.sync_all()) {
                drop(file);
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
            sync_dir(&dir)?;
            self.segments.insert(
                id,
                Segment {
                    path,
                    bytes: record::MAGIC.len() as u64,
                    live: 0,
                },
            );
            self.active = Some(Active {
                id,
                file,
                len: record::MAGIC.len() as u64,
                opened_at: now,
            });
        }
        let Some(active) = self.active.as_mut() else {
            return Err(std::io::Error::other("no active segment"));
        };
        let offset = active.len;
        let written = active
            .file
            .write_all(&framed)
            .and_then(|()| active.file.sync_data());
        if let Err(e) = written {
            // Take back what may have reached the file: a torn record would
            // end the good part of the segment at the next start.
            let _ = active.file.set_len(offset);
            self.active = None;
            return Err(e);
        }
        active.len += framed.len() as u64;
        let id = active.id;
        if let Some(seg) = self.segments.get_mut(&id) {
            seg.bytes = offset + framed.len() as u64;
            seg.live += 1;
        }
        Ok(Loc::Disk {
            seg: id,
            offset,
            len: framed.len() as u32,
        })
    }

    fn read_entry(&self, i: usize) -> Result<Record, String> {
        let e = &self.entries[i];
        match &e.loc {
            Loc::Memory(r) => Ok((**r).clone()),
            Loc::Disk { seg, offset, len } => {
                let path = self
                    .segments
                    .get(seg)
                    .map(|s| s.path.clone())
                    .ok_or("segment missing")?;
                use std::os::unix::fs::FileExt;
                let f = File::open(&path).map_err(|e| e.to_string())?;
                let mut buf = vec![0; *len as usize];
                f.read_exact_at(&mut buf, *offset)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                let rec = record::decode(&buf)?;
                if rec.seq != e.seq {
                    return Err(format!("expected batch {} found {}", e.seq, rec.seq));
                }
                Ok(rec)
            }
        }
    }

    /// The oldest batch: the next to send, with re-consolidated metrics
    /// expanded back to 10 s buckets (see [`downsample::expand`]). A batch
    /// that cannot be read back is dropped (logged, counted) and the next
    /// one returned.
    pub fn front(&mut self) -> Option<Batch> {
        loop {
            let e = self.entries.front()?;
            if let Some((seq, batch)) = &self.front {
                if *seq == e.seq {
                    return Some(batch.clone());
                }
            }
            match self.read_entry(0) {
                Ok(rec) => {
                    let batch = self.expand(rec.batch);
                    self.front = Some((rec.seq, batch.clone()));
                    return Some(batch);
                }
                Err(why) => {
                    let e = self.entries.pop_front()?;
                    self.stats.corrupt_files.fetch_add(1, Ordering::Relaxed);
                    self.stats.lost_batches.fetch_add(1, Ordering::Relaxed);
                    self.stats.dropped_logs.fetch_add(e.logs, Ordering::Relaxed);
                    tracing::error!("spool: cannot read batch {} back ({why}); dropped it", e.id);
                    self.left(e);
                    self.save_drops();
                }
            }
        }
    }

    fn expand(&self, mut batch: Batch) -> Batch {
        if batch.metrics.iter().all(|s| s.step <= STEP) {
            return batch;
        }
        let mut merged: BTreeMap<SeriesKey, Vec<metrolog_protocol::Bucket>> = BTreeMap::new();
        for s in std::mem::take(&mut batch.metrics) {
            let after = self.shipped_ts.get(&s.key).copied().unwrap_or(i64::MIN);
            let out = merged.entry(s.key).or_default();
            for b in &s.buckets {
                out.extend(
                    downsample::expand(b, s.step, STEP)
                        .into_iter()
                        .filter(|p| p.ts > after),
                );
            }
        }
        batch.metrics = merged
            .into_iter()
            .filter_map(|(key, mut buckets)| {
                buckets.sort_by_key(|b| b.ts);
                buckets.dedup_by_key(|b| b.ts);
                (!buckets.is_empty()).then_some(SeriesBuckets {
                    key,
                    step: STEP,
                    buckets,
                })
            })
            .collect();
        batch
    }

    /// Removes batch `id` once the server acknowledged it. Only the oldest
    /// batch (the one sent) can be acknowledged; anything else is ignored.
    pub fn ack(&mut self, id: &BatchId) -> Option<Left> {
        if self.entries.front().is_none_or(|e| &e.id != id) {
            return None;
        }
        if let Some((_, batch)) = &self.front {
            if self.shipped_ts.len() > SHIPPED_TS_KEYS {
                self.shipped_ts.clear();
            }
            for s in &batch.metrics {
                if let Some(last) = s.buckets.last() {
                    let t = self.shipped_ts.entry(s.key.clone()).or_insert(last.ts);
                    *t = (*t).max(last.ts);
                }
            }
        }
        let e = self.entries.pop_front()?;
        let left = self.left(e);
        self.update_gauges();
        Some(left)
    }

    /// Drops batch `id`, which the server refused for good.
    pub fn discard(&mut self, id: &BatchId) -> Option<Left> {
        if self.entries.front().is_none_or(|e| &e.id != id) {
            return None;
        }
        let e = self.entries.pop_front()?;
        self.stats.refused.fetch_add(1, Ordering::Relaxed);
        self.stats.dropped_logs.fetch_add(e.logs, Ordering::Relaxed);
        let left = self.left(e);
        self.update_gauges();
        self.save_drops();
        Some(left)
    }

    /// Book-keeping for an entry that left: the acknowledged position is
    /// saved, a segment with nothing left is deleted.
    fn left(&mut self, e: Entry) -> Left {
        self.front = None;
        let memory = e.seg().is_none();
        if let Some(seg) = e.seg() {
            self.acked = self.acked.max(e.seq);
            if let Some(dir) = &self.dir {
                // Not fsynced: should the file be older after a crash, the
                // batches after it are sent again, and the server recognises
                // them by their id.
                let tmp = dir.join(format!("{ACKED_FILE}.tmp"));
                let saved = std::fs::write(&tmp, format!("{}\n", self.acked))
                    .and_then(|()| std::fs::rename(&tmp, dir.join(ACKED_FILE)));
                if let Err(err) = saved {
                    tracing::debug!("cannot save the spool's acknowledged position: {err}");
                }
            }
            let empty = self.segments.get_mut(&seg).is_some_and(|s| {
                s.live = s.live.saturating_sub(1);
                s.live == 0
            });
            if empty && self.active.as_ref().is_none_or(|a| a.id != seg) {
                if let Some(s) = self.segments.remove(&seg) {
                    let _ = std::fs::remove_file(&s.path);
                }
            }
        }
        Left {
            seq: e.seq,
            logs: e.logs,
            memory,
        }
    }

    /// Closed segments, oldest first, none holding the oldest batch (it may
    /// be in flight and must stay as sent).
    fn closed_segments(&self) -> Vec<u64> {
        let front_seg = self.entries.front().and_then(Entry::seg);
        let active = self.active.as_ref().map(|a| a.id);
        self.segments
            .iter()
            .filter(|(id, s)| Some(**id) != front_seg && Some(**id) != active && s.live > 0)
            .map(|(id, _)| *id)
            .collect()
    }

    /// (coarsest step, newest batch time, log records) of segment `id`'s entries.
    fn segment_summary(&self, id: u64) -> (u32, i64, u64) {
        self.entries
            .iter()
            .filter(|e| e.seg() == Some(id))
            .fold((0, i64::MIN, 0), |(step, t, logs), e| {
                (step.max(e.step), t.max(e.sent_at), logs + e.logs)
            })
    }

    /// Ages and caps (see the module docs): consolidates segments whose age
    /// calls for a coarser step; drops the oldest log records past the log
    /// share; past `max_bytes`, consolidates the oldest segments further
    /// and, at the coarsest step, drops them.
    fn maintain(&mut self, now: i64) {
        if self.active.as_ref().is_some_and(|a| {
            a.len + self.policy.segment_bytes / 2 > self.policy.segment_bytes
                && self.disk_bytes() + self.policy.segment_bytes > self.policy.max_bytes
        }) {
            // Close a large active segment when near the cap, so that it
            // can be consolidated too.
            self.active = None;
        }
        let mut budget = REWRITES_PER_PUSH;
        // 1. Age.
        for id in self.closed_segments() {
            if budget == 0 {
                return;
            }
            let (step, newest, _) = self.segment_summary(id);
            let age = Duration::from_secs((now - newest).max(0) as u64);
            let target = self
                .policy
                .tiers
                .iter()
                .filter(|t| t.after <= age)
                .map(|t| t.step)
                .max();
            if let Some(target) = target.filter(|t| *t > step) {
                budget -= 1;
                self.stats.consolidated.fetch_add(1, Ordering::Relaxed);
                self.rewrite(id, |records| consolidate(records, target));
            }
        }
        // 2. The log share.
        let cap = self.policy.log_cap();
        while self.log_bytes() > cap && budget > 0 {
            let Some(id) = self
                .closed_segments()
                .into_iter()
                .find(|id| self.segment_summary(*id).2 > 0)
            else {
                break;
            };
            budget -= 1;
            let stats = self.stats.clone();
            self.rewrite(id, |records| {
                let mut dropped = 0;
                for r in records.iter_mut() {
                    dropped += r.batch.logs.len() as u64;
                    r.batch.logs.clear();
                    r.file_logs.clear();
                }
                stats.dropped_logs.fetch_add(dropped, Ordering::Relaxed);
                tracing::warn!(
                    "spool: log records over spool.log_share of spool.max_bytes: dropped the {dropped} oldest"
                );
            });
        }
        // 3. The cap.
        while self.disk_bytes() > self.policy.max_bytes && budget > 0 {
            let Some(id) = self.closed_segments().into_iter().next() else {
                break;
            };
            budget -= 1;
            let (step, _, _) = self.segment_summary(id);
            let coarser = self.policy.tiers.iter().map(|t| t.step).find(|s| *s > step);
            let stats = self.stats.clone();
            match coarser {
                Some(target) => {
                    self.stats.consolidated.fetch_add(1, Ordering::Relaxed);
                    self.rewrite(id, |records| consolidate(records, target))
                }
                None => self.rewrite(id, |records| {
                    let (mut logs, mut buckets) = (0, 0);
                    for r in records.drain(..) {
                        logs += r.batch.logs.len() as u64;
                        buckets += r
                            .batch
                            .metrics
                            .iter()
                            .map(|s| s.buckets.len() as u64)
                            .sum::<u64>();
                    }
                    stats.dropped_logs.fetch_add(logs, Ordering::Relaxed);
                    stats.dropped_buckets.fetch_add(buckets, Ordering::Relaxed);
                    tracing::warn!(
                        "spool full (spool.max_bytes) at its coarsest step: dropped the oldest {buckets} metric bucket(s) and {logs} log record(s)"
                    );
                }),
            }
        }
    }

    /// Reads segment `id`'s batches, lets `f` change them (records left
    /// with nothing are removed) and writes the segment again.
    fn rewrite(&mut self, id: u64, f: impl FnOnce(&mut Vec<Record>)) {
        let idx: Vec<usize> = (0..self.entries.len())
            .filter(|i| self.entries[*i].seg() == Some(id))
            .collect();
        let mut records = Vec::with_capacity(idx.len());
        for i in &idx {
            match self.read_entry(*i) {
                Ok(r) => records.push(r),
                Err(why) => {
                    self.stats.lost_batches.fetch_add(1, Ordering::Relaxed);
                    tracing::error!("spool: cannot read a batch back ({why}); dropped it");
                }
            }
        }
        f(&mut records);
        records.retain(|r| {
            !(r.batch.logs.is_empty() && r.batch.metrics.is_empty() && r.batch.checks.is_empty())
        });
        if records.is_empty() {
            // Nothing left: forget the entries and the file.
            self.entries.retain(|e| e.seg() != Some(id));
            if let Some(s) = self.segments.remove(&id) {
                let _ = std::fs::remove_file(&s.path);
            }
            self.front = None;
            return;
        }
        if let Err(e) = self.write_segment(id, records) {
            self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("spool: cannot rewrite a segment: {e}; it stays as it was");
        }
    }
}

/// Re-consolidates the metrics of consecutive batches to `step` seconds: the
/// buckets of each series move to the last batch holding that series (so
/// every batch keeps its id and its logs); a series' buckets in a step that
/// may continue after these batches stays as it is (unless the batches hold
/// nothing else). See
/// [`downsample::reconsolidate`].
pub fn consolidate(records: &mut [Record], step: u32) {
    let mut series: BTreeMap<SeriesKey, (u32, Vec<metrolog_protocol::Bucket>, usize)> =
        BTreeMap::new();
    for (i, r) in records.iter_mut().enumerate() {
        for s in std::mem::take(&mut r.batch.metrics) {
            let e = series
                .entry(s.key)
                .or_insert_with(|| (s.step, Vec::new(), i));
            if e.0 != s.step {
                // Mixed steps: bring what came before to this one's step first.
                let coarse = e.0.max(s.step);
                e.1 = downsample::reconsolidate(&e.1, e.0.min(s.step), coarse);
                e.0 = coarse;
            }
            e.1.extend(downsample::reconsolidate(&s.buckets, s.step, e.0));
            e.2 = i;
        }
    }
    for (key, (from, mut buckets, at)) in series {
        buckets.sort_by_key(|b| b.ts);
        let s = i64::from(step);
        // The last, possibly unfinished, step of this series stays fine.
        let last_end = buckets.last().map_or(0, |b| {
            b.ts.div_euclid(s) * s + if b.ts % s == 0 { 0 } else { s }
        });
        let complete = buckets.last().is_some_and(|b| b.ts == last_end);
        // (Unless that is all there is: a segment shorter than the step is
        // consolidated whole, or it would never shrink.)
        let split = if complete || buckets.first().is_some_and(|b| b.ts > last_end - s) {
            buckets.len()
        } else {
            buckets.partition_point(|b| b.ts <= last_end - s)
        };
        let tail = buckets.split_off(split);
        let coarse = downsample::reconsolidate(&buckets, from, step);
        let metrics = &mut records[at].batch.metrics;
        if !coarse.is_empty() {
            metrics.push(SeriesBuckets {
                key: key.clone(),
                step: if from < step && step.is_multiple_of(from) {
                    step
                } else {
                    from
                },
                buckets: coarse,
            });
        }
        if !tail.is_empty() {
            metrics.push(SeriesBuckets {
                key,
                step: from,
                buckets: tail,
            });
        }
    }
}

#[cfg(test)]
mod tests;
