//! The full-text indexer: follows the committed log records on the index
//! file's own connection (see [`crate::store::logs::LogIndex`]), so the
//! postings are built on another core than the one the writer commits on.
//!
//! It wakes when the syslog writer commits, and at least every [`POLL`]
//! (agent batches commit through the metrics path, which does not wake it),
//! then indexes in rounds of [`INDEX_CHUNK`] records until it is level. The
//! same rounds rebuild a whole index (a new or upgraded database) oldest
//! first, without holding ingest up: the writer waits on the indexer only
//! once it has caught up and then fell more than `MAX_INDEX_LAG` behind.

use crate::store::logs::INDEX_CHUNK;
use crate::store::Store;
use crate::telemetry::ServerMetrics;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Longest the indexer sleeps with nothing to wake it.
pub const POLL: Duration = Duration::from_millis(50);
/// Pause after a failed round, so a broken index file is not retried in a
/// tight loop.
const RETRY: Duration = Duration::from_secs(1);

pub async fn run(store: Arc<Store>, metrics: Arc<ServerMetrics>, mut stop: watch::Receiver<bool>) {
    loop {
        let mut pause = POLL;
        loop {
            if *stop.borrow() {
                return;
            }
            match store.index_logs(INDEX_CHUNK).await {
                Ok(round) => {
                    metrics.logs_index_lag.set(store.log_index_lag());
                    if round == Default::default() {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "indexing log records failed; q= searches miss the newer ones until it works again");
                    pause = RETRY;
                    break;
                }
            }
        }
        tokio::select! {
            _ = store.logs_committed(), if pause == POLL => {}
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use metrolog_protocol::syslog::parse;

    #[tokio::test]
    async fn the_lag_gauge_counts_records_waiting_for_the_index_and_returns_to_zero() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Arc::new(Store::open(&url).await.unwrap());
        let metrics = Arc::new(ServerMetrics::default());
        let recs: Vec<_> = (0..300)
            .map(|i| parse(format!("<13>lag probe {i}").as_bytes(), Utc::now(), 65536))
            .collect();
        crate::store::insert_test_logs(&store, None, &recs).await;
        assert_eq!(store.log_index_lag(), 300);

        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(store.clone(), metrics.clone(), stop_rx));
        // The commit woke the indexer; its rounds are awaited, not slept on.
        let mut rounds = 0;
        while store.log_index_lag() > 0 || metrics.logs_index_lag.get() > 0 {
            store.logs_indexed().await;
            rounds += 1;
            assert!(rounds < 100, "the indexer does not catch up");
        }
        let found = store
            .logs(&crate::store::logs::LogFilter {
                search: crate::logs::search::Search::parse("probe").unwrap(),
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(found.len(), 300);
        assert!(metrics
            .render(&[])
            .contains("\nmetrolog_logs_index_lag_records 0\n"));
        let _ = stop_tx.send(true);
        task.await.unwrap();
    }
}
