//! The log record as it travels (agent batches) and is stored (server).

use super::level::{Facility, Severity};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One log line, parsed as far as it could be (SPEC §3 "Log record").
///
/// Times are **unix microseconds** (UTC): RFC 5424 timestamps carry at most
/// microseconds, databases store microseconds, and the value stays exact in a
/// JSON number read by JavaScript (2^53 µs is 285 years). [`LogRecord::ts_utc`]
/// and [`unix_micros`] convert.
///
/// The server adds what only it knows (`id`, the host it resolved, the
/// [`LogSource`]); everything here is what the line itself said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogRecord {
    /// Source time (unix µs): the line's own timestamp, or `received_at` when
    /// it had none.
    pub ts: i64,
    /// When the agent or server read the line (unix µs).
    pub received_at: i64,
    /// The host name as the sender claims it (not verified).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facility: Option<Facility>,
    /// `None` when the line carried no priority (plain file lines, lines with
    /// no `<PRI>`); filters count it as [`Severity::DEFAULT`] (notice), see
    /// [`LogRecord::effective_severity`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub procid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msgid: Option<String>,
    pub message: String,
    /// RFC 5424 structured data, verbatim as sent (`[id k="v"][id2 …]`),
    /// `None` for NILVALUE or when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub structured_data: Option<String>,
    /// The line was longer than the limit and was cut.
    #[serde(default, skip_serializing_if = "is_false")]
    pub truncated: bool,
    /// The line was not valid UTF-8: each bad sequence became U+FFFD.
    #[serde(default, skip_serializing_if = "is_false")]
    pub invalid_utf8: bool,
    /// The line was not syslog (no valid `<PRI>`) and no log header could be
    /// recognized: `message` is the whole line.
    #[serde(default, skip_serializing_if = "is_false")]
    pub unparsed: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl LogRecord {
    /// A record holding `message` whole, stamped with the receive time.
    pub fn whole(message: String, received_at: DateTime<Utc>) -> LogRecord {
        let now = unix_micros(received_at);
        LogRecord {
            ts: now,
            received_at: now,
            hostname: None,
            facility: None,
            severity: None,
            app_name: None,
            procid: None,
            msgid: None,
            message,
            structured_data: None,
            truncated: false,
            invalid_utf8: false,
            unparsed: false,
        }
    }

    /// The severity filters compare: the record's own, else notice.
    pub fn effective_severity(&self) -> Severity {
        self.severity.unwrap_or(Severity::DEFAULT)
    }

    /// `ts` as a date (`None` only if it is out of chrono's range).
    pub fn ts_utc(&self) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp_micros(self.ts)
    }

    /// `received_at` as a date.
    pub fn received_at_utc(&self) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp_micros(self.received_at)
    }
}

/// Unix microseconds of a date, the unit of [`LogRecord`] times.
pub fn unix_micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// Which path a record came in by (SPEC §3 `source`); the server stores it
/// beside the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogSource {
    /// Shipped by an agent (tailed file or its local syslog receiver).
    Agent,
    SyslogUdp,
    SyslogTcp,
}

impl LogSource {
    pub fn as_str(self) -> &'static str {
        match self {
            LogSource::Agent => "agent",
            LogSource::SyslogUdp => "syslog-udp",
            LogSource::SyslogTcp => "syslog-tcp",
        }
    }
}

impl std::fmt::Display for LogSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form_is_compact_and_round_trips() {
        let at = DateTime::from_timestamp(1_700_000_000, 123_456_000).unwrap();
        let mut r = LogRecord::whole("hello".into(), at);
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"ts":1700000000123456,"received_at":1700000000123456,"message":"hello"}"#
        );
        r.severity = Some(Severity::Err);
        r.facility = Some(Facility::Local0);
        r.app_name = Some("app".into());
        r.truncated = true;
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains(r#""severity":3"#), "{json}");
        assert!(json.contains(r#""truncated":true"#), "{json}");
        assert_eq!(serde_json::from_str::<LogRecord>(&json).unwrap(), r);
        assert_eq!(r.ts_utc(), Some(at));
    }

    #[test]
    fn missing_severity_counts_as_notice() {
        let r = LogRecord::whole("x".into(), Utc::now());
        assert_eq!(r.effective_severity(), Severity::Notice);
    }

    #[test]
    fn source_names_match_the_spec() {
        assert_eq!(
            serde_json::to_string(&LogSource::SyslogUdp).unwrap(),
            "\"syslog-udp\""
        );
        assert_eq!(LogSource::Agent.to_string(), "agent");
    }
}
