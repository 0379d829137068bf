//! The list pages of the navigation: every group (`/groups`) with its members
//! by state, and every host (`/hosts`, `?state=down` for the ones down).

use super::api::hosts::{overview_data, OverviewHost};
use super::assets;
use super::dashboard::{group_href, PageUser};
use super::error::AppError;
use super::AppState;
use crate::store::HostState;
use askama::Template;
use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/groups", get(groups))
        .route("/hosts", get(hosts))
}

/// One group's line.
pub struct GroupLine {
    pub name: String,
    pub href: String,
    pub up: usize,
    pub down: usize,
    pub left: usize,
}

#[derive(Template)]
#[template(path = "groups.html")]
struct GroupsPage<'a> {
    user: &'a str,
    role: &'a str,
    csrf: &'a str,
    asset_version: &'a str,
    groups: Vec<GroupLine>,
    ungrouped: usize,
}

#[derive(Template)]
#[template(path = "hosts.html")]
struct HostsPage<'a> {
    user: &'a str,
    role: &'a str,
    csrf: &'a str,
    asset_version: &'a str,
    hosts: Vec<OverviewHost>,
    /// The state filter shown, if any.
    state: Option<&'static str>,
}

impl HostsPage<'_> {
    fn fmt_value(v: Option<&f64>, unit: &str) -> String {
        match v {
            Some(v) => format!("{v:.1}{unit}"),
            None => "–".into(),
        }
    }
}

fn render(t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => AppError::Internal(format!("template: {e}")).into_response(),
    }
}

async fn groups(State(state): State<AppState>, PageUser(op): PageUser) -> Response {
    let all = match overview_data(&state).await {
        Ok(g) => g,
        Err(e) => return e.into_response(),
    };
    let mut ungrouped = 0;
    let mut lines = Vec::new();
    for g in all {
        let count = |s: HostState| g.hosts.iter().filter(|h| h.host.state == s).count();
        if g.hosts.iter().all(|h| h.host.group.is_none()) {
            ungrouped += g.hosts.len();
            continue;
        }
        lines.push(GroupLine {
            href: group_href(&g.group),
            up: count(HostState::Up),
            down: count(HostState::Down),
            left: count(HostState::Left),
            name: g.group,
        });
    }
    render(&GroupsPage {
        user: &op.name,
        role: op.role.as_str(),
        csrf: op.csrf.as_deref().unwrap_or(""),
        asset_version: assets::version(),
        groups: lines,
        ungrouped,
    })
}

#[derive(Deserialize)]
struct HostsQuery {
    state: Option<String>,
}

async fn hosts(
    State(state): State<AppState>,
    PageUser(op): PageUser,
    Query(q): Query<HostsQuery>,
) -> Response {
    let filter = match q.state.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some("up") => Some((HostState::Up, "up")),
        Some("down") => Some((HostState::Down, "down")),
        Some("left") => Some((HostState::Left, "left")),
        Some(other) => {
            return AppError::BadRequest(format!("state {other:?} is not one of up, down, left"))
                .into_response()
        }
    };
    let all = match overview_data(&state).await {
        Ok(g) => g,
        Err(e) => return e.into_response(),
    };
    let mut hosts: Vec<OverviewHost> = all
        .into_iter()
        .flat_map(|g| g.hosts)
        .filter(|h| filter.is_none_or(|(s, _)| h.host.state == s))
        .collect();
    hosts.sort_by(|a, b| a.host.hostname.cmp(&b.host.hostname));
    render(&HostsPage {
        user: &op.name,
        role: op.role.as_str(),
        csrf: op.csrf.as_deref().unwrap_or(""),
        asset_version: assets::version(),
        hosts,
        state: filter.map(|(_, name)| name),
    })
}
