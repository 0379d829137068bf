//! `[munin]`: where the plugins are, how often they run and the limits of
//! what one plugin may print (see `docs/munin.md`). An agent's own file and
//! the server's `[[agents]]` sections both write it.

use super::ConfigErrors;
use crate::units::{serde_duration, serde_size};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// `[munin]`. Its presence in `agent.toml` turns Munin plugins on.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MuninConfig {
    /// Every executable here is a plugin, as for munin-node (default
    /// `/etc/munin/plugins`).
    pub plugins_dir: PathBuf,
    /// `plugin-conf.d`: user, group, `env.*`, `timeout`, `command` per
    /// plugin (default `/etc/munin/plugin-conf.d`).
    pub conf_dir: PathBuf,
    /// How often every plugin is fetched (default 60s, as munin-update).
    #[serde(with = "serde_duration")]
    pub interval: Duration,
    /// Longest run of one plugin, unless its `timeout` in `plugin-conf.d`
    /// says otherwise (default 60s, as munin-node). Its process group then
    /// gets SIGHUP, and SIGKILL 2 s later.
    #[serde(with = "serde_duration")]
    pub timeout: Duration,
    /// `MUNIN_PLUGSTATE` is `<plugstate_dir>/<user>` (default
    /// `/var/lib/munin-node/plugin-state`, munin-node's).
    pub plugstate_dir: PathBuf,
    /// `MUNIN_LIBDIR`: where `plugins/plugin.sh` is (default `/usr/share/munin`).
    pub libdir: PathBuf,
    /// The user plugins run as when `plugin-conf.d` names none (default `nobody`).
    pub default_user: String,
    /// The group plugins run as when `plugin-conf.d` names none (default
    /// `munin`; the default user's own group when no such group exists).
    pub default_group: String,
    /// Fields kept from one plugin run, multigraph included (default 1000);
    /// the rest are dropped and counted.
    pub max_fields: usize,
    /// Series all plugins together may feed (default 10000); fields beyond
    /// are dropped and counted.
    pub max_series: usize,
    /// Lines of output one run may print (default 20000); a run printing
    /// more fails.
    pub max_lines: usize,
    /// Bytes of output one run may print (default 1MiB); a run printing
    /// more fails.
    #[serde(with = "serde_size")]
    pub max_output_bytes: u64,
    /// Plugins run at most (default 500); the rest, in name order, are
    /// skipped with a warning.
    pub max_plugins: usize,
}

impl Default for MuninConfig {
    fn default() -> Self {
        Self {
            plugins_dir: PathBuf::from("/etc/munin/plugins"),
            conf_dir: PathBuf::from("/etc/munin/plugin-conf.d"),
            interval: Duration::from_secs(60),
            timeout: Duration::from_secs(60),
            plugstate_dir: PathBuf::from("/var/lib/munin-node/plugin-state"),
            libdir: PathBuf::from("/usr/share/munin"),
            default_user: "nobody".into(),
            default_group: "munin".into(),
            max_fields: 1000,
            max_series: 10_000,
            max_lines: 20_000,
            max_output_bytes: 1 << 20,
            max_plugins: 500,
        }
    }
}

impl MuninConfig {
    /// Every problem of this section, keys prefixed `munin.`.
    pub fn validate(&self, errs: &mut ConfigErrors) {
        for (key, p) in [
            ("plugins_dir", &self.plugins_dir),
            ("conf_dir", &self.conf_dir),
            ("plugstate_dir", &self.plugstate_dir),
            ("libdir", &self.libdir),
        ] {
            if !p.is_absolute() {
                errs.push(
                    format!("munin.{key}"),
                    format!("{} must be an absolute path", p.display()),
                );
            }
        }
        if self.interval < Duration::from_secs(1) || self.interval > Duration::from_secs(86_400) {
            errs.push("munin.interval", "must be between 1s and 1d");
        }
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(86_400) {
            errs.push("munin.timeout", "must be greater than 0 and at most 1d");
        }
        for (key, v) in [
            ("default_user", &self.default_user),
            ("default_group", &self.default_group),
        ] {
            if v.trim().is_empty() || v.contains(char::is_whitespace) {
                errs.push(
                    format!("munin.{key}"),
                    format!("{v:?} must be a user or group name"),
                );
            }
        }
        for (key, v, max) in [
            ("max_fields", self.max_fields, 100_000),
            ("max_series", self.max_series, 1_000_000),
            ("max_lines", self.max_lines, 1_000_000),
            ("max_plugins", self.max_plugins, 10_000),
        ] {
            if v == 0 || v > max {
                errs.push(
                    format!("munin.{key}"),
                    format!("must be between 1 and {max}"),
                );
            }
        }
        if !(1024..=(64 << 20)).contains(&self.max_output_bytes) {
            errs.push("munin.max_output_bytes", "must be between 1KiB and 64MiB");
        }
    }
}
