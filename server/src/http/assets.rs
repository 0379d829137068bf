//! The dashboard's CSS and JavaScript, embedded in the binary so the server runs
//! from any directory. URLs carry a content hash (`?v=`), so responses can be
//! cached for a year.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};
use std::sync::OnceLock;
use tower_http::set_header::SetResponseHeaderLayer;

struct Asset {
    name: &'static str,
    mime: &'static str,
    body: &'static str,
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "app.css",
        mime: "text/css; charset=utf-8",
        body: include_str!("../../../static/app.css"),
    },
    Asset {
        name: "logs.js",
        mime: "text/javascript; charset=utf-8",
        body: include_str!("../../../static/logs.js"),
    },
    Asset {
        name: "overview.js",
        mime: "text/javascript; charset=utf-8",
        body: include_str!("../../../static/overview.js"),
    },
    Asset {
        name: "problems.js",
        mime: "text/javascript; charset=utf-8",
        body: include_str!("../../../static/problems.js"),
    },
    Asset {
        name: "graphs.js",
        mime: "text/javascript; charset=utf-8",
        body: include_str!("../../../static/graphs.js"),
    },
    Asset {
        name: "favicon.svg",
        mime: "image/svg+xml",
        body: include_str!("../../../static/favicon.svg"),
    },
];

/// Short content hash of all assets, appended to asset URLs for cache busting.
pub fn version() -> &'static str {
    static V: OnceLock<String> = OnceLock::new();
    V.get_or_init(|| {
        let mut h = Sha256::new();
        for a in ASSETS {
            h.update(a.body.as_bytes());
        }
        h.finalize()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    })
}

pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/static/{name}", get(serve))
        // Browsers ask for it whatever the page links; an SVG answers.
        .route(
            "/favicon.ico",
            get(|| async { serve(Path("favicon.svg".to_string())).await }),
        )
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=31536000, immutable"),
        ))
}

async fn serve(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(a) => ([(header::CONTENT_TYPE, a.mime)], a.body).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            [(header::CACHE_CONTROL, "no-store")],
            "no such asset",
        )
            .into_response(),
    }
}
