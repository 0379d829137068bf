//! Nagios threshold ranges, parsed once into [`Range`]. A value *alerts* when
//! it lies outside the range (or inside it, for a range written with `@`):
//!
//! | text | alerts when |
//! | --- | --- |
//! | `10` | v < 0 or v > 10 |
//! | `10:` | v < 10 |
//! | `~:10` | v > 10 |
//! | `10:20` | v < 10 or v > 20 |
//! | `@10:20` | 10 ≤ v ≤ 20 |
//!
//! The ends are inclusive (the guidelines: "the range is inclusive"), so
//! `~:80` does not alert at exactly 80.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RangeError {
    #[error("range is empty")]
    Empty,
    #[error("range {text:?}: {what:?} is not a number")]
    NotANumber { text: String, what: String },
    #[error("range {text:?}: start {start} is greater than end {end}")]
    Inverted { text: String, start: f64, end: f64 },
    #[error("range {0:?}: expected START:END, START:, ~:END, END or @START:END")]
    Syntax(String),
}

/// A parsed range: `start` / `end` are `None` for −∞ / +∞.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range {
    pub start: Option<f64>,
    pub end: Option<f64>,
    /// `@`: alert inside the range instead of outside.
    pub inside: bool,
}

impl Range {
    pub fn parse(text: &str) -> Result<Self, RangeError> {
        let t = text.trim();
        if t.is_empty() {
            return Err(RangeError::Empty);
        }
        let (inside, body) = match t.strip_prefix('@') {
            Some(rest) => (true, rest),
            None => (false, t),
        };
        let num = |s: &str| -> Result<f64, RangeError> {
            match s.trim().parse::<f64>() {
                Ok(v) if v.is_finite() => Ok(v),
                _ => Err(RangeError::NotANumber {
                    text: text.to_string(),
                    what: s.to_string(),
                }),
            }
        };
        let (start, end) = match body.split_once(':') {
            None => {
                // "10" means 0:10.
                if body.is_empty() {
                    return Err(RangeError::Syntax(text.to_string()));
                }
                (Some(0.0), Some(num(body)?))
            }
            Some((s, e)) => {
                if e.contains(':') || (s.trim().is_empty() && e.trim().is_empty()) {
                    return Err(RangeError::Syntax(text.to_string()));
                }
                let start = match s.trim() {
                    "~" => None,
                    "" => Some(0.0),
                    s => Some(num(s)?),
                };
                let end = match e.trim() {
                    "" => None,
                    e => Some(num(e)?),
                };
                if start.is_none() && end.is_none() {
                    // "~:" says nothing: everything is inside.
                    return Err(RangeError::Syntax(text.to_string()));
                }
                (start, end)
            }
        };
        if let (Some(s), Some(e)) = (start, end) {
            if s > e {
                return Err(RangeError::Inverted {
                    text: text.to_string(),
                    start: s,
                    end: e,
                });
            }
        }
        Ok(Self { start, end, inside })
    }

    /// Whether `v` lies within `[start, end]`.
    pub fn contains(&self, v: f64) -> bool {
        self.start.is_none_or(|s| v >= s) && self.end.is_none_or(|e| v <= e)
    }

    /// Whether `v` raises an alert against this range. NaN always alerts:
    /// a value that cannot be judged is not "fine".
    pub fn alerts(&self, v: f64) -> bool {
        if v.is_nan() {
            return true;
        }
        self.contains(v) == self.inside
    }

    /// The finite ends a graph can draw as threshold lines.
    pub fn bounds(&self) -> impl Iterator<Item = f64> {
        self.start
            .filter(|s| !(*s == 0.0 && self.end.is_some() && !self.inside))
            .into_iter()
            .chain(self.end)
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.inside {
            f.write_str("@")?;
        }
        match (self.start, self.end) {
            (Some(s), Some(e)) if s == 0.0 && !self.inside => write!(f, "{e}"),
            (Some(s), Some(e)) => write!(f, "{s}:{e}"),
            (Some(s), None) => write!(f, "{s}:"),
            (None, Some(e)) => write!(f, "~:{e}"),
            (None, None) => f.write_str("~:"),
        }
    }
}

impl Serialize for Range {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Range {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Range::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guidelines_table() {
        let cases: &[(&str, &[f64], &[f64])] = &[
            // text, values that alert, values that do not
            ("10", &[-1.0, 10.5, 11.0], &[0.0, 5.0, 10.0]),
            ("10:", &[-5.0, 9.99], &[10.0, 1e9]),
            ("~:10", &[10.01, 1e9], &[-1e9, 0.0, 10.0]),
            ("10:20", &[9.0, 21.0], &[10.0, 15.0, 20.0]),
            ("@10:20", &[10.0, 15.0, 20.0], &[9.0, 21.0]),
            ("~:80", &[80.5], &[80.0, 0.0]),
            ("-5:-1", &[0.0, -6.0], &[-5.0, -1.0]),
            ("1e3", &[1001.0], &[999.0]),
        ];
        for (text, bad, good) in cases {
            let r = Range::parse(text).unwrap();
            for v in *bad {
                assert!(r.alerts(*v), "{text} should alert at {v}");
            }
            for v in *good {
                assert!(!r.alerts(*v), "{text} should not alert at {v}");
            }
            assert!(r.alerts(f64::NAN));
        }
    }

    #[test]
    fn bad_ranges_say_why() {
        for text in ["", "abc", "20:10", "~:", "1:2:3", "@", ":", "10:x", "inf"] {
            assert!(Range::parse(text).is_err(), "{text:?} was accepted");
        }
        assert_eq!(
            Range::parse("20:10").unwrap_err().to_string(),
            "range \"20:10\": start 20 is greater than end 10"
        );
    }

    #[test]
    fn display_parses_back_to_the_same_range() {
        for text in ["10", "10:", "~:10", "10:20", "@10:20", "@0:5", "-3.5:"] {
            let r = Range::parse(text).unwrap();
            assert_eq!(Range::parse(&r.to_string()).unwrap(), r, "{text}");
        }
    }

    use proptest::prelude::*;

    /// A range as the guidelines write it, with the interval it stands for
    /// (start, end, inside) computed from the definition, not by the parser.
    fn range_text() -> impl Strategy<Value = (String, f64, f64, bool)> {
        let n = || (-4000i32..4000).prop_map(|v| f64::from(v) / 4.0);
        let shape = prop_oneof![
            n().prop_map(|e| (format!("{}", e.abs()), 0.0, e.abs())),
            n().prop_map(|s| (format!("{s}:"), s, f64::INFINITY)),
            n().prop_map(|e| (format!("~:{e}"), f64::NEG_INFINITY, e)),
            (n(), n()).prop_map(|(a, b)| {
                let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
                (format!("{lo}:{hi}"), lo, hi)
            }),
        ];
        (shape, any::<bool>()).prop_map(|((text, s, e), inside)| {
            let text = if inside { format!("@{text}") } else { text };
            (text, s, e, inside)
        })
    }

    proptest! {
        /// Law: display parses back to the same range.
        #[test]
        fn display_round_trips((text, _, _, _) in range_text()) {
            let r = Range::parse(&text).unwrap();
            prop_assert_eq!(Range::parse(&r.to_string()).unwrap(), r, "{}", text);
        }

        /// Law: a value alerts exactly when it lies outside [start, end]
        /// (inside, for `@`), ends inclusive: the guidelines' definition.
        #[test]
        fn alerts_is_the_guidelines_definition(
            (text, s, e, inside) in range_text(),
            v in prop_oneof![(-4400i32..4400).prop_map(|v| f64::from(v) / 4.0), -1e9f64..1e9],
        ) {
            let r = Range::parse(&text).unwrap();
            let within = v >= s && v <= e;
            prop_assert_eq!(r.alerts(v), within == inside, "{} at {}", text, v);
            // The ends themselves never alert for a plain range, always for `@`.
            for end in [s, e].into_iter().filter(|x| x.is_finite()) {
                prop_assert_eq!(r.alerts(end), inside, "{} at its end {}", text, end);
            }
        }

        #[test]
        fn parse_never_panics(text in any::<String>()) {
            let _ = Range::parse(&text);
        }
    }
}
