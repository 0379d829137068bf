//! The latest result of every check of every host (`check_results`).

use super::{Result, Store};
use metrolog_protocol::nagios::{CheckResult, CheckStatus};
use serde::Serialize;
use sqlx::Row;

/// A check's latest result, as `GET /api/v1/checks` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct CheckRow {
    pub host_id: i64,
    pub hostname: String,
    pub name: String,
    #[serde(serialize_with = "status_name")]
    pub status: CheckStatus,
    pub output: String,
    pub long_output: String,
    pub perfdata: String,
    /// Last run (unix seconds, agent clock).
    pub last_run: i64,
    pub duration_ms: i64,
    pub attempt: i64,
    pub max_attempts: i64,
    /// `hard` once `attempt` reached `max_attempts` (or the check is OK).
    pub state_type: &'static str,
    /// When the status last changed.
    pub status_since: i64,
}

fn status_name<S: serde::Serializer>(s: &CheckStatus, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s.as_str())
}

/// Stores the results of one batch, newest last; only each check's newest
/// result stays. Runs inside the batch's transaction (`direct`).
pub(super) fn upsert(
    db: &rusqlite::Connection,
    host_id: i64,
    results: &[CheckResult],
) -> rusqlite::Result<()> {
    if results.is_empty() {
        return Ok(());
    }
    let mut put = db.prepare_cached(
        "INSERT INTO check_results (host_id, name, status, output, long_output, perfdata, ts,
                                    duration_ms, attempt, max_attempts, status_since)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?7)
         ON CONFLICT (host_id, name) DO UPDATE SET
            status_since = CASE WHEN status = excluded.status THEN status_since ELSE excluded.ts END,
            status = excluded.status, output = excluded.output,
            long_output = excluded.long_output, perfdata = excluded.perfdata,
            ts = excluded.ts, duration_ms = excluded.duration_ms,
            attempt = excluded.attempt, max_attempts = excluded.max_attempts
         WHERE excluded.ts >= ts",
    )?;
    for r in results {
        put.execute(rusqlite::params![
            host_id,
            r.name.as_str(),
            i64::from(r.status.code()),
            r.output,
            r.long_output,
            r.perfdata,
            r.ts,
            i64::try_from(r.duration_ms).unwrap_or(i64::MAX),
            i64::from(r.attempt),
            i64::from(r.max_attempts),
        ])?;
    }
    Ok(())
}

impl Store {
    /// Every check's latest result, of one host or of all, by host then name.
    pub async fn check_results(&self, host_id: Option<i64>) -> Result<Vec<CheckRow>> {
        let rows = sqlx::query(
            "SELECT c.host_id, h.hostname, c.name, c.status, c.output, c.long_output, c.perfdata,
                    c.ts, c.duration_ms, c.attempt, c.max_attempts, c.status_since
             FROM check_results c JOIN hosts h ON h.id = c.host_id
             WHERE ?1 IS NULL OR c.host_id = ?1
             ORDER BY h.hostname, c.host_id, c.name",
        )
        .bind(host_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let status = CheckStatus::from_code(r.get::<i64, _>(3) as u8)
                    .unwrap_or(CheckStatus::Unknown);
                let attempt: i64 = r.get(9);
                let max_attempts: i64 = r.get(10);
                CheckRow {
                    host_id: r.get(0),
                    hostname: r.get(1),
                    name: r.get(2),
                    status,
                    output: r.get(4),
                    long_output: r.get(5),
                    perfdata: r.get(6),
                    last_run: r.get(7),
                    duration_ms: r.get(8),
                    attempt,
                    max_attempts,
                    state_type: if status == CheckStatus::Ok || attempt >= max_attempts {
                        "hard"
                    } else {
                        "soft"
                    },
                    status_since: r.get(11),
                }
            })
            .collect())
    }
}
