//! The dashboard in a real browser: log in, open the host page and a
//! group's scaling page in headless Chromium and check that every graph
//! image loaded (and, on the scaling page, that nothing was logged as an
//! error); visit every page at 1280 and 390 px with hostile text in a
//! hostname, a log line and a check output (shown as text, screenshots under
//! target/e2e-screenshots), and create and revoke a token on the admin page.
//!
//! Chromium is driven over the DevTools protocol on a pipe
//! (`--remote-debugging-pipe`: JSON messages ending in NUL on fds 3 and 4), so
//! no WebSocket client is needed. A missing Chromium fails the tests (CI
//! installs the Debian package).

use anyhow::{anyhow, bail, Context, Result};
use metrolog_e2e::{eventually, login, Api, Server};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";

/// A browser on the other end of the DevTools pipe.
struct Browser {
    child: Child,
    to: ChildStdin,
    from: BufReader<ChildStdout>,
    next_id: u64,
    /// Events that arrived while waiting for answers.
    events: Vec<Value>,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts Chromium; a missing one fails the test (CI installs it).
    fn start() -> Result<Browser> {
        if !Path::new(CHROMIUM).exists() {
            bail!("{CHROMIUM} is not installed: apt-get install chromium (the Debian package)");
        }
        let profile = tempfile::tempdir()?;
        // The shell hands our pipes to Chromium as fds 3 (commands) and 4
        // (answers), which is where --remote-debugging-pipe expects them.
        let child = Command::new("sh")
            .arg("-c")
            .arg(r#"exec "$0" "$@" 3<&0 4>&1 0</dev/null 1>/dev/null"#)
            .arg(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-pipe",
                "--window-size=1400,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting chromium")?;
        let mut child = child;
        let to = child.stdin.take().ok_or_else(|| anyhow!("no stdin"))?;
        let from = BufReader::new(child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?);
        Ok(Browser {
            child,
            to,
            from,
            next_id: 0,
            events: Vec::new(),
            _profile: profile,
        })
    }

    /// Sends one command (to a page when `session` is given) and returns its
    /// result, skipping the events in between.
    /// A new tab carrying the dashboard's session cookie; its session id.
    fn logged_in_tab(&mut self, base: &str, session: &str) -> Result<String> {
        self.call(
            None,
            "Storage.setCookies",
            json!({"cookies": [{"name": "ml_session", "value": session, "url": base}]}),
        )?;
        let target = self.call(None, "Target.createTarget", json!({"url": "about:blank"}))?;
        let attached = self.call(
            None,
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        )?;
        Ok(attached["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow!("no session id"))?
            .to_string())
    }

    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg)?;
        bytes.push(0);
        self.to.write_all(&bytes)?;
        self.to.flush()?;
        loop {
            let mut buf = Vec::new();
            if self.from.read_until(0, &mut buf)? == 0 {
                bail!("chromium closed the pipe");
            }
            buf.pop();
            let answer: Value = serde_json::from_slice(&buf)?;
            if answer["id"] == json!(id) {
                if let Some(e) = answer.get("error") {
                    bail!("{method}: {e}");
                }
                return Ok(answer["result"].clone());
            }
            if answer.get("method").is_some() && self.events.len() < 10_000 {
                self.events.push(answer);
            }
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn host_page_graphs_load_in_chromium() -> Result<()> {
    let mut server = Server::start(&[])?;
    let api = Api::new(&server.url, &server.token("viewer")?);
    // Wait for the local agent's first CPU values.
    let host_id = eventually(Duration::from_secs(20), || {
        let (_, groups) = api.get("/api/v1/overview")?;
        Ok(groups
            .as_array()
            .and_then(|g| g.iter().find(|g| g["group"] == "metrolog"))
            .and_then(|g| g["hosts"].get(0).cloned())
            .filter(|h| h["current"]["cpu.busy_pct"].is_number())
            .and_then(|h| h["id"].as_i64()))
    })
    .map_err(|e| anyhow!("{e}\n{}", server.proc.log()))?;
    let session = login(&server.url, &server.admin_password)?;

    let mut b = Browser::start()?;
    let sid = b.logged_in_tab(&server.url, &session)?;
    let url = format!("{}/hosts/{host_id}#range=3600", server.url);
    b.call(Some(&sid), "Page.navigate", json!({"url": url}))?;

    // Every panel's <img> must end up decoded with a real width.
    let probe = "JSON.stringify({title: document.title, \
        imgs: [...document.querySelectorAll('figure.panel img')].map(i => \
        ({w: i.naturalWidth, done: i.complete, src: i.getAttribute('src') || ''}))})";
    let start = Instant::now();
    let mut last = Value::Null;
    loop {
        let r = b.call(
            Some(&sid),
            "Runtime.evaluate",
            json!({"expression": probe, "returnByValue": true}),
        )?;
        if let Some(text) = r["result"]["value"].as_str() {
            last = serde_json::from_str(text)?;
            let imgs = last["imgs"].as_array().cloned().unwrap_or_default();
            let ready = !imgs.is_empty()
                && imgs.iter().all(|i| {
                    i["done"] == json!(true)
                        && i["w"].as_u64().unwrap_or(0) > 0
                        && i["src"]
                            .as_str()
                            .unwrap_or("")
                            .contains("/api/v1/graph.svg")
                });
            if ready {
                break;
            }
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = server.proc.log();
            bail!("graphs did not load: {last}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(last["imgs"].as_array().map(Vec::len), Some(6), "{last}");
    assert!(
        last["title"].as_str().unwrap_or("").contains("Metrolog"),
        "{last}"
    );

    // Hovering the CPU graph at its newest known row reads the values out.
    let aim = "(async () => { const fig = document.querySelector('figure.panel');         const frame = fig.querySelector('.frame');         const p = new URL(fig.querySelector('img').src).searchParams;         const from = Number(p.get('from')), to = Number(p.get('to'));         const r = await fetch(`/api/v1/query?${fig.dataset.query}&from=${from}&to=${to}`);         const v = await r.json();         const pts = v.series.find(s => s.name === 'cpu.busy_pct').points.filter(p => p[1] !== null);         const ts = pts[pts.length - 1][0]; const b = frame.getBoundingClientRect();         const x = b.left + 72 + (ts - 5 - from) / (to - from) * (b.width - 72 - 14);         return JSON.stringify({x, y: b.top + 100, value: pts[pts.length - 1][1]}); })()";
    let r = b.call(
        Some(&sid),
        "Runtime.evaluate",
        json!({"expression": aim, "returnByValue": true, "awaitPromise": true}),
    )?;
    let at: Value = serde_json::from_str(r["result"]["value"].as_str().unwrap_or("null"))?;
    anyhow::ensure!(at["x"].is_number(), "cannot aim: {r}");
    b.call(
        Some(&sid),
        "Input.dispatchMouseEvent",
        json!({"type": "mouseMoved", "x": at["x"], "y": at["y"]}),
    )?;
    let shown = eventually(Duration::from_secs(10), || {
        let r = b.call(
            Some(&sid),
            "Runtime.evaluate",
            json!({"expression": "(() => { const o = document.querySelector('figure.panel .readout'); \
                return o && !o.hidden ? o.textContent : ''; })()", "returnByValue": true}),
        )?;
        let text = r["result"]["value"].as_str().unwrap_or("").to_string();
        Ok((!text.is_empty()).then_some(text))
    })?;
    assert!(
        shown.contains("cpu.busy_pct") && shown.contains("cpu.user_pct"),
        "readout lists the lines: {shown}"
    );
    let after = &shown[shown.find("cpu.busy_pct").unwrap_or(0) + "cpu.busy_pct".len()..];
    let digits: String = after
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let read: f64 = digits.parse().unwrap_or(f64::NAN);
    let want = at["value"].as_f64().unwrap_or(f64::NAN);
    assert!(
        (read - want).abs() <= 0.5,
        "readout shows the newest CPU value {want}: {shown}"
    );
    drop(b);
    server.proc.terminate();
    let _ = server.proc.wait_exit(Duration::from_secs(20));
    Ok(())
}

/// The errors a page reported: console errors, uncaught exceptions, and
/// browser log entries (failed loads, CSP refusals). The browser's own
/// request for /favicon.ico is not the page's (it is served all the same).
fn page_errors(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| {
            !e["params"]["entry"]["url"]
                .as_str()
                .is_some_and(|u| u.ends_with("/favicon.ico"))
        })
        .filter_map(|e| match e["method"].as_str()? {
            "Runtime.exceptionThrown" => Some(e["params"]["exceptionDetails"].to_string()),
            "Runtime.consoleAPICalled" if e["params"]["type"] == "error" => {
                Some(e["params"]["args"].to_string())
            }
            "Log.entryAdded" if e["params"]["entry"]["level"] == "error" => {
                Some(e["params"]["entry"].to_string())
            }
            _ => None,
        })
        .collect()
}

#[test]
fn scaling_page_graphs_load_in_chromium_without_errors() -> Result<()> {
    let mut server = Server::start(&[])?;
    let admin = Api::new(&server.url, &server.token("admin")?);
    // Once the local agent's group records cpu.busy_pct, a policy on it.
    eventually(Duration::from_secs(60), || {
        let (_, v) =
            admin.get("/api/v1/query?group=metrolog&agg=avg&name=cpu.busy_pct&from=-10m")?;
        Ok(v["series"][0]["points"]
            .as_array()
            .is_some_and(|p| p.iter().filter(|p| p[1].is_number()).count() >= 2)
            .then_some(()))
    })
    .map_err(|e| anyhow!("{e}\n{}", server.proc.log()))?;
    let policy = json!({"name": "metrolog-cpu", "group": "metrolog", "metric": "cpu.busy_pct",
        "window": "10s", "scale_out_above": 75, "scale_in_below": 25, "min_size": 1, "max_size": 4});
    eventually(Duration::from_secs(30), || {
        let (status, _) =
            admin.post_json("/api/v1/scaling/policies", Some(&admin.token), &policy)?;
        Ok((status == 201).then_some(()))
    })
    .map_err(|e| anyhow!("{e}\n{}", server.proc.log()))?;
    let session = login(&server.url, &server.admin_password)?;

    let mut b = Browser::start()?;
    let sid = b.logged_in_tab(&server.url, &session)?;
    b.call(Some(&sid), "Runtime.enable", json!({}))?;
    b.call(Some(&sid), "Log.enable", json!({}))?;
    // With a dry-run: the policy's graph, the member count, and the dry-run's
    // pinned graph.
    let url = format!(
        "{}/groups/metrolog/scaling?dry_run=1&policy=metrolog-cpu&from=-10m&to=now&scale_out_above=50&scale_in_below=10#range=3600",
        server.url
    );
    let shots = std::env::var_os("METROLOG_E2E_SCREENSHOT_DIR").map(std::path::PathBuf::from);
    for width in [1400u32, 390] {
        b.call(
            Some(&sid),
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": 1000, "deviceScaleFactor": 1, "mobile": width < 600}),
        )?;
        b.call(Some(&sid), "Page.navigate", json!({"url": url}))?;
        let probe = "JSON.stringify({title: document.title, \
            dry: !!document.getElementById('dry-run'), \
            overflow: document.documentElement.scrollWidth - window.innerWidth, \
            imgs: [...document.querySelectorAll('figure.panel img')].map(i => \
            ({w: i.naturalWidth, done: i.complete, shown: i.clientWidth, \
              src: i.getAttribute('src') || ''}))})";
        let start = Instant::now();
        let last = loop {
            let r = b.call(
                Some(&sid),
                "Runtime.evaluate",
                json!({"expression": probe, "returnByValue": true}),
            )?;
            let v: Value = serde_json::from_str(r["result"]["value"].as_str().unwrap_or("null"))?;
            let imgs = v["imgs"].as_array().cloned().unwrap_or_default();
            if imgs.len() == 3
                && imgs
                    .iter()
                    .all(|i| i["w"].as_u64().unwrap_or(0) <= i["shown"].as_u64().unwrap_or(0) + 40)
                && imgs.iter().all(|i| {
                    i["done"] == json!(true)
                        && i["w"].as_u64().unwrap_or(0) > 0
                        && i["src"]
                            .as_str()
                            .unwrap_or("")
                            .contains("/api/v1/graph.svg")
                })
            {
                break v;
            }
            if start.elapsed() > Duration::from_secs(30) {
                bail!("scaling graphs did not load at {width} px: {v}");
            }
            std::thread::sleep(Duration::from_millis(250));
        };
        assert!(
            last["title"]
                .as_str()
                .unwrap_or("")
                .contains("Scaling metrolog"),
            "{last}"
        );
        assert_eq!(last["dry"], json!(true), "{last}");
        let srcs: Vec<&str> = last["imgs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["src"].as_str())
            .collect();
        assert!(
            srcs.iter()
                .any(|s| s.contains("policy=metrolog-cpu") && !s.contains("dry_run")),
            "{last}"
        );
        assert!(srcs.iter().any(|s| s.contains("dry_run=1")), "{last}");
        assert!(srcs.iter().any(|s| s.contains("group.members")), "{last}");
        // Each picture is drawn for the width it is shown at (not shrunk).
        assert!(
            last["overflow"].as_i64().unwrap_or(1) <= 0,
            "the page is wider than {width} px: {last}"
        );
        if let Some(dir) = &shots {
            let shot = b.call(
                Some(&sid),
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true}),
            )?;
            use base64::Engine;
            let png = base64::engine::general_purpose::STANDARD
                .decode(shot["data"].as_str().unwrap_or_default())?;
            std::fs::write(dir.join(format!("scaling-{width}.png")), png)?;
        }
    }
    let errors = page_errors(&b.events);
    assert!(errors.is_empty(), "the page logged errors: {errors:#?}");
    drop(b);
    server.proc.terminate();
    let _ = server.proc.wait_exit(Duration::from_secs(20));
    Ok(())
}

/// What hostile input looks like: markup that would run script if a page
/// inserted it as HTML. Hostnames cannot hold spaces, so theirs uses `/`.
const HOSTILE: &str = "<img src=x onerror=alert(1)>";
const HOSTILE_HOST: &str = "<img/src=x/onerror=alert(1)>";

/// Evaluates `expr` in the page (awaiting a promise) and returns its value.
fn eval(b: &mut Browser, sid: &str, expr: &str) -> Result<Value> {
    let r = b.call(
        Some(sid),
        "Runtime.evaluate",
        json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
    )?;
    if let Some(e) = r.get("exceptionDetails") {
        bail!("{expr}: {e}");
    }
    Ok(r["result"]["value"].clone())
}

/// Polls `expr` in the page until it is true, for at most `secs`.
fn wait_true(b: &mut Browser, sid: &str, expr: &str, secs: u64, what: &str) -> Result<()> {
    let start = Instant::now();
    loop {
        if eval(b, sid, expr).unwrap_or(Value::Null) == json!(true) {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(secs) {
            let text = eval(
                b,
                sid,
                "document.body ? document.body.innerText.slice(0, 2000) : ''",
            )
            .unwrap_or(Value::Null);
            bail!("{what}: not seen within {secs} s; the page shows: {text}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Where screenshots go: `$METROLOG_E2E_SCREENSHOT_DIR`, else
/// `target/e2e-screenshots` (CI keeps it as an artifact).
fn screenshot_dir() -> Result<std::path::PathBuf> {
    let dir = match std::env::var_os("METROLOG_E2E_SCREENSHOT_DIR") {
        Some(d) => std::path::PathBuf::from(d),
        None => std::env::var_os("CARGO_TARGET_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
            .join("e2e-screenshots"),
    };
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn screenshot(b: &mut Browser, sid: &str, path: &Path) -> Result<()> {
    use base64::Engine;
    let shot = b.call(
        Some(sid),
        "Page.captureScreenshot",
        json!({"format": "png", "captureBeyondViewport": true}),
    )?;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().unwrap_or_default())?;
    std::fs::write(path, png)?;
    Ok(())
}

#[test]
fn every_page_renders_hostile_text_as_text_and_admins_create_and_revoke_tokens() -> Result<()> {
    let mut server = Server::start(&[])?;
    // A host whose name, log line and check output are markup.
    let enroll = Api::new(&server.url, &server.enroll_token);
    let (status, enrolled) = enroll.post_json(
        "/api/v1/agent/enroll",
        Some(&server.enroll_token),
        &json!({"hostname": HOSTILE_HOST, "group": "web", "labels": {}, "agent_version": "e2e"}),
    )?;
    anyhow::ensure!(status == 200, "enroll: {status} {enrolled}");
    let host_id = enrolled["host_id"].as_i64().unwrap_or_default();
    let agent_token = enrolled["agent_token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let batch = json!({
        "id": {"stream": "e2ehostile000001", "seq": 1},
        "sent_at": now,
        "logs": [{"ts": now * 1_000_000, "received_at": now * 1_000_000, "app_name": "xss",
                  "severity": 3, "message": format!("login failed for {HOSTILE}")}],
        "checks": [{"name": "xss", "status": 2, "output": format!("CRITICAL - {HOSTILE}"),
                    "ts": now, "duration_ms": 3, "attempt": 1, "max_attempts": 1}],
    });
    let (status, ack) = enroll.post_json("/api/v1/agent/batch", Some(&agent_token), &batch)?;
    anyhow::ensure!(status == 200, "batch: {status} {ack}");
    let session = login(&server.url, &server.admin_password)?;

    let mut b = Browser::start()?;
    let sid = b.logged_in_tab(&server.url, &session)?;
    b.call(Some(&sid), "Runtime.enable", json!({}))?;
    b.call(Some(&sid), "Log.enable", json!({}))?;
    let dir = screenshot_dir()?;
    // Each page, what shows it is ready, and whether the hostile text is on it.
    let pages = [
        ("overview", "/".to_string(), Some(HOSTILE_HOST)),
        ("host", format!("/hosts/{host_id}"), Some(HOSTILE)),
        ("group", "/groups/web".to_string(), Some(HOSTILE_HOST)),
        ("groups", "/groups".to_string(), None),
        ("hosts", "/hosts".to_string(), Some(HOSTILE_HOST)),
        ("logs", "/logs".to_string(), Some(HOSTILE)),
        ("alarms", "/alarms".to_string(), None),
        ("scaling", "/scaling".to_string(), None),
        ("admin", "/admin".to_string(), Some(HOSTILE_HOST)),
    ];
    for width in [1280u32, 390] {
        b.call(
            Some(&sid),
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": width < 600}),
        )?;
        for (name, path, hostile) in &pages {
            let url = format!("{}{path}", server.url);
            b.call(Some(&sid), "Page.navigate", json!({"url": url}))?;
            wait_true(
                &mut b,
                &sid,
                &format!(
                    "document.readyState === 'complete' && location.pathname === {}",
                    json!(path)
                ),
                20,
                &format!("{name} page loaded"),
            )?;
            if let Some(text) = hostile {
                // Shown as the characters it is made of, never as an element.
                wait_true(
                    &mut b,
                    &sid,
                    &format!("document.body.innerText.includes({})", json!(text)),
                    20,
                    &format!("{name} page shows {text} as text"),
                )?;
            }
            let injected = eval(
                &mut b,
                &sid,
                "document.querySelectorAll('img[src=\"x\"], img:not([src])').length",
            )?;
            assert_eq!(
                injected,
                json!(0),
                "{name}: markup from input became an element"
            );
            let nav = eval(
                &mut b,
                &sid,
                "[...document.querySelectorAll('header.top nav a')].map(a => a.textContent).join(',')",
            )?;
            assert_eq!(
                nav,
                json!("Overview,Groups,Hosts,Logs,Alarms,Scaling,Admin"),
                "{name}: the navigation"
            );
            let overflow = eval(
                &mut b,
                &sid,
                "document.documentElement.scrollWidth - window.innerWidth",
            )?;
            assert!(
                overflow.as_i64().unwrap_or(1) <= 0,
                "{name} is wider than {width} px ({overflow} px too wide)"
            );
            screenshot(&mut b, &sid, &dir.join(format!("{name}-{width}.png")))?;
        }
    }
    // The red host says why: the check's rule, its state and its output.
    b.call(
        Some(&sid),
        "Page.navigate",
        json!({"url": format!("{}/hosts/{host_id}", server.url)}),
    )?;
    wait_true(
        &mut b,
        &sid,
        "!!document.querySelector('table.checks .state-critical')",
        20,
        "the host page's CRITICAL check",
    )?;

    // An admin creates a token: shown once, it works; revoked, it does not.
    b.call(
        Some(&sid),
        "Page.navigate",
        json!({"url": format!("{}/admin", server.url)}),
    )?;
    wait_true(
        &mut b,
        &sid,
        "!!document.getElementById('create-token')",
        20,
        "admin page",
    )?;
    eval(
        &mut b,
        &sid,
        "(() => { const f = document.getElementById('create-token'); \
           f.querySelector('[name=name]').value = 'from-the-browser'; \
           f.querySelector('[name=role]').value = 'viewer'; f.requestSubmit(); return true; })()",
    )?;
    wait_true(
        &mut b,
        &sid,
        "!!document.getElementById('new-token')",
        20,
        "the new token",
    )?;
    let secret = eval(
        &mut b,
        &sid,
        "document.getElementById('new-token').textContent",
    )?
    .as_str()
    .unwrap_or_default()
    .to_string();
    anyhow::ensure!(secret.starts_with("mlg_"), "the page shows {secret:?}");
    let reader = Api::new(&server.url, &secret);
    let (status, _) = reader.get("/api/v1/hosts")?;
    assert_eq!(status, 200, "the new token reads the API");
    eval(
        &mut b,
        &sid,
        "(() => { const row = [...document.querySelectorAll('#tokens tr')] \
           .find(r => r.cells[0] && r.cells[0].textContent === 'from-the-browser'); \
           row.querySelector('button').click(); return true; })()",
    )?;
    wait_true(
        &mut b,
        &sid,
        "location.hash === '#tokens' && [...document.querySelectorAll('#tokens tr')] \
           .some(r => r.cells[0] && r.cells[0].textContent === 'from-the-browser' \
                 && r.textContent.includes('revoked'))",
        20,
        "the revoked token",
    )?;
    let (status, _) = reader.get("/api/v1/hosts")?;
    assert_eq!(status, 401, "a revoked token is refused");

    let errors = page_errors(&b.events);
    assert!(errors.is_empty(), "pages logged errors: {errors:#?}");
    drop(b);
    server.proc.terminate();
    let _ = server.proc.wait_exit(Duration::from_secs(20));
    Ok(())
}

/// A new operator's first minutes, in the browser: the empty overview shows
/// the exact enrollment command with a fresh token; that command, run as it
/// is, brings the machine onto the overview; a rule that fires turns the host
/// red on the overview with a link to why, and its page says which rule,
/// since when, the value and the output; "Enroll another machine" gives the
/// next command. Screenshots: overview-empty, overview-red, host-red (both
/// widths).
#[test]
fn a_new_operator_enrolls_a_machine_from_the_overview_and_sees_why_it_is_red() -> Result<()> {
    let mut server = Server::start(&["--no-local-agent"])?;
    let session = login(&server.url, &server.admin_password)?;
    let mut b = Browser::start()?;
    let sid = b.logged_in_tab(&server.url, &session)?;
    b.call(Some(&sid), "Runtime.enable", json!({}))?;
    let dir = screenshot_dir()?;
    let shots = |b: &mut Browser, name: &str| -> Result<()> {
        for width in [1280u32, 390] {
            b.call(
                Some(&sid),
                "Emulation.setDeviceMetricsOverride",
                json!({"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": width < 600}),
            )?;
            let overflow = eval(
                b,
                &sid,
                "document.documentElement.scrollWidth - window.innerWidth",
            )?;
            anyhow::ensure!(
                overflow.as_i64().unwrap_or(1) <= 0,
                "{name} is wider than {width} px ({overflow} px too wide)"
            );
            screenshot(b, &sid, &dir.join(format!("{name}-{width}.png")))?;
        }
        Ok(())
    };
    let goto = |b: &mut Browser, path: &str| -> Result<()> {
        b.call(
            Some(&sid),
            "Page.navigate",
            json!({"url": format!("{}{path}", server.url)}),
        )?;
        wait_true(
            b,
            &sid,
            &format!(
                "document.readyState === 'complete' && location.pathname === {}",
                json!(path)
            ),
            20,
            path,
        )
    };

    goto(&mut b, "/")?;
    wait_true(
        &mut b,
        &sid,
        "!!document.getElementById('enroll-command')",
        20,
        "the enrollment command on the empty overview",
    )?;
    let command = eval(
        &mut b,
        &sid,
        "document.getElementById('enroll-command').textContent",
    )?
    .as_str()
    .unwrap_or_default()
    .to_string();
    shots(&mut b, "overview-empty")?;
    let words: Vec<&str> = command.split_whitespace().collect();
    anyhow::ensure!(
        words.len() >= 5
            && words[0] == "metrolog-agent"
            && words[1..3] == ["--server", server.url.as_str()]
            && words[3] == "--enroll-token"
            && words[4].starts_with("mlg_")
            && words[4] != server.enroll_token,
        "the command names this server and a fresh token: {command:?}"
    );

    // The command as shown (with a state directory of its own, as a test
    // must not write /var/lib).
    let state = tempfile::tempdir()?;
    let mut cmd = std::process::Command::new(metrolog_e2e::binary("metrolog-agent"));
    cmd.args(&words[1..])
        .arg("--state-dir")
        .arg(state.path())
        .current_dir(state.path());
    let mut agent = metrolog_e2e::Proc::spawn("agent from the overview", cmd)?;
    wait_true(
        &mut b,
        &sid,
        "document.querySelectorAll('#groups table.hosts tbody tr').length === 1",
        40,
        "the enrolled machine on the overview",
    )
    .map_err(|e| anyhow!("{e}\n{}", agent.log()))?;
    let host_id = eval(
        &mut b,
        &sid,
        "document.querySelector('#groups table.hosts tbody a').getAttribute('href').split('/').pop()",
    )?
    .as_str()
    .unwrap_or_default()
    .to_string();

    // A rule that fires on what every machine reports.
    let admin = Api::new(&server.url, &server.token("admin")?);
    let (status, body) = admin.post_json(
        "/api/v1/rules",
        Some(&admin.token),
        &json!({"name": "memory-in-use", "kind": "threshold", "metric": "mem.used_pct",
                "critical": "~:0.5"}),
    )?;
    anyhow::ensure!(status == 200 || status == 201, "rule: {status} {body}");
    // The overview marks the host red (no reload: its refresh) and links to why.
    wait_true(
        &mut b,
        &sid,
        "!!document.querySelector('#groups a.state-critical[href$=\"#why\"]')",
        60,
        "the red host on the overview",
    )?;
    shots(&mut b, "overview-red")?;
    eval(
        &mut b,
        &sid,
        "document.querySelector('#groups a.state-critical').click(), true",
    )?;
    wait_true(
        &mut b,
        &sid,
        &format!("location.pathname === '/hosts/{host_id}' && !!document.getElementById('why')"),
        20,
        "the host page's problems",
    )?;
    let why = eval(&mut b, &sid, "document.getElementById('why').innerText")?
        .as_str()
        .unwrap_or_default()
        .to_string();
    for part in ["CRITICAL", "memory-in-use", "since", "ago", "value"] {
        anyhow::ensure!(
            why.contains(part),
            "the host page says why without {part:?}: {why}"
        );
    }
    shots(&mut b, "host-red")?;

    // The next machine: one click gives its command.
    goto(&mut b, "/")?;
    eval(
        &mut b,
        &sid,
        "document.querySelector('#enroll-another button').click(), true",
    )?;
    wait_true(
        &mut b,
        &sid,
        "location.pathname === '/admin/tokens' && !!document.getElementById('enroll-command') \
           && document.getElementById('enroll-command').textContent.startsWith('metrolog-agent --server ')",
        20,
        "the command for another machine",
    )?;
    let next = eval(
        &mut b,
        &sid,
        "document.getElementById('enroll-command').textContent",
    )?;
    anyhow::ensure!(
        next.as_str().is_some_and(|c| c != command),
        "another, fresh command: {next}"
    );

    let errors = page_errors(&b.events);
    assert!(errors.is_empty(), "pages logged errors: {errors:#?}");
    drop(b);
    agent.terminate();
    let _ = agent.wait_exit(Duration::from_secs(20));
    server.proc.terminate();
    let _ = server.proc.wait_exit(Duration::from_secs(20));
    Ok(())
}
