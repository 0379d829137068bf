//! Router tests of the logs API (`/api/v1/logs`, `/api/v1/logs/stream`) on a
//! fresh SQLite database, driven with `oneshot`, no socket.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use chrono::Utc;
use http_body_util::BodyExt;
use metrolog_protocol::syslog::{parse, LogRecord, LogSource};
use metrolog_protocol::{Batch, BatchId, Labels};
use metrolog_server::logs::feed::{LogEvent, FEED_CAPACITY};
use metrolog_server::store::logs::NewLog;
use metrolog_server::store::{HostFacts, HostSource};
use serde_json::Value;
use std::time::Duration;
use tower::ServiceExt;

mod common;

use common::{spawn_app, TestApp};

fn rec(line: &str) -> LogRecord {
    parse(line.as_bytes(), Utc::now(), 65536)
}

impl TestApp {
    /// GET as a viewer: (status, JSON body or Null).
    async fn get_json(&self, path: &str) -> (StatusCode, Value) {
        let r = self.get(path, Some(&self.viewer)).await;
        (
            r.status,
            serde_json::from_slice(&r.body).unwrap_or(Value::Null),
        )
    }

    /// Stores syslog lines as if `sender` had sent them; returns their ids.
    async fn store_lines(&self, sender: &str, lines: &[&str]) -> Vec<i64> {
        let host = self
            .state
            .store
            .syslog_hosts(&[sender.to_string()])
            .await
            .unwrap()[0];
        let recs: Vec<LogRecord> = lines.iter().map(|l| rec(l)).collect();
        let rows: Vec<NewLog<'_>> = recs
            .iter()
            .map(|r| NewLog {
                host_id: host,
                record: r,
                source: LogSource::SyslogTcp,
            })
            .collect();
        let ids = self.state.store.insert_logs(&rows, &[]).await.unwrap();
        // No indexer task runs here (no log pipeline): index what was just
        // stored, as the indexer does within its lag.
        self.state.store.catch_up_log_index().await.unwrap();
        ids
    }

    async fn messages(&self, query: &str) -> Vec<String> {
        let (status, body) = self.get_json(&format!("/api/v1/logs?{query}")).await;
        assert_eq!(status, StatusCode::OK, "{query}: {body}");
        body["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["message"].as_str().unwrap().to_string())
            .collect()
    }
}

async fn sample(app: &TestApp) {
    app.store_lines(
        "web-1",
        &[
            "<38>Feb 22 16:45:20 web-1 sshd[2738]: Failed password for root from 202.109.143.106 port 1786 ssh2",
            "<35>Feb 22 16:45:21 web-1 sshd[2738]: error: PAM: authentication failure",
            "<30>Feb 22 16:45:22 web-1 nginx: GET /index.html 200",
        ],
    )
    .await;
    app.store_lines(
        "db-1",
        &[
            "<27>Feb 22 16:45:23 db-1 postgres[9]: could not write block: No space left on device",
            "<31>Feb 22 16:45:24 db-1 postgres[9]: checkpoint complete <script>alert(1)</script>",
        ],
    )
    .await;
}

#[tokio::test]
async fn newest_first_with_a_cursor_to_the_next_page() {
    let app = spawn_app().await;
    sample(&app).await;
    let (status, first) = app.get_json("/api/v1/logs?limit=2").await;
    assert_eq!(status, StatusCode::OK);
    let recs = first["records"].as_array().unwrap();
    assert_eq!(recs.len(), 2);
    assert!(recs[0]["message"]
        .as_str()
        .unwrap()
        .starts_with("checkpoint complete"));
    assert_eq!(recs[0]["host"], "db-1");
    assert_eq!(recs[0]["app_name"], "postgres");
    assert_eq!(recs[0]["procid"], "9");
    assert_eq!(recs[0]["severity"], "debug");
    assert_eq!(recs[0]["facility"], "daemon");
    assert_eq!(recs[0]["source"], "syslog-tcp");
    assert!(recs[0]["ts"].as_str().unwrap().contains("-02-22T16:45:24"));
    let next = first["next"].as_str().unwrap();
    let (_, second) = app
        .get_json(&format!("/api/v1/logs?limit=2&before={next}"))
        .await;
    let (_, third) = app
        .get_json(&format!(
            "/api/v1/logs?limit=2&before={}",
            second["next"].as_str().unwrap()
        ))
        .await;
    assert_eq!(third["records"].as_array().unwrap().len(), 1);
    assert!(third["next"].is_null(), "last page has no cursor");
}

#[tokio::test]
async fn filters_by_host_group_app_severity_text_and_time() {
    let app = spawn_app().await;
    sample(&app).await;
    assert_eq!(app.messages("host=db-1").await.len(), 2);
    let db_id = app.state.store.hosts_named("db-1").await.unwrap()[0].id;
    assert_eq!(app.messages(&format!("host={db_id}")).await.len(), 2);
    assert_eq!(app.messages("host=nobody").await.len(), 0);
    assert_eq!(app.messages("app=nginx").await.len(), 1);
    // Least severe level to include: err keeps err (3) and more severe.
    let errs = app.messages("severity=err").await;
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert_eq!(app.messages("severity=3").await, errs);
    assert_eq!(app.messages("severity=WARNING").await, errs);
    assert_eq!(app.messages("q=password").await.len(), 1);
    assert_eq!(
        app.messages("q=%22No+space+left%22&host=db-1").await.len(),
        1
    );
    assert_eq!(app.messages("q=202.109.143.106").await.len(), 1);
    assert_eq!(
        app.messages("q=sshd+-PAM").await.len(),
        0,
        "sshd is the app, not in the text"
    );
    assert_eq!(app.messages("q=fail*&severity=err").await.len(), 1);
    // A group with no member matches nothing (syslog hosts have no group).
    assert_eq!(app.messages("group=web").await.len(), 0);
    let agent = app
        .state
        .store
        .upsert_host(
            &HostFacts {
                hostname: "app-1".into(),
                instance_id: None,
                group: Some("web".into()),
                labels: Labels::new(),
                agent_version: None,
            },
            HostSource::Agent,
        )
        .await
        .unwrap();
    let batch = Batch {
        id: BatchId {
            stream: "0123456789abcdef".into(),
            seq: 1,
        },
        sent_at: Utc::now().timestamp(),
        metrics: vec![],
        logs: vec![rec("<11>Feb 22 16:45:25 app-1 worker: job failed")],
        checks: Vec::new(),
        series_meta: Vec::new(),
    };
    app.state
        .ingest
        .ingest(agent, batch, Utc::now().timestamp())
        .await
        .unwrap();
    assert_eq!(app.messages("group=web").await, ["job failed"]);
    assert_eq!(app.messages("group=web&host=db-1").await.len(), 0);
    // Time bounds apply to the source time.
    app.store_lines("t", &["<13>1 2020-01-01T12:00:00Z t app - - - new year"])
        .await;
    let in_2020 = "from=2020-01-01T00:00:00Z&to=2020-01-02T00:00:00Z";
    assert_eq!(app.messages(in_2020).await, ["new year"]);
    assert_eq!(
        app.messages("from=1577880000&to=1577880001").await,
        ["new year"]
    );
    assert_eq!(
        app.messages("to=1577880000").await.len(),
        0,
        "`to` is exclusive"
    );
}

#[tokio::test]
async fn hostile_or_wrong_parameters_are_400_never_500() {
    let app = spawn_app().await;
    sample(&app).await;
    for q in [
        "q=%22",
        "q=NEAR(a+b)",
        "q=a+OR+b+AND+NOT",
        "q=col:val",
        "q=*",
        "q=%27%3B+DROP+TABLE+logs%3B--",
        "q=%5E%28%29%7B%7D",
        "q=-",
        "q=%00",
    ] {
        let (status, body) = app.get_json(&format!("/api/v1/logs?{q}")).await;
        assert_eq!(status, StatusCode::OK, "{q}: {body}");
    }
    for q in [
        "severity=loud",
        "severity=8",
        "limit=0",
        "limit=5000",
        "before=abc",
        "from=yesterday",
        "from=-1h&to=-2h",
        "colour=blue",
    ] {
        let (status, body) = app.get_json(&format!("/api/v1/logs?{q}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{q}: {body}");
        assert_eq!(body["error"]["code"], "bad_request");
    }
    let long = "x".repeat(2000);
    let (status, _) = app.get_json(&format!("/api/v1/logs?q={long}")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let resp = app
        .router
        .clone()
        .oneshot(Request::get("/api/v1/logs").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

/// Reads SSE frames until `want` events of the given kinds arrived.
async fn read_events(body: &mut Body, want: usize) -> Vec<(String, String)> {
    let mut text = String::new();
    let mut events = Vec::new();
    while events.len() < want {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("an event within 5 s")
            .expect("stream still open")
            .unwrap();
        if let Some(data) = frame.data_ref() {
            text.push_str(&String::from_utf8_lossy(data));
        }
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let mut kind = String::from("message");
            let mut data = String::new();
            for line in block.lines() {
                if let Some(k) = line.strip_prefix("event: ").or(line.strip_prefix("event:")) {
                    kind = k.trim().to_string();
                } else if let Some(d) = line.strip_prefix("data: ").or(line.strip_prefix("data:")) {
                    data.push_str(d);
                }
            }
            if !block.starts_with(':') {
                events.push((kind, data));
            }
        }
    }
    events
}

fn event(host_id: i64, line: &str) -> LogEvent {
    LogEvent {
        id: None,
        host_id: Some(host_id),
        source: LogSource::SyslogUdp,
        record: rec(line),
    }
}

#[tokio::test]
async fn live_tail_streams_matching_records_and_reports_what_a_slow_client_missed() {
    let app = spawn_app().await;
    let web = app
        .state
        .store
        .syslog_hosts(&["web-1".into()])
        .await
        .unwrap()[0]
        .unwrap();
    let open = |query: &str| {
        app.router.clone().oneshot(
            Request::get(format!("/api/v1/logs/stream?{query}"))
                .header(header::AUTHORIZATION, format!("Bearer {}", app.viewer))
                .body(Body::empty())
                .unwrap(),
        )
    };
    let resp = open("host=web-1&severity=warning&q=disk").await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut live = resp.into_body();
    // A second client that never reads.
    let slow = open("").await.unwrap();
    assert_eq!(read_events(&mut live, 1).await[0].0, "ready");
    let feed = app.state.ingest.log_feed().clone();
    feed.publish(vec![
        event(web, "<14>Feb 22 16:45:20 web-1 app: disk fine"),
        event(web + 1, "<11>Feb 22 16:45:20 db-1 app: disk full"),
        event(web, "<11>Feb 22 16:45:21 web-1 app: disk <b>full</b>"),
    ]);
    let got = read_events(&mut live, 1).await;
    assert_eq!(got[0].0, "log");
    let rec: Value = serde_json::from_str(&got[0].1).unwrap();
    assert_eq!(rec["message"], "disk <b>full</b>");
    assert_eq!(rec["host"], "web-1");
    assert_eq!(rec["severity"], "err");

    // Far more than the feed holds: the fast client keeps up, the slow one
    // is told how many records it missed when it reads again.
    let mut slow = slow.into_body();
    for i in 0..FEED_CAPACITY + 20 {
        feed.publish(vec![event(web, &format!("<11>x web-1 app: disk {i}"))]);
        let got = read_events(&mut live, 1).await;
        assert_eq!(got[0].0, "log");
    }
    let got = read_events(&mut slow, 2).await;
    assert_eq!(got[0].0, "ready");
    assert_eq!(got[1].0, "lagged", "{got:?}");
    let missed: Value = serde_json::from_str(&got[1].1).unwrap();
    assert!(missed["missed"].as_u64().unwrap() >= 20, "{missed}");
    let metrics = app
        .router
        .clone()
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    let metrics = String::from_utf8_lossy(&metrics);
    let lagged: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("metrolog_log_tail_lagged_records_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(lagged >= 20, "{metrics}");
}

#[tokio::test]
async fn the_logs_page_and_its_script_are_served() {
    let app = spawn_app().await;
    let resp = app
        .router
        .clone()
        .oneshot(
            Request::get("/logs")
                .header(header::AUTHORIZATION, format!("Bearer {}", app.viewer))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let html = resp.into_body().collect().await.unwrap().to_bytes();
    let html = String::from_utf8_lossy(&html);
    assert!(html.contains("id=\"logs-filter\""), "{html}");
    assert!(
        html.contains("href=\"/logs\" aria-current=\"page\""),
        "nav link"
    );
    let src = html
        .split("src=\"")
        .find_map(|s| s.strip_prefix("/static/logs.js"))
        .and_then(|s| s.split('"').next())
        .expect("the page loads logs.js");
    let js = app
        .router
        .clone()
        .oneshot(
            Request::get(format!("/static/logs.js{src}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(js.status(), StatusCode::OK);
    let js = js.into_body().collect().await.unwrap().to_bytes();
    let js = String::from_utf8_lossy(&js);
    // Log lines are hostile: the script never parses them as HTML.
    assert!(js.contains("EventSource"));
    assert!(!js.contains(".innerHTML") && !js.contains("insertAdjacentHTML("));
    // Unauthenticated: to the login page.
    let resp = app
        .router
        .clone()
        .oneshot(Request::get("/logs").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
}
