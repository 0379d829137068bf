//! Round-robin archives through the real server: every imported sample that got a
//! 2xx survives kill -9 of the server (journal replay), and query results match
//! Debian's `rrdtool` fed the same samples.

use anyhow::{bail, ensure, Context, Result};
use metrolog_e2e::{eventually, Api, Server};
use serde_json::json;
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

fn start(dir: &Path, flush_interval: &str) -> Result<(Server, Api)> {
    let config = dir.join("server.toml");
    std::fs::write(
        &config,
        // Rows wait 1-2 s before their write (write_delay, spread per
        // series), so the kill can find some written and some only journaled.
        format!("[archives]\nflush_interval = \"{flush_interval}\"\nwrite_delay = \"2s\"\n"),
    )?;
    let db = dir.join("data");
    let server = Server::start_in(
        &db,
        &[
            "--no-local-agent",
            "--config",
            &config.display().to_string(),
        ],
    )?;
    let api = Api::new(&server.url, &server.token("admin")?);
    Ok((server, api))
}

/// SIGKILL: no shutdown flush, no goodbye.
fn kill9(server: &mut Server) -> Result<()> {
    server.proc.child.kill()?;
    server.proc.child.wait()?;
    Ok(())
}

/// `(ts, value or unknown)` rows, as imported and as queried.
type Points = Vec<(i64, Option<f64>)>;

fn import(api: &Api, host: &str, series: &[(&str, Points)]) -> Result<()> {
    let body = json!({
        "host": host,
        "series": series.iter().map(|(name, pts)| json!({
            "name": name,
            "points": pts.iter().map(|(t, v)| json!([t, v])).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    });
    let (status, v) = api.post_json("/api/v1/import", Some(&api.token), &body)?;
    ensure!(status == 200, "import: {status} {v}");
    let expected: usize = series.iter().map(|(_, p)| p.len()).sum();
    ensure!(v["accepted"] == json!(expected), "not all accepted: {v}");
    Ok(())
}

/// `(label, value)` of a query's first series.
fn query(api: &Api, params: &str) -> Result<(i64, Points)> {
    let (status, v) = api.get(&format!("/api/v1/query?{params}"))?;
    ensure!(status == 200, "query {params}: {status} {v}");
    let step = v["step"].as_i64().context("step")?;
    let points = v["series"][0]["points"]
        .as_array()
        .with_context(|| format!("no series in {v}"))?
        .iter()
        .map(|p| (p[0].as_i64().unwrap_or_default(), p[1].as_f64()))
        .collect();
    Ok((step, points))
}

/// Ten-second samples `(t, v)` ending in the past, for `n` steps.
fn samples(t0: i64, n: i64, k: f64) -> Vec<(i64, Option<f64>)> {
    (1..=n).map(|i| (t0 + i * 10, Some(k + i as f64))).collect()
}

fn assert_all_there(api: &Api, t0: i64, n: i64, names: &[(&str, f64)]) -> Result<()> {
    for (name, k) in names {
        let (step, pts) = query(
            api,
            &format!("host=batch-1&name={name}&from={t0}&to={}", t0 + n * 10),
        )?;
        ensure!(step == 10, "step {step}");
        ensure!(pts.len() == n as usize, "{name}: {} rows", pts.len());
        for (i, (t, v)) in pts.iter().enumerate() {
            let want = (t0 + (i as i64 + 1) * 10, Some(k + i as f64 + 1.0));
            ensure!(
                (*t, *v) == want,
                "{name}: row {i} is {:?}, want {want:?}",
                (t, v)
            );
        }
    }
    Ok(())
}

#[test]
fn acknowledged_imports_survive_kill_9() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // No flush before the kill: everything comes back from the journal.
    let (mut server, api) = start(dir.path(), "1h")?;
    let t0 = (now() - 3000) / 10 * 10;
    let names = [
        ("cpu.busy_pct", 0.0),
        ("mem.used_pct", 1000.0),
        ("load.1m", 0.5),
    ];
    for part in 0..4 {
        let batch: Vec<_> = names
            .iter()
            .map(|(n, k)| (*n, samples(t0 + part * 500, 50, k + part as f64 * 50.0)))
            .collect();
        import(&api, "batch-1", &batch)?;
    }
    kill9(&mut server)?;
    let (mut server, api) = start(dir.path(), "200ms")?;
    assert_all_there(&api, t0, 200, &names)
        .with_context(|| format!("after the first restart:\n{}", server.proc.log()))?;

    // Now with flushes going on: some rows in chunks, some only in the journal.
    let more: Vec<_> = names
        .iter()
        .map(|(n, k)| (*n, samples(t0 + 2000, 20, k + 200.0)))
        .collect();
    import(&api, "batch-1", &more)?;
    eventually(Duration::from_secs(20), || {
        let text = reqwest::blocking::get(format!("{}/metrics", server.url))?.text()?;
        Ok(text
            .lines()
            .any(|l| l.starts_with("metrolog_archive_flushed_rows_total") && !l.ends_with(" 0"))
            .then_some(()))
    })?;
    let last: Vec<_> = names
        .iter()
        .map(|(n, k)| (*n, samples(t0 + 2200, 20, k + 220.0)))
        .collect();
    import(&api, "batch-1", &last)?;
    kill9(&mut server)?;
    let (mut server, api) = start(dir.path(), "1h")?;
    assert_all_there(&api, t0, 240, &names)
        .with_context(|| format!("after the second restart:\n{}", server.proc.log()))?;
    Ok(())
}

/// Seeded xorshift, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn rrdtool(args: &[String]) -> Result<String> {
    let out = Command::new("rrdtool")
        .args(args)
        .output()
        .context("running rrdtool (apt-get install rrdtool)")?;
    if !out.status.success() {
        bail!(
            "rrdtool {}: {}",
            args.first().map(String::as_str).unwrap_or(""),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// `rrdtool fetch` output as label → value (None when unknown).
fn parse_fetch(text: &str) -> HashMap<i64, Option<f64>> {
    text.lines()
        .filter_map(|l| {
            let (t, v) = l.split_once(':')?;
            let t = t.trim().parse::<i64>().ok()?;
            let v = v.trim().parse::<f64>().ok().filter(|v| v.is_finite());
            Some((t, v))
        })
        .collect()
}

/// An rrd file with the server's default ladder (10 s base, every CF) fed
/// `pts` with `rrdtool update`; returns its path.
fn rrdtool_fed(dir: &Path, name: &str, pts: &[(i64, Option<f64>)]) -> Result<String> {
    let file_s = dir.join(name).display().to_string();
    let mut create = vec![
        "create".to_string(),
        file_s.clone(),
        "--start".into(),
        (pts[0].0 - 10).to_string(),
        "--step".into(),
        "10".into(),
        "DS:v:GAUGE:30:U:U".into(),
    ];
    for (pdp, rows) in [(1, 360), (6, 1440), (30, 2016), (360, 744), (8640, 730)] {
        for cf in ["AVERAGE", "MIN", "MAX", "LAST"] {
            create.push(format!("RRA:{cf}:0.5:{pdp}:{rows}"));
        }
    }
    rrdtool(&create)?;
    for part in pts.chunks(500) {
        let mut args = vec!["update".to_string(), file_s.clone()];
        args.extend(part.iter().map(|(t, v)| match v {
            Some(v) => format!("{t}:{v}"),
            None => format!("{t}:U"),
        }));
        rrdtool(&args)?;
    }
    Ok(file_s)
}

/// `rrdtool fetch FILE CF [-r STEP] -s FROM -e TO`: the step rrdtool chose
/// (from the row labels) and its rows.
fn rrdtool_fetch(
    file: &str,
    cf: &str,
    step: Option<i64>,
    from: i64,
    to: i64,
) -> Result<HashMap<i64, Option<f64>>> {
    let mut args = vec!["fetch".to_string(), file.to_string(), cf.to_string()];
    if let Some(step) = step {
        args.extend(["-r".to_string(), step.to_string()]);
    }
    args.extend([
        "-s".to_string(),
        from.to_string(),
        "-e".to_string(),
        to.to_string(),
    ]);
    Ok(parse_fetch(&rrdtool(&args)?))
}

/// The row width of fetched rows (their labels' spacing).
fn fetch_step(rows: &HashMap<i64, Option<f64>>) -> Option<i64> {
    let mut labels: Vec<i64> = rows.keys().copied().collect();
    labels.sort_unstable();
    labels.windows(2).map(|w| w[1] - w[0]).min()
}

/// Compares our rows with rrdtool's, row by row; returns how many were known.
fn same_rows(what: &str, ours: &Points, theirs: &HashMap<i64, Option<f64>>) -> Result<usize> {
    let mut known = 0;
    for (label, v) in ours {
        let Some(want) = theirs.get(label) else {
            bail!("{what}: rrdtool printed no row {label}");
        };
        let same = match (v, want) {
            (None, None) => true,
            (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-300),
            _ => false,
        };
        ensure!(same, "{what} row {label}: metrolog {v:?}, rrdtool {want:?}");
        known += usize::from(v.is_some());
    }
    Ok(known)
}

#[test]
fn query_results_match_rrdtool_fed_the_same_samples() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (_server, api) = start(dir.path(), "1s")?;
    // Three hours of irregular samples: several per step, gaps past the heartbeat,
    // an outage, unknown values.
    let end = now() - 5;
    let first = end - 3 * 3600;
    let mut rng = Rng(0x5eed);
    let mut pts = Vec::new();
    let mut t = first;
    while t < end {
        let r = rng.next();
        t += match r % 100 {
            0 => 400,
            1..=5 => 31 + (r >> 8) as i64 % 30,
            _ => 1 + (r >> 8) as i64 % 14,
        };
        if t > end {
            break;
        }
        let v = if (r >> 20).is_multiple_of(25) {
            None
        } else {
            Some(((r >> 24) % 100_000) as f64 / 97.0)
        };
        pts.push((t, v));
    }
    for part in pts.chunks(1000) {
        import(&api, "batch-1", &[("disk.io_bytes", part.to_vec())])?;
    }

    let file_s = rrdtool_fed(dir.path(), "s.rrd", &pts)?;

    let mut compared = 0;
    let mut known = 0;
    for (step, from) in [
        (10i64, end - 3500),
        (60, first),
        (300, first),
        (3600, first),
    ] {
        let from = from / step * step;
        let to = end / step * step;
        for (cf, rrd_cf) in [
            ("avg", "AVERAGE"),
            ("min", "MIN"),
            ("max", "MAX"),
            ("last", "LAST"),
        ] {
            let (got_step, ours) = query(
                &api,
                &format!("host=batch-1&name=disk.io_bytes&from={from}&to={to}&step={step}&cf={cf}"),
            )?;
            ensure!(got_step == step, "asked for step {step}, got {got_step}");
            let theirs = rrdtool_fetch(&file_s, rrd_cf, Some(step), from, to)?;
            known += same_rows(&format!("step {step} {rrd_cf}"), &ours, &theirs)?;
            compared += ours.len();
        }
    }
    // Most rows carry data, so the comparison means something.
    ensure!(
        compared > 2000 && known * 2 > compared,
        "{known} known of {compared}"
    );
    Ok(())
}

/// A host that died two days ago: its last hours are read from the fine
/// archives, chosen as `rrdtool fetch` chooses them (relative to the series'
/// newest update, not to the wall clock), through the query API, a group
/// aggregate and the Prometheus API.
#[test]
fn a_series_last_updated_two_days_ago_reads_its_fine_archives_like_rrdtool_fetch() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (_server, api) = start(dir.path(), "1s")?;
    let end = (now() - 2 * 86_400) / 10 * 10;
    let first = end - 3 * 3600;
    let pts: Points = (1..=(end - first) / 10)
        .map(|i| {
            (
                first + i * 10,
                Some((i % 97) as f64 * 1.5 + (i / 97) as f64),
            )
        })
        .collect();
    let body = json!({
        "host": "dead-1",
        "group": "dead",
        "series": [{
            "name": "cpu.busy_pct",
            "points": pts.iter().map(|(t, v)| json!([t, v])).collect::<Vec<_>>(),
        }],
    });
    let (status, v) = api.post_json("/api/v1/import", Some(&api.token), &body)?;
    ensure!(
        status == 200 && v["accepted"] == json!(pts.len()),
        "import: {status} {v}"
    );
    let file = rrdtool_fed(dir.path(), "dead.rrd", &pts)?;

    let mut known = 0;
    // (asked-for step, from): the last 50 minutes at 10 s, the last 3 hours at
    // 1 min, and no step (the finest archive holding `from`).
    for (step, from) in [
        (Some(10), end - 3000),
        (Some(60), first),
        (None, end - 1800),
    ] {
        let to = end;
        let theirs = rrdtool_fetch(&file, "AVERAGE", step, from, to)?;
        let want_step = fetch_step(&theirs).context("rrdtool printed no rows")?;
        let step_q = step.map_or(String::new(), |s| format!("&step={s}"));
        let (got, ours) = query(
            &api,
            &format!("host=dead-1&name=cpu.busy_pct&from={from}&to={to}{step_q}"),
        )?;
        ensure!(
            got == want_step,
            "step {step:?} from {from}: metrolog answered at {got} s, rrdtool fetch at {want_step} s"
        );
        ensure!(
            want_step == step.unwrap_or(10),
            "rrdtool chose {want_step} s"
        );
        known += same_rows(&format!("host, step {step:?}"), &ours, &theirs)?;
        let (got, ours) = query(
            &api,
            &format!("group=dead&agg=avg&name=cpu.busy_pct&from={from}&to={to}{step_q}"),
        )?;
        ensure!(
            got == want_step,
            "group aggregate answered at {got} s, rrdtool at {want_step} s"
        );
        known += same_rows(&format!("group, step {step:?}"), &ours, &theirs)?;
    }
    ensure!(known > 600, "only {known} known rows compared");

    // The Prometheus API reads the same 10 s rows: 10 s apart, each value
    // rrdtool's.
    let (from, to) = (end - 600, end);
    let (status, v) = api.get(&format!(
        "/prometheus/api/v1/query_range?query=cpu_busy_pct%7Bhost%3D%22dead-1%22%7D&start={from}&end={to}&step=10"
    ))?;
    ensure!(status == 200, "query_range: {status} {v}");
    let values = v["data"]["result"][0]["values"]
        .as_array()
        .with_context(|| format!("no result in {v}"))?;
    let theirs = rrdtool_fetch(&file, "AVERAGE", Some(10), from, to)?;
    let mut compared = 0;
    for p in values {
        let t = p[0].as_f64().context("time")? as i64;
        let ours: f64 = p[1].as_str().context("value")?.parse()?;
        if let Some(Some(want)) = theirs.get(&t) {
            ensure!(
                (ours - want).abs() <= 1e-9 * want.abs().max(1.0),
                "prometheus at {t}: {ours}, rrdtool {want}"
            );
            compared += 1;
        }
    }
    ensure!(
        compared >= 50,
        "only {compared} Prometheus points matched rows: {v}"
    );
    Ok(())
}

/// `[archives] max_series_per_host`: a host sending more series than its cap
/// gets the cap; the rest is refused, counted in /metrics and logged, and the
/// series it has go on.
#[test]
fn series_beyond_max_series_per_host_are_refused_counted_and_logged() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        "[archives]\nflush_interval = \"1s\"\nmax_series_per_host = 50\n",
    )?;
    let mut server = Server::start_in(
        &dir.path().join("data"),
        &[
            "--no-local-agent",
            "--config",
            &config.display().to_string(),
        ],
    )?;
    let api = Api::new(&server.url, &server.token("admin")?);
    let t0 = (now() - 600) / 10 * 10;
    let body = |t: i64| {
        json!({
            "host": "flood-1",
            "series": (0..80).map(|i| json!({
                "name": format!("flood.s{i}"),
                "points": [[t, i]],
            })).collect::<Vec<_>>(),
        })
    };
    let (status, v) = api.post_json("/api/v1/import", Some(&api.token), &body(t0))?;
    ensure!(status == 200 && v["accepted"] == 50, "import: {status} {v}");
    // The next request: the 50 it has go on, the other 30 are still refused.
    let (status, v) = api.post_json("/api/v1/import", Some(&api.token), &body(t0 + 10))?;
    ensure!(status == 200 && v["accepted"] == 50, "import: {status} {v}");
    let refused = eventually(Duration::from_secs(20), || {
        let text = reqwest::blocking::get(format!("{}/metrics", server.url))?.text()?;
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix("metrolog_series_refused_total{limit=\"per_host\"} "))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .filter(|n| *n >= 60))
    })?;
    ensure!(refused == 60, "{refused} refused");
    let (status, series) = api.get("/api/v1/series?host=flood-1&name=flood.*")?;
    ensure!(
        status == 200 && series.as_array().map(Vec::len) == Some(50),
        "{status} {series}"
    );
    let log = server.proc.log();
    ensure!(
        log.matches("new series refused").count() == 1,
        "refusals are logged once a minute at most:\n{log}"
    );
    Ok(())
}
