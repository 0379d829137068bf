//! A check's result as the agent ships it in a batch (`Batch::checks`).

use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest check name, in bytes.
pub const MAX_CHECK_NAME: usize = 64;
/// Most bytes of plugin output (summary + long output + perfdata) kept per run.
pub const MAX_OUTPUT_BYTES: usize = 16 * 1024;

/// Exit status of a Nagios plugin: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
/// On the wire and in the database it is that number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CheckStatus {
    #[default]
    Ok,
    Warning,
    Critical,
    Unknown,
}

impl CheckStatus {
    /// The status a plugin's exit code means; anything but 0–3 is UNKNOWN.
    pub fn from_exit_code(code: i32) -> Self {
        match code {
            0 => Self::Ok,
            1 => Self::Warning,
            2 => Self::Critical,
            _ => Self::Unknown,
        }
    }

    pub fn code(self) -> u8 {
        match self {
            Self::Ok => 0,
            Self::Warning => 1,
            Self::Critical => 2,
            Self::Unknown => 3,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Self::Ok,
            1 => Self::Warning,
            2 => Self::Critical,
            3 => Self::Unknown,
            _ => return None,
        })
    }

    /// `OK`, `WARNING`, `CRITICAL`, `UNKNOWN`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::Warning => "WARNING",
            Self::Critical => "CRITICAL",
            Self::Unknown => "UNKNOWN",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text.to_ascii_uppercase().as_str() {
            "OK" => Self::Ok,
            "WARNING" => Self::Warning,
            "CRITICAL" => Self::Critical,
            "UNKNOWN" => Self::Unknown,
            _ => return None,
        })
    }
}

impl fmt::Display for CheckStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for CheckStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(self.code())
    }
}

impl<'de> Deserialize<'de> for CheckStatus {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = u8::deserialize(d)?;
        Self::from_code(code)
            .ok_or_else(|| serde::de::Error::custom(format!("check status {code} is not 0-3")))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckNameError {
    #[error("check name {0:?} must be 1-{MAX_CHECK_NAME} bytes of a-z, 0-9, '_' and '-' (it becomes series check.<name>.*)")]
    Invalid(String),
}

/// A check's name: it becomes part of series names (`check.<name>.<label>`),
/// so it holds only a-z, 0-9, `_` and `-`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct CheckName(String);

impl CheckName {
    pub fn parse(text: &str) -> Result<Self, CheckNameError> {
        let ok = !text.is_empty()
            && text.len() <= MAX_CHECK_NAME
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if ok {
            Ok(Self(text.to_string()))
        } else {
            Err(CheckNameError::Invalid(text.chars().take(80).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CheckName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for CheckName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        CheckName::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// One run of one check. The perfdata's values travel as ordinary metric
/// series (`check.<name>.<label>`) in the same batch; `perfdata` here is the
/// plugin's text, kept for display.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckResult {
    pub name: CheckName,
    pub status: CheckStatus,
    /// The first line of output, without its perfdata: the summary. For a
    /// plugin that could not be judged (timeout, signal, missing binary, exit
    /// code outside 0–3) it says why, with status UNKNOWN.
    pub output: String,
    /// Output lines after the first (without perfdata).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub long_output: String,
    /// Perfdata text as the plugin printed it (all of it, space separated).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub perfdata: String,
    /// When the run ended, unix seconds.
    pub ts: i64,
    /// How long the run took, in milliseconds.
    pub duration_ms: u64,
    /// 1 for the first non-OK result in a row (and for every OK), counting up
    /// while the check stays non-OK, up to `max_attempts`: the state is hard
    /// once `attempt == max_attempts` (Nagios' soft/hard states).
    pub attempt: u32,
    pub max_attempts: u32,
}

impl CheckResult {
    /// Whether this result is a hard state (OK results are always hard).
    pub fn is_hard(&self) -> bool {
        self.status == CheckStatus::Ok || self.attempt >= self.max_attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_a_number_on_the_wire() {
        assert_eq!(serde_json::to_string(&CheckStatus::Critical).unwrap(), "2");
        assert_eq!(
            serde_json::from_str::<CheckStatus>("3").unwrap(),
            CheckStatus::Unknown
        );
        assert!(serde_json::from_str::<CheckStatus>("4").is_err());
        assert_eq!(CheckStatus::from_exit_code(127), CheckStatus::Unknown);
        assert_eq!(CheckStatus::from_exit_code(-1), CheckStatus::Unknown);
    }

    #[test]
    fn names_are_series_safe() {
        assert!(CheckName::parse("disk_root").is_ok());
        assert!(CheckName::parse("http-80").is_ok());
        for bad in ["", "Disk", "a.b", "a b", "<x>", &"x".repeat(65)] {
            assert!(CheckName::parse(bad).is_err(), "{bad:?}");
        }
    }
}
