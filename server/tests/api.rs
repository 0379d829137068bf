//! Router tests: the whole application driven with `oneshot` on a fresh SQLite
//! database, no socket. All API tests live in this one test binary.

mod common;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use common::{now, spawn_app, spawn_app_with, Resp};
use metrolog_protocol::{Batch, BatchId, Bucket, Labels, SeriesBuckets, SeriesKey};
use serde_json::{json, Value};

fn batch(stream: &str, seq: u64, name: &str, points: &[(i64, f64)]) -> Batch {
    Batch {
        id: BatchId {
            stream: stream.into(),
            seq,
        },
        sent_at: now(),
        logs: Vec::new(),
        checks: Vec::new(),
        metrics: vec![SeriesBuckets {
            key: SeriesKey::new(name, Labels::new()).unwrap(),
            step: 10,
            buckets: points
                .iter()
                .map(|&(ts, v)| Bucket {
                    ts,
                    avg: v,
                    min: v,
                    max: v,
                    last: v,
                    count: 10,
                })
                .collect(),
        }],
        series_meta: Vec::new(),
    }
}

#[tokio::test]
async fn health_and_readiness() {
    let app = spawn_app().await;
    assert_eq!(app.get("/healthz", None).await.status, StatusCode::OK);
    assert_eq!(app.get("/readyz", None).await.status, StatusCode::OK);
    let m = app.get("/metrics", None).await;
    assert!(
        m.text().contains("metrolog_ingest_batches_total 0"),
        "{}",
        m.text()
    );
}

#[tokio::test]
async fn missing_or_wrong_token_gets_401_json() {
    let app = spawn_app().await;
    for token in [None, Some("mlg_not-a-real-token")] {
        let r = app.get("/api/v1/hosts", token).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(r.error_code(), "unauthorized");
        assert!(!r.json()["error"]["message"].as_str().unwrap().is_empty());
    }
    let r = app
        .post_batch("mlg_wrong", &batch("s", 1, "cpu.busy_pct", &[(now(), 1.0)]))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.error_code(), "unauthorized");
    // An enrollment token cannot read, and cannot send batches.
    assert_eq!(
        app.get("/api/v1/hosts", Some(&app.enroll)).await.status,
        StatusCode::FORBIDDEN
    );
    let r = app
        .post_batch(&app.enroll, &batch("s", 1, "cpu.busy_pct", &[(now(), 1.0)]))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(app
        .get("/metrics", None)
        .await
        .text()
        .contains("metrolog_auth_failures_total 3"));
}

#[tokio::test]
async fn batches_are_committed_once_and_queryable() {
    let app = spawn_app().await;
    let (host, token) = app.enroll("web-1", "web").await;
    let t0 = (now() / 60) * 60 - 120;
    let b = batch(
        "abc",
        1,
        "cpu.busy_pct",
        &[(t0 + 10, 10.0), (t0 + 20, 20.0), (t0 + 30, 30.0)],
    );
    let r = app.post_batch(&token, &b).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["duplicate"], false);
    assert_eq!(r.json()["accepted"], 3);
    // The agent did not hear the answer and sends the same batch again.
    let r = app.post_batch(&token, &b).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["duplicate"], true);

    let q = app
        .get(
            &format!(
                "/api/v1/query?host=web-1&name=cpu.busy_pct&from={t0}&to={}",
                t0 + 40
            ),
            Some(&app.viewer),
        )
        .await;
    assert_eq!(q.status, StatusCode::OK, "{}", q.text());
    let v = q.json();
    assert_eq!(v["step"], 10);
    assert_eq!(v["series"][0]["host"], "web-1");
    assert_eq!(
        v["series"][0]["points"],
        json!([
            [t0 + 10, 10.0],
            [t0 + 20, 20.0],
            [t0 + 30, 30.0],
            [t0 + 40, null]
        ])
    );
    // Same through the host id, and as a group aggregate.
    let q = app
        .get(
            &format!(
                "/api/v1/query?host={host}&name=cpu.*&from={t0}&to={}&step=30",
                t0 + 30
            ),
            Some(&app.viewer),
        )
        .await;
    assert_eq!(q.json()["series"][0]["points"], json!([[t0 + 30, 20.0]]));
    let (_, token2) = app.enroll("web-2", "web").await;
    app.post_batch(&token2, &batch("x", 1, "cpu.busy_pct", &[(t0 + 10, 30.0)]))
        .await;
    let q = app
        .get(
            &format!(
                "/api/v1/query?group=web&agg=max&name=cpu.busy_pct&from={t0}&to={}",
                t0 + 10
            ),
            Some(&app.viewer),
        )
        .await;
    assert_eq!(q.json()["series"][0]["points"], json!([[t0 + 10, 30.0]]));
    assert_eq!(q.json()["series"][0]["members"], 2);

    let h = app
        .get(&format!("/api/v1/hosts/{host}"), Some(&app.viewer))
        .await
        .json();
    assert_eq!(h["state"], "up");
    assert_eq!(h["group"], "web");
    let m = app.get("/metrics", None).await.text();
    assert!(
        m.contains("metrolog_ingest_duplicate_batches_total 1"),
        "{m}"
    );
}

#[tokio::test]
async fn an_agent_writes_only_as_its_own_host() {
    let app = spawn_app().await;
    let (a, token_a) = app.enroll("a", "g").await;
    let (b, _token_b) = app.enroll("b", "g").await;
    app.post_batch(&token_a, &batch("s", 1, "load.1m", &[(now() - 5, 1.0)]))
        .await;
    let sa = app
        .get(&format!("/api/v1/series?host={a}"), Some(&app.admin))
        .await
        .json();
    let sb = app
        .get(&format!("/api/v1/series?host={b}"), Some(&app.admin))
        .await
        .json();
    assert_eq!(sa.as_array().unwrap().len(), 1);
    assert_eq!(sb.as_array().unwrap().len(), 0);
    // Re-enrolling replaces the credential: the old token stops working.
    let (a2, token_a2) = app.enroll("a", "g").await;
    assert_eq!(a, a2);
    let r = app
        .post_batch(&token_a, &batch("t", 1, "load.1m", &[(now(), 1.0)]))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = app
        .post_batch(&token_a2, &batch("t", 1, "load.1m", &[(now(), 1.0)]))
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn bad_batches_are_refused_and_store_nothing() {
    let app = spawn_app_with("[http]\nmax_body_bytes = \"4KiB\"").await;
    let (_, token) = app.enroll("web-1", "web").await;
    // Too large once decompressed: 413 even though the compressed body is tiny.
    let points: Vec<(i64, f64)> = (0..500).map(|i| (now() - 5000 + i * 10, 1.0)).collect();
    let r = app
        .post_batch(&token, &batch("s", 1, "cpu.busy_pct", &points))
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text());
    assert_eq!(r.error_code(), "payload_too_large");
    // Malformed JSON.
    let r = app
        .send(
            Request::post("/api/v1/agent/batch")
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(
                    "{\"id\": {\"stream\": \"s\", \"seq\": 1}, \"metrics\": [oops",
                ))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error_code(), "bad_request");
    // A bad series name anywhere refuses the whole batch.
    let mut v = serde_json::to_value(batch("s", 1, "cpu.busy_pct", &[(now(), 1.0)])).unwrap();
    v["metrics"][0]["name"] = json!("Robert'); DROP TABLE series;--");
    let r = app.post_json("/api/v1/agent/batch", &token, &v).await;
    assert_eq!(r.status.as_u16() / 100, 4, "{}", r.text());
    assert_eq!(app.series_count().await, 0, "nothing was stored");
    // Buckets from the far future are counted as rejected, the rest stored.
    let r = app
        .post_batch(
            &token,
            &batch(
                "s",
                1,
                "cpu.busy_pct",
                &[(now() - 10, 1.0), (now() + 86_400, 2.0)],
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        (r.json()["accepted"].as_u64(), r.json()["rejected"].as_u64()),
        (Some(1), Some(1))
    );
    let m = app.get("/metrics", None).await.text();
    assert!(
        m.contains("metrolog_ingest_rejected_buckets_total{reason=\"time\"} 1"),
        "{m}"
    );
}

#[tokio::test]
async fn leave_heartbeat_and_removal() {
    let app = spawn_app().await;
    let (host, token) = app.enroll("web-1", "web").await;
    let r = app
        .post_json(
            "/api/v1/agent/leave",
            &token,
            &json!({"reason": "shutdown"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let h = app
        .get(&format!("/api/v1/hosts/{host}"), Some(&app.viewer))
        .await
        .json();
    assert_eq!(h["state"], "left");
    assert_eq!(
        app.get("/api/v1/hosts?state=left", Some(&app.viewer))
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let r = app
        .post_json("/api/v1/agent/heartbeat", &token, &json!(null))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json()["settings_version"].as_str().map(str::len),
        Some(16),
        "the heartbeat names the version of the agent's settings"
    );
    let h = app
        .get(&format!("/api/v1/hosts/{host}"), Some(&app.viewer))
        .await
        .json();
    assert_eq!(h["state"], "up");
    // Viewers cannot delete, admins can.
    let del = |t: &str| {
        Request::delete(format!("/api/v1/hosts/{host}"))
            .header(header::AUTHORIZATION, format!("Bearer {t}"))
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(
        app.send(del(&app.viewer)).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.send(del(&app.admin)).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.get(&format!("/api/v1/hosts/{host}"), Some(&app.viewer))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get("/api/v1/hosts?state=sleepy", Some(&app.viewer))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn bad_queries_get_400() {
    let app = spawn_app().await;
    app.enroll("h", "g").await;
    for q in [
        "host=h&name=cpu.busy_pct&from=-1h&to=-2h",
        "host=h&name=cpu.busy_pct&cf=median",
        "host=h&name=cpu.busy_pct&from=yesterday",
        "host=h&name=cpu.busy_pct&step=7",
        "name=cpu.busy_pct",
        "host=h&name=cpu.busy_pct&from=0&to=1900000000&step=10",
    ] {
        let r = app
            .get(&format!("/api/v1/query?{q}"), Some(&app.viewer))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{q}: {}", r.text());
        assert_eq!(r.error_code(), "bad_request");
    }
    assert_eq!(
        app.get("/api/v1/query?host=nobody&name=x", Some(&app.viewer))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

fn set_cookies(r: &Resp) -> Vec<String> {
    r.headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

fn cookie_value(cookies: &[String], name: &str) -> Option<String> {
    cookies
        .iter()
        .find_map(|c| c.strip_prefix(&format!("{name}=")))
        .map(|rest| rest.split(';').next().unwrap().to_string())
}

#[tokio::test]
async fn login_session_and_escaped_overview() {
    let app = spawn_app().await;
    // A hostile hostname must show as text.
    app.enroll("<script>alert(1)</script>", "web").await;

    let page = app.get("/", None).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.headers[header::LOCATION], "/login");

    let form = app.get("/login", None).await;
    assert_eq!(form.status, StatusCode::OK);
    let cookies = set_cookies(&form);
    let csrf = cookie_value(&cookies, "ml_login_csrf").unwrap();
    assert!(cookies[0].contains("HttpOnly") && cookies[0].contains("SameSite=Strict"));
    assert!(form.text().contains(&format!("value=\"{csrf}\"")));

    let login = |user: &str, pass: &str, csrf_field: &str| {
        Request::post("/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::COOKIE, format!("ml_login_csrf={csrf}"))
            .body(Body::from(format!(
                "username={user}&password={pass}&csrf={csrf_field}"
            )))
            .unwrap()
    };
    assert_eq!(
        app.send(login("admin", "s3cret-pass", "forged"))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.send(login("admin", "wrong", &csrf)).await.status,
        StatusCode::UNAUTHORIZED
    );
    let ok = app.send(login("admin", "s3cret-pass", &csrf)).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER);
    let session = cookie_value(&set_cookies(&ok), "ml_session").unwrap();

    let page = app
        .send(
            Request::get("/")
                .header(header::COOKIE, format!("ml_session={session}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(page.status, StatusCode::OK);
    let html = page.text();
    assert!(
        html.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
        "{html}"
    );
    assert!(!html.contains("<script>alert(1)"));
    assert!(html.contains("/static/overview.js?v="));

    // The session reads the API too; writes need the CSRF header.
    let api = app
        .send(
            Request::get("/api/v1/overview")
                .header(header::COOKIE, format!("ml_session={session}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(
        api.json()[0]["hosts"][0]["hostname"],
        "<script>alert(1)</script>"
    );
    let del = app
        .send(
            Request::delete("/api/v1/hosts/1")
                .header(header::COOKIE, format!("ml_session={session}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(del.status, StatusCode::FORBIDDEN);

    // Repeated failures are rate-limited.
    for _ in 0..5 {
        app.send(login("admin", "wrong", &csrf)).await;
    }
    assert_eq!(
        app.send(login("admin", "s3cret-pass", &csrf)).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );

    let js = app.get("/static/overview.js", None).await;
    assert_eq!(js.status, StatusCode::OK);
    assert!(js.headers[header::CACHE_CONTROL]
        .to_str()
        .unwrap()
        .contains("max-age"));
    let _ = &app.state;
}

#[tokio::test]
async fn import_consolidates_like_rrdtool_update_and_counts_what_it_refuses() {
    let app = spawn_app().await;
    let t0 = (now() / 60) * 60 - 1200;
    let body = json!({
        "host": "backfill-1",
        "group": "batch",
        "series": [
            {"name": "cpu.busy_pct", "points": [[t0 + 10, 10.0], [t0 + 20, null], [t0 + 30, 30.0],
                                                  [t0 + 30, 99.0], [t0 + 25, 99.0], [t0 + 40, 40.0]]},
            {"name": "disk.used_pct", "labels": {"mount": "/"}, "points": [[t0 + 10, 1.0], [now() + 3600, 2.0]]}
        ]
    });
    // Viewers cannot import.
    let r = app.post_json("/api/v1/import", &app.viewer, &body).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app.post_json("/api/v1/import", &app.admin, &body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(v["accepted"], 5);
    assert_eq!(v["rejected"], json!({"out_of_order": 2, "future": 1}));
    assert_eq!(v["series"][0]["rejected"]["out_of_order"], 2);
    assert_eq!(v["series"][1]["rejected"]["future"], 1);
    let host_id = v["host_id"].as_i64().unwrap();
    let h = app
        .get(&format!("/api/v1/hosts/{host_id}"), Some(&app.viewer))
        .await
        .json();
    assert_eq!(
        (h["source"].as_str(), h["passive"].as_bool()),
        (Some("import"), Some(true))
    );
    assert_eq!(h["group"], "batch");
    let q = app
        .get(
            &format!(
                "/api/v1/query?host=backfill-1&name=cpu.busy_pct&from={t0}&to={}",
                t0 + 40
            ),
            Some(&app.viewer),
        )
        .await;
    assert_eq!(q.status, StatusCode::OK, "{}", q.text());
    // null is unknown: (t0+10, t0+20] is unknown, the rest as sent.
    assert_eq!(
        q.json()["series"][0]["points"],
        json!([
            [t0 + 10, 10.0],
            [t0 + 20, null],
            [t0 + 30, 30.0],
            [t0 + 40, 40.0]
        ])
    );
    // Importing more continues the series; going back in time is refused again.
    let more = json!({"host": "backfill-1", "series": [{"name": "cpu.busy_pct", "points": [[t0 + 40, 1.0], [t0 + 50, 50.0]]}]});
    let r = app.post_json("/api/v1/import", &app.admin, &more).await;
    assert_eq!(
        (
            r.json()["accepted"].as_u64(),
            r.json()["rejected"]["out_of_order"].as_u64()
        ),
        (Some(1), Some(1))
    );
    let m = app.get("/metrics", None).await.text();
    for line in [
        "metrolog_import_samples_total 6",
        "metrolog_import_rejected_samples_total{reason=\"out_of_order\"} 3",
        "metrolog_import_rejected_samples_total{reason=\"future\"} 1",
    ] {
        assert!(m.contains(line), "{line} missing in:\n{m}");
    }
    assert_eq!(app.state.store.archive_stats().series, 2);
    // Removing the host takes its archives with it, in memory too.
    let r = app
        .send(
            Request::delete(format!("/api/v1/hosts/{host_id}"))
                .header(header::AUTHORIZATION, format!("Bearer {}", app.admin))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(app.state.store.archive_stats().series, 0);
    assert_eq!(app.series_count().await, 0);
}

#[tokio::test]
async fn bad_imports_get_400_and_store_nothing() {
    let app = spawn_app().await;
    let t = now() - 60;
    for (body, needle) in [
        (
            json!({"host": "h", "series": [{"name": "CPU Busy!", "points": [[t, 1.0]]}]}),
            "CPU Busy!",
        ),
        (
            json!({"host": "h", "series": [{"name": "a.b", "points": [[t, "x"]]}]}),
            "",
        ),
        (
            json!({"host": "h", "series": [{"name": "a.b", "points": [[t, 1.0]]}, {"name": "a.b", "points": []}]}),
            "listed twice",
        ),
        (json!({"host": "two words", "series": []}), "host"),
        (
            json!({"host": "h", "group": "no/slash", "series": []}),
            "group",
        ),
        (
            json!({"host": "h", "series": [], "colour": "blue"}),
            "colour",
        ),
    ] {
        let r = app.post_json("/api/v1/import", &app.admin, &body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text());
        assert!(
            r.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains(needle),
            "{}",
            r.text()
        );
    }
    assert_eq!(app.series_count().await, 0);
    assert_eq!(
        app.get("/api/v1/hosts", Some(&app.viewer))
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

#[tokio::test]
async fn group_aggregates_align_on_archive_rows_and_coarse_ranges_use_coarse_archives() {
    let app = spawn_app().await;
    let t0 = (now() / 3600) * 3600 - 2 * 86400;
    for (host, base) in [("a", 10.0), ("b", 30.0)] {
        // Two days of samples every 10 s.
        let points: Vec<Value> = (1..=2 * 8640).map(|i| json!([t0 + i * 10, base])).collect();
        let r = app
            .post_json(
                "/api/v1/import",
                &app.admin,
                &json!({"host": host, "group": "g", "series": [{"name": "load.1m", "points": points}]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    let q = app
        .get(
            &format!(
                "/api/v1/query?group=g&agg=avg&name=load.1m&from={}&to={}",
                t0,
                t0 + 2 * 86400
            ),
            Some(&app.viewer),
        )
        .await
        .json();
    // Two days: the 5 min archive (the 1 min one keeps one day).
    assert_eq!(q["step"], 300);
    let pts = q["series"][0]["points"].as_array().unwrap();
    assert_eq!(pts.len(), 576);
    assert!(pts.iter().all(|p| p[1] == json!(20.0)), "{pts:?}");
    assert_eq!(q["series"][0]["members"], 2);
    // An hourly step asked for: the hourly archive.
    let q = app
        .get(
            &format!(
                "/api/v1/query?host=b&name=load.1m&from={}&to={}&step=1h&cf=max",
                t0,
                t0 + 2 * 86400
            ),
            Some(&app.viewer),
        )
        .await
        .json();
    assert_eq!(q["step"], 3600);
    assert_eq!(q["series"][0]["points"][47], json!([t0 + 48 * 3600, 30.0]));
}

#[tokio::test]
async fn batches_beyond_the_concurrency_limit_get_503_with_retry_after() {
    let app = spawn_app_with("[http]\nmax_concurrent_batches = 1\n").await;
    let (_, token) = app.enroll("web-1", "web").await;
    // A batch whose body is still on its way holds the only place.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let slow = Request::post("/api/v1/agent/batch")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(tokio_stream_of(rx)))
        .unwrap();
    let first = {
        let router = app.router.clone();
        tokio::spawn(async move { tower::ServiceExt::oneshot(router, slow).await })
    };
    while app.state.batch_slots.available_permits() > 0 {
        tokio::task::yield_now().await;
    }
    let r = app
        .post_batch(&token, &batch("s", 2, "cpu.busy_pct", &[(now() - 10, 1.0)]))
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert_eq!(r.error_code(), "busy");
    assert_eq!(r.headers[header::RETRY_AFTER], "1");
    // Bad tokens are refused before taking a place.
    let r = app
        .post_batch(
            "wrong",
            &batch("s", 2, "cpu.busy_pct", &[(now() - 10, 1.0)]),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // The first batch completes and is stored; its place is free again.
    let body = serde_json::to_vec(&batch("s", 1, "cpu.busy_pct", &[(now() - 20, 3.0)])).unwrap();
    tx.send(Ok(body)).await.unwrap();
    drop(tx);
    let resp = first.await.unwrap().unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let r = app
        .post_batch(&token, &batch("s", 2, "cpu.busy_pct", &[(now() - 10, 1.0)]))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let m = app.get("/metrics", None).await.text();
    assert!(
        m.contains("metrolog_ingest_batches_busy_total 1"),
        "counted: {m}"
    );
}

/// A body stream fed through a channel.
fn tokio_stream_of(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
