//! The metric ingest path: validate an agent batch, commit it, then tell every
//! component that reacts to new data (one in-process path: later the alarm and
//! scaling evaluators subscribe here).

use crate::logs::feed::LogFeed;
use crate::store::{Store, StoreError};
use crate::telemetry::ServerMetrics;
use metrolog_protocol::{Batch, BatchId, Bucket, SeriesKey};
use std::sync::Arc;
use tokio::sync::broadcast;

/// How far in the future a bucket may be stamped (agent clock skew).
pub const MAX_FUTURE_SECS: i64 = 600;
/// Largest bucket step accepted, in seconds.
pub const MAX_STEP: u32 = 86_400;

/// What was committed, as published to subscribers.
#[derive(Debug, Clone)]
pub struct CommittedBatch {
    pub host_id: i64,
    pub batch: BatchId,
    /// Series touched, with the newest bucket end of each.
    pub series: Vec<(SeriesKey, i64)>,
}

/// Result of one batch for the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestOutcome {
    pub duplicate: bool,
    pub accepted: u64,
    pub rejected: u64,
}

#[derive(Debug, Clone)]
pub struct Ingestor {
    store: Arc<Store>,
    metrics: Arc<ServerMetrics>,
    events: broadcast::Sender<Arc<CommittedBatch>>,
    /// Live log tail: committed agent logs are published here too.
    log_feed: LogFeed,
}

impl Ingestor {
    pub fn new(store: Arc<Store>, metrics: Arc<ServerMetrics>) -> Self {
        // Subscribers that fall more than this many batches behind lose the
        // oldest ones (and see `Lagged`), so a slow reader never grows memory.
        let (events, _) = broadcast::channel(1024);
        Self {
            store,
            metrics,
            events,
            log_feed: LogFeed::new(),
        }
    }

    /// The live feed of committed log records (agent batches and syslog).
    pub fn log_feed(&self) -> &LogFeed {
        &self.log_feed
    }

    /// Subscribe to committed batches.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<CommittedBatch>> {
        self.events.subscribe()
    }

    /// Validates and commits a batch for `host_id`. Buckets that cannot be stored
    /// (non-finite values, timestamps out of range, a bad step, not after the
    /// series' last bucket) are counted and left out; the rest of the batch is
    /// journaled for the archives before this returns.
    pub async fn ingest(
        &self,
        host_id: i64,
        batch: Batch,
        now: i64,
    ) -> Result<IngestOutcome, StoreError> {
        let mut rejected = 0u64;
        let mut series = Vec::with_capacity(batch.metrics.len());
        for s in batch.metrics {
            if s.step == 0 || s.step > MAX_STEP {
                self.metrics
                    .buckets_rejected_step
                    .add(s.buckets.len() as u64);
                rejected += s.buckets.len() as u64;
                continue;
            }
            let mut keep: Vec<Bucket> = Vec::with_capacity(s.buckets.len());
            for b in s.buckets {
                if ![b.avg, b.min, b.max, b.last].iter().all(|v| v.is_finite()) || b.count == 0 {
                    self.metrics.buckets_rejected_non_finite.inc();
                    rejected += 1;
                } else if b.ts <= 0 || b.ts > now + MAX_FUTURE_SECS {
                    self.metrics.buckets_rejected_time.inc();
                    rejected += 1;
                } else {
                    keep.push(b);
                }
            }
            if !keep.is_empty() {
                series.push((s.key, keep));
            }
        }
        // What subscribers hear about, taken before the series move into the commit.
        let touched: Vec<(SeriesKey, i64)> = series
            .iter()
            .map(|(k, b)| (k.clone(), b.iter().map(|b| b.ts).max().unwrap_or(0)))
            .collect();
        let logs = Arc::new(batch.logs);
        let outcome = self
            .store
            .commit_batch(host_id, &batch.id, series, logs.clone())
            .await?;
        self.metrics.batches.inc();
        if outcome.duplicate {
            self.metrics.batches_duplicate.inc();
            return Ok(IngestOutcome {
                duplicate: true,
                accepted: 0,
                rejected: 0,
            });
        }
        self.metrics.buckets_stored.add(outcome.stored);
        self.metrics
            .buckets_rejected_order
            .add(outcome.out_of_order);
        self.metrics.log_records.add(outcome.logs);
        self.log_feed.publish_agent(host_id, &logs);
        // No subscriber is not an error.
        let _ = self.events.send(Arc::new(CommittedBatch {
            host_id,
            batch: batch.id,
            series: touched,
        }));
        Ok(IngestOutcome {
            duplicate: false,
            accepted: outcome.stored,
            rejected: rejected + outcome.out_of_order,
        })
    }
}
