//! What one simulated agent sends: the series of the agent's default
//! collectors (`agent/src/collect`) on a typical VM, with values that move as
//! real ones do, computed from (agent seed, series, time) so that a checker
//! can recompute any acknowledged value later.

use metrolog_protocol::{Bucket, Labels, SeriesKey};

/// One series of the default shape: its key and how its value moves.
#[derive(Debug, Clone)]
pub struct SeriesShape {
    pub key: SeriesKey,
    /// Level, swing and noise of the value.
    level: f64,
    swing: f64,
    noise: f64,
    /// Constant (totals, sizes): the same value every bucket.
    constant: bool,
}

fn key(name: &str, labels: &[(&str, &str)]) -> SeriesKey {
    let labels: Labels = labels
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect();
    SeriesKey::new(name, labels).expect("the default shape's names are valid")
}

/// The default collectors' series on a VM with two file systems, two block
/// devices and two network interfaces (cpu, load, mem, swap, uptime, disk,
/// net, and the agent's own counters): 46 series.
pub fn default_shape() -> Vec<SeriesShape> {
    let mut out = Vec::new();
    let mut push = |k: SeriesKey, level: f64, swing: f64, noise: f64, constant: bool| {
        out.push(SeriesShape {
            key: k,
            level,
            swing,
            noise,
            constant,
        })
    };
    push(key("cpu.busy_pct", &[]), 25.0, 15.0, 8.0, false);
    push(key("cpu.user_pct", &[]), 16.0, 10.0, 5.0, false);
    push(key("cpu.system_pct", &[]), 6.0, 3.0, 2.0, false);
    push(key("cpu.iowait_pct", &[]), 1.5, 1.0, 1.0, false);
    push(key("cpu.steal_pct", &[]), 0.3, 0.2, 0.2, false);
    push(key("load.1m", &[]), 0.9, 0.6, 0.3, false);
    push(key("load.5m", &[]), 0.8, 0.4, 0.1, false);
    push(key("load.15m", &[]), 0.7, 0.3, 0.05, false);
    push(key("mem.total_bytes", &[]), 8.0 * GIB, 0.0, 0.0, true);
    push(
        key("mem.used_bytes", &[]),
        3.2 * GIB,
        0.8 * GIB,
        0.05 * GIB,
        false,
    );
    push(
        key("mem.available_bytes", &[]),
        4.8 * GIB,
        0.8 * GIB,
        0.05 * GIB,
        false,
    );
    push(key("mem.used_pct", &[]), 40.0, 10.0, 0.5, false);
    push(key("swap.total_bytes", &[]), 2.0 * GIB, 0.0, 0.0, true);
    push(
        key("swap.used_bytes", &[]),
        0.1 * GIB,
        0.02 * GIB,
        0.0,
        false,
    );
    push(key("swap.used_pct", &[]), 5.0, 1.0, 0.0, false);
    push(key("system.uptime_s", &[]), 1.0e6, 0.0, 0.0, false);
    for mount in ["/", "/var"] {
        let l = [("mount", mount)];
        push(key("disk.total_bytes", &l), 50.0 * GIB, 0.0, 0.0, true);
        push(
            key("disk.used_bytes", &l),
            20.0 * GIB,
            2.0 * GIB,
            0.01 * GIB,
            false,
        );
        push(key("disk.used_pct", &l), 40.0, 4.0, 0.02, false);
        push(key("disk.inodes_used_pct", &l), 12.0, 1.0, 0.01, false);
    }
    for device in ["vda", "vdb"] {
        let l = [("device", device)];
        push(key("disk.read_bytes_per_s", &l), 2.0e5, 1.5e5, 1.0e5, false);
        push(
            key("disk.write_bytes_per_s", &l),
            6.0e5,
            4.0e5,
            2.0e5,
            false,
        );
        push(key("disk.io_ops_per_s", &l), 40.0, 25.0, 15.0, false);
    }
    for iface in ["eth0", "eth1"] {
        let l = [("iface", iface)];
        push(key("net.rx_bytes_per_s", &l), 1.2e6, 8.0e5, 3.0e5, false);
        push(key("net.tx_bytes_per_s", &l), 9.0e5, 6.0e5, 2.0e5, false);
        push(key("net.rx_packets_per_s", &l), 900.0, 500.0, 200.0, false);
        push(key("net.tx_packets_per_s", &l), 800.0, 450.0, 200.0, false);
        push(key("net.rx_errors_per_s", &l), 0.0, 0.0, 0.0, true);
        push(key("net.tx_errors_per_s", &l), 0.0, 0.0, 0.0, true);
    }
    for name in [
        "agent.logs.shipped",
        "agent.logs.dropped",
        "agent.logs.backlog_bytes",
        "agent.checks.runs",
    ] {
        push(key(name, &[]), 10.0, 5.0, 2.0, false);
    }
    out
}

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// splitmix64: a well-mixed hash of one 64-bit word.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A number in [0, 1) from a hash.
pub fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

impl SeriesShape {
    /// The bucket ending at `ts` (covering `(ts - 10, ts]`) of series number
    /// `index` of the agent with `seed`: deterministic, so a checker can
    /// recompute what was sent.
    pub fn bucket(&self, seed: u64, index: usize, ts: i64) -> Bucket {
        if self.constant {
            let v = self.level;
            return Bucket {
                ts,
                avg: v,
                min: v,
                max: v,
                last: v,
                count: 10,
            };
        }
        let h = mix(seed ^ mix(index as u64) ^ (ts as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
        // A daily-ish wave with a per-agent phase, plus noise.
        let phase = unit(mix(seed ^ index as u64)) * std::f64::consts::TAU;
        let wave = ((ts as f64) / 3600.0 + phase).sin();
        let avg = (self.level + self.swing * wave + self.noise * (unit(h) - 0.5)).max(0.0);
        let spread = self.noise * 0.5;
        Bucket {
            ts,
            avg,
            min: (avg - spread * unit(mix(h))).max(0.0),
            max: avg + spread * unit(mix(h ^ 1)),
            last: avg,
            count: 10,
        }
    }
}
