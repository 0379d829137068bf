//! Check results waiting for the next batch, with their perfdata samples.
//!
//! The sampler takes them when it seals a batch, so they ride the same
//! batches as the metrics (queued, retried until acknowledged). Between two
//! seals they wait here, bounded: when full, the oldest result is dropped
//! and the drop counted (series `agent.checks.dropped`).

use metrolog_protocol::nagios::CheckResult;
use metrolog_protocol::{Bucket, SeriesBuckets, SeriesKey, SeriesMeta};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Results kept between two seals, at most.
pub const DEFAULT_CAPACITY: usize = 1000;
/// Results in one batch, at most (16 KiB of output each: a few MiB).
pub const MAX_PER_BATCH: usize = 200;
/// Series descriptions waiting for a batch, at most; more are dropped and
/// counted (`meta_dropped`): a source sends them again when its series
/// change.
pub const MAX_META: usize = 20_000;
/// Series descriptions in one batch, at most.
pub const MAX_META_PER_BATCH: usize = 2_000;

/// One run: its result and its samples, taken at `result.ts`.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingRun {
    pub result: CheckResult,
    pub samples: Vec<(SeriesKey, f64)>,
    /// Samples the source stamped with their own time (unix seconds), as
    /// Munin's `EPOCH:value`.
    pub timed: Vec<(i64, SeriesKey, f64)>,
}

#[derive(Debug)]
pub struct CheckBook {
    runs: Mutex<VecDeque<PendingRun>>,
    meta: Mutex<VecDeque<SeriesMeta>>,
    capacity: usize,
    /// Results dropped because the book was full, since start.
    pub dropped: AtomicU64,
    /// Perfdata items skipped (unreadable or over the cap), since start.
    pub perf_skipped: AtomicU64,
    /// Runs done since start.
    pub runs_done: AtomicU64,
    /// Series descriptions dropped because [`MAX_META`] were waiting.
    pub meta_dropped: AtomicU64,
}

impl Default for CheckBook {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl CheckBook {
    pub fn new(capacity: usize) -> Self {
        Self {
            runs: Mutex::new(VecDeque::new()),
            meta: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            dropped: AtomicU64::new(0),
            perf_skipped: AtomicU64::new(0),
            runs_done: AtomicU64::new(0),
            meta_dropped: AtomicU64::new(0),
        }
    }

    /// Queues descriptions of series for the next batches (Munin's graph
    /// and field attributes).
    pub fn push_meta(&self, meta: Vec<SeriesMeta>) {
        let mut q = self.meta.lock().unwrap_or_else(|p| p.into_inner());
        let room = MAX_META.saturating_sub(q.len());
        let over = meta.len().saturating_sub(room);
        q.extend(meta.into_iter().take(room));
        drop(q);
        if over > 0 {
            self.meta_dropped.fetch_add(over as u64, Ordering::Relaxed);
            tracing::warn!(
                "{over} series description(s) dropped: {MAX_META} already wait for a batch"
            );
        }
    }

    /// The oldest descriptions waiting, at most [`MAX_META_PER_BATCH`].
    pub fn take_meta(&self) -> Vec<SeriesMeta> {
        let mut q = self.meta.lock().unwrap_or_else(|p| p.into_inner());
        let n = q.len().min(MAX_META_PER_BATCH);
        q.drain(..n).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<PendingRun>> {
        // Every operation is one VecDeque call: a poisoned lock is consistent.
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn push(&self, run: PendingRun) {
        self.runs_done.fetch_add(1, Ordering::Relaxed);
        let dropped = {
            let mut runs = self.lock();
            let dropped = if runs.len() >= self.capacity {
                runs.pop_front()
            } else {
                None
            };
            runs.push_back(run);
            dropped
        };
        if let Some(old) = dropped {
            let total = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(
                "check results waiting for a batch are full ({}): dropped the oldest, of {} ({total} dropped since start)",
                self.capacity,
                old.result.name
            );
        }
    }

    pub fn has_pending(&self) -> bool {
        !self.lock().is_empty()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes the oldest results (at most [`MAX_PER_BATCH`]) with their
    /// samples as metric series: one bucket per run at the run's time, the
    /// buckets of a series oldest first (two runs in the same second share
    /// a bucket).
    pub fn take_batch(&self) -> (Vec<CheckResult>, Vec<SeriesBuckets>) {
        let runs: Vec<PendingRun> = {
            let mut q = self.lock();
            let n = q.len().min(MAX_PER_BATCH);
            q.drain(..n).collect()
        };
        let mut points: BTreeMap<SeriesKey, Vec<(i64, f64)>> = BTreeMap::new();
        let mut results = Vec::with_capacity(runs.len());
        for run in runs {
            let ts = run.result.ts;
            for (key, v) in run.samples {
                points.entry(key).or_default().push((ts, v));
            }
            for (at, key, v) in run.timed {
                points.entry(key).or_default().push((at, v));
            }
            results.push(run.result);
        }
        let mut series: BTreeMap<SeriesKey, Vec<Bucket>> = BTreeMap::new();
        for (key, mut pts) in points {
            // Stable: two samples of one second keep their order.
            pts.sort_by_key(|(ts, _)| *ts);
            let buckets = series.entry(key).or_default();
            for (ts, v) in pts {
                match buckets.last_mut() {
                    Some(b) if b.ts == ts => {
                        let n = f64::from(b.count);
                        b.avg = (b.avg * n + v) / (n + 1.0);
                        b.min = b.min.min(v);
                        b.max = b.max.max(v);
                        b.last = v;
                        b.count += 1;
                    }
                    _ => buckets.push(Bucket {
                        ts,
                        avg: v,
                        min: v,
                        max: v,
                        last: v,
                        count: 1,
                    }),
                }
            }
        }
        let metrics = series
            .into_iter()
            .map(|(key, buckets)| SeriesBuckets {
                key,
                step: crate::downsample::STEP,
                buckets,
            })
            .collect();
        (results, metrics)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrolog_protocol::nagios::{CheckName, CheckStatus};
    use metrolog_protocol::Labels;

    fn run(name: &str, ts: i64, v: f64) -> PendingRun {
        PendingRun {
            result: CheckResult {
                name: CheckName::parse(name).unwrap(),
                status: CheckStatus::Ok,
                output: "OK".into(),
                long_output: String::new(),
                perfdata: format!("t={v}"),
                ts,
                duration_ms: 1,
                attempt: 1,
                max_attempts: 3,
            },
            samples: vec![(
                SeriesKey::new(&format!("check.{name}.t"), Labels::new()).unwrap(),
                v,
            )],
            timed: Vec::new(),
        }
    }

    #[test]
    fn results_and_buckets_in_order() {
        let book = CheckBook::new(10);
        book.push(run("a", 100, 1.0));
        book.push(run("a", 101, 2.0));
        book.push(run("a", 101, 4.0));
        book.push(run("b", 101, 5.0));
        let (results, metrics) = book.take_batch();
        assert_eq!(results.len(), 4);
        assert_eq!(metrics.len(), 2);
        let a = &metrics[0];
        assert_eq!(a.key.name.as_str(), "check.a.t");
        let ts: Vec<i64> = a.buckets.iter().map(|b| b.ts).collect();
        assert_eq!(ts, [100, 101]);
        assert_eq!(
            (a.buckets[1].avg, a.buckets[1].count, a.buckets[1].last),
            (3.0, 2, 4.0)
        );
        assert!(!book.has_pending());
    }

    #[test]
    fn timed_samples_take_their_place_in_time() {
        let book = CheckBook::new(10);
        let mut r = run("m", 200, 5.0);
        let key = r.samples[0].0.clone();
        r.timed = vec![(100, key.clone(), 1.0), (300, key.clone(), 3.0)];
        book.push(r);
        let (_, metrics) = book.take_batch();
        let pts: Vec<(i64, f64)> = metrics[0].buckets.iter().map(|b| (b.ts, b.last)).collect();
        assert_eq!(pts, [(100, 1.0), (200, 5.0), (300, 3.0)]);
    }

    #[test]
    fn bounded_drops_oldest_and_counts() {
        let book = CheckBook::new(2);
        for ts in 1..=5 {
            book.push(run("a", ts, 1.0));
        }
        assert_eq!(book.dropped.load(Ordering::Relaxed), 3);
        let (results, _) = book.take_batch();
        let ts: Vec<i64> = results.iter().map(|r| r.ts).collect();
        assert_eq!(ts, [4, 5]);
    }

    #[test]
    fn a_batch_takes_at_most_its_share() {
        let book = CheckBook::new(MAX_PER_BATCH * 2);
        for ts in 0..(MAX_PER_BATCH as i64 + 5) {
            book.push(run("a", ts + 1, 1.0));
        }
        assert_eq!(book.take_batch().0.len(), MAX_PER_BATCH);
        assert_eq!(book.take_batch().0.len(), 5);
        assert!(book.take_batch().0.is_empty());
    }
}
