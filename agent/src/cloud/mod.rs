//! Cloud facts and self-enrollment (see `docs/cloud.md`).
//!
//! At start, before the configuration is checked: on EC2 (detected from DMI
//! by [`dmi::is_ec2`], before any request) or when `cloud.metadata_url` is
//! set, the instance metadata service ([`imds`]) gives the instance id, type,
//! availability zone, local IPv4 and AMI id — host facts and labels — and the
//! user-data may carry agent settings (a `#metrolog-agent` first line, then
//! agent TOML: `server`, `enroll_token`, `group`, `labels`), layered under
//! the local flags, environment and file. Elsewhere no request is made.
//!
//! Every failure (no answer, garbage, bad user-data) is logged with its
//! reason and counted (series `agent.cloud.failures{reason}`); the agent
//! then starts with what it has.

pub mod dmi;
pub mod imds;

use crate::config::{self, AgentConfig, ConfigErrors, FileConfig, Overrides};
use imds::{Imds, ImdsError};
use metrolog_protocol::units::serde_duration;
use metrolog_protocol::Labels;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

/// The EC2 metadata address, used only when DMI says this is EC2 (or
/// `metadata = "ec2"`) and no `metadata_url` is set.
pub const EC2_METADATA_URL: &str = "http://169.254.169.254";
/// First line of user-data meant for the agent.
pub const USER_DATA_MARKER: &str = "#metrolog-agent";
/// The keys user-data may set.
pub const USER_DATA_KEYS: [&str; 4] = ["server", "enroll_token", "group", "labels"];

/// `cloud.metadata`: when the metadata service is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetadataMode {
    /// On EC2 (from DMI), or wherever `metadata_url` is set.
    #[default]
    Auto,
    /// Always (without DMI detection).
    Ec2,
    /// Never.
    Off,
}

/// `[cloud]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CloudConfig {
    pub metadata: MetadataMode,
    /// Base URL of the metadata service (a local fake in tests); default the
    /// EC2 address, used only on EC2.
    pub metadata_url: Option<String>,
    /// Read agent settings from the user-data (default true).
    pub user_data: bool,
    /// Root of sysfs, where DMI is read (`/sys`; fixtures in tests).
    pub sysfs: PathBuf,
    /// Per request to the metadata service (default 1s).
    #[serde(with = "serde_duration")]
    pub timeout: Duration,
}

impl Default for CloudConfig {
    fn default() -> Self {
        Self {
            metadata: MetadataMode::Auto,
            metadata_url: None,
            user_data: true,
            sysfs: PathBuf::from("/sys"),
            timeout: Duration::from_secs(1),
        }
    }
}

impl CloudConfig {
    /// The metadata base URL to ask, or `None`: no request at all.
    pub fn endpoint(&self) -> Option<String> {
        match self.metadata {
            MetadataMode::Off => None,
            MetadataMode::Ec2 => Some(
                self.metadata_url
                    .clone()
                    .unwrap_or_else(|| EC2_METADATA_URL.into()),
            ),
            MetadataMode::Auto => match &self.metadata_url {
                Some(u) => Some(u.clone()),
                None if dmi::is_ec2(&self.sysfs) => Some(EC2_METADATA_URL.into()),
                None => None,
            },
        }
    }

    /// Every problem, keys under `cloud.`.
    pub fn validate(&self, errs: &mut ConfigErrors) {
        if let Some(url) = &self.metadata_url {
            match reqwest::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                _ => errs.push(
                    "cloud.metadata_url",
                    format!("{url:?} is not an http(s) URL such as \"http://127.0.0.1:1338\""),
                ),
            }
        }
        if self.timeout < Duration::from_millis(50) || self.timeout > Duration::from_secs(30) {
            errs.push("cloud.timeout", "must be between 50ms and 30s");
        }
    }
}

/// What the metadata service said about this instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    pub instance_id: Option<String>,
    pub instance_type: Option<String>,
    pub availability_zone: Option<String>,
    pub local_ipv4: Option<String>,
    pub ami_id: Option<String>,
}

/// Metadata paths of the facts, with the label each becomes.
const FACTS: [(&str, &str); 5] = [
    ("instance_id", "latest/meta-data/instance-id"),
    ("instance_type", "latest/meta-data/instance-type"),
    (
        "availability_zone",
        "latest/meta-data/placement/availability-zone",
    ),
    ("local_ipv4", "latest/meta-data/local-ipv4"),
    ("ami_id", "latest/meta-data/ami-id"),
];

impl Facts {
    fn slot(&mut self, label: &str) -> &mut Option<String> {
        match label {
            "instance_id" => &mut self.instance_id,
            "instance_type" => &mut self.instance_type,
            "availability_zone" => &mut self.availability_zone,
            "local_ipv4" => &mut self.local_ipv4,
            _ => &mut self.ami_id,
        }
    }

    /// The facts as host labels.
    pub fn labels(&self) -> Labels {
        let mut out = Labels::new();
        for (label, v) in [
            ("instance_id", &self.instance_id),
            ("instance_type", &self.instance_type),
            ("availability_zone", &self.availability_zone),
            ("local_ipv4", &self.local_ipv4),
            ("ami_id", &self.ami_id),
        ] {
            if let Some(v) = v {
                out.insert(label.to_string(), v.clone());
            }
        }
        out
    }

    /// Adds the facts under what the configuration already says: its
    /// `instance_id` and labels win.
    pub fn apply(&self, cfg: &mut AgentConfig) {
        if cfg.instance_id.is_none() {
            cfg.instance_id = self.instance_id.clone();
        }
        for (k, v) in self.labels() {
            cfg.labels.entry(k).or_insert(v);
        }
    }
}

/// What discovery found.
#[derive(Debug, Default)]
pub struct Discovery {
    pub facts: Facts,
    /// Agent settings from the user-data, when it carried some.
    pub settings: Option<FileConfig>,
    /// Whether an IMDSv2 token was used.
    pub v2: bool,
    /// Failures, each with its reason (also counted in [`failures`]).
    pub failures: Vec<(&'static str, String)>,
}

static FAILURES: Mutex<BTreeMap<&'static str, u64>> = Mutex::new(BTreeMap::new());

/// Cloud discovery failures since start, by reason.
pub fn failures() -> BTreeMap<&'static str, u64> {
    FAILURES.lock().map(|m| m.clone()).unwrap_or_default()
}

/// [`failures`] as series `agent.cloud.failures{reason}` (sampled once: the
/// metadata service is asked once, at start).
pub fn failure_series() -> Vec<(metrolog_protocol::SeriesKey, f64)> {
    failures()
        .into_iter()
        .filter_map(|(reason, n)| {
            let labels: Labels = [("reason".to_string(), reason.to_string())].into();
            metrolog_protocol::SeriesKey::new("agent.cloud.failures", labels)
                .ok()
                .map(|k| (k, n as f64))
        })
        .collect()
}

impl Discovery {
    fn fail(&mut self, reason: &'static str, message: String) {
        tracing::warn!("cloud metadata: {message} ({reason}); counted in agent.cloud.failures");
        if let Ok(mut m) = FAILURES.lock() {
            *m.entry(reason).or_default() += 1;
        }
        self.failures.push((reason, message));
    }
}

/// Why user-data was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("user-data: {0}")]
pub struct UserDataError(String);

/// Reads user-data: `Ok(None)` when it is not for the agent (no
/// `#metrolog-agent` first line), the settings when it is. Messages never
/// quote the text (it holds the enrollment token).
pub fn parse_user_data(text: &str) -> Result<Option<FileConfig>, UserDataError> {
    let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
    if first.trim() != USER_DATA_MARKER {
        return Ok(None);
    }
    let table: toml::Table = toml::from_str(rest).map_err(|e| {
        let line = e
            .span()
            .map(|s| rest[..s.start.min(rest.len())].matches('\n').count() + 2)
            .unwrap_or(0);
        UserDataError(format!(
            "TOML syntax error at line {line}: {}",
            e.message().trim()
        ))
    })?;
    let stray: Vec<&str> = table
        .keys()
        .map(String::as_str)
        .filter(|k| !USER_DATA_KEYS.contains(k))
        .collect();
    if !stray.is_empty() {
        return Err(UserDataError(format!(
            "{} not taken from user-data (only {})",
            stray.join(", "),
            USER_DATA_KEYS.join(", ")
        )));
    }
    FileConfig::parse(rest)
        .map(Some)
        .map_err(|errs| UserDataError(errs.to_string().replace('\n', "; ")))
}

/// Asks the metadata service at `base` for the facts and the user-data.
pub async fn discover(cfg: &CloudConfig, base: &str) -> Discovery {
    let mut found = Discovery::default();
    let mut imds = match Imds::new(base, cfg.timeout) {
        Ok(i) => i,
        Err(e) => {
            found.fail(e.reason(), e.to_string());
            return found;
        }
    };
    if let Err(e) = imds.start_session().await {
        // IMDSv1: refused tokens are normal on old setups; log, not counted.
        tracing::info!("cloud metadata: no IMDSv2 token ({e}); trying IMDSv1");
        if matches!(e, ImdsError::Timeout(..) | ImdsError::Connect(..)) {
            found.fail(e.reason(), e.to_string());
            return found;
        }
    }
    found.v2 = imds.has_token();
    for (label, path) in FACTS {
        match imds.get(path, imds::MAX_FACT_BYTES).await {
            Ok(None) => tracing::info!("cloud metadata: {path} not found"),
            Ok(Some(text)) => match imds::fact_value(path, &text) {
                Ok(v) => *found.facts.slot(label) = Some(v),
                Err(e) => found.fail(e.reason(), e.to_string()),
            },
            Err(e) => {
                let stop = matches!(e, ImdsError::Timeout(..) | ImdsError::Connect(..));
                found.fail(e.reason(), e.to_string());
                if stop {
                    // The service is not there: do not wait once per key.
                    return found;
                }
            }
        }
    }
    if cfg.user_data {
        match imds.get("latest/user-data", imds::MAX_USER_DATA_BYTES).await {
            Ok(None) => tracing::info!("cloud metadata: no user-data"),
            Ok(Some(text)) => match parse_user_data(&text) {
                Ok(Some(settings)) => found.settings = Some(settings),
                Ok(None) => tracing::info!(
                    "cloud metadata: user-data is not for the agent (no {USER_DATA_MARKER} first line)"
                ),
                Err(e) => found.fail("user_data", e.to_string()),
            },
            Err(e) => found.fail(e.reason(), e.to_string()),
        }
    }
    found
}

/// The agent's configuration with the cloud layer: flags over environment
/// over the file over the user-data's settings over the defaults, and the
/// metadata facts under the labels and `instance_id` so set. Without an
/// endpoint (not EC2, no `metadata_url`), exactly [`config::load`].
pub async fn configure(flags: Overrides, env: Overrides) -> Result<AgentConfig, ConfigErrors> {
    let cfg = config::load(flags.clone(), env.clone())?;
    let Some(base) = cfg.cloud.endpoint() else {
        return Ok(cfg);
    };
    let mut probe = ConfigErrors::default();
    cfg.cloud.validate(&mut probe);
    if !probe.is_empty() {
        return Err(probe);
    }
    tracing::info!("cloud metadata: asking {base}");
    let found = discover(&cfg.cloud, &base).await;
    let mut cfg = match found.settings {
        Some(settings) => {
            tracing::info!(
                "cloud metadata: agent settings from user-data ({}), under the local ones",
                settings_summary(&settings)
            );
            config::load_under(flags, env, settings)?
        }
        None => cfg,
    };
    found.facts.apply(&mut cfg);
    tracing::info!(
        "cloud metadata: {} (IMDS{})",
        found
            .facts
            .labels()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" "),
        if found.v2 { "v2" } else { "v1" }
    );
    Ok(cfg)
}

/// Which keys user-data set, never their secret values.
fn settings_summary(s: &FileConfig) -> String {
    let mut keys = Vec::new();
    if let Some(servers) = &s.server {
        keys.push(format!("server: {}", servers.join(", ")));
    }
    if s.enroll_token.is_some() {
        keys.push("enroll_token: [redacted]".into());
    }
    if let Some(g) = &s.group {
        keys.push(format!("group: {g}"));
    }
    if let Some(l) = &s.labels {
        keys.push(format!("{} label(s)", l.len()));
    }
    keys.join("; ")
}

#[cfg(test)]
mod tests;
