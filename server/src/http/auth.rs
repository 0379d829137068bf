//! Who is calling: extractors for operators (bearer token or session cookie),
//! admins, enrollment and agents.

use super::error::AppError;
use super::AppState;
use crate::auth::{secrets_match, token_hash, Role};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, Method};

pub const SESSION_COOKIE: &str = "ml_session";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// A reader of the API or dashboard (viewer or admin).
#[derive(Debug, Clone)]
pub struct Operator {
    pub name: String,
    pub role: Role,
    /// CSRF token of the session, when authenticated by cookie.
    pub csrf: Option<String>,
}

impl Operator {
    /// A dashboard form's check: the session's CSRF token came in the form's
    /// `csrf` field, and, with `admin`, the operator is an admin. Bearer
    /// callers have no session, so they cannot post forms.
    pub fn check_form(&self, csrf: &str, admin: bool) -> Result<(), AppError> {
        if admin && self.role != Role::Admin {
            return Err(AppError::Forbidden("this needs the admin role".into()));
        }
        match &self.csrf {
            Some(expected) if secrets_match(csrf, expected) => Ok(()),
            _ => Err(AppError::Forbidden(
                "missing or wrong CSRF token: reload the page and try again".into(),
            )),
        }
    }
}

/// An operator with the admin role.
#[derive(Debug, Clone)]
pub struct Admin(pub Operator);

/// Holder of an enrollment (or admin) token.
#[derive(Debug, Clone)]
pub struct Enroller;

/// An enrolled agent; it may only write as `host_id`.
#[derive(Debug, Clone)]
pub struct AgentHost {
    pub host_id: i64,
    /// Its group (`None` inside: no group); `None`: the host was removed.
    pub group: Option<Option<String>>,
}

pub fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

pub fn cookie<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

async fn token_role(
    state: &AppState,
    token: &str,
) -> Result<(Role, crate::store::TokenRow), AppError> {
    let row = state
        .store
        .token_by_hash(&token_hash(token))
        .await?
        .ok_or_else(|| {
            state.metrics.auth_failures.inc();
            AppError::Unauthorized("unknown or revoked token".into())
        })?;
    let role = Role::parse(&row.role)
        .ok_or_else(|| AppError::Internal(format!("token {} has unknown role", row.id)))?;
    // The admin page shows when a token was last used; a failure to note it
    // must not fail the request.
    if let Err(e) = state.store.touch_token(&row).await {
        tracing::warn!(error = %e, token = row.id, "could not note the token's last use");
    }
    Ok((role, row))
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(token) = bearer(parts) {
            let (role, row) = token_role(state, token).await?;
            return match role {
                Role::Viewer | Role::Admin => Ok(Operator {
                    name: row.name,
                    role,
                    csrf: None,
                }),
                _ => Err(AppError::Forbidden(format!(
                    "a {} token cannot use the operator API",
                    role.as_str()
                ))),
            };
        }
        if let Some(sid) = cookie(parts, SESSION_COOKIE) {
            if let Some(s) = state.store.session(&token_hash(sid)).await? {
                let role = Role::parse(&s.role).unwrap_or(Role::Viewer);
                return Ok(Operator {
                    name: s.user_name,
                    role,
                    csrf: Some(s.csrf),
                });
            }
        }
        state.metrics.auth_failures.inc();
        Err(AppError::Unauthorized(
            "authentication required: send `Authorization: Bearer <token>` or log in".into(),
        ))
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let op = Operator::from_request_parts(parts, state).await?;
        if op.role != Role::Admin {
            return Err(AppError::Forbidden("this needs the admin role".into()));
        }
        // Cookie-authenticated writes must echo the session's CSRF token.
        if let Some(csrf) = &op.csrf {
            let safe = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
            let sent = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
            if !safe && !sent.is_some_and(|s| secrets_match(s, csrf)) {
                return Err(AppError::Forbidden(format!(
                    "missing or wrong {CSRF_HEADER} header"
                )));
            }
        }
        Ok(Admin(op))
    }
}

impl FromRequestParts<AppState> for Enroller {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or_else(|| {
            state.metrics.auth_failures.inc();
            AppError::Unauthorized(
                "enrollment needs `Authorization: Bearer <enrollment token>`".into(),
            )
        })?;
        match token_role(state, token).await?.0 {
            Role::Enroll | Role::Admin => Ok(Enroller),
            other => Err(AppError::Forbidden(format!(
                "a {} token cannot enroll agents",
                other.as_str()
            ))),
        }
    }
}

impl FromRequestParts<AppState> for AgentHost {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or_else(|| {
            state.metrics.auth_failures.inc();
            AppError::Unauthorized(
                "agent requests need `Authorization: Bearer <agent token>`".into(),
            )
        })?;
        let (role, row) = token_role(state, token).await?;
        match (role, row.host_id) {
            (Role::Agent, Some(host_id)) => Ok(AgentHost {
                host_id,
                group: row.host_group,
            }),
            _ => Err(AppError::Forbidden(
                "only an enrolled agent's own token can send batches; enroll first".into(),
            )),
        }
    }
}
