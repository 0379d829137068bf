//! Real collectd (`write_graphite`) sends to the Graphite plaintext listener;
//! its host and series show up through the API with values.

use metrolog_e2e::{eventually, Api, Proc, Server};
use std::process::Command;
use std::time::Duration;

#[test]
fn collectd_write_graphite_feeds_archives() -> anyhow::Result<()> {
    let server = Server::start(&["--no-local-agent", "--graphite", "127.0.0.1:0"])?;
    let line = server
        .proc
        .output
        .iter()
        .find(|l| l.contains("Graphite TCP: "))
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("the server did not print its Graphite address"))?;
    let addr: std::net::SocketAddr = line
        .split("Graphite TCP: ")
        .nth(1)
        .unwrap()
        .trim()
        .parse()?;
    let dir = tempfile::tempdir()?;
    let conf = dir.path().join("collectd.conf");
    std::fs::write(
        &conf,
        format!(
            r#"Hostname "collectd-web"
FQDNLookup false
Interval 1
BaseDir "{dir}"
PIDFile "{dir}/collectd.pid"
TypesDB "/usr/share/collectd/types.db"
LoadPlugin load
LoadPlugin memory
LoadPlugin write_graphite
<Plugin write_graphite>
  <Node "metrolog">
    Host "{ip}"
    Port "{port}"
    Protocol "tcp"
    Prefix "collectd."
    StoreRates true
    EscapeCharacter "_"
  </Node>
</Plugin>
"#,
            dir = dir.path().display(),
            ip = addr.ip(),
            port = addr.port()
        ),
    )?;
    let mut cmd = Command::new("collectd");
    cmd.arg("-f").arg("-C").arg(&conf);
    let mut collectd = Proc::spawn("collectd", cmd)
        .map_err(|e| anyhow::anyhow!("{e:#}: install Debian's collectd-core (CI does)"))?;
    let api = Api::new(&server.url, &server.token("viewer")?);
    let result = eventually(Duration::from_secs(40), || {
        let (status, v) =
            api.get("/api/v1/query?host=collectd-web&name=load.load.shortterm&from=-10m&step=10")?;
        if status != 200 {
            return Ok(None);
        }
        let known = v["series"][0]["points"]
            .as_array()
            .map(|p| p.iter().filter(|pt| pt[1].is_number()).count())
            .unwrap_or(0);
        Ok((known >= 1).then_some(v))
    });
    let v = result.map_err(|e| anyhow::anyhow!("{e}\ncollectd:\n{}", collectd.log()))?;
    assert_eq!(v["series"][0]["host"], "collectd-web");
    let (_, hosts) = api.get("/api/v1/hosts")?;
    let host = hosts
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["hostname"] == "collectd-web")
        .unwrap()
        .clone();
    assert_eq!(host["passive"], true, "{host}");
    let (_, series) = api.get(&format!("/api/v1/series?host={}&name=memory.*", host["id"]))?;
    let names: Vec<&str> = series
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert!(names.contains(&"memory.memory-used"), "{names:?}");
    // Memory in use is a real, positive number of bytes (its first known row
    // may come a flush after load's).
    let used = eventually(Duration::from_secs(30), || {
        let (_, q) =
            api.get("/api/v1/query?host=collectd-web&name=memory.memory-used&from=-10m&step=10")?;
        Ok(q["series"][0]["points"]
            .as_array()
            .and_then(|p| p.iter().filter_map(|p| p[1].as_f64()).next_back()))
    })?;
    assert!(used > 1e6, "{used}");
    collectd.terminate();
    let metrics = reqwest::blocking::get(format!("{}/metrics", server.url))?.text()?;
    let lines: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("metrolog_graphite_lines_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(lines >= 9, "{metrics}");
    Ok(())
}
