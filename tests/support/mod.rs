//! Helpers for the end-to-end tests: locate and start the real
//! `metrolog-server` and `metrolog-agent` binaries on random ports, talk to
//! them over real sockets, and wait for conditions with deadlines.

pub mod receiver;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Path of a binary of this workspace (`target/<profile>/<name>`), built first.
///
/// `cargo test -p metrolog-e2e` does not build other packages' binaries, and
/// `--tests` alone builds a package's binaries only when that package has
/// integration tests of its own (the load generator has none), so the first
/// call runs `cargo build --workspace --tests --bins` (a no-op when they are
/// fresh) to never test a stale or missing binary.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/e2e-xxxx → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        // `--workspace --tests` resolves features exactly as `cargo test
        // --workspace` and `cargo nextest run --workspace` do, so after those
        // this rebuilds nothing with other features; `--bins` adds the
        // binaries that no integration test of their own package asks for.
        cmd.args(["build", "--workspace", "--tests", "--bins"])
            .arg("--manifest-path")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml"));
        if dir.file_name().is_some_and(|p| p == "release") {
            cmd.arg("--release");
        }
        if let Some(target) = dir.parent() {
            cmd.env("CARGO_TARGET_DIR", target);
        }
        // Cargo gives this test process the variables of its own package
        // (CARGO_MANIFEST_DIR, CARGO_PKG_*, ...). Passed on, they change the
        // fingerprint of build scripts that watch them (ring watches
        // CARGO_MANIFEST_DIR), so every test run would rebuild the TLS stack
        // and the next `cargo nextest run` rebuild it back.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("CARGO_")
                && !matches!(&*key, "CARGO_HOME" | "CARGO_TARGET_DIR")
                && !key.starts_with("CARGO_BUILD_")
                && !key.starts_with("CARGO_TERM_")
                && !key.starts_with("CARGO_PROFILE_")
                && !key.starts_with("CARGO_REGISTRIES_")
                && !key.starts_with("CARGO_NET_")
            {
                cmd.env_remove(&*key);
            }
        }
        let out = cmd.output().expect("running cargo build");
        assert!(
            out.status.success(),
            "building the binaries failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    let path = dir.join(name);
    assert!(path.exists(), "{} not found after building", path.display());
    path
}

/// A child process killed when dropped, with its output collected.
pub struct Proc {
    pub child: Child,
    pub name: String,
    lines: mpsc::Receiver<String>,
    pub output: Vec<String>,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command) -> Result<Self> {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        cmd.env("RUST_LOG", "info");
        let mut child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        let (tx, rx) = mpsc::channel();
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Ok(Self {
            child,
            name: name.to_string(),
            lines: rx,
            output: Vec::new(),
        })
    }

    /// Waits for an output line containing `needle` and returns it.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        self.wait_for_line_where(&format!("containing {needle:?}"), timeout, |line| {
            line.contains(needle)
        })
    }

    /// Waits for an output line for which `wanted` holds and returns it;
    /// `what` describes such a line in the error.
    pub fn wait_for_line_where(
        &mut self,
        what: &str,
        timeout: Duration,
        wanted: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.output.push(line.clone());
                    if wanted(&line) {
                        return Ok(line);
                    }
                }
                Err(_) => {
                    let log = self.log();
                    bail!(
                        "{}: no line {what} within {timeout:?}; output so far:\n{log}",
                        self.name
                    )
                }
            }
        }
    }

    /// Everything printed so far.
    pub fn log(&mut self) -> String {
        while let Ok(line) = self.lines.try_recv() {
            self.output.push(line);
        }
        self.output.join("\n")
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let log = self.log();
                bail!("{} did not exit within {timeout:?}:\n{log}", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running server with a data directory of its own.
pub struct Server {
    pub proc: Proc,
    pub url: String,
    pub data_dir: PathBuf,
    pub enroll_token: String,
    pub admin_password: String,
    _dir: Option<tempfile::TempDir>,
}

pub const ENROLL_TOKEN: &str = "mlg_e2e-enrollment-token-0123456789abcdef";

impl Server {
    /// Starts `metrolog-server` on a random port with syslog off.
    pub fn start(extra: &[&str]) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut s = Self::start_in(dir.path(), extra)?;
        s._dir = Some(dir);
        Ok(s)
    }

    pub fn start_in(data_dir: &Path, extra: &[&str]) -> Result<Self> {
        Self::spawn(data_dir, ["off", "off"], extra)
    }

    /// Starts the binary on `data_dir` with syslog receivers on `[udp, tcp]`
    /// (an address or "off"; the CLI takes each flag once) and waits for the
    /// dashboard line.
    fn spawn(data_dir: &Path, syslog: [&str; 2], extra: &[&str]) -> Result<Self> {
        let mut cmd = Command::new(binary("metrolog-server"));
        cmd.arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--syslog-udp", syslog[0], "--syslog-tcp", syslog[1]])
            .args(extra)
            .env("METROLOG_ADMIN_PASSWORD", "e2e-admin-password")
            .env("METROLOG_ENROLL_TOKEN", ENROLL_TOKEN);
        let mut proc = Proc::spawn("metrolog-server", cmd)?;
        let line = proc.wait_for_line("Dashboard: http://", Duration::from_secs(30))?;
        let url = line
            .split("Dashboard: ")
            .nth(1)
            .ok_or_else(|| anyhow!("no URL in {line:?}"))?
            .trim()
            .trim_end_matches('/')
            .to_string();
        Ok(Self {
            proc,
            url,
            data_dir: data_dir.to_path_buf(),
            enroll_token: ENROLL_TOKEN.into(),
            admin_password: "e2e-admin-password".into(),
            _dir: None,
        })
    }

    /// Runs a `metrolog-server` sub-command against this server's data dir.
    pub fn subcommand(&self, args: &[&str]) -> Result<std::process::Output> {
        Ok(Command::new(binary("metrolog-server"))
            .args(args)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .output()?)
    }

    /// A fresh API token with `role`.
    pub fn token(&self, role: &str) -> Result<String> {
        let out = self.subcommand(&["token", "create", "--role", role])?;
        if !out.status.success() {
            bail!(
                "token create failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?.trim().to_string())
    }
}

/// Starts an agent standing for `hostname` in `group`.
pub fn start_agent(
    server: &Server,
    hostname: &str,
    group: &str,
    state_dir: &Path,
    extra: &[&str],
) -> Result<Proc> {
    let mut cmd = Command::new(binary("metrolog-agent"));
    cmd.args(["--server", &server.url])
        .args(["--enroll-token", &server.enroll_token])
        .args(["--hostname", hostname])
        .args(["--group", group])
        .arg("--state-dir")
        .arg(state_dir)
        .args(extra);
    Proc::spawn(&format!("agent {hostname}"), cmd)
}

/// A small blocking API client.
pub struct Api {
    pub base: String,
    pub token: String,
    http: reqwest::blocking::Client,
}

impl Api {
    pub fn new(base: &str, token: &str) -> Self {
        Self {
            base: base.to_string(),
            token: token.to_string(),
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("http client"),
        }
    }

    /// GET with the token; returns (status, JSON body or Null).
    pub fn get(&self, path: &str) -> Result<(u16, Value)> {
        self.get_with(path, Some(&self.token))
    }

    pub fn get_with(&self, path: &str, token: Option<&str>) -> Result<(u16, Value)> {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send()?;
        let status = resp.status().as_u16();
        let text = resp.text()?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// DELETE with `token`; returns the status.
    pub fn delete(&self, path: &str, token: &str) -> Result<u16> {
        let resp = self
            .http
            .delete(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()?;
        Ok(resp.status().as_u16())
    }

    /// The id of host `hostname` in `/api/v1/hosts`, if it is there.
    pub fn host_id(&self, hostname: &str) -> Result<Option<i64>> {
        let (status, hosts) = self.get("/api/v1/hosts")?;
        anyhow::ensure!(status == 200, "hosts: {status} {hosts}");
        Ok(hosts
            .as_array()
            .into_iter()
            .flatten()
            .find(|h| h["hostname"] == hostname)
            .and_then(|h| h["id"].as_i64()))
    }

    pub fn post_json(&self, path: &str, token: Option<&str>, body: &Value) -> Result<(u16, Value)> {
        let mut req = self.http.post(format!("{}{path}", self.base)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send()?;
        let status = resp.status().as_u16();
        let text = resp.text()?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }
}

/// Polls `check` until it returns `Some`, or fails after `timeout` with the last
/// reason. For conditions only observable through the API.
pub fn eventually<T>(timeout: Duration, mut check: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => String::from("condition not met yet"),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() > deadline {
            bail!("condition not met within {timeout:?}: {last}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The log records stored for host `hostname` (and app `app`, when given),
/// newest first, as JSON objects with at least `message`, `app_name`,
/// `severity` (a name or null) and `truncated`.
///
/// Reads every page of `GET /api/v1/logs`; any answer but 200 fails (the
/// API is what is under test, so nothing reads around it).
pub fn stored_logs(
    _server: &Server,
    api: &Api,
    hostname: &str,
    app: Option<&str>,
) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let mut path = format!("/api/v1/logs?host={hostname}&limit=1000");
        if let Some(a) = app {
            path.push_str(&format!("&app={a}"));
        }
        if let Some(b) = &before {
            path.push_str(&format!("&before={b}"));
        }
        let (status, page) = api.get(&path)?;
        anyhow::ensure!(status == 200, "GET {path}: {status} {page}");
        let records = page["records"]
            .as_array()
            .ok_or_else(|| anyhow!("no records in {page}"))?;
        out.extend(records.iter().cloned());
        match page["next"].as_str() {
            Some(n) => before = Some(n.to_string()),
            None => return Ok(out),
        }
    }
}

/// Bound syslog receiver addresses of a server started with syslog on.
#[derive(Debug, Clone, Copy)]
pub struct SyslogAddrs {
    pub udp: std::net::SocketAddr,
    pub tcp: std::net::SocketAddr,
}

impl Server {
    /// Starts `metrolog-server` with its syslog receivers on random loopback
    /// ports (read back from the `Syslog UDP:` / `Syslog TCP:` lines it prints).
    pub fn start_with_syslog(extra: &[&str]) -> Result<(Self, SyslogAddrs)> {
        let dir = tempfile::tempdir()?;
        let mut server = Self::spawn(dir.path(), ["127.0.0.1:0", "127.0.0.1:0"], extra)?;
        server._dir = Some(dir);
        let addrs = SyslogAddrs {
            udp: server.printed_addr("Syslog UDP")?,
            tcp: server.printed_addr("Syslog TCP")?,
        };
        Ok((server, addrs))
    }
}

impl Server {
    /// An address the server printed before its dashboard line, such as
    /// `Syslog TLS: 127.0.0.1:40123` for `label` "Syslog TLS".
    pub fn printed_addr(&mut self, label: &str) -> Result<std::net::SocketAddr> {
        let needle = format!("{label}: ");
        let log = self.proc.log();
        let line = log
            .lines()
            .find(|l| l.contains(&needle))
            .ok_or_else(|| anyhow!("the server printed no {needle:?} line:\n{log}"))?;
        Ok(line.split(&needle).nth(1).unwrap_or("").trim().parse()?)
    }
}

/// A word no other test line contains.
pub fn unique(tag: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{tag}{n:x}")
}

/// Log records matching `query` (the `/api/v1/logs` parameters), newest first.
pub fn records(api: &Api, query: &str) -> Result<Vec<Value>> {
    let (status, body) = api.get(&format!("/api/v1/logs?{query}"))?;
    anyhow::ensure!(status == 200, "logs?{query}: {status} {body}");
    Ok(body["records"].as_array().cloned().unwrap_or_default())
}

/// Waits until `query` returns exactly `n` records (more is an error at once),
/// and returns them.
pub fn wait_for_logs(api: &Api, query: &str, n: usize, timeout: Duration) -> Result<Vec<Value>> {
    eventually(timeout, || {
        let recs = records(api, query)?;
        if recs.len() > n {
            bail!(
                "logs?{query}: {} records, expected {n}: {recs:?}",
                recs.len()
            );
        }
        Ok((recs.len() == n).then_some(recs))
    })
}

/// The value of the first `/metrics` line starting with `line_prefix` (give
/// the metric's full name and labels, then a space).
pub fn metric(api: &Api, line_prefix: &str) -> Result<u64> {
    let text = reqwest::blocking::get(format!("{}/metrics", api.base))?.text()?;
    text.lines()
        .find_map(|l| l.strip_prefix(line_prefix))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no {line_prefix:?} in /metrics"))
}

/// A UDP port free right now (rsyslog binds it next).
pub fn free_udp_port() -> Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A private `rsyslogd` in the foreground running `conf` (written to `dir`,
/// which also holds its pid file); `packages` names what to install if it
/// cannot start.
pub fn spawn_rsyslogd(dir: &Path, conf: &str, packages: &str) -> Result<Proc> {
    let conf_path = dir.join("rsyslog.conf");
    std::fs::write(&conf_path, conf)?;
    let mut cmd = Command::new("rsyslogd");
    cmd.arg("-n")
        .arg("-f")
        .arg(&conf_path)
        .arg("-i")
        .arg(dir.join("rsyslogd.pid"));
    Proc::spawn("rsyslogd", cmd)
        .with_context(|| format!("starting rsyslogd (apt-get install {packages})"))
}

/// Runs `cmd` to completion and returns its output; fails, naming the program,
/// its arguments and its stderr, unless it exits successfully. `package` says
/// where the program comes from, for when it cannot be started at all.
pub fn run_ok(cmd: &mut Command, package: &str) -> Result<std::process::Output> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let args: Vec<String> = cmd
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let out = cmd
        .output()
        .with_context(|| format!("running {program} ({package})"))?;
    anyhow::ensure!(
        out.status.success(),
        "{program} {args:?}: {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out)
}

/// util-linux `logger` with `args`.
pub fn logger(args: &[&str]) -> Result<()> {
    run_ok(
        Command::new("logger").args(args),
        "util-linux logger: apt-get install bsdutils",
    )?;
    Ok(())
}

/// A small tmpfs mounted by a test (a full disk on demand), unmounted on drop.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` ("1m", "64k") on `dir`. `None` only when the
    /// operator set `METROLOG_SKIP_TMPFS=1` (README, "Test it"); otherwise a
    /// machine that cannot mount fails the test, so it never passes without
    /// having run.
    pub fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).ok()?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs(dir.to_path_buf())),
            _ if std::env::var_os("METROLOG_SKIP_TMPFS").is_some_and(|v| v == "1") => {
                eprintln!("METROLOG_SKIP_TMPFS=1: not run (it needs to mount a tmpfs)");
                None
            }
            Ok(o) => panic!(
                "cannot mount a tmpfs on {} ({}: {}): this test needs root (CAP_SYS_ADMIN); \
                 run it as root or set METROLOG_SKIP_TMPFS=1 to skip it",
                dir.display(),
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => panic!(
                "cannot run mount ({e}): install util-linux's mount and run as root, \
                 or set METROLOG_SKIP_TMPFS=1 to skip this test"
            ),
        }
    }

    /// Writes zeros into a file `name` on it until the file system refuses
    /// more (ENOSPC); returns the bytes written.
    pub fn fill(&self, name: &str) -> Result<u64> {
        use std::io::Write;
        let mut f = std::fs::File::create(self.0.join(name))?;
        let block = vec![0u8; 64 * 1024];
        let mut written = 0u64;
        for size in [block.len(), 4096, 512] {
            loop {
                match f.write(&block[..size]) {
                    Ok(0) => break,
                    Ok(n) => written += n as u64,
                    Err(e) if e.raw_os_error() == Some(28) => break,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(written)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The value of cookie `name` set by `resp`.
pub fn cookie(resp: &reqwest::blocking::Response, name: &str) -> Result<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix(&format!("{name}=")))
        .and_then(|c| c.split(';').next())
        .map(str::to_string)
        .ok_or_else(|| anyhow!("no {name} cookie"))
}

/// The hidden `csrf` field of a page's form.
pub fn csrf_field(html: &str) -> Result<String> {
    html.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .map(str::to_string)
        .ok_or_else(|| anyhow!("no csrf field in the page"))
}

/// Logs in as `admin` through the form; the session cookie's value.
pub fn login(base: &str, password: &str) -> Result<String> {
    let client = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let page = client.get(format!("{base}/login")).send()?;
    let csrf_cookie = cookie(&page, "ml_login_csrf")?;
    let csrf = csrf_field(&page.text()?)?;
    let resp = client
        .post(format!("{base}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", format!("ml_login_csrf={csrf_cookie}"))
        .body(format!("username=admin&password={password}&csrf={csrf}"))
        .send()?;
    if resp.status() != 303 {
        bail!("login answered {}", resp.status());
    }
    cookie(&resp, "ml_session")
}
