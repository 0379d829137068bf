//! What `/metrics` reads from the storage at scrape time: the size of each
//! database file with its write-ahead log, and the dead letters waiting for
//! an operator.

use super::{logs::index_path, sqlite_path, Result, Store};
use std::path::PathBuf;

/// A file of the embedded storage, by the `file` label `/metrics` gives it.
#[derive(Debug, Clone)]
pub struct StorageFile {
    /// `database`, `database-wal`, `logs-index`, `logs-index-wal`.
    pub label: &'static str,
    pub path: PathBuf,
}

/// The files of the SQLite database at `database_url` (none for another
/// backend).
pub fn storage_files(database_url: &str) -> Vec<StorageFile> {
    let Some(db) = sqlite_path(database_url) else {
        return Vec::new();
    };
    let index = index_path(&db);
    vec![
        StorageFile {
            label: "database",
            path: PathBuf::from(&db),
        },
        StorageFile {
            label: "database-wal",
            path: PathBuf::from(format!("{db}-wal")),
        },
        StorageFile {
            label: "logs-index",
            path: PathBuf::from(&index),
        },
        StorageFile {
            label: "logs-index-wal",
            path: PathBuf::from(format!("{index}-wal")),
        },
    ]
}

impl Store {
    /// Deliveries given up (dead letters) still in the outbox: they wait for
    /// an operator's retry or for retention.
    pub async fn dead_letters(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT count(*) FROM outbox WHERE state = 'dead'")
                .fetch_one(&self.pool)
                .await?,
        )
    }
}
