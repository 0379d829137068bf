//! Rules, parsed once from `[[rules]]` (the server's file) or from the API's
//! JSON into typed [`Rule`]s; every problem is reported with its key, all at
//! once. Nothing downstream looks at a rule's raw text again.

use crate::query::Agg;
use metrolog_protocol::nagios::{CheckName, Range};
use metrolog_protocol::rrd::Cf;
use metrolog_protocol::syslog::Severity;
use metrolog_protocol::{Labels, SeriesName};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Longest rule name, in bytes.
pub const MAX_RULE_NAME: usize = 64;
/// Largest N of an M-of-N.
pub const MAX_DATAPOINTS: u32 = 100;

/// One `[[rules]]` entry of the file, or the JSON body of `POST /api/v1/rules`
/// (the same keys), before it is checked.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSection {
    pub name: String,
    pub kind: RuleKind,
    pub metric: Option<String>,
    pub group: Option<String>,
    pub host: Option<String>,
    pub scope: Option<String>,
    pub aggregation: Option<String>,
    #[serde(default, with = "crate::config::opt_duration")]
    pub window: Option<Duration>,
    pub cf: Option<String>,
    pub warning: Option<String>,
    pub critical: Option<String>,
    /// Where a threshold rule's ranges come from: `"rule"` (its own
    /// `warning`/`critical`, the default) or `"series"` (each series'
    /// description, e.g. a Munin field's `warning`/`critical`).
    pub limits: Option<String>,
    #[serde(rename = "for", default, with = "crate::config::opt_duration")]
    pub for_: Option<Duration>,
    #[serde(default, with = "crate::config::opt_duration")]
    pub keep_firing_for: Option<Duration>,
    pub datapoints: Option<String>,
    pub no_data: Option<String>,
    #[serde(default, with = "crate::config::opt_duration")]
    pub timeout: Option<Duration>,
    pub check: Option<String>,
    pub query: Option<String>,
    pub app: Option<String>,
    pub severity: Option<String>,
    /// Series labels a threshold rule's series must carry (`{ mount = "/" }`).
    pub labels: Option<metrolog_protocol::Labels>,
    /// Consecutive non-OK evaluations before the state is hard (default 1).
    pub max_attempts: Option<u32>,
    /// Shown in notifications (`annotations.description`).
    pub description: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleKind {
    Threshold,
    Liveness,
    Check,
    Log,
}

/// Where a rule comes from: the file is the source of truth for its rules,
/// the API refuses to change them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleSource {
    File,
    Api,
}

/// Whom a threshold rule judges: each host (one alarm per host and series),
/// or the group's aggregate (one alarm per group).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Host,
    Group,
}

/// What a threshold rule does when its window holds no data (SPEC §6: no
/// data never silently resolves).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoData {
    /// The alarm goes UNKNOWN ("no data for 1m").
    Missing,
    /// As if the worst threshold were crossed.
    Breaching,
    /// As if the value were fine (an explicit choice, never the default).
    NotBreaching,
    /// The alarm keeps its state.
    KeepLast,
}

impl NoData {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "missing" => Self::Missing,
            "breaching" => Self::Breaching,
            "not_breaching" => Self::NotBreaching,
            "keep_last" => Self::KeepLast,
            _ => return None,
        })
    }
}

/// Where a threshold rule's ranges come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Limits {
    /// The rule's own `warning` and `critical`.
    #[default]
    Rule,
    /// The `warning` and `critical` of each series' description (what a
    /// Munin plugin's `config` says of its field), in Munin's syntax; the
    /// rule's own, when given, apply to a series that has none.
    Series,
}

impl Limits {
    fn is_rule(&self) -> bool {
        *self == Self::Rule
    }
}

/// The ranges a series' description gives (`series_meta`), read.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SeriesLimits {
    pub warning: Option<Range>,
    pub critical: Option<Range>,
}

impl SeriesLimits {
    /// Reads Munin's `warning`/`critical` texts; one that cannot be read is
    /// left out (and named in the returned problems).
    pub fn parse(warning: Option<&str>, critical: Option<&str>) -> (Self, Vec<String>) {
        let mut problems = Vec::new();
        let mut read = |what: &str, t: Option<&str>| {
            t.and_then(|t| match munin_range(t) {
                Ok(r) => Some(r),
                Err(e) => {
                    problems.push(format!("{what} {t:?}: {e}"));
                    None
                }
            })
        };
        let out = Self {
            warning: read("warning", warning),
            critical: read("critical", critical),
        };
        (out, problems)
    }

    pub fn is_empty(&self) -> bool {
        self.warning.is_none() && self.critical.is_none()
    }
}

/// A Munin range as a Nagios one. Munin writes `max`, `min:max`, `min:` or
/// `:max` (munin-limits): a bare number is an upper bound only and an empty
/// side is unbounded, where Nagios reads `10` as `0:10` and an empty start
/// as 0. A text with `~` or `@` is Nagios syntax already and read as such.
pub fn munin_range(text: &str) -> Result<Range, metrolog_protocol::nagios::RangeError> {
    let t = text.trim();
    if t.contains(['~', '@']) {
        return Range::parse(t);
    }
    let nagios = match t.split_once(':') {
        None => format!("~:{t}"),
        Some((lo, hi)) if lo.trim().is_empty() => format!("~:{hi}"),
        Some(_) => t.to_string(),
    };
    Range::parse(&nagios)
}

/// The hosts a rule concerns: one host, the members of a group, or all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Selector {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

impl Selector {
    pub fn matches(&self, hostname: &str, group: Option<&str>) -> bool {
        self.host.as_deref().is_none_or(|h| h == hostname)
            && self.group.as_deref().is_none_or(|g| Some(g) == group)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Kind {
    Threshold {
        metric: SeriesName,
        /// Series labels that must match exactly (others are free: one alarm
        /// per series, e.g. per mount).
        #[serde(skip_serializing_if = "Labels::is_empty")]
        labels: Labels,
        scope: Scope,
        /// Across members, for `scope = group` (reads the group's recorded
        /// `metric{agg=…}` series).
        #[serde(serialize_with = "agg_name")]
        aggregation: Agg,
        /// Seconds; 0: each datapoint is judged alone.
        window: i64,
        cf: Cf,
    },
    Liveness {
        /// Seconds a host must be silent before the rule fires.
        timeout: i64,
    },
    Check {
        check: CheckName,
    },
    Log {
        /// Words that must all occur in the message (case-insensitive).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        words: Vec<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        app: Option<String>,
        /// Least severe level counted.
        #[serde(skip_serializing_if = "Option::is_none")]
        min_severity: Option<Severity>,
        window: i64,
    },
}

/// A rule, checked.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rule {
    pub name: String,
    pub source: RuleSource,
    #[serde(flatten)]
    pub kind: Kind,
    #[serde(flatten)]
    pub selector: Selector,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<Range>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub critical: Option<Range>,
    /// Threshold rules: where `warning` and `critical` come from.
    #[serde(skip_serializing_if = "Limits::is_rule")]
    pub limits: Limits,
    /// Seconds the condition must hold before the alarm fires.
    #[serde(rename = "for")]
    pub for_: i64,
    /// Seconds an alarm keeps firing after its condition cleared.
    pub keep_firing_for: i64,
    /// M of the last N datapoints must breach.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datapoints: Option<(u32, u32)>,
    pub no_data: NoData,
    /// Consecutive non-OK evaluations before the state is hard (threshold
    /// and log rules; checks bring their own).
    pub max_attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// What the parser needs to know of the server.
#[derive(Debug, Clone, Copy)]
pub struct RuleContext {
    /// The archives' base step: no window may be shorter.
    pub base_step: i64,
    /// `hosts.liveness_timeout`, the default of a liveness rule's `timeout`.
    pub liveness_timeout: i64,
}

fn agg_name<S: serde::Serializer>(a: &Agg, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(a.as_str())
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Checks a rule name: 1–64 bytes of A-Z a-z 0-9 `_ - .`
pub fn check_rule_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_RULE_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} must be 1 to {MAX_RULE_NAME} characters among A-Z a-z 0-9 _ - ."
        ))
    }
}

impl Rule {
    /// Parses one rule; `at` prefixes every problem (`rules[2] (cpu-high)`).
    pub fn parse(
        s: &RuleSection,
        source: RuleSource,
        ctx: RuleContext,
        at: &str,
    ) -> Result<Rule, Vec<String>> {
        let mut errs: Vec<String> = Vec::new();
        let mut err = |key: &str, msg: String| errs.push(format!("{at}.{key}: {msg}"));
        if let Err(e) = check_rule_name(&s.name) {
            err("name", e);
        }
        let range = |key: &str, text: &Option<String>, err: &mut dyn FnMut(&str, String)| {
            text.as_deref().and_then(|t| match Range::parse(t) {
                Ok(r) => Some(r),
                Err(e) => {
                    err(key, e.to_string());
                    None
                }
            })
        };
        let warning = range("warning", &s.warning, &mut err);
        let critical = range("critical", &s.critical, &mut err);
        let window = s.window.map(secs);
        if let Some(w) = window {
            if w < ctx.base_step {
                err(
                    "window",
                    format!(
                        "{w} s is shorter than the archives' base step ({} s): no window can hold less than one datapoint",
                        ctx.base_step
                    ),
                );
            }
        }
        let for_ = s.for_.map(secs).unwrap_or(0);
        let datapoints = s.datapoints.as_deref().and_then(|t| {
            let parsed = t.split_once('/').and_then(|(m, n)| {
                Some((m.trim().parse::<u32>().ok()?, n.trim().parse::<u32>().ok()?))
            });
            match parsed {
                Some((m, n)) if m >= 1 && m <= n && n <= MAX_DATAPOINTS => Some((m, n)),
                _ => {
                    err(
                        "datapoints",
                        format!("{t:?} must be \"M/N\" with 1 <= M <= N <= {MAX_DATAPOINTS}"),
                    );
                    None
                }
            }
        });
        let no_data = match s.no_data.as_deref() {
            None => NoData::Missing,
            Some(t) => NoData::parse(t).unwrap_or_else(|| {
                err(
                    "no_data",
                    format!("{t:?} is not one of missing, breaching, not_breaching, keep_last"),
                );
                NoData::Missing
            }),
        };
        if s.host.is_some() && s.group.is_some() {
            err(
                "host",
                "give `host` (one host) or `group` (its members), not both".into(),
            );
        }
        let limits = match s.limits.as_deref() {
            None | Some("rule") => Limits::Rule,
            Some("series") => Limits::Series,
            Some(o) => {
                err("limits", format!("{o:?} is not rule or series"));
                Limits::Rule
            }
        };
        if limits == Limits::Series && !matches!(s.kind, RuleKind::Threshold) {
            err(
                "limits",
                "only a threshold rule takes its ranges from its series".into(),
            );
        }
        if limits == Limits::Series && s.scope.as_deref() == Some("group") {
            err(
                "limits",
                "a group aggregate has no description of its own: limits = \"series\" needs scope = \"host\"".into(),
            );
        }
        let needs_thresholds = |err: &mut dyn FnMut(&str, String)| {
            if limits == Limits::Rule
                && warning.is_none()
                && critical.is_none()
                && s.warning.is_none()
                && s.critical.is_none()
            {
                err(
                    "critical",
                    "give `warning` and/or `critical` (Nagios ranges such as \"~:80\"), or limits = \"series\"".into(),
                );
            }
        };
        let no_key = |key: &str, given: bool, kind: &str, err: &mut dyn FnMut(&str, String)| {
            if given {
                err(key, format!("does not apply to a {kind} rule"));
            }
        };
        let kind = match s.kind {
            RuleKind::Threshold => {
                needs_thresholds(&mut err);
                let metric = match s.metric.as_deref() {
                    None => {
                        err("metric", "a threshold rule needs `metric`".into());
                        None
                    }
                    Some(m) => SeriesName::parse(m)
                        .map_err(|e| err("metric", e.to_string()))
                        .ok(),
                };
                let scope = match s.scope.as_deref() {
                    None | Some("host") => Scope::Host,
                    Some("group") => Scope::Group,
                    Some(o) => {
                        err("scope", format!("{o:?} is not host or group"));
                        Scope::Host
                    }
                };
                if scope == Scope::Group && s.group.is_none() {
                    err(
                        "group",
                        "a rule with scope = \"group\" needs `group`".into(),
                    );
                }
                let aggregation = match s.aggregation.as_deref() {
                    None => Agg::Avg,
                    Some(a) => Agg::parse(a).unwrap_or_else(|e| {
                        err("aggregation", e);
                        Agg::Avg
                    }),
                };
                let cf = match s.cf.as_deref() {
                    None => Cf::Avg,
                    Some(c) => Cf::parse(c).unwrap_or_else(|e| {
                        err("cf", e);
                        Cf::Avg
                    }),
                };
                if for_ > 0 && window.is_none() {
                    err(
                        "for",
                        "`for` needs a `window` (the span each datapoint consolidates)".into(),
                    );
                }
                let labels = s.labels.clone().unwrap_or_default();
                if let Err(e) = metrolog_protocol::series::validate_labels(&labels) {
                    err("labels", e.to_string());
                }
                metric.map(|metric| Kind::Threshold {
                    metric,
                    labels,
                    scope,
                    aggregation,
                    window: window.unwrap_or(0),
                    cf,
                })
            }
            RuleKind::Liveness => {
                no_key("warning", s.warning.is_some(), "liveness", &mut err);
                no_key("critical", s.critical.is_some(), "liveness", &mut err);
                no_key("metric", s.metric.is_some(), "liveness", &mut err);
                let timeout = s.timeout.map(secs).unwrap_or(ctx.liveness_timeout);
                if timeout < ctx.liveness_timeout {
                    err(
                        "timeout",
                        format!(
                            "{timeout} s is shorter than hosts.liveness_timeout ({} s), after which a silent host is down: lower hosts.liveness_timeout instead",
                            ctx.liveness_timeout
                        ),
                    );
                }
                Some(Kind::Liveness { timeout })
            }
            RuleKind::Check => {
                no_key("metric", s.metric.is_some(), "check", &mut err);
                match s.check.as_deref() {
                    None => {
                        err(
                            "check",
                            "a check rule needs `check` (the check's name)".into(),
                        );
                        None
                    }
                    Some(c) => CheckName::parse(c)
                        .map_err(|e| err("check", e.to_string()))
                        .ok()
                        .map(|check| Kind::Check { check }),
                }
            }
            RuleKind::Log => {
                needs_thresholds(&mut err);
                no_key("metric", s.metric.is_some(), "log", &mut err);
                if window.is_none() {
                    err(
                        "window",
                        "a log rule needs `window` (the span records are counted over)".into(),
                    );
                }
                let min_severity = s.severity.as_deref().and_then(|t| {
                    t.parse::<Severity>()
                        .map_err(|e| err("severity", e.to_string()))
                        .ok()
                });
                let words = s
                    .query
                    .as_deref()
                    .unwrap_or("")
                    .split_whitespace()
                    .map(str::to_lowercase)
                    .collect();
                Some(Kind::Log {
                    words,
                    app: s.app.clone(),
                    min_severity,
                    window: window.unwrap_or(0),
                })
            }
        };
        if !matches!(s.kind, RuleKind::Threshold) {
            no_key("scope", s.scope.is_some(), "non-threshold", &mut err);
            no_key(
                "datapoints",
                s.datapoints.is_some(),
                "non-threshold",
                &mut err,
            );
        }
        let max_attempts = s.max_attempts.unwrap_or(1);
        if max_attempts == 0 || max_attempts > 100 {
            err("max_attempts", format!("{max_attempts} must be 1 to 100"));
        }
        match kind {
            Some(kind) if errs.is_empty() => Ok(Rule {
                name: s.name.clone(),
                source,
                kind,
                selector: Selector {
                    host: s.host.clone(),
                    group: s.group.clone(),
                },
                warning,
                critical,
                limits,
                for_,
                keep_firing_for: s.keep_firing_for.map(secs).unwrap_or(0),
                datapoints,
                no_data,
                max_attempts,
                description: s.description.clone(),
            }),
            _ => Err(errs),
        }
    }

    /// Parses every rule of the file; names must be unique.
    pub fn parse_all(sections: &[RuleSection], ctx: RuleContext) -> Result<Vec<Rule>, Vec<String>> {
        let mut rules = Vec::new();
        let mut errs = Vec::new();
        for (i, s) in sections.iter().enumerate() {
            let at = format!("rules[{i}]");
            if sections[..i].iter().any(|o| o.name == s.name) {
                errs.push(format!("{at}.name: {:?} is used by another rule", s.name));
            }
            match Rule::parse(s, RuleSource::File, ctx, &at) {
                Ok(r) => rules.push(r),
                Err(e) => errs.extend(e),
            }
        }
        if errs.is_empty() {
            Ok(rules)
        } else {
            Err(errs)
        }
    }

    /// The state a value stands for: CRITICAL when the critical range alerts,
    /// else WARNING when the warning range does, else OK.
    pub fn judge(&self, value: f64) -> super::Status {
        self.judge_with(self.ranges(None), value)
    }

    /// The ranges that judge a series: the rule's own, or with
    /// `limits = "series"` those of the series' description (`series`),
    /// the rule's own standing in for a series that gives none.
    pub fn ranges(&self, series: Option<&SeriesLimits>) -> SeriesLimits {
        match (self.limits, series) {
            (Limits::Series, Some(s)) if !s.is_empty() => *s,
            _ => SeriesLimits {
                warning: self.warning,
                critical: self.critical,
            },
        }
    }

    /// The state `value` stands for against `ranges`.
    pub fn judge_with(&self, ranges: SeriesLimits, value: f64) -> super::Status {
        if ranges.critical.is_some_and(|r| r.alerts(value)) {
            super::Status::Critical
        } else if ranges.warning.is_some_and(|r| r.alerts(value)) {
            super::Status::Warning
        } else {
            super::Status::Ok
        }
    }

    /// The worst state this rule can raise (for `no_data = "breaching"`).
    pub fn worst(&self) -> super::Status {
        if self.critical.is_some() || self.limits == Limits::Series {
            super::Status::Critical
        } else {
            super::Status::Warning
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FileConfig;

    const CTX: RuleContext = RuleContext {
        base_step: 10,
        liveness_timeout: 30,
    };

    fn parse(toml: &str) -> Result<Vec<Rule>, Vec<String>> {
        let cfg = FileConfig::parse(toml).map_err(|e| e.0)?;
        Rule::parse_all(&cfg.rules, CTX)
    }

    #[test]
    fn the_spec_example_rules_parse() {
        let rules = parse(
            r#"
[[rules]]
name = "cpu-high"
kind = "threshold"
metric = "cpu.busy_pct"
group = "web"
scope = "host"
window = "1m"
cf = "avg"
warning = "~:80"
critical = "~:95"
for = "2m"
datapoints = "3/5"
no_data = "keep_last"

[[rules]]
name = "host-down"
kind = "liveness"
timeout = "30s"

[[rules]]
name = "disk"
kind = "check"
check = "disk_root"

[[rules]]
name = "auth-failures"
kind = "log"
query = "Failed password"
app = "sshd"
window = "5m"
warning = "~:10"
critical = "~:50"
"#,
        )
        .unwrap();
        assert_eq!(rules.len(), 4);
        let cpu = &rules[0];
        assert_eq!(cpu.for_, 120);
        assert_eq!(cpu.datapoints, Some((3, 5)));
        assert_eq!(cpu.judge(81.0), super::super::Status::Warning);
        assert_eq!(cpu.judge(95.5), super::super::Status::Critical);
        assert_eq!(cpu.judge(80.0), super::super::Status::Ok);
        assert!(
            matches!(rules[3].kind, Kind::Log { ref words, .. } if words == &["failed", "password"])
        );
    }

    #[test]
    fn munin_ranges_read_as_munin_means_them() {
        // (text, inside, outside): a bare number is an upper bound only.
        for (text, inside, outside) in [
            ("10", [-1e9, 10.0], [10.5, 1e9]),
            (":10", [-1e9, 10.0], [10.5, 11.0]),
            ("5:", [5.0, 1e9], [4.9, -1.0]),
            ("5:20", [5.0, 20.0], [4.9, 20.1]),
            ("-10:10", [-10.0, 0.0], [-10.1, 10.1]),
            ("@0:5", [-1.0, 6.0], [0.0, 5.0]),
        ] {
            let r = munin_range(text).unwrap();
            for v in inside {
                assert!(!r.alerts(v), "{text}: {v} is inside");
            }
            for v in outside {
                assert!(r.alerts(v), "{text}: {v} is outside");
            }
        }
        assert!(munin_range("lots").is_err());
        assert!(munin_range("").is_err());
        let (l, problems) = SeriesLimits::parse(Some("10"), Some("x:y"));
        assert!(l.warning.is_some() && l.critical.is_none());
        assert_eq!(problems.len(), 1, "{problems:?}");
    }

    #[test]
    fn series_limits_need_a_per_host_threshold_rule() {
        let ok = parse(
            "[[rules]]\nname = \"m\"\nkind = \"threshold\"\nmetric = \"munin.load.load\"\nlimits = \"series\"\n",
        )
        .unwrap();
        assert_eq!(ok[0].limits, Limits::Series);
        assert_eq!(ok[0].worst(), super::super::Status::Critical);
        let errs = parse(
            r#"
[[rules]]
name = "a"
kind = "threshold"
metric = "munin.load.load"
limits = "plugin"
[[rules]]
name = "b"
kind = "threshold"
metric = "munin.load.load"
group = "web"
scope = "group"
aggregation = "avg"
limits = "series"
[[rules]]
name = "c"
kind = "log"
query = "x"
window = "1m"
critical = "10"
limits = "series"
"#,
        )
        .unwrap_err()
        .join("\n");
        assert!(
            errs.contains("rules[0].limits: \"plugin\" is not rule or series"),
            "{errs}"
        );
        assert!(errs.contains("rules[1].limits:"), "{errs}");
        assert!(errs.contains("rules[2].limits:"), "{errs}");
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_key() {
        let errs = parse(
            r#"
[[rules]]
name = "bad range"
kind = "threshold"
metric = "cpu.busy_pct"
warning = "20:10"
window = "5s"
[[rules]]
name = "no-window"
kind = "threshold"
metric = "cpu.busy_pct"
critical = "90"
for = "1m"
[[rules]]
name = "x"
kind = "log"
[[rules]]
name = "dp"
kind = "threshold"
metric = "Bad"
critical = "1"
datapoints = "6/5"
"#,
        )
        .unwrap_err();
        let all = errs.join("\n");
        for want in [
            "rules[0].name:",
            "rules[0].warning: range \"20:10\": start 20 is greater than end 10",
            "rules[0].window: 5 s is shorter than the archives' base step (10 s)",
            "rules[1].for: `for` needs a `window`",
            "rules[2].window: a log rule needs `window`",
            "rules[2].critical: give `warning` and/or `critical`",
            "rules[3].metric:",
            "rules[3].datapoints:",
        ] {
            assert!(all.contains(want), "missing {want:?} in:\n{all}");
        }
        let unknown = parse("[[rules]]\nname = \"a\"\nkind = \"magic\"\n").unwrap_err();
        assert!(
            unknown.join("").contains("unknown variant `magic`"),
            "{unknown:?}"
        );
    }
}
