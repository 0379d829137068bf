//! `system.uptime_s` from `/proc/uptime`.

use super::{parse_err, read, CollectError, Collector, Samples};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug)]
pub struct Uptime {
    path: PathBuf,
}

impl Uptime {
    pub fn new(procfs: &Path) -> Self {
        Self {
            path: procfs.join("uptime"),
        }
    }
}

impl Collector for Uptime {
    fn name(&self) -> &'static str {
        "uptime"
    }

    fn collect(&mut self, _now: Instant, out: &mut Samples) -> Result<(), CollectError> {
        let text = read(&self.path)?;
        let secs: f64 = text
            .split_whitespace()
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| parse_err(&self.path, "no uptime seconds"))?;
        out.push("system.uptime_s", secs);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::fixture::Proc;

    #[test]
    fn reads_uptime() {
        let p = Proc::new();
        p.write("uptime", "350735.47 234388.90\n");
        let mut out = Samples::default();
        Uptime::new(p.root())
            .collect(Instant::now(), &mut out)
            .unwrap();
        assert_eq!(out.by_key()["system.uptime_s"], 350735.47);
        p.write("uptime", "garbage\n");
        assert!(Uptime::new(p.root())
            .collect(Instant::now(), &mut out)
            .is_err());
    }
}
