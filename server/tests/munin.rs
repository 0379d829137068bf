//! Router tests for Munin series descriptions: an agent's batch carries
//! what its plugins' `config` says (`Batch::series_meta`), the host page
//! lists the host's Munin graphs by category with Munin's titles, and the
//! graphs draw the plugins' warning/critical ranges.

mod common;

use axum::http::StatusCode;
use common::{now, spawn_app_with};
use metrolog_protocol::{
    Batch, BatchId, Bucket, Labels, SeriesBuckets, SeriesKey, SeriesMeta, SeriesName,
};

fn meta(name: &str, graph: &str, order: u32, title: &str, category: &str) -> SeriesMeta {
    SeriesMeta {
        name: SeriesName::parse(name).unwrap(),
        labels: Labels::new(),
        graph: graph.into(),
        order,
        title: Some(title.into()),
        category: Some(category.into()),
        vlabel: None,
        label: Some(name.rsplit('.').next().unwrap().into()),
        info: None,
        kind: Some("GAUGE".into()),
        warning: None,
        critical: None,
    }
}

#[tokio::test]
async fn munin_graphs_are_grouped_titled_and_judged_as_munin_does() {
    let app = spawn_app_with("").await;
    let (id, token) = app.enroll("web-1", "web").await;
    let t0 = (now() / 10) * 10 - 600;
    let buckets: Vec<Bucket> = (0..60)
        .map(|i| Bucket {
            ts: t0 + i * 10,
            avg: 8.0,
            min: 8.0,
            max: 8.0,
            last: 8.0,
            count: 1,
        })
        .collect();
    let mut load = meta("munin.load.load", "munin.load", 0, "Load average", "system");
    load.warning = Some("10".into());
    load.critical = Some("5:12".into());
    let batch = Batch {
        id: BatchId {
            stream: "munin-meta".into(),
            seq: 1,
        },
        sent_at: now(),
        logs: Vec::new(),
        checks: Vec::new(),
        metrics: vec![SeriesBuckets {
            key: SeriesKey::new("munin.load.load", Labels::new()).unwrap(),
            step: 10,
            buckets,
        }],
        series_meta: vec![
            load,
            meta(
                "munin.if_eth0.down",
                "munin.if_eth0",
                0,
                "eth0 traffic",
                "network",
            ),
            meta(
                "munin.if_eth0.up",
                "munin.if_eth0",
                1,
                "eth0 traffic",
                "network",
            ),
            meta("munin.cpu.user", "munin.cpu", 0, "CPU <usage>", "system"),
        ],
    };
    let r = app.post_batch(&token, &batch).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    let r = app.get(&format!("/hosts/{id}"), Some(&app.viewer)).await;
    assert_eq!(r.status, StatusCode::OK);
    let html = r.text();
    let munin = &html[html.find("<h2>Munin</h2>").expect("a Munin section")..];
    // Categories in name order; graphs titled as Munin titles them (and
    // escaped); one graph's fields together, in Munin's order.
    let net = munin.find("<h3>network</h3>").unwrap();
    let sys = munin.find("<h3>system</h3>").unwrap();
    assert!(net < sys);
    assert!(munin.contains("<figcaption>eth0 traffic</figcaption>"));
    assert!(
        munin.contains("CPU &#60;usage&#62;") || munin.contains("CPU &lt;usage&gt;"),
        "{munin}"
    );
    assert!(
        munin.contains(&format!(
            "data-query=\"host={id}&amp;name=munin.if_eth0.down&amp;name=munin.if_eth0.up\""
        )) || munin.contains(&format!(
            "data-query=\"host={id}&#38;name=munin.if_eth0.down&#38;name=munin.if_eth0.up\""
        )),
        "{munin}"
    );

    // The plugin's warning (10) and critical (5:12) are drawn.
    let r = app
        .get(
            &format!("/api/v1/graph.svg?host={id}&name=munin.load.load&from=-1h"),
            Some(&app.viewer),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let svg = r.text();
    assert!(svg.contains("warning 10"), "{svg}");
    assert!(
        svg.contains("critical 5") && svg.contains("critical 12"),
        "{svg}"
    );

    // A newer description replaces the older one.
    let mut again = batch.clone();
    again.id.seq = 2;
    again.metrics.clear();
    again.series_meta = vec![meta("munin.cpu.user", "munin.cpu", 0, "CPU usage", "cpu")];
    let r = app.post_batch(&token, &again).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let html = app
        .get(&format!("/hosts/{id}"), Some(&app.viewer))
        .await
        .text();
    assert!(html.contains("<h3>cpu</h3>") && html.contains("<figcaption>CPU usage</figcaption>"));
}
