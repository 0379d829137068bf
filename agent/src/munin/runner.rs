//! Runs one Munin plugin once, as munin-node 2.0 runs it: `plugins_dir/NAME`
//! (so a wildcard plugin reads its parameter from its link name) with
//! `config` or no argument, cwd `/`, in a session of its own (`setsid`), as
//! the user and groups `plugin-conf.d` names (default `nobody` and
//! `munin`), with munin-node's environment and the plugin's `env.*`, and
//! nothing of the agent's own environment (it may hold the enrollment
//! token). On timeout the process group gets SIGHUP, then SIGKILL 2 s later.
//!
//! An agent that is not root cannot change user: plugins then run as the
//! agent's user, and a `user`/`group` in `plugin-conf.d` is reported once.

use super::plugin_conf::PluginConf;
use crate::subprocess::{self, io_reason, Ending, Finished};
use rustix::process::{Gid, Signal, Uid};
use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// munin-node waits this long between SIGHUP and SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(2);
/// Stderr kept, for the reason of a failure.
const STDERR_CAP: usize = 2048;
/// munin-node's `PATH` ("very sane by default").
pub const PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// The identity a plugin runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// User name (for `MUNIN_PLUGSTATE`).
    pub user: String,
    pub uid: u32,
    /// Primary group.
    pub gid: u32,
    /// Supplementary groups (munin-node: the listed groups, the primary first).
    pub groups: Vec<u32>,
    /// Whether to switch to it (only an agent running as root can).
    pub switch: bool,
}

/// `/etc/passwd` and `/etc/group`, read once per directory scan.
#[derive(Debug, Default, Clone)]
pub struct Accounts {
    users: BTreeMap<String, (u32, u32)>,
    uid_names: BTreeMap<u32, String>,
    groups: BTreeMap<String, u32>,
}

impl Accounts {
    /// Reads the local account files (names are resolved from them, not
    /// through NSS).
    pub fn read(etc: &Path) -> Self {
        let mut a = Self::default();
        if let Ok(text) = std::fs::read_to_string(etc.join("passwd")) {
            for line in text.lines() {
                let f: Vec<&str> = line.split(':').collect();
                if let (Some(name), Some(uid), Some(gid)) = (f.first(), f.get(2), f.get(3)) {
                    if let (Ok(uid), Ok(gid)) = (uid.parse(), gid.parse()) {
                        a.users.entry(name.to_string()).or_insert((uid, gid));
                        a.uid_names.entry(uid).or_insert_with(|| name.to_string());
                    }
                }
            }
        }
        if let Ok(text) = std::fs::read_to_string(etc.join("group")) {
            for line in text.lines() {
                let f: Vec<&str> = line.split(':').collect();
                if let (Some(name), Some(gid)) = (f.first(), f.get(2)) {
                    if let Ok(gid) = gid.parse() {
                        a.groups.entry(name.to_string()).or_insert(gid);
                    }
                }
            }
        }
        a
    }

    /// A user by name or number: (name, uid, primary gid).
    pub fn user(&self, name: &str) -> Option<(String, u32, u32)> {
        if let Some((uid, gid)) = self.users.get(name) {
            return Some((name.to_string(), *uid, *gid));
        }
        let uid: u32 = name.parse().ok()?;
        let user = self.uid_names.get(&uid)?;
        let (_, gid) = self.users[user];
        Some((user.clone(), uid, gid))
    }

    pub fn group(&self, name: &str) -> Option<u32> {
        self.groups.get(name).copied().or_else(|| name.parse().ok())
    }

    /// The identity `conf` asks for (`default_user`/`default_group` when it
    /// names none), as munin-node resolves it.
    pub fn run_as(
        &self,
        conf: &PluginConf,
        default_user: &str,
        default_group: &str,
    ) -> Result<RunAs, String> {
        let me = rustix::process::geteuid().as_raw();
        if me != 0 {
            let user = self
                .uid_names
                .get(&me)
                .cloned()
                .unwrap_or_else(|| me.to_string());
            let gid = rustix::process::getegid().as_raw();
            return Ok(RunAs {
                user,
                uid: me,
                gid,
                groups: vec![gid],
                switch: false,
            });
        }
        let wanted = conf.user.as_deref().unwrap_or(default_user);
        let (user, uid, user_gid) = self
            .user(wanted)
            .ok_or_else(|| format!("user {wanted:?} does not exist"))?;
        let mut gids = Vec::new();
        for g in conf.groups.iter().flatten() {
            let (name, optional) = match g.strip_prefix('(').and_then(|g| g.strip_suffix(')')) {
                Some(inner) => (inner, true),
                None => (g.as_str(), false),
            };
            match self.group(name) {
                Some(gid) => gids.push(gid),
                None if optional => {}
                None => return Err(format!("group {name:?} does not exist")),
            }
        }
        let gid = match gids.first() {
            Some(g) => *g,
            None => self.group(default_group).unwrap_or(user_gid),
        };
        if gids.is_empty() {
            gids.push(gid);
        }
        Ok(RunAs {
            user,
            uid,
            gid,
            groups: gids,
            switch: true,
        })
    }
}

/// Everything needed to run one plugin.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    /// The plugin's name in `plugins_dir` (its link name).
    pub name: String,
    /// `plugins_dir/name`.
    pub path: PathBuf,
    pub run_as: RunAs,
    /// `command` from `plugin-conf.d`, `%c` standing for the plugin.
    pub command: Option<Vec<String>>,
    pub env: BTreeMap<String, String>,
    pub timeout: Duration,
    pub max_output_bytes: usize,
}

/// munin-node's environment for every plugin (`Munin::Common::Defaults`
/// of Debian's 2.0.73 and what munin-node adds), before the per-plugin
/// `MUNIN_PLUGSTATE`, `MUNIN_STATEFILE` and `env.*`.
pub fn base_env(libdir: &Path, fqdn: &str) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = [
        ("MUNIN_PREFIX", "/usr"),
        ("MUNIN_CONFDIR", "/etc/munin"),
        ("MUNIN_BINDIR", "/usr/bin"),
        ("MUNIN_SBINDIR", "/usr/sbin"),
        ("MUNIN_DOCDIR", "/usr/doc"),
        ("MUNIN_HTMLDIR", "/var/cache/munin/www"),
        ("MUNIN_CGIDIR", "/usr/lib/munin/cgi"),
        ("MUNIN_CGITMPDIR", ""),
        ("MUNIN_DBDIR", "/var/lib/munin"),
        ("MUNIN_SPOOLDIR", "/var/lib/munin-async"),
        ("MUNIN_MANDIR", "/usr/share/man"),
        ("MUNIN_LOGDIR", "/var/log/munin"),
        ("MUNIN_STATEDIR", "/var/run/munin"),
        ("MUNIN_USER", "munin"),
        ("MUNIN_GROUP", "munin"),
        ("MUNIN_PLUGINUSER", "nobody"),
        ("MUNIN_VERSION", "2.0.73"),
        ("MUNIN_PERL", "/usr/bin/perl"),
        ("MUNIN_PERLLIB", "/usr/share/perl5"),
        ("MUNIN_GOODSH", "/bin/sh"),
        ("MUNIN_BASH", "/bin/bash"),
        ("MUNIN_PYTHON", "/usr/bin/env python3"),
        ("MUNIN_RUBY", "/usr/bin/env ruby"),
        ("MUNIN_OSTYPE", "linux"),
        ("MUNIN_HOSTNAME", "localhost.localdomain"),
        ("MUNIN_MKTEMP", "mktemp -p /tmp/ $1"),
        ("MUNIN_HASSETR", "1"),
        ("MUNIN_DEBUG", "0"),
        ("MUNIN_MASTER_IP", ""),
        ("MUNIN_CAP_MULTIGRAPH", "1"),
        ("MUNIN_CAP_DIRTYCONFIG", "1"),
        ("LC_ALL", "C"),
        ("LANG", "C"),
        ("PYTHONIOENCODING", "utf8:replace"),
        ("PATH", PATH),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    env.insert("MUNIN_LIBDIR".into(), libdir.display().to_string());
    env.insert("FQDN".into(), fqdn.to_string());
    env
}

/// The plugin's environment: `base`, its state directory and file, then
/// its `env.*` settings.
pub fn plugin_env(
    base: &BTreeMap<String, String>,
    plugstate_dir: &Path,
    name: &str,
    run_as: &RunAs,
    conf_env: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut env = base.clone();
    let state = plugstate_dir.join(&run_as.user);
    // munin-node appends the master's address, empty for munin-run: the
    // name stays stable across runs, which is what plugins need.
    env.insert(
        "MUNIN_STATEFILE".into(),
        format!("{}/{name}-", state.display()),
    );
    env.insert("MUNIN_PLUGSTATE".into(), state.display().to_string());
    env.extend(conf_env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

/// Creates `plugstate_dir/<user>` owned by the user, as munin-node does
/// before each run.
pub fn ensure_state_dir(plugstate_dir: &Path, run_as: &RunAs) -> Result<(), String> {
    let dir = plugstate_dir.join(&run_as.user);
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(&dir)
        .map_err(|e| format!("cannot create {}: {}", dir.display(), io_reason(&e)))?;
    if run_as.switch {
        rustix::fs::chown(
            &dir,
            Some(Uid::from_raw(run_as.uid)),
            Some(Gid::from_raw(run_as.gid)),
        )
        .map_err(|e| format!("cannot give {} to {}: {e}", dir.display(), run_as.user))?;
    }
    Ok(())
}

/// How a run ended, read.
#[derive(Debug)]
pub enum Outcome {
    /// Exit 0: the output.
    Done { stdout: Vec<u8>, duration: Duration },
    /// Anything else: why (the output is discarded, as munin-node does).
    Failed { reason: String, duration: Duration },
}

/// Runs `inv` with `arg` (`Some("config")` or none).
pub async fn run(inv: &Invocation, arg: Option<&str>) -> Outcome {
    let plugin = inv.path.display().to_string();
    let mut argv: Vec<String> = match &inv.command {
        Some(cmd) => cmd
            .iter()
            .flat_map(|t| {
                if t == "%c" {
                    let mut v = vec![plugin.clone()];
                    v.extend(arg.map(str::to_string));
                    v
                } else {
                    vec![t.clone()]
                }
            })
            .collect(),
        None => {
            let mut v = vec![plugin.clone()];
            v.extend(arg.map(str::to_string));
            v
        }
    };
    if argv.is_empty() {
        argv.push(plugin);
    }
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .envs(&inv.env)
        .current_dir("/");
    let run_as = inv.run_as.clone();
    // SAFETY: the closure runs in the forked child before exec and only
    // makes raw system calls (setsid, setgroups, setgid, setuid), which are
    // async-signal-safe; it allocates nothing (the group list was built
    // before the fork). std offers no stable way to set supplementary
    // groups, and its uid/gid switch happens before pre_exec, where
    // setgroups and setsid order matters, so all four are done here.
    #[allow(unsafe_code)]
    unsafe {
        let groups: Vec<Gid> = run_as.groups.iter().map(|g| Gid::from_raw(*g)).collect();
        cmd.pre_exec(move || {
            rustix::process::setsid()?;
            if run_as.switch {
                rustix::thread::set_thread_groups(&groups)?;
                rustix::thread::set_thread_gid(Gid::from_raw(run_as.gid))?;
                rustix::thread::set_thread_uid(Uid::from_raw(run_as.uid))?;
            }
            Ok(())
        });
    }
    let limits = subprocess::Limits {
        timeout: inv.timeout,
        stdout_cap: inv.max_output_bytes,
        stderr_cap: STDERR_CAP,
        stop_signal: Signal::HUP,
        kill_grace: KILL_GRACE,
    };
    let done: Finished = match subprocess::run(cmd, &limits).await {
        Ok(d) => d,
        Err(e) => {
            return Outcome::Failed {
                reason: format!("cannot run {}: {}", argv[0], io_reason(&e)),
                duration: Duration::ZERO,
            }
        }
    };
    let duration = done.duration;
    let stderr_line = || {
        let text = String::from_utf8_lossy(&done.stderr);
        let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        if line.is_empty() {
            String::new()
        } else {
            format!(": {}", line.chars().take(200).collect::<String>())
        }
    };
    let reason = match done.ending {
        Ending::TimedOut => format!(
            "timed out after {} (killed)",
            humantime::format_duration(inv.timeout)
        ),
        Ending::WaitFailed(r) => format!("cannot wait for the plugin: {r}"),
        Ending::Exited(s) if s.success() => {
            if done.stdout_truncated {
                format!(
                    "printed more than {} bytes (munin.max_output_bytes)",
                    inv.max_output_bytes
                )
            } else {
                return Outcome::Done {
                    stdout: done.stdout,
                    duration,
                };
            }
        }
        Ending::Exited(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exit code {code}{}", stderr_line()),
            (None, Some(sig)) => format!("killed by signal {sig}{}", stderr_line()),
            _ => "ended without an exit code".to_string(),
        },
    };
    Outcome::Failed { reason, duration }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accounts() -> Accounts {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/usr/sbin/nologin\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("group"),
            "root:x:0:\nadm:x:4:\nmunin:x:106:\nnogroup:x:65534:\n",
        )
        .unwrap();
        Accounts::read(dir.path())
    }

    #[test]
    fn identities_resolve_as_munin_node() {
        let a = accounts();
        assert_eq!(a.user("0").unwrap().0, "root");
        if !rustix::process::geteuid().is_root() {
            return; // run_as is the agent's own identity then
        }
        let d = a.run_as(&PluginConf::default(), "nobody", "munin").unwrap();
        assert_eq!(
            (d.uid, d.gid, d.groups.as_slice()),
            (65534, 106, &[106][..])
        );
        let conf = PluginConf {
            user: Some("root".into()),
            groups: Some(vec!["adm".into(), "(missing)".into()]),
            ..PluginConf::default()
        };
        let r = a.run_as(&conf, "nobody", "munin").unwrap();
        assert_eq!((r.uid, r.gid, r.groups.as_slice()), (0, 4, &[4][..]));
        let bad = PluginConf {
            groups: Some(vec!["missing".into()]),
            ..PluginConf::default()
        };
        assert_eq!(
            a.run_as(&bad, "nobody", "munin").unwrap_err(),
            "group \"missing\" does not exist"
        );
        assert!(a.run_as(&PluginConf::default(), "ghost", "munin").is_err());
        // No `munin` group: the user's own.
        let g = a
            .run_as(&PluginConf::default(), "nobody", "nosuch")
            .unwrap();
        assert_eq!(g.gid, 65534);
    }

    #[test]
    fn the_environment_is_munin_nodes_and_the_plugins() {
        let base = base_env(Path::new("/usr/share/munin"), "host.example");
        let run_as = RunAs {
            user: "nobody".into(),
            uid: 65534,
            gid: 65534,
            groups: vec![65534],
            switch: true,
        };
        let conf: BTreeMap<String, String> = [("warning".to_string(), "92".to_string())].into();
        let env = plugin_env(
            &base,
            Path::new("/var/lib/munin-node/plugin-state"),
            "df",
            &run_as,
            &conf,
        );
        assert_eq!(
            env["MUNIN_PLUGSTATE"],
            "/var/lib/munin-node/plugin-state/nobody"
        );
        assert_eq!(
            env["MUNIN_STATEFILE"],
            "/var/lib/munin-node/plugin-state/nobody/df-"
        );
        assert_eq!(env["MUNIN_CAP_MULTIGRAPH"], "1");
        assert_eq!(env["LC_ALL"], "C");
        assert_eq!(env["PATH"], PATH);
        assert_eq!(env["warning"], "92");
        assert_eq!(env["MUNIN_LIBDIR"], "/usr/share/munin");
    }
}
