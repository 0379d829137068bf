//! Scaling hooks with the real binaries: four agents in group `web`
//! (`min_size = 3`), the policy's metric driven through the import API at
//! the current time (so each round sees exactly the level the test set),
//! rounds every second (a 1 s base step). A signed webhook receiver and a
//! command hook hear the events; the dry-run over the same history finds the
//! live events again. A second test kills the server with -9 while a
//! receiver refuses its first three attempts: one accepted delivery per
//! event id.

use metrolog_e2e::receiver::{Received, Receiver};
use metrolog_e2e::{eventually, start_agent, Api, Server};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn config(url: &str, script: &str) -> String {
    format!(
        r#"
[hosts]
liveness_timeout = "3s"

[archives]
ladder = [{{ step = "1s", rows = 3600 }}, {{ step = "1m", rows = 1440 }}]

[[agents]]
group = "web"

[[scaling.policies]]
name = "web-load"
group = "web"
metric = "app.load"
window = "2s"
scale_out_above = 75
scale_in_below = 25
for = "2s"
cooldown = "1h"
min_size = 3
max_size = 10
replacement_timeout = "1h"

[[scaling.hooks]]
name = "asg"
group = "web"
url = "{url}/scale"
secret = "{SECRET}"
retry_backoff = "300ms"
retry_backoff_max = "1s"

[[scaling.hooks]]
name = "lb"
command = ["{script}", "--pool", "web"]
events = ["scale_out", "member_joined", "member_left", "member_down"]
timeout = "5s"
"#
    )
}

/// Imports the current level into every live member once a second (one
/// point per second and series: the archives take time in order).
struct Feeder {
    level: Arc<AtomicU64>,
    hosts: Arc<std::sync::Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Feeder {
    fn start(base: &str, token: &str, hosts: &[&str], level: f64) -> Self {
        let f = Feeder {
            level: Arc::new(AtomicU64::new(level.to_bits())),
            hosts: Arc::new(std::sync::Mutex::new(
                hosts.iter().map(|h| h.to_string()).collect(),
            )),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (level, hosts, stop) = (f.level.clone(), f.hosts.clone(), f.stop.clone());
        let api = Api::new(base, token);
        let token = token.to_string();
        std::thread::spawn(move || {
            let mut last = 0;
            while !stop.load(Ordering::SeqCst) {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                if now != last {
                    last = now;
                    let v = f64::from_bits(level.load(Ordering::SeqCst));
                    for h in hosts.lock().unwrap().clone() {
                        let body = json!({"host": h, "series": [{"name": "app.load", "points": [[now, v]]}]});
                        let _ = api.post_json("/api/v1/import", Some(&token), &body);
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        f
    }

    fn set(&self, v: f64) {
        self.level.store(v.to_bits(), Ordering::SeqCst);
    }

    fn drop_host(&self, h: &str) {
        self.hosts.lock().unwrap().retain(|x| x != h);
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn events(api: &Api) -> anyhow::Result<Vec<Value>> {
    let (status, v) = api.get("/api/v1/scaling/events?group=web&limit=1000")?;
    anyhow::ensure!(status == 200, "events: {status} {v}");
    let mut e = v["events"].as_array().cloned().unwrap_or_default();
    e.reverse();
    Ok(e)
}

fn of_type(all: &[Value], t: &str) -> Vec<Value> {
    all.iter().filter(|e| e["type"] == t).cloned().collect()
}

fn wait_type(api: &Api, t: &str, n: usize, secs: u64) -> anyhow::Result<Vec<Value>> {
    eventually(Duration::from_secs(secs), || {
        let e = of_type(&events(api)?, t);
        Ok((e.len() >= n).then_some(e))
    })
}

fn at(e: &Value) -> i64 {
    e["at"]
        .as_str()
        .and_then(chrono_like_secs)
        .unwrap_or_default()
}

/// RFC 3339 `YYYY-MM-DDTHH:MM:SSZ` to unix seconds (the tests crate has no
/// chrono).
fn chrono_like_secs(t: &str) -> Option<i64> {
    let (d, rest) = t.split_once('T')?;
    let mut dp = d.split('-').map(|x| x.parse::<i64>());
    let (y, m, day) = (dp.next()?.ok()?, dp.next()?.ok()?, dp.next()?.ok()?);
    let mut tp = rest
        .trim_end_matches('Z')
        .split(':')
        .map(|x| x.parse::<i64>());
    let (hh, mm, ss) = (tp.next()?.ok()?, tp.next()?.ok()?, tp.next()?.ok()?);
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86400 + hh * 3600 + mm * 60 + ss)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn a_group_scales_out_and_in_heals_and_its_hooks_hear_it() -> anyhow::Result<()> {
    let receiver = Receiver::start(Vec::new())?;
    let dir = tempfile::tempdir()?;
    let seen = dir.path().join("seen");
    std::fs::create_dir(&seen)?;
    let script = dir.path().join("lb-pool.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncat > {0}/$METROLOG_EVENT_ID.json\nenv | grep '^METROLOG_' | sort > {0}/$METROLOG_EVENT_ID.env\necho \"$@\" > {0}/$METROLOG_EVENT_ID.args\n",
            seen.display()
        ),
    )?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    }
    let file = dir.path().join("server.toml");
    std::fs::write(&file, config(&receiver.url, script.to_str().unwrap()))?;
    let mut server = Server::start(&["--no-local-agent", "--config", file.to_str().unwrap()])?;
    let admin = server.token("admin")?;
    let api = Api::new(&server.url, &admin);
    let fast = ["--sample-interval", "200ms", "--ship-interval", "1s"];
    let names = ["web-1", "web-2", "web-3", "web-4"];
    let mut agents = Vec::new();
    for n in names {
        agents.push(start_agent(&server, n, "web", &dir.path().join(n), &fast)?);
    }
    eventually(Duration::from_secs(60), || {
        let (_, hosts) = api.get("/api/v1/hosts?group=web")?;
        let up = hosts
            .as_array()
            .map_or(0, |h| h.iter().filter(|h| h["state"] == "up").count());
        Ok((up == 4).then_some(()))
    })
    .map_err(|e| anyhow::anyhow!("{e}\nserver:\n{}", server.proc.log()))?;
    let joined = wait_type(&api, "member_joined", 4, 10)?;
    assert_eq!(joined.len(), 4);

    // Between the thresholds: nothing fires.
    let start = now();
    let feeder = Feeder::start(&server.url, &admin, &names, 50.0);
    std::thread::sleep(Duration::from_secs(5));
    let all = events(&api)?;
    assert!(
        of_type(&all, "scale_out").is_empty() && of_type(&all, "scale_in").is_empty(),
        "{all:?}"
    );
    // Above scale_out_above for `for`: one scale_out, 4 → 5.
    feeder.set(90.0);
    let out = wait_type(&api, "scale_out", 1, 20)?;
    assert_eq!(out[0]["current_size"], 4);
    assert_eq!(out[0]["desired_size"], 5);
    assert_eq!(out[0]["threshold"], 75.0);
    // … then nothing during the cooldown, while it stays high.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(of_type(&events(&api)?, "scale_out").len(), 1);
    // Back between the thresholds, then below the lower one: one scale_in.
    feeder.set(50.0);
    std::thread::sleep(Duration::from_secs(4));
    assert!(of_type(&events(&api)?, "scale_in").is_empty());
    feeder.set(10.0);
    let inn = wait_type(&api, "scale_in", 1, 20)?;
    assert_eq!(inn[0]["desired_size"], 3);
    feeder.set(50.0);
    std::thread::sleep(Duration::from_secs(3));
    let end = now();

    // The webhook got both, signed: verified with the secret, refused with
    // another one.
    let got: Vec<Received> = receiver.drain(Duration::from_secs(2));
    let scale: Vec<&Received> = got
        .iter()
        .filter(|r| r.json()["type"] == "scale_out" || r.json()["type"] == "scale_in")
        .collect();
    assert_eq!(scale.len(), 2, "{got:?}");
    for r in &scale {
        assert!(r.verify_signature(SECRET), "{r:?}");
        assert!(!r.verify_signature("whsec_d3Jvbmcgc2VjcmV0IGtleQ=="));
        assert_eq!(r.header("webhook-id"), r.json()["id"].as_str());
    }
    assert_eq!(scale[0].json()["id"], out[0]["id"]);

    // The command hook got the JSON on stdin and the env vars.
    let id = out[0]["id"].as_str().unwrap();
    let body: Value = eventually(Duration::from_secs(10), || {
        Ok(std::fs::read_to_string(seen.join(format!("{id}.json")))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok()))
    })?;
    assert_eq!(body, out[0]);
    let env = std::fs::read_to_string(seen.join(format!("{id}.env")))?;
    for want in [
        format!("METROLOG_EVENT_ID={id}"),
        "METROLOG_EVENT_TYPE=scale_out".into(),
        "METROLOG_EVENT_GROUP=web".into(),
        "METROLOG_EVENT_DESIRED_SIZE=5".into(),
        "METROLOG_EVENT_CURRENT_SIZE=4".into(),
    ] {
        assert!(env.lines().any(|l| l == want), "{want} not in:\n{env}");
    }
    assert_eq!(
        std::fs::read_to_string(seen.join(format!("{id}.args")))?.trim(),
        "--pool web"
    );

    // The dry-run over that history fires what the live policy fired.
    let (status, dry) = api.post_json(
        &format!("/api/v1/scaling/policies/web-load/dry-run?from={start}&to={end}"),
        Some(&admin),
        &json!({}),
    )?;
    assert_eq!(status, 200, "{dry}");
    let live: Vec<(String, Value)> = [&out[0], &inn[0]]
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_string(),
                e["desired_size"].clone(),
            )
        })
        .collect();
    let replayed: Vec<(String, Value)> = dry["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_string(),
                e["desired_size"].clone(),
            )
        })
        .collect();
    assert_eq!(replayed, live, "{dry}");
    for (d, l) in dry["events"]
        .as_array()
        .unwrap()
        .iter()
        .zip([&out[0], &inn[0]])
    {
        assert!((at(d) - at(l)).abs() <= 1, "dry {d} live {l}");
    }

    // SIGKILL of two agents: one heal, within the liveness timeout.
    for i in [0, 1] {
        feeder.drop_host(names[i]);
        agents[i].child.kill()?;
    }
    let killed = std::time::Instant::now();
    let heal = wait_type(&api, "heal", 1, 15)?;
    assert!(
        killed.elapsed() < Duration::from_secs(3 + 3),
        "{:?}",
        killed.elapsed()
    );
    assert_eq!(heal[0]["current_size"], 2);
    assert_eq!(heal[0]["desired_size"], 3);
    assert_eq!(of_type(&events(&api)?, "member_down").len(), 2);
    // SIGTERM of another: a member_left, no heal.
    feeder.drop_host(names[2]);
    agents[2].terminate();
    agents[2].wait_exit(Duration::from_secs(15))?;
    let left = wait_type(&api, "member_left", 1, 10)?;
    assert_eq!(left[0]["member"]["hostname"], "web-3");
    std::thread::sleep(Duration::from_secs(2));
    let all = events(&api)?;
    assert_eq!(of_type(&all, "heal").len(), 1, "{all:?}");
    // The load balancer's command heard every membership change.
    for e in all
        .iter()
        .filter(|e| e["type"] == "member_left" || e["type"] == "member_down")
    {
        let id = e["id"].as_str().unwrap();
        eventually(Duration::from_secs(10), || {
            Ok(seen.join(format!("{id}.json")).exists().then_some(()))
        })?;
    }
    // The webhook (default events) heard the heal, not membership.
    let later = receiver.drain(Duration::from_secs(1));
    let kinds: Vec<String> = later
        .iter()
        .map(|r| r.json()["type"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(kinds, ["heal"], "{later:?}");
    drop(feeder);
    Ok(())
}

#[test]
fn a_kill_9_amid_retries_still_delivers_each_event_once() -> anyhow::Result<()> {
    // Refuses the first three attempts, then accepts.
    let receiver = Receiver::start(vec![503, 503, 503])?;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let file = dir.path().join("server.toml");
    let text = config(&receiver.url, "/bin/true")
        .replace("retry_backoff = \"300ms\"", "retry_backoff = \"1s\"")
        .replace("retry_backoff_max = \"1s\"", "retry_backoff_max = \"2s\"")
        .replace("for = \"2s\"", "for = \"0s\"");
    std::fs::write(&file, text)?;
    let args = ["--no-local-agent", "--config", file.to_str().unwrap()];
    let mut server = Server::start_in(&data, &args)?;
    let admin = server.token("admin")?;
    // Four imported members (passive: they never go down).
    let api = Api::new(&server.url, &admin);
    let t = now();
    for h in ["web-1", "web-2", "web-3", "web-4"] {
        let body = json!({"host": h, "group": "web", "series": [{"name": "app.load", "points": [[t, 90.0]]}]});
        let (s, v) = api.post_json("/api/v1/import", Some(&admin), &body)?;
        anyhow::ensure!(s == 200, "{v}");
    }
    let out = wait_type(&api, "scale_out", 1, 15)?;
    let id = out[0]["id"].as_str().unwrap().to_string();
    // Two refused attempts, then the server dies.
    let first = receiver.next(Duration::from_secs(10))?;
    assert_eq!(first.status, 503);
    let second = receiver.next(Duration::from_secs(10))?;
    assert_eq!(second.status, 503);
    server.proc.child.kill()?;
    server.proc.child.wait()?;
    let server = Server::start_in(&data, &args)?;
    let api = Api::new(&server.url, &server.token("admin")?);
    let mut got = vec![first, second];
    got.extend(receiver.drain(Duration::from_secs(8)));
    let mut accepted: HashMap<String, usize> = HashMap::new();
    for r in &got {
        assert!(r.verify_signature(SECRET));
        if r.status == 200 {
            *accepted
                .entry(r.header("webhook-id").unwrap_or_default().to_string())
                .or_default() += 1;
        }
    }
    assert_eq!(accepted.get(&id), Some(&1), "{got:?}");
    assert_eq!(
        accepted.len(),
        1,
        "no event fired twice across the restart: {accepted:?}"
    );
    let (_, d) = api.get("/api/v1/deliveries?receiver=asg")?;
    assert_eq!(d["deliveries"][0]["state"], "delivered", "{d}");
    assert!(
        d["deliveries"][0]["attempt_count"].as_u64().unwrap() >= 3,
        "{d}"
    );
    Ok(())
}
