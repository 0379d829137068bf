//! Feeds the same samples to Debian's `rrdtool` and to Metrolog's round-robin engine and
//! compares every row of every archive for AVERAGE, MIN, MAX and LAST.
//!
//! Needs the `rrdtool` binary (Debian package `rrdtool`; CI installs it). When it is
//! missing the test fails: parity is part of the contract, not an optional extra.

use std::path::{Path, PathBuf};
use std::process::Command;

use metrolog_protocol::rrd::{ArchiveSpec, Cf, Rrd, RrdSpec};

/// A small, seeded generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Samples with irregular intervals, unknown values, gaps longer than the heartbeat and
/// samples that span several steps, over `duration` seconds after `start`.
fn samples(seed: u64, spec: &RrdSpec, start: i64, duration: i64) -> Vec<(i64, f64)> {
    let mut rng = Rng(seed);
    let hb = i64::from(spec.heartbeat);
    let step = i64::from(spec.base_step);
    let mut out = Vec::new();
    let mut ts = start;
    let mut level = 50.0;
    // Phases: 0 = dense (several samples per step), 1 = sparse (up to the heartbeat, so one
    // sample spans several steps), 2 = on the step boundaries, as agents send buckets.
    let mut phase = 0;
    let mut end = start + duration;
    while ts < end {
        if rng.chance(1) {
            phase = rng.below(3);
        }
        // Outages of hours only in the first half, so the archives end with data.
        let early = ts < start + duration / 2;
        let gap = if rng.chance(1) {
            // Longer than the heartbeat: that time is unknown.
            match rng.below(10) {
                0 if early => rng.range(3_600, 30 * 3_600),
                1..=3 => rng.range(hb + 1, 20 * hb),
                _ => rng.range(hb + 1, hb + step),
            }
        } else {
            match phase {
                0 => rng.range(1, step.max(2) / 2 + 1),
                1 => rng.range(1, hb),
                _ => step - ts.rem_euclid(step) + if rng.chance(20) { step } else { 0 },
            }
        };
        if gap >= 3_600 {
            // Outages do not eat into the time with data.
            end += gap;
        }
        ts += gap.max(1);
        level += (rng.unit() - 0.5) * 10.0;
        let value = if rng.chance(4) {
            f64::NAN
        } else if rng.chance(2) {
            // Values across magnitudes and signs.
            (rng.unit() - 0.5) * 1e6
        } else {
            (level * 1000.0).round() / 1000.0 + rng.unit()
        };
        out.push((ts, value));
    }
    out
}

fn rrdtool(args: &[String]) -> String {
    let output = Command::new("rrdtool")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `rrdtool` ({e}); install it (Debian/Ubuntu: apt-get install rrdtool): \
             this test compares Metrolog's archives with rrdtool's and must not be skipped"
            )
        });
    assert!(
        output.status.success(),
        "rrdtool {} failed: {}",
        args.first().map(String::as_str).unwrap_or(""),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn create_args(path: &Path, spec: &RrdSpec, start: i64) -> Vec<String> {
    let mut args = vec![
        "create".to_string(),
        path.display().to_string(),
        "--start".into(),
        start.to_string(),
        "--step".into(),
        spec.base_step.to_string(),
        format!("DS:v:GAUGE:{}:U:U", spec.heartbeat),
    ];
    for a in &spec.archives {
        for cf in Cf::ALL {
            args.push(format!(
                "RRA:{}:{}:{}:{}",
                cf.rrdtool_name(),
                spec.xff,
                a.step / spec.base_step,
                a.rows
            ));
        }
    }
    args
}

/// `rrdtool fetch` output: `(label, value)` rows, NaN as `None`.
fn parse_fetch(text: &str) -> Vec<(i64, Option<f64>)> {
    text.lines()
        .filter_map(|line| {
            let (label, value) = line.split_once(':')?;
            let label: i64 = label.trim().parse().ok()?;
            let value = value.trim();
            let value = if value.to_ascii_lowercase().contains("nan") {
                None
            } else {
                Some(
                    value
                        .parse::<f64>()
                        .unwrap_or_else(|_| panic!("bad value in {line:?}")),
                )
            };
            Some((label, value))
        })
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    // rrdtool prints 11 significant digits.
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()) + 1e-12
}

/// Writes the samples of a failing scenario as `rrdtool update` arguments, to replay it.
fn dump(dir: &Path, name: &str, samples: &[(i64, f64)]) {
    let lines: Vec<String> = samples
        .iter()
        .map(|(t, v)| {
            if v.is_nan() {
                format!("{t}:U")
            } else {
                format!("{t}:{v}")
            }
        })
        .collect();
    let path = dir.join(format!("compat-{name}.samples"));
    let _ = std::fs::write(&path, lines.join("\n"));
    eprintln!("{name}: samples written to {}", path.display());
}

/// Runs one scenario and returns how many rows were compared and how many were known.
fn compare(name: &str, spec: RrdSpec, start: i64, samples: &[(i64, f64)]) -> (usize, usize) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join(format!("compat-{name}-{}.rrd", std::process::id()));
    let _ = std::fs::remove_file(&path);
    rrdtool(&create_args(&path, &spec, start));

    let mut rrd = Rrd::new(spec.clone(), start).unwrap();
    for batch in samples.chunks(1500) {
        let mut args = vec!["update".to_string(), path.display().to_string()];
        for &(ts, v) in batch {
            rrd.update(ts, v).unwrap();
            args.push(if v.is_nan() {
                format!("{ts}:U")
            } else {
                format!("{ts}:{v}")
            });
        }
        rrdtool(&args);
    }
    let last: i64 = rrdtool(&["last".into(), path.display().to_string()])
        .trim()
        .parse()
        .unwrap();
    assert_eq!(last, rrd.last_update());

    let mut compared = 0;
    let mut known = 0;
    for (i, a) in spec.archives.iter().enumerate() {
        let step = i64::from(a.step);
        let newest = rrd.newest_label(i).unwrap();
        let from = newest - step * i64::from(a.rows);
        assert_eq!(rrd.choose_archive(from, newest, a.step), i);
        for cf in Cf::ALL {
            let theirs = parse_fetch(&rrdtool(&[
                "fetch".into(),
                path.display().to_string(),
                cf.rrdtool_name().into(),
                "-r".into(),
                a.step.to_string(),
                "-s".into(),
                from.to_string(),
                "-e".into(),
                newest.to_string(),
            ]));
            assert!(theirs.len() >= 2, "{name}: rrdtool fetch printed no rows");
            assert_eq!(
                theirs[1].0 - theirs[0].0,
                step,
                "{name}: rrdtool fetch -r {step} read another archive"
            );
            let ours = rrd.fetch(cf, i, from, newest).unwrap();
            assert_eq!(ours.step, a.step);
            assert_eq!(ours.values.len(), a.rows as usize);
            for (label, value) in ours.points() {
                let (_, expected) = theirs
                    .iter()
                    .find(|(l, _)| *l == label)
                    .unwrap_or_else(|| panic!("{name}: rrdtool printed no row {label}"));
                let same = match (value, *expected) {
                    (None, None) => true,
                    (Some(x), Some(y)) => close(x, y),
                    _ => false,
                };
                if !same {
                    dump(&dir, name, samples);
                }
                assert!(
                    same,
                    "{name}: archive {i} (step {step} s) {cf} row {label}: metrolog {value:?}, rrdtool {expected:?}"
                );
                compared += 1;
                known += usize::from(value.is_some());
            }
        }
    }
    let _ = std::fs::remove_file(&path);
    eprintln!("{name}: {compared} rows compared, {known} known");
    (compared, known)
}

/// A scenario where (nearly) everything is unknown would prove little.
fn assert_mostly_known(name: &str, (compared, known): (usize, usize), percent: usize) {
    assert!(
        known * 100 >= compared * percent,
        "{name}: only {known} of {compared} rows known"
    );
}

#[test]
fn small_ladder_matches_rrdtool() {
    let spec = RrdSpec::with_archives(
        10,
        vec![
            ArchiveSpec::new(10, 200),
            ArchiveSpec::new(30, 150),
            ArchiveSpec::new(60, 100),
            ArchiveSpec::new(300, 40),
        ],
    );
    // RRD_COMPAT_SEEDS=200 runs more random scenarios (the default keeps CI quick).
    let seeds: u64 = std::env::var("RRD_COMPAT_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    for seed in 1..=seeds {
        let start = 1_700_000_000 + seed as i64 * 7;
        let s = samples(seed, &spec, start, 3 * 3600);
        let name = format!("small-{seed}");
        let counts = compare(&name, spec.clone(), start, &s);
        assert_eq!(counts.0, 4 * (200 + 150 + 100 + 40));
        assert_mostly_known(&name, counts, 25);
    }
}

#[test]
fn odd_steps_long_heartbeat_and_strict_xff_match_rrdtool() {
    let mut spec = RrdSpec::with_archives(
        5,
        vec![
            ArchiveSpec::new(5, 300),
            ArchiveSpec::new(15, 200),
            ArchiveSpec::new(35, 120),
            ArchiveSpec::new(100, 60),
        ],
    );
    spec.heartbeat = 60;
    let seeds: u64 = std::env::var("RRD_COMPAT_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    for seed in 11..11 + seeds {
        spec.xff = [0.3, 0.0, 0.9][seed as usize % 3];
        let start = 1_650_000_003 + seed as i64;
        let s = samples(seed, &spec, start, 2 * 3600);
        let name = format!("odd-{seed}");
        let counts = compare(&name, spec.clone(), start, &s);
        assert_mostly_known(&name, counts, 10);
    }
}

#[test]
fn default_ladder_matches_rrdtool() {
    let spec = RrdSpec::default_ladder();
    let start = 1_699_990_000;
    let s = samples(42, &spec, start, 4 * 86_400);
    let counts = compare("default", spec, start, &s);
    // The 1 h and 1 day archives reach back 31 days and 2 years: mostly before the data.
    assert_mostly_known("default", counts, 30);
}

#[test]
fn outages_longer_than_every_archive_match_rrdtool() {
    let spec = RrdSpec::with_archives(
        10,
        vec![
            ArchiveSpec::new(10, 30),
            ArchiveSpec::new(30, 20),
            ArchiveSpec::new(60, 12),
            ArchiveSpec::new(300, 6),
        ],
    );
    // Each outage ends with one sample, and the archives are compared right after it:
    // with the row in progress at different phases, to cover how rrdtool caps its writes.
    for (seed, outage) in [
        (21u64, 2 * 86_400 + 5),
        (22, 86_400 + 37),
        (23, 7_200 + 123),
    ] {
        let start = 1_700_000_000 + seed as i64;
        let mut s = samples(seed, &spec, start, 2 * 3600);
        s.retain(|(t, _)| *t < start + 3600);
        let last = s.last().unwrap().0;
        s.push((last + outage, 5.0));
        let name = format!("outage-{seed}");
        let (compared, _) = compare(&name, spec.clone(), start, &s);
        assert_eq!(compared, 4 * (30 + 20 + 12 + 6));
    }
}
