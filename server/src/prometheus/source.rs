//! The evaluator's [`Source`] over the store: series from the catalog, rows
//! from the round-robin archives through the query layer (`crate::query`:
//! the archive chosen as `rrdtool fetch` chooses it, rows consolidated to the
//! step when it is a multiple of the archive's).

use super::error::PromError;
use super::eval::Source;
use super::names::{labels_of, like_for, LabelSet, AGG, NAME};
use crate::query::{self, Cf, Rows};
use crate::store::Store;
use metrolog_protocol::rrd::RrdSpec;
use promql_parser::label::{MatchOp, Matcher};
use std::sync::Arc;

#[derive(Debug)]
pub struct StoreSource<'a> {
    pub store: &'a Store,
    pub spec: Arc<RrdSpec>,
    /// The evaluation time: the archives' reach is counted from it for series
    /// that hold no data (else from their newest update).
    pub now: i64,
}

impl<'a> StoreSource<'a> {
    pub fn new(store: &'a Store, now: i64) -> Self {
        StoreSource {
            store,
            spec: store.archive_spec(),
            now,
        }
    }

    /// The oldest time the coarsest archive reaches back to.
    pub fn oldest(&self) -> i64 {
        let reach = self
            .spec
            .archives
            .iter()
            .map(|a| i64::from(a.step) * i64::from(a.rows))
            .max()
            .unwrap_or(0);
        self.now - reach
    }
}

/// Whether a series' label set is selected by `matchers`. A group's own
/// aggregates (labelled `agg`) are selected only by a selector that names
/// `agg`, so `avg by (group) (cpu_busy_pct)` averages hosts, not hosts and
/// the group's own avg, sum, min and max series.
pub fn selects(matchers: &[Matcher], labels: &LabelSet) -> bool {
    if labels.contains_key(AGG)
        && !labels.contains_key("host")
        && !matchers.iter().any(|m| m.name == AGG)
    {
        return false;
    }
    matchers
        .iter()
        .all(|m| m.is_match(labels.get(&m.name).map_or("", String::as_str)))
}

impl Source for StoreSource<'_> {
    async fn select(
        &self,
        matchers: &[Matcher],
        limit: usize,
    ) -> Result<Vec<(i64, LabelSet)>, PromError> {
        let like = matchers
            .iter()
            .find(|m| m.name == NAME && matches!(m.op, MatchOp::Equal))
            .and_then(|m| like_for(&m.value));
        let mut out = Vec::new();
        self.store
            .visit_catalog(like.as_deref(), |row| {
                let labels = labels_of(&row);
                if selects(matchers, &labels) {
                    out.push((row.series_id, labels));
                }
                out.len() <= limit
            })
            .await?;
        Ok(out)
    }

    fn width(&self, ids: &[i64], from: i64, to: i64, step: Option<i64>) -> i64 {
        let reference = self
            .store
            .newest_update(ids.iter().copied())
            .unwrap_or(self.now);
        query::choose_archive(&self.spec, from, to, step, reference).1
    }

    async fn rows(&self, id: i64, width: i64, from: i64, to: i64) -> Result<Rows, PromError> {
        let w = u32::try_from(width)
            .map_err(|_| PromError::BadData(format!("step {width}s too large")))?;
        Ok(match self.store.archive_rows(id, w, from, to).await? {
            Some(rows) => query::coarsen(&rows, width, self.spec.base_step, self.spec.xff, Cf::Avg),
            None => Vec::new(),
        })
    }
}
