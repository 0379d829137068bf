//! `plugin-conf.d`, read as munin-node 2.0 reads it: every file of the
//! directory in name order (hidden files and editor/package leftovers
//! skipped), `[section]` headers naming a plugin or a wildcard (`if_*`,
//! `*_mysql`), then `user`, `group`, `command`, `timeout` and `env.NAME`
//! lines. A later file overrides an earlier one key by key (`env.*` names
//! merge); a plugin's own section wins over wildcards, and of two wildcards
//! the one sorting last (the more specific, `if_err_*` over `if_*`) wins.
//!
//! A malformed line ends the reading of its file, as in munin-node: the
//! sections before it apply, the problem is reported.

use regex::Regex;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

/// What `plugin-conf.d` says about one plugin (or wildcard).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PluginConf {
    pub user: Option<String>,
    /// Groups in order: the first is the primary one; a name in
    /// parentheses is optional (skipped when it does not exist).
    pub groups: Option<Vec<String>>,
    /// Run this instead of the plugin; `%c` stands for the plugin and its
    /// argument.
    pub command: Option<Vec<String>>,
    pub timeout: Option<Duration>,
    pub env: BTreeMap<String, String>,
}

impl PluginConf {
    /// Fills what `self` leaves unset from `wild` (a wildcard section).
    fn fill_from(&mut self, wild: &PluginConf) {
        for (k, v) in &wild.env {
            self.env.entry(k.clone()).or_insert_with(|| v.clone());
        }
        if self.user.is_none() {
            self.user.clone_from(&wild.user);
        }
        if self.groups.is_none() {
            self.groups.clone_from(&wild.groups);
        }
        if self.command.is_none() {
            self.command.clone_from(&wild.command);
        }
        if self.timeout.is_none() {
            self.timeout = wild.timeout;
        }
    }

    /// `other`'s keys over `self`'s (a later file).
    fn override_with(&mut self, other: PluginConf) {
        self.env.extend(other.env);
        if other.user.is_some() {
            self.user = other.user;
        }
        if other.groups.is_some() {
            self.groups = other.groups;
        }
        if other.command.is_some() {
            self.command = other.command;
        }
        if other.timeout.is_some() {
            self.timeout = other.timeout;
        }
    }
}

/// The whole of `plugin-conf.d`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PluginConfs {
    sections: BTreeMap<String, PluginConf>,
    /// Problems met, one line each (`file:line: reason`).
    pub problems: Vec<String>,
}

/// Files munin-node's default `ignore_file` patterns skip (editor backups,
/// package-manager leftovers), for plugins and conf files alike.
pub fn ignored(name: &str) -> bool {
    static IGNORES: OnceLock<Regex> = OnceLock::new();
    let re = IGNORES.get_or_init(|| {
        Regex::new(
            r"(?:[#~]$|DEADJOE$|\.bak$|%$|\.dpkg-(?:tmp|new|old|dist)$|\.rpm(?:save|new)$|\.pod$)",
        )
        .expect("static regex")
    });
    name.starts_with('.') || re.is_match(name)
}

fn word_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
}

impl PluginConfs {
    /// Reads every file of `dir` (a missing directory is no configuration).
    pub fn read_dir(dir: &Path) -> Self {
        let mut confs = Self::default();
        let mut names: Vec<String> = match std::fs::read_dir(dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .filter(|e| e.path().is_file())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return confs,
            Err(e) => {
                confs
                    .problems
                    .push(format!("cannot read {}: {e}", dir.display()));
                return confs;
            }
        };
        names.sort();
        for name in names {
            if !word_name(&name) || ignored(&name) {
                continue;
            }
            let path = dir.join(&name);
            match std::fs::read(&path) {
                Ok(bytes) => confs.parse_file(
                    &path.display().to_string(),
                    &String::from_utf8_lossy(&bytes),
                ),
                Err(e) => confs
                    .problems
                    .push(format!("cannot read {}: {e}", path.display())),
            }
        }
        confs
    }

    /// Reads one file's text (`origin` names it in problems).
    pub fn parse_file(&mut self, origin: &str, text: &str) {
        let mut section: Option<String> = None;
        for (i, raw) in text.lines().enumerate() {
            let line = strip_comment(raw);
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                if !name.is_empty() && !name.contains(']') {
                    section = Some(name.trim().to_string());
                    continue;
                }
            }
            let fail = |this: &mut Self, why: String| {
                this.problems.push(format!(
                    "{origin}:{}: {why}; the rest of the file is skipped",
                    i + 1
                ));
            };
            let Some(service) = &section else {
                fail(self, "a setting before any [section]".into());
                return;
            };
            match parse_line(line) {
                Ok(conf) => self
                    .sections
                    .entry(service.clone())
                    .or_default()
                    .override_with(conf),
                Err(why) => {
                    fail(self, why);
                    return;
                }
            }
        }
    }

    /// What applies to `plugin`: its own section, then the wildcards that
    /// match it, the last in name order first, filling what is unset.
    pub fn for_plugin(&self, plugin: &str) -> PluginConf {
        let mut conf = self.sections.get(plugin).cloned().unwrap_or_default();
        for (pattern, wild) in self.sections.iter().rev() {
            let matches = if let Some(prefix) = pattern.strip_suffix('*') {
                plugin.starts_with(prefix)
            } else if let Some(suffix) = pattern.strip_prefix('*') {
                plugin.ends_with(suffix)
            } else {
                continue;
            };
            if matches {
                conf.fill_from(wild);
            }
        }
        conf
    }
}

/// Removes a `#` comment (`\#` is a literal `#`).
fn strip_comment(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'#') => {
                out.push('#');
                chars.next();
            }
            '#' => break,
            _ => out.push(c),
        }
    }
    out
}

fn parse_line(line: &str) -> Result<PluginConf, String> {
    let (key, value) = match line.split_once(char::is_whitespace) {
        Some((k, v)) if !v.trim().is_empty() => (k, v.trim()),
        _ => return Err(format!("line {line:?} is not `key value`")),
    };
    if key == "env" && value.contains('=') {
        return Err(format!("deprecated `env {value}`: write `env.NAME value`"));
    }
    if !key
        .chars()
        .all(|c| c.is_alphanumeric() || c == '_' || c == '.')
    {
        return Err(format!("line {line:?} is not `key value`"));
    }
    let mut conf = PluginConf::default();
    match key {
        "user" => conf.user = Some(value.to_string()),
        "group" => {
            conf.groups = Some(
                value
                    .split(|c: char| c.is_whitespace() || c == ',')
                    .filter(|g| !g.is_empty())
                    .map(str::to_string)
                    .collect(),
            )
        }
        "command" => conf.command = Some(value.split_whitespace().map(str::to_string).collect()),
        "timeout" => {
            let secs: f64 = value
                .parse()
                .ok()
                .filter(|s: &f64| s.is_finite() && *s > 0.0 && *s <= 86_400.0)
                .ok_or_else(|| format!("timeout {value:?} is not a number of seconds"))?;
            conf.timeout = Some(Duration::from_secs_f64(secs));
        }
        // Read by munin-node for its master; nothing to do here.
        "host_name" | "update_rate" => {}
        _ => match key.strip_prefix("env.") {
            Some(name) if !name.is_empty() => {
                conf.env.insert(name.to_string(), value.to_string());
            }
            _ => {
                return Err(format!(
                    "unknown setting {key:?} (did you mean `env.{key} {value}`?)"
                ))
            }
        },
    }
    Ok(conf)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN: &str = include_str!("testdata/munin-node.conf");

    #[test]
    fn debians_file_reads_as_munin_node_reads_it() {
        let mut c = PluginConfs::default();
        c.parse_file("munin-node", DEBIAN);
        assert!(c.problems.is_empty(), "{:?}", c.problems);
        assert_eq!(c.for_plugin("if_eth0").user.as_deref(), Some("root"));
        // The more specific wildcard wins.
        assert_eq!(c.for_plugin("if_err_eth0").user.as_deref(), Some("nobody"));
        assert_eq!(c.for_plugin("load"), PluginConf::default());
        let df = c.for_plugin("df_inode");
        assert_eq!(df.env["warning"], "92");
        assert_eq!(df.env["exclude_re"], "^/run/user");
        let exim = c.for_plugin("exim_mailqueue");
        assert_eq!(
            exim.groups.as_deref(),
            Some(&["adm".to_string(), "(Debian-exim)".to_string()][..])
        );
        assert_eq!(
            c.for_plugin("amavis").env["MUNIN_MKTEMP"],
            "/bin/mktemp -p /tmp/ $1"
        );
    }

    #[test]
    fn later_files_override_key_by_key_and_own_section_beats_wildcards() {
        let mut c = PluginConfs::default();
        c.parse_file("a", "[load]\nuser root\nenv.a 1\nenv.b 1\n[lo*]\nuser daemon\ngroup adm\nenv.c wild\ntimeout 5\n");
        c.parse_file("b", "[load]\nenv.b 2 # comment\nenv.hash a\\#b\n");
        let load = c.for_plugin("load");
        assert_eq!(load.user.as_deref(), Some("root"));
        assert_eq!(load.groups.as_deref(), Some(&["adm".to_string()][..]));
        assert_eq!(load.timeout, Some(Duration::from_secs(5)));
        let env: Vec<(&str, &str)> = load
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            env,
            [("a", "1"), ("b", "2"), ("c", "wild"), ("hash", "a#b")]
        );
        let mut suffix = PluginConfs::default();
        suffix.parse_file("s", "[*_mysql]\nuser mysql\n");
        assert_eq!(suffix.for_plugin("x_mysql").user.as_deref(), Some("mysql"));
        assert_eq!(suffix.for_plugin("mysql_x").user, None);
    }

    #[test]
    fn a_bad_line_skips_the_rest_of_its_file_only() {
        let mut c = PluginConfs::default();
        c.parse_file("bad", "user root\n[x]\nuser a\n");
        c.parse_file("worse", "[y]\nuser b\nfoo bar\n[z]\nuser c\n");
        c.parse_file("old", "[w]\nenv A=1\n");
        c.parse_file("good", "[v]\nuser d\n");
        assert_eq!(c.for_plugin("x").user, None);
        assert_eq!(c.for_plugin("y").user.as_deref(), Some("b"));
        assert_eq!(c.for_plugin("z").user, None);
        assert_eq!(c.for_plugin("v").user.as_deref(), Some("d"));
        assert_eq!(c.problems.len(), 3, "{:?}", c.problems);
        assert!(c.problems[0].starts_with("bad:1: a setting before any [section]"));
        assert!(c.problems[1].contains("env.foo bar"), "{}", c.problems[1]);
        assert!(c.problems[2].contains("deprecated"), "{}", c.problems[2]);
    }

    #[test]
    fn ignored_names() {
        for name in [
            ".hidden",
            "x~",
            "x.bak",
            "x.dpkg-old",
            "x.rpmnew",
            "x.pod",
            "#x#",
        ] {
            assert!(ignored(name), "{name}");
        }
        assert!(!ignored("if_eth0"));
    }
}
