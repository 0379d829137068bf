//! `metrolog-agent show-config`: the effective configuration, as TOML-ish
//! text, each value followed by where it came from (`default`, `file`,
//! `env`, `flag`, `cloud user-data`, `server`). The server's part is what it
//! last pushed (kept in the state directory), combined with the local
//! configuration exactly as a running agent combines them
//! (`docs/agent-config.md`). Secrets are never printed: a token shows as
//! `<set>`, a password in a URL as `redacted`.

use crate::config::{AgentConfig, CheckConfig, LogFileConfig, Origin};
use crate::ship::Intervals;
use metrolog_protocol::AgentSettings;
use std::fmt::Write;
use std::path::Path;
use std::time::Duration;

/// The server's settings the agent kept in `state_dir` for `group`
/// (`None`: none yet, or for another group).
pub fn known_settings(state_dir: &Path, group: Option<&str>) -> Option<AgentSettings> {
    let bytes = std::fs::read(state_dir.join("server-settings.json")).ok()?;
    let known: crate::state::KnownSettings = serde_json::from_slice(&bytes).ok()?;
    (known.group.as_deref() == group).then_some(known.settings)
}

fn q(s: &str) -> String {
    format!("{s:?}")
}

fn dur(d: Duration) -> String {
    q(&humantime::format_duration(d).to_string())
}

fn list(items: &[String]) -> String {
    let inner: Vec<String> = items.iter().map(|s| q(s)).collect();
    format!("[{}]", inner.join(", "))
}

/// A URL as it may be shown: a password in it is replaced.
fn url(text: &str) -> String {
    match reqwest::Url::parse(text) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("redacted"));
            u.to_string()
        }
        _ => text.to_string(),
    }
}

struct Out(String);

impl Out {
    fn line(&mut self, key: &str, value: impl AsRef<str>, origin: Origin) {
        let _ = writeln!(self.0, "{key} = {}  # {}", value.as_ref(), origin.name());
    }

    fn unset(&mut self, key: &str) {
        let _ = writeln!(self.0, "# {key}: not set");
    }

    fn head(&mut self, text: &str) {
        let _ = writeln!(self.0, "\n{text}");
    }
}

/// The text `show-config` prints for `cfg` with the server's `pushed`
/// settings (and where the state directory is).
pub fn render(cfg: &AgentConfig, pushed: Option<&AgentSettings>, state_dir: &Path) -> String {
    let o = &cfg.origins;
    let mut out = Out(String::new());
    let _ = writeln!(
        out.0,
        "# metrolog-agent {}: effective configuration; after each value, where it came from\n\
         # (default, file, env, flag, cloud user-data, server). Secrets are shown as <set>.",
        crate::AGENT_VERSION
    );
    match pushed {
        Some(p) => {
            let _ = writeln!(
                out.0,
                "# server settings: version {} (as last received, kept in {})",
                p.version(),
                state_dir.display()
            );
        }
        None => {
            let _ = writeln!(
                out.0,
                "# server settings: none received yet for this group (in {})",
                state_dir.display()
            );
        }
    }
    let servers: Vec<String> = cfg.servers.iter().map(|s| url(s)).collect();
    out.line("server", list(&servers), o.get("server"));
    match &cfg.enroll_token {
        Some(_) => out.line("enroll_token", "\"<set>\"", o.get("enroll_token")),
        None => out.unset("enroll_token"),
    }
    match &cfg.ca_file {
        Some(p) => out.line("ca_file", q(&p.display().to_string()), o.get("ca_file")),
        None => out.unset("ca_file"),
    }
    for (key, v) in [
        ("group", &cfg.group),
        ("hostname", &cfg.hostname),
        ("instance_id", &cfg.instance_id),
    ] {
        match v {
            Some(v) => out.line(key, q(v), o.get(key)),
            None => out.unset(key),
        }
    }
    out.line(
        "state_dir",
        q(&state_dir.display().to_string()),
        o.get("state_dir"),
    );
    out.line(
        "procfs",
        q(&cfg.procfs.display().to_string()),
        o.get("procfs"),
    );

    if !cfg.labels.is_empty() {
        out.head("[labels]");
        for (k, v) in &cfg.labels {
            out.line(&q(k), q(v), o.get(&format!("labels.{k}")));
        }
    }

    // Intervals: the local ones, the server's where nothing local is set.
    out.head("[metrics]");
    let local = Intervals {
        sample: cfg.metrics.sample_interval,
        ship: cfg.metrics.ship_interval,
    };
    let pinned = [
        o.get("metrics.sample_interval"),
        o.get("metrics.ship_interval"),
    ];
    let eff = match pushed {
        Some(p) => local.with_pinned(p, [pinned[0].is_local(), pinned[1].is_local()]),
        None => local,
    };
    for (key, d, local_d, origin) in [
        ("sample_interval", eff.sample, local.sample, pinned[0]),
        ("ship_interval", eff.ship, local.ship, pinned[1]),
    ] {
        let origin = if d != local_d || (!origin.is_local() && server_sets(pushed, key)) {
            Origin::Server
        } else {
            origin
        };
        out.line(key, dur(d), origin);
    }

    // Logs: the local files first, then the server's of other paths; the
    // local filter when it sets anything, else the server's.
    let logs_origin = o.get("logs");
    let merged = cfg.logs.with_pushed(pushed.and_then(|p| p.logs.as_ref()));
    out.head("[logs]");
    out.line(
        "max_line_bytes",
        merged.max_line_bytes.to_string(),
        logs_origin,
    );
    out.line(
        "max_backlog_bytes",
        merged.max_backlog_bytes.to_string(),
        logs_origin,
    );
    out.line("poll_interval", dur(merged.poll_interval), logs_origin);
    for f in &merged.files {
        let origin = if cfg.logs.files.iter().any(|l| l.path == f.path) {
            logs_origin
        } else {
            Origin::Server
        };
        file_entry(&mut out, f, origin);
    }
    if let Some(unix) = &merged.syslog.unix {
        out.head("[logs.syslog]");
        out.line("unix", q(&unix.display().to_string()), logs_origin);
    }
    if let Some(udp) = &merged.syslog.udp {
        if merged.syslog.unix.is_none() {
            out.head("[logs.syslog]");
        }
        out.line("udp", q(udp), logs_origin);
    }
    if merged.filter.is_set() {
        let origin = if cfg.logs.filter.is_set() {
            logs_origin
        } else {
            Origin::Server
        };
        out.head("[logs.filter]");
        let f = &merged.filter;
        if let Some(s) = f.min_severity {
            out.line("min_severity", q(s.name()), origin);
        }
        for (key, v) in [
            ("include", &f.include),
            ("exclude", &f.exclude),
            ("apps", &f.apps),
        ] {
            if !v.is_empty() {
                out.line(key, list(v), origin);
            }
        }
    }

    // Checks: the local ones, then the server's of other names.
    let mut checks: Vec<(CheckConfig, Origin)> = cfg
        .checks
        .iter()
        .map(|c| (c.clone(), o.get("checks")))
        .collect();
    for s in pushed.and_then(|p| p.checks.as_deref()).unwrap_or_default() {
        if !cfg.checks.iter().any(|c| c.name == s.name) {
            checks.push((CheckConfig::from_settings(s), Origin::Server));
        }
    }
    for (c, origin) in &checks {
        out.head("[[checks]]");
        out.line("name", q(&c.name), *origin);
        out.line("command", list(&c.command), *origin);
        out.line("interval", dur(c.interval), *origin);
        out.line("retry_interval", dur(c.retry_interval), *origin);
        out.line("timeout", dur(c.timeout), *origin);
        out.line("max_attempts", c.max_attempts.to_string(), *origin);
        if c.shell {
            out.line("shell", "true", *origin);
        }
    }

    out.head("[spool]");
    let spool = o.get("spool");
    out.line("max_bytes", cfg.spool.max_bytes.to_string(), spool);
    out.line("log_share", cfg.spool.log_share.to_string(), spool);
    out.line("replay_rate", cfg.spool.replay_rate.to_string(), spool);

    // Munin: the agent's own [munin] whole, else the server's; scrape
    // targets: the agent's own, then the server's of other names.
    match cfg.munin_with(pushed).0 {
        Some((m, origin)) => {
            out.head("[munin]");
            out.line(
                "plugins_dir",
                q(&m.plugins_dir.display().to_string()),
                origin,
            );
            out.line("conf_dir", q(&m.conf_dir.display().to_string()), origin);
            out.line("interval", dur(m.interval), origin);
            out.line("timeout", dur(m.timeout), origin);
        }
        None => {
            let _ = writeln!(out.0, "\n# [munin]: off");
        }
    }
    for (t, origin) in cfg.scrape_with(pushed).0 {
        out.head("[[scrape]]");
        out.line("name", q(&t.name), origin);
        out.line("url", q(&url(&t.url)), origin);
        out.line("interval", dur(t.interval), origin);
        out.line("timeout", dur(t.timeout()), origin);
        out.line("sample_limit", t.sample_limit.to_string(), origin);
    }
    out.head("[cloud]");
    let cloud = o.get("cloud");
    let mode = match cfg.cloud.metadata {
        crate::cloud::MetadataMode::Auto => "auto",
        crate::cloud::MetadataMode::Ec2 => "ec2",
        crate::cloud::MetadataMode::Off => "off",
    };
    out.line("metadata", q(mode), cloud);
    match &cfg.cloud.metadata_url {
        Some(u) => out.line("metadata_url", q(&url(u)), cloud),
        None => out.unset("cloud.metadata_url"),
    }
    out.line("user_data", cfg.cloud.user_data.to_string(), cloud);
    out.0
}

/// Whether the server's settings set the interval `key`.
fn server_sets(pushed: Option<&AgentSettings>, key: &str) -> bool {
    pushed.is_some_and(|p| match key {
        "sample_interval" => p.sample_interval_ms.is_some(),
        _ => p.ship_interval_ms.is_some(),
    })
}

fn file_entry(out: &mut Out, f: &LogFileConfig, origin: Origin) {
    out.head("[[logs.files]]");
    out.line("path", q(&f.path), origin);
    if let Some(app) = &f.app {
        out.line("app", q(app), origin);
    }
    if let Some(tz) = &f.timezone {
        out.line("timezone", q(tz), origin);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{load_under, FileConfig, Overrides, Secret};
    use metrolog_protocol::{CheckSettings, LogFileSettings, LogSettings};

    #[test]
    fn each_value_names_its_origin_and_secrets_never_show() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(
            &path,
            "group = \"web\"\n[metrics]\nsample_interval = \"2s\"\n\
             [[logs.files]]\npath = \"/var/log/mine.log\"\n\
             [[checks]]\nname = \"disk\"\ncommand = [\"/local/check_disk\"]\n",
        )
        .unwrap();
        let flags = Overrides {
            servers: vec!["https://agent:hunter2@metrolog.example:8443".into()],
            enroll_token: Some(Secret::new("s3cret-token")),
            ship_interval: Some("5s".into()),
            config: Some(path),
            ..Overrides::default()
        };
        let cfg = load_under(flags, Overrides::default(), FileConfig::default()).unwrap();
        let pushed = AgentSettings {
            sample_interval_ms: Some(500),
            ship_interval_ms: Some(30_000),
            logs: Some(LogSettings {
                files: vec![LogFileSettings {
                    path: "/var/log/central/*.log".into(),
                    app: Some("central".into()),
                    timezone: None,
                }],
                filter: None,
            }),
            checks: Some(vec![
                CheckSettings {
                    name: "disk".into(),
                    command: vec!["/server/check_disk".into()],
                    ..Default::default()
                },
                CheckSettings {
                    name: "probe".into(),
                    command: vec!["/bin/true".into()],
                    interval_ms: Some(1000),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        };
        let text = render(&cfg, Some(&pushed), dir.path());
        for want in [
            "enroll_token = \"<set>\"  # flag",
            "group = \"web\"  # file",
            "sample_interval = \"2s\"  # file",
            "ship_interval = \"5s\"  # flag",
            "path = \"/var/log/mine.log\"  # file",
            "path = \"/var/log/central/*.log\"  # server",
            "app = \"central\"  # server",
            "command = [\"/local/check_disk\"]  # file",
            "name = \"probe\"  # server",
            "interval = \"1s\"  # server",
            "max_bytes = 104857600  # default",
            "# [munin]: off",
            "# hostname: not set",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
        assert!(
            !text.contains("/server/check_disk"),
            "a local check wins:\n{text}"
        );
        for secret in ["s3cret-token", "hunter2"] {
            assert!(!text.contains(secret), "{secret} printed:\n{text}");
        }

        // Nothing local for the intervals: the server's apply, and say so.
        let cfg = load_under(
            Overrides {
                servers: vec!["http://a:1".into()],
                ..Overrides::default()
            },
            Overrides::default(),
            FileConfig::default(),
        )
        .unwrap();
        let text = render(&cfg, Some(&pushed), dir.path());
        assert!(
            text.contains("sample_interval = \"500ms\"  # server"),
            "{text}"
        );
        assert!(text.contains("ship_interval = \"30s\"  # server"), "{text}");
        let text = render(&cfg, None, dir.path());
        assert!(
            text.contains("ship_interval = \"10s\"  # default"),
            "{text}"
        );
        assert!(text.contains("none received yet"), "{text}");
    }
}
