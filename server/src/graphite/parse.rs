//! The Graphite plaintext protocol: one `path value timestamp` line per sample,
//! as sent by collectd's `write_graphite`, StatsD, Icinga 2's GraphiteWriter and
//! most of what speaks "carbon".

use metrolog_protocol::SeriesName;

/// One sample, with the host and series name taken from its path.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphiteSample {
    pub host: String,
    pub series: SeriesName,
    pub ts: i64,
    /// `None` for `nan` and other non-finite values: stored as unknown.
    pub value: Option<f64>,
}

/// Why a line was refused (each counted in `/metrics`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("expected `path value timestamp`")]
    Shape,
    #[error("value is not a number")]
    Value,
    #[error("timestamp is not unix seconds")]
    Timestamp,
    #[error("path has no host segment {0}")]
    NoHost(usize),
    #[error("path does not make a valid series name: {0}")]
    Name(String),
}

/// How paths map to hosts and series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathMapping {
    /// Index of the dot-separated segment that names the host
    /// (`collectd.<host>.cpu-0.percent-idle` → 1). Segments before it are
    /// dropped; those after it make the series name.
    pub host_segment: usize,
}

impl Default for PathMapping {
    fn default() -> Self {
        Self { host_segment: 1 }
    }
}

/// Lowercases a path segment and replaces what a series name cannot hold by `_`.
fn sanitize(segment: &str) -> String {
    segment
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Parses one line (without its newline).
pub fn parse_line(line: &str, mapping: &PathMapping) -> Result<GraphiteSample, LineError> {
    let mut parts = line.split_ascii_whitespace();
    let (Some(path), Some(value), Some(ts), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(LineError::Shape);
    };
    let value: f64 = value.parse().map_err(|_| LineError::Value)?;
    let ts: f64 = ts.parse().map_err(|_| LineError::Timestamp)?;
    if !(0.0..=32_503_680_000.0).contains(&ts) {
        return Err(LineError::Timestamp);
    }
    let segments: Vec<&str> = path.split('.').filter(|s| !s.is_empty()).collect();
    let host = segments
        .get(mapping.host_segment)
        .ok_or(LineError::NoHost(mapping.host_segment))?;
    let rest: Vec<String> = segments[mapping.host_segment + 1..]
        .iter()
        .map(|s| sanitize(s))
        .collect();
    if rest.is_empty() {
        return Err(LineError::Name(path.chars().take(80).collect()));
    }
    let series = SeriesName::parse(&rest.join(".")).map_err(|e| LineError::Name(e.to_string()))?;
    Ok(GraphiteSample {
        host: host.to_string(),
        series,
        ts: ts as i64,
        value: value.is_finite().then_some(value),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collectd_paths() {
        let m = PathMapping::default();
        let s = parse_line("collectd.web-1.cpu-0.percent-idle 97.5 1700000000", &m).unwrap();
        assert_eq!(s.host, "web-1");
        assert_eq!(s.series.as_str(), "cpu-0.percent-idle");
        assert_eq!((s.ts, s.value), (1_700_000_000, Some(97.5)));
        let s = parse_line(
            "collectd.db_example_com.df-root.df_complex-used 1.5e9 1700000000.25",
            &m,
        )
        .unwrap();
        assert_eq!(s.host, "db_example_com");
        assert_eq!(s.series.as_str(), "df-root.df_complex-used");
        assert_eq!(s.ts, 1_700_000_000);
    }

    #[test]
    fn odd_input_is_refused_or_sanitised() {
        let m = PathMapping::default();
        assert_eq!(parse_line("justonefield", &m), Err(LineError::Shape));
        assert_eq!(parse_line("a.b.c 1 2 3", &m), Err(LineError::Shape));
        assert_eq!(parse_line("a.b.c x 2", &m), Err(LineError::Value));
        assert_eq!(parse_line("a.b.c 1 -5", &m), Err(LineError::Timestamp));
        assert_eq!(parse_line("a 1 2", &m), Err(LineError::NoHost(1)));
        assert!(matches!(parse_line("a.b 1 2", &m), Err(LineError::Name(_))));
        let s = parse_line("icinga2.Web-1.services.HTTP Check.time 1 2", &m);
        assert_eq!(s, Err(LineError::Shape), "spaces split fields");
        let s = parse_line("icinga2.web-1.services.HTTP<x>.time 0.25 2", &m).unwrap();
        assert_eq!(s.series.as_str(), "services.http_x_.time");
        assert_eq!(parse_line("a.h.x nan 2", &m).unwrap().value, None);
    }
}
