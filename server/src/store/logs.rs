//! Log records: bulk insert (agent batches and the syslog writer) into
//! compressed blocks, the filtered newest-first listing behind
//! `/api/v1/logs`, syslog-only hosts, retention by block, and the full-text
//! index that follows the blocks from a file of its own. Schema:
//! `migrations/0014_log_blocks.sql` (blocks) with the zone map of
//! `migrations/0004_log_zones.sql` and the late list of
//! `migrations/0013_log_late.sql` behind time-range filters; the blob's
//! format: [`super::log_block`]; why the full-text index has its own file:
//! `migrations/0007_log_index_file.sql` and [`LogIndex`].

use super::log_block::{self, Encoder, RecordRef, MAX_SPAN};
use super::log_search::Search;
use super::{now, Result, Store, StoreError};
use metrolog_protocol::syslog::{LogRecord, LogSource, Severity};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteRow, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, QueryBuilder, Row, Sqlite, SqliteConnection, SqlitePool};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

/// A zone of `log_zones` covers the ids `zone << ZONE_SHIFT` and the
/// following `1 << ZONE_SHIFT - 1` (see migrations/0004_log_zones.sql).
const ZONE_SHIFT: u32 = 12;
/// Most separate id ranges one time-filtered listing queries; closer ranges
/// are merged beyond that (scanning a gap costs less than many queries).
const MAX_ZONE_RANGES: usize = 16;
/// A record whose source time is further than this from its receive time
/// (µs) is late: listed in `log_late` rather than widening its zone
/// (migrations/0013_log_late.sql).
pub const LATE_US: i64 = 5 * 60 * 1_000_000;

/// Whether `r` goes to `log_late` rather than into its zone.
fn is_late(r: &LogRecord) -> bool {
    r.ts.abs_diff(r.received_at) > LATE_US as u64
}

/// What a block counts for against `retention.logs.max_bytes`: its stored
/// (compressed) bytes, plus [`BLOCK_OVERHEAD_BYTES`] for its row and index
/// entries and [`RECORD_OVERHEAD_BYTES`] per record for its share of the
/// full-text index and the zone map (docs/logs.md, "Storage and retention").
pub const BLOCK_OVERHEAD_BYTES: i64 = 64;
pub const RECORD_OVERHEAD_BYTES: i64 = 8;

/// One record to store, with the host it was resolved to.
#[derive(Debug, Clone, Copy)]
pub struct NewLog<'a> {
    pub host_id: Option<i64>,
    pub record: &'a LogRecord,
    pub source: LogSource,
}

/// A block ready to insert: its records' positions in the caller's input,
/// what its row says about them, and its blob.
struct NewBlock {
    /// Indices into the input, in id order.
    rows: Vec<usize>,
    /// Id of the first record; the others follow it one by one. Set when
    /// the block is numbered (see `insert_rows`), or at once when converting.
    first_id: i64,
    /// Id of the last record.
    last_id: i64,
    host_id: Option<i64>,
    app: Option<String>,
    source: &'static str,
    min_ts: i64,
    max_ts: i64,
    min_received: i64,
    max_received: i64,
    severities: i64,
    /// Each record's source time and whether it is late ([`is_late`]), in id
    /// order: what the zone map needs, so that a block carries no borrow of
    /// its records to the thread that writes it.
    times: Vec<(i64, bool)>,
    data: Vec<u8>,
}

impl NewBlock {
    fn bytes(&self) -> i64 {
        self.data.len() as i64
            + BLOCK_OVERHEAD_BYTES
            + RECORD_OVERHEAD_BYTES * self.rows.len() as i64
    }
}

/// A block being filled.
struct OpenBlock {
    block: NewBlock,
    enc: Encoder,
}

impl OpenBlock {
    fn new(host_id: Option<i64>, app: Option<&str>, source: LogSource) -> Self {
        Self {
            block: NewBlock {
                rows: Vec::new(),
                first_id: 0,
                last_id: 0,
                host_id,
                app: app.map(str::to_string),
                source: source.as_str(),
                min_ts: i64::MAX,
                max_ts: i64::MIN,
                min_received: i64::MAX,
                max_received: i64::MIN,
                severities: 0,
                times: Vec::new(),
                data: Vec::new(),
            },
            enc: Encoder::new(),
        }
    }

    fn full(&self, next_id: i64) -> bool {
        self.enc.len() >= log_block::MAX_BLOCK_RECORDS
            || self.enc.raw_len() >= log_block::MAX_BLOCK_RAW_BYTES
            || (!self.enc.is_empty() && next_id - self.block.first_id >= MAX_SPAN)
    }

    fn push(&mut self, index: usize, id: i64, r: &LogRecord) {
        let b = &mut self.block;
        if b.rows.is_empty() {
            b.first_id = id;
        }
        b.last_id = id;
        b.rows.push(index);
        b.min_ts = b.min_ts.min(r.ts);
        b.max_ts = b.max_ts.max(r.ts);
        b.min_received = b.min_received.min(r.received_at);
        b.max_received = b.max_received.max(r.received_at);
        b.severities |= log_block::severity_bit(r.severity);
        b.times.push((r.ts, is_late(r)));
        self.enc.push(id, r);
    }

    fn finish(self) -> NewBlock {
        let mut b = self.block;
        b.data = self.enc.finish();
        b
    }
}

/// Groups `rows` into blocks by stream (host, app, source), each stream's
/// records in input order. A row's id is given when it has one already
/// (converting old rows); otherwise records are numbered 0, 1, … within
/// their block here and the blocks are numbered when inserted.
fn group_blocks<'a>(rows: impl Iterator<Item = (Option<i64>, NewLog<'a>)>) -> Vec<NewBlock> {
    let mut done: Vec<NewBlock> = Vec::new();
    let mut open: HashMap<(Option<i64>, Option<&'a str>, LogSource), OpenBlock> = HashMap::new();
    for (index, (id, row)) in rows.enumerate() {
        let r = row.record;
        let key = (row.host_id, r.app_name.as_deref(), row.source);
        let block = open
            .entry(key)
            .or_insert_with(|| OpenBlock::new(row.host_id, r.app_name.as_deref(), row.source));
        let next_id = id.unwrap_or(block.enc.len() as i64);
        if block.full(next_id) {
            let full = std::mem::replace(
                block,
                OpenBlock::new(row.host_id, r.app_name.as_deref(), row.source),
            );
            done.push(full.finish());
        }
        let next_id = id.unwrap_or(block.enc.len() as i64);
        block.push(index, next_id, r);
    }
    let mut rest: Vec<OpenBlock> = open.into_values().collect();
    // In the order of their first record.
    rest.sort_unstable_by_key(|b| b.block.rows[0]);
    done.extend(rest.into_iter().map(OpenBlock::finish));
    done
}

/// Runs `f`, CPU-bound work of a few ms, without stalling the runtime's
/// other tasks where the runtime allows it.
fn cpu<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Inserts records inside the caller's transaction on `db`, so that an agent
/// batch's logs commit together with its metrics and its batch id.
pub(super) fn insert_tx(
    db: &rusqlite::Connection,
    host_id: Option<i64>,
    records: &[LogRecord],
    source: LogSource,
) -> rusqlite::Result<()> {
    let blocks = group_blocks(records.iter().map(|record| {
        let row = NewLog {
            host_id,
            record,
            source,
        };
        (None, row)
    }));
    insert_rows(db, blocks)?;
    Ok(())
}

/// Numbers the (not yet numbered) `blocks` and inserts them with their zones
/// and late entries; returns the records' ids in the order of the input the
/// blocks were grouped from.
fn insert_rows(db: &rusqlite::Connection, mut blocks: Vec<NewBlock>) -> rusqlite::Result<Vec<i64>> {
    let records: usize = blocks.iter().map(|b| b.rows.len()).sum();
    if records == 0 {
        return Ok(Vec::new());
    }
    // New records are numbered above every id stored and every id the
    // full-text index may already have claimed (see `LogIndex`), so no id
    // is used twice even after the newest records were deleted (their host
    // removed, retention emptied the table).
    let (max_id, claimed): (i64, i64) = db
        .prepare_cached(
            "SELECT coalesce((SELECT id FROM log_blocks ORDER BY id DESC LIMIT 1), 0), coalesce((SELECT claimed FROM logidx.logs_fts_state), 0)",
        )?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let mut next = max_id.max(claimed) + 1;
    let mut ids = vec![0i64; records];
    for b in &mut blocks {
        b.first_id = next;
        for (k, &i) in b.rows.iter().enumerate() {
            ids[i] = next + k as i64;
        }
        next += b.rows.len() as i64;
        b.last_id = next - 1;
    }
    write_blocks(db, &blocks)?;
    write_zones(db, &blocks)?;
    Ok(ids)
}

/// Inserts numbered blocks.
fn write_blocks(db: &rusqlite::Connection, blocks: &[NewBlock]) -> rusqlite::Result<()> {
    let mut put = db.prepare_cached(
        "INSERT INTO log_blocks (id, first_id, n, host_id, app_name, source, min_ts, max_ts, min_received, max_received, severities, bytes, data)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?;
    for block in blocks {
        put.execute(rusqlite::params![
            block.last_id,
            block.first_id,
            block.rows.len() as i64,
            block.host_id,
            block.app.as_deref(),
            block.source,
            block.min_ts,
            block.max_ts,
            block.min_received,
            block.max_received,
            block.severities,
            block.bytes(),
            block.data.as_slice(),
        ])?;
    }
    Ok(())
}

/// Widens the zones of the numbered `blocks`' records and lists each
/// block's late records under the block (migrations/0013_log_late.sql,
/// 0014_log_blocks.sql).
fn write_zones(db: &rusqlite::Connection, blocks: &[NewBlock]) -> rusqlite::Result<()> {
    // (block id, smallest ts, largest ts) of each block's late records.
    let mut late: Vec<(i64, i64, i64)> = Vec::new();
    let mut zones: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    for b in blocks {
        let mut span: Option<(i64, i64)> = None;
        for (k, &(ts, is_late)) in b.times.iter().enumerate() {
            if is_late {
                let s = span.get_or_insert((ts, ts));
                s.0 = s.0.min(ts);
                s.1 = s.1.max(ts);
                continue;
            }
            let z = zones
                .entry((b.first_id + k as i64) >> ZONE_SHIFT)
                .or_insert((ts, ts));
            z.0 = z.0.min(ts);
            z.1 = z.1.max(ts);
        }
        if let Some((lo, hi)) = span {
            late.push((b.last_id, lo, hi));
        }
    }
    if !late.is_empty() {
        let mut put = db.prepare_cached(
            "INSERT OR REPLACE INTO log_late (id, ts, max_ts) VALUES (?1, ?2, ?3)",
        )?;
        for (id, lo, hi) in late {
            put.execute([id, lo, hi])?;
        }
    }
    let mut put = db.prepare_cached(
        "INSERT INTO log_zones (block, min_ts, max_ts) VALUES (?1, ?2, ?3)
         ON CONFLICT (block) DO UPDATE SET min_ts = min(min_ts, excluded.min_ts), max_ts = max(max_ts, excluded.max_ts)",
    )?;
    for (zone, (lo, hi)) in zones {
        put.execute([zone, lo, hi])?;
    }
    Ok(())
}

/// Converts the row table `logs` of releases before migration 0014 into
/// blocks, keeping every record's id, in transactions of [`CONVERT_CHUNK`]
/// records, then drops it. Runs at open, before anything else writes; a
/// crash in between resumes where the last transaction left off.
pub(super) async fn convert_row_logs(pool: &SqlitePool) -> Result<()> {
    let exists: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'logs'",
    )
    .fetch_one(pool)
    .await?;
    if exists == 0 {
        return Ok(());
    }
    let mut converted = 0u64;
    loop {
        // On SQLite's handle, as ingest writes blocks (`write_blocks`).
        let n = super::direct::run(pool, convert_chunk).await?;
        if n == 0 {
            break;
        }
        converted += n;
        if converted.is_multiple_of(CONVERT_CHUNK as u64 * 50) {
            tracing::info!(
                records = converted,
                "logs: converting stored records into blocks"
            );
        }
    }
    if converted > 0 {
        tracing::info!(
            records = converted,
            "logs: stored records converted into blocks"
        );
    }
    Ok(())
}

/// Records per transaction when converting the old row table.
const CONVERT_CHUNK: i64 = 20_000;

/// Converts the oldest [`CONVERT_CHUNK`] records of the old row table in one
/// transaction, or drops the table when it is empty; returns the records
/// converted.
fn convert_chunk(db: &rusqlite::Connection) -> rusqlite::Result<u64> {
    db.execute_batch("BEGIN")?;
    let records: Vec<(i64, Option<i64>, LogSource, LogRecord)> = db
        .prepare(
            "SELECT id, host_id, source, ts, received_at, hostname, facility, severity, app_name, procid, msgid, message, structured_data, flags FROM logs ORDER BY id LIMIT ?1",
        )?
        .query_map([CONVERT_CHUNK], old_row)?
        .collect::<rusqlite::Result<_>>()?;
    let Some(last) = records.last().map(|r| r.0) else {
        db.execute_batch("DROP TABLE logs; COMMIT")?;
        return Ok(0);
    };
    let rows = records.iter().map(|(id, host_id, source, record)| {
        let row = NewLog {
            host_id: *host_id,
            record,
            source: *source,
        };
        (Some(*id), row)
    });
    write_blocks(db, &group_blocks(rows))?;
    db.execute("DELETE FROM logs WHERE id <= ?1", [last])?;
    db.execute_batch("COMMIT")?;
    Ok(records.len() as u64)
}

/// A record of the old row table.
fn old_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, Option<i64>, LogSource, LogRecord)> {
    use metrolog_protocol::syslog::Facility;
    let flags: i64 = r.get(13)?;
    let facility: Option<i64> = r.get(6)?;
    let severity: Option<i64> = r.get(7)?;
    let source = match r.get_ref(2)?.as_str()? {
        "agent" => LogSource::Agent,
        "syslog-tcp" => LogSource::SyslogTcp,
        _ => LogSource::SyslogUdp,
    };
    Ok((
        r.get(0)?,
        r.get(1)?,
        source,
        LogRecord {
            ts: r.get(3)?,
            received_at: r.get(4)?,
            hostname: r.get(5)?,
            facility: facility.and_then(|f| u8::try_from(f).ok().and_then(Facility::from_u8)),
            severity: severity.and_then(|s| u8::try_from(s).ok().and_then(Severity::from_u8)),
            app_name: r.get(8)?,
            procid: r.get(9)?,
            msgid: r.get(10)?,
            message: r.get(11)?,
            structured_data: r.get(12)?,
            truncated: flags & 1 != 0,
            invalid_utf8: flags & 2 != 0,
            unparsed: flags & 4 != 0,
        },
    ))
}

/// Inclusive id ranges, newest first, covering the zones (descending) a
/// time-filtered listing must scan; at most [`MAX_ZONE_RANGES`], by merging
/// the ranges separated by the smallest gaps.
fn id_ranges(zones: &[i64]) -> Vec<(i64, i64)> {
    // (first zone, last zone) of runs of consecutive zones, newest first.
    let mut runs: Vec<(i64, i64)> = Vec::new();
    for &b in zones {
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

impl LogFilter {
    /// The tests on one record that the block's columns cannot make.
    fn keeps(&self, r: &RecordRef<'_>, ids: Option<(i64, i64)>) -> bool {
        if self.before.is_some_and(|b| r.id >= b) {
            return false;
        }
        if ids.is_some_and(|(lo, hi)| r.id < lo || r.id > hi) {
            return false;
        }
        if self.from.is_some_and(|from| r.ts < from) || self.to.is_some_and(|to| r.ts >= to) {
            return false;
        }
        if let Some(sev) = self.severity {
            if r.severity.unwrap_or(Severity::DEFAULT) > sev {
                return false;
            }
        }
        self.search.as_ref().is_none_or(|s| s.matches(r.message))
    }
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

/// Columns of a block as the listing reads them (with its host's name).
const BLOCK_COLUMNS: &str = "b.id, b.first_id, b.host_id, h.hostname, b.source, b.app_name, b.data";

/// Decodes the block `row` (selected with [`BLOCK_COLUMNS`]) and appends the
/// records `keep` accepts to `out`.
fn decode_into(
    row: &SqliteRow,
    out: &mut Vec<LogRow>,
    mut keep: impl FnMut(&RecordRef<'_>) -> bool,
) -> Result<()> {
    let (id, first_id): (i64, i64) = (row.get(0), row.get(1));
    let host_id: Option<i64> = row.get(2);
    let host: Option<String> = row.get(3);
    let source: String = row.get(4);
    let app: Option<&str> = row.get(5);
    let data: &[u8] = row.get(6);
    let raw = log_block::unpack(data).map_err(|e| damaged(id, e))?;
    log_block::for_each(&raw, first_id, |r| {
        if keep(&r) {
            out.push(LogRow {
                id: r.id,
                host_id,
                host: host.clone(),
                source: source.clone(),
                record: r.to_record(app),
            });
        }
    })
    .map_err(|e| damaged(id, e))
}

/// The full-text document of a block: its records' messages, one a line.
fn block_text(id: i64, first_id: i64, data: &[u8]) -> Result<String> {
    let raw = log_block::unpack(data).map_err(|e| damaged(id, e))?;
    let mut text = String::with_capacity(raw.len());
    log_block::for_each(&raw, first_id, |r| {
        text.push_str(r.message);
        text.push('\n');
    })
    .map_err(|e| damaged(id, e))?;
    Ok(text)
}

fn damaged(block: i64, e: log_block::BlockError) -> StoreError {
    StoreError::Invalid(format!("log block {block}: {e}"))
}

/// Which records one listing query looks at.
#[derive(Debug, Clone, Copy)]
enum Scope {
    All,
    /// An inclusive record id range (zones of the zone map).
    Ids((i64, i64)),
}

/// Blocks fetched per query of a listing: few at first (a page of the
/// newest records is usually in the newest block), more as it goes on.
const FIRST_PAGE_BLOCKS: i64 = 4;
const MAX_PAGE_BLOCKS: i64 = 64;

/// Records indexed per indexer transaction (whole blocks, so a little more):
/// large enough that FTS5 flushes few segments, small enough that rebuilding
/// millions of records commits steadily and retention's deletions wait for
/// at most one round.
pub const INDEX_CHUNK: i64 = 20_000;
/// Deleted blocks taken out of the index per transaction.
const UNINDEX_CHUNK: i64 = 10_000;
/// Records committed but not yet indexed above which the syslog writer waits
/// for the indexer before its next commit (once the index has caught up since
/// the server started: a rebuild after an upgrade does not hold ingest up).
pub const MAX_INDEX_LAG: i64 = 500_000;
/// Longest one syslog batch waits for the indexer; it is committed anyway
/// after that, so a failing indexer slows ingest down but never stops it.
const LAG_WAIT: Duration = Duration::from_secs(2);

/// Schema of the index file. Not a sqlx migration: it is not this database's
/// file, it can always be rebuilt from the blocks, and it is dropped and
/// rebuilt rather than migrated.
///
/// `logs_fts` is contentless (`content = ''`: the text lives once, in the
/// blocks, in the other file) and holds one document per block, keyed by the
/// block's id (its last record's): the messages of its records. A word is
/// posted once per block, not once per line, and a search confirms each
/// candidate block's records on their text. `detail = none` keeps only which
/// blocks hold a token, not where (several times cheaper to build; phrases
/// are confirmed on the text, server/src/store/log_search.rs).
/// `contentless_delete = 1` lets blocks be removed by id alone, after their
/// text is gone (it needs the per-row size table, `columnsize = 1`).
///
/// `logs_fts_state` says how far the index is: every block with an id up to
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
/// the committed blocks by id. The database's pool connections ATTACH the
/// file as `logidx` for searches.
///
/// Why: one SQLite file has one writer at a time, and the postings were a
/// third of the log writer's work (docs/benchmarks.md, "Logs"). The price:
/// a committed record is missing from full-text searches until the indexer
/// reaches its block (the lag, `metrolog_logs_index_lag_records`); every
/// other filter sees it at once.
///
/// After a crash or a restart the indexer carries on from `indexed_to`,
/// which commits with the postings, so nothing is indexed twice or skipped.
#[derive(Debug)]
pub struct LogIndex {
    /// The index file's own connection; `None` once closed. Held for a whole
    /// round, so indexing and taking deleted blocks out never interleave.
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
    /// Records added to the index (in whole blocks).
    pub indexed: u64,
    /// Deleted blocks taken out of it (or off the queue, if never indexed).
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
        // Grouping and compressing run before the write lock is taken.
        let blocks = cpu(|| group_blocks(rows.iter().map(|r| (None, *r))));
        self.wait_for_log_index().await;
        let _w = self.write.lock().await;
        let t = now();
        // Integers only, so nothing to bind.
        let seen_hosts = seen_hosts
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        // `synchronous = NORMAL` for this transaction only: a failure closes
        // the connection (`direct::run`), so the setting never outlives it.
        // Should restoring FULL fail after the COMMIT (it changes a flag,
        // nothing on disk), the stored records are reported as an error.
        let result = super::direct::run(&self.pool, move |db| {
            db.execute_batch("PRAGMA synchronous = NORMAL; BEGIN")?;
            let ids = insert_rows(db, blocks)?;
            if !seen_hosts.is_empty() {
                db.execute(
                    &format!(
                        "UPDATE hosts SET last_seen = ?1 WHERE source = 'syslog' AND id IN ({seen_hosts})"
                    ),
                    [t],
                )?;
            }
            db.execute_batch("COMMIT; PRAGMA synchronous = FULL")?;
            Ok(ids)
        })
        .await;
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

    /// One indexer round: takes deleted blocks out of the full-text index,
    /// then indexes the committed blocks after the last indexed one, whole
    /// blocks up to about `max_rows` records, in one transaction of the
    /// index file.
    pub async fn index_logs(&self, max_rows: i64) -> Result<IndexRound> {
        let ix = &self.log_index;
        let mut guard = ix.conn.lock().await;
        let conn = guard.as_mut().ok_or(sqlx::Error::PoolClosed)?;
        let unindexed = self.unindex_deleted(conn).await?;
        let from = ix.indexed_to.load(Ordering::SeqCst);
        let top: i64 = sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM logsdb.log_blocks")
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
        // Claim the blocks about to be read before reading them, committed:
        // a writer that numbers records after this sees the claim and
        // numbers above it; one that numbered before holds the write lock
        // until it commits, so this round's snapshot either holds its blocks
        // or holds nothing above them (see `insert_rows`). Reading `n` does
        // not read the blobs (they are the rows' last column).
        let next: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT id, n FROM logsdb.log_blocks WHERE id > ? ORDER BY id LIMIT 4096",
        )
        .bind(from)
        .fetch_all(&mut *conn)
        .await?;
        let mut claim = top;
        let mut counted = 0;
        for (id, n) in &next {
            counted += n;
            if counted >= max_rows.max(1) {
                claim = *id;
                break;
            }
        }
        if counted < max_rows.max(1) {
            claim = next.last().map_or(top, |x| x.0);
        }
        sqlx::query("UPDATE logs_fts_state SET claimed = max(claimed, ?)")
            .bind(claim)
            .execute(&mut *conn)
            .await?;
        let mut tx = conn.begin().await?;
        // The first read of the blocks fixes this transaction's snapshot of
        // them.
        let blocks: Vec<(i64, i64, i64, Vec<u8>)> = sqlx::query_as(
            "SELECT id, first_id, n, data FROM logsdb.log_blocks WHERE id > ? AND id <= ? ORDER BY id",
        )
        .bind(from)
        .bind(claim)
        .fetch_all(&mut *tx)
        .await?;
        // A damaged block is indexed without text (found by every filter
        // but `q=`, and not retried for ever), with an error naming it.
        let docs: Vec<(i64, String)> = cpu(|| {
            blocks
                .iter()
                .map(|(id, first_id, _, data)| {
                    let text = block_text(*id, *first_id, data).unwrap_or_else(|e| {
                        tracing::error!(error = %e, "a log block cannot be read; its records are not in the full-text index");
                        String::new()
                    });
                    (*id, text)
                })
                .collect()
        });
        let last = blocks.last().map(|b| b.0);
        let indexed: i64 = blocks.iter().map(|b| b.2).sum();
        for (id, text) in &docs {
            sqlx::query("INSERT INTO logs_fts (rowid, message) VALUES (?, ?)")
                .bind(id)
                .bind(text.as_str())
                .execute(&mut *tx)
                .await?;
        }
        if let Some(last) = last {
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
        Ok(IndexRound {
            indexed: indexed as u64,
            unindexed,
        })
    }

    /// Runs indexer rounds until the index is level with the records and
    /// holds no deleted ones (tests, tools; the server's indexer task runs
    /// the rounds itself).
    pub async fn catch_up_log_index(&self) -> Result<()> {
        while self.index_logs(INDEX_CHUNK).await? != IndexRound::default() {}
        Ok(())
    }

    /// Takes blocks deleted since the last round (queued by the
    /// `log_blocks_unindex` trigger, migrations/0014_log_blocks.sql) out of the
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
        if f.host_ids.as_ref().is_some_and(Vec::is_empty) || f.limit == 0 {
            return Ok(Vec::new());
        }
        if f.from.is_none() && f.to.is_none() {
            return self.logs_in(f, Scope::All, f.limit).await;
        }
        // A time range: only the id zones whose span meets it are scanned
        // (migrations/0004_log_zones.sql), one query per run of zones,
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
        let zones: Vec<i64> = q.build_query_scalar().fetch_all(&self.pool).await?;
        let mut out = Vec::new();
        for range in id_ranges(&zones) {
            let want = f.limit.saturating_sub(out.len() as u32);
            if want == 0 {
                break;
            }
            out.extend(self.logs_in(f, Scope::Ids(range), want).await?);
        }
        // Late records are in no zone (migrations/0013_log_late.sql): the
        // newest `limit` of the blocks listed there, merged by id. A record
        // may come both ways.
        let late = self.logs_late(f).await?;
        if !late.is_empty() {
            out.extend(late);
            out.sort_unstable_by_key(|r| std::cmp::Reverse(r.id));
            out.dedup_by_key(|r| r.id);
            out.truncate(f.limit as usize);
        }
        Ok(out)
    }

    /// The WHERE terms on a block's columns that `f` implies (appended to a
    /// query selecting from `log_blocks b`).
    fn push_block_filters(q: &mut QueryBuilder<'_, Sqlite>, f: &LogFilter) {
        if let Some(ids) = &f.host_ids {
            if let [one] = ids.as_slice() {
                q.push(" AND b.host_id = ").push_bind(*one);
            } else {
                q.push(" AND b.host_id IN (");
                let mut sep = q.separated(", ");
                for id in ids {
                    sep.push_bind(*id);
                }
                q.push(")");
            }
        }
        if let Some(app) = &f.app {
            q.push(" AND b.app_name = ").push_bind(app.clone());
        }
        if let Some(sev) = f.severity {
            if sev < Severity::Debug {
                q.push(" AND b.severities & ")
                    .push_bind(log_block::severity_mask_upto(sev))
                    .push(" != 0");
            }
        }
        if let Some(from) = f.from {
            q.push(" AND b.max_ts >= ").push_bind(from);
        }
        if let Some(to) = f.to {
            q.push(" AND b.min_ts < ").push_bind(to);
        }
    }

    /// [`Store::logs`] within `scope`, at most `limit`: the blocks that may
    /// hold matches, newest first, opened one by one until `limit` records
    /// are found that no later block can outrank.
    async fn logs_in(&self, f: &LogFilter, scope: Scope, limit: u32) -> Result<Vec<LogRow>> {
        let fts = f.search.as_ref().and_then(Search::fts_match);
        // With a full-text term the index drives the scan: it yields block
        // ids in descending order; an id range is handed to it as a rowid
        // range.
        let id_col = if fts.is_some() { "f.rowid" } else { "b.id" };
        let ids = match scope {
            Scope::All => None,
            Scope::Ids(r) => Some(r),
        };
        let mut out: Vec<LogRow> = Vec::new();
        let mut below: Option<i64> = None;
        let mut page = FIRST_PAGE_BLOCKS;
        loop {
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(format!("SELECT {BLOCK_COLUMNS} "));
            match &fts {
                Some(m) => {
                    // The index is the attached file `logidx` (see `LogIndex`).
                    q.push("FROM logidx.logs_fts f JOIN log_blocks b ON b.id = f.rowid LEFT JOIN hosts h ON h.id = b.host_id WHERE logs_fts MATCH ");
                    q.push_bind(m.clone());
                }
                None => {
                    q.push("FROM log_blocks b LEFT JOIN hosts h ON h.id = b.host_id WHERE 1");
                }
            }
            if let Some(below) = below {
                q.push(format!(" AND {id_col} < ")).push_bind(below);
            }
            // A block holds ids from `first_id` to its id, less than
            // MAX_SPAN apart: the id bounds become a range of the key.
            if let Some(before) = f.before {
                q.push(format!(" AND {id_col} < "))
                    .push_bind(before.saturating_add(MAX_SPAN))
                    .push(" AND b.first_id < ")
                    .push_bind(before);
            }
            if let Some((lo, hi)) = ids {
                q.push(format!(" AND {id_col} BETWEEN "))
                    .push_bind(lo)
                    .push(" AND ")
                    .push_bind(hi.saturating_add(MAX_SPAN))
                    .push(" AND b.first_id <= ")
                    .push_bind(hi);
            }
            Self::push_block_filters(&mut q, f);
            q.push(format!(" ORDER BY {id_col} DESC LIMIT "))
                .push_bind(page);
            let rows = q.build().fetch_all(&self.pool).await?;
            let fetched = rows.len() as i64;
            for row in &rows {
                // This block and the ones after it hold only ids up to its
                // own: once `limit` records above it are found, stop.
                if out.len() >= limit as usize {
                    out.sort_unstable_by_key(|r| std::cmp::Reverse(r.id));
                    out.truncate(limit as usize);
                    if out.last().is_some_and(|r| r.id > row.get::<i64, _>(0)) {
                        return Ok(out);
                    }
                }
                decode_into(row, &mut out, |r| f.keeps(r, ids))?;
            }
            if fetched < page {
                break;
            }
            below = rows.last().map(|r| r.get(0));
            page = (page * 4).min(MAX_PAGE_BLOCKS);
        }
        out.sort_unstable_by_key(|r| std::cmp::Reverse(r.id));
        out.truncate(limit as usize);
        Ok(out)
    }

    /// The newest `f.limit` records of the blocks listed in `log_late` with
    /// a span that meets `f`'s time range and that pass `f`. An entry is
    /// keyed by its block's id (or, from before migration 0014, by one of
    /// its records' ids, which finds the block too).
    async fn logs_late(&self, f: &LogFilter) -> Result<Vec<LogRow>> {
        const PAGE: usize = 64;
        let mut out: Vec<LogRow> = Vec::new();
        let mut below: Option<i64> = f.before.map(|b| b.saturating_add(MAX_SPAN));
        loop {
            let mut q: QueryBuilder<Sqlite> =
                QueryBuilder::new("SELECT id FROM log_late k WHERE 1");
            if let Some(from) = f.from {
                q.push(" AND k.max_ts >= ").push_bind(from);
            }
            if let Some(to) = f.to {
                q.push(" AND k.ts < ").push_bind(to);
            }
            if let Some(below) = below {
                q.push(" AND k.id < ").push_bind(below);
            }
            q.push(" ORDER BY k.id DESC LIMIT ").push_bind(PAGE as i64);
            let late: Vec<i64> = q.build_query_scalar().fetch_all(&self.pool).await?;
            let Some(&lowest) = late.last() else { break };
            // Entries below what is already found cannot outrank it.
            if out.len() >= f.limit as usize
                && out[f.limit as usize - 1].id > late[0].saturating_add(MAX_SPAN)
            {
                break;
            }
            // The blocks holding those ids, each opened once.
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
                "SELECT {BLOCK_COLUMNS} FROM log_blocks b LEFT JOIN hosts h ON h.id = b.host_id WHERE b.id BETWEEN "
            ));
            q.push_bind(lowest)
                .push(" AND ")
                .push_bind(late[0].saturating_add(MAX_SPAN))
                .push(" AND b.first_id <= ")
                .push_bind(late[0])
                .push(" AND (");
            let mut sep = q.separated(" OR ");
            for id in &late {
                sep.push("(b.id >= ")
                    .push_bind_unseparated(*id)
                    .push_unseparated(" AND b.first_id <= ")
                    .push_bind_unseparated(*id)
                    .push_unseparated(")");
            }
            q.push(")");
            Self::push_block_filters(&mut q, f);
            q.push(" ORDER BY b.id DESC");
            let rows = q.build().fetch_all(&self.pool).await?;
            for row in &rows {
                decode_into(row, &mut out, |r| f.keeps(r, None))?;
            }
            out.sort_unstable_by_key(|r| std::cmp::Reverse(r.id));
            out.dedup_by_key(|r| r.id);
            if late.len() < PAGE {
                break;
            }
            below = Some(lowest);
        }
        out.truncate(f.limit as usize);
        Ok(out)
    }

    /// Retention accounting: the bytes (see [`BLOCK_OVERHEAD_BYTES`]) and
    /// the largest id of the blocks with an id above `after`.
    pub async fn log_bytes_after(&self, after: i64) -> Result<(i64, i64)> {
        let (bytes, max): (Option<i64>, Option<i64>) =
            sqlx::query_as("SELECT sum(bytes), max(id) FROM log_blocks WHERE id > ?")
                .bind(after)
                .fetch_one(&self.pool)
                .await?;
        Ok((bytes.unwrap_or(0), max.unwrap_or(after)))
    }

    /// Deletes, among the `chunk` oldest blocks, those whose newest record
    /// was received before `cutoff` (unix µs); returns (records, bytes)
    /// deleted. A block goes as a whole once all its records are past the
    /// cutoff. Only `chunk` blocks are looked at, so one call is bounded
    /// whatever the table holds.
    pub async fn prune_logs_received_before(&self, cutoff: i64, chunk: i64) -> Result<(u64, i64)> {
        self.prune_logs(
            "DELETE FROM log_blocks WHERE id IN (
               SELECT id FROM (SELECT id, max_received FROM log_blocks ORDER BY id LIMIT ?1)
               WHERE max_received < ?2)
             RETURNING n, bytes",
            chunk,
            cutoff,
        )
        .await
    }

    /// Deletes the oldest blocks that together count at least `bytes`
    /// (at least one, at most `chunk`); returns (records, bytes).
    pub async fn prune_oldest_logs(&self, bytes: i64, chunk: i64) -> Result<(u64, i64)> {
        self.prune_logs(
            "DELETE FROM log_blocks WHERE id IN (
               SELECT id FROM (SELECT id, sum(bytes) OVER (ORDER BY id) - bytes AS before
                               FROM (SELECT id, bytes FROM log_blocks ORDER BY id LIMIT ?1))
               WHERE before < ?2)
             RETURNING n, bytes",
            chunk,
            bytes.max(1),
        )
        .await
    }

    async fn prune_logs(&self, sql: &str, chunk: i64, arg: i64) -> Result<(u64, i64)> {
        let done = self.prune_logs_rows(sql, chunk, arg).await?;
        if done.0 > 0 {
            // The deleted blocks leave the full-text index too, now rather
            // than at the indexer's next round (the write lock is released:
            // the index's lock is always taken first).
            let mut guard = self.log_index.conn.lock().await;
            if let Some(conn) = guard.as_mut() {
                while self.unindex_deleted(conn).await? > 0 {}
            }
        }
        Ok(done)
    }

    async fn prune_logs_rows(&self, sql: &str, chunk: i64, arg: i64) -> Result<(u64, i64)> {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        let deleted: Vec<(i64, i64)> = sqlx::query_as(sql)
            .bind(chunk)
            .bind(arg)
            .fetch_all(&mut *tx)
            .await?;
        if !deleted.is_empty() {
            // Zones and late entries wholly below the oldest record left
            // describe nothing; all of them go once no block is left (ids may
            // then restart). The oldest record is the smallest first id of
            // the blocks within MAX_SPAN of the oldest block.
            let oldest: Option<i64> = sqlx::query_scalar(
                "SELECT min(first_id) FROM log_blocks WHERE id < (SELECT min(id) FROM log_blocks) + ?",
            )
            .bind(MAX_SPAN)
            .fetch_one(&mut *tx)
            .await?;
            let floor = oldest.unwrap_or(i64::MAX);
            sqlx::query("DELETE FROM log_zones WHERE block < ?")
                .bind(floor >> ZONE_SHIFT)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM log_late WHERE id < ?")
                .bind(floor)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok((
            deleted.iter().map(|d| d.0 as u64).sum(),
            deleted.iter().map(|d| d.1).sum(),
        ))
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
    async fn retention_deletes_oldest_blocks_and_keeps_the_index_in_step() {
        let (store, _dir) = temp_store().await;
        let recs: Vec<LogRecord> = (0..50)
            .map(|i| rec(&format!("<13>line {i} alpha")))
            .collect();
        // Five commits of ten records: five blocks.
        for batch in recs.chunks(10) {
            insert(&store, None, batch).await;
        }
        store.catch_up_log_index().await.unwrap();
        let blocks: Vec<(i64, i64, i64)> =
            sqlx::query_as("SELECT n, bytes, length(data) FROM log_blocks ORDER BY id")
                .fetch_all(&store.pool)
                .await
                .unwrap();
        assert_eq!(blocks.len(), 5);
        for (n, bytes, data) in &blocks {
            assert_eq!(*n, 10);
            assert_eq!(
                *bytes,
                data + BLOCK_OVERHEAD_BYTES + 10 * RECORD_OVERHEAD_BYTES
            );
        }
        let (bytes, max) = store.log_bytes_after(0).await.unwrap();
        assert_eq!(bytes, blocks.iter().map(|b| b.1).sum::<i64>());
        assert_eq!(max, 50);
        // One byte over: the oldest block goes, whole.
        assert_eq!(
            store.prune_oldest_logs(1, 64).await.unwrap(),
            (10, blocks[0].1)
        );
        // One byte more than a block: two go.
        let (n, b) = store.prune_oldest_logs(blocks[1].1 + 1, 64).await.unwrap();
        assert_eq!((n, b), (20, blocks[1].1 + blocks[2].1));
        // At most `chunk` blocks per call.
        assert_eq!(store.prune_oldest_logs(i64::MAX, 1).await.unwrap().0, 10);
        let left = store
            .logs(&LogFilter {
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            left.iter().map(|r| r.id).collect::<Vec<_>>(),
            (41..=50).rev().collect::<Vec<_>>()
        );
        // Nothing received before the epoch.
        assert_eq!(store.prune_logs_received_before(0, 100).await.unwrap().0, 0);
        let far = Utc::now().timestamp_micros() + 1_000_000;
        assert_eq!(
            store.prune_logs_received_before(far, 100).await.unwrap().0,
            10
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
        // The 3 000 records are blocks of MAX_BLOCK_RECORDS: a round
        // indexes whole blocks.
        let per = log_block::MAX_BLOCK_RECORDS as u64;
        assert!(per < 1000 && 3000 % per != 0);
        let first_round = 1000u64.div_ceil(per) * per;
        let round = store.index_logs(1000).await.unwrap();
        assert_eq!(round.indexed, first_round);
        assert_eq!(store.log_index_lag(), 3000 - first_round);
        let more = insert(&store, None, &recs[3000..]).await;
        store.close().await;
        drop(store);

        let store = Store::open(&url).await.unwrap();
        // It carries on from the last indexed id: nothing twice, nothing
        // skipped.
        assert_eq!(
            index_rows(&store).await,
            (first_round / per) as i64,
            "the first round's blocks"
        );
        store.catch_up_log_index().await.unwrap();
        assert_eq!(store.log_index_lag(), 0);
        assert_eq!(
            index_rows(&store).await,
            (3000u64.div_ceil(per) + 2000u64.div_ceil(per)) as i64,
            "one document per block"
        );
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
        // The 3 000 old records became blocks, ids kept.
        let ids: Vec<i64> = store
            .logs(&LogFilter {
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, (2001..=3000).rev().collect::<Vec<i64>>());
        let per = log_block::MAX_BLOCK_RECORDS as u64;
        let first_round = 1000u64.div_ceil(per) * per;
        let round = store.index_logs(1000).await.unwrap();
        assert_eq!(round.indexed, first_round);
        assert_eq!(store.log_index_lag(), 3000 - first_round);
        let new = insert(&store, None, &[rec("<13>new three")]).await;
        store.catch_up_log_index().await.unwrap();
        let found = search_ids(&store, "three", 2000).await;
        assert_eq!(found.len(), 1001);
        assert_eq!(found[0], new[0]);
        integrity_check(&store).await;
    }

    /// Rows of an older release, interleaved from three hosts, become
    /// blocks that skip ids and overlap; every listing still returns exactly
    /// the matching records, newest first, across pages.
    #[tokio::test]
    async fn converted_blocks_that_overlap_list_like_the_rows_did() {
        let (store, _dir) = temp_store().await;
        let hosts: Vec<i64> = store
            .syslog_hosts(&["a".into(), "b".into(), "c".into()])
            .await
            .unwrap()
            .into_iter()
            .map(Option::unwrap)
            .collect();
        let t0 = 1_700_000_000_000_000i64;
        sqlx::raw_sql(
            "CREATE TABLE logs (
                id INTEGER PRIMARY KEY, host_id INTEGER, ts INTEGER NOT NULL, received_at INTEGER NOT NULL,
                hostname TEXT, facility INTEGER, severity INTEGER, app_name TEXT, procid TEXT, msgid TEXT,
                message TEXT NOT NULL, structured_data TEXT, flags INTEGER NOT NULL DEFAULT 0, source TEXT NOT NULL)",
        )
        .execute(&store.pool)
        .await
        .unwrap();
        // 9 000 records; host i % 3, a gap in the ids every 7th, severities
        // cycling, the odd ones truncated.
        let n = 9000i64;
        let id_of = |i: i64| 1 + i + i / 7;
        // In statements of 1 000 rows (SQLite's argument limit).
        for part in (0..n).collect::<Vec<_>>().chunks(1000) {
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO logs (id, host_id, ts, received_at, severity, app_name, message, flags, source) ",
            );
            q.push_values(part, |mut b, &i| {
                b.push_bind(id_of(i))
                    .push_bind(hosts[(i % 3) as usize])
                    .push_bind(t0 + i * 1_000_000)
                    .push_bind(t0 + i * 1_000_000)
                    .push_bind(i % 8)
                    .push_bind(if i % 2 == 0 { "even" } else { "odd" })
                    .push_bind(format!(
                        "record {i} {}",
                        if i % 5 == 0 { "fifth" } else { "other" }
                    ))
                    .push_bind(i % 2)
                    .push_bind("syslog-tcp");
            });
            q.build().execute(&store.pool).await.unwrap();
        }
        // Their zones, as the older release kept them (0004_log_zones.sql).
        sqlx::query("INSERT INTO log_zones (block, min_ts, max_ts) SELECT id >> 12, min(ts), max(ts) FROM logs GROUP BY id >> 12")
            .execute(&store.pool)
            .await
            .unwrap();
        convert_row_logs(&store.pool).await.unwrap();
        let spans: Vec<(i64, i64)> = sqlx::query_as("SELECT first_id, id FROM log_blocks")
            .fetch_all(&store.pool)
            .await
            .unwrap();
        assert!(spans.iter().all(|(f, l)| l - f < MAX_SPAN));
        assert!(
            spans.windows(2).any(|w| w[1].0 < w[0].1),
            "streams interleave, so blocks overlap"
        );
        store.catch_up_log_index().await.unwrap();
        // Every listing equals the same filter applied to the rows, paged.
        let check = |f: LogFilter, want: Box<dyn Fn(i64) -> bool>| {
            let store = &store;
            async move {
                let expected: Vec<i64> = (0..n).rev().filter(|i| want(*i)).map(id_of).collect();
                let mut got = Vec::new();
                let mut before = None;
                loop {
                    let page = store
                        .logs(&LogFilter {
                            before,
                            limit: 97,
                            ..f.clone()
                        })
                        .await
                        .unwrap();
                    if page.is_empty() {
                        break;
                    }
                    before = page.last().map(|r| r.id);
                    got.extend(page.into_iter().map(|r| r.id));
                }
                assert_eq!(got, expected, "{f:?}");
            }
        };
        check(LogFilter::default(), Box::new(|_| true)).await;
        check(
            LogFilter {
                host_ids: Some(vec![hosts[1]]),
                ..Default::default()
            },
            Box::new(|i| i % 3 == 1),
        )
        .await;
        check(
            LogFilter {
                app: Some("odd".into()),
                severity: Some(Severity::Warning),
                ..Default::default()
            },
            Box::new(|i| i % 2 == 1 && i % 8 <= 4),
        )
        .await;
        check(
            LogFilter {
                search: Search::parse("fifth").unwrap(),
                from: Some(t0 + 1000 * 1_000_000),
                to: Some(t0 + 7000 * 1_000_000),
                ..Default::default()
            },
            Box::new(|i| i % 5 == 0 && (1000..7000).contains(&i)),
        )
        .await;
        // Fields survive the conversion.
        let one = store
            .logs(&LogFilter {
                before: Some(id_of(8999) + 1),
                limit: 1,
                ..Default::default()
            })
            .await
            .unwrap();
        let r = &one[0];
        assert_eq!((r.id, r.host_id), (id_of(8999), Some(hosts[2])));
        assert_eq!(r.record.message, "record 8999 other");
        assert_eq!(r.record.app_name.as_deref(), Some("odd"));
        assert_eq!(r.record.severity.map(|s| s.as_u8()), Some(7));
        assert!(r.record.truncated);
        assert_eq!(r.source, "syslog-tcp");
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
        // Listed once per block that holds any (each commit of 1 000 is cut
        // into blocks of MAX_BLOCK_RECORDS), under the block's last id.
        let per = log_block::MAX_BLOCK_RECORDS as i64;
        let block_end = |i: i64| i / 1000 * 1000 + ((i % 1000 / per + 1) * per).min(1000) - 1;
        let mut want_late: Vec<i64> = (0..30_000)
            .filter(|i| late(*i))
            .map(|i| ids[block_end(i) as usize])
            .collect();
        want_late.dedup();
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
        // The blocks of the first twelve commits.
        let blocks = 12 * ((1000 + per - 1) / per);
        assert_eq!(
            store.prune_oldest_logs(i64::MAX, blocks).await.unwrap().0,
            12_000
        );
        let min_block: i64 = sqlx::query_scalar("SELECT min(block) FROM log_zones")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(min_block, ids[12_000] >> 12);
        let late_left: i64 = sqlx::query_scalar("SELECT min(id) FROM log_late")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(
            late_left,
            ids[block_end(14_997) as usize],
            "late entries of pruned blocks go"
        );
        let far = Utc::now().timestamp_micros() + 1_000_000;
        while store.prune_logs_received_before(far, 5).await.unwrap().0 > 0 {}
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
