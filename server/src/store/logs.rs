//! Log records: bulk insert (agent batches and the syslog writer), the
//! filtered newest-first listing behind `/api/v1/logs`, syslog-only hosts,
//! and chunked retention. Schema and the reasons for its indexes:
//! `migrations/0002_logs.sql`; the zone map behind time-range filters:
//! `migrations/0004_log_zones.sql`.

use super::{now, Result, Store};
use crate::logs::search::Search;
use metrolog_protocol::syslog::{Facility, LogRecord, LogSource, Severity};
use sqlx::sqlite::SqliteRow;
use sqlx::{Connection, QueryBuilder, Row, Sqlite, SqliteConnection};

/// Rows per multi-row INSERT (13 parameters each, well under SQLite's 32766).
const INSERT_CHUNK: usize = 1000;

/// A zone of `log_zones` covers the ids `block << ZONE_SHIFT` and the
/// following `1 << ZONE_SHIFT - 1` (see migrations/0004_log_zones.sql).
const ZONE_SHIFT: u32 = 12;
/// Most separate id ranges one time-filtered listing queries; closer ranges
/// are merged beyond that (scanning a gap costs less than many queries).
const MAX_ZONE_RANGES: usize = 16;

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
    q.push_values(chunk, |mut b, row| {
        let r = row.record;
        b.push_bind(row.host_id)
            .push_bind(r.ts)
            .push_bind(r.received_at)
            .push_bind(&r.hostname)
            .push_bind(r.facility.map(|f| f.as_u8() as i64))
            .push_bind(r.severity.map(|s| s.as_u8() as i64))
            .push_bind(&r.app_name)
            .push_bind(&r.procid)
            .push_bind(&r.msgid)
            .push_bind(&r.message)
            .push_bind(&r.structured_data)
            .push_bind(flags_of(r))
            .push_bind(row.source.as_str());
    });
    q
}

/// Inserts `rows` in order and returns their ids, in the same order.
async fn insert_rows(conn: &mut SqliteConnection, rows: &[NewLog<'_>]) -> Result<Vec<i64>> {
    let mut ids = Vec::with_capacity(rows.len());
    let mut chunks = rows.chunks(INSERT_CHUNK);
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
    if let (Some(first), Some(last)) = (ids.first(), ids.last()) {
        // One statement indexes the whole batch (see migrations/0002_logs.sql).
        sqlx::query(
            "INSERT INTO logs_fts (rowid, message) SELECT id, message FROM logs WHERE id BETWEEN ? AND ?",
        )
        .bind(first)
        .bind(last)
        .execute(&mut *conn)
        .await?;
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

/// (block, smallest ts, largest ts) of the blocks `ids` fall in; `ids` ascend.
fn zones_of(ids: &[i64], rows: &[NewLog<'_>]) -> Vec<(i64, i64, i64)> {
    let mut out: Vec<(i64, i64, i64)> = Vec::new();
    for (id, row) in ids.iter().zip(rows) {
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
        result
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
            return self.logs_in(f, None, f.limit).await;
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
            out.extend(self.logs_in(f, Some(range), want).await?);
        }
        Ok(out)
    }

    /// [`Store::logs`] within the inclusive id range `ids`, at most `limit`.
    async fn logs_in(
        &self,
        f: &LogFilter,
        ids: Option<(i64, i64)>,
        limit: u32,
    ) -> Result<Vec<LogRow>> {
        let fts = f.search.as_ref().and_then(Search::fts_match);
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(format!("SELECT {LOG_COLUMNS} "));
        // With a full-text term the index drives the scan: it yields rowids
        // in descending order and the LIMIT stops it early.
        let order = match &fts {
            Some(m) => {
                q.push("FROM logs_fts f JOIN logs l ON l.id = f.rowid LEFT JOIN hosts h ON h.id = l.host_id WHERE logs_fts MATCH ");
                q.push_bind(m.clone());
                " ORDER BY f.rowid DESC"
            }
            None => {
                q.push("FROM logs l LEFT JOIN hosts h ON h.id = l.host_id WHERE 1");
                " ORDER BY l.id DESC"
            }
        };
        let id_col = if fts.is_some() { "f.rowid" } else { "l.id" };
        if let Some(before) = f.before {
            q.push(format!(" AND {id_col} < ")).push_bind(before);
        }
        if let Some((lo, hi)) = ids {
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
        // The index is consistent with its content table.
        sqlx::query("INSERT INTO logs_fts(logs_fts, rank) VALUES ('integrity-check', 1)")
            .execute(&store.pool)
            .await
            .unwrap();
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
        let ts_of = |i: i64| {
            if i % 4999 == 0 {
                t0 - 3_600_000_000 + i
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
        let zones: i64 = sqlx::query_scalar("SELECT count(*) FROM log_zones")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(zones, (ids[ids.len() - 1] >> 12) - (ids[0] >> 12) + 1);
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
        check(None, Some(t0 + 2_000_000), Some("delta"), 1000).await;
        assert_eq!(check(Some(t0 + 40_000_000), None, None, 10).await, 0);
        // Retention drops the zones below the oldest record left.
        store.prune_oldest_logs(12_000).await.unwrap();
        let min_block: i64 = sqlx::query_scalar("SELECT min(block) FROM log_zones")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(min_block, ids[12_000] >> 12);
        let far = Utc::now().timestamp_micros() + 1_000_000;
        while store.prune_logs_received_before(far, 5000).await.unwrap().0 > 0 {}
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM log_zones")
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
