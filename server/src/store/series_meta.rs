//! Descriptions of series (`series_meta`): what Munin plugins say of their
//! graphs and fields, kept so the dashboard can group, title and draw them.

use super::{now, Result, Store};
use metrolog_protocol::series::labels_text;
use metrolog_protocol::{SeriesMeta, MAX_META_TEXT};
use serde::Serialize;
use sqlx::Row;

/// Descriptions stored per batch, at most; a batch carrying more has the
/// rest left out (an agent sends at most 2000).
pub const MAX_PER_BATCH: usize = 10_000;

/// One series' description, as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeriesMetaRow {
    pub name: String,
    pub labels: String,
    pub graph: String,
    pub order: i64,
    pub title: Option<String>,
    pub category: Option<String>,
    pub vlabel: Option<String>,
    pub label: Option<String>,
    pub info: Option<String>,
    pub kind: Option<String>,
    pub warning: Option<String>,
    pub critical: Option<String>,
}

/// A series' ranges, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesLimitsRow {
    pub host_id: i64,
    pub labels: String,
    pub warning: Option<String>,
    pub critical: Option<String>,
}

/// `text` within [`MAX_META_TEXT`] bytes, cut on a character boundary
/// (the agent cuts already; an older or foreign one may not).
fn capped(text: &Option<String>) -> Option<String> {
    text.as_ref().map(|t| {
        let mut end = t.len().min(MAX_META_TEXT);
        while !t.is_char_boundary(end) {
            end -= 1;
        }
        t[..end].to_string()
    })
}

impl Store {
    /// Stores the descriptions of a batch of `host_id`, each replacing the
    /// series' previous one. Returns how many were stored.
    pub async fn upsert_series_meta(&self, host_id: i64, meta: &[SeriesMeta]) -> Result<usize> {
        if meta.is_empty() {
            return Ok(0);
        }
        let meta = &meta[..meta.len().min(MAX_PER_BATCH)];
        let t = now();
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        for m in meta {
            sqlx::query(
                "INSERT INTO series_meta (host_id, name, labels, graph, ord, title, category, vlabel,
                                          label, info, kind, warning, critical, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
                 ON CONFLICT (host_id, name, labels) DO UPDATE SET
                    graph = excluded.graph, ord = excluded.ord, title = excluded.title,
                    category = excluded.category, vlabel = excluded.vlabel,
                    label = excluded.label, info = excluded.info, kind = excluded.kind,
                    warning = excluded.warning, critical = excluded.critical,
                    updated_at = excluded.updated_at",
            )
            .bind(host_id)
            .bind(m.name.as_str())
            .bind(labels_text(&m.labels))
            .bind(capped(&Some(m.graph.clone())))
            .bind(i64::from(m.order))
            .bind(capped(&m.title))
            .bind(capped(&m.category))
            .bind(capped(&m.vlabel))
            .bind(capped(&m.label))
            .bind(capped(&m.info))
            .bind(capped(&m.kind))
            .bind(capped(&m.warning))
            .bind(capped(&m.critical))
            .bind(t)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        drop(_w);
        // Rules with `limits = "series"` judge by these ranges.
        self.bus
            .publish(crate::events::Event::SeriesMeta(std::sync::Arc::new(
                crate::events::SeriesMetaCommitted {
                    host_id,
                    series: meta
                        .iter()
                        .map(|m| {
                            (
                                metrolog_protocol::SeriesKey {
                                    name: m.name.clone(),
                                    labels: m.labels.clone(),
                                },
                                capped(&m.warning),
                                capped(&m.critical),
                            )
                        })
                        .collect(),
                },
            )));
        Ok(meta.len())
    }

    /// The `warning`/`critical` of every series named `name` that gives
    /// any: `(host_id, labels text, warning, critical)`.
    pub async fn series_limits_named(&self, name: &str) -> Result<Vec<SeriesLimitsRow>> {
        let rows = sqlx::query(
            "SELECT host_id, labels, warning, critical FROM series_meta
             WHERE name = ?1 AND (warning IS NOT NULL OR critical IS NOT NULL)",
        )
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| SeriesLimitsRow {
                host_id: r.get(0),
                labels: r.get(1),
                warning: r.get(2),
                critical: r.get(3),
            })
            .collect())
    }

    /// The descriptions of a host's series, by category, graph, then order.
    pub async fn series_meta(&self, host_id: i64) -> Result<Vec<SeriesMetaRow>> {
        let rows = sqlx::query(
            "SELECT name, labels, graph, ord, title, category, vlabel, label, info, kind,
                    warning, critical
             FROM series_meta WHERE host_id = ?1
             ORDER BY category, graph, ord, name",
        )
        .bind(host_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| SeriesMetaRow {
                name: r.get(0),
                labels: r.get(1),
                graph: r.get(2),
                order: r.get(3),
                title: r.get(4),
                category: r.get(5),
                vlabel: r.get(6),
                label: r.get(7),
                info: r.get(8),
                kind: r.get(9),
                warning: r.get(10),
                critical: r.get(11),
            })
            .collect())
    }
}
