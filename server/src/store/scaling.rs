//! Scaling's SQL (migrations/0010_scaling.sql): events and their outbox rows
//! in one transaction, the API's policies, the last events the runner
//! resumes from, what the fleet records (for the policies' checks), and the
//! manual retry of a dead letter.

use super::{now, Result, Store};
use crate::scaling::event::ScalingEvent;
use crate::scaling::policy::KnownGroups;
use sqlx::Row;
use std::collections::HashMap;

/// One outbox row a scaling event makes: the event (by index in the
/// commit) to one hook.
#[derive(Debug, Clone)]
pub struct HookDelivery {
    pub event: usize,
    pub hook: String,
    pub kind: String,
}

/// A stored API policy.
#[derive(Debug, Clone)]
pub struct StoredPolicy {
    pub name: String,
    pub definition: String,
}

/// What a manual retry found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requeue {
    /// Back to pending; the receiver (lane) to wake.
    Done {
        receiver: String,
    },
    NotFound,
    /// Only dead letters are retried by hand: the state it is in.
    NotDead(String),
}

impl Store {
    /// Stores events and their deliveries in one transaction: a hook hears
    /// of an event if and only if the event is stored.
    pub async fn commit_scaling(
        &self,
        events: &[ScalingEvent],
        deliveries: &[HookDelivery],
        now_ms: i64,
    ) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        let mut bodies = Vec::with_capacity(events.len());
        for e in events {
            let body = serde_json::to_string(e).unwrap_or_else(|_| "{}".into());
            sqlx::query(
                "INSERT INTO scaling_events (id, type, group_name, policy, at, created_ms, body)
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&e.id)
            .bind(&e.kind)
            .bind(&e.group)
            .bind(&e.policy)
            .bind(e.at_secs())
            .bind(now_ms)
            .bind(&body)
            .execute(&mut *tx)
            .await?;
            bodies.push(body);
        }
        for d in deliveries {
            let (Some(e), Some(body)) = (events.get(d.event), bodies.get(d.event)) else {
                continue;
            };
            let summary = match (e.desired_size, &e.member) {
                (_, Some(m)) => format!("{} {} {}", e.kind, e.group, m.hostname),
                (Some(d), None) => format!("{} {} {} → {d}", e.kind, e.group, e.current_size),
                (None, None) => format!("{} {}", e.kind, e.group),
            };
            sqlx::query(
                "INSERT INTO outbox (receiver, kind, idempotency_key, payload, summary, state, created_ms, next_attempt_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?6)",
            )
            .bind(&d.hook)
            .bind(&d.kind)
            .bind(format!("{}/{}", e.id, d.hook))
            .bind(body)
            .bind(summary)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Events, newest first, as delivered (bodies).
    pub async fn scaling_events(
        &self,
        group: Option<&str>,
        limit: i64,
    ) -> Result<Vec<serde_json::Value>> {
        let rows = sqlx::query(
            "SELECT body FROM scaling_events WHERE (?1 IS NULL OR group_name = ?1)
             ORDER BY seq DESC LIMIT ?2",
        )
        .bind(group)
        .bind(limit.clamp(1, 10_000))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .filter_map(|r| serde_json::from_str(&r.get::<String, _>(0)).ok())
            .collect())
    }

    /// (time, type) of the scale and heal events of `policy` in
    /// `(from, to]`, newest first: the marks of its graph.
    pub async fn policy_event_times(
        &self,
        policy: &str,
        from: i64,
        to: i64,
        limit: i64,
    ) -> Result<Vec<(i64, String)>> {
        let rows = sqlx::query(
            "SELECT at, type FROM scaling_events
             WHERE policy = ?1 AND type IN ('scale_out', 'scale_in', 'heal') AND at > ?2 AND at <= ?3
             ORDER BY at DESC LIMIT ?4",
        )
        .bind(policy)
        .bind(from)
        .bind(to)
        .bind(limit.clamp(1, 10_000))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// (policy, type) → time of its last event: cooldowns and heal waits
    /// resume from these.
    pub async fn last_scaling_events(&self) -> Result<HashMap<(String, String), i64>> {
        let rows = sqlx::query(
            "SELECT policy, type, max(at) FROM scaling_events WHERE policy IS NOT NULL GROUP BY policy, type",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| ((r.get(0), r.get(1)), r.get(2)))
            .collect())
    }

    /// Removes events created before `cutoff_ms`, and the oldest beyond `keep`.
    pub async fn prune_scaling_events(&self, cutoff_ms: i64, keep: i64) -> Result<u64> {
        let _w = self.write.lock().await;
        let mut n = sqlx::query("DELETE FROM scaling_events WHERE created_ms < ?")
            .bind(cutoff_ms)
            .execute(&self.pool)
            .await?
            .rows_affected();
        n += sqlx::query(
            "DELETE FROM scaling_events WHERE seq <
                (SELECT seq FROM scaling_events ORDER BY seq DESC LIMIT 1 OFFSET ?)",
        )
        .bind(keep.max(1) - 1)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n)
    }

    pub async fn api_policies(&self) -> Result<Vec<StoredPolicy>> {
        let rows = sqlx::query("SELECT name, definition FROM scaling_policies ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| StoredPolicy {
                name: r.get(0),
                definition: r.get(1),
            })
            .collect())
    }

    /// Creates (`create = true`, refusing an existing name) or replaces a
    /// policy. False when creating a name that exists or replacing one that
    /// does not.
    pub async fn put_policy(&self, name: &str, definition: &str, create: bool) -> Result<bool> {
        let _w = self.write.lock().await;
        let t = now();
        let r = if create {
            sqlx::query(
                "INSERT INTO scaling_policies (name, definition, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)
                 ON CONFLICT (name) DO NOTHING",
            )
        } else {
            sqlx::query("UPDATE scaling_policies SET definition = ?2, updated_at = ?3 WHERE name = ?1")
        }
        .bind(name)
        .bind(definition)
        .bind(t)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn delete_policy(&self, name: &str) -> Result<bool> {
        let _w = self.write.lock().await;
        let r = sqlx::query("DELETE FROM scaling_policies WHERE name = ?")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Every group the store knows (members of any state, or recorded
    /// series), with the metric names its own series record.
    pub async fn known_groups(&self) -> Result<KnownGroups> {
        let mut out = KnownGroups::new();
        let groups: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT group_name FROM hosts WHERE kind = 'host' AND group_name IS NOT NULL
             UNION SELECT hostname FROM hosts WHERE kind = 'group'",
        )
        .fetch_all(&self.pool)
        .await?;
        for g in groups {
            out.entry(g).or_default();
        }
        let rows = sqlx::query(
            "SELECT DISTINCT h.hostname, s.name FROM hosts h JOIN series s ON s.host_id = h.id
             WHERE h.kind = 'group' AND s.name != ?",
        )
        .bind(crate::groups::MEMBERS_SERIES)
        .fetch_all(&self.pool)
        .await?;
        for r in rows {
            out.entry(r.get(0)).or_default().insert(r.get(1));
        }
        Ok(out)
    }

    /// The id of series `name{labels}` of host `host_id`, if it exists.
    pub async fn series_id(
        &self,
        host_id: i64,
        name: &str,
        labels: &metrolog_protocol::Labels,
    ) -> Result<Option<i64>> {
        Ok(self
            .series(Some(host_id), Some(name))
            .await?
            .into_iter()
            .find(|s| &s.labels == labels)
            .map(|s| s.id))
    }

    /// Sends a dead letter back to pending (an operator's retry): its
    /// attempts are kept and its retry schedule starts again now.
    pub async fn requeue_delivery(&self, id: i64, now_ms: i64) -> Result<Requeue> {
        let _w = self.write.lock().await;
        let row = sqlx::query("SELECT receiver, state FROM outbox WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else {
            return Ok(Requeue::NotFound);
        };
        let (receiver, state): (String, String) = (row.get(0), row.get(1));
        if state != "dead" {
            return Ok(Requeue::NotDead(state));
        }
        sqlx::query(
            "UPDATE outbox SET state = 'pending', next_attempt_ms = ?2, requeued_ms = ?2, done_ms = NULL
             WHERE id = ?1 AND state = 'dead'",
        )
        .bind(id)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(Requeue::Done { receiver })
    }
}
