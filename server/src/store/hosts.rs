//! Hosts: identity, membership and liveness state.

use super::{now, Result, Store};
use crate::events::{Event, HostChange, HostChanged, HostInfo};
use metrolog_protocol::Labels;
use serde::Serialize;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HostState {
    Up,
    Down,
    Left,
}

impl HostState {
    pub fn as_str(self) -> &'static str {
        match self {
            HostState::Up => "up",
            HostState::Down => "down",
            HostState::Left => "left",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "up" => Some(HostState::Up),
            "down" => Some(HostState::Down),
            "left" => Some(HostState::Left),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HostSource {
    Agent,
    Import,
    Syslog,
}

impl HostSource {
    fn as_str(self) -> &'static str {
        match self {
            HostSource::Agent => "agent",
            HostSource::Import => "import",
            HostSource::Syslog => "syslog",
        }
    }
}

/// What an agent says about itself at enrollment.
#[derive(Debug, Clone)]
pub struct HostFacts {
    pub hostname: String,
    pub instance_id: Option<String>,
    pub group: Option<String>,
    pub labels: Labels,
    pub agent_version: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HostRow {
    pub id: i64,
    pub hostname: String,
    pub instance_id: Option<String>,
    pub group: Option<String>,
    pub labels: Labels,
    pub agent_version: Option<String>,
    pub source: String,
    pub passive: bool,
    pub state: HostState,
    pub state_since: i64,
    pub first_seen: i64,
    pub last_seen: i64,
}

#[derive(Debug, Clone, Default)]
pub struct HostFilter {
    pub group: Option<String>,
    pub state: Option<HostState>,
}

const HOST_COLUMNS: &str = "id, hostname, instance_id, group_name, labels, agent_version, source, passive, state, state_since, first_seen, last_seen";

fn host_from_row(r: &SqliteRow) -> HostRow {
    let labels: String = r.get(4);
    let state: String = r.get(8);
    HostRow {
        id: r.get(0),
        hostname: r.get(1),
        instance_id: r.get(2),
        group: r.get(3),
        labels: serde_json::from_str(&labels).unwrap_or_default(),
        agent_version: r.get(5),
        source: r.get(6),
        passive: r.get(7),
        state: HostState::parse(&state).unwrap_or(HostState::Down),
        state_since: r.get(9),
        first_seen: r.get(10),
        last_seen: r.get(11),
    }
}

impl Store {
    /// Creates the host, or finds the existing one with the same identity
    /// (instance_id when given, else hostname), refreshes its facts and marks it
    /// `up`. Returns the host id.
    pub async fn upsert_host(&self, facts: &HostFacts, source: HostSource) -> Result<i64> {
        let _w = self.write.lock().await;
        let t = now();
        let labels = serde_json::to_string(&facts.labels).unwrap_or_else(|_| "{}".into());
        let existing: Option<i64> = match &facts.instance_id {
            Some(iid) => {
                sqlx::query_scalar("SELECT id FROM hosts WHERE instance_id = ? AND kind = 'host'")
                    .bind(iid)
                    .fetch_optional(&self.pool)
                    .await?
            }
            None => sqlx::query_scalar(
                "SELECT id FROM hosts WHERE hostname = ? AND instance_id IS NULL AND kind = 'host'",
            )
            .bind(&facts.hostname)
            .fetch_optional(&self.pool)
            .await?,
        };
        let passive = source != HostSource::Agent;
        if let Some(id) = existing {
            sqlx::query(
                "UPDATE hosts SET hostname = ?, group_name = ?, labels = ?, agent_version = coalesce(?, agent_version),
                    source = ?, passive = ?, last_seen = ?,
                    state_since = CASE WHEN state = 'up' THEN state_since ELSE ? END, state = 'up'
                 WHERE id = ?",
            )
            .bind(&facts.hostname)
            .bind(&facts.group)
            .bind(&labels)
            .bind(&facts.agent_version)
            .bind(source.as_str())
            .bind(passive)
            .bind(t)
            .bind(t)
            .bind(id)
            .execute(&self.pool)
            .await?;
            self.publish_enrolled(id, facts, passive, t);
            return Ok(id);
        }
        let r = sqlx::query(
            "INSERT INTO hosts (hostname, instance_id, group_name, labels, agent_version, source, passive,
                                state, state_since, first_seen, last_seen)
             VALUES (?, ?, ?, ?, ?, ?, ?, 'up', ?, ?, ?)",
        )
        .bind(&facts.hostname)
        .bind(&facts.instance_id)
        .bind(&facts.group)
        .bind(&labels)
        .bind(&facts.agent_version)
        .bind(source.as_str())
        .bind(passive)
        .bind(t)
        .bind(t)
        .bind(t)
        .execute(&self.pool)
        .await?;
        let id = r.last_insert_rowid();
        self.publish_enrolled(id, facts, passive, t);
        Ok(id)
    }

    fn publish_enrolled(&self, id: i64, facts: &HostFacts, passive: bool, t: i64) {
        self.bus.publish(Event::Host(HostChanged {
            host_id: id,
            change: HostChange::Up,
            at: t,
            last_seen: t,
            info: Some(HostInfo {
                id,
                hostname: facts.hostname.clone(),
                instance_id: facts.instance_id.clone(),
                group: facts.group.clone(),
                labels: facts.labels.clone(),
                passive,
            }),
        }));
    }

    /// Replaces the host's agent credentials with a new one (by hash).
    pub async fn replace_agent_token(
        &self,
        host_id: i64,
        name: &str,
        token_hash: &[u8],
    ) -> Result<()> {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM tokens WHERE host_id = ? AND role = 'agent'")
            .bind(host_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO tokens (name, role, token_hash, host_id, created_at) VALUES (?, 'agent', ?, ?, ?)",
        )
        .bind(name)
        .bind(token_hash)
        .bind(host_id)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn host(&self, id: i64) -> Result<Option<HostRow>> {
        let row = sqlx::query(&format!(
            "SELECT {HOST_COLUMNS} FROM hosts WHERE id = ? AND kind = 'host'"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(host_from_row))
    }

    /// Hosts whose hostname is `name` (several when instance ids differ).
    pub async fn hosts_named(&self, name: &str) -> Result<Vec<HostRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {HOST_COLUMNS} FROM hosts WHERE hostname = ? AND kind = 'host' ORDER BY id"
        ))
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(host_from_row).collect())
    }

    pub async fn hosts(&self, filter: &HostFilter) -> Result<Vec<HostRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {HOST_COLUMNS} FROM hosts
             WHERE kind = 'host' AND (?1 IS NULL OR group_name = ?1) AND (?2 IS NULL OR state = ?2)
             ORDER BY coalesce(group_name, ''), hostname, id"
        ))
        .bind(&filter.group)
        .bind(filter.state.map(HostState::as_str))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(host_from_row).collect())
    }

    /// Graceful leave: the host is `left` (no alarm).
    pub async fn leave_host(&self, id: i64) -> Result<()> {
        let _w = self.write.lock().await;
        let t = now();
        let r = sqlx::query(
            "UPDATE hosts SET state = 'left', state_since = ?, last_seen = ? WHERE id = ?",
        )
        .bind(t)
        .bind(t)
        .bind(id)
        .execute(&self.pool)
        .await?;
        if r.rows_affected() > 0 {
            self.bus.host(id, HostChange::Left, t, t);
        }
        Ok(())
    }

    /// Marks `down` every active host silent since before `cutoff`; returns them.
    pub async fn mark_silent_down(&self, cutoff: i64) -> Result<Vec<i64>> {
        let _w = self.write.lock().await;
        let t = now();
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "UPDATE hosts SET state = 'down', state_since = ?
             WHERE state = 'up' AND passive = 0 AND kind = 'host' AND last_seen < ? RETURNING id, last_seen",
        )
        .bind(t)
        .bind(cutoff)
        .fetch_all(&self.pool)
        .await?;
        for &(id, last_seen) in &rows {
            self.bus.host(id, HostChange::Down, t, last_seen);
        }
        Ok(rows.into_iter().map(|(id, _)| id).collect())
    }

    /// Removes hosts `left` or `down` since before `cutoff`, with their series
    /// and points (by cascade). Returns the ids removed.
    pub async fn expire_hosts(&self, cutoff: i64) -> Result<Vec<i64>> {
        let _w = self.write.lock().await;
        let ids: Vec<i64> = sqlx::query_scalar(
            "DELETE FROM hosts WHERE kind = 'host' AND state IN ('left', 'down') AND state_since < ? RETURNING id",
        )
        .bind(cutoff)
        .fetch_all(&self.pool)
        .await?;
        self.forget_hosts(&ids);
        let t = now();
        for &id in &ids {
            self.bus.host(id, HostChange::Removed, t, t);
        }
        Ok(ids)
    }

    /// Removes one host with everything it owns. Returns whether it existed.
    pub async fn delete_host(&self, id: i64) -> Result<bool> {
        let _w = self.write.lock().await;
        let r = sqlx::query("DELETE FROM hosts WHERE id = ? AND kind = 'host'")
            .bind(id)
            .execute(&self.pool)
            .await?;
        self.forget_hosts(&[id]);
        if r.rows_affected() > 0 {
            let t = now();
            self.bus.host(id, HostChange::Removed, t, t);
        }
        Ok(r.rows_affected() > 0)
    }
}

/// Records a sign of life; returns whether the host came back `up` (it was
/// `down` or `left`), which the caller publishes once its transaction commits.
pub(super) fn touch(db: &rusqlite::Connection, id: i64, t: i64) -> rusqlite::Result<bool> {
    // Two statements so that the change is known exactly: the first touches
    // only a host that was not `up` (a primary-key probe that finds nothing
    // in the usual case), the second the others.
    let back = db
        .prepare_cached(
            "UPDATE hosts SET last_seen = ?1, state_since = ?1, state = 'up'
             WHERE id = ?2 AND state != 'up' RETURNING id",
        )?
        .exists(rusqlite::params![t, id])?;
    if !back {
        db.prepare_cached("UPDATE hosts SET last_seen = ?1 WHERE id = ?2")?
            .execute(rusqlite::params![t, id])?;
    }
    Ok(back)
}
