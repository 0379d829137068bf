//! Turning monotonic counters into per-second rates.
//!
//! A counter that goes backwards was reset (driver reload, interface re-created,
//! reboot of a device) or wrapped. Guessing which, and the wrap width, would risk a
//! huge bogus rate, so the rule is: **no rate for that interval, and re-base on the
//! new value**; the next interval is measured normally. A counter that is not seen
//! in a round (its interface or device is gone) has its state dropped, so memory
//! stays bounded by what exists now and a returning device starts afresh.

use std::collections::HashMap;
use std::time::Instant;

#[derive(Debug, Default)]
pub struct Rates {
    prev: HashMap<String, Prev>,
    round: u64,
}

#[derive(Debug)]
struct Prev {
    value: u64,
    at: Instant,
    round: u64,
}

impl Rates {
    /// Starts a round of readings.
    pub fn begin(&mut self) {
        self.round += 1;
    }

    /// Records `value` of counter `key` read at `now` and returns its rate per
    /// second since the previous reading, or `None` on first sight, when the counter
    /// went backwards, or when no time passed.
    pub fn rate(&mut self, key: &str, value: u64, now: Instant) -> Option<f64> {
        let round = self.round;
        match self.prev.get_mut(key) {
            Some(p) => {
                let elapsed = now.saturating_duration_since(p.at).as_secs_f64();
                let rate =
                    (value >= p.value && elapsed > 0.0).then(|| (value - p.value) as f64 / elapsed);
                if elapsed > 0.0 || value < p.value {
                    p.value = value;
                    p.at = now;
                }
                p.round = round;
                rate
            }
            None => {
                self.prev.insert(
                    key.to_string(),
                    Prev {
                        value,
                        at: now,
                        round,
                    },
                );
                None
            }
        }
    }

    /// Ends a round: forgets every counter that was not read in it.
    pub fn finish(&mut self) {
        let round = self.round;
        self.prev.retain(|_, p| p.round == round);
    }

    /// Number of counters tracked.
    pub fn len(&self) -> usize {
        self.prev.len()
    }

    pub fn is_empty(&self) -> bool {
        self.prev.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rate_per_second_and_backwards_rebases() {
        let t0 = Instant::now();
        let mut r = Rates::default();
        r.begin();
        assert_eq!(r.rate("a", 1000, t0), None);
        r.begin();
        assert_eq!(r.rate("a", 3000, t0 + Duration::from_secs(2)), Some(1000.0));
        r.begin();
        // Reset: no rate, not u64::MAX-ish nonsense.
        assert_eq!(r.rate("a", 10, t0 + Duration::from_secs(3)), None);
        r.begin();
        assert_eq!(r.rate("a", 60, t0 + Duration::from_secs(4)), Some(50.0));
    }

    #[test]
    fn unseen_counters_are_forgotten() {
        let t0 = Instant::now();
        let mut r = Rates::default();
        r.begin();
        r.rate("a", 1, t0);
        r.rate("b", 1, t0);
        r.finish();
        assert_eq!(r.len(), 2);
        r.begin();
        r.rate("a", 2, t0 + Duration::from_secs(1));
        r.finish();
        assert_eq!(r.len(), 1);
        r.begin();
        assert_eq!(r.rate("b", 100, t0 + Duration::from_secs(2)), None);
    }
}
