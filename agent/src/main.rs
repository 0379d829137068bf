//! `metrolog-agent`: parses the command line, sets up logging and runs the agent.

use clap::{Args, Parser, Subcommand};
use metrolog_agent::config::{self, Overrides, Secret};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "metrolog-agent",
    version,
    about = "Metrolog agent: collects this instance's metrics and ships them to the Metrolog server"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Check a configuration file (with the METROLOG_AGENT_* environment applied)
    /// and print every error at once.
    CheckConfig { file: PathBuf },
    /// Print the effective configuration (flags, environment, file, cloud
    /// user-data and the server's settings last received), each value with
    /// where it came from. Takes the same flags as a run; secrets show as <set>.
    ShowConfig {
        #[command(flatten)]
        run: Box<RunArgs>,
    },
}

/// Each flag overrides METROLOG_AGENT_<NAME>, which overrides the file.
#[derive(Args)]
struct RunArgs {
    /// Server base URL; repeat for failover, tried in order.
    #[arg(long = "server", value_name = "URL")]
    servers: Vec<String>,
    /// Enrollment token (only needed until the agent has its own credential).
    #[arg(long, value_name = "TOKEN")]
    enroll_token: Option<String>,
    /// PEM CA certificates to trust for https:// servers, beside the system's
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    #[arg(long, value_name = "GROUP")]
    group: Option<String>,
    /// Overrides the detected hostname.
    #[arg(long, value_name = "NAME")]
    hostname: Option<String>,
    /// Cloud instance id (the host's identity on the server).
    #[arg(long, value_name = "ID")]
    instance_id: Option<String>,
    /// Host label; repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Where the credential is kept [default: /var/lib/metrolog-agent if writable, else ./metrolog-agent-state]
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// agent.toml
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Root of the proc filesystem [default: /proc]
    #[arg(long, value_name = "DIR")]
    procfs: Option<PathBuf>,
    /// e.g. "1s" [default: 1s]
    #[arg(long, value_name = "DURATION")]
    sample_interval: Option<String>,
    /// e.g. "10s" [default: 10s]
    #[arg(long, value_name = "DURATION")]
    ship_interval: Option<String>,
    /// Cloud metadata service to ask at start (cloud.metadata_url) [default: the EC2 address, on EC2 only]
    #[arg(long, value_name = "URL")]
    metadata_url: Option<String>,
}

impl From<RunArgs> for Overrides {
    fn from(a: RunArgs) -> Self {
        Overrides {
            servers: a.servers,
            enroll_token: a.enroll_token.map(Secret::new),
            ca_file: a.ca_file,
            group: a.group,
            hostname: a.hostname,
            instance_id: a.instance_id,
            labels: a.labels,
            state_dir: a.state_dir,
            config: a.config,
            procfs: a.procfs,
            sample_interval: a.sample_interval,
            ship_interval: a.ship_interval,
            metadata_url: a.metadata_url,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env = Overrides::from_env(|k| std::env::var(k).ok());
    if let Some(Command::CheckConfig { file }) = cli.command {
        return match config::check_file(&file, env) {
            Ok(_) => {
                println!("config OK");
                ExitCode::SUCCESS
            }
            Err(errs) => {
                for e in &errs.0 {
                    eprintln!("error: {e}");
                }
                ExitCode::FAILURE
            }
        };
    }
    tune_malloc();
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(4)
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (run, show) = match cli.command {
        Some(Command::ShowConfig { run }) => (*run, true),
        _ => (cli.run, false),
    };
    // Flags, environment and file, with what cloud metadata and user-data
    // say under them (no request unless on EC2 or cloud.metadata_url is set).
    let cfg = match runtime.block_on(metrolog_agent::cloud::configure(run.into(), env)) {
        Ok(c) => c,
        Err(errs) => {
            for e in &errs.0 {
                eprintln!("error: {e}");
            }
            return ExitCode::FAILURE;
        }
    };
    if let Err(errs) = cfg.validate() {
        for e in &errs.0 {
            eprintln!("error: {e}");
        }
        return ExitCode::FAILURE;
    }
    if show {
        let dir = cfg
            .state_dir
            .clone()
            .unwrap_or_else(metrolog_agent::state::default_state_dir);
        let pushed = metrolog_agent::show_config::known_settings(&dir, cfg.group.as_deref());
        print!(
            "{}",
            metrolog_agent::show_config::render(&cfg, pushed.as_ref(), &dir)
        );
        return ExitCode::SUCCESS;
    }
    runtime.spawn(trim_malloc());
    match runtime.block_on(metrolog_agent::run(cfg, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// glibc's malloc, tuned for a small long-running process
/// (docs/benchmarks.md, "Agent footprint"):
/// - each thread that allocates gets an arena of its own (up to 8 per core);
///   the agent's few threads (runtime, blocking pool, tailer) allocate little
///   and rarely at once, and the arenas' slack cost about 1.7 MiB. One is
///   enough.
/// - a freed block above the mmap threshold raises that threshold (up to
///   32 MiB) and the trim threshold with it, so each ship round's large
///   temporaries (batch JSON, zstd contexts) then came from the heap and
///   their pages stayed resident after being freed: about 1.3 MiB of free
///   heap. Fixed thresholds keep blocks of 64 KiB and more in their own
///   mappings, given back when freed, and the heap's free top returned.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn tune_malloc() {
    extern "C" {
        fn mallopt(param: i32, value: i32) -> i32;
    }
    const M_TRIM_THRESHOLD: i32 = -1;
    const M_MMAP_THRESHOLD: i32 = -3;
    const M_ARENA_MAX: i32 = -8;
    const THRESHOLD: i32 = 64 << 10;
    // SAFETY: mallopt sets tunables of glibc's allocator and takes no
    // pointers; it runs before any other thread exists.
    unsafe {
        mallopt(M_ARENA_MAX, 1);
        mallopt(M_MMAP_THRESHOLD, THRESHOLD);
        mallopt(M_TRIM_THRESHOLD, THRESHOLD);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_malloc() {}

/// How often free heap pages are given back to the kernel: the default ship
/// interval, after which a round's buffers have been freed.
const TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Gives the free pages inside the heap back to the kernel every
/// [`TRIM_EVERY`]: the trim threshold only releases the heap's top, and
/// blocks freed below a live one stay resident (about 0.2 MiB here). The
/// walk over a heap of a few MiB takes microseconds.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
async fn trim_malloc() {
    extern "C" {
        fn malloc_trim(pad: usize) -> i32;
    }
    let mut every = tokio::time::interval(TRIM_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        // SAFETY: malloc_trim takes the allocator's own locks and only
        // releases pages of free chunks; it takes no pointers.
        unsafe {
            malloc_trim(0);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
async fn trim_malloc() {}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Completes on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
