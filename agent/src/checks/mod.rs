//! Checks: Nagios plugins run on an interval, their results shipped in the
//! agent's batches (`Batch::checks`) and their perfdata as series
//! `check.<name>.<label>` (see `docs/checks.md`).
//!
//! - [`runner`] runs a plugin once (no shell, its own process group, a
//!   timeout that kills the group, output capped);
//! - [`schedule`] runs one check on its interval and counts attempts (soft
//!   and hard states);
//! - [`perf`] turns perfdata into samples (units normalised, counters into
//!   rates);
//! - [`book`] keeps results until the sampler seals them into a batch;
//! - [`Checks`] (here) runs the set in force: the agent's `[[checks]]` and
//!   those the server pushes to its group, changed without a restart.

pub mod book;
pub mod perf;
pub mod runner;
pub mod schedule;

pub use book::CheckBook;

use crate::config::CheckConfig;
use crate::random::Jitter;
use metrolog_protocol::nagios::{CheckName, CheckNameError};
use metrolog_protocol::CheckSettings;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// First runs are spread over at most this (or the check's interval, if
/// shorter), so checks do not all start at once.
pub const MAX_FIRST_SPREAD: Duration = Duration::from_secs(10);

/// A check ready to run.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckSpec {
    pub name: CheckName,
    /// Program and arguments; `/bin/sh -c <line>` for `shell = true`.
    pub argv: Vec<String>,
    pub interval: Duration,
    pub retry_interval: Duration,
    pub timeout: Duration,
    pub max_attempts: u32,
}

impl CheckSpec {
    /// From a validated `[[checks]]` entry.
    pub fn from_config(c: &CheckConfig) -> Result<Self, CheckNameError> {
        let argv = if c.shell {
            let line = c.command.join(" ");
            vec!["/bin/sh".into(), "-c".into(), line]
        } else {
            c.command.clone()
        };
        Ok(Self {
            name: CheckName::parse(&c.name)?,
            argv,
            interval: c.interval,
            retry_interval: c.retry_interval,
            timeout: c.timeout,
            max_attempts: c.max_attempts.max(1),
        })
    }
}

/// The checks in force: every local `[[checks]]` entry, then each pushed
/// check whose name no local check has (a local check of the same name
/// wins, whole: the two are never mixed key by key). A pushed check the
/// agent finds invalid is skipped with a warning (a server checks what it
/// pushes with the same rules, so only a version skew gets here).
pub fn merged(local: &[CheckConfig], pushed: Option<&[CheckSettings]>) -> Vec<CheckSpec> {
    let mut out: Vec<CheckSpec> = local
        .iter()
        .filter_map(|c| CheckSpec::from_config(c).ok())
        .collect();
    for (i, s) in pushed.unwrap_or_default().iter().enumerate() {
        if local.iter().any(|c| c.name == s.name) {
            continue;
        }
        let c = CheckConfig::from_settings(s);
        let problems = c.problems(&format!("pushed checks[{i}]"));
        if !problems.is_empty() {
            tracing::warn!("ignoring a check the server pushed: {problems}");
            continue;
        }
        if out.iter().any(|have| have.name.as_str() == s.name) {
            tracing::warn!("ignoring a second pushed check named {:?}", s.name);
            continue;
        }
        if let Ok(spec) = CheckSpec::from_config(&c) {
            out.push(spec);
        }
    }
    out
}

struct Running {
    spec: CheckSpec,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// The running checks, one task each.
pub struct Checks {
    local: Vec<CheckConfig>,
    book: Arc<CheckBook>,
    running: BTreeMap<CheckName, Running>,
    jitter: Jitter,
}

impl Checks {
    /// Starts the local checks and the pushed ones known (from the last run).
    pub fn start(
        local: Vec<CheckConfig>,
        pushed: Option<&[CheckSettings]>,
        book: Arc<CheckBook>,
    ) -> Self {
        let mut checks = Self {
            local,
            book,
            running: BTreeMap::new(),
            jitter: Jitter::from_entropy(),
        };
        checks.reconfigure(pushed);
        checks
    }

    pub fn book(&self) -> &Arc<CheckBook> {
        &self.book
    }

    /// The names of the checks running.
    pub fn names(&self) -> Vec<&str> {
        self.running.keys().map(CheckName::as_str).collect()
    }

    /// Applies the server's checks: a check that is new starts (after a
    /// spread delay), one that is gone stops, one that changed restarts with
    /// its attempts from 1; the others run on undisturbed.
    pub fn reconfigure(&mut self, pushed: Option<&[CheckSettings]>) {
        let want = merged(&self.local, pushed);
        let keep: Vec<&CheckName> = want.iter().map(|s| &s.name).collect();
        let gone: Vec<CheckName> = self
            .running
            .iter()
            .filter(|(name, r)| !want.iter().any(|s| &s.name == *name && *s == r.spec))
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            if let Some(r) = self.running.remove(&name) {
                let _ = r.stop.send(true);
                if !keep.contains(&&name) {
                    tracing::info!("check {name} removed");
                }
            }
        }
        for spec in want {
            if self.running.contains_key(&spec.name) {
                continue;
            }
            let spread = spec.interval.min(MAX_FIRST_SPREAD);
            let first = spread.mul_f64(self.jitter.unit());
            tracing::info!(
                "check {} every {} (timeout {}): {:?}",
                spec.name,
                humantime::format_duration(spec.interval),
                humantime::format_duration(spec.timeout),
                spec.argv
            );
            let (stop, stop_rx) = watch::channel(false);
            let task = tokio::spawn(schedule::run_check(
                spec.clone(),
                self.book.clone(),
                first,
                stop_rx,
            ));
            self.running
                .insert(spec.name.clone(), Running { spec, stop, task });
        }
    }

    /// Stops every check (runs in progress are abandoned, their process
    /// groups killed) and waits for their tasks.
    pub async fn stop(self) {
        for r in self.running.values() {
            let _ = r.stop.send(true);
        }
        for (_, r) in self.running {
            let _ = r.task.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(name: &str, cmd: &str) -> CheckConfig {
        CheckConfig {
            name: name.into(),
            command: vec![cmd.into()],
            ..CheckConfig::default()
        }
    }

    fn pushed(name: &str, cmd: &str) -> CheckSettings {
        CheckSettings {
            name: name.into(),
            command: vec![cmd.into()],
            interval_ms: Some(5000),
            ..CheckSettings::default()
        }
    }

    #[test]
    fn a_local_check_wins_over_a_pushed_one_of_the_same_name() {
        let l = [local("disk", "/local/check_disk")];
        let p = [
            pushed("disk", "/pushed/check_disk"),
            pushed("http", "/pushed/check_http"),
            pushed("Bad Name", "/x"),
            pushed("http", "/again"),
        ];
        let specs = merged(&l, Some(&p));
        let got: Vec<(&str, &str)> = specs
            .iter()
            .map(|s| (s.name.as_str(), s.argv[0].as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("disk", "/local/check_disk"),
                ("http", "/pushed/check_http")
            ]
        );
        assert_eq!(specs[1].interval, Duration::from_secs(5));
        assert_eq!(specs[1].max_attempts, 3);
        assert_eq!(merged(&l, None).len(), 1);
    }

    #[test]
    fn shell_checks_run_through_sh() {
        let c = CheckConfig {
            shell: true,
            ..local("s", "check_x -H a | head -1")
        };
        assert_eq!(
            CheckSpec::from_config(&c).unwrap().argv,
            ["/bin/sh", "-c", "check_x -H a | head -1"]
        );
    }

    #[tokio::test]
    async fn reconfigure_starts_stops_and_restarts() {
        let book = Arc::new(CheckBook::default());
        let mut checks = Checks::start(vec![local("a", "/bin/true")], None, book);
        assert_eq!(checks.names(), ["a"]);
        checks.reconfigure(Some(&[pushed("b", "/bin/true"), pushed("a", "/bin/false")]));
        assert_eq!(checks.names(), ["a", "b"]);
        let b_before = checks.running[&CheckName::parse("b").unwrap()].task.id();
        checks.reconfigure(Some(&[pushed("b", "/bin/true")]));
        assert_eq!(
            checks.running[&CheckName::parse("b").unwrap()].task.id(),
            b_before,
            "an unchanged check runs on"
        );
        checks.reconfigure(Some(&[pushed("b", "/bin/echo")]));
        assert_ne!(
            checks.running[&CheckName::parse("b").unwrap()].task.id(),
            b_before
        );
        checks.reconfigure(None);
        assert_eq!(checks.names(), ["a"]);
        tokio::time::timeout(Duration::from_secs(5), checks.stop())
            .await
            .expect("checks stop promptly");
    }
}
