//! CPU time shares from the aggregate `cpu` line of `/proc/stat`, computed from the
//! jiffies spent in each state between two readings:
//!
//! - `cpu.user_pct`: user + nice (guest time is already counted in user)
//! - `cpu.system_pct`: system + irq + softirq
//! - `cpu.iowait_pct`, `cpu.steal_pct`
//! - `cpu.busy_pct`: everything but idle and iowait (so steal counts as busy: the
//!   instance wanted the CPU and did not get it)
//!
//! The first reading only sets the baseline. If any counter goes backwards (CPU
//! hot-unplug, a buggy hypervisor), that interval is skipped and the baseline reset.

use super::{parse_err, pct, read, CollectError, Collector, Samples};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug)]
pub struct Cpu {
    path: PathBuf,
    prev: Option<Jiffies>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Jiffies {
    user: u64,
    nice: u64,
    system: u64,
    idle: u64,
    iowait: u64,
    irq: u64,
    softirq: u64,
    steal: u64,
}

impl Jiffies {
    fn parse(text: &str) -> Option<Self> {
        let line = text.lines().find(|l| l.starts_with("cpu "))?;
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|s| s.parse().ok())
            .collect::<Option<_>>()?;
        // Kernels older than 2.6.11 lack steal (and older ones irq/softirq).
        let at = |i: usize| v.get(i).copied().unwrap_or(0);
        (v.len() >= 4).then(|| Self {
            user: at(0),
            nice: at(1),
            system: at(2),
            idle: at(3),
            iowait: at(4),
            irq: at(5),
            softirq: at(6),
            steal: at(7),
        })
    }

    fn fields(&self) -> [u64; 8] {
        [
            self.user,
            self.nice,
            self.system,
            self.idle,
            self.iowait,
            self.irq,
            self.softirq,
            self.steal,
        ]
    }
}

impl Cpu {
    pub fn new(procfs: &Path) -> Self {
        Self {
            path: procfs.join("stat"),
            prev: None,
        }
    }
}

impl Collector for Cpu {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn collect(&mut self, _now: Instant, out: &mut Samples) -> Result<(), CollectError> {
        let text = read(&self.path)?;
        let cur =
            Jiffies::parse(&text).ok_or_else(|| parse_err(&self.path, "no valid \"cpu \" line"))?;
        let Some(prev) = self.prev.replace(cur) else {
            return Ok(());
        };
        let (c, p) = (cur.fields(), prev.fields());
        if c.iter().zip(&p).any(|(c, p)| c < p) {
            return Ok(());
        }
        let d: Vec<f64> = c.iter().zip(&p).map(|(c, p)| (c - p) as f64).collect();
        let total: f64 = d.iter().sum();
        if total <= 0.0 {
            return Ok(());
        }
        let [user, nice, system, idle, iowait, irq, softirq, steal] =
            [d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]];
        out.push("cpu.user_pct", pct(user + nice, total));
        out.push("cpu.system_pct", pct(system + irq + softirq, total));
        out.push("cpu.iowait_pct", pct(iowait, total));
        out.push("cpu.steal_pct", pct(steal, total));
        out.push("cpu.busy_pct", pct(total - idle - iowait, total));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::fixture::{close, Proc};

    fn stat(cpu: &str) -> String {
        format!(
            "cpu  {cpu}\ncpu0 1 2 3 4 5 6 7 8 0 0\nintr 12345 0 0\nctxt 999\nbtime 1700000000\nprocesses 4242\nprocs_running 2\nprocs_blocked 0\n"
        )
    }

    #[test]
    fn shares_from_deltas() {
        let p = Proc::new();
        let mut cpu = Cpu::new(p.root());
        let mut out = Samples::default();
        p.write("stat", &stat("1000 100 500 8000 200 0 100 100 50 0"));
        cpu.collect(Instant::now(), &mut out).unwrap();
        assert!(out.samples.is_empty(), "first reading is the baseline");
        // +300 user, +100 nice, +150 system, +50 softirq, +300 idle, +50 iowait, +50 steal = 1000
        p.write("stat", &stat("1300 200 650 8300 250 0 150 150 80 0"));
        cpu.collect(Instant::now(), &mut out).unwrap();
        let m = out.by_key();
        close(m["cpu.user_pct"], 40.0);
        close(m["cpu.system_pct"], 20.0);
        close(m["cpu.iowait_pct"], 5.0);
        close(m["cpu.steal_pct"], 5.0);
        close(m["cpu.busy_pct"], 65.0);
    }

    #[test]
    fn counters_going_backwards_skip_one_interval() {
        let p = Proc::new();
        let mut cpu = Cpu::new(p.root());
        let mut out = Samples::default();
        p.write("stat", &stat("1000 0 1000 8000 0 0 0 0 0 0"));
        cpu.collect(Instant::now(), &mut out).unwrap();
        p.write("stat", &stat("10 0 10 80 0 0 0 0 0 0"));
        cpu.collect(Instant::now(), &mut out).unwrap();
        assert!(out.samples.is_empty());
        p.write("stat", &stat("60 0 10 130 0 0 0 0 0 0"));
        cpu.collect(Instant::now(), &mut out).unwrap();
        close(out.by_key()["cpu.busy_pct"], 50.0);
    }

    #[test]
    fn idle_machine_and_no_elapsed_jiffies() {
        let p = Proc::new();
        let mut cpu = Cpu::new(p.root());
        let mut out = Samples::default();
        p.write("stat", &stat("0 0 0 100 0 0 0 0 0 0"));
        cpu.collect(Instant::now(), &mut out).unwrap();
        cpu.collect(Instant::now(), &mut out).unwrap();
        assert!(out.samples.is_empty(), "no jiffies elapsed: nothing to say");
        p.write("stat", &stat("0 0 0 200 0 0 0 0 0 0"));
        cpu.collect(Instant::now(), &mut out).unwrap();
        assert_eq!(out.by_key()["cpu.busy_pct"], 0.0);
    }
}
