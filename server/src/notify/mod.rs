//! Notifications (placeholder until the outbox branch lands): the alert
//! notices the alarm side hands to the outbox.

use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertStatus {
    Firing,
    Resolved,
}

/// One alert, with Alertmanager's alert fields.
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
