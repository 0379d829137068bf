//! The built-in agent: the agent crate as a library, in process, reporting the
//! server's own host through the server's own API, exactly as a remote agent
//! would. It enrolls with a token rotated at each start.

use crate::auth::{new_token, token_hash};
use crate::http::AppState;
use crate::store::StoreError;
use std::net::SocketAddr;
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
