//! WAL checkpoints off the writers' path.
//!
//! In WAL mode every commit appends pages to `<file>-wal`; a checkpoint copies
//! them back into the database file and fsyncs it. By default SQLite runs the
//! checkpoint inside the commit that takes the WAL past 1000 pages (4 MiB), on
//! the committing connection: with log batches of a few MiB that was nearly
//! every syslog commit, so the log writer (and the indexer, on its own file)
//! spent a large part of its time copying pages and waiting on fsync while
//! receivers queued up (docs/benchmarks.md, "Logs").
//!
//! Here each file gets a connection of its own that runs a PASSIVE checkpoint
//! every [`PERIOD`]: it never blocks writers or readers, and its work runs on
//! its own thread, on whichever core is idle. Committing connections keep an
//! automatic checkpoint only as a backstop, at [`BACKSTOP_PAGES`], so the WAL
//! stays bounded even if this task stalls or is not running (tools that open
//! the store briefly).

use super::{Result, StoreError};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, SqliteConnection};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often the WAL is copied back into the database file. At 40 MiB/s of
/// log ingest that is about 10 MiB of WAL per round.
pub const PERIOD: Duration = Duration::from_millis(250);

/// `wal_autocheckpoint` of the committing connections (pages of 4 KiB, so
/// 64 MiB): reached only when the background checkpoint falls far behind.
pub const BACKSTOP_PAGES: u32 = 16_384;

/// A background checkpoint task for one database file; stops on [`close`].
///
/// [`close`]: Checkpointer::close
#[derive(Debug)]
pub(super) struct Checkpointer {
    stop: watch::Sender<bool>,
    task: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Checkpointer {
    /// Opens a connection to the (existing, WAL-mode) file at `path` and
    /// starts checkpointing it. `name` names the connection's thread.
    pub(super) async fn start(path: &str, name: &'static str) -> Result<Self> {
        let conn = SqliteConnectOptions::new()
            .filename(path)
            .journal_mode(SqliteJournalMode::Wal)
            // The checkpoint fsyncs the WAL before copying and the database
            // file after: what a commit made durable stays durable.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(1))
            .thread_name(move |_| name.to_string())
            .connect()
            .await
            .map_err(|source| StoreError::Open {
                url: path.to_string(),
                source,
            })?;
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(conn, path.to_string(), stopped));
        Ok(Self {
            stop,
            task: std::sync::Mutex::new(Some(task)),
        })
    }

    /// Stops the task after its current round and closes its connection.
    pub(super) async fn close(&self) {
        let _ = self.stop.send(true);
        let task = self.task.lock().expect("checkpointer lock").take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

async fn run(mut conn: SqliteConnection, path: String, mut stop: watch::Receiver<bool>) {
    let warn = crate::telemetry::Every::new(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(PERIOD) => {}
            _ = stop.changed() => break,
        }
        if let Err(e) = checkpoint(&mut conn).await {
            // A full disk, an I/O error: the next round tries again, and the
            // committing connections' backstop keeps the WAL bounded.
            if warn.allow() {
                tracing::warn!(file = %path, error = %e, "background WAL checkpoint failed; retrying");
            }
        }
    }
    use sqlx::Connection;
    let _ = conn.close().await;
}

/// One PASSIVE checkpoint: copies every WAL frame no reader still needs.
async fn checkpoint(conn: &mut SqliteConnection) -> Result<()> {
    sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::store::Store;
    use chrono::Utc;
    use metrolog_protocol::syslog::parse;

    fn file_len(p: &std::path::Path) -> u64 {
        std::fs::metadata(p).map_or(0, |m| m.len())
    }

    #[tokio::test]
    async fn committed_pages_reach_the_database_file_without_a_checkpoint_by_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        let store = Store::open(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        let before = file_len(&db);
        // About 2 MiB of records once compressed (random hex: 4 bits a
        // character): far below the writers' own automatic checkpoint
        // (BACKSTOP_PAGES), so only the background task copies them into
        // the database file.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let recs: Vec<_> = (0..20_000)
            .map(|i| {
                let noise: String = (0..25)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        format!("{x:016x}")
                    })
                    .collect::<String>()[..200]
                    .to_string();
                let line = format!("<13>host app: record {i} {noise}");
                parse(line.as_bytes(), Utc::now(), 65536)
            })
            .collect();
        crate::store::insert_test_logs(&store, None, &recs).await;
        assert!(
            file_len(&db) < before + 1_000_000,
            "the commit itself checkpointed"
        );
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut ticks = tokio::time::interval(std::time::Duration::from_millis(50));
        while file_len(&db) < before + 1_500_000 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the background checkpoint never copied the WAL into {}",
                db.display()
            );
            ticks.tick().await;
        }
        store.close().await;
    }
}
