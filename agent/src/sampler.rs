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
        }
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
        self.seal(unix_now(), false).await;
    }

    async fn round(&mut self) {
        let wall = unix_now();
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
        let now = unix_now();
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

    /// Puts the closed buckets, the pending log records and check results in
    /// batches on the queue: one batch, or several when the records do not
    /// fit in one. With `only_full_logs`, seals only batches the records
    /// fill, and no metrics or checks.
    async fn seal(&mut self, now: f64, only_full_logs: bool) {
        let mut metrics = if only_full_logs {
            Vec::new()
        } else {
            self.consolidator.take_closed(now)
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
