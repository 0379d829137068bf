//! When a check runs and how its attempts count (Nagios' soft and hard
//! states): every `interval` while OK or hard, every `retry_interval` while
//! in a soft non-OK state.

use super::book::{CheckBook, PendingRun};
use super::perf::{self, Counters};
use super::{runner, CheckSpec};
use metrolog_protocol::nagios::{CheckResult, CheckStatus};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio::time::Instant;

/// The attempt counter of one check.
///
/// The first non-OK result after an OK one (or at start) is attempt 1, each
/// further non-OK result counts one more up to `max_attempts`, where the
/// state is hard (see `CheckResult::is_hard`) and stays so; an OK result is
/// attempt 1. A change between non-OK states keeps counting, as in Nagios.
#[derive(Debug, Default, Clone)]
pub struct Attempts {
    last: Option<CheckStatus>,
    attempt: u32,
}

impl Attempts {
    /// The attempt of a result with `status`.
    pub fn next(&mut self, status: CheckStatus, max_attempts: u32) -> u32 {
        let max = max_attempts.max(1);
        self.attempt = match self.last {
            _ if status == CheckStatus::Ok => 1,
            None | Some(CheckStatus::Ok) => 1,
            Some(_) => (self.attempt + 1).min(max),
        };
        self.last = Some(status);
        self.attempt
    }
}

/// The wait before the next run: `retry_interval` in a soft non-OK state.
pub fn next_delay(spec: &CheckSpec, status: CheckStatus, attempt: u32) -> Duration {
    if status != CheckStatus::Ok && attempt < spec.max_attempts {
        spec.retry_interval
    } else {
        spec.interval
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Runs `spec` after `first_delay`, then on its schedule, handing each result
/// to `book`, until `stop` turns true (a run in progress is abandoned: its
/// process group is killed).
pub async fn run_check(
    spec: CheckSpec,
    book: Arc<CheckBook>,
    first_delay: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut attempts = Attempts::default();
    let mut counters = Counters::default();
    let mut last_ts = i64::MIN;
    let mut next = Instant::now() + first_delay;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep_until(next) => {}
        }
        let started = Instant::now();
        let run = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            r = runner::run(&spec.argv, spec.timeout) => r,
        };
        let t = unix_now();
        let ts = t as i64;
        let attempt = attempts.next(run.status, spec.max_attempts);
        let mut samples = if run.judged {
            perf::samples(&spec.name, &run.perfdata, t, &mut counters)
        } else {
            perf::Samples::default()
        };
        if samples.skipped > 0 {
            book.perf_skipped
                .fetch_add(samples.skipped as u64, Ordering::Relaxed);
            tracing::debug!(
                "check {}: {} perfdata item(s) skipped (first: {:?})",
                spec.name,
                samples.skipped,
                samples.first_skipped
            );
        }
        if ts <= last_ts {
            // Two runs in one second: the server keeps one sample per
            // second and series; the second one's would be refused.
            samples.values.clear();
        }
        last_ts = last_ts.max(ts);
        if run.status != CheckStatus::Ok {
            tracing::debug!(
                "check {} {} (attempt {attempt}/{}): {}",
                spec.name,
                run.status,
                spec.max_attempts,
                run.output
            );
        }
        let delay = next_delay(&spec, run.status, attempt);
        book.push(PendingRun {
            result: CheckResult {
                name: spec.name.clone(),
                status: run.status,
                output: run.output,
                long_output: run.long_output,
                perfdata: run.perfdata,
                ts,
                duration_ms: run.duration.as_millis() as u64,
                attempt,
                max_attempts: spec.max_attempts,
            },
            samples: samples.values,
            timed: Vec::new(),
        });
        // From the start of the run, so a slow plugin does not drift the
        // schedule; a run longer than the interval is followed at once.
        next = (started + delay).max(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CheckStatus::*;

    #[test]
    fn attempts_count_soft_then_hard_and_ok_resets() {
        let mut a = Attempts::default();
        let seq = [
            (Ok, 1),
            (Critical, 1),
            (Critical, 2),
            (Warning, 3),
            (Critical, 3),
            (Ok, 1),
            (Unknown, 1),
            (Ok, 1),
            (Ok, 1),
        ];
        for (i, (status, want)) in seq.into_iter().enumerate() {
            assert_eq!(a.next(status, 3), want, "step {i}: {status}");
        }
        let mut first_fails = Attempts::default();
        assert_eq!(first_fails.next(Critical, 3), 1);
        let mut one = Attempts::default();
        assert_eq!(one.next(Critical, 1), 1);
        assert_eq!(one.next(Critical, 1), 1);
    }

    #[test]
    fn retry_interval_only_while_soft() {
        let spec = CheckSpec {
            name: metrolog_protocol::nagios::CheckName::parse("x").unwrap(),
            argv: vec!["/bin/true".into()],
            interval: Duration::from_secs(60),
            retry_interval: Duration::from_secs(15),
            timeout: Duration::from_secs(10),
            max_attempts: 3,
        };
        assert_eq!(next_delay(&spec, Ok, 1), Duration::from_secs(60));
        assert_eq!(next_delay(&spec, Critical, 1), Duration::from_secs(15));
        assert_eq!(next_delay(&spec, Critical, 2), Duration::from_secs(15));
        assert_eq!(next_delay(&spec, Critical, 3), Duration::from_secs(60));
    }
}
