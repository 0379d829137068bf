//! Supervision through the router and the real evaluator: the event bus,
//! check results, alarms and acknowledgements, silences, rules.

mod common;

use axum::http::StatusCode;
use common::{now, spawn_app, spawn_app_with};
use metrolog_protocol::nagios::{CheckName, CheckResult, CheckStatus};
use metrolog_protocol::{Batch, BatchId};
use metrolog_server::events::{Event, HostChange, SampleSource};
use serde_json::json;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

fn batch(seq: u64, checks: Vec<CheckResult>) -> Batch {
    Batch {
        id: BatchId {
            stream: "s1".into(),
            seq,
        },
        sent_at: now(),
        metrics: Vec::new(),
        logs: Vec::new(),
        checks,
        series_meta: Vec::new(),
    }
}

fn result(status: CheckStatus, attempt: u32, output: &str) -> CheckResult {
    CheckResult {
        name: CheckName::parse("disk_root").unwrap(),
        status,
        output: output.into(),
        long_output: String::new(),
        perfdata: "/=5MB;10;20".into(),
        ts: now(),
        duration_ms: 12,
        attempt,
        max_attempts: 3,
    }
}

async fn next(
    rx: &mut tokio::sync::broadcast::Receiver<std::sync::Arc<metrolog_server::events::Envelope>>,
    what: &str,
) -> Event {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap_or_else(|_| panic!("{what} within 10 s"))
        .unwrap()
        .event
        .clone()
}

#[tokio::test]
async fn the_bus_carries_agent_batches_imports_graphite_and_liveness() {
    let app = spawn_app().await;
    let (mut rx, first) = app.state.store.bus().subscribe();
    assert!(first >= 1);
    let (host, token) = app.enroll("web-1", "web").await;
    match next(&mut rx, "event 1").await {
        Event::Host(h) => {
            assert_eq!((h.host_id, h.change), (host, HostChange::Up));
            assert_eq!(h.info.unwrap().hostname, "web-1");
        }
        other => panic!("expected the enrollment, got {other:?}"),
    }
    // An agent batch with a bucket and a check result.
    let mut b = batch(1, vec![result(CheckStatus::Warning, 1, "DISK WARNING")]);
    b.metrics.push(metrolog_protocol::SeriesBuckets {
        key: metrolog_protocol::SeriesKey::new("cpu.busy_pct", Default::default()).unwrap(),
        step: 10,
        buckets: vec![metrolog_protocol::Bucket {
            ts: now() / 10 * 10,
            avg: 42.0,
            min: 40.0,
            max: 44.0,
            last: 41.0,
            count: 10,
        }],
    });
    assert_eq!(app.post_batch(&token, &b).await.status, StatusCode::OK);
    match next(&mut rx, "event 2").await {
        Event::Samples(s) => {
            assert_eq!((s.host_id, s.source), (host, SampleSource::Agent));
            assert_eq!(s.series[0].1[0].avg, 42.0);
        }
        other => panic!("expected samples, got {other:?}"),
    }
    match next(&mut rx, "event 3").await {
        Event::Checks(c) => assert_eq!(c.results[0].status, CheckStatus::Warning),
        other => panic!("expected check results, got {other:?}"),
    }
    // An import.
    let t = now() - 100;
    let r = app
        .post_json(
            "/api/v1/import",
            &app.admin,
            &json!({"host": "imported-1", "series": [{"name": "temp.c", "points": [[t, 21.5]]}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let imported = loop {
        match next(&mut rx, "event 4").await {
            Event::Samples(s) if s.source == SampleSource::Import => break s,
            Event::Host(_) => continue,
            other => panic!("expected imported samples, got {other:?}"),
        }
    };
    assert_eq!(imported.series[0].0.name.as_str(), "temp.c");
    assert_eq!(imported.series[0].1[0].last, 21.5);
    // Graphite plaintext, over a real socket.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let _g = metrolog_server::graphite::start(
        app.state.clone(),
        listener,
        metrolog_server::graphite::PathMapping { host_segment: 1 },
        stop_rx,
    );
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    c.write_all(format!("collectd.gw-1.load.shortterm 0.75 {}\n", now() - 5).as_bytes())
        .await
        .unwrap();
    c.shutdown().await.unwrap();
    let graphite = loop {
        match next(&mut rx, "event 5").await {
            Event::Samples(s) if s.source == SampleSource::Import => break s,
            Event::Host(_) => continue,
            other => panic!("expected Graphite samples, got {other:?}"),
        }
    };
    assert_eq!(graphite.series[0].1[0].last, 0.75);
    // Liveness: the sweep marks the silent host down; a heartbeat brings it back.
    let down = app.state.store.mark_silent_down(now() + 1).await.unwrap();
    assert!(down.contains(&host));
    match next(&mut rx, "event 6").await {
        Event::Host(h) => assert_eq!((h.host_id, h.change), (host, HostChange::Down)),
        other => panic!("expected the host down, got {other:?}"),
    }
    app.state.store.touch_host(host).await.unwrap();
    match next(&mut rx, "event 7").await {
        Event::Host(h) => assert_eq!((h.host_id, h.change), (host, HostChange::Up)),
        other => panic!("expected the host up again, got {other:?}"),
    }
    app.state.store.leave_host(host).await.unwrap();
    match next(&mut rx, "event 8").await {
        Event::Host(h) => assert_eq!(h.change, HostChange::Left),
        other => panic!("expected the leave, got {other:?}"),
    }
}

const DISK_RULE: &str = r#"
[[rules]]
name = "disk"
kind = "check"
check = "disk_root"
"#;

#[tokio::test]
async fn check_results_are_listed_and_drive_an_alarm_through_soft_and_hard_states() {
    let app = spawn_app_with(DISK_RULE).await;
    let (host, token) = app.enroll("db-1", "db").await;
    let b = batch(
        1,
        vec![result(
            CheckStatus::Critical,
            1,
            "DISK CRITICAL - free space: / 3 MB",
        )],
    );
    assert_eq!(app.post_batch(&token, &b).await.status, StatusCode::OK);
    let checks = app
        .get("/api/v1/checks?host=db-1", Some(&app.viewer))
        .await
        .json();
    assert_eq!(checks[0]["name"], "disk_root");
    assert_eq!(checks[0]["status"], "CRITICAL");
    assert_eq!(checks[0]["state_type"], "soft");
    assert_eq!(checks[0]["output"], "DISK CRITICAL - free space: / 3 MB");
    assert_eq!(checks[0]["perfdata"], "/=5MB;10;20");
    let alarms = app
        .wait_json("/api/v1/alarms", |v| {
            v.as_array().is_some_and(|a| !a.is_empty())
        })
        .await;
    assert_eq!(alarms[0]["state"], "CRITICAL");
    assert_eq!(alarms[0]["state_type"], "soft");
    assert_eq!(alarms[0]["host_id"], host);
    for (seq, attempt) in [(2, 2), (3, 3)] {
        let b = batch(
            seq,
            vec![result(CheckStatus::Critical, attempt, "DISK CRITICAL")],
        );
        app.post_batch(&token, &b).await;
    }
    let alarms = app
        .wait_json("/api/v1/alarms", |v| v[0]["state_type"] == "hard")
        .await;
    let id = alarms[0]["id"].as_i64().unwrap();
    // A viewer cannot acknowledge; an admin can, once.
    let r = app
        .post_json(
            &format!("/api/v1/alarms/{id}/ack"),
            &app.viewer,
            &json!({"comment": "x"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app
        .post_json(
            &format!("/api/v1/alarms/{id}/ack"),
            &app.admin,
            &json!({"comment": "disk ordered"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["acknowledged_by"], "admin");
    assert_eq!(r.json()["ack_comment"], "disk ordered");
    // Recovery clears the acknowledgement; the history has every step.
    app.post_batch(
        &token,
        &batch(4, vec![result(CheckStatus::Ok, 1, "DISK OK")]),
    )
    .await;
    let detail = app
        .wait_json(&format!("/api/v1/alarms/{id}"), |v| v["state"] == "OK")
        .await;
    assert!(detail["acknowledged_by"].is_null());
    let moves: Vec<(String, String, String)> = detail["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|t| {
            (
                t["from"].as_str().unwrap().to_string(),
                t["to"].as_str().unwrap().to_string(),
                t["state_type"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let s = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
    assert_eq!(
        moves,
        [
            s("OK", "CRITICAL", "soft"),
            s("CRITICAL", "CRITICAL", "hard"),
            s("CRITICAL", "CRITICAL", "hard"), // the acknowledgement
            s("CRITICAL", "OK", "hard"),
        ]
    );
    let r = app
        .post_json(&format!("/api/v1/alarms/{id}/ack"), &app.admin, &json!({}))
        .await;
    assert_eq!(
        r.status,
        StatusCode::CONFLICT,
        "an OK alarm has nothing to acknowledge"
    );
    assert!(app
        .get("/api/v1/alarms?state=active", Some(&app.admin))
        .await
        .json()
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(
        app.get("/api/v1/alarms?state=all", Some(&app.admin))
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn rules_through_the_api_are_checked_and_the_file_keeps_its_own() {
    let app = spawn_app_with(DISK_RULE).await;
    let bad = app
        .post_json(
            "/api/v1/rules",
            &app.admin,
            &json!({"name": "cpu", "kind": "threshold", "metric": "cpu.busy_pct", "warning": "90:10", "window": "1s", "for": "1m"}),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let msg = bad.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("warning: range \"90:10\""), "{msg}");
    assert!(
        msg.contains("window: 1 s is shorter than the archives' base step"),
        "{msg}"
    );
    let unknown = app
        .post_json(
            "/api/v1/rules",
            &app.admin,
            &json!({"name": "x", "kind": "oracle"}),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert!(
        unknown.text().contains("unknown variant"),
        "{}",
        unknown.text()
    );
    let good = json!({"name": "cpu", "kind": "threshold", "metric": "cpu.busy_pct", "critical": "~:90", "window": "1m"});
    assert_eq!(
        app.post_json("/api/v1/rules", &app.viewer, &good)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.post_json("/api/v1/rules", &app.admin, &good)
            .await
            .status,
        StatusCode::CREATED
    );
    assert_eq!(
        app.post_json("/api/v1/rules", &app.admin, &good)
            .await
            .status,
        StatusCode::CONFLICT
    );
    let listed = app.get("/api/v1/rules", Some(&app.viewer)).await.json();
    let names: Vec<(&str, &str)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap(), r["source"].as_str().unwrap()))
        .collect();
    assert_eq!(names, [("disk", "file"), ("cpu", "api")]);
    let file_put = app
        .put_json(
            "/api/v1/rules/disk",
            &app.admin,
            &json!({"name": "disk", "kind": "check", "check": "other"}),
        )
        .await;
    assert_eq!(file_put.status, StatusCode::CONFLICT);
    assert_eq!(
        app.delete("/api/v1/rules/disk", &app.admin).await.status,
        StatusCode::CONFLICT
    );
    let changed = json!({"name": "cpu", "kind": "threshold", "metric": "cpu.busy_pct", "critical": "~:50", "window": "1m"});
    assert_eq!(
        app.put_json("/api/v1/rules/cpu", &app.admin, &changed)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        app.delete("/api/v1/rules/cpu", &app.admin).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.delete("/api/v1/rules/cpu", &app.admin).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_silence_is_created_listed_and_expired() {
    let app = spawn_app().await;
    let bad = app
        .post_json(
            "/api/v1/silences",
            &app.admin,
            &json!({"matchers": [], "duration": "1h"}),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let bad = app
        .post_json(
            "/api/v1/silences",
            &app.admin,
            &json!({"matchers": [{"name": "group", "op": "=~", "value": "("}], "duration": "1h"}),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.text().contains("matchers[0]"), "{}", bad.text());
    let r = app
        .post_json(
            "/api/v1/silences",
            &app.admin,
            &json!({"matchers": [{"name": "group", "value": "web"}], "duration": "2h", "comment": "planned scale-in"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let id = r.json()["id"].as_i64().unwrap();
    let listed = app.get("/api/v1/silences", Some(&app.viewer)).await.json();
    assert_eq!(listed[0]["created_by"], "admin");
    assert_eq!(listed[0]["active"], true);
    assert_eq!(listed[0]["matchers"][0]["op"], "=");
    assert_eq!(
        app.delete(&format!("/api/v1/silences/{id}"), &app.viewer)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.delete(&format!("/api/v1/silences/{id}"), &app.admin)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert!(app
        .get("/api/v1/silences", Some(&app.viewer))
        .await
        .json()
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(
        app.get("/api/v1/silences?state=all", Some(&app.viewer))
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn a_graph_marks_when_its_alarm_fired_and_draws_the_rules_thresholds() {
    let app = spawn_app().await;
    // A rule made through the API (not the file): its lines and marks are drawn too.
    let r = app
        .post_json(
            "/api/v1/rules",
            &app.admin,
            &json!({"name": "slow", "kind": "threshold", "metric": "app.latency_ms",
                    "warning": "~:50", "critical": "~:100"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let t = now() - 600;
    let points: Vec<_> = (0..10)
        .map(|i| json!([t + i * 10, if i < 5 { 20.0 } else { 150.0 }]))
        .collect();
    let r = app
        .post_json(
            "/api/v1/import",
            &app.admin,
            &json!({"host": "web-1", "series": [
                {"name": "app.latency_ms", "points": points},
                {"name": "app.rps", "points": [[t, 3.0]]}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    app.wait_json("/api/v1/alarms?state=active", |v| {
        v.as_array()
            .is_some_and(|a| a.iter().any(|x| x["state"] == "CRITICAL"))
    })
    .await;
    let svg = app
        .get(
            "/api/v1/graph.svg?host=web-1&name=app.latency_ms&from=-1h",
            Some(&app.viewer),
        )
        .await
        .text();
    // The red triangle of the hard CRITICAL transition, and the rule's lines.
    assert!(svg.contains(r##"fill="#D62728""##), "no alarm mark drawn");
    assert!(svg.contains("critical 100"), "no critical line");
    assert!(svg.contains("warning 50"), "no warning line");
    // Another metric of the same host is not judged by the rule: no marks.
    let other = app
        .get(
            "/api/v1/graph.svg?host=web-1&name=app.rps&from=-1h",
            Some(&app.viewer),
        )
        .await
        .text();
    assert!(!other.contains(r##"fill="#D62728""##));
    assert!(!other.contains("critical 100"));
}
