//! The sampling loop: runs the collectors every sample interval, consolidates
//! into 10 s buckets and, every ship interval, seals the closed buckets into one
//! batch for the shipper. The first batch is sealed as soon as the first bucket
//! closes, so a new host shows data within seconds.
//!
//! Check results (and their perfdata series) done since the last batch ride
//! in the next one, as the metrics do.
//!
//! Log records read since the last batch ride in the next one; when more wait
//! than one batch may carry, they fill several, and a full batch of them is
//! sealed without waiting for the ship interval.

use crate::checks::CheckBook;
use crate::collect::Collectors;
use crate::downsample::Consolidator;
use crate::logs::LogBook;
use crate::scrape::SampleBook;
use crate::ship::{Handoff, Intervals};
use metrolog_protocol::{Batch, BatchId, Labels, SeriesKey};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

pub struct Sampler {
    procfs: PathBuf,
    collectors: Option<Collectors>,
    consolidator: Consolidator,
    stream: String,
    next_seq: u64,
    last_seal: Option<Instant>,
    handoff: Handoff,
    intervals: watch::Receiver<Intervals>,
    logs: Option<Arc<LogBook>>,
    checks: Option<Arc<CheckBook>>,
    /// Whether the spool's series are reported (see `sample_spool_stats`).
    spool_active: bool,
    /// Spool drops already told to the server: (logs, buckets, batches).
    reported_drops: (u64, u64, u64),
    samples: Option<Arc<SampleBook>>,
    /// The wall clock (unix seconds); injected by tests.
    clock: Box<dyn Fn() -> f64 + Send + Sync>,
    /// Newest bucket end sealed: a bucket at or before it can only come
    /// from a clock that went back, and is dropped (see [`Sampler::seal`]).
    sealed_through: i64,
    /// Buckets dropped so.
    clock_dropped: u64,
    /// Whether the last buckets taken were dropped so (to log once a jump).
    clock_behind: bool,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn ticker(every: Duration) -> tokio::time::Interval {
    let mut t = tokio::time::interval(every);
    // A slow round (a hung mount) delays the next one instead of causing a burst.
    t.set_missed_tick_behavior(MissedTickBehavior::Delay);
    t
}

impl Sampler {
    pub fn new(
        procfs: PathBuf,
        stream: String,
        handoff: Handoff,
        intervals: watch::Receiver<Intervals>,
    ) -> Self {
        Self {
            collectors: Some(Collectors::standard(&procfs)),
            procfs,
            consolidator: Consolidator::default(),
            stream,
            next_seq: 1,
            last_seal: None,
            handoff,
            intervals,
            logs: None,
            checks: None,
            spool_active: false,
            reported_drops: (0, 0, 0),
            samples: None,
            clock: Box::new(unix_now),
            sealed_through: i64::MIN,
            clock_dropped: 0,
            clock_behind: false,
        }
    }

    /// Reads the wall clock through `clock` (unix seconds) instead of the
    /// system's: tests make it jump.
    pub fn with_clock(mut self, clock: impl Fn() -> f64 + Send + Sync + 'static) -> Self {
        self.clock = Box::new(clock);
        self
    }

    /// Ships the log records of `book` in this sampler's batches.
    pub fn with_logs(mut self, book: Arc<LogBook>) -> Self {
        self.logs = Some(book);
        self
    }

    /// Ships the check results of `book` in this sampler's batches.
    pub fn with_checks(mut self, book: Arc<CheckBook>) -> Self {
        self.checks = Some(book);
        self
    }

    /// Consolidates the samples of `book` (scraped exporters) with the
    /// collectors' own.
    pub fn with_samples(mut self, book: Arc<SampleBook>) -> Self {
        self.samples = Some(book);
        self
    }

    /// Samples until `stop` turns true, then seals what is closed. The bucket
    /// still open at that moment is not shipped: it would reach the server
    /// incomplete, under a timestamp the next run of the agent may use again.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut tick = ticker(self.intervals.borrow().sample);
        loop {
            tokio::select! {
                r = stop.changed() => {
                    if r.is_err() || *stop.borrow() {
                        break;
                    }
                }
                _ = tick.tick() => self.round().await,
                changed = self.intervals.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    tick = ticker(self.intervals.borrow().sample);
                }
            }
        }
        let now = (self.clock)();
        self.seal(now, false).await;
    }

    async fn round(&mut self) {
        let wall = (self.clock)();
        let mono = std::time::Instant::now();
        let mut collectors = match self.collectors.take() {
            Some(c) => c,
            None => Collectors::standard(&self.procfs),
        };
        let done = tokio::task::spawn_blocking(move || {
            let samples = collectors.sample(mono);
            (collectors, samples)
        })
        .await;
        let samples = match done {
            Ok((collectors, samples)) => {
                self.collectors = Some(collectors);
                samples
            }
            Err(e) => {
                // Collectors are rebuilt next round (their rate state is lost).
                tracing::error!("collectors panicked: {e}");
                return;
            }
        };
        if samples.refused > 0 {
            tracing::debug!(
                "{} sample(s) with an invalid series key dropped",
                samples.refused
            );
        }
        for s in &samples.samples {
            self.consolidator.add(&s.key, wall, s.value);
        }
        if let Some(book) = &self.samples {
            // Taken at this round's time: a scrape that ended just before a
            // bucket closed still lands in a bucket not yet shipped.
            for (key, value) in book.drain() {
                self.consolidator.add(&key, wall, value);
            }
            let dropped = book.dropped.load(Ordering::Relaxed);
            if dropped > 0 {
                if let Ok(key) = SeriesKey::new("agent.scrape.dropped", Labels::new()) {
                    self.consolidator.add(&key, wall, dropped as f64);
                }
            }
        }
        self.sample_log_stats(wall);
        if let Some(drops) = self.sample_spool_stats(wall) {
            self.handoff.drops_reported(drops).await;
        }
        self.sample_check_stats(wall);
        let now = (self.clock)();
        let Intervals { sample, ship } = *self.intervals.borrow();
        // Half a sample interval of slack, so tick jitter does not push a seal
        // to the next round.
        let due = self
            .last_seal
            .is_none_or(|t| t.elapsed() + sample / 2 >= ship);
        let logs_pending = self.logs.as_ref().is_some_and(|b| b.has_pending());
        let checks_pending = self.checks.as_ref().is_some_and(|b| b.has_pending());
        if due && (self.consolidator.has_closed(now) || logs_pending || checks_pending) {
            self.seal(now, false).await;
        } else if self.logs.as_ref().is_some_and(|b| b.batch_full()) {
            self.seal(now, true).await;
        }
    }

    /// The spool's gauges and counters, as series of this host, from the
    /// first time it held a backlog or dropped something; and, once a server
    /// answers again, a log record telling what was dropped meanwhile
    /// (then returns the drops reported so far, for the spool to forget).
    fn sample_spool_stats(&mut self, wall: f64) -> Option<(u64, u64, u64)> {
        let s = self.handoff.stats();
        let (logs, buckets, batches) = s.drops();
        let counters = [
            ("agent.spool.bytes", s.bytes.load(Ordering::Relaxed)),
            ("agent.spool.batches", s.batches.load(Ordering::Relaxed)),
            (
                "agent.spool.write_errors",
                s.write_errors.load(Ordering::Relaxed),
            ),
            (
                "agent.spool.corrupt_files",
                s.corrupt_files.load(Ordering::Relaxed),
            ),
            (
                "agent.spool.consolidated",
                s.consolidated.load(Ordering::Relaxed),
            ),
            ("agent.spool.dropped_logs", logs),
            ("agent.spool.dropped_buckets", buckets),
            ("agent.spool.dropped_batches", batches),
        ];
        self.spool_active |= counters[1].1 > 1 || counters[2..].iter().any(|(_, v)| *v > 0);
        if !self.spool_active {
            return None;
        }
        for (name, value) in counters {
            if let Ok(key) = SeriesKey::new(name, Labels::new()) {
                self.consolidator.add(&key, wall, value as f64);
            }
        }
        let dropped = (logs, buckets, batches);
        if dropped != self.reported_drops && s.connected.load(Ordering::Relaxed) {
            let (l0, b0, n0) = self.reported_drops;
            let mut rec = metrolog_protocol::syslog::LogRecord::whole(
                format!(
                    "metrolog-agent spool dropped {} log record(s), {} metric bucket(s) and {} batch(es) while no server acknowledged (spool.max_bytes, spool.log_share; since start: {logs}, {buckets}, {batches})",
                    logs - l0,
                    buckets - b0,
                    batches - n0
                ),
                chrono::Utc::now(),
            );
            rec.app_name = Some("metrolog-agent".into());
            rec.severity = Some(metrolog_protocol::syslog::Severity::Warning);
            tracing::warn!("{}", rec.message);
            if let Some(book) = &self.logs {
                book.try_push(rec);
            }
            self.reported_drops = dropped;
            return Some(dropped);
        }
        None
    }

    /// The log pipeline's counters, as series of this host (cumulative since
    /// start, so a rate is one subtraction away).
    fn sample_log_stats(&mut self, wall: f64) {
        let Some(book) = &self.logs else { return };
        let s = &book.stats;
        if !s.active.load(Ordering::Relaxed) {
            return;
        }
        let (_, pending, in_flight) = book.sizes();
        for (name, value) in [
            ("agent.logs.accepted", s.accepted.load(Ordering::Relaxed)),
            ("agent.logs.shipped", s.shipped.load(Ordering::Relaxed)),
            ("agent.logs.filtered", s.filtered.load(Ordering::Relaxed)),
            ("agent.logs.dropped", s.dropped_full.load(Ordering::Relaxed)),
            ("agent.logs.paused", s.paused.load(Ordering::Relaxed)),
            ("agent.logs.lost", s.lost.load(Ordering::Relaxed)),
            ("agent.logs.backlog_bytes", (pending + in_flight) as u64),
        ] {
            if let Ok(key) = SeriesKey::new(name, Labels::new()) {
                self.consolidator.add(&key, wall, value as f64);
            }
        }
    }

    /// The checks' counters, as series of this host (cumulative since start).
    fn sample_check_stats(&mut self, wall: f64) {
        let Some(book) = &self.checks else { return };
        let runs = book.runs_done.load(Ordering::Relaxed);
        if runs == 0 {
            return;
        }
        for (name, value) in [
            ("agent.checks.runs", runs),
            ("agent.checks.dropped", book.dropped.load(Ordering::Relaxed)),
            (
                "agent.checks.perf_skipped",
                book.perf_skipped.load(Ordering::Relaxed),
            ),
        ] {
            if let Ok(key) = SeriesKey::new(name, Labels::new()) {
                self.consolidator.add(&key, wall, value as f64);
            }
        }
    }

    /// The consolidator's closed buckets, but those at or before the newest
    /// bucket already sealed: the wall clock went back (an NTP step, a
    /// manual change), and the server would refuse them (a series' buckets
    /// only go forward) or, within a step, hold two rows for one time.
    /// Dropped, counted (`agent.clock.dropped_buckets`) and logged; rows
    /// resume once the clock passes the newest one again. Rates are not
    /// affected: they are computed on the monotonic clock. A clock that
    /// jumps forward leaves a gap and nothing else.
    fn take_closed(&mut self, now: f64) -> Vec<metrolog_protocol::SeriesBuckets> {
        let mut metrics = self.consolidator.take_closed(now);
        let through = self.sealed_through;
        let mut dropped = 0u64;
        for s in &mut metrics {
            let before = s.buckets.len();
            s.buckets.retain(|b| b.ts > through);
            dropped += (before - s.buckets.len()) as u64;
        }
        metrics.retain(|s| !s.buckets.is_empty());
        if dropped > 0 {
            if !self.clock_behind {
                tracing::warn!(
                    "the system clock went back (now {now:.0}, rows already sealed up to {through}): dropped {dropped} bucket(s) the server would refuse; rows resume once the clock passes {through} (counted in agent.clock.dropped_buckets)"
                );
            } else {
                tracing::debug!("clock behind the last sealed bucket: dropped {dropped} bucket(s)");
            }
            self.clock_dropped += dropped;
        }
        self.clock_behind = dropped > 0;
        if let Some(newest) = metrics
            .iter()
            .filter_map(|s| s.buckets.last().map(|b| b.ts))
            .max()
        {
            self.sealed_through = self.sealed_through.max(newest);
        }
        if self.clock_dropped > 0 {
            if let Ok(key) = SeriesKey::new("agent.clock.dropped_buckets", Labels::new()) {
                // In the next bucket: this one's buckets are taken already.
                self.consolidator.add(
                    &key,
                    now.max(through as f64 + 0.001),
                    self.clock_dropped as f64,
                );
            }
        }
        metrics
    }

    /// Puts the closed buckets, the pending log records and check results in
    /// batches on the queue: one batch, or several when the records do not
    /// fit in one. With `only_full_logs`, seals only batches the records
    /// fill, and no metrics or checks.
    async fn seal(&mut self, now: f64, only_full_logs: bool) {
        let mut metrics = if only_full_logs {
            Vec::new()
        } else {
            self.take_closed(now)
        };
        loop {
            let logs = match &self.logs {
                Some(book) if !only_full_logs || book.batch_full() => {
                    book.take_batch(self.next_seq)
                }
                _ => Vec::new(),
            };
            let mut series_meta = Vec::new();
            let checks = match &self.checks {
                Some(book) if !only_full_logs => {
                    let (results, series) = book.take_batch();
                    metrics.extend(series);
                    results
                }
                _ => Vec::new(),
            };
            if metrics.is_empty() && logs.is_empty() && checks.is_empty() {
                // Series descriptions travel in batches of their own: a
                // server older than `series_meta` refuses the batch (its
                // fields are strict), and then loses only the descriptions.
                series_meta = match &self.checks {
                    Some(book) if !only_full_logs => book.take_meta(),
                    _ => Vec::new(),
                };
                if series_meta.is_empty() {
                    return;
                }
            }
            let batch = Batch {
                id: BatchId {
                    stream: self.stream.clone(),
                    seq: self.next_seq,
                },
                sent_at: now as i64,
                logs,
                checks,
                metrics: std::mem::take(&mut metrics),
                series_meta,
            };
            self.next_seq += 1;
            if !only_full_logs {
                self.last_seal = Some(Instant::now());
            }
            self.handoff.push(batch).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::atomic::AtomicI64;

    /// The wall clock jumps back by 35 s, then forward by an hour, while
    /// the agent samples the real /proc (the clock is injected: the system's
    /// cannot be changed in a test). No series gets a bucket at or before
    /// one already sealed (the server would refuse it, or hold two rows),
    /// no rate goes negative, sampling goes on through both jumps, and the
    /// dropped buckets are counted.
    #[tokio::test]
    async fn clock_jumps_neither_duplicate_rows_nor_make_rates_negative() {
        static NOW_MS: AtomicI64 = AtomicI64::new(0);
        let set = |t: i64| NOW_MS.store(t * 1000, Ordering::SeqCst);
        let handoff = Handoff::in_memory(10_000);
        let (_tx, rx) = watch::channel(Intervals {
            sample: Duration::from_secs(1),
            ship: Duration::ZERO,
        });
        let mut sampler = Sampler::new("/proc".into(), "clock".into(), handoff.clone(), rx)
            .with_clock(|| NOW_MS.load(Ordering::SeqCst) as f64 / 1000.0);
        let base = 1_800_000_000;
        let mut rounds = Vec::new();
        rounds.extend(base..base + 60); // steady
        rounds.extend(base + 25..base + 90); // 35 s back
        rounds.extend(base + 3690..base + 3720); // an hour forward
        for t in rounds {
            set(t);
            sampler.round().await;
            // Rates need time between readings on the monotonic clock.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut last: HashMap<String, i64> = HashMap::new();
        let mut newest = 0;
        let mut dropped_reported = 0.0f64;
        while let Some(batch) = handoff.front().await {
            for s in &batch.metrics {
                let name = s.key.to_string();
                for b in &s.buckets {
                    if let Some(prev) = last.get(&name) {
                        assert!(b.ts > *prev, "{name}: bucket {} after {prev}", b.ts);
                    }
                    last.insert(name.clone(), b.ts);
                    newest = newest.max(b.ts);
                    if name.contains("rate") || name.starts_with("cpu.") {
                        assert!(b.min >= 0.0, "{name} negative at {}: {b:?}", b.ts);
                    }
                    if name.starts_with("agent.clock.dropped_buckets") {
                        dropped_reported = dropped_reported.max(b.max);
                    }
                }
            }
            handoff.settle(&batch.id, true).await;
        }
        assert!(
            last.get("load.1m").is_some_and(|t| *t > base + 60 + 3600),
            "sampling went on after both jumps: {last:?}"
        );
        assert!(newest >= base + 3710);
        assert!(sampler.clock_dropped > 0, "the stale buckets were dropped");
        assert!(dropped_reported > 0.0, "and reported as a series");
    }
}
