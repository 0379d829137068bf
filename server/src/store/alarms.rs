//! Alarms and their history, silences, and the rules the API created.
//!
//! The alarm evaluator owns the alarms' live state and writes it back here
//! with every change ([`Store::commit_alarms`]): the row, its transitions and
//! the outbox rows of its notices in one transaction. The API reads from here.

use super::{now, Result, Store};
use crate::alarms::evaluator::{AlarmWrite, HostEntry};
use crate::alarms::flap::FlapHistory;
use crate::alarms::machine::{Ack, Alarm, Subject};
use crate::alarms::silence::MatcherSpec;
use crate::alarms::Status;
use crate::store::HostState;
use metrolog_protocol::Labels;
use serde::Serialize;
use sqlx::Row;

/// An alarm as the API lists it.
#[derive(Debug, Clone, Serialize)]
pub struct AlarmRow {
    pub id: i64,
    pub rule: String,
    pub subject: String,
    pub host_id: Option<i64>,
    pub hostname: Option<String>,
    pub group: Option<String>,
    pub state: String,
    /// `hard` or `soft`.
    pub state_type: &'static str,
    pub attempt: i64,
    pub since: i64,
    pub updated_at: i64,
    pub value: Option<f64>,
    pub output: String,
    pub labels: Labels,
    pub flapping: bool,
    pub notified_state: Option<String>,
    pub acknowledged_by: Option<String>,
    pub ack_comment: Option<String>,
    pub acknowledged_at: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TransitionRow {
    pub id: i64,
    pub alarm_id: i64,
    pub rule: String,
    pub subject: String,
    /// The host's name, for a host's alarm.
    pub hostname: Option<String>,
    pub at: i64,
    pub from: String,
    pub to: String,
    pub state_type: &'static str,
    pub value: Option<f64>,
    pub output: String,
    pub note: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SilenceRow {
    pub id: i64,
    pub matchers: Vec<MatcherSpec>,
    pub starts_at: i64,
    pub ends_at: i64,
    pub created_by: String,
    pub comment: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct StoredRule {
    pub name: String,
    pub definition: String,
    pub created_at: i64,
    pub updated_at: i64,
}

fn status(text: &str) -> Status {
    Status::parse(text).unwrap_or(Status::Unknown)
}

fn state_type(hard: bool) -> &'static str {
    if hard {
        "hard"
    } else {
        "soft"
    }
}

const ALARM_COLUMNS: &str = "a.id, a.rule, a.subject, a.host_id, h.hostname, coalesce(a.group_name, h.group_name), a.state, a.hard,
    a.attempt, a.since, a.updated_at, a.value, a.output, a.labels, a.flapping, a.notified_state,
    a.ack_by, a.ack_comment, a.ack_at, a.flap_history, a.notified_at, a.fired_at";

fn alarm_row(r: &sqlx::sqlite::SqliteRow) -> AlarmRow {
    let labels: String = r.get(13);
    let hard: bool = r.get(7);
    AlarmRow {
        id: r.get(0),
        rule: r.get(1),
        subject: r.get(2),
        host_id: r.get(3),
        hostname: r.get(4),
        group: r.get(5),
        state: r.get(6),
        state_type: state_type(hard),
        attempt: r.get(8),
        since: r.get(9),
        updated_at: r.get(10),
        value: r.get(11),
        output: r.get(12),
        labels: serde_json::from_str(&labels).unwrap_or_default(),
        flapping: r.get(14),
        notified_state: r.get(15),
        acknowledged_by: r.get(16),
        ack_comment: r.get(17),
        acknowledged_at: r.get(18),
    }
}

impl Store {
    /// Every alarm's durable state, for the evaluator's start.
    pub async fn load_alarms(&self) -> Result<Vec<Alarm>> {
        let rows = sqlx::query(&format!(
            "SELECT {ALARM_COLUMNS} FROM alarms a LEFT JOIN hosts h ON h.id = a.host_id"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let row = alarm_row(r);
                let subject = Subject::parse(&row.subject)?;
                let flap: String = r.get(19);
                let by: Option<String> = row.acknowledged_by.clone();
                Some(Alarm {
                    id: row.id,
                    rule: row.rule,
                    subject,
                    state: status(&row.state),
                    hard: row.state_type == "hard",
                    attempt: row.attempt.clamp(1, i64::from(u32::MAX)) as u32,
                    since: row.since,
                    updated_at: row.updated_at,
                    value: row.value,
                    output: row.output,
                    labels: row.labels,
                    flap: FlapHistory::from_text(&flap),
                    flapping: row.flapping,
                    notified: row.notified_state.as_deref().map(status),
                    notified_at: r.get(20),
                    fired_at: r.get(21),
                    ack: by.map(|by| Ack {
                        by,
                        comment: row.ack_comment.unwrap_or_default(),
                        at: row.acknowledged_at.unwrap_or(0),
                    }),
                    muted: false,
                })
            })
            .collect())
    }

    /// Writes alarm changes: rows, transitions, and the outbox rows of their
    /// notices, all in one transaction. Returns each alarm's id, in order.
    pub async fn commit_alarms(&self, writes: &[AlarmWrite], now_ms: i64) -> Result<Vec<i64>> {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        let mut ids = Vec::with_capacity(writes.len());
        for w in writes {
            let a = &w.alarm;
            let (host_id, group) = match &a.subject {
                Subject::Host { id, .. } => (Some(*id), None),
                Subject::Group(g) => (None, Some(g.clone())),
            };
            let labels = serde_json::to_string(&a.labels).unwrap_or_else(|_| "{}".into());
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO alarms (rule, subject, host_id, group_name, state, hard, attempt, since, updated_at,
                                     value, output, labels, flap_history, flapping, notified_state, notified_at,
                                     fired_at, ack_by, ack_comment, ack_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)
                 ON CONFLICT (rule, subject) DO UPDATE SET
                    state = excluded.state, hard = excluded.hard, attempt = excluded.attempt,
                    since = excluded.since, updated_at = excluded.updated_at, value = excluded.value,
                    output = excluded.output, labels = excluded.labels, flap_history = excluded.flap_history,
                    flapping = excluded.flapping, notified_state = excluded.notified_state,
                    notified_at = excluded.notified_at, fired_at = excluded.fired_at,
                    ack_by = excluded.ack_by, ack_comment = excluded.ack_comment, ack_at = excluded.ack_at
                 RETURNING id",
            )
            .bind(&a.rule)
            .bind(a.subject.key())
            .bind(host_id)
            .bind(group)
            .bind(a.state.as_str())
            .bind(a.hard)
            .bind(i64::from(a.attempt))
            .bind(a.since)
            .bind(a.updated_at)
            .bind(a.value.filter(|v| v.is_finite()))
            .bind(&a.output)
            .bind(labels)
            .bind(a.flap.to_text())
            .bind(a.flapping)
            .bind(a.notified.map(|s| s.as_str()))
            .bind(a.notified_at)
            .bind(a.fired_at)
            .bind(a.ack.as_ref().map(|k| k.by.clone()))
            .bind(a.ack.as_ref().map(|k| k.comment.clone()))
            .bind(a.ack.as_ref().map(|k| k.at))
            .fetch_one(&mut *tx)
            .await?;
            for t in &w.effects.transitions {
                sqlx::query(
                    "INSERT INTO alarm_transitions (alarm_id, at, from_state, to_state, hard, value, output, note)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(id)
                .bind(t.at)
                .bind(t.from.as_str())
                .bind(t.to.as_str())
                .bind(t.hard)
                .bind(t.value.filter(|v| v.is_finite()))
                .bind(&t.output)
                .bind(&t.note)
                .execute(&mut *tx)
                .await?;
            }
            if !w.effects.notices.is_empty() {
                super::outbox::enqueue_alerts(&mut tx, &w.effects.notices, now_ms).await?;
            }
            for (fp, muted) in &w.effects.mute {
                super::outbox::set_muted(&mut tx, fp, *muted).await?;
            }
            ids.push(id);
        }
        tx.commit().await?;
        Ok(ids)
    }

    /// Alarms, problems first (CRITICAL, WARNING, UNKNOWN, then OK), newest
    /// change first within a state. `active_only`: not OK.
    pub async fn alarms(&self, active_only: bool, host_id: Option<i64>) -> Result<Vec<AlarmRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {ALARM_COLUMNS} FROM alarms a LEFT JOIN hosts h ON h.id = a.host_id
             WHERE (?1 = 0 OR a.state != 'OK') AND (?2 IS NULL OR a.host_id = ?2)
             ORDER BY CASE a.state WHEN 'CRITICAL' THEN 0 WHEN 'WARNING' THEN 1 WHEN 'UNKNOWN' THEN 2 ELSE 3 END,
                      a.hard DESC, a.since DESC, a.id
             LIMIT 5000"
        ))
        .bind(active_only)
        .bind(host_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(alarm_row).collect())
    }

    pub async fn alarm_row(&self, id: i64) -> Result<Option<AlarmRow>> {
        let row = sqlx::query(&format!(
            "SELECT {ALARM_COLUMNS} FROM alarms a LEFT JOIN hosts h ON h.id = a.host_id WHERE a.id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(alarm_row))
    }

    /// Transitions, newest first: of one alarm, of one host's alarms, or all;
    /// `since` bounds them in time.
    pub async fn transitions(
        &self,
        alarm_id: Option<i64>,
        host_id: Option<i64>,
        since: Option<i64>,
        limit: i64,
    ) -> Result<Vec<TransitionRow>> {
        let rows = sqlx::query(
            "SELECT t.id, t.alarm_id, a.rule, a.subject, t.at, t.from_state, t.to_state, t.hard, t.value, t.output, t.note,
                    h.hostname
             FROM alarm_transitions t JOIN alarms a ON a.id = t.alarm_id LEFT JOIN hosts h ON h.id = a.host_id
             WHERE (?1 IS NULL OR t.alarm_id = ?1) AND (?2 IS NULL OR a.host_id = ?2) AND (?3 IS NULL OR t.at >= ?3)
             ORDER BY t.at DESC, t.id DESC LIMIT ?4",
        )
        .bind(alarm_id)
        .bind(host_id)
        .bind(since)
        .bind(limit.clamp(1, 10_000))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| TransitionRow {
                id: r.get(0),
                alarm_id: r.get(1),
                rule: r.get(2),
                subject: r.get(3),
                hostname: r.get(11),
                at: r.get(4),
                from: r.get(5),
                to: r.get(6),
                state_type: state_type(r.get(7)),
                value: r.get(8),
                output: r.get(9),
                note: r.get(10),
            })
            .collect())
    }

    /// Removes transitions older than `cutoff` and OK alarms unchanged since
    /// then; returns the transitions removed.
    pub async fn prune_alarm_history(&self, cutoff: i64) -> Result<u64> {
        let _w = self.write.lock().await;
        let r = sqlx::query("DELETE FROM alarm_transitions WHERE at < ?")
            .bind(cutoff)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "DELETE FROM alarms WHERE state = 'OK' AND updated_at < ?
               AND NOT EXISTS (SELECT 1 FROM alarm_transitions t WHERE t.alarm_id = alarms.id)",
        )
        .bind(cutoff)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// Silences; `active_at`: only those not yet ended at that time.
    pub async fn silences(&self, active_at: Option<i64>) -> Result<Vec<SilenceRow>> {
        let rows = sqlx::query(
            "SELECT id, matchers, starts_at, ends_at, created_by, comment, created_at FROM silences
             WHERE ?1 IS NULL OR ends_at > ?1 ORDER BY ends_at DESC, id DESC LIMIT 5000",
        )
        .bind(active_at)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let m: String = r.get(1);
                SilenceRow {
                    id: r.get(0),
                    matchers: serde_json::from_str(&m).unwrap_or_default(),
                    starts_at: r.get(2),
                    ends_at: r.get(3),
                    created_by: r.get(4),
                    comment: r.get(5),
                    created_at: r.get(6),
                }
            })
            .collect())
    }

    pub async fn create_silence(
        &self,
        matchers: &[MatcherSpec],
        starts_at: i64,
        ends_at: i64,
        created_by: &str,
        comment: &str,
    ) -> Result<i64> {
        let _w = self.write.lock().await;
        let r = sqlx::query(
            "INSERT INTO silences (matchers, starts_at, ends_at, created_by, comment, created_at)
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(serde_json::to_string(matchers).unwrap_or_else(|_| "[]".into()))
        .bind(starts_at)
        .bind(ends_at)
        .bind(created_by)
        .bind(comment)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(r.last_insert_rowid())
    }

    /// Ends a silence now (it stays listed as expired); false if unknown.
    pub async fn expire_silence(&self, id: i64) -> Result<bool> {
        let _w = self.write.lock().await;
        let t = now();
        let r = sqlx::query(
            "UPDATE silences SET ends_at = ?1, starts_at = min(starts_at, ?1) WHERE id = ?2 AND ends_at > ?1",
        )
        .bind(t)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Removes silences that ended before `cutoff`.
    pub async fn prune_silences(&self, cutoff: i64) -> Result<u64> {
        let _w = self.write.lock().await;
        let r = sqlx::query("DELETE FROM silences WHERE ends_at < ?")
            .bind(cutoff)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    pub async fn api_rules(&self) -> Result<Vec<StoredRule>> {
        let rows =
            sqlx::query("SELECT name, definition, created_at, updated_at FROM rules ORDER BY name")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .iter()
            .map(|r| StoredRule {
                name: r.get(0),
                definition: r.get(1),
                created_at: r.get(2),
                updated_at: r.get(3),
            })
            .collect())
    }

    /// Creates (`create = true`, refusing an existing name) or replaces a rule.
    /// Returns false when creating a name that exists or replacing one that does not.
    pub async fn put_rule(&self, name: &str, definition: &str, create: bool) -> Result<bool> {
        let _w = self.write.lock().await;
        let t = now();
        let r = if create {
            sqlx::query(
                "INSERT INTO rules (name, definition, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)
                 ON CONFLICT (name) DO NOTHING",
            )
        } else {
            sqlx::query("UPDATE rules SET definition = ?2, updated_at = ?3 WHERE name = ?1")
        }
        .bind(name)
        .bind(definition)
        .bind(t)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn delete_rule(&self, name: &str) -> Result<bool> {
        let _w = self.write.lock().await;
        let r = sqlx::query("DELETE FROM rules WHERE name = ?")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Every host and group-owner row, as the evaluator knows them.
    pub async fn host_directory(&self) -> Result<Vec<(i64, HostEntry)>> {
        let rows = sqlx::query(
            "SELECT id, hostname, group_name, kind, state, last_seen, passive FROM hosts",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| (r.get(0), host_entry(r))).collect())
    }

    pub async fn host_entry(&self, id: i64) -> Result<Option<HostEntry>> {
        let row = sqlx::query(
            "SELECT id, hostname, group_name, kind, state, last_seen, passive FROM hosts WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(host_entry))
    }

    /// Every series named `name`, of hosts and of groups.
    pub async fn all_series_named(&self, name: &str) -> Result<Vec<super::SeriesRow>> {
        let rows = sqlx::query(
            "SELECT s.id, s.host_id, h.hostname, s.name, s.labels_json FROM series s JOIN hosts h ON h.id = s.host_id
             WHERE s.name = ? LIMIT 100000",
        )
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(super::metrics::series_row).collect())
    }
}

fn host_entry(r: &sqlx::sqlite::SqliteRow) -> HostEntry {
    let kind: String = r.get(3);
    let state: String = r.get(4);
    let hostname: String = r.get(1);
    HostEntry {
        owner_of: (kind == "group").then(|| hostname.clone()),
        hostname,
        group: r.get(2),
        state: HostState::parse(&state).unwrap_or(HostState::Down),
        last_seen: r.get(5),
        passive: r.get(6),
    }
}

/// One transition as a graph marks it.
#[derive(Debug, Clone)]
pub struct MarkRow {
    pub at: i64,
    pub to: Status,
    pub hard: bool,
    pub host_id: Option<i64>,
    /// The alarm's notification labels (series labels among them).
    pub labels: Labels,
}

impl Store {
    /// Transitions in `(from, to]` of the alarms of `rules` whose subject is
    /// one of `host_ids` or the group `group`, newest first, at most `limit`.
    pub async fn graph_marks(
        &self,
        rules: &[String],
        host_ids: &[i64],
        group: Option<&str>,
        (from, to): (i64, i64),
        limit: i64,
    ) -> Result<Vec<MarkRow>> {
        if rules.is_empty() {
            return Ok(Vec::new());
        }
        // The lists travel as JSON arrays: one statement whatever their length.
        let rules_json = serde_json::to_string(rules).unwrap_or_else(|_| "[]".into());
        let hosts_json = serde_json::to_string(host_ids).unwrap_or_else(|_| "[]".into());
        let rows = sqlx::query(
            "SELECT t.at, t.to_state, t.hard, a.host_id, a.labels
             FROM alarms a JOIN alarm_transitions t ON t.alarm_id = a.id
             WHERE a.rule IN (SELECT value FROM json_each(?1))
               AND (a.host_id IN (SELECT value FROM json_each(?2)) OR a.subject = 'group:' || ?3)
               AND t.at > ?4 AND t.at <= ?5
             ORDER BY t.at DESC, t.id DESC LIMIT ?6",
        )
        .bind(rules_json)
        .bind(hosts_json)
        .bind(group)
        .bind(from)
        .bind(to)
        .bind(limit.clamp(1, 10_000))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| MarkRow {
                at: r.get(0),
                to: status(r.get::<&str, _>(1)),
                hard: r.get::<i64, _>(2) != 0,
                host_id: r.get(3),
                labels: serde_json::from_str(r.get::<&str, _>(4)).unwrap_or_default(),
            })
            .collect())
    }
}
