//! Load averages and process counts from `/proc/loadavg`
//! (`0.50 0.40 0.30 2/345 12345`: 1/5/15 min, runnable/total scheduling entities).

use super::{parse_err, read, CollectError, Collector, Samples};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug)]
pub struct Load {
    path: PathBuf,
}

impl Load {
    pub fn new(procfs: &Path) -> Self {
        Self {
            path: procfs.join("loadavg"),
        }
    }
}

impl Collector for Load {
    fn name(&self) -> &'static str {
        "load"
    }

    fn collect(&mut self, _now: Instant, out: &mut Samples) -> Result<(), CollectError> {
        let text = read(&self.path)?;
        let f: Vec<&str> = text.split_whitespace().collect();
        let bad = || parse_err(&self.path, "expected \"l1 l5 l15 running/total lastpid\"");
        if f.len() < 4 {
            return Err(bad());
        }
        let loads: Vec<f64> = f[..3]
            .iter()
            .map(|s| s.parse::<f64>())
            .collect::<Result<_, _>>()
            .map_err(|_| bad())?;
        let (running, total) = f[3].split_once('/').ok_or_else(bad)?;
        let running: u64 = running.parse().map_err(|_| bad())?;
        let total: u64 = total.parse().map_err(|_| bad())?;
        out.push("load.1m", loads[0]);
        out.push("load.5m", loads[1]);
        out.push("load.15m", loads[2]);
        out.push("procs.running", running as f64);
        out.push("procs.total", total as f64);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::fixture::Proc;

    #[test]
    fn reads_loadavg() {
        let p = Proc::new();
        p.write("loadavg", "0.52 0.41 0.30 3/412 98765\n");
        let mut out = Samples::default();
        Load::new(p.root())
            .collect(Instant::now(), &mut out)
            .unwrap();
        let m = out.by_key();
        assert_eq!(m["load.1m"], 0.52);
        assert_eq!(m["load.5m"], 0.41);
        assert_eq!(m["load.15m"], 0.30);
        assert_eq!(m["procs.running"], 3.0);
        assert_eq!(m["procs.total"], 412.0);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let p = Proc::new();
        for bad in ["", "0.1 0.2", "a b c 1/2 3", "0.1 0.2 0.3 12 3"] {
            p.write("loadavg", bad);
            let mut out = Samples::default();
            assert!(
                Load::new(p.root())
                    .collect(Instant::now(), &mut out)
                    .is_err(),
                "{bad:?}"
            );
        }
    }
}
