//! Log records: bulk insert (agent batches and the syslog writer), the
//! filtered newest-first listing behind `/api/v1/logs`, syslog-only hosts,
//! chunked retention, and the full-text index that follows the records from
//! a file of its own. Schema and the reasons for its indexes:
//! `migrations/0002_logs.sql`; the zone map behind time-range filters:
//! `migrations/0004_log_zones.sql`; why the full-text index has its own file:
//! `migrations/0007_log_index_file.sql` and [`LogIndex`].

use super::log_search::Search;
use super::{now, Result, Store, StoreError};
use metrolog_protocol::syslog::{Facility, LogRecord, LogSource, Severity};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteRow, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, QueryBuilder, Row, Sqlite, SqliteConnection};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

/// Rows per multi-row INSERT (13 parameters each, well under SQLite's 32766).
const INSERT_CHUNK: usize = 1000;

/// A zone of `log_zones` covers the ids `block << ZONE_SHIFT` and the
/// following `1 << ZONE_SHIFT - 1` (see migrations/0004_log_zones.sql).
const ZONE_SHIFT: u32 = 12;
/// Most separate id ranges one time-filtered listing queries; closer ranges
/// are merged beyond that (scanning a gap costs less than many queries).
const MAX_ZONE_RANGES: usize = 16;
/// A record whose source time is further than this from its receive time
/// (µs) is late: listed in `log_late` rather than widening its block's zone
/// (migrations/0013_log_late.sql).
pub const LATE_US: i64 = 5 * 60 * 1_000_000;

/// Whether `r` goes to `log_late` rather than into its block's zone.
fn is_late(r: &LogRecord) -> bool {
    r.ts.abs_diff(r.received_at) > LATE_US as u64
}

/// Flag bits of the `flags` column.
pub const FLAG_TRUNCATED: i64 = 1;
pub const FLAG_INVALID_UTF8: i64 = 2;
pub const FLAG_UNPARSED: i64 = 4;

/// What a record counts for against `retention.logs.max_bytes`: its text plus
/// a fixed allowance for the row, its index entries and its full-text
/// postings. Kept equal to [`ROW_BYTES_SQL`].
pub const ROW_OVERHEAD_BYTES: i64 = 96;
const ROW_BYTES_SQL: &str = "(length(CAST(message AS BLOB)) + coalesce(length(CAST(structured_data AS BLOB)), 0) + coalesce(length(CAST(app_name AS BLOB)), 0) + coalesce(length(CAST(hostname AS BLOB)), 0) + 96)";

pub fn record_bytes(r: &LogRecord) -> i64 {
    (r.message.len()
        + r.structured_data.as_ref().map_or(0, String::len)
        + r.app_name.as_ref().map_or(0, String::len)
        + r.hostname.as_ref().map_or(0, String::len)) as i64
        + ROW_OVERHEAD_BYTES
}

pub fn flags_of(r: &LogRecord) -> i64 {
    (r.truncated as i64 * FLAG_TRUNCATED)
        | (r.invalid_utf8 as i64 * FLAG_INVALID_UTF8)
        | (r.unparsed as i64 * FLAG_UNPARSED)
}

/// One record to store, with the host it was resolved to.
#[derive(Debug, Clone, Copy)]
pub struct NewLog<'a> {
    pub host_id: Option<i64>,
    pub record: &'a LogRecord,
    pub source: LogSource,
}

/// Inserts records inside the caller's transaction, so that an agent batch's
/// logs commit together with its metrics and its batch id.
pub(super) async fn insert_tx(
    conn: &mut SqliteConnection,
    host_id: Option<i64>,
    records: &[LogRecord],
    source: LogSource,
) -> Result<()> {
    let rows: Vec<NewLog<'_>> = records
        .iter()
        .map(|record| NewLog {
            host_id,
            record,
            source,
        })
        .collect();
    insert_rows(conn, &rows).await?;
    Ok(())
}

/// The multi-row INSERT of `chunk`.
fn insert_statement<'a>(chunk: &'a [NewLog<'a>]) -> QueryBuilder<'a, Sqlite> {
    let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
        "INSERT INTO logs (host_id, ts, received_at, hostname, facility, severity, app_name, procid, msgid, message, structured_data, flags, source) ",
    );
    // Text is bound as `&str`, which sqlx borrows; `&String` it would copy.
    q.push_values(chunk, |mut b, row| {
        let r = row.record;
        b.push_bind(row.host_id)
            .push_bind(r.ts)
            .push_bind(r.received_at)
            .push_bind(r.hostname.as_deref())
            .push_bind(r.facility.map(|f| f.as_u8() as i64))
            .push_bind(r.severity.map(|s| s.as_u8() as i64))
            .push_bind(r.app_name.as_deref())
            .push_bind(r.procid.as_deref())
            .push_bind(r.msgid.as_deref())
            .push_bind(r.message.as_str())
            .push_bind(r.structured_data.as_deref())
            .push_bind(flags_of(r))
            .push_bind(row.source.as_str());
    });
    q
}

/// Inserts `rows` in order and returns their ids, in the same order.
async fn insert_rows(conn: &mut SqliteConnection, rows: &[NewLog<'_>]) -> Result<Vec<i64>> {
    let mut ids = Vec::with_capacity(rows.len());
    let Some(first) = rows.first() else {
        return Ok(ids);
    };
    // New records are numbered above every id the full-text index may
    // already have claimed (see `LogIndex`): SQLite numbers a row max(id) + 1,
    // which goes back below the index's position once the newest records
    // were deleted (their host removed, retention emptied the table). The
    // first row is then numbered explicitly, the others follow it.
    let (max_id, claimed): (i64, i64) = sqlx::query_as(
        "SELECT coalesce((SELECT max(id) FROM logs), 0), coalesce((SELECT claimed FROM logidx.logs_fts_state), 0)",
    )
    .fetch_one(&mut *conn)
    .await?;
    let mut rest = rows;
    if max_id < claimed {
        let r = first.record;
        sqlx::query(
            "INSERT INTO logs (id, host_id, ts, received_at, hostname, facility, severity, app_name, procid, msgid, message, structured_data, flags, source)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(claimed + 1)
        .bind(first.host_id)
        .bind(r.ts)
        .bind(r.received_at)
        .bind(r.hostname.as_deref())
        .bind(r.facility.map(|f| f.as_u8() as i64))
        .bind(r.severity.map(|s| s.as_u8() as i64))
        .bind(r.app_name.as_deref())
        .bind(r.procid.as_deref())
        .bind(r.msgid.as_deref())
        .bind(r.message.as_str())
        .bind(r.structured_data.as_deref())
        .bind(flags_of(r))
        .bind(first.source.as_str())
        .execute(&mut *conn)
        .await?;
        ids.push(claimed + 1);
        rest = &rows[1..];
    }
    let mut chunks = rest.chunks(INSERT_CHUNK);
    let mut current = chunks.next().map(|c| (c.len(), insert_statement(c)));
    while let Some((n, mut q)) = current.take() {
        // SQLite runs a statement on sqlx's worker thread: the arguments of
        // the next chunk are encoded here meanwhile (`join!` polls the
        // execute first, which hands the statement over), not after it.
        let (done, next) = tokio::join!(q.build().execute(&mut *conn), async {
            chunks.next().map(|c| (c.len(), insert_statement(c)))
        });
        // `id` is a plain INTEGER PRIMARY KEY and we hold SQLite's only write
        // lock: the rows of one INSERT get consecutive ids ending at the last.
        let last = done?.last_insert_rowid();
        ids.extend(last - n as i64 + 1..=last);
        current = next;
    }
    // The full-text index is not written here: the indexer follows the
    // committed ids on its own connection and file (`LogIndex`).
    let late: Vec<(i64, i64)> = ids
        .iter()
        .zip(rows)
        .filter(|(_, row)| is_late(row.record))
        .map(|(id, row)| (*id, row.record.ts))
        .collect();
    for chunk in late.chunks(INSERT_CHUNK) {
        let mut q: QueryBuilder<Sqlite> =
            QueryBuilder::new("INSERT OR REPLACE INTO log_late (id, ts) ");
        q.push_values(chunk, |mut b, (id, ts)| {
            b.push_bind(*id).push_bind(*ts);
        });
        q.build().execute(&mut *conn).await?;
    }
    let zones = zones_of(&ids, rows);
    for chunk in zones.chunks(INSERT_CHUNK) {
        let mut q: QueryBuilder<Sqlite> =
            QueryBuilder::new("INSERT INTO log_zones (block, min_ts, max_ts) ");
        q.push_values(chunk, |mut b, (block, lo, hi)| {
            b.push_bind(*block).push_bind(*lo).push_bind(*hi);
        });
        q.push(
            " ON CONFLICT (block) DO UPDATE SET min_ts = min(min_ts, excluded.min_ts), max_ts = max(max_ts, excluded.max_ts)",
        );
        q.build().execute(&mut *conn).await?;
    }
    Ok(ids)
}

/// (block, smallest ts, largest ts) of the blocks `ids` fall in, late
/// records left out (they are in `log_late`); `ids` ascend.
fn zones_of(ids: &[i64], rows: &[NewLog<'_>]) -> Vec<(i64, i64, i64)> {
    let mut out: Vec<(i64, i64, i64)> = Vec::new();
    for (id, row) in ids.iter().zip(rows) {
        if is_late(row.record) {
            continue;
        }
        let (block, ts) = (id >> ZONE_SHIFT, row.record.ts);
        match out.last_mut() {
            Some(z) if z.0 == block => {
                z.1 = z.1.min(ts);
                z.2 = z.2.max(ts);
            }
            _ => out.push((block, ts, ts)),
        }
    }
    out
}

/// Inclusive id ranges, newest first, covering the blocks (descending) a
/// time-filtered listing must scan; at most [`MAX_ZONE_RANGES`], by merging
/// the ranges separated by the smallest gaps.
fn id_ranges(blocks: &[i64]) -> Vec<(i64, i64)> {
    // (first block, last block) of runs of consecutive blocks, newest first.
    let mut runs: Vec<(i64, i64)> = Vec::new();
    for &b in blocks {
        match runs.last_mut() {
            Some(r) if r.0 == b + 1 => r.0 = b,
            _ => runs.push((b, b)),
        }
    }
    if runs.len() > MAX_ZONE_RANGES {
        // Keep the MAX_ZONE_RANGES - 1 widest gaps, fill the others.
        let mut gaps: Vec<i64> = runs.windows(2).map(|w| w[0].0 - w[1].1).collect();
        gaps.sort_unstable_by(|a, b| b.cmp(a));
        let keep = gaps[MAX_ZONE_RANGES - 2];
        let mut merged: Vec<(i64, i64)> = Vec::new();
        let mut kept = 0;
        for r in runs {
            match merged.last_mut() {
                Some(m)
                    if m.0 - r.1 < keep || (m.0 - r.1 == keep && kept >= MAX_ZONE_RANGES - 1) =>
                {
                    m.0 = r.0
                }
                Some(_) => {
                    kept += 1;
                    merged.push(r);
                }
                None => merged.push(r),
            }
        }
        runs = merged;
    }
    runs.into_iter()
        .map(|(lo, hi)| (lo << ZONE_SHIFT, ((hi + 1) << ZONE_SHIFT) - 1))
        .collect()
}

/// Which records one listing query looks at.
#[derive(Debug, Clone, Copy)]
enum Scope {
    All,
    /// An inclusive id range (blocks of the zone map).
    Ids((i64, i64)),
    /// The late records (`log_late`) whose source time is in the range.
    Late,
}

/// What the listing may filter on. Times are unix microseconds.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    /// `None`: every host; `Some(empty)`: none.
    pub host_ids: Option<Vec<i64>>,
    pub app: Option<String>,
    /// Least severe level to include (records without one count as notice).
    pub severity: Option<Severity>,
    pub search: Option<Search>,
    /// Inclusive lower bound on `ts`.
    pub from: Option<i64>,
    /// Exclusive upper bound on `ts`.
    pub to: Option<i64>,
    /// Only records with a smaller id (the page cursor).
    pub before: Option<i64>,
    pub limit: u32,
}

/// A stored record as the API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRow {
    pub id: i64,
    pub host_id: Option<i64>,
    /// Name of the resolved host, if any.
    pub host: Option<String>,
    pub source: String,
    pub record: LogRecord,
}

const LOG_COLUMNS: &str = "l.id, l.host_id, h.hostname, l.source, l.ts, l.received_at, l.hostname, l.facility, l.severity, l.app_name, l.procid, l.msgid, l.message, l.structured_data, l.flags";

fn row_from(r: &SqliteRow) -> LogRow {
    let flags: i64 = r.get(14);
    let facility: Option<i64> = r.get(7);
    let severity: Option<i64> = r.get(8);
    LogRow {
        id: r.get(0),
        host_id: r.get(1),
        host: r.get(2),
        source: r.get(3),
        record: LogRecord {
            ts: r.get(4),
            received_at: r.get(5),
            hostname: r.get(6),
            facility: facility.and_then(|f| u8::try_from(f).ok().and_then(Facility::from_u8)),
            severity: severity.and_then(|s| u8::try_from(s).ok().and_then(Severity::from_u8)),
            app_name: r.get(9),
            procid: r.get(10),
            msgid: r.get(11),
            message: r.get(12),
            structured_data: r.get(13),
            truncated: flags & FLAG_TRUNCATED != 0,
            invalid_utf8: flags & FLAG_INVALID_UTF8 != 0,
            unparsed: flags & FLAG_UNPARSED != 0,
        },
    }
}

/// Records indexed per indexer transaction: large enough that FTS5 flushes
/// few segments, small enough that rebuilding millions of rows commits
/// steadily and retention's deletions wait for at most one chunk.
pub const INDEX_CHUNK: i64 = 20_000;
/// Deleted ids taken out of the index per transaction.
const UNINDEX_CHUNK: i64 = 10_000;
/// Records committed but not yet indexed above which the syslog writer waits
/// for the indexer before its next commit (once the index has caught up since
/// the server started: a rebuild after an upgrade does not hold ingest up).
pub const MAX_INDEX_LAG: i64 = 500_000;
/// Longest one syslog batch waits for the indexer; it is committed anyway
/// after that, so a failing indexer slows ingest down but never stops it.
const LAG_WAIT: Duration = Duration::from_secs(2);

/// Schema of the index file. Not a sqlx migration: it is not this database's
/// file, it can always be rebuilt from `logs`, and it is dropped and rebuilt
/// rather than migrated.
///
/// `logs_fts` is contentless (`content = ''`: the text lives once, in
/// `logs`, in the other file) and keyed by the record's id. `detail = none`
/// keeps only which rows hold a token, not where (several times cheaper to
/// build; phrases are confirmed on the text, server/src/store/log_search.rs).
/// `contentless_delete = 1` lets records be removed by id alone, after their
/// text is gone (it needs the per-row size table, `columnsize = 1`).
///
/// `logs_fts_state` says how far the index is: every record with an id up to
/// `indexed_to` is indexed or was deleted; `claimed` is an id up to which the
/// indexer may be reading right now, and writers number new records above it
/// (see `insert_rows`), so no id the index has passed is ever used again.
/// `token` is the `log_index_token` of the database indexed.
const INDEX_SCHEMA: &str = "
CREATE VIRTUAL TABLE IF NOT EXISTS logs_fts USING fts5(
    message,
    content = '',
    contentless_delete = 1,
    detail = none
);
CREATE TABLE IF NOT EXISTS logs_fts_state (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    token      TEXT NOT NULL,
    indexed_to INTEGER NOT NULL,
    claimed    INTEGER NOT NULL
);
";

/// The full-text index of log messages, in a SQLite file of its own written
/// by its own connection (so on its own thread, the second core), following
/// the committed records by id. The database's pool connections ATTACH the
/// file as `logidx` for searches.
///
/// Why: one SQLite file has one writer at a time, and the postings were a
/// third of the log writer's work (docs/benchmarks.md, "Logs"). The price:
/// a committed record is missing from full-text searches until the indexer
/// reaches it (the lag, `metrolog_logs_index_lag_records`); every other
/// filter sees it at once.
///
/// After a crash or a restart the indexer carries on from `indexed_to`,
/// which commits with the postings, so nothing is indexed twice or skipped.
#[derive(Debug)]
pub struct LogIndex {
    /// The index file's own connection; `None` once closed. Held for a whole
    /// round, so indexing and taking deleted records out never interleave.
    conn: tokio::sync::Mutex<Option<SqliteConnection>>,
    path: String,
    /// Largest record id seen committed (by the writer or the indexer).
    committed_to: AtomicI64,
    /// `logs_fts_state.indexed_to` as last committed.
    indexed_to: AtomicI64,
    /// The index has been level with the records at least once since open.
    caught_up: AtomicBool,
    /// The syslog writer committed records (wakes the indexer).
    commits: Notify,
    /// The indexer committed a round (wakes a writer waiting on the lag).
    progress: Notify,
}

/// What one indexer round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexRound {
    /// Records added to the index.
    pub indexed: u64,
    /// Deleted records taken out of it (or off the queue, if never indexed).
    pub unindexed: u64,
}

/// The index file that goes with the database file `db`:
/// `metrolog.db` → `metrolog.logs-fts.db`.
pub(super) fn index_path(db: &str) -> String {
    match db.strip_suffix(".db") {
        Some(stem) => format!("{stem}.logs-fts.db"),
        None => format!("{db}.logs-fts.db"),
    }
}

impl LogIndex {
    /// Opens (creating if needed) the index file at `path`; call before the
    /// pool attaches it, so it is in WAL mode from the start.
    pub(super) async fn create(path: &str) -> Result<Self> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // The index can be rebuilt from the records: no fsync per round.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .pragma("temp_store", "memory")
            .pragma("cache_size", "-32000")
            // Checkpoints run in the background (`super::checkpoint`).
            .pragma(
                "wal_autocheckpoint",
                super::checkpoint::BACKSTOP_PAGES.to_string(),
            )
            // Its own name, so its CPU is told apart (server/benches/logs.rs).
            .thread_name(|_| "logs-indexer".to_string());
        let mut conn = opts.connect().await.map_err(|source| StoreError::Open {
            url: path.to_string(),
            source,
        })?;
        sqlx::raw_sql(INDEX_SCHEMA).execute(&mut conn).await?;
        Ok(Self {
            conn: tokio::sync::Mutex::new(Some(conn)),
            path: path.to_string(),
            committed_to: AtomicI64::new(0),
            indexed_to: AtomicI64::new(0),
            caught_up: AtomicBool::new(false),
            commits: Notify::new(),
            progress: Notify::new(),
        })
    }

    /// Attaches the database at `db` (migrated) and checks that the index is
    /// that database's; an index of another one is dropped and rebuilt.
    pub(super) async fn attach(&self, db: &str) -> Result<()> {
        let mut guard = self.conn.lock().await;
        let conn = guard.as_mut().ok_or(sqlx::Error::PoolClosed)?;
        sqlx::query("ATTACH DATABASE ? AS logsdb")
            .bind(db)
            .execute(&mut *conn)
            .await?;
        let token: String = sqlx::query_scalar("SELECT token FROM logsdb.log_index_token")
            .fetch_one(&mut *conn)
            .await?;
        let have: Option<(String, i64)> =
            sqlx::query_as("SELECT token, indexed_to FROM logs_fts_state")
                .fetch_optional(&mut *conn)
                .await?;
        let indexed_to = match have {
            Some((t, to)) if t == token => to,
            other => {
                if other.is_some() {
                    tracing::warn!(index = %self.path, "the log index file is another database's; rebuilding it");
                }
                sqlx::raw_sql("DROP TABLE logs_fts; DROP TABLE logs_fts_state;")
                    .execute(&mut *conn)
                    .await?;
                sqlx::raw_sql(INDEX_SCHEMA).execute(&mut *conn).await?;
                // Log ingest is write-mostly: FTS5 merges 16 segments at a
                // time rather than 4 (each posting rewritten about half as
                // often; a query visits a few more segments).
                sqlx::raw_sql(
                    "INSERT INTO logs_fts (logs_fts, rank) VALUES ('automerge', 16);
                     INSERT INTO logs_fts (logs_fts, rank) VALUES ('crisismerge', 64);",
                )
                .execute(&mut *conn)
                .await?;
                sqlx::query("INSERT INTO logs_fts_state (id, token, indexed_to, claimed) VALUES (1, ?, 0, 0)")
                    .bind(&token)
                    .execute(&mut *conn)
                    .await?;
                0
            }
        };
        self.indexed_to.store(indexed_to, Ordering::SeqCst);
        Ok(())
    }

    /// The index file's path.
    pub fn path(&self) -> &str {
        &self.path
    }

    pub(super) async fn close(&self) {
        if let Some(conn) = self.conn.lock().await.take() {
            let _ = conn.close().await;
        }
    }

    fn lag(&self) -> i64 {
        (self.committed_to.load(Ordering::SeqCst) - self.indexed_to.load(Ordering::SeqCst)).max(0)
    }
}

/// Upper bound on hosts created for syslog senders, so a sender that claims
/// a new hostname on every line cannot grow the host table without end.
pub const MAX_SYSLOG_HOSTS: i64 = 10_000;

impl Store {
    /// Stores received syslog records in one transaction and returns their
    /// ids in order. The syslog hosts among `seen_hosts` get their
    /// `last_seen` refreshed (they are passive: nothing else marks them
    /// alive).
    ///
    /// The commit is not fsynced (`synchronous = NORMAL` for this
    /// transaction only): syslog over UDP or TCP has no acknowledgement, so
    /// no sender relies on it, and an fsync per batch is ~10 ms of the
    /// writer's time. A crash of the server process loses nothing committed
    /// (the WAL is in the OS cache); a power loss or kernel crash may lose the
    /// syslog batches committed since the last checkpoint or the last agent
    /// batch, whose FULL commit makes everything before it durable. The
    /// database stays consistent either way. Agent batches (acknowledged)
    /// never go through here.
    pub async fn insert_logs(&self, rows: &[NewLog<'_>], seen_hosts: &[i64]) -> Result<Vec<i64>> {
        self.wait_for_log_index().await;
        let _w = self.write.lock().await;
        let mut conn = self.pool.acquire().await?;
        sqlx::query("PRAGMA synchronous = NORMAL")
            .execute(&mut *conn)
            .await?;
        let result = Self::insert_logs_on(&mut conn, rows, seen_hosts).await;
        // The connection goes back to the pool, where acknowledged writes
        // need FULL; one that cannot be restored is closed instead.
        if let Err(e) = sqlx::query("PRAGMA synchronous = FULL")
            .execute(&mut *conn)
            .await
        {
            tracing::error!(error = %e, "restoring synchronous = FULL failed; closing the connection");
            let _ = conn.detach().close().await;
        }
        if let Ok(ids) = &result {
            if let Some(last) = ids.iter().max() {
                self.log_index
                    .committed_to
                    .fetch_max(*last, Ordering::SeqCst);
                self.log_index.commits.notify_one();
            }
        }
        result
    }

    /// Backpressure: waits (at most [`LAG_WAIT`]) while more than
    /// [`MAX_INDEX_LAG`] records await the indexer, so the lag stays bounded
    /// when records come in faster than they are indexed.
    async fn wait_for_log_index(&self) {
        let ix = &self.log_index;
        if !ix.caught_up.load(Ordering::SeqCst) || ix.lag() <= MAX_INDEX_LAG {
            return;
        }
        let deadline = tokio::time::Instant::now() + LAG_WAIT;
        while ix.lag() > MAX_INDEX_LAG {
            let progress = ix.progress.notified();
            if tokio::time::timeout_at(deadline, progress).await.is_err() {
                tracing::warn!(
                    lag = ix.lag(),
                    "the log index is far behind; committing syslog records anyway"
                );
                return;
            }
        }
    }

    /// Records committed but not yet in the full-text index (by id: an
    /// upper bound when ids have gaps).
    pub fn log_index_lag(&self) -> u64 {
        self.log_index.lag() as u64
    }

    /// The full-text index file (next to the database file).
    pub fn log_index_path(&self) -> &str {
        self.log_index.path()
    }

    /// Resolves once the syslog writer committed records since the last
    /// call (or at once when it did before): the indexer's wake-up.
    pub async fn logs_committed(&self) {
        self.log_index.commits.notified().await
    }

    /// Resolves at the indexer's next round.
    pub async fn logs_indexed(&self) {
        self.log_index.progress.notified().await
    }

    /// One indexer round: takes deleted records out of the full-text index,
    /// then indexes up to `max_rows` committed records after the last
    /// indexed one, in one transaction of the index file.
    pub async fn index_logs(&self, max_rows: i64) -> Result<IndexRound> {
        let ix = &self.log_index;
        let mut guard = ix.conn.lock().await;
        let conn = guard.as_mut().ok_or(sqlx::Error::PoolClosed)?;
        let unindexed = self.unindex_deleted(conn).await?;
        let from = ix.indexed_to.load(Ordering::SeqCst);
        let top: i64 = sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM logsdb.logs")
            .fetch_one(&mut *conn)
            .await?;
        ix.committed_to.fetch_max(top, Ordering::SeqCst);
        if top <= from {
            ix.committed_to.store(top.max(from), Ordering::SeqCst);
            if !ix.caught_up.swap(true, Ordering::SeqCst) {
                tracing::debug!(indexed_to = from, "log index caught up");
            }
            ix.progress.notify_waiters();
            return Ok(IndexRound {
                indexed: 0,
                unindexed,
            });
        }
        // Claim the ids about to be read before reading them, committed: a
        // writer that numbers records after this sees the claim and numbers
        // above it; one that numbered before holds the write lock until it
        // commits, so this round's snapshot either holds its records or
        // holds nothing above them (see `insert_rows`).
        let claim: i64 = sqlx::query_scalar(
            "SELECT coalesce((SELECT id FROM logsdb.logs WHERE id > ?1 ORDER BY id LIMIT 1 OFFSET ?2), ?3)",
        )
        .bind(from)
        .bind(max_rows.max(1) - 1)
        .bind(top)
        .fetch_one(&mut *conn)
        .await?;
        sqlx::query("UPDATE logs_fts_state SET claimed = max(claimed, ?)")
            .bind(claim)
            .execute(&mut *conn)
            .await?;
        let mut tx = conn.begin().await?;
        // The first read of the records fixes this transaction's snapshot of
        // them; the INSERT below reads the same one.
        let last: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM logsdb.logs WHERE id > ? AND id <= ? ORDER BY id DESC LIMIT 1",
        )
        .bind(from)
        .bind(claim)
        .fetch_optional(&mut *tx)
        .await?;
        let mut indexed = 0;
        if let Some(last) = last {
            indexed = sqlx::query(
                "INSERT INTO logs_fts (rowid, message) SELECT id, message FROM logsdb.logs WHERE id > ? AND id <= ?",
            )
            .bind(from)
            .bind(last)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            sqlx::query("UPDATE logs_fts_state SET indexed_to = ?")
                .bind(last)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        if let Some(last) = last {
            ix.indexed_to.store(last, Ordering::SeqCst);
        }
        ix.progress.notify_waiters();
        Ok(IndexRound { indexed, unindexed })
    }

    /// Runs indexer rounds until the index is level with the records and
    /// holds no deleted ones (tests, tools; the server's indexer task runs
    /// the rounds itself).
    pub async fn catch_up_log_index(&self) -> Result<()> {
        while self.index_logs(INDEX_CHUNK).await? != IndexRound::default() {}
        Ok(())
    }

    /// Takes records deleted since the last round (queued by the
    /// `logs_unindex` trigger, migrations/0007_log_index_file.sql) out of the
    /// index, up to [`UNINDEX_CHUNK`]; returns how many were taken off the
    /// queue. Called with the index's lock held.
    async fn unindex_deleted(&self, conn: &mut SqliteConnection) -> Result<u64> {
        let queued: Vec<(i64, i64)> =
            sqlx::query_as("SELECT rowid, id FROM logsdb.logs_unindexed ORDER BY rowid LIMIT ?")
                .bind(UNINDEX_CHUNK)
                .fetch_all(&mut *conn)
                .await?;
        let Some(&(last_rowid, _)) = queued.last() else {
            return Ok(0);
        };
        let taken = queued.len() as u64;
        let indexed_to = self.log_index.indexed_to.load(Ordering::SeqCst);
        let mut tx = conn.begin().await?;
        // Ids above `indexed_to` were never indexed; deleting them would
        // only leave tombstones.
        for (_, id) in queued.iter().filter(|(_, id)| *id <= indexed_to) {
            sqlx::query("DELETE FROM logs_fts WHERE rowid = ?")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        // A crash before this line deletes the same ids again at the next
        // round, which is harmless (a tombstone for an id already gone).
        let _w = self.write.lock().await;
        sqlx::query("DELETE FROM logs_unindexed WHERE rowid <= ?")
            .bind(last_rowid)
            .execute(&self.pool)
            .await?;
        Ok(taken)
    }

    async fn insert_logs_on(
        conn: &mut SqliteConnection,
        rows: &[NewLog<'_>],
        seen_hosts: &[i64],
    ) -> Result<Vec<i64>> {
        let mut tx = conn.begin().await?;
        let ids = insert_rows(&mut tx, rows).await?;
        if !seen_hosts.is_empty() {
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new("UPDATE hosts SET last_seen = ");
            q.push_bind(now())
                .push(" WHERE source = 'syslog' AND id IN (");
            let mut sep = q.separated(", ");
            for id in seen_hosts {
                sep.push_bind(*id);
            }
            q.push(")");
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(ids)
    }

    /// The host each syslog sender name stands for: an existing host with
    /// that hostname (an enrolled agent's first), else a new passive,
    /// syslog-only host. `None` once [`MAX_SYSLOG_HOSTS`] exist.
    pub async fn syslog_hosts(&self, names: &[String]) -> Result<Vec<Option<i64>>> {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        let mut out = Vec::with_capacity(names.len());
        let mut syslog_count: Option<i64> = None;
        for name in names {
            let found: Option<i64> = sqlx::query_scalar(
                "SELECT id FROM hosts WHERE hostname = ? AND kind = 'host' ORDER BY source = 'agent' DESC, id LIMIT 1",
            )
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
            if found.is_some() {
                out.push(found);
                continue;
            }
            let count = match syslog_count {
                Some(c) => c,
                None => {
                    sqlx::query_scalar("SELECT count(*) FROM hosts WHERE source = 'syslog'")
                        .fetch_one(&mut *tx)
                        .await?
                }
            };
            if count >= MAX_SYSLOG_HOSTS {
                syslog_count = Some(count);
                out.push(None);
                continue;
            }
            let t = now();
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO hosts (hostname, source, passive, state, state_since, first_seen, last_seen)
                 VALUES (?, 'syslog', 1, 'up', ?, ?, ?) RETURNING id",
            )
            .bind(name)
            .bind(t)
            .bind(t)
            .bind(t)
            .fetch_one(&mut *tx)
            .await?;
            syslog_count = Some(count + 1);
            out.push(Some(id));
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Records matching `f`, newest (highest id) first, at most `f.limit`.
    pub async fn logs(&self, f: &LogFilter) -> Result<Vec<LogRow>> {
        if f.host_ids.as_ref().is_some_and(Vec::is_empty) {
            return Ok(Vec::new());
        }
        if f.from.is_none() && f.to.is_none() {
            return self.logs_in(f, Scope::All, f.limit).await;
        }
        // A time range: only the id blocks whose zone meets it are scanned
        // (migrations/0004_log_zones.sql), one query per run of blocks,
        // newest first, until the page is full.
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new("SELECT block FROM log_zones WHERE 1");
        if let Some(from) = f.from {
            q.push(" AND max_ts >= ").push_bind(from);
        }
        if let Some(to) = f.to {
            q.push(" AND min_ts < ").push_bind(to);
        }
        if let Some(before) = f.before {
            q.push(" AND block <= ")
                .push_bind((before - 1) >> ZONE_SHIFT);
        }
        q.push(" ORDER BY block DESC");
        let blocks: Vec<i64> = q.build_query_scalar().fetch_all(&self.pool).await?;
        let mut out = Vec::new();
        for range in id_ranges(&blocks) {
            let want = f.limit.saturating_sub(out.len() as u32);
            if want == 0 {
                break;
            }
            out.extend(self.logs_in(f, Scope::Ids(range), want).await?);
        }
        // Late records are in no zone (migrations/0013_log_late.sql): the
        // newest `limit` of those in the range, merged by id. A late record
        // inside a scanned block may come both ways.
        let late = self.logs_in(f, Scope::Late, f.limit).await?;
        if !late.is_empty() {
            out.extend(late);
            out.sort_unstable_by_key(|r| std::cmp::Reverse(r.id));
            out.dedup_by_key(|r| r.id);
            out.truncate(f.limit as usize);
        }
        Ok(out)
    }

    /// [`Store::logs`] within `scope`, at most `limit`.
    async fn logs_in(&self, f: &LogFilter, scope: Scope, limit: u32) -> Result<Vec<LogRow>> {
        let fts = f.search.as_ref().and_then(Search::fts_match);
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(format!("SELECT {LOG_COLUMNS} "));
        let order = match (&fts, scope) {
            (_, Scope::Late) => {
                // Few rows: `log_late` by source time drives, each one
                // looked up in the records (and in the index, by id).
                q.push("FROM log_late k CROSS JOIN logs l ON l.id = k.id ");
                if let Some(m) = &fts {
                    q.push("CROSS JOIN logidx.logs_fts f ON f.rowid = k.id ");
                    q.push("LEFT JOIN hosts h ON h.id = l.host_id WHERE logs_fts MATCH ");
                    q.push_bind(m.clone());
                } else {
                    q.push("LEFT JOIN hosts h ON h.id = l.host_id WHERE 1");
                }
                if let Some(from) = f.from {
                    q.push(" AND k.ts >= ").push_bind(from);
                }
                if let Some(to) = f.to {
                    q.push(" AND k.ts < ").push_bind(to);
                }
                " ORDER BY l.id DESC"
            }
            // With a full-text term the index drives the scan: it yields
            // rowids in descending order and the LIMIT stops it early; an id
            // range is handed to FTS5 as a rowid range.
            (Some(m), _) => {
                // The index is the attached file `logidx` (see `LogIndex`).
                q.push("FROM logidx.logs_fts f JOIN logs l ON l.id = f.rowid LEFT JOIN hosts h ON h.id = l.host_id WHERE logs_fts MATCH ");
                q.push_bind(m.clone());
                " ORDER BY f.rowid DESC"
            }
            (None, _) => {
                q.push("FROM logs l LEFT JOIN hosts h ON h.id = l.host_id WHERE 1");
                " ORDER BY l.id DESC"
            }
        };
        let id_col = match (&fts, scope) {
            (_, Scope::Late) => "l.id",
            (Some(_), _) => "f.rowid",
            (None, _) => "l.id",
        };
        if let Some(before) = f.before {
            q.push(format!(" AND {id_col} < ")).push_bind(before);
        }
        if let Scope::Ids((lo, hi)) = scope {
            q.push(format!(" AND {id_col} BETWEEN "))
                .push_bind(lo)
                .push(" AND ")
                .push_bind(hi);
        }
        if let Some(ids) = &f.host_ids {
            if let [one] = ids.as_slice() {
                q.push(" AND l.host_id = ").push_bind(*one);
            } else {
                q.push(" AND l.host_id IN (");
                let mut sep = q.separated(", ");
                for id in ids {
                    sep.push_bind(*id);
                }
                q.push(")");
            }
        }
        if let Some(app) = &f.app {
            q.push(" AND l.app_name = ").push_bind(app.clone());
        }
        if let Some(sev) = f.severity {
            if sev < Severity::Debug {
                q.push(" AND coalesce(l.severity, 5) <= ")
                    .push_bind(sev.as_u8() as i64);
            }
        }
        if let Some(from) = f.from {
            q.push(" AND l.ts >= ").push_bind(from);
        }
        if let Some(to) = f.to {
            q.push(" AND l.ts < ").push_bind(to);
        }
        if let Some(s) = &f.search {
            for c in s.contains() {
                q.push(" AND instr(lower(l.message), ")
                    .push_bind(c.clone())
                    .push(") > 0");
            }
            for c in s.excludes() {
                q.push(" AND instr(lower(l.message), ")
                    .push_bind(c.clone())
                    .push(") = 0");
            }
        }
        q.push(order).push(" LIMIT ").push_bind(limit as i64);
        let rows = q.build().fetch_all(&self.pool).await?;
        Ok(rows.iter().map(row_from).collect())
    }

    /// Retention accounting: the bytes (see [`record_bytes`]) and the largest
    /// id of records with an id above `after`.
    pub async fn log_bytes_after(&self, after: i64) -> Result<(i64, i64)> {
        let (bytes, max): (Option<i64>, Option<i64>) = sqlx::query_as(&format!(
            "SELECT sum({ROW_BYTES_SQL}), max(id) FROM logs WHERE id > ?"
        ))
        .bind(after)
        .fetch_one(&self.pool)
        .await?;
        Ok((bytes.unwrap_or(0), max.unwrap_or(after)))
    }

    /// Deletes up to `chunk` of the oldest records (by id) received before
    /// `cutoff` (unix µs); returns (records, bytes) deleted. Only the
    /// `chunk` oldest rows are looked at, so one call is bounded whatever
    /// the table holds.
    pub async fn prune_logs_received_before(&self, cutoff: i64, chunk: i64) -> Result<(u64, i64)> {
        self.prune_logs(
            &format!(
                "DELETE FROM logs WHERE id IN (
                   SELECT id FROM (SELECT id, received_at FROM logs ORDER BY id LIMIT ?1)
                   WHERE received_at < ?2)
                 RETURNING {ROW_BYTES_SQL}"
            ),
            chunk,
            cutoff,
        )
        .await
    }

    /// Deletes the `chunk` oldest records (by id); returns (records, bytes).
    pub async fn prune_oldest_logs(&self, chunk: i64) -> Result<(u64, i64)> {
        self.prune_logs(
            &format!(
                "DELETE FROM logs WHERE id IN (SELECT id FROM logs ORDER BY id LIMIT ?1)
                 RETURNING {ROW_BYTES_SQL}"
            ),
            chunk,
            0,
        )
        .await
    }

    async fn prune_logs(&self, sql: &str, chunk: i64, cutoff: i64) -> Result<(u64, i64)> {
        let done = self.prune_logs_rows(sql, chunk, cutoff).await?;
        if done.0 > 0 {
            // The deleted records leave the full-text index too, now rather
            // than at the indexer's next round (the write lock is released:
            // the index's lock is always taken first).
            let mut guard = self.log_index.conn.lock().await;
            if let Some(conn) = guard.as_mut() {
                while self.unindex_deleted(conn).await? > 0 {}
            }
        }
        Ok(done)
    }

    async fn prune_logs_rows(&self, sql: &str, chunk: i64, cutoff: i64) -> Result<(u64, i64)> {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        let sizes: Vec<i64> = sqlx::query_scalar(sql)
            .bind(chunk)
            .bind(cutoff)
            .fetch_all(&mut *tx)
            .await?;
        if !sizes.is_empty() {
            // Zones wholly below the oldest record left describe nothing;
            // all of them go once the table is empty (ids may then restart).
            sqlx::query(
                "DELETE FROM log_zones WHERE block < coalesce((SELECT min(id) FROM logs) >> ?, 9223372036854775807)",
            )
            .bind(ZONE_SHIFT)
            .execute(&mut *tx)
            .await?;
            // Likewise the late entries of deleted records (by id: a range
            // of the primary key).
            sqlx::query(
                "DELETE FROM log_late WHERE id < coalesce((SELECT min(id) FROM logs), 9223372036854775807)",
            )
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok((sizes.len() as u64, sizes.iter().sum()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::temp_store;
    use chrono::Utc;
    use metrolog_protocol::syslog::parse;
    use std::str::FromStr;

    fn rec(line: &str) -> LogRecord {
        parse(line.as_bytes(), Utc::now(), 65536)
    }

    #[tokio::test]
    async fn fts5_is_compiled_in_and_search_finds_words_and_phrases() {
        let (store, _dir) = temp_store().await;
        let recs = [
            rec("<38>Feb 22 16:45:20 slave22 sshd[2738]: Failed password for root from 202.109.143.106 port 1786 ssh2"),
            rec("<38>Feb 22 16:45:21 slave22 sshd[2738]: password check failed for user root"),
            rec("<30>Feb 22 16:45:22 web1 nginx: GET /index.html 200"),
        ];
        let h = store.syslog_hosts(&["slave22".into()]).await.unwrap()[0];
        let rows: Vec<NewLog<'_>> = recs
            .iter()
            .map(|r| NewLog {
                host_id: h,
                record: r,
                source: LogSource::SyslogTcp,
            })
            .collect();
        let ids = store.insert_logs(&rows, &[]).await.unwrap();
        assert_eq!(ids.len(), 3);
        assert_eq!(ids[2], ids[0] + 2);
        store.catch_up_log_index().await.unwrap();
        let find = |q: &str| {
            let store = &store;
            let q = q.to_string();
            async move {
                store
                    .logs(&LogFilter {
                        search: Search::parse(&q).unwrap(),
                        limit: 10,
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|r| r.id)
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(find("password").await, vec![ids[1], ids[0]]);
        assert_eq!(find("\"Failed password\"").await, vec![ids[0]]);
        assert_eq!(find("202.109.143.106").await, vec![ids[0]]);
        assert_eq!(find("password -check").await, vec![ids[0]]);
        assert_eq!(find("ind*").await, vec![ids[2]]);
        assert_eq!(find("NEAR( \" AND OR *").await, Vec::<i64>::new());
        let errs = store
            .logs(&LogFilter {
                severity: Some(Severity::Err),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(errs.is_empty(), "38 is auth.info, 30 daemon.info");
        let page = store
            .logs(&LogFilter {
                host_ids: Some(vec![h.unwrap()]),
                before: Some(ids[1]),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].host.as_deref(), Some("slave22"));
        assert_eq!(page[0].record, recs[0]);
    }

    #[tokio::test]
    async fn retention_deletes_oldest_in_chunks_and_keeps_the_index_in_step() {
        let (store, _dir) = temp_store().await;
        let recs: Vec<LogRecord> = (0..50)
            .map(|i| rec(&format!("<13>line {i} alpha")))
            .collect();
        let rows: Vec<NewLog<'_>> = recs
            .iter()
            .map(|r| NewLog {
                host_id: None,
                record: r,
                source: LogSource::SyslogUdp,
            })
            .collect();
        store.insert_logs(&rows, &[]).await.unwrap();
        store.catch_up_log_index().await.unwrap();
        let (bytes, max) = store.log_bytes_after(0).await.unwrap();
        assert_eq!(bytes, recs.iter().map(record_bytes).sum::<i64>());
        assert_eq!(max, 50);
        let (n, b) = store.prune_oldest_logs(20).await.unwrap();
        assert_eq!(n, 20);
        assert_eq!(b, recs[..20].iter().map(record_bytes).sum::<i64>());
        // Nothing received before the epoch.
        assert_eq!(store.prune_logs_received_before(0, 100).await.unwrap().0, 0);
        let far = Utc::now().timestamp_micros() + 1_000_000;
        assert_eq!(
            store.prune_logs_received_before(far, 100).await.unwrap().0,
            30
        );
        let found = store
            .logs(&LogFilter {
                search: Search::parse("alpha").unwrap(),
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(found.is_empty());
        // Retention took the records out of the index file as well, at once.
        assert_eq!(index_entries(&store, "alpha").await, 0);
        assert_eq!(index_rows(&store).await, 0);
        assert_eq!(queued_deletions(&store).await, 0);
        integrity_check(&store).await;
    }

    /// Rows of the index file matching `q` (an FTS5 expression).
    async fn index_entries(store: &Store, q: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM logidx.logs_fts WHERE logs_fts MATCH ?")
            .bind(q)
            .fetch_one(&store.pool)
            .await
            .unwrap()
    }

    /// Documents the index file holds (one size row per indexed record).
    async fn index_rows(store: &Store) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM logidx.logs_fts_docsize")
            .fetch_one(&store.pool)
            .await
            .unwrap()
    }

    async fn queued_deletions(store: &Store) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM logs_unindexed")
            .fetch_one(&store.pool)
            .await
            .unwrap()
    }

    async fn integrity_check(store: &Store) {
        sqlx::query("INSERT INTO logidx.logs_fts (logs_fts, rank) VALUES ('integrity-check', 0)")
            .execute(&store.pool)
            .await
            .unwrap();
    }

    async fn insert(store: &Store, host_id: Option<i64>, recs: &[LogRecord]) -> Vec<i64> {
        crate::store::insert_test_logs(store, host_id, recs).await
    }

    async fn search_ids(store: &Store, q: &str, limit: u32) -> Vec<i64> {
        store
            .logs(&LogFilter {
                search: Search::parse(q).unwrap(),
                limit,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect()
    }

    #[tokio::test]
    async fn records_are_searchable_once_indexed_and_a_restart_catches_up() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let recs: Vec<LogRecord> = (0..5000)
            .map(|i| {
                rec(&format!(
                    "<13>line {i} {}",
                    if i % 2 == 0 { "even" } else { "odd" }
                ))
            })
            .collect();
        let store = Store::open(&url).await.unwrap();
        assert!(store.log_index_path().ends_with("t.logs-fts.db"));
        let ids = insert(&store, None, &recs[..3000]).await;
        // Committed, not indexed: every other filter sees the records, the
        // full-text search not yet, and the lag says how many.
        assert_eq!(store.log_index_lag(), 3000);
        assert!(search_ids(&store, "even", 10).await.is_empty());
        let all = store
            .logs(&LogFilter {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(all.len(), 10);
        // Part of them indexed, then the server stops between a commit and
        // its indexing (more records committed, none indexed).
        let round = store.index_logs(1000).await.unwrap();
        assert_eq!(round.indexed, 1000);
        assert_eq!(store.log_index_lag(), 2000);
        let more = insert(&store, None, &recs[3000..]).await;
        store.close().await;
        drop(store);

        let store = Store::open(&url).await.unwrap();
        // It carries on from the last indexed id: nothing twice, nothing
        // skipped.
        assert_eq!(index_rows(&store).await, 1000);
        store.catch_up_log_index().await.unwrap();
        assert_eq!(store.log_index_lag(), 0);
        assert_eq!(index_rows(&store).await, 5000);
        integrity_check(&store).await;
        let want: Vec<i64> = ids
            .iter()
            .chain(&more)
            .rev()
            .copied()
            .filter(|id| (id - ids[0]) % 2 == 0)
            .take(100)
            .collect();
        assert_eq!(search_ids(&store, "even", 100).await, want);
        assert_eq!(search_ids(&store, "line", 1000).await.len(), 1000);
    }

    #[tokio::test]
    async fn search_results_match_a_scan_of_the_same_records() {
        // What the API returned with the index inside the database (the
        // search's own definition, `Search::matches`), for the same data.
        let (store, _dir) = temp_store().await;
        let words = ["alpha", "beta", "gamma", "delta", "password", "Failed"];
        let recs: Vec<LogRecord> = (0..4000usize)
            .map(|i| {
                rec(&format!(
                    "<38>Feb 22 16:45:20 h{} sshd[{}]: {} {} from 10.0.{}.{} port {}",
                    i % 3,
                    i % 97,
                    words[i % 6],
                    words[(i / 6) % 6],
                    i % 5,
                    i % 7,
                    i
                ))
            })
            .collect();
        let mut ids = Vec::new();
        for chunk in recs.chunks(700) {
            ids.extend(insert(&store, None, chunk).await);
            // Index in rounds that do not line up with the batches.
            store.index_logs(333).await.unwrap();
        }
        store.catch_up_log_index().await.unwrap();
        for q in [
            "alpha",
            "\"Failed password\"",
            "pass*",
            "gamma -delta",
            "10.0.2.3",
            "port 1234",
            "sshd",
            "nosuchword",
            "beta alpha -10.0.1",
        ] {
            let s = Search::parse(q).unwrap().unwrap();
            let want: Vec<i64> = ids
                .iter()
                .zip(&recs)
                .rev()
                .filter(|(_, r)| s.matches(&r.message))
                .map(|(id, _)| *id)
                .take(250)
                .collect();
            assert_eq!(search_ids(&store, q, 250).await, want, "q={q}");
        }
    }

    #[tokio::test]
    async fn records_of_a_removed_host_leave_the_index_and_their_ids_are_not_reused() {
        let (store, _dir) = temp_store().await;
        let hosts = store
            .syslog_hosts(&["keep".into(), "gone".into()])
            .await
            .unwrap();
        let early = insert(&store, hosts[0], &[rec("<13>kept alpha")]).await;
        let newest: Vec<LogRecord> = (0..20)
            .map(|i| rec(&format!("<13>gone {i} alpha")))
            .collect();
        let gone = insert(&store, hosts[1], &newest).await;
        store.catch_up_log_index().await.unwrap();
        assert_eq!(search_ids(&store, "alpha", 100).await.len(), 21);
        // The newest records go with their host: SQLite would number the
        // next record right after the oldest one left.
        assert!(store.delete_host(hosts[1].unwrap()).await.unwrap());
        let fresh = insert(&store, hosts[0], &[rec("<13>fresh beta")]).await;
        assert!(fresh[0] > *gone.last().unwrap(), "{fresh:?} after {gone:?}");
        store.catch_up_log_index().await.unwrap();
        assert_eq!(search_ids(&store, "alpha", 100).await, early);
        assert_eq!(search_ids(&store, "beta", 100).await, fresh);
        assert_eq!(index_entries(&store, "gone").await, 0);
        assert_eq!(index_rows(&store).await, 2);
        integrity_check(&store).await;
    }

    #[tokio::test]
    async fn an_existing_database_loses_its_old_index_and_the_indexer_rebuilds_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let url = format!("sqlite://{}", path.display());
        // A database as the previous release left it: migrations up to 0005,
        // the full-text index inside it, kept by the writers.
        {
            let pool = sqlx::SqlitePool::connect_with(
                sqlx::sqlite::SqliteConnectOptions::from_str(&url)
                    .unwrap()
                    .create_if_missing(true),
            )
            .await
            .unwrap();
            let old = sqlx::migrate::Migrator {
                migrations: std::borrow::Cow::Owned(
                    crate::store::MIGRATOR
                        .migrations
                        .iter()
                        .filter(|m| m.version <= 5)
                        .cloned()
                        .collect(),
                ),
                ..sqlx::migrate::Migrator::DEFAULT
            };
            old.run(&pool).await.unwrap();
            sqlx::query(
                "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 2999)
                 INSERT INTO logs (ts, received_at, message, source)
                 SELECT i, i, 'old record ' || i || CASE WHEN i % 3 = 0 THEN ' three' ELSE ' other' END, 'syslog-udp' FROM n",
            )
            .execute(&pool)
            .await
            .unwrap();
            sqlx::query("INSERT INTO logs_fts (rowid, message) SELECT id, message FROM logs")
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }
        let store = Store::open(&url).await.unwrap();
        let old_index: i64 =
            sqlx::query_scalar("SELECT count(*) FROM sqlite_master WHERE name LIKE 'logs_fts%'")
                .fetch_one(&store.pool)
                .await
                .unwrap();
        assert_eq!(old_index, 0, "the old index is dropped from the database");
        assert_eq!(store.log_index_lag(), 0, "not known before the first round");
        // The indexer rebuilds in bounded rounds, oldest first, while new
        // records keep coming.
        let round = store.index_logs(1000).await.unwrap();
        assert_eq!(round.indexed, 1000);
        assert_eq!(store.log_index_lag(), 2000);
        let new = insert(&store, None, &[rec("<13>new three")]).await;
        store.catch_up_log_index().await.unwrap();
        let found = search_ids(&store, "three", 2000).await;
        assert_eq!(found.len(), 1001);
        assert_eq!(found[0], new[0]);
        integrity_check(&store).await;
    }

    #[test]
    fn zone_runs_become_at_most_max_ranges_newest_first() {
        assert_eq!(id_ranges(&[]), vec![]);
        assert_eq!(
            id_ranges(&[5, 4, 2]),
            vec![(4 << 12, (6 << 12) - 1), (2 << 12, (3 << 12) - 1)]
        );
        // Every other block of 100: merged into MAX_ZONE_RANGES ranges that
        // still cover every block, newest first.
        let blocks: Vec<i64> = (0..100).rev().map(|b| b * 2).collect();
        let ranges = id_ranges(&blocks);
        assert_eq!(ranges.len(), MAX_ZONE_RANGES);
        assert!(ranges.windows(2).all(|w| w[0].0 > w[1].1));
        for b in blocks {
            assert!(ranges
                .iter()
                .any(|(lo, hi)| *lo <= b << 12 && (b << 12) + 4095 <= *hi));
        }
    }

    #[tokio::test]
    async fn time_ranges_over_many_zones_return_exactly_the_matching_rows() {
        let (store, _dir) = temp_store().await;
        // 30 000 records 1 ms apart in ~8 zones, stored in batches of 1 000;
        // every 4 999th arrives late with a timestamp an hour old, and the
        // odd ones with jitter of a few ms (nearly, not strictly, in order).
        let t0 = 1_700_000_000_000_000i64;
        // Records 20 000..20 300 come from a sender whose clock is 2 h
        // ahead. Late and early ones are listed in `log_late`, not zoned.
        let late = |i: i64| i % 4999 == 0 || (20_000..20_300).contains(&i);
        let ts_of = |i: i64| {
            if i % 4999 == 0 {
                t0 - 3_600_000_000 + i
            } else if late(i) {
                t0 + 7_200_000_000 + i * 1000
            } else {
                t0 + i * 1000 + (i % 2) * 3000
            }
        };
        let recs: Vec<LogRecord> = (0..30_000i64)
            .map(|i| {
                let mut r = rec(&format!(
                    "<13>line {i} {}",
                    if i % 3 == 0 { "gamma" } else { "delta" }
                ));
                r.ts = ts_of(i);
                r.received_at = t0 + i * 1000 + 500;
                r
            })
            .collect();
        let mut ids = Vec::new();
        for chunk in recs.chunks(1000) {
            let rows: Vec<NewLog<'_>> = chunk
                .iter()
                .map(|r| NewLog {
                    host_id: None,
                    record: r,
                    source: LogSource::SyslogTcp,
                })
                .collect();
            ids.extend(store.insert_logs(&rows, &[]).await.unwrap());
        }
        store.catch_up_log_index().await.unwrap();
        let zones: i64 = sqlx::query_scalar("SELECT count(*) FROM log_zones")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(zones, (ids[ids.len() - 1] >> 12) - (ids[0] >> 12) + 1);
        // The zones stay tight (a block holds ~4 s of records), and every
        // late record is listed by its time instead.
        let widest: i64 = sqlx::query_scalar("SELECT max(max_ts - min_ts) FROM log_zones")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert!(widest < 5_000_000, "widest zone {widest} µs");
        let listed: Vec<i64> = sqlx::query_scalar("SELECT id FROM log_late ORDER BY id")
            .fetch_all(&store.pool)
            .await
            .unwrap();
        let want_late: Vec<i64> = (0..30_000)
            .filter(|i| late(*i))
            .map(|i| ids[i as usize])
            .collect();
        assert_eq!(listed, want_late);
        let check = |from: Option<i64>, to: Option<i64>, q: Option<&str>, limit: u32| {
            let store = &store;
            let (recs, ids) = (&recs, &ids);
            let q = q.map(str::to_string);
            async move {
                let search = q.as_deref().and_then(|q| Search::parse(q).unwrap());
                let want: Vec<i64> = ids
                    .iter()
                    .zip(recs)
                    .rev()
                    .filter(|(_, r)| from.is_none_or(|f| r.ts >= f) && to.is_none_or(|t| r.ts < t))
                    .filter(|(_, r)| search.as_ref().is_none_or(|s| s.matches(&r.message)))
                    .map(|(id, _)| *id)
                    .collect();
                // Page through everything, `limit` at a time.
                let mut got = Vec::new();
                let mut before = None;
                loop {
                    let page = store
                        .logs(&LogFilter {
                            from,
                            to,
                            search: search.clone(),
                            before,
                            limit,
                            ..Default::default()
                        })
                        .await
                        .unwrap();
                    got.extend(page.iter().map(|r| r.id));
                    match page.last() {
                        Some(last) if page.len() == limit as usize => before = Some(last.id),
                        _ => break,
                    }
                }
                assert_eq!(got, want, "from {from:?} to {to:?} q {q:?} limit {limit}");
                got.len()
            }
        };
        // A narrow range inside one zone, one across zones, the late
        // records' hour alone, open-ended ranges, with and without text.
        assert_eq!(
            check(Some(t0 + 10_000_000), Some(t0 + 10_050_000), None, 1000).await,
            50
        );
        assert!(check(Some(t0 + 3_000_000), Some(t0 + 9_000_000), None, 700).await > 5000);
        assert_eq!(
            check(Some(t0 - 3_600_000_000), Some(t0 - 3_500_000_000), None, 2).await,
            7
        );
        check(Some(t0 + 25_000_000), None, Some("gamma"), 333).await;
        // Words in narrow ranges, in the late hour, and in the early
        // sender's hours (only late records there), across pages.
        assert!(
            check(
                Some(t0 + 10_000_000),
                Some(t0 + 10_060_000),
                Some("gamma"),
                7
            )
            .await
                > 10
        );
        assert_eq!(
            check(
                Some(t0 - 3_600_000_000),
                Some(t0 - 3_500_000_000),
                Some("gamma"),
                2
            )
            .await,
            3
        );
        assert_eq!(
            check(Some(t0 + 7_200_000_000), None, Some("delta"), 50).await,
            200
        );
        assert_eq!(check(Some(t0 + 7_200_000_000), None, None, 64).await, 300);
        assert_eq!(check(None, Some(t0), Some("gamma -delta"), 1).await, 3);
        check(None, Some(t0 + 2_000_000), Some("delta"), 1000).await;
        // After the last in-order record only the early sender's are left.
        assert_eq!(check(Some(t0 + 40_000_000), None, None, 10).await, 300);
        assert_eq!(
            check(Some(t0 + 40_000_000), Some(t0 + 7_000_000_000), None, 10).await,
            0
        );
        // Retention drops the zones below the oldest record left.
        store.prune_oldest_logs(12_000).await.unwrap();
        let min_block: i64 = sqlx::query_scalar("SELECT min(block) FROM log_zones")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(min_block, ids[12_000] >> 12);
        let late_left: i64 = sqlx::query_scalar("SELECT min(id) FROM log_late")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(late_left, ids[14_997], "late entries of pruned records go");
        let far = Utc::now().timestamp_micros() + 1_000_000;
        while store.prune_logs_received_before(far, 5000).await.unwrap().0 > 0 {}
        let left: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM log_zones) + (SELECT count(*) FROM log_late)",
        )
        .fetch_one(&store.pool)
        .await
        .unwrap();
        assert_eq!(left, 0);
    }

    #[tokio::test]
    async fn syslog_batches_leave_every_pooled_connection_fully_synchronous() {
        let (store, _dir) = temp_store().await;
        let r = rec("<13>x");
        let rows = [NewLog {
            host_id: None,
            record: &r,
            source: LogSource::SyslogUdp,
        }];
        for _ in 0..8 {
            store.insert_logs(&rows, &[]).await.unwrap();
        }
        // Hold every connection the pool has, so each is looked at.
        let mut held = Vec::new();
        for _ in 0..store.pool.options().get_max_connections() {
            let mut c = store.pool.acquire().await.unwrap();
            let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
                .fetch_one(&mut *c)
                .await
                .unwrap();
            assert_eq!(sync, 2, "FULL");
            held.push(c);
        }
    }

    #[tokio::test]
    async fn syslog_senders_map_to_existing_hosts_or_new_passive_ones() {
        let (store, _dir) = temp_store().await;
        let ids = store
            .syslog_hosts(&["a".into(), "b".into(), "a".into()])
            .await
            .unwrap();
        assert_eq!(ids[0], ids[2]);
        assert_ne!(ids[0], ids[1]);
        let h = store.host(ids[0].unwrap()).await.unwrap().unwrap();
        assert_eq!(h.source, "syslog");
        assert!(h.passive);
    }
}
