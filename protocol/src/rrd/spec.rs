//! The shape of a series' archives: the finest step, the heartbeat, xff and the ladder of
//! consolidated archives. Checked once, when a spec is built from configuration.

use std::fmt;

/// One round-robin archive: `rows` rows, each consolidating `step` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArchiveSpec {
    /// Seconds covered by one row; a multiple of [`RrdSpec::base_step`].
    pub step: u32,
    /// Number of rows kept; the archive spans `step × rows` seconds.
    pub rows: u32,
}

impl ArchiveSpec {
    pub const fn new(step: u32, rows: u32) -> Self {
        Self { step, rows }
    }

    /// Seconds of history the archive holds.
    pub fn span(&self) -> u64 {
        u64::from(self.step) * u64::from(self.rows)
    }
}

/// Everything that fixes how one series is consolidated and how big it is.
///
/// The equivalent rrdtool file is
/// `rrdtool create F --step BASE DS:v:GAUGE:HEARTBEAT:U:U` plus, for every archive,
/// `RRA:{AVERAGE,MIN,MAX,LAST}:XFF:STEP/BASE:ROWS`.
#[derive(Debug, Clone, PartialEq)]
pub struct RrdSpec {
    /// Seconds per primary data point (rrdtool's `--step`).
    pub base_step: u32,
    /// Longest gap between two samples that still counts as known (rrdtool's
    /// minimal heartbeat). Default: 3 × `base_step`.
    pub heartbeat: u32,
    /// Largest fraction of a consolidated row that may be unknown while the row stays
    /// known (rrdtool's xff), in `[0, 1)`.
    pub xff: f64,
    /// The archives, finest first.
    pub archives: Vec<ArchiveSpec>,
}

/// Upper bounds that keep one series' storage reasonable whatever the configuration says.
pub const MAX_ARCHIVES: usize = 32;
/// Most rows one archive may have (about 8 MB of rows at most per archive).
pub const MAX_ROWS: u32 = 200_000;

impl RrdSpec {
    /// The default ladder of the contract: 10 s × 360 (1 h), 1 min × 1440 (1 day),
    /// 5 min × 2016 (1 week), 1 h × 744 (31 days), 1 day × 730 (2 years);
    /// heartbeat 30 s, xff 0.5.
    pub fn default_ladder() -> Self {
        Self::with_archives(
            10,
            vec![
                ArchiveSpec::new(10, 360),
                ArchiveSpec::new(60, 1440),
                ArchiveSpec::new(300, 2016),
                ArchiveSpec::new(3600, 744),
                ArchiveSpec::new(86400, 730),
            ],
        )
    }

    /// A spec with the default heartbeat (3 × `base_step`) and xff (0.5).
    pub fn with_archives(base_step: u32, archives: Vec<ArchiveSpec>) -> Self {
        Self {
            base_step,
            heartbeat: base_step.saturating_mul(3),
            xff: 0.5,
            archives,
        }
    }

    /// Checks every rule and reports every violation at once.
    pub fn validate(&self) -> Result<(), SpecError> {
        let mut problems = Vec::new();
        if self.base_step == 0 {
            problems.push("base_step is 0 seconds; it must be at least 1".to_string());
        }
        if self.heartbeat == 0 {
            problems.push(
                "heartbeat is 0 seconds; it must be at least 1 (default: 3 × base_step)"
                    .to_string(),
            );
        }
        if !(self.xff >= 0.0 && self.xff < 1.0) {
            problems.push(format!(
                "xff is {}; it must be at least 0 and below 1 (default 0.5)",
                self.xff
            ));
        }
        if self.archives.is_empty() {
            problems.push("no archives; give at least one (step, rows)".to_string());
        }
        if self.archives.len() > MAX_ARCHIVES {
            problems.push(format!(
                "{} archives; at most {MAX_ARCHIVES} are allowed",
                self.archives.len()
            ));
        }
        for (i, a) in self.archives.iter().enumerate() {
            if a.step == 0 {
                problems.push(format!("archive {i}: step is 0 seconds"));
            } else if self.base_step != 0 && a.step % self.base_step != 0 {
                problems.push(format!(
                    "archive {i}: step {} s is not a multiple of base_step {} s",
                    a.step, self.base_step
                ));
            }
            if a.rows == 0 {
                problems.push(format!("archive {i}: rows is 0; it must be at least 1"));
            } else if a.rows > MAX_ROWS {
                problems.push(format!(
                    "archive {i}: {} rows exceeds the limit of {MAX_ROWS}; use a coarser step",
                    a.rows
                ));
            }
            if i > 0 && a.step <= self.archives[i - 1].step {
                problems.push(format!(
                    "archive {i}: step {} s is not larger than the previous archive's {} s; list archives finest first, one per step",
                    a.step,
                    self.archives[i - 1].step
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(SpecError { problems })
        }
    }

    /// Primary data points per row of archive `index`.
    pub fn pdp_per_row(&self, index: usize) -> u32 {
        self.archives[index].step / self.base_step
    }

    /// The archive `rrdtool fetch -r RESOLUTION -s FROM -e TO` would read from a series
    /// last updated at `last_update`: among the archives that still hold `from`, the
    /// one whose step is nearest to `resolution`; when none reaches back that far, the
    /// one covering most of the range.
    pub fn choose_archive(&self, last_update: i64, from: i64, to: i64, resolution: u32) -> usize {
        let mut best_full: Option<(u64, usize)> = None;
        let mut best_part: Option<(i64, u64, usize)> = None;
        for (i, a) in self.archives.iter().enumerate() {
            let astep = i64::from(a.step);
            let cal_end = last_update - last_update.rem_euclid(astep);
            let cal_start = cal_end - astep * i64::from(a.rows);
            let step_diff = u64::from(resolution.abs_diff(a.step));
            if cal_start <= from {
                if best_full.is_none_or(|(d, _)| step_diff < d) {
                    best_full = Some((step_diff, i));
                }
            } else {
                let covered = to
                    .saturating_sub(from)
                    .saturating_sub(cal_start.saturating_sub(from));
                if best_part.is_none_or(|(m, d, _)| covered > m || (covered == m && step_diff < d))
                {
                    best_part = Some((covered, step_diff, i));
                }
            }
        }
        best_full
            .map(|(_, i)| i)
            .or(best_part.map(|(_, _, i)| i))
            .unwrap_or(0)
    }
}

impl Default for RrdSpec {
    fn default() -> Self {
        Self::default_ladder()
    }
}

/// Every reason a [`RrdSpec`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SpecError {
    pub problems: Vec<String>,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid archive specification: {}",
            self.problems.join("; ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ladder_is_valid_and_matches_the_contract() {
        let spec = RrdSpec::default_ladder();
        spec.validate().unwrap();
        assert_eq!(spec.heartbeat, 30);
        assert_eq!(spec.xff, 0.5);
        let shape: Vec<_> = spec.archives.iter().map(|a| (a.step, a.rows)).collect();
        assert_eq!(
            shape,
            [
                (10, 360),
                (60, 1440),
                (300, 2016),
                (3600, 744),
                (86400, 730)
            ]
        );
        assert_eq!(spec.archives[4].span(), 730 * 86400);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let spec = RrdSpec {
            base_step: 10,
            heartbeat: 0,
            xff: 1.0,
            archives: vec![
                ArchiveSpec::new(15, 10),
                ArchiveSpec::new(10, 0),
                ArchiveSpec::new(0, 5),
            ],
        };
        let err = spec.validate().unwrap_err();
        let text = err.to_string();
        assert!(text.contains("heartbeat is 0"), "{text}");
        assert!(text.contains("xff is 1"), "{text}");
        assert!(text.contains("not a multiple of base_step"), "{text}");
        assert!(text.contains("archive 1: rows is 0"), "{text}");
        assert!(text.contains("archive 2: step is 0"), "{text}");
        assert!(text.contains("finest first"), "{text}");
    }

    #[test]
    fn nan_xff_and_empty_ladders_are_refused() {
        let mut spec = RrdSpec::with_archives(10, vec![]);
        spec.xff = f64::NAN;
        let err = spec.validate().unwrap_err();
        assert_eq!(err.problems.len(), 2, "{err}");
    }
}
