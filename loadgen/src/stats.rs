//! What a run measured: per report window and in all, and the server's
//! process and database as seen from /proc and the file system.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Counters shared by every simulated agent; the reporter takes a window's
/// worth at every report.
#[derive(Debug, Default)]
pub struct Window {
    /// Ack latencies of 2xx batch answers, in microseconds.
    pub latencies_us: Vec<u32>,
    pub batches_acked: u64,
    pub samples_accepted: u64,
    pub samples_rejected: u64,
    pub logs_acked: u64,
    pub busy_503: u64,
    pub errors: u64,
    pub enrollments: u64,
    pub churned: u64,
    pub heartbeats: u64,
}

impl Window {
    pub fn absorb(&mut self, other: &Window) {
        self.latencies_us.extend_from_slice(&other.latencies_us);
        self.batches_acked += other.batches_acked;
        self.samples_accepted += other.samples_accepted;
        self.samples_rejected += other.samples_rejected;
        self.logs_acked += other.logs_acked;
        self.busy_503 += other.busy_503;
        self.errors += other.errors;
        self.enrollments += other.enrollments;
        self.churned += other.churned;
        self.heartbeats += other.heartbeats;
    }

    /// (p50, p99, max) of the ack latency in milliseconds.
    pub fn latency_ms(&mut self) -> (f64, f64, f64) {
        if self.latencies_us.is_empty() {
            return (0.0, 0.0, 0.0);
        }
        self.latencies_us.sort_unstable();
        let n = self.latencies_us.len();
        let at = |q: f64| {
            let i = ((n as f64 * q).ceil() as usize).clamp(1, n) - 1;
            f64::from(self.latencies_us[i]) / 1000.0
        };
        (
            at(0.50),
            at(0.99),
            f64::from(self.latencies_us[n - 1]) / 1000.0,
        )
    }
}

/// The shared window, taken by the reporter.
#[derive(Debug, Default)]
pub struct Shared(pub Mutex<Window>);

impl Shared {
    pub fn with(&self, f: impl FnOnce(&mut Window)) {
        f(&mut self.0.lock().expect("stats poisoned"));
    }

    pub fn take(&self) -> Window {
        std::mem::take(&mut *self.0.lock().expect("stats poisoned"))
    }
}

/// The server process seen from /proc: resident memory and CPU time.
#[derive(Debug, Clone)]
pub struct ProcWatch {
    pid: u32,
    last_cpu_ticks: Option<u64>,
}

/// Clock ticks per second of /proc/<pid>/stat (USER_HZ, 100 on Linux).
const USER_HZ: f64 = 100.0;

impl ProcWatch {
    pub fn new(pid: u32) -> Self {
        Self {
            pid,
            last_cpu_ticks: None,
        }
    }

    /// Resident set size in bytes.
    pub fn rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// CPU used since the previous call, in CPU-seconds (utime + stime).
    pub fn cpu_seconds_since(&mut self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        // Fields after the command name (which may hold spaces) in parentheses.
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
        let prev = self.last_cpu_ticks.replace(ticks);
        prev.map(|p| ticks.saturating_sub(p) as f64 / USER_HZ)
    }
}

/// Bytes of the database files (`metrolog.db*`, the log index beside it) in
/// the server's data directory.
pub fn database_bytes(dir: &Path) -> Option<u64> {
    let mut total = 0;
    for e in std::fs::read_dir(dir).ok()? {
        let e = e.ok()?;
        let name = e.file_name();
        if name.to_string_lossy().starts_with("metrolog") {
            total += e.metadata().ok()?.len();
        }
    }
    Some(total)
}

/// Where the database lives, if the operator said.
#[derive(Debug, Clone, Default)]
pub struct Watched {
    pub proc: Option<ProcWatch>,
    pub data_dir: Option<PathBuf>,
}
