//! Router tests for the graphs (`/api/v1/graph.png`, `/api/v1/graph.svg`) and
//! the host and group dashboard pages, on a fresh SQLite database, no socket.

mod common;

use axum::http::{header, StatusCode};
use common::{now, spawn_app_with, TestApp};
use metrolog_protocol::{Batch, BatchId, Bucket, Labels, SeriesBuckets, SeriesKey};
use metrolog_server::graph::png::dimensions;

const RULES: &str = r#"
[[rules]]
name = "cpu-high"
kind = "threshold"
metric = "cpu.busy_pct"
warning = "~:80"
critical = "~:95"
"#;

async fn spawn_app() -> TestApp {
    spawn_app_with(RULES).await
}

impl TestApp {
    /// Ships an hour of 10 s buckets of `name`, with a gap in the middle.
    async fn feed(&self, token: &str, name: &str, base: f64) {
        let t0 = (now() / 10) * 10 - 3600;
        let buckets = (0..360)
            .filter(|i| !(150..180).contains(i))
            .map(|i| {
                let v = base + (f64::from(i) / 10.0).sin() * 10.0;
                Bucket {
                    ts: t0 + i64::from(i) * 10,
                    avg: v,
                    min: v - 2.0,
                    max: v + 2.0,
                    last: v,
                    count: 10,
                }
            })
            .collect();
        let batch = Batch {
            id: BatchId {
                stream: format!("graphs-{name}-{base}"),
                seq: 1,
            },
            sent_at: now(),
            logs: Vec::new(),
            checks: Vec::new(),
            metrics: vec![SeriesBuckets {
                key: SeriesKey::new(name, Labels::new()).unwrap(),
                step: 10,
                buckets,
            }],
            series_meta: Vec::new(),
        };
        let r = self.post_batch(token, &batch).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
}

#[tokio::test]
async fn png_has_the_asked_size_and_cache_headers() {
    let app = spawn_app().await;
    let (_, token) = app.enroll("web-1", "web").await;
    app.feed(&token, "cpu.busy_pct", 40.0).await;
    for (w, h) in [(800, 300), (160, 40)] {
        let r = app
            .get(
                &format!("/api/v1/graph.png?host=web-1&name=cpu.busy_pct&width={w}&height={h}"),
                Some(&app.viewer),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_eq!(r.header(header::CONTENT_TYPE), "image/png");
        assert_eq!(r.header(header::CACHE_CONTROL), "private, max-age=10");
        assert_eq!(dimensions(&r.body), Some((w, h)));
    }
}

#[tokio::test]
async fn svg_overlays_names_with_legend_thresholds_and_bands() {
    let app = spawn_app().await;
    let (_, token) = app.enroll("web-1", "web").await;
    app.feed(&token, "cpu.busy_pct", 40.0).await;
    app.feed(&token, "cpu.user_pct", 20.0).await;
    // One day: 1 min rows, so the min–max band is drawn.
    let r = app
        .get(
            "/api/v1/graph.svg?host=web-1&name=cpu.busy_pct&name=cpu.user_pct&from=-1d&title=CPU",
            Some(&app.viewer),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header(header::CONTENT_TYPE), "image/svg+xml");
    let svg = r.text();
    assert!(svg.contains("cpu.busy_pct") && svg.contains("cpu.user_pct"));
    assert!(svg.contains("<polygon"), "band missing");
    // The rule's threshold is near the data (max 50 %): 80 % is drawn.
    assert!(svg.contains("warning 80 %"), "{svg}");
    assert!(svg.contains(">\nCPU\n</text>"));
}

#[tokio::test]
async fn group_graphs_aggregate_or_split_per_member() {
    let app = spawn_app().await;
    for (i, name) in ["web-1", "web-2"].iter().enumerate() {
        let (_, token) = app.enroll(name, "web").await;
        app.feed(&token, "cpu.busy_pct", 20.0 * (i + 1) as f64)
            .await;
    }
    let r = app
        .get(
            "/api/v1/graph.svg?group=web&agg=max&name=cpu.busy_pct",
            Some(&app.viewer),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(
        r.text().contains("max cpu.busy_pct (2 hosts)"),
        "{}",
        r.text()
    );
    let r = app
        .get(
            "/api/v1/graph.svg?group=web&name=cpu.busy_pct&per_host=1",
            Some(&app.viewer),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let svg = r.text();
    assert!(svg.contains("web-1 cpu.busy_pct") && svg.contains("web-2 cpu.busy_pct"));
}

#[tokio::test]
async fn bad_parameters_are_400_and_no_auth_is_401() {
    let app = spawn_app().await;
    let (_, token) = app.enroll("web-1", "web").await;
    app.feed(&token, "cpu.busy_pct", 40.0).await;
    let base = "/api/v1/graph.png?host=web-1&name=cpu.busy_pct";
    for bad in [
        "&width=10",
        "&width=100000",
        "&height=0",
        "&height=abc",
        "&cf=median",
        "&utc_offset=5000",
        "&per_host=1",
        "&from=-1h&to=-2h",
        "&colour=red",
    ] {
        let r = app.get(&format!("{base}{bad}"), Some(&app.viewer)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.text());
        assert!(r.text().contains("\"bad_request\""), "{bad}: {}", r.text());
    }
    let r = app.get(base, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = app
        .get("/api/v1/graph.svg?host=nope&name=x", Some(&app.viewer))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // A series that does not exist (yet) is an empty graph, not an error.
    let r = app
        .get(
            "/api/v1/graph.svg?host=web-1&name=disk.used_pct",
            Some(&app.viewer),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text().contains("no data in this range"));
}

#[tokio::test]
async fn hostile_titles_and_hostnames_are_escaped_in_svg() {
    let app = spawn_app().await;
    let evil = "<script>alert(1)</script>";
    let (id, token) = app.enroll(evil, "web").await;
    app.feed(&token, "cpu.busy_pct", 40.0).await;
    let title = "%3Csvg%20onload%3Dalert(1)%3E%22%26%01";
    let r = app
        .get(
            &format!("/api/v1/graph.svg?host={id}&group=&name=cpu.busy_pct&title={title}")
                .replace("&group=", ""),
            Some(&app.viewer),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let svg = r.text();
    assert!(
        svg.contains("&lt;svg onload=alert(1)&gt;&quot;&amp;"),
        "{svg}"
    );
    assert!(!svg.contains("<svg onload") && !svg.contains('\u{1}'));
    assert!(r
        .header(header::CONTENT_SECURITY_POLICY)
        .contains("default-src 'none'"));
}

#[tokio::test]
async fn host_and_group_pages_escape_names_and_link_graphs() {
    let app = spawn_app().await;
    let evil = "<img/src=x/onerror=alert(1)>";
    let (id, token) = app.enroll(evil, "web.eu_1").await;
    app.feed(&token, "cpu.busy_pct", 40.0).await;

    let r = app.get(&format!("/hosts/{id}"), Some(&app.viewer)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let html = r.text();
    assert!(
        html.contains("&#60;img/src=x/onerror=alert(1)&#62;")
            || html.contains("&lt;img/src=x/onerror=alert(1)&gt;"),
        "{html}"
    );
    assert!(!html.contains(evil));
    assert!(
        html.contains(&format!("data-query=\"host={id}&#38;name=cpu.busy_pct"))
            || html.contains(&format!("data-query=\"host={id}&amp;name=cpu.busy_pct")),
        "{html}"
    );
    assert!(html.contains("/static/graphs.js"));
    assert!(html.contains("href=\"/groups/web.eu_1\""), "{html}");

    let r = app.get("/groups/web.eu_1", Some(&app.viewer)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let html = r.text();
    assert!(!html.contains(evil));
    assert!(html.contains(&format!("href=\"/hosts/{id}\"")));
    assert!(html.contains("agg=avg") && html.contains("per_host=1"));

    // The overview links both.
    let html = app.get("/", Some(&app.viewer)).await.text();
    assert!(html.contains(&format!("href=\"/hosts/{id}\"")));
    assert!(html.contains("href=\"/groups/web.eu_1\""));

    for path in ["/hosts/999", "/hosts/abc", "/groups/nope"] {
        let r = app.get(path, Some(&app.viewer)).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
    }
    // Without a session, pages send to the login page.
    let r = app.get(&format!("/hosts/{id}"), None).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
}
