//! What a receiver kind does: format nothing more, send one request, report
//! what came back. Retries, timeouts and dead letters are the worker's.

use super::config::Auth;
use super::retry::{Answer, MAX_EXCERPT};
use std::future::Future;
use std::pin::Pin;

/// One attempt of one delivery.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    pub delivery_id: i64,
    /// Stable across attempts: lets a receiver drop a duplicate.
    pub idempotency_key: &'a str,
    /// The frozen body.
    pub payload: &'a str,
    /// 1 for the first attempt.
    pub number: u32,
}

pub type SendFuture<'a> = Pin<Box<dyn Future<Output = Result<Answer, String>> + Send + 'a>>;

/// A receiver kind. `Err` is a failure to get an answer (refused, reset,
/// TLS…), with the reason; the worker bounds the call with its timeout.
pub trait Sender: Send + Sync + std::fmt::Debug {
    fn send<'a>(&'a self, attempt: Attempt<'a>) -> SendFuture<'a>;
}

/// POSTs the payload as JSON to a URL: both receiver kinds of
/// notifications are this with a different URL and body.
#[derive(Debug, Clone)]
pub struct HttpPost {
    pub client: reqwest::Client,
    pub url: reqwest::Url,
    pub auth: Option<Auth>,
}

impl HttpPost {
    pub fn new(client: reqwest::Client, url: reqwest::Url, auth: Option<Auth>) -> Self {
        Self { client, url, auth }
    }
}

impl Sender for HttpPost {
    fn send<'a>(&'a self, attempt: Attempt<'a>) -> SendFuture<'a> {
        Box::pin(async move {
            let mut req = self
                .client
                .post(self.url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header("Idempotency-Key", attempt.idempotency_key)
                .header("X-Metrolog-Delivery", attempt.delivery_id.to_string())
                .header("X-Metrolog-Attempt", attempt.number.to_string())
                .body(attempt.payload.to_string());
            req = match &self.auth {
                Some(Auth::Bearer(t)) => req.bearer_auth(t.expose()),
                Some(Auth::Basic { username, password }) => {
                    req.basic_auth(username, Some(password.expose()))
                }
                None => req,
            };
            let resp = req.send().await.map_err(describe)?;
            Ok(answer_of(resp).await)
        })
    }
}

/// What came back: the status, `Retry-After` and an excerpt of the body.
pub async fn answer_of(mut resp: reqwest::Response) -> Answer {
    {
        {
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            // Only the excerpt is read: a receiver answering megabytes costs
            // no more than 1 KiB and the timeout.
            let mut body = Vec::new();
            while body.len() < MAX_EXCERPT {
                match resp.chunk().await {
                    Ok(Some(c)) => body.extend_from_slice(&c),
                    Ok(None) | Err(_) => break,
                }
            }
            Answer {
                status,
                retry_after,
                excerpt: excerpt(&body),
            }
        }
    }
}

/// At most [`MAX_EXCERPT`] bytes, cut on a character boundary.
pub fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX_EXCERPT)]).into_owned();
    let mut end = text.len().min(MAX_EXCERPT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// Why a request got no answer, with its causes.
pub fn describe(e: reqwest::Error) -> String {
    use std::error::Error;
    let mut msg = if e.is_connect() {
        "cannot connect".to_string()
    } else if e.is_timeout() {
        "timed out".to_string()
    } else {
        "request failed".to_string()
    };
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    #[test]
    fn excerpts_are_capped_on_a_char_boundary() {
        let body = "é".repeat(2000);
        let e = super::excerpt(body.as_bytes());
        assert!(e.len() <= 1024);
        assert!(e.chars().all(|c| c == 'é'));
    }
}
