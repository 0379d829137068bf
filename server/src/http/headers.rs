//! Headers every response carries: a Content-Security-Policy that allows
//! scripts, styles and images from the server itself only (no inline script,
//! no inline style attribute, no framing), and the usual companions.

use axum::extract::Request;
use axum::http::{header, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

/// The dashboard's scripts are ES modules under `/static/`; nothing inline.
/// `img-src data:` lets the CSS draw small icons; graphs are same-origin.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
form-action 'self'; frame-ancestors 'none'";

pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    let mut set = |name: HeaderName, value: &'static str| {
        h.entry(name).or_insert(HeaderValue::from_static(value));
    };
    set(header::CONTENT_SECURITY_POLICY, CSP);
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::REFERRER_POLICY, "same-origin");
    set(header::X_FRAME_OPTIONS, "DENY");
    resp
}

/// Whether the browser reached us over HTTPS: directly (TLS listener) or
/// through a reverse proxy that says so. Only decides the cookies' `Secure`
/// flag, so a forged header can only make a client's own cookie stricter.
pub fn is_https(req_headers: &axum::http::HeaderMap) -> bool {
    req_headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// The URL browsers reach this server at, as the request names it (for the
/// enroll command the dashboard shows). Falls back to the default address.
pub fn server_url(req_headers: &axum::http::HeaderMap) -> String {
    let host = req_headers
        .get("x-forwarded-host")
        .or_else(|| req_headers.get(header::HOST))
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b))
        })
        .unwrap_or("127.0.0.1:8080");
    let scheme = if is_https(req_headers) {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{host}")
}
