//! Reading metrics back: time expressions, the choice of resolution from the
//! range, and consolidation of stored buckets into rows of that resolution.
//!
//! Rows follow `rrdtool fetch`: a row labelled T covers (T − step, T], T a
//! multiple of step, and a row is unknown when more than half of it is.

mod spec;

pub use spec::{
    host_ids, run, series_of, QueryError, QueryResult, QuerySpec, Rows, SeriesPoints, Target,
    BASE_STEP,
};

use crate::store::PointRow;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cf {
    Avg,
    Min,
    Max,
    Last,
}

impl Cf {
    pub fn parse(text: &str) -> Result<Cf, String> {
        match text.to_ascii_lowercase().as_str() {
            "avg" | "average" => Ok(Cf::Avg),
            "min" => Ok(Cf::Min),
            "max" => Ok(Cf::Max),
            "last" => Ok(Cf::Last),
            _ => Err(format!("unknown cf {text:?}: use avg, min, max or last")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agg {
    Avg,
    Sum,
    Min,
    Max,
}

impl Agg {
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

/// Consolidates stored buckets (each `base_step` wide, oldest first) into rows of
/// `step` over (from, to]. Unknown rows are `None`.
pub fn consolidate(
    points: &[PointRow],
    base_step: i64,
    from: i64,
    to: i64,
    step: i64,
    cf: Cf,
) -> Vec<(i64, Option<f64>)> {
    let mut out = Vec::new();
    let mut i = 0;
    for t in row_times(from, to, step) {
        while i < points.len() && points[i].ts <= t - step {
            i += 1;
        }
        let mut known = 0i64;
        let (mut sum, mut lo, mut hi, mut last) = (0.0, f64::INFINITY, f64::NEG_INFINITY, None);
        let mut j = i;
        while j < points.len() && points[j].ts <= t {
            let p = &points[j];
            if let (Some(a), Some(mn), Some(mx), Some(l)) = (p.avg, p.min, p.max, p.last) {
                known += base_step.min(step);
                sum += a;
                lo = lo.min(mn);
                hi = hi.max(mx);
                last = Some(l);
            }
            j += 1;
        }
        let n = known / base_step.min(step).max(1);
        let value = if known == 0 || (known as f64) < (1.0 - XFF) * step as f64 {
            None
        } else {
            match cf {
                Cf::Avg => Some(sum / n as f64),
                Cf::Min => Some(lo),
                Cf::Max => Some(hi),
                Cf::Last => last,
            }
        };
        out.push((t, value));
        i = j;
    }
    out
}

/// Combines aligned rows of several series into one, ignoring unknown members;
/// a row is unknown only when every member is.
pub fn aggregate(members: &[Vec<(i64, Option<f64>)>], agg: Agg) -> Vec<(i64, Option<f64>)> {
    let Some(first) = members.first() else {
        return Vec::new();
    };
    (0..first.len())
        .map(|r| {
            let vals: Vec<f64> = members
                .iter()
                .filter_map(|m| m.get(r).and_then(|x| x.1))
                .collect();
            let v = if vals.is_empty() {
                None
            } else {
                Some(match agg {
                    Agg::Avg => vals.iter().sum::<f64>() / vals.len() as f64,
                    Agg::Sum => vals.iter().sum(),
                    Agg::Min => vals.iter().copied().fold(f64::INFINITY, f64::min),
                    Agg::Max => vals.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                })
            };
            (first[r].0, v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(ts: i64, v: f64) -> PointRow {
        PointRow {
            ts,
            avg: Some(v),
            min: Some(v - 1.0),
            max: Some(v + 1.0),
            last: Some(v),
            count: 10,
        }
    }

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
    fn step_follows_range() {
        let now = 1_000_000;
        assert_eq!(choose_step(now - 3600, now), 10);
        assert_eq!(choose_step(now - 6 * 3600, now), 60);
        assert_eq!(choose_step(now - 7 * 86400, now), 300);
        assert_eq!(choose_step(now - 30 * 86400, now), 3600);
        assert_eq!(choose_step(now - 365 * 86400, now), 86400);
    }

    #[test]
    fn rows_cover_step_ending_at_label() {
        let pts = [p(10, 1.0), p(20, 3.0), p(30, 5.0), p(40, 7.0), p(60, 9.0)];
        let rows = consolidate(&pts, 10, 0, 60, 10, Cf::Avg);
        assert_eq!(
            rows,
            vec![
                (10, Some(1.0)),
                (20, Some(3.0)),
                (30, Some(5.0)),
                (40, Some(7.0)),
                (50, None),
                (60, Some(9.0))
            ]
        );
        // 30 s rows: (0,30] has 3 buckets, (30,60] has 2 of 3 (> half known).
        let rows = consolidate(&pts, 10, 0, 60, 30, Cf::Avg);
        assert_eq!(rows, vec![(30, Some(3.0)), (60, Some(8.0))]);
        assert_eq!(
            consolidate(&pts, 10, 0, 60, 30, Cf::Max),
            vec![(30, Some(6.0)), (60, Some(10.0))]
        );
        assert_eq!(
            consolidate(&pts, 10, 0, 60, 30, Cf::Last),
            vec![(30, Some(5.0)), (60, Some(9.0))]
        );
        // 60 s rows from one bucket only: mostly unknown.
        assert_eq!(
            consolidate(&[p(60, 1.0)], 10, 0, 60, 60, Cf::Avg),
            vec![(60, None)]
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
            aggregate(&[a, b], Agg::Sum),
            vec![(10, Some(4.0)), (20, None)]
        );
    }
}
