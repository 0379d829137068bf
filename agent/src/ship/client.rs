//! HTTP calls to the server's agent API, with failover across the configured
//! servers. The client stays on the server that last answered and moves to the
//! next one (in configured order, wrapping) when it does not.

use crate::config::Secret;
use metrolog_protocol::{
    paths, AgentSettings, Batch, BatchAck, EnrollRequest, EnrollResponse, ErrorBody, HeartbeatAck,
    LeaveRequest,
};
use reqwest::{header, Method, StatusCode, Url};
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// zstd level for batch bodies: fast, and batches are small.
const ZSTD_LEVEL: i32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    /// No server answered usefully (network error, timeout, 5xx, 429): retry later.
    #[error("{0}")]
    Unreachable(String),
    /// 401: the server does not know this credential (any more).
    #[error("401 Unauthorized: {0}")]
    Unauthorized(String),
    /// Another 4xx: sending the same request again would fail the same way.
    #[error("the server refused the request ({status}): {message}")]
    Refused { status: u16, message: String },
    #[error("cannot encode the request: {0}")]
    Encode(String),
    /// 503 or 429 with `Retry-After`: the server is up but asks to wait.
    #[error("the server is busy ({message}); retry after {}s", retry_after.as_secs())]
    Busy {
        retry_after: Duration,
        message: String,
    },
}

impl ShipError {
    /// Whether retrying the same request later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, ShipError::Unreachable(_) | ShipError::Busy { .. })
    }
}

/// How an answer's status is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// Try the next server, then back off.
    Failover,
    Unauthorized,
    Refused,
}

pub fn classify(status: StatusCode) -> Verdict {
    match status.as_u16() {
        200..=299 => Verdict::Ok,
        // Only asked for with If-None-Match: what the agent has is current.
        304 => Verdict::Ok,
        401 => Verdict::Unauthorized,
        // Timeouts, rate limiting and server errors are the server's trouble.
        408 | 429 => Verdict::Failover,
        400..=499 => Verdict::Refused,
        _ => Verdict::Failover,
    }
}

/// First wait before asking the first server again after failing over.
pub const PROBE_BASE: Duration = Duration::from_secs(5);
/// Longest wait between two such probes.
pub const PROBE_MAX: Duration = Duration::from_secs(60);
/// Longest `Retry-After` honoured; a longer one is taken as this.
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(300);

#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    servers: Vec<Url>,
    current: usize,
    /// The server the last answer came from, to log changes once.
    announced: Option<usize>,
    /// While shipping to another than the first server: when to try the
    /// first again, and the wait after that (doubling up to [`PROBE_MAX`]).
    probe: Option<(std::time::Instant, Duration)>,
    /// Where every settings document the server sends (at enrollment, from
    /// `GET /api/v1/agent/config`) is published, for the sources that
    /// follow them (Munin, scrape targets).
    settings_sink: Option<tokio::sync::watch::Sender<Option<AgentSettings>>>,
}

/// The `Retry-After` of a 503 or 429 (seconds; an HTTP date is taken as
/// the longest wait), capped at [`RETRY_AFTER_MAX`].
pub fn retry_after(status: StatusCode, headers: &header::HeaderMap) -> Option<Duration> {
    if status != StatusCode::SERVICE_UNAVAILABLE && status != StatusCode::TOO_MANY_REQUESTS {
        return None;
    }
    let v = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    let d = match v.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => RETRY_AFTER_MAX,
    };
    Some(d.min(RETRY_AFTER_MAX))
}

/// What `GET /api/v1/agent/config` said.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigAnswer {
    /// `304`: the version the agent named is still the one.
    Unchanged,
    /// The settings, with their version (the `ETag`; `None` from a server
    /// older than versioned settings).
    Changed {
        settings: Box<AgentSettings>,
        version: Option<String>,
    },
}

enum Body<'a> {
    None,
    /// No body; `If-None-Match` with this version, when known.
    IfNoneMatch(Option<&'a str>),
    Json(Vec<u8>),
    JsonZstd(Vec<u8>),
}

impl Client {
    pub fn new(servers: &[String]) -> Result<Self, ShipError> {
        Self::with_roots(servers, Vec::new())
    }

    /// A client that also trusts `roots` (the agent's `ca_file`) for
    /// `https://` servers, beside the system's certificates.
    pub fn with_roots(
        servers: &[String],
        roots: Vec<reqwest::Certificate>,
    ) -> Result<Self, ShipError> {
        let servers = servers
            .iter()
            .map(|s| {
                Url::parse(s.trim_end_matches('/'))
                    .map_err(|e| ShipError::Encode(format!("server URL {s:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if servers.is_empty() {
            return Err(ShipError::Encode("no server configured".into()));
        }
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("metrolog-agent/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT);
        for cert in roots {
            builder = builder.add_root_certificate(cert);
        }
        let http = builder
            .build()
            .map_err(|e| ShipError::Encode(format!("HTTP client: {e}")))?;
        Ok(Self {
            http,
            servers,
            current: 0,
            announced: None,
            probe: None,
            settings_sink: None,
        })
    }

    /// Publishes the settings the server sends to `sink` (when they differ
    /// from those published last).
    pub fn with_settings_sink(
        mut self,
        sink: tokio::sync::watch::Sender<Option<AgentSettings>>,
    ) -> Self {
        self.settings_sink = Some(sink);
        self
    }

    fn publish(&self, settings: &AgentSettings) {
        if let Some(sink) = &self.settings_sink {
            sink.send_if_modified(|cur| {
                if cur.as_ref() == Some(settings) {
                    return false;
                }
                *cur = Some(settings.clone());
                true
            });
        }
    }

    /// `POST /api/v1/agent/enroll` with the enrollment token.
    pub async fn enroll(
        &mut self,
        token: &Secret,
        req: &EnrollRequest,
    ) -> Result<EnrollResponse, ShipError> {
        let body = serde_json::to_vec(req).map_err(|e| ShipError::Encode(e.to_string()))?;
        let resp = self
            .post(paths::ENROLL, token.expose(), Body::Json(body))
            .await?;
        let resp: EnrollResponse = json(resp).await?;
        self.publish(&resp.settings);
        Ok(resp)
    }

    /// `POST /api/v1/agent/batch`, zstd-compressed JSON. `Ok` means committed.
    pub async fn send_batch(&mut self, token: &str, batch: &Batch) -> Result<BatchAck, ShipError> {
        let body = encode_batch(batch)?;
        let resp = self.post(paths::BATCH, token, Body::JsonZstd(body)).await?;
        json(resp).await
    }

    /// `POST /api/v1/agent/heartbeat` (no body). Returns the version of the
    /// settings the server pushes to this agent's group now (`None` from a
    /// server older than versioned settings: `204`, no body).
    pub async fn heartbeat(&mut self, token: &str) -> Result<Option<String>, ShipError> {
        let resp = self.post(paths::HEARTBEAT, token, Body::None).await?;
        // The heartbeat did its work once answered: an unreadable body
        // only costs the version, which the next refresh learns anyway.
        let text = resp.text().await.unwrap_or_default();
        Ok(serde_json::from_str::<HeartbeatAck>(&text)
            .ok()
            .and_then(|a| a.settings_version))
    }

    /// `POST /api/v1/agent/leave`.
    pub async fn leave(&mut self, token: &str, reason: &str) -> Result<(), ShipError> {
        let body = serde_json::to_vec(&LeaveRequest {
            reason: Some(reason.to_string()),
        })
        .map_err(|e| ShipError::Encode(e.to_string()))?;
        self.post(paths::LEAVE, token, Body::Json(body))
            .await
            .map(drop)
    }

    /// `GET /api/v1/agent/config`: the settings the server pushes to this
    /// agent's group now, unless they are still version `known`
    /// (`If-None-Match`, answered `304`).
    pub async fn config(
        &mut self,
        token: &str,
        known: Option<&str>,
    ) -> Result<ConfigAnswer, ShipError> {
        let resp = self
            .request(Method::GET, paths::CONFIG, token, Body::IfNoneMatch(known))
            .await?;
        if resp.status() == StatusCode::NOT_MODIFIED {
            return Ok(ConfigAnswer::Unchanged);
        }
        let version = resp
            .headers()
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.trim()
                    .trim_start_matches("W/")
                    .trim_matches('"')
                    .to_string()
            })
            .filter(|v| !v.is_empty());
        let settings: AgentSettings = json(resp).await?;
        self.publish(&settings);
        Ok(ConfigAnswer::Changed {
            settings: Box::new(settings),
            version,
        })
    }

    async fn post(
        &mut self,
        path: &str,
        token: &str,
        body: Body<'_>,
    ) -> Result<reqwest::Response, ShipError> {
        self.request(Method::POST, path, token, body).await
    }

    /// Sends to the current server, failing over to the others in turn.
    async fn request(
        &mut self,
        method: Method,
        path: &str,
        token: &str,
        body: Body<'_>,
    ) -> Result<reqwest::Response, ShipError> {
        let n = self.servers.len();
        let mut failures = Vec::new();
        // Back to the first server (the preferred one) once it answers:
        // tried first again from time to time while another one serves.
        let mut start = self.current;
        if let Some((at, _)) = self.probe {
            if self.current != 0 && std::time::Instant::now() >= at {
                start = 0;
            }
        }
        for i in 0..n {
            let idx = (start + i) % n;
            let url = endpoint(&self.servers[idx], path);
            let mut req = self
                .http
                .request(method.clone(), url.clone())
                .bearer_auth(token);
            req = match &body {
                Body::None | Body::IfNoneMatch(None) => req,
                Body::IfNoneMatch(Some(v)) => req.header(header::IF_NONE_MATCH, format!("\"{v}\"")),
                Body::Json(b) => req
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(b.clone()),
                Body::JsonZstd(b) => req
                    .header(header::CONTENT_TYPE, "application/json")
                    .header(header::CONTENT_ENCODING, "zstd")
                    .body(b.clone()),
            };
            let outcome = match req.send().await {
                Err(e) => Err(describe(&e)),
                Ok(resp) if retry_after(resp.status(), resp.headers()).is_some() => {
                    let wait = retry_after(resp.status(), resp.headers()).unwrap_or(PROBE_BASE);
                    let status = resp.status();
                    return Err(ShipError::Busy {
                        retry_after: wait,
                        message: format!("{status}: {}", error_message(resp).await),
                    });
                }
                Ok(resp) => match classify(resp.status()) {
                    Verdict::Failover => {
                        Err(format!("{}: {}", resp.status(), error_message(resp).await))
                    }
                    _ => Ok(resp),
                },
            };
            match outcome {
                Ok(resp) => {
                    if idx == 0 {
                        self.probe = None;
                    } else if start == 0 || self.probe.is_none() {
                        // On another server: ask the first again later, less
                        // often each time it still does not answer.
                        let wait = self
                            .probe
                            .map_or(PROBE_BASE, |(_, w)| (w * 2).min(PROBE_MAX));
                        self.probe = Some((std::time::Instant::now() + wait, wait));
                    }
                    self.current = idx;
                    if self.announced != Some(idx) {
                        tracing::info!(
                            "shipping to {}",
                            self.servers[idx].as_str().trim_end_matches('/')
                        );
                        self.announced = Some(idx);
                    }
                    return match classify(resp.status()) {
                        Verdict::Ok => Ok(resp),
                        Verdict::Unauthorized => {
                            Err(ShipError::Unauthorized(error_message(resp).await))
                        }
                        _ => Err(ShipError::Refused {
                            status: resp.status().as_u16(),
                            message: error_message(resp).await,
                        }),
                    };
                }
                Err(why) => {
                    tracing::debug!("{url}: {why}");
                    failures.push(format!(
                        "{}: {why}",
                        self.servers[idx].as_str().trim_end_matches('/')
                    ));
                }
            }
        }
        // Next time, start with the server after the one tried first.
        self.current = (self.current + 1) % n;
        self.announced = None;
        Err(ShipError::Unreachable(failures.join("; ")))
    }
}

fn endpoint(base: &Url, path: &str) -> String {
    format!("{}{path}", base.as_str().trim_end_matches('/'))
}

/// JSON of the batch, zstd-compressed. Batches are a few kilobytes, so this runs
/// inline: it takes well under a millisecond.
pub fn encode_batch(batch: &Batch) -> Result<Vec<u8>, ShipError> {
    let json = serde_json::to_vec(batch).map_err(|e| ShipError::Encode(e.to_string()))?;
    zstd::bulk::compress(&json, ZSTD_LEVEL).map_err(|e| ShipError::Encode(e.to_string()))
}

async fn json<T: serde::de::DeserializeOwned>(resp: reqwest::Response) -> Result<T, ShipError> {
    let url = resp.url().clone();
    resp.json()
        .await
        .map_err(|e| ShipError::Unreachable(format!("{url}: unreadable answer: {e}")))
}

/// The message of a `{"error": {...}}` body, else the start of the body.
async fn error_message(resp: reqwest::Response) -> String {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    parse_error_body(status, &text)
}

pub fn parse_error_body(status: StatusCode, text: &str) -> String {
    match serde_json::from_str::<ErrorBody>(text) {
        Ok(b) => format!("{} ({})", b.error.message, b.error.code),
        Err(_) if text.trim().is_empty() => status.to_string(),
        Err(_) => text.trim().chars().take(200).collect(),
    }
}

fn describe(e: &reqwest::Error) -> String {
    // reqwest's own message is generic ("error sending request"); the cause at the
    // bottom of the chain says what happened ("Connection refused").
    let mut root: &dyn std::error::Error = e;
    while let Some(s) = root.source() {
        root = s;
    }
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    format!("{what}: {root}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrolog_protocol::{BatchId, Bucket, Labels, SeriesBuckets, SeriesKey};

    #[test]
    fn status_classes() {
        assert_eq!(classify(StatusCode::OK), Verdict::Ok);
        assert_eq!(classify(StatusCode::ACCEPTED), Verdict::Ok);
        assert_eq!(classify(StatusCode::NOT_MODIFIED), Verdict::Ok);
        assert_eq!(classify(StatusCode::UNAUTHORIZED), Verdict::Unauthorized);
        assert_eq!(classify(StatusCode::BAD_REQUEST), Verdict::Refused);
        assert_eq!(classify(StatusCode::PAYLOAD_TOO_LARGE), Verdict::Refused);
        assert_eq!(classify(StatusCode::FORBIDDEN), Verdict::Refused);
        assert_eq!(classify(StatusCode::TOO_MANY_REQUESTS), Verdict::Failover);
        assert_eq!(classify(StatusCode::SERVICE_UNAVAILABLE), Verdict::Failover);
        assert_eq!(classify(StatusCode::BAD_GATEWAY), Verdict::Failover);
    }

    #[test]
    fn retry_after_is_read_from_503_and_429_only_and_capped() {
        let mut h = header::HeaderMap::new();
        h.insert(header::RETRY_AFTER, "7".parse().unwrap());
        let s = Duration::from_secs;
        assert_eq!(retry_after(StatusCode::SERVICE_UNAVAILABLE, &h), Some(s(7)));
        assert_eq!(retry_after(StatusCode::TOO_MANY_REQUESTS, &h), Some(s(7)));
        assert_eq!(retry_after(StatusCode::BAD_GATEWAY, &h), None);
        h.insert(header::RETRY_AFTER, "86400".parse().unwrap());
        assert_eq!(
            retry_after(StatusCode::SERVICE_UNAVAILABLE, &h),
            Some(RETRY_AFTER_MAX)
        );
        h.insert(
            header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(
            retry_after(StatusCode::SERVICE_UNAVAILABLE, &h),
            Some(RETRY_AFTER_MAX)
        );
        assert_eq!(
            retry_after(StatusCode::SERVICE_UNAVAILABLE, &header::HeaderMap::new()),
            None,
            "without Retry-After a 503 means down: fail over"
        );
    }

    #[test]
    fn error_bodies_give_their_message() {
        let body = r#"{"error":{"code":"unauthorized","message":"unknown enrollment token"}}"#;
        assert_eq!(
            parse_error_body(StatusCode::UNAUTHORIZED, body),
            "unknown enrollment token (unauthorized)"
        );
        assert_eq!(
            parse_error_body(StatusCode::BAD_GATEWAY, ""),
            "502 Bad Gateway"
        );
        assert_eq!(
            parse_error_body(StatusCode::BAD_GATEWAY, "<html>"),
            "<html>"
        );
    }

    #[test]
    fn batches_are_zstd_json() {
        let batch = Batch {
            id: BatchId {
                stream: "ab".into(),
                seq: 1,
            },
            sent_at: 20,
            logs: Vec::new(),
            checks: Vec::new(),
            metrics: vec![SeriesBuckets {
                key: SeriesKey::new("load.1m", Labels::new()).unwrap(),
                step: 10,
                buckets: vec![Bucket {
                    ts: 20,
                    avg: 1.0,
                    min: 1.0,
                    max: 1.0,
                    last: 1.0,
                    count: 1,
                }],
            }],
            series_meta: Vec::new(),
        };
        let body = encode_batch(&batch).unwrap();
        let json = zstd::stream::decode_all(&body[..]).unwrap();
        assert_eq!(serde_json::from_slice::<Batch>(&json).unwrap(), batch);
    }

    #[tokio::test]
    async fn fails_over_in_order_and_reports_every_server() {
        // Two ports nobody listens on: both fail fast with "connection refused".
        let dead = |_| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", l.local_addr().unwrap())
        };
        let servers: Vec<String> = (0..2).map(dead).collect();
        let mut c = Client::new(&servers).unwrap();
        let err = c.heartbeat("t").await.unwrap_err();
        assert!(err.is_transient());
        let text = err.to_string();
        assert!(
            text.contains(&servers[0]) && text.contains(&servers[1]),
            "{text}"
        );
        assert!(text.find(&servers[0]) < text.find(&servers[1]));
        assert_eq!(c.current, 1, "next round starts with the next server");
    }
}
