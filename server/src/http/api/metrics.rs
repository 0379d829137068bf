//! `GET /api/v1/series` and `GET /api/v1/query`.

use crate::http::auth::Operator;
use crate::http::error::{ApiResult, AppError};
use crate::http::AppState;
use crate::query::{self, Agg, Cf};
use crate::store::{now, HostFilter, SeriesRow};
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use metrolog_protocol::Labels;
use serde::{Deserialize, Serialize};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/series", get(series))
        .route("/api/v1/query", get(query_handler))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeriesParams {
    host: Option<String>,
    name: Option<String>,
}

/// Resolves a `host` parameter (id or hostname) to host ids.
async fn host_ids(state: &AppState, host: &str) -> ApiResult<Vec<i64>> {
    if let Ok(id) = host.parse::<i64>() {
        if state.store.host(id).await?.is_some() {
            return Ok(vec![id]);
        }
    }
    let hosts = state.store.hosts_named(host).await?;
    if hosts.is_empty() {
        return Err(AppError::NotFound(format!("no host {host:?}")));
    }
    Ok(hosts.into_iter().map(|h| h.id).collect())
}

async fn series_of(
    state: &AppState,
    host: Option<&str>,
    name: Option<&str>,
) -> ApiResult<Vec<SeriesRow>> {
    match host {
        None => Ok(state.store.series(None, name).await?),
        Some(h) => {
            let mut out = Vec::new();
            for id in host_ids(state, h).await? {
                out.extend(state.store.series(Some(id), name).await?);
            }
            Ok(out)
        }
    }
}

async fn series(
    _op: Operator,
    State(state): State<AppState>,
    Query(p): Query<SeriesParams>,
) -> ApiResult<Json<Vec<SeriesRow>>> {
    Ok(Json(
        series_of(&state, p.host.as_deref(), p.name.as_deref()).await?,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryParams {
    host: Option<String>,
    group: Option<String>,
    agg: Option<String>,
    name: String,
    from: Option<String>,
    to: Option<String>,
    cf: Option<String>,
    step: Option<String>,
}

#[derive(Debug, Serialize)]
struct QueryAnswer {
    step: i64,
    from: i64,
    to: i64,
    series: Vec<SeriesPoints>,
}

#[derive(Debug, Serialize)]
struct SeriesPoints {
    /// Hostname, or `group:<name>` for an aggregate.
    host: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    host_id: Option<i64>,
    name: String,
    labels: Labels,
    #[serde(skip_serializing_if = "Option::is_none")]
    members: Option<usize>,
    points: Vec<(i64, Option<f64>)>,
}

/// Consolidated rows of one series: (row label, value or unknown).
type Rows = Vec<(i64, Option<f64>)>;

/// Agents ship 10 s buckets.
const BASE_STEP: i64 = 10;

async fn query_handler(
    _op: Operator,
    State(state): State<AppState>,
    Query(p): Query<QueryParams>,
) -> ApiResult<Json<QueryAnswer>> {
    let now = now();
    let bad = AppError::BadRequest;
    let to = query::parse_time(p.to.as_deref().unwrap_or("now"), now).map_err(bad)?;
    let from = query::parse_time(p.from.as_deref().unwrap_or("-1h"), now).map_err(bad)?;
    if to <= from {
        return Err(bad(format!("`to` ({to}) must be after `from` ({from})")));
    }
    let cf = Cf::parse(p.cf.as_deref().unwrap_or("avg")).map_err(bad)?;
    let step = match p.step.as_deref() {
        Some(s) => {
            let secs = match s.parse::<i64>() {
                Ok(n) => n,
                Err(_) => metrolog_protocol::parse_duration(s)
                    .map_err(|e| bad(e.to_string()))?
                    .as_secs() as i64,
            };
            if secs < BASE_STEP || secs % BASE_STEP != 0 {
                return Err(bad(format!(
                    "step {s:?} must be a multiple of {BASE_STEP} seconds"
                )));
            }
            secs
        }
        None => query::choose_step(from, now),
    };
    if (to - from) / step > query::MAX_ROWS {
        return Err(bad(format!(
            "{} rows of {step} s requested; at most {} per series: narrow the range or raise step",
            (to - from) / step,
            query::MAX_ROWS
        )));
    }
    let mut out = Vec::new();
    match (&p.host, &p.group) {
        (Some(_), Some(_)) => return Err(bad("give either `host` or `group`, not both".into())),
        (None, None) => {
            return Err(bad(
                "give `host` (id or hostname) or `group` with `agg`".into()
            ))
        }
        (Some(host), None) => {
            if p.agg.is_some() {
                return Err(bad("`agg` applies to `group` queries".into()));
            }
            for s in series_of(&state, Some(host), Some(&p.name)).await? {
                let pts = state.store.points(s.id, from - step, to).await?;
                out.push(SeriesPoints {
                    host: s.hostname,
                    host_id: Some(s.host_id),
                    name: s.name,
                    labels: s.labels,
                    members: None,
                    points: query::consolidate(&pts, BASE_STEP, from, to, step, cf),
                });
            }
        }
        (None, Some(group)) => {
            let agg = Agg::parse(p.agg.as_deref().unwrap_or("avg")).map_err(bad)?;
            let members = state
                .store
                .hosts(&HostFilter {
                    group: Some(group.clone()),
                    state: None,
                })
                .await?;
            // One aggregate per (name, labels) across the members.
            let mut by_key: Vec<((String, Labels), Vec<Rows>)> = Vec::new();
            for m in &members {
                for s in state.store.series(Some(m.id), Some(&p.name)).await? {
                    let pts = state.store.points(s.id, from - step, to).await?;
                    let rows = query::consolidate(&pts, BASE_STEP, from, to, step, cf);
                    let key = (s.name, s.labels);
                    match by_key.iter_mut().find(|(k, _)| *k == key) {
                        Some((_, v)) => v.push(rows),
                        None => by_key.push((key, vec![rows])),
                    }
                }
            }
            for ((name, labels), rows) in by_key {
                out.push(SeriesPoints {
                    host: format!("group:{group}"),
                    host_id: None,
                    name,
                    labels,
                    members: Some(rows.len()),
                    points: query::aggregate(&rows, agg),
                });
            }
        }
    }
    Ok(Json(QueryAnswer {
        step,
        from,
        to,
        series: out,
    }))
}
