//! Time as the evaluators see it. Every rule that waits (`for`,
//! `keep_firing_for`, no-data, flap detection, cooldowns, notification
//! grouping) reads the time from an injected [`Clock`], so tests move time
//! forward by hand instead of sleeping.

use std::fmt::Debug;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

pub trait Clock: Send + Sync + Debug {
    /// Unix time in milliseconds.
    fn now_ms(&self) -> i64;

    /// Unix time in seconds.
    fn now(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        chrono::Utc::now().timestamp_millis()
    }
}

/// A clock that moves only when told (tests).
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn at(secs: i64) -> Self {
        Self(Arc::new(AtomicI64::new(secs * 1000)))
    }

    pub fn set(&self, secs: i64) {
        self.0.store(secs * 1000, Ordering::SeqCst);
    }

    pub fn advance(&self, secs: i64) {
        self.0.fetch_add(secs * 1000, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

pub type SharedClock = Arc<dyn Clock>;
