//! Fleet housekeeping: hosts that fall silent go `down`, hosts gone longer than
//! `hosts.expire_after` are removed with their series (archives included), and the
//! archive flusher moves completed rows from memory to the database. Archives are
//! bounded by construction, so metrics need no retention sweep.

use crate::config::ServerConfig;
use crate::store::{now, Store};
use crate::telemetry::ServerMetrics;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub async fn run(
    store: Arc<Store>,
    config: Arc<ServerConfig>,
    metrics: Arc<ServerMetrics>,
    mut stop: watch::Receiver<bool>,
) {
    let liveness = config.liveness_timeout().as_secs() as i64;
    // Check often enough that `down` (and the heal a scaling policy fires
    // on it) shows within a second of the timeout: the sweep is one indexed
    // UPDATE that finds nothing in the usual case.
    let tick = Duration::from_millis((liveness as u64 * 1000 / 6).clamp(250, 1000));
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
        match store.expire_groups(now() - expire).await {
            Ok(names) if !names.is_empty() => {
                metrics.groups_expired.add(names.len() as u64);
                tracing::info!(groups = ?names, "groups without members removed with their series");
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "group expiry failed"),
        }
        let keep = config.retention.alarms.max_age.as_secs() as i64;
        match store.prune_alarm_history(now() - keep).await {
            Ok(n) if n > 0 => tracing::info!(
                transitions = n,
                "alarm history older than retention.alarms.max_age removed"
            ),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "alarm history pruning failed"),
        }
        if let Err(e) = store.prune_silences(now() - keep).await {
            tracing::error!(error = %e, "silence pruning failed");
        }
        match store.expire_group_series(now() - expire).await {
            Ok(n) if n > 0 => {
                metrics.group_series_expired.add(n);
                tracing::info!(
                    series = n,
                    "group series fed by no member since hosts.expire_after removed"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "group series expiry failed"),
        }
    }
}

/// Every `interval`, writes the archive rows completed since the last flush and
/// trims the journal; returns on `stop` (the caller flushes once more after the
/// last request). A failed flush is logged, counted and retried at the next tick:
/// the journal still holds everything.
pub async fn flush_archives(
    store: Arc<Store>,
    interval: Duration,
    write_delay: Duration,
    metrics: Arc<ServerMetrics>,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        flush_once(&store, write_delay, &metrics).await;
    }
}

/// One flush of the series that have waited `write_delay` (zero: all of
/// them), counted in `/metrics`.
pub async fn flush_once(store: &Store, write_delay: Duration, metrics: &ServerMetrics) {
    match store
        .flush_due_archives(write_delay, std::time::Instant::now())
        .await
    {
        Ok(out) => {
            metrics.archive_flushes.inc();
            metrics.archive_flushed_rows.add(out.rows);
            metrics.archive_corrupt_chunks.add(out.corrupt_chunks);
            if out.series > 0 {
                tracing::debug!(
                    series = out.series,
                    rows = out.rows,
                    chunks = out.chunks,
                    journal_rows = out.journal_rows,
                    "archives flushed"
                );
            }
        }
        Err(e) => {
            metrics.archive_flush_failures.inc();
            tracing::error!(error = %e, "archive flush failed; the journal keeps the samples, retrying at the next tick");
        }
    }
    let stats = store.archive_stats();
    metrics.archive_series.set(stats.series);
    metrics.archive_pending_rows.set(stats.pending_rows);
    let reads = store.read_cache_stats();
    metrics.archive_read_cache_hits.set(reads.hits);
    metrics.archive_read_cache_misses.set(reads.misses);
    metrics.archive_read_cache_bytes.set(reads.bytes);
    let refused = store.series_refusals();
    metrics.series_refused_per_host.set(refused.per_host);
    metrics.series_refused_total.set(refused.total);
    metrics.series_refused_samples.set(refused.samples);
}
