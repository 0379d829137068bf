//! Self-enrollment from cloud metadata: an agent started with no flags at
//! all — only `METROLOG_AGENT_METADATA_URL`, as an image's unit file would
//! set it for a test (on EC2 the agent finds the metadata service itself,
//! from DMI) — reads its server, enrollment token, group and labels from
//! the user-data of a fake metadata service on loopback and enrolls into
//! that group with the instance facts as labels. The metadata service is
//! faked (it is outside the product); no traffic ever goes to a link-local
//! address.

use anyhow::{ensure, Result};
use metrolog_e2e::{binary, eventually, Api, Proc, Server};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TOKEN: &str = "AQAEAE2e-imds-session-token==";

/// (method, path, had the TTL header, had the session token)
type Seen = Arc<Mutex<Vec<(String, String, bool, bool)>>>;

/// A fake IMDS: IMDSv2 (a token PUT with a TTL header; 401 without the
/// token), 404 for keys it does not have, `user_data` when given.
fn fake_imds(user_data: Option<String>) -> Result<(String, Seen)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}", listener.local_addr()?);
    let seen: Seen = Arc::default();
    let log = seen.clone();
    std::thread::spawn(move || {
        for sock in listener.incoming() {
            let Ok(mut sock) = sock else { return };
            let mut req = Vec::new();
            let mut buf = [0u8; 2048];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match sock.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let head = String::from_utf8_lossy(&req).to_string();
            let mut words = head.split_whitespace();
            let (method, path) = (
                words.next().unwrap_or("").to_string(),
                words.next().unwrap_or("").to_string(),
            );
            let header = |name: &str| {
                head.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case(name)
                        .then(|| v.trim().to_string())
                })
            };
            let ttl = header("x-aws-ec2-metadata-token-ttl-seconds");
            let token = header("x-aws-ec2-metadata-token");
            log.lock().unwrap().push((
                method.clone(),
                path.clone(),
                ttl.is_some(),
                token.as_deref() == Some(TOKEN),
            ));
            let (code, body) = if method == "PUT" && path == "/latest/api/token" {
                match ttl {
                    Some(_) => (200, TOKEN.to_string()),
                    None => (400, String::new()),
                }
            } else if token.as_deref() != Some(TOKEN) {
                (401, String::new())
            } else {
                match path.as_str() {
                    "/latest/meta-data/instance-id" => (200, "i-0e2e0000cafe0001".into()),
                    "/latest/meta-data/instance-type" => (200, "m5.large".into()),
                    "/latest/meta-data/placement/availability-zone" => (200, "eu-west-3b".into()),
                    "/latest/meta-data/local-ipv4" => (200, "10.1.2.3".into()),
                    "/latest/user-data" => match &user_data {
                        Some(u) => (200, u.clone()),
                        None => (404, String::new()),
                    },
                    _ => (404, "Not Found".into()),
                }
            };
            let _ = write!(
                sock,
                "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    Ok((url, seen))
}

#[test]
fn an_agent_with_no_flags_enrolls_from_user_data_into_its_group() -> Result<()> {
    let server = Server::start(&["--no-local-agent"])?;
    let api = Api::new(&server.url, &server.token("viewer")?);
    let user_data = format!(
        "#metrolog-agent\nserver = \"{}\"\nenroll_token = \"{}\"\ngroup = \"autoscaled\"\n[labels]\nrole = \"web\"\n",
        server.url, server.enroll_token
    );
    let (imds, seen) = fake_imds(Some(user_data))?;
    let dir = tempfile::tempdir()?;

    // No flags: the metadata URL and (so the test leaves /var/lib alone)
    // the state directory come from the environment.
    let mut cmd = Command::new(binary("metrolog-agent"));
    cmd.current_dir(dir.path())
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("METROLOG_AGENT_METADATA_URL", &imds)
        .env("METROLOG_AGENT_STATE_DIR", dir.path().join("state"))
        .env("METROLOG_AGENT_SAMPLE_INTERVAL", "500ms")
        .env("METROLOG_AGENT_SHIP_INTERVAL", "1s");
    let mut agent = Proc::spawn("agent (no flags)", cmd)?;

    let host = eventually(Duration::from_secs(60), || {
        let (status, hosts) = api.get("/api/v1/hosts?group=autoscaled")?;
        ensure!(status == 200, "hosts: {status} {hosts}");
        Ok(hosts.as_array().and_then(|h| h.first().cloned()))
    })
    .map_err(|e| anyhow::anyhow!("{e}\nagent:\n{}", agent.log()))?;
    assert_eq!(host["instance_id"], "i-0e2e0000cafe0001", "{host}");
    let labels = &host["labels"];
    assert_eq!(labels["role"], "web", "{host}");
    assert_eq!(labels["instance_type"], "m5.large", "{host}");
    assert_eq!(labels["availability_zone"], "eu-west-3b", "{host}");
    assert_eq!(labels["local_ipv4"], "10.1.2.3", "{host}");
    assert!(
        labels.get("ami_id").is_none(),
        "404: no fact, no label: {host}"
    );

    // IMDSv2: the token was asked for with a TTL, then sent with every GET.
    let seen = seen.lock().unwrap().clone();
    ensure!(
        seen.first().is_some_and(|r| r.0 == "PUT" && r.2),
        "{seen:?}"
    );
    ensure!(seen[1..].iter().all(|r| r.0 == "GET" && r.3), "{seen:?}");
    // The enrollment token from user-data never reaches the log.
    let log = agent.log();
    assert!(
        !log.contains(&server.enroll_token),
        "the token leaked:\n{log}"
    );
    assert!(log.contains("enroll_token: [redacted]"), "{log}");
    Ok(())
}

#[test]
fn without_a_metadata_url_or_ec2_the_metadata_service_is_not_asked() -> Result<()> {
    // Not EC2 (a DMI fixture of another vendor) and no URL: the agent does
    // not consult any metadata service and, with nothing else configured,
    // says what is missing.
    let dir = tempfile::tempdir()?;
    let dmi = dir.path().join("sys/class/dmi/id");
    std::fs::create_dir_all(&dmi)?;
    std::fs::write(dmi.join("sys_vendor"), "QEMU\n")?;
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[cloud]\nsysfs = \"{}\"\n",
            dir.path().join("sys").display()
        ),
    )?;
    let out = Command::new(binary("metrolog-agent"))
        .current_dir(dir.path())
        .env_clear()
        .env("METROLOG_AGENT_CONFIG", &config)
        .env("METROLOG_AGENT_STATE_DIR", dir.path().join("state"))
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("no server given"), "{stderr}");
    assert!(!stderr.contains("cloud metadata"), "{stderr}");
    Ok(())
}
