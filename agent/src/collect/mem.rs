//! Memory and swap from `/proc/meminfo`. "Used" is `MemTotal - MemAvailable`, the
//! memory applications cannot get back without swapping (what `free` calls used
//! since procps 3.3.10); kernels before 3.14 lack `MemAvailable`, there it is
//! approximated by `MemFree + Buffers + Cached`.

use super::{parse_err, pct, read, CollectError, Collector, Samples};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug)]
pub struct Mem {
    path: PathBuf,
}

impl Mem {
    pub fn new(procfs: &Path) -> Self {
        Self {
            path: procfs.join("meminfo"),
        }
    }
}

impl Collector for Mem {
    fn name(&self) -> &'static str {
        "mem"
    }

    fn collect(&mut self, _now: Instant, out: &mut Samples) -> Result<(), CollectError> {
        let text = read(&self.path)?;
        // "MemTotal:       16314456 kB"
        let fields: HashMap<&str, u64> = text
            .lines()
            .filter_map(|line| {
                let (key, rest) = line.split_once(':')?;
                let mut parts = rest.split_whitespace();
                let n: u64 = parts.next()?.parse().ok()?;
                let mult = match parts.next() {
                    Some("kB") => 1024,
                    _ => 1,
                };
                Some((key.trim(), n.saturating_mul(mult)))
            })
            .collect();
        let get = |k: &str| fields.get(k).copied();
        let total = get("MemTotal").ok_or_else(|| parse_err(&self.path, "no MemTotal"))?;
        let available = get("MemAvailable")
            .or_else(|| {
                Some(get("MemFree")? + get("Buffers").unwrap_or(0) + get("Cached").unwrap_or(0))
            })
            .ok_or_else(|| parse_err(&self.path, "neither MemAvailable nor MemFree"))?
            .min(total);
        let used = total - available;
        out.push("mem.total_bytes", total as f64);
        out.push("mem.available_bytes", available as f64);
        out.push("mem.used_bytes", used as f64);
        out.push("mem.used_pct", pct(used as f64, total as f64));
        let swap_total = get("SwapTotal").unwrap_or(0);
        let swap_used = swap_total.saturating_sub(get("SwapFree").unwrap_or(swap_total));
        out.push("swap.total_bytes", swap_total as f64);
        out.push("swap.used_bytes", swap_used as f64);
        // No swap at all reads as 0 % used, not as missing data.
        out.push("swap.used_pct", pct(swap_used as f64, swap_total as f64));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::fixture::{close, Proc};

    const MEMINFO: &str = "\
MemTotal:        8000000 kB
MemFree:          500000 kB
MemAvailable:    6000000 kB
Buffers:          100000 kB
Cached:          4000000 kB
SwapCached:            0 kB
Active:          3000000 kB
SwapTotal:       2000000 kB
SwapFree:        1500000 kB
Dirty:               123 kB
HugePages_Total:       0
Hugepagesize:       2048 kB
";

    #[test]
    fn reads_meminfo() {
        let p = Proc::new();
        p.write("meminfo", MEMINFO);
        let mut out = Samples::default();
        Mem::new(p.root())
            .collect(Instant::now(), &mut out)
            .unwrap();
        let m = out.by_key();
        assert_eq!(m["mem.total_bytes"], 8_000_000.0 * 1024.0);
        assert_eq!(m["mem.available_bytes"], 6_000_000.0 * 1024.0);
        assert_eq!(m["mem.used_bytes"], 2_000_000.0 * 1024.0);
        close(m["mem.used_pct"], 25.0);
        assert_eq!(m["swap.total_bytes"], 2_000_000.0 * 1024.0);
        assert_eq!(m["swap.used_bytes"], 500_000.0 * 1024.0);
        close(m["swap.used_pct"], 25.0);
    }

    #[test]
    fn old_kernel_without_memavailable_and_no_swap() {
        let p = Proc::new();
        p.write(
            "meminfo",
            "MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 250 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n",
        );
        let mut out = Samples::default();
        Mem::new(p.root())
            .collect(Instant::now(), &mut out)
            .unwrap();
        let m = out.by_key();
        close(m["mem.used_pct"], 60.0);
        assert_eq!(m["swap.used_pct"], 0.0);
    }
}
