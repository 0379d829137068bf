//! Our own parser of the Prometheus text exposition format 0.0.4 and of
//! OpenMetrics 1.0 text: `# HELP`, `# TYPE` (and OpenMetrics `# UNIT`,
//! `# EOF`), samples with label values escaped (`\\`, `\"`, `\n`),
//! optional timestamps (milliseconds in 0.0.4, seconds in OpenMetrics),
//! `NaN`, `+Inf`, `-Inf`; OpenMetrics exemplars are read and dropped.
//!
//! The parser stops at the first malformed line with its number and what
//! was wrong, and at `max_samples` samples (a target's `sample_limit`), so
//! a huge or broken exposition costs a bounded amount of memory.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

/// Which grammar the body follows, from the response's `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4` (and anything not OpenMetrics).
    Text,
    /// `application/openmetrics-text`.
    OpenMetrics,
}

impl Format {
    pub fn from_content_type(ct: Option<&str>) -> Self {
        match ct {
            Some(ct)
                if ct
                    .trim_start()
                    .to_ascii_lowercase()
                    .starts_with("application/openmetrics-text") =>
            {
                Format::OpenMetrics
            }
            _ => Format::Text,
        }
    }
}

/// A metric family's type, from its `# TYPE` line (`Untyped` when none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
    GaugeHistogram,
    Summary,
    Info,
    StateSet,
    Untyped,
}

impl MetricType {
    fn parse(word: &str) -> Option<Self> {
        Some(match word {
            "counter" => Self::Counter,
            "gauge" => Self::Gauge,
            "histogram" => Self::Histogram,
            "gaugehistogram" => Self::GaugeHistogram,
            "summary" => Self::Summary,
            "info" => Self::Info,
            "stateset" => Self::StateSet,
            "untyped" | "unknown" => Self::Untyped,
            _ => return None,
        })
    }
}

/// One sample line, borrowing from the body (a label value is copied
/// only when it holds escapes): a scrape allocates little per sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a> {
    /// The name as written (`node_cpu_seconds_total`, `http_duration_bucket`).
    pub name: &'a str,
    /// The name and labels exactly as written (`up{job="x"}`): the same
    /// text from one scrape to the next names the same series.
    pub id: &'a str,
    /// Labels in the order written, values unescaped.
    pub labels: LabelPairs<'a>,
    pub value: f64,
    /// Milliseconds since the epoch, when the line carries a timestamp.
    pub timestamp_ms: Option<i64>,
    /// Type of the sample's family and the family's name.
    pub typ: MetricType,
    /// The family (`http_duration` for `http_duration_bucket`).
    pub family: &'a str,
}

/// A parsed body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exposition<'a> {
    pub samples: Vec<Sample<'a>>,
    /// `# HELP` text per family, as written (see [`Exposition::help`]).
    pub help_text: HashMap<&'a str, &'a str>,
}

impl Exposition<'_> {
    /// The `# HELP` text of `family`, unescaped (done on demand: most
    /// scrapes never read it).
    pub fn help(&self, family: &str) -> Option<String> {
        self.help_text.get(family).map(|t| unescape_help(t))
    }
}

/// Why a body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("line {line}: {what}")]
    Line { line: usize, what: String },
    #[error("more than {limit} samples (sample_limit)")]
    SampleLimit { limit: usize },
    #[error("OpenMetrics body does not end with \"# EOF\" (truncated?)")]
    NoEof,
}

impl ParseError {
    /// A short, stable reason for counters.
    pub fn reason(&self) -> &'static str {
        match self {
            ParseError::SampleLimit { .. } => "sample_limit",
            _ => "parse",
        }
    }
}

fn bad(line: usize, what: impl fmt::Display) -> ParseError {
    ParseError::Line {
        line,
        what: what.to_string(),
    }
}

/// Family of a sample named `name`: the name itself when typed, else the
/// name without the suffix its type adds, when that base is typed so.
fn family_of<'a>(
    name: &'a str,
    types: &HashMap<&str, MetricType>,
    last: Option<(&str, MetricType)>,
) -> (&'a str, MetricType) {
    // A family's samples follow its # TYPE line: most names are found
    // without hashing.
    if let Some((family, t)) = last {
        if name == family {
            return (name, t);
        }
        if let Some(suffix) = name.strip_prefix(family) {
            let fits = match t {
                MetricType::Counter => matches!(suffix, "_total" | "_created"),
                MetricType::Histogram => {
                    matches!(suffix, "_bucket" | "_count" | "_sum" | "_created")
                }
                MetricType::Summary => matches!(suffix, "_count" | "_sum" | "_created"),
                MetricType::GaugeHistogram => matches!(suffix, "_bucket" | "_gcount" | "_gsum"),
                MetricType::Info => suffix == "_info",
                _ => false,
            };
            if fits && !types.contains_key(name) {
                return (&name[..family.len()], t);
            }
        }
    }
    if let Some(t) = types.get(name) {
        return (name, *t);
    }
    const SUFFIXES: [(&str, &[MetricType]); 7] = [
        ("_total", &[MetricType::Counter]),
        (
            "_bucket",
            &[MetricType::Histogram, MetricType::GaugeHistogram],
        ),
        ("_count", &[MetricType::Histogram, MetricType::Summary]),
        ("_sum", &[MetricType::Histogram, MetricType::Summary]),
        (
            "_created",
            &[
                MetricType::Counter,
                MetricType::Histogram,
                MetricType::Summary,
            ],
        ),
        ("_gcount", &[MetricType::GaugeHistogram]),
        ("_gsum", &[MetricType::GaugeHistogram]),
    ];
    for (suffix, allowed) in SUFFIXES {
        if let Some(base) = name.strip_suffix(suffix) {
            if let Some(t) = types.get(base) {
                if allowed.contains(t) {
                    return (base, *t);
                }
            }
        }
    }
    if let Some(base) = name.strip_suffix("_info") {
        if types.get(base) == Some(&MetricType::Info) {
            return (base, MetricType::Info);
        }
    }
    (name, MetricType::Untyped)
}

fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b == b':'
}

fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b':'
}

fn is_label_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_label_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// A metric name at the start of `s`, and the rest.
fn metric_name(s: &str) -> Option<(&str, &str)> {
    let b = s.as_bytes();
    if b.is_empty() || !is_name_start(b[0]) {
        return None;
    }
    let end = b.iter().position(|c| !is_name_char(*c)).unwrap_or(b.len());
    Some((&s[..end], &s[end..]))
}

fn valid_metric_name(s: &str) -> bool {
    matches!(metric_name(s), Some((_, rest)) if rest.is_empty())
}

/// A float as the exposition formats write them (`1`, `-2.5e3`, `NaN`,
/// `+Inf`, `-Inf`).
pub fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" | "+inf" | "inf" => return Some(f64::INFINITY),
        "-Inf" | "-inf" => return Some(f64::NEG_INFINITY),
        "NaN" | "nan" => return Some(f64::NAN),
        _ => {}
    }
    // Rust also accepts "infinity" and other spellings the formats do not
    // have; only digits, signs, '.', 'e' get here.
    if s.is_empty()
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'))
    {
        return None;
    }
    s.parse().ok()
}

/// `s` with the text format's help escapes (`\\`, `\n`) resolved.
fn unescape_help(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('\\') => out.push('\\'),
            Some('"') => out.push('"'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// Label names and unescaped values, in the order written.
pub type LabelPairs<'a> = Vec<(&'a str, Cow<'a, str>)>;

/// A label value up to its closing quote: the value (borrowed unless it
/// holds escapes) and the length read including the quote; `None` without
/// a closing quote on the line.
fn label_value(rest: &str) -> Option<(Cow<'_, str>, usize)> {
    let b = rest.as_bytes();
    let end = b.iter().position(|c| matches!(c, b'"' | b'\\' | b'\n'))?;
    if b[end] == b'"' {
        return Some((Cow::Borrowed(&rest[..end]), end + 1));
    }
    if b[end] == b'\n' {
        return None;
    }
    let mut value = String::with_capacity(rest.len().min(256));
    value.push_str(&rest[..end]);
    let mut chars = rest[end..].char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((Cow::Owned(value), end + i + 1)),
            '\\' => match chars.next() {
                Some((_, 'n')) => value.push('\n'),
                Some((_, '\\')) => value.push('\\'),
                Some((_, '"')) => value.push('"'),
                Some((_, other)) => {
                    // Prometheus keeps unknown escapes as written.
                    value.push('\\');
                    value.push(other);
                }
                None => return None,
            },
            '\n' => return None,
            c => value.push(c),
        }
    }
    None
}

/// Reads `{k="v",...}` at the start of `s` (after the `{`), returning the
/// labels and the rest after `}`.
fn labels(s: &str, line: usize) -> Result<(LabelPairs<'_>, &str), ParseError> {
    let mut out: LabelPairs = Vec::new();
    let mut rest = s.trim_start_matches([' ', '\t']);
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((out, r));
        }
        let b = rest.as_bytes();
        if b.is_empty() || !is_label_start(b[0]) {
            return Err(bad(
                line,
                format!("expected a label name or '}}' at {:?}", head(rest)),
            ));
        }
        let end = b.iter().position(|c| !is_label_char(*c)).unwrap_or(b.len());
        let key = &rest[..end];
        rest = rest[end..].trim_start_matches([' ', '\t']);
        rest = rest
            .strip_prefix('=')
            .ok_or_else(|| bad(line, format!("expected '=' after label {key:?}")))?
            .trim_start_matches([' ', '\t']);
        rest = rest.strip_prefix('"').ok_or_else(|| {
            bad(
                line,
                format!("label {key:?}: value must be in double quotes"),
            )
        })?;
        let Some((value, after)) = label_value(rest) else {
            return Err(bad(
                line,
                format!("label {key:?}: value has no closing quote"),
            ));
        };
        if out.iter().any(|(k, _)| *k == key) {
            return Err(bad(line, format!("label {key:?} given twice")));
        }
        out.push((key, value));
        rest = rest[after..].trim_start_matches([' ', '\t']);
        if let Some(r) = rest.strip_prefix(',') {
            rest = r.trim_start_matches([' ', '\t']);
        } else if !rest.starts_with('}') {
            return Err(bad(
                line,
                format!("expected ',' or '}}' at {:?}", head(rest)),
            ));
        }
    }
}

/// The first few characters of `s`, for messages.
fn head(s: &str) -> String {
    let mut h: String = s.chars().take(20).collect();
    if h.len() < s.len() {
        h.push('…');
    }
    h
}

/// Parses a whole body. At most `max_samples` samples are accepted: one more
/// fails the parse with [`ParseError::SampleLimit`].
pub fn parse(body: &str, format: Format, max_samples: usize) -> Result<Exposition<'_>, ParseError> {
    let mut out = Exposition::default();
    let mut types: HashMap<&str, MetricType> = HashMap::new();
    let mut last_type: Option<(&str, MetricType)> = None;
    let om = format == Format::OpenMetrics;
    let mut saw_eof = false;
    for (i, raw) in body.split('\n').enumerate() {
        let line = i + 1;
        if saw_eof {
            if raw.is_empty() {
                continue;
            }
            return Err(bad(line, "content after \"# EOF\""));
        }
        let text = if om {
            raw
        } else {
            raw.trim_start_matches([' ', '\t'])
        };
        if text.trim().is_empty() {
            continue;
        }
        if let Some(comment) = text.strip_prefix('#') {
            if om && comment == " EOF" {
                saw_eof = true;
                continue;
            }
            let comment = comment.trim_start_matches([' ', '\t']);
            let (word, rest) = comment.split_once([' ', '\t']).unwrap_or((comment, ""));
            match word {
                "HELP" | "TYPE" | "UNIT" => {
                    let rest = rest.trim_start_matches([' ', '\t']);
                    let (name, arg) = rest.split_once([' ', '\t']).unwrap_or((rest, ""));
                    if !valid_metric_name(name) {
                        return Err(bad(
                            line,
                            format!("# {word}: {:?} is not a metric name", head(name)),
                        ));
                    }
                    match word {
                        "HELP" => {
                            out.help_text.insert(name, arg);
                        }
                        "TYPE" => {
                            let t = MetricType::parse(arg.trim())
                                .filter(|t| {
                                    om || !matches!(
                                        t,
                                        MetricType::GaugeHistogram
                                            | MetricType::Info
                                            | MetricType::StateSet
                                    )
                                })
                                .ok_or_else(|| {
                                    bad(
                                        line,
                                        format!(
                                            "# TYPE {name}: unknown type {:?}",
                                            head(arg.trim())
                                        ),
                                    )
                                })?;
                            last_type = Some((name, t));
                            if types.insert(name, t).is_some() {
                                return Err(bad(line, format!("second # TYPE line for {name}")));
                            }
                        }
                        _ => {}
                    }
                }
                _ if om => {
                    return Err(bad(
                        line,
                        "OpenMetrics allows only # HELP, # TYPE, # UNIT and # EOF comments",
                    ))
                }
                _ => {}
            }
            continue;
        }
        let (name, rest) = metric_name(text)
            .ok_or_else(|| bad(line, format!("expected a metric name at {:?}", head(text))))?;
        let (labels, rest) = match rest.strip_prefix('{') {
            Some(r) => labels(r, line)?,
            None => (Vec::new(), rest),
        };
        let id = &text[..text.len() - rest.len()];
        // OpenMetrics exemplars (` # {…} v [ts]`) are not kept.
        let rest = if om {
            rest.split_once(" # ").map_or(rest, |(r, _)| r)
        } else {
            rest
        };
        if rest.trim().is_empty() {
            return Err(bad(line, format!("{name}: no value")));
        }
        if !rest.starts_with([' ', '\t']) {
            return Err(bad(
                line,
                format!(
                    "{name}: expected a space before the value at {:?}",
                    head(rest)
                ),
            ));
        }
        let mut fields = rest.split([' ', '\t']).filter(|f| !f.is_empty());
        let value_text = fields
            .next()
            .ok_or_else(|| bad(line, format!("{name}: no value")))?;
        let value = parse_value(value_text).ok_or_else(|| {
            bad(
                line,
                format!("{name}: {:?} is not a number", head(value_text)),
            )
        })?;
        let timestamp_ms = match fields.next() {
            None => None,
            Some(ts) if om => {
                let secs = parse_value(ts).filter(|v| v.is_finite()).ok_or_else(|| {
                    bad(
                        line,
                        format!("{name}: timestamp {:?} is not a number", head(ts)),
                    )
                })?;
                Some((secs * 1000.0).round() as i64)
            }
            Some(ts) => Some(ts.parse::<i64>().map_err(|_| {
                bad(
                    line,
                    format!(
                        "{name}: timestamp {:?} is not an integer of milliseconds",
                        head(ts)
                    ),
                )
            })?),
        };
        if let Some(extra) = fields.next() {
            return Err(bad(
                line,
                format!("{name}: unexpected {:?} after the timestamp", head(extra)),
            ));
        }
        if out.samples.len() >= max_samples {
            return Err(ParseError::SampleLimit { limit: max_samples });
        }
        let (family, typ) = family_of(name, &types, last_type);
        out.samples.push(Sample {
            name,
            id,
            labels,
            value,
            timestamp_ms,
            typ,
            family,
        });
    }
    if om && !saw_eof {
        return Err(ParseError::NoEof);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(body: &str) -> Exposition<'_> {
        parse(body, Format::Text, 1000).unwrap()
    }

    #[test]
    fn the_text_format_example() {
        // The example of the exposition format documentation, abridged.
        let body = r#"# HELP http_requests_total The total number of HTTP requests.
# TYPE http_requests_total counter
http_requests_total{method="post",code="200"} 1027 1395066363000
http_requests_total{method="post",code="400"}    3 1395066363000

# Escaping in label values:
msdos_file_access_time_seconds{path="C:\\DIR\\FILE.TXT",error="Cannot find file:\n\"FILE.TXT\""} 1.458255915e9

# Minimalistic line:
metric_without_timestamp_and_labels 12.47

# A weird metric from before the epoch:
something_weird{problem="division by zero"} +Inf -3982045

# A histogram, which has a pretty complex representation in the text format:
# HELP http_request_duration_seconds A histogram of the request duration.
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{le="0.05"} 24054
http_request_duration_seconds_bucket{le="+Inf"} 144320
http_request_duration_seconds_sum 53423
http_request_duration_seconds_count 144320

# TYPE rpc_duration_seconds summary
rpc_duration_seconds{quantile="0.5"} 4773
rpc_duration_seconds_sum 1.7560473e+07
rpc_duration_seconds_count 2693
"#;
        let e = text(body);
        assert_eq!(e.samples.len(), 12);
        let s = &e.samples[0];
        assert_eq!(s.name, "http_requests_total");
        assert_eq!(s.typ, MetricType::Counter);
        assert_eq!(
            s.labels,
            [("method", "post".into()), ("code", "200".into())]
        );
        assert_eq!((s.value, s.timestamp_ms), (1027.0, Some(1_395_066_363_000)));
        assert_eq!(e.samples[1].value, 3.0);
        let msdos = &e.samples[2];
        assert_eq!(msdos.labels[0].1, r"C:\DIR\FILE.TXT");
        assert_eq!(msdos.labels[1].1, "Cannot find file:\n\"FILE.TXT\"");
        assert_eq!(msdos.typ, MetricType::Untyped);
        assert_eq!(e.samples[4].value, f64::INFINITY);
        assert_eq!(e.samples[4].timestamp_ms, Some(-3_982_045));
        let bucket = &e.samples[5];
        assert_eq!(
            (bucket.typ, bucket.family),
            (MetricType::Histogram, "http_request_duration_seconds")
        );
        assert_eq!(e.samples[6].labels[0].1, "+Inf");
        assert_eq!(e.samples[8].typ, MetricType::Histogram);
        assert_eq!(e.samples[9].typ, MetricType::Summary);
        assert_eq!(e.samples[10].family, "rpc_duration_seconds");
        assert_eq!(
            e.help("http_requests_total").unwrap(),
            "The total number of HTTP requests."
        );
    }

    #[test]
    fn nan_and_infinities() {
        let e = text("a NaN\nb -Inf\nc +Inf\nd Inf\ne 1e-3\n");
        assert!(e.samples[0].value.is_nan());
        assert_eq!(e.samples[1].value, f64::NEG_INFINITY);
        assert_eq!(e.samples[2].value, f64::INFINITY);
        assert_eq!(e.samples[3].value, f64::INFINITY);
        assert_eq!(e.samples[4].value, 0.001);
    }

    #[test]
    fn help_escapes_and_odd_spacing() {
        let e = text(
            "# HELP x a \\\\ backslash\\nand a line\n  x{ a = \"1\" , } \t 2\n# some comment\n",
        );
        assert_eq!(e.help("x").unwrap(), "a \\ backslash\nand a line");
        assert_eq!(e.samples[0].labels, [("a", "1".into())]);
        assert_eq!(e.samples[0].value, 2.0);
    }

    #[test]
    fn label_values_keep_anything_escaped() {
        let e = text("x{a=\"}{,=\\\" # \",b=\"\\\\n\",c=\"é\\q\"} 1\n");
        let l = &e.samples[0].labels;
        assert_eq!(l[0].1, "}{,=\" # ");
        assert_eq!(l[1].1, "\\n", "an escaped backslash then n");
        assert_eq!(l[2].1, "é\\q", "unknown escapes kept as written");
    }

    #[test]
    fn malformed_lines_say_where_and_what() {
        for (body, want) in [
            ("x{a=\"1\" 2\n", "line 1: expected ',' or '}'"),
            (
                "ok 1\nx{a=1} 2\n",
                "line 2: label \"a\": value must be in double quotes",
            ),
            ("x{a=\"1} 2\n", "no closing quote"),
            ("x{a=\"1\",a=\"2\"} 3\n", "given twice"),
            ("x one\n", "\"one\" is not a number"),
            ("x 1 12.5\n", "not an integer of milliseconds"),
            ("x 1 2 3\n", "unexpected \"3\""),
            ("x\n", "no value"),
            ("9x 1\n", "expected a metric name"),
            ("x 1infinity\n", "is not a number"),
            ("# TYPE x counter\n# TYPE x gauge\n", "second # TYPE"),
            ("# TYPE x meter\n", "unknown type"),
            ("# TYPE x gaugehistogram\n", "unknown type"),
            ("x{1=\"a\"} 1\n", "expected a label name"),
        ] {
            let err = parse(body, Format::Text, 100).unwrap_err().to_string();
            assert!(err.contains(want), "{body:?}: {err}");
        }
    }

    #[test]
    fn the_sample_limit_stops_the_parse() {
        let body: String = (0..10).map(|i| format!("x{{i=\"{i}\"}} 1\n")).collect();
        assert_eq!(parse(&body, Format::Text, 10).unwrap().samples.len(), 10);
        let err = parse(&body, Format::Text, 9).unwrap_err();
        assert_eq!(err, ParseError::SampleLimit { limit: 9 });
        assert_eq!(err.reason(), "sample_limit");
    }

    #[test]
    fn openmetrics() {
        let body = "# TYPE foo counter\n# HELP foo Things.\n# UNIT foo seconds\nfoo_total{a=\"b\"} 17.0 1520879607.789 # {trace_id=\"x\"} 1 1520879607.7\nfoo_created{a=\"b\"} 1520430000.123\n# TYPE h histogram\nh_bucket{le=\"1\"} 0\nh_bucket{le=\"+Inf\"} 2\nh_count 2\nh_sum 3.5\n# TYPE i info\ni_info{version=\"1\"} 1\n# TYPE s stateset\ns{s=\"a\"} 1\n# EOF\n";
        let e = parse(body, Format::OpenMetrics, 100).unwrap();
        let foo = &e.samples[0];
        assert_eq!(
            (foo.name, foo.family, foo.typ),
            ("foo_total", "foo", MetricType::Counter)
        );
        assert_eq!(foo.timestamp_ms, Some(1_520_879_607_789));
        assert_eq!(e.samples[1].family, "foo");
        assert_eq!(e.samples[2].typ, MetricType::Histogram);
        assert_eq!(e.samples[6].typ, MetricType::Info);
        assert_eq!(e.samples[7].typ, MetricType::StateSet);
        assert_eq!(
            parse("a 1\n", Format::OpenMetrics, 10).unwrap_err(),
            ParseError::NoEof
        );
        assert!(parse("a 1\n# EOF\nb 2\n", Format::OpenMetrics, 10).is_err());
        assert!(parse("# hello\na 1\n# EOF\n", Format::OpenMetrics, 10).is_err());
    }

    #[test]
    fn content_types() {
        assert_eq!(
            Format::from_content_type(Some(
                "application/openmetrics-text; version=1.0.0; charset=utf-8"
            )),
            Format::OpenMetrics
        );
        assert_eq!(
            Format::from_content_type(Some("text/plain; version=0.0.4")),
            Format::Text
        );
        assert_eq!(Format::from_content_type(None), Format::Text);
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        /// Escapes a label value as an exporter writes it.
        fn escape(v: &str) -> String {
            v.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n")
        }

        proptest! {
            #[test]
            fn any_label_value_round_trips(
                values in proptest::collection::vec(any::<String>(), 1..5),
                v in any::<f64>(),
            ) {
                let labels: Vec<String> = values
                    .iter()
                    .enumerate()
                    .map(|(i, x)| format!("l{i}=\"{}\"", escape(x)))
                    .collect();
                let body = format!("m{{{}}} {v:?}\n", labels.join(","));
                let e = parse(&body, Format::Text, 10).unwrap();
                let got: Vec<&str> = e.samples[0].labels.iter().map(|(_, x)| x.as_ref()).collect();
                prop_assert_eq!(got, values.iter().map(String::as_str).collect::<Vec<_>>());
                let back = e.samples[0].value;
                prop_assert!(back == v || (back.is_nan() && v.is_nan()));
            }

            #[test]
            fn any_input_is_parsed_or_refused_without_panic(body in any::<String>()) {
                let _ = parse(&body, Format::Text, 50);
                let _ = parse(&body, Format::OpenMetrics, 50);
            }

            #[test]
            fn lines_of_exposition_bytes_never_panic(
                lines in proptest::collection::vec("[a-z_{}=\",\\\\ #0-9.+-]{0,30}", 0..20)
            ) {
                let body = lines.join("\n");
                let _ = parse(&body, Format::Text, 50);
            }
        }
    }
}
