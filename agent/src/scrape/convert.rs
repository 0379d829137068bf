//! Parsed samples into series of this host:
//!
//! - every series is `prom.<name>{labels}`: the name lowercased with `:` as
//!   `_` (series names are lowercase), label keys lowercased, the target's
//!   `job` and extra labels added (an exposition label of the same key is
//!   kept as `exported_<key>`, as Prometheus does), a line feed in a value
//!   written `\n` (series labels hold no control characters);
//! - counters become rates per second (a value lower than the last one is
//!   a reset: the rate counts from 0, as Prometheus' `rate()` does); the
//!   first scrape of a counter gives no value;
//! - histograms: `_bucket`, `_sum` and `_count` rates; summaries: the
//!   quantiles as they are, `_sum` and `_count` rates;
//! - gauges, untyped, info and stateset samples as they are;
//! - OpenMetrics `_created` samples are dropped (a start time, not a value).
//!
//! Rate state is kept only for the series of the last scrape, so it is
//! bounded by the target's `sample_limit`.
//!
//! An exporter writes the same lines every scrape, so each line's series
//! key is built once and found again by the line's text (`name{labels}`
//! as written): a scrape then costs a lookup and a key copy per sample,
//! not a label map built, validated and hashed twice.

use super::exposition::{MetricType, Sample};
use metrolog_protocol::{Labels, SeriesKey};
use std::collections::HashMap;

/// Why samples of a scrape were not turned into series, counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Skipped {
    /// Name or labels beyond the series limits (length, count).
    pub refused: u64,
    /// A second sample for a series already seen in the same scrape.
    pub duplicate: u64,
}

/// What one scrape gave.
#[derive(Debug, Default)]
pub struct Converted {
    pub series: Vec<(SeriesKey, f64)>,
    pub skipped: Skipped,
}

/// What the converter keeps of one line's series between scrapes.
#[derive(Debug)]
struct Known {
    /// `None`: the line cannot be a series (refused), or names the same
    /// series as another line (a duplicate).
    key: Option<SeriesKey>,
    duplicate: bool,
    /// The last value and time of a counter-like series.
    last: Option<(f64, f64)>,
    /// The scrape that last met the line.
    seen: u64,
}

/// Per target: each line's series and the last value of counter-like ones.
#[derive(Debug, Default)]
pub struct Converter {
    known: HashMap<Box<str>, Known>,
    /// Keys of `known`, to find two lines naming one series.
    keys: HashMap<SeriesKey, Box<str>>,
    scrape: u64,
}

/// Whether a sample is cumulative (its rate is what is kept).
fn cumulative(s: &Sample) -> bool {
    let suffix = s.name.strip_prefix(s.family).unwrap_or("");
    match s.typ {
        MetricType::Counter => true,
        MetricType::Histogram => matches!(suffix, "_bucket" | "_sum" | "_count"),
        MetricType::Summary => matches!(suffix, "_sum" | "_count"),
        _ => false,
    }
}

fn is_created(s: &Sample) -> bool {
    matches!(
        s.typ,
        MetricType::Counter | MetricType::Histogram | MetricType::Summary
    ) && s
        .name
        .strip_prefix(s.family)
        .is_some_and(|suffix| suffix == "_created")
}

/// `prom.<name>` with the name made a valid series name part.
pub fn series_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 5);
    out.push_str("prom.");
    for c in name.chars() {
        out.push(match c {
            ':' => '_',
            c => c.to_ascii_lowercase(),
        });
    }
    out
}

/// A label value with its control characters written visibly.
fn label_value(v: &str) -> String {
    if !v.chars().any(char::is_control) {
        return v.to_string();
    }
    let mut out = String::with_capacity(v.len() + 2);
    for c in v.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// The series key of `s` for target `job` with `extra` labels.
pub fn series_key(s: &Sample<'_>, job: &str, extra: &Labels) -> Option<SeriesKey> {
    let mut labels = Labels::new();
    for (k, v) in &s.labels {
        let mut key = k.to_ascii_lowercase();
        if key == "job" || extra.contains_key(&key) {
            key = format!("exported_{key}");
        }
        if labels.insert(key, label_value(v)).is_some() {
            // Two keys that differ only in case: not one series.
            return None;
        }
    }
    for (k, v) in extra {
        labels.insert(k.clone(), v.clone());
    }
    labels.insert("job".into(), job.to_string());
    SeriesKey::new(&series_name(s.name), labels).ok()
}

impl Converter {
    /// Turns one scrape taken at `now` (unix seconds) into series.
    pub fn convert(
        &mut self,
        samples: &[Sample<'_>],
        now: f64,
        job: &str,
        extra: &Labels,
    ) -> Converted {
        self.scrape += 1;
        let scrape = self.scrape;
        let mut out = Converted::default();
        out.series.reserve(samples.len());
        for s in samples {
            if is_created(s) {
                continue;
            }
            if !self.known.contains_key(s.id) {
                let key = series_key(s, job, extra);
                let duplicate = key.as_ref().is_some_and(|k| self.keys.contains_key(k));
                if let (Some(k), false) = (&key, duplicate) {
                    self.keys.insert(k.clone(), s.id.into());
                }
                self.known.insert(
                    s.id.into(),
                    Known {
                        key: key.filter(|_| !duplicate),
                        duplicate,
                        last: None,
                        seen: 0,
                    },
                );
            }
            let Some(known) = self.known.get_mut(s.id) else {
                continue;
            };
            if known.seen == scrape {
                // The same line twice in one scrape.
                out.skipped.duplicate += 1;
                continue;
            }
            known.seen = scrape;
            if known.duplicate {
                out.skipped.duplicate += 1;
                continue;
            }
            let Some(key) = &known.key else {
                out.skipped.refused += 1;
                continue;
            };
            if !cumulative(s) {
                known.last = None;
                out.series.push((key.clone(), s.value));
                continue;
            }
            let t = s.timestamp_ms.map_or(now, |ms| ms as f64 / 1000.0);
            if !s.value.is_finite() {
                known.last = None;
                continue;
            }
            if let Some((prev, prev_t)) = known.last {
                let dt = t - prev_t;
                if dt > 0.0 {
                    let increase = if s.value >= prev {
                        s.value - prev
                    } else {
                        s.value
                    };
                    out.series.push((key.clone(), increase / dt));
                } else {
                    // The exporter repeated its timestamp: nothing new.
                    continue;
                }
            }
            known.last = Some((s.value, t));
        }
        // Lines gone from this scrape are forgotten, so what is kept is
        // bounded by the scrape's size (the target's sample_limit). A line
        // that duplicated a forgotten one is looked at afresh.
        let before = self.known.len();
        self.known.retain(|_, k| k.seen == scrape);
        if self.known.len() != before {
            let known = &self.known;
            self.keys.retain(|_, id| known.contains_key(id));
            self.known.retain(|_, k| !k.duplicate);
        }
        out
    }

    /// Counter-like series remembered (bounded by the last scrape's size).
    pub fn remembered(&self) -> usize {
        self.known.values().filter(|k| k.last.is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scrape::exposition::{parse, Format};

    fn conv(c: &mut Converter, body: &str, now: f64) -> Vec<(String, f64)> {
        let e = parse(body, Format::Text, 1000).unwrap();
        c.convert(&e.samples, now, "node", &Labels::new())
            .series
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }

    #[test]
    fn counters_become_rates_with_resets() {
        let mut c = Converter::default();
        let body = |v: u32| {
            format!("# TYPE node_cpu_seconds_total counter\nnode_cpu_seconds_total{{cpu=\"0\",mode=\"user\"}} {v}\n")
        };
        assert!(
            conv(&mut c, &body(100), 10.0).is_empty(),
            "the first scrape gives no rate"
        );
        let got = conv(&mut c, &body(130), 20.0);
        assert_eq!(
            got,
            [(
                "prom.node_cpu_seconds_total{cpu=\"0\",job=\"node\",mode=\"user\"}".to_string(),
                3.0
            )]
        );
        // A restart: 5 since 0.
        assert_eq!(conv(&mut c, &body(5), 30.0)[0].1, 0.5);
        assert_eq!(conv(&mut c, &body(25), 40.0)[0].1, 2.0);
        assert_eq!(c.remembered(), 1);
    }

    #[test]
    fn gauges_stay_and_histograms_and_summaries_split() {
        let mut c = Converter::default();
        let body = |n: u32| {
            format!(
                "# TYPE g gauge\ng 7\nuntyped_thing 3\n# TYPE h histogram\nh_bucket{{le=\"0.1\"}} {n}\nh_bucket{{le=\"+Inf\"}} {}\nh_sum {}\nh_count {}\n# TYPE s summary\ns{{quantile=\"0.9\"}} 0.25\ns_sum {n}\ns_count {n}\n",
                2 * n,
                n,
                2 * n
            )
        };
        let first = conv(&mut c, &body(10), 100.0);
        let names: Vec<&str> = first.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "prom.g{job=\"node\"}",
                "prom.untyped_thing{job=\"node\"}",
                "prom.s{job=\"node\",quantile=\"0.9\"}"
            ]
        );
        let second: HashMap<String, f64> = conv(&mut c, &body(30), 110.0).into_iter().collect();
        assert_eq!(second["prom.h_bucket{job=\"node\",le=\"0.1\"}"], 2.0);
        assert_eq!(second["prom.h_bucket{job=\"node\",le=\"+Inf\"}"], 4.0);
        assert_eq!(second["prom.h_sum{job=\"node\"}"], 2.0);
        assert_eq!(second["prom.h_count{job=\"node\"}"], 4.0);
        assert_eq!(second["prom.s_sum{job=\"node\"}"], 2.0);
        assert_eq!(second["prom.s{job=\"node\",quantile=\"0.9\"}"], 0.25);
        assert_eq!(second["prom.g{job=\"node\"}"], 7.0);
        assert_eq!(second.len(), 9);
    }

    #[test]
    fn names_and_labels_fit_the_series_rules() {
        let mut c = Converter::default();
        let extra: Labels = [("env".to_string(), "prod".to_string())].into();
        let e = parse(
            "Job:Rate_5m{Path=\"a\\nb\",job=\"theirs\",env=\"x\"} 1\nx{A=\"1\",a=\"2\"} 1\ny{v=\"\\\\\\\"\"} 2\ny{v=\"\\\\\\\"\"} 3\n",
            Format::Text,
            10,
        )
        .unwrap();
        let out = c.convert(&e.samples, 1.0, "app", &extra);
        let keys: Vec<String> = out.series.iter().map(|(k, _)| k.to_string()).collect();
        assert_eq!(
            keys,
            [
                "prom.job_rate_5m{env=\"prod\",exported_env=\"x\",exported_job=\"theirs\",job=\"app\",path=\"a\\\\nb\"}",
                "prom.y{env=\"prod\",job=\"app\",v=\"\\\\\\\"\"}"
            ]
        );
        assert_eq!(out.series[1].0.labels["v"], "\\\"");
        assert_eq!(
            out.skipped,
            Skipped {
                refused: 1,
                duplicate: 1
            }
        );
    }

    #[test]
    fn too_long_or_too_many_labels_are_refused_not_cut() {
        let mut c = Converter::default();
        let many: Vec<String> = (0..17).map(|i| format!("l{i}=\"v\"")).collect();
        let body = format!(
            "a{{{}}} 1\nb{{v=\"{}\"}} 1\n{} 1\n",
            many.join(","),
            "x".repeat(201),
            "n".repeat(200)
        );
        let e = parse(&body, Format::Text, 10).unwrap();
        let out = c.convert(&e.samples, 1.0, "j", &Labels::new());
        assert!(out.series.is_empty());
        assert_eq!(out.skipped.refused, 3);
    }

    #[test]
    fn created_samples_and_repeated_timestamps() {
        let mut c = Converter::default();
        let body = "# TYPE r counter\nr_total 10 1000\nr_created 5\n";
        assert!(conv(&mut c, body, 1.0).is_empty());
        assert!(
            conv(&mut c, body, 2.0).is_empty(),
            "same timestamp: no rate"
        );
        let got = conv(&mut c, "# TYPE r counter\nr_total 30 3000\n", 3.0);
        assert_eq!(got[0].1, 10.0, "rate over the exporter's own timestamps");
    }

    #[test]
    fn one_series_written_two_ways_is_a_duplicate_and_gone_lines_are_forgotten() {
        let mut c = Converter::default();
        let body = "# TYPE c counter\nc_total{a=\"1\",b=\"2\"} 1\nc_total{b=\"2\",a=\"1\"} 5\nc_total{a=\"1\",b=\"2\"} 9\n";
        let e = parse(body, Format::Text, 100).unwrap();
        let out = c.convert(&e.samples, 0.0, "node", &Labels::new());
        assert_eq!(out.skipped.duplicate, 2);
        assert_eq!(c.remembered(), 1);
        // The first line's value is the one remembered: 1 → 11 in 10 s.
        assert_eq!(
            conv(
                &mut c,
                "# TYPE c counter\nc_total{a=\"1\",b=\"2\"} 11\n",
                10.0
            ),
            [(
                "prom.c_total{a=\"1\",b=\"2\",job=\"node\"}".to_string(),
                1.0
            )]
        );
        // Lines that come and go do not pile up.
        for i in 0..100 {
            let body =
                format!("# TYPE c counter\nc_total 1\nx{{i=\"{i}\"}} 1\nx{{ i=\"{i}\"}} 2\n");
            let e = parse(&body, Format::Text, 100).unwrap();
            let out = c.convert(&e.samples, 20.0 + f64::from(i), "node", &Labels::new());
            assert_eq!(out.skipped.duplicate, 1);
        }
        assert!(c.known.len() <= 3, "{}", c.known.len());
        assert!(c.keys.len() <= 3, "{}", c.keys.len());
    }
}
