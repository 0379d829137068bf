//! Typed server configuration.
//!
//! Precedence is flag > environment (`METROLOG_*`) > TOML file > default. The file
//! is checked key by key so that `check-config` can report every problem at once;
//! unknown keys are errors, never silently ignored.

mod file;

pub use file::{
    AgentsSection, ArchiveEntry, ArchivesSection, FileConfig, GraphiteSection, HostsSection,
    HttpSection, NotifySection, RetentionSection, RuleSection, ScalingSection, SyslogSection,
};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where something listens, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    Off,
    On(SocketAddr),
}

impl Listen {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim().eq_ignore_ascii_case("off") {
            return Ok(Listen::Off);
        }
        text.trim()
            .parse::<SocketAddr>()
            .map(Listen::On)
            .map_err(|_| {
                format!("{text:?} is not an address such as \"127.0.0.1:5514\" or \"off\"")
            })
    }
}

/// The values given on the command line or in the environment (clap merges the
/// two); each overrides the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub syslog_udp: Option<String>,
    pub syslog_tcp: Option<String>,
    pub graphite: Option<String>,
    pub no_local_agent: bool,
}

/// The effective configuration the server runs with.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// `sqlite://…`; derived from `data_dir` unless given.
    pub database_url: String,
    pub local_agent: bool,
    pub syslog_udp: Listen,
    pub syslog_tcp: Listen,
    pub syslog_max_line_bytes: u64,
    pub graphite: Listen,
    pub hosts: HostsSection,
    pub http: HttpSection,
    pub retention: RetentionSection,
    /// Sections parsed and validated now, acted upon by later components.
    pub file: FileConfig,
}

/// Every problem found in a configuration, each with the key it concerns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigErrors(pub Vec<String>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl ServerConfig {
    /// Builds the effective configuration from overrides and the optional file.
    pub fn load(over: &Overrides) -> Result<Self, ConfigErrors> {
        let (file, mut errors) = match &over.config {
            Some(path) => FileConfig::read_partial(path),
            None => (FileConfig::default(), Vec::new()),
        };
        match Self::merge(over, file) {
            Ok(cfg) if errors.is_empty() => Ok(cfg),
            Ok(_) => Err(ConfigErrors(errors)),
            Err(more) => {
                errors.extend(more.0);
                Err(ConfigErrors(errors))
            }
        }
    }

    pub fn merge(over: &Overrides, file: FileConfig) -> Result<Self, ConfigErrors> {
        let mut errors = Vec::new();
        let listen_text = over
            .listen
            .clone()
            .or(file.listen.clone())
            .unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen = match listen_text.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                errors.push(format!(
                    "listen: {listen_text:?} is not an address such as \"127.0.0.1:8080\""
                ));
                None
            }
        };
        let data_dir = over
            .data_dir
            .clone()
            .or(file.data_dir.clone())
            .unwrap_or_else(|| PathBuf::from("./metrolog-data"));
        let database_url = over
            .database_url
            .clone()
            .or(file.database_url.clone())
            .unwrap_or_else(|| sqlite_url(&data_dir));
        if !database_url.starts_with("sqlite:") {
            errors.push(format!(
                "database_url: only sqlite:// URLs are supported by this build (got {})",
                redact_url(&database_url)
            ));
        }
        let mut listen_of =
            |key: &str, flag: &Option<String>, file_v: Option<&String>, default: &str| {
                let text = flag
                    .clone()
                    .or(file_v.cloned())
                    .unwrap_or_else(|| default.to_string());
                match Listen::parse(&text) {
                    Ok(l) => l,
                    Err(e) => {
                        errors.push(format!("{key}: {e}"));
                        Listen::Off
                    }
                }
            };
        let syslog_udp = listen_of(
            "syslog.udp",
            &over.syslog_udp,
            file.syslog.udp.as_ref(),
            "127.0.0.1:5514",
        );
        let syslog_tcp = listen_of(
            "syslog.tcp",
            &over.syslog_tcp,
            file.syslog.tcp.as_ref(),
            "127.0.0.1:5514",
        );
        let graphite = listen_of(
            "graphite.tcp",
            &over.graphite,
            file.graphite.tcp.as_ref(),
            "off",
        );
        let local_agent = !over.no_local_agent && file.local_agent.unwrap_or(true);
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        Ok(ServerConfig {
            listen: listen.expect("checked above"),
            data_dir,
            database_url,
            local_agent,
            syslog_udp,
            syslog_tcp,
            syslog_max_line_bytes: file.syslog.max_line_bytes,
            graphite,
            hosts: file.hosts.clone(),
            http: file.http.clone(),
            retention: file.retention.clone(),
            file,
        })
    }

    /// How long a host may stay silent before it is `down`.
    pub fn liveness_timeout(&self) -> Duration {
        self.hosts.liveness_timeout
    }
}

fn sqlite_url(data_dir: &Path) -> String {
    format!("sqlite://{}", data_dir.join("metrolog.db").display())
}

/// Hides a password in a database URL before it is printed.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &creds[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_beats_file_beats_default() {
        let file = FileConfig::parse("listen = \"127.0.0.1:9000\"\ndata_dir = \"/tmp/x\"").unwrap();
        let over = Overrides {
            listen: Some("127.0.0.1:9100".into()),
            ..Default::default()
        };
        let cfg = ServerConfig::merge(&over, file.clone()).unwrap();
        assert_eq!(cfg.listen.port(), 9100);
        assert_eq!(cfg.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(cfg.database_url, "sqlite:///tmp/x/metrolog.db");
        let cfg = ServerConfig::merge(&Overrides::default(), file).unwrap();
        assert_eq!(cfg.listen.port(), 9000);
        let cfg = ServerConfig::merge(&Overrides::default(), FileConfig::default()).unwrap();
        assert_eq!(cfg.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(cfg.syslog_udp, Listen::parse("127.0.0.1:5514").unwrap());
        assert_eq!(cfg.graphite, Listen::Off);
        assert!(cfg.local_agent);
    }

    #[test]
    fn secrets_in_urls_are_redacted() {
        assert_eq!(
            redact_url("postgres://me:hunter2@db/metrolog"),
            "postgres://me:***@db/metrolog"
        );
    }
}
