//! Dashboard pages: login, logout, overview, host and group pages.
//! Server-rendered with askama
//! (which escapes every value: hostnames and log lines are attacker-controlled),
//! refreshed by plain JavaScript from the JSON API.

use super::api::hosts::{overview_data, OverviewGroup, OverviewHost};
use super::assets;
use super::auth::{cookie, Operator, SESSION_COOKIE};
use super::error::AppError;
use super::headers::is_https;
use super::AppState;
use crate::auth::{random_string, secrets_match, token_hash, verify_password_async};
use crate::groups;
use crate::store::now;
use askama::Template;
use axum::extract::{ConnectInfo, Form, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use std::net::SocketAddr;

const LOGIN_CSRF_COOKIE: &str = "ml_login_csrf";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(overview))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/hosts/{id}", get(host_page))
        .route("/groups/{name}", get(group_page))
}

/// An operator for a page: redirects to the login page instead of a 401.
pub struct PageUser(pub Operator);

impl FromRequestParts<AppState> for PageUser {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match Operator::from_request_parts(parts, state).await {
            Ok(op) => Ok(PageUser(op)),
            Err(AppError::Unauthorized(_)) => Err(Redirect::to("/login").into_response()),
            Err(e) => Err(e.into_response()),
        }
    }
}

fn render(t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => AppError::Internal(format!("template: {e}")).into_response(),
    }
}

/// HttpOnly + SameSite=Strict: scripts cannot read it, other sites cannot
/// send it; `Secure` when the browser came over HTTPS, so it never travels in
/// clear afterwards.
fn cookie_header(name: &str, value: &str, max_age: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .expect("cookie values are base64url")
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    csrf: &'a str,
    error: Option<&'a str>,
    asset_version: &'a str,
}

async fn login_page(headers: HeaderMap) -> Response {
    login_form(None, StatusCode::OK, is_https(&headers))
}

fn login_form(error: Option<&str>, status: StatusCode, secure: bool) -> Response {
    let csrf = random_string(24);
    let mut resp = render(&LoginPage {
        csrf: &csrf,
        error,
        asset_version: assets::version(),
    });
    *resp.status_mut() = status;
    resp.headers_mut().append(
        header::SET_COOKIE,
        cookie_header(LOGIN_CSRF_COOKIE, &csrf, 3600, secure),
    );
    resp
}

#[derive(Deserialize)]
struct LoginForm {
    username: String,
    password: String,
    csrf: String,
}

async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let secure = is_https(&headers);
    // Double-submit check: the form must carry the value of the cookie set with it.
    let mut parts = axum::http::Request::new(()).into_parts().0;
    parts.headers = headers;
    if !cookie(&parts, LOGIN_CSRF_COOKIE).is_some_and(|c| secrets_match(&form.csrf, c)) {
        return login_form(
            Some("The form expired; please try again."),
            StatusCode::FORBIDDEN,
            secure,
        );
    }
    let addr = peer.ip().to_string();
    let user = form.username.trim();
    if !state.limiter.allowed(user, &addr) {
        state.metrics.login_rate_limited.inc();
        return login_form(
            Some("Too many failed attempts; wait a minute and try again."),
            StatusCode::TOO_MANY_REQUESTS,
            secure,
        );
    }
    let found = match state.store.user_by_name(user).await {
        Ok(u) => u,
        Err(e) => return AppError::from(e).into_response(),
    };
    let ok = match &found {
        Some(u) => verify_password_async(form.password.clone(), u.password_hash.clone()).await,
        None => {
            // Same cost as a real check, so timing does not reveal user names.
            let dummy = tokio::task::spawn_blocking(dummy_hash)
                .await
                .unwrap_or_default();
            let _ = verify_password_async(form.password.clone(), dummy).await;
            false
        }
    };
    if let Some(u) = found.as_ref().filter(|u| ok && u.disabled_at.is_some()) {
        tracing::info!(user = %u.name, %addr, "login of a disabled user refused");
        return login_form(
            Some("This account is disabled; ask an administrator."),
            StatusCode::FORBIDDEN,
            secure,
        );
    }
    let Some(u) = found.filter(|_| ok) else {
        state.limiter.failed(user, &addr);
        state.metrics.login_failures.inc();
        tracing::info!(user = %user.chars().take(64).collect::<String>(), %addr, "failed login");
        return login_form(
            Some("Wrong user name or password."),
            StatusCode::UNAUTHORIZED,
            secure,
        );
    };
    state.limiter.succeeded(user, &addr);
    let sid = random_string(32);
    let ttl = state.config.http.session_ttl.as_secs() as i64;
    if let Err(e) = state
        .store
        .create_session(&token_hash(&sid), u.id, &random_string(24), now() + ttl)
        .await
    {
        return AppError::from(e).into_response();
    }
    tracing::info!(user = %u.name, %addr, "login");
    let mut resp = Redirect::to("/").into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        cookie_header(SESSION_COOKIE, &sid, ttl, secure),
    );
    resp.headers_mut().append(
        header::SET_COOKIE,
        cookie_header(LOGIN_CSRF_COOKIE, "", 0, secure),
    );
    resp
}

/// argon2id hash of a random string, verified against when the user is unknown.
fn dummy_hash() -> String {
    static H: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    H.get_or_init(|| crate::auth::hash_password(&random_string(16)))
        .clone()
}

#[derive(Deserialize)]
struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(state): State<AppState>,
    PageUser(op): PageUser,
    headers: HeaderMap,
    Form(form): Form<LogoutForm>,
) -> Response {
    if let Err(e) = op.check_form(&form.csrf, false) {
        return e.into_response();
    }
    let secure = is_https(&headers);
    let mut parts = axum::http::Request::new(()).into_parts().0;
    parts.headers = headers;
    if let Some(sid) = cookie(&parts, SESSION_COOKIE) {
        if let Err(e) = state.store.delete_session(&token_hash(sid)).await {
            return AppError::from(e).into_response();
        }
    }
    let mut resp = Redirect::to("/login").into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        cookie_header(SESSION_COOKIE, "", 0, secure),
    );
    resp
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage<'a> {
    user: &'a str,
    role: &'a str,
    csrf: &'a str,
    groups: &'a [OverviewGroup],
    asset_version: &'a str,
    /// With no host yet, for an admin: the command that enrolls an instance,
    /// with a fresh enrollment token.
    enroll_command: Option<String>,
}

impl OverviewPage<'_> {
    fn fmt_value(v: Option<&f64>, unit: &str) -> String {
        fmt_value(v, unit)
    }
    fn group_href(name: &str) -> String {
        group_href(name)
    }
}

fn fmt_value(v: Option<&f64>, unit: &str) -> String {
    match v {
        Some(v) => format!("{v:.1}{unit}"),
        None => "–".into(),
    }
}

/// The group page's URL, the name percent-encoded.
pub fn group_href(name: &str) -> String {
    let mut out = String::from("/groups/");
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What the overview calls hosts without a group.
const NO_GROUP: &str = "(no group)";

/// The name of the enrollment token the empty overview shows (each showing
/// revokes the one before: only the latest page's command works).
const ONBOARDING_TOKEN: &str = "dashboard-onboarding";

async fn overview(
    State(state): State<AppState>,
    PageUser(op): PageUser,
    headers: HeaderMap,
) -> Response {
    let groups = match overview_data(&state).await {
        Ok(g) => g,
        Err(e) => return e.into_response(),
    };
    let mut enroll_command = None;
    if groups.is_empty() && op.role == crate::auth::Role::Admin {
        let token = crate::auth::new_token();
        let rotate = async {
            state
                .store
                .revoke_tokens_named(ONBOARDING_TOKEN, "enroll")
                .await?;
            state
                .store
                .insert_token(
                    ONBOARDING_TOKEN,
                    "enroll",
                    &token_hash(token.expose()),
                    None,
                )
                .await
        };
        if let Err(e) = rotate.await {
            return AppError::from(e).into_response();
        }
        enroll_command = Some(super::admin_page::enroll_command(
            &super::headers::server_url(&headers),
            token.expose(),
        ));
    }
    let mut resp = render(&OverviewPage {
        user: &op.name,
        role: op.role.as_str(),
        csrf: op.csrf.as_deref().unwrap_or(""),
        groups: &groups,
        asset_version: assets::version(),
        enroll_command,
    });
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// One graph panel: its caption and the query string it draws
/// (`/api/v1/graph.svg?{query}&from=…`; the page's script adds the range and
/// the size).
pub struct Panel {
    pub title: &'static str,
    pub query: String,
    /// With `group`: the same graph with one line per member.
    pub per_member: Option<String>,
}

/// The query string of a panel: `sel` selects the host or group (already
/// encoded), then one `name` per series.
fn panel_query(sel: &str, names: &[&str]) -> String {
    let mut q = sel.to_string();
    for n in names {
        q.push_str("&name=");
        q.push_str(n);
    }
    q
}

/// The host page's panels (series names of the agent's collectors).
fn host_panels(id: i64) -> Vec<Panel> {
    let sel = format!("host={id}");
    let p = |title, names: &[&str]| Panel {
        title,
        query: panel_query(&sel, names),
        per_member: None,
    };
    vec![
        p(
            "CPU",
            &[
                "cpu.busy_pct",
                "cpu.user_pct",
                "cpu.system_pct",
                "cpu.iowait_pct",
                "cpu.steal_pct",
            ],
        ),
        p(
            "Memory",
            &["mem.used_bytes", "mem.total_bytes", "swap.used_bytes"],
        ),
        p("Load", &["load.1m", "load.5m", "load.15m"]),
        p("Disk usage", &["disk.used_pct"]),
        p(
            "Disk I/O",
            &["disk.read_bytes_per_s", "disk.write_bytes_per_s"],
        ),
        p("Network", &["net.rx_bytes_per_s", "net.tx_bytes_per_s"]),
    ]
}

/// The group page's panels: aggregates across the members.
fn group_panels(name: &str) -> Vec<Panel> {
    let g = group_href(name);
    let g = g.trim_start_matches("/groups/");
    let p = |title, agg: &str, names: &[&str]| {
        let query = panel_query(&format!("group={g}&agg={agg}"), names);
        Panel {
            title,
            per_member: Some(panel_query(&format!("group={g}&per_host=1"), names)),
            query,
        }
    };
    let members = Panel {
        title: "Members up",
        query: panel_query(&format!("group={g}"), &[groups::MEMBERS_SERIES]),
        per_member: None,
    };
    vec![
        members,
        p("CPU busy, average of members", "avg", &["cpu.busy_pct"]),
        p("CPU busy, busiest member", "max", &["cpu.busy_pct"]),
        p("Memory used, average", "avg", &["mem.used_pct"]),
        p("Load (1 min), average", "avg", &["load.1m"]),
        p("Network received, sum", "sum", &["net.rx_bytes_per_s"]),
        p("Network sent, sum", "sum", &["net.tx_bytes_per_s"]),
    ]
}

#[derive(Template)]
#[template(path = "host.html")]
struct HostPage<'a> {
    user: &'a str,
    role: &'a str,
    csrf: &'a str,
    asset_version: &'a str,
    h: &'a OverviewHost,
    group: Option<(&'a str, String)>,
    panels: Vec<Panel>,
    /// Why the host is red: its active alarms, and its checks.
    alarms: Vec<super::alarms_page::AlarmItem>,
    /// (age of the last run, the result, whether a rule alarms on it).
    checks: Vec<(String, crate::store::CheckRow, bool)>,
    /// Some check has no rule (the page explains what that means).
    unalarmed_checks: bool,
    /// The host's Munin graphs, by category.
    munin: Vec<MuninCategory>,
}

/// A category of Munin graphs (`graph_category`), in name order.
struct MuninCategory {
    name: String,
    graphs: Vec<MuninGraph>,
}

/// One Munin graph: titled as Munin titles it, its fields in its order.
struct MuninGraph {
    title: String,
    query: String,
}

/// A graph's title and its fields as (order, series name).
type GraphFields = (String, Vec<(i64, String)>);

/// Groups a host's series descriptions into Munin's categories and graphs.
fn munin_graphs(id: i64, rows: Vec<crate::store::SeriesMetaRow>) -> Vec<MuninCategory> {
    use std::collections::BTreeMap;
    let sel = format!("host={id}");
    let mut cats: BTreeMap<String, BTreeMap<String, GraphFields>> = BTreeMap::new();
    for r in rows {
        let cat = r.category.clone().unwrap_or_else(|| "other".into());
        let title = r.title.clone().unwrap_or_else(|| r.graph.clone());
        let graph = cats
            .entry(cat)
            .or_default()
            .entry(r.graph)
            .or_insert((title, Vec::new()));
        graph.1.push((r.order, r.name));
    }
    cats.into_iter()
        .map(|(name, graphs)| {
            let mut graphs: Vec<MuninGraph> = graphs
                .into_values()
                .map(|(title, mut fields)| {
                    fields.sort();
                    let names: Vec<&str> = fields.iter().map(|(_, n)| n.as_str()).collect();
                    MuninGraph {
                        title,
                        query: panel_query(&sel, &names),
                    }
                })
                .collect();
            graphs.sort_by(|a, b| a.title.cmp(&b.title));
            MuninCategory { name, graphs }
        })
        .collect()
}

impl HostPage<'_> {
    fn fmt_value(v: Option<&f64>, unit: &str) -> String {
        fmt_value(v, unit)
    }
}

#[derive(Template)]
#[template(path = "group.html")]
struct GroupPage<'a> {
    user: &'a str,
    role: &'a str,
    csrf: &'a str,
    asset_version: &'a str,
    name: &'a str,
    hosts: &'a [OverviewHost],
    up: usize,
    down: usize,
    left: usize,
    panels: Vec<Panel>,
    scaling_href: String,
}

impl GroupPage<'_> {
    fn fmt_value(v: Option<&f64>, unit: &str) -> String {
        fmt_value(v, unit)
    }
}

#[derive(Template)]
#[template(path = "not_found.html")]
struct NotFoundPage<'a> {
    user: &'a str,
    role: &'a str,
    csrf: &'a str,
    asset_version: &'a str,
    what: &'a str,
}

pub(super) fn not_found_page(op: &Operator, what: &str) -> Response {
    let mut resp = render(&NotFoundPage {
        user: &op.name,
        role: op.role.as_str(),
        csrf: op.csrf.as_deref().unwrap_or(""),
        asset_version: assets::version(),
        what,
    });
    *resp.status_mut() = StatusCode::NOT_FOUND;
    resp
}

async fn host_page(
    State(state): State<AppState>,
    PageUser(op): PageUser,
    Path(id): Path<String>,
) -> Response {
    let groups = match overview_data(&state).await {
        Ok(g) => g,
        Err(e) => return e.into_response(),
    };
    let Some(h) = id.parse::<i64>().ok().and_then(|id| {
        groups
            .iter()
            .flat_map(|g| &g.hosts)
            .find(|h| h.host.id == id)
    }) else {
        return not_found_page(
            &op,
            "This host does not exist, or it expired from the fleet.",
        );
    };
    let group = h.host.group.as_deref().map(|g| (g, group_href(g)));
    let (alarms, checks, meta) = match (
        state.store.alarms(true, Some(h.host.id)).await,
        state.store.check_results(Some(h.host.id)).await,
        state.store.series_meta(h.host.id).await,
    ) {
        (Ok(a), Ok(c), Ok(m)) => (a, c, m),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            return AppError::from(e).into_response()
        }
    };
    let rules = match super::api::alarms::all_rules(&state).await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    // A check no rule names raises no alarm, whatever its status: the page
    // says so rather than show a CRITICAL that nothing acts on.
    let alarmed = |check: &str| {
        rules.iter().any(|r| {
            matches!(&r.kind, crate::alarms::rules::Kind::Check { check: c } if c.as_str() == check)
                && r.selector
                    .matches(&h.host.hostname, h.host.group.as_deref())
        })
    };
    let checks: Vec<_> = checks
        .into_iter()
        .map(|c| {
            let alarmed = alarmed(&c.name);
            (super::alarms_page::age(c.last_run), c, alarmed)
        })
        .collect();
    render(&HostPage {
        unalarmed_checks: checks.iter().any(|c| !c.2),
        checks,
        alarms: alarms
            .into_iter()
            .map(super::alarms_page::AlarmItem::new)
            .collect(),
        user: &op.name,
        role: op.role.as_str(),
        csrf: op.csrf.as_deref().unwrap_or(""),
        asset_version: assets::version(),
        h,
        group,
        panels: host_panels(h.host.id),
        munin: munin_graphs(h.host.id, meta),
    })
}

async fn group_page(
    State(state): State<AppState>,
    PageUser(op): PageUser,
    Path(name): Path<String>,
) -> Response {
    let groups = match overview_data(&state).await {
        Ok(g) => g,
        Err(e) => return e.into_response(),
    };
    let recorded_only;
    let g = match groups.iter().find(|g| g.group == name && name != NO_GROUP) {
        Some(g) => g,
        // Every member is gone, but the group's own series outlive them.
        None => match state.store.group_owner(&name).await {
            Ok(Some(_)) => {
                recorded_only = OverviewGroup {
                    group: name.clone(),
                    hosts: Vec::new(),
                };
                &recorded_only
            }
            Ok(None) => return not_found_page(&op, "No host of this group is known."),
            Err(e) => return AppError::from(e).into_response(),
        },
    };
    let count = |s: crate::store::HostState| g.hosts.iter().filter(|h| h.host.state == s).count();
    render(&GroupPage {
        user: &op.name,
        role: op.role.as_str(),
        csrf: op.csrf.as_deref().unwrap_or(""),
        asset_version: assets::version(),
        name: &g.group,
        hosts: &g.hosts,
        up: count(crate::store::HostState::Up),
        down: count(crate::store::HostState::Down),
        left: count(crate::store::HostState::Left),
        panels: group_panels(&g.group),
        scaling_href: format!("{}/scaling", group_href(&g.group)),
    })
}
