//! The alarms page (`/alarms`): problems first by severity, then the recent
//! history of transitions, the silences and the notifications sent; acknowledgement and silence
//! forms for admins. Rendered by askama, which escapes everything (rule
//! names, hostnames, plugin output are attacker-controlled).

use super::assets;
use super::dashboard::PageUser;
use super::error::AppError;
use super::AppState;
use crate::alarms::silence::{MatcherSpec, Op, Silence};
use crate::auth::Role;
use crate::http::auth::Operator;
use crate::store::{AlarmRow, DeliveryFilter, DeliveryView, SilenceRow, TransitionRow};
use askama::Template;
use axum::extract::{Form, Path, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/alarms", get(page))
        .route("/alarms/{id}/ack", post(ack))
        .route("/silences", post(silence))
        .route("/silences/{id}/expire", post(expire))
}

/// `2026-12-03 18:20:05 UTC`.
pub fn when(ts: i64) -> String {
    chrono::DateTime::from_timestamp(ts, 0)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

/// `3 min`, `2 h 5 min`: how long ago, for people.
pub fn age(ts: i64) -> String {
    let s = (crate::store::now() - ts).max(0);
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s / 60),
        3600..=86_399 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

/// One alarm as the page shows it.
pub struct AlarmItem {
    pub row: AlarmRow,
    pub subject: String,
    pub subject_href: Option<String>,
    pub since: String,
    pub age: String,
    pub value: String,
}

impl AlarmItem {
    pub fn new(row: AlarmRow) -> Self {
        let (subject, subject_href) = match (&row.hostname, &row.host_id, &row.group) {
            (Some(h), Some(id), _) => (h.clone(), Some(format!("/hosts/{id}"))),
            (_, _, Some(g)) => (format!("group {g}"), Some(super::dashboard::group_href(g))),
            _ => (row.subject.clone(), None),
        };
        let series = row
            .subject
            .find('{')
            .map(|i| row.subject[i..].to_string())
            .unwrap_or_default();
        AlarmItem {
            subject: format!("{subject}{series}"),
            subject_href,
            since: when(row.since),
            age: age(row.since),
            value: row.value.map(|v| format!("{v:.3}")).unwrap_or_default(),
            row,
        }
    }

    pub fn css(&self) -> String {
        self.row.state.to_ascii_lowercase()
    }
}

#[derive(Template)]
#[template(path = "alarms.html")]
struct AlarmsPage<'a> {
    user: &'a str,
    role: &'a str,
    csrf: &'a str,
    asset_version: &'a str,
    admin: bool,
    active: Vec<AlarmItem>,
    history: Vec<(String, TransitionRow)>,
    silences: Vec<(String, String, SilenceRow)>,
    deliveries: Vec<DeliveryItem>,
    message: Option<String>,
}

/// One outbox delivery as the page shows it: what went where, and how its
/// attempts went.
pub struct DeliveryItem {
    pub row: DeliveryView,
    pub created: String,
    /// `200 in 12 ms`, `timeout after 10000 ms`: the last attempt.
    pub last: String,
}

impl DeliveryItem {
    fn new(row: DeliveryView) -> Self {
        let last = row
            .attempts
            .last()
            .map(|a| match (a.status, &a.error) {
                (Some(s), _) => format!("{s} in {} ms", a.latency_ms),
                (None, Some(e)) => format!("{e} ({} ms)", a.latency_ms),
                (None, None) => format!("no answer ({} ms)", a.latency_ms),
            })
            .unwrap_or_else(|| "not tried yet".into());
        DeliveryItem {
            created: when(row.created_ms / 1000),
            last,
            row,
        }
    }
}

impl AlarmsPage<'_> {
    fn matchers(s: &SilenceRow) -> String {
        s.matchers
            .iter()
            .map(|m| format!("{}{}{}", m.name, op_text(m.op), m.value))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn op_text(op: Op) -> &'static str {
    match op {
        Op::Eq => "=",
        Op::Ne => "!=",
        Op::Re => "=~",
        Op::NotRe => "!~",
    }
}

async fn render_page(state: &AppState, op: &Operator, message: Option<String>) -> Response {
    let data = async {
        let active = state.store.alarms(true, None).await?;
        let history = state.store.transitions(None, None, None, 100).await?;
        let silences = state.store.silences(Some(crate::store::now())).await?;
        let deliveries = state
            .store
            .deliveries(&DeliveryFilter {
                limit: 50,
                ..Default::default()
            })
            .await?;
        Ok::<_, crate::store::StoreError>((active, history, silences, deliveries))
    }
    .await;
    let (active, history, silences, deliveries) = match data {
        Ok(d) => d,
        Err(e) => return AppError::from(e).into_response(),
    };
    let page = AlarmsPage {
        user: &op.name,
        role: op.role.as_str(),
        csrf: op.csrf.as_deref().unwrap_or(""),
        asset_version: assets::version(),
        admin: op.role == Role::Admin,
        active: active.into_iter().map(AlarmItem::new).collect(),
        history: history.into_iter().map(|t| (when(t.at), t)).collect(),
        silences: silences
            .into_iter()
            .map(|s| (when(s.starts_at), when(s.ends_at), s))
            .collect(),
        deliveries: deliveries.into_iter().map(DeliveryItem::new).collect(),
        message,
    };
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => AppError::Internal(format!("template: {e}")).into_response(),
    }
}

async fn page(State(state): State<AppState>, PageUser(op): PageUser) -> Response {
    render_page(&state, &op, None).await
}

/// A form post's operator: an admin whose session's CSRF token came along.
fn form_admin(op: &Operator, csrf: &str) -> Result<(), AppError> {
    op.check_form(csrf, true)
}

#[derive(Debug, Deserialize)]
struct AckForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    comment: String,
}

async fn ack(
    State(state): State<AppState>,
    PageUser(op): PageUser,
    Path(id): Path<i64>,
    Form(form): Form<AckForm>,
) -> Response {
    if let Err(e) = form_admin(&op, &form.csrf) {
        return e.into_response();
    }
    let comment: String = form
        .comment
        .chars()
        .take(super::api::alarms::MAX_COMMENT)
        .collect();
    match state.alarms.acknowledge(id, &op.name, &comment).await {
        Ok(()) => Redirect::to("/alarms").into_response(),
        Err(Some(e)) => render_page(&state, &op, Some(format!("Not acknowledged: {e}"))).await,
        Err(None) => {
            render_page(
                &state,
                &op,
                Some("The alarm evaluator is not running.".into()),
            )
            .await
        }
    }
}

#[derive(Debug, Deserialize)]
struct SilenceForm {
    #[serde(default)]
    csrf: String,
    /// `group=web, alertname=~cpu.*`
    #[serde(default)]
    matchers: String,
    #[serde(default)]
    duration: String,
    #[serde(default)]
    comment: String,
}

/// Reads `name=value`, `name!=value`, `name=~regex`, `name!~regex`, comma separated.
pub fn parse_matchers(text: &str) -> Result<Vec<MatcherSpec>, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, op, value) = ["!~", "=~", "!=", "="]
            .iter()
            .find_map(|o| {
                part.split_once(o).map(|(n, v)| {
                    let op = match *o {
                        "!~" => Op::NotRe,
                        "=~" => Op::Re,
                        "!=" => Op::Ne,
                        _ => Op::Eq,
                    };
                    (n.trim(), op, v.trim().trim_matches('"'))
                })
            })
            .ok_or_else(|| {
                format!("{part:?}: write name=value, name!=value, name=~regex or name!~regex")
            })?;
        out.push(MatcherSpec {
            name: name.to_string(),
            op,
            value: value.to_string(),
        });
    }
    Ok(out)
}

async fn silence(
    State(state): State<AppState>,
    PageUser(op): PageUser,
    Form(form): Form<SilenceForm>,
) -> Response {
    if let Err(e) = form_admin(&op, &form.csrf) {
        return e.into_response();
    }
    let now = crate::store::now();
    let checked = parse_matchers(&form.matchers).and_then(|m| {
        let d = metrolog_protocol::parse_duration(&form.duration).map_err(|e| e.to_string())?;
        let ends = now + d.as_secs() as i64;
        Silence::parse(0, m.clone(), now, ends).map_err(|e| e.join("; "))?;
        Ok((m, ends))
    });
    let (matchers, ends) = match checked {
        Ok(v) => v,
        Err(e) => return render_page(&state, &op, Some(format!("Silence not created: {e}"))).await,
    };
    let comment: String = form
        .comment
        .chars()
        .take(super::api::alarms::MAX_COMMENT)
        .collect();
    match state
        .store
        .create_silence(&matchers, now, ends, &op.name, &comment)
        .await
    {
        Ok(_) => {
            state.alarms.reload().await;
            Redirect::to("/alarms").into_response()
        }
        Err(e) => AppError::from(e).into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn expire(
    State(state): State<AppState>,
    PageUser(op): PageUser,
    Path(id): Path<i64>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(e) = form_admin(&op, &form.csrf) {
        return e.into_response();
    }
    match state.store.expire_silence(id).await {
        Ok(_) => {
            state.alarms.reload().await;
            Redirect::to("/alarms").into_response()
        }
        Err(e) => AppError::from(e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matchers_are_read_from_text() {
        let m = parse_matchers("group=web, alertname=~cpu.*, host!=web-1").unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(
            (m[1].name.as_str(), m[1].op, m[1].value.as_str()),
            ("alertname", Op::Re, "cpu.*")
        );
        assert_eq!(m[2].op, Op::Ne);
        assert!(parse_matchers("nonsense").is_err());
    }
}
