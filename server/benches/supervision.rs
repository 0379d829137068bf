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
//! c. **Scaling**: 10 members report each second on a 1 s base step, 3 s
//!    above the policy's upper threshold, 3 s below its lower one, and so on:
//!    from the group round (bus) and from the crossing batch's ack to the
//!    scale webhook; then members fall silent one at a time at the group's
//!    minimum: from the liveness timeout and from the `down` event to the
//!    heal webhook.
//!
//! Run: `cargo bench -p metrolog-server --bench supervision [-- a b c]`.
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
/// Per alarm host: when its breaching batch's accepted attempt started, when
/// it was acknowledged, and its host id.
type SentAt = Arc<Mutex<HashMap<String, (Instant, Instant, i64)>>>;
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
    host_id: i64,
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
        host_id: resp["host_id"].as_i64().ok_or("no host_id")?,
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
        series_meta: Vec::new(),
    }
}

/// Sends a batch as an agent does: a 503 (the server's batch cap) is retried
/// after its `Retry-After`. Returns when the accepted attempt started.
async fn send(http: &reqwest::Client, base: &str, token: &str, b: &Batch) -> Res<Instant> {
    let body = serde_json::to_vec(b)?;
    for _ in 0..100 {
        let started = Instant::now();
        let resp = http
            .post(format!("{base}/api/v1/agent/batch"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await?;
        let status = resp.status();
        if status.is_success() {
            return Ok(started);
        }
        if status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
            BUSY.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let wait = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.1)
                .min(1.0);
            tokio::time::sleep(Duration::from_secs_f64(wait)).await;
            continue;
        }
        return Err(format!(
            "batch answered {status}: {}",
            resp.text().await.unwrap_or_default()
        )
        .into());
    }
    Err("the server stayed busy for 100 attempts".into())
}

/// 503 answers (batch cap reached) the clients retried.
static BUSY: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

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
    // When each host's samples were committed: the store publishes on the
    // bus right after the COMMIT, so this is the commit's time.
    let committed: Arc<Mutex<HashMap<i64, Instant>>> = Arc::default();
    {
        let (mut rx, _) = server.state.store.bus().subscribe();
        let committed = committed.clone();
        tokio::spawn(async move {
            while let Ok(env) = rx.recv().await {
                if let metrolog_server::events::Event::Samples(s) = &env.event {
                    committed
                        .lock()
                        .unwrap()
                        .entry(s.host_id)
                        .or_insert_with(Instant::now);
                }
            }
        });
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let base = server.base.clone();
    // The alarm hosts' first data is the breaching batch: a calm batch sent
    // long before would go stale during the run and raise UNKNOWN (no data)
    // first, which is a different notification.
    let alarm_hosts = enroll_many(&http, &base, "alarm", alarms).await?;
    let bg_hosts = enroll_many(&http, &base, "bg", background).await?;

    // Background: every host's batch every 10 s, arrivals spread evenly.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bg_sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut bg_tasks = Vec::new();
    let per_host = Duration::from_secs(10);
    for (i, mut a) in bg_hosts.into_iter().enumerate() {
        let http = http.clone();
        let base = base.clone();
        let stop = stop.clone();
        let bg_sent = bg_sent.clone();
        let offset = per_host.mul_f64(i as f64 / background as f64);
        bg_tasks.push(tokio::spawn(async move {
            tokio::time::sleep(offset).await;
            let mut tick = tokio::time::interval(per_host);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tick.tick().await;
                let t = now();
                let b = batch(&mut a, t - t % 10, 30.0);
                if send(&http, &base, &a.token.clone(), &b).await.is_ok() {
                    bg_sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The breaching batches, one every 20 ms.
    let sent_at: SentAt = Arc::default();
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
            let start = send(&http, &base, &a.token.clone(), &b).await?;
            let acked = Instant::now();
            sent_at
                .lock()
                .unwrap()
                .insert(a.hostname.clone(), (start, acked, a.host_id));
            Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
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
    for t in bg_tasks {
        t.abort();
        let _ = t.await;
    }
    let bg_batches = bg_sent.load(std::sync::atomic::Ordering::Relaxed);
    let arrivals = arrivals.lock().unwrap().clone();
    let sent_at = sent_at.lock().unwrap().clone();
    let committed = committed.lock().unwrap().clone();
    let mut from_send = Vec::new();
    let mut from_ack = Vec::new();
    let mut from_commit = Vec::new();
    for (host, (start, acked, id)) in &sent_at {
        if let Some(at) = arrivals.get(host) {
            if let Some(c) = committed.get(id) {
                from_commit.push(at.saturating_duration_since(*c).as_secs_f64() * 1e3);
            }
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
    // When the slowest ones were sent (seconds into the run): a period says
    // which background job they waited for.
    let mut slowest: Vec<(f64, f64)> = sent_at
        .iter()
        .filter_map(|(host, (start, _, _))| {
            arrivals.get(host).map(|at| {
                (
                    at.duration_since(*start).as_secs_f64() * 1e3,
                    start.duration_since(began).as_secs_f64(),
                )
            })
        })
        .collect();
    slowest.sort_by(|a, b| b.0.total_cmp(&a.0));
    let slow_text: Vec<String> = slowest
        .iter()
        .take(12)
        .map(|(ms, at)| format!("{ms:.0} ms at +{at:.1} s"))
        .collect();
    from_send.sort_by(f64::total_cmp);
    from_ack.sort_by(f64::total_cmp);
    from_commit.sort_by(f64::total_cmp);
    println!(
        "\n== (a) alarm to webhook: {alarms} alarms, {background} background hosts every 10 s =="
    );
    println!(
        "notified {}/{alarms} in {:.1} s; background batches sent meanwhile: {bg_batches}; \
         503 busy answers retried: {}",
        from_send.len(),
        elapsed.as_secs_f64(),
        BUSY.swap(0, std::sync::atomic::Ordering::Relaxed)
    );
    println!(
        "from sending the breaching batch: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&from_send, 0.5),
        percentile(&from_send, 0.99),
        from_send.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "from its commit (published on the bus after COMMIT): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (n {})",
        percentile(&from_commit, 0.5),
        percentile(&from_commit, 0.99),
        from_commit.last().copied().unwrap_or(f64::NAN),
        from_commit.len()
    );
    println!(
        "from its acknowledgement (client side, after the commit): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&from_ack, 0.5),
        percentile(&from_ack, 0.99),
        from_ack.last().copied().unwrap_or(f64::NAN)
    );
    println!("slowest: {}", slow_text.join(", "));
    let w = server.state.store.write_lock_stats();
    println!(
        "store write lock: {} holds, mean wait {:.2} ms, mean hold {:.2} ms, max hold {:.1} ms, \
         {} holds over 50 ms",
        w.acquisitions,
        w.wait_us as f64 / w.acquisitions.max(1) as f64 / 1e3,
        w.hold_us as f64 / w.acquisitions.max(1) as f64 / 1e3,
        w.max_hold_us as f64 / 1e3,
        w.slow_holds
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
    // Buckets from now on, 10 s apart (at most 200 s ahead: agents' clocks
    // may run 600 s ahead): data older than a rule's window is "no data",
    // and UNKNOWN alarms for every rule would measure something else.
    let t0 = now();
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
            series_meta: Vec::new(),
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
            return Err(format!(
                "the sentinel alarm never fired (evaluator resyncs {}, evaluations {})",
                server.state.metrics.alarm_evaluator_resyncs.get(),
                server.state.metrics.alarm_evaluations.get()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let judged = began.elapsed();
    let batches = (hosts * rounds) as f64;
    let resyncs = server.state.metrics.alarm_evaluator_resyncs.get();
    let busy = BUSY.swap(0, std::sync::atomic::Ordering::Relaxed);
    println!(
        "{rules:>6} rules: {batches} batches ({} samples) acknowledged in {:.2} s = {:.0} batches/s; \
         judged by the evaluator after {:.2} s = {:.0} batches/s ({:.0} samples/s); evaluator resyncs {resyncs}, 503s retried {busy}",
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

/// Per scaling webhook: (type, `at` of the event, when it arrived).
type Hooked = Arc<Mutex<Vec<(String, i64, Instant)>>>;

/// A batch of one 1 s bucket of `app.load` (part c runs on a 1 s base step).
fn load_batch(agent: &mut Agent, ts: i64, v: f64) -> Batch {
    agent.seq += 1;
    Batch {
        id: BatchId {
            stream: "00000000000000c0".into(),
            seq: agent.seq,
        },
        sent_at: ts,
        metrics: vec![SeriesBuckets {
            key: SeriesKey::new("app.load", Labels::new()).unwrap(),
            step: 1,
            buckets: vec![Bucket {
                ts,
                avg: v,
                min: v,
                max: v,
                last: v,
                count: 1,
            }],
        }],
        logs: Vec::new(),
        checks: Vec::new(),
        series_meta: Vec::new(),
    }
}

fn stats(name: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    println!(
        "{name}: n {}, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms.len(),
        percentile(&ms, 0.5),
        percentile(&ms, 0.99),
        ms.last().copied().unwrap_or(f64::NAN)
    );
}

/// (c) Scaling: group rounds to scale webhooks, and a member's liveness
/// timeout to the heal webhook.
async fn scaling_to_webhook() -> Res<()> {
    let seconds = if quick() { 12 } else { 40 };
    let members = 10usize;
    let hooked: Hooked = Arc::default();
    async fn hook(State(h): State<Hooked>, Json(body): Json<Value>) -> &'static str {
        let at = chrono::DateTime::parse_from_rfc3339(body["at"].as_str().unwrap_or_default())
            .map(|t| t.timestamp())
            .unwrap_or(0);
        let kind = body["type"].as_str().unwrap_or_default().to_string();
        h.lock().unwrap().push((kind, at, Instant::now()));
        "ok"
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/scale", listener.local_addr()?);
    let receiver = Router::new()
        .route("/scale", post(hook))
        .with_state(hooked.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, receiver).await;
    });
    // Rounds every second (1 s base step) so the run is short; the default
    // 10 s step changes how long a batch waits for its round, not what a
    // round costs.
    let file = format!(
        r#"
[hosts]
liveness_timeout = "2s"

[archives]
ladder = [{{ step = "1s", rows = 3600 }}, {{ step = "1m", rows = 1440 }}]

[[scaling.policies]]
name = "load"
group = "scale"
metric = "app.load"
window = "1s"
scale_out_above = 75
scale_in_below = 25
cooldown = "1s"
min_size = {members}
max_size = 1000
replacement_timeout = "1h"

[[scaling.hooks]]
name = "asg"
group = "scale"
url = "{url}"
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
events = ["scale_out", "scale_in", "heal"]
"#
    );
    let server = start(&file).await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let base = server.base.clone();
    // The rounds and downs as the bus publishes them.
    let rounds: Arc<Mutex<HashMap<i64, Instant>>> = Arc::default();
    let downs: Arc<Mutex<Vec<Instant>>> = Arc::default();
    {
        let (mut rx, _) = server.state.store.bus().subscribe();
        let (rounds, downs) = (rounds.clone(), downs.clone());
        tokio::spawn(async move {
            while let Ok(env) = rx.recv().await {
                match &env.event {
                    metrolog_server::events::Event::GroupRound(r) => {
                        rounds.lock().unwrap().insert(r.ts, Instant::now());
                    }
                    metrolog_server::events::Event::Host(h)
                        if h.change == metrolog_server::events::HostChange::Down =>
                    {
                        downs.lock().unwrap().push(Instant::now());
                    }
                    _ => {}
                }
            }
        });
    }
    let mut agents = Vec::new();
    for i in 0..members {
        agents.push(enroll(&http, &base, format!("scale-{i}"), "scale").await?);
    }
    // Every member reports each second: 3 s high, 3 s low, …; the crossing
    // batches' acknowledgements are kept.
    let mut crossings: Vec<Instant> = Vec::new();
    let mut last_acks: Vec<Instant> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_high = None;
    for k in 0..seconds {
        tick.tick().await;
        let high = (k / 3) % 2 == 1;
        let v = if high { 95.0 } else { 5.0 };
        let t = now();
        let mut acks = Vec::new();
        for a in agents.iter_mut() {
            let b = load_batch(a, t, v);
            let token = a.token.clone();
            send(&http, &base, &token, &b).await?;
            acks.push(Instant::now());
        }
        last_acks = acks.clone();
        // Upward crossings: the group sits at its minimum, so going low
        // fires nothing (a scale_in would go below min_size).
        if high && last_high == Some(false) {
            crossings.push(*acks.last().unwrap());
        }
        last_high = Some(high);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let scale: Vec<(String, i64, Instant)> = hooked
        .lock()
        .unwrap()
        .iter()
        .filter(|(k, _, _)| k == "scale_out" || k == "scale_in")
        .cloned()
        .collect();
    let rounds_seen = rounds.lock().unwrap().clone();
    let from_round: Vec<f64> = scale
        .iter()
        .filter_map(|(_, at, arrived)| {
            rounds_seen
                .get(at)
                .map(|r| arrived.saturating_duration_since(*r).as_secs_f64() * 1e3)
        })
        .collect();
    // The first event after each crossing, from the crossing batch's ack.
    let mut from_batch = Vec::new();
    for c in &crossings {
        if let Some((_, _, arrived)) = scale.iter().find(|(k, _, a)| k == "scale_out" && a > c) {
            from_batch.push(arrived.duration_since(*c).as_secs_f64() * 1e3);
        }
    }

    // Healing: members stop reporting one at a time (the group is at its
    // minimum), a replacement enrolls after each heal.
    let heal_cycles = if quick() { 2 } else { 5 };
    let mut from_down = Vec::new();
    let mut from_timeout = Vec::new();
    let mut replacements = 0;
    let mut last_ack: Vec<Instant> = last_acks;
    for cycle in 0..heal_cycles {
        let victim = cycle % agents.len();
        let heals_before = hooked
            .lock()
            .unwrap()
            .iter()
            .filter(|h| h.0 == "heal")
            .count();
        let downs_before = downs.lock().unwrap().len();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let arrived = loop {
            tick.tick().await;
            let t = now();
            // Everyone but the victim keeps reporting.
            for (i, a) in agents.iter_mut().enumerate() {
                if i == victim {
                    continue;
                }
                let b = load_batch(a, t, 50.0);
                let token = a.token.clone();
                if send(&http, &base, &token, &b).await.is_ok() {
                    last_ack[i] = Instant::now();
                }
            }
            let heal = hooked
                .lock()
                .unwrap()
                .iter()
                .filter(|h| h.0 == "heal")
                .nth(heals_before)
                .map(|h| h.2);
            if heal.is_some() || Instant::now() > deadline {
                break heal;
            }
        };
        let Some(arrived) = arrived else {
            return Err(format!("no heal in cycle {cycle}").into());
        };
        if let Some(d) = downs.lock().unwrap().get(downs_before) {
            from_down.push(arrived.saturating_duration_since(*d).as_secs_f64() * 1e3);
        }
        // The victim's liveness timeout (2 s) ran out 2 s after its last
        // acknowledged batch (the server keeps last_seen in whole seconds).
        let timed_out = last_ack[victim] + Duration::from_secs(2);
        from_timeout.push(arrived.saturating_duration_since(timed_out).as_secs_f64() * 1e3);
        // A replacement joins and takes the victim's place.
        replacements += 1;
        agents[victim] = enroll(&http, &base, format!("scale-r{replacements}"), "scale").await?;
        last_ack[victim] = Instant::now();
    }
    println!(
        "\n== (c) scaling: {members} members, 1 s rounds, {seconds} s alternating high/low =="
    );
    println!(
        "events: {} scale_out (1 s cooldown: again each round while high), {} heals",
        scale.len(),
        heal_cycles
    );
    stats("group round recorded → scale webhook arrived", from_round);
    stats("crossing batch acknowledged → scale webhook arrived (waits for the next round: ≤ 1 base step)", from_batch);
    stats("member marked down → heal webhook arrived", from_down);
    stats("liveness timeout ran out → heal webhook arrived (includes the liveness sweep's ≤ 1 s tick)", from_timeout);
    println!(
        "for comparison: CloudWatch alarm + EC2 Auto Scaling: 1 min periods, 300 s default cooldown; \
         Kubernetes HPA: 15 s sync loop, 300 s scale-down stabilization"
    );
    server.shutdown().await;
    Ok(())
}

fn main() -> Res<()> {
    // RUST_LOG=metrolog_server::store=debug shows the write lock's slow holds.
    if std::env::var_os("RUST_LOG").is_some() {
        metrolog_server::telemetry::init_tracing();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        // `cargo bench` passes `--bench`; any other argument selects parts.
        let args: Vec<String> = std::env::args()
            .skip(1)
            .filter(|a| !a.starts_with("--"))
            .collect();
        let run = |p: &str| args.is_empty() || args.iter().any(|a| a == p);
        if run("c") {
            scaling_to_webhook().await?;
        }
        if !run("a") && !run("b") {
            return Ok(());
        }
        if run("a") {
            alarm_to_webhook().await?;
        }
        if !run("b") {
            return Ok(());
        }
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
