//! Syslog over TCP (RFC 6587), in the clear or inside TLS (RFC 5425): each
//! connection has its own framer (octet counting or newline, per frame).
//! Connections are bounded per listener: at the limit, a new one replaces the
//! connection that has been idle longest, so a client holding many silent
//! connections cannot lock others out; a connection silent for `idle_timeout`
//! is closed. A TLS connection is registered before its handshake, which its
//! own task runs under a timeout: a client that connects and never handshakes
//! takes a slot like any idle connection and never holds up the accept loop.

use super::{count_marks, Limits};
use crate::logs::writer::{Incoming, LogSink};
use crate::telemetry::{Counter, ServerMetrics};
use chrono::Utc;
use metrolog_protocol::syslog::{Framer, LogSource, ParseOptions};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio_rustls::TlsAcceptor;

/// Bytes read per call.
const READ_BUF: usize = 16 * 1024;

/// What a connection speaks once accepted.
#[derive(Clone)]
pub(super) enum Transport {
    Plain,
    Tls {
        acceptor: TlsAcceptor,
        /// A handshake not done by then fails (and frees its slot).
        handshake_timeout: Duration,
    },
}

impl Transport {
    fn name(&self) -> &'static str {
        match self {
            Transport::Plain => "TCP",
            Transport::Tls { .. } => "TLS",
        }
    }

    fn received<'m>(&self, metrics: &'m ServerMetrics) -> &'m Counter {
        match self {
            Transport::Plain => &metrics.syslog_received_tcp,
            Transport::Tls { .. } => &metrics.syslog_received_tls,
        }
    }
}

#[derive(Debug)]
struct Conn {
    /// Milliseconds since `Registry::epoch` of the last byte received.
    last_active: Arc<AtomicU64>,
    close: Arc<Notify>,
}

#[derive(Debug)]
struct Registry {
    epoch: Instant,
    next_id: u64,
    conns: HashMap<u64, Conn>,
}

impl Registry {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

pub(super) async fn serve(
    listener: TcpListener,
    transport: Transport,
    sink: LogSink,
    limits: Limits,
    metrics: Arc<ServerMetrics>,
    mut stop: watch::Receiver<bool>,
) {
    let registry = Arc::new(Mutex::new(Registry {
        epoch: Instant::now(),
        next_id: 0,
        conns: HashMap::new(),
    }));
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.changed() => break,
        };
        // Reap finished connection tasks so the set stays small.
        while tasks.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: wait a little rather
                // than spin; existing connections keep working.
                metrics.syslog_accept_errors.inc();
                tracing::warn!(error = %e, "syslog {} accept failed", transport.name());
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        metrics.syslog_connections_accepted.inc();
        let (id, last_active, close) = {
            let mut reg = registry.lock().expect("registry lock poisoned");
            if reg.conns.len() >= limits.max_connections {
                let idlest = reg
                    .conns
                    .iter()
                    .min_by_key(|(_, c)| c.last_active.load(Ordering::Relaxed))
                    .map(|(id, _)| *id);
                if let Some(old) = idlest.and_then(|id| reg.conns.remove(&id)) {
                    old.close.notify_one();
                    metrics.syslog_connections_evicted.inc();
                }
            }
            let id = reg.next_id;
            reg.next_id += 1;
            let conn = Conn {
                last_active: Arc::new(AtomicU64::new(reg.now_ms())),
                close: Arc::new(Notify::new()),
            };
            let handles = (id, conn.last_active.clone(), conn.close.clone());
            reg.conns.insert(id, conn);
            handles
        };
        let registry = registry.clone();
        let sink = sink.clone();
        let metrics = metrics.clone();
        let stop = stop.clone();
        let transport = transport.clone();
        tasks.spawn(async move {
            let epoch = registry.lock().expect("registry lock poisoned").epoch;
            let conn = Connection {
                peer,
                sink: &sink,
                limits,
                metrics: &metrics,
                received: transport.received(&metrics),
                stop,
                close: &close,
                last_active: &last_active,
                epoch,
            };
            match &transport {
                Transport::Plain => conn.run(stream).await,
                Transport::Tls {
                    acceptor,
                    handshake_timeout,
                } => {
                    if let Some(tls) = conn.handshake(acceptor, *handshake_timeout, stream).await {
                        conn.run(tls).await;
                    }
                }
            }
            registry
                .lock()
                .expect("registry lock poisoned")
                .conns
                .remove(&id);
            metrics.syslog_connections_closed.inc();
        });
    }
    drop(listener);
    // Connections see `stop` too; wait until they handed over what they read.
    while tasks.join_next().await.is_some() {}
}

/// One accepted connection and what it reports to.
struct Connection<'a> {
    peer: SocketAddr,
    sink: &'a LogSink,
    limits: Limits,
    metrics: &'a ServerMetrics,
    /// `metrolog_syslog_received_total` of this transport.
    received: &'a Counter,
    stop: watch::Receiver<bool>,
    close: &'a Notify,
    last_active: &'a AtomicU64,
    epoch: Instant,
}

impl Connection<'_> {
    /// The TLS handshake, bounded by `timeout` (and by eviction and shutdown).
    /// A failure is counted and logged with the peer and rustls' reason, which
    /// names no secret.
    async fn handshake(
        &self,
        acceptor: &TlsAcceptor,
        timeout: Duration,
        stream: TcpStream,
    ) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
        let mut stop = self.stop.clone();
        let done = tokio::select! {
            r = tokio::time::timeout(timeout, acceptor.accept(stream)) => r,
            _ = self.close.notified() => return None,
            _ = stop.changed() => return None,
        };
        match done {
            Ok(Ok(tls)) => Some(tls),
            Ok(Err(e)) => {
                self.metrics.syslog_tls_handshake_failed.inc();
                tracing::info!(peer = %self.peer, error = %e, "syslog TLS handshake failed");
                None
            }
            Err(_) => {
                self.metrics.syslog_tls_handshake_timed_out.inc();
                tracing::info!(
                    peer = %self.peer,
                    "syslog TLS handshake not done within {timeout:?}; connection closed"
                );
                None
            }
        }
    }

    /// Reads frames until the peer closes, goes idle, is evicted or the
    /// server stops; hands each read's records to the writer.
    async fn run<S: AsyncRead + Unpin>(self, mut stream: S) {
        let Connection {
            peer,
            sink,
            limits,
            metrics,
            received,
            mut stop,
            close,
            last_active,
            epoch,
        } = self;
        let mut framer = Framer::new(limits.max_line_bytes);
        let mut buf = vec![0u8; READ_BUF];
        loop {
            let read = tokio::select! {
                r = tokio::time::timeout(limits.idle_timeout, stream.read(&mut buf)) => r,
                _ = close.notified() => return,
                _ = stop.changed() => return,
            };
            let eof = !matches!(read, Ok(Ok(n)) if n > 0);
            let frames = match read {
                Err(_) => {
                    metrics.syslog_connections_idle_closed.inc();
                    return;
                }
                Ok(Ok(0)) => framer.finish().into_iter().collect(),
                Ok(Ok(n)) => {
                    last_active.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
                    framer.feed(&buf[..n])
                }
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "syslog connection read failed");
                    framer.finish().into_iter().collect()
                }
            };
            if !frames.is_empty() {
                let opts = ParseOptions {
                    max_line_bytes: limits.max_line_bytes,
                    ..ParseOptions::new(Utc::now())
                };
                let chunk: Vec<Incoming> = frames
                    .iter()
                    .map(|f| {
                        let record = f.to_record(&opts);
                        count_marks(metrics, &record);
                        Incoming {
                            record,
                            source: LogSource::SyslogTcp,
                            peer: peer.ip(),
                        }
                    })
                    .collect();
                received.add(chunk.len() as u64);
                if !sink.send(chunk).await {
                    return;
                }
            }
            if eof {
                return;
            }
        }
    }
}
