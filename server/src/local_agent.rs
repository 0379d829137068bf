//! The built-in agent: the agent crate as a library, in process, reporting the
//! server's own host through the server's own API, exactly as a remote agent
//! would. It enrolls with a token rotated at each start.
//!
//! Under HTTPS (`[http] tls_cert`) it does not go through TLS: the server
//! names a loopback listener of its own (`127.0.0.1`, a port the kernel
//! picks) that serves the agent API only, in plain HTTP, and the local agent
//! ships there. So no certificate has to name `127.0.0.1`, and nothing but
//! the agent protocol is reachable without TLS (docs/security.md).

use crate::auth::{new_token, token_hash};
use crate::http::AppState;
use crate::store::StoreError;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

const TOKEN_NAME: &str = "local-agent";

pub async fn start(
    state: &AppState,
    addr: SocketAddr,
    mut stop: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, StoreError> {
    state
        .store
        .revoke_tokens_named(TOKEN_NAME, "enroll")
        .await?;
    let token = new_token();
    state
        .store
        .insert_token(TOKEN_NAME, "enroll", &token_hash(token.expose()), None)
        .await?;
    let host = if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    };
    let mut config = metrolog_agent::AgentConfig::new(
        vec![format!("http://{host}")],
        Some(metrolog_agent::Secret::new(token.expose())),
    );
    config.state_dir = Some(state.config.data_dir.join("local-agent"));
    config.group = Some("metrolog".into());
    Ok(tokio::spawn(async move {
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(e) = metrolog_agent::run(config, stopped).await {
            tracing::error!(error = %e, "local agent stopped");
        }
    }))
}

/// The loopback listener of the local agent under HTTPS.
pub async fn bind_loopback() -> std::io::Result<TcpListener> {
    TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await
}

/// Serves `router` on `listener`, agent API paths only, until `stop`.
pub fn serve_loopback(
    listener: TcpListener,
    router: Router,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let router = router.layer(axum::middleware::from_fn(agent_paths_only));
    tokio::spawn(async move {
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        let served = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stopped)
        .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the local agent's loopback listener failed");
        }
    })
}

/// Only the agent protocol is served without TLS.
async fn agent_paths_only(req: Request, next: Next) -> Response {
    if req.uri().path().starts_with("/api/v1/agent/") {
        next.run(req).await
    } else {
        (
            StatusCode::NOT_FOUND,
            "this listener serves the local agent only; use the HTTPS address",
        )
            .into_response()
    }
}
