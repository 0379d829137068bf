//! The evaluator on a fixture source: rows of 60 s, as the 1-minute archive
//! gives them.

use super::*;
use crate::prometheus::parse::parse;
use crate::prometheus::source::selects;

const W: i64 = 60;

struct Fixture {
    series: Vec<(LabelSet, Rows)>,
}

impl Source for Fixture {
    async fn select(
        &self,
        matchers: &[Matcher],
        limit: usize,
    ) -> Result<Vec<(i64, LabelSet)>, PromError> {
        Ok(self
            .series
            .iter()
            .enumerate()
            .filter(|(_, (l, _))| selects(matchers, l))
            .map(|(i, (l, _))| (i as i64, l.clone()))
            .take(limit + 1)
            .collect())
    }
    fn width(&self, _ids: &[i64], _from: i64, _to: i64, _step: Option<i64>) -> i64 {
        W
    }
    async fn rows(&self, id: i64, width: i64, from: i64, to: i64) -> Result<Rows, PromError> {
        assert_eq!(width, W);
        assert_eq!(from % W, 0);
        Ok(self.series[id as usize]
            .1
            .iter()
            .filter(|(t, _)| *t > from && *t <= to)
            .copied()
            .collect())
    }
}

fn labels(pairs: &[(&str, &str)]) -> LabelSet {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Rows labelled 60, 120, … with the given values.
fn rows(values: &[Option<f64>]) -> Rows {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| ((i as i64 + 1) * W, *v))
        .collect()
}

fn fleet() -> Fixture {
    let cpu = |host: &str, group: &str, v: [f64; 10]| {
        (
            labels(&[
                ("__name__", "cpu_busy_pct"),
                ("host", host),
                ("group", group),
            ]),
            rows(&v.map(Some)),
        )
    };
    Fixture {
        series: vec![
            cpu("a", "web", [1., 2., 3., 4., 5., 6., 7., 8., 9., 10.]),
            cpu("b", "web", [3., 4., 5., 6., 7., 8., 9., 10., 11., 12.]),
            cpu("c", "db", [50.; 10]),
            // A group's own aggregate: only a selector naming `agg` sees it.
            (
                labels(&[
                    ("__name__", "cpu_busy_pct"),
                    ("group", "web"),
                    ("agg", "avg"),
                ]),
                rows(&[Some(2.0); 10]),
            ),
            (
                labels(&[
                    ("__name__", "net_rx_bytes_per_s"),
                    ("host", "a"),
                    ("iface", "eth0"),
                ]),
                rows(&[
                    Some(100.),
                    Some(200.),
                    None,
                    Some(300.),
                    Some(400.),
                    Some(500.),
                    Some(600.),
                    Some(700.),
                    Some(800.),
                    Some(900.),
                ]),
            ),
            (
                labels(&[("__name__", "mem_used_bytes"), ("host", "a")]),
                rows(&[
                    Some(10.),
                    Some(20.),
                    Some(30.),
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    Some(100.),
                ]),
            ),
        ],
    }
}

fn limits() -> PrometheusSection {
    PrometheusSection::default()
}

async fn run(src: &Fixture, q: &str, range: Range) -> (Value, Vec<String>) {
    let l = limits();
    let mut ev = Evaluator::new(src, range, &l);
    let v = ev.eval(&parse(q).unwrap()).await.unwrap();
    (v, ev.warnings)
}

async fn err(src: &Fixture, q: &str, range: Range) -> PromError {
    let l = limits();
    let mut ev = Evaluator::new(src, range, &l);
    ev.eval(&parse(q).unwrap()).await.unwrap_err()
}

/// Grafana's aligned range over rows 60..=600 at 60 s.
fn aligned() -> Range {
    Range {
        start_ms: 60_000,
        end_ms: 600_000,
        step_ms: 60_000,
    }
}

fn vector(v: Value) -> Vec<Series> {
    match v {
        Value::Vector(v) => v,
        other => panic!("not a vector: {other:?}"),
    }
}

fn scalar(v: Value) -> Vec<f64> {
    match v {
        Value::Scalar(v) => v,
        other => panic!("not a scalar: {other:?}"),
    }
}

fn one(v: Value) -> Vec<Option<f64>> {
    let mut v = vector(v);
    assert_eq!(v.len(), 1, "{v:?}");
    v.remove(0).values
}

fn at(vals: &[Option<f64>], t: i64) -> Option<f64> {
    vals[((t - 60) / 60) as usize]
}

#[tokio::test]
async fn scalar_arithmetic_is_grafanas_health_check() {
    let f = fleet();
    let (v, _) = run(&f, "1+1", Range::instant(4000)).await;
    assert_eq!(scalar(v), vec![2.0]);
    assert_eq!(
        scalar(run(&f, "2 ^ 3 % 5", Range::instant(0)).await.0),
        vec![3.0]
    );
    assert_eq!(
        scalar(run(&f, "-(1 - 3) * 2", Range::instant(0)).await.0),
        vec![4.0]
    );
    assert_eq!(
        scalar(run(&f, "3 > bool 2", Range::instant(0)).await.0),
        vec![1.0]
    );
    assert_eq!(
        scalar(run(&f, "time()", Range::instant(4500)).await.0),
        vec![4.5]
    );
}

#[tokio::test]
async fn selectors_match_equal_not_equal_and_regexes_including_name() {
    let f = fleet();
    let count = |v: Value| vector(v).len();
    assert_eq!(count(run(&f, "cpu_busy_pct", aligned()).await.0), 3);
    assert_eq!(
        count(run(&f, r#"cpu_busy_pct{group="web"}"#, aligned()).await.0),
        2
    );
    assert_eq!(
        count(run(&f, r#"cpu_busy_pct{group!="web"}"#, aligned()).await.0),
        1
    );
    assert_eq!(
        count(run(&f, r#"cpu_busy_pct{host=~"a|c"}"#, aligned()).await.0),
        2
    );
    assert_eq!(
        count(run(&f, r#"cpu_busy_pct{host!~"a.*"}"#, aligned()).await.0),
        2
    );
    assert_eq!(
        count(run(&f, r#"{__name__=~"cpu_.*|mem_.*"}"#, aligned()).await.0),
        4
    );
    assert_eq!(
        count(run(&f, r#"cpu_busy_pct{agg="avg"}"#, aligned()).await.0),
        1
    );
    assert_eq!(count(run(&f, "nothing_here", aligned()).await.0), 0);
}

#[tokio::test]
async fn a_range_query_on_aligned_steps_takes_each_row_and_keeps_gaps() {
    let f = fleet();
    let v = one(run(&f, r#"mem_used_bytes"#, aligned()).await.0);
    assert_eq!(v.len(), 10);
    assert_eq!(at(&v, 60), Some(10.0));
    assert_eq!(at(&v, 180), Some(30.0));
    // Unknown rows are gaps in a range query (one row of lookback only).
    assert_eq!(at(&v, 240), None);
    assert_eq!(at(&v, 600), Some(100.0));
    // Between rows (a step finer than the rows), the row ending before.
    let fine = Range {
        start_ms: 60_000,
        end_ms: 150_000,
        step_ms: 30_000,
    };
    let (v, warnings) = run(&f, "mem_used_bytes", fine).await;
    assert_eq!(one(v), vec![Some(10.0), Some(10.0), Some(20.0), Some(20.0)]);
    assert!(warnings[0].contains("not a multiple"), "{warnings:?}");
}

#[tokio::test]
async fn an_instant_query_looks_back_five_minutes() {
    let f = fleet();
    // Last known row at 180; unknown from 240 to 540.
    for (t, want) in [
        (180, Some(30.0)),
        (479, Some(30.0)),
        (480, None),
        (600, Some(100.0)),
    ] {
        let v = vector(run(&f, "mem_used_bytes", Range::instant(t * 1000)).await.0);
        assert_eq!(v.first().and_then(|s| s.values[0]), want, "at {t}");
    }
    // Between row labels, the row before.
    let v = one(run(&f, "mem_used_bytes", Range::instant(150_500)).await.0);
    assert_eq!(v, vec![Some(20.0)]);
}

#[tokio::test]
async fn aggregations_group_by_and_without() {
    let f = fleet();
    let v = vector(run(&f, "avg by (group) (cpu_busy_pct)", aligned()).await.0);
    assert_eq!(v.len(), 2);
    assert_eq!(v[0].labels, labels(&[("group", "db")]));
    assert_eq!(v[1].labels, labels(&[("group", "web")]));
    assert_eq!(at(&v[1].values, 60), Some(2.0));
    assert_eq!(at(&v[1].values, 600), Some(11.0));
    let s = |q: &'static str| async move { one(run(&fleet(), q, aligned()).await.0) };
    assert_eq!(at(&s("sum(cpu_busy_pct)").await, 60), Some(54.0));
    assert_eq!(at(&s("min(cpu_busy_pct)").await, 60), Some(1.0));
    assert_eq!(at(&s("max(cpu_busy_pct)").await, 60), Some(50.0));
    assert_eq!(at(&s("count(cpu_busy_pct)").await, 60), Some(3.0));
    let v = vector(
        run(&f, "sum without (host) (cpu_busy_pct)", aligned())
            .await
            .0,
    );
    assert_eq!(v[1].labels, labels(&[("group", "web")]));
    assert_eq!(at(&v[1].values, 60), Some(4.0));
}

#[tokio::test]
async fn topk_and_bottomk_keep_the_series_labels() {
    let f = fleet();
    let v = vector(run(&f, "topk(1, cpu_busy_pct)", aligned()).await.0);
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].labels["host"], "c");
    assert_eq!(v[0].labels["__name__"], "cpu_busy_pct");
    let v = vector(
        run(&f, "bottomk by (group) (1, cpu_busy_pct)", aligned())
            .await
            .0,
    );
    let hosts: Vec<&str> = v.iter().map(|s| s.labels["host"].as_str()).collect();
    assert_eq!(hosts, vec!["a", "c"]);
}

#[tokio::test]
async fn vector_arithmetic_matches_label_sets_and_drops_the_name() {
    let f = fleet();
    let v = vector(
        run(&f, r#"cpu_busy_pct{host="a"} * 2 + 1"#, aligned())
            .await
            .0,
    );
    assert!(!v[0].labels.contains_key("__name__"));
    assert_eq!(at(&v[0].values, 120), Some(5.0));
    let v = vector(run(&f, "cpu_busy_pct - cpu_busy_pct", aligned()).await.0);
    assert_eq!(v.len(), 3);
    assert!(v.iter().all(|s| s.values.iter().all(|x| *x == Some(0.0))));
    let v = vector(
        run(
            &f,
            r#"cpu_busy_pct{host="a"} / on(host) mem_used_bytes"#,
            aligned(),
        )
        .await
        .0,
    );
    assert_eq!(v[0].labels, labels(&[("host", "a")]));
    assert_eq!(at(&v[0].values, 60), Some(0.1));
    assert_eq!(at(&v[0].values, 240), None);
    // No partner: no result.
    assert!(vector(run(&f, "cpu_busy_pct + mem_used_bytes", aligned()).await.0).is_empty());
}

#[tokio::test]
async fn comparisons_filter_or_answer_bool() {
    let f = fleet();
    let v = vector(run(&f, r#"cpu_busy_pct{host="a"} > 5"#, aligned()).await.0);
    assert_eq!(v[0].labels["__name__"], "cpu_busy_pct");
    assert_eq!(at(&v[0].values, 300), None);
    assert_eq!(at(&v[0].values, 360), Some(6.0));
    let v = vector(
        run(&f, r#"cpu_busy_pct{host="a"} > bool 5"#, aligned())
            .await
            .0,
    );
    assert!(!v[0].labels.contains_key("__name__"));
    assert_eq!(at(&v[0].values, 300), Some(0.0));
    assert_eq!(at(&v[0].values, 360), Some(1.0));
    let v = vector(run(&f, r#"10 < cpu_busy_pct"#, aligned()).await.0);
    assert_eq!(v.len(), 2);
    let v = vector(
        run(
            &f,
            r#"cpu_busy_pct == bool on(host) cpu_busy_pct"#,
            aligned(),
        )
        .await
        .0,
    );
    assert_eq!(v.len(), 3);
}

#[tokio::test]
async fn windows_over_rows() {
    let f = fleet();
    let q = |s: &'static str| async move { one(run(&fleet(), s, aligned()).await.0) };
    // Rows 100, 200, unknown, 300, 400 …: windows of 3 rows.
    assert_eq!(
        at(&q("avg_over_time(net_rx_bytes_per_s[3m])").await, 240),
        Some(250.0)
    );
    assert_eq!(
        at(&q("max_over_time(net_rx_bytes_per_s[3m])").await, 240),
        Some(300.0)
    );
    assert_eq!(
        at(&q("min_over_time(net_rx_bytes_per_s[3m])").await, 240),
        Some(200.0)
    );
    assert_eq!(
        at(&q("sum_over_time(net_rx_bytes_per_s[3m])").await, 240),
        Some(500.0)
    );
    assert_eq!(
        at(&q("count_over_time(net_rx_bytes_per_s[3m])").await, 240),
        Some(2.0)
    );
    assert_eq!(
        at(&q("last_over_time(net_rx_bytes_per_s[3m])").await, 180),
        Some(200.0)
    );
    assert_eq!(
        at(&q("present_over_time(net_rx_bytes_per_s[1m])").await, 180),
        None
    );
    assert_eq!(
        at(&q("stddev_over_time(net_rx_bytes_per_s[3m])").await, 240),
        Some(50.0)
    );
    assert_eq!(
        at(&q("stdvar_over_time(net_rx_bytes_per_s[3m])").await, 240),
        Some(2500.0)
    );
    assert_eq!(
        at(
            &q("quantile_over_time(0.5, net_rx_bytes_per_s[5m])").await,
            300
        ),
        Some(250.0)
    );
    // Over rates: rate is the average, irate the newest row, increase the
    // average times the window.
    assert_eq!(
        at(&q("rate(net_rx_bytes_per_s[3m])").await, 240),
        Some(250.0)
    );
    assert_eq!(
        at(&q("irate(net_rx_bytes_per_s[3m])").await, 240),
        Some(300.0)
    );
    assert_eq!(
        at(&q("increase(net_rx_bytes_per_s[3m])").await, 240),
        Some(250.0 * 180.0)
    );
    // The name goes, except for last_over_time.
    let v = vector(run(&f, "rate(net_rx_bytes_per_s[3m])", aligned()).await.0);
    assert!(!v[0].labels.contains_key("__name__"));
    let v = vector(
        run(&f, "last_over_time(net_rx_bytes_per_s[3m])", aligned())
            .await
            .0,
    );
    assert!(v[0].labels.contains_key("__name__"));
}

#[tokio::test]
async fn windows_shorter_than_a_row_and_rate_of_a_gauge_warn() {
    let f = fleet();
    let (v, w) = run(&f, "avg_over_time(net_rx_bytes_per_s[30s])", aligned()).await;
    assert_eq!(at(&one(v), 120), Some(200.0));
    assert!(w[0].contains("shorter than the archive's rows"), "{w:?}");
    let (_, w) = run(&f, r#"rate(cpu_busy_pct{host="a"}[5m])"#, aligned()).await;
    assert!(w[0].contains("not stored as a per-second rate"), "{w:?}");
    let (_, w) = run(&f, "rate(net_rx_bytes_per_s[5m])", aligned()).await;
    assert!(w.is_empty(), "{w:?}");
}

#[tokio::test]
async fn value_functions() {
    let f = fleet();
    let q = |s: &'static str| async move { one(run(&fleet(), s, aligned()).await.0) };
    assert_eq!(
        at(&q(r#"abs(-cpu_busy_pct{host="a"})"#).await, 120),
        Some(2.0)
    );
    assert_eq!(
        at(&q(r#"clamp_min(cpu_busy_pct{host="a"}, 5)"#).await, 120),
        Some(5.0)
    );
    assert_eq!(
        at(&q(r#"clamp_max(cpu_busy_pct{host="a"}, 5)"#).await, 600),
        Some(5.0)
    );
    assert_eq!(
        at(&q(r#"clamp(cpu_busy_pct{host="a"}, 2, 3)"#).await, 600),
        Some(3.0)
    );
    assert_eq!(
        at(&q(r#"round(cpu_busy_pct{host="a"} / 4)"#).await, 120),
        Some(1.0)
    );
    assert_eq!(
        at(&q(r#"round(cpu_busy_pct{host="a"} / 3, 0.5)"#).await, 240),
        Some(1.5)
    );
    assert_eq!(at(&q("vector(7)").await, 60), Some(7.0));
    let v = scalar(
        run(&f, r#"scalar(cpu_busy_pct{host="c"})"#, aligned())
            .await
            .0,
    );
    assert_eq!(v[0], 50.0);
    let v = scalar(run(&f, "scalar(cpu_busy_pct)", aligned()).await.0);
    assert!(v[0].is_nan());
}

#[tokio::test]
async fn histogram_quantile_interpolates_in_exporter_buckets() {
    let bucket = |le: &str, v: f64| {
        (
            labels(&[
                ("__name__", "prom_req_seconds_bucket"),
                ("host", "a"),
                ("le", le),
            ]),
            rows(&[Some(v); 10]),
        )
    };
    let f = Fixture {
        series: vec![
            bucket("0.1", 10.0),
            bucket("0.5", 60.0),
            bucket("1", 90.0),
            bucket("+Inf", 100.0),
        ],
    };
    let v = vector(
        run(
            &f,
            "histogram_quantile(0.5, rate(prom_req_seconds_bucket[5m]))",
            aligned(),
        )
        .await
        .0,
    );
    assert_eq!(v[0].labels, labels(&[("host", "a")]));
    // Rank 50 falls in (0.1, 0.5] holding 50: 0.1 + 0.4 × 40/50.
    let x = at(&v[0].values, 300).unwrap();
    assert!((x - 0.42).abs() < 1e-12, "{x}");
    let v = vector(
        run(
            &f,
            "histogram_quantile(0.99, prom_req_seconds_bucket)",
            aligned(),
        )
        .await
        .0,
    );
    assert_eq!(at(&v[0].values, 60), Some(1.0));
}

#[tokio::test]
async fn limits_are_errors_not_allocations() {
    let f = fleet();
    let l = PrometheusSection {
        max_series: 2,
        ..limits()
    };
    let mut ev = Evaluator::new(&f, aligned(), &l);
    let e = ev.eval(&parse("cpu_busy_pct").unwrap()).await.unwrap_err();
    assert!(e.to_string().contains("more than 2 series"), "{e}");
    let l = PrometheusSection {
        max_samples: 25,
        ..limits()
    };
    let mut ev = Evaluator::new(&f, aligned(), &l);
    let e = ev.eval(&parse("cpu_busy_pct").unwrap()).await.unwrap_err();
    assert_eq!(e.error_type(), "execution");
    assert!(e.to_string().contains("too many samples"), "{e}");
    let e = err(&f, r#"cpu_busy_pct + on(group) cpu_busy_pct"#, aligned()).await;
    assert!(e.to_string().contains("many"), "{e}");
}
