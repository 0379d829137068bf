//! What the router tests share: a whole application on a fresh SQLite
//! database behind `oneshot` (no socket), tokens of each role, and typed
//! request helpers. Each test binary uses its own part of it.
#![allow(dead_code)]

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use metrolog_protocol::{Batch, EnrollRequest, Labels};
use metrolog_server::auth::{new_token, token_hash};
use metrolog_server::config::{FileConfig, Overrides, ServerConfig};
use metrolog_server::http::{app, AppState};
use metrolog_server::store::Store;
use metrolog_server::telemetry::ServerMetrics;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use tower::ServiceExt;

pub struct TestApp {
    pub router: Router,
    pub state: AppState,
    pub admin: String,
    pub viewer: String,
    pub enroll: String,
    /// Stops the alarm evaluator when dropped.
    _alarms_stop: tokio::sync::watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with("").await
}

pub async fn spawn_app_with(file: &str) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let over = Overrides {
        data_dir: Some(dir.path().to_path_buf()),
        ..Default::default()
    };
    let config = ServerConfig::merge(&over, FileConfig::parse(file).unwrap()).unwrap();
    let store = Arc::new(Store::open(&config.database_url).await.unwrap());
    metrolog_server::bootstrap::run(&store, Some("s3cret-pass".into()), None)
        .await
        .unwrap();
    let mut tokens = Vec::new();
    for role in ["admin", "viewer", "enroll"] {
        let t = new_token();
        store
            .insert_token(role, role, &token_hash(t.expose()), None)
            .await
            .unwrap();
        tokens.push(t.expose().to_string());
    }
    let state = AppState::new(
        store.clone(),
        Arc::new(config),
        Arc::new(ServerMetrics::default()),
    );
    // The real evaluator, on the wall clock, as the server runs it.
    let (alarms_stop, stop_rx) = tokio::sync::watch::channel(false);
    // And the notifier, woken by the evaluator's commits.
    let notifier = metrolog_server::notify::Notifier::start_with(
        store.clone(),
        state.config.receivers(),
        metrolog_server::scaling::lanes(&state.hooks),
        Arc::new(metrolog_server::clock::SystemClock),
        state.metrics.clone(),
        stop_rx.clone(),
    )
    .await
    .unwrap();
    // And the scaling runner, on the bus too.
    let (scaler, scaling_commands) = state
        .scaling_runner(
            Arc::new(metrolog_server::clock::SystemClock),
            notifier.lane_waker(),
        )
        .unwrap();
    tokio::spawn(scaler.run(scaling_commands, stop_rx.clone()));
    let (runner, commands) = state
        .alarm_runner(
            Arc::new(metrolog_server::clock::SystemClock),
            notifier.waker(),
        )
        .unwrap();
    tokio::spawn(runner.run(commands, stop_rx));
    // They subscribe first thing: wait for that, so no test event is missed.
    while store.bus().subscribers() < 2 {
        tokio::task::yield_now().await;
    }
    let router =
        app(state.clone()).layer(MockConnectInfo(SocketAddr::from(([127, 0, 0, 1], 4000))));
    TestApp {
        router,
        state,
        admin: tokens[0].clone(),
        viewer: tokens[1].clone(),
        enroll: tokens[2].clone(),
        _alarms_stop: alarms_stop,
        _dir: dir,
    }
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: header::HeaderName) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

impl TestApp {
    pub async fn send(&self, req: Request<Body>) -> Resp {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        Resp {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Resp {
        let mut b = Request::get(path);
        if let Some(t) = token {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        self.send(b.body(Body::empty()).unwrap()).await
    }

    pub async fn put_json(&self, path: &str, token: &str, body: &Value) -> Resp {
        self.send(
            Request::put(path)
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Resp {
        self.send(
            Request::delete(path)
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
    }

    /// Polls `path` until `done` holds for its JSON (the evaluator works
    /// asynchronously), for at most 10 s.
    pub async fn wait_json(&self, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let v = self.get(path, Some(&self.admin)).await.json();
            if done(&v) {
                return v;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{path} never satisfied the test: {v}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    pub async fn post_json(&self, path: &str, token: &str, body: &Value) -> Resp {
        self.send(
            Request::post(path)
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await
    }

    /// Posts a batch the way the agent does: JSON compressed with zstd.
    pub async fn post_batch(&self, token: &str, batch: &Batch) -> Resp {
        let raw = serde_json::to_vec(batch).unwrap();
        let body = zstd::encode_all(&raw[..], 3).unwrap();
        self.send(
            Request::post("/api/v1/agent/batch")
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::CONTENT_ENCODING, "zstd")
                .body(Body::from(body))
                .unwrap(),
        )
        .await
    }

    /// Enrolls an agent and returns (host id, agent token).
    pub async fn enroll(&self, hostname: &str, group: &str) -> (i64, String) {
        let req = EnrollRequest {
            hostname: hostname.into(),
            instance_id: None,
            group: Some(group.into()),
            labels: Labels::new(),
            agent_version: "test".into(),
        };
        let r = self
            .post_json(
                "/api/v1/agent/enroll",
                &self.enroll,
                &serde_json::to_value(req).unwrap(),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let v = r.json();
        (
            v["host_id"].as_i64().unwrap(),
            v["agent_token"].as_str().unwrap().to_string(),
        )
    }

    pub async fn series_count(&self) -> usize {
        self.get("/api/v1/series", Some(&self.admin))
            .await
            .json()
            .as_array()
            .unwrap()
            .len()
    }
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}
