//! `/metrics` families that need the running evaluator: the alarm evaluation
//! latency histogram counts the events behind a decision, and dropped
//! records show up under `metrolog_records_dropped_total` with their reason.

mod common;

use axum::http::StatusCode;
use common::{now, spawn_app_with};
use metrolog_protocol::nagios::{CheckName, CheckResult, CheckStatus};
use metrolog_protocol::{Batch, BatchId};

const RULE: &str = r#"
[[rules]]
name = "disk"
kind = "check"
check = "disk_root"
"#;

fn sample(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_decision_is_timed_from_its_commit_and_a_refused_check_is_counted_as_dropped() {
    let app = spawn_app_with(RULE).await;
    let (_, token) = app.enroll("db-1", "db").await;
    let check = |ts: i64| CheckResult {
        name: CheckName::parse("disk_root").unwrap(),
        status: CheckStatus::Critical,
        output: "DISK CRITICAL".into(),
        long_output: String::new(),
        perfdata: String::new(),
        ts,
        duration_ms: 5,
        attempt: 1,
        max_attempts: 1,
    };
    let before = app.get("/metrics", None).await.text();
    let counted_before = sample(&before, "metrolog_alarm_evaluation_latency_seconds_count");
    let batch = Batch {
        id: BatchId {
            stream: "s1".into(),
            seq: 1,
        },
        sent_at: now(),
        metrics: Vec::new(),
        logs: Vec::new(),
        // The second is from the far future: refused, the rest is stored.
        checks: vec![check(now()), check(now() + 86_400 * 365)],
        series_meta: Vec::new(),
    };
    assert_eq!(app.post_batch(&token, &batch).await.status, StatusCode::OK);
    app.wait_json("/api/v1/alarms", |v| v[0]["state"] == "CRITICAL")
        .await;

    // The observation follows the decision's commit, which the API may
    // show first.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (text, counted) = loop {
        let text = app.get("/metrics", None).await.text();
        let counted = sample(&text, "metrolog_alarm_evaluation_latency_seconds_count");
        if counted > counted_before {
            break (text, counted);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the batch's evaluation was never timed:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(
        sample(
            &text,
            "metrolog_alarm_evaluation_latency_seconds_bucket{le=\"+Inf\"}"
        ),
        counted
    );
    // In-process, commit to decision takes well under the top bound.
    assert_eq!(
        sample(
            &text,
            "metrolog_alarm_evaluation_latency_seconds_bucket{le=\"30\"}"
        ),
        counted
    );
    let sum = sample(&text, "metrolog_alarm_evaluation_latency_seconds_sum");
    assert!(sum > 0.0 && sum < 30.0 * counted, "{sum}");
    assert_eq!(
        sample(
            &text,
            "metrolog_records_dropped_total{kind=\"check\",source=\"agent\",reason=\"invalid\"}"
        ),
        1.0
    );
}
