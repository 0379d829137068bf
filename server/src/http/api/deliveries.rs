//! `GET /api/v1/deliveries`: the outbox, newest first, with every attempt
//! (status, latency, response excerpt): what was sent where, what is still
//! being retried, and the dead letters; `POST /api/v1/deliveries/{id}/retry`
//! (admin) sends a dead letter back to pending, its attempts kept.

use crate::http::auth::{Admin, Operator};
use crate::http::error::{ApiResult, AppError};
use crate::http::AppState;
use crate::store::{DeliveryFilter, DeliveryView};
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/deliveries", get(deliveries))
        .route("/api/v1/deliveries/{id}/retry", post(retry))
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

#[derive(Debug, Serialize)]
struct Requeued {
    id: i64,
    receiver: String,
    state: &'static str,
}

/// A dead letter back to pending: sent again at once, with a fresh retry
/// schedule; its attempts are kept.
async fn retry(
    _admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<Json<Requeued>> {
    let receiver = retry_dead(&state, id).await?;
    Ok(Json(Requeued {
        id,
        receiver,
        state: "pending",
    }))
}

/// Sends dead letter `id` again (the API's and the dashboard's retry): back
/// to pending and its lane woken. Returns its receiver. 404 for an unknown
/// id, 409 when it is not dead or its receiver is no longer configured.
pub async fn retry_dead(state: &AppState, id: i64) -> ApiResult<String> {
    let lanes: Vec<String> = state
        .config
        .receivers()
        .into_iter()
        .map(|r| r.name)
        .chain(state.hooks.iter().map(|h| h.name.clone()))
        .collect();
    // Check the receiver first: a delivery of a receiver no longer
    // configured would stay pending with nobody to send it.
    let found = state
        .store
        .deliveries(&DeliveryFilter {
            limit: 1000,
            ..Default::default()
        })
        .await?;
    if let Some(d) = found.iter().find(|d| d.id == id) {
        if !lanes.contains(&d.receiver) {
            return Err(AppError::Conflict(format!(
                "delivery {id} is for {:?}, which the configuration no longer names: nobody would send it",
                d.receiver
            )));
        }
    }
    match state
        .store
        .requeue_delivery(id, chrono::Utc::now().timestamp_millis())
        .await?
    {
        crate::store::Requeue::Done { receiver } => {
            if let Some(w) = state.lane_wake.get() {
                (w.0)(&receiver);
            }
            Ok(receiver)
        }
        crate::store::Requeue::NotFound => Err(AppError::NotFound(format!("no delivery {id}"))),
        crate::store::Requeue::NotDead(s) => Err(AppError::Conflict(format!(
            "delivery {id} is {s}: only dead letters are retried by hand"
        ))),
    }
}
