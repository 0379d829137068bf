//! Supervision benchmarks (docs/benchmarks.md, "Supervision"), on the whole
//! server in this process (HTTP, store, event bus, evaluator, outbox and
//! delivery worker), fed over loopback by HTTP clients:
//!
//! a. **Alarm to webhook**: 1 000 hosts each send one breaching batch (one
//!    every 20 ms) while 1 000 other hosts send their regular batches every
//!    10 s; for each alarm, the time from sending the breaching batch (and
//!    from its acknowledgement, i.e. after the commit) to the Alertmanager
//!    webhook request arriving at a local receiver. p50, p99, max.
//! b. **Rules on the ingest path**: agent batches (20 series each) from 1 000
//!    hosts as fast as 16 clients can send them, once with 1 rule and once
//!    with 10 000 threshold rules that every batch's metrics select; the rate
//!    counts until the evaluator has judged the last batch (a sentinel alarm
//!    fires), so an evaluator that only falls behind is not hidden.
//!
//! Run: `cargo bench -p metrolog-server --bench supervision`.
//! `METROLOG_BENCH_QUICK=1` shrinks every size for a smoke run.

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use metrolog_protocol::{Batch, BatchId, Bucket, EnrollRequest, Labels, SeriesBuckets, SeriesKey};
use metrolog_server::config::{FileConfig, Overrides, ServerConfig};
use metrolog_server::startup::Application;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;
/// When each host's firing notification arrived.
type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

const ENROLL: &str = "mlg_bench-enrollment-token-0123456789abcdef";
/// Series per regular batch: about what the default collectors send.
const SERIES: usize = 20;

fn quick() -> bool {
    std::env::var_os("METROLOG_BENCH_QUICK").is_some()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A running in-process server.
struct Running {
    base: String,
    state: metrolog_server::http::AppState,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn start(file: &str) -> Res<Running> {
    let dir = tempfile::tempdir()?;
    // Read by the bootstrap: the token agents enroll with.
    std::env::set_var("METROLOG_ENROLL_TOKEN", ENROLL);
    std::env::set_var("METROLOG_ADMIN_PASSWORD", "bench-admin-password");
    let over = Overrides {
        data_dir: Some(dir.path().to_path_buf()),
        listen: Some("127.0.0.1:0".into()),
        syslog_udp: Some("off".into()),
        syslog_tcp: Some("off".into()),
        no_local_agent: true,
        ..Default::default()
    };
    let config = ServerConfig::merge(
        &over,
        FileConfig::parse(file).map_err(|e| format!("{e:?}"))?,
    )
    .map_err(|e| format!("{e:?}"))?;
    let app = Application::build(config).await?;
    let base = format!("http://{}", app.local_addr());
    let state = app.state().clone();
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = app
            .run_until(async move {
                let _ = stop_rx.await;
            })
            .await;
    });
    Ok(Running {
        base,
        state,
        stop,
        task,
        _dir: dir,
    })
}

impl Running {
    async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// An enrolled host and its batch stream.
struct Agent {
    hostname: String,
    token: String,
    seq: u64,
}

async fn enroll(http: &reqwest::Client, base: &str, hostname: String, group: &str) -> Res<Agent> {
    let req = EnrollRequest {
        hostname: hostname.clone(),
        instance_id: None,
        group: Some(group.into()),
        labels: Labels::new(),
        agent_version: "bench".into(),
    };
    let resp: Value = http
        .post(format!("{base}/api/v1/agent/enroll"))
        .bearer_auth(ENROLL)
        .json(&req)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(Agent {
        hostname,
        token: resp["agent_token"]
            .as_str()
            .ok_or("no agent_token")?
            .to_string(),
        seq: 0,
    })
}

async fn enroll_many(
    http: &reqwest::Client,
    base: &str,
    prefix: &str,
    n: usize,
) -> Res<Vec<Agent>> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(enroll(http, base, format!("{prefix}-{i}"), prefix).await?);
    }
    Ok(out)
}

fn series_name(i: usize) -> String {
    if i == 0 {
        "cpu.busy_pct".into()
    } else {
        format!("bench.metric_{i:02}")
    }
}

/// A regular batch: SERIES series, one 10 s bucket each at `ts`; the first
/// series is `cpu.busy_pct` with `cpu`.
fn batch(agent: &mut Agent, ts: i64, cpu: f64) -> Batch {
    agent.seq += 1;
    let metrics = (0..SERIES)
        .map(|i| {
            let v = if i == 0 {
                cpu
            } else {
                (i * 7 % 97) as f64 + 0.5
            };
            SeriesBuckets {
                key: SeriesKey::new(&series_name(i), Labels::new()).unwrap(),
                step: 10,
                buckets: vec![Bucket {
                    ts,
                    avg: v,
                    min: v,
                    max: v,
                    last: v,
                    count: 10,
                }],
            }
        })
        .collect();
    Batch {
        id: BatchId {
            // One stream per host: replay detection is per host.
            stream: "00000000000000be".into(),
            seq: agent.seq,
        },
        sent_at: ts,
        metrics,
        logs: Vec::new(),
        checks: Vec::new(),
    }
}

async fn send(http: &reqwest::Client, base: &str, token: &str, b: &Batch) -> Res<()> {
    let resp = http
        .post(format!("{base}/api/v1/agent/batch"))
        .bearer_auth(token)
        .json(b)
        .send()
        .await?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!(
            "batch answered {status}: {}",
            resp.text().await.unwrap_or_default()
        )
        .into());
    }
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// (a) Alarm to webhook.
async fn alarm_to_webhook() -> Res<()> {
    let alarms = if quick() { 100 } else { 1_000 };
    let background = if quick() { 100 } else { 1_000 };
    // The receiver: records when each host's firing notification arrived.
    let arrivals: Arrivals = Arc::default();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<()>();
    async fn hook(
        State((arrivals, done)): State<(Arrivals, mpsc::UnboundedSender<()>)>,
        Json(body): Json<Value>,
    ) -> &'static str {
        let at = Instant::now();
        for a in body["alerts"].as_array().into_iter().flatten() {
            if a["status"] == "firing" {
                if let Some(host) = a["labels"]["instance"].as_str() {
                    if arrivals
                        .lock()
                        .unwrap()
                        .insert(host.to_string(), at)
                        .is_none()
                    {
                        let _ = done.send(());
                    }
                }
            }
        }
        "ok"
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook_url = format!("http://{}/hook", listener.local_addr()?);
    let receiver = Router::new()
        .route("/hook", post(hook))
        .with_state((arrivals.clone(), done_tx));
    tokio::spawn(async move {
        let _ = axum::serve(listener, receiver).await;
    });

    // Each alert its own group and no group_wait: the time measured is the
    // pipeline's, not a grouping delay an operator chose.
    let file = format!(
        r#"
[[rules]]
name = "cpu-high"
kind = "threshold"
metric = "cpu.busy_pct"
group = "alarm"
critical = "~:90"

[[notify]]
name = "bench"
url = "{hook_url}"
group_by = ["..."]
group_wait = "0s"
"#
    );
    let server = start(&file).await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let base = server.base.clone();
    let mut alarm_hosts = enroll_many(&http, &base, "alarm", alarms).await?;
    let bg_hosts = enroll_many(&http, &base, "bg", background).await?;
    // One calm batch each, so the breaching one is a change.
    let t0 = now() - 20;
    for a in alarm_hosts.iter_mut() {
        let b = batch(a, t0 - t0 % 10, 10.0);
        send(&http, &base, &a.token.clone(), &b).await?;
    }

    // Background: every host's batch every 10 s, arrivals spread evenly.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut bg_tasks = Vec::new();
    let per_host = Duration::from_secs(10);
    for (i, mut a) in bg_hosts.into_iter().enumerate() {
        let http = http.clone();
        let base = base.clone();
        let stop = stop.clone();
        let offset = per_host.mul_f64(i as f64 / background as f64);
        bg_tasks.push(tokio::spawn(async move {
            tokio::time::sleep(offset).await;
            let mut tick = tokio::time::interval(per_host);
            let mut sent = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tick.tick().await;
                let t = now();
                let b = batch(&mut a, t - t % 10, 30.0);
                if send(&http, &base, &a.token.clone(), &b).await.is_ok() {
                    sent += 1;
                }
            }
            sent
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The breaching batches, one every 20 ms.
    let sent_at: Arc<Mutex<HashMap<String, (Instant, Instant)>>> = Arc::default();
    let mut senders = Vec::new();
    let mut pace = tokio::time::interval(Duration::from_millis(20));
    let began = Instant::now();
    for mut a in alarm_hosts {
        pace.tick().await;
        let http = http.clone();
        let base = base.clone();
        let sent_at = sent_at.clone();
        senders.push(tokio::spawn(async move {
            let t = now();
            let b = batch(&mut a, t - t % 10 + 10, 99.0);
            let start = Instant::now();
            let r = send(&http, &base, &a.token.clone(), &b).await;
            let acked = Instant::now();
            sent_at
                .lock()
                .unwrap()
                .insert(a.hostname.clone(), (start, acked));
            r
        }));
    }
    for s in senders {
        s.await??;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut got = 0;
    while got < alarms {
        match tokio::time::timeout_at(deadline.into(), done_rx.recv()).await {
            Ok(Some(())) => got += 1,
            _ => break,
        }
    }
    let elapsed = began.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut bg_batches = 0;
    for t in bg_tasks {
        t.abort();
        if let Ok(n) = t.await {
            bg_batches += n;
        }
    }
    let arrivals = arrivals.lock().unwrap().clone();
    let sent_at = sent_at.lock().unwrap().clone();
    let mut from_send = Vec::new();
    let mut from_ack = Vec::new();
    for (host, (start, acked)) in &sent_at {
        if let Some(at) = arrivals.get(host) {
            from_send.push(at.duration_since(*start).as_secs_f64() * 1e3);
            // Negative when the webhook arrived before the client read the
            // acknowledgement: the notification left right after the commit.
            from_ack.push(if at >= acked {
                at.duration_since(*acked).as_secs_f64() * 1e3
            } else {
                -(acked.duration_since(*at).as_secs_f64() * 1e3)
            });
        }
    }
    from_send.sort_by(f64::total_cmp);
    from_ack.sort_by(f64::total_cmp);
    println!(
        "\n== (a) alarm to webhook: {alarms} alarms, {background} background hosts every 10 s =="
    );
    println!(
        "notified {}/{alarms} in {:.1} s; background batches sent meanwhile: {bg_batches}",
        from_send.len(),
        elapsed.as_secs_f64()
    );
    println!(
        "from sending the breaching batch: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&from_send, 0.5),
        percentile(&from_send, 0.99),
        from_send.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "from its acknowledgement (after the commit): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&from_ack, 0.5),
        percentile(&from_ack, 0.99),
        from_ack.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "for comparison, defaults: Prometheus 1 min evaluation_interval + Alertmanager 30 s group_wait \
         (30-90 s); CloudWatch alarms on 1 min periods (60-120 s)"
    );
    server.shutdown().await;
    if from_send.len() < alarms {
        return Err(format!("only {} of {alarms} notifications arrived", from_send.len()).into());
    }
    Ok(())
}

/// (b) one run of rules on the ingest path: batches/s until the evaluator is
/// done with the last one.
async fn ingest_with_rules(rules: usize) -> Res<(f64, f64)> {
    let hosts = if quick() { 100 } else { 1_000 };
    let rounds = if quick() { 5 } else { 20 };
    let clients = 16;
    let mut file = String::from(
        r#"
[[rules]]
name = "sentinel"
kind = "threshold"
metric = "bench.sentinel"
critical = "~:0"
"#,
    );
    // Rules every batch's metrics select: each host's own rules over the
    // batch's series, as an operator with per-host thresholds would write.
    for r in 0..rules {
        let host = r % hosts;
        let series = series_name(r / hosts % SERIES);
        file.push_str(&format!(
            "\n[[rules]]\nname = \"r{r}\"\nkind = \"threshold\"\nmetric = \"{series}\"\nhost = \"ing-{host}\"\nwarning = \"~:1000\"\ncritical = \"~:2000\"\n"
        ));
    }
    let server = start(&file).await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let base = server.base.clone();
    let agents = enroll_many(&http, &base, "ing", hosts).await?;
    let agents: Vec<Arc<tokio::sync::Mutex<Agent>>> = agents
        .into_iter()
        .map(|a| Arc::new(tokio::sync::Mutex::new(a)))
        .collect();
    let t0 = now() - rounds as i64 * 10 - 60;
    let t0 = t0 - t0 % 10;
    let began = Instant::now();
    let (work_tx, work_rx) = async_channel(hosts * rounds);
    for round in 0..rounds {
        for a in &agents {
            work_tx.send((a.clone(), t0 + round as i64 * 10)).await?;
        }
    }
    drop(work_tx);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let rx = work_rx.clone();
        let http = http.clone();
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let item = rx.lock().await.recv().await;
                let Some((agent, ts)) = item else { break };
                let mut a = agent.lock().await;
                let b = batch(&mut a, ts, 42.0);
                let token = a.token.clone();
                send(&http, &base, &token, &b).await?;
            }
            Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let acked = began.elapsed();
    // The sentinel: the evaluator judges events in order, so once its alarm
    // exists every batch before it has been judged.
    {
        let a = agents[0].lock().await;
        let b = Batch {
            id: BatchId {
                stream: "00000000000000ff".into(),
                seq: 1,
            },
            sent_at: now(),
            metrics: vec![SeriesBuckets {
                key: SeriesKey::new("bench.sentinel", Labels::new()).unwrap(),
                step: 10,
                buckets: vec![Bucket {
                    ts: t0 + rounds as i64 * 10,
                    avg: 1.0,
                    min: 1.0,
                    max: 1.0,
                    last: 1.0,
                    count: 1,
                }],
            }],
            logs: Vec::new(),
            checks: Vec::new(),
        };
        send(&http, &base, &a.token.clone(), &b).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let active = server.state.store.alarms(true, None).await?;
        if active.iter().any(|a| a.rule == "sentinel") {
            break;
        }
        if Instant::now() > deadline {
            return Err("the sentinel alarm never fired".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let judged = began.elapsed();
    let batches = (hosts * rounds) as f64;
    let resyncs = server.state.metrics.alarm_evaluator_resyncs.get();
    println!(
        "{rules:>6} rules: {batches} batches ({} samples) acknowledged in {:.2} s = {:.0} batches/s; \
         judged by the evaluator after {:.2} s = {:.0} batches/s ({:.0} samples/s); evaluator resyncs {resyncs}",
        batches as usize * SERIES,
        acked.as_secs_f64(),
        batches / acked.as_secs_f64(),
        judged.as_secs_f64(),
        batches / judged.as_secs_f64(),
        batches * SERIES as f64 / judged.as_secs_f64()
    );
    server.shutdown().await;
    Ok((
        batches / acked.as_secs_f64(),
        batches / judged.as_secs_f64(),
    ))
}

/// A multi-consumer queue out of tokio's mpsc.
#[allow(clippy::type_complexity)]
fn async_channel<T>(cap: usize) -> (mpsc::Sender<T>, Arc<tokio::sync::Mutex<mpsc::Receiver<T>>>) {
    let (tx, rx) = mpsc::channel(cap.max(1));
    (tx, Arc::new(tokio::sync::Mutex::new(rx)))
}

fn main() -> Res<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        alarm_to_webhook().await?;
        println!("\n== (b) rules on the ingest path: {SERIES} series per batch, 16 clients ==");
        let (base_ack, base_judged) = ingest_with_rules(0).await?;
        let (ack, judged) = ingest_with_rules(10_000).await?;
        println!(
            "10 000 rules vs 1: acknowledged rate {:.3}x, judged rate {:.3}x",
            ack / base_ack,
            judged / base_judged
        );
        Ok(())
    })
}
