//! The y axis: which unit a series is in (guessed from its name, SPEC §3 puts
//! units in names), round tick values for it and how values are written.

/// What the numbers of a series measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Plain numbers (`load.1m`, counts): SI prefixes only for large values.
    Plain,
    /// `_pct`: 0–100.
    Percent,
    /// `_bytes`: binary prefixes (KiB, MiB, …).
    Bytes,
    /// `_bytes_per_s`.
    BytesPerSec,
    /// `_per_s`: events per second.
    PerSec,
    /// `_seconds`, `_s`.
    Seconds,
}

impl Unit {
    /// Guesses the unit from a series name (labels and globs allowed).
    pub fn guess(name: &str) -> Unit {
        let base = name.split('{').next().unwrap_or(name).trim_end_matches('*');
        if base.starts_with("load.") {
            Unit::Plain
        } else if base.ends_with("_pct") || base.ends_with("_percent") {
            Unit::Percent
        } else if base.ends_with("_bytes_per_s") {
            Unit::BytesPerSec
        } else if base.ends_with("_bytes") {
            Unit::Bytes
        } else if base.ends_with("_per_s") {
            Unit::PerSec
        } else if base.ends_with("_seconds") || base.ends_with("_s") {
            Unit::Seconds
        } else {
            Unit::Plain
        }
    }

    /// The unit shared by several names, `Plain` when they disagree.
    pub fn common<'a>(names: impl IntoIterator<Item = &'a str>) -> Unit {
        let mut units = names.into_iter().map(Unit::guess);
        let Some(first) = units.next() else {
            return Unit::Plain;
        };
        if units.all(|u| u == first) {
            first
        } else {
            Unit::Plain
        }
    }

    fn binary(self) -> bool {
        matches!(self, Unit::Bytes | Unit::BytesPerSec)
    }

    /// The prefix scale for values up to `magnitude`: (divisor, prefix).
    fn scale(self, magnitude: f64) -> (f64, &'static str) {
        let m = magnitude.abs();
        match self {
            Unit::Percent => (1.0, ""),
            Unit::Seconds => {
                if m > 0.0 && m < 1.0 {
                    (1e-3, "m")
                } else {
                    (1.0, "")
                }
            }
            u if u.binary() => {
                const P: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
                let mut i = 0;
                while i + 1 < P.len() && m >= 1024f64.powi(i as i32 + 1) {
                    i += 1;
                }
                (1024f64.powi(i as i32), P[i])
            }
            _ => {
                const P: [&str; 7] = ["", "k", "M", "G", "T", "P", "E"];
                let mut i = 0;
                while i + 1 < P.len() && m >= 1000f64.powi(i as i32 + 1) {
                    i += 1;
                }
                (1000f64.powi(i as i32), P[i])
            }
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Unit::Plain => "",
            Unit::Percent => "%",
            Unit::Bytes => "B",
            Unit::BytesPerSec => "B/s",
            Unit::PerSec => "/s",
            Unit::Seconds => "s",
        }
    }

    fn join(self, number: String, prefix: &str) -> String {
        let suffix = self.suffix();
        if prefix.is_empty() && suffix.is_empty() {
            number
        } else {
            format!("{number} {prefix}{suffix}")
        }
    }

    /// A value alone (legend, tooltips): three significant digits.
    pub fn format(self, v: f64) -> String {
        if !v.is_finite() {
            return "–".into();
        }
        let (div, prefix) = self.scale(v);
        let x = v / div;
        let decimals = if x == 0.0 || x.abs() >= 100.0 {
            0
        } else if x.abs() >= 10.0 {
            1
        } else {
            2
        };
        self.join(format!("{x:.decimals$}"), prefix)
    }

    /// A value without trailing zeros (`80 %`, `1.5 GiB`), for threshold labels.
    pub fn format_short(self, v: f64) -> String {
        let s = self.format(v);
        let (num, rest) = s.split_once(' ').unwrap_or((&s, ""));
        let num = if num.contains('.') {
            num.trim_end_matches('0').trim_end_matches('.')
        } else {
            num
        };
        if rest.is_empty() {
            num.to_string()
        } else {
            format!("{num} {rest}")
        }
    }

    /// Round tick values covering `lo..=hi`, about `want` of them, and their
    /// labels written with one shared prefix and precision.
    pub fn ticks(self, lo: f64, hi: f64, want: usize) -> Ticks {
        let (lo, hi) = if hi > lo { (lo, hi) } else { (lo, lo + 1.0) };
        let (div, prefix) = self.scale(lo.abs().max(hi.abs()));
        let (slo, shi) = (lo / div, hi / div);
        let raw = (shi - slo) / want.max(1) as f64;
        let step = nice_step(raw, self.binary() && div == 1.0);
        let first = (slo / step).floor() * step;
        let last = (shi / step).ceil() * step;
        // Enough decimals to tell ticks apart: 2.5 needs one, 0.25 two.
        let k = step.log10().floor() as i32;
        let decimals = if step_has_half(step) {
            (1 - k).max(0)
        } else {
            (-k).max(0)
        } as usize;
        let mut values = Vec::new();
        let mut labels = Vec::new();
        let n = ((last - first) / step).round() as i64;
        for i in 0..=n.min(100) {
            let v = first + i as f64 * step;
            // -0.0 prints as "-0".
            let v = if v.abs() < step * 1e-9 { 0.0 } else { v };
            values.push(v * div);
            let text = if v == 0.0 {
                "0".to_string()
            } else {
                format!("{v:.decimals$}")
            };
            labels.push(self.join(text, prefix));
        }
        Ticks {
            lo: first * div,
            hi: last * div,
            values,
            labels,
        }
    }
}

/// Tick values and their labels; `lo..hi` is the axis range they span.
#[derive(Debug, Clone, PartialEq)]
pub struct Ticks {
    pub lo: f64,
    pub hi: f64,
    pub values: Vec<f64>,
    pub labels: Vec<String>,
}

/// 1, 2, 2.5, 5 × 10ⁿ (or powers of two for small byte counts).
fn nice_step(raw: f64, powers_of_two: bool) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    if powers_of_two && raw >= 1.0 {
        return 2f64.powi(raw.log2().ceil() as i32);
    }
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 2.5 {
        2.5
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

fn step_has_half(step: f64) -> bool {
    let mag = 10f64.powf(step.log10().floor());
    ((step / mag) - 2.5).abs() < 1e-9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guesses_from_names() {
        assert_eq!(Unit::guess("cpu.busy_pct"), Unit::Percent);
        assert_eq!(Unit::guess("disk.used_pct{mount=\"/\"}"), Unit::Percent);
        assert_eq!(Unit::guess("mem.used_bytes"), Unit::Bytes);
        assert_eq!(Unit::guess("net.rx_bytes_per_s"), Unit::BytesPerSec);
        assert_eq!(Unit::guess("net.rx_packets_per_s"), Unit::PerSec);
        assert_eq!(Unit::guess("load.1m"), Unit::Plain);
        assert_eq!(Unit::guess("load.*"), Unit::Plain);
        assert_eq!(Unit::guess("cpu.*_pct"), Unit::Percent);
        assert_eq!(
            Unit::common(["mem.used_bytes", "swap.used_bytes"]),
            Unit::Bytes
        );
        assert_eq!(Unit::common(["mem.used_bytes", "load.1m"]), Unit::Plain);
    }

    #[test]
    fn formats_with_prefixes() {
        assert_eq!(Unit::Bytes.format(1536.0), "1.50 KiB");
        assert_eq!(Unit::Bytes.format(3.0 * 1024f64.powi(3)), "3.00 GiB");
        assert_eq!(Unit::BytesPerSec.format(512.0), "512 B/s");
        assert_eq!(Unit::Percent.format(12.345), "12.3 %");
        assert_eq!(Unit::Plain.format(0.53), "0.53");
        assert_eq!(Unit::Plain.format(12_500.0), "12.5 k");
        assert_eq!(Unit::Seconds.format(0.25), "250 ms");
        assert_eq!(Unit::Plain.format(f64::NAN), "–");
        assert_eq!(Unit::Percent.format_short(80.0), "80 %");
        assert_eq!(Unit::Bytes.format_short(1536.0), "1.5 KiB");
        assert_eq!(Unit::Plain.format_short(2.0), "2");
    }

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        let t = Unit::Percent.ticks(0.0, 87.0, 5);
        assert_eq!(t.labels, ["0 %", "20 %", "40 %", "60 %", "80 %", "100 %"]);
        assert_eq!((t.lo, t.hi), (0.0, 100.0));
        let t = Unit::Bytes.ticks(0.0, 7.3 * 1024f64.powi(3), 4);
        assert_eq!(t.labels.last().unwrap(), "8 GiB");
        let t = Unit::Bytes.ticks(0.0, 9.6 * 1024f64.powi(3), 4);
        assert_eq!(
            t.labels,
            ["0 GiB", "2.5 GiB", "5.0 GiB", "7.5 GiB", "10.0 GiB"]
        );
        let t = Unit::Plain.ticks(0.0, 90.0, 4);
        assert_eq!(t.labels, ["0", "25", "50", "75", "100"]);
        let t = Unit::Plain.ticks(0.0, 0.9, 4);
        assert_eq!(t.labels, ["0", "0.25", "0.50", "0.75", "1.00"]);
        // A flat series still gets an axis.
        let t = Unit::Plain.ticks(3.0, 3.0, 4);
        assert!(t.values.len() >= 2 && t.lo <= 3.0 && t.hi >= 4.0);
    }
}
