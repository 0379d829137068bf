//! A host that just started shows its data on the graph pages at their
//! default range (6 h, read from the 1-minute archive) after its first batch,
//! not after its first complete minute; the live edge of an older host's
//! graph reaches its newest sample.

mod common;

use axum::http::StatusCode;
use common::{now, spawn_app_with, TestApp};
use metrolog_protocol::{Batch, BatchId, Bucket, Labels, SeriesBuckets, SeriesKey};

/// The pages' default range (static/graphs.js DEFAULT_SPAN), as they ask it.
const DEFAULT_SPAN: i64 = 6 * 3600;

async fn ship(app: &TestApp, token: &str, seq: u64, buckets: Vec<(i64, f64)>) {
    let batch = Batch {
        id: BatchId {
            stream: "fresh".into(),
            seq,
        },
        sent_at: now(),
        logs: Vec::new(),
        checks: Vec::new(),
        metrics: vec![SeriesBuckets {
            key: SeriesKey::new("cpu.busy_pct", Labels::new()).unwrap(),
            step: 10,
            buckets: buckets
                .into_iter()
                .map(|(ts, v)| Bucket {
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
    };
    let r = app.post_batch(token, &batch).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

/// Plot gutters of the graphs (static/graphs.js LEFT, RIGHT).
const LEFT: i64 = 72;
const RIGHT: i64 = 14;

async fn page_graph(app: &TestApp, host: i64, to: i64, width: i64) -> String {
    let r = app
        .get(
            &format!(
                "/api/v1/graph.svg?host={host}&name=cpu.busy_pct&from={}&to={to}&width={width}&height=250",
                to - DEFAULT_SPAN
            ),
            Some(&app.viewer),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r.text()
}

/// The x of the rightmost point of the series' line (the first colour).
fn line_end(svg: &str) -> Option<i64> {
    svg.lines()
        .filter(|l| l.starts_with("<polyline") && l.contains("stroke=\"#3D9A3A\""))
        .filter_map(|l| l.split("points=\"").nth(1))
        .flat_map(|p| p.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .filter_map(|xy| xy.split(',').next().and_then(|x| x.parse().ok()))
        .max()
}

#[tokio::test]
async fn a_just_started_host_has_a_line_after_its_first_batch() {
    let app = spawn_app_with("").await;
    let (host, token) = app.enroll("fresh-1", "web").await;
    let to = now() / 10 * 10;
    let empty = page_graph(&app, host, to, 800).await;
    assert!(empty.contains("no data in this range"), "{empty}");

    // One ship interval: a single 10 s bucket, in a minute not yet complete.
    ship(&app, &token, 1, vec![(to, 42.0)]).await;
    let svg = page_graph(&app, host, to, 800).await;
    assert!(
        !svg.contains("no data in this range"),
        "the first batch is not drawn at the default range:\n{svg}"
    );
    let end = line_end(&svg).unwrap_or_else(|| panic!("no line drawn:\n{svg}"));
    assert!(end > 700, "the point is at the right edge (now): x = {end}");
    // The API itself keeps rrdtool's choice: 1-minute rows, none complete.
    let q = app
        .get(
            &format!(
                "/api/v1/query?host={host}&name=cpu.busy_pct&from={}&to={to}",
                to - DEFAULT_SPAN
            ),
            Some(&app.viewer),
        )
        .await
        .json();
    assert_eq!(q["step"], 60, "{q}");
}

#[tokio::test]
async fn an_older_hosts_line_reaches_its_newest_sample() {
    let app = spawn_app_with("").await;
    let (host, token) = app.enroll("older-1", "web").await;
    let to = now() / 10 * 10;
    // Off the minute: the last complete 1-minute row is 50 s older.
    let newest = to / 60 * 60 - 10;
    // Two hours of 10 s buckets: the 1-minute rows exist up to the last
    // complete minute; the samples after it are the 10 s archive's only.
    let buckets: Vec<(i64, f64)> = (0..720)
        .map(|i| (newest - (719 - i) * 10, 10.0 + (i % 7) as f64))
        .collect();
    ship(&app, &token, 1, buckets).await;
    let width = 4000;
    let svg = page_graph(&app, host, to, width).await;
    let end = line_end(&svg).unwrap_or_else(|| panic!("no line drawn:\n{svg}"));
    let x = |t: i64| LEFT + (t - (to - DEFAULT_SPAN)) * (width - LEFT - RIGHT) / DEFAULT_SPAN;
    // 0.18 px a second: the newest sample and the last complete minute
    // (50 s before it) are 9 px apart.
    assert!(
        end >= x(newest) - 2,
        "the line stops at {end}, short of the newest sample at {} (the last complete minute is at {})",
        x(newest),
        x(newest - 50)
    );
}
