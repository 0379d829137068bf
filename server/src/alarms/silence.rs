//! Silences: label matchers and a time window. While one is in force, a
//! matching alarm tells nobody (its transitions are still recorded), e.g.
//! during a planned scale-in. Matchers have Alertmanager's four operators;
//! regular expressions are anchored, as Alertmanager anchors them.

use metrolog_protocol::Labels;
use serde::{Deserialize, Serialize};

/// Most matchers per silence.
pub const MAX_MATCHERS: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    #[serde(rename = "=")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
    #[serde(rename = "=~")]
    Re,
    #[serde(rename = "!~")]
    NotRe,
}

/// A matcher as written: `{"name": "group", "op": "=", "value": "web"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatcherSpec {
    pub name: String,
    #[serde(default = "default_op")]
    pub op: Op,
    pub value: String,
}

fn default_op() -> Op {
    Op::Eq
}

/// A matcher, its regex compiled.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub spec: MatcherSpec,
    re: Option<regex::Regex>,
}

impl Matcher {
    pub fn parse(spec: MatcherSpec) -> Result<Self, String> {
        if spec.name.is_empty() {
            return Err("a matcher needs a label name".into());
        }
        let re = match spec.op {
            Op::Re | Op::NotRe => Some(
                regex::Regex::new(&format!("^(?:{})$", spec.value))
                    .map_err(|e| format!("matcher {}: {e}", spec.name))?,
            ),
            _ => None,
        };
        Ok(Self { spec, re })
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        let v = labels
            .get(&self.spec.name)
            .map(String::as_str)
            .unwrap_or("");
        match (self.spec.op, &self.re) {
            (Op::Eq, _) => v == self.spec.value,
            (Op::Ne, _) => v != self.spec.value,
            (Op::Re, Some(re)) => re.is_match(v),
            (Op::NotRe, Some(re)) => !re.is_match(v),
            _ => false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Silence {
    pub id: i64,
    pub matchers: Vec<Matcher>,
    pub starts_at: i64,
    pub ends_at: i64,
}

impl Silence {
    /// Checks matchers and window; every problem at once.
    pub fn parse(
        id: i64,
        specs: Vec<MatcherSpec>,
        starts_at: i64,
        ends_at: i64,
    ) -> Result<Self, Vec<String>> {
        let mut errs = Vec::new();
        if specs.is_empty() {
            errs.push("matchers: give at least one (a silence of everything is a mistake)".into());
        }
        if specs.len() > MAX_MATCHERS {
            errs.push(format!("matchers: at most {MAX_MATCHERS}"));
        }
        if ends_at <= starts_at {
            errs.push("ends_at: must be after starts_at".into());
        }
        let mut matchers = Vec::new();
        for (i, s) in specs.into_iter().enumerate() {
            match Matcher::parse(s) {
                Ok(m) => matchers.push(m),
                Err(e) => errs.push(format!("matchers[{i}]: {e}")),
            }
        }
        if errs.is_empty() {
            Ok(Self {
                id,
                matchers,
                starts_at,
                ends_at,
            })
        } else {
            Err(errs)
        }
    }

    pub fn active(&self, now: i64) -> bool {
        self.starts_at <= now && now < self.ends_at
    }

    pub fn matches(&self, labels: &Labels, now: i64) -> bool {
        self.active(now) && self.matchers.iter().all(|m| m.matches(labels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, op: Op, value: &str) -> MatcherSpec {
        MatcherSpec {
            name: name.into(),
            op,
            value: value.into(),
        }
    }

    #[test]
    fn matchers_and_window() {
        let s = Silence::parse(
            1,
            vec![
                spec("group", Op::Eq, "web"),
                spec("alertname", Op::Re, "cpu|disk"),
            ],
            100,
            200,
        )
        .unwrap();
        let mut l = Labels::new();
        l.insert("group".into(), "web".into());
        l.insert("alertname".into(), "cpu".into());
        assert!(s.matches(&l, 150));
        assert!(!s.matches(&l, 99));
        assert!(!s.matches(&l, 200));
        l.insert("alertname".into(), "cpu-high".into());
        assert!(!s.matches(&l, 150), "regexes are anchored");
        let bad = Silence::parse(2, vec![spec("a", Op::Re, "(")], 200, 100).unwrap_err();
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert!(Silence::parse(3, vec![], 1, 2).is_err());
    }
}
