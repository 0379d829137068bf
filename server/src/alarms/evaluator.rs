//! The evaluator: one task that owns every alarm's in-memory state, fed by
//! the event bus (samples, check results, host changes, log records) and by a
//! one-second timer (pending times, `keep_firing_for`, no data, liveness
//! timeouts, silences ending). Each event is judged when the batch that
//! carries it commits; nothing polls the database.
//!
//! [`Evaluator`] is the pure core: events and times in, [`AlarmWrite`]s out.
//! [`run`] is the task around it: it subscribes, loads state from the store
//! at start (and after falling behind the bus), commits the writes (an alarm
//! transition and its outbox rows in one transaction) and wakes the
//! delivery worker.
//!
//! Who owns this state when several servers share one database: the one
//! that holds the leader lease (SPEC §10); the others do not run the
//! evaluator, and the API reads alarms from the database, never from here.

use super::condition::Condition;
use super::flap::FlapThresholds;
use super::machine::{Ack, Alarm, Effects, Observation, Subject};
use super::rules::{Kind, Limits, Rule, Scope, SeriesLimits};
use super::silence::Silence;
use super::Status;
use crate::clock::SharedClock;
use crate::events::{Event, HostChange, HostInfo, SamplesCommitted, SeriesMetaCommitted};
use crate::logs::feed::FeedBatch;
use crate::store::{HostState, Store};
use crate::telemetry::ServerMetrics;
use metrolog_protocol::syslog::Severity;
use metrolog_protocol::{Bucket, Labels, SeriesKey};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

/// Writes the evaluator keeps for a retry when a commit failed, at most.
pub const MAX_RETRY_WRITES: usize = 10_000;

/// What one alarm change asks the store to write.
#[derive(Debug, Clone)]
pub struct AlarmWrite {
    pub alarm: Alarm,
    pub effects: Effects,
}

/// What the evaluator knows of a host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostEntry {
    pub hostname: String,
    pub group: Option<String>,
    /// The row stands for a group's own series (`kind = 'group'`).
    pub owner_of: Option<String>,
    pub state: HostState,
    pub last_seen: i64,
    pub passive: bool,
}

type Key = (String, Subject);

/// Most bus events judged before their writes are committed together.
const MAX_EVENTS_PER_COMMIT: usize = 256;

/// The threshold rules of one metric, split by what they select, so a batch
/// only meets the rules that can concern its host: a server with 10 000
/// per-host rules judges each batch against its own few, not all of them.
#[derive(Debug, Default)]
struct MetricRules {
    any: Vec<usize>,
    by_host: HashMap<String, Vec<usize>>,
    by_group: HashMap<String, Vec<usize>>,
}

impl MetricRules {
    /// The rules that may concern a series of `host` (a member, or the row
    /// that owns a group's own series); the selector is still checked.
    fn candidates(&self, host: &HostEntry) -> Vec<usize> {
        let mut out = self.any.clone();
        if let Some(v) = self.by_host.get(&host.hostname) {
            out.extend_from_slice(v);
        }
        let owner = host
            .owner_of
            .as_ref()
            .filter(|o| Some(*o) != host.group.as_ref());
        for g in [host.group.as_ref(), owner].into_iter().flatten() {
            if let Some(v) = self.by_group.get(g) {
                out.extend_from_slice(v);
            }
        }
        out
    }
}

#[derive(Debug)]
pub struct Evaluator {
    rules: Vec<Arc<Rule>>,
    /// Threshold rules by metric name (and by the host or group they
    /// select), check rules by check name.
    by_metric: HashMap<String, MetricRules>,
    by_check: HashMap<String, Vec<usize>>,
    /// Rules by name: the timer walks every condition each second.
    by_name: HashMap<String, usize>,
    /// The log rules, for every committed chunk of records.
    log_rules: Vec<usize>,
    /// Metrics judged by a rule with `limits = "series"`.
    series_limited: HashSet<String>,
    /// The ranges series of those metrics describe: (host, name, labels
    /// text) → ranges. Only series that give some are kept, only for
    /// metrics in `series_limited`, and they go with their host.
    limits: HashMap<(i64, String, String), SeriesLimits>,
    /// Series descriptions whose `warning`/`critical` could not be read as
    /// ranges (the rule's own ranges judge those series).
    pub limits_unreadable: u64,
    alarms: HashMap<Key, Alarm>,
    conditions: HashMap<Key, Condition>,
    hosts: HashMap<i64, HostEntry>,
    silences: Vec<Silence>,
    /// Hosts `down` whose liveness rules wait for their own timeout: host → last seen.
    pending_down: HashMap<i64, i64>,
    flap: FlapThresholds,
    base_step: i64,
    /// Rule evaluations done (for /metrics).
    pub evaluations: u64,
    pub silenced: u64,
}

impl Evaluator {
    pub fn new(rules: Vec<Rule>, base_step: i64) -> Self {
        let mut e = Self {
            rules: Vec::new(),
            by_metric: HashMap::new(),
            by_check: HashMap::new(),
            by_name: HashMap::new(),
            log_rules: Vec::new(),
            series_limited: HashSet::new(),
            limits: HashMap::new(),
            limits_unreadable: 0,
            alarms: HashMap::new(),
            conditions: HashMap::new(),
            hosts: HashMap::new(),
            silences: Vec::new(),
            pending_down: HashMap::new(),
            flap: FlapThresholds::default(),
            base_step: base_step.max(1),
            evaluations: 0,
            silenced: 0,
        };
        e.index(rules);
        e
    }

    fn index(&mut self, rules: Vec<Rule>) {
        self.rules = rules.into_iter().map(Arc::new).collect();
        self.by_metric.clear();
        self.by_check.clear();
        self.by_name.clear();
        self.log_rules.clear();
        self.series_limited.clear();
        for (i, r) in self.rules.iter().enumerate() {
            self.by_name.insert(r.name.clone(), i);
            if matches!(r.kind, Kind::Log { .. }) {
                self.log_rules.push(i);
            }
            match &r.kind {
                Kind::Threshold { metric, .. } => {
                    if r.limits == Limits::Series {
                        self.series_limited.insert(metric.as_str().to_string());
                    }
                    let m = self
                        .by_metric
                        .entry(metric.as_str().to_string())
                        .or_default();
                    match (&r.selector.host, &r.selector.group) {
                        (Some(h), _) => m.by_host.entry(h.clone()).or_default().push(i),
                        (None, Some(g)) => m.by_group.entry(g.clone()).or_default().push(i),
                        (None, None) => m.any.push(i),
                    }
                }
                Kind::Check { check } => self
                    .by_check
                    .entry(check.as_str().to_string())
                    .or_default()
                    .push(i),
                _ => {}
            }
        }
    }

    pub fn rules(&self) -> &[Arc<Rule>] {
        &self.rules
    }

    /// Whether some rule judges `metric` by its series' own ranges.
    pub fn wants_limits(&self, metric: &str) -> bool {
        self.series_limited.contains(metric)
    }

    /// Records the ranges a series' description gives (Munin syntax);
    /// `None`s forget them. Ignored unless [`Self::wants_limits`].
    pub fn set_series_limits(
        &mut self,
        host_id: i64,
        name: &str,
        labels_text: &str,
        warning: Option<&str>,
        critical: Option<&str>,
    ) {
        if !self.wants_limits(name) {
            return;
        }
        let (limits, problems) = SeriesLimits::parse(warning, critical);
        if !problems.is_empty() {
            self.limits_unreadable += 1;
            tracing::warn!(
                host_id,
                series = %format!("{name}{labels_text}"),
                problems = ?problems,
                "a series' warning/critical is not a range; the rule's own ranges judge it"
            );
        }
        let key = (host_id, name.to_string(), labels_text.to_string());
        if limits.is_empty() {
            self.limits.remove(&key);
        } else {
            self.limits.insert(key, limits);
        }
    }

    /// Forgets the ranges of every series (before they are read again).
    pub fn clear_series_limits(&mut self) {
        self.limits.clear();
    }

    fn on_series_meta(&mut self, m: &SeriesMetaCommitted) {
        for (key, warning, critical) in &m.series {
            if self.wants_limits(key.name.as_str()) {
                self.set_series_limits(
                    m.host_id,
                    key.name.as_str(),
                    &key.labels_text(),
                    warning.as_deref(),
                    critical.as_deref(),
                );
            }
        }
    }

    fn rule_named(&self, name: &str) -> Option<Arc<Rule>> {
        self.by_name.get(name).map(|&i| self.rules[i].clone())
    }

    pub fn has_log_rules(&self) -> bool {
        self.rules
            .iter()
            .any(|r| matches!(r.kind, Kind::Log { .. }))
    }

    pub fn knows_host(&self, id: i64) -> bool {
        self.hosts.contains_key(&id)
    }

    pub fn set_host(&mut self, id: i64, entry: HostEntry) {
        self.hosts.insert(id, entry);
    }

    pub fn set_silences(&mut self, silences: Vec<Silence>) {
        self.silences = silences;
    }

    /// Alarms loaded from the store at start.
    pub fn load_alarm(&mut self, alarm: Alarm) {
        self.alarms
            .insert((alarm.rule.clone(), alarm.subject.clone()), alarm);
    }

    pub fn set_alarm_id(&mut self, rule: &str, subject: &Subject, id: i64) {
        if let Some(a) = self.alarms.get_mut(&(rule.to_string(), subject.clone())) {
            a.id = id;
        }
    }

    pub fn alarm(&self, id: i64) -> Option<&Alarm> {
        self.alarms.values().find(|a| a.id == id)
    }

    /// Alarms by state, for the `/metrics` gauges.
    pub fn problem_counts(&self) -> (u64, u64, u64) {
        let mut c = (0, 0, 0);
        for a in self.alarms.values().filter(|a| a.hard) {
            match a.state {
                Status::Warning => c.0 += 1,
                Status::Critical => c.1 += 1,
                Status::Unknown => c.2 += 1,
                Status::Ok => {}
            }
        }
        c
    }

    /// Replaces the rules. Alarms of rules that are gone resolve (receivers
    /// told) and are forgotten; a changed rule starts its windows afresh.
    pub fn set_rules(&mut self, rules: Vec<Rule>, now: i64) -> Vec<AlarmWrite> {
        let old: HashMap<String, Arc<Rule>> = self
            .rules
            .iter()
            .map(|r| (r.name.clone(), r.clone()))
            .collect();
        self.index(rules);
        let kept: HashMap<&str, &Arc<Rule>> =
            self.rules.iter().map(|r| (r.name.as_str(), r)).collect();
        self.conditions.retain(|(rule, _), _| {
            kept.get(rule.as_str())
                .is_some_and(|r| old.get(rule).is_some_and(|o| o.as_ref() == r.as_ref()))
        });
        let gone: Vec<Key> = self
            .alarms
            .keys()
            .filter(|(rule, _)| !kept.contains_key(rule.as_str()))
            .cloned()
            .collect();
        let mut out = Vec::new();
        for key in gone {
            if let Some(mut a) = self.alarms.remove(&key) {
                let mut fx = Effects::default();
                if a.state != Status::Ok {
                    a.observe(
                        Observation {
                            status: Status::Ok,
                            value: None,
                            output: "rule removed".into(),
                            attempt: Some((1, 1)),
                        },
                        1,
                        now,
                        self.flap,
                        &mut fx,
                    );
                    a.flapping = false;
                    a.reconcile(now, None, &mut fx);
                }
                if !fx.is_empty() {
                    out.push(AlarmWrite {
                        alarm: a,
                        effects: fx,
                    });
                }
            }
        }
        out
    }

    fn silence_for(&self, labels: &Labels, now: i64) -> Option<i64> {
        self.silences
            .iter()
            .find(|s| s.matches(labels, now))
            .map(|s| s.id)
    }

    /// Hands one observation to the alarm of (rule, subject), creating the
    /// alarm on its first problem; collects what must be written.
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &mut self,
        rule: &Rule,
        subject: &Subject,
        labels: impl FnOnce() -> Labels,
        obs: Observation,
        now: i64,
        out: &mut Vec<AlarmWrite>,
    ) {
        self.evaluations += 1;
        let key = (rule.name.clone(), subject.clone());
        if !self.alarms.contains_key(&key) {
            if obs.status == Status::Ok {
                return;
            }
            self.alarms.insert(
                key.clone(),
                Alarm::new(&rule.name, subject.clone(), labels(), now),
            );
        }
        let flap = self.flap;
        let mut fx = Effects::default();
        let labels = {
            let alarm = self.alarms.get_mut(&key).expect("inserted above");
            alarm.observe(obs, rule.max_attempts, now, flap, &mut fx);
            alarm.labels_for(alarm.state)
        };
        let silence = self.silence_for(&labels, now);
        let alarm = self.alarms.get_mut(&key).expect("inserted above");
        alarm.reconcile(now, silence, &mut fx);
        self.silenced += u64::from(fx.silenced);
        if !fx.is_empty() {
            out.push(AlarmWrite {
                alarm: alarm.clone(),
                effects: fx,
            });
        }
    }

    fn host_labels(&self, rule: &Rule, host_id: i64, extra: &Labels) -> Labels {
        let mut l = Labels::new();
        l.insert("alertname".into(), rule.name.clone());
        l.insert("rule".into(), rule.name.clone());
        if let Some(h) = self.hosts.get(&host_id) {
            l.insert("instance".into(), h.hostname.clone());
            l.insert("host".into(), h.hostname.clone());
            if let Some(g) = &h.group {
                l.insert("group".into(), g.clone());
            }
        }
        for (k, v) in extra {
            l.entry(k.clone()).or_insert_with(|| v.clone());
        }
        l
    }

    fn group_labels(rule: &Rule, group: &str) -> Labels {
        let mut l = Labels::new();
        l.insert("alertname".into(), rule.name.clone());
        l.insert("rule".into(), rule.name.clone());
        l.insert("instance".into(), group.to_string());
        l.insert("group".into(), group.to_string());
        l
    }

    /// One committed event.
    pub fn on_event(&mut self, event: &Event, now: i64) -> Vec<AlarmWrite> {
        let mut out = Vec::new();
        match event {
            Event::Samples(s) => self.on_samples(s, now, &mut out),
            Event::Checks(c) => {
                let Some(host) = self.hosts.get(&c.host_id).cloned() else {
                    return out;
                };
                for r in &c.results {
                    let Some(idx) = self.by_check.get(r.name.as_str()).cloned() else {
                        continue;
                    };
                    for i in idx {
                        let rule = self.rules[i].clone();
                        if !rule.selector.matches(&host.hostname, host.group.as_deref()) {
                            continue;
                        }
                        let subject = Subject::host(c.host_id);
                        let mut extra = Labels::new();
                        extra.insert("check".into(), r.name.to_string());
                        let labels = self.host_labels(&rule, c.host_id, &extra);
                        let obs = Observation {
                            status: r.status,
                            value: None,
                            output: r.output.clone(),
                            attempt: Some((r.attempt, r.max_attempts)),
                        };
                        self.apply(&rule, &subject, || labels, obs, now, &mut out);
                    }
                }
            }
            Event::Host(h) => self.on_host(
                h.host_id,
                h.change,
                h.last_seen,
                h.info.as_ref(),
                now,
                &mut out,
            ),
            Event::GroupRound(_) => {}
            Event::SeriesMeta(m) => self.on_series_meta(m),
        }
        out
    }

    fn on_samples(&mut self, s: &SamplesCommitted, now: i64, out: &mut Vec<AlarmWrite>) {
        let Some(host) = self.hosts.get(&s.host_id).cloned() else {
            return;
        };
        if host.state != HostState::Up && host.owner_of.is_none() {
            if let Some(h) = self.hosts.get_mut(&s.host_id) {
                h.state = HostState::Up;
            }
        }
        for (key, buckets) in &s.series {
            let Some(idx) = self
                .by_metric
                .get(key.name.as_str())
                .map(|m| m.candidates(&host))
            else {
                continue;
            };
            for i in idx {
                let rule = self.rules[i].clone();
                self.threshold_samples(&rule, s.host_id, &host, key, buckets, now, out);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn threshold_samples(
        &mut self,
        rule: &Rule,
        host_id: i64,
        host: &HostEntry,
        key: &SeriesKey,
        buckets: &[Bucket],
        now: i64,
        out: &mut Vec<AlarmWrite>,
    ) {
        let Kind::Threshold {
            labels: want,
            scope,
            aggregation,
            window,
            cf,
            ..
        } = &rule.kind
        else {
            return;
        };
        let subject = match scope {
            Scope::Host => {
                if host.owner_of.is_some()
                    || !rule.selector.matches(&host.hostname, host.group.as_deref())
                    || !want.iter().all(|(k, v)| key.labels.get(k) == Some(v))
                {
                    return;
                }
                Subject::Host {
                    id: host_id,
                    series_labels: key.labels_text(),
                }
            }
            Scope::Group => {
                let Some(group) = &host.owner_of else { return };
                if rule.selector.group.as_deref() != Some(group.as_str())
                    || key.labels.get(crate::groups::AGG_LABEL).map(String::as_str)
                        != Some(aggregation.as_str())
                {
                    return;
                }
                let rest: Labels = key
                    .labels
                    .iter()
                    .filter(|(k, _)| k.as_str() != crate::groups::AGG_LABEL)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                if &rest != want {
                    return;
                }
                Subject::Group(group.clone())
            }
        };
        let ck = (rule.name.clone(), subject.clone());
        let has_alarm = self.alarms.contains_key(&ck);
        let cond = self
            .conditions
            .entry(ck)
            .or_insert_with(|| Condition::new(now));
        if !cond.add_buckets(buckets, *window) {
            return;
        }
        let Some(value) = cond.window_value(*cf) else {
            return;
        };
        let ranges = match rule.limits {
            Limits::Rule => rule.ranges(None),
            Limits::Series => rule.ranges(self.limits.get(&(
                host_id,
                key.name.as_str().to_string(),
                key.labels_text(),
            ))),
        };
        let judged = rule.judge_with(ranges, value);
        let gated = cond.datapoint(rule, judged, Some(value), now);
        if gated == Status::Ok && !has_alarm {
            // The common case, kept cheap: nothing to say, no alarm to
            // update, so no labels or text are built.
            self.evaluations += 1;
            return;
        }
        let labels = match &subject {
            Subject::Host { .. } => self.host_labels(rule, host_id, &key.labels),
            Subject::Group(g) => Self::group_labels(rule, g),
        };
        let obs = Observation {
            status: gated,
            value: Some(value),
            output: describe(rule, ranges, &key.name.to_string(), value, gated),
            attempt: None,
        };
        self.apply(rule, &subject, || labels, obs, now, out);
    }

    fn on_host(
        &mut self,
        id: i64,
        change: HostChange,
        last_seen: i64,
        info: Option<&HostInfo>,
        now: i64,
        out: &mut Vec<AlarmWrite>,
    ) {
        if let Some(info) = info {
            self.hosts.insert(
                id,
                HostEntry {
                    hostname: info.hostname.clone(),
                    group: info.group.clone(),
                    owner_of: None,
                    state: HostState::Up,
                    last_seen,
                    passive: info.passive,
                },
            );
        }
        let liveness: Vec<Arc<Rule>> = self
            .rules
            .iter()
            .filter(|r| matches!(r.kind, Kind::Liveness { .. }))
            .cloned()
            .collect();
        match change {
            HostChange::Up => {
                self.pending_down.remove(&id);
                if let Some(h) = self.hosts.get_mut(&id) {
                    h.state = HostState::Up;
                    h.last_seen = last_seen;
                }
                for rule in liveness {
                    let obs = Observation {
                        status: Status::Ok,
                        value: None,
                        output: "reporting again".into(),
                        attempt: Some((1, 1)),
                    };
                    self.apply(&rule, &Subject::host(id), Labels::new, obs, now, out);
                }
            }
            HostChange::Down => {
                let Some(h) = self.hosts.get_mut(&id) else {
                    return;
                };
                h.state = HostState::Down;
                h.last_seen = last_seen;
                self.pending_down.insert(id, last_seen);
                self.check_down(id, now, out);
            }
            HostChange::Left => {
                self.pending_down.remove(&id);
                if let Some(h) = self.hosts.get_mut(&id) {
                    h.state = HostState::Left;
                }
                // A graceful leave raises nothing and clears the host's alarms.
                let keys: Vec<Key> = self
                    .alarms
                    .keys()
                    .filter(|(_, s)| s.host_id() == Some(id))
                    .cloned()
                    .collect();
                for key in keys {
                    let Some(rule) = self.rule_named(&key.0) else {
                        continue;
                    };
                    let obs = Observation {
                        status: Status::Ok,
                        value: None,
                        output: "host left".into(),
                        attempt: Some((1, 1)),
                    };
                    self.apply(&rule, &key.1, Labels::new, obs, now, out);
                }
                self.conditions.retain(|(_, s), _| s.host_id() != Some(id));
            }
            HostChange::Removed => {
                self.pending_down.remove(&id);
                self.hosts.remove(&id);
                self.limits.retain(|(h, _, _), _| *h != id);
                self.alarms.retain(|(_, s), _| s.host_id() != Some(id));
                self.conditions.retain(|(_, s), _| s.host_id() != Some(id));
            }
        }
    }

    /// Fires the liveness rules whose timeout a `down` host has passed.
    fn check_down(&mut self, id: i64, now: i64, out: &mut Vec<AlarmWrite>) {
        let Some(&last_seen) = self.pending_down.get(&id) else {
            return;
        };
        let Some(host) = self.hosts.get(&id).cloned() else {
            self.pending_down.remove(&id);
            return;
        };
        if host.passive || host.owner_of.is_some() {
            self.pending_down.remove(&id);
            return;
        }
        let rules: Vec<Arc<Rule>> = self
            .rules
            .iter()
            .filter(|r| matches!(r.kind, Kind::Liveness { .. }))
            .filter(|r| r.selector.matches(&host.hostname, host.group.as_deref()))
            .cloned()
            .collect();
        let mut waiting = false;
        for rule in rules {
            let Kind::Liveness { timeout } = rule.kind else {
                continue;
            };
            let silent = now - last_seen;
            if silent < timeout {
                waiting = true;
                continue;
            }
            let labels = self.host_labels(&rule, id, &Labels::new());
            let obs = Observation {
                status: Status::Critical,
                value: Some(silent as f64),
                output: format!("no report for {silent} s (timeout {timeout} s)"),
                attempt: Some((1, 1)),
            };
            self.apply(&rule, &Subject::host(id), || labels, obs, now, out);
        }
        if !waiting {
            self.pending_down.remove(&id);
        }
    }

    /// Committed log records (the bus's record lane).
    pub fn on_logs(&mut self, batch: &FeedBatch, now: i64) -> Vec<AlarmWrite> {
        let mut out = Vec::new();
        let rules: Vec<Arc<Rule>> = self
            .log_rules
            .iter()
            .map(|&i| self.rules[i].clone())
            .collect();
        if rules.is_empty() {
            return out;
        }
        let mut touched: HashSet<Key> = HashSet::new();
        for ev in &batch.events {
            let Some(host_id) = ev.host_id else { continue };
            let Some(host) = self.hosts.get(&host_id) else {
                continue;
            };
            let mut lower: Option<String> = None;
            for rule in &rules {
                let Kind::Log {
                    words,
                    app,
                    min_severity,
                    ..
                } = &rule.kind
                else {
                    continue;
                };
                if !rule.selector.matches(&host.hostname, host.group.as_deref()) {
                    continue;
                }
                if app
                    .as_deref()
                    .is_some_and(|a| ev.record.app_name.as_deref() != Some(a))
                {
                    continue;
                }
                if min_severity.is_some_and(|m| ev.record.severity.unwrap_or(Severity::Notice) > m)
                {
                    continue;
                }
                if !words.is_empty() {
                    let text = lower.get_or_insert_with(|| ev.record.message.to_lowercase());
                    if !words.iter().all(|w| text.contains(w.as_str())) {
                        continue;
                    }
                }
                let key = (rule.name.clone(), Subject::host(host_id));
                self.conditions
                    .entry(key.clone())
                    .or_insert_with(|| Condition::new(now))
                    .add_count(now, 1);
                touched.insert(key);
            }
        }
        for key in touched {
            if let Some(rule) = self.rule_named(&key.0) {
                self.judge_log(&rule, &key, now, &mut out);
            }
        }
        out
    }

    fn judge_log(&mut self, rule: &Rule, key: &Key, now: i64, out: &mut Vec<AlarmWrite>) {
        let Kind::Log { window, .. } = rule.kind else {
            return;
        };
        let Some(cond) = self.conditions.get_mut(key) else {
            return;
        };
        let n = cond.count(now, window) as f64;
        let judged = rule.judge(n);
        let gated = cond.datapoint(rule, judged, Some(n), now);
        let host_id = key.1.host_id().unwrap_or(0);
        let labels = self.host_labels(rule, host_id, &Labels::new());
        let obs = Observation {
            status: gated,
            value: Some(n),
            output: format!("{n} matching log records in {window} s"),
            attempt: None,
        };
        self.apply(rule, &key.1, || labels, obs, now, out);
    }

    /// The timer: pending and keep-firing times, no data, liveness
    /// timeouts, log windows emptying, silences ending.
    pub fn on_tick(&mut self, now: i64) -> Vec<AlarmWrite> {
        let mut out = Vec::new();
        let keys: Vec<Key> = self.conditions.keys().cloned().collect();
        for key in keys {
            let Some(rule) = self.rule_named(&key.0) else {
                continue;
            };
            match &rule.kind {
                Kind::Threshold { window, .. } => {
                    self.tick_threshold(&rule, &key, *window, now, &mut out)
                }
                Kind::Log { .. } => {
                    let live = self
                        .conditions
                        .get(&key)
                        .is_some_and(|c| c.has_counts() || c.gated != Status::Ok || c.waiting());
                    if live {
                        self.judge_log(&rule, &key, now, &mut out);
                    }
                }
                _ => {}
            }
        }
        let down: Vec<i64> = self.pending_down.keys().copied().collect();
        for id in down {
            self.check_down(id, now, &mut out);
        }
        // Silences that ended (or began) change what receivers must hear.
        let silences = &self.silences;
        for alarm in self.alarms.values_mut() {
            if alarm.state == Status::Ok
                && alarm.notified.is_none_or(|s| s == Status::Ok)
                && !alarm.muted
            {
                continue;
            }
            let labels = alarm.labels_for(alarm.state);
            let silence = silences
                .iter()
                .find(|s| s.matches(&labels, now))
                .map(|s| s.id);
            let mut fx = Effects::default();
            alarm.reconcile(now, silence, &mut fx);
            if !fx.is_empty() {
                out.push(AlarmWrite {
                    alarm: alarm.clone(),
                    effects: fx,
                });
            }
        }
        out
    }

    fn tick_threshold(
        &mut self,
        rule: &Rule,
        key: &Key,
        window: i64,
        now: i64,
        out: &mut Vec<AlarmWrite>,
    ) {
        let host_gone = key.1.host_id().is_some_and(|id| {
            self.hosts
                .get(&id)
                .is_none_or(|h| h.state == HostState::Left)
        });
        let Some(cond) = self.conditions.get_mut(key) else {
            return;
        };
        if cond.waiting() {
            let before = cond.gated;
            let gated = cond.gate(rule, now);
            if gated != before {
                let value = cond.value;
                let labels = self.subject_labels(rule, &key.1);
                let obs = Observation {
                    status: gated,
                    value,
                    output: value
                        .map(|v| {
                            let ranges = self.subject_ranges(rule, &key.1);
                            describe(rule, ranges, metric_name(rule), v, gated)
                        })
                        .unwrap_or_default(),
                    attempt: None,
                };
                self.apply(rule, &key.1, || labels, obs, now, out);
                return;
            }
        }
        if host_gone {
            return;
        }
        // No data: nothing newer than the window (at least the heartbeat of
        // three base steps) plus one step of shipping delay.
        let stale_after = window.max(3 * self.base_step) + self.base_step;
        let newest = cond.last_data.unwrap_or(cond.first_seen);
        if now - newest <= stale_after || cond.no_data_applied {
            return;
        }
        cond.no_data_applied = true;
        let status = match rule.no_data {
            super::rules::NoData::KeepLast => return,
            super::rules::NoData::Missing => Status::Unknown,
            super::rules::NoData::Breaching => rule.worst(),
            super::rules::NoData::NotBreaching => Status::Ok,
        };
        let labels = self.subject_labels(rule, &key.1);
        let obs = Observation {
            status,
            value: None,
            output: format!("no data for {} s", now - newest),
            attempt: Some((1, 1)),
        };
        self.apply(rule, &key.1, || labels, obs, now, out);
    }

    /// The ranges that judge `subject` under `rule`.
    fn subject_ranges(&self, rule: &Rule, subject: &Subject) -> SeriesLimits {
        match (rule.limits, subject) {
            (Limits::Series, Subject::Host { id, series_labels }) => rule.ranges(
                self.limits
                    .get(&(*id, metric_name(rule).to_string(), series_labels.clone())),
            ),
            _ => rule.ranges(None),
        }
    }

    fn subject_labels(&self, rule: &Rule, subject: &Subject) -> Labels {
        match subject {
            Subject::Host { id, series_labels } => {
                self.host_labels(rule, *id, &parse_labels_text(series_labels))
            }
            Subject::Group(g) => Self::group_labels(rule, g),
        }
    }

    /// Acknowledges alarm `id`.
    pub fn acknowledge(
        &mut self,
        id: i64,
        by: &str,
        comment: &str,
        now: i64,
    ) -> Result<AlarmWrite, AckError> {
        let alarm = self
            .alarms
            .values_mut()
            .find(|a| a.id == id)
            .ok_or(AckError::NotFound)?;
        let mut fx = Effects::default();
        let ack = Ack {
            by: by.to_string(),
            comment: comment.to_string(),
            at: now,
        };
        if !alarm.acknowledge(ack, &mut fx) {
            return Err(AckError::NotAProblem);
        }
        let labels = alarm.labels_for(alarm.state);
        let key = (alarm.rule.clone(), alarm.subject.clone());
        let silence = self.silence_for(&labels, now);
        let alarm = self.alarms.get_mut(&key).ok_or(AckError::NotFound)?;
        alarm.reconcile(now, silence, &mut fx);
        Ok(AlarmWrite {
            alarm: alarm.clone(),
            effects: fx,
        })
    }

    /// Windows primed from the store (at start, after a lag): buckets of a
    /// series of `host_id`, as if they had just committed.
    pub fn prime(
        &mut self,
        host_id: i64,
        key: &SeriesKey,
        buckets: &[Bucket],
        now: i64,
    ) -> Vec<AlarmWrite> {
        let mut out = Vec::new();
        let Some(host) = self.hosts.get(&host_id).cloned() else {
            return out;
        };
        let Some(idx) = self
            .by_metric
            .get(key.name.as_str())
            .map(|m| m.candidates(&host))
        else {
            return out;
        };
        for i in idx {
            let rule = self.rules[i].clone();
            self.threshold_samples(&rule, host_id, &host, key, buckets, now, &mut out);
        }
        out
    }

    /// Reconciles hosts with the store's view (after a lag): changes missed
    /// are applied as if they had been heard.
    pub fn reconcile_hosts(&mut self, hosts: Vec<(i64, HostEntry)>, now: i64) -> Vec<AlarmWrite> {
        let mut out = Vec::new();
        let seen: HashSet<i64> = hosts.iter().map(|(id, _)| *id).collect();
        let gone: Vec<i64> = self
            .hosts
            .keys()
            .filter(|id| !seen.contains(id))
            .copied()
            .collect();
        for id in gone {
            self.on_host(id, HostChange::Removed, now, None, now, &mut out);
        }
        for (id, entry) in hosts {
            let before = self.hosts.get(&id).map(|h| h.state);
            let (state, last_seen) = (entry.state, entry.last_seen);
            self.hosts.insert(id, entry);
            if before == Some(state) {
                continue;
            }
            let change = match state {
                HostState::Up => HostChange::Up,
                HostState::Down => HostChange::Down,
                HostState::Left => HostChange::Left,
            };
            self.on_host(id, change, last_seen, None, now, &mut out);
        }
        out
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AckError {
    #[error("no such alarm")]
    NotFound,
    #[error("the alarm is OK: there is nothing to acknowledge")]
    NotAProblem,
}

fn metric_name(rule: &Rule) -> &str {
    match &rule.kind {
        Kind::Threshold { metric, .. } => metric.as_str(),
        _ => "",
    }
}

/// `cpu.busy_pct avg over 60 s = 97.2 (critical ~:95)`.
fn describe(rule: &Rule, ranges: SeriesLimits, metric: &str, value: f64, s: Status) -> String {
    let (cf, window) = match &rule.kind {
        Kind::Threshold { cf, window, .. } => (cf.to_string(), *window),
        _ => (String::new(), 0),
    };
    let over = if window > 0 {
        format!(" {cf} over {window} s")
    } else {
        String::new()
    };
    let range = match s {
        Status::Critical => ranges.critical.map(|r| format!(" (critical {r})")),
        Status::Warning => ranges.warning.map(|r| format!(" (warning {r})")),
        _ => None,
    }
    .unwrap_or_default();
    format!("{metric}{over} = {value:.3}{range}")
}

/// Labels back from their canonical text `{k="v",…}` (the subject key).
fn parse_labels_text(text: &str) -> Labels {
    let mut out = Labels::new();
    let inner = text.trim_start_matches('{').trim_end_matches('}');
    let mut rest = inner;
    while let Some(eq) = rest.find("=\"") {
        let key = rest[..eq].trim_start_matches(',').to_string();
        let mut value = String::new();
        let mut chars = rest[eq + 2..].char_indices();
        let mut end = rest.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(n);
                    }
                }
                '"' => {
                    end = eq + 2 + i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(key, value);
        rest = &rest[end.min(rest.len())..];
    }
    out
}

// ---------------------------------------------------------------------------
// The task.

/// Called right after alarm writes commit, so deliveries start at once.
pub type Wake = Arc<dyn Fn() + Send + Sync>;

/// Requests to the evaluator task (from the API).
#[derive(Debug)]
pub enum Command {
    Ack {
        id: i64,
        by: String,
        comment: String,
        reply: oneshot::Sender<Result<(), AckError>>,
    },
    /// Rules or silences changed in the store: read them again.
    Reload { reply: oneshot::Sender<()> },
}

/// Longest wait for the evaluator to take an API command.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// The API's way to the evaluator.
#[derive(Debug, Clone)]
pub struct AlarmsHandle {
    tx: mpsc::Sender<Command>,
}

impl AlarmsHandle {
    pub fn channel() -> (Self, mpsc::Receiver<Command>) {
        let (tx, rx) = mpsc::channel(64);
        (Self { tx }, rx)
    }

    /// Acknowledges an alarm; `Err(None)` when the evaluator is not running.
    pub async fn acknowledge(
        &self,
        id: i64,
        by: &str,
        comment: &str,
    ) -> Result<(), Option<AckError>> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Ack {
                id,
                by: by.to_string(),
                comment: comment.to_string(),
                reply,
            })
            .await
            .map_err(|_| None)?;
        tokio::time::timeout(COMMAND_TIMEOUT, rx)
            .await
            .map_err(|_| None)?
            .map_err(|_| None)?
            .map_err(Some)
    }

    /// Tells the evaluator rules or silences changed; returns once applied.
    pub async fn reload(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Command::Reload { reply }).await.is_ok()
            && tokio::time::timeout(COMMAND_TIMEOUT, rx).await.is_err()
        {
            tracing::warn!("the alarm evaluator did not take the reload within {COMMAND_TIMEOUT:?}; it applies it when it catches up");
        }
    }
}

/// What the task needs.
pub struct Runner {
    pub store: Arc<Store>,
    pub clock: SharedClock,
    pub metrics: Arc<ServerMetrics>,
    pub file_rules: Vec<Rule>,
    pub rule_context: super::rules::RuleContext,
    pub wake: Wake,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("rules", &self.file_rules.len())
            .finish()
    }
}

impl Runner {
    async fn all_rules(&self) -> Vec<Rule> {
        let mut rules = self.file_rules.clone();
        match self.store.api_rules().await {
            Ok(stored) => {
                for r in stored {
                    match super::parse_stored_rule(&r.definition, self.rule_context) {
                        Ok(rule) if !rules.iter().any(|f| f.name == rule.name) => rules.push(rule),
                        Ok(_) => {
                            tracing::warn!(rule = %r.name, "an API rule has the name of a file rule; the file's wins")
                        }
                        Err(e) => {
                            tracing::error!(rule = %r.name, errors = ?e, "a stored rule no longer parses; it is not evaluated")
                        }
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read the API's rules"),
        }
        rules
    }

    async fn silences(&self) -> Vec<Silence> {
        match self.store.silences(Some(self.clock.now())).await {
            Ok(rows) => rows
                .into_iter()
                .filter_map(|r| Silence::parse(r.id, r.matchers, r.starts_at, r.ends_at).ok())
                .collect(),
            Err(e) => {
                tracing::error!(error = %e, "cannot read silences");
                Vec::new()
            }
        }
    }

    /// Hosts and windows from the store.
    async fn load(&self, ev: &mut Evaluator, pending: &mut Vec<AlarmWrite>) {
        let now = self.clock.now();
        match self.store.host_directory().await {
            Ok(hosts) => pending.extend(ev.reconcile_hosts(hosts, now)),
            Err(e) => tracing::error!(error = %e, "cannot read hosts for the alarm evaluator"),
        }
        // Threshold windows from the finest archive: each metric once, over
        // the longest window of its rules (10 000 rules over 20 metrics read
        // 20 metrics' series, not 10 000 times theirs).
        let mut wanted: HashMap<String, i64> = HashMap::new();
        for r in ev.rules() {
            if let Kind::Threshold { metric, window, .. } = &r.kind {
                let w = (*window).max(3 * ev.base_step);
                let e = wanted.entry(metric.as_str().to_string()).or_insert(w);
                *e = (*e).max(w);
            }
        }
        // The ranges of series judged by their own description, read before
        // their windows are primed.
        ev.clear_series_limits();
        let limited: Vec<String> = wanted
            .keys()
            .filter(|m| ev.wants_limits(m))
            .cloned()
            .collect();
        for metric in &limited {
            match self.store.series_limits_named(metric).await {
                Ok(rows) => {
                    for r in rows {
                        ev.set_series_limits(
                            r.host_id,
                            metric,
                            &r.labels,
                            r.warning.as_deref(),
                            r.critical.as_deref(),
                        );
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, metric = %metric, "cannot read series' ranges for the alarm evaluator")
                }
            }
        }
        let step = u32::try_from(ev.base_step).unwrap_or(10);
        for (metric, window) in wanted {
            let series = match self.store.all_series_named(&metric).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read series for the alarm evaluator");
                    continue;
                }
            };
            for s in series {
                let Ok(key) = SeriesKey::new(&s.name, s.labels.clone()) else {
                    continue;
                };
                let Ok(Some(rows)) = self.store.archive_rows(s.id, step, now - window, now).await
                else {
                    continue;
                };
                let buckets: Vec<Bucket> = rows
                    .rows
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.is_known())
                    .map(|(i, r)| Bucket {
                        ts: rows.start + (i as i64 + 1) * i64::from(rows.step),
                        avg: r.avg,
                        min: r.min,
                        max: r.max,
                        last: r.last,
                        count: r.count.max(1),
                    })
                    .collect();
                if !buckets.is_empty() {
                    pending.extend(ev.prime(s.host_id, &key, &buckets, now));
                }
            }
        }
    }

    async fn commit(&self, ev: &mut Evaluator, writes: &mut Vec<AlarmWrite>) {
        if writes.is_empty() {
            return;
        }
        let now_ms = self.clock.now_ms();
        match self.store.commit_alarms(writes, now_ms).await {
            Ok(ids) => {
                let mut notices = 0u64;
                let mut mutes = false;
                for (w, id) in writes.iter().zip(ids) {
                    mutes |= !w.effects.mute.is_empty();
                    ev.set_alarm_id(&w.alarm.rule, &w.alarm.subject, id);
                    notices += w.effects.notices.len() as u64;
                    self.metrics
                        .alarm_transitions
                        .add(w.effects.transitions.len() as u64);
                }
                self.metrics.alarm_notices.add(notices);
                if notices > 0 || mutes {
                    (self.wake)();
                }
                writes.clear();
            }
            Err(e) => {
                self.metrics.alarm_commit_failures.inc();
                tracing::error!(error = %e, writes = writes.len(), "alarm transitions not committed; retrying at the next tick");
                if writes.len() > MAX_RETRY_WRITES {
                    let drop = writes.len() - MAX_RETRY_WRITES;
                    writes.drain(..drop);
                    tracing::error!(
                        dropped = drop,
                        "alarm writes dropped: the retry queue is full"
                    );
                }
            }
        }
    }

    fn gauges(&self, ev: &mut Evaluator) {
        let (w, c, u) = ev.problem_counts();
        self.metrics.alarms_warning.set(w);
        self.metrics.alarms_critical.set(c);
        self.metrics.alarms_unknown.set(u);
        self.metrics
            .alarm_evaluations
            .add(std::mem::take(&mut ev.evaluations));
        self.metrics
            .alarm_notices_silenced
            .add(std::mem::take(&mut ev.silenced));
        self.metrics
            .alarm_series_limits_unreadable
            .add(std::mem::take(&mut ev.limits_unreadable));
    }

    /// Runs until `stop`.
    pub async fn run(self, mut commands: mpsc::Receiver<Command>, mut stop: watch::Receiver<bool>) {
        // Subscribe first, so nothing committed while loading is missed.
        let (mut rx, _) = self.store.bus().subscribe();
        let mut ev = Evaluator::new(self.all_rules().await, self.rule_context.base_step);
        match self.store.load_alarms().await {
            Ok(alarms) => alarms.into_iter().for_each(|a| ev.load_alarm(a)),
            Err(e) => tracing::error!(error = %e, "cannot load alarms; starting from none"),
        }
        ev.set_silences(self.silences().await);
        let mut pending = Vec::new();
        self.load(&mut ev, &mut pending).await;
        self.commit(&mut ev, &mut pending).await;
        let mut logs = ev
            .has_log_rules()
            .then(|| self.store.bus().logs().subscribe());
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                r = rx.recv() => match r {
                    Ok(env) => {
                        let started = std::time::Instant::now();
                        // Bounded by MAX_EVENTS_PER_COMMIT.
                        let mut published = vec![env.published];
                        self.learn_hosts(&mut ev, &env.event).await;
                        pending.extend(ev.on_event(&env.event, self.clock.now()));
                        // Events already waiting are judged before the commit,
                        // so a burst of breaching batches costs one transaction
                        // (one fsync), not one each: under load the evaluator
                        // keeps up instead of queueing behind its own commits.
                        let mut lagged = None;
                        for _ in 0..MAX_EVENTS_PER_COMMIT {
                            match rx.try_recv() {
                                Ok(env) => {
                                    published.push(env.published);
                                    self.learn_hosts(&mut ev, &env.event).await;
                                    pending.extend(ev.on_event(&env.event, self.clock.now()));
                                }
                                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                                    lagged = Some(n);
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                        self.commit(&mut ev, &mut pending).await;
                        self.metrics.alarm_eval_last_us.set(started.elapsed().as_micros() as u64);
                        for p in published {
                            self.metrics.alarm_eval_latency.observe(p.elapsed());
                        }
                        if let Some(n) = lagged {
                            self.metrics.alarm_evaluator_resyncs.inc();
                            tracing::warn!(missed = n, "the alarm evaluator fell behind the event bus; re-reading hosts and windows from the store");
                            self.load(&mut ev, &mut pending).await;
                            self.commit(&mut ev, &mut pending).await;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        self.metrics.alarm_evaluator_resyncs.inc();
                        tracing::warn!(missed = n, "the alarm evaluator fell behind the event bus; re-reading hosts and windows from the store");
                        self.load(&mut ev, &mut pending).await;
                        self.commit(&mut ev, &mut pending).await;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                r = async { match logs.as_mut() { Some(l) => l.recv().await, None => std::future::pending().await } } => match r {
                    Ok(batch) => {
                        pending.extend(ev.on_logs(&batch, self.clock.now()));
                        self.commit(&mut ev, &mut pending).await;
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        self.metrics.alarm_evaluator_resyncs.inc();
                        tracing::warn!(missed_chunks = n, "the alarm evaluator fell behind the log records; log rules undercount that span");
                    }
                    Err(broadcast::error::RecvError::Closed) => logs = None,
                },
                _ = ticker.tick() => {
                    pending.extend(ev.on_tick(self.clock.now()));
                    self.commit(&mut ev, &mut pending).await;
                    self.gauges(&mut ev);
                }
                cmd = commands.recv() => match cmd {
                    Some(Command::Ack { id, by, comment, reply }) => {
                        let r = ev.acknowledge(id, &by, &comment, self.clock.now());
                        let result = match r {
                            Ok(w) => {
                                pending.push(w);
                                self.commit(&mut ev, &mut pending).await;
                                Ok(())
                            }
                            Err(e) => Err(e),
                        };
                        let _ = reply.send(result);
                    }
                    Some(Command::Reload { reply }) => {
                        let rules = self.all_rules().await;
                        pending.extend(ev.set_rules(rules, self.clock.now()));
                        ev.set_silences(self.silences().await);
                        pending.extend(ev.on_tick(self.clock.now()));
                        self.load(&mut ev, &mut pending).await;
                        self.commit(&mut ev, &mut pending).await;
                        logs = match (ev.has_log_rules(), logs.take()) {
                            (true, Some(l)) => Some(l),
                            (true, None) => Some(self.store.bus().logs().subscribe()),
                            (false, _) => None,
                        };
                        let _ = reply.send(());
                    }
                    None => {}
                },
                _ = stop.changed() => {
                    self.commit(&mut ev, &mut pending).await;
                    return;
                }
            }
        }
    }

    /// Hosts an event names that the evaluator has not met (a group's owner
    /// row created by the recorder, a host imported before start).
    async fn learn_hosts(&self, ev: &mut Evaluator, event: &Event) {
        let id = match event {
            Event::Samples(s) => s.host_id,
            Event::Checks(c) => c.host_id,
            Event::Host(h) if h.info.is_none() => h.host_id,
            _ => return,
        };
        if ev.knows_host(id) {
            return;
        }
        if let Ok(Some(entry)) = self.store.host_entry(id).await {
            ev.set_host(id, entry);
        }
    }
}

#[cfg(test)]
mod tests;
