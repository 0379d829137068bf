//! Field values turned into what Munin graphs, as rrdtool computes it for
//! the data-source type Munin creates (`type`, GAUGE by default):
//!
//! - GAUGE: the value itself;
//! - DERIVE: (value − previous) / seconds between them, negative allowed
//!   (plugins set `min 0` to drop the spike of a reset);
//! - COUNTER: as DERIVE, but a value below the previous one is taken as a
//!   wrap of a 32-bit counter, else of a 64-bit one (rrdtool's rule);
//! - ABSOLUTE: value / seconds since the previous reading (the counter is
//!   reset at each read).
//!
//! A result below `min` or above `max` is unknown and dropped, as rrdtool
//! does. A rate needs a previous reading: the first reading gives none,
//! and so does the first after a `U`.

use std::collections::HashMap;
use std::hash::Hash;

/// rrdtool's data-source types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Derive,
    Counter,
    Absolute,
}

impl Kind {
    /// The `type` attribute (case-insensitive); `None` when it is none of
    /// the four.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text.trim().to_ascii_uppercase().as_str() {
            "GAUGE" => Self::Gauge,
            "DERIVE" => Self::Derive,
            "COUNTER" => Self::Counter,
            "ABSOLUTE" => Self::Absolute,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gauge => "GAUGE",
            Self::Derive => "DERIVE",
            Self::Counter => "COUNTER",
            Self::Absolute => "ABSOLUTE",
        }
    }
}

/// A `min` or `max` attribute: a number, or `U` (none).
pub fn parse_bound(text: Option<&String>) -> Option<f64> {
    text.and_then(|t| t.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite())
}

/// How one field turns readings into values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rule {
    pub kind: Kind,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

impl Default for Rule {
    fn default() -> Self {
        Self {
            kind: Kind::Gauge,
            min: None,
            max: None,
        }
    }
}

/// The previous reading of every non-GAUGE field, keyed by `K`.
#[derive(Debug)]
pub struct Rates<K> {
    last: HashMap<K, (f64, f64)>,
}

impl<K> Default for Rates<K> {
    fn default() -> Self {
        Self {
            last: HashMap::new(),
        }
    }
}

const WRAP32: f64 = 4_294_967_296.0;
const WRAP64: f64 = 18_446_744_073_709_551_616.0;

impl<K: Hash + Eq> Rates<K> {
    /// The value graphed for `reading` (`None` = unknown) of field `key` at
    /// `t` (unix seconds).
    pub fn value(&mut self, key: K, rule: Rule, reading: Option<f64>, t: f64) -> Option<f64> {
        let v = match (rule.kind, reading) {
            (Kind::Gauge, r) => r,
            (_, None) => {
                self.last.remove(&key);
                None
            }
            (kind, Some(v)) => {
                let prev = self.last.insert(key, (v, t));
                match prev {
                    Some((pv, pt)) if t > pt => {
                        let dt = t - pt;
                        match kind {
                            Kind::Derive => Some((v - pv) / dt),
                            Kind::Counter => {
                                let mut d = v - pv;
                                if d < 0.0 {
                                    d += WRAP32;
                                    if d < 0.0 {
                                        d += WRAP64 - WRAP32;
                                    }
                                }
                                Some(d / dt)
                            }
                            Kind::Absolute => Some(v / dt),
                            Kind::Gauge => unreachable!("handled above"),
                        }
                    }
                    _ => None,
                }
            }
        };
        v.filter(|x| {
            x.is_finite() && rule.min.is_none_or(|m| *x >= m) && rule.max.is_none_or(|m| *x <= m)
        })
    }

    /// Forgets the fields `keep` says no (a plugin that was removed or
    /// reconfigured), so memory follows the fields in use.
    pub fn retain(&mut self, keep: impl Fn(&K) -> bool) {
        self.last.retain(|k, _| keep(k));
    }

    pub fn len(&self) -> usize {
        self.last.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(kind: Kind, min: Option<f64>, max: Option<f64>) -> Rule {
        Rule { kind, min, max }
    }

    #[test]
    fn gauge_is_the_value_within_its_bounds() {
        let mut r = Rates::default();
        let g = rule(Kind::Gauge, Some(0.0), Some(100.0));
        assert_eq!(r.value("a", g, Some(42.0), 1.0), Some(42.0));
        assert_eq!(r.value("a", g, Some(-1.0), 2.0), None);
        assert_eq!(r.value("a", g, Some(101.0), 3.0), None);
        assert_eq!(r.value("a", g, None, 4.0), None);
        assert!(r.is_empty(), "gauges keep no state");
    }

    #[test]
    fn derive_counter_absolute_as_rrdtool() {
        let mut r = Rates::default();
        let d = rule(Kind::Derive, None, None);
        assert_eq!(r.value("d", d, Some(100.0), 0.0), None);
        assert_eq!(r.value("d", d, Some(700.0), 60.0), Some(10.0));
        assert_eq!(
            r.value("d", d, Some(100.0), 120.0),
            Some(-10.0),
            "DERIVE goes negative"
        );
        let d0 = rule(Kind::Derive, Some(0.0), None);
        assert_eq!(
            r.value("d", d0, Some(50.0), 180.0),
            None,
            "min 0 drops the reset"
        );
        assert_eq!(r.value("d", d0, Some(110.0), 240.0), Some(1.0));

        let c = rule(Kind::Counter, None, None);
        assert_eq!(r.value("c", c, Some(WRAP32 - 10.0), 0.0), None);
        assert_eq!(r.value("c", c, Some(50.0), 10.0), Some(6.0), "32-bit wrap");
        assert_eq!(
            r.value("c", c, Some(1e12), 20.0),
            Some((1e12 - 50.0) / 10.0)
        );
        assert_eq!(
            r.value("c", c, Some(0.0), 30.0),
            Some((WRAP64 - 1e12) / 10.0),
            "64-bit wrap"
        );
        let cmax = rule(Kind::Counter, None, Some(1e9));
        assert_eq!(r.value("c", cmax, Some(0.0), 40.0), Some(0.0));
        assert_eq!(r.value("c", cmax, Some(5.0), 50.0), Some(0.5));

        let a = rule(Kind::Absolute, None, None);
        assert_eq!(r.value("a", a, Some(30.0), 0.0), None);
        assert_eq!(r.value("a", a, Some(30.0), 60.0), Some(0.5));
    }

    #[test]
    fn unknown_and_equal_times_give_no_rate() {
        let mut r = Rates::default();
        let d = rule(Kind::Derive, None, None);
        r.value("d", d, Some(1.0), 0.0);
        assert_eq!(r.value("d", d, None, 10.0), None);
        assert_eq!(r.value("d", d, Some(5.0), 20.0), None, "no rate across a U");
        assert_eq!(
            r.value("d", d, Some(6.0), 20.0),
            None,
            "no division by zero"
        );
        assert_eq!(r.value("d", d, Some(8.0), 22.0), Some(1.0));
        r.retain(|k| *k != "d");
        assert!(r.is_empty());
        assert_eq!(Kind::parse("derive"), Some(Kind::Derive));
        assert_eq!(Kind::parse("DCOUNTER"), None);
        assert_eq!(parse_bound(Some(&"U".to_string())), None);
    }
}
