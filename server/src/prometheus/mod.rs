//! A Prometheus-compatible read API under `/prometheus/api/v1/` with a PromQL
//! subset over the round-robin archives, so Grafana's built-in Prometheus data
//! source and `promtool query` read Metrolog with no plugin (docs/prometheus.md).
//!
//! * [`parse`]: `promql-parser` reads the query; the adapter keeps the subset.
//! * [`names`]: series as Prometheus sees them (`__name__`, labels).
//! * [`eval`]: the evaluator, every step at once, on archive rows.
//! * [`source`]: series and rows from the store, through `crate::query`.
//! * [`api`]: the routes, Prometheus' envelope and parameters.

pub mod api;
pub mod config;
pub mod error;
pub mod eval;
pub mod names;
pub mod parse;
pub mod source;

pub use api::router;
pub use config::PrometheusSection;
pub use error::PromError;
