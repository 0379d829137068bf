//! `kind = "alertmanager"`: push to a real Alertmanager's API v2 as
//! Prometheus' notifier does: `POST {url}/api/v2/alerts` with a JSON array
//! of at most 256 alerts; a firing alert carries `endsAt = now + 4 ×
//! resend_delay` and is re-sent every `resend_delay` while active (so
//! Alertmanager resolves it by itself if we go away), a resolved one
//! carries `endsAt` = the time it resolved.

use super::config::Receiver;
use super::sender::HttpPost;
use super::{absolute, rfc3339, AlertState, AlertStatus};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Alerts per request at most (Prometheus' `maxBatchSize`).
pub const MAX_BATCH: usize = 256;

/// Alertmanager's `PostableAlert`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PostableAlert<'a> {
    labels: &'a BTreeMap<String, String>,
    annotations: &'a BTreeMap<String, String>,
    starts_at: String,
    ends_at: String,
    #[serde(rename = "generatorURL")]
    generator_url: String,
}

/// The bodies of one flush, at most [`MAX_BATCH`] alerts each; `now` in seconds.
pub fn bodies(
    receiver: &Receiver,
    resend_delay: Duration,
    alerts: &[&AlertState],
    now: i64,
) -> Vec<String> {
    let lease = i64::try_from(resend_delay.as_secs().saturating_mul(4)).unwrap_or(i64::MAX / 4);
    alerts
        .chunks(MAX_BATCH)
        .map(|chunk| {
            let list: Vec<PostableAlert> = chunk
                .iter()
                .map(|a| PostableAlert {
                    labels: &a.labels,
                    annotations: &a.annotations,
                    starts_at: rfc3339(a.starts_at),
                    ends_at: match a.status {
                        AlertStatus::Firing => rfc3339(now.saturating_add(lease)),
                        AlertStatus::Resolved => rfc3339(a.ends_at.unwrap_or(now)),
                    },
                    generator_url: absolute(&receiver.external_url, &a.generator_url),
                })
                .collect();
            serde_json::to_string(&list).unwrap_or_default()
        })
        .collect()
}

/// `{url}/api/v2/alerts`, whatever path the URL ends with.
pub fn endpoint(url: &reqwest::Url) -> reqwest::Url {
    let mut u = url.clone();
    let path = format!("{}/api/v2/alerts", u.path().trim_end_matches('/'));
    u.set_path(&path);
    u
}

pub fn sender(client: reqwest::Client, r: &Receiver) -> HttpPost {
    HttpPost::new(client, endpoint(&r.url), r.auth.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::config::{ReceiverKind, RetryPolicy};

    fn alert(i: usize, status: AlertStatus) -> AlertState {
        AlertState {
            fingerprint: format!("{i:016x}"),
            status,
            labels: [("alertname".to_string(), format!("a{i}"))].into(),
            annotations: BTreeMap::new(),
            starts_at: 1_714_557_600,
            ends_at: (status == AlertStatus::Resolved).then_some(1_714_557_660),
            generator_url: "/alarms".into(),
            muted: false,
            seq: 1,
            updated_ms: 0,
            sent_seq: None,
        }
    }

    fn receiver() -> Receiver {
        Receiver {
            name: "am".into(),
            kind: ReceiverKind::Alertmanager {
                resend_delay: Duration::from_secs(60),
            },
            url: "http://127.0.0.1:9093/".parse().unwrap(),
            auth: None,
            retry: RetryPolicy::default(),
            external_url: String::new(),
        }
    }

    #[test]
    fn firing_alerts_lease_four_resend_delays_and_resolved_end_when_they_did() {
        let (f, r) = (
            alert(1, AlertStatus::Firing),
            alert(2, AlertStatus::Resolved),
        );
        let b = bodies(
            &receiver(),
            Duration::from_secs(60),
            &[&f, &r],
            1_714_557_700,
        );
        assert_eq!(b.len(), 1);
        let v: serde_json::Value = serde_json::from_str(&b[0]).unwrap();
        assert_eq!(v[0]["endsAt"], "2024-05-01T10:05:40Z", "now + 4 × 60 s");
        assert_eq!(v[1]["endsAt"], "2024-05-01T10:01:00Z");
        assert_eq!(v[0]["startsAt"], "2024-05-01T10:00:00Z");
        assert_eq!(v[0]["generatorURL"], "/alarms");
    }

    #[test]
    fn requests_carry_at_most_256_alerts() {
        let alerts: Vec<AlertState> = (0..600).map(|i| alert(i, AlertStatus::Firing)).collect();
        let refs: Vec<&AlertState> = alerts.iter().collect();
        let b = bodies(&receiver(), Duration::from_secs(60), &refs, 0);
        let sizes: Vec<usize> = b
            .iter()
            .map(|s| {
                serde_json::from_str::<Vec<serde_json::Value>>(s)
                    .unwrap()
                    .len()
            })
            .collect();
        assert_eq!(sizes, [256, 256, 88]);
    }

    #[test]
    fn the_endpoint_is_api_v2_alerts() {
        assert_eq!(
            endpoint(&"http://am:9093/".parse().unwrap()).as_str(),
            "http://am:9093/api/v2/alerts"
        );
        assert_eq!(
            endpoint(&"http://am:9093/prefix".parse().unwrap()).as_str(),
            "http://am:9093/prefix/api/v2/alerts"
        );
    }
}
