//! Log retention: records received longer ago than `retention.logs.max_age`
//! are deleted, then the oldest records until the total is under
//! `retention.logs.max_bytes`. Deletes go in small chunks, each its own
//! transaction, so the writer gets the write lock between them and ingest
//! never stalls for long.

use crate::config::RetentionSection;
use crate::store::Store;
use crate::telemetry::ServerMetrics;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Blocks deleted per statement (up to 2 048 records each).
pub const CHUNK: i64 = 64;
/// How often retention runs.
const TICK: Duration = Duration::from_secs(10);
/// The running byte total is recounted from the table this often (records
/// removed with their host are not seen by the running total).
const RECOUNT: Duration = Duration::from_secs(6 * 3600);

pub async fn run(
    store: Arc<Store>,
    policy: RetentionSection,
    metrics: Arc<ServerMetrics>,
    mut stop: watch::Receiver<bool>,
) {
    let max_age_us = policy.logs.max_age.as_micros().min(i64::MAX as u128) as i64;
    let max_bytes = policy.logs.max_bytes.min(i64::MAX as u64) as i64;
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // (bytes counted, largest id counted), recounted from zero periodically.
    let mut total = 0i64;
    let mut counted_to = 0i64;
    let mut recount_at = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        if tokio::time::Instant::now() >= recount_at {
            total = 0;
            counted_to = 0;
            recount_at = tokio::time::Instant::now() + RECOUNT;
        }
        match store.log_bytes_after(counted_to).await {
            Ok((bytes, max_id)) => {
                total += bytes;
                counted_to = max_id;
            }
            Err(e) => {
                tracing::error!(error = %e, "counting log bytes failed");
                continue;
            }
        }
        let cutoff = chrono::Utc::now()
            .timestamp_micros()
            .saturating_sub(max_age_us);
        loop {
            if *stop.borrow() {
                return;
            }
            match store.prune_logs_received_before(cutoff, CHUNK).await {
                Ok((0, _)) => break,
                Ok((n, bytes)) => {
                    metrics.logs_pruned_age.add(n);
                    total -= bytes;
                    tokio::task::yield_now().await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "log retention by age failed");
                    break;
                }
            }
        }
        while total > max_bytes {
            if *stop.borrow() {
                return;
            }
            match store.prune_oldest_logs(total - max_bytes, CHUNK).await {
                Ok((0, _)) => {
                    total = 0;
                    break;
                }
                Ok((n, bytes)) => {
                    metrics.logs_pruned_size.add(n);
                    total -= bytes;
                    tokio::task::yield_now().await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "log retention by size failed");
                    break;
                }
            }
        }
    }
}
