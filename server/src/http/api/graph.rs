//! `GET /api/v1/graph.png` and `GET /api/v1/graph.svg`: the selectors of
//! `/api/v1/query` drawn as a picture, with min–max bands for coarse archives
//! the threshold lines of matching rules and the transitions of their
//! alarms. Rendering runs on the blocking
//! pool.
//!
//! Extra parameters: `width`, `height`, `title`, `utc_offset` (minutes east
//! of UTC for the time labels, default 0) and, with `group`, `per_host=1` for
//! one line per member instead of the aggregate. With `group`, `policy=<name>`
//! (a scaling policy of that group) adds the policy's two thresholds and its
//! scale and heal events; `dry_run=1` adds the events a dry-run of it over
//! the graph's range would have fired, with `scale_out_above` /
//! `scale_in_below` replacing the policy's thresholds for that replay.

use super::metrics::query_pairs;
use crate::alarms::rules::Kind;
use crate::alarms::Rule;
use crate::graph::marks::ScaleMark;
use crate::graph::{self, Graph, Level, Line, Mark, Threshold, Unit};
use crate::http::auth::Operator;
use crate::http::error::{ApiResult, AppError};
use crate::http::AppState;
use crate::query::{self, Cf, QueryResult, QuerySpec, SeriesPoints, Target, BASE_STEP};
use crate::store::{now, HostFilter};
use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::collections::BTreeSet;

pub const WIDTHS: std::ops::RangeInclusive<u32> = 50..=4000;
pub const HEIGHTS: std::ops::RangeInclusive<u32> = 20..=2000;
/// Most member lines drawn with `per_host=1`.
const MAX_MEMBER_LINES: usize = 50;
const EXTRA: &[&str] = &[
    "width",
    "height",
    "title",
    "utc_offset",
    "per_host",
    "policy",
    "dry_run",
    "scale_out_above",
    "scale_in_below",
];

pub fn router() -> Router<AppState> {
    graph::init();
    Router::new()
        .route("/api/v1/graph.png", get(png))
        .route("/api/v1/graph.svg", get(svg))
}

#[derive(Debug, Clone, Copy)]
enum Format {
    Png,
    Svg,
}

async fn png(op: Operator, state: State<AppState>, raw: RawQuery) -> ApiResult<Response> {
    respond(op, state, raw, Format::Png).await
}

async fn svg(op: Operator, state: State<AppState>, raw: RawQuery) -> ApiResult<Response> {
    respond(op, state, raw, Format::Svg).await
}

/// The picture's own parameters, next to the query's.
#[derive(Debug)]
struct Look {
    width: u32,
    height: u32,
    title: Option<String>,
    utc_offset: i32,
    per_host: bool,
    scaling: Option<PolicyLook>,
}

/// `policy=` and its dry-run parameters.
#[derive(Debug)]
struct PolicyLook {
    name: String,
    dry_run: bool,
    scale_out_above: Option<f64>,
    scale_in_below: Option<f64>,
}

fn parse_look(pairs: &[(String, String)]) -> ApiResult<Look> {
    let get = |k: &str| {
        pairs
            .iter()
            .rev()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    let size = |k: &str, default: u32, range: &std::ops::RangeInclusive<u32>| -> ApiResult<u32> {
        match get(k) {
            None | Some("") => Ok(default),
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|n| range.contains(n))
                .ok_or_else(|| {
                    AppError::BadRequest(format!(
                        "{k} {v:?} must be a whole number of pixels from {} to {}",
                        range.start(),
                        range.end()
                    ))
                }),
        }
    };
    let utc_offset = match get("utc_offset") {
        None | Some("") => 0,
        Some(v) => v
            .parse::<i32>()
            .ok()
            .filter(|m| (-1440..=1440).contains(m))
            .ok_or_else(|| {
                AppError::BadRequest(format!(
                    "utc_offset {v:?} must be minutes east of UTC, from -1440 to 1440"
                ))
            })?,
    };
    let per_host = match get("per_host") {
        None | Some("" | "0" | "false") => false,
        Some("1" | "true") => true,
        Some(v) => return Err(AppError::BadRequest(format!("per_host {v:?}: use 1 or 0"))),
    };
    let number = |k: &str| -> ApiResult<Option<f64>> {
        match get(k) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse::<f64>()
                .ok()
                .filter(|n| n.is_finite())
                .map(Some)
                .ok_or_else(|| AppError::BadRequest(format!("{k} {v:?} must be a number"))),
        }
    };
    let dry_run = match get("dry_run") {
        None | Some("" | "0" | "false") => false,
        Some("1" | "true") => true,
        Some(v) => return Err(AppError::BadRequest(format!("dry_run {v:?}: use 1 or 0"))),
    };
    let scaling = match get("policy").filter(|p| !p.is_empty()) {
        Some(name) => Some(PolicyLook {
            name: name.to_string(),
            dry_run,
            scale_out_above: number("scale_out_above")?,
            scale_in_below: number("scale_in_below")?,
        }),
        None if dry_run || get("scale_out_above").is_some() || get("scale_in_below").is_some() => {
            return Err(AppError::BadRequest(
                "dry_run, scale_out_above and scale_in_below go with policy=<name>".into(),
            ))
        }
        None => None,
    };
    Ok(Look {
        scaling,
        width: size("width", 800, &WIDTHS)?,
        height: size("height", 300, &HEIGHTS)?,
        title: get("title")
            .map(str::to_string)
            .filter(|t| !t.trim().is_empty()),
        utc_offset: utc_offset * 60,
        per_host,
    })
}

async fn respond(
    _op: Operator,
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    format: Format,
) -> ApiResult<Response> {
    let now = now();
    let pairs = query_pairs(raw.as_deref())?;
    let spec = QuerySpec::parse(&pairs, now, EXTRA)?;
    let look = parse_look(&pairs)?;
    if look.per_host && !matches!(spec.target, Target::Group { .. }) {
        return Err(AppError::BadRequest(
            "per_host applies to `group` graphs".into(),
        ));
    }
    let g = build(&state, &spec, &look, now).await?;
    let (body, mime) = tokio::task::spawn_blocking(move || match format {
        Format::Png => graph::render_png(&g).map(|b| (b, "image/png")),
        Format::Svg => graph::render_svg(&g).map(|s| (s.into_bytes(), "image/svg+xml")),
    })
    .await
    .map_err(|e| AppError::Internal(format!("graph task: {e}")))?
    .map_err(|e| AppError::Internal(e.to_string()))?;
    Ok((
        [
            (header::CONTENT_TYPE, mime),
            (header::CACHE_CONTROL, "private, max-age=10"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            // An SVG opened on its own is a document: let it run nothing.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'",
            ),
        ],
        body,
    )
        .into_response())
}

/// Queries the data and assembles what the picture shows.
async fn build(state: &AppState, spec: &QuerySpec, look: &Look, now: i64) -> ApiResult<Graph> {
    let mut result = if look.per_host {
        per_member(state, spec, now).await?
    } else {
        query::run(&state.store, spec, now).await?
    };
    fill_tail(state, spec, look, &mut result, now).await?;
    // Coarse rows hide peaks: draw the range each row spanned.
    let bands = result.step > BASE_STEP && spec.cf == Cf::Avg && !look.per_host;
    let (mins, maxs) = if bands && !result.series.is_empty() {
        let at = |cf| QuerySpec {
            cf,
            step: Some(result.step),
            ..spec.clone()
        };
        (
            Some(query::run(&state.store, &at(Cf::Min), now).await?),
            Some(query::run(&state.store, &at(Cf::Max), now).await?),
        )
    } else {
        (None, None)
    };
    let names: Vec<&str> = if result.series.is_empty() {
        spec.names.iter().map(String::as_str).collect()
    } else {
        result.series.iter().map(|s| s.name.as_str()).collect()
    };
    let unit = Unit::common(names.iter().copied());
    let (mut thresholds, mut marks) = judged(state, spec, &result, &names).await?;
    thresholds.extend(described(state, spec, &names).await?);
    if let Some(p) = &look.scaling {
        let (t, m) = policy_marks(state, spec, p, (result.from, result.to), now).await?;
        thresholds.extend(t);
        marks.extend(m);
    }
    let hosts: BTreeSet<&str> = result.series.iter().map(|s| s.host.as_str()).collect();
    let show_host = hosts.len() > 1;
    let lines = std::mem::take(&mut result.series)
        .into_iter()
        .map(|s| {
            let band = match (&mins, &maxs) {
                (Some(lo), Some(hi)) => match (find(lo, &s), find(hi, &s)) {
                    (Some(lo), Some(hi)) => Some(
                        s.points
                            .iter()
                            .map(|&(t, _)| (t, value_at(lo, t), value_at(hi, t)))
                            .collect(),
                    ),
                    _ => None,
                },
                _ => None,
            };
            Line {
                label: label(spec, &s, show_host),
                points: s.points,
                band,
            }
        })
        .collect();
    Ok(Graph {
        title: look.title.clone(),
        width: look.width,
        height: look.height,
        from: result.from,
        to: result.to,
        step: result.step,
        unit,
        lines,
        thresholds,
        marks,
        utc_offset: look.utc_offset,
    })
}

/// Draws the newest stretch that the chosen archive has no row for yet from
/// the finest archive that holds it.
///
/// The archive is chosen as `rrdtool fetch` chooses it, so at the pages'
/// default range (6 h) a graph reads 1-minute rows, and a row exists only once
/// its minute is complete (its 10 s samples are consolidated): a host that
/// just started had an empty graph for up to a minute, and every live graph
/// lagged its data by up to one row. The samples are there, in the 10 s
/// archive: after each line's last known row, the line goes on with those
/// (at their own spacing; the line connects them). Only when no step was
/// asked for, and never reaching back beyond the finest archive.
async fn fill_tail(
    state: &AppState,
    spec: &QuerySpec,
    look: &Look,
    result: &mut QueryResult,
    now: i64,
) -> ApiResult<()> {
    if spec.step.is_some() || result.step <= BASE_STEP || result.series.is_empty() {
        return Ok(());
    }
    let archives = state.store.archive_spec();
    let finest = &archives.archives[0];
    let Some(newest) = query::resolve(&state.store, spec)
        .await?
        .newest_update(&state.store)
    else {
        return Ok(());
    };
    let last_known = |s: &SeriesPoints| s.points.iter().rev().find(|p| p.1.is_some()).map(|p| p.0);
    let reach = newest - i64::from(finest.step) * i64::from(finest.rows);
    let from = result
        .series
        .iter()
        .map(|s| last_known(s).unwrap_or(spec.from))
        .min()
        .unwrap_or(spec.from)
        .max(spec.from)
        .max(reach);
    let to = spec.to.min(newest);
    if from >= to {
        return Ok(());
    }
    let tail_spec = QuerySpec {
        from,
        to,
        ..spec.clone()
    };
    let tail = if look.per_host {
        per_member(state, &tail_spec, now).await?
    } else {
        query::run(&state.store, &tail_spec, now).await?
    };
    if tail.step >= result.step {
        return Ok(());
    }
    for s in &mut result.series {
        let Some(fine) = find(&tail, s) else {
            continue;
        };
        let after = last_known(s).unwrap_or(i64::MIN);
        // Unknown rows stay (the line breaks there), but not after the last
        // known one.
        let mut more: Vec<(i64, Option<f64>)> = fine
            .points
            .iter()
            .copied()
            .filter(|&(t, _)| t > after)
            .collect();
        while more.last().is_some_and(|p| p.1.is_none()) {
            more.pop();
        }
        if more.is_empty() {
            continue;
        }
        s.points.retain(|&(t, _)| t <= after);
        s.points.extend(more);
    }
    Ok(())
}

/// One query per member of the group, each line labelled with its host.
async fn per_member(state: &AppState, spec: &QuerySpec, now: i64) -> ApiResult<QueryResult> {
    let Target::Group { group, .. } = &spec.target else {
        unreachable!("checked by the caller");
    };
    let members = state
        .store
        .hosts(&HostFilter {
            group: Some(group.clone()),
            state: None,
        })
        .await?;
    // Every line at the same step: the archive is chosen for the newest update
    // among all the members' series.
    let mut each = Vec::new();
    let mut lines = 0;
    for m in members {
        if lines >= MAX_MEMBER_LINES {
            break;
        }
        let one = QuerySpec {
            target: Target::Host(m.id.to_string()),
            ..spec.clone()
        };
        let series = query::resolve(&state.store, &one).await?;
        lines += series.series_ids().count();
        each.push((one, series));
    }
    let reference = each
        .iter()
        .filter_map(|(_, s)| s.newest_update(&state.store))
        .max()
        .unwrap_or(now);
    let mut out: Option<QueryResult> = None;
    for (one, series) in &each {
        let r = query::read(&state.store, one, series, reference).await?;
        match &mut out {
            None => out = Some(r),
            Some(o) => o.series.extend(r.series),
        }
        if out
            .as_ref()
            .is_some_and(|o| o.series.len() >= MAX_MEMBER_LINES)
        {
            break;
        }
    }
    Ok(match out {
        Some(mut o) => {
            o.series.truncate(MAX_MEMBER_LINES);
            o
        }
        None => QueryResult {
            step: spec.effective_step(now),
            from: spec.from,
            to: spec.to,
            series: Vec::new(),
        },
    })
}

fn find<'a>(r: &'a QueryResult, s: &SeriesPoints) -> Option<&'a SeriesPoints> {
    r.series
        .iter()
        .find(|o| o.host == s.host && o.name == s.name && o.labels == s.labels)
}

fn value_at(s: &SeriesPoints, t: i64) -> Option<f64> {
    s.points
        .binary_search_by_key(&t, |p| p.0)
        .ok()
        .and_then(|i| s.points[i].1)
}

/// `name{k="v"}`, with the host in front when several are shown and the
/// aggregation for a group.
fn label(spec: &QuerySpec, s: &SeriesPoints, show_host: bool) -> String {
    let mut out = String::new();
    if let Target::Group { agg, .. } = &spec.target {
        if s.members.is_some() {
            out.push_str(&format!("{agg:?} ").to_lowercase());
        }
    }
    if show_host {
        out.push_str(&s.host);
        out.push(' ');
    }
    out.push_str(&s.name);
    if !s.labels.is_empty() {
        let inner: Vec<String> = s
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{v}\""))
            .collect();
        out.push_str(&format!("{{{}}}", inner.join(",")));
    }
    if let Some(n) = s.members {
        out.push_str(&format!(" ({n} hosts)"));
    }
    out
}

/// The warning and critical ranges the drawn series' source declares
/// (Munin's `warning`/`critical`), for a host given by id.
async fn described(
    state: &AppState,
    spec: &QuerySpec,
    names: &[&str],
) -> ApiResult<Vec<Threshold>> {
    let Target::Host(host) = &spec.target else {
        return Ok(Vec::new());
    };
    let Ok(id) = host.parse::<i64>() else {
        return Ok(Vec::new());
    };
    let mut out: Vec<Threshold> = Vec::new();
    for m in state.store.series_meta(id).await? {
        if !names.contains(&m.name.as_str()) {
            continue;
        }
        for (range, level) in [(&m.warning, Level::Warning), (&m.critical, Level::Critical)] {
            for value in range.as_deref().map(munin_bounds).unwrap_or_default() {
                if !out.iter().any(|t| t.value == value && t.level == level) {
                    out.push(Threshold { value, level });
                }
            }
        }
    }
    Ok(out)
}

/// The finite bounds of a Munin range: `max`, `min:max`, `:max`, `min:`.
fn munin_bounds(text: &str) -> Vec<f64> {
    let (lo, hi) = text.split_once(':').unwrap_or(("", text));
    [lo, hi]
        .iter()
        .filter_map(|b| b.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite())
        .collect()
}

/// What the rules that judge the drawn series add to the picture: their
/// threshold lines and the transitions of their alarms in the range.
async fn judged(
    state: &AppState,
    spec: &QuerySpec,
    result: &QueryResult,
    names: &[&str],
) -> ApiResult<(Vec<Threshold>, Vec<Mark>)> {
    let rules: Vec<Rule> = super::alarms::all_rules(state)
        .await?
        .into_iter()
        .filter(|r| match &r.kind {
            Kind::Threshold { metric, .. } => names.contains(&metric.as_str()),
            _ => false,
        })
        .collect();
    if rules.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    // Hostnames and groups of what is drawn, for scoped rules.
    let mut hostnames = BTreeSet::new();
    let mut groups = BTreeSet::new();
    let host_ids: BTreeSet<i64> = result.series.iter().filter_map(|s| s.host_id).collect();
    let group = match &spec.target {
        Target::Group { group, .. } => {
            groups.insert(group.clone());
            Some(group.as_str())
        }
        Target::Host(_) => {
            for &id in &host_ids {
                if let Some(h) = state.store.host(id).await? {
                    hostnames.insert(h.hostname);
                    groups.extend(h.group);
                }
            }
            None
        }
    };
    let rules: Vec<Rule> = rules
        .into_iter()
        .filter(|r| {
            r.selector
                .host
                .as_ref()
                .is_none_or(|h| hostnames.contains(h))
        })
        .filter(|r| r.selector.group.as_ref().is_none_or(|g| groups.contains(g)))
        .collect();
    let mut lines: Vec<Threshold> = Vec::new();
    for r in &rules {
        for (range, level) in [(&r.warning, Level::Warning), (&r.critical, Level::Critical)] {
            for value in range.iter().flat_map(|r| r.bounds()) {
                let t = Threshold { value, level };
                if !lines.contains(&t) {
                    lines.push(t);
                }
            }
        }
    }
    let names: Vec<String> = rules.iter().map(|r| r.name.clone()).collect();
    let ids: Vec<i64> = host_ids.iter().copied().collect();
    let rows = state
        .store
        .graph_marks(
            &names,
            &ids,
            group,
            (result.from, result.to),
            graph::marks::MAX_MARKS as i64,
        )
        .await?;
    // An alarm per mount or interface marks only the graph of its series:
    // its labels must agree with the labels of some drawn series of its host.
    let marks = rows
        .into_iter()
        .filter(|m| {
            m.host_id.is_none()
                || result.series.iter().any(|s| {
                    s.host_id == m.host_id
                        && s.labels
                            .iter()
                            .all(|(k, v)| m.labels.get(k).is_none_or(|mv| mv == v))
                })
        })
        .map(|m| Mark::alarm(m.at, m.to, m.hard))
        .collect();
    Ok((lines, marks))
}

/// A scaling policy's thresholds with the resolved policy for a dry-run:
/// the edited ones when given, else the policy's (with `target` alone: the
/// edges of its tolerance band).
pub fn policy_thresholds(p: &crate::scaling::Policy) -> Vec<Threshold> {
    let (out, inn) = match (p.scale_out_above, p.scale_in_below, p.target) {
        (None, None, Some(t)) => (Some(t * (1.0 + p.tolerance)), Some(t * (1.0 - p.tolerance))),
        (o, i, _) => (o, i),
    };
    out.map(|value| Threshold {
        value,
        level: Level::ScaleOut,
    })
    .into_iter()
    .chain(inn.map(|value| Threshold {
        value,
        level: Level::ScaleIn,
    }))
    .collect()
}

/// The policy with a dry-run's edited thresholds, checked as a policy is:
/// `scale_in_below` below `scale_out_above`.
pub fn edited_policy(
    mut p: crate::scaling::Policy,
    scale_out_above: Option<f64>,
    scale_in_below: Option<f64>,
) -> Result<crate::scaling::Policy, String> {
    if scale_out_above.is_some() {
        p.scale_out_above = scale_out_above;
    }
    if scale_in_below.is_some() {
        p.scale_in_below = scale_in_below;
    }
    if let (Some(out), Some(inn)) = (p.scale_out_above, p.scale_in_below) {
        if inn >= out {
            return Err(format!(
                "scale_in_below ({inn}) must be below scale_out_above ({out})"
            ));
        }
    }
    Ok(p)
}

/// What `policy=` adds: its thresholds (the edited ones for a dry-run), its
/// events in the range, and with `dry_run=1` what a replay would have fired.
async fn policy_marks(
    state: &AppState,
    spec: &QuerySpec,
    look: &PolicyLook,
    (from, to): (i64, i64),
    now: i64,
) -> ApiResult<(Vec<Threshold>, Vec<Mark>)> {
    let p = crate::scaling::runner::all_policies(
        &state.store,
        &state.file_policies,
        i64::from(state.store.archive_spec().base_step),
    )
    .await
    .into_iter()
    .find(|p| p.name == look.name)
    .ok_or_else(|| AppError::NotFound(format!("no scaling policy {:?}", look.name)))?;
    match &spec.target {
        Target::Group { group, .. } if *group == p.group => {}
        _ => {
            return Err(AppError::BadRequest(format!(
                "policy {:?} judges group {:?}: draw it with group={}",
                p.name, p.group, p.group
            )))
        }
    }
    let mut marks: Vec<Mark> = state
        .store
        .policy_event_times(&p.name, from, to, graph::marks::MAX_MARKS as i64)
        .await?
        .into_iter()
        .filter_map(|(at, t)| ScaleMark::of_event_type(&t).map(|k| Mark::scaling(at, k, false)))
        .collect();
    let p = if look.dry_run {
        let p = edited_policy(p, look.scale_out_above, look.scale_in_below)
            .map_err(AppError::BadRequest)?;
        let run = crate::scaling::dryrun::run(&state.store, &p, from, to, now).await?;
        marks.extend(
            run.events
                .iter()
                .rev()
                .take(graph::marks::MAX_MARKS)
                .filter_map(|e| {
                    ScaleMark::of_event_type(&e.kind).map(|k| Mark::scaling(e.at_secs(), k, true))
                }),
        );
        p
    } else {
        p
    };
    Ok((policy_thresholds(&p), marks))
}
