//! A scaling event as hooks receive it and the API lists it (SPEC §7): one
//! JSON body, frozen when the event is stored, with a unique `id` that is the
//! idempotency key of its deliveries and the `webhook-id` receivers see.

use super::hook::EventType;
use metrolog_protocol::Labels;
use serde::{Deserialize, Serialize};

/// A member as events list it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberView {
    pub hostname: String,
    pub instance_id: Option<String>,
    pub state: String,
}

/// The member a membership event is about, with its facts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberFacts {
    pub hostname: String,
    pub instance_id: Option<String>,
    pub state: String,
    /// Addresses the agent reported as labels (`local_ipv4`, `public_ipv4`,
    /// `ipv4`, `ipv6`, `address`).
    pub addresses: Vec<String>,
    pub labels: Labels,
}

/// The body of SPEC §7.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScalingEvent {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub group: String,
    pub policy: Option<String>,
    pub metric: Option<String>,
    pub aggregation: Option<String>,
    pub value: Option<f64>,
    pub threshold: Option<f64>,
    pub current_size: u32,
    pub desired_size: Option<u32>,
    pub min_size: Option<u32>,
    pub max_size: Option<u32>,
    /// The group's members, those not `up` first, at most
    /// `[scaling] max_event_members`: a body's size must not grow with the fleet
    /// (every event is stored, and a fleet's arrival is one event per member).
    pub members: Vec<MemberView>,
    /// How many members the group has (`members` may list fewer).
    #[serde(default)]
    pub members_total: u32,
    /// Membership events: the member concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<MemberFacts>,
    /// RFC 3339.
    pub at: String,
    pub reason: String,
}

/// Default of `[scaling] max_event_members`: most members one event body
/// lists. Beyond, `members` holds the members that are not `up` first, then
/// the others by hostname, and `members_total` says how many there are; the
/// group's full list is at `GET /api/v1/groups/{name}`.
pub const DEFAULT_MAX_EVENT_MEMBERS: usize = 100;

/// Label keys whose values are addresses.
pub const ADDRESS_LABELS: [&str; 5] = ["local_ipv4", "public_ipv4", "ipv4", "ipv6", "address"];

pub fn addresses(labels: &Labels) -> Vec<String> {
    ADDRESS_LABELS
        .iter()
        .filter_map(|k| labels.get(*k).cloned())
        .collect()
}

/// A new event id: `evt_` + the time in ms (sortable) + 96 random bits.
pub fn new_id(now_ms: i64) -> String {
    format!("evt_{now_ms:013x}{}", crate::auth::random_string(12))
}

impl ScalingEvent {
    pub fn event_type(&self) -> Option<EventType> {
        EventType::parse(&self.kind)
    }

    /// Unix seconds of `at`.
    pub fn at_secs(&self) -> i64 {
        chrono::DateTime::parse_from_rfc3339(&self.at)
            .map(|d| d.timestamp())
            .unwrap_or(0)
    }
}
