//! A webhook receiver played by the test: the outside party (an
//! Alertmanager receiver, an autoscaler) that Metrolog notifies. It answers
//! each request with the next status of a script (then 200) and hands every
//! request it got to the test.

use anyhow::{Context, Result};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The status it was answered with.
    pub status: u16,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Verifies the request as a Standard Webhooks receiver does: the
    /// HMAC-SHA256 of `{webhook-id}.{webhook-timestamp}.{body}` keyed by the
    /// secret (`whsec_` + base64 of the key), among the `v1,` signatures of
    /// `webhook-signature`, with a timestamp within 5 minutes.
    pub fn verify_signature(&self, secret: &str) -> bool {
        use base64::Engine;
        use hmac::Mac;
        let b64 = base64::engine::general_purpose::STANDARD;
        let key = match secret.strip_prefix("whsec_") {
            Some(k) => match b64.decode(k) {
                Ok(k) => k,
                Err(_) => return false,
            },
            None => secret.as_bytes().to_vec(),
        };
        let (Some(id), Some(ts), Some(sigs)) = (
            self.header("webhook-id"),
            self.header("webhook-timestamp"),
            self.header("webhook-signature"),
        ) else {
            return false;
        };
        let Ok(t) = ts.parse::<i64>() else {
            return false;
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        if (now - t).abs() > 300 {
            return false;
        }
        let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key) else {
            return false;
        };
        mac.update(format!("{id}.{ts}.").as_bytes());
        mac.update(&self.body);
        let want = b64.encode(mac.finalize().into_bytes());
        sigs.split(' ')
            .any(|s| s.strip_prefix("v1,") == Some(want.as_str()))
    }
}

pub struct Receiver {
    pub url: String,
    rx: mpsc::Receiver<Received>,
}

impl Receiver {
    /// Listens on a random loopback port; answers the n-th request with
    /// `script[n]`, and 200 once the script is used up.
    pub fn start(script: Vec<u16>) -> Result<Self> {
        Self::start_with_retry_after(script.into_iter().map(|s| (s, None)).collect())
    }

    /// As [`Receiver::start`], each answer with an optional `Retry-After`
    /// (seconds).
    pub fn start_with_retry_after(script: Vec<(u16, Option<u64>)>) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let url = format!("http://{}", listener.local_addr()?);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut script = script.into_iter();
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let (status, retry_after) = script.next().unwrap_or((200, None));
                match read_request(&mut conn) {
                    Ok(mut req) => {
                        req.status = status;
                        let reason = if status < 300 { "OK" } else { "Error" };
                        let extra = retry_after
                            .map(|s| format!("retry-after: {s}\r\n"))
                            .unwrap_or_default();
                        let _ = write!(
                            conn,
                            "HTTP/1.1 {status} {reason}\r\n{extra}content-length: 2\r\nconnection: close\r\n\r\nok"
                        );
                        let _ = conn.flush();
                        if tx.send(req).is_err() {
                            return;
                        }
                    }
                    Err(_) => continue,
                }
            }
        });
        Ok(Self { url, rx })
    }

    /// A request that already arrived, if any.
    pub fn try_next(&self) -> Option<Received> {
        self.rx.try_recv().ok()
    }

    /// The next request, within `timeout`.
    pub fn next(&self, timeout: Duration) -> Result<Received> {
        self.rx
            .recv_timeout(timeout)
            .with_context(|| format!("no request reached the receiver within {timeout:?}"))
    }

    /// Every request that arrives within `window` (for "nothing more came").
    pub fn drain(&self, window: Duration) -> Vec<Received> {
        let deadline = Instant::now() + window;
        let mut out = Vec::new();
        while let Ok(r) = self
            .rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            out.push(r);
        }
        out
    }
}

fn read_request(conn: &mut std::net::TcpStream) -> Result<Received> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
            if k == "content-length" {
                length = v.parse().unwrap_or(0);
            }
            headers.push((k, v));
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(Received {
        method,
        path,
        headers,
        body,
        status: 0,
    })
}
