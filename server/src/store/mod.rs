//! The one storage interface of the server. All SQL lives in this module and in
//! `migrations/`; everything else calls typed methods.
//!
//! SQLite (WAL) is the embedded default. Writes go through one async mutex so
//! that transactions never fight over SQLite's single writer lock (a deferred
//! transaction that must upgrade fails with SQLITE_BUSY instead of waiting);
//! reads use the pool concurrently.

mod alarms;
pub mod archive;
mod auth;
pub mod backup;
mod catalog;
mod checkpoint;
mod checks;
mod direct;
mod groups;
mod hosts;
pub mod log_block;
pub mod log_search;
pub mod logs;
mod metrics;
mod migrate;
pub mod outbox;
mod scaling;
mod series_meta;
pub mod stats;
mod write_lock;

pub use alarms::{AlarmRow, SilenceRow, StoredRule, TransitionRow};
pub use archive::journal::Sample;
pub use archive::{Accepted, ArchiveStats, FlushOutcome, LoadOutcome};
pub use auth::{SessionRow, TokenListRow, TokenRow, UserListRow, UserRow};
pub use catalog::CatalogRow;
pub use checks::CheckRow;
pub use groups::GroupMembers;
pub use hosts::{HostFacts, HostFilter, HostRow, HostSource, HostState};
pub use metrics::{
    CommitOutcome, ImportOutcome, SeriesRefusals, SeriesRow, DEFAULT_MAX_SERIES,
    DEFAULT_MAX_SERIES_PER_HOST,
};
pub use outbox::{AttemptRow, DeliveryFilter, DeliveryRow, DeliveryView, Flush};
pub use scaling::{HookDelivery, Requeue, StoredPolicy};
pub use series_meta::{SeriesLimitsRow, SeriesMetaRow};
pub use write_lock::WriteLockStats;

use metrolog_protocol::rrd::RrdSpec;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;
use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot open database {url}: {source}")]
    Open { url: String, source: sqlx::Error },
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// A statement run directly on SQLite's handle failed (see `direct`).
    #[error("database error: {0}")]
    Engine(String),
    #[error("{0}")]
    Conflict(String),
    /// A write that failed as a whole and may succeed if sent again (the
    /// database's disk was full, an I/O error): nothing of it was stored.
    #[error("{message}")]
    Retry { message: String, disk_full: bool },
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Whether a connection coming back to the pool may be reused: not when it is
/// still inside a transaction. SQLite rolls a transaction back by itself on some
/// errors (a full disk, I/O errors) and leaves it open on others (a failed
/// COMMIT); a connection whose transaction outlived its use would hold the
/// database's write lock for good, and every later write would fail as
/// "database is locked". Such a connection is closed, which rolls it back.
///
/// sqlx counts the transactions it opened, so the usual release costs no
/// statement: asking SQLite (`BEGIN` then `ROLLBACK`) on every release was two
/// round trips to the connection's thread for every query run on the pool.
/// SQLite is asked only when sqlx's count is up: a transaction dropped without
/// COMMIT (its ROLLBACK is queued before our `BEGIN`), or a failed COMMIT.
/// Transactions opened with SQL text outside sqlx (`direct`) close their
/// connection themselves when they fail.
async fn left_in_transaction(
    conn: &mut sqlx::SqliteConnection,
) -> std::result::Result<bool, sqlx::Error> {
    use sqlx::Connection as _;
    if !conn.is_in_transaction() {
        return Ok(true);
    }
    // BEGIN fails only inside a transaction (no lock is taken by a deferred BEGIN).
    match sqlx::query("BEGIN").execute(&mut *conn).await {
        Ok(_) => {
            sqlx::query("ROLLBACK").execute(&mut *conn).await?;
            Ok(true)
        }
        Err(e) => {
            tracing::warn!(error = %e, "closing a database connection left inside a transaction");
            Ok(false)
        }
    }
}

impl StoreError {
    /// The database could not grow: the disk (or its quota) is full. Nothing of
    /// the failed transaction was stored; the same write may succeed later.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::Retry { disk_full, .. } => *disk_full,
            // SQLITE_FULL; SQLITE_IOERR_WRITE and friends carry ENOSPC as an I/O error.
            StoreError::Db(sqlx::Error::Database(e)) => {
                e.code().as_deref() == Some("13")
                    || e.message().contains("database or disk is full")
            }
            StoreError::Db(sqlx::Error::Io(e)) => e.raw_os_error() == Some(28),
            _ => false,
        }
    }
}

/// Handle to the database plus the hot state kept in front of it.
#[derive(Debug)]
pub struct Store {
    pool: SqlitePool,
    /// The one writer at a time, measured (see [`write_lock`]).
    write: write_lock::WriteLock,
    /// (host id, name, canonical labels) → series id, so a steady stream of
    /// batches does not look series up again. Bounded by `SERIES_CACHE_MAX`.
    /// This, `archives` and `series_limits` are shared with the commits that
    /// run on SQLite's thread (`metrics::CommitParts`).
    series_ids: Arc<Mutex<HashMap<metrics::SeriesIdKey, i64>>>,
    /// Hot state of the round-robin archives (see [`archive`]).
    archives: Arc<Mutex<archive::ArchiveCache>>,
    /// Decoded chunks kept for the next read (see [`archive::chunk_cache`]).
    /// Taken after `archives` when both are held.
    chunk_cache: Mutex<archive::chunk_cache::ChunkCache>,
    /// Held shared by archive reads, exclusively by a flush commit.
    flush_gate: tokio::sync::RwLock<()>,
    /// One archive flush at a time (it reads chunks outside the write lock).
    flush_lock: tokio::sync::Mutex<()>,
    /// What loading the archives found at open.
    loaded: LoadOutcome,
    /// Agent batches waiting for the next group commit (see `commit_batch`).
    pending: Mutex<Vec<metrics::PendingBatch>>,
    /// The full-text index of log messages, in its own file.
    log_index: logs::LogIndex,
    /// Background WAL checkpoints of the database and of the index file.
    checkpointers: [checkpoint::Checkpointer; 2],
    /// Where every commit is published once it is durable (see `events`).
    bus: crate::events::Bus,
    /// Caps on the number of series, and what they refused.
    series_limits: Arc<metrics::SeriesLimits>,
}

const SERIES_CACHE_MAX: usize = 1_000_000;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

impl Store {
    /// Opens (creating if needed) the database at `url` and applies migrations; new
    /// series get the default archive ladder.
    pub async fn open(url: &str) -> Result<Self> {
        Self::open_with(url, RrdSpec::default_ladder()).await
    }

    /// As [`Store::open`], new series getting the archives of `spec`. Loads every
    /// series' archive state and replays the journal, so what was acknowledged
    /// before a crash is there.
    pub async fn open_with(url: &str, spec: RrdSpec) -> Result<Self> {
        spec.validate()
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        sqlite_process_config();
        if let Some(path) = sqlite_path(url) {
            if let Some(dir) = Path::new(&path)
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
            {
                std::fs::create_dir_all(dir).map_err(|source| StoreError::DataDir {
                    path: dir.display().to_string(),
                    source,
                })?;
            }
        }
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|source| StoreError::Open {
                url: url.to_string(),
                source,
            })?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a 2xx to an agent means the batch survives power loss, not
            // only a crash. Batching keeps the fsync count low.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            .pragma("temp_store", "memory")
            .pragma("cache_size", "-32000")
            // Checkpoints run in the background (see `checkpoint`); this is
            // the backstop.
            .pragma("wal_autocheckpoint", checkpoint::BACKSTOP_PAGES.to_string());
        // The full-text index of log messages is a file of its own, written
        // by its own connection; every pooled connection attaches it as
        // `logidx` for searches (see `logs::LogIndex`).
        let db_path = sqlite_path(url).ok_or_else(|| {
            StoreError::Invalid(format!(
                "database {url} is not a file; the log index needs one beside it"
            ))
        })?;
        let index_file = logs::index_path(&db_path);
        let log_index = logs::LogIndex::create(&index_file).await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .after_release(|conn, _| Box::pin(left_in_transaction(conn)))
            .after_connect(move |conn, _| {
                let index_file = index_file.clone();
                Box::pin(async move {
                    sqlx::query("ATTACH DATABASE ? AS logidx")
                        .bind(index_file)
                        .execute(conn)
                        .await?;
                    Ok(())
                })
            })
            .connect_with(opts)
            .await
            .map_err(|source| StoreError::Open {
                url: url.to_string(),
                source,
            })?;
        migrate::check_level(&pool, &MIGRATOR, &db_path).await?;
        MIGRATOR.run(&pool).await?;
        logs::convert_row_logs(&pool).await?;
        log_index.attach(&db_path).await?;
        let checkpointers = [
            checkpoint::Checkpointer::start(&db_path, "db-checkpoint").await?,
            checkpoint::Checkpointer::start(log_index.path(), "logs-fts-checkpoint").await?,
        ];
        let mut cache = archive::ArchiveCache::new(spec);
        let loaded = Self::load_archives(&pool, &mut cache).await?;
        if loaded.journal_rows > 0 {
            tracing::info!(
                series = loaded.series,
                journal_rows = loaded.journal_rows,
                samples = loaded.replayed_samples,
                "archives: replayed the journal"
            );
        }
        Ok(Self {
            pool,
            write: write_lock::WriteLock::new(),
            series_ids: Arc::new(Mutex::new(HashMap::new())),
            archives: Arc::new(Mutex::new(cache)),
            chunk_cache: Mutex::new(archive::chunk_cache::ChunkCache::new(
                archive::DEFAULT_READ_CACHE as usize,
            )),
            flush_gate: tokio::sync::RwLock::new(()),
            flush_lock: tokio::sync::Mutex::new(()),
            loaded,
            pending: Mutex::new(Vec::new()),
            log_index,
            checkpointers,
            bus: crate::events::Bus::new(),
            series_limits: Arc::default(),
        })
    }

    /// Waits and holds of the writer lock since the store opened.
    pub fn write_lock_stats(&self) -> WriteLockStats {
        self.write.stats()
    }

    /// The event path every commit of this store publishes to.
    pub fn bus(&self) -> &crate::events::Bus {
        &self.bus
    }

    /// What loading the archives found at open.
    pub fn loaded(&self) -> LoadOutcome {
        self.loaded
    }

    /// Moves the WAL into the database file and truncates it (benchmarks and tools
    /// that measure the files).
    pub async fn checkpoint(&self) -> Result<()> {
        let _w = self.write.lock().await;
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Size of the database file(s) on disk in bytes: pages in use × page size.
    pub async fn database_bytes(&self) -> Result<u64> {
        let (count, size): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT page_count FROM pragma_page_count()) - (SELECT freelist_count FROM pragma_freelist_count()), (SELECT page_size FROM pragma_page_size())",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((count.max(0) as u64) * (size.max(0) as u64))
    }

    /// `SELECT 1`: used by `/readyz`.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        for c in &self.checkpointers {
            c.close().await;
        }
        self.log_index.close().await;
        self.pool.close().await;
    }
}

fn sqlite_path(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:").then(|| path.to_string())
}

/// Unix seconds now.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[cfg(test)]
pub(crate) async fn temp_store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    (Store::open(&url).await.unwrap(), dir)
}

/// An agent host named `hostname`, enrolled without instance id, group or
/// labels (tests); returns its id.
#[cfg(test)]
pub(crate) async fn test_host(store: &Store, hostname: &str) -> i64 {
    let facts = HostFacts {
        hostname: hostname.into(),
        instance_id: None,
        group: None,
        labels: metrolog_protocol::Labels::new(),
        agent_version: None,
    };
    store.upsert_host(&facts, HostSource::Agent).await.unwrap()
}

/// Stores `recs` as syslog records of `host_id` (tests); returns their ids.
#[cfg(test)]
pub(crate) async fn insert_test_logs(
    store: &Store,
    host_id: Option<i64>,
    recs: &[metrolog_protocol::syslog::LogRecord],
) -> Vec<i64> {
    let rows: Vec<logs::NewLog<'_>> = recs
        .iter()
        .map(|record| logs::NewLog {
            host_id,
            record,
            source: metrolog_protocol::syslog::LogSource::SyslogTcp,
        })
        .collect();
    store.insert_logs(&rows, &[]).await.unwrap()
}

/// Process-wide SQLite settings, applied once before the first connection
/// (SQLite accepts them only before it initialises).
///
/// Memory statistics off: with them on, every allocation SQLite makes takes
/// one process-wide mutex to count it, which the log writer's and the
/// indexer's threads then contend for (futex calls in both, measured with
/// `perf`; docs/benchmarks.md "Logs"). Nothing reads those statistics.
#[allow(unsafe_code)] // an FFI call sqlx does not offer; see SAFETY below
fn sqlite_process_config() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: `sqlite3_config` is safe to call before `sqlite3_initialize`
        // and from one thread (`Once`); after initialisation (a connection
        // opened elsewhere first) it only returns SQLITE_MISUSE, changing
        // nothing, which is accepted: statistics then stay on.
        let rc = unsafe {
            libsqlite3_sys::sqlite3_config(
                libsqlite3_sys::SQLITE_CONFIG_MEMSTATUS,
                0 as std::ffi::c_int,
            )
        };
        if rc != libsqlite3_sys::SQLITE_OK {
            tracing::debug!(
                rc,
                "SQLite was initialised already; memory statistics stay on"
            );
        }
    });
}

#[cfg(test)]
mod process_config_tests {
    #[tokio::test]
    #[allow(unsafe_code)] // reads SQLite's allocation counter through FFI
    async fn sqlite_does_not_count_its_allocations_under_a_global_mutex() {
        let (store, _dir) = super::temp_store().await;
        store.ping().await.unwrap();
        // SAFETY: a plain read of a counter, valid at any time.
        let used = unsafe { libsqlite3_sys::sqlite3_memory_used() };
        // With statistics on, the open connections alone hold megabytes.
        assert_eq!(used, 0, "SQLite memory statistics are still on");
    }
}
