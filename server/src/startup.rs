//! Assembling and running the server: open the store, bootstrap, bind the
//! listener (port 0 in tests), start the background tasks and the local agent,
//! serve until SIGTERM/Ctrl-C, then stop in order.

use crate::config::Listen;
use crate::config::ServerConfig;
use crate::http::{app, AppState};
use crate::store::{Store, StoreError};
use crate::telemetry::ServerMetrics;
use crate::{bootstrap, fleet, graphite, groups, local_agent, logs, syslog};
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("data directory {path} is not writable: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("server failed: {0}")]
    Serve(std::io::Error),
}

/// A bound, ready-to-run server.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    config: Arc<ServerConfig>,
    syslog: syslog::Listeners,
    graphite: Option<TcpListener>,
    pub bootstrapped: bootstrap::Bootstrapped,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("addr", &self.local_addr())
            .finish()
    }
}

/// Checks that `dir` exists (creating it) and can be written, with one clear error.
pub fn ensure_writable_dir(dir: &Path) -> Result<(), StartupError> {
    let err = |source| StartupError::DataDir {
        path: dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    let probe = dir.join(".metrolog-write-test");
    std::fs::write(&probe, b"ok").map_err(err)?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

impl Application {
    pub async fn build(config: ServerConfig) -> Result<Self, StartupError> {
        ensure_writable_dir(&config.data_dir)?;
        // The file's checks already refused a bad ladder; this only guards callers
        // that build a configuration by hand.
        let spec = config
            .file
            .archives
            .spec()
            .map_err(|p| StartupError::Store(StoreError::Invalid(p.join("; "))))?;
        let store = Arc::new(Store::open_with(&config.database_url, spec).await?);
        store.set_series_limits(
            config.file.archives.max_series_per_host,
            config.file.archives.max_series,
        );
        store.set_read_cache(config.file.archives.read_cache);
        let bootstrapped = bootstrap::run(
            &store,
            std::env::var("METROLOG_ADMIN_PASSWORD").ok(),
            std::env::var("METROLOG_ENROLL_TOKEN").ok(),
        )
        .await?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StartupError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let syslog = syslog::Listeners::bind(&config)
            .await
            .map_err(|(addr, source)| StartupError::Bind { addr, source })?;
        let graphite = match config.graphite {
            Listen::Off => None,
            Listen::On(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartupError::Bind { addr, source })?,
            ),
        };
        let config = Arc::new(config);
        let state = AppState::new(store, config.clone(), Arc::new(ServerMetrics::default()));
        Ok(Self {
            listener,
            state,
            config,
            syslog,
            graphite,
            bootstrapped,
        })
    }

    /// Whether the API and dashboard are served over HTTPS.
    pub fn https(&self) -> bool {
        self.config.http_tls.is_some()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// Bound syslog receiver addresses (UDP, TCP), `None` when off.
    pub fn syslog_addrs(&self) -> (Option<SocketAddr>, Option<SocketAddr>) {
        (self.syslog.udp_addr(), self.syslog.tcp_addr())
    }

    /// Bound syslog-over-TLS receiver address, `None` when off.
    pub fn syslog_tls_addr(&self) -> Option<SocketAddr> {
        self.syslog.tls_addr()
    }

    /// Bound Graphite listener address, `None` when off.
    pub fn graphite_addr(&self) -> Option<SocketAddr> {
        self.graphite.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then stops the local agent (which
    /// leaves), lets in-flight requests finish, and closes the database.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartupError> {
        let addr = self.local_addr();
        let (stop_tx, stop_rx) = watch::channel(false);
        let store = self.state.store.clone();
        // SIGHUP reads the file's [[agents]] again (docs/agent-config.md).
        crate::config::ServerConfig::reload_agents_on_sighup(self.config.clone());
        let housekeeping = tokio::spawn(fleet::run(
            store.clone(),
            self.config.clone(),
            self.state.metrics.clone(),
            stop_rx.clone(),
        ));
        let flusher = tokio::spawn(fleet::flush_archives(
            store.clone(),
            self.config.file.archives.flush_interval,
            self.config.file.archives.write_delay,
            self.state.metrics.clone(),
            stop_rx.clone(),
        ));
        let group_recorder = tokio::spawn(groups::run(
            store.clone(),
            i64::from(store.archive_spec().base_step),
            // A member value as old as the liveness timeout is one of a host about
            // to be `down`: it no longer counts.
            self.config.liveness_timeout().as_secs().max(1) as i64,
            self.state.metrics.clone(),
            stop_rx.clone(),
        ));
        let clock: crate::clock::SharedClock = Arc::new(crate::clock::SystemClock);
        // The receivers are recorded before the evaluator commits anything,
        // so no notice misses them.
        let notifier = crate::notify::Notifier::start_with(
            store.clone(),
            self.config.receivers(),
            crate::scaling::lanes(&self.state.hooks),
            clock.clone(),
            self.state.metrics.clone(),
            stop_rx.clone(),
        )
        .await?;
        let scaling = self
            .state
            .scaling_runner(clock.clone(), notifier.lane_waker())
            .map(|(runner, commands)| tokio::spawn(runner.run(commands, stop_rx.clone())));
        let evaluator = self
            .state
            .alarm_runner(clock, notifier.waker())
            .map(|(runner, commands)| tokio::spawn(runner.run(commands, stop_rx.clone())));
        let log_pipeline = logs::Pipeline::start(
            self.syslog,
            store.clone(),
            self.state.ingest.log_feed().clone(),
            &self.config,
            self.state.metrics.clone(),
            stop_rx.clone(),
        );
        let graphite = self.graphite.map(|listener| {
            let mapping = graphite::PathMapping {
                host_segment: self.config.file.graphite.host_segment,
            };
            graphite::start(self.state.clone(), listener, mapping, stop_rx.clone())
        });
        // The built-in agent speaks plain HTTP to this listener; under TLS to
        // a loopback listener of its own that serves the agent API only.
        let loopback =
            match (&self.config.http_tls, self.config.local_agent) {
                (Some(_), true) => Some(local_agent::bind_loopback().await.map_err(|source| {
                    StartupError::Bind {
                        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                        source,
                    }
                })?),
                _ => None,
            };
        let agent = if self.config.local_agent {
            let target = match &loopback {
                Some(l) => l.local_addr().map_err(StartupError::Serve)?,
                None => addr,
            };
            Some(local_agent::start(&self.state, target, stop_rx.clone()).await?)
        } else {
            None
        };
        let (http_stop_tx, mut http_stop_rx) = watch::channel(false);
        let loopback = loopback
            .map(|l| local_agent::serve_loopback(l, app(self.state.clone()), http_stop_rx.clone()));
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutting down: stopping the local agent, finishing in-flight requests");
            let _ = stop_tx.send(true);
            if let Some(agent) = agent {
                // The agent ships what it has and leaves through our own API,
                // so the HTTP side stays up until it is done.
                if tokio::time::timeout(Duration::from_secs(10), agent)
                    .await
                    .is_err()
                {
                    tracing::warn!("local agent did not stop within 10 s");
                }
            }
            let _ = http_stop_tx.send(true);
        });
        let router = app(self.state.clone());
        let stopped = async move {
            let _ = http_stop_rx.wait_for(|s| *s).await;
        };
        match &self.config.http_tls {
            None => {
                tracing::info!(%addr, "listening: dashboard at http://{addr}/");
                axum::serve(
                    self.listener,
                    router.into_make_service_with_connect_info::<SocketAddr>(),
                )
                .with_graceful_shutdown(stopped)
                .await
                .map_err(StartupError::Serve)?;
            }
            Some(tls) => {
                tracing::info!(%addr, "listening: dashboard at https://{addr}/");
                let listener = crate::http::tls::TlsListener::new(self.listener, tls.acceptor())
                    .map_err(StartupError::Serve)?;
                let router = router.layer(axum::middleware::from_fn(crate::http::tls::mark_https));
                axum::serve(
                    listener,
                    router.into_make_service_with_connect_info::<crate::http::tls::TlsPeer>(),
                )
                .with_graceful_shutdown(stopped)
                .await
                .map_err(StartupError::Serve)?;
            }
        }
        if let Some(l) = loopback {
            let _ = l.await;
        }
        let _ = housekeeping.await;
        if let Some(e) = evaluator {
            let _ = e.await;
        }
        if let Some(s) = scaling {
            let _ = s.await;
        }
        notifier.join().await;
        let _ = group_recorder.await;
        if let Some(g) = graphite {
            // Connections stopped with `stop`; their samples are imported first.
            let _ = g.await;
        }
        let _ = flusher.await;
        // Every request has been answered: write what the archives hold in memory, so
        // the next start has no journal to replay.
        fleet::flush_once(&store, Duration::ZERO, &self.state.metrics).await;
        // Receivers stopped with `stop`; commit what they had read.
        log_pipeline.finish().await;
        store.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
