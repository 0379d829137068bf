//! Prometheus exporters scraped over HTTP (see `docs/scrape.md`).
//!
//! - [`config`]: the `[[scrape]]` entries;
//! - [`exposition`]: our parser of the text format 0.0.4 and OpenMetrics;
//! - [`convert`]: samples into series `prom.<name>{labels}`, counters into rates;
//! - [`target`]: one target's scrape loop, its limits and health series;
//! - [`book`]: where scraped series wait for the sampler.

pub mod book;
pub mod config;
pub mod convert;
pub mod exposition;
pub mod target;

pub use book::SampleBook;
pub use config::ScrapeConfig;

use crate::random::Jitter;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The scrape loops, one task per target.
pub struct Scrapes {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Scrapes {
    /// Starts a loop per target; first scrapes are spread over the target's
    /// interval (at most 10 s) so they do not all start at once.
    pub fn start(targets: &[ScrapeConfig], book: Arc<SampleBook>) -> Self {
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        if !targets.is_empty() {
            let client = reqwest::Client::builder()
                .user_agent(concat!("metrolog-agent/", env!("CARGO_PKG_VERSION")))
                .no_proxy()
                .connect_timeout(Duration::from_secs(5))
                .build();
            let client = match client {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(
                        "cannot build the HTTP client for [[scrape]]: {e}; no target is scraped"
                    );
                    return Self { stop, tasks };
                }
            };
            let mut jitter = Jitter::from_entropy();
            for t in targets {
                let first = t
                    .interval
                    .min(Duration::from_secs(10))
                    .mul_f64(jitter.unit());
                tracing::info!(
                    "scrape {} every {} (timeout {}, sample_limit {}): {}",
                    t.name,
                    humantime::format_duration(t.interval),
                    humantime::format_duration(t.timeout()),
                    t.sample_limit,
                    t.url_for_logs()
                );
                let target = target::Target::new(t.clone(), client.clone());
                tasks.push(tokio::spawn(target.run(
                    book.clone(),
                    first,
                    stop_rx.clone(),
                )));
            }
        }
        Self { stop, tasks }
    }

    /// Stops every loop (a scrape in progress is abandoned).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
