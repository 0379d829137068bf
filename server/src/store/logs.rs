//! Log records: bulk insert (agent batches and the syslog writer), the
//! filtered newest-first listing behind `/api/v1/logs`, syslog-only hosts,
//! and chunked retention. Schema and the reasons for its indexes:
//! `migrations/0002_logs.sql`.

use super::{now, Result, Store};
use crate::logs::search::Search;
use metrolog_protocol::syslog::{Facility, LogRecord, LogSource, Severity};
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};

/// Rows per multi-row INSERT (13 parameters each, well under SQLite's 32766).
const INSERT_CHUNK: usize = 1000;

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

/// Inserts `rows` in order and returns their ids, in the same order.
async fn insert_rows(conn: &mut SqliteConnection, rows: &[NewLog<'_>]) -> Result<Vec<i64>> {
    let mut ids = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(INSERT_CHUNK) {
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
        let done = q.build().execute(&mut *conn).await?;
        // `id` is a plain INTEGER PRIMARY KEY and we hold SQLite's only write
        // lock: the rows of one INSERT get consecutive ids ending at the last.
        let last = done.last_insert_rowid();
        let n = chunk.len() as i64;
        ids.extend(last - n + 1..=last);
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
    Ok(ids)
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
    /// Stores records in one transaction and returns their ids in order.
    /// The syslog hosts among `seen_hosts` get their `last_seen` refreshed
    /// (they are passive: nothing else marks them alive).
    pub async fn insert_logs(&self, rows: &[NewLog<'_>], seen_hosts: &[i64]) -> Result<Vec<i64>> {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
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
        if let Some(before) = f.before {
            q.push(if fts.is_some() {
                " AND f.rowid < "
            } else {
                " AND l.id < "
            });
            q.push_bind(before);
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
        q.push(order).push(" LIMIT ").push_bind(f.limit as i64);
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
        let sizes: Vec<i64> = sqlx::query_scalar(sql)
            .bind(chunk)
            .bind(cutoff)
            .fetch_all(&self.pool)
            .await?;
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
