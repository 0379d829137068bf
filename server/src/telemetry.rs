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
        // Colour codes only on a terminal: journald and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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

/// A value that goes up and down, set by whoever measures it.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A Prometheus histogram of durations with fixed buckets (seconds), kept
/// in microseconds: lock-free, bounded (one counter per bucket).
#[derive(Debug)]
pub struct Histogram {
    bounds_us: &'static [u64],
    /// Observations at most `bounds_us[i]` (not cumulative; the last slot
    /// holds those above every bound).
    buckets: Vec<AtomicU64>,
    sum_us: AtomicU64,
    count: AtomicU64,
}

/// 1 ms to 30 s: from an idle evaluator's answer to a badly lagging one.
const LATENCY_BOUNDS_US: &[u64] = &[
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000, 30_000_000,
];

impl Default for Histogram {
    fn default() -> Self {
        Self::new(LATENCY_BOUNDS_US)
    }
}

impl Histogram {
    pub fn new(bounds_us: &'static [u64]) -> Self {
        Self {
            bounds_us,
            buckets: (0..=bounds_us.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: std::time::Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = self.bounds_us.partition_point(|&b| b < us);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The family in text format: cumulative `le` buckets, `+Inf` equal to
    /// `_count`.
    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            cumulative += b.load(Ordering::Relaxed);
            match self.bounds_us.get(i) {
                Some(&le) => {
                    let _ = writeln!(
                        out,
                        "{name}_bucket{{le=\"{}\"}} {cumulative}",
                        le as f64 / 1e6
                    );
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let _ = writeln!(
            out,
            "{name}_sum {}\n{name}_count {cumulative}",
            self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
    }
}

/// Counters of everything the server accepts, refuses or drops.
#[derive(Debug, Default)]
pub struct ServerMetrics {
    pub batches: Counter,
    pub batches_duplicate: Counter,
    /// Batches refused with 503: `http.max_concurrent_batches` in flight.
    pub batches_rejected_busy: Counter,
    pub buckets_stored: Counter,
    pub log_records: Counter,
    pub buckets_rejected_non_finite: Counter,
    pub buckets_rejected_time: Counter,
    pub buckets_rejected_step: Counter,
    /// Buckets not after their series' last one (the archives take time in order).
    pub buckets_rejected_order: Counter,
    pub import_requests: Counter,
    pub import_samples: Counter,
    pub import_rejected_order: Counter,
    pub import_rejected_future: Counter,
    pub archive_flushes: Counter,
    pub archive_flush_failures: Counter,
    pub archive_flushed_rows: Counter,
    pub archive_corrupt_chunks: Counter,
    pub archive_series: Gauge,
    /// New series refused by `[archives] max_series_per_host`, `max_series`,
    /// and their samples: the store's counts, copied at every flush tick.
    pub series_refused_per_host: Gauge,
    pub series_refused_total: Gauge,
    pub series_refused_samples: Gauge,
    pub archive_pending_rows: Gauge,
    /// The decoded-chunk read cache (`[archives] read_cache`): the store's
    /// counts, copied at every flush tick.
    pub archive_read_cache_hits: Gauge,
    pub archive_read_cache_misses: Gauge,
    pub archive_read_cache_bytes: Gauge,
    pub enrollments: Counter,
    pub graphite_lines: Counter,
    pub graphite_dropped_long: Counter,
    pub graphite_dropped_malformed: Counter,
    pub graphite_dropped_order: Counter,
    pub graphite_dropped_store: Counter,
    pub auth_failures: Counter,
    pub login_failures: Counter,
    pub login_rate_limited: Counter,
    pub http_internal_errors: Counter,
    /// Requests refused because the database's disk was full.
    pub storage_full_errors: Counter,
    pub hosts_marked_down: Counter,
    pub hosts_expired: Counter,
    /// Group aggregate samples recorded (server/src/groups).
    pub group_samples: Counter,
    pub group_samples_rejected_order: Counter,
    pub group_record_failures: Counter,
    pub groups_expired: Counter,
    pub group_series_expired: Counter,
    // Central logs (server/src/logs, server/src/syslog).
    pub syslog_received_udp: Counter,
    pub syslog_received_tcp: Counter,
    pub syslog_received_tls: Counter,
    pub syslog_tls_handshake_failed: Counter,
    pub syslog_tls_handshake_timed_out: Counter,
    pub syslog_stored: Counter,
    pub syslog_dropped_queue_full: Counter,
    pub syslog_dropped_write_error: Counter,
    pub syslog_dropped_shutdown: Counter,
    pub syslog_truncated: Counter,
    pub syslog_invalid_utf8: Counter,
    pub syslog_unparsed: Counter,
    pub syslog_connections_accepted: Counter,
    pub syslog_connections_closed: Counter,
    pub syslog_connections_evicted: Counter,
    pub syslog_connections_idle_closed: Counter,
    pub syslog_accept_errors: Counter,
    pub log_tail_streams: Counter,
    pub log_tail_lagged: Counter,
    pub logs_pruned_age: Counter,
    pub logs_pruned_size: Counter,
    /// Log records committed but not yet in the full-text index.
    pub logs_index_lag: Gauge,
    // Supervision (server/src/alarms).
    pub check_results: Counter,
    /// Check results refused (time out of range, max_attempts 0).
    pub check_results_rejected: Counter,
    pub check_outputs_truncated: Counter,
    pub alarm_evaluations: Counter,
    pub alarm_transitions: Counter,
    pub alarm_notices: Counter,
    /// Notices not sent because a silence matched.
    pub alarm_notices_silenced: Counter,
    /// Times the evaluator fell behind the event bus and re-read the store.
    pub alarm_evaluator_resyncs: Counter,
    pub alarm_commit_failures: Counter,
    /// Series descriptions whose warning/critical is not a range
    /// (`limits = "series"` rules judge those by their own ranges).
    pub alarm_series_limits_unreadable: Counter,
    /// Microseconds the evaluator spent on the last event.
    pub alarm_eval_last_us: Gauge,
    /// From an event's publication on the bus (its commit) to the commit of
    /// the alarm decisions it led to.
    pub alarm_eval_latency: Histogram,
    /// Alarms not OK, by state (set by the evaluator).
    pub alarms_warning: Gauge,
    pub alarms_critical: Gauge,
    pub alarms_unknown: Gauge,
    /// Notifications and their outbox (server/src/notify).
    pub notify: NotifyMetrics,
    /// Scaling events by type (server/src/scaling).
    pub scaling: crate::scaling::runner::ScalingMetrics,
}

/// What each receiver was sent, by outcome, and the outbox's backlog.
#[derive(Debug, Default)]
pub struct NotifyMetrics {
    receivers: std::sync::Mutex<std::collections::BTreeMap<String, ReceiverCounts>>,
    /// Deliveries pending (set by the notifier after each change).
    pub backlog: Gauge,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReceiverCounts {
    /// Deliveries the receiver accepted (2xx).
    pub sent: u64,
    /// Attempts that failed (each retry counts).
    pub failed: u64,
    /// Deliveries given up: dead letters.
    pub dead: u64,
    /// From the delivery's creation to its acceptance, summed (ms).
    pub latency_ms_sum: u64,
}

impl NotifyMetrics {
    pub fn update(&self, receiver: &str, f: impl FnOnce(&mut ReceiverCounts)) {
        if let Ok(mut m) = self.receivers.lock() {
            f(m.entry(receiver.to_string()).or_default());
        }
    }

    pub fn get(&self, receiver: &str) -> ReceiverCounts {
        self.receivers
            .lock()
            .ok()
            .and_then(|m| m.get(receiver).copied())
            .unwrap_or_default()
    }

    fn render(&self, out: &mut String) {
        let all: Vec<(String, ReceiverCounts)> = self
            .receivers
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default();
        let mut family =
            |name: &str, kind: &str, help: &str, value: &dyn Fn(&ReceiverCounts) -> String| {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
                for (r, c) in &all {
                    let _ = writeln!(out, "{name}{{receiver={r:?}}} {}", value(c));
                }
            };
        family(
            "metrolog_notifications_sent_total",
            "counter",
            "Deliveries a receiver accepted.",
            &|c| c.sent.to_string(),
        );
        family(
            "metrolog_notifications_failed_total",
            "counter",
            "Delivery attempts that failed (each retry counts).",
            &|c| c.failed.to_string(),
        );
        family(
            "metrolog_notifications_dead_total",
            "counter",
            "Deliveries given up (dead letters).",
            &|c| c.dead.to_string(),
        );
        family(
            "metrolog_notification_delivery_seconds_sum",
            "counter",
            "From a delivery's creation to its acceptance, summed over accepted deliveries.",
            &|c| format!("{:.3}", c.latency_ms_sum as f64 / 1000.0),
        );
        family(
            "metrolog_notification_delivery_seconds_count",
            "counter",
            "Accepted deliveries the latency sum counts.",
            &|c| c.sent.to_string(),
        );
        let _ = writeln!(
            out,
            "# HELP metrolog_outbox_backlog Deliveries waiting to be sent or retried.\n# TYPE metrolog_outbox_backlog gauge\nmetrolog_outbox_backlog {}",
            self.backlog.get()
        );
    }
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
            "metrolog_ingest_batches_busy_total",
            "Agent batches refused with 503 because http.max_concurrent_batches were in flight.",
            &[("", self.batches_rejected_busy.get())],
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
                (
                    "{reason=\"out_of_order\"}",
                    self.buckets_rejected_order.get(),
                ),
            ],
        );
        counter(
            "metrolog_series_refused_total",
            "New series refused by a cap on series, by limit ([archives] max_series_per_host, max_series).",
            &[
                (
                    "{limit=\"per_host\"}",
                    self.series_refused_per_host.get(),
                ),
                ("{limit=\"total\"}", self.series_refused_total.get()),
            ],
        );
        counter(
            "metrolog_import_requests_total",
            "POST /api/v1/import requests committed.",
            &[("", self.import_requests.get())],
        );
        counter(
            "metrolog_import_samples_total",
            "Imported samples journaled for the archives.",
            &[("", self.import_samples.get())],
        );
        counter(
            "metrolog_import_rejected_samples_total",
            "Imported samples refused, by reason.",
            &[
                (
                    "{reason=\"out_of_order\"}",
                    self.import_rejected_order.get(),
                ),
                ("{reason=\"future\"}", self.import_rejected_future.get()),
            ],
        );
        counter(
            "metrolog_archive_flushes_total",
            "Flushes of completed archive rows from memory to the database, by result.",
            &[
                ("{result=\"ok\"}", self.archive_flushes.get()),
                ("{result=\"error\"}", self.archive_flush_failures.get()),
            ],
        );
        counter(
            "metrolog_archive_flushed_rows_total",
            "Archive rows written by flushes.",
            &[("", self.archive_flushed_rows.get())],
        );
        counter(
            "metrolog_archive_read_cache_requests_total",
            "Archive chunks a read wanted, by whether the decoded-chunk cache held them.",
            &[
                ("{result=\"hit\"}", self.archive_read_cache_hits.get()),
                ("{result=\"miss\"}", self.archive_read_cache_misses.get()),
            ],
        );
        counter(
            "metrolog_archive_corrupt_chunks_total",
            "Stored archive chunks that could not be decoded (their rows restart unknown).",
            &[("", self.archive_corrupt_chunks.get())],
        );
        counter(
            "metrolog_graphite_lines_total",
            "Graphite plaintext lines accepted.",
            &[("", self.graphite_lines.get())],
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
            "metrolog_storage_full_errors_total",
            "Requests refused with 503 because the database's disk was full.",
            &[("", self.storage_full_errors.get())],
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
            "metrolog_group_samples_total",
            "Samples recorded into groups' own aggregate series.",
            &[("", self.group_samples.get())],
        );
        counter(
            "metrolog_group_record_failures_total",
            "Rounds of group aggregates that could not be recorded.",
            &[("", self.group_record_failures.get())],
        );
        counter(
            "metrolog_groups_expired_total",
            "Groups removed with their series after their last member.",
            &[("", self.groups_expired.get())],
        );
        counter(
            "metrolog_group_series_expired_total",
            "Group series removed after no member fed them for hosts.expire_after.",
            &[("", self.group_series_expired.get())],
        );
        self.render_dropped(&mut counter);
        self.render_logs(&mut counter);
        self.render_alarms(&mut counter);
        let _ = writeln!(
            out,
            "# HELP metrolog_alarms_active Alarms not OK, by state.\n# TYPE metrolog_alarms_active gauge\nmetrolog_alarms_active{{state=\"warning\"}} {}\nmetrolog_alarms_active{{state=\"critical\"}} {}\nmetrolog_alarms_active{{state=\"unknown\"}} {}",
            self.alarms_warning.get(),
            self.alarms_critical.get(),
            self.alarms_unknown.get()
        );
        let _ = writeln!(
            out,
            "# HELP metrolog_alarm_evaluation_last_seconds Time the alarm evaluator spent on its last event.\n# TYPE metrolog_alarm_evaluation_last_seconds gauge\nmetrolog_alarm_evaluation_last_seconds {}",
            self.alarm_eval_last_us.get() as f64 / 1e6
        );
        self.alarm_eval_latency.render(
            &mut out,
            "metrolog_alarm_evaluation_latency_seconds",
            "From an event's commit (its publication on the event bus) to the commit of the alarm decisions it led to.",
        );
        let _ = writeln!(
            out,
            "# HELP metrolog_logs_index_lag_records Log records committed but not yet in the full-text index (q= searches miss them).\n# TYPE metrolog_logs_index_lag_records gauge\nmetrolog_logs_index_lag_records {}",
            self.logs_index_lag.get()
        );
        let _ = writeln!(
            out,
            "# HELP metrolog_archive_series Series whose archive state is in memory.\n# TYPE metrolog_archive_series gauge\nmetrolog_archive_series {}",
            self.archive_series.get()
        );
        let _ = writeln!(
            out,
            "# HELP metrolog_archive_pending_rows Completed archive rows waiting for the flusher.\n# TYPE metrolog_archive_pending_rows gauge\nmetrolog_archive_pending_rows {}",
            self.archive_pending_rows.get()
        );
        let _ = writeln!(
            out,
            "# HELP metrolog_archive_read_cache_bytes Decoded archive chunks held for repeated reads ([archives] read_cache).\n# TYPE metrolog_archive_read_cache_bytes gauge\nmetrolog_archive_read_cache_bytes {}",
            self.archive_read_cache_bytes.get()
        );
        let _ = writeln!(
            out,
            "# HELP metrolog_hosts Hosts by state.\n# TYPE metrolog_hosts gauge"
        );
        for (state, n) in hosts {
            let _ = writeln!(out, "metrolog_hosts{{state=\"{state}\"}} {n}");
        }
        self.notify.render(&mut out);
        self.render_scaling(&mut out);
        out
    }

    fn render_scaling(&self, out: &mut String) {
        use crate::scaling::hook::EventType;
        let _ = writeln!(
            out,
            "# HELP metrolog_scaling_events_total Scaling events stored (and handed to their hooks), by type.\n# TYPE metrolog_scaling_events_total counter"
        );
        for t in EventType::ALL {
            let _ = writeln!(
                out,
                "metrolog_scaling_events_total{{type=\"{}\"}} {}",
                t.as_str(),
                self.scaling.get(t)
            );
        }
        let _ = writeln!(
            out,
            "# HELP metrolog_scaling_commit_failures_total Scaling event commits that failed (retried).\n# TYPE metrolog_scaling_commit_failures_total counter\nmetrolog_scaling_commit_failures_total {}",
            self.scaling.commit_failures.get()
        );
        let _ = writeln!(
            out,
            "# HELP metrolog_scaling_resyncs_total Times the scaling runner fell behind the event bus.\n# TYPE metrolog_scaling_resyncs_total counter\nmetrolog_scaling_resyncs_total {}",
            self.scaling.resyncs.get()
        );
    }

    /// Every record dropped, or stored cut short, in one family: `kind` is
    /// what was lost (a metric sample, a log record, a check result),
    /// `source` where it came from, `reason` why. Alerting on
    /// `rate(metrolog_records_dropped_total[5m]) > 0` covers them all.
    fn render_dropped(&self, counter: &mut impl FnMut(&str, &str, &[(&str, u64)])) {
        counter(
            "metrolog_records_dropped_total",
            "Records dropped, by kind (metric sample, log record, check result), source and reason; \
             reason=\"truncated\": stored, cut to the size limit.",
            &[
                (
                    "{kind=\"metric\",source=\"agent\",reason=\"non_finite\"}",
                    self.buckets_rejected_non_finite.get(),
                ),
                (
                    "{kind=\"metric\",source=\"agent\",reason=\"time\"}",
                    self.buckets_rejected_time.get(),
                ),
                (
                    "{kind=\"metric\",source=\"agent\",reason=\"step\"}",
                    self.buckets_rejected_step.get(),
                ),
                (
                    "{kind=\"metric\",source=\"agent\",reason=\"out_of_order\"}",
                    self.buckets_rejected_order.get(),
                ),
                (
                    "{kind=\"metric\",source=\"import\",reason=\"out_of_order\"}",
                    self.import_rejected_order.get(),
                ),
                (
                    "{kind=\"metric\",source=\"import\",reason=\"future\"}",
                    self.import_rejected_future.get(),
                ),
                (
                    "{kind=\"metric\",source=\"graphite\",reason=\"too_long\"}",
                    self.graphite_dropped_long.get(),
                ),
                (
                    "{kind=\"metric\",source=\"graphite\",reason=\"malformed\"}",
                    self.graphite_dropped_malformed.get(),
                ),
                (
                    "{kind=\"metric\",source=\"graphite\",reason=\"out_of_order\"}",
                    self.graphite_dropped_order.get(),
                ),
                (
                    "{kind=\"metric\",source=\"graphite\",reason=\"store\"}",
                    self.graphite_dropped_store.get(),
                ),
                (
                    "{kind=\"metric\",source=\"group\",reason=\"out_of_order\"}",
                    self.group_samples_rejected_order.get(),
                ),
                (
                    "{kind=\"metric\",source=\"any\",reason=\"series_limit\"}",
                    self.series_refused_samples.get(),
                ),
                (
                    "{kind=\"log\",source=\"syslog\",reason=\"queue_full\"}",
                    self.syslog_dropped_queue_full.get(),
                ),
                (
                    "{kind=\"log\",source=\"syslog\",reason=\"write_error\"}",
                    self.syslog_dropped_write_error.get(),
                ),
                (
                    "{kind=\"log\",source=\"syslog\",reason=\"shutdown\"}",
                    self.syslog_dropped_shutdown.get(),
                ),
                (
                    "{kind=\"log\",source=\"syslog\",reason=\"truncated\"}",
                    self.syslog_truncated.get(),
                ),
                (
                    "{kind=\"check\",source=\"agent\",reason=\"invalid\"}",
                    self.check_results_rejected.get(),
                ),
                (
                    "{kind=\"check\",source=\"agent\",reason=\"truncated\"}",
                    self.check_outputs_truncated.get(),
                ),
            ],
        );
    }

    /// The central-logs counters.
    fn render_alarms(&self, counter: &mut impl FnMut(&str, &str, &[(&str, u64)])) {
        counter(
            "metrolog_check_results_total",
            "Check results stored, and refused (time out of range).",
            &[
                ("{outcome=\"stored\"}", self.check_results.get()),
                ("{outcome=\"rejected\"}", self.check_results_rejected.get()),
            ],
        );
        counter(
            "metrolog_alarm_evaluations_total",
            "Rule evaluations (one per rule and subject an event concerned).",
            &[("", self.alarm_evaluations.get())],
        );
        counter(
            "metrolog_alarm_transitions_total",
            "Alarm state transitions recorded.",
            &[("", self.alarm_transitions.get())],
        );
        counter(
            "metrolog_alarm_notices_total",
            "Alarm notices handed to the outbox, and withheld by a silence.",
            &[
                ("{outcome=\"queued\"}", self.alarm_notices.get()),
                ("{outcome=\"silenced\"}", self.alarm_notices_silenced.get()),
            ],
        );
        counter(
            "metrolog_alarm_evaluator_resyncs_total",
            "Times the alarm evaluator fell behind the event bus and re-read its windows from the store.",
            &[("", self.alarm_evaluator_resyncs.get())],
        );
        counter(
            "metrolog_alarm_series_limits_unreadable_total",
            "Series descriptions whose warning/critical could not be read as a range (limits = \"series\" rules judge those series by their own ranges).",
            &[("", self.alarm_series_limits_unreadable.get())],
        );
        counter(
            "metrolog_alarm_commit_failures_total",
            "Alarm transitions that could not be committed (retried at the next evaluation).",
            &[("", self.alarm_commit_failures.get())],
        );
    }

    fn render_logs(&self, counter: &mut impl FnMut(&str, &str, &[(&str, u64)])) {
        counter(
            "metrolog_syslog_received_total",
            "Syslog messages received and parsed, by transport.",
            &[
                ("{transport=\"udp\"}", self.syslog_received_udp.get()),
                ("{transport=\"tcp\"}", self.syslog_received_tcp.get()),
                ("{transport=\"tls\"}", self.syslog_received_tls.get()),
            ],
        );
        counter(
            "metrolog_syslog_tls_handshake_failures_total",
            "Syslog TLS connections closed before their handshake completed, by reason \
             (error: not TLS, no common protocol, refused certificate…; timeout).",
            &[
                ("{reason=\"error\"}", self.syslog_tls_handshake_failed.get()),
                (
                    "{reason=\"timeout\"}",
                    self.syslog_tls_handshake_timed_out.get(),
                ),
            ],
        );
        counter(
            "metrolog_syslog_stored_total",
            "Syslog messages committed to the database.",
            &[("", self.syslog_stored.get())],
        );
        counter(
            "metrolog_syslog_marked_total",
            "Syslog messages stored with a mark, by mark.",
            &[
                ("{mark=\"truncated\"}", self.syslog_truncated.get()),
                ("{mark=\"invalid_utf8\"}", self.syslog_invalid_utf8.get()),
                ("{mark=\"unparsed\"}", self.syslog_unparsed.get()),
            ],
        );
        counter(
            "metrolog_syslog_connections_total",
            "Syslog TCP connections, by event (open = accepted - closed).",
            &[
                (
                    "{event=\"accepted\"}",
                    self.syslog_connections_accepted.get(),
                ),
                ("{event=\"closed\"}", self.syslog_connections_closed.get()),
                ("{event=\"evicted\"}", self.syslog_connections_evicted.get()),
                (
                    "{event=\"idle_timeout\"}",
                    self.syslog_connections_idle_closed.get(),
                ),
                ("{event=\"accept_error\"}", self.syslog_accept_errors.get()),
            ],
        );
        counter(
            "metrolog_log_tail_streams_total",
            "Live-tail streams opened.",
            &[("", self.log_tail_streams.get())],
        );
        counter(
            "metrolog_log_tail_lagged_records_total",
            "Records live-tail clients missed because they read too slowly.",
            &[("", self.log_tail_lagged.get())],
        );
        counter(
            "metrolog_logs_pruned_total",
            "Log records deleted by retention, by reason.",
            &[
                ("{reason=\"age\"}", self.logs_pruned_age.get()),
                ("{reason=\"size\"}", self.logs_pruned_size.get()),
            ],
        );
    }
}

/// Lets a repeated log line through at most once per period, so that a
/// condition hit by every request (a full disk) is logged, not flooded.
#[derive(Debug)]
pub struct Every {
    period_ms: i64,
    last_ms: std::sync::atomic::AtomicI64,
}

impl Every {
    pub fn new(period: std::time::Duration) -> Self {
        Self {
            period_ms: period.as_millis() as i64,
            last_ms: std::sync::atomic::AtomicI64::new(i64::MIN / 2),
        }
    }

    /// Whether the period has passed since the last time this returned true.
    pub fn allow(&self) -> bool {
        use std::sync::atomic::Ordering;
        let now = chrono::Utc::now().timestamp_millis();
        let last = self.last_ms.load(Ordering::Relaxed);
        now - last >= self.period_ms
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn histogram_buckets_are_cumulative_and_inf_is_the_count() {
        let h = Histogram::default();
        for ms in [0, 1, 3, 40, 40, 2_000, 60_000] {
            h.observe(Duration::from_millis(ms));
        }
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "help");
        let value = |line: &str| -> f64 {
            out.lines()
                .find_map(|l| l.strip_prefix(line).and_then(|v| v.strip_prefix(' ')))
                .unwrap_or_else(|| panic!("no {line} in\n{out}"))
                .parse()
                .unwrap()
        };
        assert!(out.starts_with("# HELP x_seconds help\n# TYPE x_seconds histogram\n"));
        assert_eq!(
            value("x_seconds_bucket{le=\"0.001\"}"),
            2.0,
            "0 and 1 ms: le is inclusive"
        );
        assert_eq!(value("x_seconds_bucket{le=\"0.005\"}"), 3.0);
        assert_eq!(value("x_seconds_bucket{le=\"0.05\"}"), 5.0);
        assert_eq!(value("x_seconds_bucket{le=\"2.5\"}"), 6.0);
        assert_eq!(value("x_seconds_bucket{le=\"30\"}"), 6.0);
        assert_eq!(
            value("x_seconds_bucket{le=\"+Inf\"}"),
            7.0,
            "60 s is above every bound"
        );
        assert_eq!(value("x_seconds_count"), 7.0);
        assert_eq!(value("x_seconds_sum"), 62.084);
    }

    #[test]
    fn every_drop_counter_is_in_the_records_dropped_family() {
        let m = ServerMetrics::default();
        m.syslog_dropped_queue_full.add(3);
        m.check_outputs_truncated.inc();
        m.graphite_dropped_malformed.add(2);
        let text = m.render(&[]);
        for line in [
            "metrolog_records_dropped_total{kind=\"log\",source=\"syslog\",reason=\"queue_full\"} 3",
            "metrolog_records_dropped_total{kind=\"check\",source=\"agent\",reason=\"truncated\"} 1",
            "metrolog_records_dropped_total{kind=\"metric\",source=\"graphite\",reason=\"malformed\"} 2",
            "metrolog_records_dropped_total{kind=\"metric\",source=\"any\",reason=\"series_limit\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
        }
        assert_eq!(
            text.matches("# TYPE metrolog_records_dropped_total counter")
                .count(),
            1
        );
        assert!(text.contains("# TYPE metrolog_alarm_evaluation_latency_seconds histogram"));
    }
}
