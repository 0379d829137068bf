//! The agent ↔ server protocol: enroll, batches, heartbeat, leave, configuration.
//! See `docs/protocol.md` for the exchange itself.

use crate::series::{Labels, SeriesKey};
use serde::{Deserialize, Serialize};

/// Paths of the agent-facing endpoints, relative to the server's base URL.
pub mod paths {
    pub const ENROLL: &str = "/api/v1/agent/enroll";
    pub const BATCH: &str = "/api/v1/agent/batch";
    pub const HEARTBEAT: &str = "/api/v1/agent/heartbeat";
    pub const LEAVE: &str = "/api/v1/agent/leave";
    pub const CONFIG: &str = "/api/v1/agent/config";
}

/// Sent with the enrollment token to obtain a per-agent credential.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    pub hostname: String,
    /// Cloud instance id when known; the host identity when present.
    #[serde(default)]
    pub instance_id: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub labels: Labels,
    pub agent_version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EnrollResponse {
    /// The host id this agent writes as.
    pub host_id: i64,
    /// Secret credential for every later request (`Authorization: Bearer …`).
    pub agent_token: String,
    pub settings: AgentSettings,
    /// [`AgentSettings::version`] of `settings` (absent from servers older
    /// than versioned settings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings_version: Option<String>,
}

/// Body of the `200` answer to `POST /api/v1/agent/heartbeat` (servers
/// older than versioned settings answer `204` with no body).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct HeartbeatAck {
    /// [`AgentSettings::version`] of the settings the server pushes to the
    /// agent's group now: when it differs from the agent's, the agent asks
    /// `GET /api/v1/agent/config` again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings_version: Option<String>,
}

/// Settings the server pushes to an agent (per group). Every field is optional
/// on the wire; the agent keeps its own value for what is absent.
///
/// Unlike the requests an agent sends, these types do **not** deny unknown
/// fields: an agent older than its server ignores what it does not know yet
/// (a newer server's keys), so a server can be upgraded before its fleet.
/// Each message is the whole of what the server pushes, not a change: a key
/// that disappears stops applying.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AgentSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_interval_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ship_interval_ms: Option<u64>,
    /// Log files and filter pushed to the group, combined with the agent's
    /// own `[logs]` (see `docs/agent-logs.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<LogSettings>,
    /// Checks pushed to the group, combined with the agent's own
    /// `[[checks]]`: a local check of the same name wins (see `docs/checks.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<Vec<CheckSettings>>,
    /// `[munin]` pushed to the group: Munin plugins on, with these keys
    /// (every key sent). The agent's own `[munin]` wins whole.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::settings::lenient_opt"
    )]
    pub munin: Option<crate::settings::munin::MuninConfig>,
    /// `[[scrape]]` targets pushed to the group, added to the agent's own:
    /// a local target of the same name wins.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::settings::lenient_list"
    )]
    pub scrape: Option<Vec<crate::settings::scrape::ScrapeConfig>>,
}

impl AgentSettings {
    /// A stable hash of these settings (16 hex digits): the same settings
    /// give the same version on every server replica, build and restart. The
    /// server announces it in heartbeat and batch answers, and as the `ETag`
    /// of `GET /api/v1/agent/config`.
    pub fn version(&self) -> String {
        // serde_json writes struct fields in declaration order and maps
        // (labels) sorted, so equal settings give equal bytes.
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        format!("{:016x}", crate::settings::stable_hash(&bytes))
    }
}

/// One check of [`AgentSettings::checks`]: the keys of the agent's
/// `[[checks]]`, durations in milliseconds. What is absent takes the agent's
/// default (interval 60 s, retry 15 s, timeout 10 s, 3 attempts).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CheckSettings {
    pub name: String,
    /// Program and arguments (or the one `sh -c` string with `shell`).
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_interval_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shell: bool,
}

/// `logs` of [`AgentSettings`]: the keys of the agent's `[[logs.files]]` and
/// `[logs.filter]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LogSettings {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<LogFileSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<LogFilterSettings>,
}

/// One file (glob) to tail.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LogFileSettings {
    /// Absolute path or glob.
    pub path: String,
    /// app_name of lines that carry none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// Fixed UTC offset of timestamps written without one (`"+02:00"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

/// What is dropped at the source.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LogFilterSettings {
    /// Least severe level kept (a number 0–7 on the wire).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_severity: Option<crate::syslog::Severity>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apps: Vec<String>,
}

/// Identifies a batch for idempotent replay. An agent sends the batches of one
/// `stream` with strictly increasing `seq`; the server keeps, per host, the
/// highest `seq` committed for the current stream, so a replayed batch is
/// recognised without keeping every batch id forever.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct BatchId {
    /// Random per agent process (16+ hex characters).
    pub stream: String,
    pub seq: u64,
}

impl std::fmt::Display for BatchId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.stream, self.seq)
    }
}

/// One consolidated bucket of samples: the agent samples every second and ships
/// 10 s buckets. `ts` is the bucket's end (unix seconds): the bucket covers
/// `(ts - step, ts]`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(from = "BucketWire", into = "BucketWire")]
pub struct Bucket {
    pub ts: i64,
    pub avg: f64,
    pub min: f64,
    pub max: f64,
    pub last: f64,
    pub count: u32,
}

/// Compact wire form of a bucket: `[ts, avg, min, max, last, count]`.
#[derive(Serialize, Deserialize)]
struct BucketWire(i64, f64, f64, f64, f64, u32);

impl From<BucketWire> for Bucket {
    fn from(w: BucketWire) -> Self {
        Bucket {
            ts: w.0,
            avg: w.1,
            min: w.2,
            max: w.3,
            last: w.4,
            count: w.5,
        }
    }
}

impl From<Bucket> for BucketWire {
    fn from(b: Bucket) -> Self {
        BucketWire(b.ts, b.avg, b.min, b.max, b.last, b.count)
    }
}

/// The buckets of one series in a batch, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SeriesBuckets {
    #[serde(flatten)]
    pub key: SeriesKey,
    /// Bucket width in seconds (10 by default).
    pub step: u32,
    pub buckets: Vec<Bucket>,
}

/// What an agent ships every ship interval: metric buckets, log records and
/// check results.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    pub id: BatchId,
    /// Agent clock when the batch was sealed (unix seconds).
    pub sent_at: i64,
    #[serde(default)]
    pub metrics: Vec<SeriesBuckets>,
    /// Log lines read from files or the agent's local syslog receiver, oldest
    /// first. Times are unix microseconds (see `syslog::LogRecord`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<crate::syslog::LogRecord>,
    /// Check results of the interval, oldest first (their perfdata values are
    /// in `metrics` as `check.<name>.<label>` series).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<crate::nagios::CheckResult>,
    /// What sources say about their series (Munin's graph titles, labels,
    /// types, thresholds), sent when new or changed; the server keeps the
    /// latest of each series.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub series_meta: Vec<SeriesMeta>,
}

/// Longest text of a [`SeriesMeta`] field the server keeps, in bytes.
pub const MAX_META_TEXT: usize = 1024;

/// How a series is drawn and judged, as its source describes it (Munin's
/// `graph_title`, `graph_category`, `label`, `type`, `warning`, …). Every
/// text is optional and at most [`MAX_META_TEXT`] bytes (longer is cut).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SeriesMeta {
    pub name: crate::series::SeriesName,
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
    /// The graph the series is drawn in (`munin.load`); the series of one
    /// graph share it.
    pub graph: String,
    /// The series' place in its graph (Munin's field order).
    #[serde(default)]
    pub order: u32,
    /// Title of the graph (`graph_title`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Category the graph is listed under (`graph_category`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Label of the vertical axis (`graph_vlabel`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlabel: Option<String>,
    /// The series' name in the legend (`label`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<String>,
    /// Source type (`GAUGE`, `DERIVE`, `COUNTER`, `ABSOLUTE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Munin ranges (`max`, `min:max`, `min:`): outside is WARNING/CRITICAL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critical: Option<String>,
}

/// The server's answer to a batch: 200 only once the batch is durably committed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BatchAck {
    pub batch: BatchId,
    /// `true` when the batch had been committed before and was not stored again.
    pub duplicate: bool,
    /// Buckets stored.
    pub accepted: u64,
    /// Buckets refused (non-finite values, far-future timestamps, …).
    pub rejected: u64,
    /// Settings the agent should apply (present when they changed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<AgentSettings>,
    /// [`AgentSettings::version`] of the settings pushed to the agent's
    /// group now (see [`HeartbeatAck::settings_version`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings_version: Option<String>,
}

/// Body of `POST /api/v1/agent/leave`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LeaveRequest {
    #[serde(default)]
    pub reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_round_trips_in_compact_form() {
        let batch = Batch {
            id: BatchId {
                stream: "abcd".into(),
                seq: 7,
            },
            sent_at: 100,
            logs: Vec::new(),
            checks: Vec::new(),
            metrics: vec![SeriesBuckets {
                key: SeriesKey::new("cpu.busy_pct", Labels::new()).unwrap(),
                step: 10,
                buckets: vec![Bucket {
                    ts: 100,
                    avg: 1.5,
                    min: 1.0,
                    max: 2.0,
                    last: 2.0,
                    count: 10,
                }],
            }],
            series_meta: Vec::new(),
        };
        let text = serde_json::to_string(&batch).unwrap();
        assert!(
            text.contains(r#""buckets":[[100,1.5,1.0,2.0,2.0,10]]"#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Batch>(&text).unwrap(), batch);
    }

    #[test]
    fn settings_interoperate_across_versions() {
        // A newer server's keys are ignored, at every level.
        let newer = r#"{"sample_interval_ms":1000,"scrape":[{"name":"x"}],
            "checks":[{"name":"x","command":["/bin/true"],"timeout_ms":500,"env":{"A":"1"}}],
            "logs":{"files":[{"path":"/var/log/*.log","app":"web","rotate":"x"}],
                    "filter":{"min_severity":6,"exclude":["healthcheck"],"sample":0.5},
                    "journald":true}}"#;
        let s: AgentSettings = serde_json::from_str(newer).unwrap();
        assert_eq!(s.sample_interval_ms, Some(1000));
        let checks = s.checks.as_ref().unwrap();
        assert_eq!(checks[0].command, ["/bin/true"]);
        assert_eq!(
            (checks[0].timeout_ms, checks[0].interval_ms),
            (Some(500), None)
        );
        let logs = s.logs.as_ref().unwrap();
        assert_eq!(logs.files[0].app.as_deref(), Some("web"));
        let filter = logs.filter.as_ref().unwrap();
        assert_eq!(filter.min_severity, Some(crate::syslog::Severity::Info));
        assert_eq!(filter.exclude, ["healthcheck"]);
        // An older server's settings (no logs) parse, and nothing unset is sent.
        let old: AgentSettings = serde_json::from_str(r#"{"ship_interval_ms":10000}"#).unwrap();
        assert_eq!((&old.logs, &old.checks), (&None, &None));
        assert_eq!(
            serde_json::to_string(&old).unwrap(),
            r#"{"ship_interval_ms":10000}"#
        );
        let text = serde_json::to_string(&AgentSettings {
            logs: Some(LogSettings {
                files: vec![LogFileSettings {
                    path: "/a.log".into(),
                    ..Default::default()
                }],
                filter: None,
            }),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(text, r#"{"logs":{"files":[{"path":"/a.log"}]}}"#);
        let text = serde_json::to_string(&AgentSettings {
            checks: Some(vec![CheckSettings {
                name: "ping".into(),
                command: vec!["/bin/true".into()],
                max_attempts: Some(2),
                ..Default::default()
            }]),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            text,
            r#"{"checks":[{"name":"ping","command":["/bin/true"],"max_attempts":2}]}"#
        );
    }

    #[test]
    fn the_settings_version_follows_the_settings_only() {
        let a = AgentSettings {
            sample_interval_ms: Some(1000),
            ..Default::default()
        };
        assert_eq!(a.version(), a.clone().version(), "stable");
        assert_eq!(a.version().len(), 16);
        let b = AgentSettings {
            sample_interval_ms: Some(2000),
            ..Default::default()
        };
        assert_ne!(a.version(), b.version());
        assert_ne!(a.version(), AgentSettings::default().version());
        // Parsed back from the wire (as an agent does), the same version.
        let wire: AgentSettings =
            serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        assert_eq!(wire.version(), a.version());
        // Older peers: an ack without the field, a heartbeat without a body.
        let ack: BatchAck = serde_json::from_str(
            r#"{"batch":{"stream":"a","seq":1},"duplicate":false,"accepted":1,"rejected":0}"#,
        )
        .unwrap();
        assert_eq!(ack.settings_version, None);
        let hb: HeartbeatAck =
            serde_json::from_str(r#"{"settings_version":"x","later":1}"#).unwrap();
        assert_eq!(hb.settings_version.as_deref(), Some("x"));
    }

    #[test]
    fn bad_series_name_is_refused_at_parse() {
        let text = r#"{"id":{"stream":"a","seq":1},"sent_at":1,"metrics":[{"name":"Bad Name","step":10,"buckets":[]}]}"#;
        assert!(serde_json::from_str::<Batch>(text).is_err());
    }
}
