//! A run's perfdata as samples of series `check.<name>.<label>`: values in
//! their base unit (seconds, bytes, percent), counters (`c`) turned into a
//! rate per second between two runs.

use metrolog_protocol::nagios::perfdata::{self, series_names, Unit};
use metrolog_protocol::nagios::CheckName;
use metrolog_protocol::{Labels, SeriesKey, SeriesName};
use std::collections::HashMap;

/// Most perfdata items turned into series per run; the rest are skipped
/// and counted (a plugin printing thousands must not flood the archives).
pub const MAX_ITEMS: usize = 64;

/// The last reading of each counter of one check: (value, unix seconds).
#[derive(Debug, Default)]
pub struct Counters(HashMap<SeriesName, (f64, f64)>);

/// The samples of one run.
#[derive(Debug, Default, PartialEq)]
pub struct Samples {
    pub values: Vec<(SeriesKey, f64)>,
    /// Items skipped: unreadable, over [`MAX_ITEMS`].
    pub skipped: usize,
    /// The first unreadable item, to tell the operator.
    pub first_skipped: Option<String>,
}

/// The samples of `perfdata` printed by check `name` at `t` (unix seconds).
/// An item whose value is `U` gives none; a counter gives none on its first
/// reading and when it went down (a reset: the rate starts over from the
/// new reading, never negative).
pub fn samples(name: &CheckName, perfdata: &str, t: f64, counters: &mut Counters) -> Samples {
    let parsed = perfdata::parse(perfdata);
    let mut out = Samples {
        skipped: parsed.skipped,
        first_skipped: parsed.first_skipped,
        ..Samples::default()
    };
    let items = &parsed.items[..parsed.items.len().min(MAX_ITEMS)];
    out.skipped += parsed.items.len() - items.len();
    let names = series_names(name, items.iter().map(|i| i.label.as_str()));
    let mut seen = Vec::new();
    for (item, series) in items.iter().zip(names) {
        let Some(v) = item.normalised() else { continue };
        let value = if item.unit() == Unit::Counter {
            let prev = counters.0.insert(series.clone(), (v, t));
            seen.push(series.clone());
            match prev {
                Some((pv, pt)) if v >= pv && t > pt => (v - pv) / (t - pt),
                _ => continue,
            }
        } else {
            v
        };
        out.values.push((
            SeriesKey {
                name: series,
                labels: Labels::new(),
            },
            value,
        ));
    }
    // Counters the plugin no longer prints are forgotten (bounded memory).
    counters.0.retain(|k, _| seen.contains(k));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(s: &Samples) -> Vec<(&str, f64)> {
        s.values
            .iter()
            .map(|(k, v)| (k.name.as_str(), *v))
            .collect()
    }

    #[test]
    fn units_are_normalised_and_u_gives_nothing() {
        let name = CheckName::parse("web").unwrap();
        let mut c = Counters::default();
        let s = samples(
            &name,
            "time=250ms;1;2 size=2KB 'Free %'=40% rta=U junk",
            10.0,
            &mut c,
        );
        assert_eq!(
            values(&s),
            [
                ("check.web.time", 0.25),
                ("check.web.size", 2048.0),
                ("check.web.free", 40.0)
            ]
        );
        assert_eq!((s.skipped, s.first_skipped.as_deref()), (1, Some("junk")));
    }

    #[test]
    fn counters_become_rates_and_resets_start_over() {
        let name = CheckName::parse("if").unwrap();
        let mut c = Counters::default();
        assert!(samples(&name, "rx=1000c", 100.0, &mut c).values.is_empty());
        assert_eq!(
            values(&samples(&name, "rx=1600c", 110.0, &mut c)),
            [("check.if.rx", 60.0)]
        );
        // A reset: no negative rate, and the next one counts from the reset.
        assert!(samples(&name, "rx=100c", 120.0, &mut c).values.is_empty());
        assert_eq!(
            values(&samples(&name, "rx=300c", 130.0, &mut c)),
            [("check.if.rx", 20.0)]
        );
        // The same time twice gives no rate (no division by zero).
        assert!(samples(&name, "rx=400c", 130.0, &mut c).values.is_empty());
        // A counter that disappears is forgotten.
        samples(&name, "other=1", 140.0, &mut c);
        assert!(samples(&name, "rx=500c", 150.0, &mut c).values.is_empty());
    }

    #[test]
    fn items_are_capped() {
        let name = CheckName::parse("many").unwrap();
        let text: Vec<String> = (0..100).map(|i| format!("v{i}=1")).collect();
        let s = samples(&name, &text.join(" "), 1.0, &mut Counters::default());
        assert_eq!((s.values.len(), s.skipped), (MAX_ITEMS, 100 - MAX_ITEMS));
    }
}
