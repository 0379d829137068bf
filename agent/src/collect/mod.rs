//! Collectors: read `/proc` and `statvfs` directly and turn what they find into
//! samples. The procfs root is configurable so every collector runs on fixtures.
//!
//! Collectors are blocking (file reads, `statvfs` on a possibly slow mount): the
//! sampler runs them on the blocking pool, never on the async runtime.

mod cpu;
mod disk;
mod load;
mod mem;
mod net;
mod rate;
mod uptime;

pub use cpu::Cpu;
pub use disk::{DiskIo, DiskUsage};
pub use load::Load;
pub use mem::Mem;
pub use net::Net;
pub use rate::Rates;
pub use uptime::Uptime;

use metrolog_protocol::{Labels, SeriesKey};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One measured value of one series.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub key: SeriesKey,
    pub value: f64,
}

/// Why a collector produced nothing this round.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: unexpected content: {what}")]
    Parse { path: PathBuf, what: String },
}

/// One source of samples.
pub trait Collector: Send {
    /// Short name used in logs (`cpu`, `net`, …).
    fn name(&self) -> &'static str;
    /// Appends this round's samples to `out`. `now` is a monotonic clock reading,
    /// used for rates.
    fn collect(&mut self, now: Instant, out: &mut Samples) -> Result<(), CollectError>;
}

/// Accumulates samples, building series keys. Keys come from constant names and
/// from label values found on the system; a label value the protocol refuses
/// (overlong, control characters) drops that sample instead of failing the round.
#[derive(Debug, Default)]
pub struct Samples {
    pub samples: Vec<Sample>,
    /// Samples dropped because their key was invalid.
    pub refused: u64,
}

impl Samples {
    pub fn push(&mut self, name: &str, value: f64) {
        self.push_labelled(name, &[], value);
    }

    pub fn push_labelled(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        if !value.is_finite() {
            self.refused += 1;
            return;
        }
        let labels: Labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        match SeriesKey::new(name, labels) {
            Ok(key) => self.samples.push(Sample { key, value }),
            Err(_) => self.refused += 1,
        }
    }

    /// Samples by their key's display form; handy in tests.
    pub fn by_key(&self) -> BTreeMap<String, f64> {
        self.samples
            .iter()
            .map(|s| (s.key.to_string(), s.value))
            .collect()
    }
}

/// Every collector of the agent, with per-collector error state so a broken
/// source is logged when it breaks and when it recovers, not every second.
pub struct Collectors {
    collectors: Vec<Box<dyn Collector>>,
    failing: Vec<bool>,
}

impl std::fmt::Debug for Collectors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.collectors.iter().map(|c| c.name()).collect();
        f.debug_struct("Collectors")
            .field("collectors", &names)
            .finish()
    }
}

impl Collectors {
    /// The standard set, reading under `procfs`.
    pub fn standard(procfs: &Path) -> Self {
        Self::new(vec![
            Box::new(Cpu::new(procfs)),
            Box::new(Load::new(procfs)),
            Box::new(Mem::new(procfs)),
            Box::new(DiskUsage::new(procfs)),
            Box::new(DiskIo::new(procfs)),
            Box::new(Net::new(procfs)),
            Box::new(Uptime::new(procfs)),
        ])
    }

    pub fn new(collectors: Vec<Box<dyn Collector>>) -> Self {
        let failing = vec![false; collectors.len()];
        Self {
            collectors,
            failing,
        }
    }

    /// Runs every collector once.
    pub fn sample(&mut self, now: Instant) -> Samples {
        let mut out = Samples::default();
        for (c, failing) in self.collectors.iter_mut().zip(&mut self.failing) {
            match c.collect(now, &mut out) {
                Ok(()) => {
                    if *failing {
                        tracing::info!(collector = c.name(), "collector recovered");
                    }
                    *failing = false;
                }
                Err(e) => {
                    if !*failing {
                        tracing::warn!(collector = c.name(), "collector failed: {e}");
                    }
                    *failing = true;
                }
            }
        }
        out
    }
}

/// Reads a whole file under the procfs root.
pub(crate) fn read(path: &Path) -> Result<String, CollectError> {
    std::fs::read_to_string(path).map_err(|source| CollectError::Read {
        path: path.to_path_buf(),
        source,
    })
}

pub(crate) fn parse_err(path: &Path, what: impl Into<String>) -> CollectError {
    CollectError::Parse {
        path: path.to_path_buf(),
        what: what.into(),
    }
}

/// Percentage of `part` in `whole`, 0 when `whole` is 0.
pub(crate) fn pct(part: f64, whole: f64) -> f64 {
    if whole > 0.0 {
        (part / whole * 100.0).clamp(0.0, 100.0)
    } else {
        0.0
    }
}

#[cfg(test)]
pub(crate) mod fixture {
    //! A fake procfs root in a temp dir.
    use std::path::Path;

    pub struct Proc(pub tempfile::TempDir);

    impl Proc {
        pub fn new() -> Self {
            Self(tempfile::tempdir().unwrap())
        }

        pub fn root(&self) -> &Path {
            self.0.path()
        }

        pub fn write(&self, rel: &str, text: &str) {
            let path = self.0.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
    }

    /// Asserts two floats are within 1e-6 of each other.
    #[track_caller]
    pub fn close(actual: f64, expected: f64) {
        assert!(
            (actual - expected).abs() < 1e-6,
            "expected {expected}, got {actual}"
        );
    }
}
