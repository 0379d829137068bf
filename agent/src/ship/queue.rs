//! Batches waiting for the server's acknowledgement.
//!
//! In memory and bounded: when full, the oldest batch is dropped and the drop
//! counted. The on-disk spool will take this type's place behind the same methods
//! (push, front, ack, discard).

use metrolog_protocol::{Batch, BatchId};
use std::collections::VecDeque;

/// Default capacity: an hour of batches at the default 10 s ship interval.
pub const DEFAULT_CAPACITY: usize = 360;

#[derive(Debug)]
pub struct BatchQueue {
    batches: VecDeque<Batch>,
    capacity: usize,
    dropped: u64,
}

impl BatchQueue {
    pub fn new(capacity: usize) -> Self {
        Self {
            batches: VecDeque::new(),
            capacity: capacity.max(1),
            dropped: 0,
        }
    }

    /// Appends a batch; when full, drops the oldest and returns its id.
    pub fn push(&mut self, batch: Batch) -> Option<BatchId> {
        let dropped = if self.batches.len() >= self.capacity {
            self.dropped += 1;
            self.batches.pop_front().map(|b| b.id)
        } else {
            None
        };
        self.batches.push_back(batch);
        dropped
    }

    /// The oldest batch: the next to send.
    pub fn front(&self) -> Option<&Batch> {
        self.batches.front()
    }

    /// Removes batch `id` once the server committed it. The batch may have been
    /// dropped for space while it was in flight; then nothing happens.
    pub fn ack(&mut self, id: &BatchId) -> bool {
        if self.batches.front().is_some_and(|b| &b.id == id) {
            self.batches.pop_front();
            true
        } else {
            false
        }
    }

    pub fn len(&self) -> usize {
        self.batches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// Batches dropped for space since start.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(seq: u64) -> Batch {
        Batch {
            id: BatchId {
                stream: "s".into(),
                seq,
            },
            sent_at: 0,
            logs: Vec::new(),
            checks: Vec::new(),
            metrics: vec![],
        }
    }

    #[test]
    fn bounded_drops_oldest_and_counts() {
        let mut q = BatchQueue::new(3);
        for seq in 1..=3 {
            assert_eq!(q.push(batch(seq)), None);
        }
        assert_eq!(q.push(batch(4)).map(|id| id.seq), Some(1));
        assert_eq!(q.push(batch(5)).map(|id| id.seq), Some(2));
        assert_eq!((q.len(), q.dropped()), (3, 2));
        assert_eq!(q.front().unwrap().id.seq, 3);
    }

    #[test]
    fn ack_only_removes_the_batch_sent() {
        let mut q = BatchQueue::new(2);
        q.push(batch(1));
        q.push(batch(2));
        let in_flight = q.front().unwrap().id.clone();
        q.push(batch(3)); // drops 1 while it is in flight
        assert!(!q.ack(&in_flight));
        assert_eq!(q.len(), 2);
        assert!(q.ack(&q.front().unwrap().id.clone()));
        assert_eq!(q.front().unwrap().id.seq, 3);
    }
}
