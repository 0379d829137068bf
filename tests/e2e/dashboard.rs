//! The dashboard in a real browser: log in, open the host page in headless
//! Chromium and check that every graph image loaded.
//!
//! Chromium is driven over the DevTools protocol on a pipe
//! (`--remote-debugging-pipe`: JSON messages ending in NUL on fds 3 and 4), so
//! no WebSocket client is needed. Skipped when Chromium is not installed.

use anyhow::{anyhow, bail, Context, Result};
use metrolog_e2e::{eventually, Api, Server};
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
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Result<Browser> {
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
            _profile: profile,
        })
    }

    /// Sends one command (to a page when `session` is given) and returns its
    /// result, skipping the events in between.
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
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Logs in through the form and returns the session cookie's value.
fn login(base: &str, password: &str) -> Result<String> {
    let client = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let page = client.get(format!("{base}/login")).send()?;
    let csrf_cookie = cookie(&page, "ml_login_csrf")?;
    let html = page.text()?;
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .ok_or_else(|| anyhow!("no csrf field in the login page"))?;
    let body = format!("username=admin&password={password}&csrf={csrf}");
    let resp = client
        .post(format!("{base}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", format!("ml_login_csrf={csrf_cookie}"))
        .body(body)
        .send()?;
    if resp.status() != 303 {
        bail!("login answered {}", resp.status());
    }
    cookie(&resp, "ml_session")
}

fn cookie(resp: &reqwest::blocking::Response, name: &str) -> Result<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix(&format!("{name}=")))
        .and_then(|c| c.split(';').next())
        .map(str::to_string)
        .ok_or_else(|| anyhow!("no {name} cookie"))
}

#[test]
fn host_page_graphs_load_in_chromium() -> Result<()> {
    if !Path::new(CHROMIUM).exists() {
        eprintln!("skipped: {CHROMIUM} is not installed (apt-get install chromium)");
        return Ok(());
    }
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
    b.call(
        None,
        "Storage.setCookies",
        json!({"cookies": [{"name": "ml_session", "value": session, "url": server.url}]}),
    )?;
    let target = b.call(None, "Target.createTarget", json!({"url": "about:blank"}))?;
    let attached = b.call(
        None,
        "Target.attachToTarget",
        json!({"targetId": target["targetId"], "flatten": true}),
    )?;
    let sid = attached["sessionId"]
        .as_str()
        .ok_or_else(|| anyhow!("no session id"))?
        .to_string();
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
