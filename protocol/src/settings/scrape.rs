//! `[[scrape]]`: a Prometheus exporter the agent scrapes (see `docs/scrape.md`).
//! An agent's own file and the server's `[[agents]]` sections both write it.

use super::ConfigErrors;
use crate::series::validate_labels;
use crate::units::{serde_duration, serde_size};
use crate::Labels;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Longest target name (it is the `job` label of its series).
pub const MAX_NAME: usize = 64;

/// One `[[scrape]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
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
    #[serde(
        deserialize_with = "some_duration",
        serialize_with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
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

fn opt_duration<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => serde_duration::serialize(d, s),
        None => s.serialize_none(),
    }
}

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
        match url::Url::parse(&self.url) {
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
        match url::Url::parse(&self.url) {
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
