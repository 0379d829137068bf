//! `metrolog-server backup DIR`: consistent copies of a running server's two
//! SQLite files (the database and the log search index beside it), taken
//! with `VACUUM INTO` from a connection of their own. In WAL mode that is a
//! read transaction: the server goes on writing meanwhile, and each copy is
//! the file as of one instant, compacted.
//!
//! The index is copied first. It follows the database by record id, so a copy
//! of it never claims records the database copy lacks; records the database
//! copy has beyond it are indexed after a restore, when the server starts.
//! Restoring is copying both files back into an empty data directory
//! (docs/backup.md).

use super::{logs::index_path, sqlite_path, StoreError};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One file copied.
#[derive(Debug, Clone)]
pub struct Copied {
    pub from: PathBuf,
    pub to: PathBuf,
    pub bytes: u64,
}

/// Copies the database of `database_url` and its log index into `dir`
/// (created if needed; files already there are not overwritten). Returns
/// what was written, index first.
pub async fn backup(database_url: &str, dir: &Path) -> Result<Vec<Copied>, StoreError> {
    let db = sqlite_path(database_url).ok_or_else(|| {
        StoreError::Invalid(format!(
            "database {database_url} is not a SQLite file; back a PostgreSQL database up with pg_dump"
        ))
    })?;
    let db = PathBuf::from(db);
    let index = PathBuf::from(index_path(&db.to_string_lossy()));
    if !db.is_file() {
        return Err(StoreError::Invalid(format!(
            "no database at {}: give the server's --data-dir or --database-url",
            db.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|source| StoreError::DataDir {
        path: dir.display().to_string(),
        source,
    })?;
    let mut plan = Vec::new();
    if index.is_file() {
        plan.push(index);
    }
    plan.push(db);
    for from in &plan {
        let to = dir.join(from.file_name().unwrap_or_default());
        if to.exists() {
            return Err(StoreError::Invalid(format!(
                "{} already exists: back up into an empty directory",
                to.display()
            )));
        }
    }
    let mut out = Vec::new();
    for from in plan {
        let to = dir.join(from.file_name().unwrap_or_default());
        let mut conn = SqliteConnectOptions::new()
            .filename(&from)
            .read_only(true)
            .busy_timeout(Duration::from_secs(30))
            .connect()
            .await?;
        sqlx::query("VACUUM INTO ?")
            .bind(to.to_string_lossy().into_owned())
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        // The copy must open and pass SQLite's own check.
        let mut copy = SqliteConnectOptions::new()
            .filename(&to)
            .read_only(true)
            .connect()
            .await?;
        let check: String = sqlx::query_scalar("PRAGMA quick_check")
            .fetch_one(&mut copy)
            .await?;
        copy.close().await?;
        if check != "ok" {
            return Err(StoreError::Invalid(format!(
                "the copy {} fails SQLite's quick_check: {check}",
                to.display()
            )));
        }
        let bytes = std::fs::metadata(&to).map(|m| m.len()).unwrap_or(0);
        out.push(Copied { from, to, bytes });
    }
    Ok(out)
}
