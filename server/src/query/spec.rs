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

/// [`rows_of`] of several series, read together (one statement for all).
async fn rows_of_many(
    store: &Store,
    series: &[SeriesRow],
    spec: &QuerySpec,
    plan: &Plan,
) -> Result<Vec<Rows>, QueryError> {
    if plan.to <= plan.from {
        return Ok(vec![Vec::new(); series.len()]);
    }
    let archive = u32::try_from(plan.archive).unwrap_or(u32::MAX);
    let ids: Vec<i64> = series.iter().map(|s| s.id).collect();
    let read = store
        .archive_rows_many(&ids, archive, plan.from, plan.to)
        .await?;
    Ok(read
        .into_iter()
        .map(|rows| match rows {
            Some(rows) => coarsen(&rows, plan.step, plan.base_step, plan.xff, spec.cf),
            None => row_times(plan.from, plan.to, plan.step)
                .map(|t| (t, None))
                .collect(),
        })
        .collect())
}

/// The series a query reads, found before any row is read so that the archive
/// is chosen for the newest of them (as `rrdtool fetch` chooses relative to a
/// file's last update, not to the wall clock).
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    /// A host's series, name by name.
    host: Vec<SeriesRow>,
    /// A group's aggregates, name by name.
    group: Vec<GroupSeries>,
}

/// One aggregate of a group: the group's own recorded series (if any) and the
/// members' series that fill the rows it did not record.
#[derive(Debug, Clone)]
struct GroupSeries {
    name: String,
    labels: Labels,
    recorded: Option<SeriesRow>,
    feeders: Vec<SeriesRow>,
}

impl Resolved {
    /// Ids of every series the query may read.
    pub fn series_ids(&self) -> impl Iterator<Item = i64> + '_ {
        self.host.iter().map(|s| s.id).chain(
            self.group
                .iter()
                .flat_map(|g| g.recorded.iter().chain(g.feeders.iter()).map(|s| s.id)),
        )
    }

    /// The newest update among the series (`None` when none holds data).
    pub fn newest_update(&self, store: &Store) -> Option<i64> {
        store.newest_update(self.series_ids())
    }
}

/// Finds the series `spec` reads.
pub async fn resolve(store: &Store, spec: &QuerySpec) -> Result<Resolved, QueryError> {
    let mut out = Resolved::default();
    match &spec.target {
        Target::Host(host) => {
            for name in &spec.names {
                out.host
                    .extend(series_of(store, Some(host), Some(name)).await?);
            }
        }
        Target::Group { group, agg } => {
            for name in &spec.names {
                out.group
                    .extend(group_series(store, group, *agg, name).await?);
            }
        }
    }
    Ok(out)
}

fn check_step(spec: &QuerySpec, base_step: u32) -> Result<(), QueryError> {
    if let Some(s) = spec.step {
        if s < i64::from(base_step) || s % i64::from(base_step) != 0 {
            return Err(QueryError::BadRequest(format!(
                "step {s} must be a multiple of the archives' base step, {base_step} seconds"
            )));
        }
    }
    Ok(())
}

/// Answers a query: the archive is chosen relative to the newest update of
/// the series asked for (`now` when none holds data).
pub async fn run(store: &Store, spec: &QuerySpec, now: i64) -> Result<QueryResult, QueryError> {
    check_step(spec, store.archive_spec().base_step)?;
    let series = resolve(store, spec).await?;
    let reference = series.newest_update(store).unwrap_or(now);
    read(store, spec, &series, reference).await
}

/// Reads the rows of resolved series with the archive chosen as `rrdtool
/// fetch` chooses it for a series last updated at `reference`. Callers that
/// read several queries into one picture (a graph line per member) pass the
/// newest update of all of them, so every line has the same step.
pub async fn read(
    store: &Store,
    spec: &QuerySpec,
    series: &Resolved,
    reference: i64,
) -> Result<QueryResult, QueryError> {
    let archives = store.archive_spec();
    check_step(spec, archives.base_step)?;
    let (archive, step) = choose_archive(&archives, spec.from, spec.to, spec.step, reference);
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
    for s in &series.host {
        let points = rows_of(store, s, spec, &plan).await?;
        out.push(SeriesPoints {
            host: s.hostname.clone(),
            host_id: Some(s.host_id),
            name: s.name.clone(),
            labels: s.labels.clone(),
            members: None,
            points,
        });
    }
    if let Target::Group { group, agg } = &spec.target {
        for g in &series.group {
            out.push(group_rows(store, spec, &plan, group, *agg, g).await?);
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
/// recorded series (server/src/groups), and the current members' series that
/// feed the rows it did not record.
async fn group_series(
    store: &Store,
    group: &str,
    agg: Agg,
    name: &str,
) -> Result<Vec<GroupSeries>, QueryError> {
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
    Ok(keys
        .into_iter()
        .map(|key| {
            let recorded = recorded.remove(&key);
            let feeders = members.remove(&key).unwrap_or_default();
            GroupSeries {
                name: key.0,
                labels: key.1,
                recorded,
                feeders,
            }
        })
        .collect())
}

/// One aggregate's rows: the group's recorded rows, and for the rows it did not
/// record the members' archives aggregated row by row.
async fn group_rows(
    store: &Store,
    spec: &QuerySpec,
    plan: &Plan,
    group: &str,
    agg: Agg,
    g: &GroupSeries,
) -> Result<SeriesPoints, QueryError> {
    let mut points = match &g.recorded {
        Some(s) => rows_of(store, s, spec, plan).await?,
        None => row_times(plan.from, plan.to, plan.step)
            .map(|t| (t, None))
            .collect(),
    };
    let feeders = &g.feeders;
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
            let rows = rows_of_many(store, feeders, spec, &sub).await?;
            let filled: HashMap<i64, Option<f64>> = aggregate(&rows, agg).into_iter().collect();
            for (t, v) in points.iter_mut() {
                if v.is_none() {
                    *v = filled.get(t).copied().flatten();
                }
            }
        }
    }
    Ok(SeriesPoints {
        host: format!("group:{group}"),
        host_id: None,
        name: g.name.clone(),
        labels: g.labels.clone(),
        members: (!feeders.is_empty()).then_some(feeders.len()),
        points,
    })
}
