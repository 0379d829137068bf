//! The EC2 instance metadata service: an IMDSv2 session token first (`PUT
//! /latest/api/token` with a TTL header), IMDSv1 (no token) when the PUT is
//! refused or unanswered; every request with a short timeout and a size cap.

use std::time::Duration;

/// Lifetime asked for the session token (the agent reads metadata once, at start).
pub const TOKEN_TTL_SECONDS: u32 = 300;
/// Header carrying the TTL on the token PUT.
pub const TTL_HEADER: &str = "X-aws-ec2-metadata-token-ttl-seconds";
/// Header carrying the token on every GET.
pub const TOKEN_HEADER: &str = "X-aws-ec2-metadata-token";
/// Largest metadata value read (a fact is a short string).
pub const MAX_FACT_BYTES: usize = 4096;
/// Largest user-data read (EC2 allows 16 KiB).
pub const MAX_USER_DATA_BYTES: usize = 64 << 10;

/// Why a metadata request failed. `reason()` is the `reason` label counted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImdsError {
    #[error("{0}: no answer within {1:?}")]
    Timeout(String, Duration),
    #[error("{0}: request failed: {1}")]
    Connect(String, String),
    #[error("{0}: HTTP status {1}")]
    Status(String, u16),
    #[error("{0}: answer larger than {1} bytes")]
    TooLarge(String, usize),
    #[error("{0}: answer is not a plain value ({1})")]
    Garbage(String, &'static str),
}

impl ImdsError {
    pub fn reason(&self) -> &'static str {
        match self {
            ImdsError::Timeout(..) => "timeout",
            ImdsError::Connect(..) => "connect",
            ImdsError::Status(..) => "http_status",
            ImdsError::TooLarge(..) => "too_large",
            ImdsError::Garbage(..) => "garbage",
        }
    }
}

/// A metadata client bound to one base URL.
pub struct Imds {
    base: String,
    client: reqwest::Client,
    timeout: Duration,
    token: Option<String>,
}

impl Imds {
    /// `base` such as `http://169.254.169.254` (only when EC2 was detected)
    /// or the configured `metadata_url`.
    pub fn new(base: &str, timeout: Duration) -> Result<Self, ImdsError> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ImdsError::Connect("client".into(), e.to_string()))?;
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            client,
            timeout,
            token: None,
        })
    }

    /// Whether an IMDSv2 token is in use.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Asks for a session token; on any failure the client goes on without
    /// one (IMDSv1), and the failure is returned for the log.
    pub async fn start_session(&mut self) -> Result<(), ImdsError> {
        let path = "latest/api/token";
        let req = self
            .client
            .put(format!("{}/{path}", self.base))
            .header(TTL_HEADER, TOKEN_TTL_SECONDS.to_string());
        let body = self.send(path, req, MAX_FACT_BYTES).await?;
        match body {
            Some(token) => {
                self.token = Some(token);
                Ok(())
            }
            None => Err(ImdsError::Status(path.into(), 404)),
        }
    }

    /// GET of `path` under the base: `Ok(None)` for 404 (the key does not
    /// exist), the text otherwise.
    pub async fn get(&self, path: &str, limit: usize) -> Result<Option<String>, ImdsError> {
        let mut req = self.client.get(format!("{}/{path}", self.base));
        if let Some(t) = &self.token {
            req = req.header(TOKEN_HEADER, t);
        }
        self.send(path, req, limit).await
    }

    async fn send(
        &self,
        path: &str,
        req: reqwest::RequestBuilder,
        limit: usize,
    ) -> Result<Option<String>, ImdsError> {
        let fetch = async {
            let mut resp = req
                .send()
                .await
                .map_err(|e| ImdsError::Connect(path.into(), e.to_string()))?;
            if resp.status() == reqwest::StatusCode::NOT_FOUND {
                return Ok(None);
            }
            if !resp.status().is_success() {
                return Err(ImdsError::Status(path.into(), resp.status().as_u16()));
            }
            let mut body = Vec::new();
            while let Some(chunk) = resp
                .chunk()
                .await
                .map_err(|e| ImdsError::Connect(path.into(), e.to_string()))?
            {
                if body.len() + chunk.len() > limit {
                    return Err(ImdsError::TooLarge(path.into(), limit));
                }
                body.extend_from_slice(&chunk);
            }
            String::from_utf8(body)
                .map(Some)
                .map_err(|_| ImdsError::Garbage(path.into(), "not UTF-8"))
        };
        tokio::time::timeout(self.timeout, fetch)
            .await
            .map_err(|_| ImdsError::Timeout(path.into(), self.timeout))?
    }
}

/// A fact value as a label takes it: one line, printable, at most 200 bytes.
pub fn fact_value(path: &str, text: &str) -> Result<String, ImdsError> {
    let v = text.trim();
    if v.is_empty() {
        return Err(ImdsError::Garbage(path.into(), "empty"));
    }
    if v.len() > 200 {
        return Err(ImdsError::Garbage(path.into(), "longer than 200 bytes"));
    }
    if v.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(ImdsError::Garbage(
            path.into(),
            "holds spaces or control characters",
        ));
    }
    Ok(v.to_string())
}
