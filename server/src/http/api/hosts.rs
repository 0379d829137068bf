//! `GET /api/v1/hosts`, `GET|DELETE /api/v1/hosts/{id}`, and the overview feed.

use super::rfc3339;
use crate::http::auth::{Admin, Operator};
use crate::http::error::{ApiResult, AppError};
use crate::http::AppState;
use crate::store::{HostFilter, HostRow, HostState};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/hosts", get(list))
        .route("/api/v1/hosts/{id}", get(one).delete(remove))
        .route("/api/v1/overview", get(overview))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    group: Option<String>,
    state: Option<String>,
}

/// A host as the API shows it.
#[derive(Debug, Serialize)]
pub struct HostView {
    pub id: i64,
    pub hostname: String,
    pub instance_id: Option<String>,
    pub group: Option<String>,
    pub labels: metrolog_protocol::Labels,
    pub agent_version: Option<String>,
    pub source: String,
    pub passive: bool,
    pub state: HostState,
    pub state_since: String,
    pub first_seen: String,
    pub last_seen: String,
}

impl From<HostRow> for HostView {
    fn from(h: HostRow) -> Self {
        HostView {
            id: h.id,
            hostname: h.hostname,
            instance_id: h.instance_id,
            group: h.group,
            labels: h.labels,
            agent_version: h.agent_version,
            source: h.source,
            passive: h.passive,
            state: h.state,
            state_since: rfc3339(h.state_since),
            first_seen: rfc3339(h.first_seen),
            last_seen: rfc3339(h.last_seen),
        }
    }
}

pub fn parse_filter(group: Option<String>, state: Option<String>) -> ApiResult<HostFilter> {
    let state = match state.as_deref() {
        None | Some("") => None,
        Some(s) => Some(HostState::parse(s).ok_or_else(|| {
            AppError::BadRequest(format!("unknown state {s:?}: use up, down or left"))
        })?),
    };
    Ok(HostFilter {
        group: group.filter(|g| !g.is_empty()),
        state,
    })
}

async fn list(
    _op: Operator,
    State(state): State<AppState>,
    Query(p): Query<ListParams>,
) -> ApiResult<Json<Vec<HostView>>> {
    let filter = parse_filter(p.group, p.state)?;
    let hosts = state.store.hosts(&filter).await?;
    Ok(Json(hosts.into_iter().map(HostView::from).collect()))
}

async fn one(
    _op: Operator,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<HostView>> {
    let id = parse_id(&id)?;
    let host = state
        .store
        .host(id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no host with id {id}")))?;
    Ok(Json(host.into()))
}

async fn remove(
    Admin(op): Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = parse_id(&id)?;
    if !state.store.delete_host(id).await? {
        return Err(AppError::NotFound(format!("no host with id {id}")));
    }
    tracing::info!(host = id, by = %op.name, "host removed by an operator");
    Ok(StatusCode::NO_CONTENT)
}

fn parse_id(text: &str) -> ApiResult<i64> {
    text.parse()
        .map_err(|_| AppError::BadRequest(format!("host id {text:?} is not a number")))
}

/// The values the overview page shows for each host.
pub const OVERVIEW_SERIES: [&str; 3] = ["cpu.busy_pct", "mem.used_pct", "load.1m"];

#[derive(Debug, Serialize)]
pub struct OverviewHost {
    #[serde(flatten)]
    pub host: HostView,
    /// Seconds since the host was last heard from.
    pub last_seen_age_s: i64,
    /// Latest value of each of [`OVERVIEW_SERIES`] present.
    pub current: HashMap<String, f64>,
    /// The host's active alarms, when it has some: what makes it red.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<Problem>,
}

/// A host's active alarms at a glance: the worst state and how many.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// `critical`, `warning` or `unknown`.
    pub state: String,
    pub count: usize,
}

#[derive(Debug, Serialize)]
pub struct OverviewGroup {
    pub group: String,
    pub hosts: Vec<OverviewHost>,
}

/// Hosts grouped by group (ungrouped last), with current values.
pub async fn overview_data(state: &AppState) -> ApiResult<Vec<OverviewGroup>> {
    let now = crate::store::now();
    let hosts = state.store.hosts(&HostFilter::default()).await?;
    let latest = state.store.latest_values(&OVERVIEW_SERIES).await?;
    let mut current: HashMap<i64, HashMap<String, f64>> = HashMap::new();
    for (host, name, _ts, v) in latest {
        current.entry(host).or_default().insert(name, v);
    }
    // Worst first: the first alarm of a host names its state.
    let mut problems: HashMap<i64, Problem> = HashMap::new();
    for a in state.store.alarms(true, None).await? {
        if let Some(id) = a.host_id {
            problems
                .entry(id)
                .or_insert_with(|| Problem {
                    state: a.state.to_lowercase(),
                    count: 0,
                })
                .count += 1;
        }
    }
    let mut groups: Vec<OverviewGroup> = Vec::new();
    for h in hosts {
        let group = h.group.clone().unwrap_or_else(|| "(no group)".into());
        let entry = OverviewHost {
            last_seen_age_s: (now - h.last_seen).max(0),
            current: current.remove(&h.id).unwrap_or_default(),
            problem: problems.remove(&h.id),
            host: h.into(),
        };
        match groups.iter_mut().find(|g| g.group == group) {
            Some(g) => g.hosts.push(entry),
            None => groups.push(OverviewGroup {
                group,
                hosts: vec![entry],
            }),
        }
    }
    groups.sort_by(|a, b| {
        (a.group == "(no group)")
            .cmp(&(b.group == "(no group)"))
            .then(a.group.cmp(&b.group))
    });
    Ok(groups)
}

async fn overview(
    _op: Operator,
    State(state): State<AppState>,
) -> ApiResult<Json<Vec<OverviewGroup>>> {
    Ok(Json(overview_data(&state).await?))
}
