//! `[logs.filter]`: what is dropped at the source, before it costs backlog,
//! bandwidth or server storage. Regexes are compiled once.

use crate::config::LogFilterConfig;
use metrolog_protocol::syslog::{LogRecord, Severity};
use regex::RegexSet;
use std::collections::HashSet;
use std::sync::{Arc, RwLock};

/// A compiled `[logs.filter]`.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    min_severity: Option<Severity>,
    include: Option<RegexSet>,
    exclude: Option<RegexSet>,
    apps: HashSet<String>,
}

impl Filter {
    /// Compiles the filter; the configuration's validation reports bad
    /// patterns by key before this runs.
    pub fn new(cfg: &LogFilterConfig) -> Result<Self, regex::Error> {
        let set = |list: &[String]| -> Result<Option<RegexSet>, regex::Error> {
            if list.is_empty() {
                Ok(None)
            } else {
                RegexSet::new(list).map(Some)
            }
        };
        Ok(Self {
            min_severity: cfg.min_severity.map(|s| s.level()),
            include: set(&cfg.include)?,
            exclude: set(&cfg.exclude)?,
            apps: cfg.apps.iter().cloned().collect(),
        })
    }

    /// Whether `r` is kept: severity at least `min_severity` (no priority
    /// counts as notice), app among `apps` when any are listed (a record with
    /// no app is then dropped), message matching an `include` pattern when
    /// any are listed and no `exclude` pattern.
    pub fn keep(&self, r: &LogRecord) -> bool {
        if let Some(min) = self.min_severity {
            if !r.effective_severity().is_at_least(min) {
                return false;
            }
        }
        if !self.apps.is_empty() && !r.app_name.as_ref().is_some_and(|a| self.apps.contains(a)) {
            return false;
        }
        if let Some(inc) = &self.include {
            if !inc.is_match(&r.message) {
                return false;
            }
        }
        if let Some(exc) = &self.exclude {
            if exc.is_match(&r.message) {
                return false;
            }
        }
        true
    }
}

/// The filter in force, shared by the tailer and the local receiver, and
/// replaced whole when the server's settings change it.
#[derive(Debug, Default)]
pub struct FilterCell(RwLock<Arc<Filter>>);

impl FilterCell {
    pub fn new(filter: Filter) -> Self {
        Self(RwLock::new(Arc::new(filter)))
    }

    /// The filter now (a later [`FilterCell::set`] does not change it).
    pub fn get(&self) -> Arc<Filter> {
        // Readers and the writer only swap an Arc: a poisoned lock holds a
        // whole filter still.
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set(&self, filter: Filter) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(filter);
    }

    /// [`Filter::keep`] of the filter now.
    pub fn keep(&self, r: &LogRecord) -> bool {
        self.0.read().unwrap_or_else(|p| p.into_inner()).keep(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Severity as Level;
    use chrono::Utc;

    fn rec(msg: &str, sev: Option<Severity>, app: Option<&str>) -> LogRecord {
        let mut r = LogRecord::whole(msg.into(), Utc::now());
        r.severity = sev;
        r.app_name = app.map(str::to_owned);
        r
    }

    #[test]
    fn empty_filter_keeps_everything() {
        let f = Filter::new(&LogFilterConfig::default()).unwrap();
        assert!(f.keep(&rec("anything", Some(Severity::Debug), None)));
    }

    #[test]
    fn severity_apps_include_and_exclude() {
        let f = Filter::new(&LogFilterConfig {
            min_severity: Some(Level::Info),
            include: vec![r"^GET ".into(), r"error \d+".into()],
            exclude: vec!["healthcheck".into()],
            apps: vec!["nginx".into()],
        })
        .unwrap();
        let nginx = Some("nginx");
        assert!(f.keep(&rec("GET /index.html", Some(Severity::Info), nginx)));
        assert!(
            f.keep(&rec("upstream error 502", None, nginx)),
            "no PRI = notice"
        );
        assert!(
            !f.keep(&rec("GET /", Some(Severity::Debug), nginx)),
            "too verbose"
        );
        assert!(!f.keep(&rec("GET /healthcheck", Some(Severity::Err), nginx)));
        assert!(
            !f.keep(&rec("POST /login", Some(Severity::Err), nginx)),
            "no include"
        );
        assert!(!f.keep(&rec("GET /", Some(Severity::Err), Some("sshd"))));
        assert!(!f.keep(&rec("GET /", Some(Severity::Err), None)));
    }

    #[test]
    fn a_cell_swaps_the_filter_whole() {
        let cell = FilterCell::new(Filter::default());
        assert!(cell.keep(&rec("healthcheck ok", None, None)));
        let before = cell.get();
        cell.set(
            Filter::new(&LogFilterConfig {
                exclude: vec!["healthcheck".into()],
                ..LogFilterConfig::default()
            })
            .unwrap(),
        );
        assert!(!cell.keep(&rec("healthcheck ok", None, None)));
        assert!(before.keep(&rec("healthcheck ok", None, None)));
    }
}
