//! The outbox's SQL (migrations/0009_outbox.sql): alerts fanned out to the
//! receivers inside the alarm commit's transaction, the groups' flushes
//! into deliveries, the worker's claims and attempts, the API's listing and
//! retention.

use super::{Result, Store};
use crate::notify::retry::Verdict;
use crate::notify::{AlertNotice, AlertState, AlertStatus};
use serde::Serialize;
use sqlx::Row;
use std::collections::HashMap;

/// Attempts kept per delivery: the first and the latest.
pub const MAX_ATTEMPT_ROWS: i64 = 64;

/// Fans notices out to every receiver, in the caller's transaction.
pub(crate) async fn enqueue_alerts(
    conn: &mut sqlx::SqliteConnection,
    alerts: &[AlertNotice],
    now_ms: i64,
) -> Result<()> {
    for a in alerts {
        // Only notification receivers: scaling hooks share the table (and the
        // outbox) but hear of scaling events, not alerts. (The WHERE also lets
        // SQLite tell the upsert's ON from a join's.)
        sqlx::query(
            "INSERT INTO notify_alerts (receiver, fingerprint, status, labels, annotations, starts_at, ends_at,
                                        generator_url, muted, seq, updated_ms)
             SELECT name, ?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, 1, ?8 FROM notify_receivers
             WHERE kind IN ('webhook', 'alertmanager')
             ON CONFLICT (receiver, fingerprint) DO UPDATE SET
                status = excluded.status, labels = excluded.labels, annotations = excluded.annotations,
                starts_at = excluded.starts_at, ends_at = excluded.ends_at,
                generator_url = excluded.generator_url, seq = notify_alerts.seq + 1,
                updated_ms = excluded.updated_ms,
                -- A new episode starts unmuted; the alarm side re-mutes it if needed.
                muted = CASE WHEN excluded.status = 'firing' AND notify_alerts.status = 'resolved'
                             THEN 0 ELSE notify_alerts.muted END",
        )
        .bind(&a.fingerprint)
        .bind(a.status.as_str())
        .bind(serde_json::to_string(&a.labels).unwrap_or_else(|_| "{}".into()))
        .bind(serde_json::to_string(&a.annotations).unwrap_or_else(|_| "{}".into()))
        .bind(a.starts_at)
        .bind(a.ends_at)
        .bind(&a.generator_url)
        .bind(now_ms)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Holds (or releases) the repeats of an alert, for every receiver.
pub(crate) async fn set_muted(
    conn: &mut sqlx::SqliteConnection,
    fingerprint: &str,
    muted: bool,
) -> Result<()> {
    sqlx::query("UPDATE notify_alerts SET muted = ? WHERE fingerprint = ?")
        .bind(muted)
        .bind(fingerprint)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A delivery as the worker sends it.
#[derive(Debug, Clone)]
pub struct DeliveryRow {
    pub id: i64,
    pub receiver: String,
    pub kind: String,
    pub idempotency_key: String,
    pub payload: String,
    pub attempts: u32,
    pub created_ms: i64,
    pub next_attempt_ms: i64,
}

/// One attempt, as recorded.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptRow {
    pub at_ms: i64,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub latency_ms: i64,
    pub excerpt: String,
}

/// A delivery as the API lists it.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryView {
    pub id: i64,
    pub receiver: String,
    pub kind: String,
    pub idempotency_key: String,
    pub state: String,
    pub summary: String,
    pub attempt_count: u32,
    pub created_ms: i64,
    pub next_attempt_ms: Option<i64>,
    pub done_ms: Option<i64>,
    pub last_error: Option<String>,
    pub payload: serde_json::Value,
    pub attempts: Vec<AttemptRow>,
}

/// What one group's flush writes, in one transaction.
#[derive(Debug, Clone, Default)]
pub struct Flush {
    pub receiver: String,
    pub kind: String,
    pub group_key: String,
    /// (payload, summary) of each delivery, in sending order.
    pub bodies: Vec<(String, String)>,
    /// (fingerprint, seq) put in the bodies.
    pub sent: Vec<(String, i64)>,
    /// (fingerprint, seq) of resolved alerts now told (or never to be told).
    pub forget: Vec<(String, i64)>,
    /// No alert is left in the group: its row goes too.
    pub group_empty: bool,
    pub now_ms: i64,
}

#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub receiver: Option<String>,
    pub state: Option<String>,
    pub limit: i64,
}

fn alert_state(r: &sqlx::sqlite::SqliteRow) -> AlertState {
    let labels: String = r.get(2);
    let annotations: String = r.get(3);
    let status: String = r.get(1);
    AlertState {
        fingerprint: r.get(0),
        status: AlertStatus::parse(&status),
        labels: serde_json::from_str(&labels).unwrap_or_default(),
        annotations: serde_json::from_str(&annotations).unwrap_or_default(),
        starts_at: r.get(4),
        ends_at: r.get(5),
        generator_url: r.get(6),
        muted: r.get(7),
        seq: r.get(8),
        updated_ms: r.get(9),
        sent_seq: r.get(10),
    }
}

impl Store {
    /// Makes `notify_receivers` the configured `(name, kind)` list. A removed
    /// receiver loses its alert state; pending deliveries of a removed
    /// receiver, or of one whose kind changed, become dead letters. Returns
    /// how many.
    pub async fn sync_receivers(&self, receivers: &[(String, String)], now_ms: i64) -> Result<u64> {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        let names = serde_json::to_string(&receivers.iter().map(|r| &r.0).collect::<Vec<_>>())
            .unwrap_or_else(|_| "[]".into());
        sqlx::query(
            "DELETE FROM notify_receivers WHERE name NOT IN (SELECT value FROM json_each(?))",
        )
        .bind(&names)
        .execute(&mut *tx)
        .await?;
        let mut dead = 0;
        for (name, kind) in receivers {
            sqlx::query(
                "INSERT INTO notify_receivers (name, kind) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET kind = excluded.kind",
            )
            .bind(name)
            .bind(kind)
            .execute(&mut *tx)
            .await?;
            dead += sqlx::query(
                "UPDATE outbox SET state = 'dead', done_ms = ?3,
                        last_error = 'the receiver''s kind changed in the configuration (was ' || kind || ')'
                 WHERE state = 'pending' AND receiver = ?1 AND kind != ?2",
            )
            .bind(name)
            .bind(kind)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        dead += sqlx::query(
            "UPDATE outbox SET state = 'dead', done_ms = ?2,
                    last_error = 'the receiver was removed from the configuration'
             WHERE state = 'pending' AND receiver NOT IN (SELECT value FROM json_each(?1))",
        )
        .bind(&names)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(dead)
    }

    /// Writes notices as the alarm commit does (tests of the planner).
    #[cfg(test)]
    pub(crate) async fn enqueue_alerts_for_test(&self, notices: &[AlertNotice], now_ms: i64) {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin().await.unwrap();
        enqueue_alerts(&mut tx, notices, now_ms).await.unwrap();
        tx.commit().await.unwrap();
    }

    /// What a receiver knows of every alert it has state for.
    pub async fn receiver_alerts(&self, receiver: &str) -> Result<Vec<AlertState>> {
        let rows = sqlx::query(
            "SELECT fingerprint, status, labels, annotations, starts_at, ends_at, generator_url, muted,
                    seq, updated_ms, sent_seq
             FROM notify_alerts WHERE receiver = ?",
        )
        .bind(receiver)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(alert_state).collect())
    }

    /// A receiver's alerts changed since they were last put in a delivery:
    /// what a planning pass woken by the alarm commit looks at.
    pub async fn changed_alerts(&self, receiver: &str) -> Result<Vec<AlertState>> {
        let rows = sqlx::query(
            "SELECT fingerprint, status, labels, annotations, starts_at, ends_at, generator_url, muted,
                    seq, updated_ms, sent_seq
             FROM notify_alerts WHERE receiver = ? AND (sent_seq IS NULL OR sent_seq != seq)",
        )
        .bind(receiver)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(alert_state).collect())
    }

    /// group key → last flush (ms), of one receiver.
    pub async fn receiver_groups(&self, receiver: &str) -> Result<HashMap<String, i64>> {
        let rows =
            sqlx::query("SELECT group_key, flushed_ms FROM notify_groups WHERE receiver = ?")
                .bind(receiver)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Several groups' flushes in one transaction; the ids built per flush.
    pub async fn flush_groups(&self, flushes: &[Flush]) -> Result<Vec<Vec<i64>>> {
        if flushes.is_empty() {
            return Ok(Vec::new());
        }
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        let mut out = Vec::with_capacity(flushes.len());
        for f in flushes {
            out.push(flush_one(&mut tx, f).await?);
        }
        tx.commit().await?;
        Ok(out)
    }
}

/// One group's flush, inside the caller's transaction.
async fn flush_one(tx: &mut sqlx::SqliteConnection, f: &Flush) -> Result<Vec<i64>> {
    let mut ids = Vec::new();
    for (payload, summary) in &f.bodies {
        let id: i64 = sqlx::query_scalar(
                "INSERT INTO outbox (receiver, kind, idempotency_key, payload, summary, state, created_ms, next_attempt_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?6) RETURNING id",
            )
            .bind(&f.receiver)
            .bind(&f.kind)
            .bind(format!("mlg_{}", crate::auth::random_string(16)))
            .bind(payload)
            .bind(summary)
            .bind(f.now_ms)
            .fetch_one(&mut *tx)
            .await?;
        ids.push(id);
    }
    for (fp, seq) in &f.sent {
        sqlx::query(
                "UPDATE notify_alerts SET sent_seq = ?3, sent_ms = ?4 WHERE receiver = ?1 AND fingerprint = ?2",
            )
            .bind(&f.receiver)
            .bind(fp)
            .bind(seq)
            .bind(f.now_ms)
            .execute(&mut *tx)
            .await?;
    }
    for (fp, seq) in &f.forget {
        // Only if no notice came since it was read.
        sqlx::query(
            "DELETE FROM notify_alerts WHERE receiver = ?1 AND fingerprint = ?2 AND seq = ?3",
        )
        .bind(&f.receiver)
        .bind(fp)
        .bind(seq)
        .execute(&mut *tx)
        .await?;
    }
    if f.group_empty {
        sqlx::query("DELETE FROM notify_groups WHERE receiver = ? AND group_key = ?")
            .bind(&f.receiver)
            .bind(&f.group_key)
            .execute(&mut *tx)
            .await?;
    } else if !f.bodies.is_empty() {
        sqlx::query(
            "INSERT INTO notify_groups (receiver, group_key, flushed_ms) VALUES (?, ?, ?)
                 ON CONFLICT (receiver, group_key) DO UPDATE SET flushed_ms = excluded.flushed_ms",
        )
        .bind(&f.receiver)
        .bind(&f.group_key)
        .bind(f.now_ms)
        .execute(&mut *tx)
        .await?;
    }
    Ok(ids)
}

/// One attempt and its verdict, inside the caller's transaction.
async fn record_one(
    tx: &mut sqlx::SqliteConnection,
    id: i64,
    a: &AttemptRow,
    verdict: &Verdict,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO outbox_attempts (delivery_id, at_ms, status, error, latency_ms, excerpt)
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(id)
    .bind(a.at_ms)
    .bind(a.status.map(i64::from))
    .bind(&a.error)
    .bind(a.latency_ms)
    .bind(&a.excerpt)
    .execute(&mut *tx)
    .await?;
    let done = a.at_ms + a.latency_ms;
    let (state, next, done_ms, error) = match verdict {
        Verdict::Delivered => ("delivered", done, Some(done), None),
        Verdict::Retry { at_ms, reason } => ("pending", *at_ms, None, Some(reason.as_str())),
        Verdict::Dead { reason } => ("dead", done, Some(done), Some(reason.as_str())),
    };
    sqlx::query(
        "UPDATE outbox SET state = ?2, attempts = attempts + 1, next_attempt_ms = ?3, done_ms = ?4,
                last_error = coalesce(?5, last_error)
         WHERE id = ?1",
    )
    .bind(id)
    .bind(state)
    .bind(next)
    .bind(done_ms)
    .bind(error)
    .execute(&mut *tx)
    .await?;
    // Keep the first attempt and the latest ones.
    sqlx::query(
        "DELETE FROM outbox_attempts WHERE delivery_id = ?1
           AND id != (SELECT min(id) FROM outbox_attempts WHERE delivery_id = ?1)
           AND id NOT IN (SELECT id FROM outbox_attempts WHERE delivery_id = ?1 ORDER BY id DESC LIMIT ?2)",
    )
    .bind(id)
    .bind(MAX_ATTEMPT_ROWS - 1)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

impl Store {
    /// Removes group rows of a receiver that no alert belongs to any more.
    pub async fn forget_groups(&self, receiver: &str, keys: &[String]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let _w = self.write.lock().await;
        sqlx::query(
            "DELETE FROM notify_groups WHERE receiver = ?1 AND group_key IN (SELECT value FROM json_each(?2))",
        )
        .bind(receiver)
        .bind(serde_json::to_string(keys).unwrap_or_else(|_| "[]".into()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A receiver's oldest pending deliveries after id `after` (0: from the
    /// start), at most `limit`: deliveries of one receiver go out in order.
    pub async fn next_deliveries(
        &self,
        receiver: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<DeliveryRow>> {
        let rows = sqlx::query(
            // A delivery an operator retried counts its schedule from then.
            "SELECT id, receiver, kind, idempotency_key, payload, attempts, coalesce(requeued_ms, created_ms),
                    next_attempt_ms
             FROM outbox WHERE state = 'pending' AND receiver = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
        )
        .bind(receiver)
        .bind(after)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| DeliveryRow {
                id: r.get(0),
                receiver: r.get(1),
                kind: r.get(2),
                idempotency_key: r.get(3),
                payload: r.get(4),
                attempts: u32::try_from(r.get::<i64, _>(5)).unwrap_or(0),
                created_ms: r.get(6),
                next_attempt_ms: r.get(7),
            })
            .collect())
    }

    /// Records several attempts (delivery id, attempt, verdict) and what each
    /// decided, in one transaction: a receiver that keeps up with an alarm
    /// storm costs one commit per round of sends, not one per delivery.
    pub async fn record_attempts(&self, attempts: &[(i64, AttemptRow, Verdict)]) -> Result<()> {
        if attempts.is_empty() {
            return Ok(());
        }
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        for (id, a, verdict) in attempts {
            record_one(&mut tx, *id, a, verdict).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Deliveries, newest first, with their attempts.
    pub async fn deliveries(&self, f: &DeliveryFilter) -> Result<Vec<DeliveryView>> {
        let rows = sqlx::query(
            "SELECT id, receiver, kind, idempotency_key, state, summary, attempts, created_ms, next_attempt_ms,
                    done_ms, last_error, payload
             FROM outbox WHERE (?1 IS NULL OR receiver = ?1) AND (?2 IS NULL OR state = ?2)
             ORDER BY id DESC LIMIT ?3",
        )
        .bind(&f.receiver)
        .bind(&f.state)
        .bind(f.limit.clamp(1, 1000))
        .fetch_all(&self.pool)
        .await?;
        let mut out: Vec<DeliveryView> = rows
            .iter()
            .map(|r| {
                let state: String = r.get(4);
                let payload: String = r.get(11);
                DeliveryView {
                    id: r.get(0),
                    receiver: r.get(1),
                    kind: r.get(2),
                    idempotency_key: r.get(3),
                    next_attempt_ms: (state == "pending").then(|| r.get(8)),
                    state,
                    summary: r.get(5),
                    attempt_count: u32::try_from(r.get::<i64, _>(6)).unwrap_or(0),
                    created_ms: r.get(7),
                    done_ms: r.get(9),
                    last_error: r.get(10),
                    payload: serde_json::from_str(&payload)
                        .unwrap_or(serde_json::Value::String(payload)),
                    attempts: Vec::new(),
                }
            })
            .collect();
        if out.is_empty() {
            return Ok(out);
        }
        let ids: Vec<i64> = out.iter().map(|d| d.id).collect();
        let rows = sqlx::query(
            "SELECT delivery_id, at_ms, status, error, latency_ms, excerpt FROM outbox_attempts
             WHERE delivery_id IN (SELECT value FROM json_each(?)) ORDER BY id",
        )
        .bind(serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into()))
        .fetch_all(&self.pool)
        .await?;
        let index: HashMap<i64, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        for r in rows {
            if let Some(i) = index.get(&r.get::<i64, _>(0)) {
                out[*i].attempts.push(AttemptRow {
                    at_ms: r.get(1),
                    status: r
                        .get::<Option<i64>, _>(2)
                        .and_then(|s| u16::try_from(s).ok()),
                    error: r.get(3),
                    latency_ms: r.get(4),
                    excerpt: r.get(5),
                });
            }
        }
        Ok(out)
    }

    /// Pending deliveries, all receivers.
    pub async fn outbox_backlog(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE state = 'pending'")
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Removes delivered and dead deliveries done before `cutoff_ms`, and
    /// the oldest beyond `keep` of them; their attempts go with them.
    pub async fn prune_outbox(&self, cutoff_ms: i64, keep: i64) -> Result<u64> {
        let _w = self.write.lock().await;
        let mut n = sqlx::query("DELETE FROM outbox WHERE state != 'pending' AND done_ms < ?")
            .bind(cutoff_ms)
            .execute(&self.pool)
            .await?
            .rows_affected();
        n += sqlx::query(
            "DELETE FROM outbox WHERE state != 'pending' AND id <
                (SELECT id FROM outbox WHERE state != 'pending' ORDER BY id DESC LIMIT 1 OFFSET ?)",
        )
        .bind(keep.max(1) - 1)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n)
    }
}
