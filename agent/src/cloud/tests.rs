//! Discovery against a fake metadata service on loopback (never the
//! link-local address): IMDSv2 token with its TTL header, 401 without it,
//! 404 for missing keys, IMDSv1 fallback, user-data present, absent or
//! broken, garbage and a service that never answers.

use super::*;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// (method, path, TTL header, token header) of a request the fake saw.
type Request = (String, String, Option<String>, Option<String>);

#[derive(Clone, Default)]
struct Fake {
    /// Token PUT refused with 405 (IMDSv1 only).
    v1_only: bool,
    /// Never answers anything.
    hang: bool,
    keys: BTreeMap<String, Vec<u8>>,
    user_data: Option<String>,
    /// (method, path, ttl header, token header) of every request.
    seen: Arc<Mutex<Vec<Request>>>,
}

const TOKEN: &str = "AQAEAFake-token==";

fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

impl Fake {
    fn ec2() -> Self {
        let mut f = Fake::default();
        for (k, v) in [
            ("instance-id", "i-0123456789abcdef0"),
            ("instance-type", "t3.micro"),
            ("placement/availability-zone", "eu-west-1a"),
            ("local-ipv4", "10.0.3.7"),
            ("ami-id", "ami-0abcdef1234567890"),
        ] {
            f.keys
                .insert(format!("/latest/meta-data/{k}"), v.as_bytes().to_vec());
        }
        f
    }

    fn answer(&self, method: &str, path: &str, head: &str) -> (u16, Vec<u8>) {
        let ttl = header(head, TTL_HEADER_NAME);
        let token = header(head, TOKEN_HEADER_NAME);
        self.seen
            .lock()
            .unwrap()
            .push((method.into(), path.into(), ttl.clone(), token.clone()));
        if method == "PUT" && path == "/latest/api/token" {
            if self.v1_only {
                return (405, Vec::new());
            }
            return match ttl.and_then(|t| t.parse::<u32>().ok()) {
                Some(1..=21600) => (200, TOKEN.into()),
                _ => (400, Vec::new()),
            };
        }
        if !self.v1_only && token.as_deref() != Some(TOKEN) {
            return (401, Vec::new());
        }
        if path == "/latest/user-data" {
            return match &self.user_data {
                Some(u) => (200, u.clone().into_bytes()),
                None => (404, Vec::new()),
            };
        }
        match self.keys.get(path) {
            Some(v) => (200, v.clone()),
            None => (404, b"Not Found".to_vec()),
        }
    }

    async fn start(self) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let fake = self.clone();
                tokio::spawn(async move {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    if fake.hang {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        return;
                    }
                    let head = String::from_utf8_lossy(&req).to_string();
                    let mut first = head.split_whitespace();
                    let (method, path) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
                    let (code, body) = fake.answer(method, path, &head);
                    let resp = format!(
                        "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = sock.write_all(resp.as_bytes()).await;
                    let _ = sock.write_all(&body).await;
                });
            }
        });
        url
    }
}

const TTL_HEADER_NAME: &str = imds::TTL_HEADER;
const TOKEN_HEADER_NAME: &str = imds::TOKEN_HEADER;

fn cloud(url: &str) -> CloudConfig {
    CloudConfig {
        metadata_url: Some(url.into()),
        timeout: Duration::from_millis(500),
        ..CloudConfig::default()
    }
}

#[tokio::test]
async fn imdsv2_facts_with_a_token_and_its_ttl() {
    let fake = Fake::ec2();
    let seen = fake.seen.clone();
    let url = fake.start().await;
    let found = discover(&cloud(&url), &url).await;
    assert!(found.v2);
    assert_eq!(
        found.facts.instance_id.as_deref(),
        Some("i-0123456789abcdef0")
    );
    assert_eq!(found.facts.availability_zone.as_deref(), Some("eu-west-1a"));
    assert_eq!(found.facts.labels().len(), 5);
    assert!(found.failures.is_empty(), "{:?}", found.failures);
    assert!(found.settings.is_none(), "no user-data");
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].0, "PUT");
    assert_eq!(seen[0].2.as_deref(), Some("300"), "TTL header");
    assert!(
        seen[1..]
            .iter()
            .all(|r| r.0 == "GET" && r.3.as_deref() == Some(TOKEN)),
        "{seen:?}"
    );
}

#[tokio::test]
async fn imdsv1_fallback_and_missing_keys() {
    let mut fake = Fake::ec2();
    fake.v1_only = true;
    fake.keys.remove("/latest/meta-data/ami-id");
    let url = fake.start().await;
    let found = discover(&cloud(&url), &url).await;
    assert!(!found.v2);
    assert_eq!(found.facts.instance_type.as_deref(), Some("t3.micro"));
    assert_eq!(found.facts.ami_id, None, "404: absent, not a failure");
    assert!(found.failures.is_empty(), "{:?}", found.failures);
}

#[tokio::test]
async fn garbage_values_are_counted_failures() {
    let mut fake = Fake::ec2();
    fake.keys.insert(
        "/latest/meta-data/instance-type".into(),
        vec![0xff, 0xfe, 0x00],
    );
    fake.keys.insert(
        "/latest/meta-data/local-ipv4".into(),
        b"<html>\n<body>oops</body>".to_vec(),
    );
    fake.keys
        .insert("/latest/meta-data/ami-id".into(), vec![b'a'; 10_000]);
    let url = fake.start().await;
    let found = discover(&cloud(&url), &url).await;
    let reasons: Vec<&str> = found.failures.iter().map(|(r, _)| *r).collect();
    assert_eq!(
        reasons,
        ["garbage", "garbage", "too_large"],
        "{:?}",
        found.failures
    );
    assert_eq!(
        found.facts.instance_id.as_deref(),
        Some("i-0123456789abcdef0"),
        "the rest is kept"
    );
    assert!(failures()["garbage"] >= 2);
}

#[tokio::test]
async fn a_service_that_never_answers_costs_one_timeout() {
    let fake = Fake {
        hang: true,
        ..Fake::ec2()
    };
    let url = fake.start().await;
    let started = std::time::Instant::now();
    let found = discover(&cloud(&url), &url).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(found.failures.len(), 1, "{:?}", found.failures);
    assert_eq!(found.failures[0].0, "timeout");
    assert_eq!(found.facts, Facts::default());
}

#[tokio::test]
async fn a_token_refused_on_every_get_is_401() {
    // The PUT works, but the fake wants a token the client never got: the
    // v1 fallback after a failed PUT meets 401 on every key.
    let fake = Fake::ec2();
    let url = fake.start().await;
    let mut imds = Imds::new(&url, Duration::from_millis(500)).unwrap();
    let err = imds
        .get("latest/meta-data/instance-id", 100)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ImdsError::Status("latest/meta-data/instance-id".into(), 401)
    );
    imds.start_session().await.unwrap();
    assert_eq!(
        imds.get("latest/meta-data/instance-id", 100)
            .await
            .unwrap()
            .as_deref(),
        Some("i-0123456789abcdef0")
    );
}

#[test]
fn user_data_for_the_agent_only() {
    assert_eq!(parse_user_data("#!/bin/bash\necho hi\n").unwrap(), None);
    assert_eq!(parse_user_data("").unwrap(), None);
    let s = parse_user_data(
        "#metrolog-agent\r\nserver = \"http://10.0.0.5:8080\"\nenroll_token = \"s3cret-token\"\ngroup = \"web\"\n[labels]\nrole = \"frontend\"\n",
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        s.server.as_deref(),
        Some(&["http://10.0.0.5:8080".to_string()][..])
    );
    assert_eq!(
        s.enroll_token.as_ref().map(|t| t.expose()),
        Some("s3cret-token")
    );
    assert_eq!(s.group.as_deref(), Some("web"));
    assert_eq!(s.labels.as_ref().unwrap()["role"], "frontend");
    assert!(!settings_summary(&s).contains("s3cret"));

    let err = parse_user_data("#metrolog-agent\nenroll_token = \"s3cret-token\nserver = 1\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("syntax error at line"), "{err}");
    assert!(
        !err.contains("s3cret"),
        "the token must not be quoted: {err}"
    );
    let err =
        parse_user_data("#metrolog-agent\n[[checks]]\nname = \"x\"\ncommand = [\"/bin/rm\"]\n")
            .unwrap_err()
            .to_string();
    assert!(err.contains("checks not taken from user-data"), "{err}");
    let err = parse_user_data("#metrolog-agent\ngroup = 5\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("group"), "{err}");
}

#[tokio::test]
async fn broken_user_data_is_a_counted_failure() {
    let mut fake = Fake::ec2();
    fake.user_data = Some("#metrolog-agent\nserver = [\n".into());
    let url = fake.start().await;
    let found = discover(&cloud(&url), &url).await;
    assert!(found.settings.is_none());
    assert_eq!(found.failures.len(), 1);
    assert_eq!(found.failures[0].0, "user_data");
    assert!(found.facts.instance_id.is_some());
}

#[test]
fn no_endpoint_unless_ec2_or_a_url() {
    let nothing = tempfile::tempdir().unwrap();
    let base = CloudConfig {
        sysfs: nothing.path().to_path_buf(),
        ..CloudConfig::default()
    };
    assert_eq!(base.endpoint(), None, "not EC2, no URL: no request");
    let ec2 = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(ec2.path().join("class/dmi/id")).unwrap();
    std::fs::write(ec2.path().join("class/dmi/id/sys_vendor"), "Amazon EC2\n").unwrap();
    let on_ec2 = CloudConfig {
        sysfs: ec2.path().to_path_buf(),
        ..CloudConfig::default()
    };
    assert_eq!(on_ec2.endpoint().as_deref(), Some(EC2_METADATA_URL));
    let off = CloudConfig {
        metadata: MetadataMode::Off,
        ..on_ec2.clone()
    };
    assert_eq!(off.endpoint(), None);
    let fake = CloudConfig {
        metadata_url: Some("http://127.0.0.1:1338".into()),
        ..base
    };
    assert_eq!(fake.endpoint().as_deref(), Some("http://127.0.0.1:1338"));
}

#[tokio::test]
async fn user_data_goes_under_flags_env_and_file() {
    let mut fake = Fake::ec2();
    fake.user_data = Some(
        "#metrolog-agent\nserver = \"http://ud:1\"\nenroll_token = \"ud-token\"\ngroup = \"ud-group\"\n[labels]\nrole = \"ud\"\nzone = \"ud\"\n"
            .into(),
    );
    let url = fake.start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.toml");
    std::fs::write(
        &file,
        "group = \"file-group\"\n[labels]\nzone = \"file\"\n[cloud]\ntimeout = \"500ms\"\n",
    )
    .unwrap();
    let env = Overrides {
        metadata_url: Some(url),
        config: Some(file),
        ..Overrides::default()
    };
    let flags = Overrides {
        labels: vec!["instance_type=mine".into()],
        ..Overrides::default()
    };
    let cfg = configure(flags, env).await.unwrap();
    assert_eq!(cfg.servers, ["http://ud:1"]);
    assert_eq!(
        cfg.enroll_token.as_ref().map(|t| t.expose()),
        Some("ud-token")
    );
    assert_eq!(cfg.group.as_deref(), Some("file-group"), "the file wins");
    assert_eq!(cfg.labels["zone"], "file");
    assert_eq!(cfg.labels["role"], "ud");
    assert_eq!(
        cfg.labels["instance_type"], "mine",
        "a flag wins over a fact"
    );
    assert_eq!(cfg.labels["availability_zone"], "eu-west-1a");
    assert_eq!(cfg.instance_id.as_deref(), Some("i-0123456789abcdef0"));
    cfg.validate().unwrap();
}

#[test]
fn the_contract_sections_parse() {
    // The [[scrape]] and [cloud] sections of SPEC §11, verbatim.
    let text = r#"
[[scrape]]
name = "node"
url = "http://127.0.0.1:9100/metrics"
interval = "10s"
sample_limit = 5000
[cloud]
metadata = "auto"                       # auto (EC2 detected from DMI) | ec2 | off
# metadata_url = "http://127.0.0.1:1338" # for a local fake; default is the EC2 address
user_data = true                        # read agent settings from user-data
"#;
    let file = FileConfig::parse(text).unwrap();
    assert_eq!(file.scrape.as_ref().unwrap()[0].sample_limit, 5000);
    assert_eq!(file.cloud.as_ref().unwrap().metadata, MetadataMode::Auto);
    let errs = FileConfig::parse("[cloud]\nmetadata = \"gce\"\nuserdata = true\n").unwrap_err();
    let keys: Vec<&str> = errs.0.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["cloud.metadata", "cloud.userdata"], "{errs}");
}
