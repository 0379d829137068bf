//! `POST /api/v1/import` (admin): timestamped samples for a host's series, for
//! backfill and tests, consolidated with `rrdtool update` semantics.
//!
//! Body: `{"host", "group"?, "series": [{"name", "labels"?, "points": [[ts, value], …]}]}`
//! with `ts` in unix seconds and `value` a number or `null` (unknown). Samples must
//! come in time order per series: one at or before the series' previous sample is
//! refused and counted, as `rrdtool update` refuses it, and so is one more than
//! 10 minutes in the future (it would make every later real sample out of order).
//! The host is created if needed, passive (no liveness alarm). Everything accepted
//! is journaled in one transaction before the answer.

use super::{check_group, check_name, JsonBody};
use crate::http::auth::Admin;
use crate::http::error::{ApiResult, AppError};
use crate::http::AppState;
use crate::ingest::MAX_FUTURE_SECS;
use crate::store::{now, HostFacts, HostSource};
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use metrolog_protocol::series::validate_labels;
use metrolog_protocol::{Labels, SeriesKey};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/import", post(import))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportBody {
    host: String,
    #[serde(default)]
    group: Option<String>,
    series: Vec<ImportSeries>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportSeries {
    name: String,
    #[serde(default)]
    labels: Labels,
    /// `[ts, value]`; a `null` value is unknown.
    points: Vec<(i64, Option<f64>)>,
}

#[derive(Debug, Serialize)]
struct ImportAnswer {
    host_id: i64,
    accepted: u64,
    rejected: Rejected,
    series: Vec<SeriesAnswer>,
}

#[derive(Debug, Default, Serialize)]
struct Rejected {
    out_of_order: u64,
    future: u64,
}

#[derive(Debug, Serialize)]
struct SeriesAnswer {
    name: String,
    #[serde(skip_serializing_if = "Labels::is_empty")]
    labels: Labels,
    accepted: u64,
    rejected: Rejected,
}

async fn import(
    _admin: Admin,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<ImportBody>,
) -> ApiResult<Json<ImportAnswer>> {
    check_name("host", &body.host, 253)?;
    if let Some(g) = &body.group {
        check_group(g)?;
    }
    let now = now();
    // Parse every series first: a bad name refuses the whole request, nothing stored.
    let mut seen = HashSet::new();
    let mut series = Vec::with_capacity(body.series.len());
    let mut answers = Vec::with_capacity(body.series.len());
    for (i, s) in body.series.into_iter().enumerate() {
        validate_labels(&s.labels).map_err(|e| {
            AppError::BadRequest(format!("series[{i}] ({:?}): labels: {e}", s.name))
        })?;
        let key = SeriesKey::new(&s.name, s.labels.clone())
            .map_err(|e| AppError::BadRequest(format!("series[{i}] ({:?}): {e}", s.name)))?;
        if !seen.insert((key.name.as_str().to_string(), key.labels_text())) {
            return Err(AppError::BadRequest(format!(
                "series[{i}] ({:?}) is listed twice; give each series once with all its points",
                s.name
            )));
        }
        let mut future = 0;
        let points: Vec<(i64, f64)> = s
            .points
            .into_iter()
            .filter_map(|(ts, v)| {
                if ts > now + MAX_FUTURE_SECS {
                    future += 1;
                    None
                } else {
                    Some((ts, v.unwrap_or(f64::NAN)))
                }
            })
            .collect();
        answers.push(SeriesAnswer {
            name: s.name,
            labels: s.labels,
            accepted: 0,
            rejected: Rejected {
                out_of_order: 0,
                future,
            },
        });
        series.push((key, points));
    }
    // An existing host (an agent's, say) is used as it is; a new one is passive.
    let host_id = match state.store.hosts_named(&body.host).await?.first() {
        Some(h) => h.id,
        None => {
            let facts = HostFacts {
                hostname: body.host.clone(),
                instance_id: None,
                group: body.group.clone(),
                labels: Labels::new(),
                agent_version: None,
            };
            state.store.upsert_host(&facts, HostSource::Import).await?
        }
    };
    let outcome = state.store.import_samples(host_id, &series).await?;
    let mut rejected = Rejected::default();
    for (a, got) in answers.iter_mut().zip(&outcome.per_series) {
        a.accepted = got.accepted;
        // Time before 1970 or past year 9999 is as unusable as out of order.
        a.rejected.out_of_order = got.out_of_order;
        rejected.out_of_order += got.out_of_order;
        rejected.future += a.rejected.future;
    }
    let m = &state.metrics;
    m.import_requests.inc();
    m.import_samples.add(outcome.accepted);
    m.import_rejected_order.add(rejected.out_of_order);
    m.import_rejected_future.add(rejected.future);
    Ok(Json(ImportAnswer {
        host_id,
        accepted: outcome.accepted,
        rejected,
        series: answers,
    }))
}
