//! The logs page (`/logs`): filters, search, time range and a live tail, all
//! driven by `static/logs.js` from `/api/v1/logs` and its stream. The server
//! renders only the frame; every log field is inserted by the script with
//! `textContent` (log lines are attacker-controlled).

use super::assets;
use super::dashboard::PageUser;
use super::error::AppError;
use super::AppState;
use askama::Template;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;

pub fn router() -> Router<AppState> {
    Router::new().route("/logs", get(page))
}

#[derive(Template)]
#[template(path = "logs.html")]
struct LogsPage<'a> {
    user: &'a str,
    role: &'a str,
    csrf: &'a str,
    asset_version: &'a str,
}

async fn page(PageUser(op): PageUser) -> Response {
    let t = LogsPage {
        user: &op.name,
        role: op.role.as_str(),
        csrf: op.csrf.as_deref().unwrap_or(""),
        asset_version: assets::version(),
    };
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => AppError::Internal(format!("template: {e}")).into_response(),
    }
}
