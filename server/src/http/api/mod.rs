//! The JSON API under `/api/v1`: operator endpoints and the agent protocol.

mod agent;
pub mod alarms;
pub(crate) mod deliveries;
pub(crate) mod graph;
pub mod hosts;
mod import;
mod logs;
mod metrics;
mod scaling;

use super::error::AppError;
use super::AppState;
use axum::extract::DefaultBodyLimit;
use axum::extract::{FromRequest, Request};
use axum::Router;
use serde::de::DeserializeOwned;
use tower_http::decompression::RequestDecompressionLayer;

pub fn router(state: &AppState) -> Router<AppState> {
    let limit = usize::try_from(state.config.http.max_body_bytes).unwrap_or(usize::MAX);
    Router::new()
        .merge(hosts::router())
        .merge(logs::router())
        .merge(metrics::router())
        .merge(import::router())
        .merge(graph::router())
        .merge(agent::router())
        .merge(alarms::router())
        .merge(deliveries::router())
        .merge(scaling::router())
        // The limit applies to the decompressed body, so a small zstd bomb
        // cannot expand past it.
        .layer(DefaultBodyLimit::max(limit))
        .layer(RequestDecompressionLayer::new().gzip(true).zstd(true))
}

/// `Json<T>` whose rejections (malformed JSON, too large, wrong content type)
/// become our JSON error envelope.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let axum::Json(v) = axum::Json::<T>::from_request(req, state).await?;
        Ok(JsonBody(v))
    }
}

/// Checks a name an outsider gives (hostname, instance id, agent version):
/// 1 to `max` bytes, no spaces or control characters.
pub fn check_name(what: &str, value: &str, max: usize) -> Result<(), AppError> {
    if value.is_empty()
        || value.len() > max
        || value.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(AppError::BadRequest(format!(
            "{what} {value:?} must be 1 to {max} bytes without spaces or control characters"
        )));
    }
    Ok(())
}

/// Checks a group name: 1 to 64 characters among A-Z a-z 0-9 _ - .
pub fn check_group(g: &str) -> Result<(), AppError> {
    if g.is_empty()
        || g.len() > 64
        || !g
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(AppError::BadRequest(format!(
            "group {g:?} must be 1 to 64 characters among A-Z a-z 0-9 _ - ."
        )));
    }
    Ok(())
}

/// RFC 3339 form of a unix time, for JSON answers.
pub fn rfc3339(ts: i64) -> String {
    chrono::DateTime::from_timestamp(ts, 0)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}
