//! The store's one writer lock, measured.
//!
//! SQLite takes one writer at a time; the store serialises its writers
//! itself (so none of them spins on `SQLITE_BUSY`). Every commit path waits
//! here, so a long hold is what delays everything else: a batch's
//! acknowledgement, an alarm's notification. Each acquisition records where
//! it came from (the caller's source location), how long it waited and how
//! long it held; holds over [`SLOW_HOLD`] are logged with their place, and
//! [`WriteLock::stats`] gives the totals (for /metrics and benchmarks).

use std::future::Future;
use std::panic::Location;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A hold this long is logged (at debug level: benchmarks and operators
/// chasing latency turn it on with `RUST_LOG=metrolog_server::store=debug`).
pub const SLOW_HOLD: Duration = Duration::from_millis(50);

/// Totals since the store opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteLockStats {
    pub acquisitions: u64,
    pub wait_us: u64,
    pub hold_us: u64,
    pub max_hold_us: u64,
    pub slow_holds: u64,
}

#[derive(Debug, Default)]
pub struct WriteLock {
    inner: tokio::sync::Mutex<()>,
    acquisitions: AtomicU64,
    wait_us: AtomicU64,
    hold_us: AtomicU64,
    max_hold_us: AtomicU64,
    slow_holds: AtomicU64,
}

/// Held while writing; releases (and records the hold) on drop.
#[derive(Debug)]
pub struct WriteGuard<'a> {
    _guard: tokio::sync::MutexGuard<'a, ()>,
    lock: &'a WriteLock,
    at: &'static Location<'static>,
    since: Instant,
    waited: Duration,
}

impl WriteLock {
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits for the lock. (Not an `async fn`, so the caller's location is
    /// known: `#[track_caller]` does not reach into async bodies.)
    #[track_caller]
    pub fn lock(&self) -> impl Future<Output = WriteGuard<'_>> + Send + '_ {
        let at = Location::caller();
        let asked = Instant::now();
        async move {
            let guard = self.inner.lock().await;
            let since = Instant::now();
            WriteGuard {
                _guard: guard,
                lock: self,
                at,
                since,
                waited: since - asked,
            }
        }
    }

    pub fn stats(&self) -> WriteLockStats {
        WriteLockStats {
            acquisitions: self.acquisitions.load(Ordering::Relaxed),
            wait_us: self.wait_us.load(Ordering::Relaxed),
            hold_us: self.hold_us.load(Ordering::Relaxed),
            max_hold_us: self.max_hold_us.load(Ordering::Relaxed),
            slow_holds: self.slow_holds.load(Ordering::Relaxed),
        }
    }
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        let held = self.since.elapsed();
        let l = self.lock;
        let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        l.acquisitions.fetch_add(1, Ordering::Relaxed);
        l.wait_us.fetch_add(us(self.waited), Ordering::Relaxed);
        l.hold_us.fetch_add(us(held), Ordering::Relaxed);
        l.max_hold_us.fetch_max(us(held), Ordering::Relaxed);
        if held >= SLOW_HOLD {
            l.slow_holds.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                at = %format_args!("{}:{}", self.at.file(), self.at.line()),
                held_ms = held.as_millis() as u64,
                waited_ms = self.waited.as_millis() as u64,
                "slow hold of the store's write lock"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn holds_are_counted_and_the_lock_excludes() {
        let l = WriteLock::new();
        {
            let _g = l.lock().await;
            assert!(l.inner.try_lock().is_err(), "a second writer got in");
        }
        {
            let _g = l.lock().await;
        }
        let s = l.stats();
        assert_eq!(s.acquisitions, 2);
        assert!(s.max_hold_us <= s.hold_us);
        assert!(l.inner.try_lock().is_ok(), "the lock was not released");
    }
}
