//! Reading metrics back: time expressions, the choice of archive from the range
//! (or the asked-for step), and rows read from the round-robin archives.
//!
//! Rows follow `rrdtool fetch`: a row labelled T covers (T − step, T], T a
//! multiple of step, and a row is unknown when more than xff of it is.

mod spec;

pub use spec::{
    host_ids, read, resolve, run, series_of, QueryError, QueryResult, QuerySpec, Resolved, Rows,
    SeriesPoints, Target, BASE_STEP,
};

use metrolog_protocol::rrd::{self, FetchedRows, RrdSpec};

/// The default archive ladder: (step seconds, rows).
pub const LADDER: [(i64, i64); 5] = [
    (10, 360),
    (60, 1440),
    (300, 2016),
    (3600, 744),
    (86_400, 730),
];

/// Most rows one series may return.
pub const MAX_ROWS: i64 = 20_000;

/// Fraction of a row that may be unknown before the row is unknown (rrdtool's xff).
pub const XFF: f64 = 0.5;

/// Consolidation functions are the archive engine's own.
pub use rrd::Cf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agg {
    Avg,
    Sum,
    Min,
    Max,
}

impl Agg {
    pub const ALL: [Agg; 4] = [Agg::Avg, Agg::Sum, Agg::Min, Agg::Max];

    /// The name `parse` reads, and the `agg` label of a group's series.
    pub fn as_str(self) -> &'static str {
        match self {
            Agg::Avg => "avg",
            Agg::Sum => "sum",
            Agg::Min => "min",
            Agg::Max => "max",
        }
    }

    pub fn parse(text: &str) -> Result<Agg, String> {
        match text {
            "avg" => Ok(Agg::Avg),
            "sum" => Ok(Agg::Sum),
            "min" => Ok(Agg::Min),
            "max" => Ok(Agg::Max),
            _ => Err(format!("unknown agg {text:?}: use avg, sum, min or max")),
        }
    }
}

/// Parses a time: unix seconds, RFC 3339, `now`, or relative to `now` (`-1h`,
/// `-7d`, `-30m`).
pub fn parse_time(text: &str, now: i64) -> Result<i64, String> {
    let t = text.trim();
    if t.is_empty() || t == "now" {
        return Ok(now);
    }
    if let Some(rel) = t.strip_prefix('-').or_else(|| t.strip_prefix("now-")) {
        if rel.chars().next().is_some_and(|c| c.is_ascii_digit())
            && !rel.chars().all(|c| c.is_ascii_digit())
        {
            let d = metrolog_protocol::parse_duration(rel).map_err(|e| e.to_string())?;
            return Ok(now - d.as_secs() as i64);
        }
    }
    if let Ok(n) = t.parse::<i64>() {
        if n < 0 {
            return Err(format!("time {t:?} is before 1970"));
        }
        return Ok(n);
    }
    chrono::DateTime::parse_from_rfc3339(t)
        .map(|d| d.timestamp())
        .map_err(|_| format!("cannot read time {t:?}: use unix seconds, RFC 3339, `now` or `-1h`"))
}

/// The step the range is read at: the finest archive whose span still reaches
/// back to `from` (as rrdtool chooses), unless a step was asked for.
pub fn choose_step(from: i64, now: i64) -> i64 {
    for (step, rows) in LADDER {
        if now - step * rows <= from {
            return step;
        }
    }
    LADDER[LADDER.len() - 1].0
}

/// Row labels for (from, to] at `step`: every multiple of step T with from < T ≤ to.
pub fn row_times(from: i64, to: i64, step: i64) -> impl Iterator<Item = i64> {
    let first = (from.div_euclid(step) + 1) * step;
    (first..=to).step_by(step as usize)
}

/// The archive a query reads and the row width it answers with, from the archive
/// specification `spec` for series last updated at `last_update` (the newest
/// update of the series read, as `rrdtool fetch` counts an archive's reach from
/// the file's last update, never from the wall clock): among the archives that
/// still hold `from`, the one whose step is nearest to the asked-for step (the
/// finest when none was asked for); when none reaches back that far, the one
/// covering most of the range. When the asked-for step is a multiple of the
/// archive's, rows are consolidated further to that step. Returns
/// `(archive step, row width)`.
pub fn choose_archive(
    spec: &RrdSpec,
    from: i64,
    to: i64,
    step: Option<i64>,
    last_update: i64,
) -> (i64, i64) {
    let resolution = step.map_or(1, |s| u32::try_from(s.max(1)).unwrap_or(u32::MAX));
    let i = spec.choose_archive(last_update, from, to, resolution);
    let archive = i64::from(spec.archives[i].step);
    match step {
        Some(s) if s > archive && s % archive == 0 => (archive, s),
        _ => (archive, archive),
    }
}

/// Rows of width `step` from rows read from an archive (whose `start` is aligned on
/// `step`): with equal widths the rows themselves, else every `step / rows.step`
/// rows consolidated as rrdtool consolidates steps: the average of the known rows
/// weighted by their known steps, the extremes of their extremes, the last row's
/// last; unknown when more than `xff` of the base steps are unknown.
pub fn coarsen(rows: &FetchedRows, step: i64, base_step: u32, xff: f64, cf: Cf) -> Rows {
    let width = i64::from(rows.step);
    if step <= width {
        return rows
            .rows
            .iter()
            .enumerate()
            .map(|(k, r)| (rows.start + (k as i64 + 1) * width, r.value(cf)))
            .collect();
    }
    let per = (step / width).max(1) as usize;
    let total_pdps = (step / i64::from(base_step.max(1))) as f64;
    rows.rows
        .chunks(per)
        .enumerate()
        .map(|(k, group)| {
            let label = rows.start + (k as i64 + 1) * step;
            let known: Vec<&rrd::Row> = group.iter().filter(|r| r.is_known()).collect();
            let pdps: u64 = known.iter().map(|r| u64::from(r.count)).sum();
            if known.is_empty() || total_pdps - pdps as f64 > xff * total_pdps || group.len() < per
            {
                return (label, None);
            }
            let v = match cf {
                Cf::Avg => {
                    known
                        .iter()
                        .map(|r| r.avg * f64::from(r.count))
                        .sum::<f64>()
                        / pdps as f64
                }
                Cf::Min => known.iter().map(|r| r.min).fold(f64::INFINITY, f64::min),
                Cf::Max => known
                    .iter()
                    .map(|r| r.max)
                    .fold(f64::NEG_INFINITY, f64::max),
                Cf::Last => group[group.len() - 1].last,
            };
            (label, v.is_finite().then_some(v))
        })
        .collect()
}

/// Combines aligned rows of several series into one, ignoring unknown members;
/// a row is unknown only when every member is.
pub fn aggregate(members: &[Vec<(i64, Option<f64>)>], agg: Agg) -> Vec<(i64, Option<f64>)> {
    let Some(first) = members.first() else {
        return Vec::new();
    };
    // Member by member over all rows (each member's rows are read in
    // order), into one accumulator per row: no allocation per row.
    let start = match agg {
        Agg::Avg | Agg::Sum => 0.0,
        Agg::Min => f64::INFINITY,
        Agg::Max => f64::NEG_INFINITY,
    };
    let mut acc = vec![(start, 0u32); first.len()];
    for m in members {
        for ((v, n), x) in acc.iter_mut().zip(m) {
            let Some(x) = x.1 else { continue };
            *v = match agg {
                Agg::Avg | Agg::Sum => *v + x,
                Agg::Min => v.min(x),
                Agg::Max => v.max(x),
            };
            *n += 1;
        }
    }
    first
        .iter()
        .zip(acc)
        .map(|(&(t, _), (v, n))| {
            let v = match (n, agg) {
                (0, _) => None,
                (_, Agg::Avg) => Some(v / f64::from(n)),
                _ => Some(v),
            };
            (t, v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time("-1h", 10_000).unwrap(), 6400);
        assert_eq!(parse_time("now", 5).unwrap(), 5);
        assert_eq!(parse_time("1700000000", 0).unwrap(), 1_700_000_000);
        assert_eq!(
            parse_time("2023-11-14T22:13:20Z", 0).unwrap(),
            1_700_000_000
        );
        assert!(parse_time("yesterday", 0).is_err());
        assert!(parse_time("-5", 0).is_err());
    }

    #[test]
    fn default_step_follows_range() {
        let now = 1_000_000;
        assert_eq!(choose_step(now - 3600, now), 10);
        assert_eq!(choose_step(now - 6 * 3600, now), 60);
        assert_eq!(choose_step(now - 7 * 86400, now), 300);
        assert_eq!(choose_step(now - 30 * 86400, now), 3600);
        assert_eq!(choose_step(now - 365 * 86400, now), 86400);
    }

    fn row(v: f64, count: u32) -> rrd::Row {
        rrd::Row {
            avg: v,
            min: v - 1.0,
            max: v + 1.0,
            last: v,
            count,
        }
    }

    #[test]
    fn archive_follows_range_or_asked_step() {
        let spec = RrdSpec::default_ladder();
        let now = 1_000_000 * 60;
        assert_eq!(choose_archive(&spec, now - 3600, now, None, now), (10, 10));
        assert_eq!(
            choose_archive(&spec, now - 6 * 3600, now, None, now),
            (60, 60)
        );
        assert_eq!(
            choose_archive(&spec, now - 86400, now, Some(120), now),
            (60, 120)
        );
        assert_eq!(
            choose_archive(&spec, now - 3600, now, Some(30), now),
            (10, 30)
        );
        assert_eq!(
            choose_archive(&spec, now - 3600, now, Some(250), now),
            (300, 300)
        );
        assert_eq!(
            choose_archive(&spec, now - 7 * 86400, now, None, now),
            (300, 300)
        );
        assert_eq!(
            choose_archive(&spec, now - 400 * 86400, now, None, now),
            (86400, 86400)
        );
    }

    #[test]
    fn archive_reach_counts_from_the_last_update_not_the_clock() {
        let spec = RrdSpec::default_ladder();
        let now = 1_000_000 * 60;
        let died = now - 2 * 86_400;
        // The last hour before the host died: its 10 s rows are still there.
        assert_eq!(
            choose_archive(&spec, died - 3600, died, Some(10), died),
            (10, 10)
        );
        assert_eq!(
            choose_archive(&spec, died - 6 * 3600, died, Some(60), died),
            (60, 60)
        );
        // Counted from the clock, both would have read the 5 min archive.
        assert_eq!(
            choose_archive(&spec, died - 3600, died, Some(10), now).0,
            300
        );
    }

    #[test]
    fn coarser_rows_weigh_known_steps_and_respect_xff() {
        let unknown = rrd::Row::UNKNOWN;
        let rows = FetchedRows {
            start: 0,
            step: 10,
            rows: vec![
                row(1.0, 1),
                row(3.0, 1),
                row(5.0, 1),
                row(7.0, 1),
                unknown,
                unknown,
            ],
        };
        assert_eq!(
            coarsen(&rows, 10, 10, 0.5, Cf::Avg)[..2],
            [(10, Some(1.0)), (20, Some(3.0))]
        );
        // (0,30]: 3 of 3 known; (30,60]: 1 of 3 known, more than half unknown.
        assert_eq!(
            coarsen(&rows, 30, 10, 0.5, Cf::Avg),
            vec![(30, Some(3.0)), (60, None)]
        );
        assert_eq!(
            coarsen(&rows, 30, 10, 0.5, Cf::Max),
            vec![(30, Some(6.0)), (60, None)]
        );
        assert_eq!(
            coarsen(&rows, 30, 10, 0.5, Cf::Last),
            vec![(30, Some(5.0)), (60, None)]
        );
        assert_eq!(
            coarsen(&rows, 30, 10, 0.9, Cf::Min),
            vec![(30, Some(0.0)), (60, Some(6.0))]
        );
        // Rows of 1 min weigh by their known steps.
        let rows = FetchedRows {
            start: 0,
            step: 60,
            rows: vec![row(10.0, 6), row(40.0, 3)],
        };
        assert_eq!(
            coarsen(&rows, 120, 10, 0.5, Cf::Avg),
            vec![(120, Some(20.0))]
        );
    }

    #[test]
    fn aggregate_ignores_unknown_members() {
        let a = vec![(10, Some(1.0)), (20, None)];
        let b = vec![(10, Some(3.0)), (20, None)];
        assert_eq!(
            aggregate(&[a.clone(), b.clone()], Agg::Avg),
            vec![(10, Some(2.0)), (20, None)]
        );
        assert_eq!(
            aggregate(&[a.clone(), b.clone()], Agg::Sum),
            vec![(10, Some(4.0)), (20, None)]
        );
        let c = vec![(10, None), (20, Some(-5.0))];
        assert_eq!(
            aggregate(&[a.clone(), b.clone(), c.clone()], Agg::Min),
            vec![(10, Some(1.0)), (20, Some(-5.0))]
        );
        assert_eq!(
            aggregate(&[c, a, b], Agg::Max),
            vec![(10, Some(3.0)), (20, Some(-5.0))]
        );
    }
}
