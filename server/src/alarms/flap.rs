//! Nagios' flap detection: the last 21 states of an alarm, the percentage of
//! state changes among them weighted from 0.8 (oldest) to 1.2 (newest), and
//! two thresholds: flapping starts at or above `high`, stops below `low`.
//! (Nagios Core 4, `check_for_service_flapping`: 21 states, 20 possible
//! changes, weights 0.8 + 0.4 × i / 19, defaults low 25 %, high 50 %.)

use super::Status;

/// States remembered.
pub const HISTORY: usize = 21;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlapThresholds {
    pub low: f64,
    pub high: f64,
}

impl Default for FlapThresholds {
    fn default() -> Self {
        Self {
            low: 25.0,
            high: 50.0,
        }
    }
}

/// The last [`HISTORY`] states, oldest first, stored as letters (`OWCU`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlapHistory(Vec<Status>);

impl FlapHistory {
    pub fn push(&mut self, s: Status) {
        if self.0.len() == HISTORY {
            self.0.remove(0);
        }
        self.0.push(s);
    }

    /// Weighted percentage of state changes (0–100).
    pub fn percent_change(&self) -> f64 {
        let n = self.0.len();
        if n < 2 {
            return 0.0;
        }
        let mut total = 0.0;
        // Change i (1-based, oldest first) of the 20 possible ones; a short
        // history is aligned to the newest end so recent changes weigh most.
        let offset = HISTORY - n;
        for i in 1..n {
            if self.0[i] != self.0[i - 1] {
                let k = (i + offset - 1) as f64; // 0 ..= 19
                total += 0.8 + 0.4 * k / (HISTORY as f64 - 2.0);
            }
        }
        total * 100.0 / (HISTORY as f64 - 1.0)
    }

    pub fn to_text(&self) -> String {
        self.0
            .iter()
            .map(|s| match s {
                Status::Ok => 'O',
                Status::Warning => 'W',
                Status::Critical => 'C',
                Status::Unknown => 'U',
            })
            .collect()
    }

    pub fn from_text(text: &str) -> Self {
        let mut h = Self::default();
        for c in text.chars() {
            h.push(match c {
                'O' => Status::Ok,
                'W' => Status::Warning,
                'C' => Status::Critical,
                _ => Status::Unknown,
            });
        }
        h
    }
}

/// Whether an alarm flaps after its history moved: starts at or above
/// `high`, stops below `low`, otherwise keeps what it was (hysteresis).
pub fn flapping(was: bool, percent: f64, t: FlapThresholds) -> bool {
    if was {
        percent >= t.low
    } else {
        percent >= t.high
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_states_do_not_flap_and_alternation_does() {
        let mut h = FlapHistory::default();
        for _ in 0..30 {
            h.push(Status::Ok);
        }
        assert_eq!(h.percent_change(), 0.0);
        let mut alt = FlapHistory::default();
        for i in 0..21 {
            alt.push(if i % 2 == 0 {
                Status::Ok
            } else {
                Status::Critical
            });
        }
        // Every one of the 20 pairs changes: the weights average 1.0.
        assert!(
            (alt.percent_change() - 100.0).abs() < 1e-9,
            "{}",
            alt.percent_change()
        );
    }

    #[test]
    fn recent_changes_weigh_more_than_old_ones() {
        let mut old = FlapHistory::default();
        let mut new = FlapHistory::default();
        for i in 0..21 {
            old.push(if i == 1 { Status::Critical } else { Status::Ok });
            new.push(if i == 19 {
                Status::Critical
            } else {
                Status::Ok
            });
        }
        assert!(new.percent_change() > old.percent_change());
        // Two changes at the oldest end: (0.8 + 0.821) / 20.
        assert!((old.percent_change() - (0.8 + 0.8 + 0.4 / 19.0) * 5.0).abs() < 1e-9);
    }

    #[test]
    fn hysteresis_between_low_and_high() {
        let t = FlapThresholds::default();
        assert!(!flapping(false, 40.0, t));
        assert!(flapping(false, 50.0, t));
        assert!(flapping(true, 30.0, t));
        assert!(!flapping(true, 24.9, t));
    }

    #[test]
    fn text_round_trips() {
        let mut h = FlapHistory::default();
        for s in [
            Status::Ok,
            Status::Warning,
            Status::Critical,
            Status::Unknown,
        ] {
            h.push(s);
        }
        assert_eq!(h.to_text(), "OWCU");
        assert_eq!(FlapHistory::from_text("OWCU"), h);
    }
}
