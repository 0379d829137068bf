//! The agent's whole loop against a fake server speaking just enough HTTP/1.1:
//! enrollment, the first batch as soon as a bucket closes, credential reuse,
//! re-enrollment on 401, and the leave at shutdown.

use metrolog_agent::config::{AgentConfig, Secret};
use metrolog_protocol::{Batch, EnrollRequest};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

#[derive(Debug)]
struct Request {
    path: String,
    auth: String,
    encoding: Option<String>,
    body: Vec<u8>,
}

/// Tokens the fake server accepts for agent calls.
type Accepted = Arc<Mutex<Vec<String>>>;

async fn fake_server() -> (String, mpsc::UnboundedReceiver<Request>, Accepted) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    let accepted: Accepted = Arc::default();
    let acc = accepted.clone();
    tokio::spawn(async move {
        let mut issued = 0;
        loop {
            let (sock, _) = listener.accept().await.unwrap();
            let tx = tx.clone();
            let acc = acc.clone();
            issued += 100;
            let base = issued;
            tokio::spawn(async move {
                let mut conn = BufReader::new(sock);
                let mut n = 0;
                loop {
                    let mut line = String::new();
                    if conn.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                    let (mut len, mut auth, mut encoding) = (0, String::new(), None);
                    loop {
                        let mut h = String::new();
                        conn.read_line(&mut h).await.unwrap();
                        let h = h.trim_end();
                        if h.is_empty() {
                            break;
                        }
                        let (k, v) = h.split_once(':').unwrap();
                        match k.to_ascii_lowercase().as_str() {
                            "content-length" => len = v.trim().parse().unwrap(),
                            "authorization" => auth = v.trim().to_string(),
                            "content-encoding" => encoding = Some(v.trim().to_string()),
                            _ => {}
                        }
                    }
                    let mut body = vec![0; len];
                    conn.read_exact(&mut body).await.unwrap();
                    n += 1;
                    let (status, answer) = if path.ends_with("/enroll") {
                        let token = format!("agent-{}", base + n);
                        acc.lock().unwrap().push(format!("Bearer {token}"));
                        (
                            "200 OK",
                            format!(
                                r#"{{"host_id":7,"agent_token":"{token}","settings":{{"ship_interval_ms":1000}}}}"#
                            ),
                        )
                    } else if !acc.lock().unwrap().contains(&auth) {
                        (
                            "401 Unauthorized",
                            r#"{"error":{"code":"unauthorized","message":"unknown agent token"}}"#
                                .to_string(),
                        )
                    } else if path.ends_with("/batch") {
                        let json = zstd::stream::decode_all(&body[..]).unwrap();
                        let b: Batch = serde_json::from_slice(&json).unwrap();
                        (
                            "200 OK",
                            format!(
                                r#"{{"batch":{},"duplicate":false,"accepted":1,"rejected":0}}"#,
                                serde_json::to_string(&b.id).unwrap()
                            ),
                        )
                    } else {
                        ("200 OK", "{}".to_string())
                    };
                    let _ = tx.send(Request {
                        path,
                        auth,
                        encoding,
                        body,
                    });
                    let resp = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
                        answer.len()
                    );
                    if conn.get_mut().write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, rx, accepted)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Request>, path: &str) -> Request {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let r = rx.recv().await.expect("server gone");
            if r.path.contains(path) {
                return r;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no request to {path}"))
}

/// The URL of a server that is down (connections refused), and the socket
/// that holds its port: bound, never listening, so no other listener can
/// take the port while it is held.
fn dead_server() -> (String, tokio::net::TcpSocket) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let url = format!("http://{}", socket.local_addr().unwrap());
    (url, socket)
}

/// The content of `path` once `done` holds for it, or what it held (or why
/// it could not be read) after `limit`.
async fn file_once(path: &Path, limit: Duration, done: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let read = std::fs::read_to_string(path);
        if read.as_deref().is_ok_and(&done) || tokio::time::Instant::now() >= deadline {
            return read.unwrap_or_else(|e| format!("{} unreadable: {e}", path.display()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn start(
    cfg: AgentConfig,
) -> (
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), metrolog_agent::RunError>>,
) {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(metrolog_agent::run(cfg, async {
        let _ = stopped.await;
    }));
    (stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enroll_ship_leave_then_reuse_and_reenroll() {
    let (url, mut rx, accepted) = fake_server().await;
    let state = tempfile::tempdir().unwrap();
    // The first server is down: the agent fails over to the second. Its
    // port stays bound (never listening) for the whole test: a port freed at
    // once could be taken by any listener of the machine meanwhile, which
    // would answer (or hang) in its place.
    let (dead, _dead_port) = dead_server();
    let mut cfg = AgentConfig::new(vec![dead, url], Some(Secret::new("enroll-me")));
    cfg.hostname = Some("web-1".into());
    cfg.group = Some("web".into());
    cfg.state_dir = Some(state.path().to_path_buf());
    cfg.metrics.ship_interval = Duration::from_secs(1);

    let (stop, task) = start(cfg.clone());
    let enroll = next(&mut rx, "/api/v1/agent/enroll").await;
    assert_eq!(enroll.auth, "Bearer enroll-me");
    let req: EnrollRequest = serde_json::from_slice(&enroll.body).unwrap();
    assert_eq!(req.hostname, "web-1");
    assert_eq!(req.group.as_deref(), Some("web"));
    assert_eq!(req.agent_version, env!("CARGO_PKG_VERSION"));

    // The first batch comes as soon as the first 10 s bucket closes.
    let batch = next(&mut rx, "/api/v1/agent/batch").await;
    assert_eq!(batch.encoding.as_deref(), Some("zstd"));
    assert_eq!(batch.auth, "Bearer agent-101");
    let b: Batch =
        serde_json::from_slice(&zstd::stream::decode_all(&batch.body[..]).unwrap()).unwrap();
    assert_eq!(b.id.seq, 1);
    assert_eq!(b.id.stream.len(), 32);
    let names: Vec<&str> = b.metrics.iter().map(|m| m.key.name.as_str()).collect();
    for name in ["mem.used_pct", "load.1m", "system.uptime_s"] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    for m in &b.metrics {
        assert_eq!(m.step, 10);
        for bucket in &m.buckets {
            assert_eq!(bucket.ts % 10, 0);
            assert!(bucket.ts <= b.sent_at);
        }
    }
    let cred = std::fs::read_to_string(state.path().join("credential.json")).unwrap();
    assert!(cred.contains("agent-101"));
    // Written off the runtime without holding up shipping: a batch that
    // was waiting at enrollment can arrive before the file is there.
    let kept = |known: &str| {
        known.contains(r#""ship_interval_ms": 1000"#) && known.contains(r#""group": "web""#)
    };
    let known = file_once(
        &state.path().join("server-settings.json"),
        Duration::from_secs(10),
        kept,
    )
    .await;
    assert!(
        kept(&known),
        "the enrollment's settings are kept for the next start: {known}"
    );

    stop.send(()).unwrap();
    let leave = next(&mut rx, "/api/v1/agent/leave").await;
    assert_eq!(leave.auth, "Bearer agent-101");
    assert_eq!(leave.body, br#"{"reason":"shutdown"}"#);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    // Restart: the stored credential is used, no enrollment; the server's
    // settings are asked for first thing (enrollment brought them before).
    // Then the server forgets the credential: the agent enrolls again and
    // carries on with the new one.
    let (stop, task) = start(cfg.clone());
    let first = next(&mut rx, "/api/v1/agent/").await;
    assert!(first.path.ends_with("/config"), "{first:?}");
    assert_eq!(first.auth, "Bearer agent-101");
    accepted.lock().unwrap().clear();
    let enroll = next(&mut rx, "/api/v1/agent/enroll").await;
    assert_eq!(enroll.auth, "Bearer enroll-me");
    let after = next(&mut rx, "/api/v1/agent/heartbeat").await;
    assert!(after.auth.starts_with("Bearer agent-") && after.auth != "Bearer agent-101");
    stop.send(()).unwrap();
    next(&mut rx, "/api/v1/agent/leave").await;
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let cred = std::fs::read_to_string(state.path().join("credential.json")).unwrap();
    assert!(!cred.contains("agent-101"), "{cred}");
}

#[tokio::test]
async fn unwritable_state_dir_and_missing_token_fail_fast() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("file");
    std::fs::write(&file, "").unwrap();
    let mut cfg = AgentConfig::new(vec!["http://127.0.0.1:9".into()], Some(Secret::new("t")));
    cfg.state_dir = Some(file.join("state"));
    let err = metrolog_agent::run(cfg.clone(), std::future::pending())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not writable"), "{err}");

    cfg.state_dir = Some(tmp.path().join("state"));
    cfg.enroll_token = None;
    let err = metrolog_agent::run(cfg, std::future::pending())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("--enroll-token"), "{err}");
}
