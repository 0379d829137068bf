//! The one writer of received syslog records: receivers hand it parsed
//! records through a bounded channel; it resolves each sender to a host
//! (cached in memory, not a query per line), stores many records per
//! transaction, and publishes what it committed to the live feed.
//!
//! Backpressure: TCP receivers wait for room (the sender's TCP window then
//! fills, as with any slow syslog server); the UDP receiver cannot wait, so
//! it drops the datagrams that find the channel full and counts them.

use super::feed::{LogEvent, LogFeed};
use crate::store::logs::NewLog;
use crate::store::Store;
use crate::telemetry::ServerMetrics;
use metrolog_protocol::syslog::{LogRecord, LogSource};
use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Chunks (one per read or burst of datagrams) the channel holds.
pub const QUEUE_CHUNKS: usize = 256;
/// Most records committed in one transaction.
pub const MAX_BATCH: usize = 20_000;
/// The host cache is dropped this often, so renamed or deleted hosts are
/// looked up again.
const HOST_CACHE_TTL: Duration = Duration::from_secs(300);
const HOST_CACHE_MAX: usize = 50_000;

/// A received record and where it came from.
#[derive(Debug)]
pub struct Incoming {
    pub record: LogRecord,
    pub source: LogSource,
    pub peer: IpAddr,
}

/// The receivers' end of the channel.
#[derive(Debug, Clone)]
pub struct LogSink {
    tx: mpsc::Sender<Vec<Incoming>>,
    metrics: Arc<ServerMetrics>,
}

impl LogSink {
    /// Waits for room (TCP). `false` once the writer is gone.
    pub async fn send(&self, chunk: Vec<Incoming>) -> bool {
        if chunk.is_empty() {
            return true;
        }
        let n = chunk.len() as u64;
        if self.tx.send(chunk).await.is_err() {
            self.metrics.syslog_dropped_shutdown.add(n);
            return false;
        }
        true
    }

    /// Never waits (UDP): a full channel drops the chunk, counted.
    pub fn try_send(&self, chunk: Vec<Incoming>) {
        if chunk.is_empty() {
            return;
        }
        let n = chunk.len() as u64;
        match self.tx.try_send(chunk) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.metrics.syslog_dropped_queue_full.add(n)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.metrics.syslog_dropped_shutdown.add(n)
            }
        }
    }
}

/// Starts the writer. It ends once every [`LogSink`] is dropped and what
/// they sent is committed (graceful shutdown).
pub fn spawn(
    store: Arc<Store>,
    feed: LogFeed,
    metrics: Arc<ServerMetrics>,
) -> (LogSink, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(QUEUE_CHUNKS);
    let sink = LogSink {
        tx,
        metrics: metrics.clone(),
    };
    let mut writer = Writer {
        store,
        feed,
        metrics,
        hosts: HashMap::new(),
        hosts_since: tokio::time::Instant::now(),
    };
    let task = tokio::spawn(async move { writer.run(rx).await });
    (sink, task)
}

struct Writer {
    store: Arc<Store>,
    feed: LogFeed,
    metrics: Arc<ServerMetrics>,
    /// Sender name → host id (`None`: over the syslog host cap).
    hosts: HashMap<String, Option<i64>>,
    hosts_since: tokio::time::Instant,
}

impl Writer {
    async fn run(&mut self, mut rx: mpsc::Receiver<Vec<Incoming>>) {
        while let Some(first) = rx.recv().await {
            let mut batch = first;
            // Whatever queued up while the last commit ran goes in this one.
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(more) => batch.extend(more),
                    Err(_) => break,
                }
            }
            self.write(batch).await;
        }
    }

    async fn write(&mut self, batch: Vec<Incoming>) {
        let n = batch.len() as u64;
        if self.hosts_since.elapsed() > HOST_CACHE_TTL || self.hosts.len() > HOST_CACHE_MAX {
            self.hosts.clear();
            self.hosts_since = tokio::time::Instant::now();
        }
        let keys: Vec<Cow<'_, str>> = batch.iter().map(host_key).collect();
        let mut result = self.commit(&batch, &keys).await;
        if result.is_err() {
            // A cached host may have been deleted since (foreign key): look
            // every sender up again and retry once.
            self.hosts.clear();
            result = self.commit(&batch, &keys).await;
        }
        match result {
            Ok((ids, host_ids)) => {
                self.metrics.syslog_stored.add(n);
                if self.feed.has_subscribers() {
                    let events = batch
                        .into_iter()
                        .zip(ids)
                        .zip(host_ids)
                        .map(|((inc, id), host_id)| LogEvent {
                            id: Some(id),
                            host_id,
                            source: inc.source,
                            record: inc.record,
                        })
                        .collect();
                    self.feed.publish(events);
                }
            }
            Err(e) => {
                self.metrics.syslog_dropped_write_error.add(n);
                tracing::error!(error = %e, records = n, "storing syslog records failed; they are lost");
            }
        }
    }

    async fn commit(
        &mut self,
        batch: &[Incoming],
        keys: &[Cow<'_, str>],
    ) -> Result<(Vec<i64>, Vec<Option<i64>>), crate::store::StoreError> {
        let mut missing: Vec<String> = keys
            .iter()
            .filter(|k| !self.hosts.contains_key(k.as_ref()))
            .map(|k| k.to_string())
            .collect();
        missing.sort_unstable();
        missing.dedup();
        if !missing.is_empty() {
            let ids = self.store.syslog_hosts(&missing).await?;
            for (name, id) in missing.into_iter().zip(ids) {
                if id.is_none() {
                    tracing::warn!(sender = %name, "too many syslog-only hosts; records of new senders are stored without a host");
                }
                self.hosts.insert(name, id);
            }
        }
        let host_ids: Vec<Option<i64>> = keys
            .iter()
            .map(|k| self.hosts.get(k.as_ref()).copied().flatten())
            .collect();
        let rows: Vec<NewLog<'_>> = batch
            .iter()
            .zip(&host_ids)
            .map(|(inc, host_id)| NewLog {
                host_id: *host_id,
                record: &inc.record,
                source: inc.source,
            })
            .collect();
        let mut seen: Vec<i64> = host_ids.iter().flatten().copied().collect();
        seen.sort_unstable();
        seen.dedup();
        let ids = self.store.insert_logs(&rows, &seen).await?;
        Ok((ids, host_ids))
    }
}

/// The host a record is filed under: the hostname it claims when that looks
/// like a host name, else the sender's address. Borrowed in the common case:
/// this runs for every record, on the writer's critical path.
fn host_key(inc: &Incoming) -> Cow<'_, str> {
    match inc.record.hostname.as_deref() {
        Some(h) if plausible_hostname(h) => Cow::Borrowed(h),
        _ => Cow::Owned(inc.peer.to_string()),
    }
}

fn plausible_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use metrolog_protocol::syslog::parse;

    #[test]
    fn senders_are_named_by_a_plausible_hostname_else_their_address() {
        let peer: IpAddr = "10.1.2.3".parse().unwrap();
        let inc = |line: &str| Incoming {
            record: parse(line.as_bytes(), Utc::now(), 65536),
            source: LogSource::SyslogUdp,
            peer,
        };
        assert_eq!(host_key(&inc("<13>Feb 22 16:45:20 web-1 app: x")), "web-1");
        assert_eq!(host_key(&inc("random bytes")), "10.1.2.3");
        assert!(!plausible_hostname("a<script>"));
    }
}
