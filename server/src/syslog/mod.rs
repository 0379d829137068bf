//! Syslog receivers (SPEC §5): UDP and TCP, bound at start (port 0 works;
//! the bound addresses are printed), parsing with `metrolog_protocol::syslog`
//! on the receiving tasks and handing records to the log writer
//! ([`crate::logs::writer`]).

mod tcp;
mod udp;

use crate::config::{Listen, ServerConfig};
use crate::logs::writer::LogSink;
use crate::telemetry::ServerMetrics;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the receivers need to know.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_line_bytes: usize,
    pub max_connections: usize,
    pub idle_timeout: Duration,
}

impl Limits {
    pub fn of(config: &ServerConfig) -> Self {
        Limits {
            max_line_bytes: usize::try_from(config.syslog_max_line_bytes).unwrap_or(usize::MAX),
            max_connections: config.file.syslog.max_connections.max(1),
            idle_timeout: config.file.syslog.idle_timeout,
        }
    }
}

/// The bound receiver sockets, not yet serving.
#[derive(Debug)]
pub struct Listeners {
    udp: Option<UdpSocket>,
    tcp: Option<TcpListener>,
    limits: Limits,
}

impl Listeners {
    /// Binds what the configuration asks for. The error names the address.
    pub async fn bind(config: &ServerConfig) -> Result<Self, (SocketAddr, std::io::Error)> {
        let udp = match config.syslog_udp {
            Listen::Off => None,
            Listen::On(addr) => Some(UdpSocket::bind(addr).await.map_err(|e| (addr, e))?),
        };
        let tcp = match config.syslog_tcp {
            Listen::Off => None,
            Listen::On(addr) => Some(TcpListener::bind(addr).await.map_err(|e| (addr, e))?),
        };
        Ok(Self {
            udp,
            tcp,
            limits: Limits::of(config),
        })
    }

    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp.as_ref().and_then(|s| s.local_addr().ok())
    }

    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().and_then(|s| s.local_addr().ok())
    }

    /// Starts serving; the tasks end when `stop` turns true.
    pub fn spawn(
        self,
        sink: LogSink,
        metrics: Arc<ServerMetrics>,
        stop: watch::Receiver<bool>,
    ) -> Vec<JoinHandle<()>> {
        let mut tasks = Vec::new();
        if let Some(sock) = self.udp {
            if let Ok(addr) = sock.local_addr() {
                tracing::info!(%addr, "syslog UDP receiver listening");
            }
            tasks.push(tokio::spawn(udp::serve(
                sock,
                sink.clone(),
                self.limits,
                metrics.clone(),
                stop.clone(),
            )));
        }
        if let Some(listener) = self.tcp {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(%addr, "syslog TCP receiver listening");
            }
            tasks.push(tokio::spawn(tcp::serve(
                listener,
                sink,
                self.limits,
                metrics,
                stop,
            )));
        }
        tasks
    }
}

/// Counts the marks a record carries.
fn count_marks(metrics: &ServerMetrics, r: &metrolog_protocol::syslog::LogRecord) {
    if r.truncated {
        metrics.syslog_truncated.inc();
    }
    if r.invalid_utf8 {
        metrics.syslog_invalid_utf8.inc();
    }
    if r.unparsed {
        metrics.syslog_unparsed.inc();
    }
}
