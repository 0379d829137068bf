//! The TOML file (`server.toml`), read key by key so that every problem is
//! reported at once with the key it concerns. See `docs/server.example.toml`.

use super::ConfigErrors;
use metrolog_protocol::rrd::{ArchiveSpec, RrdSpec};
use metrolog_protocol::settings::munin::MuninConfig;
use metrolog_protocol::settings::scrape::ScrapeConfig;
use metrolog_protocol::settings::{
    CheckConfig, ConfigErrors as SettingsErrors, IntervalSettings, LogFileConfig, LogFilterConfig,
};
use metrolog_protocol::units::{serde_duration, serde_size};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Everything the file may say. Absent keys keep their defaults.
#[derive(Debug, Clone, Default)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub local_agent: Option<bool>,
    pub hosts: HostsSection,
    pub syslog: SyslogSection,
    pub graphite: GraphiteSection,
    pub retention: RetentionSection,
    pub archives: ArchivesSection,
    pub http: HttpSection,
    pub rules: Vec<crate::alarms::RuleSection>,
    pub notify: Vec<NotifySection>,
    pub scaling: ScalingSection,
    pub agents: Vec<AgentsSection>,
    pub prometheus: crate::prometheus::PrometheusSection,
}

/// `[hosts]`: membership and liveness.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostsSection {
    /// Hosts `left` or `down` this long are removed with their series.
    #[serde(with = "serde_duration")]
    pub expire_after: Duration,
    /// A host silent this long is `down` (default 3 × the agents' 10 s ship interval).
    #[serde(with = "serde_duration")]
    pub liveness_timeout: Duration,
}

impl Default for HostsSection {
    fn default() -> Self {
        Self {
            expire_after: Duration::from_secs(7 * 86400),
            liveness_timeout: Duration::from_secs(30),
        }
    }
}

/// `[syslog]`: the receivers (implemented with the central-logs work).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyslogSection {
    pub udp: Option<String>,
    pub tcp: Option<String>,
    #[serde(with = "serde_size")]
    pub max_line_bytes: u64,
    /// Open TCP connections at most; at the limit a new connection replaces
    /// the one idle longest.
    pub max_connections: usize,
    /// A TCP connection that sends nothing for this long is closed.
    #[serde(with = "serde_duration")]
    pub idle_timeout: Duration,
    /// Syslog over TLS (RFC 5425) listens here, or `off`. Default: off, or
    /// `127.0.0.1:6514` once `tls_cert` and `tls_key` are given.
    pub tls: Option<String>,
    /// PEM certificate chain of the TLS receiver, leaf first.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert` (PKCS#8, RSA or SEC1).
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates: when given, a TLS client must present a
    /// certificate they signed (mutual TLS).
    pub tls_client_ca: Option<PathBuf>,
    /// A TLS handshake not done within this is abandoned (at most `idle_timeout`).
    #[serde(with = "serde_duration")]
    pub tls_handshake_timeout: Duration,
}

impl Default for SyslogSection {
    fn default() -> Self {
        Self {
            udp: None,
            tcp: None,
            max_line_bytes: 64 * 1024,
            max_connections: 512,
            idle_timeout: Duration::from_secs(600),
            tls: None,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            tls_handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// `[graphite]`: Graphite plaintext listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GraphiteSection {
    pub tcp: Option<String>,
    /// Index of the dot-separated path segment that names the host
    /// (`collectd.<host>.cpu-0.percent-idle` → 1).
    pub host_segment: usize,
}

impl Default for GraphiteSection {
    fn default() -> Self {
        Self {
            tcp: None,
            host_segment: 1,
        }
    }
}

/// `[retention]`. Metrics need none: their archives are bounded by construction.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSection {
    pub logs: LogRetention,
    pub alarms: AlarmRetention,
    pub scaling: ScalingRetention,
}

/// `[retention.scaling]`: how long scaling events are kept (at most
/// 100 000 of them in any case).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScalingRetention {
    #[serde(with = "serde_duration")]
    pub max_age: Duration,
}

impl Default for ScalingRetention {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(90 * 86400),
        }
    }
}

/// `[retention.alarms]`: how long alarm transitions (and OK alarms that
/// changed nothing since) are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlarmRetention {
    #[serde(with = "serde_duration")]
    pub max_age: Duration,
}

impl Default for AlarmRetention {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(90 * 86400),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogRetention {
    #[serde(with = "serde_duration")]
    pub max_age: Duration,
    #[serde(with = "serde_size")]
    pub max_bytes: u64,
}

impl Default for LogRetention {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(30 * 86400),
            max_bytes: 10 << 30,
        }
    }
}

/// `[archives]`: the round-robin archives of new series (docs/rrd.md). A series
/// keeps the archives it was created with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchivesSection {
    /// Seconds per primary data point (rrdtool's `--step`). Default: the finest
    /// archive's step.
    #[serde(with = "crate::config::opt_duration")]
    pub base_step: Option<Duration>,
    /// Longest gap between two samples that still counts as known. Default:
    /// 3 × base_step.
    #[serde(with = "crate::config::opt_duration")]
    pub heartbeat: Option<Duration>,
    /// Largest unknown fraction of a consolidated row that leaves it known, in [0, 1).
    pub xff: f64,
    /// The archives, finest first.
    pub ladder: Vec<ArchiveEntry>,
    /// How often the flusher looks for series due to be written.
    #[serde(with = "serde_duration")]
    pub flush_interval: Duration,
    /// How long a series' completed rows wait in memory (and the journal)
    /// before they are written to its chunks: between half of it and all of
    /// it, spread per series, as rrdcached's `-w` and `-z`.
    #[serde(with = "serde_duration")]
    pub write_delay: Duration,
    /// Most series one host (agent, Graphite sender, importer) may have; a new
    /// series beyond it is refused and counted, the existing ones go on.
    pub max_series_per_host: u64,
    /// Most series the server holds in all (each costs memory: docs/fleet-scale.md).
    pub max_series: u64,
    /// Bytes of decoded chunks kept for repeated reads (dashboards, group
    /// fallbacks); 0 keeps none.
    #[serde(with = "serde_size")]
    pub read_cache: u64,
}

/// One archive of `[archives] ladder`: `rows` rows of `step` each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveEntry {
    #[serde(with = "serde_duration")]
    pub step: Duration,
    pub rows: u32,
}

impl Default for ArchivesSection {
    fn default() -> Self {
        let ladder = RrdSpec::default_ladder()
            .archives
            .iter()
            .map(|a| ArchiveEntry {
                step: Duration::from_secs(u64::from(a.step)),
                rows: a.rows,
            })
            .collect();
        Self {
            base_step: None,
            heartbeat: None,
            xff: 0.5,
            ladder,
            flush_interval: Duration::from_secs(10),
            write_delay: Duration::from_secs(300),
            max_series_per_host: crate::store::DEFAULT_MAX_SERIES_PER_HOST,
            max_series: crate::store::DEFAULT_MAX_SERIES,
            read_cache: crate::store::archive::DEFAULT_READ_CACHE,
        }
    }
}

impl ArchivesSection {
    /// The engine's specification, or every problem with it.
    pub fn spec(&self) -> Result<RrdSpec, Vec<String>> {
        let mut problems = Vec::new();
        let mut secs = |what: String, d: Duration| -> u32 {
            if d.subsec_nanos() != 0 || d.is_zero() || d.as_secs() > u64::from(u32::MAX) {
                problems.push(format!(
                    "archives.{what}: {d:?} must be a whole, positive number of seconds"
                ));
                0
            } else {
                d.as_secs() as u32
            }
        };
        let archives: Vec<ArchiveSpec> = self
            .ladder
            .iter()
            .enumerate()
            .map(|(i, a)| ArchiveSpec::new(secs(format!("ladder[{i}].step"), a.step), a.rows))
            .collect();
        let base_step = match self.base_step {
            Some(d) => secs("base_step".into(), d),
            None => archives.first().map_or(0, |a| a.step),
        };
        let heartbeat = match self.heartbeat {
            Some(d) => secs("heartbeat".into(), d),
            None => base_step.saturating_mul(3),
        };
        let spec = RrdSpec {
            base_step,
            heartbeat,
            xff: self.xff,
            archives,
        };
        if problems.is_empty() {
            if let Err(e) = spec.validate() {
                problems.extend(e.problems.into_iter().map(|p| format!("archives: {p}")));
            }
        }
        if problems.is_empty() {
            Ok(spec)
        } else {
            Err(problems)
        }
    }
}

/// `[http]`: limits of the HTTP side.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    /// Largest request body accepted, after decompression (413 beyond).
    #[serde(with = "serde_size")]
    pub max_body_bytes: u64,
    /// Lifetime of a dashboard session.
    #[serde(with = "serde_duration")]
    pub session_ttl: Duration,
    /// Failed logins allowed per user name and client address per minute.
    pub login_attempts_per_minute: u32,
    /// Agent batches read and committed at once; more get 503 with Retry-After
    /// (agents back off and retry), so memory held by batches in flight stays
    /// under this × `max_body_bytes`.
    pub max_concurrent_batches: u32,
    /// PEM certificate chain: with `tls_key`, the API and dashboard are served
    /// over HTTPS only (on `listen`), and session cookies are `Secure`.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert` (PKCS#8, RSA or SEC1).
    pub tls_key: Option<PathBuf>,
}

impl Default for HttpSection {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 << 20,
            session_ttl: Duration::from_secs(12 * 3600),
            login_attempts_per_minute: 5,
            max_concurrent_batches: 64,
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// One `[[notify]]` receiver (checked by `notify::Receiver::parse_all`).
pub use crate::notify::NotifySection;

/// `[scaling]`: policies and hooks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScalingSection {
    pub policies: Vec<PolicySection>,
    pub hooks: Vec<HookSection>,
    /// Most members one event body lists (those not up first); the body's
    /// `members_total` says how many the group has.
    pub max_event_members: usize,
}

impl Default for ScalingSection {
    fn default() -> Self {
        Self {
            policies: Vec::new(),
            hooks: Vec::new(),
            max_event_members: crate::scaling::DEFAULT_MAX_EVENT_MEMBERS,
        }
    }
}

pub use crate::scaling::{HookSection, PolicySection};

/// `[[agents]]`: configuration pushed to the agents of a group. Read key by
/// key ([`parse_agents`]) so that a mistake deep inside (`logs.files[1]`) is
/// reported with its whole key.
#[derive(Debug, Clone, Default)]
pub struct AgentsSection {
    pub group: String,
    pub metrics: IntervalSettings,
    /// Checks pushed to the group, with the keys of the agent's own
    /// `[[checks]]` (the same type, so both sides accept the same values).
    pub checks: Vec<CheckConfig>,
    pub logs: AgentLogs,
    /// `[munin]` pushed to the group (an agent's own `[munin]` wins whole).
    pub munin: Option<MuninConfig>,
    /// `[[scrape]]` targets pushed to the group (an agent's own target of
    /// the same name wins).
    pub scrape: Vec<ScrapeConfig>,
}

/// `logs` of `[[agents]]`: log files and filter pushed to the group, with the
/// keys of the agent's own `[[logs.files]]` and `[logs.filter]` (the same
/// types, so both sides accept the same values). How an agent combines them
/// with its own `[logs]` is in `docs/agent-logs.md`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentLogs {
    #[serde(default)]
    pub files: Vec<LogFileConfig>,
    #[serde(default)]
    pub filter: Option<LogFilterConfig>,
}

const AGENTS_KEYS: &[&str] = &["group", "metrics", "checks", "logs", "munin", "scrape"];

/// Reads `[[agents]]`, every error with its key (`agents[0].logs.files[1]: …`).
/// A check name may be pushed once per group: two sections naming the same
/// check for one group are an error, not a silent override.
fn parse_agents(table: &toml::Table, errors: &mut Vec<String>) -> Vec<AgentsSection> {
    let mut pushed: std::collections::HashMap<(String, String), String> = Default::default();
    let Some(value) = table.get("agents") else {
        return Vec::new();
    };
    let Some(items) = value.as_array() else {
        errors.push("agents: expected an array of tables ([[agents]])".into());
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("agents[{i}]");
        let Some(item) = item.as_table() else {
            errors.push(format!("{at}: expected a table"));
            continue;
        };
        let before = errors.len();
        let mut section = AgentsSection::default();
        for (key, value) in item {
            let path = format!("{at}.{key}");
            match key.as_str() {
                "group" => section.group = value_as(value, &path, errors).unwrap_or_default(),
                "metrics" => section.metrics = value_as(value, &path, errors).unwrap_or_default(),
                "checks" => section.checks = list_as(value, &path, errors),
                "logs" => section.logs = parse_agent_logs(value, &path, errors),
                "munin" => section.munin = value_as(value, &path, errors),
                "scrape" => section.scrape = list_as(value, &path, errors),
                _ => errors.push(format!(
                    "{path}: unknown key (expected one of: {})",
                    AGENTS_KEYS.join(", ")
                )),
            }
        }
        if !item.contains_key("group") {
            errors.push(format!(
                "{at}.group: missing (the group whose agents get this)"
            ));
        } else if section.group.trim().is_empty() && errors.len() == before {
            errors.push(format!("{at}.group: must not be empty"));
        }
        if errors.len() == before {
            // The checks an agent makes of its own file (the same types), so
            // that what is pushed is what an agent accepts: globs, regexes,
            // app names, offsets, intervals.
            let mut problems = SettingsErrors::default();
            for (j, f) in section.logs.files.iter().enumerate() {
                f.validate(&format!("logs.files[{j}]"), &mut problems);
            }
            if let Some(filter) = &section.logs.filter {
                filter.validate("logs.filter", &mut problems);
            }
            section.metrics.validate("metrics", &mut problems);
            if let Some(m) = &section.munin {
                m.validate(&mut problems);
            }
            metrolog_protocol::settings::scrape::validate_all(&section.scrape, &mut problems);
            for t in &section.scrape {
                if t.name.is_empty() {
                    continue;
                }
                let here = format!("{at}.scrape");
                let key = (section.group.clone(), format!("scrape:{}", t.name));
                if let Some(first) = pushed.get(&key) {
                    errors.push(format!(
                        "{here}: target {:?} is already pushed to group {:?} by {first}",
                        t.name, section.group
                    ));
                } else {
                    pushed.insert(key, here);
                }
            }
            for e in problems.0 {
                errors.push(format!("{at}.{}: {}", e.key, e.message));
            }
            for (j, c) in section.checks.iter().enumerate() {
                let key = format!("checks[{j}]");
                for e in c.problems(&key).0 {
                    errors.push(format!("{at}.{}: {}", e.key, e.message));
                }
                if c.name.is_empty() {
                    continue;
                }
                let here = format!("{at}.{key}");
                if let Some(first) = pushed.get(&(section.group.clone(), c.name.clone())) {
                    errors.push(format!(
                        "{here}.name: {:?} is already pushed to group {:?} by {first}",
                        c.name, section.group
                    ));
                } else {
                    pushed.insert((section.group.clone(), c.name.clone()), here);
                }
            }
        }
        if errors.len() == before {
            out.push(section);
        }
    }
    out
}

fn parse_agent_logs(value: &toml::Value, at: &str, errors: &mut Vec<String>) -> AgentLogs {
    let mut logs = AgentLogs::default();
    let Some(table) = value.as_table() else {
        errors.push(format!("{at}: expected a table"));
        return logs;
    };
    for (key, value) in table {
        let path = format!("{at}.{key}");
        match key.as_str() {
            "files" => logs.files = list_as(value, &path, errors),
            "filter" => logs.filter = value_as(value, &path, errors),
            _ => errors.push(format!("{path}: unknown key (expected files, filter)")),
        }
    }
    logs
}

fn value_as<T: DeserializeOwned>(
    value: &toml::Value,
    at: &str,
    errors: &mut Vec<String>,
) -> Option<T> {
    match value.clone().try_into::<T>() {
        Ok(v) => Some(v),
        Err(e) => {
            errors.push(format!("{at}: {}", one_line(&e.to_string())));
            None
        }
    }
}

fn list_as<T: DeserializeOwned>(value: &toml::Value, at: &str, errors: &mut Vec<String>) -> Vec<T> {
    let Some(items) = value.as_array() else {
        errors.push(format!("{at}: expected an array"));
        return Vec::new();
    };
    items
        .iter()
        .enumerate()
        .filter_map(|(i, v)| value_as(v, &format!("{at}[{i}]"), errors))
        .collect()
}

const TOP_KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "database_url",
    "local_agent",
    "hosts",
    "syslog",
    "graphite",
    "retention",
    "archives",
    "http",
    "rules",
    "notify",
    "scaling",
    "agents",
    "prometheus",
];

impl FileConfig {
    pub fn read(path: &Path) -> Result<Self, ConfigErrors> {
        let (cfg, errors) = Self::read_partial(path);
        if errors.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// Reads what can be read, with every problem found; keys in error keep
    /// their defaults so that later checks can still run.
    pub fn read_partial(path: &Path) -> (Self, Vec<String>) {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse_partial(&text),
            Err(e) => (
                Self::default(),
                vec![format!("cannot read config file {}: {e}", path.display())],
            ),
        }
    }

    /// Parses the file, collecting every error with its key.
    pub fn parse(text: &str) -> Result<Self, ConfigErrors> {
        let (cfg, errors) = Self::parse_partial(text);
        if errors.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigErrors(errors))
        }
    }

    pub fn parse_partial(text: &str) -> (Self, Vec<String>) {
        let table: toml::Table = match text.parse::<toml::Table>() {
            Ok(t) => t,
            Err(e) => return (Self::default(), vec![format!("TOML syntax: {e}")]),
        };
        let mut errors = Vec::new();
        for key in table.keys() {
            if !TOP_KEYS.contains(&key.as_str()) {
                errors.push(format!(
                    "{key}: unknown key (expected one of: {})",
                    TOP_KEYS.join(", ")
                ));
            }
        }
        let mut cfg = FileConfig {
            listen: take(&table, "listen", &mut errors),
            data_dir: take(&table, "data_dir", &mut errors),
            database_url: take(&table, "database_url", &mut errors),
            local_agent: take(&table, "local_agent", &mut errors),
            hosts: take(&table, "hosts", &mut errors).unwrap_or_default(),
            syslog: take(&table, "syslog", &mut errors).unwrap_or_default(),
            graphite: take(&table, "graphite", &mut errors).unwrap_or_default(),
            retention: take(&table, "retention", &mut errors).unwrap_or_default(),
            archives: take(&table, "archives", &mut errors).unwrap_or_default(),
            http: take(&table, "http", &mut errors).unwrap_or_default(),
            rules: take_list(&table, "rules", &mut errors),
            notify: take_list(&table, "notify", &mut errors),
            scaling: ScalingSection::default(),
            agents: parse_agents(&table, &mut errors),
            prometheus: take(&table, "prometheus", &mut errors).unwrap_or_default(),
        };
        if let Some(scaling) = table.get("scaling") {
            match scaling.as_table() {
                Some(t) => {
                    for key in t.keys() {
                        if !["policies", "hooks", "max_event_members"].contains(&key.as_str()) {
                            errors.push(format!(
                                "scaling.{key}: unknown key (expected policies, hooks, max_event_members)"
                            ));
                        }
                    }
                    cfg.scaling.policies =
                        take_list(t, "policies", &mut errors).into_iter().collect();
                    cfg.scaling.hooks = take_list(t, "hooks", &mut errors);
                    if let Some(n) = take::<usize>(t, "max_event_members", &mut errors) {
                        cfg.scaling.max_event_members = n;
                    }
                    fix_prefix(
                        &mut errors,
                        "max_event_members",
                        "scaling.max_event_members",
                    );
                    fix_prefix(&mut errors, "policies", "scaling.policies");
                    fix_prefix(&mut errors, "hooks", "scaling.hooks");
                }
                None => errors.push("scaling: expected a table".into()),
            }
        }
        cfg.check(&mut errors);
        (cfg, errors)
    }

    /// What rules are checked against: the archives' base step and the
    /// liveness timeout.
    pub fn rule_context(&self) -> crate::alarms::RuleContext {
        crate::alarms::RuleContext {
            base_step: self
                .archives
                .spec()
                .map(|s| i64::from(s.base_step))
                .unwrap_or(10),
            liveness_timeout: i64::try_from(self.hosts.liveness_timeout.as_secs()).unwrap_or(30),
        }
    }

    /// Checks that span keys.
    fn check(&self, errors: &mut Vec<String>) {
        if self.archives.max_series_per_host == 0 {
            errors.push("archives.max_series_per_host: must be at least 1".into());
        }
        if self.archives.max_series == 0 {
            errors.push("archives.max_series: must be at least 1".into());
        }
        if self.http.max_concurrent_batches == 0 {
            errors.push("http.max_concurrent_batches: must be at least 1".into());
        }
        if self.http.max_body_bytes < 1024 {
            errors.push("http.max_body_bytes: must be at least 1KiB".into());
        }
        if self.syslog.max_line_bytes < 480 {
            errors.push(
                "syslog.max_line_bytes: must be at least 480 bytes (RFC 5424 minimum)".into(),
            );
        }
        if self.syslog.max_connections == 0 {
            errors.push("syslog.max_connections: must be at least 1".into());
        }
        if self.syslog.idle_timeout.is_zero() {
            errors.push("syslog.idle_timeout: must be more than 0".into());
        }
        if self.syslog.tls_handshake_timeout.is_zero() {
            errors.push("syslog.tls_handshake_timeout: must be more than 0".into());
        }
        if let Err(problems) = self.archives.spec() {
            errors.extend(problems);
        }
        if self.archives.flush_interval.is_zero() {
            errors.push("archives.flush_interval: must be more than 0".into());
        }
        if self.hosts.liveness_timeout.is_zero() {
            errors.push("hosts.liveness_timeout: must be more than 0".into());
        }
        if let Err(problems) = crate::alarms::Rule::parse_all(&self.rules, self.rule_context()) {
            errors.extend(problems);
        }
        if let Err(problems) = crate::notify::Receiver::parse_all(&self.notify) {
            errors.extend(problems);
        }
        let base_step = self.rule_context().base_step;
        if let Err(problems) = crate::scaling::Policy::parse_all(&self.scaling.policies, base_step)
        {
            errors.extend(problems);
        }
        let notify_names: Vec<String> = self.notify.iter().map(|n| n.name.clone()).collect();
        if let Err(problems) = crate::scaling::Hook::parse_all(&self.scaling.hooks, &notify_names) {
            errors.extend(problems);
        }
    }
}

fn take<T: DeserializeOwned>(
    table: &toml::Table,
    key: &str,
    errors: &mut Vec<String>,
) -> Option<T> {
    let value = table.get(key)?;
    match value.clone().try_into::<T>() {
        Ok(v) => Some(v),
        Err(e) => {
            errors.push(format!("{key}: {}", one_line(&e.to_string())));
            None
        }
    }
}

fn take_list<T: DeserializeOwned>(
    table: &toml::Table,
    key: &str,
    errors: &mut Vec<String>,
) -> Vec<T> {
    let Some(value) = table.get(key) else {
        return Vec::new();
    };
    let Some(items) = value.as_array() else {
        errors.push(format!("{key}: expected an array of tables ([[{key}]])"));
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item.clone().try_into::<T>() {
            Ok(v) => out.push(v),
            Err(e) => errors.push(format!("{key}[{i}]: {}", one_line(&e.to_string()))),
        }
    }
    out
}

fn fix_prefix(errors: &mut [String], from: &str, to: &str) {
    for e in errors.iter_mut() {
        if e.starts_with(&format!("{from}[")) || e.starts_with(&format!("{from}:")) {
            *e = format!("{to}{}", &e[from.len()..]);
        }
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_is_valid() {
        let text = include_str!("../../../docs/server.example.toml");
        let cfg = FileConfig::parse(text).unwrap_or_else(|e| panic!("{e}"));
        // Every [[rules]] table of the example is read (none is lost to a
        // parse that stops early), however many the example grows.
        let tables = text.lines().filter(|l| l.trim() == "[[rules]]").count();
        assert!(tables >= 4, "{tables}");
        assert_eq!(cfg.rules.len(), tables);
        assert_eq!(cfg.scaling.policies.len(), 1);
        assert!(!cfg.agents.is_empty(), "the example has [[agents]]");
        assert_eq!(cfg.archives.spec().unwrap(), RrdSpec::default_ladder());
    }

    #[test]
    fn archives_are_configurable_and_every_problem_is_reported() {
        let cfg = FileConfig::parse(
            r#"
            [archives]
            xff = 0.3
            flush_interval = "2s"
            ladder = [{ step = "5s", rows = 720 }, { step = "1m", rows = 60 }]
            "#,
        )
        .unwrap();
        let spec = cfg.archives.spec().unwrap();
        assert_eq!((spec.base_step, spec.heartbeat, spec.xff), (5, 15, 0.3));
        assert_eq!(cfg.archives.flush_interval, Duration::from_secs(2));
        let errs = FileConfig::parse(
            r#"
            [archives]
            xff = 1.5
            ladder = [{ step = "1m", rows = 0 }, { step = "90s", rows = 10 }, { step = "1500ms", rows = 3 }]
            "#,
        )
        .unwrap_err()
        .0
        .join("\n");
        assert!(errs.contains("archives.ladder[2].step"), "{errs}");
        let errs =
            FileConfig::parse("[archives]\nxff = 1.5\nladder = [{ step = \"1m\", rows = 0 }]")
                .unwrap_err()
                .0
                .join("\n");
        assert!(
            errs.contains("xff is 1.5") && errs.contains("rows is 0"),
            "{errs}"
        );
        let errs = FileConfig::parse("[archives]\nsteps = 3")
            .unwrap_err()
            .0
            .join("\n");
        assert!(errs.contains("unknown field `steps`"), "{errs}");
    }

    #[test]
    fn agents_push_log_settings_and_every_mistake_is_reported_with_its_key() {
        let cfg = FileConfig::parse(
            r#"
            [[agents]]
            group = "web"
            metrics = { sample_interval = "1s", ship_interval = "10s" }
            logs.files = [{ path = "/var/log/nginx/*.log", app = "nginx" }]
            logs.filter = { min_severity = "info", exclude = ["healthcheck"] }

            [[agents]]
            group = "db"
            [[agents.logs.files]]
            path = "/var/log/postgresql/*.log"
            timezone = "+02:00"
            "#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.agents.len(), 2);
        let web = &cfg.agents[0].logs;
        assert_eq!(web.files[0].app.as_deref(), Some("nginx"));
        assert_eq!(web.filter.as_ref().unwrap().exclude, ["healthcheck"]);
        assert_eq!(
            cfg.agents[1].logs.files[0].timezone.as_deref(),
            Some("+02:00")
        );
        assert!(cfg.agents[1].logs.filter.is_none());

        let errs = FileConfig::parse(
            r#"
            [[agents]]
            group = "web"
            colour = "blue"
            logs.files = [{ path = "/ok/*.log" }, { path = "/x/*.log", glob = true }, { path = "relative.log" }, { path = "/a/[.log" }]
            logs.filter = { include = ["(unclosed"], exclude = ["ok", ""], min_severity = "loud" }
            logs.journald = true

            [[agents]]
            group = "db"
            logs.filter = { include = ["(unclosed"], excludes = ["x"] }
            [[agents]]
            group = "api"
            logs.filter = { include = ["fine", "[z-a]"] }
            logs.files = [{ path = "/var/log/api.log", app = "has space", timezone = "CET" }]
            "#,
        )
        .unwrap_err()
        .0;
        let all = errs.join("\n");
        for key in [
            "agents[0].colour: unknown key",
            "agents[0].logs.files[1]: unknown field `glob`",
            "agents[0].logs.filter: unknown variant `loud`",
            "agents[0].logs.journald: unknown key",
            "agents[1].logs.filter: unknown field `excludes`",
            "agents[2].logs.filter.include[1]: \"[z-a]\" is not a valid regex",
            "agents[2].logs.files[0].app",
            "agents[2].logs.files[0].timezone",
        ] {
            assert!(all.contains(key), "missing {key:?} in:\n{all}");
        }
        // Sections in error are not pushed, and not checked twice.
        assert_eq!(errs.len(), 8, "{all}");
        let errs = FileConfig::parse(
            "[[agents]]\ngroup = \"web\"\nlogs.files = [{ path = \"relative.log\" }, { path = \"/a/[.log\" }]\nlogs.filter = { exclude = [\"ok\", \"\"] }",
        )
        .unwrap_err()
        .0
        .join("\n");
        for key in [
            "agents[0].logs.files[0].path: \"relative.log\" must be an absolute path",
            "agents[0].logs.files[1].path: \"/a/[.log\" is not a glob",
            "agents[0].logs.filter.exclude[1]: empty pattern",
        ] {
            assert!(errs.contains(key), "missing {key:?} in:\n{errs}");
        }
        let errs = FileConfig::parse("[[agents]]\nmetrics = {}")
            .unwrap_err()
            .0
            .join("\n");
        assert!(errs.contains("agents[0].group: missing"), "{errs}");
    }

    #[test]
    fn pushed_checks_are_checked_as_an_agent_checks_its_own() {
        let errs = FileConfig::parse(
            r#"
            [[agents]]
            group = "web"
            checks = [
                { name = "Bad Name", command = ["/x"] },
                { name = "sh", command = ["a", "b"], shell = true, interval = "0s" },
                { name = "http", command = [], max_attempts = 0 },
                { name = "typo", command = ["/x"], intervall = "5s" },
            ]
            [[agents]]
            group = "web"
            checks = [{ name = "ok", command = ["/bin/true"] }, { name = "ok", command = ["/bin/false"] }]
            [[agents]]
            group = "db"
            checks = [{ name = "ok", command = ["/bin/true"] }]
            "#,
        )
        .unwrap_err()
        .0;
        let all = errs.join("\n");
        for key in [
            "agents[0].checks[3]: unknown field `intervall`",
            "agents[1].checks[1].name: \"ok\" is already pushed to group \"web\" by agents[1].checks[0]",
        ] {
            assert!(all.contains(key), "missing {key:?} in:\n{all}");
        }
        let errs = FileConfig::parse(
            r#"
            [[agents]]
            group = "web"
            checks = [
                { name = "Bad Name", command = ["/x"] },
                { name = "sh", command = ["a", "b"], shell = true, interval = "0s" },
                { name = "http", command = [], max_attempts = 0 },
            ]
            "#,
        )
        .unwrap_err()
        .0
        .join("\n");
        for key in [
            "agents[0].checks[0].name: \"Bad Name\" may only hold",
            "agents[0].checks[1].command: with shell = true",
            "agents[0].checks[1].interval: must be at least 1s",
            "agents[0].checks[2].command: is missing",
            "agents[0].checks[2].max_attempts: must be at least 1",
        ] {
            assert!(errs.contains(key), "missing {key:?} in:\n{errs}");
        }
        let ok = FileConfig::parse(
            "[[agents]]\ngroup = \"web\"\nchecks = [{ name = \"http\", command = [\"/bin/true\"], timeout = \"2s\" }]",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            ok.agents[0].checks[0].timeout,
            std::time::Duration::from_secs(2)
        );
    }

    #[test]
    fn every_error_is_reported_with_its_key() {
        let text = r#"
            listen = 8080
            colour = "blue"
            [hosts]
            expire_after = "a week"
            [http]
            max_body_bytes = "lots"
            [[rules]]
            name = "x"
            kind = "threshold"
            [[rules]]
            name = "y"
            kind = "psychic"
            [scaling]
            [[scaling.hooks]]
            name = "h"
        "#;
        let errs = FileConfig::parse(text).unwrap_err().0;
        let all = errs.join("\n");
        for key in [
            "listen:",
            "colour:",
            "hosts:",
            "http:",
            "rules[0]",
            "rules[1]",
            "scaling.hooks[0]",
        ] {
            assert!(all.contains(key), "missing {key} in:\n{all}");
        }
        assert!(errs.len() >= 7, "{all}");
    }
}
