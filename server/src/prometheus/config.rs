//! `[prometheus]` of server.toml: the limits of the Prometheus-compatible API.

use metrolog_protocol::units::serde_duration;
use serde::Deserialize;
use std::time::Duration;

/// `[prometheus]`: limits of `/prometheus/api/v1/*` (docs/prometheus.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrometheusSection {
    /// Most series a selector (or `match[]`) may select, and an answer may hold;
    /// a query beyond is refused with `bad_data` before any archive is read.
    pub max_series: usize,
    /// Most points (series × steps) a query may hold in memory at once.
    pub max_samples: usize,
    /// Longest evaluation of one query (`timeout` error beyond).
    #[serde(with = "serde_duration")]
    pub timeout: Duration,
    /// How far back an instant query looks for a series' latest row.
    #[serde(with = "serde_duration")]
    pub lookback_delta: Duration,
}

impl Default for PrometheusSection {
    fn default() -> Self {
        Self {
            max_series: 20_000,
            max_samples: 10_000_000,
            timeout: Duration::from_secs(30),
            lookback_delta: Duration::from_secs(300),
        }
    }
}
