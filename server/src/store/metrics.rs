//! Series and their points, and the batch commit that writes them.

use super::{hosts::touch, now, Result, Store, SERIES_CACHE_MAX};
use metrolog_protocol::syslog::{LogRecord, LogSource};
use metrolog_protocol::{BatchId, Bucket, Labels, SeriesKey};
use serde::Serialize;
use sqlx::{QueryBuilder, Row, Sqlite};

/// Outcome of committing one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitOutcome {
    /// The batch had been committed before; nothing was written again.
    pub duplicate: bool,
    /// Buckets written.
    pub stored: u64,
    /// Log records written.
    pub logs: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SeriesRow {
    pub id: i64,
    pub host_id: i64,
    pub hostname: String,
    pub name: String,
    pub labels: Labels,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PointRow {
    pub ts: i64,
    pub avg: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub last: Option<f64>,
    pub count: i64,
}

/// Rows per multi-row INSERT: 7 parameters each, well under SQLite's 32766.
const INSERT_CHUNK: usize = 1000;

impl Store {
    /// Writes one agent batch in a single transaction: series are created as
    /// needed, buckets stored, and the batch id recorded on the host so a replay
    /// is recognised. A replayed batch only refreshes the host's liveness.
    pub async fn commit_batch(
        &self,
        host_id: i64,
        batch: &BatchId,
        series: &[(SeriesKey, Vec<Bucket>)],
        logs: &[LogRecord],
    ) -> Result<CommitOutcome> {
        let _w = self.write.lock().await;
        let t = now();
        let mut tx = self.pool.begin().await?;
        let last: Option<(Option<String>, Option<i64>)> =
            sqlx::query_as("SELECT batch_stream, batch_seq FROM hosts WHERE id = ?")
                .bind(host_id)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some((Some(stream), Some(seq))) = &last {
            if *stream == batch.stream && batch.seq <= *seq as u64 {
                touch(&mut *tx, host_id, t).await?;
                tx.commit().await?;
                return Ok(CommitOutcome {
                    duplicate: true,
                    stored: 0,
                    logs: 0,
                });
            }
        }
        let mut new_ids = Vec::new();
        let mut ids = Vec::with_capacity(series.len());
        for (key, _) in series {
            let labels = key.labels_text();
            let cached = self
                .series_ids
                .lock()
                .expect("series cache poisoned")
                .get(&(host_id, key.name.as_str().to_string(), labels.clone()))
                .copied();
            let id = match cached {
                Some(id) => id,
                None => {
                    let id: i64 = sqlx::query_scalar(
                        "INSERT INTO series (host_id, name, labels, labels_json) VALUES (?, ?, ?, ?)
                         ON CONFLICT (host_id, name, labels) DO UPDATE SET name = excluded.name
                         RETURNING id",
                    )
                    .bind(host_id)
                    .bind(key.name.as_str())
                    .bind(&labels)
                    .bind(serde_json::to_string(&key.labels).unwrap_or_else(|_| "{}".into()))
                    .fetch_one(&mut *tx)
                    .await?;
                    new_ids.push(((host_id, key.name.as_str().to_string(), labels), id));
                    id
                }
            };
            ids.push(id);
        }
        let rows: Vec<(i64, &Bucket)> = ids
            .iter()
            .zip(series)
            .flat_map(|(id, (_, buckets))| buckets.iter().map(move |b| (*id, b)))
            .collect();
        for chunk in rows.chunks(INSERT_CHUNK) {
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT OR REPLACE INTO points (series_id, ts, avg, min, max, last, count) ",
            );
            q.push_values(chunk, |mut b, (id, p)| {
                b.push_bind(*id)
                    .push_bind(p.ts)
                    .push_bind(p.avg)
                    .push_bind(p.min)
                    .push_bind(p.max)
                    .push_bind(p.last)
                    .push_bind(p.count as i64);
            });
            q.build().execute(&mut *tx).await?;
        }
        if !logs.is_empty() {
            super::logs::insert_tx(&mut tx, Some(host_id), logs, LogSource::Agent).await?;
        }
        sqlx::query("UPDATE hosts SET batch_stream = ?, batch_seq = ? WHERE id = ?")
            .bind(&batch.stream)
            .bind(batch.seq as i64)
            .bind(host_id)
            .execute(&mut *tx)
            .await?;
        touch(&mut *tx, host_id, t).await?;
        tx.commit().await?;
        // Only committed ids enter the cache.
        let mut cache = self.series_ids.lock().expect("series cache poisoned");
        if cache.len() + new_ids.len() > SERIES_CACHE_MAX {
            cache.clear();
        }
        cache.extend(new_ids);
        Ok(CommitOutcome {
            duplicate: false,
            stored: rows.len() as u64,
            logs: logs.len() as u64,
        })
    }

    /// Drops cached series ids of removed hosts.
    pub(super) fn forget_hosts(&self, host_ids: &[i64]) {
        if host_ids.is_empty() {
            return;
        }
        let mut cache = self.series_ids.lock().expect("series cache poisoned");
        cache.retain(|(h, _, _), _| !host_ids.contains(h));
    }

    /// Series filtered by host and by a name pattern where `*` matches any run of
    /// characters.
    pub async fn series(
        &self,
        host_id: Option<i64>,
        name_glob: Option<&str>,
    ) -> Result<Vec<SeriesRow>> {
        let like = name_glob.map(glob_to_like);
        let rows = sqlx::query(
            "SELECT s.id, s.host_id, h.hostname, s.name, s.labels_json FROM series s JOIN hosts h ON h.id = s.host_id
             WHERE (?1 IS NULL OR s.host_id = ?1) AND (?2 IS NULL OR s.name LIKE ?2 ESCAPE '\\')
             ORDER BY h.hostname, s.name, s.labels LIMIT 10000",
        )
        .bind(host_id)
        .bind(like)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let labels: String = r.get(4);
                SeriesRow {
                    id: r.get(0),
                    host_id: r.get(1),
                    hostname: r.get(2),
                    name: r.get(3),
                    labels: serde_json::from_str(&labels).unwrap_or_default(),
                }
            })
            .collect())
    }

    /// Stored buckets of a series with `from < ts <= to`, oldest first.
    pub async fn points(&self, series_id: i64, from: i64, to: i64) -> Result<Vec<PointRow>> {
        let rows = sqlx::query(
            "SELECT ts, avg, min, max, last, count FROM points WHERE series_id = ? AND ts > ? AND ts <= ? ORDER BY ts",
        )
        .bind(series_id)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| PointRow {
                ts: r.get(0),
                avg: r.get(1),
                min: r.get(2),
                max: r.get(3),
                last: r.get(4),
                count: r.get(5),
            })
            .collect())
    }

    /// Latest average of each unlabelled series named in `names`, per host:
    /// `(host_id, name, ts, value)`. Feeds the overview page.
    pub async fn latest_values(&self, names: &[&str]) -> Result<Vec<(i64, String, i64, f64)>> {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
            "SELECT s.host_id, s.name, p.ts, p.avg FROM series s
             JOIN points p ON p.series_id = s.id AND p.ts = (SELECT max(ts) FROM points WHERE series_id = s.id)
             WHERE s.labels = '' AND p.avg IS NOT NULL AND s.name IN (",
        );
        let mut sep = q.separated(", ");
        for n in names {
            sep.push_bind(*n);
        }
        q.push(")");
        let rows = q.build().fetch_all(&self.pool).await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect())
    }

    /// Deletes at most `limit` points older than `cutoff`; returns how many went.
    /// Called in a loop with short pauses so retention never stalls ingest.
    pub async fn prune_points(&self, cutoff: i64, limit: i64) -> Result<u64> {
        let _w = self.write.lock().await;
        let r = sqlx::query(
            "DELETE FROM points WHERE (series_id, ts) IN
               (SELECT series_id, ts FROM points WHERE ts < ? LIMIT ?)",
        )
        .bind(cutoff)
        .bind(limit)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }
}

fn glob_to_like(glob: &str) -> String {
    let mut out = String::with_capacity(glob.len());
    for c in glob.chars() {
        match c {
            '*' => out.push('%'),
            '%' | '_' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{temp_store, HostFacts, HostSource};

    fn bucket(ts: i64, v: f64) -> Bucket {
        Bucket {
            ts,
            avg: v,
            min: v,
            max: v,
            last: v,
            count: 10,
        }
    }

    #[tokio::test]
    async fn replayed_batch_is_not_stored_twice() {
        let (store, _dir) = temp_store().await;
        let host = store
            .upsert_host(
                &HostFacts {
                    hostname: "h".into(),
                    instance_id: None,
                    group: None,
                    labels: Labels::new(),
                    agent_version: None,
                },
                HostSource::Agent,
            )
            .await
            .unwrap();
        let key = SeriesKey::new("cpu.busy_pct", Labels::new()).unwrap();
        let id = BatchId {
            stream: "s1".into(),
            seq: 1,
        };
        let data = vec![(key.clone(), vec![bucket(10, 1.0), bucket(20, 2.0)])];
        let first = store.commit_batch(host, &id, &data, &[]).await.unwrap();
        assert_eq!(
            first,
            CommitOutcome {
                duplicate: false,
                stored: 2,
                logs: 0
            }
        );
        let again = store.commit_batch(host, &id, &data, &[]).await.unwrap();
        assert!(again.duplicate);
        let series = store.series(Some(host), Some("cpu.*")).await.unwrap();
        assert_eq!(series.len(), 1);
        let pts = store.points(series[0].id, 0, 100).await.unwrap();
        assert_eq!(pts.iter().map(|p| p.ts).collect::<Vec<_>>(), vec![10, 20]);
        // A new stream (agent restarted) starts over at seq 1.
        let id2 = BatchId {
            stream: "s2".into(),
            seq: 1,
        };
        let next = vec![(key, vec![bucket(30, 3.0)])];
        assert!(
            !store
                .commit_batch(host, &id2, &next, &[])
                .await
                .unwrap()
                .duplicate
        );
        assert_eq!(
            store.latest_values(&["cpu.busy_pct"]).await.unwrap(),
            vec![(host, "cpu.busy_pct".to_string(), 30, 3.0)]
        );
        assert_eq!(store.prune_points(25, 1000).await.unwrap(), 2);
    }

    #[test]
    fn globs() {
        assert_eq!(glob_to_like("cpu.*"), "cpu.%");
        assert_eq!(glob_to_like("a_b%"), "a\\_b\\%");
    }
}
