//! Central configuration: the settings the `[[agents]]` sections push to
//! each group's agents, with the version each group's settings have
//! ([`AgentSettings::version`]). Heartbeat and batch answers carry the
//! version, so a running agent fetches its settings again only when they
//! changed (see `docs/agent-config.md`).
//!
//! The sections can be replaced while the server runs (SIGHUP reads the
//! file's `[[agents]]` again, [`Central::reload`]): everything is computed
//! once per change, so an answer only looks its group up.

use super::file::{AgentsSection, FileConfig};
use metrolog_protocol::{AgentSettings, LogSettings};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

/// What is pushed to each group now.
#[derive(Debug)]
pub struct Central {
    published: RwLock<Arc<Published>>,
}

/// The settings of one group and their version.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupSettings {
    pub settings: AgentSettings,
    pub version: String,
}

#[derive(Debug)]
struct Published {
    sections: Vec<AgentsSection>,
    /// Groups named by a section.
    groups: HashMap<String, Arc<GroupSettings>>,
    /// Every other group (and agents without one): nothing pushed.
    rest: Arc<GroupSettings>,
}

impl Published {
    fn new(sections: Vec<AgentsSection>) -> Self {
        let mut groups = HashMap::new();
        for s in &sections {
            if !groups.contains_key(&s.group) {
                let settings = settings_of(&sections, Some(&s.group));
                groups.insert(s.group.clone(), Arc::new(GroupSettings::new(settings)));
            }
        }
        Self {
            sections,
            groups,
            rest: Arc::new(GroupSettings::new(AgentSettings::default())),
        }
    }
}

impl GroupSettings {
    fn new(settings: AgentSettings) -> Self {
        Self {
            version: settings.version(),
            settings,
        }
    }
}

impl Central {
    pub fn new(sections: Vec<AgentsSection>) -> Self {
        Self {
            published: RwLock::new(Arc::new(Published::new(sections))),
        }
    }

    fn now(&self) -> Arc<Published> {
        self.published
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The settings pushed to the agents of `group`, and their version.
    pub fn for_group(&self, group: Option<&str>) -> Arc<GroupSettings> {
        let now = self.now();
        group
            .and_then(|g| now.groups.get(g))
            .unwrap_or(&now.rest)
            .clone()
    }

    /// The sections in force.
    pub fn sections(&self) -> Vec<AgentsSection> {
        self.now().sections.clone()
    }

    /// Puts `sections` in force; returns the groups whose settings changed.
    pub fn replace(&self, sections: Vec<AgentsSection>) -> Vec<String> {
        let next = Arc::new(Published::new(sections));
        let mut slot = self.published.write().unwrap_or_else(|p| p.into_inner());
        let before = slot.clone();
        *slot = next.clone();
        drop(slot);
        let mut changed: Vec<String> = before
            .groups
            .keys()
            .chain(next.groups.keys())
            .filter(|g| {
                let old = before.groups.get(*g).unwrap_or(&before.rest);
                let new = next.groups.get(*g).unwrap_or(&next.rest);
                old.version != new.version
            })
            .cloned()
            .collect();
        changed.sort();
        changed.dedup();
        changed
    }

    /// Reads the `[[agents]]` sections of the file at `path` again and puts
    /// them in force. A file with any error changes nothing: the errors are
    /// returned, and the sections in force stay.
    pub fn reload(&self, path: &Path) -> Result<Vec<String>, super::ConfigErrors> {
        let file = FileConfig::read(path)?;
        Ok(self.replace(file.agents))
    }
}

/// The settings of `group` from its `[[agents]]` sections, in file order:
/// a later section's interval or filter replaces an earlier one's; log files
/// add up (a path listed twice counts once, as first given); checks add up
/// (the configuration refuses a check name pushed twice to one group); the
/// last `munin` replaces an earlier one; scrape targets add up (a name
/// pushed twice to one group is refused too).
pub fn settings_of(sections: &[AgentsSection], group: Option<&str>) -> AgentSettings {
    let mut s = AgentSettings::default();
    let mut logs: Option<LogSettings> = None;
    for a in sections.iter().filter(|a| Some(a.group.as_str()) == group) {
        if !a.checks.is_empty() {
            let checks = s.checks.get_or_insert_with(Vec::new);
            for c in &a.checks {
                if !checks.iter().any(|have| have.name == c.name) {
                    checks.push(c.to_settings());
                }
            }
        }
        if let Some(m) = &a.munin {
            s.munin = Some(m.clone());
        }
        if !a.scrape.is_empty() {
            s.scrape
                .get_or_insert_with(Vec::new)
                .extend(a.scrape.iter().cloned());
        }
        if let Some(d) = a.metrics.sample_interval {
            s.sample_interval_ms = Some(metrolog_protocol::settings::millis(d));
        }
        if let Some(d) = a.metrics.ship_interval {
            s.ship_interval_ms = Some(metrolog_protocol::settings::millis(d));
        }
        if a.logs.files.is_empty() && a.logs.filter.is_none() {
            continue;
        }
        let l = logs.get_or_insert_with(LogSettings::default);
        for f in &a.logs.files {
            if !l.files.iter().any(|have| have.path == f.path) {
                l.files.push(f.to_settings());
            }
        }
        if let Some(filter) = &a.logs.filter {
            l.filter = Some(filter.to_settings());
        }
    }
    s.logs = logs;
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sections(text: &str) -> Vec<AgentsSection> {
        FileConfig::parse(text)
            .unwrap_or_else(|e| panic!("{e}"))
            .agents
    }

    const TWO_GROUPS: &str = r#"
        [[agents]]
        group = "web"
        metrics = { sample_interval = "1s" }
        [[agents]]
        group = "db"
        metrics = { sample_interval = "2s" }
    "#;

    #[test]
    fn versions_change_with_a_groups_settings_only() {
        let central = Central::new(sections(TWO_GROUPS));
        let web = central.for_group(Some("web"));
        let db = central.for_group(Some("db"));
        let other = central.for_group(Some("batch"));
        assert_ne!(web.version, db.version);
        assert_eq!(other.version, AgentSettings::default().version());
        assert_eq!(central.for_group(None).version, other.version);
        assert_eq!(web.settings.sample_interval_ms, Some(1000));

        // Same text again: nothing changed, no version moves.
        let same = sections(TWO_GROUPS);
        assert!(central.replace(same).is_empty());
        assert_eq!(central.for_group(Some("web")).version, web.version);

        // web changes, db goes away, batch appears.
        let changed = central.replace(sections(
            r#"
            [[agents]]
            group = "web"
            metrics = { sample_interval = "5s" }
            [[agents]]
            group = "batch"
            checks = [{ name = "ok", command = ["/bin/true"] }]
            "#,
        ));
        assert_eq!(changed, ["batch", "db", "web"]);
        assert_ne!(central.for_group(Some("web")).version, web.version);
        assert_eq!(
            central.for_group(Some("db")).version,
            AgentSettings::default().version(),
            "a group no longer configured gets nothing, and knows it"
        );
    }

    #[test]
    fn munin_and_scrape_are_pushed_and_checked_as_an_agent_checks_them() {
        let central = Central::new(sections(
            r#"
            [[agents]]
            group = "web"
            munin = { plugins_dir = "/etc/munin/plugins", interval = "30s" }
            scrape = [{ name = "node", url = "http://127.0.0.1:9100/metrics" }]
            [[agents]]
            group = "web"
            scrape = [{ name = "nginx", url = "http://127.0.0.1:9113/metrics", interval = "5s" }]
            "#,
        ));
        let web = central.for_group(Some("web"));
        let m = web.settings.munin.as_ref().unwrap();
        assert_eq!(m.interval, std::time::Duration::from_secs(30));
        let names: Vec<&str> = web
            .settings
            .scrape
            .iter()
            .flatten()
            .map(|t| t.name.as_str())
            .collect();
        assert_eq!(names, ["node", "nginx"]);
        let errs = FileConfig::parse(
            r#"
            [[agents]]
            group = "web"
            munin = { plugins_dir = "plugins", interval = "0s", colour = 1 }
            [[agents]]
            group = "web"
            munin = { plugins_dir = "plugins", interval = "0s" }
            scrape = [{ name = "Node", url = "ftp://x" }, { name = "a", url = "http://h/m" }]
            [[agents]]
            group = "web"
            scrape = [{ name = "a", url = "http://h/m" }]
            "#,
        )
        .unwrap_err()
        .0
        .join("\n");
        for want in [
            "agents[0].munin: unknown field `colour`",
            "agents[1].munin.plugins_dir: plugins must be an absolute path",
            "agents[1].munin.interval: must be between 1s and 1d",
            "agents[1].scrape[0].name",
            "agents[1].scrape[0].url",
            "agents[2].scrape: target \"a\" is already pushed to group \"web\" by agents[1].scrape",
        ] {
            assert!(errs.contains(want), "missing {want:?} in:\n{errs}");
        }
    }

    #[test]
    fn a_reload_with_errors_keeps_what_is_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.toml");
        std::fs::write(
            &path,
            "[[agents]]\ngroup = \"web\"\nmetrics = { ship_interval = \"5s\" }\n",
        )
        .unwrap();
        let central = Central::new(Vec::new());
        assert_eq!(central.reload(&path).unwrap(), ["web"]);
        let v = central.for_group(Some("web")).version.clone();
        std::fs::write(
            &path,
            "[[agents]]\ngroup = \"web\"\nmetrics = { ship_interval = \"soon\" }\n",
        )
        .unwrap();
        let errs = central.reload(&path).unwrap_err().to_string();
        assert!(errs.contains("agents[0].metrics"), "{errs}");
        assert_eq!(central.for_group(Some("web")).version, v);
        std::fs::write(
            &path,
            "[[agents]]\ngroup = \"web\"\nmetrics = { ship_interval = \"0s\" }\n",
        )
        .unwrap();
        let errs = central.reload(&path).unwrap_err().to_string();
        assert!(
            errs.contains("agents[0].metrics.ship_interval: must be at least 1s"),
            "{errs}"
        );
    }
}
