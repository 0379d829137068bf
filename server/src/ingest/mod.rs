//! The agent-batch ingest path: validate a batch, commit it (the store then
//! publishes what committed on the event bus, see `events`), and feed the
//! live log tail.

use crate::logs::feed::LogFeed;
use crate::store::{Store, StoreError};
use crate::telemetry::ServerMetrics;
use metrolog_protocol::nagios::result::MAX_OUTPUT_BYTES;
use metrolog_protocol::{Batch, Bucket};
use std::sync::Arc;

/// How far in the future a bucket may be stamped (agent clock skew).
pub const MAX_FUTURE_SECS: i64 = 600;
/// Largest bucket step accepted, in seconds.
pub const MAX_STEP: u32 = 86_400;

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
}

impl Ingestor {
    pub fn new(store: Arc<Store>, metrics: Arc<ServerMetrics>) -> Self {
        Self { store, metrics }
    }

    /// The live feed of committed log records (agent batches and syslog):
    /// the record lane of the store's event bus.
    pub fn log_feed(&self) -> &LogFeed {
        self.store.bus().logs()
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
        let mut checks = batch.checks;
        checks.retain(|c| {
            let ok = c.ts > 0 && c.ts <= now + MAX_FUTURE_SECS && c.max_attempts >= 1;
            if !ok {
                self.metrics.check_results_rejected.inc();
            }
            ok
        });
        for c in &mut checks {
            // The agent caps output already; an older or foreign one may not.
            let total = c.output.len() + c.long_output.len() + c.perfdata.len();
            if total > MAX_OUTPUT_BYTES {
                self.metrics.check_outputs_truncated.inc();
                truncate_at_char(&mut c.long_output, MAX_OUTPUT_BYTES / 2);
                truncate_at_char(&mut c.perfdata, MAX_OUTPUT_BYTES / 4);
                truncate_at_char(&mut c.output, MAX_OUTPUT_BYTES / 4);
            }
        }
        let logs = Arc::new(batch.logs);
        let series_meta = batch.series_meta;
        let outcome = self
            .store
            .commit_batch(host_id, &batch.id, series, logs.clone(), checks)
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
        self.metrics.check_results.add(outcome.checks);
        self.log_feed().publish_agent(host_id, &logs);
        // Descriptions are the latest state, not history: stored after the
        // batch, and a failure here costs only the description (the source
        // sends it again when its plugin's config runs again).
        if let Err(e) = self.store.upsert_series_meta(host_id, &series_meta).await {
            tracing::warn!(host_id, error = %e, "series descriptions of a batch not stored");
        }
        Ok(IngestOutcome {
            duplicate: false,
            accepted: outcome.stored,
            rejected: rejected + outcome.out_of_order + outcome.over_limit,
        })
    }
}

/// Cuts `s` to at most `max` bytes, on a character boundary.
fn truncate_at_char(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}
