//! `[[scrape]]`: a Prometheus exporter the agent scrapes (see `docs/scrape.md`).

use crate::config::ConfigErrors;
use metrolog_protocol::series::validate_labels;
use metrolog_protocol::units::{serde_duration, serde_size};
use metrolog_protocol::Labels;
use serde::Deserialize;
use std::time::Duration;

/// Longest target name (it is the `job` label of its series).
pub const MAX_NAME: usize = 64;

/// One `[[scrape]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScrapeConfig {
    /// Names the target: the `job` label of every series it gives.
    pub name: String,
    /// The exporter's metrics URL (`http://127.0.0.1:9100/metrics`).
    pub url: String,
    /// How often it is scraped (default 10s).
    #[serde(with = "serde_duration")]
    pub interval: Duration,
    /// A scrape not done after this fails with reason `timeout` (default 5s,
    /// or the interval when shorter; at most `interval`). See [`Self::timeout`].
    #[serde(deserialize_with = "some_duration")]
    pub timeout: Option<Duration>,
    /// A scrape with more samples fails whole with reason `sample_limit`, as
    /// in Prometheus (default 5000).
    pub sample_limit: usize,
    /// A body larger than this (after decompression) fails the scrape with
    /// reason `body_limit` (default 16MiB).
    #[serde(with = "serde_size")]
    pub body_limit: u64,
    /// Added to every series of the target.
    pub labels: Labels,
}

impl Default for ScrapeConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            url: String::new(),
            interval: Duration::from_secs(10),
            timeout: None,
            sample_limit: 5000,
            body_limit: 16 << 20,
            labels: Labels::new(),
        }
    }
}

/// Timeout of a target that sets none (cut to its interval when shorter).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

fn some_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    serde_duration::deserialize(d).map(Some)
}

impl ScrapeConfig {
    /// The timeout in force: the one set, else 5s or the interval when shorter.
    pub fn timeout(&self) -> Duration {
        self.timeout
            .unwrap_or_else(|| DEFAULT_TIMEOUT.min(self.interval))
    }

    /// The URL as logs show it: a password in it is replaced.
    pub fn url_for_logs(&self) -> String {
        match reqwest::Url::parse(&self.url) {
            Ok(mut u) if u.password().is_some() => {
                let _ = u.set_password(Some("redacted"));
                u.to_string()
            }
            _ => self.url.clone(),
        }
    }

    /// Every problem of this target, keys prefixed with `at` (`scrape[0]`).
    pub fn problems(&self, at: &str) -> ConfigErrors {
        let mut errs = ConfigErrors::default();
        self.validate(at, &mut errs);
        errs
    }

    fn validate(&self, at: &str, errs: &mut ConfigErrors) {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= MAX_NAME
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !name_ok {
            errs.push(
                format!("{at}.name"),
                format!(
                    "{:?} must be 1 to {MAX_NAME} bytes of a-z, 0-9, '_' and '-' (it becomes the \
                     job label of the target's series)",
                    self.name
                ),
            );
        }
        match reqwest::Url::parse(&self.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            Ok(u) => errs.push(
                format!("{at}.url"),
                format!("scheme {:?} is not http or https", u.scheme()),
            ),
            Err(e) => errs.push(
                format!("{at}.url"),
                format!("{:?} is not a URL: {e}", self.url),
            ),
        }
        if self.interval < Duration::from_secs(1) || self.interval > Duration::from_secs(3600) {
            errs.push(format!("{at}.interval"), "must be between 1s and 1h");
        }
        if self.timeout().is_zero() {
            errs.push(format!("{at}.timeout"), "must be greater than 0");
        } else if self.timeout() > self.interval {
            errs.push(
                format!("{at}.timeout"),
                "must be at most the interval (a scrape never overlaps the next)",
            );
        }
        if !(1..=1_000_000).contains(&self.sample_limit) {
            errs.push(
                format!("{at}.sample_limit"),
                "must be between 1 and 1000000",
            );
        }
        if !((1 << 10)..=(1 << 30)).contains(&self.body_limit) {
            errs.push(format!("{at}.body_limit"), "must be between 1KiB and 1GiB");
        }
        if let Err(e) = validate_labels(&self.labels) {
            errs.push(format!("{at}.labels"), e.to_string());
        } else if self.labels.contains_key("job") {
            errs.push(
                format!("{at}.labels"),
                "\"job\" is the target's name; set `name` instead",
            );
        }
    }
}

/// Checks every `[[scrape]]` entry and that their names differ.
pub fn validate_all(targets: &[ScrapeConfig], errs: &mut ConfigErrors) {
    let mut names = std::collections::HashSet::new();
    for (i, t) in targets.iter().enumerate() {
        let at = format!("scrape[{i}]");
        t.validate(&at, errs);
        if !t.name.is_empty() && !names.insert(t.name.as_str()) {
            errs.push(
                format!("{at}.name"),
                format!("{:?} is used by an earlier [[scrape]] entry", t.name),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_problems() {
        let ok = ScrapeConfig {
            name: "node".into(),
            url: "http://127.0.0.1:9100/metrics".into(),
            ..ScrapeConfig::default()
        };
        assert!(ok.problems("scrape[0]").is_empty());
        assert_eq!(ok.timeout(), DEFAULT_TIMEOUT);
        let quick = ScrapeConfig {
            interval: Duration::from_secs(2),
            ..ok.clone()
        };
        assert_eq!(
            quick.timeout(),
            Duration::from_secs(2),
            "cut to the interval"
        );
        assert!(quick.problems("scrape[0]").is_empty());
        let secret = ScrapeConfig {
            url: "http://scraper:hunter2@127.0.0.1:9100/metrics".into(),
            ..ok.clone()
        };
        assert_eq!(
            secret.url_for_logs(),
            "http://scraper:redacted@127.0.0.1:9100/metrics"
        );
        let bad = ScrapeConfig {
            name: "Node Exporter".into(),
            url: "ftp://x".into(),
            interval: Duration::from_secs(5),
            timeout: Some(Duration::from_secs(6)),
            sample_limit: 0,
            body_limit: 10,
            labels: [("job".to_string(), "x".to_string())].into(),
        };
        let errs = bad.problems("scrape[0]");
        let keys: Vec<&str> = errs.0.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "scrape[0].name",
                "scrape[0].url",
                "scrape[0].timeout",
                "scrape[0].sample_limit",
                "scrape[0].body_limit",
                "scrape[0].labels"
            ],
            "{errs}"
        );
        let mut errs = ConfigErrors::default();
        validate_all(&[ok.clone(), ok], &mut errs);
        assert_eq!(errs.0.len(), 1);
        assert_eq!(errs.0[0].key, "scrape[1].name");
    }
}
