//! `kind = "webhook"`: Alertmanager 0.25's webhook body (version 4), field
//! for field and in its order, so receivers written for Alertmanager work
//! unchanged.

use super::config::{Grouping, Receiver};
use super::sender::HttpPost;
use super::{absolute, rfc3339, AlertState, AlertStatus, ZERO_TIME};
use serde::Serialize;
use std::collections::BTreeMap;

type Labels = BTreeMap<String, String>;

/// Alertmanager's `webhook.Message` (template.Data + version, groupKey,
/// truncatedAlerts), in its field order.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Message<'a> {
    pub receiver: &'a str,
    pub status: &'static str,
    pub alerts: Vec<Alert<'a>>,
    pub group_labels: Labels,
    pub common_labels: Labels,
    pub common_annotations: Labels,
    #[serde(rename = "externalURL")]
    pub external_url: &'a str,
    pub version: &'static str,
    pub group_key: &'a str,
    pub truncated_alerts: u64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert<'a> {
    pub status: &'static str,
    pub labels: &'a Labels,
    pub annotations: &'a Labels,
    pub starts_at: String,
    pub ends_at: String,
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
    pub fingerprint: &'a str,
}

/// Pairs that every map has with the same value.
fn common<'a>(maps: impl Iterator<Item = &'a Labels>) -> Labels {
    let mut maps = maps;
    let Some(first) = maps.next() else {
        return Labels::new();
    };
    let mut out = first.clone();
    for m in maps {
        out.retain(|k, v| m.get(k) == Some(v));
    }
    out
}

/// The body of one group's notification; `alerts` as [`super::group::body_alerts`] chose them.
pub fn body(
    receiver: &Receiver,
    grouping: &Grouping,
    group_key: &str,
    group_labels: Labels,
    alerts: &[&AlertState],
) -> String {
    let limit = match grouping.max_alerts {
        0 => alerts.len(),
        n => (n as usize).min(alerts.len()),
    };
    let firing = alerts.iter().any(|a| a.status == AlertStatus::Firing);
    let shown = &alerts[..limit];
    let msg = Message {
        receiver: &receiver.name,
        status: if firing { "firing" } else { "resolved" },
        alerts: shown
            .iter()
            .map(|a| Alert {
                status: a.status.as_str(),
                labels: &a.labels,
                annotations: &a.annotations,
                starts_at: rfc3339(a.starts_at),
                ends_at: match (a.status, a.ends_at) {
                    (AlertStatus::Resolved, Some(t)) => rfc3339(t),
                    _ => ZERO_TIME.to_string(),
                },
                generator_url: absolute(&receiver.external_url, &a.generator_url),
                fingerprint: &a.fingerprint,
            })
            .collect(),
        group_labels,
        common_labels: common(shown.iter().map(|a| &a.labels)),
        common_annotations: common(shown.iter().map(|a| &a.annotations)),
        external_url: &receiver.external_url,
        version: "4",
        group_key,
        truncated_alerts: (alerts.len() - limit) as u64,
    };
    serde_json::to_string(&msg).unwrap_or_default()
}

/// The sender: POST the body to the receiver's URL.
pub fn sender(client: reqwest::Client, r: &Receiver) -> HttpPost {
    HttpPost::new(client, r.url.clone(), r.auth.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::config::{GroupBy, ReceiverKind, RetryPolicy};
    use std::time::Duration;

    fn receiver(max_alerts: u32) -> (Receiver, Grouping) {
        let g = Grouping {
            group_by: GroupBy::Labels(vec!["alertname".into()]),
            group_wait: Duration::ZERO,
            group_interval: Duration::from_secs(300),
            repeat_interval: Duration::from_secs(3600),
            send_resolved: true,
            max_alerts,
        };
        (
            Receiver {
                name: "ops".into(),
                kind: ReceiverKind::Webhook(g.clone()),
                url: "http://127.0.0.1:9/hook".parse().unwrap(),
                auth: None,
                retry: RetryPolicy::default(),
                external_url: "http://metrolog:8080".into(),
            },
            g,
        )
    }

    fn alert(instance: &str, status: AlertStatus) -> AlertState {
        AlertState {
            fingerprint: format!("fp-{instance}"),
            status,
            labels: [
                ("alertname".to_string(), "cpu-high".to_string()),
                ("instance".to_string(), instance.to_string()),
                ("severity".to_string(), "critical".to_string()),
            ]
            .into(),
            annotations: [("summary".to_string(), format!("cpu on {instance}"))].into(),
            starts_at: 1_714_557_600,
            ends_at: (status == AlertStatus::Resolved).then_some(1_714_558_200),
            generator_url: "/alarms#alarm-7".into(),
            muted: false,
            seq: 1,
            updated_ms: 0,
            sent_seq: None,
        }
    }

    #[test]
    fn the_body_has_alertmanagers_fields_in_its_order() {
        let (r, g) = receiver(0);
        let (a, b) = (
            alert("web-1", AlertStatus::Firing),
            alert("web-2", AlertStatus::Resolved),
        );
        let group_labels: Labels = [("alertname".to_string(), "cpu-high".to_string())].into();
        let text = body(
            &r,
            &g,
            "{}:{alertname=\"cpu-high\"}",
            group_labels,
            &[&a, &b],
        );
        let expected = concat!(
            r#"{"receiver":"ops","status":"firing","alerts":["#,
            r#"{"status":"firing","labels":{"alertname":"cpu-high","instance":"web-1","severity":"critical"},"#,
            r#""annotations":{"summary":"cpu on web-1"},"startsAt":"2024-05-01T10:00:00Z","endsAt":"0001-01-01T00:00:00Z","#,
            r#""generatorURL":"http://metrolog:8080/alarms#alarm-7","fingerprint":"fp-web-1"},"#,
            r#"{"status":"resolved","labels":{"alertname":"cpu-high","instance":"web-2","severity":"critical"},"#,
            r#""annotations":{"summary":"cpu on web-2"},"startsAt":"2024-05-01T10:00:00Z","endsAt":"2024-05-01T10:10:00Z","#,
            r#""generatorURL":"http://metrolog:8080/alarms#alarm-7","fingerprint":"fp-web-2"}],"#,
            r#""groupLabels":{"alertname":"cpu-high"},"commonLabels":{"alertname":"cpu-high","severity":"critical"},"#,
            r#""commonAnnotations":{},"externalURL":"http://metrolog:8080","version":"4","#,
            r#""groupKey":"{}:{alertname=\"cpu-high\"}","truncatedAlerts":0}"#
        );
        assert_eq!(text, expected);
    }

    #[test]
    fn max_alerts_truncates_and_counts_the_rest() {
        let (r, g) = receiver(1);
        let (a, b) = (
            alert("web-1", AlertStatus::Resolved),
            alert("web-2", AlertStatus::Firing),
        );
        let v: serde_json::Value =
            serde_json::from_str(&body(&r, &g, "k", Labels::new(), &[&a, &b])).unwrap();
        assert_eq!(v["alerts"].as_array().unwrap().len(), 1);
        assert_eq!(v["truncatedAlerts"], 1);
        assert_eq!(
            v["status"], "firing",
            "the group fires if any of its alerts does"
        );
    }
}
