//! `GET /api/v1/series` and `GET /api/v1/query`.

use crate::http::auth::Operator;
use crate::http::error::{ApiResult, AppError};
use crate::http::AppState;
use crate::query::{self, QueryError, QueryResult, QuerySpec};
use crate::store::{now, SeriesRow};
use axum::extract::{Query, RawQuery, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/series", get(series))
        .route("/api/v1/query", get(query_handler))
}

impl From<QueryError> for AppError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::BadRequest(m) => AppError::BadRequest(m),
            QueryError::NotFound(m) => AppError::NotFound(m),
            QueryError::Store(e) => e.into(),
        }
    }
}

/// Splits a raw query string into pairs, keeping repeated keys (`name=a&name=b`).
pub fn query_pairs(raw: Option<&str>) -> ApiResult<Vec<(String, String)>> {
    serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|e| AppError::BadRequest(format!("malformed query string: {e}")))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeriesParams {
    host: Option<String>,
    name: Option<String>,
}

async fn series(
    _op: Operator,
    State(state): State<AppState>,
    Query(p): Query<SeriesParams>,
) -> ApiResult<Json<Vec<SeriesRow>>> {
    Ok(Json(
        query::series_of(&state.store, p.host.as_deref(), p.name.as_deref()).await?,
    ))
}

async fn query_handler(
    _op: Operator,
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<QueryResult>> {
    let now = now();
    let spec = QuerySpec::parse(&query_pairs(raw.as_deref())?, now, &[])?;
    Ok(Json(query::run(&state.store, &spec, now).await?))
}
