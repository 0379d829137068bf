//! Logging set-up and the server's own metrics (`GET /metrics`).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Sets tracing up once: `RUST_LOG` or `info`, to stderr.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counters of everything the server accepts, refuses or drops.
#[derive(Debug, Default)]
pub struct ServerMetrics {
    pub batches: Counter,
    pub batches_duplicate: Counter,
    pub buckets_stored: Counter,
    pub log_records: Counter,
    pub buckets_rejected_non_finite: Counter,
    pub buckets_rejected_time: Counter,
    pub buckets_rejected_step: Counter,
    pub enrollments: Counter,
    pub auth_failures: Counter,
    pub login_failures: Counter,
    pub login_rate_limited: Counter,
    pub http_internal_errors: Counter,
    pub hosts_marked_down: Counter,
    pub hosts_expired: Counter,
    pub points_pruned: Counter,
}

impl ServerMetrics {
    /// Prometheus text exposition; `hosts` is (state, count) read at scrape time.
    pub fn render(&self, hosts: &[(&str, u64)]) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, samples: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (labels, v) in samples {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        counter(
            "metrolog_ingest_batches_total",
            "Agent batches committed.",
            &[("", self.batches.get())],
        );
        counter(
            "metrolog_ingest_duplicate_batches_total",
            "Replayed batches acknowledged without storing again.",
            &[("", self.batches_duplicate.get())],
        );
        counter(
            "metrolog_ingest_buckets_total",
            "Metric buckets stored.",
            &[("", self.buckets_stored.get())],
        );
        counter(
            "metrolog_ingest_rejected_buckets_total",
            "Metric buckets refused, by reason.",
            &[
                (
                    "{reason=\"non_finite\"}",
                    self.buckets_rejected_non_finite.get(),
                ),
                ("{reason=\"time\"}", self.buckets_rejected_time.get()),
                ("{reason=\"step\"}", self.buckets_rejected_step.get()),
            ],
        );
        counter(
            "metrolog_enrollments_total",
            "Agent enrollments.",
            &[("", self.enrollments.get())],
        );
        counter(
            "metrolog_auth_failures_total",
            "Requests refused for a missing, unknown or revoked token.",
            &[("", self.auth_failures.get())],
        );
        counter(
            "metrolog_login_failures_total",
            "Failed dashboard logins, by reason.",
            &[
                ("{reason=\"credentials\"}", self.login_failures.get()),
                ("{reason=\"rate_limited\"}", self.login_rate_limited.get()),
            ],
        );
        counter(
            "metrolog_http_internal_errors_total",
            "HTTP requests that ended in a 5xx.",
            &[("", self.http_internal_errors.get())],
        );
        counter(
            "metrolog_hosts_marked_down_total",
            "Hosts found silent.",
            &[("", self.hosts_marked_down.get())],
        );
        counter(
            "metrolog_hosts_expired_total",
            "Hosts removed after hosts.expire_after.",
            &[("", self.hosts_expired.get())],
        );
        counter(
            "metrolog_points_pruned_total",
            "Raw points deleted by retention.",
            &[("", self.points_pruned.get())],
        );
        let _ = writeln!(
            out,
            "# HELP metrolog_hosts Hosts by state.\n# TYPE metrolog_hosts gauge"
        );
        for (state, n) in hosts {
            let _ = writeln!(out, "metrolog_hosts{{state=\"{state}\"}} {n}");
        }
        out
    }
}
