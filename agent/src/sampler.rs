//! The sampling loop: runs the collectors every sample interval, consolidates
//! into 10 s buckets and, every ship interval, seals the closed buckets into one
//! batch for the shipper. The first batch is sealed as soon as the first bucket
//! closes, so a new host shows data within seconds.

use crate::collect::Collectors;
use crate::downsample::Consolidator;
use crate::ship::{Intervals, Outbox};
use metrolog_protocol::{Batch, BatchId};
use std::path::PathBuf;
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
    outbox: Outbox,
    intervals: watch::Receiver<Intervals>,
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
        outbox: Outbox,
        intervals: watch::Receiver<Intervals>,
    ) -> Self {
        Self {
            collectors: Some(Collectors::standard(&procfs)),
            procfs,
            consolidator: Consolidator::default(),
            stream,
            next_seq: 1,
            last_seal: None,
            outbox,
            intervals,
        }
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
        self.seal(unix_now());
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
        let now = unix_now();
        let Intervals { sample, ship } = *self.intervals.borrow();
        // Half a sample interval of slack, so tick jitter does not push a seal
        // to the next round.
        let due = self
            .last_seal
            .is_none_or(|t| t.elapsed() + sample / 2 >= ship);
        if due && self.consolidator.has_closed(now) {
            self.seal(now);
        }
    }

    /// Puts the closed buckets in a batch on the queue.
    fn seal(&mut self, now: f64) {
        let metrics = self.consolidator.take_closed(now);
        if metrics.is_empty() {
            return;
        }
        let batch = Batch {
            id: BatchId {
                stream: self.stream.clone(),
                seq: self.next_seq,
            },
            sent_at: now as i64,
            logs: Vec::new(),
            metrics,
        };
        self.next_seq += 1;
        self.last_seal = Some(Instant::now());
        let (dropped, total) = {
            let mut q = self.outbox.lock();
            (q.push(batch), q.dropped())
        };
        if let Some(id) = dropped {
            tracing::warn!(
                "queue full: dropped the oldest batch {id} ({total} dropped since start)"
            );
        }
        self.outbox.wake.notify_one();
    }
}
