//! The local syslog receiver (`[logs.syslog]`): a unix datagram socket, as
//! `/dev/log` is, and UDP on loopback, for applications that log with
//! syslog(3), `logger` or a syslog library. Each datagram is one message,
//! parsed by `protocol::syslog::parse`, filtered and queued; when the backlog
//! is full it is dropped and counted (a sender cannot be made to wait).

use super::backlog::LogBook;
use super::filter::FilterCell;
use super::LogsError;
use crate::config::SyslogConfig;
use chrono::Utc;
use metrolog_protocol::syslog::parse;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{UdpSocket, UnixDatagram};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often a receiver says it drops messages, at most.
const DROP_WARN_EVERY: Duration = Duration::from_secs(10);

/// The bound sockets and their tasks.
pub struct Receivers {
    tasks: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
    unix_path: Option<PathBuf>,
    /// The UDP address actually bound (its port when 0 was asked).
    pub udp_addr: Option<std::net::SocketAddr>,
}

struct Sink {
    max_line: usize,
    book: Arc<LogBook>,
    filter: Arc<FilterCell>,
    last_warn: Option<Instant>,
    what: &'static str,
}

impl Sink {
    fn accept(&mut self, bytes: &[u8]) {
        let rec = parse(bytes, Utc::now(), self.max_line);
        if !self.filter.keep(&rec) {
            self.book.stats.filtered.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if !self.book.try_push(rec)
            && self
                .last_warn
                .is_none_or(|t| t.elapsed() >= DROP_WARN_EVERY)
        {
            self.last_warn = Some(Instant::now());
            tracing::warn!(
                "log backlog full (server slow or unreachable): dropping {} messages ({} dropped since start)",
                self.what,
                self.book.stats.dropped_full.load(Ordering::Relaxed)
            );
        }
    }
}

/// Binds what `cfg` asks for. A stale socket file at the unix path is
/// replaced; any other file there is an error.
pub async fn bind(
    cfg: &SyslogConfig,
    max_line: usize,
    book: Arc<LogBook>,
    filter: Arc<FilterCell>,
) -> Result<Receivers, LogsError> {
    let (stop, _) = watch::channel(false);
    let mut r = Receivers {
        tasks: Vec::new(),
        stop,
        unix_path: None,
        udp_addr: None,
    };
    // One byte over the limit, so a longer message is seen as one and marked.
    let buf_len = max_line + 1;
    if let Some(path) = &cfg.unix {
        let sock = bind_unix(path)?;
        tracing::info!("local syslog receiver on unix socket {}", path.display());
        r.unix_path = Some(path.clone());
        let mut sink = Sink {
            max_line,
            book: book.clone(),
            filter: filter.clone(),
            last_warn: None,
            what: "unix socket",
        };
        let mut stop = r.stop.subscribe();
        r.tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; buf_len];
            loop {
                tokio::select! {
                    _ = stop.changed() => break,
                    got = sock.recv(&mut buf) => match got {
                        Ok(n) => sink.accept(&buf[..n]),
                        Err(e) => {
                            tracing::warn!("local syslog socket: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    },
                }
            }
        }));
    }
    if let Some(addr) = &cfg.udp {
        let sock = UdpSocket::bind(addr)
            .await
            .map_err(|source| LogsError::Bind {
                what: format!("logs.syslog.udp {addr}"),
                source,
            })?;
        r.udp_addr = sock.local_addr().ok();
        tracing::info!(
            "local syslog receiver on udp {}",
            r.udp_addr.map_or(addr.clone(), |a| a.to_string())
        );
        let mut sink = Sink {
            max_line,
            book,
            filter,
            last_warn: None,
            what: "UDP",
        };
        let mut stop = r.stop.subscribe();
        r.tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; buf_len];
            loop {
                tokio::select! {
                    _ = stop.changed() => break,
                    got = sock.recv_from(&mut buf) => match got {
                        Ok((n, _)) => sink.accept(&buf[..n]),
                        Err(e) => {
                            tracing::warn!("local syslog UDP: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    },
                }
            }
        }));
    }
    Ok(r)
}

fn bind_unix(path: &Path) -> Result<UnixDatagram, LogsError> {
    let err = |source| LogsError::Bind {
        what: format!("logs.syslog.unix {}", path.display()),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path).map_err(err)?,
        Ok(_) => {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a file that is not a socket is in the way; remove it or choose another path",
            )))
        }
        Err(_) => {}
    }
    let sock = UnixDatagram::bind(path).map_err(err)?;
    // Any local program may log, as with /dev/log.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).map_err(err)?;
    Ok(sock)
}

impl Receivers {
    /// Stops receiving and removes the unix socket file.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        if let Some(p) = self.unix_path {
            let _ = std::fs::remove_file(p);
        }
    }
}
