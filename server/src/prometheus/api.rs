//! The routes under `/prometheus/api/v1/`: what Grafana's Prometheus data
//! source and `promtool query` call, with Prometheus' envelope, parameters and
//! error messages.

use super::error::PromError;
use super::eval::{Evaluator, Range, Series, Value, MAX_POINTS};
use super::names::{help_of, labels_of, metric_name, LabelSet, NAME};
use super::parse::{self, Expr};
use super::source::{selects, StoreSource};
use crate::http::auth::Operator;
use crate::http::error::AppError;
use crate::http::AppState;
use crate::store::now;
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use serde_json::{json, Map, Value as Json_};
use std::collections::{BTreeMap, BTreeSet};

/// Largest form body of a query (Grafana sends a few KiB at most).
pub const MAX_FORM_BYTES: usize = 1 << 20;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/prometheus/api/v1/query", get(query).post(query))
        .route(
            "/prometheus/api/v1/query_range",
            get(query_range).post(query_range),
        )
        .route("/prometheus/api/v1/labels", get(labels).post(labels))
        .route("/prometheus/api/v1/label/{name}/values", get(label_values))
        .route("/prometheus/api/v1/series", get(series).post(series))
        .route("/prometheus/api/v1/metadata", get(metadata))
        .route("/prometheus/api/v1/status/buildinfo", get(buildinfo))
        .route("/prometheus/{*rest}", get(not_found).post(not_found))
}

/// A reader: a viewer or admin token as `Authorization: Bearer`, or as the
/// password of HTTP basic auth (what Grafana's data source form offers), or
/// the dashboard's session.
#[derive(Debug)]
pub struct Reader;

impl FromRequestParts<AppState> for Reader {
    type Rejection = PromError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, PromError> {
        let basic_password = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
            .and_then(|(_, b64)| {
                base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .ok()
            })
            .and_then(|raw| String::from_utf8(raw).ok())
            .and_then(|up| up.split_once(':').map(|(_, p)| p.to_string()));
        let original = parts.headers.get(header::AUTHORIZATION).cloned();
        if let Some(password) = basic_password {
            let bearer = HeaderValue::from_str(&format!("Bearer {password}"))
                .map_err(|_| PromError::Unauthorized("malformed basic auth password".into()))?;
            parts.headers.insert(header::AUTHORIZATION, bearer);
        }
        let who = Operator::from_request_parts(parts, state).await;
        if let Some(v) = original {
            parts.headers.insert(header::AUTHORIZATION, v);
        }
        match who {
            Ok(_) => Ok(Reader),
            Err(AppError::Forbidden(m)) => Err(PromError::Forbidden(m)),
            Err(AppError::Unauthorized(_)) => Err(PromError::Unauthorized(
                "authentication required: send a viewer token as `Authorization: Bearer <token>` \
                 or as the password of HTTP basic auth"
                    .into(),
            )),
            Err(e) => Err(PromError::Internal(format!("{e:?}"))),
        }
    }
}

/// Parameters from the query string and, for a POST, the form body.
#[derive(Debug, Default)]
struct Params(Vec<(String, String)>);

impl Params {
    async fn read(req: Request) -> Result<Self, PromError> {
        let (parts, body) = req.into_parts();
        let mut pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(parts.uri.query().unwrap_or(""))
                .map_err(|e| PromError::BadData(format!("malformed query string: {e}")))?;
        if parts.method == Method::POST {
            let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
                .await
                .map_err(|_| {
                    PromError::BadData(format!(
                        "request body over {MAX_FORM_BYTES} bytes: a query form is much smaller"
                    ))
                })?;
            let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes)
                .map_err(|e| PromError::BadData(format!("malformed form body: {e}")))?;
            pairs.extend(form);
        }
        Ok(Params(pairs))
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// A timestamp as Prometheus takes it: float unix seconds or RFC 3339. In ms.
pub fn parse_time(name: &str, text: &str) -> Result<i64, PromError> {
    let err = || {
        PromError::BadData(format!(
            "invalid parameter \"{name}\": cannot parse \"{text}\" to a valid timestamp"
        ))
    };
    if let Ok(f) = text.parse::<f64>() {
        if !f.is_finite() || f.abs() > 1e13 {
            return Err(err());
        }
        return Ok((f * 1000.0).round() as i64);
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|d| d.timestamp_millis())
        .map_err(|_| err())
}

/// A duration as Prometheus takes it: float seconds or `1h30m`, `15s`, `500ms`. In ms.
pub fn parse_duration(name: &str, text: &str) -> Result<i64, PromError> {
    let err = || {
        PromError::BadData(format!(
            "invalid parameter \"{name}\": cannot parse \"{text}\" to a valid duration"
        ))
    };
    if let Ok(f) = text.parse::<f64>() {
        if !f.is_finite() || f.abs() > 1e13 {
            return Err(err());
        }
        return Ok((f * 1000.0).round() as i64);
    }
    let mut total: i64 = 0;
    let mut rest = text;
    if rest.is_empty() {
        return Err(err());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(err());
        }
        let n: i64 = rest[..digits].parse().map_err(|_| err())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let ms = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            "y" => 31_536_000_000,
            _ => return Err(err()),
        };
        rest = &rest[unit_len..];
        total = n
            .checked_mul(ms)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(err)?;
    }
    Ok(total)
}

/// A sample value as Prometheus writes it.
pub fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// A time in float seconds (an integer when whole).
pub fn fmt_time(ms: i64) -> Json_ {
    if ms % 1000 == 0 {
        json!(ms / 1000)
    } else {
        json!(ms as f64 / 1000.0)
    }
}

fn success(data: Json_, warnings: &[String]) -> Response {
    let mut body = json!({"status": "success", "data": data});
    if !warnings.is_empty() {
        body["warnings"] = json!(warnings);
    }
    Json(body).into_response()
}

fn metric(labels: &LabelSet) -> Json_ {
    Json_::Object(
        labels
            .iter()
            .map(|(k, v)| (k.clone(), Json_::String(v.clone())))
            .collect::<Map<_, _>>(),
    )
}

fn parse_query(p: &Params) -> Result<Expr, PromError> {
    let q = p.get("query").ok_or_else(|| {
        PromError::BadData("invalid parameter \"query\": no expression found in input".into())
    })?;
    parse::parse(q)
}

/// Evaluates with the time limit of `[prometheus] timeout`; refuses ranges
/// that lie wholly outside what the archives keep.
async fn evaluate(
    state: &AppState,
    expr: &Expr,
    range: Range,
) -> Result<(Value, Vec<String>), PromError> {
    let limits = &state.config.file.prometheus;
    let now_s = now();
    let source = StoreSource::new(&state.store, now_s);
    let oldest_ms = source.oldest() * 1000;
    let mut warnings = Vec::new();
    if range.end_ms < oldest_ms && reads_series(expr) {
        return Err(PromError::BadData(format!(
            "the range ends at {}, before the oldest row the archives keep ({}): nothing is stored that far back",
            range.end_ms / 1000,
            oldest_ms / 1000
        )));
    }
    if range.start_ms < oldest_ms && reads_series(expr) {
        warnings.push(format!(
            "the archives keep nothing before {}: earlier points are empty",
            oldest_ms / 1000
        ));
    }
    let mut ev = Evaluator::new(&source, range, limits);
    let value = tokio::time::timeout(limits.timeout, ev.eval(expr))
        .await
        .map_err(|_| {
            PromError::Timeout(format!(
                "query timed out in expression evaluation ([prometheus] timeout {:?})",
                limits.timeout
            ))
        })??;
    warnings.append(&mut ev.warnings);
    Ok((value, warnings))
}

/// Whether an expression reads stored series (`1+1` does not).
fn reads_series(e: &Expr) -> bool {
    match e {
        Expr::Number(_) | Expr::String(_) => false,
        Expr::Selector(_) | Expr::Window { .. } => true,
        Expr::Func { args, .. } => args.iter().any(reads_series),
        Expr::Aggregate { expr, .. } | Expr::Neg(expr) => reads_series(expr),
        Expr::Binary { lhs, rhs, .. } => reads_series(lhs) || reads_series(rhs),
    }
}

async fn query(_r: Reader, State(state): State<AppState>, req: Request) -> Response {
    match query_inner(&state, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn query_inner(state: &AppState, req: Request) -> Result<Response, PromError> {
    let p = Params::read(req).await?;
    let expr = parse_query(&p)?;
    let t = match p.get("time") {
        Some(t) => parse_time("time", t)?,
        None => now() * 1000,
    };
    let (value, warnings) = evaluate(state, &expr, Range::instant(t)).await?;
    let (kind, result) = match value {
        Value::Scalar(v) => ("scalar", json!([fmt_time(t), fmt_value(v[0])])),
        Value::String(s) => ("string", json!([fmt_time(t), s])),
        Value::Vector(vs) => (
            "vector",
            Json_::Array(
                vs.iter()
                    .filter_map(|s| {
                        s.values[0].map(|v| json!({"metric": metric(&s.labels), "value": [fmt_time(t), fmt_value(v)]}))
                    })
                    .collect(),
            ),
        ),
    };
    Ok(success(
        json!({"resultType": kind, "result": result}),
        &warnings,
    ))
}

async fn query_range(_r: Reader, State(state): State<AppState>, req: Request) -> Response {
    match query_range_inner(&state, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// Checks start, end and step as Prometheus does, with its messages.
pub fn range_of(start: &str, end: &str, step: &str) -> Result<Range, PromError> {
    let start_ms = parse_time("start", start)?;
    let end_ms = parse_time("end", end)?;
    if end_ms < start_ms {
        return Err(PromError::BadData(
            "invalid parameter \"end\": end timestamp must not be before start time".into(),
        ));
    }
    let step_ms = parse_duration("step", step)?;
    if step_ms <= 0 {
        return Err(PromError::BadData(
            "invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
        ));
    }
    if (end_ms - start_ms) / step_ms >= MAX_POINTS {
        return Err(PromError::BadData(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)".into(),
        ));
    }
    Ok(Range {
        start_ms,
        end_ms,
        step_ms,
    })
}

async fn query_range_inner(state: &AppState, req: Request) -> Result<Response, PromError> {
    let p = Params::read(req).await?;
    let expr = parse_query(&p)?;
    let need = |k: &str| {
        p.get(k).ok_or_else(|| {
            PromError::BadData(format!(
                "invalid parameter \"{k}\": cannot parse \"\" to a valid {}",
                if k == "step" { "duration" } else { "timestamp" }
            ))
        })
    };
    let range = range_of(need("start")?, need("end")?, need("step")?)?;
    let (value, warnings) = evaluate(state, &expr, range).await?;
    let series = match value {
        Value::Scalar(v) => vec![Series {
            labels: LabelSet::new(),
            values: v.into_iter().map(Some).collect(),
        }],
        Value::Vector(vs) => vs,
        Value::String(_) => return Err(PromError::BadData(
            "invalid expression type \"string\" for range query, must be Scalar or instant Vector"
                .into(),
        )),
    };
    let result: Vec<Json_> = series
        .iter()
        .filter(|s| s.values.iter().any(Option::is_some))
        .map(|s| {
            let values: Vec<Json_> = s
                .values
                .iter()
                .enumerate()
                .filter_map(|(i, v)| v.map(|v| json!([fmt_time(range.time(i)), fmt_value(v)])))
                .collect();
            json!({"metric": metric(&s.labels), "values": values})
        })
        .collect();
    Ok(success(
        json!({"resultType": "matrix", "result": result}),
        &warnings,
    ))
}

/// Label sets of the series `match[]` selects (all series without `match[]`),
/// bounded by `[prometheus] max_series`.
async fn matched(state: &AppState, p: &Params, required: bool) -> Result<Vec<LabelSet>, PromError> {
    let limits = &state.config.file.prometheus;
    let selectors = p.all("match[]");
    if selectors.is_empty() && required {
        return Err(PromError::BadData("no match[] parameter provided".into()));
    }
    let mut sets: Vec<Vec<promql_parser::label::Matcher>> = Vec::new();
    for s in &selectors {
        match parse::parse(s) {
            Ok(Expr::Selector(sel)) => sets.push(sel.matchers),
            Ok(_) => {
                return Err(PromError::BadData(format!(
                    "invalid parameter \"match[]\": {s:?} is not a series selector"
                )))
            }
            Err(PromError::BadData(m)) => {
                return Err(PromError::BadData(m.replacen(
                    "\"query\"",
                    "\"match[]\"",
                    1,
                )))
            }
            Err(e) => return Err(e),
        }
    }
    let mut out = Vec::new();
    let mut over = false;
    state
        .store
        .visit_catalog(None, |row| {
            let labels = labels_of(&row);
            if sets.is_empty() || sets.iter().any(|m| selects(m, &labels)) {
                out.push(labels);
            }
            over = out.len() > limits.max_series;
            !over
        })
        .await?;
    if over {
        return Err(PromError::BadData(format!(
            "more than {} series match ([prometheus] max_series): narrow match[]",
            limits.max_series
        )));
    }
    Ok(out)
}

async fn labels(
    _r: Reader,
    State(state): State<AppState>,
    req: Request,
) -> Result<Response, PromError> {
    let p = Params::read(req).await?;
    let names: BTreeSet<String> = if p.all("match[]").is_empty() {
        // Every series: only the names are kept, so no cap is needed.
        let mut names = BTreeSet::new();
        state
            .store
            .visit_catalog(None, |row| {
                names.extend(labels_of(&row).into_keys());
                true
            })
            .await?;
        names
    } else {
        matched(&state, &p, false)
            .await?
            .into_iter()
            .flat_map(BTreeMap::into_keys)
            .collect()
    };
    Ok(success(json!(names), &[]))
}

async fn label_values(
    _r: Reader,
    State(state): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Result<Response, PromError> {
    let p = Params::read(req).await?;
    let values: BTreeSet<String> = if p.all("match[]").is_empty() {
        if name == NAME {
            state
                .store
                .series_names()
                .await?
                .iter()
                .map(|n| metric_name(n))
                .collect()
        } else {
            let mut values = BTreeSet::new();
            state
                .store
                .visit_catalog(None, |row| {
                    if let Some(v) = labels_of(&row).remove(&name) {
                        values.insert(v);
                    }
                    true
                })
                .await?;
            values
        }
    } else {
        matched(&state, &p, false)
            .await?
            .into_iter()
            .filter_map(|mut l| l.remove(&name))
            .collect()
    };
    Ok(success(json!(values), &[]))
}

async fn series(
    _r: Reader,
    State(state): State<AppState>,
    req: Request,
) -> Result<Response, PromError> {
    let p = Params::read(req).await?;
    let sets = matched(&state, &p, true).await?;
    Ok(success(
        Json_::Array(sets.iter().map(metric).collect()),
        &[],
    ))
}

async fn metadata(
    _r: Reader,
    State(state): State<AppState>,
    req: Request,
) -> Result<Response, PromError> {
    let p = Params::read(req).await?;
    let limit = match p.get("limit") {
        Some(l) => l.parse::<i64>().map_err(|_| {
            PromError::BadData(format!(
                "invalid parameter \"limit\": {l:?} is not a number"
            ))
        })?,
        None => -1,
    };
    let mut out = Map::new();
    for name in state.store.series_names().await? {
        let prom = metric_name(&name);
        if p.get("metric").is_some_and(|m| m != prom) || out.contains_key(&prom) {
            continue;
        }
        if limit >= 0 && out.len() as i64 >= limit {
            break;
        }
        let (help, unit) = help_of(&name).unwrap_or(("", ""));
        let help = if help.is_empty() {
            format!("Metrolog series {name}")
        } else {
            help.to_string()
        };
        out.insert(prom, json!([{"type": "gauge", "help": help, "unit": unit}]));
    }
    Ok(success(Json_::Object(out), &[]))
}

async fn buildinfo(_r: Reader) -> Response {
    success(
        json!({
            // The Prometheus release whose API this one follows, so clients
            // that check versions enable what it has.
            "version": "2.42.0",
            "revision": format!("metrolog-{}", env!("CARGO_PKG_VERSION")),
            "branch": "metrolog",
            "buildUser": "metrolog",
            "buildDate": "",
            "goVersion": "",
        }),
        &[],
    )
}

async fn not_found() -> PromError {
    PromError::NotFound(
        "no such endpoint in Metrolog's Prometheus API (docs/prometheus.md lists them)".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_durations_read_as_prometheus_reads_them() {
        assert_eq!(parse_time("time", "4").unwrap(), 4000);
        assert_eq!(
            parse_time("time", "1700000000.123").unwrap(),
            1_700_000_000_123
        );
        assert_eq!(
            parse_time("time", "2023-11-14T22:13:20.5Z").unwrap(),
            1_700_000_000_500
        );
        let e = parse_time("start", "yesterday").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid parameter \"start\": cannot parse \"yesterday\" to a valid timestamp"
        );
        assert_eq!(parse_duration("step", "15").unwrap(), 15_000);
        assert_eq!(parse_duration("step", "0.5").unwrap(), 500);
        assert_eq!(parse_duration("step", "1h30m").unwrap(), 5_400_000);
        assert_eq!(parse_duration("step", "500ms").unwrap(), 500);
        assert!(parse_duration("step", "1x").is_err());
        assert!(parse_duration("step", "m").is_err());
    }

    #[test]
    fn values_and_times_are_formatted_as_prometheus_formats_them() {
        assert_eq!(fmt_value(2.0), "2");
        assert_eq!(fmt_value(0.1), "0.1");
        assert_eq!(fmt_value(f64::NAN), "NaN");
        assert_eq!(fmt_value(f64::INFINITY), "+Inf");
        assert_eq!(fmt_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(fmt_time(4000), json!(4));
        assert_eq!(fmt_time(1500), json!(1.5));
    }

    #[test]
    fn ranges_are_checked_with_prometheus_messages() {
        assert!(range_of("10", "5", "1")
            .unwrap_err()
            .to_string()
            .contains("end timestamp must not be before start time"));
        assert!(range_of("0", "10", "0")
            .unwrap_err()
            .to_string()
            .contains("zero or negative query resolution step widths are not accepted"));
        assert!(range_of("0", "10", "-5")
            .unwrap_err()
            .to_string()
            .contains("zero or negative"));
        assert!(range_of("0", "11000", "1")
            .unwrap_err()
            .to_string()
            .contains("exceeded maximum resolution of 11,000 points per timeseries"));
        let r = range_of("0", "10999", "1").unwrap();
        assert_eq!(r.len(), 11_000);
        // Grafana's aligned range: every step, both ends included.
        let r = range_of("1700000040", "1700003640", "60").unwrap();
        assert_eq!(r.len(), 61);
        assert_eq!(r.time(60), 1_700_003_640_000);
    }
}
