//! Command line of `metrolog-server`. Every flag is also an environment
//! variable `METROLOG_<NAME>`; sub-commands share `--config`, `--data-dir` and
//! `--database-url` with the server itself.

use crate::config::Overrides;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "metrolog-server",
    version,
    about = "Metrolog server: metrics, logs, alarms and scaling hooks for elastic fleets"
)]
pub struct Cli {
    /// TOML configuration file.
    #[arg(long, env = "METROLOG_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// HTTP address of the API and dashboard [default: 127.0.0.1:8080].
    #[arg(long, env = "METROLOG_LISTEN")]
    pub listen: Option<String>,
    /// Directory of the embedded database and local agent state [default: ./metrolog-data].
    #[arg(long, env = "METROLOG_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Database URL (overrides --data-dir), e.g. sqlite:///var/lib/metrolog/metrolog.db.
    #[arg(long, env = "METROLOG_DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// Syslog UDP address, or `off` [default: 127.0.0.1:5514].
    #[arg(long, env = "METROLOG_SYSLOG_UDP")]
    pub syslog_udp: Option<String>,
    /// Syslog TCP address, or `off` [default: 127.0.0.1:5514].
    #[arg(long, env = "METROLOG_SYSLOG_TCP")]
    pub syslog_tcp: Option<String>,
    /// Syslog over TLS (RFC 5425) address, or `off` [default: off; 127.0.0.1:6514 with a certificate].
    #[arg(long, env = "METROLOG_SYSLOG_TLS")]
    pub syslog_tls: Option<String>,
    /// PEM certificate chain of the syslog TLS receiver.
    #[arg(long, env = "METROLOG_SYSLOG_TLS_CERT")]
    pub syslog_tls_cert: Option<PathBuf>,
    /// PEM private key of --syslog-tls-cert (PKCS#8, RSA or SEC1).
    #[arg(long, env = "METROLOG_SYSLOG_TLS_KEY")]
    pub syslog_tls_key: Option<PathBuf>,
    /// Graphite plaintext TCP address, or `off` [default: off].
    #[arg(long, env = "METROLOG_GRAPHITE")]
    pub graphite: Option<String>,
    /// Do not run the built-in agent that reports this server's own host.
    #[arg(long, env = "METROLOG_NO_LOCAL_AGENT")]
    pub no_local_agent: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a configuration file; print every problem; exit 1 if any.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Manage API and enrollment tokens.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Manage dashboard users.
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// Copy the databases (the database and its log index) into DIR while the
    /// server runs; see docs/backup.md for restoring.
    Backup {
        /// Directory to write the copies into (created; must not hold them yet).
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenAction {
    /// Create a token and print it (shown only once).
    Create {
        /// admin, viewer or enroll.
        #[arg(long)]
        role: String,
        /// A name to recognise the token by.
        #[arg(long, default_value = "cli")]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserAction {
    /// Add a user. The password is read from stdin with --password-stdin, else generated and printed.
    Add {
        name: String,
        /// admin or viewer.
        #[arg(long)]
        role: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
}

impl Cli {
    pub fn overrides(&self) -> Overrides {
        Overrides {
            config: self.config.clone(),
            listen: self.listen.clone(),
            data_dir: self.data_dir.clone(),
            database_url: self.database_url.clone(),
            syslog_udp: self.syslog_udp.clone(),
            syslog_tcp: self.syslog_tcp.clone(),
            syslog_tls: self.syslog_tls.clone(),
            syslog_tls_cert: self.syslog_tls_cert.clone(),
            syslog_tls_key: self.syslog_tls_key.clone(),
            graphite: self.graphite.clone(),
            no_local_agent: self.no_local_agent,
        }
    }
}
