//! The state machine of one alarm (one rule × one subject): soft and hard
//! states with attempts, every transition recorded with what caused it, flap
//! detection, acknowledgements, and what receivers must be told.
//!
//! Pure: times come in as arguments, writes go out as values. The evaluator
//! owns the alarms and commits what this returns.

use super::flap::{self, FlapHistory, FlapThresholds};
use super::Status;
use crate::notify::{AlertNotice, AlertStatus};
use metrolog_protocol::Labels;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Whom an alarm is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    /// A host, and for threshold rules the labels of the series judged
    /// (one alarm per mount, per interface…).
    Host { id: i64, series_labels: String },
    /// A group's aggregate.
    Group(String),
}

impl Subject {
    pub fn host(id: i64) -> Self {
        Subject::Host {
            id,
            series_labels: String::new(),
        }
    }

    /// `host:3`, `host:3{mount="/"}` or `group:web`: the `subject` column.
    pub fn key(&self) -> String {
        match self {
            Subject::Host { id, series_labels } => format!("host:{id}{series_labels}"),
            Subject::Group(g) => format!("group:{g}"),
        }
    }

    pub fn parse(key: &str) -> Option<Self> {
        if let Some(rest) = key.strip_prefix("host:") {
            let split = rest.find('{').unwrap_or(rest.len());
            let id = rest[..split].parse().ok()?;
            return Some(Subject::Host {
                id,
                series_labels: rest[split..].to_string(),
            });
        }
        key.strip_prefix("group:")
            .map(|g| Subject::Group(g.to_string()))
    }

    pub fn host_id(&self) -> Option<i64> {
        match self {
            Subject::Host { id, .. } => Some(*id),
            Subject::Group(_) => None,
        }
    }
}

/// An acknowledgement: holds until the state changes (Nagios' non-sticky ack).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub by: String,
    pub comment: String,
    pub at: i64,
}

/// What one evaluation concluded, after the rule's `for`, M-of-N and
/// `keep_firing_for`.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub status: Status,
    pub value: Option<f64>,
    pub output: String,
    /// Checks bring their own attempt counting (the agent retries); `None`
    /// lets the alarm count with the rule's `max_attempts`.
    pub attempt: Option<(u32, u32)>,
}

/// One recorded transition.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub at: i64,
    pub from: Status,
    pub to: Status,
    pub hard: bool,
    pub value: Option<f64>,
    pub output: String,
    pub note: String,
}

/// The durable state of one alarm.
#[derive(Debug, Clone, PartialEq)]
pub struct Alarm {
    /// Database id; 0 until first written.
    pub id: i64,
    pub rule: String,
    pub subject: Subject,
    pub state: Status,
    pub hard: bool,
    pub attempt: u32,
    pub since: i64,
    pub updated_at: i64,
    pub value: Option<f64>,
    pub output: String,
    /// Labels of its notifications, without `severity` (added per state).
    pub labels: Labels,
    pub flap: FlapHistory,
    pub flapping: bool,
    /// The state receivers were last told (`None`: nothing yet).
    pub notified: Option<Status>,
    pub notified_at: Option<i64>,
    /// Start of the current non-OK episode.
    pub fired_at: Option<i64>,
    pub ack: Option<Ack>,
    /// Whether the outbox was told to hold repeats (ack, silence, flapping).
    pub muted: bool,
}

/// What a change of an alarm asks for, beyond its new row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Effects {
    pub transitions: Vec<Transition>,
    pub notices: Vec<AlertNotice>,
    /// `(fingerprint, muted)` to tell the outbox.
    pub mute: Vec<(String, bool)>,
    /// Notices withheld because a silence matched (counted).
    pub silenced: u32,
}

impl Effects {
    pub fn is_empty(&self) -> bool {
        self.transitions.is_empty() && self.notices.is_empty() && self.mute.is_empty()
    }
}

impl Alarm {
    pub fn new(rule: &str, subject: Subject, labels: Labels, now: i64) -> Self {
        Self {
            id: 0,
            rule: rule.to_string(),
            subject,
            state: Status::Ok,
            hard: true,
            attempt: 1,
            since: now,
            updated_at: now,
            value: None,
            output: String::new(),
            labels,
            flap: FlapHistory::default(),
            flapping: false,
            notified: None,
            notified_at: None,
            fired_at: None,
            ack: None,
            muted: false,
        }
    }

    pub fn is_problem(&self) -> bool {
        self.state != Status::Ok
    }

    /// Applies one observation: counts attempts, records a transition when
    /// the state or its hardness changed, tracks flapping.
    pub fn observe(
        &mut self,
        obs: Observation,
        max_attempts: u32,
        now: i64,
        thresholds: FlapThresholds,
        fx: &mut Effects,
    ) {
        let (attempt, hard) = match obs.attempt {
            Some((a, max)) => (a.max(1), obs.status == Status::Ok || a >= max),
            None if obs.status == Status::Ok => (1, true),
            None => {
                let a = if self.state != Status::Ok && !self.hard {
                    self.attempt + 1
                } else if self.state != Status::Ok {
                    self.attempt
                } else {
                    1
                };
                let a = a.min(max_attempts.max(1));
                (a, a >= max_attempts)
            }
        };
        // Once hard, a problem stays hard while it lasts (WARNING → CRITICAL
        // is a hard change, as in Nagios).
        let hard = hard || (self.hard && self.state != Status::Ok && obs.status != Status::Ok);
        let changed = obs.status != self.state || hard != self.hard;
        let from = self.state;
        self.attempt = attempt;
        self.value = obs.value;
        self.output = obs.output;
        self.flap.push(obs.status);
        let was_flapping = self.flapping;
        self.flapping = flap::flapping(was_flapping, self.flap.percent_change(), thresholds);
        if changed {
            let mut note = String::new();
            if obs.status != from {
                self.since = now;
                if self.ack.take().is_some() {
                    note.push_str("acknowledgement cleared; ");
                }
                if from == Status::Ok {
                    self.fired_at = Some(now);
                } else if obs.status == Status::Ok {
                    self.fired_at = None;
                }
            }
            self.state = obs.status;
            self.hard = hard;
            self.updated_at = now;
            fx.transitions.push(Transition {
                at: now,
                from,
                to: self.state,
                hard,
                value: self.value,
                output: self.output.clone(),
                note: note.trim_end_matches("; ").to_string(),
            });
        }
        if self.flapping != was_flapping {
            self.updated_at = now;
            let note = if self.flapping {
                format!(
                    "flapping started ({:.1} % state change): notifications held",
                    self.flap.percent_change()
                )
            } else {
                format!(
                    "flapping stopped ({:.1} % state change)",
                    self.flap.percent_change()
                )
            };
            fx.transitions.push(Transition {
                at: now,
                from: self.state,
                to: self.state,
                hard: self.hard,
                value: self.value,
                output: self.output.clone(),
                note,
            });
        }
    }

    /// Acknowledges a problem; `false` when there is none to acknowledge.
    pub fn acknowledge(&mut self, ack: Ack, fx: &mut Effects) -> bool {
        if self.state == Status::Ok {
            return false;
        }
        fx.transitions.push(Transition {
            at: ack.at,
            from: self.state,
            to: self.state,
            hard: self.hard,
            value: self.value,
            output: self.output.clone(),
            note: format!("acknowledged by {}: {}", ack.by, ack.comment),
        });
        self.updated_at = ack.at;
        self.ack = Some(ack);
        true
    }

    /// The full label set of a notice in state `s`.
    pub fn labels_for(&self, s: Status) -> Labels {
        let mut l = self.labels.clone();
        l.insert("severity".into(), s.as_str().to_ascii_lowercase());
        l
    }

    /// Alertmanager's identity of an alert: a hash of its labels.
    pub fn fingerprint(&self, s: Status) -> String {
        fingerprint(&self.labels_for(s))
    }

    /// Brings what receivers were told in line with the alarm: a hard
    /// problem not yet notified fires (unless a silence matches or the alarm
    /// flaps), a recovery after a notified problem resolves, and repeats are
    /// held while acknowledged, silenced or flapping. `silence` is the id of
    /// a silence matching the alarm's labels now.
    pub fn reconcile(&mut self, now: i64, silence: Option<i64>, fx: &mut Effects) {
        let held = self.flapping || silence.is_some();
        if self.hard && !held {
            match (self.state, self.notified) {
                (s, told) if s != Status::Ok && told != Some(s) => {
                    if let Some(old) = told.filter(|t| *t != Status::Ok) {
                        // A new severity is a new alert for Alertmanager.
                        fx.notices
                            .push(self.notice(old, AlertStatus::Resolved, now));
                    }
                    fx.notices.push(self.notice(s, AlertStatus::Firing, now));
                    self.notified = Some(s);
                    self.notified_at = Some(now);
                }
                (Status::Ok, Some(told)) if told != Status::Ok => {
                    fx.notices
                        .push(self.notice(told, AlertStatus::Resolved, now));
                    self.notified = Some(Status::Ok);
                    self.notified_at = Some(now);
                }
                _ => {}
            }
        } else if self.hard && self.state != Status::Ok && self.notified != Some(self.state) {
            fx.silenced += 1;
        }
        let muted = held || self.ack.is_some();
        if muted != self.muted && self.notified.is_some_and(|s| s != Status::Ok) {
            self.muted = muted;
            fx.mute.push((self.fingerprint(self.state), muted));
        } else if !muted {
            self.muted = false;
        }
    }

    fn notice(&self, s: Status, status: AlertStatus, now: i64) -> AlertNotice {
        let labels = self.labels_for(s);
        let mut annotations = BTreeMap::new();
        let subject = labels
            .get("instance")
            .cloned()
            .unwrap_or_else(|| self.subject.key());
        annotations.insert(
            "summary".to_string(),
            match self.value {
                Some(v) => format!("{} is {} on {subject}: {}", self.rule, s, fmt_value(v)),
                None => format!("{} is {} on {subject}", self.rule, s),
            },
        );
        if !self.output.is_empty() {
            annotations.insert("output".into(), self.output.clone());
        }
        if let Some(v) = self.value {
            annotations.insert("value".into(), fmt_value(v));
        }
        AlertNotice {
            fingerprint: fingerprint(&labels),
            status,
            labels: labels.into_iter().collect(),
            annotations,
            starts_at: self.fired_at.unwrap_or(self.since),
            ends_at: (status == AlertStatus::Resolved).then_some(now),
            generator_url: format!("/alarms#alarm-{}", self.id),
        }
    }
}

fn fmt_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.4}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}

/// 16 hex characters of the SHA-256 of the sorted labels.
pub fn fingerprint(labels: &Labels) -> String {
    let mut h = Sha256::new();
    for (k, v) in labels {
        h.update(k.as_bytes());
        h.update([0xff]);
        h.update(v.as_bytes());
        h.update([0xfe]);
    }
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(s: Status) -> Observation {
        Observation {
            status: s,
            value: Some(1.0),
            output: String::new(),
            attempt: None,
        }
    }

    fn alarm() -> Alarm {
        let mut l = Labels::new();
        l.insert("alertname".into(), "cpu".into());
        l.insert("instance".into(), "web-1".into());
        Alarm::new("cpu", Subject::host(1), l, 0)
    }

    #[test]
    fn soft_then_hard_then_ok_notifies_once_each_way() {
        let mut a = alarm();
        let t = FlapThresholds::default();
        let mut fx = Effects::default();
        a.observe(obs(Status::Critical), 3, 10, t, &mut fx);
        a.reconcile(10, None, &mut fx);
        assert_eq!((a.state, a.hard, a.attempt), (Status::Critical, false, 1));
        assert!(fx.notices.is_empty(), "soft states notify nobody");
        a.observe(obs(Status::Critical), 3, 20, t, &mut fx);
        a.reconcile(20, None, &mut fx);
        assert!(!a.hard);
        a.observe(obs(Status::Critical), 3, 30, t, &mut fx);
        a.reconcile(30, None, &mut fx);
        assert!(a.hard);
        assert_eq!(fx.notices.len(), 1);
        assert_eq!(fx.notices[0].status, AlertStatus::Firing);
        assert_eq!(fx.notices[0].starts_at, 10);
        a.observe(obs(Status::Critical), 3, 40, t, &mut fx);
        a.reconcile(40, None, &mut fx);
        assert_eq!(fx.notices.len(), 1, "no repeat from the machine");
        a.observe(obs(Status::Ok), 3, 50, t, &mut fx);
        a.reconcile(50, None, &mut fx);
        assert_eq!(fx.notices.len(), 2);
        assert_eq!(fx.notices[1].status, AlertStatus::Resolved);
        assert_eq!(fx.notices[1].ends_at, Some(50));
        assert_eq!(fx.notices[0].fingerprint, fx.notices[1].fingerprint);
        // soft, soft→hard, hard→OK
        let moves: Vec<_> = fx
            .transitions
            .iter()
            .map(|t| (t.from, t.to, t.hard))
            .collect();
        assert_eq!(
            moves,
            [
                (Status::Ok, Status::Critical, false),
                (Status::Critical, Status::Critical, true),
                (Status::Critical, Status::Ok, true)
            ]
        );
    }

    #[test]
    fn a_soft_problem_that_recovers_tells_nobody() {
        let mut a = alarm();
        let mut fx = Effects::default();
        let t = FlapThresholds::default();
        a.observe(obs(Status::Warning), 3, 10, t, &mut fx);
        a.observe(obs(Status::Ok), 3, 20, t, &mut fx);
        a.reconcile(20, None, &mut fx);
        assert!(fx.notices.is_empty());
    }

    #[test]
    fn a_severity_change_resolves_the_old_alert_and_fires_the_new() {
        let mut a = alarm();
        let mut fx = Effects::default();
        let t = FlapThresholds::default();
        a.observe(obs(Status::Warning), 1, 10, t, &mut fx);
        a.reconcile(10, None, &mut fx);
        a.observe(obs(Status::Critical), 1, 20, t, &mut fx);
        a.reconcile(20, None, &mut fx);
        let kinds: Vec<_> = fx
            .notices
            .iter()
            .map(|n| (n.status, n.labels["severity"].clone()))
            .collect();
        assert_eq!(
            kinds,
            [
                (AlertStatus::Firing, "warning".to_string()),
                (AlertStatus::Resolved, "warning".to_string()),
                (AlertStatus::Firing, "critical".to_string())
            ]
        );
    }

    #[test]
    fn a_silence_holds_the_notice_until_it_ends() {
        let mut a = alarm();
        let mut fx = Effects::default();
        let t = FlapThresholds::default();
        a.observe(obs(Status::Critical), 1, 10, t, &mut fx);
        a.reconcile(10, Some(7), &mut fx);
        assert!(fx.notices.is_empty());
        assert_eq!(fx.silenced, 1);
        a.reconcile(20, None, &mut fx);
        assert_eq!(fx.notices.len(), 1, "sent once the silence is over");
    }

    #[test]
    fn an_ack_holds_repeats_and_is_cleared_by_a_change() {
        let mut a = alarm();
        let mut fx = Effects::default();
        let t = FlapThresholds::default();
        a.observe(obs(Status::Critical), 1, 10, t, &mut fx);
        a.reconcile(10, None, &mut fx);
        assert!(a.acknowledge(
            Ack {
                by: "ops".into(),
                comment: "on it".into(),
                at: 11
            },
            &mut fx
        ));
        a.reconcile(11, None, &mut fx);
        assert_eq!(fx.mute, [(a.fingerprint(Status::Critical), true)]);
        a.observe(obs(Status::Ok), 1, 20, t, &mut fx);
        assert!(a.ack.is_none());
        a.reconcile(20, None, &mut fx);
        assert_eq!(fx.notices.last().unwrap().status, AlertStatus::Resolved);
        assert!(!a.acknowledge(
            Ack {
                by: "ops".into(),
                comment: String::new(),
                at: 21
            },
            &mut fx
        ));
    }

    #[test]
    fn flapping_holds_notices_and_the_settled_state_is_sent_when_it_ends() {
        let mut a = alarm();
        let mut fx = Effects::default();
        let t = FlapThresholds::default();
        let mut now = 0;
        // Alternate until flapping starts.
        let mut s = Status::Critical;
        while !a.flapping {
            now += 10;
            a.observe(obs(s), 1, now, t, &mut fx);
            a.reconcile(now, None, &mut fx);
            s = if s == Status::Ok {
                Status::Critical
            } else {
                Status::Ok
            };
            assert!(now < 1000);
        }
        let sent_before = fx.notices.len();
        for _ in 0..6 {
            now += 10;
            a.observe(obs(s), 1, now, t, &mut fx);
            a.reconcile(now, None, &mut fx);
            s = if s == Status::Ok {
                Status::Critical
            } else {
                Status::Ok
            };
        }
        assert_eq!(fx.notices.len(), sent_before, "held while flapping");
        // Settle on CRITICAL until flapping stops.
        while a.flapping {
            now += 10;
            a.observe(obs(Status::Critical), 1, now, t, &mut fx);
            a.reconcile(now, None, &mut fx);
            assert!(now < 5000);
        }
        let last = fx.notices.last().unwrap();
        assert_eq!(last.status, AlertStatus::Firing);
        assert_eq!(a.notified, Some(Status::Critical));
        assert!(fx
            .transitions
            .iter()
            .any(|t| t.note.starts_with("flapping started")));
        assert!(fx
            .transitions
            .iter()
            .any(|t| t.note.starts_with("flapping stopped")));
    }

    #[test]
    fn subjects_round_trip() {
        for s in [
            Subject::host(3),
            Subject::Host {
                id: 3,
                series_labels: r#"{mount="/"}"#.into(),
            },
            Subject::Group("web".into()),
        ] {
            assert_eq!(Subject::parse(&s.key()), Some(s));
        }
    }
}
