//! Dashboard pages: login, logout, overview. Server-rendered with askama
//! (which escapes every value: hostnames and log lines are attacker-controlled),
//! refreshed by plain JavaScript from the JSON API.

use super::api::hosts::{overview_data, OverviewGroup};
use super::assets;
use super::auth::{cookie, Operator, SESSION_COOKIE};
use super::error::AppError;
use super::AppState;
use crate::auth::{random_string, token_hash, verify_password_async};
use crate::store::now;
use askama::Template;
use axum::extract::{ConnectInfo, Form, FromRequestParts, State};
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

fn cookie_header(name: &str, value: &str, max_age: i64) -> HeaderValue {
    // HttpOnly + SameSite=Strict: scripts cannot read it, other sites cannot send it.
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}"
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

async fn login_page() -> Response {
    login_form(None, StatusCode::OK)
}

fn login_form(error: Option<&str>, status: StatusCode) -> Response {
    let csrf = random_string(24);
    let mut resp = render(&LoginPage {
        csrf: &csrf,
        error,
        asset_version: assets::version(),
    });
    *resp.status_mut() = status;
    resp.headers_mut().append(
        header::SET_COOKIE,
        cookie_header(LOGIN_CSRF_COOKIE, &csrf, 3600),
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
    // Double-submit check: the form must carry the value of the cookie set with it.
    let mut parts = axum::http::Request::new(()).into_parts().0;
    parts.headers = headers;
    if cookie(&parts, LOGIN_CSRF_COOKIE) != Some(form.csrf.as_str()) || form.csrf.is_empty() {
        return login_form(
            Some("The form expired; please try again."),
            StatusCode::FORBIDDEN,
        );
    }
    let addr = peer.ip().to_string();
    let user = form.username.trim();
    if !state.limiter.allowed(user, &addr) {
        state.metrics.login_rate_limited.inc();
        return login_form(
            Some("Too many failed attempts; wait a minute and try again."),
            StatusCode::TOO_MANY_REQUESTS,
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
    let Some(u) = found.filter(|_| ok) else {
        state.limiter.failed(user, &addr);
        state.metrics.login_failures.inc();
        tracing::info!(user = %user.chars().take(64).collect::<String>(), %addr, "failed login");
        return login_form(
            Some("Wrong user name or password."),
            StatusCode::UNAUTHORIZED,
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
    resp.headers_mut()
        .append(header::SET_COOKIE, cookie_header(SESSION_COOKIE, &sid, ttl));
    resp.headers_mut()
        .append(header::SET_COOKIE, cookie_header(LOGIN_CSRF_COOKIE, "", 0));
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
    csrf: String,
}

async fn logout(
    State(state): State<AppState>,
    PageUser(op): PageUser,
    headers: HeaderMap,
    Form(form): Form<LogoutForm>,
) -> Response {
    if op.csrf.as_deref() != Some(form.csrf.as_str()) {
        return AppError::Forbidden("missing or wrong CSRF token".into()).into_response();
    }
    let mut parts = axum::http::Request::new(()).into_parts().0;
    parts.headers = headers;
    if let Some(sid) = cookie(&parts, SESSION_COOKIE) {
        if let Err(e) = state.store.delete_session(&token_hash(sid)).await {
            return AppError::from(e).into_response();
        }
    }
    let mut resp = Redirect::to("/login").into_response();
    resp.headers_mut()
        .append(header::SET_COOKIE, cookie_header(SESSION_COOKIE, "", 0));
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
}

impl OverviewPage<'_> {
    fn fmt_value(v: Option<&f64>, unit: &str) -> String {
        match v {
            Some(v) => format!("{v:.1}{unit}"),
            None => "–".into(),
        }
    }
}

async fn overview(State(state): State<AppState>, PageUser(op): PageUser) -> Response {
    let groups = match overview_data(&state).await {
        Ok(g) => g,
        Err(e) => return e.into_response(),
    };
    render(&OverviewPage {
        user: &op.name,
        role: op.role.as_str(),
        csrf: op.csrf.as_deref().unwrap_or(""),
        groups: &groups,
        asset_version: assets::version(),
    })
}
