//! The Prometheus-compatible API against Debian's Prometheus, in the same run on
//! the same samples (docs/benchmarks.md, "Prometheus API"): `query_range` of
//! `avg by (group) (cpu_busy_pct)` across 100 hosts over 1 day at a 60 s step,
//! and a 7-day panel (the same at a 10 min step), both over HTTP on loopback.
//!
//! Run: `cargo bench -p metrolog-server --bench prometheus` (needs the Debian
//! package `prometheus`). `METROLOG_BENCH_QUICK=1` shrinks it for a smoke run.

use metrolog_protocol::{Labels, SeriesKey};
use metrolog_server::auth::{new_token, token_hash};
use metrolog_server::config::{FileConfig, Overrides, ServerConfig};
use metrolog_server::http::{app, AppState};
use metrolog_server::store::{HostFacts, HostSource, Store};
use metrolog_server::telemetry::ServerMetrics;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const STEP: i64 = 30;

fn quick() -> bool {
    std::env::var_os("METROLOG_BENCH_QUICK").is_some()
}

fn value(host: usize, t: i64) -> f64 {
    let x = t as f64 / 600.0 + host as f64;
    ((30.0 + 20.0 * x.sin() + (host % 7) as f64) * 100.0).round() / 100.0
}

async fn median(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    q: &[(&str, String)],
) -> Res<(Duration, usize)> {
    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..11 {
        let mut req = client.get(url).query(q);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let start = Instant::now();
        let resp = req.send().await?;
        let status = resp.status();
        let body = resp.text().await?;
        times.push(start.elapsed());
        if !status.is_success() || !body.contains("\"success\"") {
            return Err(format!("{url}: {status} {}", &body[..body.len().min(300)]).into());
        }
        bytes = body.len();
    }
    times.sort();
    Ok((times[times.len() / 2], bytes))
}

#[tokio::main]
async fn main() -> Res<()> {
    let hosts = if quick() { 20 } else { 100 };
    let days = if quick() { 1 } else { 7 };
    let end = chrono::Utc::now().timestamp() / 600 * 600 - 600;
    let start = end - days * 86400 - 600;
    let dir = tempfile::tempdir()?;

    // Metrolog: the samples imported as /api/v1/import stores them.
    let over = Overrides {
        data_dir: Some(dir.path().join("metrolog")),
        ..Default::default()
    };
    std::fs::create_dir_all(dir.path().join("metrolog"))?;
    let config = ServerConfig::merge(&over, FileConfig::parse("")?)?;
    let store = Arc::new(Store::open(&config.database_url).await?);
    let key = SeriesKey::new("cpu.busy_pct", Labels::new())?;
    let loaded = Instant::now();
    for h in 0..hosts {
        let id = store
            .upsert_host(
                &HostFacts {
                    hostname: format!("host-{h:03}"),
                    instance_id: None,
                    group: Some(format!("g{}", h % 4)),
                    labels: Labels::new(),
                    agent_version: None,
                },
                HostSource::Import,
            )
            .await?;
        let points: Vec<(i64, f64)> = ((start + STEP)..=end)
            .step_by(STEP as usize)
            .map(|t| (t, value(h, t)))
            .collect();
        for chunk in points.chunks(20_000) {
            store
                .import_samples(id, &[(key.clone(), chunk.to_vec())])
                .await?;
        }
        store.flush_archives().await?;
    }
    eprintln!(
        "metrolog: {hosts} hosts × {days} d loaded in {:?}",
        loaded.elapsed()
    );
    let token = new_token();
    store
        .insert_token("bench", "viewer", &token_hash(token.expose()), None)
        .await?;
    let state = AppState::new(
        store.clone(),
        Arc::new(config),
        Arc::new(ServerMetrics::default()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let ours = format!(
        "http://{}/prometheus/api/v1/query_range",
        listener.local_addr()?
    );
    tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            app(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await;
    });

    // Prometheus: the same samples backfilled, then started on loopback.
    let om = dir.path().join("samples.om");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&om)?);
        for h in 0..hosts {
            for t in ((start + STEP)..=end).step_by(STEP as usize) {
                writeln!(
                    f,
                    "cpu_busy_pct{{host=\"host-{h:03}\",group=\"g{}\"}} {} {t}",
                    h % 4,
                    value(h, t)
                )?;
            }
        }
        writeln!(f, "# EOF")?;
    }
    let tsdb = dir.path().join("tsdb");
    let out = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&om)
        .arg(&tsdb)
        .output()
        .map_err(|e| {
            format!("promtool: {e} (apt-get install --no-install-recommends prometheus)")
        })?;
    if !out.status.success() {
        return Err(format!("promtool: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(&cfg, "global:\n  scrape_interval: 1m\n")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut prom = Command::new("prometheus")
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.tsdb.path={}", tsdb.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--storage.tsdb.retention.time=30d")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| {
            format!("prometheus: {e} (apt-get install --no-install-recommends prometheus)")
        })?;
    let stderr = prom.stderr.take().ok_or("no stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.contains("Server is ready to receive web requests") => break,
            Some(_) => {}
            None => return Err("prometheus exited before it was ready".into()),
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let theirs = format!("http://127.0.0.1:{port}/api/v1/query_range");

    let client = reqwest::Client::new();
    let q = "avg by (group) (cpu_busy_pct)".to_string();
    println!("| query | Metrolog | Prometheus 2.42 | ratio |");
    println!("| --- | --- | --- | --- |");
    for (what, from, step) in [
        ("1 day at 60 s", end - 86400, 60),
        ("7 days at 10 min", end - days * 86400, 600),
    ] {
        let params = [
            ("query", q.clone()),
            ("start", from.to_string()),
            ("end", end.to_string()),
            ("step", step.to_string()),
        ];
        let (a, a_bytes) = median(&client, &ours, Some(token.expose()), &params).await?;
        let (b, b_bytes) = median(&client, &theirs, None, &params).await?;
        eprintln!("{what}: answers of {a_bytes} and {b_bytes} bytes");
        println!(
            "| {what}, {hosts} hosts | {:.1} ms | {:.1} ms | {:.2}× |",
            a.as_secs_f64() * 1e3,
            b.as_secs_f64() * 1e3,
            a.as_secs_f64() / b.as_secs_f64()
        );
    }
    let _ = prom.kill();
    let _ = prom.wait();
    Ok(())
}
