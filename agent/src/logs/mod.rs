//! Logs at the source (SPEC §8 "Logs"): files tailed by glob ([`tail`]), a
//! local syslog receiver ([`receiver`]), filters ([`filter`]), and the bounded
//! backlog that hands records to the sampler's batches and commits file
//! offsets once the server acknowledged them ([`backlog`]).
//!
//! Log records ship in the same batches as metrics, so they get the same
//! guarantees: a batch is acknowledged only once durably committed, and a
//! replayed batch is not stored twice. Offsets are saved only after the
//! acknowledgement: a restart resumes where the server's copy ends.

pub mod backlog;
pub mod filter;
pub mod receiver;
pub mod tail;

pub use backlog::LogBook;

use crate::config::{parse_utc_offset, LogsConfig};
use crate::ship::SettleListener;
use crate::state::StateDir;
use chrono::FixedOffset;
use metrolog_protocol::{BatchId, LogSettings};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Why logging could not start.
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    #[error("cannot listen on {what}: {source}")]
    Bind {
        what: String,
        source: std::io::Error,
    },
    #[error("invalid logs.filter pattern: {0}")]
    Filter(#[from] regex::Error),
    #[error("cannot start the log tailer thread: {0}")]
    Thread(std::io::Error),
}

impl SettleListener for LogBook {
    fn file_lines(&self, id: &BatchId) -> Vec<(u32, u32)> {
        self.file_ranges(id.seq)
    }

    fn spooled(&self, id: &BatchId, position: u64) {
        LogBook::spooled(self, id.seq, position);
    }

    fn settled(&self, id: &BatchId, delivered: bool) {
        LogBook::settled(self, id.seq, delivered);
    }

    fn counted(&self, records: u64, delivered: bool) {
        self.count(records, delivered);
    }
}

/// Everything that reads logs, running.
///
/// It always exists, even when nothing is configured locally, so that log
/// files the server pushes later can be tailed without a restart.
pub struct LogPipeline {
    pub book: Arc<LogBook>,
    /// The agent's own `[logs]`.
    local: LogsConfig,
    /// What is in force: `local` combined with the server's settings.
    current: LogsConfig,
    state: StateDir,
    filter: Arc<filter::FilterCell>,
    tail: Option<tail::TailThread>,
    receivers: Option<receiver::Receivers>,
}

/// The tailer's view of `[[logs.files]]` (validated beforehand).
fn file_specs(cfg: &LogsConfig) -> Vec<tail::FileSpec> {
    let utc = FixedOffset::east_opt(0).unwrap_or_else(|| unreachable!());
    cfg.files
        .iter()
        .map(|f| tail::FileSpec {
            pattern: f.path.clone(),
            app: f.app.clone(),
            zone: f
                .timezone
                .as_deref()
                .and_then(|z| parse_utc_offset(z).ok())
                .unwrap_or(utc),
        })
        .collect()
}

/// `local` with the server's log settings, or `local` alone (and an error
/// logged) when they are invalid: a bad push must not stop the agent's own
/// logs. The server validates them too, so this needs a server and an agent
/// that disagree on what is valid.
fn effective(local: &LogsConfig, pushed: Option<&LogSettings>) -> Option<LogsConfig> {
    let merged = local.with_pushed(pushed);
    let problems = merged.problems();
    if problems.is_empty() {
        Some(merged)
    } else {
        tracing::error!(
            "ignoring the log settings the server pushed, they are invalid here: {}",
            problems.to_string().replace('\n', "; ")
        );
        None
    }
}

impl LogPipeline {
    /// Starts what `local` (validated) and the server's last known log
    /// settings configure.
    pub async fn start(
        local: &LogsConfig,
        pushed: Option<&LogSettings>,
        state: &StateDir,
    ) -> Result<Self, LogsError> {
        let cfg = effective(local, pushed).unwrap_or_else(|| local.clone());
        let book = Arc::new(LogBook::new(cfg.max_backlog_bytes as usize));
        let filter = Arc::new(filter::FilterCell::new(filter::Filter::new(&cfg.filter)?));
        let mut p = Self {
            book,
            local: local.clone(),
            current: cfg.clone(),
            state: state.clone(),
            filter,
            tail: None,
            receivers: None,
        };
        if cfg.enabled() {
            p.book.stats.active.store(true, Ordering::Relaxed);
            let max_line = cfg.max_line_bytes as usize;
            p.receivers = Some(
                receiver::bind(&cfg.syslog, max_line, p.book.clone(), p.filter.clone()).await?,
            );
            if !cfg.files.is_empty() {
                p.spawn_tailer(&cfg)?;
            }
        }
        Ok(p)
    }

    fn spawn_tailer(&mut self, cfg: &LogsConfig) -> Result<(), LogsError> {
        let tailer = tail::Tailer::new(
            file_specs(cfg),
            cfg.max_line_bytes as usize,
            tail::offsets::OffsetStore::new(self.state.clone()),
            self.book.clone(),
            self.filter.clone(),
        );
        self.tail = Some(tail::spawn(tailer, cfg.poll_interval).map_err(LogsError::Thread)?);
        Ok(())
    }

    /// The configuration in force.
    pub fn current(&self) -> &LogsConfig {
        &self.current
    }

    /// Applies the server's (new) log settings. Returns whether anything
    /// changed: settings equal to those in force touch nothing.
    ///
    /// Nothing is restarted: the filter is swapped, and the tailer takes the
    /// new file list at its next poll, keeping the offsets of the files it
    /// still tails (see [`tail::Tailer::reconfigure`]), so no line is lost or
    /// read twice.
    pub fn reconfigure(&mut self, pushed: Option<&LogSettings>) -> bool {
        let Some(cfg) = effective(&self.local, pushed) else {
            return false;
        };
        if cfg == self.current {
            return false;
        }
        if cfg.filter != self.current.filter {
            match filter::Filter::new(&cfg.filter) {
                Ok(f) => self.filter.set(f),
                Err(e) => {
                    // Validated above; kept as a guard.
                    tracing::error!("cannot apply the server's log filter: {e}");
                    return false;
                }
            }
        }
        if cfg.files != self.current.files {
            match &self.tail {
                Some(t) => t.reconfigure(file_specs(&cfg)),
                None if !cfg.files.is_empty() => {
                    if let Err(e) = self.spawn_tailer(&cfg) {
                        tracing::error!("{e}; the server's log files are not tailed");
                        return false;
                    }
                }
                None => {}
            }
        }
        if cfg.enabled() {
            self.book.stats.active.store(true, Ordering::Relaxed);
        }
        let paths: Vec<&str> = cfg.files.iter().map(|f| f.path.as_str()).collect();
        tracing::info!(
            "log settings from the server applied: tailing {paths:?}, filter {}",
            if cfg.filter.is_set() { "set" } else { "none" }
        );
        self.current = cfg;
        true
    }

    /// Shutting down: stop reading and receiving, so the last batch holds
    /// everything that was read. Acknowledgements are still committed.
    pub async fn pause(&mut self) {
        if let Some(t) = &self.tail {
            t.pause();
        }
        if let Some(r) = self.receivers.take() {
            r.stop().await;
        }
    }

    /// After the last batch was shipped (or given up): saves the committed
    /// offsets and stops.
    pub async fn finish(mut self) {
        self.pause().await;
        if let Some(t) = self.tail.take() {
            let _ = tokio::task::spawn_blocking(move || t.stop()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrolog_protocol::{LogFileSettings, LogFilterSettings};
    use std::time::{Duration, Instant};

    fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn server_settings_start_tailing_and_equal_ones_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(&dir.path().join("state")).unwrap();
        std::fs::write(dir.path().join("a.log"), "healthcheck ok\nhello\n").unwrap();
        let local = LogsConfig {
            poll_interval: Duration::from_millis(20),
            ..LogsConfig::default()
        };
        let mut p = LogPipeline::start(&local, None, &state).await.unwrap();
        assert!(p.tail.is_none() && !p.book.stats.active.load(Ordering::Relaxed));

        let pushed = LogSettings {
            files: vec![LogFileSettings {
                path: format!("{}/*.log", dir.path().display()),
                app: Some("pushed".into()),
                timezone: None,
            }],
            filter: Some(LogFilterSettings {
                exclude: vec!["healthcheck".into()],
                ..Default::default()
            }),
        };
        assert!(p.reconfigure(Some(&pushed)));
        assert!(p.book.stats.active.load(Ordering::Relaxed));
        wait_for("the pushed file's line", || p.book.has_pending());
        let recs = p.book.take_batch(1);
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].message, "hello");
        assert_eq!(recs[0].app_name.as_deref(), Some("pushed"));
        assert_eq!(p.book.stats.filtered.load(Ordering::Relaxed), 1);

        assert!(
            !p.reconfigure(Some(&pushed)),
            "equal settings: nothing to do"
        );
        let invalid = LogSettings {
            files: vec![LogFileSettings {
                path: "relative/*.log".into(),
                ..Default::default()
            }],
            filter: None,
        };
        assert!(!p.reconfigure(Some(&invalid)), "invalid: kept as it was");
        assert_eq!(p.current().files.len(), 1);

        // The server stops pushing: the file is no longer read.
        assert!(p.reconfigure(None));
        assert!(p.current().files.is_empty());
        p.book.settled(1, true);
        std::thread::sleep(Duration::from_millis(100));
        std::fs::write(dir.path().join("a.log"), "healthcheck ok\nhello\nmore\n").unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert!(!p.book.has_pending(), "no longer tailed");
        p.finish().await;
    }
}
