//! The dry-run: a policy replayed over the group's stored history through
//! the same evaluation as the live runner ([`Scaler::judge`], hence
//! [`PolicyState::judge`](super::eval::PolicyState::judge)), one round per
//! base step, with the aggregate it saw at each round and the events it
//! would have fired. Nothing is stored or sent.
//!
//! History is read as `GET /api/v1/query?group=G&agg=A` reads it: the
//! group's recorded series, and for rows the group did not record
//! (imported history, from before the group existed) the members' own
//! archives aggregated row by row. The group's size at each round is its
//! recorded `group.members` (or, where not recorded, the members that had a
//! value). Warmup is not applied (the recorded aggregate holds every member),
//! and healing is not replayed (it follows membership, not the metric).

use super::eval::RoundInput;
use super::event::ScalingEvent;
use super::policy::Policy;
use super::scaler::Scaler;
use crate::query::{self, Cf, QueryError, QuerySpec, Target};
use crate::store::Store;
use serde::Serialize;

/// Rounds one dry-run may replay at most.
pub const MAX_ROUNDS: i64 = crate::query::MAX_ROWS;

#[derive(Debug, Clone, Serialize)]
pub struct DryRun {
    pub policy: Policy,
    pub from: i64,
    pub to: i64,
    pub step: i64,
    /// `[ts, aggregate the policy saw (window value) or null, current size]`
    /// per round.
    pub rounds: Vec<(i64, Option<f64>, u32)>,
    /// What it would have fired, in order, with the aggregate it saw.
    pub events: Vec<ScalingEvent>,
}

/// The unlabelled series of a result (the policy's metric has no labels).
fn row_values(r: &query::QueryResult) -> Option<(&query::SeriesPoints, query::Rows)> {
    let s = r
        .series
        .iter()
        .find(|s| s.labels.is_empty())
        .or_else(|| r.series.first())?;
    Some((s, s.points.clone()))
}

/// Replays `p` over `(from, to]`.
pub async fn run(
    store: &Store,
    p: &Policy,
    from: i64,
    to: i64,
    now: i64,
) -> Result<DryRun, QueryError> {
    let step = i64::from(store.archive_spec().base_step).max(1);
    if to <= from {
        return Err(QueryError::BadRequest(format!(
            "from ({from}) must be before to ({to})"
        )));
    }
    if (to - from) / step > MAX_ROUNDS {
        return Err(QueryError::BadRequest(format!(
            "{} rounds of {step} s: a dry-run replays at most {MAX_ROUNDS}; narrow from/to",
            (to - from) / step
        )));
    }
    let spec = |agg, name: &str| QuerySpec {
        target: Target::Group {
            group: p.group.clone(),
            agg,
        },
        names: vec![name.to_string()],
        from,
        to,
        cf: Cf::Avg,
        step: Some(step),
    };
    let values = match query::run(store, &spec(p.aggregation, p.metric.as_str()), now).await {
        Ok(r) => r,
        Err(QueryError::NotFound(_)) => query::QueryResult {
            step,
            from,
            to,
            series: Vec::new(),
        },
        Err(e) => return Err(e),
    };
    let sizes = query::run(
        store,
        &spec(query::Agg::Avg, crate::groups::MEMBERS_SERIES),
        now,
    )
    .await
    .ok();
    let size_at: std::collections::HashMap<i64, u32> = sizes
        .as_ref()
        .and_then(row_values)
        .map(|(_, rows)| {
            rows.into_iter()
                .filter_map(|(t, v)| Some((t, v?.max(0.0) as u32)))
                .collect()
        })
        .unwrap_or_default();
    let (fallback, rows) = match row_values(&values) {
        Some((s, rows)) => (s.members.unwrap_or(0) as u32, rows),
        None => (0, Vec::new()),
    };
    let mut scaler = Scaler::new(vec![p.clone()]);
    let mut out = DryRun {
        policy: p.clone(),
        from,
        to,
        step,
        rounds: Vec::with_capacity(rows.len()),
        events: Vec::new(),
    };
    for (ts, value) in rows {
        let size = size_at.get(&ts).copied().unwrap_or(fallback);
        let (judged, ev) = scaler.judge(
            0,
            RoundInput {
                ts,
                value,
                current_size: size,
            },
            ts * 1000,
        );
        out.rounds.push((ts, judged.aggregate, size));
        if let Some(mut e) = ev {
            e.id = format!("dryrun_{}_{ts}", e.kind);
            out.events.push(e);
        }
    }
    Ok(out)
}
