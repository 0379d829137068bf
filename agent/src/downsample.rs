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

/// Re-consolidates `buckets` (oldest first, of one series, each covering
/// `(ts - from, ts]`) into buckets of `to` seconds, the way the archives
/// consolidate rows: the average weighted by sample count, the least minimum,
/// the greatest maximum, the newest last, the summed count. A coarse bucket is
/// labelled with the end of its step (a multiple of `to`). Buckets are kept
/// as they are when `to` is not a whole multiple of `from`; with `to == from`,
/// buckets of the same step end are merged.
pub fn reconsolidate(buckets: &[Bucket], from: u32, to: u32) -> Vec<Bucket> {
    if to < from || from == 0 || !to.is_multiple_of(from) {
        return buckets.to_vec();
    }
    let step = i64::from(to);
    let mut out: Vec<Bucket> = Vec::new();
    let mut weight = 0.0;
    for b in buckets {
        let end = b.ts.div_euclid(step) * step + if b.ts.rem_euclid(step) == 0 { 0 } else { step };
        let w = f64::from(b.count.max(1));
        match out.last_mut() {
            Some(c) if c.ts == end => {
                c.avg = (c.avg * weight + b.avg * w) / (weight + w);
                c.min = c.min.min(b.min);
                c.max = c.max.max(b.max);
                c.last = b.last;
                c.count = c.count.saturating_add(b.count);
                weight += w;
            }
            _ => {
                out.push(Bucket { ts: end, ..*b });
                weight = w;
            }
        }
    }
    out
}

/// Splits a bucket of `step` seconds into the buckets of `fine` seconds it
/// covers, each with the coarse values (resolution is lost, not the time it
/// covers): the server's archives then see a sample every `fine` seconds, as
/// from a live agent, and no gap longer than their heartbeat.
pub fn expand(bucket: &Bucket, step: u32, fine: u32) -> Vec<Bucket> {
    if fine == 0 || step <= fine || !step.is_multiple_of(fine) {
        return vec![*bucket];
    }
    let n = step / fine;
    let count = (bucket.count / n).max(1);
    (0..n)
        .map(|i| Bucket {
            ts: bucket.ts - i64::from(step) + i64::from(fine) * i64::from(i + 1),
            count,
            ..*bucket
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrolog_protocol::Labels;

    fn b(ts: i64, avg: f64, count: u32) -> Bucket {
        Bucket {
            ts,
            avg,
            min: avg - 1.0,
            max: avg + 1.0,
            last: avg,
            count,
        }
    }

    #[test]
    fn reconsolidation_weights_by_count_and_labels_by_step_end() {
        let fine = [
            b(110, 1.0, 10),
            b(120, 4.0, 5),
            b(170, 9.0, 10),
            b(180, 3.0, 10),
        ];
        let out = reconsolidate(&fine, 10, 60);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].ts, 120);
        assert!((out[0].avg - 2.0).abs() < 1e-9, "{}", out[0].avg);
        assert_eq!(
            (out[0].min, out[0].max, out[0].last, out[0].count),
            (0.0, 5.0, 4.0, 15)
        );
        assert_eq!(out[1].ts, 180);
        assert_eq!((out[1].avg, out[1].last, out[1].count), (6.0, 3.0, 20));
        // Twice over gives what once over the coarser step gives.
        let twice = reconsolidate(&reconsolidate(&fine, 10, 60), 60, 300);
        let once = reconsolidate(&fine, 10, 300);
        assert_eq!(twice, once);
        assert_eq!(
            reconsolidate(&fine, 10, 25),
            fine,
            "not a multiple: unchanged"
        );
    }

    #[test]
    fn expansion_covers_the_coarse_step() {
        let parts = expand(&b(120, 2.0, 60), 60, 10);
        let ts: Vec<i64> = parts.iter().map(|p| p.ts).collect();
        assert_eq!(ts, [70, 80, 90, 100, 110, 120]);
        assert!(parts.iter().all(|p| p.avg == 2.0 && p.count == 10));
        assert_eq!(expand(&b(10, 1.0, 1), 10, 10).len(), 1);
    }

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
