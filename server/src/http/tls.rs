//! HTTPS for the API and dashboard when `[http] tls_cert` and `tls_key` are
//! set: the TCP listener's connections go through a rustls handshake (the
//! settings loaded with the configuration, `crate::config::TlsSettings`), each on
//! its own task under a timeout, so a client that never finishes its
//! handshake holds up nobody else.

use axum::extract::{ConnectInfo, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Longest a client may take over its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; more connections wait in the backlog.
const MAX_HANDSHAKES: usize = 256;

/// Connections that completed their handshake, for `axum::serve`.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    addr: SocketAddr,
    accept_loop: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub fn new(listener: TcpListener, acceptor: TlsAcceptor) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        let accept_loop = tokio::spawn(async move {
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (tcp, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of descriptors and the like: wait a little.
                        tracing::warn!(error = %e, "https: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = tx.send((stream, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "https: handshake failed"),
                        Err(_) => tracing::debug!(%peer, "https: handshake timed out"),
                    }
                });
            }
        });
        Ok(Self {
            ready,
            addr,
            accept_loop,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept loop ended (the listener is being dropped).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}

/// The client's address of an HTTPS connection (axum gives `SocketAddr`
/// connect info only for its own listeners).
#[derive(Debug, Clone, Copy)]
pub struct TlsPeer(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>>
    for TlsPeer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        TlsPeer(*stream.remote_addr())
    }
}

/// On the HTTPS listener: the request came over TLS whatever a client's
/// `X-Forwarded-Proto` says, so cookies get `Secure` (see
/// `headers::is_https`); and the peer's address is handed on as the
/// `ConnectInfo<SocketAddr>` the handlers read (login throttling).
pub async fn mark_https(mut req: Request, next: Next) -> Response {
    req.headers_mut()
        .insert("x-forwarded-proto", HeaderValue::from_static("https"));
    if let Some(ConnectInfo(TlsPeer(peer))) =
        req.extensions().get::<ConnectInfo<TlsPeer>>().copied()
    {
        req.extensions_mut().insert(ConnectInfo(peer));
    }
    next.run(req).await
}
