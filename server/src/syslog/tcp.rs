//! Syslog over TCP (RFC 6587): each connection has its own framer (octet
//! counting or newline, per frame). Connections are bounded: at the limit, a
//! new one replaces the connection that has been idle longest, so a client
//! holding many silent connections cannot lock others out; a connection
//! silent for `idle_timeout` is closed.

use super::{count_marks, Limits};
use crate::logs::writer::{Incoming, LogSink};
use crate::telemetry::ServerMetrics;
use chrono::Utc;
use metrolog_protocol::syslog::{Framer, LogSource, ParseOptions};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};

/// Bytes read per call.
const READ_BUF: usize = 16 * 1024;

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
                tracing::warn!(error = %e, "syslog TCP accept failed");
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
        tasks.spawn(async move {
            let epoch = registry.lock().expect("registry lock poisoned").epoch;
            connection(
                stream,
                peer,
                &sink,
                limits,
                &metrics,
                stop,
                &close,
                &last_active,
                epoch,
            )
            .await;
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

#[allow(clippy::too_many_arguments)]
async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    sink: &LogSink,
    limits: Limits,
    metrics: &ServerMetrics,
    mut stop: watch::Receiver<bool>,
    close: &Notify,
    last_active: &AtomicU64,
    epoch: Instant,
) {
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
                tracing::debug!(%peer, error = %e, "syslog TCP read failed");
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
            metrics.syslog_received_tcp.add(chunk.len() as u64);
            if !sink.send(chunk).await {
                return;
            }
        }
        if eof {
            return;
        }
    }
}
