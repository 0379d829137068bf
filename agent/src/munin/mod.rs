//! Munin plugins, run unchanged as munin-node 2.0 runs them (see
//! `docs/munin.md`):
//!
//! - [`config`]: the `[munin]` settings;
//! - [`plugin_conf`]: `plugin-conf.d` (user, group, `env.*`, wildcards);
//! - [`runner`]: one run of a plugin, with munin-node's environment and
//!   identity, killed with its process group on timeout;
//! - [`output`]: the output grammar (attributes, `multigraph`, `U`,
//!   `EPOCH:value`, dirtyconfig values);
//! - [`rates`]: GAUGE/DERIVE/COUNTER/ABSOLUTE as rrdtool computes them;
//! - [`Munin`] (here): every executable of `plugins_dir`, `config` when it
//!   appears or changes, fetched every `interval`, each plugin in a task of
//!   its own so one slow plugin never delays another.
//!
//! Values become series `munin.<plugin>.<field>` (`munin.<graph>.<field>`
//! for multigraph) in the agent's batches, through the checks' path: each
//! run is also a check result `munin-<plugin>` (OK, or UNKNOWN with the
//! reason), and a result `munin` sums the source up with its counters as
//! series `agent.munin.*`.

pub mod cdef;
pub mod config;
pub mod output;
pub mod plugin_conf;
pub mod rates;
pub mod runner;

pub use config::MuninConfig;

use crate::checks::book::{CheckBook, PendingRun};
use cdef::Cdef;
use metrolog_protocol::nagios::{CheckName, CheckResult, CheckStatus, MAX_CHECK_NAME};
use metrolog_protocol::{Labels, SeriesKey, SeriesMeta, SeriesName, MAX_META_TEXT};
use output::Output;
use plugin_conf::PluginConfs;
use rates::{Kind, Rates, Rule};
use runner::{Accounts, Invocation, Outcome};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Counters of the Munin source since start (series `agent.munin.*`).
#[derive(Debug, Default)]
pub struct Stats {
    pub runs: AtomicU64,
    /// Runs that failed: exit code, timeout, unreadable or oversized output.
    pub failures: AtomicU64,
    /// Output lines that fit no form of the grammar.
    pub bad_lines: AtomicU64,
    /// Fields dropped over `max_fields` or `max_series`, or whose name
    /// cannot be a series.
    pub fields_dropped: AtomicU64,
}

/// What the agent knows of one plugin, for tests and the summary.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PluginView {
    /// The last `config` output, read.
    pub config: Option<Output>,
    /// The last fetch output, read (or the config's, with dirtyconfig).
    pub fetched: Option<Output>,
    /// `None` while the last run went well; else why it failed.
    pub failure: Option<String>,
    /// Fetches that gave values, since the plugin appeared.
    pub fetches: u64,
    /// The last run's wall time (unix seconds).
    pub last_run: Option<i64>,
}

/// State shared by the plugins' tasks.
#[derive(Debug)]
struct Shared {
    cfg: MuninConfig,
    book: Arc<CheckBook>,
    stats: Stats,
    views: Mutex<BTreeMap<String, PluginView>>,
    /// Every series fed so far, to hold `max_series`.
    series: Mutex<HashSet<SeriesName>>,
}

impl Shared {
    fn view(&self, name: &str, f: impl FnOnce(&mut PluginView)) {
        let mut views = self.views.lock().unwrap_or_else(|p| p.into_inner());
        f(views.entry(name.to_string()).or_default());
    }

    /// Whether `name` may feed a series (within `max_series`).
    fn admit(&self, name: &SeriesName) -> bool {
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        if series.contains(name) {
            return true;
        }
        if series.len() >= self.cfg.max_series {
            return false;
        }
        series.insert(name.clone());
        true
    }
}

/// A plugin found in `plugins_dir`, ready to run; `stamp` changes when the
/// file or its link does, so its `config` runs again.
#[derive(Debug, Clone, PartialEq)]
struct Found {
    inv: Invocation,
    stamp: (Option<PathBuf>, Option<SystemTime>, u64),
}

struct Running {
    found: Found,
    task: JoinHandle<()>,
}

/// The Munin source, running.
pub struct Munin {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Munin {
    /// Starts running the plugins of `cfg` (the first round at once),
    /// handing results and samples to `book`.
    pub fn start(cfg: MuninConfig, book: Arc<CheckBook>) -> Self {
        let shared = Arc::new(Shared {
            cfg,
            book,
            stats: Stats::default(),
            views: Mutex::new(BTreeMap::new()),
            series: Mutex::new(HashSet::new()),
        });
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(supervise(shared.clone(), stop_rx));
        Self { shared, stop, task }
    }

    /// The plugins known, by name.
    pub fn views(&self) -> BTreeMap<String, PluginView> {
        self.shared
            .views
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// Stops every plugin task; a plugin running is killed with its group.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Whether munin-node would run `name` (its `is_a_runnable_service`).
fn runnable_name(name: &str) -> bool {
    !name.is_empty()
        && !name.ends_with(".conf")
        && !plugin_conf::ignored(name)
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '@' | '.' | ':'))
}

/// Lists `plugins_dir` and resolves how each plugin runs (blocking I/O).
fn scan(
    cfg: &MuninConfig,
    base_env: &BTreeMap<String, String>,
) -> (BTreeMap<String, Result<Found, String>>, Vec<String>) {
    use std::os::unix::fs::PermissionsExt;
    let mut problems = Vec::new();
    let mut names: Vec<String> = match std::fs::read_dir(&cfg.plugins_dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| runnable_name(n))
            .collect(),
        Err(e) => {
            problems.push(format!("cannot read {}: {e}", cfg.plugins_dir.display()));
            Vec::new()
        }
    };
    names.sort();
    let confs = PluginConfs::read_dir(&cfg.conf_dir);
    problems.extend(confs.problems.iter().cloned());
    let accounts = Accounts::read(Path::new("/etc"));
    let mut out = BTreeMap::new();
    for name in names {
        let path = cfg.plugins_dir.join(&name);
        // Follows the link, as munin-node's `-f` and `-x`.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            continue;
        }
        if out.len() >= cfg.max_plugins {
            problems.push(format!(
                "more than {} plugins (munin.max_plugins): {name} and those after it are not run",
                cfg.max_plugins
            ));
            break;
        }
        let conf = confs.for_plugin(&name);
        let found = accounts
            .run_as(&conf, &cfg.default_user, &cfg.default_group)
            .and_then(|run_as| {
                runner::ensure_state_dir(&cfg.plugstate_dir, &run_as)?;
                let env =
                    runner::plugin_env(base_env, &cfg.plugstate_dir, &name, &run_as, &conf.env);
                Ok(Found {
                    inv: Invocation {
                        name: name.clone(),
                        path: path.clone(),
                        run_as,
                        command: conf.command.clone(),
                        env,
                        timeout: conf.timeout.unwrap_or(cfg.timeout),
                        max_output_bytes: usize::try_from(cfg.max_output_bytes)
                            .unwrap_or(usize::MAX),
                    },
                    stamp: (
                        std::fs::read_link(&path).ok(),
                        meta.modified().ok(),
                        meta.len(),
                    ),
                })
            });
        out.insert(name, found);
    }
    (out, problems)
}

async fn supervise(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let cfg = shared.cfg.clone();
    let base_env = runner::base_env(&cfg.libdir, &crate::detect_hostname(Path::new("/proc")));
    let (rounds, _) = watch::channel(0u64);
    let mut running: BTreeMap<String, Running> = BTreeMap::new();
    let mut unrunnable: BTreeMap<String, String> = BTreeMap::new();
    let mut told: HashSet<String> = HashSet::new();
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            _ = tick.tick() => {}
        }
        let (c, e) = (cfg.clone(), base_env.clone());
        let Ok((found, problems)) = tokio::task::spawn_blocking(move || scan(&c, &e)).await else {
            continue;
        };
        for p in problems {
            if told.insert(p.clone()) {
                tracing::warn!("munin: {p}");
            }
        }
        running.retain(|name, r| {
            let keep = matches!(found.get(name), Some(Ok(f)) if *f == r.found);
            if !keep {
                r.task.abort();
                tracing::info!("munin: plugin {name} removed or changed");
            }
            keep
        });
        unrunnable.clear();
        for (name, f) in found {
            match f {
                Ok(f) if !running.contains_key(&name) => {
                    if !f.inv.run_as.switch && told.insert(format!("self:{name}")) {
                        tracing::info!(
                            "munin: the agent is not root: plugin {name} runs as {}",
                            f.inv.run_as.user
                        );
                    }
                    let mut rx = rounds.subscribe();
                    rx.mark_changed();
                    let task = tokio::spawn(run_plugin(shared.clone(), f.inv.clone(), rx));
                    running.insert(name, Running { found: f, task });
                }
                Ok(_) => {}
                Err(reason) => {
                    unrunnable.insert(name, reason);
                }
            }
        }
        let known: HashSet<&String> = running.keys().chain(unrunnable.keys()).collect();
        shared
            .views
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|name, _| known.contains(name));
        rounds.send_modify(|r| *r += 1);
        push_summary(&shared, running.len(), &unrunnable);
    }
    for (_, r) in running {
        r.task.abort();
        let _ = r.task.await;
    }
}

/// The check name of a plugin's status: `munin-<plugin>`, sanitised.
pub fn status_name(plugin: &str) -> Option<CheckName> {
    let mut name: String = format!("munin-{}", series_part(plugin, false));
    name.truncate(MAX_CHECK_NAME);
    CheckName::parse(&name).ok()
}

/// A plugin or graph name as part of a series name: lowercase, anything
/// but `a-z 0-9 _ -` (and `.` between graph levels) as `_`.
pub fn series_part(name: &str, keep_dots: bool) -> String {
    name.chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '_' | '-') => c,
            '.' if keep_dots => '.',
            _ => '_',
        })
        .collect()
}

/// The series of `field` in `graph` of `plugin`.
pub fn series_name(plugin: &str, graph: &str, field: &str) -> String {
    let graph = if graph == plugin {
        series_part(plugin, false)
    } else {
        series_part(graph, true)
    };
    format!("munin.{graph}.{}", field.to_ascii_lowercase())
}

/// One run of a plugin, as its status and samples.
struct Report {
    status: CheckStatus,
    output: String,
    ts: i64,
    took: Duration,
    samples: Vec<(SeriesKey, f64)>,
    timed: Vec<(i64, SeriesKey, f64)>,
}

fn push_status(shared: &Shared, plugin: &str, r: Report) {
    let Some(name) = status_name(plugin) else {
        return;
    };
    shared.book.push(PendingRun {
        result: CheckResult {
            name,
            status: r.status,
            output: r.output,
            long_output: String::new(),
            perfdata: String::new(),
            ts: r.ts,
            duration_ms: r.took.as_millis() as u64,
            attempt: 1,
            max_attempts: 1,
        },
        samples: r.samples,
        timed: r.timed,
    });
}

/// The result `munin`: how many plugins run, which fail and why, with the
/// source's counters as samples.
fn push_summary(shared: &Shared, running: usize, unrunnable: &BTreeMap<String, String>) {
    let failing: Vec<String> = {
        let views = shared.views.lock().unwrap_or_else(|p| p.into_inner());
        views
            .iter()
            .filter_map(|(n, v)| v.failure.as_ref().map(|f| format!("{n}: {f}")))
            .chain(unrunnable.iter().map(|(n, r)| format!("{n}: {r}")))
            .collect()
    };
    let s = &shared.stats;
    let samples: Vec<(SeriesKey, f64)> = [
        ("agent.munin.plugins", running as u64),
        ("agent.munin.failing", failing.len() as u64),
        ("agent.munin.runs", s.runs.load(Ordering::Relaxed)),
        ("agent.munin.failures", s.failures.load(Ordering::Relaxed)),
        ("agent.munin.bad_lines", s.bad_lines.load(Ordering::Relaxed)),
        (
            "agent.munin.fields_dropped",
            s.fields_dropped.load(Ordering::Relaxed),
        ),
    ]
    .into_iter()
    .filter_map(|(n, v)| Some((SeriesKey::new(n, Labels::new()).ok()?, v as f64)))
    .collect();
    let (status, output) = if failing.is_empty() {
        (
            CheckStatus::Ok,
            format!("{running} Munin plugin(s) running"),
        )
    } else {
        (
            CheckStatus::Warning,
            format!(
                "{} of {} Munin plugin(s) failing",
                failing.len(),
                running + unrunnable.len()
            ),
        )
    };
    let Ok(name) = CheckName::parse("munin") else {
        return;
    };
    shared.book.push(PendingRun {
        result: CheckResult {
            name,
            status,
            output,
            long_output: failing.join("\n"),
            perfdata: String::new(),
            ts: unix_now() as i64,
            duration_ms: 0,
            attempt: 1,
            max_attempts: 1,
        },
        samples,
        timed: Vec::new(),
    });
}

/// `text` cut to [`MAX_META_TEXT`] bytes on a character boundary.
fn meta_text(text: &str) -> String {
    let mut end = text.len().min(MAX_META_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// What the plugin's `config` says of each of its series, for the server
/// to title, group and draw them as Munin does.
pub fn series_meta(plugin: &str, config: &Output) -> Vec<SeriesMeta> {
    let mut out = Vec::new();
    for g in &config.graphs {
        let graph_key = series_name(plugin, &g.name, "x");
        let graph = graph_key.trim_end_matches(".x").to_string();
        let period = g.attrs.get("graph_period").map_or("second", String::as_str);
        let attr = |k: &str| g.attrs.get(k).map(|v| meta_text(v));
        for (order, (field, f)) in ordered_fields(g).into_iter().enumerate() {
            let Ok(name) = SeriesName::parse(&series_name(plugin, &g.name, field)) else {
                continue;
            };
            let fattr = |k: &str| f.attrs.get(k).map(|v| meta_text(v));
            out.push(SeriesMeta {
                name,
                labels: Labels::new(),
                graph: graph.clone(),
                order: u32::try_from(order).unwrap_or(u32::MAX),
                title: attr("graph_title"),
                // Munin lists a graph without a category under "other".
                category: Some(attr("graph_category").unwrap_or_else(|| "other".into())),
                vlabel: attr("graph_vlabel").map(|v| v.replace("${graph_period}", period)),
                label: fattr("label"),
                info: fattr("info"),
                kind: Some(
                    f.attrs
                        .get("type")
                        .and_then(|t| Kind::parse(t))
                        .unwrap_or(Kind::Gauge)
                        .as_str()
                        .to_string(),
                ),
                warning: fattr("warning"),
                critical: fattr("critical"),
            });
        }
    }
    out
}

/// A graph's fields in the order Munin draws them: those `graph_order`
/// names first, in its order, then the others as first printed.
/// (`graph_order` entries of the form `name=graph.field` borrow a field of
/// another graph; they are not fields of this one and are skipped.)
pub fn ordered_fields(g: &output::Graph) -> Vec<(&String, &output::Field)> {
    let mut out: Vec<(&String, &output::Field)> = Vec::with_capacity(g.fields.len());
    if let Some(order) = g.attrs.get("graph_order") {
        for name in order.split_whitespace().filter(|n| !n.contains('=')) {
            let name = output::sanitise_field(name);
            if let Some((n, f)) = g.fields.iter().find(|(n, _)| *n == name) {
                if !out.iter().any(|(o, _)| *o == n) {
                    out.push((n, f));
                }
            }
        }
    }
    for (n, f) in &g.fields {
        if !out.iter().any(|(o, _)| *o == n) {
            out.push((n, f));
        }
    }
    out
}

/// The `cdef`s of a plugin's `config`, by (graph, field), and the reasons
/// of those refused.
fn cdefs(config: &Output) -> (HashMap<(String, String), Cdef>, Vec<String>) {
    let mut out = HashMap::new();
    let mut problems = Vec::new();
    for g in &config.graphs {
        for (field, f) in &g.fields {
            let Some(text) = f.attrs.get("cdef") else {
                continue;
            };
            match Cdef::parse(text) {
                Ok(c) => {
                    out.insert((g.name.clone(), field.clone()), c);
                }
                Err(e) => problems.push(format!("{field}.cdef {text:?} not applied: {e}")),
            }
        }
    }
    (out, problems)
}

/// A field's stored values in one fetch: its name, its series, and each
/// reading's time (the plugin's own, if it gave one) and value.
type Stored<'a> = (&'a String, SeriesKey, Vec<(Option<i64>, f64)>);

/// The type and bounds of each field, from the plugin's `config`.
fn rules(config: Option<&Output>, graph: &str, field: &str) -> Rule {
    let Some(f) = config
        .and_then(|c| c.graph(graph))
        .and_then(|g| g.get(field))
    else {
        return Rule::default();
    };
    Rule {
        kind: f
            .attrs
            .get("type")
            .and_then(|t| Kind::parse(t))
            .unwrap_or(Kind::Gauge),
        min: rates::parse_bound(f.attrs.get("min")),
        max: rates::parse_bound(f.attrs.get("max")),
    }
}

/// One plugin, run every round until aborted: `config` first (again after
/// a failure), then a fetch each round (none in the round whose `config`
/// printed values, as munin-update does with dirtyconfig).
async fn run_plugin(shared: Arc<Shared>, inv: Invocation, mut rounds: watch::Receiver<u64>) {
    let limits = output::Limits {
        max_lines: shared.cfg.max_lines,
        max_fields: shared.cfg.max_fields,
    };
    let mut config: Option<Output> = None;
    let mut cdef_of: HashMap<(String, String), Cdef> = HashMap::new();
    let mut cdef_problems: Vec<String> = Vec::new();
    let mut rates: Rates<SeriesName> = Rates::default();
    let mut last_ts = i64::MIN;
    while rounds.changed().await.is_ok() {
        rounds.borrow_and_update();
        let mut values: Option<(Output, Duration)> = None;
        if config.is_none() {
            match run_and_read(&shared, &inv, Some("config"), limits).await {
                Ok((out, took)) => {
                    let dirty = out
                        .graphs
                        .iter()
                        .any(|g| g.fields.iter().any(|(_, f)| !f.readings.is_empty()));
                    shared.view(&inv.name, |v| v.config = Some(out.clone()));
                    shared.book.push_meta(series_meta(&inv.name, &out));
                    (cdef_of, cdef_problems) = cdefs(&out);
                    for p in &cdef_problems {
                        tracing::warn!("munin plugin {}: {p}", inv.name);
                    }
                    if dirty {
                        values = Some((out.clone(), took));
                    }
                    config = Some(out);
                }
                Err((reason, took)) => {
                    fail(&shared, &inv.name, format!("config: {reason}"), took);
                    continue;
                }
            }
        }
        let (out, took) = match values {
            Some(v) => v,
            None => match run_and_read(&shared, &inv, None, limits).await {
                Ok(v) => v,
                Err((reason, took)) => {
                    fail(&shared, &inv.name, reason, took);
                    continue;
                }
            },
        };
        let t = unix_now();
        let ts = t as i64;
        let mut samples = Vec::new();
        let mut timed = Vec::new();
        let mut dropped = 0usize;
        let mut used: HashSet<SeriesName> = HashSet::new();
        for graph in &out.graphs {
            // What Munin stores (rates, min/max applied) for each field…
            let mut stored: Vec<Stored> = Vec::new();
            for (field, f) in &graph.fields {
                let Ok(key) =
                    SeriesKey::new(&series_name(&inv.name, &graph.name, field), Labels::new())
                else {
                    dropped += 1;
                    continue;
                };
                if !shared.admit(&key.name) {
                    dropped += 1;
                    continue;
                }
                used.insert(key.name.clone());
                let rule = rules(config.as_ref(), &graph.name, field);
                let mut values = Vec::with_capacity(f.readings.len());
                for r in &f.readings {
                    let at = r.at.map_or(t, |a| a as f64);
                    if let Some(v) = rates.value(key.name.clone(), rule, r.value, at) {
                        values.push((r.at, v));
                    }
                }
                stored.push((field, key, values));
            }
            // …then what it draws: `cdef` over the stored values of the
            // graph's fields (each field's latest).
            let latest = |name: &str| {
                stored
                    .iter()
                    .find(|(n, _, _)| n.as_str() == name)
                    .and_then(|(_, _, v)| v.last().map(|(_, v)| *v))
            };
            for (field, key, values) in &stored {
                let cdef = cdef_of.get(&(graph.name.clone(), (*field).clone()));
                for &(at, v) in values {
                    let v = match cdef {
                        None => v,
                        Some(c) => {
                            let drawn = c.eval(|n| {
                                if n == field.as_str() {
                                    Some(v)
                                } else {
                                    latest(n)
                                }
                            });
                            match drawn {
                                Some(d) => d,
                                None => continue,
                            }
                        }
                    };
                    match at {
                        Some(a) if a != ts => timed.push((a, key.clone(), v)),
                        _ => samples.push((key.clone(), v)),
                    }
                }
            }
        }
        rates.retain(|k| used.contains(k));
        if ts <= last_ts {
            // Two fetches in one second: the server keeps one sample per
            // second and series.
            samples.clear();
        }
        last_ts = last_ts.max(ts);
        let dropped_total = dropped + out.fields_dropped;
        shared
            .stats
            .fields_dropped
            .fetch_add(dropped_total as u64, Ordering::Relaxed);
        shared
            .stats
            .bad_lines
            .fetch_add(out.bad_lines as u64, Ordering::Relaxed);
        let mut summary = format!("{} field(s)", out.field_count());
        if out.bad_lines > 0 {
            summary.push_str(&format!(
                "; {} unreadable line(s), the first: {:?}",
                out.bad_lines,
                out.first_bad.as_deref().unwrap_or("")
            ));
        }
        if dropped_total > 0 {
            summary.push_str(&format!(
                "; {dropped_total} field(s) dropped (munin.max_fields {}, munin.max_series {}, or a name that cannot be a series)",
                shared.cfg.max_fields, shared.cfg.max_series
            ));
        }
        for p in &cdef_problems {
            summary.push_str("; ");
            summary.push_str(p);
        }
        let status = if out.bad_lines > 0 || dropped_total > 0 || !cdef_problems.is_empty() {
            CheckStatus::Warning
        } else {
            CheckStatus::Ok
        };
        shared.view(&inv.name, |v| {
            v.fetched = Some(out);
            v.failure = None;
            v.fetches += 1;
            v.last_run = Some(ts);
        });
        let report = Report {
            status,
            output: summary,
            ts,
            took,
            samples,
            timed,
        };
        push_status(&shared, &inv.name, report);
    }
}

/// A failed run: counted, logged at its first occurrence, shown in the
/// plugin's status.
fn fail(shared: &Shared, plugin: &str, reason: String, took: Duration) {
    shared.stats.failures.fetch_add(1, Ordering::Relaxed);
    let ts = unix_now() as i64;
    let mut first = false;
    shared.view(plugin, |v| {
        first = v.failure.as_deref() != Some(reason.as_str());
        v.failure = Some(reason.clone());
        v.last_run = Some(ts);
    });
    if first {
        tracing::warn!("munin plugin {plugin}: {reason}");
    }
    let report = Report {
        status: CheckStatus::Unknown,
        output: reason,
        ts,
        took,
        samples: Vec::new(),
        timed: Vec::new(),
    };
    push_status(shared, plugin, report);
}

async fn run_and_read(
    shared: &Shared,
    inv: &Invocation,
    arg: Option<&str>,
    limits: output::Limits,
) -> Result<(Output, Duration), (String, Duration)> {
    shared.stats.runs.fetch_add(1, Ordering::Relaxed);
    let mode = if arg == Some("config") {
        output::Mode::Config
    } else {
        output::Mode::Fetch
    };
    match runner::run(inv, arg).await {
        Outcome::Done { stdout, duration } => {
            // Large outputs are read off the runtime.
            let name = inv.name.clone();
            let read =
                tokio::task::spawn_blocking(move || output::parse(&name, mode, &stdout, limits))
                    .await
                    .map_err(|e| (format!("reading the output failed: {e}"), duration))?;
            read.map(|o| (o, duration))
                .map_err(|e| (e.to_string(), duration))
        }
        Outcome::Failed { reason, duration } => Err((reason, duration)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_titles_and_groups_as_munin() {
        let config = output::parse(
            "load",
            output::Mode::Config,
            b"graph_title Load average\ngraph_vlabel load per ${graph_period}\n\
              load.label load\nload.warning 10\nload.critical 120\n\
              multigraph load_x.y\nz.label z\nz.type DERIVE\n",
            output::Limits {
                max_lines: 100,
                max_fields: 100,
            },
        )
        .unwrap();
        let meta = series_meta("load", &config);
        assert_eq!(meta.len(), 2);
        let m = &meta[0];
        assert_eq!(
            (m.name.as_str(), m.graph.as_str(), m.title.as_deref()),
            ("munin.load.load", "munin.load", Some("Load average"))
        );
        assert_eq!(m.vlabel.as_deref(), Some("load per second"));
        assert_eq!(
            (m.warning.as_deref(), m.critical.as_deref()),
            (Some("10"), Some("120"))
        );
        assert_eq!(m.category.as_deref(), Some("other"));
        assert_eq!(m.kind.as_deref(), Some("GAUGE"));
        assert_eq!(
            (meta[1].graph.as_str(), meta[1].kind.as_deref()),
            ("munin.load_x.y", Some("DERIVE"))
        );
    }

    #[test]
    fn names() {
        assert_eq!(
            series_name("if_eth0", "if_eth0", "down"),
            "munin.if_eth0.down"
        );
        assert_eq!(
            series_name("diskstats", "diskstats_latency.sda", "avgrdwait"),
            "munin.diskstats_latency.sda.avgrdwait"
        );
        assert_eq!(
            series_name("Foo@bar", "Foo@bar", "bad_name"),
            "munin.foo_bar.bad_name"
        );
        assert_eq!(status_name("if_eth0").unwrap().as_str(), "munin-if_eth0");
        assert_eq!(
            status_name(&"x".repeat(100)).unwrap().as_str().len(),
            MAX_CHECK_NAME
        );
        assert!(runnable_name("if_eth0") && runnable_name("snmp__host@x:1"));
        assert!(
            !runnable_name("x.conf")
                && !runnable_name(".x")
                && !runnable_name("a b")
                && !runnable_name("x~")
        );
    }
}
