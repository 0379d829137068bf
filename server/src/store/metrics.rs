//! Series, and the commits that journal their samples for the archives: agent
//! batches and imports.

use super::archive::journal::Sample;
use super::archive::{self, ArchiveCache};
use super::{hosts::touch, now, Result, Store, StoreError, SERIES_CACHE_MAX};
use crate::events::{ChecksCommitted, Event, HostChange, SampleSource, SamplesCommitted};
use metrolog_protocol::nagios::CheckResult;
use metrolog_protocol::syslog::{LogRecord, LogSource};
use metrolog_protocol::{BatchId, Bucket, Labels, SeriesKey};
use rusqlite::OptionalExtension as _;
use serde::Serialize;
use sqlx::{QueryBuilder, Row, Sqlite};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Outcome of committing one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitOutcome {
    /// The batch had been committed before; nothing was written again.
    pub duplicate: bool,
    /// Buckets journaled for the archives.
    pub stored: u64,
    /// Buckets refused because they were not after the series' last sample.
    pub out_of_order: u64,
    /// Buckets of new series refused by `max_series_per_host` or `max_series`.
    pub over_limit: u64,
    /// Log records written.
    pub logs: u64,
    /// Check results stored.
    pub checks: u64,
    /// The host was `down` or `left` and is `up` again.
    pub came_up: bool,
}

/// What waits for the next group commit: an agent batch, or a heartbeat.
#[derive(Debug)]
pub(super) enum PendingBatch {
    Batch {
        batch: Batch,
        reply: tokio::sync::oneshot::Sender<Result<CommitOutcome>>,
    },
    /// A host's sign of life, committed with the group instead of in a
    /// transaction (and an fsync) of its own: at 10 000 agents a heartbeat
    /// every minute each is 170 a second. The reply says whether the host
    /// came back `up`.
    Touch {
        host_id: i64,
        reply: tokio::sync::oneshot::Sender<Result<bool>>,
    },
}

/// What an agent batch brings: moved to SQLite's thread for the group's
/// commit, and back to publish what was committed.
#[derive(Debug)]
pub(super) struct Batch {
    host_id: i64,
    id: BatchId,
    series: Vec<(SeriesKey, Vec<Bucket>)>,
    /// Shared with the caller, which publishes them once committed.
    logs: Arc<Vec<LogRecord>>,
    checks: Vec<CheckResult>,
}

/// The series-id cache's key: host id, name, canonical labels.
pub(super) type SeriesIdKey = (i64, String, String);
/// Series ids looked up or created in a transaction, to cache once it commits.
type NewIds = Vec<(SeriesIdKey, i64)>;

/// What a commit reads and updates of the store's memory, shared with the
/// blocking thread it runs on (`direct::run` takes only `'static` closures).
#[derive(Clone)]
struct CommitParts {
    archives: Arc<Mutex<ArchiveCache>>,
    series_ids: Arc<Mutex<HashMap<SeriesIdKey, i64>>>,
    limits: Arc<SeriesLimits>,
}

/// A group commit that reached COMMIT: its batches back, each one's outcome,
/// and the series ids to cache.
struct GroupDone {
    batches: Vec<Batch>,
    results: Vec<Result<CommitOutcome>>,
    /// Per heartbeat of the group: its host, and whether it came back `up`.
    touched: Vec<(i64, bool)>,
    new_ids: NewIds,
    /// When the statements were done and COMMIT started.
    statements_done: Instant,
}

/// What one batch's statements did, before its savepoint is released.
struct BatchDone {
    outcome: CommitOutcome,
    journaled: archive::Journaled,
    new_ids: NewIds,
}

/// Outcome of one import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportOutcome {
    pub accepted: u64,
    /// Samples at or before the series' previous sample, per rrdtool update.
    pub out_of_order: u64,
    /// Samples of new series refused by `max_series_per_host` or `max_series`.
    pub over_limit: u64,
    /// The same, per series in the order given.
    pub per_series: Vec<super::Accepted>,
}

/// `[archives] max_series_per_host` and `max_series`: a new series beyond
/// either is refused (its samples counted, never stored) while the series a
/// host already has go on. Counted are series holding data in memory, which is
/// what a series costs (docs/fleet-scale.md has the measured bytes per series).
#[derive(Debug)]
pub(super) struct SeriesLimits {
    per_host: AtomicU64,
    total: AtomicU64,
    refused_per_host: AtomicU64,
    refused_total: AtomicU64,
    refused_samples: AtomicU64,
    /// When the refusals were last logged, and how many since.
    log: Mutex<(Option<Instant>, u64)>,
}

/// Default `[archives] max_series_per_host`.
pub const DEFAULT_MAX_SERIES_PER_HOST: u64 = 10_000;
/// Default `[archives] max_series`.
pub const DEFAULT_MAX_SERIES: u64 = 500_000;
/// Refusals are logged at most this often (they are counted every time).
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(60);

impl Default for SeriesLimits {
    fn default() -> Self {
        Self {
            per_host: AtomicU64::new(DEFAULT_MAX_SERIES_PER_HOST),
            total: AtomicU64::new(DEFAULT_MAX_SERIES),
            refused_per_host: AtomicU64::new(0),
            refused_total: AtomicU64::new(0),
            refused_samples: AtomicU64::new(0),
            log: Mutex::new((None, 0)),
        }
    }
}

impl SeriesLimits {
    fn get(&self) -> (u64, u64) {
        (
            self.per_host.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
        )
    }

    fn refused_samples(&self, n: u64) {
        self.refused_samples.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts refused new series and logs them, at most once a minute.
    fn refused_series(&self, host_id: i64, (per_host, total): (u64, u64)) {
        if per_host + total == 0 {
            return;
        }
        self.refused_per_host.fetch_add(per_host, Ordering::Relaxed);
        self.refused_total.fetch_add(total, Ordering::Relaxed);
        let mut log = self.log.lock().expect("series limit log poisoned");
        log.1 += per_host + total;
        if log.0.is_none_or(|at| at.elapsed() >= REFUSAL_LOG_EVERY) {
            let (max_host, max_total) = self.get();
            tracing::warn!(
                host_id,
                refused_now_per_host = per_host,
                refused_now_total = total,
                refused_since_last_log = log.1,
                max_series_per_host = max_host,
                max_series = max_total,
                "new series refused: a cap on series is reached ([archives] max_series_per_host, max_series); their samples are dropped and counted in metrolog_series_refused_total"
            );
            *log = (Some(Instant::now()), 0);
        }
    }
}

/// What the series caps refused since start, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeriesRefusals {
    /// New series refused by `max_series_per_host`.
    pub per_host: u64,
    /// New series refused by `max_series`.
    pub total: u64,
    /// Their samples (buckets), dropped.
    pub samples: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SeriesRow {
    pub id: i64,
    pub host_id: i64,
    pub hostname: String,
    pub name: String,
    pub labels: Labels,
}

impl Store {
    /// Commits one agent batch: series are created as needed, buckets journaled
    /// for the archives, logs stored, and the batch id recorded on the host so a
    /// replay is recognised (a replayed batch only refreshes the host's liveness).
    ///
    /// Group commit: the batch joins a queue; whoever takes the write lock next
    /// commits everything queued in ONE transaction (one fsync), each batch
    /// inside its own savepoint so a failing batch fails alone. Many agents
    /// shipping at once thus cost one fsync per group, not one per batch.
    pub async fn commit_batch(
        &self,
        host_id: i64,
        batch: &BatchId,
        series: Vec<(SeriesKey, Vec<Bucket>)>,
        logs: Arc<Vec<LogRecord>>,
        checks: Vec<CheckResult>,
    ) -> Result<CommitOutcome> {
        let (reply, done) = tokio::sync::oneshot::channel();
        self.commit_queued(PendingBatch::Batch {
            batch: Batch {
                host_id,
                id: batch.clone(),
                series,
                logs,
                checks,
            },
            reply,
        })
        .await;
        // Our batch was in the group just committed, by us or by a caller before us.
        done.await.unwrap_or_else(|_| {
            Err(StoreError::Invalid(
                "the commit of this batch was interrupted; send it again".into(),
            ))
        })
    }

    /// Records a sign of life (heartbeat) in the next group commit; a `down`
    /// or `left` host comes back `up`.
    pub async fn touch_host(&self, host_id: i64) -> Result<()> {
        let (reply, done) = tokio::sync::oneshot::channel();
        self.commit_queued(PendingBatch::Touch { host_id, reply })
            .await;
        done.await
            .unwrap_or_else(|_| {
                Err(StoreError::Invalid(
                    "the commit of this heartbeat was interrupted; send it again".into(),
                ))
            })
            .map(|_| ())
    }

    /// Queues `item` and commits the queue unless a caller before us took it
    /// (whoever takes the write lock next commits everything queued).
    async fn commit_queued(&self, item: PendingBatch) {
        self.pending
            .lock()
            .expect("pending batches poisoned")
            .push(item);
        let _w = self.write.lock().await;
        let group = std::mem::take(&mut *self.pending.lock().expect("pending batches poisoned"));
        if !group.is_empty() {
            self.commit_group(group).await;
        }
    }

    /// Commits queued batches in one transaction. Called with the write lock held.
    ///
    /// The whole transaction runs on SQLite's handle on one blocking thread
    /// (`direct::run`): one hand-off between threads per group, where sqlx
    /// made one per statement, about ten per batch (at 10 000 agents those
    /// hand-offs cost the server more than SQLite's own work,
    /// docs/benchmarks.md).
    async fn commit_group(&self, group: Vec<PendingBatch>) {
        let t = now();
        let started = Instant::now();
        let size = group.len();
        let (mut batches, mut replies) = (Vec::new(), Vec::new());
        let (mut touches, mut touch_replies) = (Vec::new(), Vec::new());
        for p in group {
            match p {
                PendingBatch::Batch { batch, reply } => {
                    batches.push(batch);
                    replies.push(reply);
                }
                PendingBatch::Touch { host_id, reply } => {
                    touches.push(host_id);
                    touch_replies.push(reply);
                }
            }
        }
        let parts = self.commit_parts();
        let outcome = super::direct::run(&self.pool, move |db| {
            commit_group_on(db, &parts, batches, touches, t)
        })
        .await;
        let took = started.elapsed();
        if took >= super::write_lock::SLOW_HOLD {
            let statements = outcome.as_ref().map_or(Duration::ZERO, |done| {
                done.statements_done.saturating_duration_since(started)
            });
            tracing::debug!(
                target: "metrolog_server::store::write_lock",
                batches = size,
                statements_ms = statements.as_secs_f64() * 1e3,
                commit_ms = (took - statements).as_secs_f64() * 1e3,
                "slow group commit"
            );
        }
        match outcome {
            Ok(done) => {
                self.remember_series(done.new_ids);
                let committed = done.batches.into_iter().zip(done.results);
                for ((batch, r), reply) in committed.zip(replies) {
                    if let Ok(outcome) = &r {
                        self.publish_batch(batch.host_id, outcome, batch.series, batch.checks, t);
                    }
                    let _ = reply.send(r);
                }
                for ((host_id, came_up), reply) in done.touched.into_iter().zip(touch_replies) {
                    if came_up {
                        self.bus.host(host_id, HostChange::Up, t, t);
                    }
                    let _ = reply.send(Ok(came_up));
                }
            }
            Err(e) => {
                // Nothing of the group is in the database (a failed direct
                // call closes its connection, which rolls it back), but its
                // batches were applied to the archives' memory as they went:
                // take it back to what the database holds, so that the
                // agents' retries are stored, not refused as already seen.
                // (Series ids are cached only after COMMIT.)
                if let Err(reload) = self.reload_archives().await {
                    tracing::error!(error = %reload, "reloading the archives after a failed commit failed; memory may hold samples the database lacks until the next start");
                }
                let disk_full = e.is_disk_full();
                let msg = e.to_string();
                let retry = |what: &str| StoreError::Retry {
                    message: format!("{what} not stored: {msg}"),
                    disk_full,
                };
                for reply in replies {
                    let _ = reply.send(Err(retry("batch")));
                }
                for reply in touch_replies {
                    let _ = reply.send(Err(retry("heartbeat")));
                }
            }
        }
    }

    /// The memory a commit on SQLite's thread works with.
    fn commit_parts(&self) -> CommitParts {
        CommitParts {
            archives: self.archives.clone(),
            series_ids: self.series_ids.clone(),
            limits: self.series_limits.clone(),
        }
    }

    /// Rebuilds the archives' memory from the database (states, then the journal
    /// replayed), as at start. Called with the write lock held.
    async fn reload_archives(&self) -> Result<()> {
        let mut fresh = super::archive::ArchiveCache::new((*self.archive_spec()).clone());
        let loaded = Self::load_archives(&self.pool, &mut fresh).await?;
        *self.cache() = fresh;
        tracing::warn!(
            series = loaded.series,
            journal_rows = loaded.journal_rows,
            "archives reloaded from the database after a failed commit"
        );
        Ok(())
    }

    /// Publishes what one committed batch made true (after the group's COMMIT).
    fn publish_batch(
        &self,
        host_id: i64,
        done: &CommitOutcome,
        series: Vec<(SeriesKey, Vec<Bucket>)>,
        checks: Vec<CheckResult>,
        t: i64,
    ) {
        if done.came_up {
            self.bus.host(host_id, HostChange::Up, t, t);
        }
        if done.duplicate {
            return;
        }
        if !series.is_empty() {
            self.bus.publish(Event::Samples(Arc::new(SamplesCommitted {
                host_id,
                source: SampleSource::Agent,
                series,
            })));
        }
        if !checks.is_empty() {
            self.bus.publish(Event::Checks(Arc::new(ChecksCommitted {
                host_id,
                results: checks,
            })));
        }
    }

    /// Journals imported samples of `host_id` (in time order per series; a NaN value
    /// is unknown) in one transaction. Samples not after their series' last one are
    /// refused and counted, as `rrdtool update` refuses them.
    pub async fn import_samples(
        &self,
        host_id: i64,
        series: &[(SeriesKey, Vec<(i64, f64)>)],
    ) -> Result<ImportOutcome> {
        let _w = self.write.lock().await;
        let parts = self.commit_parts();
        let keys: Vec<SeriesKey> = series.iter().map(|(k, _)| k.clone()).collect();
        let samples: Vec<Vec<Sample>> = series
            .iter()
            .map(|(_, points)| {
                points
                    .iter()
                    .map(|&(ts, value)| Sample {
                        ts,
                        value,
                        ext: None,
                    })
                    .collect()
            })
            .collect();
        let t = now();
        let (ids, new_ids, journaled, kept, came_up) = super::direct::run(&self.pool, move |db| {
            // Deferred, as a group commit's (see `commit_group_on`).
            db.execute_batch("BEGIN")?;
            let keys: Vec<&SeriesKey> = keys.iter().collect();
            let (ids, new_ids) = series_ids_tx(db, &parts, host_id, &keys)?;
            let per_series = ids
                .iter()
                .zip(samples)
                .filter_map(|(id, samples)| id.map(|id| (id, false, samples)))
                .collect();
            let (journaled, kept) = archive::journal_tx(db, &parts.archives, per_series)?;
            let came_up = touch(db, host_id, t)?;
            db.execute_batch("COMMIT")?;
            Ok((ids, new_ids, journaled, kept, came_up))
        })
        .await?;
        self.cache().apply_committed(host_id, journaled);
        self.remember_series(new_ids);
        // Back to one answer per series given, refused ones included.
        let mut kept = kept.into_iter();
        let accepted: Vec<super::Accepted> = ids
            .iter()
            .zip(series)
            .map(|(id, (_, points))| match id {
                Some(_) => kept.next().unwrap_or_default(),
                None => super::Accepted {
                    over_limit: points.len() as u64,
                    ..Default::default()
                },
            })
            .collect();
        let over_limit: u64 = accepted.iter().map(|a| a.over_limit).sum();
        self.series_limits.refused_samples(over_limit);
        if came_up {
            self.bus.host(host_id, HostChange::Up, t, t);
        }
        if self.bus.has_subscribers() {
            let series = series
                .iter()
                .zip(&accepted)
                .filter(|(_, a)| a.accepted > 0)
                .map(|((key, points), _)| {
                    let buckets = points
                        .iter()
                        .filter(|(_, v)| v.is_finite())
                        .map(|&(ts, v)| Bucket {
                            ts,
                            avg: v,
                            min: v,
                            max: v,
                            last: v,
                            count: 1,
                        })
                        .collect();
                    (key.clone(), buckets)
                })
                .collect();
            self.bus.publish(Event::Samples(Arc::new(SamplesCommitted {
                host_id,
                source: SampleSource::Import,
                series,
            })));
        }
        Ok(ImportOutcome {
            accepted: accepted.iter().map(|a| a.accepted).sum(),
            out_of_order: accepted.iter().map(|a| a.out_of_order).sum(),
            over_limit,
            per_series: accepted,
        })
    }

    /// Sets `[archives] max_series_per_host` and `max_series` (both at least 1).
    pub fn set_series_limits(&self, per_host: u64, total: u64) {
        let l = &self.series_limits;
        l.per_host.store(per_host.max(1), Ordering::Relaxed);
        l.total.store(total.max(1), Ordering::Relaxed);
    }

    /// What the series caps refused since start.
    pub fn series_refusals(&self) -> SeriesRefusals {
        let l = &self.series_limits;
        SeriesRefusals {
            per_host: l.refused_per_host.load(Ordering::Relaxed),
            total: l.refused_total.load(Ordering::Relaxed),
            samples: l.refused_samples.load(Ordering::Relaxed),
        }
    }

    /// Only committed ids enter the cache.
    fn remember_series(&self, new_ids: NewIds) {
        let mut cache = self.series_ids.lock().expect("series cache poisoned");
        if cache.len() + new_ids.len() > SERIES_CACHE_MAX {
            cache.clear();
        }
        cache.extend(new_ids);
    }

    /// Drops cached series ids of removed hosts.
    pub(super) fn forget_hosts(&self, host_ids: &[i64]) {
        if host_ids.is_empty() {
            return;
        }
        let mut cache = self.series_ids.lock().expect("series cache poisoned");
        cache.retain(|(h, _, _), _| !host_ids.contains(h));
        drop(cache);
        // Their archives, states and chunks went with the series (FK cascade); the
        // journal rows that still name them are skipped at replay.
        let mut cache = self.cache();
        let gone = cache.forget_hosts(host_ids);
        self.chunk_cache().purge_series(&gone);
    }

    /// Series filtered by host and by a name pattern where `*` matches any run of
    /// characters.
    pub async fn series(
        &self,
        host_id: Option<i64>,
        name_glob: Option<&str>,
    ) -> Result<Vec<SeriesRow>> {
        let like = name_glob.map(glob_to_like);
        let rows = sqlx::query(
            "SELECT s.id, s.host_id, h.hostname, s.name, s.labels_json FROM series s JOIN hosts h ON h.id = s.host_id
             WHERE (?1 IS NULL AND h.kind = 'host' OR s.host_id = ?1) AND (?2 IS NULL OR s.name LIKE ?2 ESCAPE '\\')
             ORDER BY h.hostname, s.name, s.labels LIMIT 10000",
        )
        .bind(host_id)
        .bind(like)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(series_row).collect())
    }

    /// Latest known value of each unlabelled series named in `names`, per host:
    /// `(host_id, name, ts, value)`. Feeds the overview page.
    pub async fn latest_values(&self, names: &[&str]) -> Result<Vec<(i64, String, i64, f64)>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
            "SELECT id, host_id, name FROM series WHERE labels = '' AND name IN (",
        );
        let mut sep = q.separated(", ");
        for n in names {
            sep.push_bind(*n);
        }
        q.push(") ORDER BY host_id, name");
        let rows = q.build().fetch_all(&self.pool).await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let (ts, v) = self.last_sample(r.get(0))?;
                Some((r.get(1), r.get(2), ts, v))
            })
            .collect())
    }
}

/// One group commit on `db`: each batch inside its own savepoint, so that a
/// failing batch fails alone; each batch's journal entries go to the
/// archives' memory once its savepoint is released, so the next batch of the
/// group sees them (journal seq and sample order stay consistent). An error
/// returned fails the whole group; the caller reloads memory.
fn commit_group_on(
    db: &rusqlite::Connection,
    parts: &CommitParts,
    batches: Vec<Batch>,
    touches: Vec<i64>,
    t: i64,
) -> rusqlite::Result<GroupDone> {
    // Deferred, not IMMEDIATE: BEGIN IMMEDIATE would also take the write lock
    // of every attached file, the log index's (`logidx`) included, and wait
    // for the indexer's transactions there. The store's write lock already
    // keeps other writers of this file out.
    db.execute_batch("BEGIN")?;
    let mut results = Vec::with_capacity(batches.len());
    let mut new_ids = Vec::new();
    for batch in &batches {
        db.prepare_cached("SAVEPOINT batch")?.execute([])?;
        match commit_one(db, parts, batch, t) {
            Ok(done) => {
                db.prepare_cached("RELEASE batch")?.execute([])?;
                archive::lock(&parts.archives).apply_committed(batch.host_id, done.journaled);
                new_ids.extend(done.new_ids);
                results.push(Ok(done.outcome));
            }
            Err(e) if db.is_autocommit() => {
                // SQLite rolled the whole transaction back (a full disk, an
                // I/O error): the group fails, with that cause.
                return Err(e);
            }
            Err(e) => {
                db.prepare_cached("ROLLBACK TO batch")?.execute([])?;
                db.prepare_cached("RELEASE batch")?.execute([])?;
                results.push(Err(super::direct::engine(e)));
            }
        }
    }
    // Heartbeats: an UPDATE of the host row each, no savepoint (a failure
    // there is the database's, and fails the group).
    let mut touched = Vec::with_capacity(touches.len());
    for host_id in touches {
        touched.push((host_id, touch(db, host_id, t)?));
    }
    let statements_done = Instant::now();
    db.execute_batch("COMMIT")?;
    Ok(GroupDone {
        batches,
        results,
        touched,
        new_ids,
        statements_done,
    })
}

/// One batch of a group, inside its savepoint.
fn commit_one(
    db: &rusqlite::Connection,
    parts: &CommitParts,
    batch: &Batch,
    t: i64,
) -> rusqlite::Result<BatchDone> {
    let host_id = batch.host_id;
    let (stream, seq) = (&batch.id.stream, batch.id.seq as i64);
    // The usual case in one statement: a host that is `up` and sends a batch
    // newer than its last records the batch id and its sign of life
    // together. Anything else (a replay, a host coming back, a host gone)
    // takes the statements below.
    let fresh = db
        .prepare_cached(
            "UPDATE hosts SET batch_stream = ?1, batch_seq = ?2, last_seen = ?3
             WHERE id = ?4 AND state = 'up'
               AND NOT (batch_stream IS ?1 AND batch_seq >= ?2)
             RETURNING id",
        )?
        .exists(rusqlite::params![stream, seq, t, host_id])?;
    if !fresh {
        let last: Option<(Option<String>, Option<i64>)> = db
            .prepare_cached("SELECT batch_stream, batch_seq FROM hosts WHERE id = ?1")?
            .query_row([host_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        if let Some((Some(last_stream), Some(last_seq))) = &last {
            if last_stream == stream && seq <= *last_seq {
                let came_up = touch(db, host_id, t)?;
                return Ok(BatchDone {
                    outcome: CommitOutcome {
                        duplicate: true,
                        stored: 0,
                        out_of_order: 0,
                        over_limit: 0,
                        logs: 0,
                        checks: 0,
                        came_up,
                    },
                    journaled: None,
                    new_ids: Vec::new(),
                });
            }
        }
    }
    let keys: Vec<&SeriesKey> = batch.series.iter().map(|(k, _)| k).collect();
    let (ids, new_ids) = series_ids_tx(db, parts, host_id, &keys)?;
    let mut over_limit = 0;
    let per_series = ids
        .iter()
        .zip(&batch.series)
        .filter_map(|(id, (_, buckets))| {
            let Some(id) = id else {
                over_limit += buckets.len() as u64;
                return None;
            };
            let samples = buckets
                .iter()
                .map(|b| Sample {
                    ts: b.ts,
                    value: b.avg,
                    ext: Some((b.min, b.max)),
                })
                .collect();
            Some((*id, true, samples))
        })
        .collect();
    parts.limits.refused_samples(over_limit);
    let (journaled, accepted) = archive::journal_tx(db, &parts.archives, per_series)?;
    if !batch.logs.is_empty() {
        super::logs::insert_tx(db, Some(host_id), &batch.logs, LogSource::Agent)?;
    }
    super::checks::upsert(db, host_id, &batch.checks)?;
    let came_up = if fresh {
        false
    } else {
        db.prepare_cached("UPDATE hosts SET batch_stream = ?1, batch_seq = ?2 WHERE id = ?3")?
            .execute(rusqlite::params![stream, seq, host_id])?;
        touch(db, host_id, t)?
    };
    Ok(BatchDone {
        outcome: CommitOutcome {
            duplicate: false,
            stored: accepted.iter().map(|a| a.accepted).sum(),
            out_of_order: accepted.iter().map(|a| a.out_of_order).sum(),
            over_limit,
            logs: batch.logs.len() as u64,
            checks: batch.checks.len() as u64,
            came_up,
        },
        journaled,
        new_ids,
    })
}

/// Ids of the series `keys` of `host_id`, created as needed inside the
/// caller's transaction on `db` (`None` for a new series the caps refuse, see
/// [`SeriesLimits`]); also the ids looked up or created, to cache once the
/// transaction commits.
fn series_ids_tx(
    db: &rusqlite::Connection,
    parts: &CommitParts,
    host_id: i64,
    keys: &[&SeriesKey],
) -> rusqlite::Result<(Vec<Option<i64>>, NewIds)> {
    let mut new_ids = Vec::new();
    let mut ids = Vec::with_capacity(keys.len());
    let mut missing = Vec::new();
    {
        let cache = parts.series_ids.lock().expect("series cache poisoned");
        for (i, key) in keys.iter().enumerate() {
            let labels = key.labels_text();
            let k = (host_id, key.name.as_str().to_string(), labels);
            ids.push(cache.get(&k).copied());
            if ids[i].is_none() {
                missing.push((i, k));
            }
        }
    }
    if missing.is_empty() {
        return Ok((ids, new_ids));
    }
    // Series of this host not cached: one read of the host's series (as
    // many rows as the cap allows it to have) tells existing from new.
    let existing: HashMap<(String, String), i64> = db
        .prepare_cached("SELECT name, labels, id FROM series WHERE host_id = ?1")?
        .query_map([host_id], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let (mut host_n, mut total_n) = archive::lock(&parts.archives).series_count(host_id);
    let (per_host_max, total_max) = parts.limits.get();
    let mut refused = (0u64, 0u64);
    let mut insert = db.prepare_cached(
        "INSERT INTO series (host_id, name, labels, labels_json) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (host_id, name, labels) DO UPDATE SET name = excluded.name
         RETURNING id",
    )?;
    for (i, k) in missing {
        if let Some(&id) = existing.get(&(k.1.clone(), k.2.clone())) {
            ids[i] = Some(id);
            new_ids.push((k, id));
            continue;
        }
        if host_n >= per_host_max {
            refused.0 += 1;
            continue;
        }
        if total_n >= total_max {
            refused.1 += 1;
            continue;
        }
        let key = keys[i];
        let labels_json = serde_json::to_string(&key.labels).unwrap_or_else(|_| "{}".into());
        let id: i64 = insert.query_row(
            rusqlite::params![host_id, key.name.as_str(), k.2, labels_json],
            |r| r.get(0),
        )?;
        host_n += 1;
        total_n += 1;
        ids[i] = Some(id);
        new_ids.push((k, id));
    }
    parts.limits.refused_series(host_id, refused);
    Ok((ids, new_ids))
}

/// A `SeriesRow` from `s.id, s.host_id, h.hostname, s.name, s.labels_json`.
pub(super) fn series_row(r: &sqlx::sqlite::SqliteRow) -> SeriesRow {
    let labels: String = r.get(4);
    SeriesRow {
        id: r.get(0),
        host_id: r.get(1),
        hostname: r.get(2),
        name: r.get(3),
        labels: serde_json::from_str(&labels).unwrap_or_default(),
    }
}

pub(super) fn glob_to_like(glob: &str) -> String {
    let mut out = String::with_capacity(glob.len());
    for c in glob.chars() {
        match c {
            '*' => out.push('%'),
            '%' | '_' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{temp_store, HostState};

    fn bucket(ts: i64, v: f64) -> Bucket {
        Bucket {
            ts,
            avg: v,
            min: v,
            max: v,
            last: v,
            count: 10,
        }
    }

    async fn host(store: &Store) -> i64 {
        crate::store::test_host(store, "h").await
    }

    async fn rows(store: &Store, id: i64, from: i64, to: i64) -> Vec<(i64, Option<f64>)> {
        let f = store.archive_rows(id, 10, from, to).await.unwrap().unwrap();
        (1..=f.rows.len() as i64)
            .map(|k| {
                (
                    f.start + k * 10,
                    f.rows[k as usize - 1].value(metrolog_protocol::rrd::Cf::Avg),
                )
            })
            .collect()
    }

    /// Commits batch `seq` of stream "s" holding `buckets` of `key`.
    async fn ship(
        store: &Store,
        host: i64,
        key: &SeriesKey,
        seq: u64,
        buckets: Vec<Bucket>,
    ) -> CommitOutcome {
        let id = BatchId {
            stream: "s".into(),
            seq,
        };
        store
            .commit_batch(
                host,
                &id,
                vec![(key.clone(), buckets)],
                Default::default(),
                Vec::new(),
            )
            .await
            .unwrap()
    }

    /// A host whose `cpu.busy_pct` got values 1..=40 at t = 10..=400, flushed
    /// into its chunks: (store, its dir, host, key, series id).
    async fn flushed_series() -> (Store, tempfile::TempDir, i64, SeriesKey, i64) {
        let (store, dir) = temp_store().await;
        let host = host(&store).await;
        let key = SeriesKey::new("cpu.busy_pct", Labels::new()).unwrap();
        ship(
            &store,
            host,
            &key,
            1,
            (1..=40).map(|k| bucket(k * 10, k as f64)).collect(),
        )
        .await;
        store.flush_archives().await.unwrap();
        let id = store.series(Some(host), Some("cpu.*")).await.unwrap()[0].id;
        (store, dir, host, key, id)
    }

    #[tokio::test]
    async fn repeated_reads_come_from_the_read_cache_and_see_every_flush() {
        let (store, _dir, host, key, id) = flushed_series().await;

        let first = rows(&store, id, 0, 400).await;
        assert_eq!(first[0], (10, Some(1.0)));
        assert_eq!(first[39], (400, Some(40.0)));
        let after_first = store.read_cache_stats();
        assert!(after_first.misses > 0 && after_first.entries > 0);
        // The same read again: every chunk from the cache, the same answer.
        assert_eq!(rows(&store, id, 0, 400).await, first);
        let after_second = store.read_cache_stats();
        assert_eq!(after_second.misses, after_first.misses);
        assert!(after_second.hits > after_first.hits);

        // New rows written into a chunk the cache holds: the flush drops it,
        // so the next read has them (before the flush, from memory).
        ship(
            &store,
            host,
            &key,
            2,
            (41..=45)
                .map(|k| bucket(k * 10, 100.0 + k as f64))
                .collect(),
        )
        .await;
        let pending = rows(&store, id, 0, 450).await;
        assert_eq!(pending[44], (450, Some(145.0)));
        store.flush_archives().await.unwrap();
        let written = rows(&store, id, 0, 450).await;
        assert_eq!(written, pending);
        assert_eq!(written[40], (410, Some(141.0)));

        // A removed host's chunks leave the cache with it.
        assert!(store.read_cache_stats().entries > 0);
        assert!(store.delete_host(host).await.unwrap());
        assert_eq!(store.read_cache_stats().entries, 0);
        assert_eq!(store.read_cache_stats().bytes, 0);
    }

    #[tokio::test]
    async fn a_damaged_chunk_reads_as_unknown_rows_and_its_neighbours_stay() {
        let (store, _dir, _, _, id) = flushed_series().await;
        store.set_read_cache(0);
        let before = rows(&store, id, 0, 400).await;
        assert!(before.iter().all(|(_, v)| v.is_some()));

        // The chunk holding the 10 s archive's row of t=200 gets garbage.
        let slot = metrolog_protocol::rrd::archive_slot(10, 360, 200);
        let damaged = i64::from(slot / super::super::archive::chunk::CHUNK_ROWS);
        let n = sqlx::query(
            "UPDATE archive_chunks SET data = x'03ff' WHERE series_id = ? AND archive = 0 AND chunk = ?",
        )
        .bind(id)
        .bind(damaged)
        .execute(&store.pool)
        .await
        .unwrap()
        .rows_affected();
        assert_eq!(n, 1);

        let after = rows(&store, id, 0, 400).await;
        assert_eq!(after.len(), before.len());
        let row = |ts: i64| after.iter().find(|(t, _)| *t == ts).unwrap().1;
        assert_eq!(row(200), None, "the damaged chunk's rows are unknown");
        let lost = after.iter().filter(|(_, v)| v.is_none()).count();
        assert!(
            (1..=16).contains(&lost),
            "one chunk's rows lost, not {lost}"
        );
        for ((t, v), (_, was)) in after.iter().zip(&before) {
            assert!(v.is_none() || v == was, "row {t} changed");
        }
    }

    #[tokio::test]
    async fn a_batch_brings_a_down_host_back_up_once_and_a_replay_stays_a_replay() {
        let (store, _dir) = temp_store().await;
        let host = host(&store).await;
        let key = SeriesKey::new("cpu.busy_pct", Labels::new()).unwrap();
        let first = ship(&store, host, &key, 1, vec![bucket(10, 1.0)]).await;
        assert!(!first.duplicate);
        assert!(store
            .mark_silent_down(now() + 1)
            .await
            .unwrap()
            .contains(&host));
        assert_eq!(
            store.host(host).await.unwrap().unwrap().state,
            HostState::Down
        );
        // Down, then a new batch: stored, and the host is up again.
        let back = ship(&store, host, &key, 2, vec![bucket(20, 1.0)]).await;
        assert_eq!(
            (back.duplicate, back.stored, back.came_up),
            (false, 1, true)
        );
        assert_eq!(
            store.host(host).await.unwrap().unwrap().state,
            HostState::Up
        );
        // Up: the next batch is stored and changes nothing else.
        let next = ship(&store, host, &key, 3, vec![bucket(30, 1.0)]).await;
        assert_eq!(
            (next.duplicate, next.stored, next.came_up),
            (false, 1, false)
        );
        // A replay of an older batch is recognised, stores nothing, and a
        // replay from a host marked down still brings it up.
        let again = ship(&store, host, &key, 2, vec![bucket(20, 1.0)]).await;
        assert_eq!(
            (again.duplicate, again.stored, again.came_up),
            (true, 0, false)
        );
        store.mark_silent_down(now() + 1).await.unwrap();
        let replay_down = ship(&store, host, &key, 3, vec![bucket(30, 1.0)]).await;
        assert_eq!((replay_down.duplicate, replay_down.came_up), (true, true));
        // The batch id moved only with stored batches.
        let newer = ship(&store, host, &key, 4, vec![bucket(40, 1.0)]).await;
        assert_eq!((newer.duplicate, newer.stored), (false, 1));
    }

    #[tokio::test]
    async fn replayed_batch_is_not_stored_twice() {
        let (store, _dir) = temp_store().await;
        let host = host(&store).await;
        let key = SeriesKey::new("cpu.busy_pct", Labels::new()).unwrap();
        let id = BatchId {
            stream: "s1".into(),
            seq: 1,
        };
        let data = vec![(key.clone(), vec![bucket(10, 1.0), bucket(20, 2.0)])];
        let first = store
            .commit_batch(host, &id, data.clone(), Default::default(), Vec::new())
            .await
            .unwrap();
        assert_eq!(
            first,
            CommitOutcome {
                duplicate: false,
                stored: 2,
                out_of_order: 0,
                over_limit: 0,
                logs: 0,
                checks: 0,
                came_up: false,
            }
        );
        let again = store
            .commit_batch(host, &id, data.clone(), Default::default(), Vec::new())
            .await
            .unwrap();
        assert!(again.duplicate);
        let series = store.series(Some(host), Some("cpu.*")).await.unwrap();
        assert_eq!(series.len(), 1);
        assert_eq!(
            rows(&store, series[0].id, 0, 30).await,
            vec![(10, Some(1.0)), (20, Some(2.0)), (30, None)]
        );
        // A new stream (agent restarted) starts over at seq 1; a bucket it resends
        // is out of order for the archives and counted.
        let id2 = BatchId {
            stream: "s2".into(),
            seq: 1,
        };
        let next = vec![(key, vec![bucket(20, 9.0), bucket(30, 3.0)])];
        let out = store
            .commit_batch(host, &id2, next, Default::default(), Vec::new())
            .await
            .unwrap();
        assert_eq!((out.duplicate, out.stored, out.out_of_order), (false, 1, 1));
        assert_eq!(
            store.latest_values(&["cpu.busy_pct"]).await.unwrap(),
            vec![(host, "cpu.busy_pct".to_string(), 30, 3.0)]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn flushes_racing_batch_commits_lose_and_repeat_nothing() {
        // A flush reads and encodes outside the write lock and writes in
        // slices: batches committed meanwhile must neither be lost nor be
        // written twice, in memory or after a reopen.
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let t0 = 1_700_000_000;
        let series = 1200; // more than one flush slice
        let rounds = 12;
        let keys: Vec<SeriesKey> = (0..series)
            .map(|i| SeriesKey::new(&format!("m.s{i}"), Labels::new()).unwrap())
            .collect();
        let host_id = {
            let store = std::sync::Arc::new(Store::open(&url).await.unwrap());
            let host_id = host(&store).await;
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let flusher = {
                let (store, stop) = (store.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut n = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        store.flush_archives().await.unwrap();
                        n += 1;
                        tokio::task::yield_now().await;
                    }
                    n
                })
            };
            for r in 0..rounds {
                let data = keys
                    .iter()
                    .enumerate()
                    .map(|(i, k)| {
                        (
                            k.clone(),
                            vec![bucket(t0 + (r + 1) * 10, (i as i64 * 100 + r) as f64)],
                        )
                    })
                    .collect();
                let id = BatchId {
                    stream: "s1".into(),
                    seq: r as u64 + 1,
                };
                let out = store
                    .commit_batch(host_id, &id, data, Default::default(), Vec::new())
                    .await
                    .unwrap();
                assert_eq!((out.stored, out.out_of_order), (series as u64, 0));
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            assert!(flusher.await.unwrap() > 0);
            // Half flushed, the rest only in the journal at "crash" time.
            host_id
        };
        let store = Store::open(&url).await.unwrap();
        let ids = store.series(Some(host_id), None).await.unwrap();
        assert_eq!(ids.len(), series);
        for s in &ids {
            let i: i64 = s.name.trim_start_matches("m.s").parse().unwrap();
            let got = rows(&store, s.id, t0, t0 + rounds * 10).await;
            let want: Vec<(i64, Option<f64>)> = (0..rounds)
                .map(|r| (t0 + (r + 1) * 10, Some((i * 100 + r) as f64)))
                .collect();
            assert_eq!(got, want, "series {}", s.name);
        }
    }

    #[tokio::test]
    async fn flushed_and_journaled_rows_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let t0 = 1_700_000_000;
        let key = SeriesKey::new("load.1m", Labels::new()).unwrap();
        let (host_id, sid) = {
            let store = Store::open(&url).await.unwrap();
            let host_id = host(&store).await;
            let first: Vec<(i64, f64)> = (1..=100).map(|i| (t0 + i * 10, i as f64)).collect();
            let out = store
                .import_samples(host_id, &[(key.clone(), first)])
                .await
                .unwrap();
            assert_eq!(out.accepted, 100);
            let flushed = store.flush_archives().await.unwrap();
            assert_eq!((flushed.series, flushed.journal_rows), (1, 1));
            // 100 rows of 10 s, and the 1 min and 5 min rows they complete.
            assert!(flushed.rows > 100, "{flushed:?}");
            // Not flushed: only in the journal when the store goes away.
            let more: Vec<(i64, f64)> = (101..=130).map(|i| (t0 + i * 10, i as f64)).collect();
            store
                .import_samples(host_id, &[(key.clone(), more)])
                .await
                .unwrap();
            let sid = store.series(Some(host_id), None).await.unwrap()[0].id;
            (host_id, sid)
        };
        let store = Store::open(&url).await.unwrap();
        assert_eq!(store.loaded().journal_rows, 1);
        assert_eq!(store.loaded().replayed_samples, 30);
        let got = rows(&store, sid, t0, t0 + 1300).await;
        assert_eq!(got.len(), 130);
        assert!(
            got.iter()
                .enumerate()
                .all(|(i, r)| *r == (t0 + (i as i64 + 1) * 10, Some(i as f64 + 1.0))),
            "{got:?}"
        );
        // Out of order against the replayed state.
        let out = store
            .import_samples(
                host_id,
                &[(key, vec![(t0 + 1300, 1.0), (t0 + 1310, 131.0)])],
            )
            .await
            .unwrap();
        assert_eq!((out.accepted, out.out_of_order), (1, 1));
        // Removing the host drops the series from memory and disk.
        assert!(store.delete_host(host_id).await.unwrap());
        assert_eq!(store.archive_stats().series, 0);
        store.flush_archives().await.unwrap();
        let left: i64 = sqlx::query_scalar("SELECT (SELECT count(*) FROM archive_chunks) + (SELECT count(*) FROM archive_state) + (SELECT count(*) FROM archive_journal)")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(left, 0);
    }

    #[tokio::test]
    async fn deferred_writes_wait_their_delay_keep_the_journal_and_survive_a_reopen() {
        use std::time::{Duration, Instant};
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let t0 = 1_700_000_000;
        let delay = Duration::from_secs(300);
        let keys: Vec<SeriesKey> = (0..50)
            .map(|i| SeriesKey::new(&format!("m.s{i}"), Labels::new()).unwrap())
            .collect();
        let host_id = {
            let store = Store::open(&url).await.unwrap();
            let host_id = host(&store).await;
            let first: Vec<_> = keys
                .iter()
                .enumerate()
                .map(|(i, k)| (k.clone(), vec![(t0 + 10, i as f64), (t0 + 20, i as f64)]))
                .collect();
            store.import_samples(host_id, &first).await.unwrap();
            let chunks = || async {
                sqlx::query_scalar::<_, i64>("SELECT count(*) FROM archive_chunks")
                    .fetch_one(&store.pool)
                    .await
                    .unwrap()
            };
            // Nothing has waited: nothing written, the journal kept.
            let out = store
                .flush_due_archives(delay, Instant::now())
                .await
                .unwrap();
            assert_eq!((out.series, out.journal_rows), (0, 0), "{out:?}");
            assert_eq!(chunks().await, 0);
            // Half the delay: the series whose spread is short are written,
            // the others wait, and the journal row holds their samples.
            let out = store
                .flush_due_archives(delay, Instant::now() + delay * 3 / 4)
                .await
                .unwrap();
            assert!(out.series > 5 && out.series < 45, "{out:?}");
            assert_eq!(out.journal_rows, 0, "{out:?}");
            // A second batch while some series are still unwritten.
            let second: Vec<_> = keys
                .iter()
                .enumerate()
                .map(|(i, k)| (k.clone(), vec![(t0 + 30, i as f64 + 0.5)]))
                .collect();
            store.import_samples(host_id, &second).await.unwrap();
            // All of them waited: the first journal row is covered, the
            // second is not for the series that took it after their write.
            let out = store
                .flush_due_archives(delay, Instant::now() + delay * 2)
                .await
                .unwrap();
            assert_eq!((out.series, out.journal_rows), (50, 2), "{out:?}");
            assert!(chunks().await >= 50);
            host_id
        };
        // Reopened without a final flush: every sample reads back.
        let store = Store::open(&url).await.unwrap();
        let all = store.series(Some(host_id), None).await.unwrap();
        assert_eq!(all.len(), 50);
        for s in &all {
            let got = rows(&store, s.id, t0, t0 + 30).await;
            let v = s.name.trim_start_matches("m.s").parse::<f64>().unwrap();
            assert_eq!(
                got,
                vec![
                    (t0 + 10, Some(v)),
                    (t0 + 20, Some(v)),
                    (t0 + 30, Some(v + 0.5))
                ],
                "series {}",
                s.name
            );
        }
    }

    #[test]
    fn globs() {
        assert_eq!(glob_to_like("cpu.*"), "cpu.%");
        assert_eq!(glob_to_like("a_b%"), "a\\_b\\%");
    }
}

#[cfg(test)]
mod group_commit_tests {
    use crate::store::{temp_store, HostFacts, HostSource, Store};
    use metrolog_protocol::nagios::{CheckName, CheckResult, CheckStatus};
    use metrolog_protocol::{BatchId, Bucket, Labels, SeriesKey};
    use std::sync::Arc;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_batches_commit_together_and_a_bad_one_fails_alone() {
        let (store, _dir) = temp_store().await;
        let store = Arc::new(store);
        let mut hosts = Vec::new();
        for i in 0..20 {
            let facts = HostFacts {
                hostname: format!("h{i}"),
                instance_id: None,
                group: Some("g".into()),
                labels: Labels::new(),
                agent_version: None,
            };
            hosts.push(store.upsert_host(&facts, HostSource::Agent).await.unwrap());
        }
        // A host id that does not exist: its series insert violates the foreign key.
        hosts.push(999_999);
        let key = SeriesKey::new("cpu.busy_pct", Labels::new()).unwrap();
        let bucket = Bucket {
            ts: 1_700_000_010,
            avg: 1.0,
            min: 1.0,
            max: 1.0,
            last: 1.0,
            count: 10,
        };
        let tasks: Vec<_> = hosts
            .iter()
            .map(|&h| {
                let (store, key) = (store.clone(), key.clone());
                tokio::spawn(async move {
                    let id = BatchId {
                        stream: format!("s{h}"),
                        seq: 1,
                    };
                    store
                        .commit_batch(
                            h,
                            &id,
                            vec![(key, vec![bucket])],
                            Default::default(),
                            Vec::new(),
                        )
                        .await
                })
            })
            .collect();
        let mut ok = 0;
        let mut failed = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(o) => {
                    assert!(!o.duplicate);
                    assert_eq!(o.stored, 1);
                    ok += 1;
                }
                Err(_) => failed += 1,
            }
        }
        assert_eq!((ok, failed), (20, 1));
        assert_eq!(store.series(None, Some("cpu.*")).await.unwrap().len(), 20);
    }

    #[tokio::test]
    async fn heartbeats_commit_with_the_batches_queued_beside_them_and_bring_hosts_up() {
        let (store, _dir) = temp_store().await;
        let store = Arc::new(store);
        let mut hosts = Vec::new();
        for i in 0..6 {
            hosts.push(crate::store::test_host(&store, &format!("h{i}")).await);
        }
        // Every host silent: down.
        let down = store
            .mark_silent_down(crate::store::now() + 1)
            .await
            .unwrap();
        assert_eq!(down.len(), 6);
        let (mut events, _) = store.bus().subscribe();
        // One group: three heartbeats and three batches queue while the write
        // lock is held.
        let held = store.write.lock().await;
        let tasks: Vec<_> = hosts
            .iter()
            .enumerate()
            .map(|(i, &h)| {
                let store = store.clone();
                tokio::spawn(async move {
                    if i % 2 == 0 {
                        store.touch_host(h).await
                    } else {
                        ship(&store, h, 1, 1_700_000_010, "ok").await.map(|_| ())
                    }
                })
            })
            .collect();
        while store.pending.lock().unwrap().len() < hosts.len() {
            tokio::task::yield_now().await;
        }
        drop(held);
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        // All six committed in that one group, each host up again, and each
        // change published once, after the commit.
        assert!(store.pending.lock().unwrap().is_empty());
        for &h in &hosts {
            assert_eq!(
                store.host(h).await.unwrap().unwrap().state,
                crate::store::HostState::Up,
                "host {h}"
            );
        }
        let mut up = Vec::new();
        while let Ok(e) = events.try_recv() {
            if let crate::events::Event::Host(c) = &e.event {
                assert_eq!(c.change, crate::events::HostChange::Up);
                up.push(c.host_id);
            }
        }
        up.sort_unstable();
        assert_eq!(up, hosts);
    }

    /// A batch of `host` holding one bucket at `ts`, one log record and one
    /// check named `check`.
    async fn ship(
        store: &Arc<Store>,
        host: i64,
        seq: u64,
        ts: i64,
        check: &str,
    ) -> crate::store::Result<crate::store::CommitOutcome> {
        let key = SeriesKey::new("cpu.busy_pct", Labels::new()).unwrap();
        let bucket = Bucket {
            ts,
            avg: seq as f64,
            min: 0.0,
            max: 9.0,
            last: 1.0,
            count: 10,
        };
        let log = metrolog_protocol::syslog::parse(
            format!("<13>1 - h{host} app - - - batch {seq}").as_bytes(),
            chrono::Utc::now(),
            65536,
        );
        let check = CheckResult {
            name: CheckName::parse(check).unwrap(),
            status: CheckStatus::Ok,
            output: "fine".into(),
            long_output: String::new(),
            perfdata: String::new(),
            ts,
            duration_ms: 1,
            attempt: 1,
            max_attempts: 3,
        };
        let id = BatchId {
            stream: "s".into(),
            seq,
        };
        store
            .commit_batch(
                host,
                &id,
                vec![(key, vec![bucket])],
                Arc::new(vec![log]),
                vec![check],
            )
            .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_failing_after_its_journal_row_takes_nothing_with_it_and_the_pool_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Arc::new(Store::open(&url).await.unwrap());
        let mut hosts = Vec::new();
        for i in 0..4 {
            hosts.push(crate::store::test_host(&store, &format!("h{i}")).await);
        }
        // A check named "boom" fails its insert: after the batch's series,
        // journal row and log records were written.
        sqlx::raw_sql(
            "CREATE TRIGGER boom BEFORE INSERT ON check_results WHEN NEW.name = 'boom'
             BEGIN SELECT RAISE(ABORT, 'boom'); END",
        )
        .execute(&store.pool)
        .await
        .unwrap();
        let t0 = 1_700_000_000;
        // One group: the batches queue while the write lock is held.
        let held = store.write.lock().await;
        let tasks: Vec<_> = hosts
            .iter()
            .enumerate()
            .map(|(i, &h)| {
                let store = store.clone();
                let check = if i == 1 { "boom" } else { "ok" };
                tokio::spawn(async move { ship(&store, h, 1, t0 + 10, check).await })
            })
            .collect();
        while store.pending.lock().unwrap().len() < hosts.len() {
            tokio::task::yield_now().await;
        }
        drop(held);
        for (i, task) in tasks.into_iter().enumerate() {
            match task.await.unwrap() {
                Ok(o) => {
                    assert_ne!(i, 1);
                    assert_eq!((o.duplicate, o.stored, o.logs, o.checks), (false, 1, 1, 1));
                }
                Err(e) => {
                    assert_eq!(i, 1);
                    assert!(e.to_string().contains("boom"), "{e}");
                    assert!(!e.is_disk_full());
                }
            }
        }
        // Nothing of the failed batch stayed: its sample is not in memory
        // (the same bucket is taken, not out of order), its batch id not
        // recorded, its log record and check not stored. More commits than
        // the pool has connections: none was left inside a transaction.
        sqlx::query("DROP TRIGGER boom")
            .execute(&store.pool)
            .await
            .unwrap();
        let again = ship(&store, hosts[1], 1, t0 + 10, "ok").await.unwrap();
        assert_eq!(
            (again.duplicate, again.stored, again.out_of_order),
            (false, 1, 0)
        );
        for seq in 2..=6 {
            for &h in &hosts {
                let o = ship(&store, h, seq, t0 + 10 * seq as i64, "ok")
                    .await
                    .unwrap();
                assert_eq!((o.duplicate, o.stored), (false, 1));
            }
        }
        let records: i64 = sqlx::query_scalar("SELECT sum(n) FROM log_blocks")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(records, 4 * 6);
        let checks = store.check_results(None).await.unwrap();
        assert_eq!(checks.len(), 4);
        assert!(checks.iter().all(|c| c.name == "ok"));
        // The journal holds exactly what memory applied: reopened, every
        // host reads the same six samples.
        drop(store);
        let store = Store::open(&url).await.unwrap();
        for s in store.series(None, Some("cpu.*")).await.unwrap() {
            let f = store
                .archive_rows(s.id, 10, t0, t0 + 60)
                .await
                .unwrap()
                .unwrap();
            let values: Vec<Option<f64>> = f
                .rows
                .iter()
                .map(|r| r.value(metrolog_protocol::rrd::Cf::Avg))
                .collect();
            let want: Vec<Option<f64>> = (1..=6).map(|v| Some(v as f64)).collect();
            assert_eq!(values, want, "host {}", s.hostname);
        }
    }
}

#[cfg(test)]
mod series_limit_tests {
    use crate::store::{temp_store, SeriesRefusals, Store};
    use metrolog_protocol::{BatchId, Bucket, Labels, SeriesKey};

    async fn host(store: &Store, name: &str) -> i64 {
        crate::store::test_host(store, name).await
    }

    fn batch(from: usize, n: usize, ts: i64) -> Vec<(SeriesKey, Vec<Bucket>)> {
        (from..from + n)
            .map(|i| {
                let key = SeriesKey::new(&format!("flood.s{i}"), Labels::new()).unwrap();
                let b = Bucket {
                    ts,
                    avg: 1.0,
                    min: 1.0,
                    max: 1.0,
                    last: 1.0,
                    count: 10,
                };
                (key, vec![b])
            })
            .collect()
    }

    fn id(seq: u64) -> BatchId {
        BatchId {
            stream: "s".into(),
            seq,
        }
    }

    /// A host sending 100 000 series gets the cap: the rest is refused and
    /// counted, its existing series go on, and other hosts are not starved
    /// until the global cap.
    #[tokio::test]
    async fn a_host_sending_100_000_series_gets_the_cap_not_the_memory() {
        let (store, _dir) = temp_store().await;
        store.set_series_limits(1_000, 1_500);
        let flood = host(&store, "flood").await;
        let t = 1_700_000_010;
        let out = store
            .commit_batch(
                flood,
                &id(1),
                batch(0, 100_000, t),
                Default::default(),
                Vec::new(),
            )
            .await
            .unwrap();
        assert_eq!((out.stored, out.over_limit), (1_000, 99_000));
        assert_eq!(store.archive_stats().series, 1_000);
        let stored = store.series(Some(flood), Some("flood.*")).await.unwrap();
        assert_eq!(stored.len(), 1_000, "refused series leave no row either");
        assert_eq!(
            store.series_refusals(),
            SeriesRefusals {
                per_host: 99_000,
                total: 0,
                samples: 99_000
            }
        );
        // The next batch: the 1 000 it has go on, new ones are still refused.
        let out = store
            .commit_batch(
                flood,
                &id(2),
                batch(0, 1_200, t + 10),
                Default::default(),
                Vec::new(),
            )
            .await
            .unwrap();
        assert_eq!((out.stored, out.over_limit), (1_000, 200));
        // Another host gets its series until the global cap (1 500).
        let other = host(&store, "other").await;
        let out = store
            .commit_batch(
                other,
                &id(1),
                batch(0, 800, t),
                Default::default(),
                Vec::new(),
            )
            .await
            .unwrap();
        assert_eq!((out.stored, out.over_limit), (500, 300));
        assert_eq!(store.archive_stats().series, 1_500);
        assert_eq!(store.series_refusals().total, 300);
        // Imports (and so Graphite) are capped the same way.
        let imported = host(&store, "graphite-1").await;
        let series: Vec<(SeriesKey, Vec<(i64, f64)>)> = (0..10)
            .map(|i| {
                let key = SeriesKey::new(&format!("carbon.s{i}"), Labels::new()).unwrap();
                (key, vec![(t, 1.0)])
            })
            .collect();
        let out = store.import_samples(imported, &series).await.unwrap();
        assert_eq!((out.accepted, out.over_limit), (0, 10));
        assert!(out.per_series.iter().all(|a| a.over_limit == 1));
        // Removing the flooding host frees its share.
        store.set_series_limits(1_000, 1_500);
        store.delete_host(flood).await.unwrap();
        let out = store.import_samples(imported, &series).await.unwrap();
        assert_eq!((out.accepted, out.over_limit), (10, 0));
    }
}
