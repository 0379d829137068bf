//! Scaling (SPEC §7): policies (`/api/v1/scaling/policies`; the server's
//! file is the source of truth for the policies it declares: listed, refused
//! to change with 409), events (`/api/v1/scaling/events`), and the dry-run
//! (`POST /api/v1/scaling/policies/{id}/dry-run`, and
//! `POST /api/v1/scaling/dry-run` with a policy in the body, not saved).

use super::JsonBody;
use crate::alarms::rules::RuleSource;
use crate::http::auth::{Admin, Operator};
use crate::http::error::{ApiResult, AppError};
use crate::http::AppState;
use crate::scaling::dryrun::{self, DryRun};
use crate::scaling::policy::{self, Policy, PolicySection};
use crate::scaling::runner::all_policies;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/scaling/policies",
            get(policies).post(create_policy),
        )
        .route(
            "/api/v1/scaling/policies/{name}",
            put(replace_policy).delete(delete_policy).get(one_policy),
        )
        .route(
            "/api/v1/scaling/policies/{name}/dry-run",
            post(dry_run_stored),
        )
        .route("/api/v1/scaling/dry-run", post(dry_run_body))
        .route("/api/v1/scaling/events", get(events))
}

fn base_step(state: &AppState) -> i64 {
    i64::from(state.store.archive_spec().base_step)
}

async fn in_force(state: &AppState) -> Vec<Policy> {
    all_policies(&state.store, &state.file_policies, base_step(state)).await
}

async fn policies(_op: Operator, State(state): State<AppState>) -> ApiResult<Json<Vec<Policy>>> {
    Ok(Json(in_force(&state).await))
}

async fn one_policy(
    _op: Operator,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Policy>> {
    in_force(&state)
        .await
        .into_iter()
        .find(|p| p.name == name)
        .map(Json)
        .ok_or_else(|| AppError::NotFound(format!("no scaling policy {name:?}")))
}

/// Checks a policy body as the file's policies are checked, and against
/// the fleet (group, metric); 400 naming every problem.
async fn check_policy(state: &AppState, body: &serde_json::Value) -> ApiResult<(Policy, String)> {
    let section: PolicySection = serde_json::from_value(body.clone())
        .map_err(|e| AppError::BadRequest(format!("policy: {e}")))?;
    let p = Policy::parse(&section, RuleSource::Api, base_step(state), "policy")
        .map_err(|e| AppError::BadRequest(e.join("; ").replace("policy.", "")))?;
    let known = state.store.known_groups().await?;
    let declared: Vec<String> = state
        .config
        .file
        .agents
        .iter()
        .map(|a| a.group.clone())
        .collect();
    let problems = policy::check_known(&p, &known, &declared, "policy");
    if !problems.is_empty() {
        return Err(AppError::BadRequest(
            problems.join("; ").replace("policy.", ""),
        ));
    }
    // Stored as written (durations as text), read back by the same parser.
    let text = serde_json::to_string(&section).unwrap_or_default();
    Ok((p, text))
}

fn file_owned(state: &AppState, name: &str) -> ApiResult<()> {
    if state.file_policies.iter().any(|p| p.name == name) {
        return Err(AppError::Conflict(format!(
            "scaling policy {name:?} is defined in the server's configuration file, which is its source of truth: change it there"
        )));
    }
    Ok(())
}

async fn create_policy(
    _admin: Admin,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> ApiResult<(StatusCode, Json<Policy>)> {
    let (p, text) = check_policy(&state, &body).await?;
    file_owned(&state, &p.name)?;
    if !state.store.put_policy(&p.name, &text, true).await? {
        return Err(AppError::Conflict(format!(
            "scaling policy {:?} exists: PUT /api/v1/scaling/policies/{} replaces it",
            p.name, p.name
        )));
    }
    state.scaling.reload().await;
    Ok((StatusCode::CREATED, Json(p)))
}

async fn replace_policy(
    _admin: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> ApiResult<Json<Policy>> {
    file_owned(&state, &name)?;
    let (p, text) = check_policy(&state, &body).await?;
    if p.name != name {
        return Err(AppError::BadRequest(format!(
            "name: the body names {:?}, the path {name:?}",
            p.name
        )));
    }
    if !state.store.put_policy(&name, &text, false).await? {
        return Err(AppError::NotFound(format!(
            "no API scaling policy {name:?}"
        )));
    }
    state.scaling.reload().await;
    Ok(Json(p))
}

async fn delete_policy(
    _admin: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    file_owned(&state, &name)?;
    if !state.store.delete_policy(&name).await? {
        return Err(AppError::NotFound(format!(
            "no API scaling policy {name:?}"
        )));
    }
    state.scaling.reload().await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Range {
    /// Default `-1h`.
    from: Option<String>,
    /// Default `now`.
    to: Option<String>,
}

impl Range {
    fn parse(&self) -> ApiResult<(i64, i64, i64)> {
        let now = crate::store::now();
        let t = |v: &Option<String>, d: &str| {
            crate::query::parse_time(v.as_deref().filter(|s| !s.is_empty()).unwrap_or(d), now)
                .map_err(AppError::BadRequest)
        };
        Ok((t(&self.from, "-1h")?, t(&self.to, "now")?, now))
    }
}

async fn dry_run_stored(
    _op: Operator,
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(range): Query<Range>,
) -> ApiResult<Json<DryRun>> {
    let (from, to, now) = range.parse()?;
    let p = in_force(&state)
        .await
        .into_iter()
        .find(|p| p.name == name)
        .ok_or_else(|| AppError::NotFound(format!("no scaling policy {name:?}")))?;
    Ok(Json(dryrun::run(&state.store, &p, from, to, now).await?))
}

async fn dry_run_body(
    _op: Operator,
    State(state): State<AppState>,
    Query(range): Query<Range>,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> ApiResult<Json<DryRun>> {
    let (from, to, now) = range.parse()?;
    let (p, _) = check_policy(&state, &body).await?;
    Ok(Json(dryrun::run(&state.store, &p, from, to, now).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventParams {
    group: Option<String>,
    /// 1 to 1000 (default 100).
    limit: Option<i64>,
}

#[derive(Debug, Serialize)]
struct Events {
    events: Vec<serde_json::Value>,
}

async fn events(
    _op: Operator,
    State(state): State<AppState>,
    Query(p): Query<EventParams>,
) -> ApiResult<Json<Events>> {
    let limit = p.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(AppError::BadRequest(format!(
            "limit {limit}: must be 1 to 1000"
        )));
    }
    let events = state
        .store
        .scaling_events(p.group.as_deref().filter(|g| !g.is_empty()), limit)
        .await?;
    Ok(Json(Events { events }))
}
