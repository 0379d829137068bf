//! Log records.

use super::Result;
use metrolog_protocol::syslog::{LogRecord, LogSource};
use sqlx::{QueryBuilder, Sqlite, SqliteConnection};

/// Rows per multi-row INSERT (13 parameters each).
const INSERT_CHUNK: usize = 500;

/// Flag bits of the `flags` column.
pub const FLAG_TRUNCATED: i64 = 1;
pub const FLAG_INVALID_UTF8: i64 = 2;
pub const FLAG_UNPARSED: i64 = 4;

pub fn flags_of(r: &LogRecord) -> i64 {
    (r.truncated as i64 * FLAG_TRUNCATED)
        | (r.invalid_utf8 as i64 * FLAG_INVALID_UTF8)
        | (r.unparsed as i64 * FLAG_UNPARSED)
}

/// Inserts records inside the caller's transaction, so that an agent batch's
/// logs commit together with its metrics and its batch id.
pub(super) async fn insert_tx(
    conn: &mut SqliteConnection,
    host_id: Option<i64>,
    records: &[LogRecord],
    source: LogSource,
) -> Result<()> {
    for chunk in records.chunks(INSERT_CHUNK) {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT INTO logs (host_id, ts, received_at, hostname, facility, severity, app_name, procid, msgid, message, structured_data, flags, source) ",
        );
        q.push_values(chunk, |mut b, r| {
            b.push_bind(host_id)
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
                .push_bind(source.as_str());
        });
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}
