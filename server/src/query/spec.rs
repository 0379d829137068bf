//! What a caller asks for (`/api/v1/query`, `/api/v1/graph.*`, the dashboard)
//! and how it is answered. Handlers parse parameters into a [`QuerySpec`] and
//! call [`run`]; where the rows come from is this module's business.

use super::{
    aggregate, choose_archive, choose_step, coarsen, parse_time, row_times, Agg, Cf, MAX_ROWS,
};
use crate::groups;
use crate::store::{SeriesRow, Store, StoreError};
use metrolog_protocol::Labels;
use serde::Serialize;
use std::collections::HashMap;

/// Agents ship 10 s buckets.
pub const BASE_STEP: i64 = 10;

/// Whose series.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// Host id or hostname.
    Host(String),
    /// Every member of a group, combined row by row.
    Group { group: String, agg: Agg },
}

#[derive(Debug, Clone, PartialEq)]
pub struct QuerySpec {
    pub target: Target,
    /// Series names; each may hold `*` globs. Several overlay in graphs.
    pub names: Vec<String>,
    pub from: i64,
    pub to: i64,
    pub cf: Cf,
    /// Row width; chosen from the range when `None`.
    pub step: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Consolidated rows of one series: (row label, value or unknown).
pub type Rows = Vec<(i64, Option<f64>)>;

#[derive(Debug, Clone, Serialize)]
pub struct SeriesPoints {
    /// Hostname, or `group:<name>` for an aggregate.
    pub host: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_id: Option<i64>,
    pub name: String,
    pub labels: Labels,
    /// Members that fed an aggregate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<usize>,
    pub points: Rows,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueryResult {
    pub step: i64,
    pub from: i64,
    pub to: i64,
    pub series: Vec<SeriesPoints>,
}

impl QuerySpec {
    /// Parses URL query pairs. Keys in `extra` are left for the caller (e.g.
    /// `width` for graphs); any other unknown key is an error.
    pub fn parse(pairs: &[(String, String)], now: i64, extra: &[&str]) -> Result<Self, QueryError> {
        let bad = QueryError::BadRequest;
        let mut host = None;
        let mut group = None;
        let mut agg = None;
        let mut names = Vec::new();
        let (mut from, mut to, mut cf, mut step) = (None, None, None, None);
        for (k, v) in pairs {
            match k.as_str() {
                "host" => host = Some(v.clone()),
                "group" => group = Some(v.clone()),
                "agg" => agg = Some(v.clone()),
                "name" => names.push(v.clone()),
                "from" => from = Some(v.clone()),
                "to" => to = Some(v.clone()),
                "cf" => cf = Some(v.clone()),
                "step" => step = Some(v.clone()),
                k if extra.contains(&k) => {}
                k => return Err(bad(format!("unknown parameter {k:?}"))),
            }
        }
        if names.is_empty() {
            return Err(bad("give at least one `name`".into()));
        }
        let to = parse_time(to.as_deref().unwrap_or("now"), now).map_err(bad)?;
        let from = parse_time(from.as_deref().unwrap_or("-1h"), now).map_err(bad)?;
        if to <= from {
            return Err(bad(format!("`to` ({to}) must be after `from` ({from})")));
        }
        let cf = Cf::parse(cf.as_deref().unwrap_or("avg")).map_err(bad)?;
        let step = match step.as_deref() {
            None | Some("") => None,
            Some(s) => {
                let secs = match s.parse::<i64>() {
                    Ok(n) => n,
                    Err(_) => metrolog_protocol::parse_duration(s)
                        .map_err(|e| bad(e.to_string()))?
                        .as_secs() as i64,
                };
                if secs < BASE_STEP || secs % BASE_STEP != 0 {
                    return Err(bad(format!(
                        "step {s:?} must be a multiple of {BASE_STEP} seconds"
                    )));
                }
                Some(secs)
            }
        };
        let target = match (host, group) {
            (Some(_), Some(_)) => {
                return Err(bad("give either `host` or `group`, not both".into()))
            }
            (None, None) => {
                return Err(bad(
                    "give `host` (id or hostname) or `group` with `agg`".into()
                ))
            }
            (Some(h), None) => {
                if agg.is_some() {
                    return Err(bad("`agg` applies to `group` queries".into()));
                }
                Target::Host(h)
            }
            (None, Some(g)) => Target::Group {
                group: g,
                agg: Agg::parse(agg.as_deref().unwrap_or("avg")).map_err(bad)?,
            },
        };
        Ok(QuerySpec {
            target,
            names,
            from,
            to,
            cf,
            step,
        })
    }

    /// The row width this query is answered at with the default archive ladder
    /// ([`run`] uses the server's configured archives).
    pub fn effective_step(&self, now: i64) -> i64 {
        self.step.unwrap_or_else(|| choose_step(self.from, now))
    }
}

/// Resolves a host (id or hostname) to host ids.
pub async fn host_ids(store: &Store, host: &str) -> Result<Vec<i64>, QueryError> {
    if let Ok(id) = host.parse::<i64>() {
        if store.host(id).await?.is_some() {
            return Ok(vec![id]);
        }
    }
    let hosts = store.hosts_named(host).await?;
    if hosts.is_empty() {
        return Err(QueryError::NotFound(format!("no host {host:?}")));
    }
    Ok(hosts.into_iter().map(|h| h.id).collect())
}

/// Series of a host (id or hostname) or of every host, by name glob.
pub async fn series_of(
    store: &Store,
    host: Option<&str>,
    name: Option<&str>,
) -> Result<Vec<SeriesRow>, QueryError> {
    match host {
        None => Ok(store.series(None, name).await?),
        Some(h) => {
            let mut out = Vec::new();
            for id in host_ids(store, h).await? {
                out.extend(store.series(Some(id), name).await?);
            }
            Ok(out)
        }
    }
}

/// How a query reads the archives: the archive step, the row width, and the
/// aligned range (rows labelled in `(from, to]`).
#[derive(Debug, Clone, Copy)]
struct Plan {
    archive: i64,
    step: i64,
    from: i64,
    to: i64,
    base_step: u32,
    xff: f64,
}

/// Rows of one stored series at the plan's width; unknown where it has no data.
async fn rows_of(
    store: &Store,
    s: &SeriesRow,
    spec: &QuerySpec,
    plan: &Plan,
) -> Result<Rows, QueryError> {
    let unknown = || {
        row_times(plan.from, plan.to, plan.step)
            .map(|t| (t, None))
            .collect()
    };
    if plan.to <= plan.from {
        return Ok(Vec::new());
    }
    let archive = u32::try_from(plan.archive).unwrap_or(u32::MAX);
    match store
        .archive_rows(s.id, archive, plan.from, plan.to)
        .await?
    {
        Some(rows) => Ok(coarsen(&rows, plan.step, plan.base_step, plan.xff, spec.cf)),
        None => Ok(unknown()),
    }
}

/// Answers a query.
pub async fn run(store: &Store, spec: &QuerySpec, now: i64) -> Result<QueryResult, QueryError> {
    let archives = store.archive_spec();
    if let Some(s) = spec.step {
        if s < i64::from(archives.base_step) || s % i64::from(archives.base_step) != 0 {
            return Err(QueryError::BadRequest(format!(
                "step {s} must be a multiple of the archives' base step, {} seconds",
                archives.base_step
            )));
        }
    }
    let (archive, step) = choose_archive(&archives, spec.from, spec.to, spec.step, now);
    let plan = Plan {
        archive,
        step,
        from: spec.from.div_euclid(step) * step,
        to: spec.to.div_euclid(step) * step,
        base_step: archives.base_step,
        xff: archives.xff,
    };
    if (spec.to - spec.from) / step > MAX_ROWS {
        return Err(QueryError::BadRequest(format!(
            "{} rows of {step} s requested; at most {MAX_ROWS} per series: narrow the range or raise step",
            (spec.to - spec.from) / step
        )));
    }
    let mut out = Vec::new();
    match &spec.target {
        Target::Host(host) => {
            for name in &spec.names {
                for s in series_of(store, Some(host), Some(name)).await? {
                    let points = rows_of(store, &s, spec, &plan).await?;
                    out.push(SeriesPoints {
                        host: s.hostname,
                        host_id: Some(s.host_id),
                        name: s.name,
                        labels: s.labels,
                        members: None,
                        points,
                    });
                }
            }
        }
        Target::Group { group, agg } => {
            for name in &spec.names {
                out.extend(group_rows(store, spec, &plan, group, *agg, name).await?);
            }
        }
    }
    Ok(QueryResult {
        step,
        from: spec.from,
        to: spec.to,
        series: out,
    })
}

/// A group's aggregates of the series named `name` (a glob): the group's own
/// recorded series (server/src/groups), and for the rows it did not record the
/// current members' archives aggregated row by row.
async fn group_rows(
    store: &Store,
    spec: &QuerySpec,
    plan: &Plan,
    group: &str,
    agg: Agg,
    name: &str,
) -> Result<Vec<SeriesPoints>, QueryError> {
    type Key = (String, Labels);
    let mut keys: Vec<Key> = Vec::new();
    let mut recorded: HashMap<Key, SeriesRow> = HashMap::new();
    if let Some(owner) = store.group_owner(group).await? {
        for s in store.series(Some(owner), Some(name)).await? {
            if groups::is_answer(&s.labels, agg, &s.name) {
                let key = (s.name.clone(), groups::member_labels(&s.labels));
                keys.push(key.clone());
                recorded.insert(key, s);
            }
        }
    }
    let mut members: HashMap<Key, Vec<SeriesRow>> = HashMap::new();
    for s in store.group_member_series(group, name).await? {
        let key = (s.name.clone(), s.labels.clone());
        if !recorded.contains_key(&key) && !members.contains_key(&key) {
            keys.push(key.clone());
        }
        members.entry(key).or_default().push(s);
    }
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        let mut points = match recorded.get(&key) {
            Some(s) => rows_of(store, s, spec, plan).await?,
            None => row_times(plan.from, plan.to, plan.step)
                .map(|t| (t, None))
                .collect(),
        };
        let feeders = members.get(&key).map_or(&[][..], Vec::as_slice);
        let unknown: Vec<i64> = points
            .iter()
            .filter(|(_, v)| v.is_none())
            .map(|(t, _)| *t)
            .collect();
        if let (Some(&lo), Some(&hi)) = (unknown.first(), unknown.last()) {
            if !feeders.is_empty() {
                // Only the span the group did not record is read from the members.
                let sub = Plan {
                    from: lo - plan.step,
                    to: hi,
                    ..*plan
                };
                let mut rows = Vec::with_capacity(feeders.len());
                for s in feeders {
                    rows.push(rows_of(store, s, spec, &sub).await?);
                }
                let filled: HashMap<i64, Option<f64>> = aggregate(&rows, agg).into_iter().collect();
                for (t, v) in points.iter_mut() {
                    if v.is_none() {
                        *v = filled.get(t).copied().flatten();
                    }
                }
            }
        }
        let (name, labels) = key;
        out.push(SeriesPoints {
            host: format!("group:{group}"),
            host_id: None,
            name,
            labels,
            members: (!feeders.is_empty()).then_some(feeders.len()),
            points,
        });
    }
    Ok(out)
}
