//! Consolidation of per-second samples into 10 s buckets (avg/min/max/last/count).
//!
//! A bucket labelled `ts` covers `(ts - 10, ts]` with `ts` a multiple of 10, as a
//! round-robin archive row does, so the server stores the buckets as they come.
//! A bucket is closed once the clock has reached its end: no later sample can
//! fall in it.

use metrolog_protocol::{Bucket, SeriesBuckets, SeriesKey};
use std::collections::BTreeMap;

/// Width of the buckets the agent ships, in seconds.
pub const STEP: u32 = 10;

/// The end of the bucket that holds a sample taken at `t` (unix seconds).
pub fn bucket_end(t: f64) -> i64 {
    let step = f64::from(STEP);
    ((t / step).ceil() * step) as i64
}

#[derive(Debug, Clone, Copy)]
struct Acc {
    sum: f64,
    min: f64,
    max: f64,
    last: f64,
    count: u32,
}

impl Acc {
    fn new(v: f64) -> Self {
        Self {
            sum: v,
            min: v,
            max: v,
            last: v,
            count: 1,
        }
    }

    fn add(&mut self, v: f64) {
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.last = v;
        self.count += 1;
    }

    fn bucket(&self, ts: i64) -> Bucket {
        Bucket {
            ts,
            avg: self.sum / f64::from(self.count),
            min: self.min,
            max: self.max,
            last: self.last,
            count: self.count,
        }
    }
}

/// Open buckets per series. Memory is bounded by the number of series times the
/// buckets not yet taken (normally one or two each).
#[derive(Debug, Default)]
pub struct Consolidator {
    open: BTreeMap<SeriesKey, BTreeMap<i64, Acc>>,
}

impl Consolidator {
    /// Adds a sample of `key` taken at `t` (unix seconds). Non-finite values are ignored.
    pub fn add(&mut self, key: &SeriesKey, t: f64, value: f64) {
        if !value.is_finite() {
            return;
        }
        let ts = bucket_end(t);
        // Look up before inserting so the common case does not clone the key.
        let buckets = match self.open.get_mut(key) {
            Some(b) => b,
            None => self.open.entry(key.clone()).or_default(),
        };
        buckets
            .entry(ts)
            .and_modify(|a| a.add(value))
            .or_insert_with(|| Acc::new(value));
    }

    /// Removes and returns every bucket that is closed at `now` (its end `ts <= now`),
    /// grouped by series, oldest first.
    pub fn take_closed(&mut self, now: f64) -> Vec<SeriesBuckets> {
        let mut out = Vec::new();
        self.open.retain(|key, buckets| {
            let closed: Vec<Bucket> = buckets
                .iter()
                .take_while(|(ts, _)| (**ts as f64) <= now)
                .map(|(ts, acc)| acc.bucket(*ts))
                .collect();
            if !closed.is_empty() {
                for b in &closed {
                    buckets.remove(&b.ts);
                }
                out.push(SeriesBuckets {
                    key: key.clone(),
                    step: STEP,
                    buckets: closed,
                });
            }
            !buckets.is_empty()
        });
        out
    }

    /// Whether some bucket is closed at `now`.
    pub fn has_closed(&self, now: f64) -> bool {
        self.open
            .values()
            .any(|b| b.keys().next().is_some_and(|ts| (*ts as f64) <= now))
    }

    /// Number of open buckets over all series.
    pub fn open_buckets(&self) -> usize {
        self.open.values().map(BTreeMap::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrolog_protocol::Labels;

    fn key(name: &str) -> SeriesKey {
        SeriesKey::new(name, Labels::new()).unwrap()
    }

    #[test]
    fn bucket_boundaries_are_left_open_right_closed() {
        assert_eq!(bucket_end(10.0), 10);
        assert_eq!(bucket_end(10.001), 20);
        assert_eq!(bucket_end(19.999), 20);
        assert_eq!(bucket_end(20.0), 20);
        assert_eq!(bucket_end(1_700_000_001.5), 1_700_000_010);
        assert_eq!(bucket_end(0.0), 0);
    }

    #[test]
    fn avg_min_max_last_count() {
        let mut c = Consolidator::default();
        let k = key("cpu.busy_pct");
        for (t, v) in [(100.5, 4.0), (101.5, 1.0), (105.0, 7.0), (110.0, 2.0)] {
            c.add(&k, t, v);
        }
        c.add(&k, 110.5, 50.0); // next bucket
        c.add(&k, 111.0, f64::NAN); // ignored
        let out = c.take_closed(110.0);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].step, 10);
        assert_eq!(
            out[0].buckets,
            [Bucket {
                ts: 110,
                avg: 3.5,
                min: 1.0,
                max: 7.0,
                last: 2.0,
                count: 4
            }]
        );
        assert_eq!(c.open_buckets(), 1);
        assert!(!c.has_closed(119.9));
        assert!(c.has_closed(120.0));
        let out = c.take_closed(125.0);
        assert_eq!(out[0].buckets[0].ts, 120);
        assert_eq!(out[0].buckets[0].count, 1);
        assert_eq!(c.open_buckets(), 0);
    }

    #[test]
    fn open_buckets_are_not_taken_and_several_closed_come_oldest_first() {
        let mut c = Consolidator::default();
        let (a, b) = (key("a"), key("b"));
        c.add(&a, 95.0, 1.0);
        c.add(&a, 105.0, 2.0);
        c.add(&b, 109.0, 3.0);
        c.add(&a, 111.0, 9.0);
        let mut out = c.take_closed(110.5);
        out.sort_by(|x, y| x.key.cmp(&y.key));
        assert_eq!(out.len(), 2);
        let ts: Vec<i64> = out[0].buckets.iter().map(|b| b.ts).collect();
        assert_eq!(ts, [100, 110]);
        assert_eq!(out[1].buckets[0].ts, 110);
        assert!(c.take_closed(110.5).is_empty());
        assert_eq!(c.open_buckets(), 1);
    }
}
