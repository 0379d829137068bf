//! Upgrades across migrations, with the real `metrolog-server` binary
//! (docs/upgrading.md): a database left by an older release (migrations up to
//! 0010, rows written as that release wrote them) is migrated at start and its
//! data served through the API; a database holding a migration this binary
//! does not know (a downgrade) is refused with a message that says what to do,
//! and left as it was.

use metrolog_server::auth::{hash_password, token_hash};
use metrolog_server::store::archive::journal::{encode, Entry};
use metrolog_server::store::Sample;
use serde_json::Value;
use sqlx::migrate::Migrator;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::SqlitePool;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// The last migration of the older release this test upgrades from.
const OLD_LEVEL: i64 = 10;

const VIEWER: &str = "mlg_upgrade-viewer-token-0123456789abcdef";
const ADMIN: &str = "mlg_upgrade-admin-token-0123456789abcdef";

async fn open_db(db: &Path) -> SqlitePool {
    SqlitePool::connect_with(
        SqliteConnectOptions::from_str(&format!("sqlite://{}", db.display()))
            .unwrap()
            .create_if_missing(true),
    )
    .await
    .unwrap()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A database as the release at migration `OLD_LEVEL` left it: a user, a
/// viewer and an admin token, an agent's host in group `web`, an hour of
/// samples of one series in the archive journal (its acknowledged samples not
/// yet flushed, as a crash or a stop would leave them), and log records with
/// their zone.
async fn old_database(db: &Path, start: i64) {
    let pool = open_db(db).await;
    let old = Migrator {
        migrations: std::borrow::Cow::Owned(
            MIGRATOR
                .iter()
                .filter(|m| m.version <= OLD_LEVEL)
                .cloned()
                .collect(),
        ),
        ..Migrator::DEFAULT
    };
    old.run(&pool).await.unwrap();
    let t = now();
    sqlx::query("INSERT INTO users (name, password_hash, role, created_at) VALUES ('olduser', ?, 'admin', ?)")
        .bind(hash_password("old-password-1"))
        .bind(t)
        .execute(&pool)
        .await
        .unwrap();
    for (name, role, token) in [
        ("old viewer", "viewer", VIEWER),
        ("old admin", "admin", ADMIN),
    ] {
        sqlx::query("INSERT INTO tokens (name, role, token_hash, created_at) VALUES (?, ?, ?, ?)")
            .bind(name)
            .bind(role)
            .bind(token_hash(token))
            .bind(t)
            .execute(&pool)
            .await
            .unwrap();
    }
    sqlx::query(
        "INSERT INTO hosts (id, hostname, group_name, source, state, state_since, first_seen, last_seen)
         VALUES (1, 'old-web-1', 'web', 'agent', 'up', ?, ?, ?)",
    )
    .bind(start)
    .bind(start)
    .bind(t)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO series (id, host_id, name) VALUES (1, 1, 'app.requests')")
        .execute(&pool)
        .await
        .unwrap();
    let samples = (0..360)
        .map(|i| Sample {
            ts: start + i * 10,
            value: (i % 50) as f64,
            ext: None,
        })
        .collect();
    let row = encode(&[Entry {
        series_id: 1,
        buckets: false,
        samples,
    }]);
    sqlx::query("INSERT INTO archive_journal (seq, data) VALUES (1, ?)")
        .bind(row)
        .execute(&pool)
        .await
        .unwrap();
    for i in 1..=3i64 {
        let us = (start + i) * 1_000_000;
        sqlx::query(
            "INSERT INTO logs (id, host_id, ts, received_at, hostname, severity, app_name, message, source)
             VALUES (?, 1, ?, ?, 'old-web-1', 6, 'shop', ?, 'agent')",
        )
        .bind(i)
        .bind(us)
        .bind(us)
        .bind(format!("written before the upgrade kumquat {i}"))
        .execute(&pool)
        .await
        .unwrap();
    }
    sqlx::query("INSERT INTO log_zones (block, min_ts, max_ts) VALUES (0, ?, ?)")
        .bind((start + 1) * 1_000_000)
        .bind((start + 3) * 1_000_000)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
}

/// The server binary on `dir`, killed when dropped.
struct ServerProc {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl ServerProc {
    fn spawn(dir: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_metrolog-server"))
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .args([
                "--syslog-udp",
                "off",
                "--syslog-tcp",
                "off",
                "--no-local-agent",
            ])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting metrolog-server");
        let (tx, lines) = mpsc::channel();
        let streams: [Box<dyn std::io::Read + Send>; 2] = [
            Box::new(child.stdout.take().unwrap()),
            Box::new(child.stderr.take().unwrap()),
        ];
        for s in streams {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(s).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The dashboard URL the server prints once it serves.
    fn url(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if let Some(url) = line.split("Dashboard: ").nth(1) {
                        return url.trim().trim_end_matches('/').to_string();
                    }
                }
                Err(_) => panic!(
                    "the server never served; its output:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Waits for the process to exit by itself; its status and output.
    fn exit(&mut self) -> (std::process::ExitStatus, String) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // The readers end with the pipes.
                while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
                    self.seen.push(line);
                }
                return (status, self.seen.join("\n"));
            }
            assert!(
                Instant::now() < deadline,
                "the server did not exit; its output:\n{}",
                self.seen.join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let (status, out) = self.exit();
        assert!(status.success(), "the server failed to stop:\n{out}");
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn get(url: &str, token: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn an_older_database_is_migrated_at_start_and_its_data_served() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("metrolog.db");
    let start = now() - now() % 10 - 7200;
    old_database(&db, start).await;

    let mut server = ServerProc::spawn(dir.path());
    let url = server.url();

    let (status, hosts) = get(&format!("{url}/api/v1/hosts"), VIEWER).await;
    assert_eq!(status, 200, "the old viewer token still reads: {hosts}");
    let host = hosts
        .as_array()
        .and_then(|h| h.iter().find(|h| h["hostname"] == "old-web-1"))
        .unwrap_or_else(|| panic!("the old host is listed: {hosts}"));
    assert_eq!(host["group"], "web", "{host}");

    let (status, q) = get(
        &format!(
            "{url}/api/v1/query?host=old-web-1&name=app.requests&from={start}&to={}",
            start + 3600
        ),
        VIEWER,
    )
    .await;
    assert_eq!(status, 200, "{q}");
    let points = q["series"][0]["points"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let known: Vec<f64> = points.iter().filter_map(|p| p[1].as_f64()).collect();
    assert!(
        known.len() >= 350,
        "the old samples are served: {} known points of {}",
        known.len(),
        points.len()
    );
    assert!(known.iter().all(|v| (0.0..50.0).contains(v)), "{known:?}");

    // Listing reads the rows; full-text search waits for the index the
    // new release builds from them.
    let (status, logs) = get(
        &format!("{url}/api/v1/logs?host=old-web-1&from=-1d"),
        VIEWER,
    )
    .await;
    assert_eq!(status, 200, "{logs}");
    assert_eq!(logs["records"].as_array().map(Vec::len), Some(3), "{logs}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, found) = get(&format!("{url}/api/v1/logs?q=kumquat&from=-1d"), VIEWER).await;
        if found["records"].as_array().map(Vec::len) == Some(3) {
            assert_eq!(
                found["records"][0]["message"],
                "written before the upgrade kumquat 3"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the old records are never found by full-text search: {found}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Columns added by later migrations (users.disabled_at,
    // tokens.last_used_at) work on old rows: the admin page lists them.
    let resp = reqwest::Client::new()
        .get(format!("{url}/admin"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let page = resp.text().await.unwrap();
    assert!(
        page.contains("olduser") && page.contains("old viewer"),
        "the admin page lists the old user and token:\n{page}"
    );
    server.stop();

    let pool = open_db(&db).await;
    let level: i64 = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
        .fetch_one(&pool)
        .await
        .unwrap();
    let newest = MIGRATOR.iter().map(|m| m.version).max().unwrap();
    assert_eq!(level, newest, "every newer migration was applied");
    let used: Option<i64> =
        sqlx::query_scalar("SELECT last_used_at FROM tokens WHERE name = 'old viewer'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(
        used.is_some(),
        "the old token's use is recorded in the new column"
    );
    pool.close().await;
}

#[tokio::test]
async fn a_database_from_a_newer_release_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("metrolog.db");
    let pool = open_db(&db).await;
    MIGRATOR.run(&pool).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (9001, 'future feature', 1, x'00', 0)",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("CREATE TABLE future_feature (x INTEGER)")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;

    let mut server = ServerProc::spawn(dir.path());
    let (status, out) = server.exit();
    assert!(
        !status.success(),
        "the server started on a newer database:\n{out}"
    );
    assert!(
        out.contains("is at migration 9001 (future feature), newer than this metrolog-server")
            && out.contains("Downgrading is not supported")
            && out.contains("docs/upgrading.md"),
        "the refusal says why and what to do:\n{out}"
    );
    assert!(!out.contains("Dashboard:"), "{out}");

    let pool = open_db(&db).await;
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        versions.last(),
        Some(&9001),
        "the database was left as it was"
    );
    let table: i64 =
        sqlx::query_scalar("SELECT count(*) FROM sqlite_master WHERE name = 'future_feature'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(table, 1);
    pool.close().await;
}
