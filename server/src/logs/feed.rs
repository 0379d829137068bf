//! The live feed of committed log records, behind `GET /api/v1/logs/stream`.
//!
//! One bounded `tokio::sync::broadcast` for the whole server: the syslog
//! writer and the agent-batch path publish what they committed, each live-tail
//! client subscribes. A client that does not keep up loses the oldest batches
//! (it is told how many records it missed) instead of holding memory: the ring
//! holds at most [`FEED_CAPACITY`] × [`FEED_CHUNK`] records whatever the
//! clients do.

use metrolog_protocol::syslog::{LogRecord, LogSource};
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// Batches kept for subscribers that are behind.
pub const FEED_CAPACITY: usize = 128;
/// Records per published batch.
pub const FEED_CHUNK: usize = 256;

/// One committed record.
#[derive(Debug, Clone)]
pub struct LogEvent {
    /// The stored id (absent for agent records, whose ids the batch commit
    /// does not report).
    pub id: Option<i64>,
    pub host_id: Option<i64>,
    pub source: LogSource,
    pub record: LogRecord,
}

/// Records committed together, numbered: `seq` is the count of records
/// published before this batch, so a lagging subscriber can say exactly how
/// many it missed.
#[derive(Debug)]
pub struct FeedBatch {
    pub seq: u64,
    pub events: Vec<LogEvent>,
}

#[derive(Debug, Clone)]
pub struct LogFeed {
    tx: broadcast::Sender<Arc<FeedBatch>>,
    /// Records published so far; the lock also keeps `seq` in send order.
    published: Arc<Mutex<u64>>,
}

impl Default for LogFeed {
    fn default() -> Self {
        Self::new()
    }
}

impl LogFeed {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(FEED_CAPACITY);
        Self {
            tx,
            published: Arc::new(Mutex::new(0)),
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<FeedBatch>> {
        self.tx.subscribe()
    }

    /// Subscribes and says where in the feed the receiver starts (the `seq`
    /// of the first batch it will see, unless it lags).
    pub fn subscribe_at(&self) -> (broadcast::Receiver<Arc<FeedBatch>>, u64) {
        let published = self.published.lock().expect("feed lock poisoned");
        (self.tx.subscribe(), *published)
    }

    /// Whether anybody listens (publishing is skipped when nobody does).
    pub fn has_subscribers(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// Publishes committed records, in chunks of [`FEED_CHUNK`].
    pub fn publish(&self, events: Vec<LogEvent>) {
        if events.is_empty() || !self.has_subscribers() {
            return;
        }
        let mut published = self.published.lock().expect("feed lock poisoned");
        let mut events = events.into_iter().peekable();
        while events.peek().is_some() {
            let chunk: Vec<LogEvent> = events.by_ref().take(FEED_CHUNK).collect();
            let n = chunk.len() as u64;
            // No receiver left is not an error.
            let _ = self.tx.send(Arc::new(FeedBatch {
                seq: *published,
                events: chunk,
            }));
            *published += n;
        }
    }

    /// The agent-batch path: records of one host, committed.
    pub fn publish_agent(&self, host_id: i64, records: &[LogRecord]) {
        if records.is_empty() || !self.has_subscribers() {
            return;
        }
        self.publish(
            records
                .iter()
                .map(|r| LogEvent {
                    id: None,
                    host_id: Some(host_id),
                    source: LogSource::Agent,
                    record: r.clone(),
                })
                .collect(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    #[tokio::test]
    async fn a_slow_subscriber_learns_how_many_records_it_missed() {
        let feed = LogFeed::new();
        let mut slow = feed.subscribe();
        let rec = LogRecord::whole("x".into(), Utc::now());
        for _ in 0..FEED_CAPACITY + 10 {
            feed.publish_agent(1, std::slice::from_ref(&rec));
        }
        let mut expected = 0;
        match slow.recv().await {
            Err(broadcast::error::RecvError::Lagged(n)) => expected += n,
            other => panic!("expected a lag, got {other:?}"),
        }
        assert_eq!(expected, 10);
        let next = slow.recv().await.unwrap();
        assert_eq!(next.seq, 10, "seq counts the records before the batch");
    }
}
