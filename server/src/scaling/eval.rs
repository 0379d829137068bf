//! The pure evaluation of one policy, round by round: the group's aggregate
//! at each recorded round in, a scale decision (or none) out. The live runner
//! and the dry-run call the same [`PolicyState::judge`] with the same inputs,
//! so a dry-run over history says what the live policy would have done.
//!
//! Time here is the round's time (the group recorder's step), never the wall
//! clock: `for`, M-of-N and cooldowns count rounds' times, so replaying
//! history judges it as it was judged live.
//!
//! - the **window** value is the mean of the round values in
//!   `(ts − window, ts]` (as a CloudWatch period statistic);
//! - each round is **high** (above `scale_out_above`, or with `target` alone
//!   above `target × (1 + tolerance)`), **low** (below `scale_in_below`, or
//!   below `target × (1 − tolerance)`) or between: two thresholds, so a
//!   value between them never fires (hysteresis);
//! - a side fires once it held for `for` (from the first round on that side)
//!   or, with `datapoints = "M/N"`, when M of the last N rounds were on it;
//! - a direction fires again only `cooldown` after its last event (each
//!   direction has its own), and only while its side still holds;
//! - `desired_size` is `ceil(current × value / target)` with `target`
//!   (current when within the tolerance), else current ± `step`, clamped to
//!   `[min_size, max_size]`; a decision that would not change the size
//!   (already at `max_size`, say) fires nothing.

use super::policy::{Direction, Policy};
use std::collections::VecDeque;

/// One recorded round of the policy's group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoundInput {
    /// The round's time (unix seconds).
    pub ts: i64,
    /// The group's aggregate of the policy's metric at this round (members
    /// in warmup left out), `None` when no member had a fresh value.
    pub value: Option<f64>,
    /// Live (`up`) members at this round.
    pub current_size: u32,
}

/// What a round decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub direction: Direction,
    pub ts: i64,
    /// The window's value the decision saw.
    pub value: f64,
    /// The threshold crossed (or `target` when it alone decides).
    pub threshold: f64,
    pub current_size: u32,
    pub desired_size: u32,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    High,
    Low,
    Between,
}

/// One policy's memory between rounds.
#[derive(Debug, Clone, Default)]
pub struct PolicyState {
    /// Round values inside the window, oldest first.
    window: VecDeque<(i64, f64)>,
    /// Sides of the last N rounds (M-of-N).
    sides: VecDeque<Side>,
    /// The side held since this round's time.
    since: Option<(Side, i64)>,
    /// Time of the last event of each direction (cooldowns).
    pub last_out: Option<i64>,
    pub last_in: Option<i64>,
}

/// What [`PolicyState::judge`] saw and decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    /// The window's value, when it held any.
    pub aggregate: Option<f64>,
    pub decision: Option<Decision>,
}

impl PolicyState {
    /// A state that remembers the last events (after a restart, a reload).
    pub fn with_history(last_out: Option<i64>, last_in: Option<i64>) -> Self {
        Self {
            last_out,
            last_in,
            ..Default::default()
        }
    }

    fn side(p: &Policy, v: f64) -> (Side, f64) {
        let high = match (p.scale_out_above, p.target) {
            (Some(a), _) => (v > a).then_some(a),
            (None, Some(t)) => (v > t * (1.0 + p.tolerance)).then_some(t),
            _ => None,
        };
        if let Some(th) = high {
            return (Side::High, th);
        }
        let low = match (p.scale_in_below, p.target) {
            (Some(b), _) => (v < b).then_some(b),
            (None, Some(t)) => (v < t * (1.0 - p.tolerance)).then_some(t),
            _ => None,
        };
        match low {
            Some(th) => (Side::Low, th),
            None => (Side::Between, 0.0),
        }
    }

    fn desired(p: &Policy, dir: Direction, v: f64, current: u32) -> u32 {
        let raw = match p.target {
            Some(t) => {
                let ratio = v / t;
                if (ratio - 1.0).abs() <= p.tolerance {
                    current
                } else {
                    // With no live member the ratio has nothing to scale:
                    // count the group as one.
                    let base = f64::from(current.max(1));
                    let d = (base * ratio).ceil();
                    if d.is_finite() {
                        d.clamp(0.0, f64::from(u32::MAX)) as u32
                    } else {
                        current
                    }
                }
            }
            None => match dir {
                Direction::Out => current.saturating_add(p.step),
                Direction::In => current.saturating_sub(p.step),
            },
        };
        raw.clamp(p.min_size, p.max_size)
    }

    /// Judges one round.
    pub fn judge(&mut self, p: &Policy, r: RoundInput) -> Judged {
        if let Some(v) = r.value.filter(|v| v.is_finite()) {
            self.window.push_back((r.ts, v));
        }
        while self
            .window
            .front()
            .is_some_and(|(t, _)| *t <= r.ts - p.window)
        {
            self.window.pop_front();
        }
        if self.window.is_empty() {
            // No data: nothing is judged and no streak survives it.
            self.since = None;
            self.sides.clear();
            return Judged {
                aggregate: None,
                decision: None,
            };
        }
        let value = self.window.iter().map(|(_, v)| v).sum::<f64>() / self.window.len() as f64;
        let (side, threshold) = Self::side(p, value);
        if self.since.is_none_or(|(s, _)| s != side) {
            self.since = Some((side, r.ts));
        }
        if let Some((_, n)) = p.datapoints {
            self.sides.push_back(side);
            while self.sides.len() > n as usize {
                self.sides.pop_front();
            }
        }
        let dir = match side {
            Side::High => Direction::Out,
            Side::Low => Direction::In,
            Side::Between => {
                return Judged {
                    aggregate: Some(value),
                    decision: None,
                }
            }
        };
        let held = match p.datapoints {
            Some((m, _)) => self.sides.iter().filter(|s| **s == side).count() >= m as usize,
            None => self.since.is_some_and(|(_, t)| r.ts - t >= p.for_),
        };
        let last = match dir {
            Direction::Out => self.last_out,
            Direction::In => self.last_in,
        };
        let cooled = last.is_none_or(|t| r.ts - t >= p.cooldown);
        if !held || !cooled {
            return Judged {
                aggregate: Some(value),
                decision: None,
            };
        }
        let desired = Self::desired(p, dir, value, r.current_size);
        let changes = match dir {
            Direction::Out => desired > r.current_size,
            Direction::In => desired < r.current_size,
        };
        if !changes {
            return Judged {
                aggregate: Some(value),
                decision: None,
            };
        }
        match dir {
            Direction::Out => self.last_out = Some(r.ts),
            Direction::In => self.last_in = Some(r.ts),
        }
        let how = match p.datapoints {
            Some((m, n)) => format!("in {m} of the last {n} rounds"),
            None if p.for_ > 0 => format!("for {} s", p.for_),
            None => "at this round".to_string(),
        };
        let (word, cmp) = match (dir, p.scale_out_above, p.scale_in_below) {
            (Direction::Out, Some(_), _) => ("above scale_out_above", ">"),
            (Direction::In, _, Some(_)) => ("below scale_in_below", "<"),
            (Direction::Out, None, _) => ("above target (beyond tolerance)", ">"),
            (Direction::In, _, None) => ("below target (beyond tolerance)", "<"),
        };
        let reason = format!(
            "{agg}({metric}) over {w} s = {value:.3} {cmp} {threshold} {word} {how}; {cur} live member(s) → {desired}",
            agg = p.aggregation.as_str(),
            metric = p.metric.as_str(),
            w = p.window,
            cur = r.current_size,
        );
        Judged {
            aggregate: Some(value),
            decision: Some(Decision {
                direction: dir,
                ts: r.ts,
                value,
                threshold,
                current_size: r.current_size,
                desired_size: desired,
                reason,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scaling::policy::Policy;

    fn policy(extra: &str) -> Policy {
        crate::scaling::policy::test_policy("p", "cpu.busy_pct", extra)
    }

    /// Rounds every 10 s from t = 1000, one value each, at `size` members.
    fn run(p: &Policy, values: &[f64], size: u32) -> Vec<Decision> {
        let mut st = PolicyState::default();
        values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| {
                st.judge(
                    p,
                    RoundInput {
                        ts: 1000 + 10 * i as i64,
                        value: Some(*v),
                        current_size: size,
                    },
                )
                .decision
            })
            .collect()
    }

    #[test]
    fn hysteresis_between_the_thresholds_nothing_fires() {
        let p = policy("scale_out_above = 75\nscale_in_below = 25\ncooldown = \"0s\"");
        assert!(run(&p, &[30.0, 50.0, 74.9, 75.0, 25.0, 60.0], 4).is_empty());
        let d = run(&p, &[50.0, 80.0, 20.0], 4);
        assert_eq!(d.len(), 2);
        assert_eq!((d[0].direction, d[0].desired_size), (Direction::Out, 5));
        assert_eq!((d[1].direction, d[1].desired_size), (Direction::In, 3));
        assert_eq!(d[0].threshold, 75.0);
    }

    #[test]
    fn for_waits_until_the_side_held_that_long() {
        let p = policy("scale_out_above = 75\nfor = \"20s\"");
        // High at 1010, 1020, 1030: held 20 s at 1030.
        let d = run(&p, &[10.0, 80.0, 80.0, 80.0, 80.0], 4);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].ts, 1030);
        // A dip between thresholds restarts the wait.
        let d = run(&p, &[80.0, 80.0, 50.0, 80.0, 80.0], 4);
        assert!(d.is_empty(), "{d:?}");
    }

    #[test]
    fn m_of_n_counts_rounds_on_the_side() {
        let p = policy("scale_out_above = 75\ndatapoints = \"3/5\"\ncooldown = \"1h\"");
        let d = run(&p, &[80.0, 50.0, 80.0, 50.0, 80.0, 80.0], 4);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].ts, 1040, "the third high of five");
    }

    #[test]
    fn cooldown_is_per_direction_and_refires_while_the_side_holds() {
        let p = policy("scale_out_above = 75\nscale_in_below = 25\ncooldown = \"30s\"");
        let vals = [80.0, 80.0, 80.0, 80.0, 10.0, 10.0];
        let d = run(&p, &vals, 4);
        let kinds: Vec<(Direction, i64)> = d.iter().map(|d| (d.direction, d.ts)).collect();
        // Out at 1000, again at 1030 (cooled, still high); in at 1040 at once:
        // the scale-out's cooldown does not hold a scale-in.
        assert_eq!(
            kinds,
            vec![
                (Direction::Out, 1000),
                (Direction::Out, 1030),
                (Direction::In, 1040)
            ]
        );
        // The state remembers events from before (a restart).
        let mut st = PolicyState::with_history(Some(995), None);
        let j = st.judge(
            &p,
            RoundInput {
                ts: 1000,
                value: Some(90.0),
                current_size: 4,
            },
        );
        assert!(j.decision.is_none());
        assert_eq!(j.aggregate, Some(90.0));
    }

    #[test]
    fn target_tracking_with_tolerance_and_clamping() {
        let p = policy("target = 50\ncooldown = \"0s\"");
        // 4 × 80 / 50 = 6.4 → 7.
        let d = run(&p, &[80.0], 4);
        assert_eq!(d[0].desired_size, 7);
        assert_eq!(d[0].direction, Direction::Out);
        // Within 10 %: nothing.
        assert!(run(&p, &[54.0, 46.0], 4).is_empty());
        // 6 × 10 / 50 = 1.2 → 2, clamped to min_size 3.
        let d = run(&p, &[10.0], 6);
        assert_eq!((d[0].direction, d[0].desired_size), (Direction::In, 3));
        // Clamped to max_size 10: 8 × 100 / 50 = 16 → 10.
        assert_eq!(run(&p, &[100.0], 8)[0].desired_size, 10);
        // Already at max_size: a scale-out would change nothing, none fires.
        assert!(run(&p, &[100.0], 10).is_empty());
        // Already at min: no scale-in.
        assert!(run(&p, &[1.0], 3).is_empty());
    }

    #[test]
    fn the_window_averages_rounds_and_no_data_breaks_streaks() {
        let p = policy("scale_out_above = 75\nwindow = \"30s\"\nfor = \"10s\"");
        // The window is (ts − 30 s, ts]; its value is the mean of its rounds.
        let mut st = PolicyState::default();
        let mut seen = Vec::new();
        for (i, v) in [Some(60.0), Some(90.0), None, Some(90.0), Some(90.0)]
            .iter()
            .enumerate()
        {
            let j = st.judge(
                &p,
                RoundInput {
                    ts: 1000 + 10 * i as i64,
                    value: *v,
                    current_size: 3,
                },
            );
            seen.push((j.aggregate, j.decision.map(|d| d.ts)));
        }
        assert_eq!(seen[0], (Some(60.0), None));
        assert_eq!(seen[1], (Some(75.0), None), "75 is not above 75");
        assert_eq!(
            seen[2],
            (Some(75.0), None),
            "a round without data adds nothing"
        );
        assert_eq!(
            seen[3],
            (Some(90.0), None),
            "60 (at 1000) left the window; high from now"
        );
        assert_eq!(seen[4], (Some(90.0), Some(1040)));
    }
}
