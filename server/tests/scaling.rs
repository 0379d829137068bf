//! Scaling through the router, with the real runner and outbox: policies
//! (file ones listed and refused to change, bad input refused with every
//! reason), scale events judged at group rounds and delivered signed to a
//! receiver the test plays, heal when members go down, events listed, a
//! dry-run that finds the live events again, and a dead letter retried by hand.

mod common;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use base64::Engine;
use common::{now, spawn_app_with, TestApp};
use hmac::{Hmac, Mac};
use metrolog_protocol::{Labels, SeriesKey};
use metrolog_server::groups::record_once;
use serde_json::{json, Value};
use sha2::Sha256;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// One request the receiver got, with whether its signature verified.
#[derive(Debug)]
struct Got {
    body: Value,
    webhook_id: String,
    signed_ok: bool,
}

#[derive(Clone)]
struct Recv {
    statuses: Arc<Vec<u16>>,
    n: Arc<AtomicUsize>,
    tx: mpsc::UnboundedSender<Got>,
}

/// The Standard Webhooks verification, as a receiver does it.
fn verify(headers: &HeaderMap, body: &str, secret: &str) -> bool {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.{body}", h("webhook-id"), h("webhook-timestamp")).as_bytes());
    let want = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let ts: i64 = h("webhook-timestamp").parse().unwrap_or(0);
    (now() - ts).abs() < 300
        && h("webhook-signature")
            .split(' ')
            .any(|s| s.strip_prefix("v1,") == Some(want.as_str()))
}

async fn hook(State(r): State<Recv>, headers: HeaderMap, body: String) -> StatusCode {
    let n = r.n.fetch_add(1, Ordering::SeqCst);
    let status = r.statuses.get(n).copied().unwrap_or(200);
    let _ = r.tx.send(Got {
        body: serde_json::from_str(&body).unwrap_or(Value::Null),
        webhook_id: headers
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        signed_ok: verify(&headers, &body, SECRET),
    });
    StatusCode::from_u16(status).unwrap()
}

async fn receiver(statuses: Vec<u16>) -> (String, mpsc::UnboundedReceiver<Got>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let state = Recv {
        statuses: Arc::new(statuses),
        n: Arc::new(AtomicUsize::new(0)),
        tx,
    };
    let app = Router::new().route("/hook", post(hook)).with_state(state);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    (url, rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Got>) -> Got {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("the hook was not called within 10 s")
        .unwrap()
}

fn config(url: &str) -> String {
    format!(
        r#"
[[scaling.policies]]
name = "web-load"
group = "web"
metric = "app.load"
window = "10s"
scale_out_above = 75
scale_in_below = 25
for = "20s"
cooldown = "1m"
min_size = 3
max_size = 10
[[scaling.hooks]]
name = "asg"
url = "{url}"
secret = "{SECRET}"
timeout = "2s"
retry_backoff = "100ms"
[[agents]]
group = "web"
"#
    )
}

async fn member(app: &TestApp, name: &str) -> i64 {
    app.enroll(name, "web").await.0
}

async fn feed(app: &TestApp, host: i64, ts: i64, v: f64) {
    let key = SeriesKey::new("app.load", Labels::new()).unwrap();
    app.state
        .store
        .import_samples(host, &[(key, vec![(ts, v)])])
        .await
        .unwrap();
}

#[tokio::test]
async fn file_policies_are_listed_and_refused_to_change_and_bad_input_is_refused() {
    let (url, _rx) = receiver(vec![]).await;
    let app = spawn_app_with(&config(&url)).await;
    let list = app
        .get("/api/v1/scaling/policies", Some(&app.viewer))
        .await
        .json();
    assert_eq!(list[0]["name"], "web-load");
    assert_eq!(list[0]["source"], "file");
    assert_eq!(list[0]["for"], 20);
    let r = app
        .put_json(
            "/api/v1/scaling/policies/web-load",
            &app.admin,
            &json!({"name": "web-load", "group": "web", "metric": "app.load"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    let r = app
        .delete("/api/v1/scaling/policies/web-load", &app.admin)
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);

    let r = app
        .post_json(
            "/api/v1/scaling/policies",
            &app.admin,
            &json!({"name": "bad", "group": "web", "metric": "app.load", "scale_out_above": 10,
                    "scale_in_below": 20, "min_size": 5, "max_size": 2, "target": 0}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    for want in ["scale_in_below", "min_size", "target"] {
        assert!(msg.contains(want), "{want} not in {msg}");
    }
    let r = app
        .post_json(
            "/api/v1/scaling/policies",
            &app.admin,
            &json!({"name": "nogroup", "group": "db", "metric": "app.load"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text().contains("no group \\\"db\\\""), "{}", r.text());
    // Once the group records series, a metric it does not record is refused.
    let h = member(&app, "web-1").await;
    feed(&app, h, now() - 5, 1.0).await;
    record_once(&app.state.store, now(), 10, 30).await.unwrap();
    let r = app
        .post_json(
            "/api/v1/scaling/policies",
            &app.admin,
            &json!({"name": "typo", "group": "web", "metric": "app.lod"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text().contains("does not record"), "{}", r.text());
    // A good one: created, listed, replaced, deleted.
    let body = json!({"name": "web-sum", "group": "web", "metric": "app.load", "aggregation": "sum",
                      "target": 100, "window": "30s"});
    let r = app
        .post_json("/api/v1/scaling/policies", &app.admin, &body)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json()["source"], "api");
    let r = app
        .post_json("/api/v1/scaling/policies", &app.viewer, &body)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let mut changed = body.clone();
    changed["target"] = json!(80);
    let r = app
        .put_json("/api/v1/scaling/policies/web-sum", &app.admin, &changed)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let list = app
        .get("/api/v1/scaling/policies", Some(&app.viewer))
        .await
        .json();
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(list[1]["target"], 80.0);
    let r = app
        .delete("/api/v1/scaling/policies/web-sum", &app.admin)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn rounds_fire_signed_scale_events_heals_follow_downs_and_the_dry_run_finds_them_again() {
    let (url, mut rx) = receiver(vec![]).await;
    let app = spawn_app_with(&config(&url)).await;
    let early = [member(&app, "web-1").await, member(&app, "web-2").await];
    let late = [member(&app, "web-3").await, member(&app, "web-4").await];
    let hosts: Vec<i64> = early.iter().chain(&late).copied().collect();
    // Rounds every 10 s of data time, a while ago.
    let t0 = (now() - 600) / 10 * 10;
    let values = [
        50.0, 50.0, 80.0, 80.0, 80.0, 80.0, 80.0, 50.0, 50.0, 10.0, 10.0, 10.0, 10.0,
    ];
    for (k, v) in values.iter().enumerate() {
        let ts = t0 + 10 * k as i64;
        for h in &hosts {
            feed(&app, *h, ts, *v).await;
        }
        record_once(&app.state.store, ts, 10, 15).await.unwrap();
    }
    // scale_out once 80 held 20 s (t0+40), nothing in the cooldown, nothing
    // between the thresholds, scale_in once 10 held 20 s (t0+110).
    let out = next(&mut rx).await;
    assert!(
        out.signed_ok,
        "the signature verifies with the hook's secret"
    );
    assert_eq!(out.body["type"], "scale_out");
    assert_eq!(out.webhook_id, out.body["id"].as_str().unwrap());
    assert_eq!(
        (&out.body["current_size"], &out.body["desired_size"]),
        (&json!(4), &json!(5))
    );
    assert_eq!(out.body["threshold"], 75.0);
    assert_eq!(out.body["value"], 80.0);
    assert_eq!(out.body["members"].as_array().unwrap().len(), 4);
    let inn = next(&mut rx).await;
    assert_eq!(inn.body["type"], "scale_in");
    assert_eq!(inn.body["desired_size"], 3);
    let at = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(v["at"].as_str().unwrap())
            .unwrap()
            .timestamp()
    };
    assert_eq!(at(&out.body), t0 + 40);
    assert_eq!(at(&inn.body), t0 + 110);

    // Two members fall silent (the others report a second later): one
    // heal, at once.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for h in late {
        app.state.store.touch_host(h).await.unwrap();
    }
    let down = app.state.store.mark_silent_down(now()).await.unwrap();
    assert_eq!(down.len(), 2, "{down:?}");
    let heal = next(&mut rx).await;
    assert_eq!(heal.body["type"], "heal");
    assert_eq!(
        (&heal.body["current_size"], &heal.body["desired_size"]),
        (&json!(2), &json!(3))
    );
    assert!(heal.body["reason"]
        .as_str()
        .unwrap()
        .contains("Not repeated while the group waits"));
    assert!(
        tokio::time::timeout(Duration::from_millis(500), rx.recv())
            .await
            .is_err(),
        "membership events go only to hooks that ask"
    );

    let events = app
        .wait_json("/api/v1/scaling/events?group=web", |v| {
            v["events"].as_array().is_some_and(|e| e.len() >= 5)
        })
        .await;
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .take(5)
        .collect();
    assert_eq!(
        kinds,
        [
            "heal",
            "member_down",
            "member_down",
            "scale_in",
            "scale_out"
        ],
        "newest first"
    );
    let deliveries = app
        .wait_json("/api/v1/deliveries?receiver=asg", |v| {
            v["deliveries"]
                .as_array()
                .is_some_and(|d| d.len() == 3 && d.iter().all(|d| d["state"] == "delivered"))
        })
        .await;
    assert_eq!(deliveries["deliveries"][0]["kind"], "scaling-webhook");
    let metrics = app.get("/metrics", None).await.text();
    assert!(
        metrics.contains("metrolog_scaling_events_total{type=\"scale_out\"} 1"),
        "{metrics}"
    );

    // The dry-run over the same rounds finds the same decisions.
    let dry = app
        .post_json(
            &format!(
                "/api/v1/scaling/policies/web-load/dry-run?from={}&to={}",
                t0 - 10,
                t0 + 130
            ),
            &app.viewer,
            &json!({}),
        )
        .await;
    assert_eq!(dry.status, StatusCode::OK, "{}", dry.text());
    let dry = dry.json();
    let got: Vec<(String, i64, Value)> = dry["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_string(),
                at(e),
                e["desired_size"].clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("scale_out".to_string(), t0 + 40, json!(5)),
            ("scale_in".to_string(), t0 + 110, json!(3))
        ],
        "{dry}"
    );
    assert!(dry["rounds"].as_array().unwrap().len() >= 12);
    // A policy in the body, not saved, with a lower threshold fires earlier.
    let body = json!({"name": "try", "group": "web", "metric": "app.load", "window": "10s",
                      "scale_out_above": 60, "min_size": 3});
    let r = app
        .post_json(
            &format!("/api/v1/scaling/dry-run?from={}&to={}", t0 - 10, t0 + 130),
            &app.viewer,
            &body,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let first = &r.json()["events"][0];
    assert_eq!(
        (first["type"].as_str(), at(first)),
        (Some("scale_out"), t0 + 20)
    );
}

#[tokio::test]
async fn a_dead_letter_is_retried_by_hand_with_its_attempts_kept() {
    // The receiver refuses the first delivery (a 400 is never retried alone).
    let (url, mut rx) = receiver(vec![400]).await;
    let app = spawn_app_with(&config(&url).replace("for = \"20s\"", "for = \"0s\"")).await;
    let mut hosts = Vec::new();
    for i in 1..=4 {
        hosts.push(member(&app, &format!("web-{i}")).await);
    }
    let t0 = (now() - 300) / 10 * 10;
    for (k, v) in [50.0, 90.0].iter().enumerate() {
        let ts = t0 + 10 * k as i64;
        for h in &hosts {
            feed(&app, *h, ts, *v).await;
        }
        record_once(&app.state.store, ts, 10, 15).await.unwrap();
    }
    let first = next(&mut rx).await;
    assert_eq!(first.body["type"], "scale_out");
    let dead = app
        .wait_json("/api/v1/deliveries?receiver=asg", |v| {
            v["deliveries"][0]["state"] == "dead"
        })
        .await;
    let id = dead["deliveries"][0]["id"].as_i64().unwrap();
    let r = app
        .post_json(
            &format!("/api/v1/deliveries/{id}/retry"),
            &app.viewer,
            &json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app
        .post_json(
            &format!("/api/v1/deliveries/{id}/retry"),
            &app.admin,
            &json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let again = next(&mut rx).await;
    assert_eq!(again.webhook_id, first.webhook_id, "the same event id");
    let done = app
        .wait_json("/api/v1/deliveries?receiver=asg", |v| {
            v["deliveries"][0]["state"] == "delivered"
        })
        .await;
    assert_eq!(
        done["deliveries"][0]["attempts"].as_array().unwrap().len(),
        2
    );
    let r = app
        .post_json(
            &format!("/api/v1/deliveries/{id}/retry"),
            &app.admin,
            &json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "only dead letters");
    let r = app
        .post_json("/api/v1/deliveries/999999/retry", &app.admin, &json!({}))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

// ---- The scaling pages (`/scaling`, `/groups/{name}/scaling`) ----

/// A dashboard session of a new user with `role`: (cookie header, CSRF token).
async fn session(app: &TestApp, role: &str) -> (String, String) {
    let store = &app.state.store;
    let name = format!("{role}-user");
    let id = store.create_user(&name, "unused", role).await.unwrap();
    let sid = metrolog_server::auth::random_string(32);
    let csrf = metrolog_server::auth::random_string(24);
    store
        .create_session(
            &metrolog_server::auth::token_hash(&sid),
            id,
            &csrf,
            now() + 3600,
        )
        .await
        .unwrap();
    (format!("ml_session={sid}"), csrf)
}

async fn page_get(app: &TestApp, path: &str, cookie: &str) -> common::Resp {
    app.send(
        axum::http::Request::get(path)
            .header(axum::http::header::COOKIE, cookie)
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await
}

async fn form_post(app: &TestApp, path: &str, cookie: &str, body: &str) -> common::Resp {
    app.send(
        axum::http::Request::post(path)
            .header(axum::http::header::COOKIE, cookie)
            .header(
                axum::http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(axum::body::Body::from(body.to_string()))
            .unwrap(),
    )
    .await
}

/// Four members of `web` at 50 then 90: one scale_out (for = 0s) at t0+10,
/// its delivery refused with the first of `statuses`.
async fn scaled_out(statuses: Vec<u16>) -> (TestApp, mpsc::UnboundedReceiver<Got>, i64) {
    let (url, mut rx) = receiver(statuses).await;
    let app = spawn_app_with(&config(&url).replace("for = \"20s\"", "for = \"0s\"")).await;
    let mut hosts = Vec::new();
    for i in 1..=4 {
        hosts.push(member(&app, &format!("web-{i}")).await);
    }
    let t0 = (now() - 300) / 10 * 10;
    for (k, v) in [50.0, 90.0].iter().enumerate() {
        let ts = t0 + 10 * k as i64;
        for h in &hosts {
            feed(&app, *h, ts, *v).await;
        }
        record_once(&app.state.store, ts, 10, 15).await.unwrap();
    }
    let first = next(&mut rx).await;
    assert_eq!(first.body["type"], "scale_out");
    (app, rx, t0)
}

#[tokio::test]
async fn scaling_page_shows_policy_events_deliveries_and_retries_a_dead_letter_by_form() {
    let (app, mut rx, _) = scaled_out(vec![400]).await;
    let dead = app
        .wait_json("/api/v1/deliveries?receiver=asg", |v| {
            v["deliveries"][0]["state"] == "dead"
        })
        .await;
    let id = dead["deliveries"][0]["id"].as_i64().unwrap();
    let (admin, csrf) = session(&app, "admin").await;
    let (viewer, viewer_csrf) = session(&app, "viewer").await;

    // The list links the group.
    let r = page_get(&app, "/scaling", &viewer).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let html = r.text();
    assert!(html.contains("href=\"/groups/web/scaling\""), "{html}");
    assert!(
        html.contains("web-load") && html.contains("scale_out 4 → 5"),
        "{html}"
    );
    // The group page links its scaling page.
    let html = page_get(&app, "/groups/web", &viewer).await.text();
    assert!(html.contains("href=\"/groups/web/scaling\""), "{html}");

    let r = page_get(&app, "/groups/web/scaling", &admin).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let html = r.text();
    // The policy, with where it comes from and its settings.
    for want in [
        "web-load",
        "file",
        "avg(app.load) over 10s",
        "out above 75, in below 25",
        "1m each way",
        "3–10",
    ] {
        assert!(html.contains(want), "no {want:?} in {html}");
    }
    // Its graph draws the policy; the member count beside it.
    assert!(html.contains("policy=web-load"), "{html}");
    assert!(html.contains("name=group.members"), "{html}");
    // The event, with its sizes and reason.
    assert!(html.contains("ev-scale-out"), "{html}");
    assert!(html.contains("4 → 5"), "{html}");
    assert!(
        html.contains("&gt; 75 above scale_out_above")
            || html.contains("&#62; 75 above scale_out_above"),
        "{html}"
    );
    // The dead delivery with its attempt and an admin's Retry form.
    assert!(html.contains(&format!("id=\"delivery-{id}\"")), "{html}");
    assert!(html.contains("400 in "), "the attempt is listed: {html}");
    let action = format!("/groups/web/scaling/deliveries/{id}/retry");
    assert!(html.contains(&format!("action=\"{action}\"")), "{html}");
    assert!(html.contains(&format!("value=\"{csrf}\"")), "{html}");
    // A viewer sees no Retry button.
    let html = page_get(&app, "/groups/web/scaling", &viewer).await.text();
    assert!(!html.contains(&action), "{html}");

    // The form needs an admin and the session's CSRF token.
    let r = form_post(&app, &action, &viewer, &format!("csrf={viewer_csrf}")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = form_post(&app, &action, &admin, "csrf=forged").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = form_post(&app, &action, &admin, "").await;
    assert!(r.status.is_client_error(), "{}", r.status);
    let still = app
        .get("/api/v1/deliveries?receiver=asg", Some(&app.admin))
        .await
        .json();
    assert_eq!(
        still["deliveries"][0]["state"], "dead",
        "nothing was requeued"
    );

    let r = form_post(&app, &action, &admin, &format!("csrf={csrf}")).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    assert_eq!(
        r.header(axum::http::header::LOCATION),
        "/groups/web/scaling#deliveries"
    );
    let again = next(&mut rx).await;
    assert_eq!(again.body["type"], "scale_out", "sent again");
    app.wait_json("/api/v1/deliveries?receiver=asg", |v| {
        v["deliveries"][0]["state"] == "delivered"
            && v["deliveries"][0]["attempts"].as_array().map(Vec::len) == Some(2)
    })
    .await;
    // Retrying what is not dead says why, on the page.
    let r = form_post(&app, &action, &admin, &format!("csrf={csrf}")).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(
        r.text().contains("only dead letters are retried by hand"),
        "{}",
        r.text()
    );
}

#[tokio::test]
async fn scaling_page_escapes_hostile_names_and_explains_an_empty_group() {
    let (url, _rx) = receiver(vec![]).await;
    let app = spawn_app_with(&config(&url)).await;
    let (viewer, _) = session(&app, "viewer").await;
    // A hostile hostname joins: its member_joined event is listed as text.
    let evil = "<script>alert(1)</script>";
    app.enroll(evil, "web").await;
    app.wait_json("/api/v1/scaling/events?group=web", |v| {
        v["events"].as_array().is_some_and(|e| !e.is_empty())
    })
    .await;
    let html = page_get(&app, "/groups/web/scaling", &viewer).await.text();
    assert!(html.contains("member_joined"), "{html}");
    assert!(!html.contains(evil), "{html}");
    assert!(
        html.contains("&#60;script&#62;alert(1)&#60;/script&#62;")
            || html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
    // A hostile group name in the path is never echoed raw.
    let r = page_get(
        &app,
        "/groups/%3Cscript%3Ealert(1)%3C%2Fscript%3E/scaling",
        &viewer,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(!r.text().contains(evil));

    // A group with members and no policy explains how to add one.
    app.enroll("db-1", "db").await;
    let r = page_get(&app, "/groups/db/scaling", &viewer).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let html = r.text();
    assert!(html.contains("No policy for this group"), "{html}");
    assert!(html.contains("[[scaling.policies]]"), "{html}");
    assert!(html.contains("POST /api/v1/scaling/policies"), "{html}");
    assert!(
        html.contains("group = \"db\""),
        "the example names the group: {html}"
    );
    assert!(
        !html.contains("id=\"dry-run\""),
        "no dry-run without a policy"
    );
}

#[tokio::test]
async fn scaling_graph_with_policy_draws_thresholds_fired_and_dry_run_marks() {
    let (app, _rx, _) = scaled_out(vec![]).await;
    let graph = |extra: &str| {
        format!(
            "/api/v1/graph.svg?group=web&agg=avg&name=app.load&from=-30m&policy=web-load{extra}"
        )
    };
    let r = app.get(&graph(""), Some(&app.viewer)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let svg = r.text();
    assert!(svg.contains("scale out above 75"), "no scale-out line");
    assert!(svg.contains("scale in below 25"), "no scale-in line");
    // The scale_out that fired: a filled blue triangle.
    assert!(
        svg.contains(r##"fill="#2563EB""##),
        "no scale-out mark: {svg}"
    );
    // Without policy=, neither.
    let plain = app
        .get(
            "/api/v1/graph.svg?group=web&agg=avg&name=app.load&from=-30m",
            Some(&app.viewer),
        )
        .await
        .text();
    assert!(!plain.contains("scale out above") && !plain.contains(r##"fill="#2563EB""##));

    // A dry-run with the edited thresholds: its lines, and its scale_out
    // outlined (a white shape with a blue outline).
    let r = app
        .get(
            &graph("&dry_run=1&scale_out_above=60&scale_in_below=20"),
            Some(&app.viewer),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let svg = r.text();
    assert!(svg.contains("scale out above 60") && svg.contains("scale in below 20"));
    assert!(
        !svg.contains("scale out above 75"),
        "the edited lines replace the policy's"
    );
    assert!(
        svg.contains(r##"stroke="#2563EB" stroke-width="2""##),
        "no dry-run mark: {svg}"
    );

    // Bad input says what was wrong.
    let r = app
        .get(
            &graph("&dry_run=1&scale_out_above=10&scale_in_below=20"),
            Some(&app.viewer),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    let r = app
        .get(
            "/api/v1/graph.svg?group=web&agg=avg&name=app.load&policy=nope",
            Some(&app.viewer),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app
        .get(
            "/api/v1/graph.svg?host=web-1&name=app.load&policy=web-load",
            Some(&app.viewer),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());

    // The page's dry-run form lists the events and pins its graph.
    let (viewer, _) = session(&app, "viewer").await;
    let r = page_get(
        &app,
        "/groups/web/scaling?dry_run=1&policy=web-load&from=-30m&to=now&scale_out_above=60&scale_in_below=20",
        &viewer,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let html = r.text();
    assert!(html.contains("event(s) it would have fired"), "{html}");
    assert!(html.contains("dry_run=1"), "{html}");
    assert!(html.contains("data-from="), "{html}");
    assert!(html.contains("scaling-events dry"), "{html}");
    let r = page_get(
        &app,
        "/groups/web/scaling?dry_run=1&scale_out_above=10&scale_in_below=20",
        &viewer,
    )
    .await;
    assert!(r.text().contains("Dry-run not run"), "{}", r.text());
}
