//! Fleet housekeeping: hosts that fall silent go `down`, hosts gone longer than
//! `hosts.expire_after` are removed with their series, and raw points older than
//! their retention are deleted in small chunks so ingest never stalls.

use crate::config::ServerConfig;
use crate::store::{now, Store};
use crate::telemetry::ServerMetrics;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Points deleted per statement by retention.
const PRUNE_CHUNK: i64 = 5_000;

pub async fn run(
    store: Arc<Store>,
    config: Arc<ServerConfig>,
    metrics: Arc<ServerMetrics>,
    mut stop: watch::Receiver<bool>,
) {
    let liveness = config.liveness_timeout().as_secs() as i64;
    // Check often enough that `down` shows within a fraction of the timeout.
    let tick = Duration::from_secs((liveness as u64 / 6).clamp(1, 5));
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_slow = None::<tokio::time::Instant>;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        match store.mark_silent_down(now() - liveness).await {
            Ok(ids) if !ids.is_empty() => {
                metrics.hosts_marked_down.add(ids.len() as u64);
                tracing::warn!(hosts = ?ids, "hosts silent for more than {liveness} s are down");
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "liveness sweep failed"),
        }
        if last_slow.is_some_and(|t| t.elapsed() < Duration::from_secs(60)) {
            continue;
        }
        last_slow = Some(tokio::time::Instant::now());
        let expire = config.hosts.expire_after.as_secs() as i64;
        match store.expire_hosts(now() - expire).await {
            Ok(ids) if !ids.is_empty() => {
                metrics.hosts_expired.add(ids.len() as u64);
                tracing::info!(hosts = ?ids, "expired hosts removed with their series");
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "host expiry failed"),
        }
        let cutoff = now() - config.retention.raw_points.max_age.as_secs() as i64;
        loop {
            match store.prune_points(cutoff, PRUNE_CHUNK).await {
                Ok(n) => {
                    metrics.points_pruned.add(n);
                    if n < PRUNE_CHUNK as u64 {
                        break;
                    }
                    // Let ingest take the write lock between chunks.
                    tokio::task::yield_now().await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "point retention failed");
                    break;
                }
            }
        }
    }
}
