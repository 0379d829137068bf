//! Round-robin archives behind a durable journal, as rrdcached keeps rrdtool files.
//!
//! * Hot state in memory, per series: the engine's consolidation in progress
//!   ([`RrdState`], a few hundred bytes) and the rows completed since the last flush.
//!   Whole rings are never held in memory.
//! * Durability: a batch (or an import) is committed as ONE `archive_journal` row
//!   holding all its accepted samples, in the same transaction as its batch id and
//!   log records; the caller answers 2xx only after that commit, and applies the
//!   samples to the hot state right after it.
//! * The flusher ([`Store::flush_archives`], every `archives.flush_interval` and at
//!   shutdown) writes the completed rows into `archive_chunks` (read-modify-write of
//!   small blobs, in bulk), each touched series' state with the journal seq it
//!   covers, and deletes the journal rows every series has applied, in one
//!   transaction.
//! * At start, states are loaded and the journal replayed on top of them, so every
//!   acknowledged sample survives a kill -9.
//! * Reads combine the stored chunks with the rows not flushed yet.

mod bytes;
pub mod chunk;
pub mod chunk_cache;
pub mod journal;
pub mod prefill;

use super::{Result, Store, StoreError};
use journal::{Entry, Sample};
use metrolog_protocol::rrd::{Bucket, FetchedRows, Row, RowWrite, RrdSpec, RrdState};
use sqlx::{Row as _, SqlitePool};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

/// Bytes of decoded chunks kept for repeated reads, unless configured
/// (`[archives] read_cache`).
pub const DEFAULT_READ_CACHE: u64 = 64 << 20;

/// Chunk keys per bulk SELECT (3 parameters each).
const READ_BATCH: usize = 300;

#[derive(Debug)]
struct SeriesHot {
    host_id: i64,
    state: RrdState,
    /// Rows completed since the last flush, in the order they were written.
    pending: Vec<RowWrite>,
    /// Newest journal row applied.
    applied_seq: i64,
    /// Changed since the last flush.
    dirty: bool,
    /// When it became dirty, and the journal seq of the first sample not
    /// written since: the flush writes it once it has waited its delay, and
    /// the journal keeps every row from that seq on until then.
    dirty_since: Option<(std::time::Instant, i64)>,
    /// The last sample with a known value: `(ts, value)`.
    last: Option<(i64, f64)>,
}

/// The hot state of every series, and the journal sequence.
pub(crate) struct ArchiveCache {
    spec: Arc<RrdSpec>,
    series: HashMap<i64, SeriesHot>,
    /// Series in `series` per host, for the series caps.
    per_host: HashMap<i64, u64>,
    /// Last journal seq committed (and applied).
    seq: i64,
    /// Journal rows exist that no flush has removed yet.
    journal_dirty: bool,
    /// Which build of memory this is: a reload from the database (after a
    /// failed commit) makes a new one, and a flush that started on the old
    /// one stops writing.
    epoch: u64,
}

impl std::fmt::Debug for ArchiveCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveCache")
            .field("series", &self.series.len())
            .field("seq", &self.seq)
            .finish()
    }
}

/// Series written by one flush slice transaction: about 5-30 ms of the write
/// lock each at 40 000 series (measured), so a batch or an alarm commit
/// waits for one slice, not for the flush (benches/supervision.rs, part a).
const FLUSH_SLICE_SERIES: usize = 100;
/// Series copied per hold of the write lock when a flush takes its snapshot.
const SNAPSHOT_SERIES: usize = 2_048;

/// How long series `id` waits between its first unwritten sample and its
/// write: between `delay / 2` and `delay`, spread by the id.
fn write_delay(delay: std::time::Duration, id: i64) -> std::time::Duration {
    let frac = ((id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as f64 / (1u64 << 24) as f64;
    delay.mul_f64(0.5 + 0.5 * frac)
}

/// What a flush copies of one dirty series under the write lock.
struct FlushSnap {
    id: i64,
    spec: Arc<RrdSpec>,
    writes: Vec<RowWrite>,
    state: Vec<u8>,
    applied_seq: i64,
    last: Option<(i64, f64)>,
}

/// The chunk bytes to write per series (archive, chunk, data), the rows
/// placed, and the unreadable chunks found (their rows restart unknown).
type Encoded = (HashMap<i64, Vec<(u32, u32, Vec<u8>)>>, u64, u64);

/// Places each snapshot's rows into its chunks (as stored, or new) and
/// encodes them. Pure CPU work, for the blocking pool.
fn encode_flush(
    snaps: &[FlushSnap],
    keys: Vec<(i64, u32, u32)>,
    stored: Vec<((i64, u32, u32), Vec<u8>)>,
) -> Encoded {
    let specs: HashMap<i64, &Arc<RrdSpec>> = snaps.iter().map(|s| (s.id, &s.spec)).collect();
    let mut chunks: BTreeMap<(i64, u32, u32), Option<Vec<Row>>> =
        keys.into_iter().map(|k| (k, None)).collect();
    let mut corrupt = 0;
    for (key, data) in stored {
        let Some(spec) = specs.get(&key.0) else {
            continue;
        };
        let a = key.1 as usize;
        let n = chunk::rows_in_chunk(spec.archives[a].rows, key.2);
        match chunk::decode(&data, n, spec.pdp_per_row(a)) {
            Ok(rows) => {
                chunks.insert(key, Some(rows));
            }
            Err(e) => {
                corrupt += 1;
                tracing::error!(series = key.0, archive = key.1, chunk = key.2, error = %e, "archive chunk unreadable; its rows restart unknown");
            }
        }
    }
    let mut placed = 0;
    for s in snaps {
        for w in &s.writes {
            let a = s.spec.archives[w.archive];
            let slot = metrolog_protocol::rrd::archive_slot(a.step, a.rows, w.label);
            let c = slot / chunk::CHUNK_ROWS;
            let rows = chunks
                .get_mut(&(s.id, w.archive as u32, c))
                .expect("every written chunk was listed")
                .get_or_insert_with(|| vec![Row::UNKNOWN; chunk::rows_in_chunk(a.rows, c)]);
            rows[(slot % chunk::CHUNK_ROWS) as usize] = w.row;
            placed += 1;
        }
    }
    let mut buf = Vec::new();
    let mut out: HashMap<i64, Vec<(u32, u32, Vec<u8>)>> = HashMap::new();
    for ((id, a, c), rows) in chunks {
        let (Some(rows), Some(spec)) = (rows, specs.get(&id)) else {
            continue;
        };
        chunk::encode(&rows, spec.pdp_per_row(a as usize), &mut buf);
        out.entry(id).or_default().push((a, c, buf.clone()));
    }
    (out, placed, corrupt)
}

/// What a commit did to one batch's samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Accepted {
    pub accepted: u64,
    /// At or before the series' last sample (or before an earlier one in the request).
    pub out_of_order: u64,
    /// Of a new series refused by `max_series_per_host` or `max_series`.
    pub over_limit: u64,
}

/// What one flush wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushOutcome {
    pub series: u64,
    pub rows: u64,
    pub chunks: u64,
    pub journal_rows: u64,
    /// Stored chunks that could not be decoded and were rewritten from unknown rows.
    pub corrupt_chunks: u64,
}

/// What start-up found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadOutcome {
    pub series: u64,
    pub journal_rows: u64,
    pub replayed_samples: u64,
    /// Stored states or journal rows that could not be decoded (logged, skipped).
    pub corrupt: u64,
}

/// Occupancy of the hot state, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ArchiveStats {
    pub series: u64,
    pub pending_rows: u64,
}

impl ArchiveCache {
    pub(super) fn new(spec: RrdSpec) -> Self {
        Self {
            spec: Arc::new(spec),
            series: HashMap::new(),
            per_host: HashMap::new(),
            seq: 0,
            journal_dirty: false,
            epoch: {
                static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            },
        }
    }

    /// The time a new series starts from: one base step before its first sample, so
    /// that the first sample covers one step, as an agent bucket does.
    fn start_for(&self, first_ts: i64) -> i64 {
        (first_ts - i64::from(self.spec.base_step)).max(0)
    }

    /// Keeps the samples the series can take, in order: each must come after the
    /// series' last update and after the previous kept one.
    pub(super) fn accept(&self, series_id: i64, samples: &[Sample]) -> (Vec<Sample>, u64) {
        let mut last = match self.series.get(&series_id) {
            Some(h) => h.state.last_update(),
            None => match samples.first() {
                Some(s) => self.start_for(s.ts),
                None => return (Vec::new(), 0),
            },
        };
        let mut keep = Vec::with_capacity(samples.len());
        let mut rejected = 0;
        for s in samples {
            if s.ts > last && s.ts <= metrolog_protocol::rrd::MAX_TIMESTAMP {
                keep.push(*s);
                last = s.ts;
            } else {
                rejected += 1;
            }
        }
        (keep, rejected)
    }

    /// Applies a committed (or replayed) journal entry. Returns samples applied.
    pub(super) fn apply(&mut self, seq: i64, host_id: i64, e: &Entry) -> u64 {
        let Some(first) = e.samples.first() else {
            return 0;
        };
        let start = self.start_for(first.ts);
        let spec = self.spec.clone();
        let h = match self.series.entry(e.series_id) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let Ok(state) = RrdState::new(spec, start) else {
                    return 0;
                };
                *self.per_host.entry(host_id).or_default() += 1;
                v.insert(SeriesHot {
                    host_id,
                    state,
                    pending: Vec::new(),
                    applied_seq: 0,
                    dirty: false,
                    dirty_since: None,
                    last: None,
                })
            }
        };
        let mut applied = 0;
        for s in &e.samples {
            let r = match s.ext {
                Some((min, max)) if e.buckets => h.state.update_bucket(
                    s.ts,
                    Bucket {
                        avg: s.value,
                        min,
                        max,
                    },
                    &mut h.pending,
                ),
                _ => h.state.update(s.ts, s.value, &mut h.pending),
            };
            if r.is_ok() {
                applied += 1;
                if s.value.is_finite() {
                    h.last = Some((s.ts, s.value));
                }
            }
        }
        h.applied_seq = h.applied_seq.max(seq);
        h.dirty = true;
        h.dirty_since
            .get_or_insert_with(|| (std::time::Instant::now(), seq));
        self.journal_dirty = true;
        applied
    }

    /// Drops the series of `host_ids`; returns their ids.
    pub(super) fn forget_hosts(&mut self, host_ids: &[i64]) -> Vec<i64> {
        let mut gone = Vec::new();
        self.series.retain(|id, h| {
            let keep = !host_ids.contains(&h.host_id);
            if !keep {
                gone.push(*id);
            }
            keep
        });
        self.per_host.retain(|h, _| !host_ids.contains(h));
        gone
    }

    /// Series holding data: of `host_id`, and in all.
    pub(super) fn series_count(&self, host_id: i64) -> (u64, u64) {
        (
            self.per_host.get(&host_id).copied().unwrap_or(0),
            self.series.len() as u64,
        )
    }

    /// Series of `host_ids` whose newest sample is before `cutoff`.
    pub(super) fn stale_series(&self, host_ids: &[i64], cutoff: i64) -> Vec<i64> {
        self.series
            .iter()
            .filter(|(_, h)| host_ids.contains(&h.host_id) && h.state.last_update() < cutoff)
            .map(|(id, _)| *id)
            .collect()
    }

    pub(super) fn forget_series(&mut self, series_ids: &[i64]) {
        for id in series_ids {
            if let Some(h) = self.series.remove(id) {
                if let Some(n) = self.per_host.get_mut(&h.host_id) {
                    *n = n.saturating_sub(1);
                }
            }
        }
    }
}

/// The archives' hot state, locked. A panic while holding the lock cannot
/// leave the maps half-updated in a way that matters more than losing the
/// process: keep serving.
pub(super) fn lock(archives: &Mutex<ArchiveCache>) -> MutexGuard<'_, ArchiveCache> {
    archives
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A journal row written in a transaction not committed yet: its seq and
/// entries, to apply to memory once it is (`None`: nothing was kept).
pub(super) type Journaled = Option<(i64, Vec<Entry>)>;

/// Filters `per_series` as the archives would take it, writes one journal row
/// with what is kept inside the caller's transaction on `db`, and returns the
/// entries to apply once it commits (with the journal seq), or `None` when
/// nothing was kept.
pub(super) fn journal_tx(
    db: &rusqlite::Connection,
    archives: &Mutex<ArchiveCache>,
    per_series: Vec<(i64, bool, Vec<Sample>)>,
) -> rusqlite::Result<(Journaled, Vec<Accepted>)> {
    let mut out = Vec::with_capacity(per_series.len());
    let (entries, seq) = {
        let cache = lock(archives);
        let mut entries = Vec::with_capacity(per_series.len());
        for (series_id, buckets, samples) in per_series {
            let (keep, rejected) = cache.accept(series_id, &samples);
            out.push(Accepted {
                accepted: keep.len() as u64,
                out_of_order: rejected,
                over_limit: 0,
            });
            if !keep.is_empty() {
                entries.push(Entry {
                    series_id,
                    buckets,
                    samples: keep,
                });
            }
        }
        (entries, cache.seq + 1)
    };
    if entries.is_empty() {
        return Ok((None, out));
    }
    db.prepare_cached("INSERT INTO archive_journal (seq, data) VALUES (?1, ?2)")?
        .execute(rusqlite::params![seq, journal::encode(&entries)])?;
    Ok((Some((seq, entries)), out))
}

impl ArchiveCache {
    /// Applies what [`journal_tx`] wrote, once its transaction committed (or,
    /// in a group commit, once its batch's savepoint is released: a failed
    /// COMMIT reloads memory from the database). Call with the write lock
    /// still held so that samples apply in journal order.
    pub(super) fn apply_committed(&mut self, host_id: i64, journaled: Journaled) {
        let Some((seq, entries)) = journaled else {
            return;
        };
        self.seq = self.seq.max(seq);
        for e in &entries {
            self.apply(seq, host_id, e);
        }
    }
}

impl Store {
    pub(super) fn cache(&self) -> std::sync::MutexGuard<'_, ArchiveCache> {
        lock(&self.archives)
    }

    /// The archive specification new series get.
    pub fn archive_spec(&self) -> Arc<RrdSpec> {
        self.cache().spec.clone()
    }

    /// Sets the byte budget of decoded chunks kept for repeated reads.
    pub fn set_read_cache(&self, bytes: u64) {
        self.chunk_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .set_budget(usize::try_from(bytes).unwrap_or(usize::MAX));
    }

    /// Hits, misses and size of the decoded-chunk cache.
    pub fn read_cache_stats(&self) -> chunk_cache::ChunkCacheStats {
        self.chunk_cache().stats()
    }

    pub(super) fn chunk_cache(&self) -> std::sync::MutexGuard<'_, chunk_cache::ChunkCache> {
        self.chunk_cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Series in memory and rows waiting for the flusher.
    pub fn archive_stats(&self) -> ArchiveStats {
        let c = self.cache();
        ArchiveStats {
            series: c.series.len() as u64,
            pending_rows: c.series.values().map(|h| h.pending.len() as u64).sum(),
        }
    }

    /// Chunks stored in `archive_chunks` and the bytes of their encoded rows (for
    /// the storage benchmark: what the rows take before b-tree overhead).
    pub async fn archive_chunk_bytes(&self) -> Result<(u64, u64)> {
        let (n, bytes): (i64, i64) =
            sqlx::query_as("SELECT count(*), coalesce(sum(length(data)), 0) FROM archive_chunks")
                .fetch_one(&self.pool)
                .await?;
        Ok((n as u64, bytes as u64))
    }

    /// The last known sample of a series: `(ts, value)`.
    pub fn last_sample(&self, series_id: i64) -> Option<(i64, f64)> {
        self.cache().series.get(&series_id).and_then(|h| h.last)
    }

    /// The last sample of every series whose host `want` accepts, from
    /// memory: (series id, host id, time, value). One pass under the
    /// archives' lock (about a millisecond per 100 000 series), instead of a
    /// query of the series table per round (the group recorder).
    pub fn last_samples_where(&self, want: impl Fn(i64) -> bool) -> Vec<(i64, i64, i64, f64)> {
        self.cache()
            .series
            .iter()
            .filter(|(_, h)| want(h.host_id))
            .filter_map(|(id, h)| h.last.map(|(at, v)| (*id, h.host_id, at, v)))
            .collect()
    }

    /// The newest update among `series_ids` (rrdtool's `last_update`: the time
    /// of the newest sample the archives took, known or unknown); `None` when
    /// none of them holds data. Queries choose their archive relative to it,
    /// as `rrdtool fetch` does, so a series whose host died yesterday still
    /// answers from its fine archives for its last hours.
    pub fn newest_update(&self, series_ids: impl IntoIterator<Item = i64>) -> Option<i64> {
        let cache = self.cache();
        series_ids
            .into_iter()
            .filter_map(|id| cache.series.get(&id).map(|h| h.state.last_update()))
            .max()
    }

    /// Loads every series' state and replays the journal on top.
    pub(super) async fn load_archives(
        pool: &SqlitePool,
        cache: &mut ArchiveCache,
    ) -> Result<LoadOutcome> {
        let mut out = LoadOutcome::default();
        let rows = sqlx::query(
            "SELECT st.series_id, s.host_id, st.state, st.applied_seq, st.last_ts, st.last_value
             FROM archive_state st JOIN series s ON s.id = st.series_id",
        )
        .fetch_all(pool)
        .await?;
        for r in &rows {
            let series_id: i64 = r.get(0);
            let bytes: Vec<u8> = r.get(2);
            match RrdState::from_bytes(&bytes) {
                Ok(state) => {
                    let applied_seq: i64 = r.get(3);
                    let last = match (r.get::<Option<i64>, _>(4), r.get::<Option<f64>, _>(5)) {
                        (Some(t), Some(v)) => Some((t, v)),
                        _ => None,
                    };
                    cache.seq = cache.seq.max(applied_seq);
                    let host_id: i64 = r.get(1);
                    *cache.per_host.entry(host_id).or_default() += 1;
                    cache.series.insert(
                        series_id,
                        SeriesHot {
                            host_id,
                            state,
                            pending: Vec::new(),
                            applied_seq,
                            dirty: false,
                            dirty_since: None,
                            last,
                        },
                    );
                    out.series += 1;
                }
                Err(e) => {
                    out.corrupt += 1;
                    tracing::error!(series = series_id, error = %e, "stored archive state unreadable; the series starts over");
                }
            }
        }
        let hosts: HashMap<i64, i64> =
            sqlx::query_as::<_, (i64, i64)>("SELECT id, host_id FROM series")
                .fetch_all(pool)
                .await?
                .into_iter()
                .collect();
        let journal = sqlx::query_as::<_, (i64, Vec<u8>)>(
            "SELECT seq, data FROM archive_journal ORDER BY seq",
        )
        .fetch_all(pool)
        .await?;
        for (seq, data) in journal {
            out.journal_rows += 1;
            cache.seq = cache.seq.max(seq);
            let entries = match journal::decode(&data) {
                Ok(e) => e,
                Err(e) => {
                    out.corrupt += 1;
                    tracing::error!(seq, error = %e, "journal row unreadable; its samples are lost");
                    continue;
                }
            };
            for e in entries {
                // Removed series (their host was deleted) are skipped.
                let Some(&host_id) = hosts.get(&e.series_id) else {
                    continue;
                };
                if cache
                    .series
                    .get(&e.series_id)
                    .is_some_and(|h| h.applied_seq >= seq)
                {
                    continue;
                }
                out.replayed_samples += cache.apply(seq, host_id, &e);
            }
        }
        Ok(out)
    }

    /// Writes every series' rows completed since its last write into
    /// `archive_chunks`, with its state, and deletes the journal rows that are
    /// now covered: what shutdown, backups and tests want.
    pub async fn flush_archives(&self) -> Result<FlushOutcome> {
        self.flush_due_archives(std::time::Duration::ZERO, std::time::Instant::now())
            .await
    }

    /// Writes the series that have waited their delay since their first
    /// unwritten sample: between `delay / 2` and `delay`, fixed per series,
    /// so that writes spread evenly instead of all series coming due in the
    /// same flush. A series written every few minutes lands many rows per
    /// chunk it rewrites; written every 10 s it rewrote the same pages for
    /// one row each (rrdcached defers its writes for the same reason). The
    /// journal keeps each series' samples until its write, so nothing
    /// acknowledged depends on when that comes; reads merge the rows still
    /// in memory.
    pub async fn flush_due_archives(
        &self,
        delay: std::time::Duration,
        now: std::time::Instant,
    ) -> Result<FlushOutcome> {
        // One flush at a time: only a flush writes chunks, so the chunks read
        // below stay what the database holds until this flush writes them.
        let _one = self.flush_lock.lock().await;
        let mut out = FlushOutcome::default();
        // The snapshot is taken under the write lock, between group commits:
        // a group applies its batches to memory before its COMMIT, so only
        // there does memory hold nothing the database lacks. Copying is all
        // that happens under it; reading, encoding and writing come after.
        // It is taken in pieces of SNAPSHOT_SERIES series, each under the
        // lock on its own, so a commit waits for one piece, not for a copy
        // of every dirty series (40 000 series held the lock 100-240 ms).
        // Each piece is consistent at its own moment; the journal is trimmed
        // only through the first piece's sequence, which every later piece
        // holds too (replay skips what a series' `applied_seq` covers).
        let (ids, journal_dirty, epoch) = {
            let _w = self.write.lock().await;
            let cache = self.cache();
            let ids: Vec<i64> = cache
                .series
                .iter()
                .filter(|(&id, h)| {
                    h.dirty
                        && h.dirty_since.is_none_or(|(at, _)| {
                            now.saturating_duration_since(at) >= write_delay(delay, id)
                        })
                })
                .map(|(&id, _)| id)
                .collect();
            (ids, cache.journal_dirty, cache.epoch)
        };
        let mut snaps: Vec<FlushSnap> = Vec::with_capacity(ids.len());
        for piece in ids.chunks(SNAPSHOT_SERIES) {
            let _w = self.write.lock().await;
            let cache = self.cache();
            if cache.epoch != epoch {
                // Memory was rebuilt from the database (a failed commit).
                return Ok(out);
            }
            snaps.extend(piece.iter().filter_map(|id| {
                let h = cache.series.get(id).filter(|h| h.dirty)?;
                Some(FlushSnap {
                    id: *id,
                    spec: h.state.spec_arc().clone(),
                    writes: h.pending.clone(),
                    state: h.state.to_bytes(),
                    applied_seq: h.applied_seq,
                    last: h.last,
                })
            }));
        }
        if snaps.is_empty() && !journal_dirty {
            return Ok(out);
        }

        // The chunks the rows land in, read on a reader connection (WAL:
        // writers go on meanwhile).
        let mut keys: Vec<(i64, u32, u32)> = Vec::new();
        for s in &snaps {
            for w in &s.writes {
                let a = s.spec.archives[w.archive];
                let slot = metrolog_protocol::rrd::archive_slot(a.step, a.rows, w.label);
                keys.push((s.id, w.archive as u32, slot / chunk::CHUNK_ROWS));
            }
        }
        keys.sort_unstable();
        keys.dedup();
        // Thousands of rows: read on SQLite's handle directly (see `direct`).
        let (keys, stored) = super::direct::run(&self.pool, move |db| {
            let mut stored: Vec<((i64, u32, u32), Vec<u8>)> = Vec::new();
            for batch in keys.chunks(READ_BATCH) {
                let mut sql = String::from(
                    "SELECT series_id, archive, chunk, data FROM archive_chunks WHERE (series_id, archive, chunk) IN (VALUES ",
                );
                let mut sep = "";
                for (id, a, c) in batch {
                    use std::fmt::Write;
                    let _ = write!(sql, "{sep}({id}, {a}, {c})");
                    sep = ", ";
                }
                sql.push(')');
                let mut stmt = db.prepare(&sql)?;
                let mut rows = stmt.query([])?;
                while let Some(r) = rows.next()? {
                    let key = (
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)? as u32,
                        r.get::<_, i64>(2)? as u32,
                    );
                    stored.push((key, r.get(3)?));
                }
            }
            Ok((keys, stored))
        })
        .await?;

        // Decoding, placing the rows and encoding are CPU work: the blocking
        // pool does it, so the runtime keeps serving requests.
        let (snaps, encoded, rows, corrupt) = tokio::task::spawn_blocking(move || {
            let encoded = encode_flush(&snaps, keys, stored);
            (snaps, encoded.0, encoded.1, encoded.2)
        })
        .await
        .map_err(|e| StoreError::Invalid(format!("archive flush task failed: {e}")))?;
        out.rows = rows;
        out.corrupt_chunks = corrupt;
        out.chunks = encoded.values().map(Vec::len).sum::<usize>() as u64;

        // Written in slices of whole series, each a short transaction under the
        // write lock, so batch commits wait for one slice, never for the whole
        // flush. A series' chunks and state commit together: a crash between
        // slices leaves every series flushed or replayed from the journal.
        let mut encoded = encoded;
        for slice in snaps.chunks(FLUSH_SLICE_SERIES) {
            let _w = self.write.lock().await;
            let _gate = self.flush_gate.write().await;
            let live: Vec<&FlushSnap> = {
                let cache = self.cache();
                if cache.epoch != epoch {
                    // Memory was rebuilt from the database (a failed commit):
                    // what is left stays dirty there and goes at the next flush.
                    return Ok(out);
                }
                // Series removed since the snapshot are not written back.
                slice
                    .iter()
                    .filter(|s| cache.series.contains_key(&s.id))
                    .collect()
            };
            let chunks: Vec<(i64, u32, u32, Vec<u8>)> = live
                .iter()
                .flat_map(|s| {
                    encoded
                        .remove(&s.id)
                        .unwrap_or_default()
                        .into_iter()
                        .map(move |(a, c, data)| (s.id, a, c, data))
                })
                .collect();
            let states: Vec<StateRow> = live
                .iter()
                .map(|s| (s.id, s.state.clone(), s.applied_seq, s.last))
                .collect();
            let chunks = super::direct::run(&self.pool, move |db| {
                write_slice(db, &chunks, &states)?;
                Ok(chunks)
            })
            .await?;
            out.series += live.len() as u64;
            let mut cache = self.cache();
            {
                let mut read_cache = self.chunk_cache();
                for (id, a, c, _) in &chunks {
                    read_cache.remove((*id, *a, *c));
                }
            }
            for s in live {
                if let Some(h) = cache.series.get_mut(&s.id) {
                    let n = s.writes.len().min(h.pending.len());
                    h.pending.drain(..n);
                    h.dirty = !h.pending.is_empty() || h.applied_seq > s.applied_seq;
                    // Applied since the snapshot: unwritten from after it.
                    h.dirty_since = h
                        .dirty
                        .then(|| (std::time::Instant::now(), s.applied_seq + 1));
                }
            }
        }

        // Every journal row before the first unwritten sample of every series
        // is in the chunks and states now. Under the write lock, every row
        // through `cache.seq` is applied to memory, so none is missed.
        let _w = self.write.lock().await;
        let through = {
            let cache = self.cache();
            if cache.epoch != epoch {
                return Ok(out);
            }
            cache
                .series
                .values()
                .filter_map(|h| h.dirty_since.map(|(_, seq)| seq - 1))
                .min()
                .unwrap_or(cache.seq)
                .min(cache.seq)
        };
        out.journal_rows = sqlx::query("DELETE FROM archive_journal WHERE seq <= ?")
            .bind(through)
            .execute(&self.pool)
            .await?
            .rows_affected();
        let mut cache = self.cache();
        cache.journal_dirty = cache.seq > through;
        Ok(out)
    }

    /// Rows of series `series_id` for the query step `step` over `(from, to]`: read
    /// from the archive with the largest step that divides `step`, labelled as
    /// [`RrdState::fetch_rows_with`] does. `None` when the series holds no data or
    /// no archive divides `step`.
    pub async fn archive_rows(
        &self,
        series_id: i64,
        step: u32,
        from: i64,
        to: i64,
    ) -> Result<Option<FetchedRows>> {
        Ok(self
            .archive_rows_many(&[series_id], step, from, to)
            .await?
            .pop()
            .flatten())
    }

    /// [`Store::archive_rows`] of several series at once (a group's members):
    /// one statement per archive index for all of them instead of one per
    /// series, in the order of `ids`.
    pub async fn archive_rows_many(
        &self,
        ids: &[i64],
        step: u32,
        from: i64,
        to: i64,
    ) -> Result<Vec<Option<FetchedRows>>> {
        struct Read {
            host_id: i64,
            state: RrdState,
            archive: usize,
            pending: Vec<RowWrite>,
            /// The ring's chunks wanted, by number: from the read cache or
            /// the database (`None`: no row stored, or not wanted).
            chunks: Vec<Option<Arc<Vec<Row>>>>,
            /// Chunks not in the read cache, read from the database.
            missing: HashSet<u32>,
        }
        let _gate = self.flush_gate.read().await;
        let mut reads: Vec<Option<Read>> = {
            let cache = self.cache();
            ids.iter()
                .map(|id| {
                    let h = cache.series.get(id)?;
                    let archive = h
                        .state
                        .spec()
                        .archives
                        .iter()
                        .rposition(|a| step.is_multiple_of(a.step))?;
                    let pending = h
                        .pending
                        .iter()
                        .filter(|w| w.archive == archive)
                        .copied()
                        .collect();
                    let ring = h.state.spec().archives[archive].rows;
                    Some(Read {
                        host_id: h.host_id,
                        state: h.state.clone(),
                        archive,
                        pending,
                        chunks: vec![None; ring.div_ceil(chunk::CHUNK_ROWS) as usize],
                        missing: HashSet::new(),
                    })
                })
                .collect()
        };
        // The chunks each series needs for (from, to]; those the read cache
        // holds are taken from it, the others are read below.
        {
            let mut read_cache = self.chunk_cache();
            for (k, r) in reads.iter_mut().enumerate() {
                let Some(r) = r else { continue };
                let a = r.state.spec().archives[r.archive];
                let (oldest, newest) = r.state.window(r.archive).unwrap_or((0, -1));
                let astep = i64::from(a.step);
                let lo = (from - from.rem_euclid(astep) + astep).max(oldest);
                let hi = (to + (astep - to.rem_euclid(astep)) % astep).min(newest);
                let mut label = lo;
                let mut last = None;
                // At most `rows` labels: the window is clamped to the ring.
                // Consecutive labels share a chunk: each is looked at once.
                while label <= hi {
                    let c = metrolog_protocol::rrd::archive_slot(a.step, a.rows, label)
                        / chunk::CHUNK_ROWS;
                    label += astep;
                    if last.replace(c) == Some(c)
                        || r.chunks[c as usize].is_some()
                        || r.missing.contains(&c)
                    {
                        continue;
                    }
                    match read_cache.get((ids[k], r.archive as u32, c)) {
                        Some(rows) => r.chunks[c as usize] = rows,
                        None => {
                            r.missing.insert(c);
                        }
                    }
                }
            }
        }
        // The chunks to read, gathered per archive index: (archive, its
        // step, rows, pdp per row) → series and chunks.
        let mut wanted: BTreeMap<usize, (Vec<usize>, HashSet<u32>, bool)> = BTreeMap::new();
        for (k, r) in reads.iter().enumerate() {
            let Some(r) = r else { continue };
            if r.missing.is_empty() {
                continue;
            }
            let a = r.state.spec().archives[r.archive];
            let all = r.missing.len() as u32 >= a.rows.div_ceil(chunk::CHUNK_ROWS);
            let e = wanted.entry(r.archive).or_default();
            e.0.push(k);
            e.2 |= all;
            e.1.extend(r.missing.iter().copied());
        }
        let by_id: HashMap<i64, usize> = ids.iter().enumerate().map(|(k, id)| (*id, k)).collect();
        // One statement per part of at most `PART` series; with many series
        // two parts run at once on two connections (SQLite steps each on
        // its own thread), which halves a 50-member group's read.
        const PART: usize = 256;
        let mut parts: Vec<(usize, Vec<i64>, Option<Vec<u32>>)> = Vec::new();
        for (archive, (members, chunk_set, all)) in wanted {
            let chunk_list = (!all).then(|| chunk_set.into_iter().collect::<Vec<u32>>());
            let size = if members.len() >= 16 {
                members.len().div_ceil(2).min(PART)
            } else {
                PART
            };
            for part in members.chunks(size) {
                parts.push((
                    archive,
                    part.iter().map(|k| ids[*k]).collect(),
                    chunk_list.clone(),
                ));
            }
        }
        // Thousands of rows: read on SQLite's handle directly (one hand-off
        // per part, not per row, see `direct`), decoded where they are read.
        let fetched = futures_util::future::try_join_all(parts.into_iter().map(
            |(archive, part, chunk_list)| {
                let mut sql = format!(
                    "SELECT series_id, chunk, data FROM archive_chunks WHERE archive = {archive} AND series_id IN ("
                );
                push_list(&mut sql, part.iter().copied());
                // Every chunk of the ring wanted (a long range): no chunk list.
                if let Some(list) = &chunk_list {
                    sql.push_str(" AND chunk IN (");
                    push_list(&mut sql, list.iter().map(|c| i64::from(*c)));
                }
                let layout: HashMap<i64, (u32, u32)> = part
                    .iter()
                    .filter_map(|id| {
                        let r = reads[by_id[id]].as_ref()?;
                        let spec = r.state.spec();
                        Some((*id, (spec.archives[archive].rows, spec.pdp_per_row(archive))))
                    })
                    .collect();
                super::direct::run(&self.pool, move |db| {
                    let mut stmt = db.prepare(&sql)?;
                    let mut rows = stmt.query([])?;
                    let mut out = Vec::new();
                    while let Some(row) = rows.next()? {
                        let id: i64 = row.get(0)?;
                        let c = row.get::<_, i64>(1)? as u32;
                        let Some(&(ring, pdp)) = layout.get(&id) else {
                            continue;
                        };
                        // Anything but a blob decodes as an unreadable chunk.
                        let data = match row.get_ref(2)? {
                            rusqlite::types::ValueRef::Blob(b) => b,
                            _ => &[],
                        };
                        out.push((id, c, chunk::decode(data, chunk::rows_in_chunk(ring, c), pdp)));
                    }
                    Ok((archive, out))
                })
            },
        ))
        .await?;
        for (archive, rows) in fetched {
            for (id, c, decoded) in rows {
                let Some(r) = by_id.get(&id).and_then(|k| reads[*k].as_mut()) else {
                    continue;
                };
                // Another member's chunk number, or one the cache held.
                if !r.missing.contains(&c) {
                    continue;
                }
                match decoded {
                    Ok(rows) => r.chunks[c as usize] = Some(Arc::new(rows)),
                    Err(e) => {
                        // Not kept: read (and reported) again next time.
                        r.missing.remove(&c);
                        tracing::error!(series = id, archive, chunk = c, error = %e, "archive chunk unreadable; its rows read as unknown");
                    }
                }
            }
        }
        // Kept for the next read, unless the series went meanwhile (its
        // removal purged the cache under the same lock).
        {
            let cache = self.cache();
            let mut read_cache = self.chunk_cache();
            for (k, r) in reads.iter_mut().enumerate() {
                let Some(r) = r else { continue };
                if r.missing.is_empty()
                    || cache.series.get(&ids[k]).map(|h| h.host_id) != Some(r.host_id)
                {
                    continue;
                }
                for c in r.missing.drain() {
                    read_cache.insert((ids[k], r.archive as u32, c), r.chunks[c as usize].clone());
                }
            }
        }
        let mut out = Vec::with_capacity(ids.len());
        for r in reads.iter_mut() {
            let Some(r) = r else {
                out.push(None);
                continue;
            };
            let a = r.state.spec().archives[r.archive];
            for w in &r.pending {
                let slot = metrolog_protocol::rrd::archive_slot(a.step, a.rows, w.label);
                let c = slot / chunk::CHUNK_ROWS;
                // Copied first when the read cache shares it: it holds
                // what the database holds, never the rows in memory.
                let rows = Arc::make_mut(r.chunks[c as usize].get_or_insert_with(|| {
                    Arc::new(vec![Row::UNKNOWN; chunk::rows_in_chunk(a.rows, c)])
                }));
                rows[(slot % chunk::CHUNK_ROWS) as usize] = w.row;
            }
            let chunks = &r.chunks;
            let rows = r
                .state
                .fetch_rows_with(r.archive, from, to, |slot| {
                    let slot = slot as u32;
                    chunks
                        .get((slot / chunk::CHUNK_ROWS) as usize)
                        .and_then(Option::as_ref)
                        .and_then(|rows| rows.get((slot % chunk::CHUNK_ROWS) as usize))
                        .copied()
                        .unwrap_or(Row::UNKNOWN)
                })
                .map_err(|e| StoreError::Invalid(e.to_string()))?;
            out.push(Some(rows));
        }
        Ok(out)
    }
}

/// Appends `a, b, c)` to an SQL text: integers only, so nothing to bind.
fn push_list(sql: &mut String, items: impl Iterator<Item = i64>) {
    use std::fmt::Write;
    let mut sep = "";
    for i in items {
        let _ = write!(sql, "{sep}{i}");
        sep = ", ";
    }
    sql.push(')');
}

/// A series' state row as a flush writes it: id, state bytes, the newest
/// journal row included, the last sample.
type StateRow = (i64, Vec<u8>, i64, Option<(i64, f64)>);

/// Writes one flush slice (chunks, then the states that include them) in one
/// transaction. Without an fsync of its own (`synchronous = NORMAL` for this
/// transaction only): everything it writes is in the journal already, which
/// is trimmed only afterwards by a commit that does fsync, and the WAL is
/// one file written in order, so that fsync makes every slice before it
/// durable. A crash before it keeps a prefix of the slices; each series not
/// among them is replayed from the journal, as its state's `applied_seq`
/// says. A failed slice closes the connection (`direct::run`), so the
/// setting never outlives it.
fn write_slice(
    db: &rusqlite::Connection,
    chunks: &[(i64, u32, u32, Vec<u8>)],
    states: &[StateRow],
) -> rusqlite::Result<()> {
    db.execute_batch("PRAGMA synchronous = NORMAL; BEGIN IMMEDIATE")?;
    {
        let mut put_chunk = db.prepare_cached(
            "INSERT OR REPLACE INTO archive_chunks (series_id, archive, chunk, data) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for (id, a, c, data) in chunks {
            put_chunk.execute(rusqlite::params![id, a, c, data])?;
        }
        let mut put_state = db.prepare_cached(
            "INSERT OR REPLACE INTO archive_state (series_id, state, applied_seq, last_ts, last_value) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for (id, state, applied, last) in states {
            put_state.execute(rusqlite::params![
                id,
                state,
                applied,
                last.map(|l| l.0),
                last.map(|l| l.1)
            ])?;
        }
    }
    db.execute_batch("COMMIT; PRAGMA synchronous = FULL")
}
