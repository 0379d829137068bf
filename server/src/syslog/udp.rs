//! Syslog over UDP: one datagram, one message (RFC 5426).

use super::{count_marks, Limits};
use crate::logs::writer::{Incoming, LogSink};
use crate::telemetry::ServerMetrics;
use chrono::Utc;
use metrolog_protocol::syslog::{parse, LogSource};
use std::sync::Arc;
use tokio::net::UdpSocket;
use tokio::sync::watch;

/// Datagrams read without waiting before the chunk goes to the writer.
const BURST: usize = 512;

pub(super) async fn serve(
    sock: UdpSocket,
    sink: LogSink,
    limits: Limits,
    metrics: Arc<ServerMetrics>,
    mut stop: watch::Receiver<bool>,
) {
    // The largest UDP payload; longer lines than the limit are cut by the parser.
    let mut buf = vec![0u8; 65_536];
    loop {
        let first = tokio::select! {
            r = sock.recv_from(&mut buf) => r,
            _ = stop.changed() => return,
        };
        let mut chunk = Vec::new();
        let mut next = first;
        loop {
            match next {
                Ok((n, peer)) => {
                    let record = parse(&buf[..n], Utc::now(), limits.max_line_bytes);
                    count_marks(&metrics, &record);
                    chunk.push(Incoming {
                        record,
                        source: LogSource::SyslogUdp,
                        peer: peer.ip(),
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                // ICMP errors and the like: nothing to do with the next datagram.
                Err(e) => {
                    tracing::debug!(error = %e, "syslog UDP receive error");
                    break;
                }
            }
            if chunk.len() >= BURST {
                break;
            }
            next = sock.try_recv_from(&mut buf);
        }
        metrics.syslog_received_udp.add(chunk.len() as u64);
        sink.try_send(chunk);
    }
}
