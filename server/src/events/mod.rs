//! The one event path: every commit publishes here, after its transaction
//! committed; evaluators (alarms, scaling) subscribe. Nothing polls the
//! database for new data.
//!
//! Publishing is done by the [`Store`](crate::store::Store) itself, in each
//! commit method (agent batches, imports — which Graphite and the group
//! recorder use —, host enrollment, heartbeats, leaves, the liveness sweep,
//! expiry and removal), so a new commit path cannot forget it. What each
//! event carries is enough to evaluate without reading the store again.
//!
//! Two lanes:
//! - the control lane ([`Bus::subscribe`]): samples, check results, host
//!   changes, group rounds, in commit order, numbered by [`Envelope::seq`];
//! - the log-record lane ([`Bus::logs`]): committed log records in chunks,
//!   numbered by record (the live tail of `GET /api/v1/logs/stream` and the
//!   log rules read it). Records stay in a lane of their own because they come
//!   two to three orders of magnitude more often than anything else (150 000
//!   lines/s of syslog): they are published only when somebody listens, in
//!   chunks, and a slow live-tail client must not make an alarm evaluator lag.
//!
//! Both lanes are bounded broadcast rings. A subscriber that falls behind by
//! more than the ring loses the oldest events and is told so
//! (`RecvError::Lagged`); it then catches up from the store (the alarm
//! evaluator re-reads the windows of its rules), so a lag costs time, never a
//! missed transition. `seq` lets a consumer say how far it got.

use crate::logs::feed::LogFeed;
use metrolog_protocol::nagios::CheckResult;
use metrolog_protocol::{Bucket, Labels, SeriesKey};
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// Events kept for a subscriber that is behind.
pub const BUS_CAPACITY: usize = 8192;

/// Where committed samples came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleSource {
    /// An agent batch (10 s buckets).
    Agent,
    /// `POST /api/v1/import`, Graphite, or the group recorder (one value per
    /// point: avg = min = max = last, count 1).
    Import,
}

/// Samples committed for one host (or one group's own series: `host_id` is
/// then the group's owner row).
#[derive(Debug, Clone)]
pub struct SamplesCommitted {
    pub host_id: i64,
    pub source: SampleSource,
    /// Buckets per series, oldest first, as committed.
    pub series: Vec<(SeriesKey, Vec<Bucket>)>,
}

/// Check results committed for one host.
#[derive(Debug, Clone)]
pub struct ChecksCommitted {
    pub host_id: i64,
    pub results: Vec<CheckResult>,
}

/// A host's membership changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostChange {
    /// Enrolled, or reported again after being `down` or `left`.
    Up,
    /// Silent for longer than the liveness timeout.
    Down,
    /// Left gracefully (SIGTERM of its agent, or an operator).
    Left,
    /// Deleted with its series (by an operator, or expired).
    Removed,
}

/// What is known of a host when it changes (facts at enrollment).
#[derive(Debug, Clone, PartialEq)]
pub struct HostInfo {
    pub id: i64,
    pub hostname: String,
    pub instance_id: Option<String>,
    pub group: Option<String>,
    pub labels: Labels,
    /// Imported and syslog-only hosts never go `down`.
    pub passive: bool,
}

#[derive(Debug, Clone)]
pub struct HostChanged {
    pub host_id: i64,
    pub change: HostChange,
    /// The store's time of the change (unix seconds): the `state_since`
    /// written in the same transaction.
    pub at: i64,
    /// The host's last sign of life before the change.
    pub last_seen: i64,
    /// Facts, when the change carries them (enrollment).
    pub info: Option<HostInfo>,
}

/// The group recorder recorded a round (its samples were published as
/// [`Event::Samples`] of the groups' owner rows just before).
#[derive(Debug, Clone)]
pub struct GroupRound {
    /// The round's time (unix seconds, on the base step).
    pub ts: i64,
    pub groups: Vec<String>,
}

/// Descriptions of a host's series stored (what a Munin plugin's `config`
/// says of its fields): the ranges a `limits = "series"` rule judges by.
#[derive(Debug, Clone)]
pub struct SeriesMetaCommitted {
    pub host_id: i64,
    /// Series, each with its `warning` and `critical` as the source wrote them.
    pub series: Vec<(SeriesKey, Option<String>, Option<String>)>,
}

#[derive(Debug, Clone)]
pub enum Event {
    Samples(Arc<SamplesCommitted>),
    Checks(Arc<ChecksCommitted>),
    Host(HostChanged),
    GroupRound(GroupRound),
    SeriesMeta(Arc<SeriesMetaCommitted>),
}

/// One published event, numbered in publication order.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub seq: u64,
    pub event: Event,
    /// When it was published, right after its commit (evaluation latency
    /// is measured from here).
    pub published: std::time::Instant,
}

#[derive(Debug, Clone)]
pub struct Bus {
    tx: broadcast::Sender<Arc<Envelope>>,
    /// Published so far; the lock keeps `seq` in send order.
    seq: Arc<Mutex<u64>>,
    logs: LogFeed,
}

impl Default for Bus {
    fn default() -> Self {
        Self::new()
    }
}

impl Bus {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(BUS_CAPACITY);
        Self {
            tx,
            seq: Arc::new(Mutex::new(0)),
            logs: LogFeed::new(),
        }
    }

    /// Subscribes to the control lane; returns the receiver and the `seq` of
    /// the first event it will see.
    pub fn subscribe(&self) -> (broadcast::Receiver<Arc<Envelope>>, u64) {
        let seq = self.seq.lock().expect("bus lock poisoned");
        (self.tx.subscribe(), *seq + 1)
    }

    /// The log-record lane.
    pub fn logs(&self) -> &LogFeed {
        &self.logs
    }

    /// Whether anybody listens on the control lane (publishers skip building
    /// events nobody reads).
    pub fn has_subscribers(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// How many listen on the control lane (tests wait for their evaluators).
    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }

    /// Publishes one event. Call only after the transaction that made it true
    /// committed.
    pub fn publish(&self, event: Event) {
        let mut seq = self.seq.lock().expect("bus lock poisoned");
        if self.tx.receiver_count() == 0 {
            return;
        }
        *seq += 1;
        // Err only when every receiver went away meanwhile.
        let _ = self.tx.send(Arc::new(Envelope {
            seq: *seq,
            event,
            published: std::time::Instant::now(),
        }));
    }

    /// Publishes a host change.
    pub fn host(&self, host_id: i64, change: HostChange, at: i64, last_seen: i64) {
        self.publish(Event::Host(HostChanged {
            host_id,
            change,
            at,
            last_seen,
            info: None,
        }));
    }
}
