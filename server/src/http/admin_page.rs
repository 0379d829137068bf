//! The admin page (`/admin`, admins only): users (add, role, disable, reset
//! password), API and enrollment tokens (created and shown once, listed with
//! their last use, revoked) and agents (revoke their credentials, remove the
//! host). Every change is a form carrying the session's CSRF token.

use super::alarms_page::{age, when};
use super::assets;
use super::auth::Operator;
use super::dashboard::PageUser;
use super::error::AppError;
use super::headers::server_url;
use super::AppState;
use crate::auth::{hash_password_async, new_token, token_hash, Role};
use crate::store::{HostFilter, HostRow, TokenListRow, UserListRow};
use askama::Template;
use axum::extract::{Form, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use std::collections::HashMap;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin", get(page))
        .route("/admin/users", post(add_user))
        .route("/admin/users/{id}/role", post(set_role))
        .route("/admin/users/{id}/disable", post(disable))
        .route("/admin/users/{id}/enable", post(enable))
        .route("/admin/users/{id}/password", post(reset_password))
        .route("/admin/tokens", post(create_token))
        .route("/admin/tokens/{id}/revoke", post(revoke_token))
        .route("/admin/agents/{id}/revoke", post(revoke_agent))
        .route("/admin/agents/{id}/remove", post(remove_agent))
}

/// Shortest password the page accepts (as `metrolog-server user add`).
pub const MIN_PASSWORD: usize = 8;

/// A token just created: its secret is shown this once.
pub struct Created {
    pub name: String,
    pub role: String,
    pub secret: String,
    /// For an enrollment token: the command that enrolls an instance.
    pub command: Option<String>,
}

pub struct TokenItem {
    pub row: TokenListRow,
    pub created: String,
    pub last_used: String,
}

pub struct AgentItem {
    pub host: HostRow,
    pub last_seen: String,
    pub live_tokens: i64,
}

#[derive(Template)]
#[template(path = "admin.html")]
struct AdminPage<'a> {
    user: &'a str,
    role: &'a str,
    csrf: &'a str,
    asset_version: &'a str,
    users: Vec<(String, UserListRow)>,
    tokens: Vec<TokenItem>,
    agents: Vec<AgentItem>,
    created: Option<Created>,
    message: Option<String>,
}

/// The command an instance runs to enroll with `token`.
pub fn enroll_command(server: &str, token: &str) -> String {
    format!("metrolog-agent --server {server} --enroll-token {token} --group web")
}

async fn page(State(state): State<AppState>, PageUser(op): PageUser) -> Response {
    if op.role != Role::Admin {
        return AppError::Forbidden("the admin page needs the admin role".into()).into_response();
    }
    render(&state, &op, None, None, StatusCode::OK).await
}

async fn render(
    state: &AppState,
    op: &Operator,
    created: Option<Created>,
    message: Option<String>,
    status: StatusCode,
) -> Response {
    let data = async {
        let users = state.store.users().await?;
        let tokens = state.store.tokens().await?;
        let hosts = state.store.hosts(&HostFilter::default()).await?;
        let live = state.store.live_agent_tokens().await?;
        Ok::<_, crate::store::StoreError>((users, tokens, hosts, live))
    }
    .await;
    let (users, tokens, hosts, live): (_, _, Vec<HostRow>, HashMap<i64, i64>) = match data {
        Ok(d) => d,
        Err(e) => return AppError::from(e).into_response(),
    };
    let shown_once = created.is_some();
    let page = AdminPage {
        user: &op.name,
        role: op.role.as_str(),
        csrf: op.csrf.as_deref().unwrap_or(""),
        asset_version: assets::version(),
        users: users.into_iter().map(|u| (when(u.created_at), u)).collect(),
        tokens: tokens
            .into_iter()
            .map(|t| TokenItem {
                created: when(t.created_at),
                last_used: t
                    .last_used_at
                    .map(|u| format!("{} ago", age(u)))
                    .unwrap_or_else(|| "never".into()),
                row: t,
            })
            .collect(),
        agents: hosts
            .into_iter()
            .filter(|h| !h.passive)
            .map(|h| AgentItem {
                last_seen: format!("{} ago", age(h.last_seen)),
                live_tokens: live.get(&h.id).copied().unwrap_or(0),
                host: h,
            })
            .collect(),
        created,
        message,
    };
    let mut resp = match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => return AppError::Internal(format!("template: {e}")).into_response(),
    };
    *resp.status_mut() = status;
    if shown_once {
        // A secret shown once must not stay in a cache.
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// The outcome of a form: back to the page, or the page with what went wrong.
async fn done(
    state: &AppState,
    op: &Operator,
    result: Result<(), AppError>,
    anchor: &str,
) -> Response {
    match result {
        Ok(()) => Redirect::to(&format!("/admin#{anchor}")).into_response(),
        Err(e) if e.is_internal() => e.into_response(),
        Err(e) => {
            let status = e.status();
            render(state, op, None, Some(e.message().to_string()), status).await
        }
    }
}

#[derive(Deserialize)]
struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

#[derive(Deserialize)]
struct AddUser {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    role: String,
}

fn user_role(text: &str) -> Result<&'static str, AppError> {
    match text {
        "viewer" => Ok("viewer"),
        "admin" => Ok("admin"),
        other => Err(AppError::BadRequest(format!(
            "role {other:?} is not one of viewer, admin"
        ))),
    }
}

fn check_password(p: &str) -> Result<(), AppError> {
    if p.chars().count() < MIN_PASSWORD {
        return Err(AppError::BadRequest(format!(
            "the password must be at least {MIN_PASSWORD} characters long"
        )));
    }
    Ok(())
}

async fn add_user(
    State(state): State<AppState>,
    PageUser(op): PageUser,
    Form(f): Form<AddUser>,
) -> Response {
    if let Err(e) = op.check_form(&f.csrf, true) {
        return e.into_response();
    }
    let result = async {
        let name = f.name.trim();
        super::api::check_name("user name", name, 64)?;
        let role = user_role(&f.role)?;
        check_password(&f.password)?;
        let hash = hash_password_async(f.password.clone()).await;
        state.store.create_user(name, &hash, role).await?;
        tracing::info!(user = %name, %role, by = %op.name, "user added");
        Ok(())
    }
    .await;
    done(&state, &op, result, "users").await
}

#[derive(Deserialize)]
struct RoleForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    role: String,
}

fn found(ok: bool, what: &str) -> Result<(), AppError> {
    if ok {
        Ok(())
    } else {
        Err(AppError::NotFound(format!("no such {what}")))
    }
}

async fn set_role(
    State(state): State<AppState>,
    PageUser(op): PageUser,
    Path(id): Path<i64>,
    Form(f): Form<RoleForm>,
) -> Response {
    if let Err(e) = op.check_form(&f.csrf, true) {
        return e.into_response();
    }
    let result = async {
        let role = user_role(&f.role)?;
        found(state.store.set_user_role(id, role).await?, "user")?;
        tracing::info!(user = id, %role, by = %op.name, "user role changed");
        Ok(())
    }
    .await;
    done(&state, &op, result, "users").await
}

async fn disable(
    State(state): State<AppState>,
    PageUser(op): PageUser,
    Path(id): Path<i64>,
    Form(f): Form<CsrfOnly>,
) -> Response {
    toggle(state, op, id, f, true).await
}

async fn enable(
    State(state): State<AppState>,
    PageUser(op): PageUser,
    Path(id): Path<i64>,
    Form(f): Form<CsrfOnly>,
) -> Response {
    toggle(state, op, id, f, false).await
}

async fn toggle(state: AppState, op: Operator, id: i64, f: CsrfOnly, disabled: bool) -> Response {
    if let Err(e) = op.check_form(&f.csrf, true) {
        return e.into_response();
    }
    let result = async {
        found(state.store.set_user_disabled(id, disabled).await?, "user")?;
        tracing::info!(user = id, disabled, by = %op.name, "user access changed");
        Ok(())
    }
    .await;
    done(&state, &op, result, "users").await
}

#[derive(Deserialize)]
struct PasswordForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    password: String,
}

async fn reset_password(
    State(state): State<AppState>,
    PageUser(op): PageUser,
    Path(id): Path<i64>,
    Form(f): Form<PasswordForm>,
) -> Response {
    if let Err(e) = op.check_form(&f.csrf, true) {
        return e.into_response();
    }
    let result = async {
        check_password(&f.password)?;
        let hash = hash_password_async(f.password.clone()).await;
        found(state.store.set_user_password(id, &hash).await?, "user")?;
        tracing::info!(user = id, by = %op.name, "password reset");
        Ok(())
    }
    .await;
    done(&state, &op, result, "users").await
}

#[derive(Deserialize)]
struct TokenForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    role: String,
}

async fn create_token(
    State(state): State<AppState>,
    PageUser(op): PageUser,
    headers: HeaderMap,
    Form(f): Form<TokenForm>,
) -> Response {
    if let Err(e) = op.check_form(&f.csrf, true) {
        return e.into_response();
    }
    let result = async {
        let name = f.name.trim();
        super::api::check_name("token name", name, 64)?;
        let role = match f.role.as_str() {
            "viewer" | "admin" | "enroll" => f.role.clone(),
            other => {
                return Err(AppError::BadRequest(format!(
                    "role {other:?} is not one of viewer, admin, enroll"
                )))
            }
        };
        let secret = new_token();
        state
            .store
            .insert_token(name, &role, &token_hash(secret.expose()), None)
            .await?;
        tracing::info!(token = %name, %role, by = %op.name, "token created");
        Ok(Created {
            command: (role == "enroll")
                .then(|| enroll_command(&server_url(&headers), secret.expose())),
            name: name.to_string(),
            role,
            secret: secret.expose().to_string(),
        })
    }
    .await;
    match result {
        Ok(created) => render(&state, &op, Some(created), None, StatusCode::OK).await,
        Err(e) if e.is_internal() => e.into_response(),
        Err(e) => {
            let status = e.status();
            render(&state, &op, None, Some(e.message().to_string()), status).await
        }
    }
}

async fn revoke_token(
    State(state): State<AppState>,
    PageUser(op): PageUser,
    Path(id): Path<i64>,
    Form(f): Form<CsrfOnly>,
) -> Response {
    if let Err(e) = op.check_form(&f.csrf, true) {
        return e.into_response();
    }
    let result = async {
        found(state.store.revoke_token(id).await?, "live token")?;
        tracing::info!(token = id, by = %op.name, "token revoked");
        Ok(())
    }
    .await;
    done(&state, &op, result, "tokens").await
}

async fn revoke_agent(
    State(state): State<AppState>,
    PageUser(op): PageUser,
    Path(id): Path<i64>,
    Form(f): Form<CsrfOnly>,
) -> Response {
    if let Err(e) = op.check_form(&f.csrf, true) {
        return e.into_response();
    }
    let result = async {
        let n = state.store.revoke_agent_tokens(id).await?;
        found(n > 0, "agent credential")?;
        tracing::info!(host = id, by = %op.name, "agent credentials revoked");
        Ok(())
    }
    .await;
    done(&state, &op, result, "agents").await
}

async fn remove_agent(
    State(state): State<AppState>,
    PageUser(op): PageUser,
    Path(id): Path<i64>,
    Form(f): Form<CsrfOnly>,
) -> Response {
    if let Err(e) = op.check_form(&f.csrf, true) {
        return e.into_response();
    }
    let result = async {
        found(state.store.delete_host(id).await?, "host")?;
        tracing::info!(host = id, by = %op.name, "host removed by an operator");
        Ok(())
    }
    .await;
    done(&state, &op, result, "agents").await
}
