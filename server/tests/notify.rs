//! Notifications through the outbox, with the real evaluator and notifier,
//! to receivers the test plays (axum servers on 127.0.0.1:0): retries until
//! a receiver accepts, one delivery of each notification, a hanging
//! receiver cut by its timeout without delaying another, a 400 as a dead
//! letter, and a silence that keeps everything quiet.

mod common;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use common::{now, spawn_app_with, TestApp};
use metrolog_protocol::nagios::{CheckName, CheckResult, CheckStatus};
use metrolog_protocol::{Batch, BatchId};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// What the test receiver answers to its n-th request (0-based).
type Script = Arc<dyn Fn(usize) -> Reply + Send + Sync>;

#[derive(Clone, Copy)]
enum Reply {
    Status(u16),
    Hang,
}

/// One request the test receiver answered, with what it answered.
#[derive(Debug)]
struct Received {
    status: u16,
    body: Value,
    idempotency_key: String,
}

#[derive(Clone)]
struct Receiver {
    script: Script,
    count: Arc<AtomicUsize>,
    tx: mpsc::UnboundedSender<Received>,
}

async fn hook(State(r): State<Receiver>, headers: HeaderMap, body: String) -> (StatusCode, String) {
    let n = r.count.fetch_add(1, Ordering::SeqCst);
    let reply = (r.script)(n);
    let status = match reply {
        Reply::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        Reply::Status(s) => s,
    };
    let _ = r.tx.send(Received {
        status,
        body: serde_json::from_str(&body).unwrap_or(Value::Null),
        idempotency_key: headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
    });
    let text = if status == 400 {
        "bad payload: alerts[0] unknown field"
    } else {
        "ok"
    };
    (StatusCode::from_u16(status).unwrap(), text.to_string())
}

/// Starts a receiver; returns its URL and the requests it answers.
async fn receiver(
    script: impl Fn(usize) -> Reply + Send + Sync + 'static,
) -> (String, mpsc::UnboundedReceiver<Received>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let state = Receiver {
        script: Arc::new(script),
        count: Arc::new(AtomicUsize::new(0)),
        tx,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // `/hook` for webhook receivers, Alertmanager's own path for `kind = "alertmanager"`.
    let app = Router::new()
        .route("/hook", post(hook))
        .route("/api/v2/alerts", post(hook))
        .with_state(state);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Received>, what: &str) -> Received {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap_or_else(|_| panic!("{what} within 10 s"))
        .unwrap()
}

const RULE: &str = r#"
[[rules]]
name = "disk"
kind = "check"
check = "disk_root"
"#;

/// A receiver that groups nothing away: no wait, short intervals, fast retries.
fn receiver_section(name: &str, url: &str, extra: &str) -> String {
    format!(
        r#"
[[notify]]
name = "{name}"
url = "{url}"
group_wait = "0s"
group_interval = "50ms"
retry_backoff = "20ms"
retry_backoff_max = "100ms"
{extra}
"#
    )
}

fn check(status: CheckStatus, seq: u64) -> Batch {
    Batch {
        id: BatchId {
            stream: "s1".into(),
            seq,
        },
        sent_at: now(),
        metrics: Vec::new(),
        logs: Vec::new(),
        checks: vec![CheckResult {
            name: CheckName::parse("disk_root").unwrap(),
            status,
            output: format!("DISK {status:?}"),
            long_output: String::new(),
            perfdata: String::new(),
            ts: now(),
            duration_ms: 5,
            // The last attempt: hard at once.
            attempt: 3,
            max_attempts: 3,
        }],
        series_meta: Vec::new(),
    }
}

async fn deliveries(app: &TestApp, query: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let v = app
        .wait_json(&format!("/api/v1/deliveries{query}"), |v| {
            v["deliveries"].as_array().is_some_and(|d| done(d))
        })
        .await;
    v["deliveries"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_receiver_failing_three_times_gets_each_notification_exactly_once() {
    let (url, mut rx) = receiver(|n| Reply::Status(if n < 3 { 500 } else { 200 })).await;
    let app = spawn_app_with(&format!("{RULE}{}", receiver_section("ops", &url, ""))).await;
    let (_, token) = app.enroll("db-1", "db").await;
    let fired_at = Instant::now();
    assert_eq!(
        app.post_batch(&token, &check(CheckStatus::Critical, 1))
            .await
            .status,
        StatusCode::OK
    );
    let mut keys = Vec::new();
    for i in 0..3 {
        let r = next(&mut rx, &format!("failed attempt {i}")).await;
        assert_eq!(r.status, 500);
        keys.push(r.idempotency_key);
    }
    let ok = next(&mut rx, "the accepted firing notification").await;
    assert_eq!(ok.status, 200);
    keys.push(ok.idempotency_key.clone());
    assert!(
        keys.iter().all(|k| k == &keys[0] && k.starts_with("mlg_")),
        "one key for every attempt: {keys:?}"
    );
    let body = ok.body;
    assert_eq!(body["version"], "4");
    assert_eq!(body["receiver"], "ops");
    assert_eq!(body["status"], "firing");
    assert_eq!(body["groupKey"], "{}:{alertname=\"disk\"}");
    assert_eq!(body["alerts"][0]["labels"]["instance"], "db-1");
    assert_eq!(body["alerts"][0]["labels"]["severity"], "critical");
    assert_eq!(body["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
    eprintln!(
        "firing accepted {:?} after the batch, after 3 failures",
        fired_at.elapsed()
    );

    app.post_batch(&token, &check(CheckStatus::Ok, 2)).await;
    let resolved = next(&mut rx, "the resolved notification").await;
    assert_eq!(resolved.status, 200);
    assert_eq!(resolved.body["status"], "resolved");
    assert_eq!(
        resolved.body["alerts"][0]["fingerprint"],
        body["alerts"][0]["fingerprint"]
    );
    assert_ne!(resolved.body["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
    assert_ne!(resolved.idempotency_key, keys[0]);

    // Both delivered, with every attempt listed; nothing else is pending,
    // so nothing more can be sent.
    let list = deliveries(&app, "", |d| {
        d.len() == 2 && d.iter().all(|x| x["state"] == "delivered")
    })
    .await;
    let firing = &list[1];
    assert_eq!(firing["attempt_count"], 4);
    let statuses: Vec<i64> = firing["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].as_i64().unwrap())
        .collect();
    assert_eq!(statuses, [500, 500, 500, 200]);
    assert!(firing["attempts"][3]["latency_ms"].as_i64().is_some());
    assert_eq!(firing["attempts"][0]["excerpt"], "ok");
    assert_eq!(firing["payload"]["status"], "firing");
    assert_eq!(list[0]["attempt_count"], 1);
    assert!(rx.try_recv().is_err(), "no duplicate arrived");
    let filtered = app
        .get(
            "/api/v1/deliveries?receiver=ops&state=pending",
            Some(&app.viewer),
        )
        .await
        .json();
    assert_eq!(filtered["deliveries"].as_array().unwrap().len(), 0);
    let metrics = app.get("/metrics", None).await.text();
    assert!(
        metrics.contains("metrolog_notifications_sent_total{receiver=\"ops\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("metrolog_notifications_failed_total{receiver=\"ops\"} 3"));
    assert!(metrics.contains("metrolog_outbox_backlog 0"));
}

#[tokio::test]
async fn a_hanging_receiver_is_cut_by_its_timeout_and_delays_no_other() {
    let (slow, _slow_rx) = receiver(|_| Reply::Hang).await;
    let (fast, mut fast_rx) = receiver(|_| Reply::Status(200)).await;
    let config = format!(
        "{RULE}{}{}",
        receiver_section("slow", &slow, "timeout = \"1s\""),
        receiver_section("fast", &fast, "")
    );
    let app = spawn_app_with(&config).await;
    let (_, token) = app.enroll("db-1", "db").await;
    let started = Instant::now();
    app.post_batch(&token, &check(CheckStatus::Critical, 1))
        .await;
    let got = next(&mut fast_rx, "the fast receiver's notification").await;
    assert_eq!(got.status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the fast receiver waited for the slow one: {:?}",
        started.elapsed()
    );
    let slow_list = deliveries(&app, "?receiver=slow", |d| {
        d.first()
            .is_some_and(|x| x["attempt_count"].as_i64() >= Some(1))
    })
    .await;
    let attempt = &slow_list[0]["attempts"][0];
    assert!(attempt["status"].is_null());
    assert!(
        attempt["error"]
            .as_str()
            .unwrap()
            .contains("timed out after 1s"),
        "{attempt}"
    );
    assert!(attempt["latency_ms"].as_i64().unwrap() >= 1000);
    assert_eq!(slow_list[0]["state"], "pending", "a timeout is retried");
}

#[tokio::test]
async fn a_receiver_answering_400_leaves_a_visible_dead_letter() {
    let (url, mut rx) = receiver(|_| Reply::Status(400)).await;
    let app = spawn_app_with(&format!("{RULE}{}", receiver_section("ops", &url, ""))).await;
    let (_, token) = app.enroll("db-1", "db").await;
    app.post_batch(&token, &check(CheckStatus::Critical, 1))
        .await;
    assert_eq!(next(&mut rx, "the refused request").await.status, 400);
    let dead = deliveries(&app, "?state=dead", |d| d.len() == 1).await;
    assert_eq!(
        dead[0]["attempt_count"], 1,
        "a 400 is never retried verbatim"
    );
    assert_eq!(dead[0]["attempts"][0]["status"], 400);
    assert_eq!(
        dead[0]["attempts"][0]["excerpt"],
        "bad payload: alerts[0] unknown field"
    );
    assert!(
        dead[0]["last_error"].as_str().unwrap().contains("HTTP 400"),
        "{}",
        dead[0]
    );
    let metrics = app.get("/metrics", None).await.text();
    assert!(metrics.contains("metrolog_notifications_dead_total{receiver=\"ops\"} 1"));
    // The operator sees it on the alarms page, with why, the receiver's
    // answer escaped.
    let page = app.get("/alarms", Some(&app.viewer)).await;
    assert_eq!(page.status, StatusCode::OK);
    let html = page.text();
    let id = dead[0]["id"].as_i64().unwrap();
    let row = html
        .split(&format!("id=\"delivery-{id}\""))
        .nth(1)
        .and_then(|r| r.split("</tr>").next())
        .unwrap_or_else(|| panic!("no row for delivery {id} in the page"));
    assert!(row.contains(">dead<"), "{row}");
    assert!(row.contains("HTTP 400"), "{row}");
    assert!(row.contains("400 in "), "{row}");
}

#[tokio::test]
async fn a_silenced_alarm_sends_nothing() {
    let (url, mut rx) = receiver(|_| Reply::Status(200)).await;
    let app = spawn_app_with(&format!("{RULE}{}", receiver_section("ops", &url, ""))).await;
    let r = app
        .post_json(
            "/api/v1/silences",
            &app.admin,
            &json!({"matchers": [{"name": "instance", "value": "db-1"}], "duration": "1h"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let (_, silenced) = app.enroll("db-1", "db").await;
    let (_, loud) = app.enroll("db-2", "db").await;
    app.post_batch(&silenced, &check(CheckStatus::Critical, 1))
        .await;
    app.wait_json("/api/v1/alarms", |v| {
        v.as_array().is_some_and(|a| {
            a.iter()
                .any(|x| x["hostname"] == "db-1" && x["state_type"] == "hard")
        })
    })
    .await;
    // The other host's alarm, committed after, is what arrives.
    app.post_batch(&loud, &check(CheckStatus::Critical, 1))
        .await;
    let got = next(&mut rx, "the unsilenced notification").await;
    let instances: Vec<&str> = got.body["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["labels"]["instance"].as_str().unwrap())
        .collect();
    assert_eq!(instances, ["db-2"]);
    let list = deliveries(&app, "", |d| d.iter().all(|x| x["state"] == "delivered")).await;
    assert_eq!(list.len(), 1);
    assert!(rx.try_recv().is_err());
}

#[tokio::test]
async fn an_alertmanager_answering_400_leaves_a_visible_dead_letter() {
    let (url, mut rx) = receiver(|_| Reply::Status(400)).await;
    let base = url.trim_end_matches("/hook");
    let app = spawn_app_with(&format!(
        "{RULE}\n[[notify]]\nname = \"am\"\nkind = \"alertmanager\"\nurl = \"{base}\"\n"
    ))
    .await;
    let (_, token) = app.enroll("db-1", "db").await;
    app.post_batch(&token, &check(CheckStatus::Critical, 1))
        .await;
    let got = next(&mut rx, "the alerts pushed to Alertmanager's API").await;
    assert_eq!(got.status, 400);
    // API v2: a bare array of alerts, not the webhook body.
    let alerts = got.body.as_array().expect("an array of alerts");
    assert_eq!(alerts[0]["labels"]["alertname"], "disk");
    let dead = deliveries(&app, "?receiver=am&state=dead", |d| d.len() == 1).await;
    assert_eq!(
        dead[0]["attempt_count"], 1,
        "a 4xx is never retried verbatim"
    );
    assert_eq!(dead[0]["attempts"][0]["status"], 400);
    assert!(rx.try_recv().is_err(), "no second attempt");
}
