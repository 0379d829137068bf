//! What was acknowledged, and whether it can be read back: the ledger of
//! acknowledged bucket spans per simulated agent, and the check that queries
//! a sample of them and compares every acknowledged value with what was sent.

use crate::shape::default_shape;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One simulated host's acknowledged buckets.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AgentLedger {
    pub hostname: String,
    pub host_id: i64,
    pub seed: u64,
    /// Acknowledged bucket ends, as inclusive spans `(first, last)`.
    pub acked: Vec<(i64, i64)>,
    /// The host had samples before this run (`run --resumed`): its first
    /// bucket here follows a gap longer than the heartbeat, which the
    /// archives store as unknown (rrdtool's rule), so it is not checked.
    #[serde(default)]
    pub resumed: bool,
}

impl AgentLedger {
    pub fn ack(&mut self, (first, last): (i64, i64)) {
        match self.acked.last_mut() {
            Some(l) if l.1 + 10 == first => l.1 = last,
            _ => self.acked.push((first, last)),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Ledger {
    pub agents: Vec<AgentLedger>,
}

impl Ledger {
    pub fn write(&self, path: &Path) -> Result<()> {
        std::fs::write(path, serde_json::to_vec(self)?)?;
        Ok(())
    }

    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(serde_json::from_slice(&bytes)?)
    }
}

/// What the check found.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CheckResult {
    pub agents_checked: usize,
    pub series_checked: usize,
    /// Acknowledged buckets looked for.
    pub acknowledged: u64,
    /// Of those, missing or with another value.
    pub lost: u64,
    /// The first few losses, for the report.
    pub examples: Vec<String>,
}

impl CheckResult {
    pub fn describe(&self) -> String {
        if self.lost == 0 {
            format!(
                "check: {} acknowledged samples of {} series on {} hosts read back, none lost",
                self.acknowledged, self.series_checked, self.agents_checked
            )
        } else {
            format!(
                "check: {} of {} acknowledged samples LOST ({} series on {} hosts); e.g. {}",
                self.lost,
                self.acknowledged,
                self.series_checked,
                self.agents_checked,
                self.examples.join("; ")
            )
        }
    }
}

/// The series read back per host: the first (cpu.busy_pct) and a labelled
/// one (disk.used_pct of /var).
const CHECKED: [usize; 2] = [0, 22];

/// The 10 s archive holds an hour; only that much is read back.
const CHECK_WINDOW: i64 = 3000;

/// Reads back the acknowledged buckets of up to `agents` hosts (spread over
/// the ledger) and compares them with what was sent.
pub async fn check(
    http: &reqwest::Client,
    server: &str,
    token: &str,
    ledger: &Ledger,
    agents: usize,
) -> Result<CheckResult> {
    let shape = default_shape();
    let mut out = CheckResult::default();
    let with_acks: Vec<&AgentLedger> = ledger
        .agents
        .iter()
        .filter(|a| !a.acked.is_empty())
        .collect();
    if with_acks.is_empty() {
        return Ok(out);
    }
    let every = (with_acks.len() / agents.max(1)).max(1);
    for a in with_acks.iter().step_by(every).take(agents) {
        out.agents_checked += 1;
        let newest = a.acked.iter().map(|s| s.1).max().unwrap_or(0);
        let from = (newest - CHECK_WINDOW).max(a.acked[0].0 - 10);
        for &i in &CHECKED {
            let s = &shape[i];
            out.series_checked += 1;
            let url = format!(
                "{}/api/v1/query?host={}&name={}&from={}&to={}&step=10",
                server.trim_end_matches('/'),
                a.host_id,
                s.key.name.as_str(),
                from,
                newest
            );
            let v: serde_json::Value = http
                .get(&url)
                .bearer_auth(token)
                .send()
                .await
                .with_context(|| format!("GET {url}"))?
                .error_for_status()
                .with_context(|| format!("GET {url}"))?
                .json()
                .await?;
            let got: std::collections::HashMap<i64, f64> = v["series"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|x| labels_match(&x["labels"], &s.key.labels))
                .flat_map(|x| x["points"].as_array().cloned().unwrap_or_default())
                .filter_map(|p| Some((p[0].as_i64()?, p[1].as_f64()?)))
                .collect();
            let after_gap = a.resumed.then(|| a.acked[0].0);
            for &(first, last) in &a.acked {
                for ts in (first.max(from + 10)..=last).step_by(10) {
                    if Some(ts) == after_gap {
                        continue;
                    }
                    out.acknowledged += 1;
                    let want = s.bucket(a.seed, i, ts).avg;
                    let ok = got
                        .get(&ts)
                        .is_some_and(|v| (v - want).abs() <= 1e-9 * want.abs().max(1.0));
                    if !ok {
                        out.lost += 1;
                        if out.examples.len() < 5 {
                            out.examples.push(format!(
                                "{} {} at {ts}: sent {want}, read {:?}",
                                a.hostname,
                                s.key.name.as_str(),
                                got.get(&ts)
                            ));
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

fn labels_match(v: &serde_json::Value, want: &metrolog_protocol::Labels) -> bool {
    want.iter()
        .all(|(k, val)| v[k.as_str()].as_str() == Some(val.as_str()))
        && v.as_object().map_or(0, |o| o.len()) == want.len()
}
