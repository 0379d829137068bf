//! Syslog receivers (SPEC §5): UDP, TCP and TLS (RFC 5425, when a
//! certificate is configured), bound at start (port 0 works; the bound
//! addresses are printed), parsing with `metrolog_protocol::syslog` on the
//! receiving tasks and handing records to the log writer
//! ([`crate::logs::writer`]).

mod tcp;
mod udp;

use crate::config::{Listen, ServerConfig, TlsSettings};
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
    tls: Option<(TcpListener, TlsSettings)>,
    limits: Limits,
    tls_handshake_timeout: Duration,
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
        let tls = match &config.syslog_tls {
            None => None,
            Some(t) => Some((
                TcpListener::bind(t.addr).await.map_err(|e| (t.addr, e))?,
                t.settings.clone(),
            )),
        };
        let limits = Limits::of(config);
        Ok(Self {
            udp,
            tcp,
            tls,
            limits,
            // A connection mid-handshake is idle as far as the bound goes.
            tls_handshake_timeout: config
                .file
                .syslog
                .tls_handshake_timeout
                .min(limits.idle_timeout),
        })
    }

    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp.as_ref().and_then(|s| s.local_addr().ok())
    }

    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().and_then(|s| s.local_addr().ok())
    }

    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().and_then(|(s, _)| s.local_addr().ok())
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
                tcp::Transport::Plain,
                sink.clone(),
                self.limits,
                metrics.clone(),
                stop.clone(),
            )));
        }
        if let Some((listener, settings)) = self.tls {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(%addr, "syslog TLS receiver listening");
            }
            let transport = tcp::Transport::Tls {
                acceptor: settings.acceptor(),
                handshake_timeout: self.tls_handshake_timeout,
            };
            tasks.push(tokio::spawn(tcp::serve(
                listener,
                transport,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FileConfig, Overrides};
    use crate::logs::{feed::LogFeed, Pipeline};
    use crate::store::Store;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    use std::path::Path;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;

    fn testdata(name: &str) -> String {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/syslog/testdata");
        p.join(name).display().to_string()
    }

    /// The TLS receiver alone, with `[syslog]` settings appended.
    async fn start(extra: &str) -> (SocketAddr, Arc<ServerMetrics>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let file = format!(
            "[syslog]\ntls_cert = {:?}\ntls_key = {:?}\n{extra}",
            testdata("server.crt"),
            testdata("server.key")
        );
        let over = Overrides {
            data_dir: Some(dir.path().to_path_buf()),
            syslog_udp: Some("off".into()),
            syslog_tcp: Some("off".into()),
            syslog_tls: Some("127.0.0.1:0".into()),
            ..Default::default()
        };
        let config = ServerConfig::merge(&over, FileConfig::parse(&file).unwrap()).unwrap();
        let store = Arc::new(Store::open(&config.database_url).await.unwrap());
        let listeners = Listeners::bind(&config).await.unwrap();
        let addr = listeners.tls_addr().unwrap();
        let metrics = Arc::new(ServerMetrics::default());
        let (stop_tx, stop) = watch::channel(false);
        // The pipeline runs until the test ends; leaking the sender keeps it up.
        std::mem::forget(stop_tx);
        let _ = Pipeline::start(
            listeners,
            store,
            LogFeed::new(),
            &config,
            metrics.clone(),
            stop,
        );
        (addr, metrics, dir)
    }

    async fn tls_client(addr: SocketAddr) -> tokio_rustls::client::TlsStream<TcpStream> {
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(testdata("ca.crt")).unwrap();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        connector.connect(name, tcp).await.unwrap()
    }

    /// Polls a counter until it reaches `want` (the receivers report through
    /// counters only), failing after 10 s.
    async fn reaches(counter: &crate::telemetry::Counter, want: u64) {
        let waited = tokio::time::timeout(Duration::from_secs(10), async {
            while counter.get() < want {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(waited.is_ok(), "counter at {}, want {want}", counter.get());
    }

    #[tokio::test]
    async fn tls_frames_in_both_framings_while_a_silent_client_waits_its_handshake() {
        let (addr, metrics, _dir) = start("tls_handshake_timeout = \"500ms\"\n").await;
        // Connected, never says hello: it must not hold up the next client.
        let silent = TcpStream::connect(addr).await.unwrap();
        let mut tls = tls_client(addr).await;
        let octet = "<165>1 2024-05-01T10:00:00Z h app 1 - - octet counted";
        let frames = format!("{} {octet}<13>newline framed\n", octet.len());
        tls.write_all(frames.as_bytes()).await.unwrap();
        tls.flush().await.unwrap();
        reaches(&metrics.syslog_received_tls, 2).await;
        // The silent one is given up at the handshake timeout, and counted.
        reaches(&metrics.syslog_tls_handshake_timed_out, 1).await;
        drop(silent);
        // Garbage instead of a ClientHello: refused, counted, others served.
        let mut junk = TcpStream::connect(addr).await.unwrap();
        junk.write_all(b"<13>this is not TLS\n").await.unwrap();
        reaches(&metrics.syslog_tls_handshake_failed, 1).await;
        let mut again = tls_client(addr).await;
        again.write_all(b"<13>still served\n").await.unwrap();
        again.shutdown().await.unwrap();
        reaches(&metrics.syslog_received_tls, 3).await;
        assert_eq!(metrics.syslog_received_tcp.get(), 0);
    }

    #[tokio::test]
    async fn a_client_stuck_before_its_handshake_is_evicted_at_the_connection_bound() {
        let (addr, metrics, _dir) = start("max_connections = 1\n").await;
        let _silent = TcpStream::connect(addr).await.unwrap();
        reaches(&metrics.syslog_connections_accepted, 1).await;
        let mut tls = tls_client(addr).await;
        tls.write_all(b"<13>after the silent one\n").await.unwrap();
        tls.flush().await.unwrap();
        reaches(&metrics.syslog_received_tls, 1).await;
        assert_eq!(metrics.syslog_connections_evicted.get(), 1);
        assert_eq!(metrics.syslog_tls_handshake_failed.get(), 0);
    }
}
