//! Every series with what names it outside the store: its host's name, kind
//! (a host or a group's own row), group and instance id. The Prometheus API
//! (`crate::prometheus`) turns these into label sets; rows are streamed so a
//! caller that stops early (a series cap) never holds the whole table.

use super::{Result, Store};
use futures_util::TryStreamExt;
use metrolog_protocol::Labels;
use sqlx::Row;

/// One series and the identity of whoever owns it.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogRow {
    pub series_id: i64,
    pub name: String,
    pub labels: Labels,
    /// Hostname, or the group's name for a group's own series.
    pub owner: String,
    /// The owner is a group's own row (docs/groups.md), not a host.
    pub is_group: bool,
    pub group: Option<String>,
    pub instance_id: Option<String>,
}

impl Store {
    /// Visits series, in id order, whose name is LIKE `name_like` (every series
    /// when `None`; `_` matches any one character, `\` escapes), until `visit`
    /// returns `false`. Departed hosts' series are included until they expire.
    pub async fn visit_catalog(
        &self,
        name_like: Option<&str>,
        mut visit: impl FnMut(CatalogRow) -> bool,
    ) -> Result<()> {
        let mut rows = sqlx::query(
            "SELECT s.id, s.name, s.labels_json, h.hostname, h.kind, h.group_name, h.instance_id
             FROM series s JOIN hosts h ON h.id = s.host_id
             WHERE ?1 IS NULL OR s.name LIKE ?1 ESCAPE '\\'
             ORDER BY s.id",
        )
        .bind(name_like)
        .fetch(&self.pool);
        while let Some(r) = rows.try_next().await? {
            let labels: String = r.get(2);
            let kind: String = r.get(4);
            let row = CatalogRow {
                series_id: r.get(0),
                name: r.get(1),
                labels: serde_json::from_str(&labels).unwrap_or_default(),
                owner: r.get(3),
                is_group: kind == "group",
                group: r.get(5),
                instance_id: r.get(6),
            };
            if !visit(row) {
                break;
            }
        }
        Ok(())
    }

    /// Distinct series names, sorted.
    pub async fn series_names(&self) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT DISTINCT name FROM series ORDER BY name")
                .fetch_all(&self.pool)
                .await?,
        )
    }
}
