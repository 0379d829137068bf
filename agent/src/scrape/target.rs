//! One target's loop: scrape every interval, parse, convert, hand the series
//! to the [`SampleBook`] with the target's own health series:
//!
//! - `agent.scrape.up{job}`: 1 when the last scrape succeeded, else 0;
//! - `agent.scrape.samples{job}`: samples in the last good scrape;
//! - `agent.scrape.duration_ms{job}`: how long the last scrape took;
//! - `agent.scrape.failures{job,reason}`: failed scrapes since start, by
//!   reason (`connect`, `http_status`, `timeout`, `body_limit`, `encoding`,
//!   `parse`, `sample_limit`);
//! - `agent.scrape.skipped{job,reason}`: samples left out of good scrapes
//!   since start (`refused`: beyond the series limits; `duplicate`).
//!
//! A failed scrape gives no series at all (as in Prometheus): half an
//! exposition would show misleading sums.

use super::book::SampleBook;
use super::config::ScrapeConfig;
use super::convert::{Converter, Skipped};
use super::exposition::{self, Format, ParseError};
use metrolog_protocol::{Labels, SeriesKey};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

/// Why a scrape failed.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error("request failed: {0}")]
    Connect(String),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("no complete answer within the timeout of {0:?}")]
    Timeout(Duration),
    #[error("body larger than body_limit ({0} bytes); it was cut off")]
    BodyLimit(u64),
    #[error("body is not UTF-8: {0}")]
    Encoding(std::str::Utf8Error),
    #[error("malformed exposition: {0}")]
    Parse(ParseError),
}

impl ScrapeError {
    /// The `reason` label of `agent.scrape.failures`.
    pub fn reason(&self) -> &'static str {
        match self {
            ScrapeError::Connect(_) => "connect",
            ScrapeError::Status(_) => "http_status",
            ScrapeError::Timeout(_) => "timeout",
            ScrapeError::BodyLimit(_) => "body_limit",
            ScrapeError::Encoding(_) => "encoding",
            ScrapeError::Parse(e) => e.reason(),
        }
    }
}

/// What the exporters are asked for: the text format first (what every
/// exporter speaks), OpenMetrics understood too.
const ACCEPT: &str =
    "text/plain;version=0.0.4;q=0.9,application/openmetrics-text;version=1.0.0;q=0.5,*/*;q=0.1";

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// One target and what it remembers between scrapes (bounded: the rate
/// state of the last scrape's series and a counter per failure reason).
pub struct Target {
    cfg: ScrapeConfig,
    client: reqwest::Client,
    converter: Option<Converter>,
    failures: BTreeMap<&'static str, u64>,
    skipped: Skipped,
    last_failure: Option<&'static str>,
}

impl Target {
    pub fn new(cfg: ScrapeConfig, client: reqwest::Client) -> Self {
        Self {
            cfg,
            client,
            converter: Some(Converter::default()),
            failures: BTreeMap::new(),
            skipped: Skipped::default(),
            last_failure: None,
        }
    }

    /// Failed scrapes since start, by reason.
    pub fn failures(&self) -> &BTreeMap<&'static str, u64> {
        &self.failures
    }

    /// Scrapes every interval (the first after `first`) until `stop`.
    pub async fn run(
        mut self,
        book: Arc<SampleBook>,
        first: Duration,
        mut stop: watch::Receiver<bool>,
    ) {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(first) => {}
        }
        let mut tick = tokio::time::interval(self.cfg.interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tick.tick() => {}
            }
            let out = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                out = self.scrape_once() => out,
            };
            book.push(out);
        }
    }

    /// One scrape: the series it gives (none when it fails) and the
    /// target's health series.
    pub async fn scrape_once(&mut self) -> Vec<(SeriesKey, f64)> {
        let started = Instant::now();
        let now = unix_now();
        let result = match tokio::time::timeout(self.cfg.timeout(), self.fetch()).await {
            Ok(Ok((body, format))) => self.convert(body, format, now).await,
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ScrapeError::Timeout(self.cfg.timeout())),
        };
        let took = started.elapsed();
        let (mut out, up, samples) = match result {
            Ok((series, n)) => {
                if let Some(reason) = self.last_failure.take() {
                    tracing::info!(
                        "scrape {}: {} answers again (after {reason})",
                        self.cfg.name,
                        self.cfg.url_for_logs()
                    );
                }
                (series, 1.0, Some(n))
            }
            Err(e) => {
                let reason = e.reason();
                let n = self.failures.entry(reason).or_default();
                *n += 1;
                // One warning per change of reason; the counter says how often.
                if self.last_failure != Some(reason) {
                    tracing::warn!(
                        "scrape {} of {} failed ({reason}): {e}; counted in agent.scrape.failures",
                        self.cfg.name,
                        self.cfg.url_for_logs()
                    );
                } else {
                    tracing::debug!("scrape {} failed again ({reason}): {e}", self.cfg.name);
                }
                self.last_failure = Some(reason);
                (Vec::new(), 0.0, None)
            }
        };
        self.health(&mut out, up, samples, took);
        out
    }

    fn health(
        &self,
        out: &mut Vec<(SeriesKey, f64)>,
        up: f64,
        samples: Option<usize>,
        took: Duration,
    ) {
        let job = |extra: &[(&str, &str)]| {
            let mut l = Labels::new();
            l.insert("job".into(), self.cfg.name.clone());
            for (k, v) in extra {
                l.insert((*k).into(), (*v).into());
            }
            l
        };
        let mut push = |name: &str, labels: Labels, v: f64| {
            if let Ok(k) = SeriesKey::new(name, labels) {
                out.push((k, v));
            }
        };
        push("agent.scrape.up", job(&[]), up);
        push(
            "agent.scrape.duration_ms",
            job(&[]),
            took.as_secs_f64() * 1000.0,
        );
        if let Some(n) = samples {
            push("agent.scrape.samples", job(&[]), n as f64);
        }
        for (reason, n) in &self.failures {
            push(
                "agent.scrape.failures",
                job(&[("reason", reason)]),
                *n as f64,
            );
        }
        for (reason, n) in [
            ("refused", self.skipped.refused),
            ("duplicate", self.skipped.duplicate),
        ] {
            if n > 0 {
                push("agent.scrape.skipped", job(&[("reason", reason)]), n as f64);
            }
        }
    }

    /// GETs the body, refusing one over `body_limit` as soon as it is.
    async fn fetch(&self) -> Result<(Vec<u8>, Format), ScrapeError> {
        let mut resp = self
            .client
            .get(&self.cfg.url)
            .header(reqwest::header::ACCEPT, ACCEPT)
            .header(
                "X-Prometheus-Scrape-Timeout-Seconds",
                format!("{}", self.cfg.timeout().as_secs_f64()),
            )
            .send()
            .await
            .map_err(|e| ScrapeError::Connect(error_chain(&e.without_url())))?;
        if !resp.status().is_success() {
            return Err(ScrapeError::Status(resp.status().as_u16()));
        }
        let format = Format::from_content_type(
            resp.headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
        );
        let limit = self.cfg.body_limit;
        if resp.content_length().is_some_and(|n| n > limit) {
            return Err(ScrapeError::BodyLimit(limit));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| ScrapeError::Connect(error_chain(&e.without_url())))?
        {
            if (body.len() + chunk.len()) as u64 > limit {
                return Err(ScrapeError::BodyLimit(limit));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body, format))
    }

    /// Parses and converts off the runtime (a large body takes a while).
    async fn convert(
        &mut self,
        body: Vec<u8>,
        format: Format,
        now: f64,
    ) -> Result<(Vec<(SeriesKey, f64)>, usize), ScrapeError> {
        let mut converter = self.converter.take().unwrap_or_default();
        let (limit, job, extra) = (
            self.cfg.sample_limit,
            self.cfg.name.clone(),
            self.cfg.labels.clone(),
        );
        let done = tokio::task::spawn_blocking(move || {
            let parsed = std::str::from_utf8(&body)
                .map_err(ScrapeError::Encoding)
                .and_then(|text| {
                    exposition::parse(text, format, limit).map_err(ScrapeError::Parse)
                });
            let out = parsed.map(|e| {
                let n = e.samples.len();
                (converter.convert(&e.samples, now, &job, &extra), n)
            });
            (converter, out)
        })
        .await;
        let (converter, out) = match done {
            Ok(r) => r,
            Err(e) => {
                return Err(ScrapeError::Parse(ParseError::Line {
                    line: 0,
                    what: format!("parser panicked: {e}"),
                }))
            }
        };
        self.converter = Some(converter);
        let (converted, n) = out?;
        self.skipped.refused += converted.skipped.refused;
        self.skipped.duplicate += converted.skipped.duplicate;
        Ok((converted.series, n))
    }
}

/// An error with its causes, on one line ("error sending request: connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// What the loopback exporter does with each request.
    #[derive(Clone)]
    enum Answer {
        Body(&'static str, String),
        Bytes(Vec<u8>),
        /// `n` bytes of valid-looking samples, without a Content-Length.
        Endless(usize),
        /// Reads the request and never answers.
        Hang,
        Status(u16),
    }

    /// A tiny HTTP/1.1 server on loopback answering every request with `answer`.
    async fn exporter(answer: Answer) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = match answer {
                        Answer::Body(ct, body) => {
                            let head = format!("HTTP/1.1 200 OK\r\nContent-Type: {ct}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                            sock.write_all(head.as_bytes())
                                .await
                                .and(sock.write_all(body.as_bytes()).await)
                        }
                        Answer::Bytes(body) => {
                            let head = format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                            sock.write_all(head.as_bytes())
                                .await
                                .and(sock.write_all(&body).await)
                        }
                        Answer::Endless(n) => {
                            let head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nConnection: close\r\n\r\n";
                            let _ = sock.write_all(head.as_bytes()).await;
                            let line = "filler_metric{some=\"label\"} 1\n".repeat(1000);
                            let mut sent = 0;
                            while sent < n {
                                if sock.write_all(line.as_bytes()).await.is_err() {
                                    break;
                                }
                                sent += line.len();
                            }
                            Ok(())
                        }
                        Answer::Hang => {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                            Ok(())
                        }
                        Answer::Status(code) => {
                            let head = format!("HTTP/1.1 {code} Oops\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                            sock.write_all(head.as_bytes()).await
                        }
                    };
                });
            }
        });
        format!("http://{addr}/metrics")
    }

    fn target(url: String, tune: impl FnOnce(&mut ScrapeConfig)) -> Target {
        let mut cfg = ScrapeConfig {
            name: "t".into(),
            url,
            timeout: Some(Duration::from_millis(500)),
            ..ScrapeConfig::default()
        };
        tune(&mut cfg);
        Target::new(cfg, reqwest::Client::builder().no_proxy().build().unwrap())
    }

    fn get(out: &[(SeriesKey, f64)], key: &str) -> Option<f64> {
        out.iter()
            .find(|(k, _)| k.to_string() == key)
            .map(|(_, v)| *v)
    }

    fn prom_series(out: &[(SeriesKey, f64)]) -> usize {
        out.iter()
            .filter(|(k, _)| k.name.as_str().starts_with("prom."))
            .count()
    }

    #[tokio::test]
    async fn a_good_scrape_gives_series_and_up() {
        let body =
            "# TYPE c counter\nc_total 10\n# TYPE g gauge\ng{a=\"x\\ny\"} NaN\ng{a=\"z\"} 2.5\n";
        let mut t = target(
            exporter(Answer::Body("text/plain; version=0.0.4", body.into())).await,
            |_| {},
        );
        let out = t.scrape_once().await;
        assert_eq!(get(&out, "prom.g{a=\"z\",job=\"t\"}"), Some(2.5));
        assert!(get(&out, "prom.g{a=\"x\\\\ny\",job=\"t\"}").is_some_and(f64::is_nan));
        assert_eq!(get(&out, "prom.c_total{job=\"t\"}"), None, "no rate yet");
        assert_eq!(get(&out, "agent.scrape.up{job=\"t\"}"), Some(1.0));
        assert_eq!(get(&out, "agent.scrape.samples{job=\"t\"}"), Some(3.0));
        let out = t.scrape_once().await;
        assert_eq!(get(&out, "prom.c_total{job=\"t\"}"), Some(0.0));
    }

    #[tokio::test]
    async fn over_the_sample_limit_the_scrape_fails_whole() {
        let body: String = (0..11).map(|i| format!("m{{i=\"{i}\"}} 1\n")).collect();
        let url = exporter(Answer::Body("text/plain", body)).await;
        let mut t = target(url.clone(), |c| c.sample_limit = 10);
        let out = t.scrape_once().await;
        assert_eq!(prom_series(&out), 0, "{out:?}");
        assert_eq!(get(&out, "agent.scrape.up{job=\"t\"}"), Some(0.0));
        assert_eq!(
            get(
                &out,
                "agent.scrape.failures{job=\"t\",reason=\"sample_limit\"}"
            ),
            Some(1.0)
        );
        t.scrape_once().await;
        assert_eq!(t.failures()["sample_limit"], 2);
        let mut roomy = target(url, |c| c.sample_limit = 11);
        assert_eq!(prom_series(&roomy.scrape_once().await), 11);
    }

    #[tokio::test]
    async fn malformed_exposition_is_a_counted_failure() {
        for (ct, body, reason) in [
            (
                "text/plain",
                "ok 1\nbroken{a=\"1\" 2\n".to_string(),
                "parse",
            ),
            (
                "application/openmetrics-text; version=1.0.0",
                "a 1\n".to_string(),
                "parse",
            ),
            (
                "text/plain",
                String::from_utf8_lossy(&[0x66, 0x20, 0x31, 0x0a]).into_owned()
                    + "\u{0}\u{1}garbage",
                "parse",
            ),
        ] {
            let mut t = target(exporter(Answer::Body(ct, body)).await, |_| {});
            let out = t.scrape_once().await;
            assert_eq!(prom_series(&out), 0);
            assert_eq!(t.failures()[reason], 1, "{out:?}");
        }
        let mut t = target(
            exporter(Answer::Bytes(b"m 1\nbin\xff\xfe 2\n".to_vec())).await,
            |_| {},
        );
        t.scrape_once().await;
        assert_eq!(t.failures()["encoding"], 1);
        let mut t = target(exporter(Answer::Status(500)).await, |_| {});
        t.scrape_once().await;
        assert_eq!(t.failures()["http_status"], 1);
    }

    #[tokio::test]
    async fn a_hanging_target_is_cut_by_the_timeout() {
        let mut t = target(exporter(Answer::Hang).await, |c| {
            c.timeout = Some(Duration::from_millis(300))
        });
        let started = Instant::now();
        let out = t.scrape_once().await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(t.failures()["timeout"], 1);
        assert_eq!(get(&out, "agent.scrape.up{job=\"t\"}"), Some(0.0));
    }

    #[tokio::test]
    async fn a_50_mb_body_is_cut_off_at_the_body_limit() {
        let mut t = target(exporter(Answer::Endless(50 << 20)).await, |c| {
            c.body_limit = 1 << 20;
            c.sample_limit = 1_000_000;
            c.timeout = Some(Duration::from_secs(5));
        });
        let out = t.scrape_once().await;
        assert_eq!(prom_series(&out), 0);
        assert_eq!(
            t.failures().get("body_limit"),
            Some(&1),
            "{:?}",
            t.failures()
        );
    }

    #[tokio::test]
    async fn nobody_listening_is_a_connect_failure() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut t = target(format!("http://127.0.0.1:{port}/metrics"), |_| {});
        t.scrape_once().await;
        assert_eq!(t.failures()["connect"], 1);
    }
}
