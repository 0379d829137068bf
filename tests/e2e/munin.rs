//! Munin plugins end to end: the real agent binary runs Debian's `load` and
//! `cpu` plugins and a grammar fixture as munin-node would, ships them to the
//! real server, which stores the series, the plugins' statuses and their
//! descriptions, and shows the host's Munin graphs by category.
//!
//! Runs as root (as CI does): plugins run as `nobody`.

use metrolog_e2e::{eventually, start_agent, unique, Api, Server};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

const FAST: [&str; 4] = ["--sample-interval", "200ms", "--ship-interval", "1s"];
const WAIT: Duration = Duration::from_secs(60);
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../agent/tests/fixtures/munin");

fn open_dir(path: &Path) {
    std::fs::create_dir_all(path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn munin_plugins_reach_the_dashboard() -> anyhow::Result<()> {
    assert!(
        std::process::Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout.starts_with(b"0\n"))
            .unwrap_or(false),
        "this test runs Munin plugins as `nobody`: run it as root (CI does)"
    );
    assert!(
        Path::new("/usr/share/munin/plugins/load").exists(),
        "/usr/share/munin/plugins is missing: apt-get install munin-plugins-core"
    );
    let dir = tempfile::tempdir()?;
    open_dir(dir.path());
    let (plugins, conf, state) = (
        dir.path().join("plugins"),
        dir.path().join("conf"),
        dir.path().join("plugstate"),
    );
    for d in [&plugins, &conf, &state] {
        open_dir(d);
    }
    for p in ["load", "cpu"] {
        std::os::unix::fs::symlink(format!("/usr/share/munin/plugins/{p}"), plugins.join(p))?;
    }
    let grammar = plugins.join("grammar");
    std::fs::copy(Path::new(FIXTURES).join("grammar"), &grammar)?;
    std::fs::set_permissions(&grammar, std::fs::Permissions::from_mode(0o755))?;

    let server = Server::start(&["--no-local-agent"])?;
    let api = Api::new(&server.url, &server.token("viewer")?);
    let host = unique("munin");
    let agent_toml = dir.path().join("agent.toml");
    std::fs::write(
        &agent_toml,
        format!(
            "[munin]\nplugins_dir = \"{}\"\nconf_dir = \"{}\"\nplugstate_dir = \"{}\"\n\
             interval = \"1s\"\ntimeout = \"20s\"\n",
            plugins.display(),
            conf.display(),
            state.display()
        ),
    )?;
    let mut args = FAST.to_vec();
    args.extend(["--config", agent_toml.to_str().unwrap()]);
    let mut agent = start_agent(&server, &host, "web", &dir.path().join("state"), &args)?;

    // The series: the plugin's own graph, sanitised names, nested multigraph,
    // DERIVE rates.
    let want = [
        "munin.load.load",
        "munin.cpu.user",
        "munin.grammar.bad_name",
        "munin.fixture_root.x",
        "munin.fixture_root.sub.y",
    ];
    let names = eventually(WAIT, || {
        let (status, list) = api.get(&format!("/api/v1/series?host={host}&name=munin.*"))?;
        if status != 200 {
            return Ok(None);
        }
        let names: Vec<String> = list
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["name"].as_str().map(str::to_string))
            .collect();
        Ok(want
            .iter()
            .all(|w| names.iter().any(|n| n == w))
            .then_some(names))
    })
    .map_err(|e| anyhow::anyhow!("{e}\nagent:\n{}", agent.log()))?;
    assert!(
        !names.iter().any(|n| n == "munin.grammar.b"),
        "U gives no sample: {names:?}"
    );

    // `a.value EPOCH:7` is stored as 7.
    let values = eventually(WAIT, || {
        let (status, q) = api.get(&format!(
            "/api/v1/query?host={host}&name=munin.grammar.a&from=-10m&cf=last"
        ))?;
        anyhow::ensure!(status == 200, "{q}");
        let values: Vec<f64> = q["series"][0]["points"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p[1].as_f64())
            .collect();
        Ok((!values.is_empty()).then_some(values))
    })?;
    assert!(values.iter().all(|v| *v == 7.0), "{values:?}");

    // Each plugin's status is a check of the host.
    let (status, checks) = api.get(&format!("/api/v1/checks?host={host}"))?;
    assert_eq!(status, 200);
    let check = |name: &str| -> Value {
        checks
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(check("munin-load")["status"], "OK", "{checks}");
    assert_eq!(check("munin-grammar")["status"], "WARNING", "{checks}");
    assert!(check("munin")["output"]
        .as_str()
        .unwrap_or_default()
        .contains("3 Munin plugin(s) running"));

    // The host page: Munin graphs by category, titled as Munin titles them.
    let (_, hosts) = api.get("/api/v1/hosts")?;
    let id = hosts
        .as_array()
        .into_iter()
        .flatten()
        .find(|h| h["hostname"] == host.as_str())
        .and_then(|h| h["id"].as_i64())
        .expect("host listed");
    let html = reqwest::blocking::Client::new()
        .get(format!("{}/hosts/{id}", server.url))
        .bearer_auth(&api.token)
        .send()?
        .text()?;
    let munin = &html[html.find("<h2>Munin</h2>").expect("a Munin section")..];
    for text in [
        "<h3>system</h3>",
        "<h3>tests</h3>",
        "<figcaption>Load average</figcaption>",
        "<figcaption>Nested graph</figcaption>",
    ] {
        assert!(munin.contains(text), "{text} missing from {munin}");
    }
    drop(agent);
    Ok(())
}

/// A plugin's `warning`/`critical` judge its field through a rule with
/// `limits = "series"`: the user changes nothing on the server when a plugin
/// (or its `plugin-conf.d`) sets its own thresholds.
#[test]
fn a_plugins_warning_and_critical_drive_an_alarm() -> anyhow::Result<()> {
    assert!(
        std::process::Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout.starts_with(b"0\n"))
            .unwrap_or(false),
        "this test runs Munin plugins as `nobody`: run it as root (CI does)"
    );
    let dir = tempfile::tempdir()?;
    open_dir(dir.path());
    let (plugins, conf, state) = (
        dir.path().join("plugins"),
        dir.path().join("conf"),
        dir.path().join("plugstate"),
    );
    for d in [&plugins, &conf, &state] {
        open_dir(d);
    }
    let value = dir.path().join("value");
    std::fs::write(&value, "25\n")?;
    std::fs::set_permissions(&value, std::fs::Permissions::from_mode(0o644))?;
    let plugin = plugins.join("limits");
    std::fs::write(
        &plugin,
        format!(
            "#!/bin/sh\nif [ \"$1\" = config ]; then\n\
             echo 'graph_title Limits'\necho 'graph_category tests'\n\
             echo 'x.label x'\necho 'x.warning 10'\necho 'x.critical 20'\nexit 0\nfi\n\
             echo \"x.value $(cat {})\"\n",
            value.display()
        ),
    )?;
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755))?;

    let server_toml = dir.path().join("server.toml");
    std::fs::write(
        &server_toml,
        "[[rules]]\nname = \"munin-limits\"\nkind = \"threshold\"\n\
         metric = \"munin.limits.x\"\nlimits = \"series\"\n",
    )?;
    let server = Server::start(&[
        "--no-local-agent",
        "--config",
        server_toml.to_str().unwrap(),
    ])?;
    let api = Api::new(&server.url, &server.token("viewer")?);
    let host = unique("limits");
    let agent_toml = dir.path().join("agent.toml");
    std::fs::write(
        &agent_toml,
        format!(
            "[munin]\nplugins_dir = \"{}\"\nconf_dir = \"{}\"\nplugstate_dir = \"{}\"\n\
             interval = \"1s\"\ntimeout = \"20s\"\n",
            plugins.display(),
            conf.display(),
            state.display()
        ),
    )?;
    let mut args = FAST.to_vec();
    args.extend(["--config", agent_toml.to_str().unwrap()]);
    let mut agent = start_agent(&server, &host, "web", &dir.path().join("state"), &args)?;

    let alarm_in = |want: &'static str| -> anyhow::Result<Value> {
        eventually(WAIT, || {
            let (status, alarms) = api.get(&format!("/api/v1/alarms?host={host}&state=all"))?;
            anyhow::ensure!(status == 200, "{alarms}");
            Ok(alarms
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["rule"] == "munin-limits" && a["state"] == want)
                .cloned())
        })
    };
    // 25 is beyond the plugin's critical 20.
    let critical = alarm_in("CRITICAL").map_err(|e| anyhow::anyhow!("{e}\n{}", agent.log()))?;
    let output = critical["output"].as_str().unwrap_or_default();
    assert!(
        output.starts_with("munin.limits.x = 25") && output.ends_with("(critical ~:20)"),
        "{critical}"
    );
    // 15: beyond warning 10 only.
    std::fs::write(&value, "15\n")?;
    let warning = alarm_in("WARNING").map_err(|e| anyhow::anyhow!("{e}\n{}", agent.log()))?;
    assert!(
        warning["output"]
            .as_str()
            .unwrap_or_default()
            .ends_with("(warning ~:10)"),
        "{warning}"
    );
    // 5: inside both, the alarm resolves.
    std::fs::write(&value, "5\n")?;
    alarm_in("OK").map_err(|e| anyhow::anyhow!("{e}\n{}", agent.log()))?;
    drop(agent);
    Ok(())
}
