//! Central logs on the server side: the writer that stores received syslog
//! records in bulk, the live feed behind the log stream, the search syntax,
//! and retention. The receivers themselves are in [`crate::syslog`]; the SQL
//! in [`crate::store::logs`].

pub mod feed;
pub mod indexer;
pub mod retention;
pub mod writer;

/// The search syntax lives with the queries that run it.
pub use crate::store::log_search as search;

use crate::config::ServerConfig;
use crate::store::Store;
use crate::syslog::Listeners;
use crate::telemetry::ServerMetrics;
use feed::LogFeed;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The running log pipeline: receivers → writer → store and feed, the
/// full-text indexer following the store, plus retention.
#[derive(Debug)]
pub struct Pipeline {
    receivers: Vec<JoinHandle<()>>,
    writer: JoinHandle<()>,
    indexer: JoinHandle<()>,
    retention: JoinHandle<()>,
}

impl Pipeline {
    /// Starts the receivers on their bound sockets, the writer, the indexer
    /// and retention.
    /// Everything stops when `stop` turns true.
    pub fn start(
        listeners: Listeners,
        store: Arc<Store>,
        feed: LogFeed,
        config: &ServerConfig,
        metrics: Arc<ServerMetrics>,
        stop: watch::Receiver<bool>,
    ) -> Self {
        let (sink, writer) = writer::spawn(store.clone(), feed, metrics.clone());
        // The sink moves into the receivers: when they stop, the writer sees
        // the channel close, commits what is left and ends.
        let receivers = listeners.spawn(sink, metrics.clone(), stop.clone());
        let indexer = tokio::spawn(indexer::run(store.clone(), metrics.clone(), stop.clone()));
        let retention = tokio::spawn(retention::run(
            store,
            config.retention.clone(),
            metrics,
            stop,
        ));
        Self {
            receivers,
            writer,
            indexer,
            retention,
        }
    }

    /// Waits for the receivers to stop and the writer to commit what they
    /// handed it (call after `stop` turned true).
    pub async fn finish(self) {
        for r in self.receivers {
            let _ = r.await;
        }
        let _ = self.writer.await;
        let _ = self.indexer.await;
        let _ = self.retention.await;
    }
}
