//! `metrolog-loadgen`: N simulated agents speaking the real agent protocol
//! (enroll, zstd batches every ship interval, heartbeats, logs, leave) to a
//! Metrolog server, and what the server made of them: sustained accepted
//! samples/s, acknowledgement latency, 503s, the server's memory, CPU and
//! database size over time; afterwards a sample of what was acknowledged is
//! read back through the query API. See docs/loadgen.md.

pub mod agent;
pub mod shape;
pub mod stats;
pub mod verify;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use stats::{database_bytes, ProcWatch, Shared, Window};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
#[command(
    name = "metrolog-loadgen",
    about = "Simulated agents against a Metrolog server"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run N simulated agents for a while, report, then check a sample of
    /// acknowledged series is queryable.
    Run(RunArgs),
    /// Check the acknowledged samples of a ledger written by `run --ledger`
    /// (e.g. after the server was killed and started again).
    Verify(VerifyArgs),
    /// Fill every series' archives of a stopped server's database to full
    /// (every row known), so that a run measures full rings, not empty ones.
    Prefill(PrefillArgs),
}

#[derive(Debug, Clone, Args)]
pub struct PrefillArgs {
    /// The stopped server's data directory (its `metrolog.db` is filled).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Seed of the synthetic values.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The server's base URL.
    #[arg(long)]
    pub server: String,
    /// The enrollment token agents enroll with.
    #[arg(long, env = "METROLOG_ENROLL_TOKEN", hide_env_values = true)]
    pub enroll_token: String,
    /// A viewer API token, to read acknowledged series back after the run
    /// (no check without it).
    #[arg(long, env = "METROLOG_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// Simulated agents.
    #[arg(long, default_value_t = 100)]
    pub agents: usize,
    /// How long to run.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Every agent ships a batch this often (the agent's default: 10s).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub ship_interval: Duration,
    /// Log lines per second per agent.
    #[arg(long, default_value_t = 0.2)]
    pub logs_per_second: f64,
    /// Share of the agents replaced every ship interval by new ones (new
    /// hostname and instance id): the old one leaves, the new one enrolls.
    #[arg(long, default_value_t = 0.0)]
    pub churn: f64,
    /// A heartbeat every this many ship intervals, beside the batches.
    #[arg(long, default_value_t = 6)]
    pub heartbeat_every: u32,
    /// Group the agents enroll in.
    #[arg(long, default_value = "loadgen")]
    pub group: String,
    /// Hostname prefix (agent n is `<prefix>-<n>`).
    #[arg(long, default_value = "lg")]
    pub prefix: String,
    /// The server's process id: its RSS and CPU are reported.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// The hosts exist from an earlier run with the same `--prefix` (e.g.
    /// before `prefill`): each agent's first bucket then follows a gap
    /// longer than the heartbeat and is unknown, as rrdtool makes it, so the
    /// check starts at its second.
    #[arg(long)]
    pub resumed: bool,
    /// The server's data directory: the database size is reported.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// How often a report line is printed.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub report_every: Duration,
    /// Agents whose acknowledged samples are read back after the run.
    #[arg(long, default_value_t = 50)]
    pub check_agents: usize,
    /// Write every agent's acknowledged spans here (for `verify`).
    #[arg(long)]
    pub ledger: Option<PathBuf>,
    /// Write the run's summary here as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Most HTTP connections kept open to the server.
    #[arg(long, default_value_t = 512)]
    pub connections: usize,
}

#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    #[arg(long)]
    pub server: String,
    #[arg(long, env = "METROLOG_API_TOKEN", hide_env_values = true)]
    pub api_token: String,
    #[arg(long)]
    pub ledger: PathBuf,
    #[arg(long, default_value_t = 50)]
    pub check_agents: usize,
    /// Write the check's result here as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// One report line.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReportLine {
    pub elapsed_s: f64,
    pub agents: usize,
    pub samples_per_s: f64,
    pub batches: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub busy_503: u64,
    pub errors: u64,
    pub rss_bytes: Option<u64>,
    pub cpu_pct: Option<f64>,
    pub db_bytes: Option<u64>,
}

/// The run in all.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub agents: usize,
    pub duration_s: f64,
    /// Accepted samples per second once every agent shipped its first two
    /// batches (arrivals and catch-up left out).
    pub sustained_samples_per_s: f64,
    /// Ack latency over the same windows.
    pub sustained_p99_ms: f64,
    pub samples_accepted: u64,
    pub samples_rejected: u64,
    pub batches_acked: u64,
    pub logs_acked: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub busy_503: u64,
    pub errors: u64,
    pub enrollments: u64,
    pub churned: u64,
    pub heartbeats: u64,
    pub max_rss_bytes: Option<u64>,
    pub db_bytes: Option<u64>,
    pub lines: Vec<ReportLine>,
    pub check: Option<verify::CheckResult>,
}

/// Runs the command; the process exit code (1 when acknowledged samples were
/// lost).
pub async fn main(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Run(args) => {
            let summary = run(&args).await?;
            let lost = summary.check.as_ref().is_some_and(|c| c.lost > 0);
            Ok(i32::from(lost))
        }
        Command::Prefill(args) => {
            prefill(&args).await?;
            Ok(0)
        }
        Command::Verify(args) => {
            let ledger = verify::Ledger::read(&args.ledger)?;
            let http = client(8)?;
            let check = verify::check(
                &http,
                &args.server,
                &args.api_token,
                &ledger,
                args.check_agents,
            )
            .await?;
            println!("{}", check.describe());
            if let Some(path) = &args.json {
                std::fs::write(path, serde_json::to_vec_pretty(&check)?)?;
            }
            Ok(i32::from(check.lost > 0))
        }
    }
}

fn client(connections: usize) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .timeout(Duration::from_secs(60))
        .connect_timeout(Duration::from_secs(5))
        .build()?)
}

/// Runs the simulated fleet, prints a report line every `report_every` and
/// a summary, and returns the summary.
pub async fn run(args: &RunArgs) -> Result<Summary> {
    if args.agents == 0 {
        bail!("--agents must be at least 1");
    }
    if args.ship_interval < Duration::from_secs(10)
        || !args.ship_interval.as_secs().is_multiple_of(10)
    {
        bail!("--ship-interval must be a multiple of 10s (the agents' bucket width)");
    }
    if !(0.0..=1.0).contains(&args.churn) {
        bail!("--churn is a share of the agents per interval, between 0 and 1");
    }
    let http = client(args.connections)?;
    let shared = Arc::new(Shared::default());
    let active = Arc::new(AtomicUsize::new(0));
    let shape = Arc::new(shape::default_shape());
    let start = Instant::now();
    let deadline = start + args.duration;
    let ctx = Arc::new(agent::Ctx {
        http: http.clone(),
        args: args.clone(),
        shape,
        stats: shared.clone(),
        active: active.clone(),
        deadline,
    });
    println!(
        "metrolog-loadgen: {} agents x {} series, a batch every {:?}, for {:?} against {}",
        args.agents,
        ctx.shape.len(),
        args.ship_interval,
        args.duration,
        args.server
    );
    let mut tasks = Vec::with_capacity(args.agents);
    for n in 0..args.agents {
        // Arrivals spread over the first ship interval, as a fleet's agents
        // start at different times; each keeps its own phase after that.
        let delay = args.ship_interval.mul_f64(n as f64 / args.agents as f64);
        tasks.push(tokio::spawn(agent::run(ctx.clone(), n, delay)));
    }

    let mut watch = args.server_pid.map(ProcWatch::new);
    if let Some(w) = &mut watch {
        w.cpu_seconds_since();
    }
    let mut ledgers = Vec::new();
    let mut total = Window::default();
    let mut steady = Window::default();
    let mut steady_secs = 0.0;
    let mut lines = Vec::new();
    let mut max_rss = None;
    let mut last = Instant::now();
    let mut ticker = tokio::time::interval(args.report_every);
    ticker.tick().await;
    println!(
        "{:>7} {:>6} {:>10} {:>7} {:>8} {:>8} {:>8} {:>5} {:>5} {:>9} {:>6} {:>9}",
        "t(s)",
        "agents",
        "samples/s",
        "batches",
        "p50(ms)",
        "p99(ms)",
        "max(ms)",
        "503",
        "err",
        "rss(MiB)",
        "cpu%",
        "db(MiB)"
    );
    loop {
        let done = Instant::now() >= deadline;
        if !done {
            ticker.tick().await;
        } else {
            // Let in-flight batches finish so their answers are counted.
            for t in tasks.drain(..) {
                if let Ok(l) = t.await {
                    ledgers.extend(l);
                }
            }
        }
        let mut w = shared.take();
        let secs = last.elapsed().as_secs_f64().max(1e-3);
        last = Instant::now();
        let (p50, p99, max) = w.latency_ms();
        let rss = watch.as_ref().and_then(ProcWatch::rss_bytes);
        max_rss = max_rss.max(rss);
        let cpu = watch
            .as_mut()
            .and_then(ProcWatch::cpu_seconds_since)
            .map(|s| 100.0 * s / secs);
        let db = args.data_dir.as_deref().and_then(database_bytes);
        let line = ReportLine {
            elapsed_s: start.elapsed().as_secs_f64(),
            agents: active.load(Ordering::Relaxed),
            samples_per_s: w.samples_accepted as f64 / secs,
            batches: w.batches_acked,
            p50_ms: p50,
            p99_ms: p99,
            max_ms: max,
            busy_503: w.busy_503,
            errors: w.errors,
            rss_bytes: rss,
            cpu_pct: cpu,
            db_bytes: db,
        };
        let mib = |b: Option<u64>| b.map_or("-".into(), |b| format!("{:.1}", b as f64 / 1048576.0));
        println!(
            "{:>7.0} {:>6} {:>10.0} {:>7} {:>8.1} {:>8.1} {:>8.1} {:>5} {:>5} {:>9} {:>6} {:>9}",
            line.elapsed_s,
            line.agents,
            line.samples_per_s,
            line.batches,
            p50,
            p99,
            max,
            line.busy_503,
            line.errors,
            mib(rss),
            cpu.map_or("-".into(), |c| format!("{c:.0}")),
            mib(db)
        );
        lines.push(line);
        // Sustained: windows that start after the arrivals and the first
        // batches (which carry the buckets since enrollment), and end before
        // the stragglers of the last interval.
        let window_start = start.elapsed().as_secs_f64() - secs;
        if window_start >= 2.0 * args.ship_interval.as_secs_f64() && !done {
            steady.absorb(&w);
            steady_secs += secs;
        }
        total.absorb(&w);
        if done {
            break;
        }
    }
    let (p50, p99, max) = total.latency_ms();
    let sustained_p99_ms = steady.latency_ms().1;
    let ledger = verify::Ledger { agents: ledgers };
    if let Some(path) = &args.ledger {
        ledger.write(path).context("writing the ledger")?;
    }
    let check = match &args.api_token {
        Some(token) if args.check_agents > 0 => {
            Some(verify::check(&http, &args.server, token, &ledger, args.check_agents).await?)
        }
        _ => None,
    };
    let summary = Summary {
        agents: args.agents,
        duration_s: start.elapsed().as_secs_f64(),
        sustained_samples_per_s: steady.samples_accepted as f64 / f64::max(steady_secs, 1e-3),
        sustained_p99_ms,
        samples_accepted: total.samples_accepted,
        samples_rejected: total.samples_rejected,
        batches_acked: total.batches_acked,
        logs_acked: total.logs_acked,
        p50_ms: p50,
        p99_ms: p99,
        max_ms: max,
        busy_503: total.busy_503,
        errors: total.errors,
        enrollments: total.enrollments,
        churned: total.churned,
        heartbeats: total.heartbeats,
        max_rss_bytes: max_rss,
        db_bytes: args.data_dir.as_deref().and_then(database_bytes),
        lines,
        check,
    };
    println!(
        "summary: {:.0} samples/s sustained (ack p99 {:.1} ms), in all {} accepted, {} rejected, {} batches, ack p50 {:.1} ms p99 {:.1} ms max {:.1} ms, {} x 503, {} errors, {} enrollments ({} churned), {} heartbeats, {} logs",
        summary.sustained_samples_per_s,
        summary.sustained_p99_ms,
        summary.samples_accepted,
        summary.samples_rejected,
        summary.batches_acked,
        p50,
        p99,
        max,
        summary.busy_503,
        summary.errors,
        summary.enrollments,
        summary.churned,
        summary.heartbeats,
        summary.logs_acked
    );
    if let Some(c) = &summary.check {
        println!("{}", c.describe());
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&summary)?)?;
    }
    Ok(summary)
}

/// `prefill`: fills the rings on a blocking thread, reporting progress.
async fn prefill(args: &PrefillArgs) -> Result<()> {
    let path = args.data_dir.join("metrolog.db");
    if !path.is_file() {
        bail!(
            "{} does not exist: run the server and a short `run` against it first, so that \
             the hosts and series exist, then stop the server",
            path.display()
        );
    }
    let seed = args.seed;
    let started = Instant::now();
    let report = tokio::task::spawn_blocking(move || {
        metrolog_server::store::archive::prefill::fill_rings(&path, seed, |done, total| {
            eprintln!(
                "{:>6.0} s  {}/{} series  {} chunks  {:.1} GB",
                started.elapsed().as_secs_f64(),
                done.series,
                total,
                done.chunks,
                done.bytes as f64 / 1e9
            );
        })
    })
    .await?
    .map_err(anyhow::Error::msg)?;
    println!(
        "filled {} series: {} chunks ({} rows were unknown, {} damaged chunks rewritten), {:.2} GB of chunk data, in {:.0} s",
        report.series,
        report.chunks,
        report.rows_filled,
        report.damaged_chunks,
        report.bytes as f64 / 1e9,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
