//! Network rates per interface from `/proc/net/dev`, every interface but `lo`:
//! `net.{rx,tx}_{bytes,packets,errors}_per_s{iface="eth0"}`.
//!
//! Interfaces come and go (containers' veths, hot-plugged NICs): one that vanished
//! is forgotten, one that (re)appears starts from a fresh baseline; a counter reset
//! yields no rate for that interval (see [`super::rate`]).

use super::{parse_err, read, CollectError, Collector, Rates, Samples};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug)]
pub struct Net {
    path: PathBuf,
    rates: Rates,
}

/// Column of each counter after the interface name: 8 receive columns
/// (bytes packets errs drop fifo frame compressed multicast), then transmit.
const COUNTERS: [(&str, usize); 6] = [
    ("net.rx_bytes_per_s", 0),
    ("net.rx_packets_per_s", 1),
    ("net.rx_errors_per_s", 2),
    ("net.tx_bytes_per_s", 8),
    ("net.tx_packets_per_s", 9),
    ("net.tx_errors_per_s", 10),
];

impl Net {
    pub fn new(procfs: &Path) -> Self {
        Self {
            path: procfs.join("net/dev"),
            rates: Rates::default(),
        }
    }

    /// Counters tracked (for tests of bounded state).
    pub fn tracked(&self) -> usize {
        self.rates.len()
    }
}

impl Collector for Net {
    fn name(&self) -> &'static str {
        "net"
    }

    fn collect(&mut self, now: Instant, out: &mut Samples) -> Result<(), CollectError> {
        let text = read(&self.path)?;
        self.rates.begin();
        let mut seen = 0;
        // Two header lines, then "  eth0: 123 456 …" (old kernels: "eth0:123").
        for line in text.lines().skip(2) {
            let Some((iface, rest)) = line.split_once(':') else {
                continue;
            };
            let iface = iface.trim();
            if iface == "lo" || iface.is_empty() {
                continue;
            }
            let values: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|s| s.parse().ok())
                .collect();
            if values.len() < 16 {
                continue;
            }
            seen += 1;
            for (name, col) in COUNTERS {
                let key = format!("{iface}\0{name}");
                if let Some(r) = self.rates.rate(&key, values[col], now) {
                    out.push_labelled(name, &[("iface", iface)], r);
                }
            }
        }
        self.rates.finish();
        if seen == 0 && !text.contains('|') {
            return Err(parse_err(&self.path, "no header"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::fixture::{close, Proc};
    use std::time::Duration;

    const HEADER: &str = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
";

    fn dev(rows: &[(&str, u64, u64, u64, u64, u64, u64)]) -> String {
        let mut s = HEADER.to_string();
        s.push_str("    lo: 9999999 9999 0 0 0 0 0 0 9999999 9999 0 0 0 0 0 0\n");
        for (iface, rb, rp, re, tb, tp, te) in rows {
            s.push_str(&format!(
                "{iface:>6}: {rb} {rp} {re} 0 0 0 0 0 {tb} {tp} {te} 0 0 0 0 0\n"
            ));
        }
        s
    }

    #[test]
    fn rates_per_interface_without_lo() {
        let p = Proc::new();
        let mut net = Net::new(p.root());
        let t0 = Instant::now();
        let mut out = Samples::default();
        p.write("net/dev", &dev(&[("eth0", 1000, 10, 0, 2000, 20, 0)]));
        net.collect(t0, &mut out).unwrap();
        assert!(out.samples.is_empty());
        p.write("net/dev", &dev(&[("eth0", 21000, 30, 2, 6000, 60, 4)]));
        net.collect(t0 + Duration::from_secs(10), &mut out).unwrap();
        let m = out.by_key();
        close(m[r#"net.rx_bytes_per_s{iface="eth0"}"#], 2000.0);
        close(m[r#"net.rx_packets_per_s{iface="eth0"}"#], 2.0);
        close(m[r#"net.rx_errors_per_s{iface="eth0"}"#], 0.2);
        close(m[r#"net.tx_bytes_per_s{iface="eth0"}"#], 400.0);
        close(m[r#"net.tx_packets_per_s{iface="eth0"}"#], 4.0);
        close(m[r#"net.tx_errors_per_s{iface="eth0"}"#], 0.4);
        assert_eq!(m.len(), 6, "lo is skipped: {m:?}");
    }

    #[test]
    fn old_kernel_format_without_space_after_colon() {
        let p = Proc::new();
        let mut net = Net::new(p.root());
        let t0 = Instant::now();
        let mut out = Samples::default();
        let row = |b: u64| format!("{HEADER}  eth0:{b} 1 0 0 0 0 0 0 {b} 1 0 0 0 0 0 0\n");
        p.write("net/dev", &row(100));
        net.collect(t0, &mut out).unwrap();
        p.write("net/dev", &row(300));
        net.collect(t0 + Duration::from_secs(1), &mut out).unwrap();
        close(out.by_key()[r#"net.rx_bytes_per_s{iface="eth0"}"#], 200.0);
    }

    #[test]
    fn counter_reset_gives_no_bogus_rate() {
        let p = Proc::new();
        let mut net = Net::new(p.root());
        let t0 = Instant::now();
        let mut out = Samples::default();
        p.write(
            "net/dev",
            &dev(&[("eth0", u64::MAX - 10, 10, 0, 5000, 20, 0)]),
        );
        net.collect(t0, &mut out).unwrap();
        p.write("net/dev", &dev(&[("eth0", 5, 12, 0, 100, 25, 0)]));
        net.collect(t0 + Duration::from_secs(1), &mut out).unwrap();
        let m = out.by_key();
        assert!(
            !m.contains_key(r#"net.rx_bytes_per_s{iface="eth0"}"#),
            "{m:?}"
        );
        assert!(
            !m.contains_key(r#"net.tx_bytes_per_s{iface="eth0"}"#),
            "{m:?}"
        );
        // Counters that still went up keep their rate.
        close(m[r#"net.rx_packets_per_s{iface="eth0"}"#], 2.0);
        assert!(m.values().all(|v| *v < 1e6), "{m:?}");
        // The next interval is measured from the new base.
        let mut out = Samples::default();
        p.write("net/dev", &dev(&[("eth0", 105, 12, 0, 300, 25, 0)]));
        net.collect(t0 + Duration::from_secs(2), &mut out).unwrap();
        close(out.by_key()[r#"net.rx_bytes_per_s{iface="eth0"}"#], 100.0);
    }

    #[test]
    fn vanished_interface_is_forgotten_and_returns_fresh() {
        let p = Proc::new();
        let mut net = Net::new(p.root());
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut out = Samples::default();
        p.write(
            "net/dev",
            &dev(&[("eth0", 0, 0, 0, 0, 0, 0), ("veth1", 100, 1, 0, 100, 1, 0)]),
        );
        net.collect(t0, &mut out).unwrap();
        assert_eq!(net.tracked(), 12);
        p.write("net/dev", &dev(&[("eth0", 10, 1, 0, 10, 1, 0)]));
        net.collect(t0 + s, &mut out).unwrap();
        assert_eq!(net.tracked(), 6, "veth1's state is freed");
        assert!(out.samples.iter().all(|s| s.key.labels["iface"] == "eth0"));
        // veth1 comes back with counters far above the old ones: a fresh baseline,
        // not a rate computed against state from before it vanished.
        let mut out = Samples::default();
        p.write(
            "net/dev",
            &dev(&[
                ("eth0", 20, 2, 0, 20, 2, 0),
                ("veth1", 900_000, 9, 0, 9, 9, 0),
            ]),
        );
        net.collect(t0 + 2 * s, &mut out).unwrap();
        assert!(
            out.samples.iter().all(|s| s.key.labels["iface"] == "eth0"),
            "{:?}",
            out.by_key()
        );
        assert_eq!(net.tracked(), 12);
    }
}
