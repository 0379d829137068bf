//! One simulated agent: enrolls, ships a batch of the default shape every
//! ship interval (oldest unacknowledged first, as the agent's spool does),
//! heartbeats, logs, and — under churn — leaves and is replaced by a new
//! host. Records what the server acknowledged.

use crate::shape::{mix, unit, SeriesShape};
use crate::stats::Shared;
use crate::verify::AgentLedger;
use crate::RunArgs;
use metrolog_protocol::agent::paths;
use metrolog_protocol::syslog::{LogRecord, Severity};
use metrolog_protocol::{Batch, BatchAck, BatchId, EnrollRequest, EnrollResponse, SeriesBuckets};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What every simulated agent shares.
#[derive(Debug)]
pub struct Ctx {
    pub http: reqwest::Client,
    pub args: RunArgs,
    pub shape: Arc<Vec<SeriesShape>>,
    pub stats: Arc<Shared>,
    pub active: Arc<AtomicUsize>,
    pub deadline: Instant,
}

/// Unacknowledged batches an agent keeps (an hour at the default interval);
/// older ones are dropped, as a full spool drops.
const MAX_PENDING: usize = 360;
const BUCKET: i64 = 10;

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// One identity of a simulated agent (a churned agent gets a new one).
struct Identity {
    hostname: String,
    seed: u64,
    stream: String,
    seq: u64,
    token: String,
    /// Newest bucket end put in a batch.
    last_ts: i64,
    ledger: AgentLedger,
}

impl Ctx {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.args.server.trim_end_matches('/'))
    }

    async fn enroll(&self, n: usize, generation: u32) -> Option<Identity> {
        let seed = mix(((n as u64) << 20) ^ u64::from(generation) ^ 0x10ad_6e11);
        let hostname = if generation == 0 {
            format!("{}-{n}", self.args.prefix)
        } else {
            format!("{}-{n}-g{generation}", self.args.prefix)
        };
        let instance_id = format!("i-{:016x}", mix(seed));
        let body = EnrollRequest {
            hostname: hostname.clone(),
            instance_id: Some(instance_id),
            group: Some(self.args.group.clone()),
            labels: Default::default(),
            agent_version: "loadgen".into(),
        };
        loop {
            if Instant::now() >= self.deadline {
                return None;
            }
            let resp = self
                .http
                .post(self.url(paths::ENROLL))
                .bearer_auth(&self.args.enroll_token)
                .json(&body)
                .send()
                .await;
            match resp {
                Ok(r) if r.status().is_success() => {
                    let Ok(e) = r.json::<EnrollResponse>().await else {
                        self.stats.with(|w| w.errors += 1);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    };
                    self.stats.with(|w| w.enrollments += 1);
                    let now = unix_now() as i64;
                    return Some(Identity {
                        hostname: hostname.clone(),
                        seed,
                        stream: format!("{:016x}{:016x}", mix(seed ^ 1), mix(seed ^ now as u64)),
                        seq: 0,
                        token: e.agent_token,
                        last_ts: now.div_euclid(BUCKET) * BUCKET - BUCKET,
                        ledger: AgentLedger {
                            hostname,
                            host_id: e.host_id,
                            seed,
                            acked: Vec::new(),
                            resumed: self.args.resumed && generation == 0,
                        },
                    });
                }
                Ok(r) if r.status().as_u16() == 503 => {
                    self.stats.with(|w| w.busy_503 += 1);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Ok(r) if r.status().is_client_error() => {
                    eprintln!(
                        "enrollment of {hostname} refused: {} {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    );
                    self.stats.with(|w| w.errors += 1);
                    return None;
                }
                _ => {
                    self.stats.with(|w| w.errors += 1);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// The batch of buckets ending after `id.last_ts` up to `upto`.
    fn batch(&self, id: &mut Identity, upto: i64, logs: usize) -> Option<(Batch, (i64, i64))> {
        let first = id.last_ts + BUCKET;
        if upto < first {
            return None;
        }
        let metrics = self
            .shape
            .iter()
            .enumerate()
            .map(|(i, s)| SeriesBuckets {
                key: s.key.clone(),
                step: BUCKET as u32,
                buckets: (first..=upto)
                    .step_by(BUCKET as usize)
                    .map(|ts| s.bucket(id.seed, i, ts))
                    .collect(),
            })
            .collect();
        let at = upto * 1_000_000;
        let logs = (0..logs)
            .map(|k| {
                let mut r = LogRecord::whole(
                    format!(
                        "loadgen {} request {k} served in {} ms status 200 path /api/items/{}",
                        id.hostname,
                        mix(id.seed ^ k as u64) % 900 + 5,
                        mix(id.seed ^ upto as u64 ^ k as u64) % 10_000
                    ),
                    Default::default(),
                );
                r.ts = at - (k as i64) * 1000;
                r.received_at = at;
                r.app_name = Some("loadgen".into());
                r.severity = Some(Severity::Info);
                r
            })
            .collect();
        id.seq += 1;
        id.last_ts = upto;
        // Built from its required fields so that optional ones added to the
        // protocol later keep their defaults here.
        let mut batch: Batch = serde_json::from_value(serde_json::json!({
            "id": BatchId {
                stream: id.stream.clone(),
                seq: id.seq,
            },
            "sent_at": upto,
        }))
        .expect("a batch of id and time reads back");
        batch.metrics = metrics;
        batch.logs = logs;
        Some((batch, (first, upto)))
    }

    /// Sends one batch. `Ok(true)` acknowledged, `Ok(false)` to be retried
    /// after `wait`.
    async fn send(&self, id: &Identity, batch: &Queued) -> Result<(), Duration> {
        let body = batch.body.clone();
        let t0 = Instant::now();
        let resp = self
            .http
            .post(self.url(paths::BATCH))
            .bearer_auth(&id.token)
            .header("content-type", "application/json")
            .header("content-encoding", "zstd")
            .body(body)
            .send()
            .await;
        match resp {
            Ok(r) if r.status().is_success() => {
                let took = t0.elapsed();
                let ack = r.json::<BatchAck>().await;
                self.stats.with(|w| {
                    w.latencies_us
                        .push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
                    w.batches_acked += 1;
                    w.logs_acked += batch.logs as u64;
                    if let Ok(a) = &ack {
                        w.samples_accepted += a.accepted;
                        w.samples_rejected += a.rejected;
                    }
                });
                Ok(())
            }
            Ok(r) if r.status().as_u16() == 503 || r.status().as_u16() == 429 => {
                let wait = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map_or(Duration::from_secs(1), Duration::from_secs);
                self.stats.with(|w| w.busy_503 += 1);
                Err(wait)
            }
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                eprintln!("batch of {} refused: {status} {text}", id.hostname);
                self.stats.with(|w| w.errors += 1);
                Err(Duration::from_secs(1))
            }
            Err(_) => {
                self.stats.with(|w| w.errors += 1);
                Err(Duration::from_secs(1))
            }
        }
    }

    async fn post_empty(&self, id: &Identity, path: &str) -> bool {
        let r = self
            .http
            .post(self.url(path))
            .bearer_auth(&id.token)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await;
        r.is_ok_and(|r| r.status().is_success())
    }
}

/// A batch waiting for its acknowledgement, kept as the body it is sent as
/// (about 2 KB): 10 000 agents deferring up to `MAX_PENDING` batches each
/// as parsed structures took 18 GB and got the generator OOM-killed.
struct Queued {
    body: Vec<u8>,
    logs: usize,
}

impl Queued {
    fn encode(batch: &Batch) -> Self {
        let json = serde_json::to_vec(batch).expect("batches serialize");
        Self {
            body: zstd::bulk::compress(&json, 3).expect("zstd compresses"),
            logs: batch.logs.len(),
        }
    }
}

/// Runs agent `n` from `delay` after the start until the deadline; returns
/// the ledger of every identity it had.
pub async fn run(ctx: Arc<Ctx>, n: usize, delay: Duration) -> Vec<AgentLedger> {
    tokio::time::sleep(delay).await;
    let mut out = Vec::new();
    let mut generation = 0;
    let Some(mut id) = ctx.enroll(n, generation).await else {
        return out;
    };
    ctx.active.fetch_add(1, Ordering::Relaxed);
    let interval = ctx.args.ship_interval;
    let mut pending: VecDeque<(Queued, (i64, i64))> = VecDeque::new();
    let mut log_credit = 0.0;
    let mut ticks: u64 = 0;
    let mut next = Instant::now();
    loop {
        next += interval;
        if next >= ctx.deadline {
            break;
        }
        tokio::time::sleep_until(next.into()).await;
        ticks += 1;
        // Churn: this host goes away and a new one takes its place.
        let churn_draw = unit(mix(id.seed ^ ticks.wrapping_mul(0x51_7cc1_b727_220a)));
        if ctx.args.churn > 0.0 && churn_draw < ctx.args.churn {
            ctx.post_empty(&id, paths::LEAVE).await;
            out.push(std::mem::take(&mut id.ledger));
            pending.clear();
            generation += 1;
            ctx.stats.with(|w| w.churned += 1);
            match ctx.enroll(n, generation).await {
                Some(new) => id = new,
                None => {
                    ctx.active.fetch_sub(1, Ordering::Relaxed);
                    return out;
                }
            }
            continue;
        }
        log_credit += ctx.args.logs_per_second * interval.as_secs_f64();
        let logs = log_credit as usize;
        log_credit -= logs as f64;
        let upto = (unix_now() as i64).div_euclid(BUCKET) * BUCKET;
        if let Some((b, span)) = ctx.batch(&mut id, upto, logs) {
            pending.push_back((Queued::encode(&b), span));
            while pending.len() > MAX_PENDING {
                pending.pop_front();
            }
        }
        // Oldest first, until the queue is empty or the server says wait.
        while let Some((batch, span)) = pending.front() {
            if Instant::now() >= ctx.deadline {
                break;
            }
            match ctx.send(&id, batch).await {
                Ok(()) => {
                    id.ledger.ack(*span);
                    pending.pop_front();
                }
                Err(wait) => {
                    let wait = wait.min(interval);
                    if Instant::now() + wait < next + interval {
                        tokio::time::sleep(wait).await;
                    }
                    break;
                }
            }
        }
        // Each agent in its own interval of the heartbeat period: agents
        // started over hours do not beat together, and 10 000 heartbeats in
        // the same 10 s every minute made a load real fleets do not.
        if ctx.args.heartbeat_every > 0
            && (ticks + n as u64).is_multiple_of(u64::from(ctx.args.heartbeat_every))
            && ctx.post_empty(&id, paths::HEARTBEAT).await
        {
            ctx.stats.with(|w| w.heartbeats += 1);
        }
    }
    ctx.active.fetch_sub(1, Ordering::Relaxed);
    out.push(id.ledger);
    out
}
