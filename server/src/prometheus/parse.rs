//! The PromQL subset Metrolog evaluates: `promql-parser` reads the query (its
//! AST only), and this adapter turns the AST into [`Expr`], refusing at once,
//! with the construct named, everything the evaluator does not implement.

use super::error::PromError;
use super::names::NAME;
use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{self as pp, token, LabelModifier, VectorMatchCardinality};

/// A query the evaluator can answer.
#[derive(Debug, Clone)]
pub enum Expr {
    Number(f64),
    String(String),
    /// An instant vector selector; `__name__` is one of the matchers.
    Selector(Selector),
    /// `f(selector[range])` and `quantile_over_time(φ, selector[range])`.
    Window {
        func: WindowFn,
        selector: Selector,
        range_ms: i64,
        param: Option<Box<Expr>>,
    },
    Func {
        func: Func,
        args: Vec<Expr>,
    },
    Aggregate {
        op: AggOp,
        /// k of topk/bottomk.
        param: Option<Box<Expr>>,
        grouping: Grouping,
        expr: Box<Expr>,
    },
    Binary {
        op: BinOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
        return_bool: bool,
        matching: Matching,
    },
    Neg(Box<Expr>),
}

#[derive(Debug, Clone)]
pub struct Selector {
    pub matchers: Vec<Matcher>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowFn {
    Avg,
    Min,
    Max,
    Sum,
    Count,
    Last,
    Present,
    Stddev,
    Stdvar,
    Quantile,
    /// Over series that are already per-second rates: their average.
    Rate,
    /// The newest row of the window.
    Irate,
    /// The average × the window's length.
    Increase,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    Abs,
    ClampMin,
    ClampMax,
    Clamp,
    Round,
    Scalar,
    Vector,
    Time,
    HistogramQuantile,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggOp {
    Sum,
    Avg,
    Min,
    Max,
    Count,
    Topk,
    Bottomk,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grouping {
    By(Vec<String>),
    Without(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matching {
    /// Same label set (less `__name__`) on both sides.
    Full,
    On(Vec<String>),
    Ignoring(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
}

impl BinOp {
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinOp::Eq | BinOp::Ne | BinOp::Gt | BinOp::Lt | BinOp::Ge | BinOp::Le
        )
    }
}

/// The functions of the subset, listed in errors.
pub const SUPPORTED_FUNCTIONS: &str =
    "abs, clamp, clamp_min, clamp_max, round, scalar, vector, time, \
histogram_quantile, rate, irate, increase, avg_over_time, min_over_time, max_over_time, \
sum_over_time, count_over_time, last_over_time, present_over_time, stddev_over_time, \
stdvar_over_time, quantile_over_time";

fn unsupported(what: String) -> PromError {
    PromError::BadData(format!(
        "invalid parameter \"query\": {what} is not supported by Metrolog's PromQL subset (docs/prometheus.md)"
    ))
}

/// Parses a query into the subset, or says what is wrong or unsupported.
pub fn parse(query: &str) -> Result<Expr, PromError> {
    let ast = pp::parse(query)
        .map_err(|e| PromError::BadData(format!("invalid parameter \"query\": {e}")))?;
    adapt(&ast)
}

fn adapt(e: &pp::Expr) -> Result<Expr, PromError> {
    Ok(match e {
        pp::Expr::NumberLiteral(n) => Expr::Number(n.val),
        pp::Expr::StringLiteral(s) => Expr::String(s.val.clone()),
        pp::Expr::Paren(p) => adapt(&p.expr)?,
        pp::Expr::Unary(u) => Expr::Neg(Box::new(adapt(&u.expr)?)),
        pp::Expr::VectorSelector(vs) => Expr::Selector(selector(vs)?),
        pp::Expr::MatrixSelector(_) => {
            return Err(PromError::BadData(
                "invalid parameter \"query\": a range vector (selector[range]) can only be an argument of a function such as rate() or avg_over_time()".into(),
            ))
        }
        pp::Expr::Subquery(_) => return Err(unsupported("a subquery (expr[range:step])".into())),
        pp::Expr::Extension(_) => return Err(unsupported("an extension expression".into())),
        pp::Expr::Aggregate(a) => aggregate(a)?,
        pp::Expr::Binary(b) => binary(b)?,
        pp::Expr::Call(c) => call(c)?,
    })
}

fn selector(vs: &pp::VectorSelector) -> Result<Selector, PromError> {
    if vs.offset.is_some() {
        return Err(unsupported("the offset modifier".into()));
    }
    if vs.at.is_some() {
        return Err(unsupported("the @ modifier".into()));
    }
    if !vs.matchers.or_matchers.is_empty() {
        return Err(unsupported("`or` inside a selector".into()));
    }
    let mut matchers = vs.matchers.matchers.clone();
    if let Some(name) = &vs.name {
        if !matchers.iter().any(|m| m.name == NAME) {
            matchers.push(Matcher::new(MatchOp::Equal, NAME, name));
        }
    }
    Ok(Selector { matchers })
}

fn labels(l: &promql_parser::label::Labels) -> Vec<String> {
    l.labels.clone()
}

fn aggregate(a: &pp::AggregateExpr) -> Result<Expr, PromError> {
    let op = match a.op.id() {
        token::T_SUM => AggOp::Sum,
        token::T_AVG => AggOp::Avg,
        token::T_MIN => AggOp::Min,
        token::T_MAX => AggOp::Max,
        token::T_COUNT => AggOp::Count,
        token::T_TOPK => AggOp::Topk,
        token::T_BOTTOMK => AggOp::Bottomk,
        _ => return Err(unsupported(format!("the aggregation {}", a.op))),
    };
    let grouping = match &a.modifier {
        None => Grouping::By(Vec::new()),
        Some(LabelModifier::Include(l)) => Grouping::By(labels(l)),
        Some(LabelModifier::Exclude(l)) => Grouping::Without(labels(l)),
    };
    let param = match &a.param {
        Some(p) => Some(Box::new(adapt(p)?)),
        None => None,
    };
    Ok(Expr::Aggregate {
        op,
        param,
        grouping,
        expr: Box::new(adapt(&a.expr)?),
    })
}

fn binary(b: &pp::BinaryExpr) -> Result<Expr, PromError> {
    let op = match b.op.id() {
        token::T_ADD => BinOp::Add,
        token::T_SUB => BinOp::Sub,
        token::T_MUL => BinOp::Mul,
        token::T_DIV => BinOp::Div,
        token::T_MOD => BinOp::Mod,
        token::T_POW => BinOp::Pow,
        token::T_EQLC => BinOp::Eq,
        token::T_NEQ => BinOp::Ne,
        token::T_GTR => BinOp::Gt,
        token::T_LSS => BinOp::Lt,
        token::T_GTE => BinOp::Ge,
        token::T_LTE => BinOp::Le,
        _ => return Err(unsupported(format!("the operator {}", b.op))),
    };
    let (return_bool, matching) = match &b.modifier {
        None => (false, Matching::Full),
        Some(m) => {
            if !matches!(m.card, VectorMatchCardinality::OneToOne) {
                return Err(unsupported("group_left/group_right".into()));
            }
            if m.fill_values.lhs.is_some() || m.fill_values.rhs.is_some() {
                return Err(unsupported("fill()".into()));
            }
            let matching = match &m.matching {
                None => Matching::Full,
                Some(LabelModifier::Include(l)) => Matching::On(labels(l)),
                Some(LabelModifier::Exclude(l)) => Matching::Ignoring(labels(l)),
            };
            (m.return_bool, matching)
        }
    };
    Ok(Expr::Binary {
        op,
        lhs: Box::new(adapt(&b.lhs)?),
        rhs: Box::new(adapt(&b.rhs)?),
        return_bool,
        matching,
    })
}

fn window_fn(name: &str) -> Option<WindowFn> {
    Some(match name {
        "avg_over_time" => WindowFn::Avg,
        "min_over_time" => WindowFn::Min,
        "max_over_time" => WindowFn::Max,
        "sum_over_time" => WindowFn::Sum,
        "count_over_time" => WindowFn::Count,
        "last_over_time" => WindowFn::Last,
        "present_over_time" => WindowFn::Present,
        "stddev_over_time" => WindowFn::Stddev,
        "stdvar_over_time" => WindowFn::Stdvar,
        "quantile_over_time" => WindowFn::Quantile,
        "rate" => WindowFn::Rate,
        "irate" => WindowFn::Irate,
        "increase" => WindowFn::Increase,
        _ => return None,
    })
}

fn call(c: &pp::Call) -> Result<Expr, PromError> {
    let name = c.func.name;
    if let Some(func) = window_fn(name) {
        let (param, matrix) = match (func, c.args.args.as_slice()) {
            (WindowFn::Quantile, [p, m]) => (Some(Box::new(adapt(p)?)), m),
            (_, [m]) => (None, m),
            _ => {
                return Err(PromError::BadData(format!(
                    "invalid parameter \"query\": wrong number of arguments to {name}()"
                )))
            }
        };
        if let pp::Expr::Subquery(_) = matrix.as_ref() {
            return Err(unsupported("a subquery (expr[range:step])".into()));
        }
        let pp::Expr::MatrixSelector(ms) = matrix.as_ref() else {
            return Err(unsupported(format!(
                "{name}() of anything but a range selector (metric[5m])"
            )));
        };
        let range_ms = i64::try_from(ms.range.as_millis()).unwrap_or(i64::MAX);
        if range_ms <= 0 {
            return Err(PromError::BadData(
                "invalid parameter \"query\": the range of a range selector must be positive"
                    .into(),
            ));
        }
        return Ok(Expr::Window {
            func,
            selector: selector(&ms.vs)?,
            range_ms,
            param,
        });
    }
    let func = match name {
        "abs" => Func::Abs,
        "clamp_min" => Func::ClampMin,
        "clamp_max" => Func::ClampMax,
        "clamp" => Func::Clamp,
        "round" => Func::Round,
        "scalar" => Func::Scalar,
        "vector" => Func::Vector,
        "time" => Func::Time,
        "histogram_quantile" => Func::HistogramQuantile,
        other => {
            return Err(unsupported(format!(
                "the function {other}() (supported: {SUPPORTED_FUNCTIONS})"
            )))
        }
    };
    let args = c
        .args
        .args
        .iter()
        .map(|a| adapt(a))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Expr::Func { func, args })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(q: &str) -> String {
        match parse(q) {
            Err(PromError::BadData(m)) => m,
            other => panic!("{q}: expected bad_data, got {other:?}"),
        }
    }

    #[test]
    fn health_check_and_selectors_parse() {
        assert!(matches!(
            parse("1+1").unwrap(),
            Expr::Binary { op: BinOp::Add, .. }
        ));
        let Expr::Selector(s) = parse(r#"cpu_busy_pct{host=~"web-.*",group!="db"}"#).unwrap()
        else {
            panic!()
        };
        assert_eq!(s.matchers.len(), 3);
        assert!(s
            .matchers
            .iter()
            .any(|m| m.name == NAME && m.value == "cpu_busy_pct"));
        let Expr::Selector(s) = parse(r#"{__name__=~"cpu_.*"}"#).unwrap() else {
            panic!()
        };
        assert_eq!(s.matchers.len(), 1);
    }

    #[test]
    fn aggregations_windows_and_bool_comparisons_parse() {
        let Expr::Aggregate { op, grouping, .. } = parse("avg by (group) (cpu_busy_pct)").unwrap()
        else {
            panic!()
        };
        assert_eq!(op, AggOp::Avg);
        assert_eq!(grouping, Grouping::By(vec!["group".into()]));
        let Expr::Window { func, range_ms, .. } = parse("rate(net_rx_bytes_per_s[5m])").unwrap()
        else {
            panic!()
        };
        assert_eq!((func, range_ms), (WindowFn::Rate, 300_000));
        let Expr::Binary { return_bool, .. } = parse("cpu_busy_pct > bool 50").unwrap() else {
            panic!()
        };
        assert!(return_bool);
        assert!(matches!(
            parse("topk(3, load_1m)").unwrap(),
            Expr::Aggregate {
                op: AggOp::Topk,
                param: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn unsupported_constructs_are_bad_data_naming_them() {
        assert!(bad("label_replace(up, \"a\", \"$1\", \"b\", \"(.*)\")").contains("label_replace"));
        assert!(bad("deriv(up[5m])").contains("deriv"));
        assert!(bad("stddev(up)").contains("stddev"));
        assert!(bad("up offset 5m").contains("offset"));
        assert!(bad("max_over_time(up[10m:1m])").contains("subquery"));
        assert!(bad("up and up").contains("and"));
        assert!(bad("up * on(host) group_left up").contains("group_left"));
        assert!(bad("up[5m]").contains("range vector"));
    }

    #[test]
    fn parse_errors_are_bad_data() {
        assert!(bad("sum(").starts_with("invalid parameter \"query\""));
        assert!(bad("nosuchfn(up)").contains("nosuchfn"));
        assert!(bad(r#"up{host=~"("}"#).starts_with("invalid parameter"));
    }
}
