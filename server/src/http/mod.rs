//! The HTTP side: one router for the JSON API, the agent protocol and the
//! dashboard, built by [`app`] so tests can drive it without a socket.

pub mod access;
mod admin_page;
mod alarms_page;
pub mod api;
mod assets;
pub mod auth;
pub mod dashboard;
pub mod error;
mod headers;
mod lists_page;
mod logs_page;
mod scaling_page;
pub mod tls;

use crate::auth::LoginLimiter;
use crate::config::ServerConfig;
use crate::ingest::Ingestor;
use crate::store::{HostFilter, HostState, Store};
use crate::telemetry::ServerMetrics;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use error::{InternalDetail, StorageFull};
use std::ops::Deref;
use std::sync::Arc;

/// Everything handlers share.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

#[derive(Debug)]
pub struct Shared {
    pub store: Arc<Store>,
    pub config: Arc<ServerConfig>,
    pub ingest: Ingestor,
    pub metrics: Arc<ServerMetrics>,
    pub limiter: LoginLimiter,
    /// Agent batches in flight (`http.max_concurrent_batches`).
    pub batch_slots: Arc<tokio::sync::Semaphore>,
    pub storage_full_log: crate::telemetry::Every,
    /// The alarm evaluator's mailbox (acknowledgements, reloads).
    pub alarms: crate::alarms::AlarmsHandle,
    /// Its other end, taken by whoever runs the evaluator (startup, tests).
    pub alarm_commands:
        std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<crate::alarms::evaluator::Command>>>,
    /// The rules of the server's file, checked (the API lists them beside its own).
    pub file_rules: Vec<crate::alarms::Rule>,
    /// The scaling runner's mailbox (reloads) and its other end.
    pub scaling: crate::scaling::ScalingHandle,
    pub scaling_commands:
        std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<crate::scaling::runner::Command>>>,
    /// The file's scaling policies and hooks, checked.
    pub file_policies: Vec<crate::scaling::Policy>,
    pub hooks: Vec<crate::scaling::Hook>,
    /// Wakes an outbox lane (a dead letter retried by hand); set once the
    /// notifier runs.
    pub lane_wake: std::sync::OnceLock<LaneWake>,
}

/// [`crate::notify::worker::LaneWake`], printable.
#[derive(Clone)]
pub struct LaneWake(pub crate::notify::worker::LaneWake);

impl std::fmt::Debug for LaneWake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LaneWake")
    }
}

impl Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    /// The evaluator's task, for whoever runs it (once: the mailbox is taken).
    pub fn alarm_runner(
        &self,
        clock: crate::clock::SharedClock,
        wake: crate::alarms::evaluator::Wake,
    ) -> Option<(
        crate::alarms::evaluator::Runner,
        tokio::sync::mpsc::Receiver<crate::alarms::evaluator::Command>,
    )> {
        let rx = self.alarm_commands.lock().ok()?.take()?;
        Some((
            crate::alarms::evaluator::Runner {
                store: self.store.clone(),
                clock,
                metrics: self.metrics.clone(),
                file_rules: self.file_rules.clone(),
                rule_context: self.config.file.rule_context(),
                wake,
            },
            rx,
        ))
    }

    /// The scaling runner's task, for whoever runs it (once: the mailbox is
    /// taken).
    pub fn scaling_runner(
        &self,
        clock: crate::clock::SharedClock,
        wake: crate::notify::worker::LaneWake,
    ) -> Option<(
        crate::scaling::Runner,
        tokio::sync::mpsc::Receiver<crate::scaling::runner::Command>,
    )> {
        let rx = self.scaling_commands.lock().ok()?.take()?;
        let _ = self.lane_wake.set(LaneWake(wake.clone()));
        Some((
            crate::scaling::Runner {
                store: self.store.clone(),
                clock,
                metrics: self.metrics.clone(),
                file_policies: self.file_policies.clone(),
                hooks: self.hooks.clone(),
                base_step: i64::from(self.store.archive_spec().base_step),
                staleness: self.config.liveness_timeout().as_secs().max(1) as i64,
                keep_events: self.config.file.retention.scaling.max_age,
                max_event_members: self.config.file.scaling.max_event_members,
                wake,
            },
            rx,
        ))
    }

    pub fn new(store: Arc<Store>, config: Arc<ServerConfig>, metrics: Arc<ServerMetrics>) -> Self {
        let ingest = Ingestor::new(store.clone(), metrics.clone());
        let limiter = LoginLimiter::new(config.http.login_attempts_per_minute);
        let batch_slots = Arc::new(tokio::sync::Semaphore::new(
            config.http.max_concurrent_batches.max(1) as usize,
        ));
        let (alarms, alarm_commands) = crate::alarms::AlarmsHandle::channel();
        // The file was checked when it was read; a hand-built configuration
        // with a bad rule runs without it (and says so).
        let file_rules =
            crate::alarms::Rule::parse_all(&config.file.rules, config.file.rule_context())
                .unwrap_or_else(|problems| {
                    tracing::error!(
                        ?problems,
                        "rules of the configuration do not parse; none is evaluated"
                    );
                    Vec::new()
                });
        let (scaling, scaling_commands) = crate::scaling::ScalingHandle::channel();
        let file_policies = config.policies();
        let hooks = config.hooks();
        AppState(Arc::new(Shared {
            store,
            config,
            ingest,
            metrics,
            limiter,
            batch_slots,
            storage_full_log: crate::telemetry::Every::new(std::time::Duration::from_secs(10)),
            alarms,
            alarm_commands: std::sync::Mutex::new(Some(alarm_commands)),
            file_rules,
            scaling,
            scaling_commands: std::sync::Mutex::new(Some(scaling_commands)),
            file_policies,
            hooks,
            lane_wake: std::sync::OnceLock::new(),
        }))
    }
}

/// The whole application.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(prometheus))
        .merge(api::router(&state))
        .merge(crate::prometheus::router())
        .merge(dashboard::router())
        .merge(logs_page::router())
        .merge(alarms_page::router())
        .merge(scaling_page::router())
        .merge(admin_page::router())
        .merge(lists_page::router())
        .merge(assets::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            log_internal_errors,
        ))
        .layer(middleware::from_fn(headers::security_headers))
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable\n").into_response()
        }
    }
}

async fn prometheus(State(state): State<AppState>) -> Response {
    let hosts = state
        .store
        .hosts(&HostFilter::default())
        .await
        .unwrap_or_default();
    let count = |s: HostState| hosts.iter().filter(|h| h.state == s).count() as u64;
    let by_state = [
        ("up", count(HostState::Up)),
        ("down", count(HostState::Down)),
        ("left", count(HostState::Left)),
    ];
    let mut text = state.metrics.render(&by_state);
    render_scrape_time(&state, &mut text).await;
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// The families read at scrape time rather than counted: storage sizes,
/// queue depths, dead letters.
async fn render_scrape_time(state: &AppState, out: &mut String) {
    use std::fmt::Write;
    let mut gauge = |name: &str, help: &str, samples: &[(String, f64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (labels, v) in samples {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    let files: Vec<(String, f64)> = crate::store::stats::storage_files(&state.config.database_url)
        .into_iter()
        .map(|f| {
            // A WAL that was checkpointed away and removed is 0 bytes.
            let bytes = std::fs::metadata(&f.path).map(|m| m.len()).unwrap_or(0);
            (format!("{{file=\"{}\"}}", f.label), bytes as f64)
        })
        .collect();
    gauge(
        "metrolog_storage_bytes",
        "Size of each file of the embedded database: the database, the log search index, and their write-ahead logs.",
        &files,
    );
    let limit = state.config.http.max_concurrent_batches.max(1) as f64;
    let free = state.batch_slots.available_permits() as f64;
    gauge(
        "metrolog_ingest_batches_in_flight",
        "Agent batches being read or committed now (http.max_concurrent_batches is the limit).",
        &[(String::new(), (limit - free).max(0.0))],
    );
    gauge(
        "metrolog_ingest_batches_in_flight_limit",
        "http.max_concurrent_batches: beyond it, batches get 503 with Retry-After.",
        &[(String::new(), limit)],
    );
    match state.store.dead_letters().await {
        Ok(n) => gauge(
            "metrolog_outbox_dead_letters",
            "Deliveries given up and kept in the outbox (retry them on the alarms or scaling page).",
            &[(String::new(), n as f64)],
        ),
        Err(e) => tracing::warn!(error = %e, "/metrics: cannot count dead letters"),
    }
}

async fn not_found() -> error::AppError {
    error::AppError::NotFound("no such path".into())
}

/// Logs the detail of every internal error once, with the request it answered.
async fn log_internal_errors(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resp = next.run(req).await;
    if let Some(full) = resp.extensions().get::<StorageFull>() {
        state.metrics.storage_full_errors.inc();
        if state.storage_full_log.allow() {
            tracing::error!(%method, %path, "the database's disk is full; requests that write get 503 until space is freed: {}", full.0);
        }
        return resp;
    }
    if resp.status().is_server_error() && resp.status() != StatusCode::SERVICE_UNAVAILABLE {
        state.metrics.http_internal_errors.inc();
        let detail = resp
            .extensions()
            .get::<InternalDetail>()
            .map(|d| d.0.as_str())
            .unwrap_or("(no detail)");
        tracing::error!(%method, %path, status = resp.status().as_u16(), "{detail}");
    }
    resp
}

async fn method_not_allowed() -> Response {
    let mut resp =
        error::AppError::BadRequest("method not allowed on this path".into()).into_response();
    *resp.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    resp
}
