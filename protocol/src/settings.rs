//! The settings both sides know: what an agent reads from its own
//! `agent.toml` and what the server's `[[agents]]` sections push to a group
//! (log files, log filters, checks, collector intervals). One set of types,
//! parsed once at the edge into typed values (durations, severities, check
//! names) and checked by one set of rules, so what the server accepts is what
//! an agent accepts.
//!
//! The wire form of pushed settings is [`crate::AgentSettings`] (durations in
//! milliseconds, kept for agents older than these types); the conversions
//! live here. [`AgentSettings::version`](crate::AgentSettings::version) is
//! the stable hash a server announces in its heartbeat and batch answers, so
//! an agent fetches its settings again only when they changed.

pub mod munin;
pub mod scrape;

use crate::units::serde_duration;
use crate::{CheckSettings, LogFileSettings, LogFilterSettings};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// One configuration problem and the key it concerns (`logs.files[0].path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Every problem found in a configuration, so an operator sees them all at once.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError {
            key: key.into(),
            message: message.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok` when nothing was found.
    pub fn into_result(self) -> Result<(), ConfigErrors> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Shortest and longest `metrics.sample_interval`.
pub const SAMPLE_INTERVAL_RANGE: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(3600));
/// Shortest and longest `metrics.ship_interval`.
pub const SHIP_INTERVAL_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(3600));

/// The collector intervals a server may push (`[[agents]] metrics`): each
/// key optional, an absent one leaves the agent's own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntervalSettings {
    #[serde(default, deserialize_with = "some_duration")]
    pub sample_interval: Option<Duration>,
    #[serde(default, deserialize_with = "some_duration")]
    pub ship_interval: Option<Duration>,
}

impl IntervalSettings {
    /// Problems of the keys set, under `at` (`metrics`).
    pub fn validate(&self, at: &str, errs: &mut ConfigErrors) {
        check_interval(
            &format!("{at}.sample_interval"),
            self.sample_interval,
            SAMPLE_INTERVAL_RANGE,
            errs,
        );
        check_interval(
            &format!("{at}.ship_interval"),
            self.ship_interval,
            SHIP_INTERVAL_RANGE,
            errs,
        );
    }
}

/// Reports `d` outside `range` under `key`.
pub fn check_interval(
    key: &str,
    d: Option<Duration>,
    range: (Duration, Duration),
    errs: &mut ConfigErrors,
) {
    let Some(d) = d else { return };
    let show = |d: Duration| humantime::format_duration(d).to_string();
    if d < range.0 {
        errs.push(key, format!("must be at least {}", show(range.0)));
    } else if d > range.1 {
        errs.push(key, format!("must be at most {}", show(range.1)));
    }
}

fn some_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    serde_duration::deserialize(d).map(Some)
}

/// Milliseconds of a duration, saturating (the wire form).
pub fn millis(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

/// Syslog severities as configuration files name them (`emerg` … `debug`),
/// most severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    #[serde(alias = "emergency", alias = "panic")]
    Emerg,
    Alert,
    #[serde(alias = "critical")]
    Crit,
    #[serde(alias = "error")]
    Err,
    #[serde(alias = "warn")]
    Warning,
    Notice,
    Info,
    Debug,
}

impl Severity {
    /// The same level as the syslog layer's type.
    pub fn level(self) -> crate::syslog::Severity {
        crate::syslog::Severity::from_u8(self as u8).unwrap_or(crate::syslog::Severity::Debug)
    }

    /// The level of the syslog layer's type.
    pub fn from_level(level: crate::syslog::Severity) -> Self {
        use crate::syslog::Severity as L;
        match level {
            L::Emerg => Self::Emerg,
            L::Alert => Self::Alert,
            L::Crit => Self::Crit,
            L::Err => Self::Err,
            L::Warning => Self::Warning,
            L::Notice => Self::Notice,
            L::Info => Self::Info,
            L::Debug => Self::Debug,
        }
    }

    /// The name configuration files use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Emerg => "emerg",
            Self::Alert => "alert",
            Self::Crit => "crit",
            Self::Err => "err",
            Self::Warning => "warning",
            Self::Notice => "notice",
            Self::Info => "info",
            Self::Debug => "debug",
        }
    }
}

/// Reads a fixed UTC offset: `UTC`, `Z`, `+02:00`, `-0530`.
pub fn parse_utc_offset(text: &str) -> Result<chrono::FixedOffset, String> {
    let bad = || format!("{text:?} is not a UTC offset such as \"UTC\", \"+02:00\" or \"-05:30\"");
    let t = text.trim();
    if t.eq_ignore_ascii_case("utc") || t == "Z" {
        return chrono::FixedOffset::east_opt(0).ok_or_else(bad);
    }
    let (sign, rest) = match t.as_bytes().first() {
        Some(b'+') => (1, &t[1..]),
        Some(b'-') => (-1, &t[1..]),
        _ => return Err(bad()),
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let hours: i32 = digits[..2].parse().map_err(|_| bad())?;
    let minutes: i32 = digits[2..].parse().map_err(|_| bad())?;
    if hours > 23 || minutes > 59 {
        return Err(bad());
    }
    chrono::FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60)).ok_or_else(bad)
}

/// One `[[logs.files]]` entry.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogFileConfig {
    /// An absolute path or glob (`/var/log/nginx/*.log`).
    pub path: String,
    /// app_name for lines that carry none.
    pub app: Option<String>,
    /// UTC offset of timestamps written without one (`"+02:00"`); UTC when
    /// absent. A fixed offset, not a zone: see `docs/agent-logs.md`.
    pub timezone: Option<String>,
}

impl LogFileConfig {
    pub fn from_settings(s: &LogFileSettings) -> Self {
        Self {
            path: s.path.clone(),
            app: s.app.clone(),
            timezone: s.timezone.clone(),
        }
    }

    /// The wire form, as the server pushes it.
    pub fn to_settings(&self) -> LogFileSettings {
        LogFileSettings {
            path: self.path.clone(),
            app: self.app.clone(),
            timezone: self.timezone.clone(),
        }
    }

    /// Problems of this entry, keys under `at` (`logs.files[0]`).
    pub fn validate(&self, at: &str, errs: &mut ConfigErrors) {
        if self.path.trim().is_empty() {
            errs.push(format!("{at}.path"), "is missing or empty");
        } else if !self.path.starts_with('/') {
            errs.push(
                format!("{at}.path"),
                format!("{:?} must be an absolute path or glob", self.path),
            );
        } else if let Err(e) = glob::Pattern::new(&self.path) {
            errs.push(
                format!("{at}.path"),
                format!("{:?} is not a glob: {e}", self.path),
            );
        }
        if let Some(app) = &self.app {
            if app.trim().is_empty() || app.len() > 48 || app.chars().any(char::is_whitespace) {
                errs.push(
                    format!("{at}.app"),
                    format!("{app:?} must be 1 to 48 bytes without spaces (an RFC 5424 APP-NAME)"),
                );
            }
        }
        if let Some(tz) = &self.timezone {
            if let Err(e) = parse_utc_offset(tz) {
                errs.push(format!("{at}.timezone"), e);
            }
        }
    }
}

/// `[logs.filter]`: what is dropped at the source.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogFilterConfig {
    /// Least severe level kept (`emerg` … `debug`); everything when absent.
    /// Lines without a priority count as `notice`.
    pub min_severity: Option<Severity>,
    /// Keep only lines whose message matches one of these regexes (all when empty).
    pub include: Vec<String>,
    /// Drop lines whose message matches one of these regexes.
    pub exclude: Vec<String>,
    /// Keep only these app names (all when empty).
    pub apps: Vec<String>,
}

impl LogFilterConfig {
    /// Whether any key is set (a filter that keeps everything is not).
    pub fn is_set(&self) -> bool {
        *self != Self::default()
    }

    pub fn from_settings(s: &LogFilterSettings) -> Self {
        Self {
            min_severity: s.min_severity.map(Severity::from_level),
            include: s.include.clone(),
            exclude: s.exclude.clone(),
            apps: s.apps.clone(),
        }
    }

    /// The wire form, as the server pushes it.
    pub fn to_settings(&self) -> LogFilterSettings {
        LogFilterSettings {
            min_severity: self.min_severity.map(Severity::level),
            include: self.include.clone(),
            exclude: self.exclude.clone(),
            apps: self.apps.clone(),
        }
    }

    /// Problems of this filter, keys under `at` (`logs.filter`).
    pub fn validate(&self, at: &str, errs: &mut ConfigErrors) {
        for (key, list) in [("include", &self.include), ("exclude", &self.exclude)] {
            for (i, re) in list.iter().enumerate() {
                if re.is_empty() {
                    errs.push(
                        format!("{at}.{key}[{i}]"),
                        "empty pattern matches every line",
                    );
                } else if let Err(e) = regex::Regex::new(re) {
                    errs.push(
                        format!("{at}.{key}[{i}]"),
                        format!("{re:?} is not a valid regex: {}", one_line(&e)),
                    );
                }
            }
        }
        for (i, app) in self.apps.iter().enumerate() {
            if app.trim().is_empty() {
                errs.push(format!("{at}.apps[{i}]"), "is empty");
            }
        }
    }
}

/// One `[[checks]]` entry: a Nagios plugin run on an interval (see `docs/checks.md`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckConfig {
    pub name: String,
    /// Program and arguments, run without a shell unless `shell = true`.
    pub command: Vec<String>,
    #[serde(with = "serde_duration")]
    pub interval: Duration,
    #[serde(with = "serde_duration")]
    pub retry_interval: Duration,
    #[serde(with = "serde_duration")]
    pub timeout: Duration,
    pub max_attempts: u32,
    /// Run `command` as one `sh -c` string instead of a program and arguments.
    pub shell: bool,
}

impl Default for CheckConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            command: Vec::new(),
            interval: Duration::from_secs(60),
            retry_interval: Duration::from_secs(15),
            timeout: Duration::from_secs(10),
            max_attempts: 3,
            shell: false,
        }
    }
}

impl CheckConfig {
    /// A check pushed by the server; what it leaves out takes the defaults.
    pub fn from_settings(s: &CheckSettings) -> Self {
        let d = Self::default();
        let ms = Duration::from_millis;
        Self {
            name: s.name.clone(),
            command: s.command.clone(),
            interval: s.interval_ms.map_or(d.interval, ms),
            retry_interval: s.retry_interval_ms.map_or(d.retry_interval, ms),
            timeout: s.timeout_ms.map_or(d.timeout, ms),
            max_attempts: s.max_attempts.unwrap_or(d.max_attempts),
            shell: s.shell,
        }
    }

    /// The wire form, as the server pushes it (every key, so every agent
    /// version runs the same check).
    pub fn to_settings(&self) -> CheckSettings {
        CheckSettings {
            name: self.name.clone(),
            command: self.command.clone(),
            interval_ms: Some(millis(self.interval)),
            retry_interval_ms: Some(millis(self.retry_interval)),
            timeout_ms: Some(millis(self.timeout)),
            max_attempts: Some(self.max_attempts),
            shell: self.shell,
        }
    }

    /// Every problem of this check, keys prefixed with `at` (`checks[0]`).
    pub fn problems(&self, at: &str) -> ConfigErrors {
        let mut errs = ConfigErrors::default();
        self.validate(at, &mut errs);
        errs
    }

    pub fn validate(&self, at: &str, errs: &mut ConfigErrors) {
        if self.name.is_empty() {
            errs.push(format!("{at}.name"), "is missing");
        } else if crate::nagios::CheckName::parse(&self.name).is_err() {
            errs.push(
                format!("{at}.name"),
                format!(
                    "{:?} may only hold a-z, 0-9, '_' and '-', at most {} bytes (it becomes \
                     series check.<name>.*)",
                    self.name,
                    crate::nagios::MAX_CHECK_NAME
                ),
            );
        }
        if self.command.is_empty() || self.command[0].is_empty() {
            errs.push(format!("{at}.command"), "is missing or empty");
        }
        if self.shell && self.command.len() != 1 {
            errs.push(
                format!("{at}.command"),
                "with shell = true, give the whole command line as one string",
            );
        }
        if self.interval < Duration::from_secs(1) {
            errs.push(format!("{at}.interval"), "must be at least 1s");
        }
        if self.retry_interval < Duration::from_secs(1) {
            errs.push(format!("{at}.retry_interval"), "must be at least 1s");
        }
        if self.timeout.is_zero() {
            errs.push(format!("{at}.timeout"), "must be greater than 0");
        }
        for (key, d) in [
            ("interval", self.interval),
            ("retry_interval", self.retry_interval),
            ("timeout", self.timeout),
        ] {
            if d > Duration::from_secs(86_400) {
                errs.push(format!("{at}.{key}"), "must be at most 1d");
            }
        }
        if self.max_attempts > 100 {
            errs.push(format!("{at}.max_attempts"), "must be at most 100");
        }
        if self.max_attempts == 0 {
            errs.push(format!("{at}.max_attempts"), "must be at least 1");
        }
    }
}

/// Reads a pushed section the way an agent older than its server must: keys
/// it does not know (a newer server's) are left out, not a reason to refuse
/// the whole of the settings. A section that still does not read is `None`.
pub fn lenient_opt<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let v = Option::<serde_json::Value>::deserialize(d)?;
    Ok(v.and_then(lenient))
}

/// [`lenient_opt`] for a list: each element read leniently, those that still
/// do not read are left out.
pub fn lenient_list<'de, D, T>(d: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let v = Option::<Vec<serde_json::Value>>::deserialize(d)?;
    Ok(v.map(|items| items.into_iter().filter_map(lenient).collect()))
}

fn lenient<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Option<T> {
    if let Ok(t) = serde_json::from_value(v.clone()) {
        return Some(t);
    }
    let serde_json::Value::Object(map) = v else {
        return None;
    };
    let known: serde_json::Map<String, serde_json::Value> = map
        .into_iter()
        .filter(|(k, v)| {
            let one: serde_json::Map<String, serde_json::Value> =
                [(k.clone(), v.clone())].into_iter().collect();
            serde_json::from_value::<T>(serde_json::Value::Object(one)).is_ok()
        })
        .collect();
    serde_json::from_value(serde_json::Value::Object(known)).ok()
}

/// A whole error on one line (regex and TOML errors span several).
pub fn one_line(e: &impl fmt::Display) -> String {
    e.to_string().trim().replace('\n', " ")
}

/// FNV-1a, 64 bits: a hash that is the same on every platform and in every
/// build (std's hasher promises neither), for [`crate::AgentSettings::version`].
/// Not a defence against anyone: the server alone chooses the settings.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_offsets() {
        assert_eq!(parse_utc_offset("UTC").unwrap().local_minus_utc(), 0);
        assert_eq!(parse_utc_offset("+02:00").unwrap().local_minus_utc(), 7200);
        assert_eq!(parse_utc_offset("-0530").unwrap().local_minus_utc(), -19800);
        for bad in ["CET", "+2", "+24:00", "0200"] {
            assert!(parse_utc_offset(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn severities_convert_both_ways() {
        for level in crate::syslog::Severity::ALL {
            assert_eq!(Severity::from_level(level).level(), level);
        }
    }

    #[test]
    fn checks_round_trip_through_the_wire() {
        let c = CheckConfig {
            name: "http".into(),
            command: vec!["/bin/true".into()],
            interval: Duration::from_secs(5),
            ..CheckConfig::default()
        };
        assert_eq!(CheckConfig::from_settings(&c.to_settings()), c);
        let filter = LogFilterConfig {
            min_severity: Some(Severity::Info),
            exclude: vec!["ping".into()],
            ..Default::default()
        };
        assert_eq!(
            LogFilterConfig::from_settings(&filter.to_settings()),
            filter
        );
    }

    #[test]
    fn intervals_are_checked_against_the_agents_bounds() {
        let i: IntervalSettings = serde_json::from_str(r#"{"sample_interval":"50ms"}"#).unwrap();
        assert_eq!(i.sample_interval, Some(Duration::from_millis(50)));
        assert_eq!(i.ship_interval, None);
        let mut errs = ConfigErrors::default();
        i.validate("metrics", &mut errs);
        assert_eq!(
            errs.to_string(),
            "metrics.sample_interval: must be at least 100ms"
        );
        assert!(serde_json::from_str::<IntervalSettings>(r#"{"sample":"1s"}"#).is_err());
    }

    #[test]
    fn pushed_munin_and_scrape_survive_keys_an_older_agent_does_not_know() {
        let text = r#"{"munin":{"interval":"30s","colour":"blue"},
            "scrape":[{"name":"node","url":"http://127.0.0.1:9100/metrics","honor_labels":true},
                      {"name":"x","url":7}]}"#;
        let s: crate::AgentSettings = serde_json::from_str(text).unwrap();
        let m = s.munin.unwrap();
        assert_eq!(m.interval, Duration::from_secs(30));
        assert_eq!(m.timeout, Duration::from_secs(60), "defaults fill the rest");
        let targets = s.scrape.unwrap();
        assert_eq!(targets.len(), 2);
        assert_eq!(targets[0].name, "node");
        assert_eq!(targets[1].name, "x");
        assert!(
            !targets[1].problems("scrape[1]").is_empty(),
            "no URL: refused by the agent"
        );
        // Round trip: what the server sends is what the agent reads.
        let sent = crate::AgentSettings {
            munin: Some(m.clone()),
            scrape: Some(vec![targets[0].clone()]),
            ..Default::default()
        };
        let back: crate::AgentSettings =
            serde_json::from_str(&serde_json::to_string(&sent).unwrap()).unwrap();
        assert_eq!(back, sent);
        assert_eq!(back.version(), sent.version());
    }

    #[test]
    fn the_hash_is_fixed() {
        // Fixed values: a change here changes every announced version, so
        // every agent of a fleet would fetch its settings once more.
        assert_eq!(stable_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
