//! When a receiver is told what: Alertmanager's aggregation groups as pure
//! decisions over the durable state (`notify_alerts`, `notify_groups`), so
//! the same answer comes back after a restart, and tests move time by hand.
//!
//! A group is flushed `group_wait` after its first unsent alert, then at most
//! every `group_interval` while something changed, and again every
//! `repeat_interval` while an alert fires that is not muted. An
//! Alertmanager receiver is one group with no waits, re-sent every
//! `resend_delay` (muting is Alertmanager's business there).

use super::config::{GroupBy, ReceiverKind};
use super::{AlertState, AlertStatus};
use std::collections::BTreeMap;

/// The timers of one receiver, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub wait_ms: i64,
    pub interval_ms: i64,
    pub repeat_ms: i64,
    pub send_resolved: bool,
    /// Muted alerts are left out of repeats (webhook); Alertmanager receivers
    /// get every active alert each time, or it would resolve them.
    pub honour_mute: bool,
}

fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

impl Timing {
    pub fn of(kind: &ReceiverKind) -> Self {
        match kind {
            ReceiverKind::Webhook(g) => Timing {
                wait_ms: ms(g.group_wait),
                interval_ms: ms(g.group_interval),
                repeat_ms: ms(g.repeat_interval),
                send_resolved: g.send_resolved,
                honour_mute: true,
            },
            ReceiverKind::Alertmanager { resend_delay } => Timing {
                wait_ms: 0,
                interval_ms: 0,
                repeat_ms: ms(*resend_delay),
                send_resolved: true,
                honour_mute: false,
            },
        }
    }
}

impl AlertState {
    /// Changed since it was last sent, and worth sending: a resolution is
    /// only news to a receiver that heard of the firing and wants it.
    pub fn needs_send(&self, t: &Timing) -> bool {
        self.sent_seq != Some(self.seq)
            && match self.status {
                AlertStatus::Firing => true,
                AlertStatus::Resolved => t.send_resolved && self.sent_seq.is_some(),
            }
    }

    /// A resolved alert nobody needs to hear of: deleted.
    pub fn is_garbage(&self, t: &Timing) -> bool {
        self.status == AlertStatus::Resolved && !self.needs_send(t)
    }

    fn repeats(&self, t: &Timing) -> bool {
        self.status == AlertStatus::Firing && !(t.honour_mute && self.muted)
    }
}

/// The group of an alert: its key (Alertmanager's `groupKey`) and labels.
pub fn group_of(
    group_by: &GroupBy,
    labels: &BTreeMap<String, String>,
) -> (String, BTreeMap<String, String>) {
    let group_labels: BTreeMap<String, String> = match group_by {
        GroupBy::All => labels.clone(),
        GroupBy::Labels(names) => names
            .iter()
            .filter_map(|n| labels.get(n).map(|v| (n.clone(), v.clone())))
            .collect(),
    };
    let inner: Vec<String> = group_labels
        .iter()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect();
    (format!("{{}}:{{{}}}", inner.join(", ")), group_labels)
}

/// What to do with one group now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Build a delivery now.
    pub flush: bool,
    /// Otherwise, look again at this time (ms); `None`: only a new notice
    /// can make the group due.
    pub next_ms: Option<i64>,
}

/// Decides for one group: `flushed_ms` is its last flush, if any.
pub fn decide(
    t: &Timing,
    flushed_ms: Option<i64>,
    alerts: &[&AlertState],
    now_ms: i64,
) -> Decision {
    let first_unsent = alerts
        .iter()
        .filter(|a| a.needs_send(t))
        .map(|a| a.updated_ms)
        .min();
    let due = match (first_unsent, flushed_ms) {
        (Some(first), None) => Some(first.saturating_add(t.wait_ms)),
        (Some(_), Some(f)) => Some(f.saturating_add(t.interval_ms)),
        (None, Some(f)) if alerts.iter().any(|a| a.repeats(t)) => {
            Some(f.saturating_add(t.repeat_ms))
        }
        _ => None,
    };
    Decision {
        flush: due.is_some_and(|d| d <= now_ms),
        next_ms: due.filter(|d| *d > now_ms),
    }
}

/// What a flush sends: every firing alert except the muted ones already
/// told, and the resolutions not yet told; sorted by labels.
pub fn body_alerts<'a>(t: &Timing, alerts: &[&'a AlertState]) -> Vec<&'a AlertState> {
    let mut body: Vec<&AlertState> = alerts
        .iter()
        .copied()
        .filter(|a| a.needs_send(t) || a.repeats(t))
        .collect();
    body.sort_by(|a, b| {
        a.labels
            .cmp(&b.labels)
            .then(a.fingerprint.cmp(&b.fingerprint))
    });
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::config::Grouping;
    use std::time::Duration;

    fn alert(fp: &str, status: AlertStatus, seq: i64, sent: Option<i64>, at: i64) -> AlertState {
        AlertState {
            fingerprint: fp.into(),
            status,
            labels: [("alertname".to_string(), fp.to_string())].into(),
            annotations: BTreeMap::new(),
            starts_at: 0,
            ends_at: None,
            generator_url: String::new(),
            muted: false,
            seq,
            updated_ms: at,
            sent_seq: sent,
        }
    }

    fn webhook() -> Timing {
        Timing::of(&ReceiverKind::Webhook(Grouping {
            group_by: GroupBy::Labels(vec!["alertname".into()]),
            group_wait: Duration::from_secs(30),
            group_interval: Duration::from_secs(300),
            repeat_interval: Duration::from_secs(3600),
            send_resolved: true,
            max_alerts: 0,
        }))
    }

    #[test]
    fn a_new_group_waits_group_wait_then_flushes() {
        let t = webhook();
        let a = alert("a", AlertStatus::Firing, 1, None, 1_000);
        let d = decide(&t, None, &[&a], 1_000);
        assert_eq!(
            d,
            Decision {
                flush: false,
                next_ms: Some(31_000)
            }
        );
        assert!(decide(&t, None, &[&a], 31_000).flush);
    }

    #[test]
    fn changes_after_a_flush_wait_for_group_interval() {
        let t = webhook();
        let a = alert("a", AlertStatus::Firing, 1, Some(1), 1_000);
        let b = alert("b", AlertStatus::Firing, 1, None, 40_000);
        let d = decide(&t, Some(31_000), &[&a, &b], 40_000);
        assert_eq!(d.next_ms, Some(331_000));
        assert!(decide(&t, Some(31_000), &[&a, &b], 331_000).flush);
        // Both go out: the group's whole firing state.
        assert_eq!(body_alerts(&t, &[&a, &b]).len(), 2);
    }

    #[test]
    fn nothing_changed_repeats_after_repeat_interval_unless_muted() {
        let t = webhook();
        let mut a = alert("a", AlertStatus::Firing, 1, Some(1), 1_000);
        let d = decide(&t, Some(31_000), &[&a], 100_000);
        assert_eq!(d.next_ms, Some(3_631_000));
        assert!(decide(&t, Some(31_000), &[&a], 3_631_000).flush);
        a.muted = true;
        assert_eq!(
            decide(&t, Some(31_000), &[&a], 3_631_000),
            Decision {
                flush: false,
                next_ms: None
            },
            "an acknowledged alert is not repeated"
        );
    }

    #[test]
    fn a_resolution_is_sent_once_and_only_after_its_firing() {
        let t = webhook();
        let told = alert("a", AlertStatus::Resolved, 2, Some(1), 50_000);
        assert!(told.needs_send(&t));
        assert_eq!(
            decide(&t, Some(31_000), &[&told], 50_000).next_ms,
            Some(331_000)
        );
        // Fired and resolved within group_wait: never news.
        let never = alert("b", AlertStatus::Resolved, 2, None, 5_000);
        assert!(never.is_garbage(&t));
        assert_eq!(
            decide(&t, None, &[&never], 5_000),
            Decision {
                flush: false,
                next_ms: None
            }
        );
        let mut quiet = t;
        quiet.send_resolved = false;
        assert!(told.is_garbage(&quiet));
    }

    #[test]
    fn alertmanager_receivers_send_at_once_and_resend_every_active_alert() {
        let t = Timing::of(&ReceiverKind::Alertmanager {
            resend_delay: Duration::from_secs(60),
        });
        let mut a = alert("a", AlertStatus::Firing, 1, None, 1_000);
        assert!(decide(&t, None, &[&a], 1_000).flush);
        a.sent_seq = Some(1);
        a.muted = true;
        assert_eq!(decide(&t, Some(1_000), &[&a], 2_000).next_ms, Some(61_000));
        assert_eq!(
            body_alerts(&t, &[&a]).len(),
            1,
            "muted alerts stay active in Alertmanager"
        );
    }

    #[test]
    fn group_keys_follow_group_by() {
        let labels: BTreeMap<String, String> = [
            ("alertname".to_string(), "cpu".to_string()),
            ("group".to_string(), "web".to_string()),
            ("instance".to_string(), "web-1".to_string()),
        ]
        .into();
        let (key, gl) = group_of(
            &GroupBy::Labels(vec!["alertname".into(), "group".into()]),
            &labels,
        );
        assert_eq!(key, "{}:{alertname=\"cpu\", group=\"web\"}");
        assert_eq!(gl.len(), 2);
        let (all, _) = group_of(&GroupBy::All, &labels);
        assert!(all.contains("instance=\"web-1\""));
    }
}
