//! Graph rendering against `rrdtool graph`, same picture, same data, same run.
//!
//! `cargo bench -p metrolog-server --bench graph` — needs Debian's `rrdtool`.
//! The picture: 800×300 PNG of one day of two series at 1 min rows (1440 rows
//! each), two lines, a title, a legend with current/min/avg/max per line.
//! rrdtool runs in its pipe mode (`rrdtool -`), so its process start is not
//! counted: only the `graph` command itself.

use metrolog_server::graph::{self, Graph, Line, Unit};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: usize = 40;
const STEP: i64 = 60;
const ROWS: i64 = 1440;

fn data(end: i64) -> [Vec<(i64, f64)>; 2] {
    // A small deterministic generator: a daily wave plus noise.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut noise = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % 10_000) as f64 / 10_000.0
    };
    let mut a = Vec::new();
    let mut b = Vec::new();
    for i in 1..=ROWS {
        let t = end - (ROWS - i) * STEP;
        let day = ((i as f64) / ROWS as f64 * std::f64::consts::TAU).sin();
        a.push((t, 40.0 + 25.0 * day + 10.0 * noise()));
        b.push((t, 20.0 + 12.0 * day + 6.0 * noise()));
    }
    [a, b]
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ours(g: &Graph, png: bool) -> Duration {
    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let t = Instant::now();
        if png {
            std::hint::black_box(graph::render_png(g).expect("render"));
        } else {
            std::hint::black_box(graph::render_svg(g).expect("render"));
        }
        times.push(t.elapsed());
    }
    median(times)
}

fn rrdtool(dir: &std::path::Path, end: i64, series: &[Vec<(i64, f64)>; 2]) -> Option<Duration> {
    let rrd = dir.join("bench.rrd");
    let start = end - ROWS * STEP;
    let ok = Command::new("rrdtool")
        .arg("create")
        .arg(&rrd)
        .args([
            "--start",
            &(start - STEP).to_string(),
            "--step",
            &STEP.to_string(),
        ])
        .args(["DS:a:GAUGE:180:U:U", "DS:b:GAUGE:180:U:U"])
        .args([
            "RRA:AVERAGE:0.5:1:1440",
            "RRA:MIN:0.5:1:1440",
            "RRA:MAX:0.5:1:1440",
        ])
        .status()
        .ok()?
        .success();
    if !ok {
        return None;
    }
    // Samples at each row's end fill the row (rate = value for GAUGE).
    let mut update = Command::new("rrdtool");
    update.arg("update").arg(&rrd);
    update.arg(format!("{}:{}:{}", start, series[0][0].1, series[1][0].1));
    for (pa, pb) in series[0].iter().zip(&series[1]) {
        update.arg(format!("{}:{}:{}", pa.0, pa.1, pb.1));
    }
    if !update.status().ok()?.success() {
        return None;
    }
    let mut child = Command::new("rrdtool")
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take()?;
    let mut out = BufReader::new(child.stdout.take()?);
    let png = dir.join("rrdtool.png");
    let r = rrd.display();
    let cmd = format!(
        "graph {png} --imgformat PNG --width 800 --height 300 --full-size-mode \
         --start {start} --end {end} --title 'CPU of web-1' --vertical-label % \
         DEF:a={r}:a:AVERAGE DEF:b={r}:b:AVERAGE \
         'LINE1:a#3d9a3a:cpu.busy_pct' 'GPRINT:a:LAST:cur %5.1lf' 'GPRINT:a:MIN:min %5.1lf' \
         'GPRINT:a:AVERAGE:avg %5.1lf' 'GPRINT:a:MAX:max %5.1lf\\n' \
         'LINE1:b#1f6fd6:cpu.user_pct' 'GPRINT:b:LAST:cur %5.1lf' 'GPRINT:b:MIN:min %5.1lf' \
         'GPRINT:b:AVERAGE:avg %5.1lf' 'GPRINT:b:MAX:max %5.1lf\\n'\n",
        png = png.display()
    );
    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let t = Instant::now();
        stdin.write_all(cmd.as_bytes()).ok()?;
        stdin.flush().ok()?;
        loop {
            let mut line = String::new();
            if out.read_line(&mut line).ok()? == 0 {
                return None;
            }
            if line.starts_with("OK") {
                break;
            }
            if line.starts_with("ERROR") {
                eprintln!("rrdtool: {line}");
                return None;
            }
        }
        times.push(t.elapsed());
    }
    drop(stdin);
    let _ = child.wait();
    Some(median(times))
}

fn main() {
    let end = 1_710_331_200; // 2024-03-13 12:00 UTC, a multiple of the step
    let series = data(end);
    let line = |label: &str, s: &Vec<(i64, f64)>| Line {
        label: label.into(),
        points: s.iter().map(|&(t, v)| (t, Some(v))).collect(),
        band: None,
    };
    let mut g = Graph {
        title: Some("CPU of web-1".into()),
        width: 800,
        height: 300,
        from: end - ROWS * STEP,
        to: end,
        step: STEP,
        unit: Unit::Percent,
        lines: vec![
            line("cpu.busy_pct", &series[0]),
            line("cpu.user_pct", &series[1]),
        ],
        thresholds: Vec::new(),
        marks: Vec::new(),
        utc_offset: 0,
    };
    graph::init();
    let png = ours(&g, true);
    let svg = ours(&g, false);
    // The dashboard's usual picture also has min–max bands.
    for l in &mut g.lines {
        l.band = Some(
            l.points
                .iter()
                .map(|&(t, v)| (t, v.map(|v| v - 4.0), v.map(|v| v + 6.0)))
                .collect(),
        );
    }
    let banded = ours(&g, true);
    let dir = tempfile::tempdir().expect("temp dir");
    let theirs = rrdtool(dir.path(), end, &series);

    println!("graph 800x300, one day of two series ({ROWS} rows each), median of {RUNS} runs");
    println!(
        "  metrolog png          {:>8.2} ms",
        png.as_secs_f64() * 1e3
    );
    println!(
        "  metrolog png + bands  {:>8.2} ms",
        banded.as_secs_f64() * 1e3
    );
    println!(
        "  metrolog svg          {:>8.2} ms",
        svg.as_secs_f64() * 1e3
    );
    match theirs {
        Some(r) => {
            println!("  rrdtool graph png     {:>8.2} ms", r.as_secs_f64() * 1e3);
            println!(
                "  ratio metrolog/rrdtool {:.2} (target <= 0.25)",
                png.as_secs_f64() / r.as_secs_f64()
            );
        }
        None => println!("  rrdtool graph         not available (apt-get install rrdtool)"),
    }
}
