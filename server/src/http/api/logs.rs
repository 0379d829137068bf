//! `GET /api/v1/logs` (filtered, newest first, with a cursor) and
//! `GET /api/v1/logs/stream` (the same filters as server-sent events: the
//! live tail).

use crate::http::auth::Operator;
use crate::http::error::{ApiResult, AppError};
use crate::http::AppState;
use crate::logs::feed::{FeedBatch, LogEvent};
use crate::logs::search::Search;
use crate::store::logs::{LogFilter, LogRow};
use crate::store::HostFilter;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::stream::Stream;
use metrolog_protocol::syslog::{LogRecord, Severity};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 1000;
/// A live tail with a host or group filter looks its hosts up again this
/// often, so hosts that join a group show up.
const TAIL_RESOLVE_EVERY: Duration = Duration::from_secs(30);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/logs", get(list))
        .route("/api/v1/logs/stream", get(stream))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogParams {
    /// Host id or hostname.
    host: Option<String>,
    group: Option<String>,
    app: Option<String>,
    /// Least severe level to include: a name (`warning`) or a number (4).
    severity: Option<String>,
    /// Full-text search (see docs/logs.md).
    q: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<String>,
    /// Cursor: the `next` of the previous page.
    before: Option<String>,
}

fn some(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// A record as the API shows it.
#[derive(Debug, Serialize)]
pub struct LogView<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    /// Source time, RFC 3339 with microseconds.
    pub ts: String,
    pub received_at: String,
    pub host_id: Option<i64>,
    /// The host the record is filed under, else the name the sender claimed.
    pub host: Option<&'a str>,
    /// The name the sender claimed, as sent.
    pub hostname: Option<&'a str>,
    pub facility: Option<&'static str>,
    /// `null` when the line carried none (it counts as notice in filters).
    pub severity: Option<&'static str>,
    pub app_name: Option<&'a str>,
    pub procid: Option<&'a str>,
    pub msgid: Option<&'a str>,
    pub message: &'a str,
    pub structured_data: Option<&'a str>,
    pub source: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub invalid_utf8: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unparsed: bool,
}

fn micros_rfc3339(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .unwrap_or_default()
}

impl<'a> LogView<'a> {
    fn new(
        id: Option<i64>,
        host_id: Option<i64>,
        host: Option<&'a str>,
        source: &'a str,
        r: &'a LogRecord,
    ) -> Self {
        LogView {
            id,
            ts: micros_rfc3339(r.ts),
            received_at: micros_rfc3339(r.received_at),
            host_id,
            host: host.or(r.hostname.as_deref()),
            hostname: r.hostname.as_deref(),
            facility: r.facility.map(|f| f.as_str()),
            severity: r.severity.map(Severity::as_str),
            app_name: r.app_name.as_deref(),
            procid: r.procid.as_deref(),
            msgid: r.msgid.as_deref(),
            message: &r.message,
            structured_data: r.structured_data.as_deref(),
            source,
            truncated: r.truncated,
            invalid_utf8: r.invalid_utf8,
            unparsed: r.unparsed,
        }
    }

    fn of_row(row: &'a LogRow) -> Self {
        Self::new(
            Some(row.id),
            row.host_id,
            row.host.as_deref(),
            &row.source,
            &row.record,
        )
    }
}

#[derive(Debug, Serialize)]
pub struct LogPage<'a> {
    pub records: Vec<LogView<'a>>,
    /// Pass as `before` for the next (older) page; `null` on the last page.
    pub next: Option<String>,
}

/// Host ids the `host` and `group` parameters stand for (`None`: no such
/// filter; an empty list matches nothing).
async fn resolve_hosts(state: &AppState, p: &LogParams) -> ApiResult<Option<Vec<i64>>> {
    let by_host = match some(&p.host) {
        None => None,
        Some(h) => {
            let mut ids: Vec<i64> = state
                .store
                .hosts_named(h)
                .await?
                .into_iter()
                .map(|h| h.id)
                .collect();
            if let Ok(id) = h.parse::<i64>() {
                if state.store.host(id).await?.is_some() {
                    ids.push(id);
                }
            }
            Some(ids)
        }
    };
    let by_group = match some(&p.group) {
        None => None,
        Some(g) => Some(
            state
                .store
                .hosts(&HostFilter {
                    group: Some(g.to_string()),
                    state: None,
                })
                .await?
                .into_iter()
                .map(|h| h.id)
                .collect::<Vec<i64>>(),
        ),
    };
    Ok(match (by_host, by_group) {
        (None, None) => None,
        (Some(a), None) | (None, Some(a)) => Some(a),
        (Some(a), Some(b)) => Some(a.into_iter().filter(|id| b.contains(id)).collect()),
    })
}

/// Everything but the hosts, parsed and checked.
fn parse_filter(p: &LogParams) -> ApiResult<LogFilter> {
    let bad = AppError::BadRequest;
    let severity = some(&p.severity)
        .map(|s| s.parse::<Severity>())
        .transpose()
        .map_err(|e| bad(e.to_string()))?;
    let search = match some(&p.q) {
        None => None,
        Some(q) => Search::parse(q).map_err(|e| bad(e.to_string()))?,
    };
    let now = chrono::Utc::now().timestamp();
    let time = |v: &Option<String>, key: &str| -> ApiResult<Option<i64>> {
        some(v)
            .map(|t| crate::query::parse_time(t, now).map(|s| s.saturating_mul(1_000_000)))
            .transpose()
            .map_err(|e| bad(format!("{key}: {e}")))
    };
    let from = time(&p.from, "from")?;
    let to = time(&p.to, "to")?;
    if let (Some(f), Some(t)) = (from, to) {
        if t <= f {
            return Err(bad("`to` must be after `from`".into()));
        }
    }
    let limit = match some(&p.limit) {
        None => DEFAULT_LIMIT,
        Some(l) => match l.parse::<u32>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(bad(format!(
                    "limit {l:?} must be a number from 1 to {MAX_LIMIT}"
                )))
            }
        },
    };
    let before = some(&p.before)
        .map(|b| {
            b.parse::<i64>()
                .map_err(|_| bad(format!("before {b:?} is not a cursor from `next`")))
        })
        .transpose()?;
    Ok(LogFilter {
        host_ids: None,
        app: some(&p.app).map(String::from),
        severity,
        search,
        from,
        to,
        before,
        limit,
    })
}

async fn list(
    _op: Operator,
    State(state): State<AppState>,
    params: Result<Query<LogParams>, QueryRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let Query(p) = params?;
    let mut filter = parse_filter(&p)?;
    filter.host_ids = resolve_hosts(&state, &p).await?;
    let rows = state.store.logs(&filter).await?;
    let next = (rows.len() == filter.limit as usize)
        .then(|| rows.last().map(|r| r.id.to_string()))
        .flatten();
    let page = LogPage {
        records: rows.iter().map(LogView::of_row).collect(),
        next,
    };
    // Serialized here: the views borrow the rows.
    Ok(Json(
        serde_json::to_value(&page).map_err(|e| AppError::Internal(e.to_string()))?,
    ))
}

/// A live tail: the feed receiver, the filter, and what is ready to send.
struct Tail {
    state: AppState,
    params: LogParams,
    rx: broadcast::Receiver<Arc<FeedBatch>>,
    filter: LogFilter,
    hosts: Option<HashSet<i64>>,
    resolved_at: tokio::time::Instant,
    /// Feed position expected next (records), to count what a lag skipped.
    expected_seq: Option<u64>,
    names: HashMap<i64, Option<String>>,
    ready: VecDeque<Event>,
}

impl Tail {
    fn keeps(&self, e: &LogEvent) -> bool {
        let f = &self.filter;
        let r = &e.record;
        if let Some(hosts) = &self.hosts {
            if !e.host_id.is_some_and(|h| hosts.contains(&h)) {
                return false;
            }
        }
        if f.app
            .as_deref()
            .is_some_and(|a| r.app_name.as_deref() != Some(a))
        {
            return false;
        }
        if f.severity
            .is_some_and(|s| !r.effective_severity().is_at_least(s))
        {
            return false;
        }
        if f.from.is_some_and(|from| r.ts < from) || f.to.is_some_and(|to| r.ts >= to) {
            return false;
        }
        f.search.as_ref().is_none_or(|s| s.matches(&r.message))
    }

    async fn host_name(&mut self, id: i64) -> Option<String> {
        if let Some(n) = self.names.get(&id) {
            return n.clone();
        }
        let name = match self.state.store.host(id).await {
            Ok(h) => h.map(|h| h.hostname),
            Err(_) => None,
        };
        if self.names.len() > 10_000 {
            self.names.clear();
        }
        self.names.insert(id, name.clone());
        name
    }

    async fn take(&mut self, batch: &FeedBatch) {
        if let Some(expected) = self.expected_seq {
            if batch.seq > expected {
                let missed = batch.seq - expected;
                self.state.metrics.log_tail_lagged.add(missed);
                self.ready.push_back(
                    Event::default()
                        .event("lagged")
                        .data(format!("{{\"missed\":{missed}}}")),
                );
            }
        }
        self.expected_seq = Some(batch.seq + batch.events.len() as u64);
        if self.hosts.is_some() && self.resolved_at.elapsed() > TAIL_RESOLVE_EVERY {
            if let Ok(Some(ids)) = resolve_hosts(&self.state, &self.params).await {
                self.hosts = Some(ids.into_iter().collect());
            }
            self.resolved_at = tokio::time::Instant::now();
        }
        for e in &batch.events {
            if !self.keeps(e) {
                continue;
            }
            let host = match e.host_id {
                Some(id) => self.host_name(id).await,
                None => None,
            };
            let view = LogView::new(
                e.id,
                e.host_id,
                host.as_deref(),
                e.source.as_str(),
                &e.record,
            );
            let mut event = Event::default().event("log");
            if let Some(id) = e.id {
                event = event.id(id.to_string());
            }
            match event.json_data(&view) {
                Ok(ev) => self.ready.push_back(ev),
                Err(e) => tracing::warn!(error = %e, "log record not serializable"),
            }
        }
    }
}

async fn stream(
    _op: Operator,
    State(state): State<AppState>,
    params: Result<Query<LogParams>, QueryRejection>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let Query(p) = params?;
    let filter = parse_filter(&p)?;
    let hosts = resolve_hosts(&state, &p)
        .await?
        .map(|ids| ids.into_iter().collect());
    // Subscribed before answering: whatever is committed after the client
    // sees `ready` reaches it.
    let (rx, seq) = state.ingest.log_feed().subscribe_at();
    state.metrics.log_tail_streams.inc();
    let mut ready = VecDeque::new();
    ready.push_back(Event::default().event("ready").data("{}"));
    let tail = Tail {
        state,
        params: p,
        rx,
        filter,
        hosts,
        resolved_at: tokio::time::Instant::now(),
        expected_seq: Some(seq),
        names: HashMap::new(),
        ready,
    };
    let events = futures_util::stream::unfold(tail, |mut t| async move {
        loop {
            if let Some(ev) = t.ready.pop_front() {
                return Some((Ok(ev), t));
            }
            match t.rx.recv().await {
                Ok(batch) => t.take(&batch).await,
                // The next batch received carries the exact count (its seq).
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}
