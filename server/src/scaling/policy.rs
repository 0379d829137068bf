//! `[[scaling.policies]]` and the API's policies: the raw keys
//! ([`PolicySection`]) checked once into a typed [`Policy`], every problem
//! reported with its key, all at once. Whether the group and its metric exist
//! is a separate check ([`check_known`]): it needs the store.

use crate::alarms::rules::{check_rule_name, RuleSource};
use crate::query::Agg;
use metrolog_protocol::SeriesName;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Defaults, named so docs and tests can point at them.
pub const DEFAULT_WINDOW: i64 = 60;
pub const DEFAULT_COOLDOWN: i64 = 300;
pub const DEFAULT_TOLERANCE: f64 = 0.1;
pub const DEFAULT_MIN_SIZE: u32 = 1;
pub const DEFAULT_MAX_SIZE: u32 = 1000;
pub const DEFAULT_REPLACEMENT_TIMEOUT: i64 = 600;
/// Longest window, `for`, cooldown, warmup or replacement timeout.
pub const MAX_DURATION: i64 = 86_400;
/// Largest N of an M-of-N.
pub const MAX_DATAPOINTS: u32 = 100;

/// One `[[scaling.policies]]` entry, or the JSON body of
/// `POST /api/v1/scaling/policies` (the same keys), before it is checked.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    pub name: String,
    pub group: String,
    /// A series name the group's members report (`cpu.busy_pct`).
    pub metric: String,
    /// Across the live members: `avg` (default), `max`, `sum` or `min`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregation: Option<String>,
    #[serde(
        default,
        with = "crate::config::opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub window: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_out_above: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_in_below: Option<f64>,
    #[serde(
        rename = "for",
        default,
        with = "crate::config::opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub for_: Option<Duration>,
    /// `"M/N"`: M of the last N rounds must be past the threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datapoints: Option<String>,
    #[serde(
        default,
        with = "crate::config::opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub cooldown: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<f64>,
    #[serde(
        default,
        with = "crate::config::opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub warmup: Option<Duration>,
    /// Members added (or removed) by a scale event without `target`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u32>,
    /// A heal is fired again when the group is still short this long after.
    #[serde(
        default,
        with = "crate::config::opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub replacement_timeout: Option<Duration>,
}

/// What a scale event asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Out,
    In,
}

impl Direction {
    pub fn event_type(self) -> &'static str {
        match self {
            Direction::Out => "scale_out",
            Direction::In => "scale_in",
        }
    }
}

/// A policy, checked. Times are seconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Policy {
    pub name: String,
    pub source: RuleSource,
    pub group: String,
    pub metric: SeriesName,
    #[serde(serialize_with = "agg_name")]
    pub aggregation: Agg,
    pub window: i64,
    pub scale_out_above: Option<f64>,
    pub scale_in_below: Option<f64>,
    #[serde(rename = "for")]
    pub for_: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datapoints: Option<(u32, u32)>,
    pub cooldown: i64,
    pub min_size: u32,
    pub max_size: u32,
    pub target: Option<f64>,
    pub tolerance: f64,
    pub warmup: i64,
    pub step: u32,
    pub replacement_timeout: i64,
}

fn agg_name<S: serde::Serializer>(a: &Agg, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(a.as_str())
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Checks a group name: 1 to 64 characters among A-Z a-z 0-9 _ - .
pub fn check_group_name(g: &str) -> Result<(), String> {
    if g.is_empty()
        || g.len() > 64
        || !g
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(format!(
            "{g:?} must be 1 to 64 characters among A-Z a-z 0-9 _ - ."
        ));
    }
    Ok(())
}

impl Policy {
    /// Checks one section; `at` prefixes every problem
    /// (`scaling.policies[0] (web-cpu)`). `base_step` is the archives' base
    /// step: the group's series hold one value per step, so no window is
    /// shorter.
    pub fn parse(
        s: &PolicySection,
        source: RuleSource,
        base_step: i64,
        at: &str,
    ) -> Result<Policy, Vec<String>> {
        let mut errs = Vec::new();
        let mut err = |key: &str, msg: String| errs.push(format!("{at}.{key}: {msg}"));
        if let Err(e) = check_rule_name(&s.name) {
            err("name", e);
        }
        if let Err(e) = check_group_name(&s.group) {
            err("group", e);
        }
        let metric = match SeriesName::parse(&s.metric) {
            Ok(m) => Some(m),
            Err(e) => {
                err("metric", e.to_string());
                None
            }
        };
        let aggregation = match s.aggregation.as_deref().unwrap_or("avg") {
            "avg" => Some(Agg::Avg),
            "max" => Some(Agg::Max),
            "sum" => Some(Agg::Sum),
            "min" => Some(Agg::Min),
            other => {
                err(
                    "aggregation",
                    format!("{other:?}: use avg, max, sum or min"),
                );
                None
            }
        };
        let window = s.window.map(secs).unwrap_or(DEFAULT_WINDOW.max(base_step));
        if window < base_step || window > MAX_DURATION {
            err(
                "window",
                format!(
                    "{window} s must be at least the archives' base step ({base_step} s: the group records one value per step) and at most 1d"
                ),
            );
        }
        let finite = |key: &str, v: Option<f64>, err: &mut dyn FnMut(&str, String)| {
            if v.is_some_and(|v| !v.is_finite()) {
                err(key, "must be a finite number".into());
            }
        };
        finite("scale_out_above", s.scale_out_above, &mut err);
        finite("scale_in_below", s.scale_in_below, &mut err);
        if let (Some(out), Some(inn)) = (s.scale_out_above, s.scale_in_below) {
            if inn >= out {
                err(
                    "scale_in_below",
                    format!(
                        "{inn} must be below scale_out_above ({out}): the band between them is what keeps the group from flapping"
                    ),
                );
            }
        }
        let for_ = s.for_.map(secs).unwrap_or(0);
        if for_ > MAX_DURATION {
            err("for", "at most 1d".into());
        }
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
        if s.datapoints.is_some() && s.for_.is_some() {
            err(
                "datapoints",
                "give `for` or `datapoints`, not both".to_string(),
            );
        }
        let cooldown = s.cooldown.map(secs).unwrap_or(DEFAULT_COOLDOWN);
        if cooldown > MAX_DURATION {
            err("cooldown", "at most 1d".into());
        }
        let min_size = s.min_size.unwrap_or(DEFAULT_MIN_SIZE);
        let max_size = s.max_size.unwrap_or(DEFAULT_MAX_SIZE.max(min_size));
        if max_size == 0 {
            err("max_size", "must be at least 1".into());
        }
        if min_size > max_size {
            err(
                "min_size",
                format!("{min_size} is more than max_size ({max_size})"),
            );
        }
        if let Some(t) = s.target {
            if !t.is_finite() || t <= 0.0 {
                err(
                    "target",
                    format!("{t} must be a positive number (desired_size = ceil(current × value / target))"),
                );
            }
        }
        let tolerance = s.tolerance.unwrap_or(DEFAULT_TOLERANCE);
        if !(0.0..1.0).contains(&tolerance) {
            err("tolerance", format!("{tolerance} must be in [0, 1)"));
        }
        if s.tolerance.is_some() && s.target.is_none() {
            err("tolerance", "only with `target`".into());
        }
        let warmup = s.warmup.map(secs).unwrap_or(0);
        if warmup > MAX_DURATION {
            err("warmup", "at most 1d".into());
        }
        let step = s.step.unwrap_or(1);
        if step == 0 {
            err("step", "must be at least 1".into());
        }
        if s.step.is_some() && s.target.is_some() {
            err(
                "step",
                "not with `target`, which computes desired_size itself".into(),
            );
        }
        let replacement_timeout = s
            .replacement_timeout
            .map(secs)
            .unwrap_or(DEFAULT_REPLACEMENT_TIMEOUT);
        if !(1..=MAX_DURATION).contains(&replacement_timeout) {
            err("replacement_timeout", "must be 1s to 1d".into());
        }
        match (metric, aggregation) {
            (Some(metric), Some(aggregation)) if errs.is_empty() => Ok(Policy {
                name: s.name.clone(),
                source,
                group: s.group.clone(),
                metric,
                aggregation,
                window,
                scale_out_above: s.scale_out_above,
                scale_in_below: s.scale_in_below,
                for_,
                datapoints,
                cooldown,
                min_size,
                max_size,
                target: s.target,
                tolerance,
                warmup,
                step,
                replacement_timeout,
            }),
            _ => Err(errs),
        }
    }

    /// Checks every section of the file; `Err` lists every problem.
    pub fn parse_all(
        sections: &[PolicySection],
        base_step: i64,
    ) -> Result<Vec<Policy>, Vec<String>> {
        let mut out = Vec::new();
        let mut errs = Vec::new();
        for (i, s) in sections.iter().enumerate() {
            let at = format!("scaling.policies[{i}] ({})", s.name);
            if sections[..i].iter().any(|o| o.name == s.name) {
                errs.push(format!("{at}.name: another policy has this name"));
            }
            match Policy::parse(s, RuleSource::File, base_step, &at) {
                Ok(p) => out.push(p),
                Err(e) => errs.extend(e),
            }
        }
        if errs.is_empty() {
            Ok(out)
        } else {
            Err(errs)
        }
    }

    /// The group series this policy reads: `metric{agg="…"}`.
    pub fn series_labels(&self) -> metrolog_protocol::Labels {
        let mut l = metrolog_protocol::Labels::new();
        l.insert(
            crate::groups::AGG_LABEL.to_string(),
            self.aggregation.as_str().to_string(),
        );
        l
    }
}

/// A policy stored by the API (JSON with the keys of `[[scaling.policies]]`).
pub fn parse_stored(json: &str, base_step: i64) -> Result<Policy, Vec<String>> {
    let section: PolicySection = serde_json::from_str(json).map_err(|e| vec![e.to_string()])?;
    Policy::parse(&section, RuleSource::Api, base_step, "policy")
}

/// What the store knows of the groups: group → the metric names its own
/// series record (empty when it recorded nothing yet).
pub type KnownGroups = BTreeMap<String, BTreeSet<String>>;

/// The checks that need to know the fleet: the group must exist (members,
/// recorded series, or an `[[agents]]` section of the file naming it) and,
/// once the group records series, the metric must be one of them.
pub fn check_known(p: &Policy, known: &KnownGroups, declared: &[String], at: &str) -> Vec<String> {
    let mut errs = Vec::new();
    match known.get(&p.group) {
        None if !declared.contains(&p.group) => errs.push(format!(
            "{at}.group: no group {:?} is known (no member enrolled, nothing recorded, no [[agents]] section names it)",
            p.group
        )),
        Some(names) if !names.is_empty() && !names.contains(p.metric.as_str()) => {
            let some: Vec<&str> = names.iter().map(String::as_str).take(12).collect();
            errs.push(format!(
                "{at}.metric: group {:?} does not record {:?} (it records: {}{})",
                p.group,
                p.metric.as_str(),
                some.join(", "),
                if names.len() > some.len() { ", …" } else { "" }
            ))
        }
        _ => {}
    }
    errs
}

/// A checked policy for tests: group `web`, a 10 s window, sizes 3–10, with
/// `extra` TOML lines added or replacing those keys.
#[cfg(test)]
pub(crate) fn test_policy(name: &str, metric: &str, extra: &str) -> Policy {
    let base = format!(
        "name = \"{name}\"\ngroup = \"web\"\nmetric = \"{metric}\"\nwindow = \"10s\"\nmin_size = 3\nmax_size = 10"
    );
    let mut text: String = base
        .lines()
        .filter(|l| {
            let key = l.split(' ').next().unwrap_or_default();
            !extra.lines().any(|e| e.starts_with(&format!("{key} ")))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    text.push_str(extra);
    let s: PolicySection = toml::from_str(&text).unwrap();
    Policy::parse(&s, crate::alarms::rules::RuleSource::File, 10, "p").unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Policy>, Vec<String>> {
        #[derive(Deserialize)]
        struct F {
            policies: Vec<PolicySection>,
        }
        let f: F = toml::from_str(text).unwrap();
        Policy::parse_all(&f.policies, 10)
    }

    #[test]
    fn defaults() {
        let p = parse("[[policies]]\nname = \"p\"\ngroup = \"web\"\nmetric = \"cpu.busy_pct\"\nscale_out_above = 75\n")
            .unwrap()
            .remove(0);
        assert_eq!(p.aggregation, Agg::Avg);
        assert_eq!(p.window, 60);
        assert_eq!(p.cooldown, 300);
        assert_eq!((p.min_size, p.max_size), (1, 1000));
        assert_eq!(p.tolerance, 0.1);
        assert_eq!(p.step, 1);
        assert_eq!(p.replacement_timeout, 600);
    }

    #[test]
    fn every_bad_input_is_refused_with_its_key_at_once() {
        let errs = parse(
            r#"
[[policies]]
name = "a"
group = "web"
metric = "cpu.busy_pct"
scale_out_above = 50
scale_in_below = 50
min_size = 5
max_size = 3
target = 0
aggregation = "median"
[[policies]]
name = "a"
group = "bad group"
metric = "CPU"
window = "1s"
for = "1m"
datapoints = "6/5"
tolerance = 1.5
"#,
        )
        .unwrap_err();
        let all = errs.join("\n");
        for want in [
            "policies[0] (a).scale_in_below: 50 must be below scale_out_above",
            "policies[0] (a).min_size: 5 is more than max_size (3)",
            "policies[0] (a).target: 0 must be a positive number",
            "policies[0] (a).aggregation",
            "policies[1] (a).name: another policy",
            "policies[1] (a).group",
            "policies[1] (a).metric",
            "policies[1] (a).window",
            "policies[1] (a).datapoints: \"6/5\"",
            "policies[1] (a).datapoints: give `for` or `datapoints`",
            "policies[1] (a).tolerance",
        ] {
            assert!(all.contains(want), "missing {want:?} in:\n{all}");
        }
    }

    #[test]
    fn unknown_groups_and_metrics_are_named() {
        let p = parse("[[policies]]\nname = \"p\"\ngroup = \"web\"\nmetric = \"cpu.busy_pct\"\n")
            .unwrap()
            .remove(0);
        let mut known = KnownGroups::new();
        assert!(check_known(&p, &known, &[], "p")[0].contains("no group \"web\""));
        assert!(check_known(&p, &known, &["web".into()], "p").is_empty());
        known.insert("web".into(), BTreeSet::new());
        assert!(
            check_known(&p, &known, &[], "p").is_empty(),
            "records nothing yet"
        );
        known.insert("web".into(), BTreeSet::from(["load.1m".to_string()]));
        let e = check_known(&p, &known, &[], "p");
        assert!(e[0].contains("does not record \"cpu.busy_pct\""), "{e:?}");
    }

    #[test]
    fn stored_policies_round_trip_through_json() {
        let p = parse("[[policies]]\nname = \"p\"\ngroup = \"web\"\nmetric = \"cpu.busy_pct\"\nwindow = \"2m\"\nfor = \"30s\"\n")
            .unwrap()
            .remove(0);
        let json = serde_json::json!({"name": "p", "group": "web", "metric": "cpu.busy_pct", "window": "2m", "for": "30s"});
        let back = parse_stored(&json.to_string(), 10).unwrap();
        assert_eq!(back.window, p.window);
        assert_eq!(back.for_, 30);
        assert_eq!(back.source, RuleSource::Api);
    }
}
