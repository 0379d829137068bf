//! The scaling pages: `/scaling` (every group with policies) and
//! `/groups/{name}/scaling` (one group: its policies, the aggregate each
//! reads with both thresholds and the events drawn on it, the member count,
//! the events, the deliveries of its hooks with a retry for dead letters, and
//! the dry-run form whose events are drawn on the same graph). Rendered by
//! askama, which escapes everything: group names, hostnames and reasons are
//! attacker-controlled.

use super::alarms_page::{age, when};
use super::api::graph::{edited_policy, policy_thresholds};
use super::assets;
use super::dashboard::{group_href, not_found_page, PageUser};
use super::error::AppError;
use super::AppState;
use crate::auth::Role;
use crate::graph::Level;
use crate::http::auth::Operator;
use crate::scaling::Policy;
use crate::store::{DeliveryFilter, DeliveryView};
use askama::Template;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use std::collections::BTreeMap;

/// Events and deliveries the group page lists (newest first).
const EVENTS_SHOWN: i64 = 100;
const DELIVERIES_SHOWN: usize = 50;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/scaling", get(list))
        .route("/groups/{name}/scaling", get(page))
        .route("/groups/{name}/scaling/deliveries/{id}/retry", post(retry))
}

fn render(t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => AppError::Internal(format!("template: {e}")).into_response(),
    }
}

/// `name` percent-encoded for a path segment or a query value.
fn enc(name: &str) -> String {
    group_href(name)["/groups/".len()..].to_string()
}

/// The scaling page of a group.
pub fn scaling_href(group: &str) -> String {
    format!("{}/scaling", group_href(group))
}

/// `90s` → `1m 30s`; `0` → `0s`.
fn dur(secs: i64) -> String {
    if secs <= 0 {
        return "0s".into();
    }
    humantime::format_duration(std::time::Duration::from_secs(secs as u64)).to_string()
}

fn num(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

async fn policies(state: &AppState) -> Vec<Policy> {
    crate::scaling::runner::all_policies(
        &state.store,
        &state.file_policies,
        i64::from(state.store.archive_spec().base_step),
    )
    .await
}

// ---- /scaling ----

/// One group of the list.
pub struct GroupItem {
    pub name: String,
    pub href: String,
    pub policies: Vec<String>,
    /// `scale_out 4 → 5, 3 min ago`.
    pub last: Option<String>,
}

#[derive(Template)]
#[template(path = "scaling_list.html")]
struct ListPage<'a> {
    user: &'a str,
    role: &'a str,
    csrf: &'a str,
    asset_version: &'a str,
    groups: Vec<GroupItem>,
}

async fn list(State(state): State<AppState>, PageUser(op): PageUser) -> Response {
    let mut by_group: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in policies(&state).await {
        by_group.entry(p.group).or_default().push(p.name);
    }
    let mut groups = Vec::new();
    for (name, policies) in by_group {
        let last = match state.store.scaling_events(Some(&name), 20).await {
            Ok(e) => e
                .iter()
                .map(EventItem::new)
                .find(|e| e.scale)
                .map(|e| format!("{} {}, {} ago", e.kind, e.sizes, e.age)),
            Err(e) => return AppError::from(e).into_response(),
        };
        groups.push(GroupItem {
            href: scaling_href(&name),
            name,
            policies,
            last,
        });
    }
    render(&ListPage {
        user: &op.name,
        role: op.role.as_str(),
        csrf: op.csrf.as_deref().unwrap_or(""),
        asset_version: assets::version(),
        groups,
    })
}

// ---- /groups/{name}/scaling ----

/// One policy as the page shows it.
pub struct PolicyItem {
    pub p: Policy,
    pub source: &'static str,
    /// `avg(cpu.busy_pct) over 1m`
    pub reads: String,
    /// `> 75 out, < 25 in` or `target 50 ± 10%`.
    pub thresholds: String,
    /// `for 2m`, `3/5 rounds`, or empty.
    pub holds: String,
    pub cooldown: String,
    pub step: String,
    pub warmup: String,
    pub replacement: String,
}

impl PolicyItem {
    fn new(p: Policy) -> Self {
        let mut t = Vec::new();
        if let Some(v) = p.scale_out_above {
            t.push(format!("out above {}", num(v)));
        }
        if let Some(v) = p.scale_in_below {
            t.push(format!("in below {}", num(v)));
        }
        if let Some(v) = p.target {
            t.push(format!("target {} ± {}%", num(v), num(p.tolerance * 100.0)));
        }
        let holds = match p.datapoints {
            Some((m, n)) => format!("{m} of the last {n} rounds"),
            None if p.for_ > 0 => format!("for {}", dur(p.for_)),
            None => "at once".into(),
        };
        PolicyItem {
            source: match p.source {
                crate::alarms::rules::RuleSource::File => "file",
                crate::alarms::rules::RuleSource::Api => "API",
            },
            reads: format!(
                "{}({}) over {}",
                p.aggregation.as_str(),
                p.metric.as_str(),
                dur(p.window)
            ),
            thresholds: t.join(", "),
            holds,
            cooldown: dur(p.cooldown),
            step: if p.target.is_some() {
                "to the target".into()
            } else {
                format!("{} per event", p.step)
            },
            warmup: dur(p.warmup),
            replacement: dur(p.replacement_timeout),
            p,
        }
    }
}

/// One graph of the page (see templates/panels.html and static/graphs.js).
pub struct Figure {
    pub title: String,
    /// What `/api/v1/graph.svg` draws.
    pub query: String,
    /// What `/api/v1/query` reads for the hover readout (no graph-only
    /// parameters).
    pub values: String,
    /// A window of its own (the dry-run's), not the range bar's.
    pub pinned: Option<(i64, i64)>,
    /// Describes the marks drawn on it.
    pub legend: Vec<(&'static str, &'static str)>,
}

/// One scaling event as the page lists it.
pub struct EventItem {
    pub id: String,
    pub kind: String,
    /// Scale and heal events (the others are membership events).
    pub scale: bool,
    pub at: String,
    pub age: String,
    pub policy: String,
    pub value: String,
    /// `4 → 5`, or the member for membership events.
    pub sizes: String,
    pub reason: String,
}

impl EventItem {
    fn new(v: &serde_json::Value) -> Self {
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        let at = chrono::DateTime::parse_from_rfc3339(v["at"].as_str().unwrap_or_default())
            .map(|d| d.timestamp())
            .unwrap_or_default();
        let kind = s("type");
        let sizes = match (v["desired_size"].as_u64(), v["member"]["hostname"].as_str()) {
            (Some(d), _) => format!("{} → {d}", v["current_size"].as_u64().unwrap_or(0)),
            (None, Some(h)) => h.to_string(),
            (None, None) => v["current_size"].as_u64().unwrap_or(0).to_string(),
        };
        let value = match (v["value"].as_f64(), v["threshold"].as_f64()) {
            (Some(x), Some(t)) => format!("{} (threshold {})", num(x), num(t)),
            (Some(x), None) => num(x),
            _ => String::new(),
        };
        EventItem {
            id: s("id"),
            scale: crate::graph::marks::ScaleMark::of_event_type(&kind).is_some(),
            kind,
            at: when(at),
            age: age(at),
            policy: s("policy"),
            value,
            sizes,
            reason: s("reason"),
        }
    }

    fn of(e: &crate::scaling::event::ScalingEvent) -> Self {
        Self::new(&serde_json::to_value(e).unwrap_or_default())
    }

    pub fn css(&self) -> String {
        self.kind.replace('_', "-")
    }
}

/// One delivery of a hook, with its attempts.
pub struct DeliveryItem {
    pub row: DeliveryView,
    pub created: String,
    /// (when, outcome, excerpt) per attempt, oldest first.
    pub attempts: Vec<(String, String, String)>,
}

impl DeliveryItem {
    fn new(row: DeliveryView) -> Self {
        let attempts = row
            .attempts
            .iter()
            .map(|a| {
                let outcome = match (a.status, &a.error) {
                    (Some(s), _) => format!("{s} in {} ms", a.latency_ms),
                    (None, Some(e)) => format!("{e} ({} ms)", a.latency_ms),
                    (None, None) => format!("no answer ({} ms)", a.latency_ms),
                };
                (when(a.at_ms / 1000), outcome, a.excerpt.clone())
            })
            .collect();
        DeliveryItem {
            created: when(row.created_ms / 1000),
            attempts,
            row,
        }
    }
}

/// The dry-run form's fields (a GET: it stores and sends nothing).
#[derive(Debug, Default, Deserialize)]
struct DryRunForm {
    #[serde(default)]
    policy: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    scale_out_above: String,
    #[serde(default)]
    scale_in_below: String,
    #[serde(default)]
    dry_run: String,
}

/// A dry-run's outcome for the page.
pub struct DryRunView {
    pub policy: String,
    pub from: String,
    pub to: String,
    pub rounds: usize,
    pub events: Vec<EventItem>,
}

#[derive(Template)]
#[template(path = "scaling.html")]
struct GroupScalingPage<'a> {
    user: &'a str,
    role: &'a str,
    csrf: &'a str,
    asset_version: &'a str,
    admin: bool,
    name: &'a str,
    group_href: String,
    href: String,
    live: usize,
    policies: Vec<PolicyItem>,
    figures: Vec<Figure>,
    events: Vec<EventItem>,
    hooks: Vec<String>,
    deliveries: Vec<DeliveryItem>,
    form_policy: String,
    form_from: String,
    form_to: String,
    form_out: String,
    form_in: String,
    dry: Option<DryRunView>,
    dry_figure: Option<Figure>,
    message: Option<String>,
}

fn marks_legend(dry_run: bool) -> Vec<(&'static str, &'static str)> {
    let mut l = vec![
        ("out", "▲ scale out"),
        ("in", "▼ scale in"),
        ("heal", "◆ heal"),
    ];
    if dry_run {
        l.push(("dry", "△ ▽ ◇ at the bottom: the dry-run's"));
    }
    l
}

/// The aggregate graph of a policy: its metric as the group records it,
/// with the policy's thresholds and events (`extra`: the dry-run's
/// parameters).
fn policy_figure(group: &str, p: &Policy, extra: &str, pinned: Option<(i64, i64)>) -> Figure {
    let values = format!(
        "group={}&agg={}&name={}",
        enc(group),
        p.aggregation.as_str(),
        enc(p.metric.as_str())
    );
    Figure {
        title: format!(
            "{}({}) across live members · policy {}",
            p.aggregation.as_str(),
            p.metric.as_str(),
            p.name
        ),
        query: format!("{values}&policy={}{extra}", enc(&p.name)),
        values,
        pinned,
        legend: marks_legend(pinned.is_some()),
    }
}

async fn page(
    State(state): State<AppState>,
    PageUser(op): PageUser,
    Path(name): Path<String>,
    Query(form): Query<DryRunForm>,
) -> Response {
    render_page(&state, &op, &name, form, None).await
}

async fn render_page(
    state: &AppState,
    op: &Operator,
    name: &str,
    form: DryRunForm,
    message: Option<String>,
) -> Response {
    let all = policies(state).await;
    let mine: Vec<Policy> = all.into_iter().filter(|p| p.group == name).collect();
    let hosts = match state
        .store
        .hosts(&crate::store::HostFilter {
            group: Some(name.to_string()),
            state: None,
        })
        .await
    {
        Ok(h) => h,
        Err(e) => return AppError::from(e).into_response(),
    };
    if hosts.is_empty() && mine.is_empty() {
        match state.store.group_owner(name).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                return not_found_page(op, "No host or scaling policy of this group is known.")
            }
            Err(e) => return AppError::from(e).into_response(),
        }
    }
    let live = hosts
        .iter()
        .filter(|h| h.state == crate::store::HostState::Up)
        .count();

    let mut figures: Vec<Figure> = mine
        .iter()
        .map(|p| policy_figure(name, p, "", None))
        .collect();
    let members = format!("group={}&name={}", enc(name), crate::groups::MEMBERS_SERIES);
    figures.push(Figure {
        title: "Live members (the group's recorded group.members)".into(),
        query: members.clone(),
        values: members,
        pinned: None,
        legend: Vec::new(),
    });

    // The dry-run: the selected policy (the first by default) with its
    // thresholds as edited in the form.
    let selected = mine
        .iter()
        .find(|p| p.name == form.policy)
        .or_else(|| mine.first());
    let mut message = message;
    let (mut dry, mut dry_figure) = (None, None);
    if let (Some(p), true) = (selected, form.dry_run == "1") {
        match dry_run(state, name, p, &form).await {
            Ok((view, fig)) => {
                dry = Some(view);
                dry_figure = Some(fig);
            }
            Err(e) => message = Some(format!("Dry-run not run: {e}")),
        }
    }

    let events = match state.store.scaling_events(Some(name), EVENTS_SHOWN).await {
        Ok(e) => e.iter().map(EventItem::new).collect(),
        Err(e) => return AppError::from(e).into_response(),
    };
    // The hooks that hear of this group, and their deliveries of its events.
    let hooks: Vec<String> = state
        .hooks
        .iter()
        .filter(|h| h.group.as_deref().is_none_or(|g| g == name))
        .map(|h| h.name.clone())
        .collect();
    let mut deliveries = Vec::new();
    for h in &hooks {
        match state
            .store
            .deliveries(&DeliveryFilter {
                receiver: Some(h.clone()),
                state: None,
                limit: 200,
            })
            .await
        {
            Ok(d) => deliveries.extend(d.into_iter().filter(|d| d.payload["group"] == name)),
            Err(e) => return AppError::from(e).into_response(),
        }
    }
    deliveries.sort_by_key(|d| std::cmp::Reverse(d.id));
    deliveries.truncate(DELIVERIES_SHOWN);

    let fmt_opt = |v: Option<f64>| v.map(num).unwrap_or_default();
    let page = GroupScalingPage {
        user: &op.name,
        role: op.role.as_str(),
        csrf: op.csrf.as_deref().unwrap_or(""),
        asset_version: assets::version(),
        admin: op.role == Role::Admin,
        name,
        group_href: group_href(name),
        href: scaling_href(name),
        live,
        form_policy: selected.map(|p| p.name.clone()).unwrap_or_default(),
        form_from: if form.from.is_empty() {
            "-6h".into()
        } else {
            form.from.clone()
        },
        form_to: if form.to.is_empty() {
            "now".into()
        } else {
            form.to.clone()
        },
        form_out: if form.scale_out_above.is_empty() {
            fmt_opt(selected.and_then(|p| p.scale_out_above))
        } else {
            form.scale_out_above.clone()
        },
        form_in: if form.scale_in_below.is_empty() {
            fmt_opt(selected.and_then(|p| p.scale_in_below))
        } else {
            form.scale_in_below.clone()
        },
        policies: mine.into_iter().map(PolicyItem::new).collect(),
        figures,
        events,
        hooks,
        deliveries: deliveries.into_iter().map(DeliveryItem::new).collect(),
        dry,
        dry_figure,
        message,
    };
    render(&page)
}

/// Runs the form's dry-run; its graph is the policy's, pinned to the
/// dry-run's window, with the edited thresholds and the dry-run's marks.
async fn dry_run(
    state: &AppState,
    group: &str,
    p: &Policy,
    form: &DryRunForm,
) -> Result<(DryRunView, Figure), String> {
    let now = crate::store::now();
    let t =
        |v: &str, d: &str| crate::query::parse_time(if v.trim().is_empty() { d } else { v }, now);
    let from = t(&form.from, "-6h")?;
    let to = t(&form.to, "now")?;
    let number = |k: &str, v: &str| -> Result<Option<f64>, String> {
        let v = v.trim();
        if v.is_empty() {
            return Ok(None);
        }
        v.parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .map(Some)
            .ok_or_else(|| format!("{k} {v:?} must be a number"))
    };
    let out = number("scale_out_above", &form.scale_out_above)?;
    let inn = number("scale_in_below", &form.scale_in_below)?;
    let edited = edited_policy(p.clone(), out, inn)?;
    let run = crate::scaling::dryrun::run(&state.store, &edited, from, to, now)
        .await
        .map_err(|e| e.to_string())?;
    let mut extra = String::from("&dry_run=1");
    for (k, v) in [("scale_out_above", out), ("scale_in_below", inn)] {
        if let Some(v) = v {
            extra.push_str(&format!("&{k}={v}"));
        }
    }
    let mut fig = policy_figure(group, &edited, &extra, Some((run.from, run.to)));
    let lines: Vec<String> = policy_thresholds(&edited)
        .iter()
        .map(|t| match t.level {
            Level::ScaleIn => format!("in below {}", num(t.value)),
            _ => format!("out above {}", num(t.value)),
        })
        .collect();
    fig.title = format!("Dry-run of {} ({})", edited.name, lines.join(", "));
    Ok((
        DryRunView {
            policy: edited.name.clone(),
            from: when(run.from),
            to: when(run.to),
            rounds: run.rounds.len(),
            events: run.events.iter().map(EventItem::of).collect(),
        },
        fig,
    ))
}

#[derive(Debug, Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// Retry of a dead letter from the page: an admin whose session's CSRF token
/// came along, through the same code as `POST /api/v1/deliveries/{id}/retry`.
async fn retry(
    State(state): State<AppState>,
    PageUser(op): PageUser,
    Path((name, id)): Path<(String, i64)>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(e) = op.check_form(&form.csrf, true) {
        return e.into_response();
    }
    match super::api::deliveries::retry_dead(&state, id).await {
        Ok(_) => Redirect::to(&format!("{}#deliveries", scaling_href(&name))).into_response(),
        Err(AppError::NotFound(m) | AppError::Conflict(m)) => {
            let mut resp = render_page(
                &state,
                &op,
                &name,
                DryRunForm::default(),
                Some(format!("Not retried: {m}")),
            )
            .await;
            *resp.status_mut() = StatusCode::CONFLICT;
            resp
        }
        Err(e) => e.into_response(),
    }
}
