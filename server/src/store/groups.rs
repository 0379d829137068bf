//! Groups as the store sees them: the members' series that feed a group's
//! aggregates, and the row of `hosts` (kind = 'group') that owns the group's own
//! series so that they outlive the members (migrations/0005_group_series.sql).

use super::metrics::{glob_to_like, series_row};
use super::{now, Result, SeriesRow, Store};
use metrolog_protocol::Labels;
use sqlx::{QueryBuilder, Row, Sqlite};

/// A group and its members' states.
#[derive(Debug, Clone, Default)]
pub struct GroupMembers {
    pub group: String,
    /// Members `up` now.
    pub up: Vec<i64>,
    /// Members known (any state).
    pub known: usize,
}

impl Store {
    /// Every group with at least one member host, and who is up in it.
    pub async fn group_members(&self) -> Result<Vec<GroupMembers>> {
        let rows = sqlx::query(
            "SELECT group_name, id, state FROM hosts
             WHERE kind = 'host' AND group_name IS NOT NULL ORDER BY group_name, id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out: Vec<GroupMembers> = Vec::new();
        for r in &rows {
            let group: String = r.get(0);
            if out.last().is_none_or(|g| g.group != group) {
                out.push(GroupMembers {
                    group: group.clone(),
                    ..Default::default()
                });
            }
            let g = out.last_mut().expect("pushed above");
            g.known += 1;
            if r.get::<String, _>(2) == "up" {
                g.up.push(r.get(1));
            }
        }
        Ok(out)
    }

    /// Name and labels of the series `ids` (a series never changes either),
    /// in no particular order; ids that are gone are left out.
    pub async fn series_keys(&self, ids: &[i64]) -> Result<Vec<(i64, String, Labels)>> {
        let mut out = Vec::with_capacity(ids.len());
        for part in ids.chunks(500) {
            let mut q: QueryBuilder<Sqlite> =
                QueryBuilder::new("SELECT id, name, labels_json FROM series WHERE id IN (");
            let mut sep = q.separated(", ");
            for id in part {
                sep.push_bind(*id);
            }
            q.push(")");
            for r in q.build().fetch_all(&self.pool).await? {
                let labels: String = r.get(2);
                out.push((
                    r.get(0),
                    r.get(1),
                    serde_json::from_str(&labels).unwrap_or_default(),
                ));
            }
        }
        Ok(out)
    }

    /// The id of the row that owns group `group`'s own series, if it has any.
    pub async fn group_owner(&self, group: &str) -> Result<Option<i64>> {
        Ok(
            sqlx::query_scalar("SELECT id FROM hosts WHERE kind = 'group' AND hostname = ?")
                .bind(group)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// The id of the row that owns group `group`'s own series, created if needed.
    pub async fn group_owner_or_create(&self, group: &str) -> Result<i64> {
        if let Some(id) = self.group_owner(group).await? {
            return Ok(id);
        }
        let _w = self.write.lock().await;
        let t = now();
        let id = sqlx::query_scalar(
            "INSERT INTO hosts (hostname, kind, source, passive, state, state_since, first_seen, last_seen)
             VALUES (?1, 'group', 'import', 1, 'up', ?2, ?2, ?2)
             ON CONFLICT (hostname) WHERE kind = 'group' DO UPDATE SET last_seen = excluded.last_seen
             RETURNING id",
        )
        .bind(group)
        .bind(t)
        .fetch_one(&self.pool)
        .await?;
        Ok(id)
    }

    /// Groups that have recorded something, by name.
    pub async fn groups_recorded(&self) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT hostname FROM hosts WHERE kind = 'group' ORDER BY hostname")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Removes the groups' own series that recorded nothing since before `cutoff`:
    /// series of members that are gone (an interface or mount only some short-lived
    /// instances had) must not pile up. Returns how many were removed.
    pub async fn expire_group_series(&self, cutoff: i64) -> Result<u64> {
        let owners: Vec<i64> = sqlx::query_scalar("SELECT id FROM hosts WHERE kind = 'group'")
            .fetch_all(&self.pool)
            .await?;
        let stale = self.cache().stale_series(&owners, cutoff);
        if stale.is_empty() {
            return Ok(0);
        }
        let _w = self.write.lock().await;
        let mut removed = 0;
        for ids in stale.chunks(500) {
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new("DELETE FROM series WHERE id IN (");
            let mut sep = q.separated(", ");
            for id in ids {
                sep.push_bind(*id);
            }
            q.push(")");
            removed += q.build().execute(&self.pool).await?.rows_affected();
        }
        self.series_ids
            .lock()
            .expect("series cache poisoned")
            .retain(|_, id| !stale.contains(id));
        // Archives and states went with the series (FK cascade); journal rows
        // that still name them are skipped at replay.
        let mut cache = self.cache();
        cache.forget_series(&stale);
        self.chunk_cache().purge_series(&stale);
        drop(cache);
        Ok(removed)
    }

    /// Removes groups that have no member any more and recorded nothing since
    /// before `cutoff`, with their series. Returns their names.
    pub async fn expire_groups(&self, cutoff: i64) -> Result<Vec<String>> {
        let _w = self.write.lock().await;
        let rows = sqlx::query(
            "DELETE FROM hosts WHERE kind = 'group' AND last_seen < ?
                AND NOT EXISTS (SELECT 1 FROM hosts m WHERE m.kind = 'host' AND m.group_name = hosts.hostname)
             RETURNING id, hostname",
        )
        .bind(cutoff)
        .fetch_all(&self.pool)
        .await?;
        let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        self.forget_hosts(&ids);
        Ok(rows.iter().map(|r| r.get(1)).collect())
    }

    /// Series of the members of `group` (any state) whose name matches the glob.
    pub async fn group_member_series(
        &self,
        group: &str,
        name_glob: &str,
    ) -> Result<Vec<SeriesRow>> {
        let rows = sqlx::query(
            "SELECT s.id, s.host_id, h.hostname, s.name, s.labels_json
             FROM hosts h JOIN series s ON s.host_id = h.id
             WHERE h.kind = 'host' AND h.group_name = ? AND s.name LIKE ? ESCAPE '\\'
             ORDER BY s.name, s.labels, h.hostname LIMIT 10000",
        )
        .bind(group)
        .bind(glob_to_like(name_glob))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(series_row).collect())
    }
}
