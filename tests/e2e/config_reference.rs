//! The configuration reference is complete: every key that `metrolog-server`
//! and `metrolog-agent` accept is written in `docs/server.example.toml` or
//! `docs/agent.example.toml` (commented-out lines count).
//!
//! The accepted keys are not listed here by hand: they are asked of the real
//! parsers through `check-config`. A file holding an unknown key in a table
//! makes the parser answer with the keys that table accepts ("unknown field
//! `zz_probe`, expected one of …"); each of those is then probed in turn as a
//! table, as an array of tables, or found to be a plain value. A key added to
//! a config struct or to a hand-written parser shows up here without any edit.

use anyhow::{bail, Context, Result};
use metrolog_e2e::binary;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

const PROBE: &str = "zz_probe";

/// How a key's value is written in TOML.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Shape {
    Table,
    Array,
}

/// A path of keys from the top, each with its shape (tables and arrays of tables).
type Path_ = Vec<(String, Shape)>;

/// The TOML that puts `body` inside the table at `path`. `required` lines
/// are added to array elements so that a missing required key does not hide
/// the probe (they are written after the probe key).
fn document(path: &Path_, body: &str) -> String {
    let mut text = String::new();
    for i in 0..path.len() {
        let dotted: Vec<&str> = path[..=i].iter().map(|(k, _)| k.as_str()).collect();
        let dotted = dotted.join(".");
        match path[i].1 {
            Shape::Table => text.push_str(&format!("[{dotted}]\n")),
            Shape::Array => text.push_str(&format!("[[{dotted}]]\n")),
        }
        if i == path.len() - 1 {
            text.push_str(body);
        }
    }
    if path.is_empty() {
        text.push_str(body);
    }
    text
}

/// Runs `BIN check-config` on `text` and returns what it printed.
fn check(bin: &str, dir: &Path, text: &str) -> Result<String> {
    let file = dir.join("probe.toml");
    std::fs::write(&file, text)?;
    let out = Command::new(binary(bin))
        .arg("check-config")
        .arg(&file)
        .env_remove("METROLOG_LISTEN")
        .output()
        .with_context(|| format!("running {bin} check-config"))?;
    Ok(format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// The keys named after "expected" in the parser's complaint about the probe
/// key, or None when the probe was not refused as an unknown key there.
fn expected_keys(output: &str) -> Option<Vec<String>> {
    let line = output.lines().find(|l| {
        l.contains(PROBE) && (l.contains("unknown field") || l.contains("unknown key"))
    })?;
    let after = &line[line.find("expected")? + "expected".len()..];
    let after = after.trim_start_matches(" one of").trim_start_matches(':');
    // serde adds where the error sits: "… or `max_bytes` in `logs`".
    let after = match after.find(" in `") {
        Some(i) => &after[..i],
        None => after,
    };
    let after = after.trim().trim_end_matches(')');
    let keys = after
        .split(", ")
        .flat_map(|part| part.split(" or "))
        .map(|k| k.trim().trim_matches('`').to_string())
        .filter(|k| !k.is_empty())
        .collect();
    Some(keys)
}

/// Every key path (`a.b.c`) `bin` accepts, found by probing.
fn accepted_keys(bin: &str, dir: &Path) -> Result<BTreeSet<String>> {
    let mut keys = BTreeSet::new();
    let mut todo: Vec<Path_> = vec![vec![]];
    let probe_line = format!("{PROBE} = 1\n");
    while let Some(path) = todo.pop() {
        let out = check(bin, dir, &document(&path, &probe_line))?;
        let Some(children) = expected_keys(&out) else {
            bail!(
                "{bin}: no unknown-key complaint at {:?}; the parser said:\n{out}",
                path
            );
        };
        for child in children {
            let mut dotted: Vec<String> = path.iter().map(|(k, _)| k.clone()).collect();
            dotted.push(child.clone());
            keys.insert(dotted.join("."));
            if path.len() >= 5 {
                continue;
            }
            for shape in [Shape::Table, Shape::Array] {
                let mut sub = path.clone();
                sub.push((child.clone(), shape));
                let out = check(bin, dir, &document(&sub, &probe_line))?;
                if expected_keys(&out).is_some() {
                    todo.push(sub);
                    break;
                }
            }
        }
    }
    Ok(keys)
}

/// The key paths an example file documents, set or commented out: lines
/// `key = …` under the last `[table]` or `[[array]]` header, with one
/// leading `#` removed, and the keys of inline tables in their values
/// (`metrics = { sample_interval = "1s" }`), also on the lines of a
/// multi-line array (`ladder = [` … `]`).
fn documented_keys(text: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut section = String::new();
    // The key of a multi-line array value still open.
    let mut open_array: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        let line = line.strip_prefix('#').unwrap_or(line).trim();
        if let Some(key) = &open_array {
            if line.starts_with(']') {
                open_array = None;
            } else {
                inline_keys(key, line, &mut keys);
            }
            continue;
        }
        if let Some(header) = line.strip_prefix('[') {
            let header = header.trim_start_matches('[');
            if let Some(end) = header.find(']') {
                let name = header[..end].trim();
                if is_key_path(name) {
                    section = name.to_string();
                    insert_with_prefixes(&section, &mut keys);
                }
            }
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if !is_key_path(key) {
            continue;
        }
        let full = if section.is_empty() {
            key.to_string()
        } else {
            format!("{section}.{key}")
        };
        insert_with_prefixes(&full, &mut keys);
        let value = value.trim();
        inline_keys(&full, value, &mut keys);
        if value.starts_with('[') && value.matches('[').count() > value.matches(']').count() {
            open_array = Some(full);
        }
    }
    keys
}

fn is_key_path(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

fn insert_with_prefixes(path: &str, keys: &mut BTreeSet<String>) {
    let mut prefix = String::new();
    for part in path.split('.') {
        if !prefix.is_empty() {
            prefix.push('.');
        }
        prefix.push_str(part);
        keys.insert(prefix.clone());
    }
}

/// The keys of the inline tables in `value` (`{ a = 1, b = { c = 2 } }`),
/// as paths under `key`. Strings are skipped; a comment ends the value.
fn inline_keys(key: &str, value: &str, keys: &mut BTreeSet<String>) {
    let b = value.as_bytes();
    // The path of each open brace.
    let mut stack: Vec<String> = Vec::new();
    // A key may start here (just after `{` or `,` inside a brace).
    let mut expect_key = false;
    // The path of the key whose `=` was just read, for a `{` right after.
    let mut value_of: Option<String> = None;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'"' | b'\'' => {
                i += 1;
                while i < b.len() && b[i] != c {
                    i += 1;
                }
                expect_key = false;
                value_of = None;
            }
            b'#' if stack.is_empty() => break,
            b'{' => {
                let base = stack.last().map_or(key, String::as_str);
                let path = value_of.take().unwrap_or_else(|| base.to_string());
                stack.push(path);
                expect_key = true;
            }
            b'}' => {
                stack.pop();
                expect_key = false;
            }
            b',' => {
                expect_key = !stack.is_empty();
                value_of = None;
            }
            c if c.is_ascii_whitespace() => {}
            c if expect_key && (c.is_ascii_alphanumeric() || c == b'_') => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                let word = &value[start..i];
                while i < b.len() && b[i].is_ascii_whitespace() {
                    i += 1;
                }
                expect_key = false;
                if i < b.len() && b[i] == b'=' {
                    let path = format!("{}.{word}", stack.last().map_or(key, String::as_str));
                    insert_with_prefixes(&path, keys);
                    value_of = Some(path);
                } else {
                    continue;
                }
            }
            _ => {
                expect_key = false;
                value_of = None;
            }
        }
        i += 1;
    }
}

fn assert_documented(bin: &str, example: &str) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let accepted = accepted_keys(bin, dir.path())?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join(example))?;
    let documented = documented_keys(&text);
    // The probe itself must have found the well-known keys, or it is broken.
    for known in ["metrics", "server", "listen", "http"] {
        if documented.contains(known) && !accepted.contains(known) {
            bail!("{bin}: the probe missed `{known}`; it found {accepted:?}");
        }
    }
    let missing: Vec<&String> = accepted.difference(&documented).collect();
    if !missing.is_empty() {
        bail!(
            "{bin} accepts keys that {example} does not document (add them, commented out \
             with their default if they are optional):\n  {}",
            missing
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n  ")
        );
    }
    Ok(())
}

#[test]
fn every_server_key_is_documented() -> Result<()> {
    assert_documented("metrolog-server", "docs/server.example.toml")
}

#[test]
fn every_agent_key_is_documented() -> Result<()> {
    assert_documented("metrolog-agent", "docs/agent.example.toml")
}

#[test]
fn the_probe_reads_every_complaint_format() {
    let cases = [
        (
            "zz_probe: unknown key (expected one of: listen, data_dir)",
            vec!["listen", "data_dir"],
        ),
        (
            "hosts: unknown field `zz_probe`, expected `expire_after` or `liveness_timeout`",
            vec!["expire_after", "liveness_timeout"],
        ),
        (
            "retention: unknown field `zz_probe`, expected `max_age` or `max_bytes` in `logs`",
            vec!["max_age", "max_bytes"],
        ),
        (
            "error: logs.zz_probe: unknown key (expected files, syslog or poll_interval)",
            vec!["files", "syslog", "poll_interval"],
        ),
        (
            "x: unknown field `zz_probe`, expected one of `a`, `b`, `c`",
            vec!["a", "b", "c"],
        ),
    ];
    for (line, want) in cases {
        assert_eq!(
            expected_keys(line),
            Some(want.iter().map(|s| s.to_string()).collect()),
            "{line}"
        );
    }
    // An enum's values are not keys.
    assert_eq!(
        expected_keys("metadata: unknown variant `zz_probe`, expected `auto` or `ec2`"),
        None
    );
    assert_eq!(
        expected_keys("labels: invalid type: integer `1`, expected a string in `zz_probe`"),
        None
    );
    let doc = "# comment\nlisten = 1\n# data_dir = \"x\"\n[syslog]\n# tls = \"x\"\n# [[rules]]\n# name = \"a\"\n\
               [agents]\nmetrics = { sample_interval = \"1s\", x = { y = \"a,b = c\" } }\n\
               logs.files = [{ path = \"/p\", app = \"a\" }]\nladder = [\n  { step = \"1s\", rows = 2 },  # c = 1\n]\n";
    let keys = documented_keys(doc);
    for k in [
        "listen",
        "data_dir",
        "syslog",
        "syslog.tls",
        "rules",
        "rules.name",
        "agents.metrics.sample_interval",
        "agents.metrics.x.y",
        "agents.logs",
        "agents.logs.files.path",
        "agents.logs.files.app",
        "agents.ladder.step",
        "agents.ladder.rows",
    ] {
        assert!(keys.contains(k), "{k} in {keys:?}");
    }
    for k in [
        "agents.metrics.x.b",
        "agents.metrics.x.y.c",
        "agents.ladder.c",
    ] {
        assert!(!keys.contains(k), "{k} in {keys:?}");
    }
}
