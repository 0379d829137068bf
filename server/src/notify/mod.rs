//! Notifications: from the alarm commit to the receivers, through a durable
//! outbox (SPEC §6, §7). The outbox is generic: a delivery is a frozen body
//! for a named receiver, and a [`sender::Sender`] per kind only formats the
//! request and sends it; the [`worker`] owns retries, timeouts, dead letters
//! and the order of deliveries. Scaling hooks reuse it as other sender kinds.
//!
//! - [`config`]: `[[notify]]` checked into [`config::Receiver`]s;
//! - [`group`]: Alertmanager's grouping, waits and repeats, as pure decisions;
//! - [`retry`]: backoff with full jitter, `Retry-After`, what an answer means;
//! - [`sender`]: the trait and the HTTP sender both receiver kinds use;
//! - [`webhook`]: Alertmanager's webhook body (version 4);
//! - [`alertmanager`]: Alertmanager's API v2 body, as Prometheus pushes;
//! - [`worker`]: the planner (alerts → deliveries) and one task per receiver.

pub mod alertmanager;
pub mod config;
pub mod group;
pub mod retry;
pub mod sender;
pub mod webhook;
pub mod worker;

pub use config::{NotifySection, Receiver, ReceiverKind};
pub use worker::{Notifier, NotifierHandle};

use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertStatus {
    Firing,
    Resolved,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Self {
        if s == "resolved" {
            AlertStatus::Resolved
        } else {
            AlertStatus::Firing
        }
    }
}

/// One alert, with Alertmanager's alert fields: what the alarm side hands to
/// the outbox. Times are unix seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertNotice {
    pub fingerprint: String,
    pub status: AlertStatus,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: i64,
    pub ends_at: Option<i64>,
    pub generator_url: String,
}

/// What one receiver knows of one alert (a `notify_alerts` row).
#[derive(Debug, Clone, PartialEq)]
pub struct AlertState {
    pub fingerprint: String,
    pub status: AlertStatus,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: i64,
    pub ends_at: Option<i64>,
    pub generator_url: String,
    /// Repeats held (acknowledged, silenced, flapping).
    pub muted: bool,
    /// Grows with every notice.
    pub seq: i64,
    /// When the last notice arrived (ms).
    pub updated_ms: i64,
    /// The `seq` last put in a delivery.
    pub sent_seq: Option<i64>,
}

/// RFC 3339 in UTC as Alertmanager writes it (`2024-05-01T10:00:00Z`).
pub fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| ZERO_TIME.to_string())
}

/// Go's zero time: Alertmanager's `endsAt` of a firing alert.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// A link the receiver can follow: relative links get the external URL.
pub fn absolute(external_url: &str, link: &str) -> String {
    if link.starts_with('/') && !external_url.is_empty() {
        format!("{external_url}{link}")
    } else {
        link.to_string()
    }
}
