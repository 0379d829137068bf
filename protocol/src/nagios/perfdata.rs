//! Plugin output as the Monitoring Plugins Development Guidelines define it:
//! the first line is the summary, perfdata follows a `|`, long output lines
//! come after the first, and perfdata may continue after a `|` in the long
//! output ([`split_output`]). Perfdata items are
//! `'label'=value[UOM];[warn];[crit];[min];[max]` ([`parse`]), and each item
//! becomes series `check.<check>.<label>` ([`series_names`]) with its value
//! in a base unit ([`PerfItem::normalised`]).
//!
//! The parser is tolerant: plugins in the wild print items that bend the
//! grammar. An item that cannot be read is skipped and counted
//! ([`Perfdata::skipped`]); the items around it are kept. It never panics.

use super::result::CheckName;
use crate::series::{SeriesName, MAX_NAME_LEN};
use std::collections::HashSet;
use std::fmt;

/// Longest label part of a series name, in bytes, before a collision suffix:
/// `check.` + a 64-byte check name + `.` + this + `_NNN` fits in a series name.
pub const MAX_LABEL_PART: usize = MAX_NAME_LEN - 6 - super::result::MAX_CHECK_NAME - 1 - 8;

/// A plugin's output split per the guidelines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PluginOutput {
    /// The first line, without its perfdata, trimmed.
    pub summary: String,
    /// The lines after the first, without perfdata (`\n`-separated).
    pub long_output: String,
    /// Every perfdata part (first line, then long output), space-separated.
    pub perfdata: String,
}

/// Splits plugin output:
///
/// ```text
/// TEXT OUTPUT | OPTIONAL PERFDATA
/// LONG TEXT LINE 1
/// LONG TEXT LINE 2 | PERFDATA LINE 2
/// PERFDATA LINE 3
/// ```
///
/// Once a long output line held a `|`, every later line is perfdata.
pub fn split_output(text: &str) -> PluginOutput {
    let mut lines = text.lines();
    let mut perf: Vec<&str> = Vec::new();
    let summary = match lines.next() {
        Some(first) => match first.split_once('|') {
            Some((text, p)) => {
                perf.push(p);
                text.trim()
            }
            None => first.trim(),
        },
        None => "",
    };
    let mut long: Vec<&str> = Vec::new();
    let mut in_perf = false;
    for line in lines {
        if in_perf {
            perf.push(line);
        } else if let Some((text, p)) = line.split_once('|') {
            long.push(text.trim_end());
            perf.push(p);
            in_perf = true;
        } else {
            long.push(line.trim_end());
        }
    }
    while long.last().is_some_and(|l| l.is_empty()) {
        long.pop();
    }
    let perfdata = perf
        .iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    PluginOutput {
        summary: summary.to_string(),
        long_output: long.join("\n"),
        perfdata,
    }
}

/// What a unit of measure means once normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// No UOM: a plain number (a count, a load average).
    Number,
    /// `s`, `ms`, `us`: normalised to seconds.
    Seconds,
    /// `%`: a percentage, kept as is (0–100).
    Percent,
    /// `B`, `KB`, `MB`, `GB`, `TB`: normalised to bytes.
    Bytes,
    /// `c`: a continuous counter; the agent turns it into a rate per second.
    Counter,
    /// Any other UOM (not in the guidelines): the value is kept as printed.
    Other,
}

/// The unit of `uom` and the factor to its base unit.
///
/// Byte multiples are powers of 1024: the guidelines do not say, but the
/// Monitoring Plugins print them so (`check_disk`'s `MB` are mebibytes,
/// `check_swap`'s too), and a check comparing with `df -h` expects it.
/// `KiB`, `MiB`, `GiB` and `TiB` are read the same way.
pub fn unit_of(uom: &str) -> (Unit, f64) {
    const K: f64 = 1024.0;
    match uom {
        "" => (Unit::Number, 1.0),
        "s" => (Unit::Seconds, 1.0),
        "ms" => (Unit::Seconds, 1e-3),
        "us" => (Unit::Seconds, 1e-6),
        "%" => (Unit::Percent, 1.0),
        "B" => (Unit::Bytes, 1.0),
        "KB" | "KiB" => (Unit::Bytes, K),
        "MB" | "MiB" => (Unit::Bytes, K * K),
        "GB" | "GiB" => (Unit::Bytes, K * K * K),
        "TB" | "TiB" => (Unit::Bytes, K * K * K * K),
        "c" => (Unit::Counter, 1.0),
        _ => (Unit::Other, 1.0),
    }
}

/// One perfdata item.
#[derive(Debug, Clone, PartialEq)]
pub struct PerfItem {
    pub label: String,
    /// `None` for `U`: the plugin could not measure it (no sample).
    pub value: Option<f64>,
    /// Unit of measure as printed (`""` when none).
    pub uom: String,
    /// Warning range text, as printed (`None` when the field is empty or omitted).
    pub warn: Option<String>,
    pub crit: Option<String>,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

impl PerfItem {
    pub fn unit(&self) -> Unit {
        unit_of(&self.uom).0
    }

    /// The value in its base unit (seconds, bytes; percent and counters as
    /// printed); `None` for `U`.
    pub fn normalised(&self) -> Option<f64> {
        let (_, factor) = unit_of(&self.uom);
        self.value.map(|v| v * factor).filter(|v| v.is_finite())
    }
}

impl fmt::Display for PerfItem {
    /// The guidelines' form; trailing empty fields are omitted and the label
    /// is quoted when it must be.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let needs_quotes = self.label.is_empty()
            || self
                .label
                .chars()
                .any(|c| c.is_whitespace() || c == '=' || c == '\'');
        if needs_quotes {
            write!(f, "'{}'", self.label.replace('\'', "''"))?;
        } else {
            f.write_str(&self.label)?;
        }
        f.write_str("=")?;
        match self.value {
            Some(v) => write!(f, "{v}{}", self.uom)?,
            None => f.write_str("U")?,
        }
        let num = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
        let fields = [
            self.warn.clone().unwrap_or_default(),
            self.crit.clone().unwrap_or_default(),
            num(self.min),
            num(self.max),
        ];
        let used = fields
            .iter()
            .rposition(|s| !s.is_empty())
            .map_or(0, |i| i + 1);
        for field in &fields[..used] {
            write!(f, ";{field}")?;
        }
        Ok(())
    }
}

/// The items of a perfdata text, and what was skipped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Perfdata {
    pub items: Vec<PerfItem>,
    /// Items that could not be read and were skipped.
    pub skipped: usize,
    /// The first of them (at most 64 bytes), to say what was wrong.
    pub first_skipped: Option<String>,
}

/// Parses perfdata: space-separated `'label'=value[UOM];[warn];[crit];[min];[max]`.
pub fn parse(text: &str) -> Perfdata {
    let mut out = Perfdata::default();
    let mut rest = text;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            return out;
        }
        match item(rest) {
            Ok((it, after)) => {
                out.items.push(it);
                rest = after;
            }
            Err(after) => {
                let junk = &rest[..rest.len() - after.len()];
                out.skipped += 1;
                if out.first_skipped.is_none() {
                    out.first_skipped = Some(cut(junk, 64).to_string());
                }
                rest = after;
            }
        }
    }
}

/// Reads one item at the start of `s` (not blank). `Err` holds the text after
/// the unreadable token, which always advances.
fn item(s: &str) -> Result<(PerfItem, &str), &str> {
    let skip_token = |s: &str| -> usize { s.find(char::is_whitespace).unwrap_or(s.len()) };
    let (label, after_label) = if let Some(quoted) = s.strip_prefix('\'') {
        match quoted_label(quoted) {
            Some(x) => x,
            None => return Err(&s[skip_token(s)..]),
        }
    } else {
        let end = s
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(s.len());
        (s[..end].to_string(), &s[end..])
    };
    let Some(data) = after_label.strip_prefix('=') else {
        let consumed = s.len() - after_label.len();
        let rest = &s[consumed..];
        return Err(&rest[skip_token(rest)..]);
    };
    let end = skip_token(data);
    let (data, rest) = (&data[..end], &data[end..]);
    if label.is_empty() {
        return Err(rest);
    }
    let mut fields = data.split(';');
    let first = fields.next().unwrap_or("");
    let (value, uom) = if first == "U" {
        (None, String::new())
    } else {
        match number_prefix(first) {
            Some((v, uom)) => (Some(v), uom.to_string()),
            None => return Err(rest),
        }
    };
    let text = |f: Option<&str>| f.map(str::trim).filter(|t| !t.is_empty()).map(String::from);
    let warn = text(fields.next());
    let crit = text(fields.next());
    let num = |f: Option<&str>| f.and_then(|t| number_prefix(t.trim())).map(|(v, _)| v);
    let min = num(fields.next());
    let max = num(fields.next());
    Ok((
        PerfItem {
            label,
            value,
            uom,
            warn,
            crit,
            min,
            max,
        },
        rest,
    ))
}

/// A quoted label after its opening quote: `''` is a quote; returns the label
/// and what follows the closing quote, `None` when it is not closed.
fn quoted_label(s: &str) -> Option<(String, &str)> {
    let mut label = String::new();
    let mut rest = s;
    loop {
        let i = rest.find('\'')?;
        label.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        match rest.strip_prefix('\'') {
            Some(after) => {
                label.push('\'');
                rest = after;
            }
            None => return Some((label, rest)),
        }
    }
}

/// A finite number at the start of `s` and the rest (its UOM). Digits, sign,
/// one decimal point (a comma is read as one, as some locales print it) and
/// an exponent; `None` when there is no number.
fn number_prefix(s: &str) -> Option<(f64, &str)> {
    let b = s.as_bytes();
    let mut i = 0;
    if matches!(b.first(), Some(b'+' | b'-')) {
        i += 1;
    }
    let digits_from = i;
    while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.' || b[i] == b',') {
        i += 1;
    }
    if !b[digits_from..i].iter().any(u8::is_ascii_digit) {
        return None;
    }
    // An exponent only when digits follow: `1e3`, not the `e` of a UOM.
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        let mut j = i + 1;
        if matches!(b.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        if b.get(j).is_some_and(u8::is_ascii_digit) {
            while b.get(j).is_some_and(u8::is_ascii_digit) {
                j += 1;
            }
            i = j;
        }
    }
    let text = &s[..i];
    let v: f64 = if text.contains(',') && !text.contains('.') {
        text.replacen(',', ".", 1).parse().ok()?
    } else {
        text.parse().ok()?
    };
    v.is_finite().then_some((v, &s[i..]))
}

/// `s` cut to at most `max` bytes on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A perfdata label as the last part of a series name: lowercase ASCII
/// letters, digits, `_` and `-`; every other run of characters becomes one
/// `_`, leading and trailing `_` are dropped. `/` alone (check_disk's root
/// mount) is `root`, so `/` and `/boot` read `root` and `boot`; a label with
/// nothing left is `perf`. At most [`MAX_LABEL_PART`] bytes.
pub fn sanitise_label(label: &str) -> String {
    if label.trim() == "/" {
        return "root".into();
    }
    let mut out = String::with_capacity(label.len());
    for c in label.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' {
            out.push(c);
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    let trimmed = out.trim_matches('_');
    let trimmed = cut(trimmed, MAX_LABEL_PART).trim_end_matches('_');
    if trimmed.is_empty() {
        "perf".into()
    } else {
        trimmed.to_string()
    }
}

/// Series names `check.<check>.<label>` for `labels`, in order. Two labels
/// that sanitise alike (`a b` and `a_b`) keep distinct series: the first
/// gets the plain name, each later one `_2`, `_3`, … in order of appearance,
/// so the same output always gives the same names.
pub fn series_names<'a>(
    check: &CheckName,
    labels: impl IntoIterator<Item = &'a str>,
) -> Vec<SeriesName> {
    let mut used = HashSet::new();
    let mut out = Vec::new();
    for label in labels {
        let base = sanitise_label(label);
        let mut part = base.clone();
        let mut n = 2;
        while used.contains(&part) {
            part = format!("{base}_{n}");
            n += 1;
        }
        used.insert(part.clone());
        let name = format!("check.{check}.{part}");
        // Valid by construction (check names and sanitised labels hold only
        // series characters); the fallback never runs.
        out.push(SeriesName::parse(&name).unwrap_or_else(|_| {
            SeriesName::parse("check.invalid").expect("a constant valid name")
        }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn one(text: &str) -> PerfItem {
        let p = parse(text);
        assert_eq!(p.skipped, 0, "{text}: {:?}", p.first_skipped);
        assert_eq!(p.items.len(), 1, "{text}");
        p.items.into_iter().next().unwrap()
    }

    #[test]
    fn the_full_form_and_omitted_fields() {
        let it = one("'/'=13077839872B;216442024755;243497277849;0;270552530944");
        assert_eq!(it.label, "/");
        assert_eq!(it.value, Some(13077839872.0));
        assert_eq!(it.uom, "B");
        assert_eq!(it.warn.as_deref(), Some("216442024755"));
        assert_eq!(it.crit.as_deref(), Some("243497277849"));
        assert_eq!((it.min, it.max), (Some(0.0), Some(270552530944.0)));

        let it = one("procs=77;;;0;");
        assert_eq!((it.value, it.warn, it.crit), (Some(77.0), None, None));
        assert_eq!((it.min, it.max), (Some(0.0), None));

        let it = one("users=3");
        assert_eq!((it.value, it.uom.as_str(), it.min), (Some(3.0), "", None));

        let it = one("x=1;@10:20;~:30");
        assert_eq!(it.warn.as_deref(), Some("@10:20"));
        assert_eq!(it.crit.as_deref(), Some("~:30"));
    }

    #[test]
    fn quoted_labels_with_quotes_spaces_and_equals() {
        let it = one("'it''s a = b'=5s");
        assert_eq!(it.label, "it's a = b");
        assert_eq!(it.normalised(), Some(5.0));
        let p = parse("'C:\\ used'=10GB;20;30 'pct free'=50%");
        assert_eq!(p.items.len(), 2);
        assert_eq!(p.items[0].label, "C:\\ used");
        assert_eq!(
            p.items[0].normalised(),
            Some(10.0 * 1024.0 * 1024.0 * 1024.0)
        );
        assert_eq!(p.items[1].unit(), Unit::Percent);
    }

    #[test]
    fn unknown_value_is_no_sample() {
        let it = one("rta=U;100;200");
        assert_eq!(it.value, None);
        assert_eq!(it.normalised(), None);
        assert_eq!(it.crit.as_deref(), Some("200"));
    }

    #[test]
    fn uom_normalisation() {
        for (text, unit, v) in [
            ("t=250ms", Unit::Seconds, 0.25),
            ("t=1500us", Unit::Seconds, 0.0015),
            ("t=2s", Unit::Seconds, 2.0),
            ("t=3KB", Unit::Bytes, 3072.0),
            ("t=1MB", Unit::Bytes, 1048576.0),
            ("t=1TB", Unit::Bytes, 1024f64.powi(4)),
            ("t=42c", Unit::Counter, 42.0),
            ("t=7", Unit::Number, 7.0),
            ("t=7ops", Unit::Other, 7.0),
            ("t=1e3", Unit::Number, 1000.0),
            ("t=0,5", Unit::Number, 0.5),
            ("t=-4.5", Unit::Number, -4.5),
        ] {
            let it = one(text);
            assert_eq!((it.unit(), it.normalised()), (unit, Some(v)), "{text}");
        }
    }

    #[test]
    fn junk_is_skipped_and_counted() {
        let p = parse("a=1 garbage b= =3 c=x 'open=4 d=2;3 ''=1 e=inf f=1e999");
        let labels: Vec<&str> = p.items.iter().map(|i| i.label.as_str()).collect();
        assert_eq!(labels, ["a", "d"]);
        assert_eq!(p.skipped, 8, "{p:?}");
        assert_eq!(p.first_skipped.as_deref(), Some("garbage"));
        assert_eq!(parse("").items.len(), 0);
        assert_eq!(parse("   \t ").skipped, 0);
    }

    #[test]
    fn real_plugin_outputs() {
        // monitoring-plugins 2.3.3 as packaged by Debian.
        let disk = split_output(
            "DISK OK - free space: / 80579MiB (86% inode=97%);| /=13077839872B;216442024755;243497277849;0;270552530944\n",
        );
        assert_eq!(
            disk.summary,
            "DISK OK - free space: / 80579MiB (86% inode=97%);"
        );
        let p = parse(&disk.perfdata);
        assert_eq!(p.items[0].label, "/");
        assert_eq!(p.items[0].normalised(), Some(13077839872.0));

        let load = split_output("LOAD OK - total load average: 2.70, 1.08, 0.41|load1=2.700;50.000;60.000;0; load5=1.080;40.000;50.000;0; load15=0.410;30.000;40.000;0; ");
        let p = parse(&load.perfdata);
        let labels: Vec<&str> = p.items.iter().map(|i| i.label.as_str()).collect();
        assert_eq!(labels, ["load1", "load5", "load15"]);
        assert_eq!(p.items[2].value, Some(0.41));
        assert_eq!(p.skipped, 0);

        let procs = split_output("PROCS OK: 77 processes | procs=77;;;0;");
        assert_eq!(procs.summary, "PROCS OK: 77 processes");
        assert_eq!(parse(&procs.perfdata).items[0].value, Some(77.0));

        let tcp = split_output(
            "TCP OK - 0.000 second response time on 127.0.0.1 port 22|time=0.000104s;;;0.000000;10.000000",
        );
        let it = &parse(&tcp.perfdata).items[0];
        assert_eq!(
            (it.label.as_str(), it.normalised()),
            ("time", Some(0.000104))
        );
        assert_eq!(it.max, Some(10.0));

        let http = split_output("HTTP OK: HTTP/1.1 200 OK - 612 bytes in 0.001 second response time |time=0.001234s;;;0.000000;10.000000 size=612B;;;0");
        let p = parse(&http.perfdata);
        assert_eq!(p.items[1].label, "size");
        assert_eq!(p.items[1].normalised(), Some(612.0));

        let swap = split_output("SWAP CRITICAL - 0% free (0MB out of 0MB) - Swap is either disabled, not present, or of zero size. |swap=0B;0;0;0;0");
        assert_eq!(parse(&swap.perfdata).items[0].unit(), Unit::Bytes);
    }

    #[test]
    fn long_output_and_perfdata_continued_there() {
        // The guidelines' example.
        let out = split_output(
            "DISK OK - free space: / 3326 MB (56%); | /=2643MB;5948;5958;0;5968\n\
             / 15272 MB (77%);\n\
             /boot 68 MB (69%);\n\
             /home 69357 MB (27%);\n\
             /var/log 819 MB (84%); | /boot=68MB;88;93;0;98\n\
             /home=69357MB;253404;253409;0;253414 \n\
             /var/log=818MB;970;975;0;980\n",
        );
        assert_eq!(out.summary, "DISK OK - free space: / 3326 MB (56%);");
        assert_eq!(
            out.long_output,
            "/ 15272 MB (77%);\n/boot 68 MB (69%);\n/home 69357 MB (27%);\n/var/log 819 MB (84%);"
        );
        let p = parse(&out.perfdata);
        let labels: Vec<&str> = p.items.iter().map(|i| i.label.as_str()).collect();
        assert_eq!(labels, ["/", "/boot", "/home", "/var/log"]);
        assert_eq!(p.items[3].normalised(), Some(818.0 * 1024.0 * 1024.0));
        // No perfdata at all, and nothing at all.
        let plain = split_output("OK: fine\nmore\n\n");
        assert_eq!(
            (plain.long_output.as_str(), plain.perfdata.as_str()),
            ("more", "")
        );
        assert_eq!(split_output(""), PluginOutput::default());
    }

    #[test]
    fn series_names_are_valid_and_distinct() {
        let check = CheckName::parse("disk_root").unwrap();
        let names = series_names(
            &check,
            [
                "/",
                "/boot",
                "a b",
                "a_b",
                "A-B",
                "a b",
                "Ünïcode",
                "..",
                "",
            ],
        );
        let names: Vec<&str> = names.iter().map(|n| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "check.disk_root.root",
                "check.disk_root.boot",
                "check.disk_root.a_b",
                "check.disk_root.a_b_2",
                "check.disk_root.a-b",
                "check.disk_root.a_b_3",
                "check.disk_root.n_code",
                "check.disk_root.perf",
                "check.disk_root.perf_2",
            ]
        );
        let long = "x".repeat(500);
        let long = &series_names(&CheckName::parse(&"c".repeat(64)).unwrap(), [long.as_str()])[0];
        assert!(long.as_str().len() <= MAX_NAME_LEN);
    }

    fn label() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9 _/=.'%:-]{1,16}"
    }

    fn range_text() -> impl Strategy<Value = Option<String>> {
        prop_oneof![
            Just(None),
            (-1000i32..1000).prop_map(|v| Some(v.abs().to_string())),
            (-1000i32..1000, 0i32..500).prop_map(|(a, w)| Some(format!("{a}:{}", a + w))),
            (-1000i32..1000).prop_map(|a| Some(format!("~:{a}"))),
            (-1000i32..1000, 0i32..500).prop_map(|(a, w)| Some(format!("@{a}:{}", a + w))),
        ]
    }

    fn finite() -> impl Strategy<Value = f64> {
        prop_oneof![-1e12f64..1e12, (-1000i64..1000).prop_map(|v| v as f64)]
    }

    prop_compose! {
        fn perf_item()(
            label in label(),
            value in proptest::option::weighted(0.9, finite()),
            uom in prop_oneof![Just(""), Just("s"), Just("ms"), Just("us"), Just("%"),
                               Just("B"), Just("KB"), Just("MB"), Just("GB"), Just("TB"), Just("c")],
            warn in range_text(),
            crit in range_text(),
            min in proptest::option::of(finite()),
            max in proptest::option::of(finite()),
        ) -> PerfItem {
            let uom = if value.is_some() { uom.to_string() } else { String::new() };
            PerfItem { label, value, uom, warn, crit, min, max }
        }
    }

    proptest! {
        /// Law: formatting items and parsing the text gives the same items.
        #[test]
        fn format_then_parse_is_identity(items in proptest::collection::vec(perf_item(), 0..6)) {
            let text = items.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ");
            let p = parse(&text);
            prop_assert_eq!(p.skipped, 0, "{}", text);
            prop_assert_eq!(p.items, items, "{}", text);
        }

        /// The parser and the splitter never panic, and what they return
        /// comes from the input.
        #[test]
        fn never_panics_on_anything(text in any::<String>()) {
            let p = parse(&text);
            prop_assert!(p.items.len() + p.skipped <= text.len());
            let out = split_output(&text);
            prop_assert!(out.summary.len() <= text.len());
            let _ = parse(&out.perfdata);
        }

        #[test]
        fn never_panics_on_perfdata_like_text(text in "[a-z'= ;:@~.,0-9U%-]{0,60}") {
            let p = parse(&text);
            for it in &p.items {
                prop_assert!(!it.label.is_empty());
                prop_assert!(it.value.is_none_or(f64::is_finite));
            }
        }

        /// Every label gives a valid, distinct series name.
        #[test]
        fn sanitised_names_are_valid_and_distinct(labels in proptest::collection::vec(any::<String>(), 0..8)) {
            let check = CheckName::parse("c").unwrap();
            let names = series_names(&check, labels.iter().map(String::as_str));
            let distinct: HashSet<_> = names.iter().collect();
            prop_assert_eq!(distinct.len(), labels.len());
        }
    }
}
