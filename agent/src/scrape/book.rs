//! Samples from outside sources (scraped exporters) waiting for the sampler,
//! which consolidates them with the collectors' own at its next round, so
//! they ride the same 10 s buckets and batches.
//!
//! Bounded: when `capacity` samples wait, what comes more is dropped and
//! counted (series `agent.scrape.dropped`).

use metrolog_protocol::SeriesKey;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Samples waiting at most (the sampler takes them every second).
pub const DEFAULT_CAPACITY: usize = 200_000;

#[derive(Debug)]
pub struct SampleBook {
    pending: Mutex<Vec<(SeriesKey, f64)>>,
    capacity: usize,
    /// Samples dropped because the book was full, since start.
    pub dropped: AtomicU64,
}

impl Default for SampleBook {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl SampleBook {
    pub fn new(capacity: usize) -> Self {
        Self {
            pending: Mutex::new(Vec::new()),
            capacity: capacity.max(1),
            dropped: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(SeriesKey, f64)>> {
        // Every operation is one Vec call: a poisoned lock is consistent.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds samples; those beyond the capacity are dropped and counted.
    pub fn push(&self, samples: impl IntoIterator<Item = (SeriesKey, f64)>) {
        let mut lost = 0u64;
        {
            let mut pending = self.lock();
            for s in samples {
                if pending.len() < self.capacity {
                    pending.push(s);
                } else {
                    lost += 1;
                }
            }
        }
        if lost > 0 {
            let total = self.dropped.fetch_add(lost, Ordering::Relaxed) + lost;
            tracing::warn!(
                "scraped samples waiting for the sampler are full ({}): dropped {lost} \
                 ({total} since start)",
                self.capacity
            );
        }
    }

    /// Takes every waiting sample.
    pub fn drain(&self) -> Vec<(SeriesKey, f64)> {
        std::mem::take(&mut *self.lock())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrolog_protocol::Labels;

    #[test]
    fn bounded_and_counted() {
        let book = SampleBook::new(3);
        let key = SeriesKey::new("prom.x", Labels::new()).unwrap();
        book.push((0..5).map(|i| (key.clone(), f64::from(i))));
        assert_eq!(book.dropped.load(Ordering::Relaxed), 2);
        let got: Vec<f64> = book.drain().into_iter().map(|(_, v)| v).collect();
        assert_eq!(got, [0.0, 1.0, 2.0]);
        assert!(book.drain().is_empty());
    }
}
