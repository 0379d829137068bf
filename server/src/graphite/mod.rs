//! Graphite plaintext listener (`--graphite ADDR`, off by default): existing
//! collectd (`write_graphite`), StatsD or Icinga 2 fleets send
//! `path value timestamp` lines over TCP without our agent.
//!
//! Connections parse lines and hand samples to one writer through a bounded
//! channel (a full channel slows senders down, TCP pushes back, nothing is
//! lost); the writer groups them per host and imports them with `rrdtool update`
//! semantics, as `POST /api/v1/import` does. Hosts named in paths are created
//! passive (no liveness alarm).

mod parse;

pub use parse::{parse_line, GraphiteSample, LineError, PathMapping};

use crate::http::AppState;
use crate::store::{HostFacts, HostSource};
use metrolog_protocol::{Labels, SeriesKey};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;

/// Longest accepted line; longer ones are dropped and counted.
const MAX_LINE: usize = 4096;
/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 1024;
/// A connection silent this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Samples written per import; also the channel's capacity in samples.
const WRITE_BATCH: usize = 50_000;
/// Longest a sample waits in the writer before it is imported.
const WRITE_DELAY: Duration = Duration::from_millis(500);

/// Serves a bound listener until `stop`; the handle ends once every accepted
/// sample is written.
pub fn start(
    state: AppState,
    listener: TcpListener,
    mapping: PathMapping,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let (tx, rx) = mpsc::channel::<Vec<GraphiteSample>>(64);
    let writer = tokio::spawn(write_loop(state.clone(), rx));
    tokio::spawn(async move {
        accept_loop(state, listener, mapping, tx, stop).await;
        // All senders are gone once the accept loop and its connections end.
        let _ = writer.await;
    })
}

async fn accept_loop(
    state: AppState,
    listener: TcpListener,
    mapping: PathMapping,
    tx: mpsc::Sender<Vec<GraphiteSample>>,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("semaphore never closed"),
            _ = stopped(&mut stop) => return,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "graphite accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => return,
        };
        let (state, mapping, tx, stop) = (state.clone(), mapping.clone(), tx.clone(), stop.clone());
        tokio::spawn(async move {
            serve_connection(&state, stream, peer, &mapping, &tx, stop).await;
            drop(permit);
        });
    }
}

async fn serve_connection(
    state: &AppState,
    stream: TcpStream,
    peer: SocketAddr,
    mapping: &PathMapping,
    tx: &mpsc::Sender<Vec<GraphiteSample>>,
    mut stop: watch::Receiver<bool>,
) {
    let m = &state.metrics;
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let mut line = Vec::with_capacity(256);
    let mut pending = Vec::new();
    loop {
        line.clear();
        let read = tokio::select! {
            r = tokio::time::timeout(IDLE_TIMEOUT, read_line(&mut reader, &mut line)) => r,
            _ = stopped(&mut stop) => break,
        };
        let n = match read {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "graphite connection failed");
                break;
            }
            Err(_) => break, // idle
        };
        if n == 0 {
            break;
        }
        if line.len() > MAX_LINE {
            m.graphite_dropped_long.inc();
            continue;
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        match parse_line(text, mapping) {
            Ok(s) => {
                m.graphite_lines.inc();
                pending.push(s);
            }
            Err(e) => {
                m.graphite_dropped_malformed.inc();
                tracing::debug!(%peer, error = %e, "graphite line refused");
            }
        }
        // Hand over what is buffered when no more input is already waiting.
        let hand_over =
            pending.len() >= 1024 || (reader.buffer().is_empty() && !pending.is_empty());
        if hand_over && tx.send(std::mem::take(&mut pending)).await.is_err() {
            return;
        }
    }
    if !pending.is_empty() {
        let _ = tx.send(pending).await;
    }
}

/// Reads up to and including `\n`, keeping at most `MAX_LINE + 1` bytes of a
/// longer line (the rest is skipped) so a sender cannot grow our memory.
async fn read_line(reader: &mut BufReader<TcpStream>, out: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut total = 0;
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(total);
        }
        let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..=i], true),
            None => (buf, false),
        };
        let room = (MAX_LINE + 1).saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let used = chunk.len();
        total += used;
        reader.consume(used);
        if done {
            return Ok(total);
        }
    }
}

async fn write_loop(state: AppState, mut rx: mpsc::Receiver<Vec<GraphiteSample>>) {
    let mut hosts: HashMap<String, i64> = HashMap::new();
    let mut buf: Vec<GraphiteSample> = Vec::new();
    loop {
        let got = if buf.is_empty() {
            rx.recv().await
        } else {
            match tokio::time::timeout(WRITE_DELAY, rx.recv()).await {
                Ok(v) => v,
                Err(_) => {
                    flush(&state, &mut hosts, &mut buf).await;
                    continue;
                }
            }
        };
        match got {
            Some(mut samples) => {
                buf.append(&mut samples);
                if buf.len() >= WRITE_BATCH {
                    flush(&state, &mut hosts, &mut buf).await;
                }
            }
            None => {
                flush(&state, &mut hosts, &mut buf).await;
                return;
            }
        }
    }
}

/// One series' samples in arrival order: `(ts, value)`, NaN for unknown.
type SeriesSamples = (SeriesKey, Vec<(i64, f64)>);

async fn flush(state: &AppState, hosts: &mut HashMap<String, i64>, buf: &mut Vec<GraphiteSample>) {
    let m = &state.metrics;
    // host → series key → points, in arrival order (time order per series).
    let mut by_host: HashMap<String, Vec<SeriesSamples>> = HashMap::new();
    for s in buf.drain(..) {
        let series = by_host.entry(s.host).or_default();
        let value = s.value.unwrap_or(f64::NAN);
        match series.iter_mut().find(|(k, _)| k.name == s.series) {
            Some((_, pts)) => pts.push((s.ts, value)),
            None => series.push((
                SeriesKey {
                    name: s.series,
                    labels: Labels::new(),
                },
                vec![(s.ts, value)],
            )),
        }
    }
    for (host, series) in by_host {
        let host_id = match host_id(state, hosts, &host).await {
            Ok(id) => id,
            Err(e) => {
                tracing::error!(%host, error = %e, "graphite: cannot create host; samples dropped");
                m.graphite_dropped_store
                    .add(series.iter().map(|(_, p)| p.len() as u64).sum());
                continue;
            }
        };
        match state.store.import_samples(host_id, &series).await {
            Ok(out) => {
                let rejected: u64 = out.per_series.iter().map(|s| s.out_of_order).sum();
                m.graphite_dropped_order.add(rejected);
            }
            Err(e) => {
                tracing::error!(%host, error = %e, "graphite: import failed; samples dropped");
                m.graphite_dropped_store
                    .add(series.iter().map(|(_, p)| p.len() as u64).sum());
                hosts.remove(&host);
            }
        }
    }
}

/// The host a path names: found by hostname or created passive. Cached; the
/// cache is bounded (cleared past 100 000 names).
async fn host_id(
    state: &AppState,
    cache: &mut HashMap<String, i64>,
    host: &str,
) -> Result<i64, crate::store::StoreError> {
    if let Some(id) = cache.get(host) {
        return Ok(*id);
    }
    let id = match state.store.hosts_named(host).await?.first() {
        Some(h) => h.id,
        None => {
            let facts = HostFacts {
                hostname: host.to_string(),
                instance_id: None,
                group: None,
                labels: Labels::new(),
                agent_version: None,
            };
            state.store.upsert_host(&facts, HostSource::Import).await?
        }
    };
    if cache.len() >= 100_000 {
        cache.clear();
    }
    cache.insert(host.to_string(), id);
    Ok(id)
}

/// Resolves once `stop` is set (without holding its lock across an await).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
