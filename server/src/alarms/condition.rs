//! What a rule has seen of one subject, and the gate between a raw
//! judgement and the alarm: the window a threshold consolidates, M-of-N
//! datapoints, `for` (pending time) and `keep_firing_for`.
//!
//! Pure and clock-free: times come in as arguments.

use super::rules::Rule;
use super::Status;
use metrolog_protocol::rrd::Cf;
use metrolog_protocol::Bucket;
use std::collections::VecDeque;

/// Most buckets a window keeps (a 1 h window of 10 s buckets is 360).
pub const MAX_WINDOW_BUCKETS: usize = 4096;

#[derive(Debug, Clone, Default)]
pub struct Condition {
    /// Threshold rules: buckets of the window, oldest first.
    window: VecDeque<Bucket>,
    /// Log rules: (second, records counted) of the window, oldest first.
    counts: VecDeque<(i64, u64)>,
    /// Newest datapoint time (bucket end, or the record's second).
    pub last_data: Option<i64>,
    /// When the subject was first seen by the rule (no-data grace).
    pub first_seen: i64,
    /// The last N raw judgements (M-of-N).
    recent: VecDeque<Status>,
    /// The raw status after M-of-N, as of the last datapoint.
    pub raw: Status,
    /// Since when `raw` has been a problem (`for`).
    pending_since: Option<i64>,
    /// Since when `raw` has been OK while the gate still fires (`keep_firing_for`).
    clear_since: Option<i64>,
    /// What the gate lets through now.
    pub gated: Status,
    /// The no-data policy was applied for the current silence.
    pub no_data_applied: bool,
    /// Value of the last datapoint.
    pub value: Option<f64>,
}

impl Condition {
    pub fn new(now: i64) -> Self {
        Self {
            first_seen: now,
            raw: Status::Ok,
            gated: Status::Ok,
            ..Default::default()
        }
    }

    /// Adds buckets (newer than what the window holds); returns whether any was new.
    pub fn add_buckets(&mut self, buckets: &[Bucket], window: i64) -> bool {
        let mut added = false;
        for b in buckets {
            if self.last_data.is_some_and(|t| b.ts <= t) {
                continue;
            }
            self.window.push_back(*b);
            self.last_data = Some(b.ts);
            added = true;
        }
        if let Some(newest) = self.last_data {
            // A bucket ending at ts covers (ts - step, ts]: keep those ending
            // inside (newest - window, newest]; window 0 keeps the newest only.
            while self.window.len() > 1
                && (self.window.front().is_some_and(|b| b.ts <= newest - window)
                    || self.window.len() > MAX_WINDOW_BUCKETS)
            {
                self.window.pop_front();
            }
        }
        if added {
            self.no_data_applied = false;
        }
        added
    }

    /// The window consolidated with `cf`.
    pub fn window_value(&self, cf: Cf) -> Option<f64> {
        let w = &self.window;
        if w.is_empty() {
            return None;
        }
        Some(match cf {
            Cf::Avg => {
                let (sum, n) = w.iter().fold((0.0, 0u64), |(s, n), b| {
                    (s + b.avg * f64::from(b.count), n + u64::from(b.count))
                });
                if n == 0 {
                    return None;
                }
                sum / n as f64
            }
            Cf::Min => w.iter().map(|b| b.min).fold(f64::INFINITY, f64::min),
            Cf::Max => w.iter().map(|b| b.max).fold(f64::NEG_INFINITY, f64::max),
            Cf::Last => w.back()?.last,
        })
    }

    /// Counts `n` matching records at second `at`.
    pub fn add_count(&mut self, at: i64, n: u64) {
        match self.counts.back_mut() {
            Some((t, c)) if *t == at => *c += n,
            _ => self.counts.push_back((at, n)),
        }
        if self.counts.len() > MAX_WINDOW_BUCKETS {
            // Merge the two oldest rather than lose counts.
            if let Some((_, a)) = self.counts.pop_front() {
                if let Some((_, b)) = self.counts.front_mut() {
                    *b += a;
                }
            }
        }
        self.last_data = Some(self.last_data.map_or(at, |l| l.max(at)));
    }

    /// Records counted in `(now - window, now]`.
    pub fn count(&mut self, now: i64, window: i64) -> u64 {
        while self.counts.front().is_some_and(|(t, _)| *t <= now - window) {
            self.counts.pop_front();
        }
        self.counts.iter().map(|(_, c)| c).sum()
    }

    pub fn has_counts(&self) -> bool {
        !self.counts.is_empty()
    }

    /// Feeds one datapoint's raw judgement; returns the gated status.
    pub fn datapoint(
        &mut self,
        rule: &Rule,
        judged: Status,
        value: Option<f64>,
        now: i64,
    ) -> Status {
        self.value = value;
        self.raw = match rule.datapoints {
            None => judged,
            Some((m, n)) => {
                self.recent.push_back(judged);
                while self.recent.len() > n as usize {
                    self.recent.pop_front();
                }
                let at_least = |s: Status| {
                    self.recent
                        .iter()
                        .filter(|r| severity(**r) >= severity(s))
                        .count()
                        >= m as usize
                };
                if judged == Status::Unknown {
                    Status::Unknown
                } else if at_least(Status::Critical) {
                    Status::Critical
                } else if at_least(Status::Warning) {
                    Status::Warning
                } else {
                    Status::Ok
                }
            }
        };
        self.gate(rule, now)
    }

    /// Re-applies `for` and `keep_firing_for` to the last judgement at
    /// `now` (the evaluator's timer: a pending time can end between
    /// datapoints).
    pub fn gate(&mut self, rule: &Rule, now: i64) -> Status {
        let mut next = if self.raw != Status::Ok {
            let since = *self.pending_since.get_or_insert(now);
            if self.gated != Status::Ok || now - since >= rule.for_ {
                self.raw
            } else {
                Status::Ok
            }
        } else {
            self.pending_since = None;
            Status::Ok
        };
        if next == Status::Ok && self.gated != Status::Ok && rule.keep_firing_for > 0 {
            let since = *self.clear_since.get_or_insert(now);
            if now - since < rule.keep_firing_for {
                next = self.gated;
            }
        }
        if self.raw != Status::Ok || next == Status::Ok {
            self.clear_since = None;
        }
        self.gated = next;
        next
    }

    /// Whether a pending time or a keep-firing time is running (the timer
    /// must look again).
    pub fn waiting(&self) -> bool {
        (self.raw != Status::Ok && self.gated == Status::Ok)
            || (self.raw == Status::Ok && self.gated != Status::Ok)
    }
}

/// Order of badness for M-of-N: OK < WARNING < CRITICAL (UNKNOWN apart).
fn severity(s: Status) -> u8 {
    match s {
        Status::Ok => 0,
        Status::Warning => 1,
        Status::Critical => 2,
        Status::Unknown => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alarms::rules::{Rule, RuleContext, RuleSource};
    use crate::config::FileConfig;

    fn rule(extra: &str) -> Rule {
        let text = format!(
            "[[rules]]\nname = \"r\"\nkind = \"threshold\"\nmetric = \"cpu.busy_pct\"\nwarning = \"~:80\"\ncritical = \"~:95\"\nwindow = \"10s\"\n{extra}"
        );
        let cfg = FileConfig::parse(&text).unwrap();
        Rule::parse(
            &cfg.rules[0],
            RuleSource::File,
            RuleContext {
                base_step: 10,
                liveness_timeout: 30,
            },
            "rules[0]",
        )
        .unwrap()
    }

    fn b(ts: i64, v: f64) -> Bucket {
        Bucket {
            ts,
            avg: v,
            min: v - 1.0,
            max: v + 1.0,
            last: v,
            count: 10,
        }
    }

    #[test]
    fn for_fires_exactly_when_the_pending_time_is_over() {
        let r = rule("for = \"30s\"");
        let mut c = Condition::new(0);
        assert_eq!(
            c.datapoint(&r, Status::Critical, Some(99.0), 100),
            Status::Ok
        );
        assert_eq!(
            c.datapoint(&r, Status::Critical, Some(99.0), 110),
            Status::Ok
        );
        assert_eq!(c.gate(&r, 129), Status::Ok);
        assert!(c.waiting());
        assert_eq!(
            c.gate(&r, 130),
            Status::Critical,
            "30 s after the first breach"
        );
        // One good datapoint restarts the pending time.
        assert_eq!(c.datapoint(&r, Status::Ok, Some(10.0), 140), Status::Ok);
        assert_eq!(
            c.datapoint(&r, Status::Critical, Some(99.0), 150),
            Status::Ok
        );
        assert_eq!(c.gate(&r, 179), Status::Ok);
        assert_eq!(c.gate(&r, 180), Status::Critical);
    }

    #[test]
    fn m_of_n_needs_m_breaches_among_the_last_n() {
        let r = rule("datapoints = \"3/5\"");
        let mut c = Condition::new(0);
        use metrolog_protocol::nagios::CheckStatus::*;
        // judged → what 3 of the last 5 give
        let seq = [
            (Critical, Ok),       // [C]
            (Ok, Ok),             // [C,O]
            (Critical, Ok),       // [C,O,C]
            (Warning, Warning),   // [C,O,C,W]: three at least WARNING
            (Critical, Critical), // [C,O,C,W,C]: three CRITICAL
            (Ok, Warning),        // [O,C,W,C,O]
            (Ok, Warning),        // [C,W,C,O,O]
            (Ok, Ok),             // [W,C,O,O,O]
        ];
        for (i, (judged, want)) in seq.iter().enumerate() {
            assert_eq!(
                c.datapoint(&r, *judged, None, 10 * i as i64),
                *want,
                "datapoint {i}"
            );
        }
    }

    #[test]
    fn keep_firing_for_holds_the_alarm_after_recovery() {
        let r = rule("keep_firing_for = \"20s\"");
        let mut c = Condition::new(0);
        assert_eq!(
            c.datapoint(&r, Status::Critical, None, 10),
            Status::Critical
        );
        assert_eq!(c.datapoint(&r, Status::Ok, None, 20), Status::Critical);
        assert_eq!(c.gate(&r, 39), Status::Critical);
        assert_eq!(c.gate(&r, 40), Status::Ok);
    }

    #[test]
    fn the_window_consolidates_with_its_cf() {
        let mut c = Condition::new(0);
        c.add_buckets(&[b(10, 10.0), b(20, 20.0), b(30, 60.0)], 20);
        // 20 s window ending at 30: buckets ending at 20 and 30.
        assert_eq!(c.window_value(Cf::Avg), Some(40.0));
        assert_eq!(c.window_value(Cf::Min), Some(19.0));
        assert_eq!(c.window_value(Cf::Max), Some(61.0));
        assert_eq!(c.window_value(Cf::Last), Some(60.0));
        assert!(!c.add_buckets(&[b(30, 1.0)], 20), "not newer: ignored");
    }

    #[test]
    fn counts_age_out_of_the_window() {
        let mut c = Condition::new(0);
        c.add_count(100, 3);
        c.add_count(100, 2);
        c.add_count(130, 1);
        assert_eq!(c.count(130, 60), 6);
        assert_eq!(c.count(160, 60), 1);
        assert_eq!(c.count(190, 60), 0);
    }
}
