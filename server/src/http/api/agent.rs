//! The agent protocol (see docs/protocol.md): enroll, batch, heartbeat, leave,
//! configuration. Every write is tied to the host of the agent's own token.

use super::{check_group, check_name, JsonBody};
use crate::auth::{new_token, token_hash};
use crate::config::GroupSettings;
use crate::http::auth::{AgentHost, Enroller};
use crate::http::error::{ApiResult, AppError};
use crate::http::AppState;
use crate::store::{now, HostFacts, HostSource};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrolog_protocol::series::validate_labels;
use metrolog_protocol::{
    paths, Batch, BatchAck, EnrollRequest, EnrollResponse, HeartbeatAck, LeaveRequest,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(paths::ENROLL, post(enroll))
        .route(paths::BATCH, post(batch))
        .route(paths::HEARTBEAT, post(heartbeat))
        .route(paths::LEAVE, post(leave))
        .route(paths::CONFIG, get(config))
}

async fn enroll(
    _e: Enroller,
    State(state): State<AppState>,
    JsonBody(req): JsonBody<EnrollRequest>,
) -> ApiResult<Json<EnrollResponse>> {
    check_name("hostname", &req.hostname, 253)?;
    if let Some(iid) = &req.instance_id {
        check_name("instance_id", iid, 128)?;
    }
    if let Some(g) = &req.group {
        check_group(g)?;
    }
    validate_labels(&req.labels).map_err(|e| AppError::BadRequest(e.to_string()))?;
    check_name("agent_version", &req.agent_version, 64)?;
    let facts = HostFacts {
        hostname: req.hostname.clone(),
        instance_id: req.instance_id.clone(),
        group: req.group.clone(),
        labels: req.labels.clone(),
        agent_version: Some(req.agent_version.clone()),
    };
    let host_id = state.store.upsert_host(&facts, HostSource::Agent).await?;
    let token = new_token();
    state
        .store
        .replace_agent_token(
            host_id,
            &format!("agent:{}", req.hostname),
            &token_hash(token.expose()),
        )
        .await?;
    state.metrics.enrollments.inc();
    tracing::info!(host = host_id, hostname = %req.hostname, group = ?req.group, "agent enrolled");
    let pushed = settings_for(&state, req.group.as_deref());
    Ok(Json(EnrollResponse {
        host_id,
        agent_token: token.expose().to_string(),
        settings: pushed.settings.clone(),
        settings_version: Some(pushed.version.clone()),
    }))
}

/// Settings pushed to the agents of `group` by `[[agents]]` sections, and
/// their version.
fn settings_for(state: &AppState, group: Option<&str>) -> std::sync::Arc<GroupSettings> {
    state.config.central.for_group(group)
}

/// A place among the batches in flight, taken before the body is read; none
/// free is 503 with Retry-After (the agent keeps the batch and retries).
struct BatchSlot(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit);

impl axum::extract::FromRequestParts<AppState> for BatchSlot {
    type Rejection = AppError;

    async fn from_request_parts(
        _parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, AppError> {
        match state.batch_slots.clone().try_acquire_owned() {
            Ok(permit) => Ok(BatchSlot(permit)),
            Err(_) => {
                state.metrics.batches_rejected_busy.inc();
                Err(AppError::Busy(format!(
                    "{} batches are being committed (http.max_concurrent_batches); retry shortly",
                    state.config.http.max_concurrent_batches
                )))
            }
        }
    }
}

async fn batch(
    agent: AgentHost,
    _slot: BatchSlot,
    State(state): State<AppState>,
    JsonBody(batch): JsonBody<Batch>,
) -> ApiResult<Json<BatchAck>> {
    if batch.id.stream.is_empty() || batch.id.stream.len() > 64 {
        return Err(AppError::BadRequest(
            "batch id stream must be 1 to 64 characters".into(),
        ));
    }
    let id = batch.id.clone();
    let outcome = state.ingest.ingest(agent.host_id, batch, now()).await?;
    let version = agent
        .group
        .as_ref()
        .map(|g| settings_for(&state, g.as_deref()).version.clone());
    Ok(Json(BatchAck {
        batch: id,
        duplicate: outcome.duplicate,
        accepted: outcome.accepted,
        rejected: outcome.rejected,
        settings: None,
        settings_version: version,
    }))
}

/// `200` with the version of the agent's settings (an agent older than
/// versioned settings takes any 2xx and ignores the body).
async fn heartbeat(
    agent: AgentHost,
    State(state): State<AppState>,
) -> ApiResult<Json<HeartbeatAck>> {
    state.store.touch_host(agent.host_id).await?;
    let version = agent
        .group
        .as_ref()
        .map(|g| settings_for(&state, g.as_deref()).version.clone());
    Ok(Json(HeartbeatAck {
        settings_version: version,
    }))
}

async fn leave(
    agent: AgentHost,
    State(state): State<AppState>,
    body: Option<Json<LeaveRequest>>,
) -> ApiResult<StatusCode> {
    state.store.leave_host(agent.host_id).await?;
    let reason = body.and_then(|Json(b)| b.reason).unwrap_or_default();
    tracing::info!(host = agent.host_id, reason = %reason.chars().take(200).collect::<String>(), "agent left");
    Ok(StatusCode::NO_CONTENT)
}

/// The agent's settings, with their version as `ETag`; `304` when the
/// agent's `If-None-Match` names that version already.
async fn config(
    agent: AgentHost,
    State(state): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let group = agent
        .group
        .clone()
        .ok_or_else(|| AppError::NotFound("this agent's host was removed; enroll again".into()))?;
    let pushed = settings_for(&state, group.as_deref());
    let etag = format!("\"{}\"", pushed.version);
    let known = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| {
            let tag = tag.trim();
            tag == etag || tag == "*" || tag.strip_prefix("W/") == Some(etag.as_str())
        });
    let etag_header = [(header::ETAG, etag)];
    if known {
        return Ok((StatusCode::NOT_MODIFIED, etag_header).into_response());
    }
    Ok((etag_header, Json(pushed.settings.clone())).into_response())
}

#[cfg(test)]
mod tests {
    use crate::config::{settings_of, FileConfig};
    use metrolog_protocol::AgentSettings;
    use metrolog_protocol::{syslog::Severity, LogFileSettings, LogFilterSettings};

    #[test]
    fn a_groups_sections_add_files_and_the_last_filter_wins() {
        let cfg = FileConfig::parse(
            r#"
            [[agents]]
            group = "web"
            metrics = { ship_interval = "10s" }
            logs.files = [{ path = "/var/log/nginx/*.log", app = "nginx" }]
            logs.filter = { min_severity = "info", exclude = ["healthcheck"] }
            [[agents]]
            group = "db"
            logs.files = [{ path = "/var/log/postgresql/*.log" }]
            [[agents]]
            group = "web"
            logs.files = [{ path = "/var/log/nginx/*.log", app = "other" }, { path = "/var/log/app.log" }]
            logs.filter = { exclude = ["ping"] }
            [[agents]]
            group = "batch"
            metrics = { sample_interval = "5s" }
            checks = [{ name = "http", command = ["/usr/lib/nagios/plugins/check_http", "-H", "127.0.0.1"] }]
            [[agents]]
            group = "batch"
            checks = [{ name = "sh", command = ["check_x | tail -1"], shell = true, interval = "5s", max_attempts = 2 }]
            "#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let batch = settings_of(&cfg.agents, Some("batch")).checks.unwrap();
        assert_eq!(batch.len(), 2);
        assert_eq!(batch[0].name, "http");
        assert_eq!(
            (
                batch[0].interval_ms,
                batch[0].timeout_ms,
                batch[0].max_attempts
            ),
            (Some(60_000), Some(10_000), Some(3)),
            "defaults are sent, so every agent version runs the same check"
        );
        assert_eq!(
            (batch[1].shell, batch[1].interval_ms, batch[1].max_attempts),
            (true, Some(5000), Some(2))
        );
        assert_eq!(settings_of(&cfg.agents, Some("web")).checks, None);
        let web = settings_of(&cfg.agents, Some("web"));
        assert_eq!(web.ship_interval_ms, Some(10_000));
        let logs = web.logs.unwrap();
        assert_eq!(
            logs.files,
            [
                LogFileSettings {
                    path: "/var/log/nginx/*.log".into(),
                    app: Some("nginx".into()),
                    timezone: None,
                },
                LogFileSettings {
                    path: "/var/log/app.log".into(),
                    ..Default::default()
                },
            ]
        );
        assert_eq!(
            logs.filter,
            Some(LogFilterSettings {
                exclude: vec!["ping".into()],
                ..Default::default()
            })
        );
        let first = settings_of(&cfg.agents[..1], Some("web")).logs.unwrap();
        assert_eq!(
            first.filter.unwrap().min_severity,
            Some(Severity::Info),
            "sent as its number"
        );
        assert_eq!(settings_of(&cfg.agents, Some("batch")).logs, None);
        assert_eq!(settings_of(&cfg.agents, None), AgentSettings::default());
    }
}
