//! Typed server configuration.
//!
//! Precedence is flag > environment (`METROLOG_*`) > TOML file > default. The file
//! is checked key by key so that `check-config` can report every problem at once;
//! unknown keys are errors, never silently ignored.

mod central;
mod file;
mod tls;

pub use central::{settings_of, Central, GroupSettings};

pub use file::{
    AgentsSection, ArchiveEntry, ArchivesSection, FileConfig, GraphiteSection, HostsSection,
    HttpSection, NotifySection, RetentionSection, ScalingSection, SyslogSection,
};

pub use crate::alarms::{RuleKind, RuleSection};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
pub use tls::{TlsFiles, TlsSettings};

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
    pub syslog_tls: Option<String>,
    pub syslog_tls_cert: Option<PathBuf>,
    pub syslog_tls_key: Option<PathBuf>,
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
    /// The TLS receiver, its certificate and key already read and checked.
    pub syslog_tls: Option<SyslogTls>,
    /// HTTPS for the API and dashboard (`[http] tls_cert` and `tls_key`),
    /// read and checked.
    pub http_tls: Option<TlsSettings>,
    pub syslog_max_line_bytes: u64,
    pub graphite: Listen,
    pub hosts: HostsSection,
    pub http: HttpSection,
    pub retention: RetentionSection,
    /// Sections parsed and validated now, acted upon by later components.
    pub file: FileConfig,
    /// The settings `[[agents]]` push to each group now (replaced on
    /// SIGHUP, see [`ServerConfig::reload_agents`]).
    pub central: std::sync::Arc<Central>,
    /// The file read at start (`--config`), read again on SIGHUP.
    pub config_path: Option<PathBuf>,
}

/// Syslog over TLS: where, and with which certificate.
#[derive(Debug, Clone)]
pub struct SyslogTls {
    pub addr: SocketAddr,
    pub settings: TlsSettings,
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
        let tls_cert = over
            .syslog_tls_cert
            .clone()
            .or(file.syslog.tls_cert.clone());
        let tls_key = over.syslog_tls_key.clone().or(file.syslog.tls_key.clone());
        // A certificate is what turns the receiver on; `tls` says where.
        let tls_default = if tls_cert.is_some() || tls_key.is_some() {
            "127.0.0.1:6514"
        } else {
            "off"
        };
        let tls_listen = listen_of(
            "syslog.tls",
            &over.syslog_tls,
            file.syslog.tls.as_ref(),
            tls_default,
        );
        let graphite = listen_of(
            "graphite.tcp",
            &over.graphite,
            file.graphite.tcp.as_ref(),
            "off",
        );
        let syslog_tls = match (tls_listen, &tls_cert, &tls_key) {
            (Listen::Off, _, _) => None,
            (Listen::On(addr), Some(cert), Some(key)) => {
                let files = TlsFiles {
                    cert,
                    key,
                    client_ca: file.syslog.tls_client_ca.as_deref(),
                    section: "syslog",
                };
                match TlsSettings::load(files) {
                    Ok(settings) => Some(SyslogTls { addr, settings }),
                    Err(problems) => {
                        errors.extend(problems);
                        None
                    }
                }
            }
            (Listen::On(_), None, None) => {
                errors.push(
                    "syslog.tls: needs syslog.tls_cert and syslog.tls_key (PEM files) \
                     to listen; set them, or set syslog.tls to \"off\""
                        .into(),
                );
                None
            }
            (Listen::On(_), Some(_), None) => {
                errors
                    .push("syslog.tls_key: missing; syslog.tls_cert needs its private key".into());
                None
            }
            (Listen::On(_), None, Some(_)) => {
                errors
                    .push("syslog.tls_cert: missing; syslog.tls_key needs its certificate".into());
                None
            }
        };
        let http_tls = match (&file.http.tls_cert, &file.http.tls_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => match TlsSettings::load(TlsFiles {
                cert,
                key,
                client_ca: None,
                section: "http",
            }) {
                Ok(settings) => Some(settings),
                Err(problems) => {
                    errors.extend(problems);
                    None
                }
            },
            (Some(_), None) => {
                errors.push("http.tls_key: missing; http.tls_cert needs its private key".into());
                None
            }
            (None, Some(_)) => {
                errors.push("http.tls_cert: missing; http.tls_key needs its certificate".into());
                None
            }
        };
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
            syslog_tls,
            http_tls,
            syslog_max_line_bytes: file.syslog.max_line_bytes,
            graphite,
            hosts: file.hosts.clone(),
            http: file.http.clone(),
            retention: file.retention.clone(),
            central: std::sync::Arc::new(Central::new(file.agents.clone())),
            config_path: over.config.clone(),
            file,
        })
    }

    /// Reads the `[[agents]]` sections of the configuration file again (on
    /// SIGHUP) and logs what changed; a file with errors changes nothing.
    /// Nothing else of the file is read again: it takes a restart.
    pub fn reload_agents(&self) {
        let Some(path) = &self.config_path else {
            tracing::warn!("SIGHUP: no --config file, nothing to read again");
            return;
        };
        match self.central.reload(path) {
            Ok(groups) if groups.is_empty() => {
                tracing::info!(file = %path.display(), "SIGHUP: [[agents]] read again; no group's settings changed")
            }
            Ok(groups) => tracing::info!(
                file = %path.display(),
                groups = %groups.join(", "),
                "SIGHUP: [[agents]] read again; new settings for these groups reach their agents at their next heartbeat"
            ),
            Err(errors) => tracing::error!(
                file = %path.display(),
                "SIGHUP: the file has errors, the [[agents]] sections in force stay:\n{errors}"
            ),
        }
    }

    /// Reads `[[agents]]` again at each SIGHUP, until the runtime ends.
    pub fn reload_agents_on_sighup(config: std::sync::Arc<ServerConfig>) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot listen for SIGHUP ({e}): [[agents]] changes need a restart");
                return;
            }
        };
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                let config = config.clone();
                // A file read: off the runtime.
                let _ = tokio::task::spawn_blocking(move || config.reload_agents()).await;
            }
        });
    }

    /// How long a host may stay silent before it is `down`.
    pub fn liveness_timeout(&self) -> Duration {
        self.hosts.liveness_timeout
    }

    /// The `[[notify]]` receivers, checked (the file's checks already
    /// refused bad ones; a hand-built configuration runs without them).
    /// `external_url` defaults to the listen address.
    pub fn receivers(&self) -> Vec<crate::notify::Receiver> {
        let mut receivers =
            crate::notify::Receiver::parse_all(&self.file.notify).unwrap_or_else(|problems| {
                tracing::error!(?problems, "[[notify]] receivers do not parse; none is used");
                Vec::new()
            });
        for r in &mut receivers {
            if r.external_url.is_empty() {
                r.external_url = format!("http://{}", self.listen);
            }
        }
        receivers
    }

    /// The `[[scaling.policies]]`, checked (as [`Self::receivers`]).
    pub fn policies(&self) -> Vec<crate::scaling::Policy> {
        let base_step = self.file.rule_context().base_step;
        crate::scaling::Policy::parse_all(&self.file.scaling.policies, base_step).unwrap_or_else(
            |problems| {
                tracing::error!(?problems, "[[scaling.policies]] do not parse; none is used");
                Vec::new()
            },
        )
    }

    /// The `[[scaling.hooks]]`, checked (as [`Self::receivers`]).
    pub fn hooks(&self) -> Vec<crate::scaling::Hook> {
        let names: Vec<String> = self.file.notify.iter().map(|n| n.name.clone()).collect();
        crate::scaling::Hook::parse_all(&self.file.scaling.hooks, &names).unwrap_or_else(
            |problems| {
                tracing::error!(?problems, "[[scaling.hooks]] do not parse; none is used");
                Vec::new()
            },
        )
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
    fn syslog_tls_is_off_without_a_certificate_and_each_mistake_names_its_key() {
        let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/syslog/testdata");
        let merge = |file: &str, over: Overrides| {
            ServerConfig::merge(&over, FileConfig::parse(file).unwrap()).map_err(|e| e.0)
        };
        let cfg = merge("", Overrides::default()).unwrap();
        assert!(cfg.syslog_tls.is_none());
        // A certificate and key turn it on, on loopback unless told otherwise.
        let pair = format!(
            "[syslog]\ntls_cert = {:?}\ntls_key = {:?}\n",
            testdata.join("server.crt"),
            testdata.join("server.key")
        );
        let cfg = merge(&pair, Overrides::default()).unwrap();
        assert_eq!(cfg.syslog_tls.unwrap().addr.to_string(), "127.0.0.1:6514");
        let over = Overrides {
            syslog_tls: Some("127.0.0.1:0".into()),
            ..Default::default()
        };
        let cfg = merge(&pair, over).unwrap();
        assert_eq!(cfg.syslog_tls.unwrap().addr.port(), 0);
        let cfg = merge(&format!("{pair}tls = \"off\"\n"), Overrides::default()).unwrap();
        assert!(cfg.syslog_tls.is_none());
        // Flags alone do it too (containers pass paths in the environment).
        let over = Overrides {
            syslog_tls_cert: Some(testdata.join("server.crt")),
            syslog_tls_key: Some(testdata.join("server.key")),
            ..Default::default()
        };
        assert!(merge("", over).unwrap().syslog_tls.is_some());

        let errs = merge("[syslog]\ntls = \"0.0.0.0:6514\"", Overrides::default()).unwrap_err();
        assert!(
            errs[0].starts_with("syslog.tls: needs syslog.tls_cert"),
            "{errs:?}"
        );
        let errs = merge("[syslog]\ntls_cert = \"/x.crt\"", Overrides::default()).unwrap_err();
        assert!(errs[0].starts_with("syslog.tls_key: missing"), "{errs:?}");
        let errs = merge("[syslog]\ntls_key = \"/x.key\"", Overrides::default()).unwrap_err();
        assert!(errs[0].starts_with("syslog.tls_cert: missing"), "{errs:?}");
        let errs = merge(
            "[syslog]\ntls_cert = \"/nonexistent.crt\"\ntls_key = \"/nonexistent.key\"",
            Overrides::default(),
        )
        .unwrap_err();
        assert!(errs
            .iter()
            .any(|e| e.starts_with("syslog.tls_cert: cannot read")));
        assert!(errs
            .iter()
            .any(|e| e.starts_with("syslog.tls_key: cannot read")));
        let errs = merge("[syslog]\ntls = \"here\"", Overrides::default()).unwrap_err();
        assert!(errs[0].starts_with("syslog.tls: \"here\" is not an address"));
    }

    #[test]
    fn secrets_in_urls_are_redacted() {
        assert_eq!(
            redact_url("postgres://me:hunter2@db/metrolog"),
            "postgres://me:***@db/metrolog"
        );
    }
}

/// Serde for optional durations written as text (`"90s"`, `"5m"`): the one
/// helper every section with an optional duration uses
/// (`#[serde(default, with = "crate::config::opt_duration")]`).
pub mod opt_duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        metrolog_protocol::parse_duration(&text)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }
}
