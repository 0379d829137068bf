//! The log records between their source and the server's acknowledgement.
//!
//! Sources (the tailer, the local receiver) push records; the sampler takes
//! them into batches; the shipper reports each batch's fate. The backlog is
//! bounded in bytes over both stages (read but not yet in a batch, in a batch
//! not yet acknowledged), so an unreachable server costs bounded memory: the
//! tailer stops reading (the lines wait on disk) and the local receiver drops
//! and counts.
//!
//! A record read from a file carries its [`Origin`]: the file (a "slot", see
//! `tail`) and the offset just past the line. When a batch is acknowledged,
//! the furthest offset of each slot in it becomes committed, and the tailer
//! writes it to disk; a restart resumes from there.

use metrolog_protocol::syslog::LogRecord;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Records per batch, at most.
pub const BATCH_RECORDS: usize = 20_000;
/// Estimated uncompressed JSON bytes of the records of one batch, at most:
/// well below the server's 16 MiB body limit, which applies after
/// decompression.
pub const BATCH_BYTES: usize = 5 << 20;

/// Where a file line came from: its file's slot and the offset just past it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub slot: u64,
    pub end: u64,
}

/// What was counted since start (read by the sampler as `agent.logs.*` series).
#[derive(Debug, Default)]
pub struct LogStats {
    /// Records put in the backlog.
    pub accepted: AtomicU64,
    /// Records dropped by `[logs.filter]`.
    pub filtered: AtomicU64,
    /// Local receiver messages dropped because the backlog was full.
    pub dropped_full: AtomicU64,
    /// Tailer rounds that stopped reading because the backlog was full
    /// (`logs.max_backlog_bytes`): the files' offsets stop advancing and
    /// their lines wait on disk, nothing is dropped.
    pub paused: AtomicU64,
    /// Records lost in batches the ship queue dropped for space.
    pub lost: AtomicU64,
    /// Records the server acknowledged.
    pub shipped: AtomicU64,
    /// Whether logs were ever read (by local configuration or the server's
    /// settings): the counters are reported from then on, not by agents that
    /// read no logs.
    pub active: AtomicBool,
}

#[derive(Debug)]
struct Pending {
    record: LogRecord,
    origin: Option<Origin>,
    bytes: usize,
}

#[derive(Debug, Default)]
struct Flight {
    bytes: usize,
    records: u64,
    /// Furthest offset per slot in this batch.
    marks: HashMap<u64, u64>,
    /// `[start, end)` index ranges of the batch's records read from files.
    files: Vec<(u32, u32)>,
}

#[derive(Debug, Default)]
struct Inner {
    pending: VecDeque<Pending>,
    pending_bytes: usize,
    /// Batches sealed and not yet settled, by sequence number.
    flights: BTreeMap<u64, Flight>,
    flight_bytes: usize,
    /// Committed offsets not yet picked up by the tailer.
    acked: HashMap<u64, u64>,
    /// Spool position the committed offsets cover, not yet picked up.
    through: Option<u64>,
}

/// The shared backlog (see the module docs).
#[derive(Debug)]
pub struct LogBook {
    inner: Mutex<Inner>,
    capacity: usize,
    batch_records: usize,
    batch_bytes: usize,
    pub stats: LogStats,
}

/// Rough size of a record in the batch's JSON: its strings plus the keys and
/// numbers around them.
pub fn record_bytes(r: &LogRecord) -> usize {
    let opt = |s: &Option<String>| s.as_ref().map_or(0, |s| s.len() + 16);
    96 + r.message.len()
        + opt(&r.hostname)
        + opt(&r.app_name)
        + opt(&r.procid)
        + opt(&r.msgid)
        + opt(&r.structured_data)
}

impl LogBook {
    /// A backlog of at most `capacity` bytes, with the default batch limits.
    pub fn new(capacity: usize) -> Self {
        Self::with_batch_limits(capacity, BATCH_RECORDS, BATCH_BYTES)
    }

    pub fn with_batch_limits(capacity: usize, batch_records: usize, batch_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            capacity,
            batch_records: batch_records.max(1),
            batch_bytes: batch_bytes.max(1),
            stats: LogStats::default(),
        }
    }

    /// The state stays consistent under a panic elsewhere (every method
    /// finishes its updates before it could panic), so a poisoned lock is
    /// used as is.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the backlog can take more.
    pub fn has_room(&self) -> bool {
        let i = self.lock();
        i.pending_bytes + i.flight_bytes < self.capacity
    }

    /// Adds a record, whether or not there is room: the tailer checks
    /// [`LogBook::has_room`] before each read, so it overshoots by at most
    /// one read.
    pub fn push(&self, record: LogRecord, origin: Option<Origin>) {
        let bytes = record_bytes(&record);
        let mut i = self.lock();
        i.pending_bytes += bytes;
        i.pending.push_back(Pending {
            record,
            origin,
            bytes,
        });
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds a record if there is room; otherwise drops it, counts it and
    /// returns `false`.
    pub fn try_push(&self, record: LogRecord) -> bool {
        let bytes = record_bytes(&record);
        let mut i = self.lock();
        if i.pending_bytes + i.flight_bytes + bytes > self.capacity {
            drop(i);
            self.stats.dropped_full.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        i.pending_bytes += bytes;
        i.pending.push_back(Pending {
            record,
            origin: None,
            bytes,
        });
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Whether some records wait for a batch.
    pub fn has_pending(&self) -> bool {
        !self.lock().pending.is_empty()
    }

    /// Whether a full batch is waiting: worth sealing before the ship
    /// interval is up.
    pub fn batch_full(&self) -> bool {
        let i = self.lock();
        i.pending.len() >= self.batch_records || i.pending_bytes >= self.batch_bytes
    }

    /// Takes the oldest pending records, up to one batch's limits, for batch
    /// `seq` (sequence numbers increase). At least one record is taken when
    /// any is pending, however large.
    pub fn take_batch(&self, seq: u64) -> Vec<LogRecord> {
        let mut i = self.lock();
        let mut flight = Flight::default();
        let mut out = Vec::with_capacity(i.pending.len().min(self.batch_records));
        while let Some(p) = i.pending.front() {
            if !out.is_empty()
                && (out.len() >= self.batch_records || flight.bytes + p.bytes > self.batch_bytes)
            {
                break;
            }
            let Some(p) = i.pending.pop_front() else {
                break;
            };
            i.pending_bytes -= p.bytes;
            flight.bytes += p.bytes;
            if let Some(o) = p.origin {
                let mark = flight.marks.entry(o.slot).or_insert(o.end);
                *mark = (*mark).max(o.end);
                let at = out.len() as u32;
                match flight.files.last_mut() {
                    Some((_, end)) if *end == at => *end = at + 1,
                    _ => flight.files.push((at, at + 1)),
                }
            }
            out.push(p.record);
        }
        if !out.is_empty() {
            flight.records = out.len() as u64;
            i.flight_bytes += flight.bytes;
            i.flights.insert(seq, flight);
        }
        // A burst (a file read from its start, the backlog of an outage)
        // grew the queue; once it has drained, its space goes back to the
        // allocator instead of staying for good. Twice what this batch
        // needed is kept, so a steady flow does not reallocate.
        let keep = 2 * (out.len() + i.pending.len());
        if i.pending.capacity() > keep {
            i.pending.shrink_to(keep);
        }
        out
    }

    /// Records the pending queue has room for (its allocation).
    #[cfg(test)]
    fn pending_capacity(&self) -> usize {
        self.lock().pending.capacity()
    }

    /// Batch `seq` and every earlier one are settled: `delivered` when the
    /// server acknowledged `seq`; not when the ship queue dropped it for space
    /// or the server refused it for good (its records are counted as lost).
    /// Either way its offsets are committed: nothing would ever ship them.
    pub fn settled(&self, seq: u64, delivered: bool) {
        let mut i = self.lock();
        let later = i.flights.split_off(&(seq + 1));
        let done = std::mem::replace(&mut i.flights, later);
        for (_, flight) in done {
            i.flight_bytes -= flight.bytes;
            for (slot, end) in flight.marks {
                let mark = i.acked.entry(slot).or_insert(end);
                *mark = (*mark).max(end);
            }
            let counter = if delivered {
                &self.stats.shipped
            } else {
                &self.stats.lost
            };
            counter.fetch_add(flight.records, Ordering::Relaxed);
        }
    }

    /// Batch `seq` and every earlier one are durably in the spool, `seq` at
    /// spool position `position`: their memory is released and their offsets
    /// committed (a restart reads from the spool what follows them). Their
    /// records are counted when they leave the spool ([`LogBook::count`]).
    pub fn spooled(&self, seq: u64, position: u64) {
        let mut i = self.lock();
        let later = i.flights.split_off(&(seq + 1));
        let done = std::mem::replace(&mut i.flights, later);
        for (_, flight) in done {
            i.flight_bytes -= flight.bytes;
            for (slot, end) in flight.marks {
                let mark = i.acked.entry(slot).or_insert(end);
                *mark = (*mark).max(end);
            }
        }
        i.through = Some(i.through.map_or(position, |t| t.max(position)));
    }

    /// `records` left the spool: acknowledged by the server (`delivered`),
    /// or dropped.
    pub fn count(&self, records: u64, delivered: bool) {
        let counter = if delivered {
            &self.stats.shipped
        } else {
            &self.stats.lost
        };
        counter.fetch_add(records, Ordering::Relaxed);
    }

    /// Index ranges of batch `seq`'s records that were read from files.
    pub fn file_ranges(&self, seq: u64) -> Vec<(u32, u32)> {
        self.lock()
            .flights
            .get(&seq)
            .map(|f| f.files.clone())
            .unwrap_or_default()
    }

    /// The offsets committed since the last call: slot → offset.
    pub fn take_acked(&self) -> HashMap<u64, u64> {
        std::mem::take(&mut self.lock().acked)
    }

    /// The offsets committed since the last call, and the spool position
    /// they cover (see [`LogBook::spooled`]), taken together.
    pub fn take_commit(&self) -> (HashMap<u64, u64>, Option<u64>) {
        let mut i = self.lock();
        (std::mem::take(&mut i.acked), i.through.take())
    }

    /// (records pending, bytes pending, bytes in flight), for tests and logs.
    pub fn sizes(&self) -> (usize, usize, usize) {
        let i = self.lock();
        (i.pending.len(), i.pending_bytes, i.flight_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn rec(msg: &str) -> LogRecord {
        LogRecord::whole(msg.into(), Utc::now())
    }

    #[test]
    fn a_drained_burst_gives_its_memory_back() {
        let book = LogBook::with_batch_limits(1 << 30, 1000, 1 << 30);
        for n in 0..10_000 {
            book.push(rec(&n.to_string()), None);
        }
        let burst = book.pending_capacity();
        assert!(burst >= 10_000);
        for seq in 1..=10 {
            assert_eq!(book.take_batch(seq).len(), 1000);
        }
        assert!(
            book.pending_capacity() <= 2000,
            "kept room for {} records after the burst",
            book.pending_capacity()
        );
        // A steady flow of one batch per interval keeps its room.
        for seq in 11..=13 {
            for n in 0..500 {
                book.push(rec(&n.to_string()), None);
            }
            let before = book.pending_capacity();
            assert_eq!(book.take_batch(seq).len(), 500);
            assert!(book.pending_capacity() >= before.min(1000));
        }
    }

    #[test]
    fn batches_respect_limits_and_commit_offsets_in_order() {
        let book = LogBook::with_batch_limits(1 << 20, 2, 1 << 20);
        for (n, end) in [(1, 10), (2, 20), (3, 30)] {
            book.push(rec(&n.to_string()), Some(Origin { slot: 7, end }));
        }
        book.push(rec("syslog"), None);
        assert!(book.batch_full());
        let first = book.take_batch(1);
        let second = book.take_batch(2);
        assert_eq!(first.len(), 2);
        assert_eq!(second.len(), 2);
        assert!(book.take_batch(3).is_empty());
        assert!(
            book.take_acked().is_empty(),
            "nothing commits before an ack"
        );
        book.settled(1, true);
        assert_eq!(book.take_acked(), HashMap::from([(7, 20)]));
        book.settled(2, true);
        assert_eq!(book.take_acked(), HashMap::from([(7, 30)]));
        assert_eq!(book.sizes(), (0, 0, 0));
        assert_eq!(book.stats.shipped.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn full_backlog_stops_sources_until_acknowledged() {
        let book = LogBook::with_batch_limits(4 * 1024, 1000, 1 << 20);
        let line = "x".repeat(900);
        let mut taken = 0;
        while book.try_push(rec(&line)) {
            taken += 1;
        }
        assert!(taken >= 3);
        assert_eq!(book.stats.dropped_full.load(Ordering::Relaxed), 1);
        assert_eq!(book.take_batch(1).len(), taken);
        assert!(!book.try_push(rec(&line)), "in-flight records still count");
        book.settled(1, true);
        assert!(book.has_room() && book.try_push(rec(&line)));
    }

    #[test]
    fn a_dropped_batch_counts_as_lost() {
        let book = LogBook::new(1 << 20);
        book.push(rec("a"), Some(Origin { slot: 1, end: 5 }));
        book.take_batch(1);
        book.push(rec("b"), Some(Origin { slot: 1, end: 9 }));
        book.take_batch(2);
        book.settled(1, false);
        book.settled(2, true);
        assert_eq!(book.stats.lost.load(Ordering::Relaxed), 1);
        assert_eq!(book.stats.shipped.load(Ordering::Relaxed), 1);
        assert_eq!(book.take_acked(), HashMap::from([(1, 9)]));
    }

    #[test]
    fn spooling_commits_offsets_and_the_position_they_cover() {
        let book = LogBook::new(1 << 20);
        book.push(rec("f1"), Some(Origin { slot: 3, end: 5 }));
        book.push(rec("sys"), None);
        book.push(rec("f2"), Some(Origin { slot: 3, end: 9 }));
        book.push(rec("f3"), Some(Origin { slot: 4, end: 2 }));
        assert_eq!(book.take_batch(1).len(), 4);
        assert_eq!(book.file_ranges(1), [(0, 1), (2, 4)]);
        book.spooled(1, 42);
        assert_eq!(book.sizes(), (0, 0, 0), "memory released");
        assert_eq!(
            book.take_commit(),
            (HashMap::from([(3, 9), (4, 2)]), Some(42))
        );
        assert_eq!(book.take_commit(), (HashMap::new(), None));
        book.count(4, true);
        assert_eq!(book.stats.shipped.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn an_oversized_record_still_ships_alone() {
        let book = LogBook::with_batch_limits(1 << 20, 10, 100);
        book.push(rec(&"y".repeat(500)), None);
        book.push(rec("small"), None);
        assert_eq!(book.take_batch(1).len(), 1);
        assert_eq!(book.take_batch(2).len(), 1);
    }
}
