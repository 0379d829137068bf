//! The Prometheus-compatible API through the router: Grafana's health check,
//! the envelope and error shapes, auth, and queries over imported samples.

mod common;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use base64::Engine;
use common::{now, spawn_app, Resp, TestApp};
use serde_json::{json, Value};

async fn form(app: &TestApp, path: &str, body: &str, auth: Option<String>) -> Resp {
    let mut b =
        Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(a) = auth {
        b = b.header(header::AUTHORIZATION, a);
    }
    app.send(b.body(Body::from(body.to_string())).unwrap())
        .await
}

fn basic(password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("grafana:{password}"))
    )
}

/// Two hosts of group web and one of db, a minute of cpu each for the last
/// 30 minutes (values = host base + minute index), plus one rate series.
async fn fleet(app: &TestApp) -> i64 {
    let end = now() / 60 * 60 - 60;
    let start = end - 30 * 60;
    for (host, group, base) in [
        ("web-1", "web", 10.0),
        ("web-2", "web", 20.0),
        ("db-1", "db", 50.0),
    ] {
        let points: Vec<Value> = (0..=180)
            .map(|i| {
                let t = start + i * 10;
                // Constant within each minute (t in (T-60, T] → minute T).
                let minute = (t + 59) / 60;
                json!([t, base + (minute % 7) as f64])
            })
            .collect();
        let body = json!({"host": host, "group": group, "series": [
            {"name": "cpu.busy_pct", "points": points},
            {"name": "net.rx_bytes_per_s", "labels": {"iface": "eth0"}, "points": points},
        ]});
        let r = app.post_json("/api/v1/import", &app.admin, &body).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    end
}

#[tokio::test]
async fn grafanas_health_check_answers_scalar_two() {
    let app = spawn_app().await;
    let r = form(
        &app,
        "/prometheus/api/v1/query",
        "query=1%2B1&time=4",
        Some(format!("Bearer {}", app.viewer)),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"status": "success", "data": {"resultType": "scalar", "result": [4, "2"]}})
    );
    // Then it asks for the build info.
    let r = app
        .get("/prometheus/api/v1/status/buildinfo", Some(&app.viewer))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["data"]["version"], "2.42.0");
    assert!(r.json()["data"].get("features").is_none());
}

#[tokio::test]
async fn auth_takes_bearer_or_basic_password_and_answers_401_in_the_envelope() {
    let app = spawn_app().await;
    let r = form(&app, "/prometheus/api/v1/query", "query=1", None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["status"], "error");
    assert_eq!(r.json()["errorType"], "unauthorized");
    let r = form(
        &app,
        "/prometheus/api/v1/query",
        "query=1",
        Some(basic("wrong")),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = form(
        &app,
        "/prometheus/api/v1/query",
        "query=1",
        Some(basic(&app.viewer)),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = form(
        &app,
        "/prometheus/api/v1/query",
        "query=1",
        Some(basic(&app.admin)),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = form(
        &app,
        "/prometheus/api/v1/query",
        "query=1",
        Some(format!("Bearer {}", app.enroll)),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.json()["status"], "error");
}

#[tokio::test]
async fn bad_input_is_bad_data_with_the_reason() {
    let app = spawn_app().await;
    let auth = Some(format!("Bearer {}", app.viewer));
    let cases = [
        (
            "/prometheus/api/v1/query",
            "query=sum(",
            "invalid parameter \"query\"",
        ),
        (
            "/prometheus/api/v1/query",
            "query=label_replace(up,\"a\",\"b\",\"c\",\"d\")",
            "label_replace",
        ),
        (
            "/prometheus/api/v1/query",
            "query=up%7Bhost%3D~%22(%22%7D",
            "invalid parameter \"query\"",
        ),
        (
            "/prometheus/api/v1/query",
            "query=up&time=yesterday",
            "cannot parse \"yesterday\" to a valid timestamp",
        ),
        (
            "/prometheus/api/v1/query_range",
            "query=up&start=10&end=5&step=1",
            "end timestamp must not be before start time",
        ),
        (
            "/prometheus/api/v1/query_range",
            "query=up&start=0&end=5&step=0",
            "zero or negative query resolution step widths are not accepted",
        ),
        (
            "/prometheus/api/v1/query_range",
            "query=up&start=0&end=5&step=-3",
            "zero or negative",
        ),
        (
            "/prometheus/api/v1/query_range",
            "query=up&start=0&end=20000&step=1",
            "exceeded maximum resolution of 11,000 points per timeseries",
        ),
        (
            "/prometheus/api/v1/query_range",
            "query=up&start=0&end=600&step=60",
            "before the oldest row the archives keep",
        ),
        (
            "/prometheus/api/v1/series",
            "",
            "no match[] parameter provided",
        ),
    ];
    for (path, body, want) in cases {
        let r = form(&app, path, body, auth.clone()).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{path} {body}: {}",
            r.text()
        );
        let j = r.json();
        assert_eq!(j["status"], "error");
        assert_eq!(j["errorType"], "bad_data");
        assert!(j["error"].as_str().unwrap().contains(want), "{body}: {j}");
    }
    // A body over the limit.
    let big = format!("query={}", "1".repeat(2 << 20));
    let r = form(&app, "/prometheus/api/v1/query", &big, auth.clone()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["errorType"], "bad_data");
    // Unknown endpoints answer in the envelope too.
    let r = app
        .get("/prometheus/api/v1/query_exemplars", Some(&app.viewer))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["status"], "error");
}

#[tokio::test]
async fn query_range_over_imported_samples_by_get_and_post() {
    let app = spawn_app().await;
    let end = fleet(&app).await;
    let start = end - 10 * 60;
    let q = format!("query=avg%20by%20(group)%20(cpu_busy_pct)&start={start}&end={end}&step=60");
    let post = form(
        &app,
        "/prometheus/api/v1/query_range",
        &q,
        Some(format!("Bearer {}", app.viewer)),
    )
    .await;
    let get = app
        .get(
            &format!("/prometheus/api/v1/query_range?{q}"),
            Some(&app.viewer),
        )
        .await;
    assert_eq!(post.status, StatusCode::OK, "{}", post.text());
    assert_eq!(post.json(), get.json());
    let j = post.json();
    assert_eq!(j["data"]["resultType"], "matrix");
    let result = j["data"]["result"].as_array().unwrap();
    assert_eq!(result.len(), 2, "{j}");
    assert_eq!(result[0]["metric"], json!({"group": "db"}));
    assert_eq!(result[1]["metric"], json!({"group": "web"}));
    let values = result[1]["values"].as_array().unwrap();
    assert_eq!(values.len(), 11);
    for v in values {
        let t = v[0].as_i64().unwrap();
        // The minute ending at t held base + (t/60 % 7): avg of 10 and 20 bases.
        let want = 15.0 + ((t / 60) % 7) as f64;
        assert_eq!(
            v[1].as_str().unwrap().parse::<f64>().unwrap(),
            want,
            "at {t}"
        );
    }
    // An instant query looks back 5 minutes: 4 minutes after the last row.
    let r = app
        .get(
            &format!(
                "/prometheus/api/v1/query?query=cpu_busy_pct%7Bhost%3D%22db-1%22%7D&time={}",
                end + 240
            ),
            Some(&app.viewer),
        )
        .await;
    let j = r.json();
    assert_eq!(j["data"]["resultType"], "vector");
    let res = &j["data"]["result"][0];
    assert_eq!(
        res["metric"],
        json!({"__name__": "cpu_busy_pct", "host": "db-1", "group": "db"})
    );
    assert_eq!(res["value"][0], json!(end + 240));
    let want = 50.0 + ((end / 60) % 7) as f64;
    assert_eq!(res["value"][1], json!(want.to_string()));
}

#[tokio::test]
async fn labels_values_series_and_metadata() {
    let app = spawn_app().await;
    fleet(&app).await;
    let v = app.viewer.clone();
    let r = app.get("/prometheus/api/v1/labels", Some(&v)).await.json();
    assert_eq!(r["data"], json!(["__name__", "group", "host", "iface"]));
    let r = app
        .get("/prometheus/api/v1/label/__name__/values", Some(&v))
        .await
        .json();
    assert_eq!(r["data"], json!(["cpu_busy_pct", "net_rx_bytes_per_s"]));
    let r = app
        .get("/prometheus/api/v1/label/host/values", Some(&v))
        .await
        .json();
    assert_eq!(r["data"], json!(["db-1", "web-1", "web-2"]));
    let r = app
        .get(
            "/prometheus/api/v1/label/host/values?match[]=cpu_busy_pct%7Bgroup%3D%22web%22%7D",
            Some(&v),
        )
        .await
        .json();
    assert_eq!(r["data"], json!(["web-1", "web-2"]));
    let r = form(
        &app,
        "/prometheus/api/v1/series",
        "match[]=%7B__name__%3D~%22net_.*%22%7D",
        Some(format!("Bearer {v}")),
    )
    .await
    .json();
    assert_eq!(r["data"].as_array().unwrap().len(), 3, "{r}");
    assert_eq!(r["data"][0]["iface"], "eth0");
    let r = app
        .get("/prometheus/api/v1/metadata", Some(&v))
        .await
        .json();
    assert_eq!(r["data"]["cpu_busy_pct"][0]["type"], "gauge");
    assert_eq!(r["data"]["cpu_busy_pct"][0]["unit"], "percent");
}

#[tokio::test]
async fn departed_hosts_stay_queryable_and_the_series_cap_holds() {
    let app = spawn_app_with_cap().await;
    fleet(&app).await;
    // Delete nothing: a host that stops reporting keeps its series until it
    // expires, so a query over its history still answers.
    let r = app
        .get(
            "/prometheus/api/v1/query?query=count(cpu_busy_pct)",
            Some(&app.viewer),
        )
        .await
        .json();
    assert_eq!(r["data"]["result"][0]["value"][1], "3", "{r}");
    let r = app
        .get(
            "/prometheus/api/v1/query?query=%7B__name__%3D~%22.%2B%22%7D",
            Some(&app.viewer),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.json()["error"].as_str().unwrap().contains("max_series"),
        "{}",
        r.text()
    );
}

async fn spawn_app_with_cap() -> TestApp {
    common::spawn_app_with("[prometheus]\nmax_series = 4\n").await
}
