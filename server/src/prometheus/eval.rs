//! The evaluator of the subset: every step of a range query at once, series by
//! series, on rows of the archive the step selects.
//!
//! What a selector answers at time t: the newest known row labelled T ≤ t
//! with T > t − L, L being the lookback (5 min) for an instant query and the
//! row width for a range query (so a gap in the archives is a gap in the
//! graph). A row labelled T covers (T − width, T] and holds the average of that
//! span, so on Grafana's aligned steps each point is the average of the step
//! before it. Windows (`f(x[r])`) take the rows labelled in (t − r, t].

use super::config::PrometheusSection;
use super::error::PromError;
use super::names::{LabelSet, NAME};
use super::parse::{AggOp, BinOp, Expr, Func, Grouping, Matching, Selector, WindowFn};
use crate::query::Rows;
use promql_parser::label::Matcher;
use std::collections::{BTreeMap, HashMap};

/// Most points per series of a range query (Prometheus' own limit).
pub const MAX_POINTS: i64 = 11_000;

/// Most rows read for one series (a long window at a fine step).
const MAX_ROWS_READ: i64 = 500_000;

/// Where series and their rows come from: the store, or a fixture in tests.
#[allow(async_fn_in_trait)]
pub trait Source {
    /// Series whose label sets match every matcher; at most `limit + 1`, so
    /// the caller sees that the limit was passed.
    async fn select(
        &self,
        matchers: &[Matcher],
        limit: usize,
    ) -> Result<Vec<(i64, LabelSet)>, PromError>;
    /// The row width a read of series `ids` over `(from, to]` at `step` gets
    /// (the archive's step, or `step` when it is a multiple of it); the finest
    /// archive reaching back to `from` with no step. Reach is counted from the
    /// newest update of `ids`, as `rrdtool fetch` counts it.
    fn width(&self, ids: &[i64], from: i64, to: i64, step: Option<i64>) -> i64;
    /// Rows of `width` labelled in `(from, to]`, both multiples of `width`.
    async fn rows(&self, id: i64, width: i64, from: i64, to: i64) -> Result<Rows, PromError>;
}

/// The times a query is evaluated at, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub start_ms: i64,
    pub end_ms: i64,
    /// 0 for an instant query.
    pub step_ms: i64,
}

impl Range {
    pub fn instant(t_ms: i64) -> Self {
        Range {
            start_ms: t_ms,
            end_ms: t_ms,
            step_ms: 0,
        }
    }

    pub fn is_instant(&self) -> bool {
        self.step_ms == 0
    }

    /// Steps evaluated (never 0: an instant query is one).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        if self.step_ms == 0 {
            1
        } else {
            ((self.end_ms - self.start_ms) / self.step_ms + 1) as usize
        }
    }

    pub fn time(&self, i: usize) -> i64 {
        self.start_ms + i as i64 * self.step_ms
    }
}

/// An instant vector's series over every step; `None` where it has no value.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: LabelSet,
    pub values: Vec<Option<f64>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar(Vec<f64>),
    Vector(Vec<Series>),
    String(String),
}

/// One evaluation: the range, limits, and the warnings it collects.
#[derive(Debug)]
pub struct Evaluator<'a, S> {
    pub source: &'a S,
    pub range: Range,
    pub limits: &'a PrometheusSection,
    pub warnings: Vec<String>,
    samples: usize,
}

fn bad(m: impl Into<String>) -> PromError {
    PromError::BadData(m.into())
}

fn div_ceil(a: i64, b: i64) -> i64 {
    -((-a).div_euclid(b))
}

impl<'a, S: Source> Evaluator<'a, S> {
    pub fn new(source: &'a S, range: Range, limits: &'a PrometheusSection) -> Self {
        Evaluator {
            source,
            range,
            limits,
            warnings: Vec::new(),
            samples: 0,
        }
    }

    fn warn(&mut self, w: String) {
        if !self.warnings.contains(&w) {
            self.warnings.push(w);
        }
    }

    pub async fn eval(&mut self, e: &Expr) -> Result<Value, PromError> {
        let n = self.range.len();
        Ok(match e {
            Expr::Number(v) => Value::Scalar(vec![*v; n]),
            Expr::String(s) => Value::String(s.clone()),
            Expr::Selector(sel) => Value::Vector(self.selector(sel, None).await?),
            Expr::Window {
                func,
                selector,
                range_ms,
                param,
            } => {
                let param = match param {
                    Some(p) => Some(self.scalar_arg(p, "quantile_over_time").await?),
                    None => None,
                };
                let series = self
                    .selector(selector, Some((*func, *range_ms, param)))
                    .await?;
                Value::Vector(series)
            }
            Expr::Neg(inner) => match Box::pin(self.eval(inner)).await? {
                Value::Scalar(v) => Value::Scalar(v.into_iter().map(|x| -x).collect()),
                Value::Vector(vs) => Value::Vector(
                    vs.into_iter()
                        .map(|mut s| {
                            s.labels.remove(NAME);
                            s.values.iter_mut().for_each(|v| *v = v.map(|x| -x));
                            s
                        })
                        .collect(),
                ),
                Value::String(_) => return Err(bad("unary minus of a string")),
            },
            Expr::Aggregate {
                op,
                param,
                grouping,
                expr,
            } => {
                let k = match param {
                    Some(p) => Some(self.scalar_arg(p, "topk/bottomk").await?),
                    None => None,
                };
                let Value::Vector(input) = Box::pin(self.eval(expr)).await? else {
                    return Err(bad("an aggregation needs an instant vector"));
                };
                Value::Vector(aggregate(*op, k.as_deref(), grouping, input, n))
            }
            Expr::Binary {
                op,
                lhs,
                rhs,
                return_bool,
                matching,
            } => {
                let l = Box::pin(self.eval(lhs)).await?;
                let r = Box::pin(self.eval(rhs)).await?;
                binary(*op, l, r, *return_bool, matching)?
            }
            Expr::Func { func, args } => Box::pin(self.func(*func, args)).await?,
        })
    }

    async fn scalar_arg(&mut self, e: &Expr, what: &str) -> Result<Vec<f64>, PromError> {
        match Box::pin(self.eval(e)).await? {
            Value::Scalar(v) => Ok(v),
            _ => Err(bad(format!("the parameter of {what} must be a scalar"))),
        }
    }

    async fn vector_arg(&mut self, e: &Expr, what: &str) -> Result<Vec<Series>, PromError> {
        match Box::pin(self.eval(e)).await? {
            Value::Vector(v) => Ok(v),
            _ => Err(bad(format!("{what} needs an instant vector"))),
        }
    }

    async fn func(&mut self, func: Func, args: &[Expr]) -> Result<Value, PromError> {
        let n = self.range.len();
        let arity = |want: std::ops::RangeInclusive<usize>| {
            if want.contains(&args.len()) {
                Ok(())
            } else {
                Err(bad(format!("wrong number of arguments to {func:?}")))
            }
        };
        Ok(match func {
            Func::Time => {
                arity(0..=0)?;
                Value::Scalar((0..n).map(|i| self.range.time(i) as f64 / 1000.0).collect())
            }
            Func::Vector => {
                arity(1..=1)?;
                let v = self.scalar_arg(&args[0], "vector()").await?;
                Value::Vector(vec![Series {
                    labels: LabelSet::new(),
                    values: v.into_iter().map(Some).collect(),
                }])
            }
            Func::Scalar => {
                arity(1..=1)?;
                let vs = self.vector_arg(&args[0], "scalar()").await?;
                Value::Scalar(
                    (0..n)
                        .map(|i| {
                            let mut vals = vs.iter().filter_map(|s| s.values[i]);
                            match (vals.next(), vals.next()) {
                                (Some(v), None) => v,
                                _ => f64::NAN,
                            }
                        })
                        .collect(),
                )
            }
            Func::Abs | Func::ClampMin | Func::ClampMax | Func::Clamp | Func::Round => {
                let (lo, hi) = match func {
                    Func::Abs => (0, 0),
                    Func::Round => (0, 1),
                    Func::Clamp => (2, 2),
                    _ => (1, 1),
                };
                arity(1 + lo..=1 + hi)?;
                let mut vs = self.vector_arg(&args[0], "this function").await?;
                let mut params = Vec::new();
                for a in &args[1..] {
                    params.push(self.scalar_arg(a, "this function").await?);
                }
                for s in &mut vs {
                    s.labels.remove(NAME);
                    for (i, v) in s.values.iter_mut().enumerate() {
                        let Some(x) = *v else { continue };
                        let p = |k: usize| params[k][i];
                        *v = match func {
                            Func::Abs => Some(x.abs()),
                            Func::ClampMin => Some(x.max(p(0))),
                            Func::ClampMax => Some(x.min(p(0))),
                            Func::Clamp if p(0) > p(1) => None,
                            Func::Clamp => Some(x.max(p(0)).min(p(1))),
                            _ => {
                                let to = if params.is_empty() { 1.0 } else { p(0) };
                                // As Prometheus: round half up, to the nearest multiple.
                                let inv = 1.0 / to;
                                Some((x * inv + 0.5).floor() / inv)
                            }
                        };
                    }
                }
                if func == Func::Clamp {
                    vs.retain(|s| s.values.iter().any(Option::is_some));
                }
                Value::Vector(vs)
            }
            Func::HistogramQuantile => {
                arity(2..=2)?;
                let phi = self.scalar_arg(&args[0], "histogram_quantile()").await?;
                let vs = self.vector_arg(&args[1], "histogram_quantile()").await?;
                let (out, missing_le) = histogram_quantile(&phi, vs, n);
                if missing_le {
                    self.warn(
                        "histogram_quantile(): series without an `le` label were ignored".into(),
                    );
                }
                Value::Vector(out)
            }
        })
    }

    /// Series of a selector at every step, or of a window function over it.
    async fn selector(
        &mut self,
        sel: &Selector,
        window: Option<(WindowFn, i64, Option<Vec<f64>>)>,
    ) -> Result<Vec<Series>, PromError> {
        let n = self.range.len();
        let max = self.limits.max_series;
        let found = self.source.select(&sel.matchers, max).await?;
        if found.len() > max {
            return Err(bad(format!(
                "the selector {} matches more than {max} series ([prometheus] max_series); narrow it with more labels",
                describe(sel)
            )));
        }
        self.samples = self.samples.saturating_add(found.len().saturating_mul(n));
        if self.samples > self.limits.max_samples {
            return Err(PromError::Execution(format!(
                "query processing would load too many samples into memory in query execution \
                 (more than {} points; [prometheus] max_samples): narrow the selector or raise the step",
                self.limits.max_samples
            )));
        }
        if found.is_empty() {
            return Ok(Vec::new());
        }
        // The read: which rows, at which width.
        let (t0, t1) = (self.range.start_ms, self.range.end_ms);
        let range_ms = window.as_ref().map_or(0, |w| w.1);
        let lookback_ms = i64::try_from(self.limits.lookback_delta.as_millis()).unwrap_or(300_000);
        let step_s = (!self.range.is_instant()).then(|| (self.range.step_ms / 1000).max(1));
        let reach_ms = if window.is_some() {
            range_ms
        } else if self.range.is_instant() {
            lookback_ms
        } else {
            0
        };
        let from_s = (t0 - reach_ms).div_euclid(1000);
        let to_s = div_ceil(t1, 1000);
        let ids: Vec<i64> = found.iter().map(|(id, _)| *id).collect();
        let width = self.source.width(&ids, from_s, to_s, step_s).max(1);
        let width_ms = width * 1000;
        // How far back a point looks: the lookback for an instant query, one
        // row for a range query; a window takes at least the row that covers t.
        let look_ms = if let Some((func, r, _)) = &window {
            if *r < width_ms {
                self.warn(format!(
                    "{}[{}s] is shorter than the archive's rows of {width}s: each point uses the row that covers it",
                    window_name(*func),
                    r / 1000
                ));
            }
            (*r).max(width_ms)
        } else if self.range.is_instant() {
            lookback_ms.max(width_ms)
        } else {
            if step_s.is_some_and(|s| s % width != 0) {
                self.warn(format!(
                    "step {}s is not a multiple of the archive's rows of {width}s: each point is the row ending at or before it",
                    self.range.step_ms as f64 / 1000.0
                ));
            }
            width_ms
        };
        let read_from = (t0 - look_ms).div_euclid(width_ms) * width;
        let read_to = t1.div_euclid(width_ms) * width;
        if (read_to - read_from) / width > MAX_ROWS_READ {
            return Err(bad(format!(
                "a window of {}s read at rows of {width}s needs more than {MAX_ROWS_READ} rows per series: shorten it or raise the step",
                range_ms / 1000
            )));
        }
        if let Some((func, _, _)) = &window {
            if matches!(func, WindowFn::Rate | WindowFn::Irate | WindowFn::Increase) {
                if let Some((_, l)) = found
                    .iter()
                    .find(|(_, l)| !l.get(NAME).is_some_and(|n| super::names::is_rate(n)))
                {
                    let name = l.get(NAME).cloned().unwrap_or_default();
                    self.warn(format!(
                        "{}() over {name}, which is not stored as a per-second rate: answered as over a rate (docs/prometheus.md)",
                        window_name(*func)
                    ));
                }
            }
        }
        let mut out = Vec::with_capacity(found.len());
        for (id, mut labels) in found {
            let rows = if read_to > read_from {
                self.source.rows(id, width, read_from, read_to).await?
            } else {
                Vec::new()
            };
            let values = match &window {
                None => sample(&rows, &self.range, look_ms),
                Some((func, r, param)) => {
                    if *func != WindowFn::Last {
                        labels.remove(NAME);
                    }
                    over_window(&rows, &self.range, look_ms, *r, *func, param.as_deref())
                }
            };
            if values.iter().any(Option::is_some) {
                out.push(Series { labels, values });
            }
        }
        Ok(out)
    }
}

fn window_name(f: WindowFn) -> &'static str {
    match f {
        WindowFn::Avg => "avg_over_time",
        WindowFn::Min => "min_over_time",
        WindowFn::Max => "max_over_time",
        WindowFn::Sum => "sum_over_time",
        WindowFn::Count => "count_over_time",
        WindowFn::Last => "last_over_time",
        WindowFn::Present => "present_over_time",
        WindowFn::Stddev => "stddev_over_time",
        WindowFn::Stdvar => "stdvar_over_time",
        WindowFn::Quantile => "quantile_over_time",
        WindowFn::Rate => "rate",
        WindowFn::Irate => "irate",
        WindowFn::Increase => "increase",
    }
}

fn describe(sel: &Selector) -> String {
    let parts: Vec<String> = sel
        .matchers
        .iter()
        .map(|m| format!("{}{}{:?}", m.name, m.op, m.value))
        .collect();
    format!("{{{}}}", parts.join(","))
}

/// The value at each step: the newest known row labelled in (t − look, t].
pub fn sample(rows: &Rows, range: &Range, look_ms: i64) -> Vec<Option<f64>> {
    let mut out = Vec::with_capacity(range.len());
    let mut j = 0; // rows before j are labelled ≤ the current t
    let mut newest: Option<(i64, f64)> = None;
    for i in 0..range.len() {
        let t = range.time(i);
        while j < rows.len() && rows[j].0 * 1000 <= t {
            if let Some(v) = rows[j].1 {
                newest = Some((rows[j].0 * 1000, v));
            }
            j += 1;
        }
        out.push(newest.and_then(|(at, v)| (at > t - look_ms).then_some(v)));
    }
    out
}

/// A window function at each step over the known rows labelled in (t − look, t].
pub fn over_window(
    rows: &Rows,
    range: &Range,
    look_ms: i64,
    range_ms: i64,
    func: WindowFn,
    param: Option<&[f64]>,
) -> Vec<Option<f64>> {
    let mut out = Vec::with_capacity(range.len());
    let (mut lo, mut hi) = (0, 0);
    for i in 0..range.len() {
        let t = range.time(i);
        while hi < rows.len() && rows[hi].0 * 1000 <= t {
            hi += 1;
        }
        while lo < hi && rows[lo].0 * 1000 <= t - look_ms {
            lo += 1;
        }
        let vals: Vec<f64> = rows[lo..hi].iter().filter_map(|r| r.1).collect();
        if vals.is_empty() {
            out.push(None);
            continue;
        }
        let len = vals.len() as f64;
        let mean = vals.iter().sum::<f64>() / len;
        let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / len;
        out.push(Some(match func {
            WindowFn::Avg | WindowFn::Rate => mean,
            WindowFn::Increase => mean * range_ms as f64 / 1000.0,
            WindowFn::Min => vals.iter().copied().fold(f64::INFINITY, f64::min),
            WindowFn::Max => vals.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            WindowFn::Sum => vals.iter().sum(),
            WindowFn::Count => len,
            WindowFn::Last | WindowFn::Irate => vals[vals.len() - 1],
            WindowFn::Present => 1.0,
            WindowFn::Stdvar => var,
            WindowFn::Stddev => var.sqrt(),
            WindowFn::Quantile => quantile(param.map_or(f64::NAN, |p| p[i]), vals),
        }));
    }
    out
}

/// Prometheus' `quantile`: linear interpolation between closest ranks.
fn quantile(q: f64, mut vals: Vec<f64>) -> f64 {
    if q.is_nan() || vals.is_empty() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    vals.sort_by(f64::total_cmp);
    let rank = q * (vals.len() - 1) as f64;
    let lower = rank.floor() as usize;
    let upper = (rank.ceil() as usize).min(vals.len() - 1);
    let w = rank - rank.floor();
    vals[lower] * (1.0 - w) + vals[upper] * w
}

/// The labels an aggregation groups by.
fn group_key(labels: &LabelSet, grouping: &Grouping) -> LabelSet {
    match grouping {
        Grouping::By(keep) => labels
            .iter()
            .filter(|(k, _)| keep.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        Grouping::Without(drop) => labels
            .iter()
            .filter(|(k, _)| k.as_str() != NAME && !drop.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

pub fn aggregate(
    op: AggOp,
    k: Option<&[f64]>,
    grouping: &Grouping,
    input: Vec<Series>,
    n: usize,
) -> Vec<Series> {
    let mut groups: BTreeMap<LabelSet, Vec<usize>> = BTreeMap::new();
    for (i, s) in input.iter().enumerate() {
        groups
            .entry(group_key(&s.labels, grouping))
            .or_default()
            .push(i);
    }
    if let (AggOp::Topk | AggOp::Bottomk, Some(k)) = (op, k) {
        let mut keep = vec![vec![false; n]; input.len()];
        for members in groups.values() {
            for (step, k) in k.iter().enumerate().take(n) {
                let k = if k.is_nan() { 0 } else { k.max(0.0) as usize };
                let mut at: Vec<(usize, f64)> = members
                    .iter()
                    .filter_map(|&m| input[m].values[step].map(|v| (m, v)))
                    .collect();
                // NaN sorts last for both.
                at.sort_by(|a, b| {
                    let (x, y) = (a.1, b.1);
                    match (x.is_nan(), y.is_nan()) {
                        (true, true) => std::cmp::Ordering::Equal,
                        (true, false) => std::cmp::Ordering::Greater,
                        (false, true) => std::cmp::Ordering::Less,
                        _ if op == AggOp::Topk => y.total_cmp(&x),
                        _ => x.total_cmp(&y),
                    }
                });
                for (m, _) in at.into_iter().take(k) {
                    keep[m][step] = true;
                }
            }
        }
        return input
            .into_iter()
            .zip(keep)
            .filter_map(|(mut s, keep)| {
                for (v, k) in s.values.iter_mut().zip(keep) {
                    if !k {
                        *v = None;
                    }
                }
                s.values.iter().any(Option::is_some).then_some(s)
            })
            .collect();
    }
    groups
        .into_iter()
        .filter_map(|(labels, members)| {
            let values: Vec<Option<f64>> = (0..n)
                .map(|step| {
                    let mut vals = members.iter().filter_map(|&m| input[m].values[step]);
                    let first = vals.next()?;
                    let (mut sum, mut min, mut max, mut count) = (first, first, first, 1.0);
                    for v in vals {
                        sum += v;
                        min = if v < min || min.is_nan() { v } else { min };
                        max = if v > max || max.is_nan() { v } else { max };
                        count += 1.0;
                    }
                    Some(match op {
                        AggOp::Sum => sum,
                        AggOp::Avg => sum / count,
                        AggOp::Min => min,
                        AggOp::Max => max,
                        AggOp::Count => count,
                        AggOp::Topk | AggOp::Bottomk => return None,
                    })
                })
                .collect();
            values
                .iter()
                .any(Option::is_some)
                .then_some(Series { labels, values })
        })
        .collect()
}

fn apply(op: BinOp, l: f64, r: f64) -> f64 {
    match op {
        BinOp::Add => l + r,
        BinOp::Sub => l - r,
        BinOp::Mul => l * r,
        BinOp::Div => l / r,
        BinOp::Mod => l % r,
        BinOp::Pow => l.powf(r),
        BinOp::Eq => f64::from(u8::from(l == r)),
        BinOp::Ne => f64::from(u8::from(l != r)),
        BinOp::Gt => f64::from(u8::from(l > r)),
        BinOp::Lt => f64::from(u8::from(l < r)),
        BinOp::Ge => f64::from(u8::from(l >= r)),
        BinOp::Le => f64::from(u8::from(l <= r)),
    }
}

/// `l op r` for one pair of values: `None` when a comparison without `bool`
/// filters the element out; `keep` is the value a filter keeps.
fn element(op: BinOp, l: f64, r: f64, return_bool: bool, keep: f64) -> Option<f64> {
    let v = apply(op, l, r);
    if op.is_comparison() && !return_bool {
        (v == 1.0).then_some(keep)
    } else {
        Some(v)
    }
}

fn matching_key(labels: &LabelSet, matching: &Matching) -> LabelSet {
    labels
        .iter()
        .filter(|(k, _)| match matching {
            Matching::Full => k.as_str() != NAME,
            Matching::On(on) => on.contains(k),
            Matching::Ignoring(ign) => k.as_str() != NAME && !ign.contains(k),
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

pub fn binary(
    op: BinOp,
    l: Value,
    r: Value,
    return_bool: bool,
    matching: &Matching,
) -> Result<Value, PromError> {
    let drop_name = !op.is_comparison() || return_bool;
    Ok(match (l, r) {
        (Value::Scalar(a), Value::Scalar(b)) => {
            Value::Scalar(a.iter().zip(&b).map(|(&x, &y)| apply(op, x, y)).collect())
        }
        (Value::Vector(vs), Value::Scalar(b)) => Value::Vector(
            vs.into_iter()
                .filter_map(|mut s| {
                    if drop_name {
                        s.labels.remove(NAME);
                    }
                    for (v, &y) in s.values.iter_mut().zip(&b) {
                        *v = v.and_then(|x| element(op, x, y, return_bool, x));
                    }
                    s.values.iter().any(Option::is_some).then_some(s)
                })
                .collect(),
        ),
        (Value::Scalar(a), Value::Vector(vs)) => Value::Vector(
            vs.into_iter()
                .filter_map(|mut s| {
                    if drop_name {
                        s.labels.remove(NAME);
                    }
                    for (v, &x) in s.values.iter_mut().zip(&a) {
                        *v = v.and_then(|y| element(op, x, y, return_bool, y));
                    }
                    s.values.iter().any(Option::is_some).then_some(s)
                })
                .collect(),
        ),
        (Value::Vector(ls), Value::Vector(rs)) => {
            let mut by_key: HashMap<LabelSet, Vec<usize>> = HashMap::new();
            for (i, s) in rs.iter().enumerate() {
                by_key
                    .entry(matching_key(&s.labels, matching))
                    .or_default()
                    .push(i);
            }
            // (matching key, step) pairs already answered: one-to-one only.
            let mut answered: HashMap<(LabelSet, usize), ()> = HashMap::new();
            let mut out = Vec::new();
            for s in ls {
                let key = matching_key(&s.labels, matching);
                let Some(partners) = by_key.get(&key) else {
                    continue;
                };
                let mut labels = match matching {
                    Matching::On(_) if drop_name => key.clone(),
                    Matching::Ignoring(ign) => {
                        let mut l = s.labels.clone();
                        l.retain(|k, _| !ign.contains(k));
                        l
                    }
                    _ => s.labels.clone(),
                };
                if drop_name {
                    labels.remove(NAME);
                }
                let mut values = Vec::with_capacity(s.values.len());
                for (step, lv) in s.values.iter().enumerate() {
                    let mut rv = partners.iter().filter_map(|&p| rs[p].values[step]);
                    let (r1, r2) = (rv.next(), rv.next());
                    let (Some(x), Some(y)) = (lv, r1) else {
                        values.push(None);
                        continue;
                    };
                    if r2.is_some() {
                        return Err(PromError::Execution(
                            "found duplicate series for the match group on the right hand-side of the operation: \
                             many-to-many matching not allowed: matching labels must be unique on one side"
                                .into(),
                        ));
                    }
                    if answered.insert((key.clone(), step), ()).is_some() {
                        return Err(PromError::Execution(
                            "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)".into(),
                        ));
                    }
                    values.push(element(op, *x, y, return_bool, *x));
                }
                if values.iter().any(Option::is_some) {
                    out.push(Series { labels, values });
                }
            }
            Value::Vector(out)
        }
        (Value::String(_), _) | (_, Value::String(_)) => {
            return Err(bad("binary operators do not apply to strings"))
        }
    })
}

/// `histogram_quantile(φ, buckets)`: per label set less `le`, the φ-quantile
/// interpolated linearly inside the bucket it falls in, as Prometheus does.
/// Returns the series and whether some input had no `le`.
pub fn histogram_quantile(phi: &[f64], input: Vec<Series>, n: usize) -> (Vec<Series>, bool) {
    let mut missing_le = false;
    // Per label set less `le`: (upper bound, values at each step).
    type Buckets = Vec<(f64, Vec<Option<f64>>)>;
    let mut groups: BTreeMap<LabelSet, Buckets> = BTreeMap::new();
    for s in input {
        let Some(le) = s.labels.get("le").and_then(|v| parse_le(v)) else {
            missing_le = true;
            continue;
        };
        let mut key = s.labels.clone();
        key.remove("le");
        key.remove(NAME);
        groups.entry(key).or_default().push((le, s.values));
    }
    let out = groups
        .into_iter()
        .filter_map(|(labels, mut buckets)| {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            let values: Vec<Option<f64>> = (0..n)
                .map(|step| {
                    let bs: Vec<(f64, f64)> = buckets
                        .iter()
                        .filter_map(|(le, v)| v[step].map(|c| (*le, c)))
                        .collect();
                    bucket_quantile(phi.get(step).copied().unwrap_or(f64::NAN), bs)
                })
                .collect();
            values
                .iter()
                .any(Option::is_some)
                .then_some(Series { labels, values })
        })
        .collect();
    (out, missing_le)
}

fn parse_le(v: &str) -> Option<f64> {
    match v {
        "+Inf" | "Inf" | "inf" | "+inf" => Some(f64::INFINITY),
        _ => v.parse().ok(),
    }
}

/// Prometheus' `bucketQuantile` over (upper bound, cumulative count) sorted by bound.
fn bucket_quantile(q: f64, mut buckets: Vec<(f64, f64)>) -> Option<f64> {
    if buckets.is_empty() {
        return None;
    }
    if q.is_nan() {
        return Some(f64::NAN);
    }
    if q < 0.0 {
        return Some(f64::NEG_INFINITY);
    }
    if q > 1.0 {
        return Some(f64::INFINITY);
    }
    if buckets[buckets.len() - 1].0 != f64::INFINITY || buckets.len() < 2 {
        return Some(f64::NAN);
    }
    // Counts must not decrease (rates of buckets can jitter).
    for i in 1..buckets.len() {
        if buckets[i].1 < buckets[i - 1].1 {
            buckets[i].1 = buckets[i - 1].1;
        }
    }
    let total = buckets[buckets.len() - 1].1;
    if total == 0.0 || total.is_nan() {
        return Some(f64::NAN);
    }
    let rank = q * total;
    let b = buckets
        .iter()
        .position(|(_, c)| *c >= rank)
        .unwrap_or(buckets.len() - 1);
    if b == buckets.len() - 1 {
        return Some(buckets[buckets.len() - 2].0);
    }
    if b == 0 && buckets[0].0 <= 0.0 {
        return Some(buckets[0].0);
    }
    let (mut start, mut count, mut rank) = (0.0, buckets[b].1, rank);
    let end = buckets[b].0;
    if b > 0 {
        start = buckets[b - 1].0;
        count -= buckets[b - 1].1;
        rank -= buckets[b - 1].1;
    }
    Some(start + (end - start) * (rank / count))
}

#[cfg(test)]
mod tests;
