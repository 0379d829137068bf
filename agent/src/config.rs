//! The agent's configuration: typed, layered (flag > env > file > default) and
//! validated as a whole, so an operator sees every mistake at once.
//!
//! The TOML shape is `agent.toml` from the product contract; `docs/agent.example.toml`
//! documents every key. Each section struct below is the reference for its keys.

use metrolog_protocol::series::validate_labels;
/// The settings the server may push too are the protocol's types, so both
/// sides parse and check them alike.
pub use metrolog_protocol::settings::{
    parse_utc_offset, CheckConfig, ConfigError, ConfigErrors, LogFileConfig, LogFilterConfig,
    Severity,
};
use metrolog_protocol::units::{parse_duration, serde_duration, serde_size};
use metrolog_protocol::{Labels, LogSettings};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Prefix of every environment variable the agent reads.
pub const ENV_PREFIX: &str = "METROLOG_AGENT_";

/// A secret (enrollment token, agent token). Its `Debug` and `Display` never show it,
/// so it cannot leak into logs by accident; [`Secret::expose`] is the one way out.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The agent's resolved configuration. Construct it with [`AgentConfig::new`] (to embed
/// the agent in another program) or [`load`] (flags, env and file), then
/// [`AgentConfig::validate`] it; [`crate::run`] validates again before starting.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Server base URLs, tried in order with failover.
    pub servers: Vec<String>,
    /// Enrollment token; only needed while no credential is stored in `state_dir`.
    pub enroll_token: Option<Secret>,
    /// PEM CA certificates trusted for `https://` servers, beside the
    /// system's (a server with a certificate of its own CA).
    pub ca_file: Option<PathBuf>,
    pub group: Option<String>,
    /// Overrides the detected hostname.
    pub hostname: Option<String>,
    /// Cloud instance id; the host identity on the server when present.
    pub instance_id: Option<String>,
    /// Where the credential is kept. `None`: `/var/lib/metrolog-agent` when writable,
    /// else `./metrolog-agent-state` (see [`crate::state::default_state_dir`]).
    pub state_dir: Option<PathBuf>,
    /// Root of the proc filesystem the collectors read (`/proc`; another path for
    /// containers that mount the host's, or for fixtures).
    pub procfs: PathBuf,
    pub labels: Labels,
    pub metrics: MetricsConfig,
    pub logs: LogsConfig,
    pub checks: Vec<CheckConfig>,
    pub spool: SpoolConfig,
    /// `[munin]`: Munin plugins run as munin-node runs them, when present
    /// (see `docs/munin.md`).
    pub munin: Option<crate::munin::MuninConfig>,
    /// `[[scrape]]`: Prometheus exporters scraped (see `docs/scrape.md`).
    pub scrape: Vec<crate::scrape::ScrapeConfig>,
    /// `[cloud]`: metadata facts and user-data settings (see `docs/cloud.md`).
    pub cloud: crate::cloud::CloudConfig,
    /// Where each value came from (for `show-config`, and so the server's
    /// settings never override a value set locally).
    pub origins: Origins,
}

impl AgentConfig {
    /// A configuration with defaults for everything but the servers and the token.
    pub fn new(servers: Vec<String>, enroll_token: Option<Secret>) -> Self {
        Self {
            servers,
            enroll_token,
            ca_file: None,
            group: None,
            hostname: None,
            instance_id: None,
            state_dir: None,
            procfs: PathBuf::from("/proc"),
            labels: Labels::new(),
            metrics: MetricsConfig::default(),
            logs: LogsConfig::default(),
            checks: Vec::new(),
            spool: SpoolConfig::default(),
            munin: None,
            scrape: Vec::new(),
            cloud: crate::cloud::CloudConfig::default(),
            origins: Origins::default(),
        }
    }

    /// Checks the whole configuration and returns every problem found, each with
    /// the key it concerns.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let mut errs = ConfigErrors::default();
        if self.servers.is_empty() {
            errs.push(
                "server",
                "no server given: set `server` in the file, METROLOG_AGENT_SERVER or --server",
            );
        }
        for (i, url) in self.servers.iter().enumerate() {
            if let Err(e) = reqwest::Url::parse(url)
                .map_err(|e| e.to_string())
                .and_then(|u| match u.scheme() {
                    "http" | "https" => Ok(()),
                    s => Err(format!("scheme {s:?} is not http or https")),
                })
            {
                errs.push(format!("server[{i}]"), format!("invalid URL {url:?}: {e}"));
            }
        }
        if let Some(t) = &self.enroll_token {
            if t.expose().trim().is_empty() {
                errs.push("enroll_token", "is empty");
            }
        }
        if let Some(path) = &self.ca_file {
            if let Err(e) = read_ca_file(path) {
                errs.push("ca_file", e);
            }
        }
        for (key, v) in [
            ("group", &self.group),
            ("hostname", &self.hostname),
            ("instance_id", &self.instance_id),
        ] {
            if let Some(v) = v {
                if v.trim().is_empty() || v.len() > 253 || v.chars().any(char::is_control) {
                    errs.push(
                        key,
                        format!("{v:?} must be 1 to 253 bytes without control characters"),
                    );
                }
            }
        }
        if let Err(e) = validate_labels(&self.labels) {
            errs.push("labels", e.to_string());
        }
        self.metrics.validate(&mut errs);
        self.logs.validate(&mut errs);
        if let Some(m) = &self.munin {
            m.validate(&mut errs);
        }
        crate::scrape::config::validate_all(&self.scrape, &mut errs);
        self.cloud.validate(&mut errs);
        let mut names = std::collections::HashSet::new();
        for (i, c) in self.checks.iter().enumerate() {
            c.validate(&format!("checks[{i}]"), &mut errs);
            if !c.name.is_empty() && !names.insert(c.name.as_str()) {
                errs.push(
                    format!("checks[{i}].name"),
                    format!("{:?} is used by another check", c.name),
                );
            }
        }
        self.spool.validate(&mut errs);
        errs.into_result()
    }
}

impl AgentConfig {
    /// The Munin source in force with the server's `pushed` settings: the
    /// agent's own `[munin]` wins whole; else the server's, when it is
    /// valid here (problems are returned to be logged).
    pub fn munin_with(
        &self,
        pushed: Option<&metrolog_protocol::AgentSettings>,
    ) -> (Option<(crate::munin::MuninConfig, Origin)>, ConfigErrors) {
        let mut errs = ConfigErrors::default();
        if let Some(m) = &self.munin {
            return (Some((m.clone(), self.origins.get("munin"))), errs);
        }
        let Some(m) = pushed.and_then(|p| p.munin.as_ref()) else {
            return (None, errs);
        };
        m.validate(&mut errs);
        let ok = errs.is_empty().then(|| (m.clone(), Origin::Server));
        (ok, errs)
    }

    /// The scrape targets in force with the server's `pushed` settings: the
    /// agent's own, then the server's of other names that are valid here
    /// (problems are returned to be logged).
    pub fn scrape_with(
        &self,
        pushed: Option<&metrolog_protocol::AgentSettings>,
    ) -> (Vec<(crate::scrape::ScrapeConfig, Origin)>, ConfigErrors) {
        let origin = self.origins.get("scrape");
        let mut out: Vec<_> = self.scrape.iter().map(|t| (t.clone(), origin)).collect();
        let mut errs = ConfigErrors::default();
        let pushed = pushed.and_then(|p| p.scrape.as_deref()).unwrap_or_default();
        for (i, t) in pushed.iter().enumerate() {
            if out.iter().any(|(have, _)| have.name == t.name) {
                continue;
            }
            let problems = t.problems(&format!("server scrape[{i}]"));
            if problems.is_empty() {
                out.push((t.clone(), Origin::Server));
            } else {
                errs.0.extend(problems.0);
            }
        }
        (out, errs)
    }
}

/// The certificates of a `ca_file`: every PEM certificate in it, at least one.
pub fn read_ca_file(path: &Path) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("{} is not PEM certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{} holds no certificate (expected PEM \"-----BEGIN CERTIFICATE-----\" blocks)",
            path.display()
        ));
    }
    Ok(certs)
}

/// `[metrics]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// How often the collectors run (default 1s).
    #[serde(with = "serde_duration")]
    pub sample_interval: Duration,
    /// How often closed 10 s buckets are shipped (default 10s).
    #[serde(with = "serde_duration")]
    pub ship_interval: Duration,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            sample_interval: Duration::from_secs(1),
            ship_interval: Duration::from_secs(10),
        }
    }
}

impl MetricsConfig {
    fn validate(&self, errs: &mut ConfigErrors) {
        use metrolog_protocol::settings::{
            check_interval, SAMPLE_INTERVAL_RANGE, SHIP_INTERVAL_RANGE,
        };
        check_interval(
            "metrics.sample_interval",
            Some(self.sample_interval),
            SAMPLE_INTERVAL_RANGE,
            errs,
        );
        check_interval(
            "metrics.ship_interval",
            Some(self.ship_interval),
            SHIP_INTERVAL_RANGE,
            errs,
        );
    }
}

/// `[logs]`: files tailed, the local syslog receiver and the filters at the
/// source (see `docs/agent-logs.md`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogsConfig {
    /// `[[logs.files]]`
    pub files: Vec<LogFileConfig>,
    /// `[logs.syslog]`
    pub syslog: SyslogConfig,
    /// `[logs.filter]`
    pub filter: LogFilterConfig,
    /// Longer lines are split into pieces of at most this size, each marked
    /// truncated (default 64KiB, as the server's receivers).
    #[serde(with = "serde_size")]
    pub max_line_bytes: u64,
    /// How often tailed files are checked for new lines, new files and
    /// rotation (default 250ms).
    #[serde(with = "serde_duration")]
    pub poll_interval: Duration,
    /// Log records read but not yet acknowledged by the server, at most
    /// (default 32MiB). When full, files are not read further (they wait on
    /// disk) and the local receiver drops and counts.
    #[serde(with = "serde_size")]
    pub max_backlog_bytes: u64,
}

impl Default for LogsConfig {
    fn default() -> Self {
        Self {
            files: Vec::new(),
            syslog: SyslogConfig::default(),
            filter: LogFilterConfig::default(),
            max_line_bytes: 64 << 10,
            poll_interval: Duration::from_millis(250),
            max_backlog_bytes: 32 << 20,
        }
    }
}

impl LogsConfig {
    /// Whether anything reads logs at all.
    pub fn enabled(&self) -> bool {
        !self.files.is_empty() || self.syslog.unix.is_some() || self.syslog.udp.is_some()
    }

    /// This (local) configuration combined with the log settings the server
    /// pushes to the agent's group (see `docs/agent-logs.md`):
    /// - files: the local ones, then the server's whose `path` is not already
    ///   listed (a local entry keeps its own `app` and `timezone`);
    /// - filter: the local `[logs.filter]` when it sets anything, else the
    ///   server's. A filter is taken whole, never mixed key by key: half of
    ///   one filter and half of another would keep what neither meant.
    ///
    /// Everything else (`[logs.syslog]`, limits) is the agent's own.
    pub fn with_pushed(&self, pushed: Option<&LogSettings>) -> LogsConfig {
        let mut out = self.clone();
        let Some(pushed) = pushed else {
            return out;
        };
        for f in &pushed.files {
            if !out.files.iter().any(|have| have.path == f.path) {
                out.files.push(LogFileConfig::from_settings(f));
            }
        }
        if !self.filter.is_set() {
            if let Some(filter) = &pushed.filter {
                out.filter = LogFilterConfig::from_settings(filter);
            }
        }
        out
    }

    /// Every problem of this configuration, each with its key
    /// (`logs.files[0].path`, …). The server checks the log settings of its
    /// `[[agents]]` sections with this too, so both sides agree on what is valid.
    pub fn problems(&self) -> ConfigErrors {
        let mut errs = ConfigErrors::default();
        self.validate(&mut errs);
        errs
    }

    fn validate(&self, errs: &mut ConfigErrors) {
        for (i, f) in self.files.iter().enumerate() {
            f.validate(&format!("logs.files[{i}]"), errs);
        }
        if let Some(udp) = &self.syslog.udp {
            match udp.parse::<std::net::SocketAddr>() {
                Err(_) => errs.push(
                    "logs.syslog.udp",
                    format!("{udp:?} is not an address such as \"127.0.0.1:5140\""),
                ),
                Ok(a) if !a.ip().is_loopback() => errs.push(
                    "logs.syslog.udp",
                    format!(
                        "{udp:?} is not a loopback address: the agent's receiver is for local \
                         applications only (use 127.0.0.1 or [::1]; remote senders log to the \
                         server's syslog receiver)"
                    ),
                ),
                Ok(_) => {}
            }
        }
        if let Some(unix) = &self.syslog.unix {
            if !unix.is_absolute() {
                errs.push(
                    "logs.syslog.unix",
                    format!("{} must be an absolute path", unix.display()),
                );
            }
        }
        self.filter.validate("logs.filter", errs);
        if !(1024..=(1 << 20)).contains(&self.max_line_bytes) {
            errs.push("logs.max_line_bytes", "must be between 1KiB and 1MiB");
        }
        if self.poll_interval < Duration::from_millis(10)
            || self.poll_interval > Duration::from_secs(10)
        {
            errs.push("logs.poll_interval", "must be between 10ms and 10s");
        }
        if self.max_backlog_bytes < (1 << 20) {
            errs.push("logs.max_backlog_bytes", "must be at least 1MiB");
        }
    }
}

/// `[logs.syslog]`: the local receiver applications log to.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyslogConfig {
    /// Unix datagram socket (as `/dev/log`), created mode 0666.
    pub unix: Option<PathBuf>,
    /// UDP address; loopback only.
    pub udp: Option<String>,
}

/// `[spool]`: the on-disk buffer of batches not yet acknowledged by a server
/// (docs/agent-spool.md).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpoolConfig {
    /// Cap of the spool on disk (default 100MiB).
    #[serde(with = "serde_size")]
    pub max_bytes: u64,
    /// Percentage of `max_bytes` log records may take; past it the oldest
    /// are dropped (default 80).
    pub log_share: u8,
    /// Size at which a segment file is closed (default 1MiB).
    #[serde(with = "serde_size")]
    pub segment_bytes: u64,
    /// Batches kept in memory while the disk refuses spool writes
    /// (default 360: an hour at the default ship interval).
    pub memory_batches: usize,
    /// Batches per second sent while the spool holds a backlog (default 5),
    /// so a recovering server is not stampeded.
    pub replay_rate: f64,
    /// The re-consolidation ladder, finest first (default: after 1h → 1m,
    /// after 6h → 5m, after 24h → 1h).
    pub tiers: Vec<SpoolTier>,
}

/// One `[[spool.tiers]]` entry: batches older than `after` keep their
/// metrics in buckets of `step`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolTier {
    #[serde(with = "serde_duration")]
    pub after: Duration,
    #[serde(with = "serde_duration")]
    pub step: Duration,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        let p = crate::spool::SpoolPolicy::default();
        Self {
            max_bytes: p.max_bytes,
            log_share: p.log_share_pct,
            segment_bytes: p.segment_bytes,
            memory_batches: p.memory_batches,
            replay_rate: 5.0,
            tiers: p
                .tiers
                .iter()
                .map(|t| SpoolTier {
                    after: t.after,
                    step: Duration::from_secs(u64::from(t.step)),
                })
                .collect(),
        }
    }
}

impl SpoolConfig {
    /// The spool's policy (call on a validated configuration).
    pub fn policy(&self) -> crate::spool::SpoolPolicy {
        crate::spool::SpoolPolicy {
            max_bytes: self.max_bytes,
            log_share_pct: self.log_share,
            segment_bytes: self.segment_bytes,
            memory_batches: self.memory_batches,
            tiers: self
                .tiers
                .iter()
                .map(|t| crate::spool::Tier {
                    after: t.after,
                    step: t.step.as_secs() as u32,
                })
                .collect(),
        }
    }

    fn validate(&self, errs: &mut ConfigErrors) {
        if self.max_bytes == 0 {
            errs.push("spool.max_bytes", "must be greater than 0");
        }
        if self.log_share > 100 {
            errs.push("spool.log_share", "is a percentage: at most 100");
        }
        if self.segment_bytes < 4096 {
            errs.push("spool.segment_bytes", "must be at least 4KiB");
        }
        if self.memory_batches == 0 {
            errs.push("spool.memory_batches", "must be at least 1");
        }
        if !(self.replay_rate.is_finite() && self.replay_rate > 0.0) {
            errs.push(
                "spool.replay_rate",
                "must be a positive number of batches per second",
            );
        }
        let mut prev = (Duration::ZERO, u64::from(crate::downsample::STEP));
        for (i, t) in self.tiers.iter().enumerate() {
            let step = t.step.as_secs();
            if t.step.subsec_nanos() != 0
                || step <= prev.1
                || !step.is_multiple_of(prev.1)
                || step > 86_400
            {
                errs.push(
                    format!("spool.tiers[{i}].step"),
                    format!(
                        "must be a whole number of seconds, a multiple of the step before ({}s), and at most 1d",
                        prev.1
                    ),
                );
            }
            if t.after < prev.0 {
                errs.push(
                    format!("spool.tiers[{i}].after"),
                    "must not be before the tier above's",
                );
            }
            prev = (t.after, step.max(prev.1));
        }
    }
}

/// The keys of `agent.toml`, as read. Every value is optional so that the layers
/// above it (env, flags) can supply what the file leaves out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileConfig {
    pub server: Option<Vec<String>>,
    pub enroll_token: Option<Secret>,
    pub ca_file: Option<PathBuf>,
    pub group: Option<String>,
    pub hostname: Option<String>,
    pub instance_id: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub procfs: Option<PathBuf>,
    pub labels: Option<Labels>,
    pub metrics: Option<MetricsConfig>,
    /// The keys `[metrics]` sets (the section is read whole, with defaults).
    pub metrics_keys: Vec<String>,
    pub logs: Option<LogsConfig>,
    pub checks: Option<Vec<CheckConfig>>,
    pub spool: Option<SpoolConfig>,
    pub munin: Option<crate::munin::MuninConfig>,
    pub scrape: Option<Vec<crate::scrape::ScrapeConfig>>,
    pub cloud: Option<crate::cloud::CloudConfig>,
}

/// `server` may be one URL or a list.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl FileConfig {
    /// Parses `agent.toml` text. Each key and each array element is read on its own,
    /// so that one mistake does not hide the next: all errors are returned together.
    pub fn parse(text: &str) -> Result<Self, ConfigErrors> {
        let (cfg, errs) = Self::parse_partial(text);
        errs.into_result().map(|()| cfg)
    }

    /// Like [`FileConfig::parse`], but also returns what could be read when there
    /// are errors (the keys in error are left out), so later checks can run too.
    pub fn parse_partial(text: &str) -> (Self, ConfigErrors) {
        let mut errs = ConfigErrors::default();
        let table: toml::Table = match toml::from_str(text) {
            Ok(t) => t,
            Err(e) => {
                errs.push("(syntax)", e.to_string().trim().replace('\n', " "));
                return (Self::default(), errs);
            }
        };
        let mut cfg = FileConfig::default();
        for (key, value) in table {
            match key.as_str() {
                "server" => {
                    cfg.server = field::<OneOrMany>(&key, value, &mut errs).map(|v| match v {
                        OneOrMany::One(s) => vec![s],
                        OneOrMany::Many(v) => v,
                    })
                }
                "enroll_token" => cfg.enroll_token = field(&key, value, &mut errs),
                "ca_file" => cfg.ca_file = field(&key, value, &mut errs),
                "group" => cfg.group = field(&key, value, &mut errs),
                "hostname" => cfg.hostname = field(&key, value, &mut errs),
                "instance_id" => cfg.instance_id = field(&key, value, &mut errs),
                "state_dir" => cfg.state_dir = field(&key, value, &mut errs),
                "procfs" => cfg.procfs = field(&key, value, &mut errs),
                "labels" => cfg.labels = field(&key, value, &mut errs),
                "metrics" => {
                    if let Some(t) = value.as_table() {
                        cfg.metrics_keys = t.keys().cloned().collect();
                    }
                    cfg.metrics = section(&key, value, &mut errs);
                }
                "logs" => cfg.logs = Some(parse_logs(value, &mut errs)),
                "checks" => cfg.checks = array(&key, value, &mut errs),
                "spool" => cfg.spool = section(&key, value, &mut errs),
                "munin" => cfg.munin = section(&key, value, &mut errs),
                "scrape" => cfg.scrape = array(&key, value, &mut errs),
                "cloud" => cfg.cloud = section(&key, value, &mut errs),
                _ => errs.push(
                    key.as_str(),
                    "unknown key (expected one of server, enroll_token, ca_file, group, hostname, \
                     instance_id, state_dir, procfs, labels, metrics, logs, checks, spool, munin, scrape, cloud)",
                ),
            }
        }
        (cfg, errs)
    }

    /// This file's keys over `lower`'s, for the keys user-data may set
    /// (`server`, `enroll_token`, `group`, `labels` merged key by key).
    pub fn over(mut self, lower: FileConfig) -> FileConfig {
        self.server = self.server.or(lower.server);
        self.enroll_token = self.enroll_token.or(lower.enroll_token);
        self.group = self.group.or(lower.group);
        self.labels = match (lower.labels, self.labels) {
            (Some(mut under), Some(over)) => {
                under.extend(over);
                Some(under)
            }
            (under, over) => over.or(under),
        };
        self
    }

    pub fn read(path: &Path) -> Result<Self, ConfigErrors> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text),
            Err(e) => {
                let mut errs = ConfigErrors::default();
                errs.push("config", format!("cannot read {}: {e}", path.display()));
                Err(errs)
            }
        }
    }
}

fn parse_logs(value: toml::Value, errs: &mut ConfigErrors) -> LogsConfig {
    let mut logs = LogsConfig::default();
    let toml::Value::Table(table) = value else {
        errs.push("logs", "must be a table");
        return logs;
    };
    for (key, value) in table {
        let path = format!("logs.{key}");
        match key.as_str() {
            "files" => logs.files = array(&path, value, errs).unwrap_or_default(),
            "syslog" => logs.syslog = section(&path, value, errs).unwrap_or_default(),
            "filter" => logs.filter = section(&path, value, errs).unwrap_or_default(),
            "max_line_bytes" => {
                if let Some(Size(v)) = field(&path, value, errs) {
                    logs.max_line_bytes = v;
                }
            }
            "max_backlog_bytes" => {
                if let Some(Size(v)) = field(&path, value, errs) {
                    logs.max_backlog_bytes = v;
                }
            }
            "poll_interval" => {
                if let Some(Dur(v)) = field(&path, value, errs) {
                    logs.poll_interval = v;
                }
            }
            _ => errs.push(
                path,
                "unknown key (expected files, syslog, filter, max_line_bytes, \
                 max_backlog_bytes or poll_interval)",
            ),
        }
    }
    logs
}

/// A size key read alone (`"64KiB"` or bytes).
#[derive(Deserialize)]
#[serde(transparent)]
struct Size(#[serde(with = "serde_size")] u64);

/// A duration key read alone (`"250ms"`).
#[derive(Deserialize)]
#[serde(transparent)]
struct Dur(#[serde(with = "serde_duration")] Duration);

/// Reads one value, recording an error under `key` when it does not fit.
fn field<T: DeserializeOwned>(key: &str, value: toml::Value, errs: &mut ConfigErrors) -> Option<T> {
    match value.try_into() {
        Ok(v) => Some(v),
        Err(e) => {
            errs.push(key, one_line(&e));
            None
        }
    }
}

/// Reads a table section. When it does not fit, each of its keys is tried alone
/// (the section structs default every field) to report every bad key by name.
fn section<T: DeserializeOwned>(
    key: &str,
    value: toml::Value,
    errs: &mut ConfigErrors,
) -> Option<T> {
    match value.clone().try_into() {
        Ok(v) => Some(v),
        Err(e) => {
            match value {
                toml::Value::Table(table) => {
                    for (k, v) in table {
                        let single: toml::Table = [(k.clone(), v)].into_iter().collect();
                        if let Err(e) = toml::Value::Table(single).try_into::<T>() {
                            errs.push(format!("{key}.{k}"), one_line(&e));
                        }
                    }
                }
                _ => errs.push(key, one_line(&e)),
            }
            None
        }
    }
}

/// Reads an array of tables, each element as a [`section`] of its own.
fn array<T: DeserializeOwned>(
    key: &str,
    value: toml::Value,
    errs: &mut ConfigErrors,
) -> Option<Vec<T>> {
    let toml::Value::Array(items) = value else {
        errs.push(key, "must be an array of tables ([[...]])");
        return None;
    };
    let before = errs.0.len();
    let out: Vec<T> = items
        .into_iter()
        .enumerate()
        .filter_map(|(i, item)| section(&format!("{key}[{i}]"), item, errs))
        .collect();
    (errs.0.len() == before).then_some(out)
}

use metrolog_protocol::settings::one_line;

/// Values given on the command line or in the environment; `None` = not given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    pub servers: Vec<String>,
    pub enroll_token: Option<Secret>,
    /// `ca_file` (`--ca-file`, `METROLOG_AGENT_CA_FILE`).
    pub ca_file: Option<PathBuf>,
    pub group: Option<String>,
    pub hostname: Option<String>,
    pub instance_id: Option<String>,
    /// `k=v` pairs, merged over the file's labels.
    pub labels: Vec<String>,
    pub state_dir: Option<PathBuf>,
    pub config: Option<PathBuf>,
    pub procfs: Option<PathBuf>,
    pub sample_interval: Option<String>,
    pub ship_interval: Option<String>,
    /// `cloud.metadata_url` (`METROLOG_AGENT_METADATA_URL`).
    pub metadata_url: Option<String>,
}

impl Overrides {
    /// Reads the `METROLOG_AGENT_*` variables through `lookup` (the process
    /// environment in the binary, a map in tests). `METROLOG_AGENT_SERVER` and
    /// `METROLOG_AGENT_LABELS` hold comma-separated lists.
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get =
            |name: &str| lookup(&format!("{ENV_PREFIX}{name}")).filter(|v| !v.trim().is_empty());
        let list = |name: &str| {
            get(name)
                .map(|v| {
                    v.split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default()
        };
        Self {
            servers: list("SERVER"),
            enroll_token: get("ENROLL_TOKEN").map(Secret),
            ca_file: get("CA_FILE").map(PathBuf::from),
            group: get("GROUP"),
            hostname: get("HOSTNAME"),
            instance_id: get("INSTANCE_ID"),
            labels: list("LABELS"),
            state_dir: get("STATE_DIR").map(PathBuf::from),
            config: get("CONFIG").map(PathBuf::from),
            procfs: get("PROCFS").map(PathBuf::from),
            sample_interval: get("SAMPLE_INTERVAL"),
            ship_interval: get("SHIP_INTERVAL"),
            metadata_url: get("METADATA_URL"),
        }
    }

    /// `self` where given, else `lower`.
    fn over(self, lower: Overrides) -> Overrides {
        Overrides {
            servers: if self.servers.is_empty() {
                lower.servers
            } else {
                self.servers
            },
            enroll_token: self.enroll_token.or(lower.enroll_token),
            ca_file: self.ca_file.or(lower.ca_file),
            group: self.group.or(lower.group),
            hostname: self.hostname.or(lower.hostname),
            instance_id: self.instance_id.or(lower.instance_id),
            // Labels merge key by key: apply the lower layer first.
            labels: lower.labels.into_iter().chain(self.labels).collect(),
            state_dir: self.state_dir.or(lower.state_dir),
            config: self.config.or(lower.config),
            procfs: self.procfs.or(lower.procfs),
            sample_interval: self.sample_interval.or(lower.sample_interval),
            ship_interval: self.ship_interval.or(lower.ship_interval),
            metadata_url: self.metadata_url.or(lower.metadata_url),
        }
    }
}

/// Builds the configuration from its layers: `flags` over `env` over the file
/// (named by either, when given) over the defaults. Returns every error found,
/// but does not [`AgentConfig::validate`] the result.
pub fn load(flags: Overrides, env: Overrides) -> Result<AgentConfig, ConfigErrors> {
    load_under(flags, env, FileConfig::default())
}

/// [`load`] with `under` (agent settings from cloud user-data) layered
/// between the file and the defaults.
pub fn load_under(
    flags: Overrides,
    env: Overrides,
    under: FileConfig,
) -> Result<AgentConfig, ConfigErrors> {
    let config = flags.config.clone().or(env.config.clone());
    let file = match &config {
        Some(path) => FileConfig::read(path)?,
        None => FileConfig::default(),
    };
    let origins = Origins::of(&flags, &env, &file, &under);
    let mut cfg = merge(flags.over(env), file.over(under))?;
    cfg.origins = origins;
    Ok(cfg)
}

/// Where a value of the effective configuration came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Origin {
    #[default]
    Default,
    File,
    Env,
    Flag,
    /// The `#metrolog-agent` user-data of the cloud instance.
    UserData,
    /// The server's `[[agents]]` section for the agent's group.
    Server,
}

impl Origin {
    pub fn name(self) -> &'static str {
        match self {
            Origin::Default => "default",
            Origin::File => "file",
            Origin::Env => "env",
            Origin::Flag => "flag",
            Origin::UserData => "cloud user-data",
            Origin::Server => "server",
        }
    }

    /// Set by the agent's own flags, environment, file or user-data: the
    /// server's value does not apply over it.
    pub fn is_local(self) -> bool {
        !matches!(self, Origin::Default | Origin::Server)
    }
}

/// The [`Origin`] of each key set by a layer (`group`, `labels.zone`,
/// `metrics.ship_interval`, `munin`, …); a key not listed is a default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origins(pub std::collections::BTreeMap<String, Origin>);

impl Origins {
    pub fn get(&self, key: &str) -> Origin {
        self.0.get(key).copied().unwrap_or_default()
    }

    /// The highest layer that sets each key.
    fn of(flags: &Overrides, env: &Overrides, file: &FileConfig, under: &FileConfig) -> Self {
        let mut out = std::collections::BTreeMap::new();
        let mut set = |key: &str, by: [bool; 4]| {
            let layers = [Origin::Flag, Origin::Env, Origin::File, Origin::UserData];
            if let Some(i) = by.iter().position(|b| *b) {
                out.insert(key.to_string(), layers[i]);
            }
        };
        let m = |key: &str| file.metrics_keys.iter().any(|k| k == key);
        set(
            "server",
            [
                !flags.servers.is_empty(),
                !env.servers.is_empty(),
                file.server.is_some(),
                under.server.is_some(),
            ],
        );
        macro_rules! one {
            ($key:literal, $field:ident) => {
                set(
                    $key,
                    [
                        flags.$field.is_some(),
                        env.$field.is_some(),
                        file.$field.is_some(),
                        under.$field.is_some(),
                    ],
                )
            };
        }
        one!("enroll_token", enroll_token);
        one!("ca_file", ca_file);
        one!("group", group);
        one!("hostname", hostname);
        one!("instance_id", instance_id);
        one!("state_dir", state_dir);
        one!("procfs", procfs);
        set(
            "metrics.sample_interval",
            [
                flags.sample_interval.is_some(),
                env.sample_interval.is_some(),
                m("sample_interval"),
                false,
            ],
        );
        set(
            "metrics.ship_interval",
            [
                flags.ship_interval.is_some(),
                env.ship_interval.is_some(),
                m("ship_interval"),
                false,
            ],
        );
        for (key, in_file) in [
            ("logs", file.logs.is_some()),
            ("checks", file.checks.is_some()),
            ("spool", file.spool.is_some()),
            ("munin", file.munin.is_some()),
            ("scrape", file.scrape.is_some()),
            ("cloud", file.cloud.is_some()),
        ] {
            set(key, [false, false, in_file, false]);
        }
        let label_keys = |pairs: &[String]| -> Vec<String> {
            pairs
                .iter()
                .filter_map(|p| p.split_once('=').map(|(k, _)| k.trim().to_string()))
                .collect()
        };
        let (lf, le) = (label_keys(&flags.labels), label_keys(&env.labels));
        let mut keys: Vec<String> = lf.iter().chain(&le).cloned().collect();
        for l in [&file.labels, &under.labels].into_iter().flatten() {
            keys.extend(l.keys().cloned());
        }
        for k in keys {
            set(
                &format!("labels.{k}"),
                [
                    lf.contains(&k),
                    le.contains(&k),
                    file.labels.as_ref().is_some_and(|l| l.contains_key(&k)),
                    under.labels.as_ref().is_some_and(|l| l.contains_key(&k)),
                ],
            );
        }
        Self(out)
    }
}

fn merge(top: Overrides, file: FileConfig) -> Result<AgentConfig, ConfigErrors> {
    let mut errs = ConfigErrors::default();
    let mut cfg = AgentConfig::new(
        if top.servers.is_empty() {
            file.server.unwrap_or_default()
        } else {
            top.servers
        },
        top.enroll_token.or(file.enroll_token),
    );
    cfg.ca_file = top.ca_file.or(file.ca_file);
    cfg.group = top.group.or(file.group);
    cfg.hostname = top.hostname.or(file.hostname);
    cfg.instance_id = top.instance_id.or(file.instance_id);
    cfg.state_dir = top.state_dir.or(file.state_dir);
    if let Some(p) = top.procfs.or(file.procfs) {
        cfg.procfs = p;
    }
    cfg.labels = file.labels.unwrap_or_default();
    for pair in &top.labels {
        match pair.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                cfg.labels
                    .insert(k.trim().to_string(), v.trim().to_string());
            }
            _ => errs.push("labels", format!("{pair:?} is not of the form key=value")),
        }
    }
    cfg.metrics = file.metrics.unwrap_or_default();
    for (key, given, slot) in [
        (
            "metrics.sample_interval",
            top.sample_interval,
            &mut cfg.metrics.sample_interval,
        ),
        (
            "metrics.ship_interval",
            top.ship_interval,
            &mut cfg.metrics.ship_interval,
        ),
    ] {
        if let Some(text) = given {
            match parse_duration(&text) {
                Ok(d) => *slot = d,
                Err(e) => errs.push(key, e.to_string()),
            }
        }
    }
    cfg.logs = file.logs.unwrap_or_default();
    cfg.checks = file.checks.unwrap_or_default();
    cfg.spool = file.spool.unwrap_or_default();
    cfg.munin = file.munin;
    cfg.scrape = file.scrape.unwrap_or_default();
    cfg.cloud = file.cloud.unwrap_or_default();
    if let Some(url) = top.metadata_url {
        cfg.cloud.metadata_url = Some(url);
    }
    errs.into_result().map(|()| cfg)
}

/// What `metrolog-agent check-config FILE` does: read the file, layer the
/// environment over it as a run would, and validate the result.
///
/// Reports parse errors and the checks of everything else together; a key that
/// could not be read is reported once, not again as missing.
pub fn check_file(path: &Path, env: Overrides) -> Result<AgentConfig, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        let mut errs = ConfigErrors::default();
        errs.push("config", format!("cannot read {}: {e}", path.display()));
        errs
    })?;
    let (file, mut errs) = FileConfig::parse_partial(&text);
    if errs.0.iter().any(|e| e.key == "(syntax)") {
        return Err(errs);
    }
    let merged = merge(env, file);
    let later = match &merged {
        Ok(cfg) => cfg.validate().err().unwrap_or_default(),
        Err(e) => e.clone(),
    };
    for e in later.0 {
        if !errs.0.iter().any(|r| r.key == e.key) {
            errs.0.push(e);
        }
    }
    match merged {
        Ok(cfg) if errs.is_empty() => Ok(cfg),
        _ => Err(errs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrolog_protocol::{LogFileSettings, LogFilterSettings};
    use std::collections::HashMap;

    const EXAMPLE: &str = include_str!("../../docs/agent.example.toml");

    #[test]
    fn example_file_validates() {
        let file = FileConfig::parse(EXAMPLE).unwrap();
        let cfg = merge(Overrides::default(), file).unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.servers.len(), 2);
        assert_eq!(cfg.metrics.ship_interval, Duration::from_secs(10));
        assert_eq!(cfg.checks[0].name, "disk_root");
        assert_eq!(cfg.spool.max_bytes, 100 << 20);
        assert_eq!(cfg.logs.filter.min_severity, Some(Severity::Info));
        assert_eq!(cfg.labels["zone"], "eu-west-1a");
    }

    #[test]
    fn contract_example_validates() {
        // The agent.toml of SPEC §11, verbatim.
        let text = r#"
server = ["http://10.0.0.5:8080", "http://10.0.0.6:8080"]  # tried in order
enroll_token = "..."
group = "web"
hostname = "web-1"            # optional override of the detected name
instance_id = "i-0abc"        # optional override
state_dir = "/var/lib/metrolog-agent"
[labels]
zone = "eu-west-1a"
[metrics]
sample_interval = "1s"
ship_interval = "10s"
[[logs.files]]
path = "/var/log/nginx/*.log" # glob
app = "nginx"                 # optional app_name for lines that carry none
[logs.syslog]
unix = "/run/metrolog-agent/log.sock"
udp = "127.0.0.1:5140"
[logs.filter]
min_severity = "info"         # emerg … debug
include = ["regex", "..."]
exclude = ["healthcheck"]
[[checks]]
name = "disk_root"
command = ["/usr/lib/nagios/plugins/check_disk", "-w", "20%", "-c", "10%", "-p", "/"]
interval = "60s"
retry_interval = "15s"
timeout = "10s"
max_attempts = 3
[spool]
max_bytes = "100MiB"
"#;
        let cfg = merge(Overrides::default(), FileConfig::parse(text).unwrap()).unwrap();
        cfg.validate().unwrap();
    }

    #[test]
    fn every_error_is_reported_with_its_key() {
        let text = r#"
server = "http://a:1"
colour = "blue"
[metrics]
sample_interval = "fast"
ship_interval = "often"
[logs.filter]
min_severity = "loud"
[[checks]]
name = "ok"
command = ["/bin/true"]
[[checks]]
name = "bad"
command = ["/bin/true"]
interval = 60
[spool]
max_bytes = "lots"
"#;
        let errs = FileConfig::parse(text).unwrap_err();
        let keys: Vec<&str> = errs.0.iter().map(|e| e.key.as_str()).collect();
        for key in [
            "colour",
            "metrics.sample_interval",
            "metrics.ship_interval",
            "logs.filter.min_severity",
            "checks[1].interval",
            "spool.max_bytes",
        ] {
            assert!(keys.contains(&key), "{key} missing from {errs}");
        }
        assert!(errs.to_string().contains("\"fast\""), "{errs}");
    }

    #[test]
    fn semantic_errors_are_all_reported() {
        let text = r#"
server = ["ftp://x", "not a url"]
enroll_token = ""
[labels]
"Bad Key" = "x"
[metrics]
sample_interval = "10ms"
[[checks]]
command = []
max_attempts = 0
"#;
        let cfg = merge(Overrides::default(), FileConfig::parse(text).unwrap()).unwrap();
        let errs = cfg.validate().unwrap_err();
        let keys: Vec<&str> = errs.0.iter().map(|e| e.key.as_str()).collect();
        for key in [
            "server[0]",
            "server[1]",
            "enroll_token",
            "labels",
            "metrics.sample_interval",
            "checks[0].name",
            "checks[0].command",
            "checks[0].max_attempts",
        ] {
            assert!(keys.contains(&key), "{key} missing from {errs}");
        }
    }

    #[test]
    fn a_check_name_too_long_for_a_series_is_refused() {
        let c = CheckConfig {
            name: "c".repeat(65),
            command: vec!["/bin/true".into()],
            ..CheckConfig::default()
        };
        let errs = c.problems("checks[0]").to_string();
        assert!(errs.starts_with("checks[0].name: "), "{errs}");
        assert!(errs.contains("at most 64 bytes"), "{errs}");
        let ok = CheckConfig {
            name: "c".repeat(64),
            ..c
        };
        assert!(ok.problems("checks[0]").is_empty());
    }

    #[test]
    fn unknown_keys_are_rejected_at_every_level() {
        for (text, key) in [
            ("sever = \"http://a\"", "sever"),
            ("[metrics]\nsample = \"1s\"", "metrics.sample"),
            ("[logs]\nfile = 1", "logs.file"),
            (
                "[[logs.files]]\npath = \"/x\"\nglob = true",
                "logs.files[0].glob",
            ),
            ("[[checks]]\nname = \"a\"\ncmd = [\"x\"]", "checks[0].cmd"),
            ("[spool]\ndir = \"/x\"", "spool.dir"),
        ] {
            let errs = FileConfig::parse(text).unwrap_err();
            assert_eq!(errs.0.len(), 1, "{text}: {errs}");
            assert_eq!(errs.0[0].key, key, "{errs}");
            assert!(errs.0[0].message.contains("unknown"), "{errs}");
        }
    }

    #[test]
    fn flag_beats_env_beats_file_beats_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(
            &path,
            r#"
server = "http://file:1"
group = "file-group"
hostname = "file-host"
instance_id = "file-id"
[labels]
zone = "file-zone"
role = "file-role"
[metrics]
ship_interval = "30s"
"#,
        )
        .unwrap();
        let env: HashMap<String, String> = [
            ("METROLOG_AGENT_SERVER", "http://env:1, http://env:2"),
            ("METROLOG_AGENT_GROUP", "env-group"),
            ("METROLOG_AGENT_HOSTNAME", "env-host"),
            ("METROLOG_AGENT_ENROLL_TOKEN", "env-token"),
            ("METROLOG_AGENT_LABELS", "zone=env-zone"),
            ("METROLOG_AGENT_CONFIG", path.to_str().unwrap()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let env = Overrides::from_env(|k| env.get(k).cloned());
        let flags = Overrides {
            group: Some("flag-group".into()),
            labels: vec!["role=flag-role".into()],
            sample_interval: Some("2s".into()),
            ..Overrides::default()
        };
        let cfg = load(flags, env).unwrap();
        assert_eq!(cfg.group.as_deref(), Some("flag-group"));
        assert_eq!(cfg.hostname.as_deref(), Some("env-host"));
        assert_eq!(cfg.instance_id.as_deref(), Some("file-id"));
        assert_eq!(cfg.servers, ["http://env:1", "http://env:2"]);
        assert_eq!(cfg.enroll_token.as_ref().unwrap().expose(), "env-token");
        assert_eq!(cfg.labels["zone"], "env-zone");
        assert_eq!(cfg.labels["role"], "flag-role");
        assert_eq!(cfg.metrics.sample_interval, Duration::from_secs(2));
        assert_eq!(cfg.metrics.ship_interval, Duration::from_secs(30));
        assert_eq!(cfg.procfs, PathBuf::from("/proc"));
        cfg.validate().unwrap();
    }

    #[test]
    fn origins_name_the_layer_that_set_each_value_and_local_ones_win() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(
            &path,
            "server = \"http://file:1\"\ngroup = \"file-group\"\n[labels]\nzone = \"a\"\n\
             [metrics]\nship_interval = \"10s\"\n[[checks]]\nname = \"x\"\ncommand = [\"/bin/true\"]\n",
        )
        .unwrap();
        let env = Overrides {
            hostname: Some("env-host".into()),
            labels: vec!["role=env".into()],
            config: Some(path),
            ..Overrides::default()
        };
        let flags = Overrides {
            sample_interval: Some("2s".into()),
            ..Overrides::default()
        };
        let user_data = FileConfig::parse(
            "group = \"ud-group\"\nenroll_token = \"t\"\n[labels]\nzone = \"b\"\nrack = \"r1\"",
        )
        .unwrap();
        let cfg = load_under(flags, env, user_data).unwrap();
        let o = &cfg.origins;
        assert_eq!(cfg.group.as_deref(), Some("file-group"));
        for (key, origin) in [
            ("server", Origin::File),
            ("group", Origin::File),
            ("enroll_token", Origin::UserData),
            ("hostname", Origin::Env),
            ("metrics.sample_interval", Origin::Flag),
            // Set in the file to the default's value: still set, still wins.
            ("metrics.ship_interval", Origin::File),
            ("labels.zone", Origin::File),
            ("labels.role", Origin::Env),
            ("labels.rack", Origin::UserData),
            ("checks", Origin::File),
            ("state_dir", Origin::Default),
            ("munin", Origin::Default),
        ] {
            assert_eq!(o.get(key), origin, "{key}");
        }
        assert!(o.get("metrics.ship_interval").is_local());
        assert!(!o.get("state_dir").is_local());

        // The server's intervals apply only where nothing local is set.
        let local = crate::ship::Intervals {
            sample: Duration::from_secs(2),
            ship: Duration::from_secs(10),
        };
        let pushed = metrolog_protocol::AgentSettings {
            sample_interval_ms: Some(5000),
            ship_interval_ms: Some(30_000),
            ..Default::default()
        };
        assert_eq!(local.with_pinned(&pushed, [true, true]), local);
        assert_eq!(
            local.with_pinned(&pushed, [true, false]).ship,
            Duration::from_secs(30)
        );
        assert_eq!(
            local.with_pinned(&pushed, [false, false]).sample,
            Duration::from_secs(5)
        );
    }

    #[test]
    fn a_local_munin_wins_whole_and_local_scrape_targets_win_by_name() {
        use crate::scrape::ScrapeConfig;
        let target = |name: &str, url: &str| ScrapeConfig {
            name: name.into(),
            url: url.into(),
            ..ScrapeConfig::default()
        };
        let pushed = metrolog_protocol::AgentSettings {
            munin: Some(crate::munin::MuninConfig {
                interval: Duration::from_secs(30),
                ..Default::default()
            }),
            scrape: Some(vec![
                target("node", "http://server:9100/metrics"),
                target("nginx", "http://127.0.0.1:9113/metrics"),
                target("Bad Name", "http://127.0.0.1:1/metrics"),
            ]),
            ..Default::default()
        };
        let mut cfg = AgentConfig::new(vec!["http://a:1".into()], None);
        let (m, _) = cfg.munin_with(Some(&pushed));
        let (m, origin) = m.unwrap();
        assert_eq!(
            (m.interval, origin),
            (Duration::from_secs(30), Origin::Server)
        );
        let (targets, problems) = cfg.scrape_with(Some(&pushed));
        assert_eq!(targets.len(), 2, "the invalid one is left out");
        assert_eq!(problems.0.len(), 1, "{problems}");

        cfg = merge(
            Overrides::default(),
            FileConfig::parse(
                "[munin]\ninterval = \"2m\"\n[[scrape]]\nname = \"node\"\nurl = \"http://127.0.0.1:9100/metrics\"\n",
            )
            .unwrap(),
        )
        .unwrap();
        cfg.origins.0.insert("munin".into(), Origin::File);
        let (m, _) = cfg.munin_with(Some(&pushed));
        assert_eq!(m.unwrap().0.interval, Duration::from_secs(120));
        let (targets, _) = cfg.scrape_with(Some(&pushed));
        let got: Vec<(&str, &str)> = targets
            .iter()
            .map(|(t, _)| (t.name.as_str(), t.url.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("node", "http://127.0.0.1:9100/metrics"),
                ("nginx", "http://127.0.0.1:9113/metrics")
            ]
        );
        assert_eq!(cfg.munin_with(None).0.map(|(_, o)| o), Some(Origin::File));
    }

    #[test]
    fn bad_flags_are_reported() {
        let flags = Overrides {
            servers: vec!["http://a:1".into()],
            labels: vec!["novalue".into()],
            ship_interval: Some("soon".into()),
            ..Overrides::default()
        };
        let errs = load(flags, Overrides::default()).unwrap_err();
        let keys: Vec<&str> = errs.0.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["labels", "metrics.ship_interval"]);
    }

    #[test]
    fn logs_keys_are_checked() {
        let text = r#"
server = "http://a:1"
[logs]
max_line_bytes = "128KiB"
poll_interval = "100ms"
[[logs.files]]
path = "relative/*.log"
[[logs.files]]
path = "/var/log/app.log"
timezone = "+25:00"
[logs.syslog]
udp = "0.0.0.0:5140"
unix = "/run/x.sock"
[logs.filter]
include = ["(unclosed"]
"#;
        let cfg = merge(Overrides::default(), FileConfig::parse(text).unwrap()).unwrap();
        assert_eq!(cfg.logs.max_line_bytes, 128 << 10);
        assert_eq!(cfg.logs.poll_interval, Duration::from_millis(100));
        let errs = cfg.validate().unwrap_err();
        let keys: Vec<&str> = errs.0.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "logs.files[0].path",
                "logs.files[1].timezone",
                "logs.syslog.udp",
                "logs.filter.include[0]"
            ],
            "{errs}"
        );
        assert!(
            errs.to_string().contains("not a loopback address"),
            "{errs}"
        );
        for ok in ["127.0.0.1:5140", "[::1]:5140"] {
            let mut logs = LogsConfig::default();
            logs.syslog.udp = Some(ok.into());
            let mut errs = ConfigErrors::default();
            logs.validate(&mut errs);
            assert!(errs.is_empty(), "{ok}: {errs}");
        }
    }

    #[test]
    fn server_files_add_to_local_ones_and_its_filter_fills_an_unset_one() {
        let local = FileConfig::parse(
            r#"
[[logs.files]]
path = "/var/log/app/*.log"
app = "mine"
"#,
        )
        .unwrap()
        .logs
        .unwrap();
        let pushed = LogSettings {
            files: vec![
                LogFileSettings {
                    path: "/var/log/app/*.log".into(),
                    app: Some("theirs".into()),
                    timezone: None,
                },
                LogFileSettings {
                    path: "/var/log/nginx/*.log".into(),
                    app: Some("nginx".into()),
                    timezone: Some("+01:00".into()),
                },
            ],
            filter: Some(LogFilterSettings {
                min_severity: Some(metrolog_protocol::syslog::Severity::Info),
                exclude: vec!["healthcheck".into()],
                ..Default::default()
            }),
        };
        assert_eq!(local.with_pushed(None), local);
        let merged = local.with_pushed(Some(&pushed));
        let files: Vec<(&str, Option<&str>)> = merged
            .files
            .iter()
            .map(|f| (f.path.as_str(), f.app.as_deref()))
            .collect();
        assert_eq!(
            files,
            [
                ("/var/log/app/*.log", Some("mine")),
                ("/var/log/nginx/*.log", Some("nginx"))
            ],
            "local first and kept whole; the server's added once"
        );
        assert_eq!(merged.files[1].timezone.as_deref(), Some("+01:00"));
        assert_eq!(merged.filter.min_severity, Some(Severity::Info));
        assert_eq!(merged.filter.exclude, ["healthcheck"]);
        assert!(merged.problems().is_empty(), "{}", merged.problems());

        // A local filter wins whole: nothing of the server's is mixed in.
        let mut own = local.clone();
        own.filter.include = vec!["^GET".into()];
        let merged = own.with_pushed(Some(&pushed));
        assert_eq!(merged.filter, own.filter);
        assert_eq!(merged.files.len(), 2, "files still add up");

        // Nothing local: the server's settings alone.
        let merged = LogsConfig::default().with_pushed(Some(&pushed));
        assert_eq!(merged.files.len(), 2);
        assert!(merged.enabled());
        assert_eq!(merged.files[0].app.as_deref(), Some("theirs"));
    }

    #[test]
    fn secrets_never_print() {
        let mut cfg = AgentConfig::new(vec!["http://a".into()], Some(Secret::new("hunter2")));
        cfg.group = Some("g".into());
        let shown = format!("{cfg:?} {}", cfg.enroll_token.as_ref().unwrap());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("[redacted]"));
    }
}
