//! The output of a Munin plugin (`config` and fetch), read as munin-update
//! 2.0 reads it:
//!
//! - `multigraph NAME` starts a graph (`a.b` is nested under `a`); lines
//!   before the first belong to the plugin's own graph;
//! - `graph_title …` and other lines without a dot are graph attributes;
//! - `FIELD.value V` is a value: a number, `U` (unknown) or `EPOCH:V` (a
//!   value at that time); in `config` output it is a dirtyconfig value;
//! - `FIELD.ATTR …` is a field attribute (`label`, `type`, `min`, `max`,
//!   `warning`, `critical`, `info`, `draw`, …);
//! - `#` lines and blank lines are skipped.
//!
//! Field names are sanitised as Munin does (a first character that is not a
//! letter or `_`, and any other character that is not a letter, digit or
//! `_`, becomes `_`: `bad-name` is `bad_name`). A line that fits none of
//! the above is counted and reported, and loses nothing else.

use std::collections::{BTreeMap, HashSet};

/// Which command printed the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `config`: attributes of graphs and fields (and dirtyconfig values).
    Config,
    /// A fetch: only `multigraph`, `FIELD.value` and `FIELD.extinfo`.
    Fetch,
}

/// Limits of one run's output.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// More lines fail the run.
    pub max_lines: usize,
    /// Fields kept; further ones are dropped and counted.
    pub max_fields: usize,
}

/// One value of a field.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// `None` for `U` (and for a value that is not a number).
    pub value: Option<f64>,
    /// The plugin's own time (`EPOCH:value`), unix seconds.
    pub at: Option<i64>,
}

/// One field (data source) of a graph.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Field {
    /// Attributes as printed (`label`, `type`, `min`, …), `value` excepted.
    pub attrs: BTreeMap<String, String>,
    pub readings: Vec<Reading>,
}

/// One graph: the plugin's own, or one `multigraph` section.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Graph {
    /// The plugin name, or the `multigraph` name.
    pub name: String,
    /// `graph_*` and other graph-level attributes, first value kept.
    pub attrs: BTreeMap<String, String>,
    /// By sanitised name, in the order first seen.
    pub fields: Vec<(String, Field)>,
}

impl Graph {
    fn field(&mut self, name: String) -> &mut Field {
        let i = match self.fields.iter().position(|(n, _)| *n == name) {
            Some(i) => i,
            None => {
                self.fields.push((name, Field::default()));
                self.fields.len() - 1
            }
        };
        &mut self.fields[i].1
    }

    pub fn get(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, f)| f)
    }
}

/// A run's output, read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Output {
    /// In the order first seen; the plugin's own graph first, kept only
    /// when something was printed for it.
    pub graphs: Vec<Graph>,
    /// Lines that fit no form of the grammar.
    pub bad_lines: usize,
    /// The first of them (cut to 120 characters), to tell the operator.
    pub first_bad: Option<String>,
    /// Fields over [`Limits::max_fields`], dropped.
    pub fields_dropped: usize,
    /// Lines read in a recognised form.
    pub good_lines: usize,
}

impl Output {
    pub fn graph(&self, name: &str) -> Option<&Graph> {
        self.graphs.iter().find(|g| g.name == name)
    }

    pub fn field_count(&self) -> usize {
        self.graphs.iter().map(|g| g.fields.len()).sum()
    }
}

/// Why a whole output was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OutputError {
    #[error("printed more than {0} lines (munin.max_lines)")]
    TooManyLines(usize),
    #[error("printed nothing Munin can read ({bad} unrecognised line(s), the first: {first:?})")]
    Garbage { bad: usize, first: String },
    #[error("multigraph name {0:?} is invalid (only letters, digits, '_', '-', ':' and '.' between parts); the rest of the output was ignored")]
    BadGraphName(String),
}

/// Munin's field-name sanitising.
pub fn sanitise_field(name: &str) -> String {
    name.chars()
        .enumerate()
        .map(|(i, c)| {
            let ok = c.is_ascii_alphabetic() || c == '_' || (i > 0 && c.is_ascii_digit());
            if ok {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn valid_graph_name(name: &str) -> bool {
    !name.is_empty()
        && name != "multigraph"
        && !name.starts_with('.')
        && !name.ends_with('.')
        && !name.contains("..")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':' | '.'))
}

/// Reads a value as munin-update does: `EPOCH:value`, `U`, or a number.
/// Returns the reading and whether the value was readable.
pub fn parse_value(text: &str) -> (Reading, bool) {
    let (at, v) = match text.split_once(':') {
        Some((epoch, v)) if !epoch.is_empty() && epoch.bytes().all(|b| b.is_ascii_digit()) => {
            (epoch.parse::<i64>().ok(), v)
        }
        _ => (None, text),
    };
    if v == "U" {
        return (Reading { value: None, at }, true);
    }
    // Only what rrdtool takes as a number: no "inf", "nan", hex.
    let numeric = !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'));
    match v.parse::<f64>() {
        Ok(x) if numeric && x.is_finite() => (Reading { value: Some(x), at }, true),
        _ => (Reading { value: None, at }, false),
    }
}

/// Reads `bytes` printed by `plugin` (its `config` or fetch output).
/// Invalid UTF-8 is replaced; NUL and other control bytes make a line bad.
pub fn parse(
    plugin: &str,
    mode: Mode,
    bytes: &[u8],
    limits: Limits,
) -> Result<Output, OutputError> {
    let text = String::from_utf8_lossy(bytes);
    let mut out = Output::default();
    let mut graphs: Vec<Graph> = vec![Graph {
        name: plugin.to_string(),
        ..Graph::default()
    }];
    let mut current = 0usize;
    let mut fields = 0usize;
    let mut dropped: HashSet<(usize, String)> = HashSet::new();
    let bad = |out: &mut Output, line: &str| {
        out.bad_lines += 1;
        if out.first_bad.is_none() {
            out.first_bad = Some(line.chars().take(120).collect());
        }
    };
    for (n, raw) in text.split('\n').enumerate() {
        if n >= limits.max_lines {
            if text.split('\n').skip(n).any(|l| !l.trim().is_empty()) {
                return Err(OutputError::TooManyLines(limits.max_lines));
            }
            break;
        }
        let line = raw.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        if line.chars().any(|c| c.is_control() && c != '\t') {
            bad(&mut out, line);
            continue;
        }
        if let Some(rest) = line.strip_prefix("multigraph") {
            if rest.starts_with(char::is_whitespace) {
                let name = rest.trim();
                if !valid_graph_name(name) {
                    out.graphs = graphs
                        .into_iter()
                        .filter(|g| !g.fields.is_empty() || !g.attrs.is_empty())
                        .collect();
                    out.bad_lines += 1;
                    return if out.graphs.is_empty() {
                        Err(OutputError::BadGraphName(name.chars().take(120).collect()))
                    } else {
                        out.first_bad
                            .get_or_insert_with(|| line.chars().take(120).collect());
                        Ok(out)
                    };
                }
                current = match graphs.iter().position(|g| g.name == name) {
                    Some(i) => i,
                    None => {
                        graphs.push(Graph {
                            name: name.to_string(),
                            ..Graph::default()
                        });
                        graphs.len() - 1
                    }
                };
                out.good_lines += 1;
                continue;
            }
        }
        let (key, value) = match line.split_once([' ', '\t']) {
            Some((k, v)) if !k.is_empty() => (k, v.trim()),
            _ => {
                bad(&mut out, line);
                continue;
            }
        };
        if value.is_empty() {
            bad(&mut out, line);
            continue;
        }
        let graph = &mut graphs[current];
        match key.split_once('.') {
            None if mode == Mode::Fetch => bad(&mut out, line),
            Some((_, attr)) if mode == Mode::Fetch && attr != "value" && attr != "extinfo" => {
                bad(&mut out, line)
            }
            None => {
                out.good_lines += 1;
                graph
                    .attrs
                    .entry(sanitise_field(key))
                    .or_insert_with(|| value.to_string());
            }
            Some((field, attr)) if !field.is_empty() && !attr.is_empty() => {
                let name = sanitise_field(field);
                if !graph.fields.iter().any(|(n, _)| *n == name) {
                    if fields >= limits.max_fields {
                        // Counted once per field, not per line.
                        if dropped.insert((current, name)) {
                            out.fields_dropped += 1;
                        }
                        continue;
                    }
                    fields += 1;
                }
                let f = graph.field(name);
                if attr == "value" {
                    // Munin takes the first word.
                    let word = value.split_whitespace().next().unwrap_or(value);
                    let (reading, ok) = parse_value(word);
                    if !ok {
                        bad(&mut out, line);
                    } else {
                        out.good_lines += 1;
                    }
                    f.readings.push(reading);
                } else {
                    out.good_lines += 1;
                    f.attrs.insert(attr.to_string(), value.to_string());
                }
            }
            _ => bad(&mut out, line),
        }
    }
    out.graphs = graphs
        .into_iter()
        .enumerate()
        .filter(|(i, g)| *i > 0 || !g.fields.is_empty() || !g.attrs.is_empty())
        .map(|(_, g)| g)
        .collect();
    if out.good_lines == 0 && out.bad_lines > 0 {
        return Err(OutputError::Garbage {
            bad: out.bad_lines,
            first: out.first_bad.clone().unwrap_or_default(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_lines: 1000,
        max_fields: 100,
    };

    #[test]
    fn config_with_attributes_and_dirty_values() {
        let text = "graph_title Load average\ngraph_args --base 1000 -l 0\ngraph_category system\n\
                    load.label load\nload.warning 10\nload.critical 120\nload.value 0.52\n";
        let out = parse("load", Mode::Config, text.as_bytes(), LIMITS).unwrap();
        assert_eq!(out.graphs.len(), 1);
        let g = &out.graphs[0];
        assert_eq!(
            (g.name.as_str(), g.attrs["graph_title"].as_str()),
            ("load", "Load average")
        );
        assert_eq!(g.attrs["graph_args"], "--base 1000 -l 0");
        let f = g.get("load").unwrap();
        assert_eq!(f.attrs["warning"], "10");
        assert_eq!(
            f.readings,
            [Reading {
                value: Some(0.52),
                at: None
            }]
        );
        assert_eq!((out.bad_lines, out.good_lines), (0, 7));
    }

    #[test]
    fn epoch_unknown_bad_names_and_two_level_multigraph() {
        let text = "a.value 1700000000:7\nb.value U\nbad-name.value 3\n9lives.value 1\n\
                    multigraph root\nx.value 1\nmultigraph root.sub\ny.value -2.5e1\n\
                    multigraph root\nz.value 3\n";
        let out = parse("fix", Mode::Fetch, text.as_bytes(), LIMITS).unwrap();
        let names: Vec<&str> = out.graphs.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["fix", "root", "root.sub"]);
        let fix = &out.graphs[0];
        assert_eq!(
            fix.get("a").unwrap().readings[0],
            Reading {
                value: Some(7.0),
                at: Some(1_700_000_000)
            }
        );
        assert_eq!(fix.get("b").unwrap().readings[0].value, None);
        assert_eq!(fix.get("bad_name").unwrap().readings[0].value, Some(3.0));
        assert!(fix.get("_lives").is_some());
        assert_eq!(out.graph("root").unwrap().fields.len(), 2);
        assert_eq!(
            out.graph("root.sub").unwrap().get("y").unwrap().readings[0].value,
            Some(-25.0)
        );
        assert_eq!(out.bad_lines, 0);
    }

    #[test]
    fn garbage_and_binary_output_are_refused_with_the_reason() {
        let err = parse(
            "g",
            Mode::Fetch,
            b"hello world\nthis is not munin\n",
            LIMITS,
        );
        assert!(matches!(err, Err(OutputError::Garbage { .. })), "{err:?}");
        let binary: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 256) as u8).collect();
        assert!(parse("bin", Mode::Fetch, &binary, LIMITS).is_err());
        // Good lines survive bad ones around them.
        let out = parse(
            "m",
            Mode::Fetch,
            b"x.value 1\n\x00\x01\x02\ny.value nan\nz.value 0x10\nw.value inf\nfoo\n",
            LIMITS,
        )
        .unwrap();
        assert_eq!(out.bad_lines, 5, "{out:?}");
        assert_eq!(out.first_bad.as_deref(), Some("\u{0}\u{1}\u{2}"));
        assert_eq!(out.graphs[0].get("x").unwrap().readings[0].value, Some(1.0));
        assert_eq!(out.graphs[0].get("y").unwrap().readings[0].value, None);
        assert!(parse("e", Mode::Fetch, b"", LIMITS)
            .unwrap()
            .graphs
            .is_empty());
    }

    #[test]
    fn invalid_multigraph_names_stop_the_reading() {
        let out = parse(
            "m",
            Mode::Fetch,
            b"a.value 1\nmultigraph bad..name\nb.value 2\n",
            LIMITS,
        )
        .unwrap();
        assert_eq!(out.field_count(), 1);
        assert_eq!(out.bad_lines, 1);
        assert!(matches!(
            parse("m", Mode::Fetch, b"multigraph a/b\nb.value 2\n", LIMITS),
            Err(OutputError::BadGraphName(_))
        ));
    }

    #[test]
    fn huge_output_is_bounded() {
        let many: String = (0..20_000).map(|i| format!("f{i}.value {i}\n")).collect();
        let out = parse(
            "many",
            Mode::Fetch,
            many.as_bytes(),
            Limits {
                max_lines: 100_000,
                max_fields: 10,
            },
        )
        .unwrap();
        assert_eq!((out.field_count(), out.fields_dropped), (10, 19_990));
        assert_eq!(
            parse(
                "many",
                Mode::Fetch,
                many.as_bytes(),
                Limits {
                    max_lines: 1000,
                    max_fields: 10
                }
            ),
            Err(OutputError::TooManyLines(1000))
        );
        // Trailing blank lines past the limit are no reason to fail.
        let blank = format!("a.value 1\n{}", "\n".repeat(5000));
        assert!(parse(
            "b",
            Mode::Fetch,
            blank.as_bytes(),
            Limits {
                max_lines: 10,
                max_fields: 10
            }
        )
        .is_ok());
    }

    #[test]
    fn values() {
        assert_eq!(
            parse_value("12:U"),
            (
                Reading {
                    value: None,
                    at: Some(12)
                },
                true
            )
        );
        assert_eq!(parse_value("-1.5").0.value, Some(-1.5));
        assert_eq!(parse_value(".5").0.value, Some(0.5));
        assert!(!parse_value("NaN").1);
        assert!(!parse_value("1,5").1);
        assert_eq!(sanitise_field("if-eth0.rx"), "if_eth0_rx");
    }
}
