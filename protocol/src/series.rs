//! Series identity: a lowercase dotted name plus labels, such as
//! `disk.used_pct{mount="/"}`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Longest accepted series name, in bytes.
pub const MAX_NAME_LEN: usize = 200;
/// Most labels one series may carry.
pub const MAX_LABELS: usize = 16;
/// Longest label key or value, in bytes.
pub const MAX_LABEL_LEN: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeriesNameError {
    #[error("series name is empty")]
    Empty,
    #[error("series name {0:?} is longer than {MAX_NAME_LEN} bytes")]
    TooLong(String),
    #[error("series name {0:?} may only hold a-z, 0-9, '_', '-' and '.' separated parts")]
    BadChar(String),
    #[error("label key {0:?} must match [a-z_][a-z0-9_]* and be at most {MAX_LABEL_LEN} bytes")]
    BadLabelKey(String),
    #[error(
        "label value for {0:?} is longer than {MAX_LABEL_LEN} bytes or holds control characters"
    )]
    BadLabelValue(String),
    #[error("a series may carry at most {MAX_LABELS} labels")]
    TooManyLabels,
}

/// A validated series name: lowercase ASCII letters, digits, `_`, `-`, separated by
/// single dots, not starting or ending with a dot.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct SeriesName(String);

impl SeriesName {
    pub fn parse(name: &str) -> Result<Self, SeriesNameError> {
        if name.is_empty() {
            return Err(SeriesNameError::Empty);
        }
        if name.len() > MAX_NAME_LEN {
            return Err(SeriesNameError::TooLong(name.chars().take(40).collect()));
        }
        let ok_chars = name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.')
        });
        let ok_dots = !name.starts_with('.') && !name.ends_with('.') && !name.contains("..");
        if !ok_chars || !ok_dots {
            return Err(SeriesNameError::BadChar(name.to_string()));
        }
        Ok(Self(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SeriesName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SeriesName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        SeriesName::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Labels of a series, ordered by key so that equal sets compare equal.
pub type Labels = BTreeMap<String, String>;

/// Checks a label set against the limits above.
pub fn validate_labels(labels: &Labels) -> Result<(), SeriesNameError> {
    if labels.len() > MAX_LABELS {
        return Err(SeriesNameError::TooManyLabels);
    }
    for (k, v) in labels {
        let mut bytes = k.bytes();
        let first_ok = matches!(bytes.next(), Some(b) if b.is_ascii_lowercase() || b == b'_');
        let rest_ok = bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !first_ok || !rest_ok || k.len() > MAX_LABEL_LEN {
            return Err(SeriesNameError::BadLabelKey(k.clone()));
        }
        if v.len() > MAX_LABEL_LEN || v.chars().any(char::is_control) {
            return Err(SeriesNameError::BadLabelValue(k.clone()));
        }
    }
    Ok(())
}

/// A series name with its labels: the identity of a series within one host.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SeriesKey {
    pub name: SeriesName,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: Labels,
}

impl SeriesKey {
    pub fn new(name: &str, labels: Labels) -> Result<Self, SeriesNameError> {
        validate_labels(&labels)?;
        Ok(Self {
            name: SeriesName::parse(name)?,
            labels,
        })
    }

    /// Canonical labels text, `{k="v",…}` with values escaped, empty when there are
    /// none. Stored alongside the name so a (host, name, labels) triple is unique.
    pub fn labels_text(&self) -> String {
        labels_text(&self.labels)
    }
}

/// Canonical `{k="v",…}` form of a label set (empty string for no labels).
pub fn labels_text(labels: &Labels) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let mut out = String::from("{");
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        for c in v.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
    out.push('}');
    out
}

impl fmt::Display for SeriesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.name, self.labels_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(SeriesName::parse("cpu.busy_pct").is_ok());
        assert!(SeriesName::parse("check.http.time").is_ok());
        assert!(SeriesName::parse("CPU").is_err());
        assert!(SeriesName::parse("cpu..x").is_err());
        assert!(SeriesName::parse(".cpu").is_err());
        assert!(SeriesName::parse("cpu busy").is_err());
        assert!(SeriesName::parse("<script>").is_err());
        assert!(SeriesName::parse("").is_err());
    }

    #[test]
    fn labels_are_canonical_and_escaped() {
        let mut l = Labels::new();
        l.insert("mount".into(), "/".into());
        l.insert("dev".into(), "a\"b".into());
        let k = SeriesKey::new("disk.used_pct", l).unwrap();
        assert_eq!(k.to_string(), r#"disk.used_pct{dev="a\"b",mount="/"}"#);
        let mut bad = Labels::new();
        bad.insert("Bad Key".into(), "x".into());
        assert!(SeriesKey::new("x", bad).is_err());
    }
}
