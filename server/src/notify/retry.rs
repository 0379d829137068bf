//! What an attempt's answer means and when to try again: exponential backoff
//! with full jitter (AWS's "Exponential Backoff and Jitter"), capped, on a
//! bounded schedule, honouring `Retry-After`.

use super::config::RetryPolicy;
use std::time::Duration;

/// What came back from one attempt (a sender's answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// The `Retry-After` header, as sent.
    pub retry_after: Option<String>,
    /// At most [`MAX_EXCERPT`] bytes of the response body.
    pub excerpt: String,
}

/// Longest response excerpt kept per attempt.
pub const MAX_EXCERPT: usize = 1024;

/// What the worker does with a delivery after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Try again at this time (ms).
    Retry {
        at_ms: i64,
        reason: String,
    },
    /// Dead letter: never retried by itself.
    Dead {
        reason: String,
    },
}

/// The delay before attempt `n + 1` after `n` failed ones: uniform in
/// `[0, min(max, base × 2^(n-1))]`; `unit` is a random number in `[0, 1)`.
pub fn backoff(policy: &RetryPolicy, failed: u32, unit: f64) -> Duration {
    let exp = failed.saturating_sub(1).min(40);
    let ceiling = policy
        .backoff
        .saturating_mul(1u32 << exp.min(31))
        .min(policy.backoff_max);
    ceiling.mul_f64(unit.clamp(0.0, 1.0))
}

/// `Retry-After` as seconds or an HTTP date, as a delay from `now_ms`.
pub fn parse_retry_after(value: &str, now_ms: i64) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let ms = at.timestamp_millis() - now_ms;
    Some(Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
}

fn status_text(status: u16, excerpt: &str) -> String {
    let first = excerpt.lines().next().unwrap_or("").trim();
    if first.is_empty() {
        format!("HTTP {status}")
    } else {
        let cut: String = first.chars().take(200).collect();
        format!("HTTP {status}: {cut}")
    }
}

/// Judges one attempt. `attempts` counts it; `created_ms` is when the
/// delivery was built (the schedule ends `max_age` after it).
pub fn judge(
    policy: &RetryPolicy,
    answer: &Result<Answer, String>,
    attempts: u32,
    created_ms: i64,
    now_ms: i64,
    unit: f64,
) -> Verdict {
    let (reason, retry_after) = match answer {
        Ok(a) if (200..300).contains(&a.status) => return Verdict::Delivered,
        Ok(a) if a.status == 410 => {
            return Verdict::Dead {
                reason: format!(
                    "{} (gone: the receiver asks never to be sent this again)",
                    status_text(a.status, &a.excerpt)
                ),
            }
        }
        Ok(a) if (400..500).contains(&a.status) && a.status != 408 && a.status != 429 => {
            return Verdict::Dead {
                reason: format!(
                    "{} (the receiver refused the request; sending it again would not change that)",
                    status_text(a.status, &a.excerpt)
                ),
            }
        }
        Ok(a) => (
            status_text(a.status, &a.excerpt),
            a.retry_after
                .as_deref()
                .and_then(|v| parse_retry_after(v, now_ms)),
        ),
        Err(e) => (e.clone(), None),
    };
    if policy.max_attempts > 0 && attempts >= policy.max_attempts {
        return Verdict::Dead {
            reason: format!("{reason} (gave up after {attempts} attempts)"),
        };
    }
    let wait = backoff(policy, attempts, unit).max(retry_after.unwrap_or_default());
    let at_ms = now_ms.saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX / 4));
    let deadline = created_ms
        .saturating_add(i64::try_from(policy.max_age.as_millis()).unwrap_or(i64::MAX / 4));
    if at_ms > deadline {
        return Verdict::Dead {
            reason: format!(
                "{reason} (gave up after {attempts} attempts: the next one would fall past max_retry_age, {})",
                humantime::format_duration(policy.max_age)
            ),
        };
    }
    Verdict::Retry { at_ms, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            timeout: Duration::from_secs(10),
            backoff: Duration::from_secs(1),
            backoff_max: Duration::from_secs(3600),
            max_age: Duration::from_secs(86400),
            max_attempts: 0,
        }
    }

    fn answer(status: u16, retry_after: Option<&str>) -> Result<Answer, String> {
        Ok(Answer {
            status,
            retry_after: retry_after.map(str::to_string),
            excerpt: "nope".into(),
        })
    }

    #[test]
    fn backoff_doubles_with_full_jitter_and_is_capped() {
        let p = policy();
        assert_eq!(backoff(&p, 1, 0.999_999).as_millis(), 999);
        assert_eq!(backoff(&p, 4, 0.5), Duration::from_secs(4));
        assert_eq!(backoff(&p, 30, 1.0), Duration::from_secs(3600), "capped");
        assert_eq!(backoff(&p, 3, 0.0), Duration::ZERO, "full jitter reaches 0");
        assert_eq!(backoff(&p, u32::MAX, 1.0), Duration::from_secs(3600));
    }

    #[test]
    fn the_schedule_ends_about_a_day_after_the_delivery_was_built() {
        // With the mean jitter (0.5), count attempts until the verdict is dead.
        let p = policy();
        let (mut now, mut n) = (0i64, 0u32);
        loop {
            n += 1;
            match judge(&p, &answer(503, None), n, 0, now, 0.5) {
                Verdict::Retry { at_ms, .. } => now = at_ms,
                Verdict::Dead { reason } => {
                    assert!(reason.contains("max_retry_age"), "{reason}");
                    break;
                }
                Verdict::Delivered => unreachable!(),
            }
        }
        assert!(now <= 86_400_000 && now > 86_400_000 - 3_600_000, "{now}");
        assert!((40..60).contains(&n), "{n} attempts over a day");
    }

    #[test]
    fn retry_after_in_seconds_or_http_date_is_honoured() {
        let now = chrono::DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z")
            .unwrap()
            .timestamp_millis();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:30:00 GMT", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        match judge(&policy(), &answer(429, Some("120")), 1, now, now, 0.1) {
            Verdict::Retry { at_ms, .. } => assert_eq!(at_ms, now + 120_000),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn client_errors_are_dead_letters_except_408_and_429() {
        let p = policy();
        for s in [400, 401, 404, 413, 422] {
            assert!(
                matches!(
                    judge(&p, &answer(s, None), 1, 0, 0, 0.5),
                    Verdict::Dead { .. }
                ),
                "{s}"
            );
        }
        let gone = judge(&p, &answer(410, None), 1, 0, 0, 0.5);
        assert!(
            matches!(gone, Verdict::Dead { ref reason } if reason.contains("gone")),
            "{gone:?}"
        );
        for s in [408, 429, 500, 502, 503] {
            assert!(
                matches!(
                    judge(&p, &answer(s, None), 1, 0, 0, 0.5),
                    Verdict::Retry { .. }
                ),
                "{s}"
            );
        }
        assert!(matches!(
            judge(&p, &Err("timed out after 10s".into()), 1, 0, 0, 0.5),
            Verdict::Retry { .. }
        ));
        assert_eq!(
            judge(&p, &answer(204, None), 1, 0, 0, 0.5),
            Verdict::Delivered
        );
    }

    #[test]
    fn max_attempts_bounds_the_schedule_when_set() {
        let mut p = policy();
        p.max_attempts = 3;
        assert!(matches!(
            judge(&p, &answer(500, None), 2, 0, 0, 0.5),
            Verdict::Retry { .. }
        ));
        assert!(matches!(
            judge(&p, &answer(500, None), 3, 0, 0, 0.5),
            Verdict::Dead { .. }
        ));
    }
}
