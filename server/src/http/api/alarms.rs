//! Supervision over HTTP: `GET /api/v1/checks`, alarms and their
//! acknowledgement, silences, and rules (`/api/v1/rules`; the server's file
//! is the source of truth for the rules it declares).

use super::{rfc3339, JsonBody};
use crate::alarms::silence::{MatcherSpec, Silence};
use crate::alarms::{parse_stored_rule, Rule};
use crate::http::auth::{Admin, Operator};
use crate::http::error::{ApiResult, AppError};
use crate::http::AppState;
use crate::store::{AlarmRow, CheckRow, TransitionRow};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

/// Longest acknowledgement or silence comment, in bytes.
pub const MAX_COMMENT: usize = 1024;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/checks", get(checks))
        .route("/api/v1/alarms", get(alarms))
        .route("/api/v1/alarms/transitions", get(transitions))
        .route("/api/v1/alarms/{id}", get(alarm))
        .route("/api/v1/alarms/{id}/ack", post(ack))
        .route("/api/v1/silences", get(silences).post(create_silence))
        .route(
            "/api/v1/silences/{id}",
            axum::routing::delete(expire_silence),
        )
        .route("/api/v1/rules", get(rules).post(create_rule))
        .route(
            "/api/v1/rules/{name}",
            put(replace_rule).delete(delete_rule),
        )
}

/// Host ids a `host` parameter (hostname or id) stands for.
async fn host_ids(state: &AppState, host: Option<&str>) -> ApiResult<Option<Vec<i64>>> {
    let Some(h) = host.filter(|h| !h.is_empty()) else {
        return Ok(None);
    };
    let mut ids: Vec<i64> = state
        .store
        .hosts_named(h)
        .await?
        .iter()
        .map(|r| r.id)
        .collect();
    if let Ok(id) = h.parse::<i64>() {
        if state.store.host(id).await?.is_some() {
            ids.push(id);
        }
    }
    if ids.is_empty() {
        return Err(AppError::NotFound(format!("no host {h:?}")));
    }
    Ok(Some(ids))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostParam {
    host: Option<String>,
}

#[derive(Debug, Serialize)]
struct CheckView {
    #[serde(flatten)]
    row: CheckRow,
    last_run_at: String,
    status_since_at: String,
}

async fn checks(
    _op: Operator,
    State(state): State<AppState>,
    Query(p): Query<HostParam>,
) -> ApiResult<Json<Vec<CheckView>>> {
    let rows = match host_ids(&state, p.host.as_deref()).await? {
        None => state.store.check_results(None).await?,
        Some(ids) => {
            let mut all = Vec::new();
            for id in ids {
                all.extend(state.store.check_results(Some(id)).await?);
            }
            all
        }
    };
    Ok(Json(
        rows.into_iter()
            .map(|row| CheckView {
                last_run_at: rfc3339(row.last_run),
                status_since_at: rfc3339(row.status_since),
                row,
            })
            .collect(),
    ))
}

#[derive(Debug, Serialize)]
pub struct AlarmView {
    #[serde(flatten)]
    pub row: AlarmRow,
    pub since_at: String,
    pub updated: String,
}

impl From<AlarmRow> for AlarmView {
    fn from(row: AlarmRow) -> Self {
        AlarmView {
            since_at: rfc3339(row.since),
            updated: rfc3339(row.updated_at),
            row,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlarmParams {
    /// `active` (default: not OK) or `all`.
    state: Option<String>,
    host: Option<String>,
}

async fn alarms(
    _op: Operator,
    State(state): State<AppState>,
    Query(p): Query<AlarmParams>,
) -> ApiResult<Json<Vec<AlarmView>>> {
    let active = match p.state.as_deref() {
        None | Some("") | Some("active") => true,
        Some("all") => false,
        Some(o) => {
            return Err(AppError::BadRequest(format!(
                "state {o:?}: use active or all"
            )))
        }
    };
    let rows = match host_ids(&state, p.host.as_deref()).await? {
        None => state.store.alarms(active, None).await?,
        Some(ids) => {
            let mut all = Vec::new();
            for id in ids {
                all.extend(state.store.alarms(active, Some(id)).await?);
            }
            all
        }
    };
    Ok(Json(rows.into_iter().map(AlarmView::from).collect()))
}

#[derive(Debug, Serialize)]
struct AlarmDetail {
    #[serde(flatten)]
    alarm: AlarmView,
    transitions: Vec<TransitionRow>,
}

async fn alarm(
    _op: Operator,
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<Json<AlarmDetail>> {
    let row = state
        .store
        .alarm_row(id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no alarm {id}")))?;
    let transitions = state.store.transitions(Some(id), None, None, 200).await?;
    Ok(Json(AlarmDetail {
        alarm: row.into(),
        transitions,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TransitionParams {
    host: Option<String>,
    from: Option<String>,
    limit: Option<i64>,
}

/// Transitions newest first (the graphs mark them on the metric they judge).
async fn transitions(
    _op: Operator,
    State(state): State<AppState>,
    Query(p): Query<TransitionParams>,
) -> ApiResult<Json<Vec<TransitionRow>>> {
    let since = match p.from.as_deref() {
        None => None,
        Some(t) => {
            Some(crate::query::parse_time(t, crate::store::now()).map_err(AppError::BadRequest)?)
        }
    };
    let limit = p.limit.unwrap_or(500);
    let rows = match host_ids(&state, p.host.as_deref()).await? {
        None => state.store.transitions(None, None, since, limit).await?,
        Some(ids) => {
            let mut all = Vec::new();
            for id in ids {
                all.extend(
                    state
                        .store
                        .transitions(None, Some(id), since, limit)
                        .await?,
                );
            }
            all
        }
    };
    Ok(Json(rows))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBody {
    #[serde(default)]
    comment: String,
}

async fn ack(
    Admin(op): Admin,
    State(state): State<AppState>,
    Path(id): Path<i64>,
    JsonBody(body): JsonBody<AckBody>,
) -> ApiResult<Json<AlarmView>> {
    if body.comment.len() > MAX_COMMENT {
        return Err(AppError::BadRequest(format!(
            "comment: at most {MAX_COMMENT} bytes"
        )));
    }
    match state.alarms.acknowledge(id, &op.name, &body.comment).await {
        Ok(()) => {}
        Err(Some(crate::alarms::evaluator::AckError::NotFound)) => {
            return Err(AppError::NotFound(format!("no alarm {id}")))
        }
        Err(Some(e)) => return Err(AppError::Conflict(e.to_string())),
        Err(None) => {
            return Err(AppError::Busy(
                "the alarm evaluator is not running; try again".into(),
            ))
        }
    }
    let row = state
        .store
        .alarm_row(id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no alarm {id}")))?;
    Ok(Json(row.into()))
}

#[derive(Debug, Serialize)]
struct SilenceView {
    #[serde(flatten)]
    row: crate::store::SilenceRow,
    active: bool,
    starts: String,
    ends: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SilenceParams {
    /// `active` (default: not ended) or `all`.
    state: Option<String>,
}

async fn silences(
    _op: Operator,
    State(state): State<AppState>,
    Query(p): Query<SilenceParams>,
) -> ApiResult<Json<Vec<SilenceView>>> {
    let now = crate::store::now();
    let active_at = match p.state.as_deref() {
        None | Some("") | Some("active") => Some(now),
        Some("all") => None,
        Some(o) => {
            return Err(AppError::BadRequest(format!(
                "state {o:?}: use active or all"
            )))
        }
    };
    let rows = state.store.silences(active_at).await?;
    Ok(Json(
        rows.into_iter()
            .map(|row| SilenceView {
                active: row.starts_at <= now && now < row.ends_at,
                starts: rfc3339(row.starts_at),
                ends: rfc3339(row.ends_at),
                row,
            })
            .collect(),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSilence {
    matchers: Vec<MatcherSpec>,
    /// Unix seconds, RFC 3339 or relative; default now.
    starts_at: Option<String>,
    /// Give `ends_at` or `duration`.
    ends_at: Option<String>,
    duration: Option<String>,
    #[serde(default)]
    comment: String,
}

#[derive(Debug, Serialize)]
struct Created {
    id: i64,
}

async fn create_silence(
    Admin(op): Admin,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<NewSilence>,
) -> ApiResult<(StatusCode, Json<Created>)> {
    let now = crate::store::now();
    let mut errs = Vec::new();
    let starts = match body.starts_at.as_deref() {
        None => now,
        Some(t) => crate::query::parse_time(t, now).unwrap_or_else(|e| {
            errs.push(format!("starts_at: {e}"));
            now
        }),
    };
    let ends = match (body.ends_at.as_deref(), body.duration.as_deref()) {
        (Some(t), None) => crate::query::parse_time(t, now).unwrap_or_else(|e| {
            errs.push(format!("ends_at: {e}"));
            starts
        }),
        (None, Some(d)) => match metrolog_protocol::parse_duration(d) {
            Ok(d) => starts + d.as_secs() as i64,
            Err(e) => {
                errs.push(format!("duration: {e}"));
                starts
            }
        },
        _ => {
            errs.push("ends_at: give `ends_at` or `duration` (one of them)".into());
            starts
        }
    };
    if body.comment.len() > MAX_COMMENT {
        errs.push(format!("comment: at most {MAX_COMMENT} bytes"));
    }
    if errs.is_empty() {
        if let Err(e) = Silence::parse(0, body.matchers.clone(), starts, ends) {
            errs.extend(e);
        }
    }
    if !errs.is_empty() {
        return Err(AppError::BadRequest(errs.join("; ")));
    }
    let id = state
        .store
        .create_silence(&body.matchers, starts, ends, &op.name, &body.comment)
        .await?;
    state.alarms.reload().await;
    Ok((StatusCode::CREATED, Json(Created { id })))
}

async fn expire_silence(
    _admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<StatusCode> {
    if !state.store.expire_silence(id).await? {
        return Err(AppError::NotFound(format!("no active silence {id}")));
    }
    state.alarms.reload().await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize)]
struct RuleView {
    #[serde(flatten)]
    rule: Rule,
}

async fn rules(_op: Operator, State(state): State<AppState>) -> ApiResult<Json<Vec<RuleView>>> {
    let rules = all_rules(&state).await?;
    Ok(Json(
        rules.into_iter().map(|rule| RuleView { rule }).collect(),
    ))
}

/// Every rule in force: the file's, then the API's (a stored rule that no
/// longer parses, or whose name the file took since, is left out).
pub(crate) async fn all_rules(state: &AppState) -> ApiResult<Vec<Rule>> {
    let mut out: Vec<Rule> = state.file_rules.clone();
    let ctx = state.config.file.rule_context();
    for stored in state.store.api_rules().await? {
        if let Ok(rule) = parse_stored_rule(&stored.definition, ctx) {
            if !out.iter().any(|r| r.name == rule.name) {
                out.push(rule);
            }
        }
    }
    Ok(out)
}

/// Checks a rule body as the file's rules are checked; 400 naming every field.
fn check_rule(state: &AppState, body: &serde_json::Value) -> ApiResult<(Rule, String)> {
    let text = body.to_string();
    let rule = parse_stored_rule(&text, state.config.file.rule_context())
        .map_err(|e| AppError::BadRequest(e.join("; ").replace("rule.", "")))?;
    if state.file_rules.iter().any(|r| r.name == rule.name) {
        return Err(AppError::Conflict(format!(
            "rule {:?} is defined in the server's configuration file, which is its source of truth: change it there",
            rule.name
        )));
    }
    Ok((rule, text))
}

async fn create_rule(
    _admin: Admin,
    State(state): State<AppState>,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> ApiResult<(StatusCode, Json<RuleView>)> {
    let (rule, text) = check_rule(&state, &body)?;
    if !state.store.put_rule(&rule.name, &text, true).await? {
        return Err(AppError::Conflict(format!(
            "rule {:?} exists: PUT /api/v1/rules/{} replaces it",
            rule.name, rule.name
        )));
    }
    state.alarms.reload().await;
    Ok((StatusCode::CREATED, Json(RuleView { rule })))
}

async fn replace_rule(
    _admin: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> ApiResult<Json<RuleView>> {
    let (rule, text) = check_rule(&state, &body)?;
    if rule.name != name {
        return Err(AppError::BadRequest(format!(
            "name: the body names {:?}, the path {name:?}",
            rule.name
        )));
    }
    if !state.store.put_rule(&name, &text, false).await? {
        return Err(AppError::NotFound(format!("no API rule {name:?}")));
    }
    state.alarms.reload().await;
    Ok(Json(RuleView { rule }))
}

async fn delete_rule(
    _admin: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    if state.file_rules.iter().any(|r| r.name == name) {
        return Err(AppError::Conflict(format!(
            "rule {name:?} is defined in the server's configuration file: remove it there"
        )));
    }
    if !state.store.delete_rule(&name).await? {
        return Err(AppError::NotFound(format!("no API rule {name:?}")));
    }
    state.alarms.reload().await;
    Ok(StatusCode::NO_CONTENT)
}
