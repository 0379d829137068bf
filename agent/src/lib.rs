//! Metrolog agent: collects metrics on one instance and ships them to the server.
//!
//! The binary is a thin wrapper around [`run`]; the server embeds the same code
//! path as its local agent:
//!
//! ```no_run
//! # async fn demo() -> Result<(), metrolog_agent::RunError> {
//! use metrolog_agent::config::{AgentConfig, Secret};
//! let mut cfg = AgentConfig::new(vec!["http://127.0.0.1:8080".into()], Some(Secret::new("token")));
//! cfg.group = Some("servers".into());
//! metrolog_agent::run(cfg, async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

pub mod checks;
pub mod cloud;
pub mod collect;
pub mod config;
pub mod downsample;
pub mod logs;
pub mod munin;
pub mod random;
pub mod sampler;
pub mod scrape;
pub mod ship;
pub mod show_config;
pub mod spool;
pub mod state;
pub mod subprocess;

pub use config::{AgentConfig, ConfigErrors, Secret};

use metrolog_protocol::EnrollRequest;
use ship::backoff::{self, Backoff};
use ship::{Client, Handoff, Intervals, Shipper};
use std::future::Future;
use std::path::{Path, PathBuf};
use tokio::sync::watch;

/// This agent's version, sent at enrollment.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Why the agent could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("invalid configuration:\n{0}")]
    Config(#[from] ConfigErrors),
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error("no credential stored in {0} and no enrollment token given: pass --enroll-token or set METROLOG_AGENT_ENROLL_TOKEN")]
    NoEnrollToken(PathBuf),
    #[error("cannot read random bytes for the batch stream id: {0}")]
    Random(std::io::Error),
    #[error("{0}")]
    Client(ship::ShipError),
    #[error(transparent)]
    Logs(#[from] logs::LogsError),
    #[error("agent task failed: {0}")]
    Task(String),
}

/// The hostname: `<procfs>/sys/kernel/hostname`, else `uname`'s nodename.
pub fn detect_hostname(procfs: &Path) -> String {
    std::fs::read_to_string(procfs.join("sys/kernel/hostname"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| {
            rustix::system::uname()
                .nodename()
                .to_string_lossy()
                .trim()
                .to_string()
        })
}

/// Runs the agent until `shutdown` completes: enrolls (or reuses the stored
/// credential), samples and ships; then ships what is pending (bounded by a few
/// seconds), tells the server it leaves and returns `Ok(())`.
///
/// Errors are returned only for what prevents starting (invalid configuration,
/// unwritable state directory, …); an unreachable server is retried forever.
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    config.validate()?;
    let procfs = config.procfs.clone();
    let state_dir = config.state_dir.clone();
    let (state, credential, hostname, stream) = tokio::task::spawn_blocking(move || {
        let dir = state_dir.unwrap_or_else(state::default_state_dir);
        let state = state::StateDir::open(&dir)?;
        let credential = state.load_credential()?;
        let hostname = detect_hostname(&procfs);
        let stream = random::random_hex(16).map_err(RunError::Random)?;
        Ok::<_, RunError>((state, credential, hostname, stream))
    })
    .await
    .map_err(|e| RunError::Task(e.to_string()))??;
    if credential.is_none() && config.enroll_token.is_none() {
        return Err(RunError::NoEnrollToken(state.path().to_path_buf()));
    }
    let hostname = config.hostname.clone().unwrap_or(hostname);
    tracing::info!(
        "metrolog-agent {AGENT_VERSION} starting as {hostname:?} (state in {})",
        state.path().display()
    );
    if let Some(c) = &credential {
        tracing::info!("using the stored credential of host {}", c.host_id);
    }

    let local_intervals = Intervals {
        sample: config.metrics.sample_interval,
        ship: config.metrics.ship_interval,
    };
    // The server's settings from the last run apply until it answers.
    let known = {
        let (state, group) = (state.clone(), config.group.clone());
        tokio::task::spawn_blocking(move || state.load_settings(group.as_deref()))
            .await
            .map_err(|e| RunError::Task(e.to_string()))?
    };
    let known_logs = known.as_ref().and_then(|k| k.logs.clone());
    let known_checks = known.as_ref().and_then(|k| k.checks.clone());
    // Intervals set locally (flag, environment, file) win over the server's.
    let pinned = [
        config.origins.get("metrics.sample_interval").is_local(),
        config.origins.get("metrics.ship_interval").is_local(),
    ];
    let intervals = match &known {
        Some(k) => local_intervals.with_pinned(k, pinned),
        None => local_intervals,
    };
    let (intervals_tx, intervals_rx) = watch::channel(intervals);
    let (logs_tx, logs_rx) = watch::channel(known_logs.clone());
    let (checks_tx, checks_rx) = watch::channel(known_checks.clone());
    let check_book = std::sync::Arc::new(checks::CheckBook::default());
    // The spool before the tailer: log lines of spooled batches that the
    // saved offsets do not cover are removed from the spool, as the tailer
    // reads them again (docs/agent-spool.md, "Crash safety").
    let spool = {
        let (state, policy) = (state.clone(), config.spool.policy());
        tokio::task::spawn_blocking(move || {
            let offsets = logs::tail::offsets::OffsetStore::new(state.clone());
            let through = offsets.load_all().map_or(0, |(_, t)| t);
            spool::Spool::open(state.path(), policy, through)
        })
        .await
        .map_err(|e| RunError::Task(e.to_string()))?
    };
    let log_pipeline = logs::LogPipeline::start(&config.logs, known_logs.as_ref(), &state).await?;
    let handoff = Handoff::new(spool).with_listener(log_pipeline.book.clone());
    // Every settings document the server sends, for the sources that follow
    // them (Munin, scrape targets); the last run's until it answers.
    let (pushed_tx, pushed_rx) = watch::channel(known.clone());
    let roots = match &config.ca_file {
        Some(path) => {
            let path = path.clone();
            tokio::task::spawn_blocking(move || config::read_ca_file(&path))
                .await
                .map_err(|e| RunError::Task(e.to_string()))?
                .map_err(|e| {
                    let mut errs = ConfigErrors::default();
                    errs.push("ca_file", e);
                    RunError::Config(errs)
                })?
        }
        None => Vec::new(),
    };
    let client = Client::with_roots(&config.servers, roots)
        .map_err(RunError::Client)?
        .with_settings_sink(pushed_tx);
    let shipper = Shipper::new(
        client,
        state,
        EnrollRequest {
            hostname,
            instance_id: config.instance_id.clone(),
            group: config.group.clone(),
            labels: config.labels.clone(),
            agent_version: AGENT_VERSION.to_string(),
        },
        config.enroll_token.clone(),
        credential,
        handoff.clone(),
        intervals_tx,
        Backoff::new(backoff::BASE, backoff::MAX, random::Jitter::from_entropy()),
    )
    .with_known_settings(local_intervals, known)
    .with_pinned_intervals(pinned)
    .with_replay_rate(config.spool.replay_rate)
    .with_log_settings(logs_tx)
    .with_check_settings(checks_tx);
    let sampler = sampler::Sampler::new(config.procfs.clone(), stream, handoff, intervals_rx)
        .with_logs(log_pipeline.book.clone())
        .with_checks(check_book.clone());
    let scrape_book = std::sync::Arc::new(scrape::SampleBook::default());
    let (sources_stop_tx, sources_stop_rx) = watch::channel(false);
    let mut sourcing = tokio::spawn(follow_sources(
        std::sync::Arc::new(config.clone()),
        pushed_rx,
        check_book.clone(),
        scrape_book.clone(),
        sources_stop_rx,
    ));
    scrape_book.push(cloud::failure_series());
    let sampler = sampler.with_samples(scrape_book);
    let running_checks =
        checks::Checks::start(config.checks.clone(), known_checks.as_deref(), check_book);

    let (stop_tx, stop_rx) = watch::channel(false);
    let (drain_tx, drain_rx) = watch::channel(false);
    let (logs_stop_tx, logs_stop_rx) = watch::channel(false);
    let (checks_stop_tx, checks_stop_rx) = watch::channel(false);
    let mut logging = tokio::spawn(follow_log_settings(log_pipeline, logs_rx, logs_stop_rx));
    let mut checking = tokio::spawn(follow_check_settings(
        running_checks,
        checks_rx,
        checks_stop_rx,
    ));
    let mut sampling = tokio::spawn(sampler.run(stop_rx));
    let mut shipping = tokio::spawn(shipper.run(drain_rx));

    tokio::select! {
        () = shutdown => {}
        r = &mut sampling => return Err(RunError::Task(format!("sampler stopped: {r:?}"))),
        r = &mut shipping => return Err(RunError::Task(format!("shipper stopped: {r:?}"))),
        r = &mut logging => return Err(RunError::Task(format!("log settings stopped: {:?}", r.err()))),
        r = &mut checking => return Err(RunError::Task(format!("checks stopped: {:?}", r.err()))),
        r = &mut sourcing => return Err(RunError::Task(format!("munin and scrape stopped: {:?}", r.err()))),
    }
    tracing::info!("shutting down");
    // Nothing more is read and no check runs (a plugin running is killed);
    // the sampler seals its last batch (with every log record read and every
    // check result) before the shipper is told to drain; the offsets the
    // server acknowledged are saved last.
    let _ = checks_stop_tx.send(true);
    let _ = checking.await;
    let _ = sources_stop_tx.send(true);
    let _ = sourcing.await;
    let _ = logs_stop_tx.send(true);
    let mut log_pipeline = logging
        .await
        .map_err(|e| RunError::Task(format!("log settings: {e}")))?;
    log_pipeline.pause().await;
    let _ = stop_tx.send(true);
    let _ = sampling.await;
    let _ = drain_tx.send(true);
    let shipped = shipping
        .await
        .map_err(|e| RunError::Task(format!("shipper: {e}")));
    log_pipeline.finish().await;
    shipped
}

/// Applies the server's log settings to the pipeline as they change, until
/// `stop`; then hands the pipeline back for the shutdown.
async fn follow_log_settings(
    mut pipeline: logs::LogPipeline,
    mut settings: watch::Receiver<Option<metrolog_protocol::LogSettings>>,
    mut stop: watch::Receiver<bool>,
) -> logs::LogPipeline {
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return pipeline,
            changed = settings.changed() => {
                // Err: the shipper is gone, nothing will change any more.
                if changed.is_err() {
                    break;
                }
                let pushed = settings.borrow_and_update().clone();
                pipeline.reconfigure(pushed.as_ref());
            }
        }
    }
    let _ = stop.wait_for(|s| *s).await;
    pipeline
}

/// Runs the Munin plugins and scrape targets in force — the agent's own
/// with the server's settings (see [`AgentConfig::munin_with`] and
/// [`AgentConfig::scrape_with`]) — restarting a source when what it should
/// run changes, until `stop`.
async fn follow_sources(
    config: std::sync::Arc<AgentConfig>,
    mut settings: watch::Receiver<Option<metrolog_protocol::AgentSettings>>,
    check_book: std::sync::Arc<checks::CheckBook>,
    scrape_book: std::sync::Arc<scrape::SampleBook>,
    mut stop: watch::Receiver<bool>,
) {
    let mut munin: Option<(munin::MuninConfig, munin::Munin)> = None;
    let mut scrapes: Option<(Vec<scrape::ScrapeConfig>, scrape::Scrapes)> = None;
    let mut first = true;
    loop {
        let pushed = settings.borrow_and_update().clone();
        let (want, problems) = config.munin_with(pushed.as_ref());
        if !problems.is_empty() {
            tracing::warn!("the server's [munin] is not applied: {problems}");
        }
        let want = want.map(|(m, _)| m);
        if want.as_ref() != munin.as_ref().map(|(m, _)| m) {
            if let Some((_, old)) = munin.take() {
                old.stop().await;
            }
            if !first {
                match &want {
                    Some(m) => tracing::info!(
                        "Munin plugins of {} now run every {}",
                        m.plugins_dir.display(),
                        humantime::format_duration(m.interval)
                    ),
                    None => tracing::info!("Munin plugins no longer run"),
                }
            }
            munin = want.map(|m| (m.clone(), munin::Munin::start(m, check_book.clone())));
        }
        let (want, problems) = config.scrape_with(pushed.as_ref());
        if !problems.is_empty() {
            tracing::warn!("scrape targets of the server not applied: {problems}");
        }
        let want: Vec<scrape::ScrapeConfig> = want.into_iter().map(|(t, _)| t).collect();
        if scrapes.as_ref().map(|(t, _)| t) != Some(&want) {
            if let Some((_, old)) = scrapes.take() {
                old.stop().await;
            }
            if !first {
                let names: Vec<&str> = want.iter().map(|t| t.name.as_str()).collect();
                tracing::info!("scrape targets now: [{}]", names.join(", "));
            }
            let started = scrape::Scrapes::start(&want, scrape_book.clone());
            scrapes = Some((want, started));
        }
        first = false;
        let changed = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            changed = settings.changed() => changed,
        };
        if changed.is_err() {
            // The client is gone: nothing will change any more.
            let _ = stop.wait_for(|s| *s).await;
            break;
        }
    }
    if let Some((_, m)) = munin {
        m.stop().await;
    }
    if let Some((_, s)) = scrapes {
        s.stop().await;
    }
}

/// Applies the server's checks as they change, until `stop`; then stops
/// every check (killing plugins that run).
async fn follow_check_settings(
    mut checks: checks::Checks,
    mut settings: watch::Receiver<Option<Vec<metrolog_protocol::CheckSettings>>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let changed = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            changed = settings.changed() => changed,
        };
        if changed.is_err() {
            // The shipper is gone: nothing will change any more.
            let _ = stop.wait_for(|s| *s).await;
            break;
        }
        let pushed = settings.borrow_and_update().clone();
        checks.reconfigure(pushed.as_deref());
    }
    checks.stop().await;
}
