//! Munin plugins run by the agent's Munin source, against the real thing:
//! Debian's munin-plugins-core plugins compared with `munin-run`, fixture
//! plugins for the grammar, hangs, failures and plugin-conf.d identities.
//!
//! The agent must run as root here (as in CI) to run plugins as `nobody`.

use metrolog_agent::checks::CheckBook;
use metrolog_agent::munin::output::{self, Output};
use metrolog_agent::munin::{Munin, MuninConfig, PluginView};
use metrolog_protocol::nagios::{CheckResult, CheckStatus};
use metrolog_protocol::SeriesBuckets;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const DEBIAN_PLUGINS: &str = "/usr/share/munin/plugins";
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/munin");

fn require_root_and_munin() {
    assert!(
        rustix::process::geteuid().is_root(),
        "these tests run plugins as `nobody` and `root`: run them as root (CI does)"
    );
    for tool in ["/usr/sbin/munin-run", "/usr/bin/pgrep"] {
        assert!(
            Path::new(tool).exists(),
            "{tool} is missing: install munin-node and procps (apt-get install munin-node munin-plugins-core procps)"
        );
    }
    assert!(
        Path::new(DEBIAN_PLUGINS).join("load").exists(),
        "{DEBIAN_PLUGINS} is missing: apt-get install munin-plugins-core"
    );
}

/// A directory `nobody` can read (tempdirs are 0700).
fn open_dir(mode: u32) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(mode)).unwrap();
    d
}

struct Setup {
    _dirs: Vec<tempfile::TempDir>,
    plugins: PathBuf,
    conf: PathBuf,
    cfg: MuninConfig,
}

fn setup(interval: Duration, timeout: Duration) -> Setup {
    let (p, c, s) = (open_dir(0o755), open_dir(0o755), open_dir(0o755));
    let cfg = MuninConfig {
        plugins_dir: p.path().to_path_buf(),
        conf_dir: c.path().to_path_buf(),
        plugstate_dir: s.path().to_path_buf(),
        interval,
        timeout,
        ..MuninConfig::default()
    };
    Setup {
        plugins: p.path().to_path_buf(),
        conf: c.path().to_path_buf(),
        _dirs: vec![p, c, s],
        cfg,
    }
}

fn link(target: &Path, dir: &Path, name: &str) {
    std::os::unix::fs::symlink(target, dir.join(name)).unwrap();
}

/// A graph as (name, attributes, fields with their attributes).
type Shape = (
    String,
    Vec<(String, String)>,
    Vec<(String, Vec<(String, String)>)>,
);

/// Every attribute of every graph and field of a `config` output.
fn shape(o: &Output) -> Vec<Shape> {
    o.graphs
        .iter()
        .map(|g| {
            (
                g.name.clone(),
                g.attrs.clone().into_iter().collect(),
                g.fields
                    .iter()
                    .map(|(n, f)| (n.clone(), f.attrs.clone().into_iter().collect()))
                    .collect(),
            )
        })
        .collect()
}

/// Copies a fixture plugin (the checkout may not be readable by `nobody`).
fn fixture(dir: &Path, name: &str) -> PathBuf {
    let to = dir.join(format!(".{name}.src"));
    std::fs::copy(Path::new(FIXTURES).join(name), &to).unwrap();
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
    to
}

/// What the book received so far.
#[derive(Default)]
struct Seen {
    results: Vec<CheckResult>,
    metrics: Vec<SeriesBuckets>,
}

impl Seen {
    fn take(&mut self, book: &CheckBook) {
        loop {
            let (r, m) = book.take_batch();
            if r.is_empty() {
                return;
            }
            self.results.extend(r);
            self.metrics.extend(m);
        }
    }

    /// Every (ts, last) of series `name`.
    fn points(&self, name: &str) -> Vec<(i64, f64)> {
        self.metrics
            .iter()
            .filter(|s| s.key.name.as_str() == name)
            .flat_map(|s| s.buckets.iter().map(|b| (b.ts, b.last)))
            .collect()
    }

    fn statuses(&self, check: &str) -> Vec<&CheckResult> {
        self.results
            .iter()
            .filter(|r| r.name.as_str() == check)
            .collect()
    }
}

/// Polls `munin` until `done` holds for its views, or fails after `limit`.
async fn wait_for(
    munin: &Munin,
    limit: Duration,
    what: &str,
    done: impl Fn(&BTreeMap<String, PluginView>) -> bool,
) -> BTreeMap<String, PluginView> {
    let deadline = Instant::now() + limit;
    loop {
        let views = munin.views();
        if done(&views) {
            return views;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; plugins: {:#?}",
            views
                .iter()
                .map(|(n, v)| (n, v.fetches, &v.failure))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn munin_run(s: &Setup, plugin: &str, arg: Option<&str>) -> Output {
    let mut cmd = Command::new("munin-run");
    cmd.arg("--ignore-systemd-properties")
        .arg("--servicedir")
        .arg(&s.plugins)
        .arg("--sconfdir")
        .arg(&s.conf)
        .arg(plugin);
    if let Some(a) = arg {
        cmd.arg(a);
    }
    let out = cmd.output().expect("munin-run runs");
    assert!(
        out.status.success(),
        "munin-run {plugin} {arg:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let limits = output::Limits {
        max_lines: 100_000,
        max_fields: 100_000,
    };
    let mode = if arg == Some("config") {
        output::Mode::Config
    } else {
        output::Mode::Fetch
    };
    output::parse(plugin, mode, &out.stdout, limits).expect("munin-run output reads")
}

/// The interface of `if_`: the first one of the machine (lo is not offered
/// by the plugin's `suggest`, but it runs on it as on any other).
fn machine_interface() -> String {
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n != "lo")
        .collect();
    names.sort();
    names.into_iter().next().unwrap_or_else(|| "lo".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debian_core_plugins_agree_with_munin_run() {
    require_root_and_munin();
    let s = setup(Duration::from_secs(2), Duration::from_secs(30));
    let iface = format!("if_{}", machine_interface());
    let plugins = [
        "cpu",
        "load",
        "memory",
        "df",
        "swap",
        "uptime",
        "processes",
        "diskstats",
        iface.as_str(),
        "if_lo",
    ];
    for p in plugins {
        let target = if p.starts_with("if_") { "if_" } else { p };
        link(&Path::new(DEBIAN_PLUGINS).join(target), &s.plugins, p);
    }
    // Debian's own plugin-conf.d: `if_*` as root, `df*` with its env.
    std::fs::copy(
        "/etc/munin/plugin-conf.d/munin-node",
        s.conf.join("munin-node"),
    )
    .expect("Debian's /etc/munin/plugin-conf.d/munin-node (munin-node package)");
    // diskstats prints values from its second run on (it keeps a state
    // file): one munin-run of each first, so its runs compare.
    for p in plugins {
        munin_run(&s, p, None);
    }
    let book = Arc::new(CheckBook::default());
    let munin = Munin::start(s.cfg.clone(), book.clone());
    let mut seen = Seen::default();

    // Two fetches each, so DERIVE fields have a rate.
    wait_for(
        &munin,
        Duration::from_secs(90),
        "two fetches of every plugin",
        |v| {
            plugins
                .iter()
                .all(|p| v.get(*p).is_some_and(|v| v.fetches >= 2))
        },
    )
    .await;
    seen.take(&book);

    for p in plugins {
        // Right after one of our fetches, so both read nearly the same state.
        let before = munin.views()[p].fetches;
        let views = wait_for(&munin, Duration::from_secs(30), "a fresh fetch", |v| {
            v[p].fetches > before
        })
        .await;
        let theirs_values = munin_run(&s, p, None);
        let theirs_config = munin_run(&s, p, Some("config"));
        let view = &views[p];
        assert_eq!(view.failure, None, "{p}");
        let ours_config = view.config.as_ref().unwrap();
        let ours_values = view.fetched.as_ref().unwrap();

        // Graphs, fields, titles, types, limits: all attributes equal.
        assert_eq!(shape(ours_config), shape(&theirs_config), "{p} config");
        assert!(ours_config.field_count() > 0, "{p} has fields");

        // Values: the same fields; numbers within a tolerance (a second
        // apart, on a machine that builds in parallel).
        let values = |o: &Output| -> BTreeMap<(String, String), Option<f64>> {
            o.graphs
                .iter()
                .flat_map(|g| {
                    g.fields.iter().filter_map(move |(n, f)| {
                        Some(((g.name.clone(), n.clone()), f.readings.last()?.value))
                    })
                })
                .collect()
        };
        let (ours, theirs) = (values(ours_values), values(&theirs_values));
        assert_eq!(
            ours.keys().collect::<Vec<_>>(),
            theirs.keys().collect::<Vec<_>>(),
            "{p} fetch fields"
        );
        for (k, a) in &ours {
            let b = theirs[k];
            // diskstats computes its own rates from its state file, between
            // its own runs: two runners see different intervals, only the
            // presence of a number must agree.
            if p == "diskstats" {
                assert_eq!(a.is_some(), b.is_some(), "{p} {k:?}: {a:?} vs {b:?}");
                continue;
            }
            let (Some(a), Some(b)) = (*a, b) else {
                assert_eq!(*a, b, "{p} {k:?}");
                continue;
            };
            // Two readings of a live system seconds apart: the memory
            // plugin's small fields (page tables, slab) move by megabytes
            // when other processes start meanwhile (a busy CI machine).
            let slack = if p == "memory" {
                8.0 * 1024.0 * 1024.0
            } else {
                10.0
            };
            let tolerance = 0.3 * a.abs().max(b.abs()) + slack;
            assert!(
                (a - b).abs() <= tolerance,
                "{p} {k:?}: ours {a}, munin-run {b}"
            );
        }
    }

    // The series: munin.<plugin>.<field>, munin.<graph>.<field> for
    // multigraph, and rates for DERIVE.
    seen.take(&book);
    assert!(!seen.points("munin.load.load").is_empty());
    let user = seen.points("munin.cpu.user");
    assert!(!user.is_empty(), "cpu user (DERIVE) has a rate");
    let ncpu = std::thread::available_parallelism().unwrap().get() as f64;
    assert!(
        user.iter()
            .all(|(_, v)| *v >= 0.0 && *v <= 100.0 * ncpu + 1.0),
        "cpu user rate in percent of one CPU: {user:?}"
    );
    assert!(
        seen.metrics
            .iter()
            .any(|s| s.key.name.as_str().starts_with("munin.diskstats_")),
        "diskstats' multigraph graphs become their own series"
    );
    let statuses = seen.statuses("munin-load");
    assert!(!statuses.is_empty());
    assert!(statuses.iter().all(|r| r.status == CheckStatus::Ok));
    munin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_output_grammar_becomes_series() {
    require_root_and_munin();
    let s = setup(Duration::from_secs(1), Duration::from_secs(10));
    let src = fixture(&s.plugins, "grammar");
    link(&src, &s.plugins, "grammar");
    let book = Arc::new(CheckBook::default());
    let munin = Munin::start(s.cfg.clone(), book.clone());
    wait_for(&munin, Duration::from_secs(30), "three fetches", |v| {
        v.get("grammar").is_some_and(|v| v.fetches >= 3)
    })
    .await;
    munin.stop().await;
    let mut seen = Seen::default();
    seen.take(&book);

    // What config says travels as series metadata: titles, categories,
    // labels, types, thresholds.
    let meta = book.take_meta();
    let m = meta
        .iter()
        .find(|m| m.name.as_str() == "munin.grammar.bad_name")
        .expect("metadata of bad-name");
    assert_eq!(
        (m.graph.as_str(), m.title.as_deref(), m.category.as_deref()),
        ("munin.grammar", Some("Grammar fixture"), Some("tests"))
    );
    assert_eq!(
        (
            m.label.as_deref(),
            m.warning.as_deref(),
            m.critical.as_deref()
        ),
        (Some("needs sanitising"), Some("10"), Some("20"))
    );
    let y = meta
        .iter()
        .find(|m| m.name.as_str() == "munin.fixture_root.sub.y")
        .expect("metadata of the nested graph");
    assert_eq!(
        (y.graph.as_str(), y.title.as_deref(), y.kind.as_deref()),
        (
            "munin.fixture_root.sub",
            Some("Nested graph"),
            Some("DERIVE")
        )
    );

    // `a.value EPOCH:7`: 7, at the plugin's time (5 s before its run).
    let a = seen.points("munin.grammar.a");
    assert!(!a.is_empty());
    let status_times: Vec<i64> = seen
        .statuses("munin-grammar")
        .iter()
        .map(|r| r.ts)
        .collect();
    for (ts, v) in &a {
        assert_eq!(*v, 7.0);
        assert!(
            status_times.iter().any(|t| (t - ts - 5).abs() <= 1),
            "a at {ts}, runs at {status_times:?}"
        );
    }
    // `b.value U`: no sample.
    assert!(seen.points("munin.grammar.b").is_empty());
    // `bad-name.value 3`: sanitised.
    assert!(seen
        .points("munin.grammar.bad_name")
        .iter()
        .all(|(_, v)| *v == 3.0));
    assert!(!seen.points("munin.grammar.bad_name").is_empty());
    // Two levels of multigraph.
    assert!(seen
        .points("munin.fixture_root.x")
        .iter()
        .all(|(_, v)| *v == 1.0));
    assert!(!seen.points("munin.fixture_root.x").is_empty());
    let y = seen.points("munin.fixture_root.sub.y");
    assert!(!y.is_empty(), "DERIVE of the nested graph has a rate");
    assert!(y.iter().all(|(_, v)| (*v - 1.0).abs() < 0.5), "{y:?}");
    // The unreadable line is counted and shown, and loses nothing else.
    let last = seen
        .statuses("munin-grammar")
        .last()
        .copied()
        .unwrap()
        .clone();
    assert_eq!(last.status, CheckStatus::Warning);
    assert!(
        last.output.contains("1 unreadable line(s)"),
        "{}",
        last.output
    );
    assert!(
        last.output.contains("this line is not munin"),
        "{}",
        last.output
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_and_failing_plugins_do_not_delay_the_others() {
    require_root_and_munin();
    let s = setup(Duration::from_secs(1), Duration::from_secs(2));
    let pids = open_dir(0o777);
    let pidfile = pids.path().join("hang.pid");
    link(&Path::new(DEBIAN_PLUGINS).join("load"), &s.plugins, "load");
    let hang = fixture(&s.plugins, "hang");
    link(&hang, &s.plugins, "hang");
    let fail = fixture(&s.plugins, "fail");
    link(&fail, &s.plugins, "fail");
    std::fs::write(
        s.conf.join("fixtures"),
        format!("[hang]\nenv.pidfile {}\n", pidfile.display()),
    )
    .unwrap();
    let book = Arc::new(CheckBook::default());
    let munin = Munin::start(s.cfg.clone(), book.clone());

    // The hung plugin is killed at its 2 s timeout, with its child.
    let views = wait_for(
        &munin,
        Duration::from_secs(20),
        "the hang to time out",
        |v| v.get("hang").is_some_and(|v| v.failure.is_some()),
    )
    .await;
    assert_eq!(
        views["hang"].failure.as_deref(),
        Some("config: timed out after 2s (killed)")
    );
    // The first run's group is gone (a later run may be under way).
    let pids = std::fs::read_to_string(&pidfile).unwrap();
    assert_no_group(pids.lines().next().unwrap());

    // Meanwhile, and after: load every interval.
    let start = munin.views()["load"].fetches;
    let t0 = Instant::now();
    wait_for(
        &munin,
        Duration::from_secs(20),
        "load fetched 6 more times",
        |v| v["load"].fetches >= start + 6,
    )
    .await;
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(9),
        "6 fetches of load at a 1 s interval took {took:?}: something delayed it"
    );
    let views = munin.views();
    assert_eq!(views["load"].failure, None);
    assert_eq!(
        views["fail"].failure.as_deref(),
        Some("exit code 1: something went wrong")
    );
    munin.stop().await;
    let mut seen = Seen::default();
    seen.take(&book);
    assert!(
        seen.points("munin.fail.x").is_empty(),
        "a failed run's output is discarded"
    );
    let fail_status = seen.statuses("munin-fail");
    assert!(fail_status.iter().all(|r| r.status == CheckStatus::Unknown));
    let summary = seen.statuses("munin");
    let last = summary.last().unwrap();
    assert_eq!(last.status, CheckStatus::Warning);
    assert!(
        last.long_output.contains("hang: config: timed out"),
        "{}",
        last.long_output
    );
    assert!(
        seen.points("agent.munin.failures")
            .iter()
            .any(|(_, v)| *v >= 2.0),
        "failures counted"
    );
    // Stopping killed the runs under way too: no group is left.
    for pid in std::fs::read_to_string(&pidfile).unwrap().lines() {
        assert_no_group(pid);
    }
}

/// No live process is left in process group `pgid` (`pgrep -g`, zombies
/// aside: a killed grandchild is reparented to PID 1, which reaps it when
/// it will; in some containers that is late). Within a second, as a
/// SIGKILL takes effect asynchronously.
fn assert_no_group(pgid: &str) {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let pgrep = Command::new("pgrep").arg("-g").arg(pgid).output().unwrap();
        let live: Vec<String> = String::from_utf8_lossy(&pgrep.stdout)
            .lines()
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|st| Some(st.rsplit_once(") ")?.1.starts_with('Z')))
                    == Some(false)
            })
            .map(str::to_string)
            .collect();
        if live.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "processes left in group {pgid}: {live:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_conf_sets_user_environment_and_wildcard_parameters() {
    require_root_and_munin();
    let s = setup(Duration::from_secs(1), Duration::from_secs(10));
    let src = fixture(&s.plugins, "whoami_");
    link(&src, &s.plugins, "whoami_1");
    link(&src, &s.plugins, "whoami_2");
    // A wildcard for both; root for one only, in a later file.
    std::fs::write(s.conf.join("10-all"), "[whoami_*]\nenv.greeting hello\n").unwrap();
    std::fs::write(
        s.conf.join("20-root"),
        "[whoami_2]\nuser root # needs root\n",
    )
    .unwrap();
    let book = Arc::new(CheckBook::default());
    let munin = Munin::start(s.cfg.clone(), book.clone());
    let views = wait_for(&munin, Duration::from_secs(30), "both fetched", |v| {
        ["whoami_1", "whoami_2"]
            .iter()
            .all(|p| v.get(*p).is_some_and(|v| v.fetches >= 1))
    })
    .await;
    munin.stop().await;
    let value = |p: &str, f: &str| {
        views[p].fetched.as_ref().unwrap().graphs[0]
            .get(f)
            .unwrap()
            .readings[0]
            .value
            .unwrap()
    };
    let munin_gid = std::fs::read_to_string("/etc/group")
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("munin:x:")?
                .split(':')
                .next()?
                .parse::<f64>()
                .ok()
        });
    assert_eq!(value("whoami_1", "uid"), 65534.0, "nobody by default");
    if let Some(gid) = munin_gid {
        assert_eq!(value("whoami_1", "gid"), gid, "group munin by default");
    }
    assert_eq!(
        value("whoami_2", "uid"),
        0.0,
        "user root from plugin-conf.d"
    );
    for p in ["whoami_1", "whoami_2"] {
        assert_eq!(
            value(p, "param"),
            p[7..].parse::<f64>().unwrap(),
            "{p} reads its link name"
        );
        assert_eq!(value(p, "cwd"), 1.0, "{p} runs in /");
        assert_eq!(
            value(p, "env"),
            1.0,
            "{p} gets env.greeting from the wildcard"
        );
        assert_eq!(value(p, "cap"), 1.0, "{p} MUNIN_CAP_MULTIGRAPH");
        assert_eq!(
            value(p, "home"),
            1.0,
            "{p} gets none of the agent's environment"
        );
    }
}

/// The plugin directory and plugin-conf.d are watched (read again every
/// interval): a plugin linked in runs, one removed stops, and a changed
/// plugin-conf.d runs the plugin's `config` again with its new settings,
/// all without restarting the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_added_removed_or_reconfigured_are_picked_up_while_running() {
    require_root_and_munin();
    let s = setup(Duration::from_secs(1), Duration::from_secs(10));
    let src = fixture(&s.plugins, "whoami_");
    link(&src, &s.plugins, "whoami_1");
    let book = Arc::new(CheckBook::default());
    let munin = Munin::start(s.cfg.clone(), book.clone());
    let value = |v: &BTreeMap<String, PluginView>, p: &str, f: &str| {
        v.get(p)
            .and_then(|v| v.fetched.as_ref())
            .and_then(|o| o.graphs.first()?.get(f)?.readings.first()?.value)
    };
    let views = wait_for(&munin, Duration::from_secs(30), "whoami_1 fetched", |v| {
        value(v, "whoami_1", "env").is_some()
    })
    .await;
    assert_eq!(value(&views, "whoami_1", "env"), Some(0.0), "no env yet");
    assert!(book
        .take_meta()
        .iter()
        .any(|m| m.name.as_str() == "munin.whoami_1.uid"));

    // plugin-conf.d gains a setting: config runs again, the fetch sees it.
    std::fs::write(s.conf.join("10-all"), "[whoami_*]\nenv.greeting hello\n").unwrap();
    wait_for(
        &munin,
        Duration::from_secs(30),
        "whoami_1 with env.greeting",
        |v| value(v, "whoami_1", "env") == Some(1.0),
    )
    .await;
    assert!(
        book.take_meta()
            .iter()
            .any(|m| m.name.as_str() == "munin.whoami_1.uid"),
        "config ran again and its description was sent again"
    );

    // A plugin linked in runs; one removed stops.
    link(&src, &s.plugins, "whoami_7");
    std::fs::remove_file(s.plugins.join("whoami_1")).unwrap();
    let views = wait_for(
        &munin,
        Duration::from_secs(30),
        "whoami_7 in, whoami_1 out",
        |v| value(v, "whoami_7", "param").is_some() && !v.contains_key("whoami_1"),
    )
    .await;
    assert_eq!(value(&views, "whoami_7", "param"), Some(7.0));
    assert_eq!(value(&views, "whoami_7", "env"), Some(1.0));
    let mut seen = Seen::default();
    seen.take(&book);
    let before = seen.points("munin.whoami_1.uid").len();
    // Three more rounds: whoami_1 is fetched no more.
    let start = munin.views()["whoami_7"].fetches;
    wait_for(&munin, Duration::from_secs(30), "3 more rounds", |v| {
        v["whoami_7"].fetches >= start + 3
    })
    .await;
    munin.stop().await;
    seen.take(&book);
    assert_eq!(
        seen.points("munin.whoami_1.uid").len(),
        before,
        "a removed plugin is not run"
    );
    let summary = seen.statuses("munin");
    assert!(
        summary
            .last()
            .is_some_and(|r| r.output == "1 Munin plugin(s) running"),
        "{:?}",
        summary.last()
    );
}

/// Writes an executable shell plugin `name` into the plugins directory.
fn script(dir: &Path, name: &str, body: &str) {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Plugins that print garbage, binary bytes, 10 000 fields, too many lines
/// or too many bytes: each is a counted failure (or counted drops) with its
/// reason in the plugin's status, the series stay within `max_series`, and
/// a good plugin beside them is fetched every round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_output_is_counted_with_its_reason_and_costs_nothing_else() {
    require_root_and_munin();
    let mut s = setup(Duration::from_secs(1), Duration::from_secs(10));
    s.cfg.max_lines = 12_000;
    s.cfg.max_output_bytes = 256 * 1024;
    s.cfg.max_series = 700;
    link(&Path::new(DEBIAN_PLUGINS).join("load"), &s.plugins, "load");
    let config = "if [ \"$1\" = config ]; then echo 'graph_title Bad'; exit 0; fi\n";
    script(
        &s.plugins,
        "garbage",
        &format!("{config}echo 'Traceback (most recent call last):'\necho '  oops'\n"),
    );
    script(
        &s.plugins,
        "binary",
        &format!(
            "{config}i=0; while [ $i -lt 200 ]; do printf '\\001\\002\\377\\376\\000bin\\n'; i=$((i+1)); done\n"
        ),
    );
    script(
        &s.plugins,
        "wide",
        &format!(
            "{config}i=0; while [ $i -lt 10000 ]; do echo \"f$i.value $i\"; i=$((i+1)); done\n"
        ),
    );
    script(
        &s.plugins,
        "lines",
        &format!("{config}i=0; while [ $i -lt 13000 ]; do echo '# x'; i=$((i+1)); done; echo 'a.value 1'\n"),
    );
    script(
        &s.plugins,
        "bytes",
        &format!("{config}head -c 3000000 /dev/zero | tr '\\000' a; echo ' 1'\n"),
    );
    let book = Arc::new(CheckBook::default());
    let munin = Munin::start(s.cfg.clone(), book.clone());
    let bad = ["garbage", "binary", "lines", "bytes"];
    let views = wait_for(
        &munin,
        Duration::from_secs(60),
        "every plugin run twice",
        |v| {
            bad.iter()
                .all(|p| v.get(*p).is_some_and(|v| v.failure.is_some()))
                && v.get("wide").is_some_and(|v| v.fetches >= 2)
                && v.get("load").is_some_and(|v| v.fetches >= 3)
        },
    )
    .await;
    munin.stop().await;
    let reason = |p: &str| views[p].failure.clone().unwrap_or_default();
    assert!(
        reason("garbage").starts_with(
            "printed nothing Munin can read (2 unrecognised line(s), the first: \"Traceback"
        ),
        "{}",
        reason("garbage")
    );
    assert!(
        reason("binary").starts_with("printed nothing Munin can read (200 unrecognised"),
        "{}",
        reason("binary")
    );
    assert_eq!(
        reason("lines"),
        "printed more than 12000 lines (munin.max_lines)"
    );
    assert_eq!(
        reason("bytes"),
        "printed more than 262144 bytes (munin.max_output_bytes)"
    );
    assert_eq!(views["load"].failure, None);

    let mut seen = Seen::default();
    seen.take(&book);
    // 10 000 fields: 1 000 kept per run (max_fields), 700 series at most
    // (max_series), the rest dropped, counted and said.
    let wide = seen.statuses("munin-wide");
    let last = wide.last().expect("wide reported");
    assert_eq!(last.status, CheckStatus::Warning);
    // (`load` shares the 700 series: 9 300 or 9 301 dropped.)
    assert!(
        last.output.starts_with("1000 field(s); 930"),
        "{}",
        last.output
    );
    assert!(
        last.output
            .contains("field(s) dropped (munin.max_fields 1000, munin.max_series 700"),
        "{}",
        last.output
    );
    let names: std::collections::HashSet<&str> = seen
        .metrics
        .iter()
        .map(|m| m.key.name.as_str())
        .filter(|n| n.starts_with("munin."))
        .collect();
    assert_eq!(names.len(), 700, "series within munin.max_series");
    let dropped = seen.points("agent.munin.fields_dropped");
    assert!(
        dropped.iter().any(|(_, v)| *v >= 2.0 * 9300.0),
        "drops counted every run: {dropped:?}"
    );
    let failures = seen.points("agent.munin.failures");
    assert!(failures.iter().any(|(_, v)| *v >= 4.0), "{failures:?}");
    for p in bad {
        let st = seen.statuses(&format!("munin-{p}"));
        assert!(
            !st.is_empty() && st.iter().all(|r| r.status == CheckStatus::Unknown),
            "{p}: {st:?}"
        );
        assert!(
            seen.metrics
                .iter()
                .all(|m| !m.key.name.as_str().starts_with(&format!("munin.{p}."))),
            "{p}'s output is discarded"
        );
    }
    let summary = seen.statuses("munin");
    let last = summary.last().unwrap();
    assert_eq!(last.status, CheckStatus::Warning);
    assert!(last.output.starts_with("4 of 6"), "{}", last.output);
}

/// `cdef` gives the series what Munin draws (over the stored values of the
/// graph's fields), `graph_order` the order of the description; a `cdef`
/// that cannot be read is not applied, and the status says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdef_and_graph_order_follow_munin_graph() {
    require_root_and_munin();
    let s = setup(Duration::from_secs(1), Duration::from_secs(10));
    script(
        &s.plugins,
        "drawn",
        "if [ \"$1\" = config ]; then\n\
         echo 'graph_title Drawn'\necho 'graph_order b a'\n\
         echo 'a.label a'\necho 'a.cdef a,8,*'\n\
         echo 'b.label b'\necho 'b.cdef a,b,+'\n\
         echo 'c.label c'\necho 'c.cdef c,*'\n\
         echo 'd.label d'\necho 'd.cdef d,x,+'\nexit 0\nfi\n\
         echo 'a.value 2'\necho 'b.value 3'\necho 'c.value 1'\necho 'd.value 4'\n",
    );
    let book = Arc::new(CheckBook::default());
    let munin = Munin::start(s.cfg.clone(), book.clone());
    wait_for(&munin, Duration::from_secs(30), "two fetches", |v| {
        v.get("drawn").is_some_and(|v| v.fetches >= 2)
    })
    .await;
    munin.stop().await;
    let mut seen = Seen::default();
    seen.take(&book);
    let values = |f: &str| -> Vec<f64> {
        seen.points(&format!("munin.drawn.{f}"))
            .iter()
            .map(|(_, v)| *v)
            .collect()
    };
    assert!(!values("a").is_empty());
    assert!(values("a").iter().all(|v| *v == 16.0), "{:?}", values("a"));
    assert!(
        values("b").iter().all(|v| *v == 5.0),
        "a's stored value, not its drawn one: {:?}",
        values("b")
    );
    assert!(values("c").iter().all(|v| *v == 1.0), "{:?}", values("c"));
    assert!(
        values("d").is_empty(),
        "an unknown operand: unknown, as rrdtool: {:?}",
        values("d")
    );
    let status = seen.statuses("munin-drawn");
    let last = status.last().unwrap();
    assert_eq!(last.status, CheckStatus::Warning);
    assert!(
        last.output
            .contains("c.cdef \"c,*\" not applied: * needs 2 operand(s)"),
        "{}",
        last.output
    );
    let meta = book.take_meta();
    let order: Vec<(&str, u32)> = meta.iter().map(|m| (m.name.as_str(), m.order)).collect();
    assert_eq!(
        order,
        [
            ("munin.drawn.b", 0),
            ("munin.drawn.a", 1),
            ("munin.drawn.c", 2),
            ("munin.drawn.d", 3)
        ]
    );
}
