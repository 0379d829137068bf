//! The two sender kinds of scaling hooks, behind the outbox's
//! [`Sender`](crate::notify::sender::Sender) trait: they format and send one
//! attempt; the delivery worker owns order, retries and dead letters.
//!
//! - [`SignedWebhook`]: a POST signed per Standard Webhooks
//!   (<https://www.standardwebhooks.com>): `webhook-id` (the event id, the
//!   same on every attempt), `webhook-timestamp` (this attempt's time) and
//!   `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.
//! - [`CommandHook`]: a program run with no shell, the event JSON on stdin and
//!   `METROLOG_EVENT_*` variables; exit 0 is delivered, anything else (or a
//!   program that cannot be run, or a timeout, which kills its process group)
//!   is a failed attempt with the reason and an excerpt of its output.

use super::hook::SigningKey;
use crate::notify::retry::{Answer, MAX_EXCERPT};
use crate::notify::sender::{answer_of, describe, excerpt, Attempt, SendFuture, Sender};
use base64::Engine;
use hmac::{Hmac, Mac};
use rustix::process::{kill_process_group, Pid, Signal};
use sha2::Sha256;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// The event id of a hook delivery: its idempotency key is
/// `{event id}/{hook}` (unique per receiver in the outbox), receivers see
/// the event id alone.
pub fn event_id(idempotency_key: &str) -> &str {
    idempotency_key
        .split_once('/')
        .map_or(idempotency_key, |(id, _)| id)
}

/// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.
pub fn signature(key: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

#[derive(Debug, Clone)]
pub struct SignedWebhook {
    pub client: reqwest::Client,
    pub url: reqwest::Url,
    pub key: SigningKey,
}

impl Sender for SignedWebhook {
    fn send<'a>(&'a self, attempt: Attempt<'a>) -> SendFuture<'a> {
        Box::pin(async move {
            let id = event_id(attempt.idempotency_key);
            // Signed per attempt: receivers refuse old timestamps (replays).
            let ts = chrono::Utc::now().timestamp();
            let resp = self
                .client
                .post(self.url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header("webhook-id", id)
                .header("webhook-timestamp", ts.to_string())
                .header(
                    "webhook-signature",
                    signature(&self.key.0, id, ts, attempt.payload),
                )
                .header("Idempotency-Key", id)
                .header("X-Metrolog-Delivery", attempt.delivery_id.to_string())
                .header("X-Metrolog-Attempt", attempt.number.to_string())
                .body(attempt.payload.to_string())
                .send()
                .await
                .map_err(describe)?;
            Ok(answer_of(resp).await)
        })
    }
}

#[derive(Debug, Clone)]
pub struct CommandHook {
    pub argv: Vec<String>,
    pub timeout: Duration,
}

/// The process group of a command, killed with SIGKILL unless disarmed
/// (the attempt is abandoned half-way: timeout, shutdown).
struct Group(Option<Pid>);

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            // ESRCH: nothing left in the group, which is what we want.
            let _ = kill_process_group(pid, Signal::KILL);
        }
    }
}

async fn read_capped<R: AsyncRead + Unpin>(mut r: R, cap: usize) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => return buf,
            // Read on past the cap so the program never blocks on a full pipe.
            Ok(n) if buf.len() < cap => buf.extend_from_slice(&chunk[..n.min(cap - buf.len())]),
            Ok(_) => {}
        }
    }
}

/// `METROLOG_EVENT_*` from the event body: every scalar field, upper-cased,
/// and the member's hostname and instance id for membership events.
pub fn event_env(payload: &str) -> Vec<(String, String)> {
    let Ok(serde_json::Value::Object(body)) = serde_json::from_str::<serde_json::Value>(payload)
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let scalar = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    for (k, v) in &body {
        if let Some(s) = scalar(v) {
            out.push((format!("METROLOG_EVENT_{}", k.to_ascii_uppercase()), s));
        }
    }
    if let Some(serde_json::Value::Object(m)) = body.get("member") {
        for k in ["hostname", "instance_id", "state"] {
            if let Some(s) = m.get(k).and_then(scalar) {
                out.push((
                    format!("METROLOG_EVENT_MEMBER_{}", k.to_ascii_uppercase()),
                    s,
                ));
            }
        }
    }
    out
}

impl CommandHook {
    async fn run(&self, attempt: Attempt<'_>) -> Result<Answer, String> {
        let Some((program, args)) = self.argv.split_first() else {
            return Err("no program to run".into());
        };
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .envs(event_env(attempt.payload))
            .env("METROLOG_DELIVERY_ID", attempt.delivery_id.to_string())
            .env("METROLOG_ATTEMPT", attempt.number.to_string());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        let mut group = Group(child.id().and_then(|p| Pid::from_raw(p as i32)));
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err("the command's pipes could not be opened".into());
        };
        let payload = attempt.payload.as_bytes().to_vec();
        let work = async {
            // A program that does not read its stdin is not an error.
            let feed = async move {
                let _ = stdin.write_all(&payload).await;
                drop(stdin);
            };
            let (_, out, err, status) = tokio::join!(
                feed,
                read_capped(stdout, MAX_EXCERPT),
                read_capped(stderr, MAX_EXCERPT),
                child.wait()
            );
            (out, err, status)
        };
        let (out, err, status) = match tokio::time::timeout(self.timeout, work).await {
            Ok(r) => r,
            Err(_) => {
                drop(group);
                return Err(format!(
                    "timed out after {}; its process group was killed",
                    humantime::format_duration(self.timeout)
                ));
            }
        };
        // Whatever it left running in its group goes with it.
        drop(std::mem::replace(&mut group, Group(None)));
        let mut text = out;
        if !err.is_empty() {
            if !text.is_empty() {
                text.push(b'\n');
            }
            text.extend_from_slice(&err);
        }
        let output = excerpt(&text);
        let status = status.map_err(|e| format!("cannot wait for {program}: {e}"))?;
        match status.code() {
            Some(0) => Ok(Answer {
                // Recorded as a 2xx: delivered.
                status: 200,
                retry_after: None,
                excerpt: output,
            }),
            Some(code) => Err(format!("{program} exited with status {code}: {output}")),
            None => Err(format!(
                "{program} was killed by a signal ({status}): {output}"
            )),
        }
    }
}

impl Sender for CommandHook {
    fn send<'a>(&'a self, attempt: Attempt<'a>) -> SendFuture<'a> {
        Box::pin(self.run(attempt))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_standard_webhooks_test_vector() {
        // From the Standard Webhooks reference libraries' tests.
        let key = SigningKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = signature(
            &key.0,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert_eq!(event_id("evt_abc/asg"), "evt_abc");
    }

    fn attempt(payload: &str) -> Attempt<'_> {
        Attempt {
            delivery_id: 7,
            idempotency_key: "evt_1/h",
            payload,
            number: 1,
        }
    }

    #[tokio::test]
    async fn a_command_gets_the_event_on_stdin_and_in_its_environment() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("seen");
        let hook = CommandHook {
            argv: vec![
                "/bin/sh".into(),
                "-c".into(),
                format!(
                    "cat > {0}; echo \"$METROLOG_EVENT_TYPE $METROLOG_EVENT_DESIRED_SIZE $METROLOG_ATTEMPT\" >> {0}; echo done",
                    out.display()
                ),
            ],
            timeout: Duration::from_secs(5),
        };
        let body = r#"{"id":"evt_1","type":"scale_out","desired_size":5}"#;
        let a = hook.send(attempt(body)).await.unwrap();
        assert_eq!(a.status, 200);
        assert_eq!(a.excerpt.trim(), "done");
        let seen = std::fs::read_to_string(&out).unwrap();
        assert_eq!(seen, format!("{body}scale_out 5 1\n"));
    }

    #[tokio::test]
    async fn failures_say_why_and_keep_the_output() {
        let fail = CommandHook {
            argv: vec![
                "/bin/sh".into(),
                "-c".into(),
                "echo nope >&2; exit 3".into(),
            ],
            timeout: Duration::from_secs(5),
        };
        let e = fail.send(attempt("{}")).await.unwrap_err();
        assert!(e.contains("exited with status 3: nope"), "{e}");
        let missing = CommandHook {
            argv: vec!["/nonexistent/scale.sh".into()],
            timeout: Duration::from_secs(5),
        };
        let e = missing.send(attempt("{}")).await.unwrap_err();
        assert!(e.starts_with("cannot run /nonexistent/scale.sh"), "{e}");
        let slow = CommandHook {
            argv: vec!["/bin/sh".into(), "-c".into(), "sleep 30 & sleep 30".into()],
            timeout: Duration::from_millis(300),
        };
        let started = std::time::Instant::now();
        let e = slow.send(attempt("{}")).await.unwrap_err();
        assert!(e.contains("timed out"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
