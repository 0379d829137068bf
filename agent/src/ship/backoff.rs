//! Retry delays: exponential with "full jitter" (uniform between zero and the
//! nominal delay), so a fleet whose server comes back spreads its reconnections
//! over the whole window instead of bunching in its upper half: the least total
//! load on a recovering server for the same mean wait (AWS Architecture Blog,
//! "Exponential Backoff And Jitter").

use crate::random::Jitter;
use std::time::Duration;

/// First retry delay.
pub const BASE: Duration = Duration::from_secs(1);
/// Longest delay between retries.
pub const MAX: Duration = Duration::from_secs(60);

/// The delay before retry number `attempt` (0 = first retry), given a uniform
/// random `unit` in `[0, 1)`: `min(base × 2^attempt, max)` scaled by `unit`.
pub fn delay(base: Duration, max: Duration, attempt: u32, unit: f64) -> Duration {
    let nominal = base
        .checked_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
        .unwrap_or(max)
        .min(max);
    nominal.mul_f64(unit.clamp(0.0, 1.0))
}

/// Consecutive-failure counter producing [`delay`]s.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
    jitter: Jitter,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration, jitter: Jitter) -> Self {
        Self {
            base,
            max,
            attempt: 0,
            jitter,
        }
    }

    /// The delay before the next retry; each call counts one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let d = delay(self.base, self.max, self.attempt, self.jitter.unit());
        self.attempt = self.attempt.saturating_add(1);
        d
    }

    /// A success: the next failure starts from the base delay again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn failures(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_full_jitter() {
        let s = Duration::from_secs;
        assert_eq!(delay(BASE, MAX, 0, 0.0), Duration::ZERO);
        assert_eq!(delay(BASE, MAX, 0, 0.5), Duration::from_millis(500));
        assert_eq!(delay(BASE, MAX, 3, 0.5), s(4));
        assert_eq!(delay(BASE, MAX, 3, 1.0), s(8));
        assert_eq!(delay(BASE, MAX, 6, 1.0), s(60));
        assert_eq!(delay(BASE, MAX, 40, 0.5), s(30), "no overflow far out");
        assert_eq!(delay(BASE, MAX, u32::MAX, 1.0), s(60));
    }

    #[test]
    fn grows_and_resets() {
        let mut b = Backoff::new(BASE, MAX, Jitter::new(42));
        let delays: Vec<Duration> = (0..10).map(|_| b.next_delay()).collect();
        for (i, d) in delays.iter().enumerate() {
            let nominal = (BASE * 2u32.pow(i as u32)).min(MAX);
            assert!(*d <= nominal, "retry {i}: {d:?}");
        }
        assert_eq!(b.failures(), 10);
        b.reset();
        assert!(b.next_delay() <= BASE);
    }

    #[test]
    fn jitter_spreads_a_fleet() {
        // 100 agents failing together do not all retry at the same instant.
        let delays: std::collections::HashSet<Duration> = (0..100)
            .map(|seed| Backoff::new(BASE, MAX, Jitter::new(seed)).next_delay())
            .collect();
        assert!(delays.len() > 90);
    }
}
