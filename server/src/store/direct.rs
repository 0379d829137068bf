//! A pooled connection's SQLite handle driven directly, on one blocking
//! thread, for the statements that return thousands of rows and for the
//! transactions of many statements (ingest's commits).
//!
//! sqlx runs each connection on a worker thread of its own and hands every
//! statement, and every row of a result, between it and the calling task
//! through a channel: for a group query's 6 300 archive chunks that is
//! thousands of wake-ups between two threads (a context switch, a few
//! allocations each), which cost more than SQLite's own reading; for a group
//! commit of agent batches, about ten per batch. Here the connection is
//! locked out of its worker for the whole call (`lock_handle`, sqlx's API for
//! direct use) and the statements run through rusqlite on the calling
//! blocking thread: one hand-off per call instead of one per row or
//! statement.
//!
//! Both crates link the same `libsqlite3-sys` (one SQLite in the binary,
//! Cargo allows no other). The connection keeps everything sqlx set up
//! (WAL, busy timeout, attached log index); rusqlite borrows the handle and
//! never closes it.

use sqlx::SqlitePool;

use super::{Result, StoreError};

/// Runs `f` against a connection of `pool`, on the blocking pool.
#[allow(unsafe_code)] // borrowing the handle sqlx locked out for us; see SAFETY below
pub(super) async fn run<T, F>(pool: &SqlitePool, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
{
    let mut conn = pool.acquire().await?;
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let ran = (|| {
            let mut locked = rt.block_on(conn.lock_handle())?;
            let raw = locked.as_raw_handle();
            // SAFETY: the handle is locked out of sqlx's worker thread until
            // `locked` drops, after `db`; `from_handle` does not take
            // ownership, so dropping `db` finalizes its statements and leaves
            // the connection open for sqlx.
            let db = unsafe { rusqlite::Connection::from_handle(raw.as_ptr()) }.map_err(engine)?;
            // A group commit prepares 16 statements (`prepare_cached`), all
            // rusqlite's default cache holds: one more and they evict each
            // other in turn, batch after batch.
            db.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&db)));
            drop(db);
            drop(locked);
            Ok(out)
        })();
        match ran {
            Ok(Ok(Ok(v))) => Ok(v),
            failed => {
                // What failed may have left a transaction open or a setting
                // changed (`archive::write_slice`): the connection is
                // closed, never given back to the pool.
                drop(conn.detach());
                match failed {
                    Ok(Err(panic)) => std::panic::resume_unwind(panic),
                    Ok(Ok(Err(e))) => Err(engine(e)),
                    Err(e) => Err(e),
                    Ok(Ok(Ok(_))) => unreachable!("handled above"),
                }
            }
        }
    })
    .await
    .map_err(|e| StoreError::Invalid(format!("database task failed: {e}")))?
}

/// Statements kept prepared, for the length of one call (the rusqlite
/// connection, and its cache, live no longer).
const STATEMENT_CACHE: usize = 64;

/// The store's error for a failed direct statement: a full disk is a write
/// to retry, as for sqlx's errors; no SQLite code leaves the store.
pub(super) fn engine(e: rusqlite::Error) -> StoreError {
    let full = matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DiskFull));
    if full {
        StoreError::Retry {
            message: format!("database write failed: {e}"),
            disk_full: true,
        }
    } else {
        StoreError::Engine(e.to_string())
    }
}
