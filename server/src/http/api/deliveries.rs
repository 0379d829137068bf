//! `GET /api/v1/deliveries`: the outbox, newest first, with every attempt
//! (status, latency, response excerpt): what was sent where, what is still
//! being retried, and the dead letters.

use crate::http::auth::Operator;
use crate::http::error::{ApiResult, AppError};
use crate::http::AppState;
use crate::store::{DeliveryFilter, DeliveryView};
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/deliveries", get(deliveries))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    receiver: Option<String>,
    /// pending | delivered | dead
    state: Option<String>,
    /// 1 to 1000 (default 100).
    limit: Option<i64>,
}

#[derive(Debug, Serialize)]
struct Deliveries {
    deliveries: Vec<DeliveryView>,
}

async fn deliveries(
    _op: Operator,
    State(state): State<AppState>,
    Query(p): Query<Params>,
) -> ApiResult<Json<Deliveries>> {
    let st = match p.state.as_deref() {
        None | Some("") => None,
        Some(s @ ("pending" | "delivered" | "dead")) => Some(s.to_string()),
        Some(o) => {
            return Err(AppError::BadRequest(format!(
                "state {o:?}: use pending, delivered or dead"
            )))
        }
    };
    let limit = p.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(AppError::BadRequest(format!(
            "limit {limit}: must be 1 to 1000"
        )));
    }
    let deliveries = state
        .store
        .deliveries(&DeliveryFilter {
            receiver: p.receiver.filter(|r| !r.is_empty()),
            state: st,
            limit,
        })
        .await?;
    Ok(Json(Deliveries { deliveries }))
}
