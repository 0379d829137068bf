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
use metrolog_protocol::BatchId;
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
    fn settled(&self, id: &BatchId, delivered: bool) {
        LogBook::settled(self, id.seq, delivered);
    }
}

/// Everything that reads logs, running.
pub struct LogPipeline {
    pub book: Arc<LogBook>,
    tail: Option<tail::TailThread>,
    receivers: Option<receiver::Receivers>,
}

impl LogPipeline {
    /// Starts what `cfg` configures; `None` when it configures nothing.
    pub async fn start(cfg: &LogsConfig, state: &StateDir) -> Result<Option<Self>, LogsError> {
        if !cfg.enabled() {
            return Ok(None);
        }
        let book = Arc::new(LogBook::new(cfg.max_backlog_bytes as usize));
        let filter = Arc::new(filter::Filter::new(&cfg.filter)?);
        let max_line = cfg.max_line_bytes as usize;
        let receivers = receiver::bind(&cfg.syslog, max_line, book.clone(), filter.clone()).await?;
        let tail = if cfg.files.is_empty() {
            None
        } else {
            let utc = FixedOffset::east_opt(0).unwrap_or_else(|| unreachable!());
            let specs = cfg
                .files
                .iter()
                .map(|f| tail::FileSpec {
                    pattern: f.path.clone(),
                    app: f.app.clone(),
                    // Validated with the configuration.
                    zone: f
                        .timezone
                        .as_deref()
                        .and_then(|z| parse_utc_offset(z).ok())
                        .unwrap_or(utc),
                })
                .collect();
            let tailer = tail::Tailer::new(
                specs,
                max_line,
                tail::offsets::OffsetStore::new(state.clone()),
                book.clone(),
                filter,
            );
            Some(tail::spawn(tailer, cfg.poll_interval).map_err(LogsError::Thread)?)
        };
        Ok(Some(Self {
            book,
            tail,
            receivers: Some(receivers),
        }))
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
