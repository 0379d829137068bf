//! Syslog lines and log-file lines to [`LogRecord`]s.
//!
//! `syslog_loose` does the RFC work (PRI, RFC 5424 header and structured
//! data, RFC 3164 and RFC 3339 timestamps); everything it returns is checked
//! against the text before it is believed, because it answers confidently on
//! input it did not understand (a leading `-` is "no timestamp", a lone tag is
//! a hostname, `--- last message repeated` is host `---` and app `last`). The
//! RFC 3164 hostname and tag are split here, the way rsyslog does it.

use super::level::split_pri;
use super::record::{unix_micros, LogRecord};
use super::text::decode;
use chrono::{
    DateTime, Datelike, Duration, FixedOffset, NaiveDate, NaiveDateTime, Offset, TimeZone, Utc,
};
use syslog_loose::{IncompleteDate, Variant};

/// Lines longer than this are truncated (SPEC §5: 64 KiB by default).
pub const DEFAULT_MAX_LINE_BYTES: usize = 64 * 1024;

/// How to read a line: [`parse`] and [`parse_file_line`] fill this in with
/// the defaults; [`parse_with`] and [`parse_file_line_with`] take it whole.
#[derive(Debug, Clone, Copy)]
pub struct ParseOptions<'a> {
    /// When the line was read: the timestamp of lines that carry none, and
    /// the reference for RFC 3164 dates without a year.
    pub received_at: DateTime<Utc>,
    /// Longer lines are cut to this many bytes and marked `truncated`.
    pub max_line_bytes: usize,
    /// The offset of timestamps written without one (RFC 3164 dates,
    /// `2019-06-14T10:40:20`). UTC by default: a server cannot know a remote
    /// sender's zone; an agent reading local files may pass its own offset.
    pub zone: FixedOffset,
    /// `app_name` for lines that name no program (a tailed file's app).
    pub default_app: Option<&'a str>,
}

impl ParseOptions<'_> {
    /// UTC, [`DEFAULT_MAX_LINE_BYTES`], no default app.
    pub fn new(received_at: DateTime<Utc>) -> Self {
        ParseOptions {
            received_at,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            zone: Utc.fix(),
            default_app: None,
        }
    }
}

/// Parse one syslog message as received on the network or a local socket
/// (one UDP datagram, one TCP frame). Never fails: a line with no valid
/// `<PRI>` and no recognizable log header is kept whole with `unparsed` set.
pub fn parse(line: &[u8], received_at: DateTime<Utc>, max_line_bytes: usize) -> LogRecord {
    parse_with(
        line,
        &ParseOptions {
            max_line_bytes,
            ..ParseOptions::new(received_at)
        },
    )
}

/// [`parse`] with every option.
pub fn parse_with(line: &[u8], opts: &ParseOptions<'_>) -> LogRecord {
    read_line(line, opts, true)
}

/// Parse one line of a log file. Traditional syslog file lines
/// (`Mar  1 12:00:00 host sshd[123]: msg`, or with an ISO 8601 timestamp)
/// get their timestamp, hostname, app and procid; any other line (nginx,
/// MySQL, a continuation line) is kept whole as the message, stamped
/// `received_at`. Lines that start with a `<PRI>` are read as syslog.
pub fn parse_file_line(
    line: &[u8],
    received_at: DateTime<Utc>,
    max_line_bytes: usize,
    default_app: Option<&str>,
) -> LogRecord {
    parse_file_line_with(
        line,
        &ParseOptions {
            max_line_bytes,
            default_app,
            ..ParseOptions::new(received_at)
        },
    )
}

/// [`parse_file_line`] with every option.
pub fn parse_file_line_with(line: &[u8], opts: &ParseOptions<'_>) -> LogRecord {
    read_line(line, opts, false)
}

/// The parts of a line, borrowed from its text.
#[derive(Debug, Default, PartialEq)]
struct Fields<'t> {
    ts: Option<DateTime<FixedOffset>>,
    hostname: Option<&'t str>,
    app: Option<&'t str>,
    procid: Option<&'t str>,
    msgid: Option<&'t str>,
    structured_data: Option<&'t str>,
    msg: &'t str,
}

fn read_line(line: &[u8], opts: &ParseOptions<'_>, from_network: bool) -> LogRecord {
    let decoded = decode(line, opts.max_line_bytes);
    let text = decoded.text.as_str();
    let mut rec = LogRecord::whole(String::new(), opts.received_at);
    rec.truncated = decoded.truncated;
    rec.invalid_utf8 = decoded.invalid_utf8;

    let fields = match leading_pri(text) {
        Some((pri, body_start)) => {
            if let Some((facility, severity)) = split_pri(pri) {
                rec.facility = Some(facility);
                rec.severity = Some(severity);
            }
            Some(syslog_body(text, body_start, opts))
        }
        None => traditional(text, opts),
    };

    match fields {
        Some(f) => {
            if let Some(ts) = f.ts {
                rec.ts = unix_micros(ts.with_timezone(&Utc));
            }
            rec.hostname = f.hostname.map(str::to_owned);
            rec.app_name = f.app.map(str::to_owned);
            rec.procid = f.procid.map(str::to_owned);
            rec.msgid = f.msgid.map(str::to_owned);
            rec.structured_data = f.structured_data.map(str::to_owned);
            rec.message = f.msg.to_owned();
        }
        None => {
            rec.message = decoded.text.clone();
            rec.unparsed = from_network;
        }
    }
    if rec.app_name.is_none() {
        rec.app_name = opts.default_app.map(str::to_owned);
    }
    rec
}

/// `<PRI>` at the very start: its value (0–191) and where the rest begins.
fn leading_pri(text: &str) -> Option<(u8, usize)> {
    let rest = text.strip_prefix('<')?;
    let len = rest.bytes().take_while(u8::is_ascii_digit).count();
    if !(1..=3).contains(&len) || rest.as_bytes().get(len) != Some(&b'>') {
        return None;
    }
    let pri: u8 = rest[..len].parse().ok()?;
    (pri <= 191).then_some((pri, len + 2))
}

/// The text after a valid `<PRI>`: RFC 5424 when a version follows, else
/// RFC 3164. A body that is neither is, as RFC 3164 §4.3.3 has a relay
/// treat it, all message (after a tag, if it starts with one).
fn syslog_body<'t>(text: &'t str, body_start: usize, opts: &ParseOptions<'_>) -> Fields<'t> {
    let body = &text[body_start..];
    let digits = body.bytes().take_while(u8::is_ascii_digit).count();
    if (1..=2).contains(&digits) && body.as_bytes().get(digits) == Some(&b' ') {
        if let Some(f) = rfc5424(text, body_start, opts) {
            return f;
        }
    }
    traditional(body, opts).unwrap_or_else(|| without_header(body))
}

/// No timestamp: a leading tag (`app[pid]: msg`, `app: msg`) is still
/// taken; everything else is the message.
fn without_header(body: &str) -> Fields<'_> {
    let body = body.trim_start_matches(' ');
    match tag(body, false) {
        Some(t) => Fields {
            app: Some(t.app),
            procid: t.procid,
            msg: t.msg,
            ..Fields::default()
        },
        None => Fields {
            msg: body,
            ..Fields::default()
        },
    }
}

/// `VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID SP SD [SP MSG]`
fn rfc5424<'t>(text: &'t str, body_start: usize, opts: &ParseOptions<'_>) -> Option<Fields<'t>> {
    let year = |d: IncompleteDate| closest_year(opts.received_at, opts.zone, d);
    let m = syslog_loose::parse_message_with_year_exact_tz(
        text,
        year,
        Some(opts.zone),
        Variant::RFC5424,
    )
    .ok()?;

    // The header, split here too: it checks syslog_loose's reading and
    // finds where the structured data starts.
    let mut rest = &text[body_start..];
    let mut tokens = [""; 6];
    for t in &mut tokens {
        let (token, after) = next_token(rest)?;
        *t = token;
        rest = after;
    }
    let [_version, ts, hostname, app, procid, msgid] = tokens;
    let nil = |s: &'t str| (s != "-").then_some(s);
    let (hostname, app, procid, msgid) = (nil(hostname), nil(app), nil(procid), nil(msgid));
    if m.hostname != hostname || m.appname != app || m.msgid != msgid {
        return None;
    }
    if (ts == "-") != m.timestamp.is_none() {
        return None;
    }
    let header_ok = |s: Option<&str>, max: usize| {
        s.is_none_or(|s| s.len() <= max && !s.chars().any(char::is_control))
    };
    if !(header_ok(hostname, 255)
        && header_ok(app, 128)
        && header_ok(procid, 128)
        && header_ok(msgid, 128))
    {
        return None;
    }

    let sd_start = offset_in(text, rest)?;
    let msg_start = offset_in(text, m.msg)?;
    let sd = text
        .get(sd_start..msg_start.max(sd_start))
        .unwrap_or("")
        .trim_matches([' ', '\t']);
    let structured_data = (!sd.is_empty() && sd != "-").then_some(sd);
    if structured_data.is_some_and(|sd| !sd.starts_with('[')) {
        return None;
    }

    Some(Fields {
        ts: m.timestamp,
        hostname,
        app,
        procid,
        msgid,
        structured_data,
        // RFC 5424 §6.4: a UTF-8 message may start with a BOM.
        msg: m.msg.strip_prefix('\u{FEFF}').unwrap_or(m.msg),
    })
}

/// `TIMESTAMP [HOSTNAME] [TAG[PID]:] MSG`, with an RFC 3164 date
/// (`Mmm dd hh:mm:ss`, also with a year) or an ISO 8601 one. `None` when
/// the text does not start with a timestamp.
fn traditional<'t>(body: &'t str, opts: &ParseOptions<'_>) -> Option<Fields<'t>> {
    let (ts, ts_end) = timestamp(body, opts)?;
    let rest = body[ts_end..].trim_start_matches(' ');
    let mut f = Fields {
        ts: Some(ts),
        msg: rest,
        ..Fields::default()
    };
    // A tag right after the timestamp: local syslog(3) sends no hostname.
    if let Some(t) = tag(rest, false) {
        (f.app, f.procid, f.msg) = (Some(t.app), t.procid, t.msg);
        return Some(f);
    }
    let (first, after) = rest.split_once(' ').unwrap_or((rest, ""));
    let after = after.trim_start_matches(' ');
    // A lone word is the message, not a hostname.
    if !after.is_empty() && is_hostname(first) {
        f.hostname = Some(first);
        f.msg = after;
        if let Some(t) = tag(after, true) {
            (f.app, f.procid, f.msg) = (Some(t.app), t.procid, t.msg);
        }
    }
    Some(f)
}

/// The timestamp at the start of `body` and the byte offset where it ends.
fn timestamp(body: &str, opts: &ParseOptions<'_>) -> Option<(DateTime<FixedOffset>, usize)> {
    let year = |d: IncompleteDate| closest_year(opts.received_at, opts.zone, d);
    let parsed = syslog_loose::parse_message_with_year_exact_tz(
        body,
        year,
        Some(opts.zone),
        Variant::RFC3164,
    )
    .ok()
    .and_then(|m| m.timestamp);

    let (first, mut end) = token_at(body, 0)?;
    if first.len() == 3 && first.bytes().all(|b| b.is_ascii_alphabetic()) {
        // Mmm dd [yyyy] hh:mm:ss[.frac][:]
        let (day, e) = token_at(body, end)?;
        let (mut time, mut e) = token_at(body, e)?;
        let mut with_year = false;
        if !time.contains(':') {
            if !(time.len() == 4 && time.bytes().all(|b| b.is_ascii_digit())) {
                return None;
            }
            (time, e) = token_at(body, e)?;
            with_year = true;
        }
        end = e;
        if !(1..=2).contains(&day.len()) || !day.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let frac = classic_time_fraction(time)?;
        // syslog_loose reads a dated RFC 3164 timestamp as UTC and only
        // then attaches the zone; read the wall time again in the zone.
        let ts = parsed?;
        let ts = if with_year {
            opts.zone.from_local_datetime(&ts.naive_utc()).single()?
        } else {
            ts
        };
        return Some((ts.checked_add_signed(frac)?, end));
    }
    if first.len() >= 10
        && first.as_bytes()[4] == b'-'
        && first.as_bytes()[..4].iter().all(u8::is_ascii_digit)
    {
        let ts = parsed.or_else(|| iso8601(first, opts.zone))?;
        return Some((ts, end));
    }
    None
}

/// Checks `hh:mm:ss[.frac][:]` and returns the fraction, which syslog_loose
/// does not read.
fn classic_time_fraction(time: &str) -> Option<Duration> {
    let time = time.strip_suffix(':').unwrap_or(time);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let parts: Vec<&str> = hms.split(':').collect();
    let two_digits = |p: &&str| (1..=2).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit());
    if parts.len() != 3 || !parts.iter().all(two_digits) {
        return None;
    }
    if frac.is_empty() {
        return (!time.ends_with('.')).then(Duration::zero);
    }
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nanos: i64 = format!("{frac:0<9}").parse().ok()?;
    Some(Duration::nanoseconds(nanos))
}

/// ISO 8601 forms syslog_loose refuses: `+0400` offsets and no offset at all
/// (then `zone` applies).
fn iso8601(s: &str, zone: FixedOffset) -> Option<DateTime<FixedOffset>> {
    DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z")
        .ok()
        .or_else(|| {
            let naive = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").ok()?;
            zone.from_local_datetime(&naive).single()
        })
}

/// The year that puts a year-less date closest to the receive time: a
/// `Dec 31 23:59:59` received on January 1st is from the year before.
fn closest_year(received: DateTime<Utc>, zone: FixedOffset, d: IncompleteDate) -> i32 {
    let (month, day, hour, minute, second) = d;
    let this_year = received.with_timezone(&zone).year();
    let mut best: Option<(i64, i32)> = None;
    for year in [this_year - 1, this_year, this_year + 1] {
        let Some(naive) = NaiveDate::from_ymd_opt(year, month, day)
            .and_then(|date| date.and_hms_opt(hour, minute, second))
        else {
            continue;
        };
        let Some(t) = zone.from_local_datetime(&naive).single() else {
            continue;
        };
        let distance = (t.timestamp() - received.timestamp()).abs();
        if best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, year));
        }
    }
    best.map_or(this_year, |(_, year)| year)
}

/// An RFC 3164 TAG and what follows it.
#[derive(Debug, PartialEq)]
struct Tag<'t> {
    app: &'t str,
    procid: Option<&'t str>,
    msg: &'t str,
}

/// `app[pid]: msg`, `app: msg` or `app[pid] msg` at the start of `s`. A word
/// not followed by `:` or `[pid]` is not a tag (it is a hostname or the
/// message). With `spaces`, `Google Chrome[85294]: msg` (macOS) is a tag
/// too; not where a hostname may still come, or `host sshd[1]:` would be one.
fn tag(s: &str, spaces: bool) -> Option<Tag<'_>> {
    let stop = s.find([' ', '\t', ':', '['])?;
    let (app, procid, after) = match s.as_bytes()[stop] {
        b':' => (&s[..stop], None, &s[stop + 1..]),
        b'[' => {
            let close = stop + 1 + s[stop + 1..].find(']')?;
            let after = &s[close + 1..];
            let after = match after.strip_prefix(':') {
                Some(a) => a,
                None if after.is_empty() || after.starts_with(' ') => after,
                None => return None,
            };
            (&s[..stop], Some(&s[stop + 1..close]), after)
        }
        _ if !spaces => return None,
        _ => {
            // A program name with spaces, only in the `name[digits]:` form.
            let colon = s.get(..64.min(s.len()))?.find(':')?;
            let head = s[..colon].strip_suffix(']')?;
            let open = head.rfind('[')?;
            let pid = &head[open + 1..];
            if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            (&head[..open], Some(pid), &s[colon + 1..])
        }
    };
    let app_ok = !app.is_empty()
        && app.len() <= 64
        && !app.starts_with(' ')
        && !app
            .chars()
            .any(|c| c.is_control() || matches!(c, '[' | ']' | '"' | '=' | '<' | '>' | '{' | '}'));
    let procid_ok = procid.is_none_or(|p| {
        !p.is_empty() && p.len() <= 128 && !p.chars().any(|c| c.is_whitespace() || c.is_control())
    });
    (app_ok && procid_ok).then(|| Tag {
        app,
        procid,
        msg: after.trim_start_matches(' '),
    })
}

/// A host name or an IP address as senders write them: letters, digits,
/// `.`, `-`, `_`, starting with a letter or digit; or an IPv6 address.
fn is_hostname(s: &str) -> bool {
    if s.is_empty() || s.len() > 255 {
        return false;
    }
    if s.contains(':') {
        return s.matches(':').count() >= 2
            && s.chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.');
    }
    s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// The next space-separated token (spaces and tabs before it skipped) and
/// the text after it.
fn next_token(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start_matches([' ', '\t']);
    if s.is_empty() {
        return None;
    }
    let end = s.find([' ', '\t']).unwrap_or(s.len());
    Some((&s[..end], &s[end..]))
}

/// [`next_token`] by offsets: the token starting at or after `from` and the
/// offset just past it.
fn token_at(s: &str, from: usize) -> Option<(&str, usize)> {
    let (token, _) = next_token(s.get(from..)?)?;
    let start = offset_in(s, token)?;
    Some((token, start + token.len()))
}

/// Where `part` (a slice of `whole`) starts in `whole`.
fn offset_in(whole: &str, part: &str) -> Option<usize> {
    let start = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    (start + part.len() <= whole.len()).then_some(start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syslog::{Facility, Severity};

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    fn us(t: DateTime<Utc>) -> i64 {
        t.timestamp_micros()
    }

    fn recv() -> DateTime<Utc> {
        utc(2026, 11, 23, 4, 5, 10)
    }

    fn p(line: &str) -> LogRecord {
        parse(line.as_bytes(), recv(), DEFAULT_MAX_LINE_BYTES)
    }

    fn fields(r: &LogRecord) -> (Option<&str>, Option<&str>, Option<&str>, &str) {
        (
            r.hostname.as_deref(),
            r.app_name.as_deref(),
            r.procid.as_deref(),
            r.message.as_str(),
        )
    }

    #[test]
    fn logger_rfc3164_over_the_network() {
        // util-linux `logger -n 127.0.0.1 -P 5514 -d`
        let r = p("<13>Nov 23 04:05:06 host user: msg");
        assert_eq!(fields(&r), (Some("host"), Some("user"), None, "msg"));
        assert_eq!(r.facility, Some(Facility::User));
        assert_eq!(r.severity, Some(Severity::Notice));
        assert_eq!(r.ts, us(utc(2026, 11, 23, 4, 5, 6)));
        assert_eq!(r.received_at, us(recv()));
        assert!(!r.unparsed && !r.truncated && !r.invalid_utf8);
        assert_eq!(r.msgid, None);
        assert_eq!(r.structured_data, None);
    }

    #[test]
    fn logger_rfc5424_with_time_quality() {
        let r = p(
            "<13>1 2026-11-23T04:05:06.123456+00:00 host user - - [timeQuality tzKnown=\"1\" \
                   isSynced=\"1\" syncAccuracy=\"437500\"] msg",
        );
        assert_eq!(fields(&r), (Some("host"), Some("user"), None, "msg"));
        assert_eq!(r.ts, us(utc(2026, 11, 23, 4, 5, 6)) + 123_456);
        assert_eq!(
            r.structured_data.as_deref(),
            Some("[timeQuality tzKnown=\"1\" isSynced=\"1\" syncAccuracy=\"437500\"]")
        );
        assert_eq!(r.severity, Some(Severity::Notice));
    }

    #[test]
    fn rfc5424_examples_from_the_rfc() {
        let r = p(
            "<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - \u{FEFF}'su root' \
                   failed for lonvick on /dev/pts/8",
        );
        assert_eq!(
            fields(&r),
            (
                Some("mymachine.example.com"),
                Some("su"),
                None,
                "'su root' failed for lonvick on /dev/pts/8"
            )
        );
        assert_eq!(r.msgid.as_deref(), Some("ID47"));
        assert_eq!(
            (r.facility, r.severity),
            (Some(Facility::Auth), Some(Severity::Crit))
        );
        assert_eq!(r.ts, us(utc(2003, 10, 11, 22, 14, 15)) + 3_000);

        let r = p("<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - %% It's time");
        assert_eq!(
            fields(&r),
            (
                Some("192.0.2.1"),
                Some("myproc"),
                Some("8710"),
                "%% It's time"
            )
        );
        assert_eq!(r.ts, us(utc(2003, 8, 24, 12, 14, 15)) + 3);

        let sd = "[exampleSDID@32473 iut=\"3\" eventSource=\"Application\" eventID=\"1011\"]\
                  [examplePriority@32473 class=\"high\"]";
        let r = p(&format!(
            "<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 {sd}"
        ));
        assert_eq!(r.structured_data.as_deref(), Some(sd));
        assert_eq!(r.message, "");
        assert_eq!(r.app_name.as_deref(), Some("evntslog"));
    }

    #[test]
    fn rfc5424_escaped_bracket_in_structured_data() {
        let r = p(r#"<13>1 2026-01-01T00:00:00Z h a 1 - [id k="a\]b" j="c\"d"] the message"#);
        assert_eq!(
            r.structured_data.as_deref(),
            Some(r#"[id k="a\]b" j="c\"d"]"#)
        );
        assert_eq!(r.message, "the message");
    }

    #[test]
    fn rfc5424_nil_values_everywhere() {
        let r = p("<13>1 - - - - - -");
        assert_eq!(fields(&r), (None, None, None, ""));
        assert_eq!(r.ts, us(recv()));
        assert_eq!(r.msgid, None);
        assert_eq!(r.structured_data, None);
        assert!(!r.unparsed);
    }

    #[test]
    fn broken_rfc5424_keeps_the_priority_and_the_text() {
        let r = p("<13>1 2026-01-01T00:00:00Z h a - - [broken sd");
        assert_eq!(r.severity, Some(Severity::Notice));
        assert_eq!(r.message, "1 2026-01-01T00:00:00Z h a - - [broken sd");
        assert_eq!(r.hostname, None);
        assert_eq!(r.ts, us(recv()));
    }

    #[test]
    fn rsyslog_traditional_forward_format() {
        let r = p("<30>Nov 23 04:05:06 web1 systemd[1]: Started Session 5 of user root.");
        assert_eq!(
            fields(&r),
            (
                Some("web1"),
                Some("systemd"),
                Some("1"),
                "Started Session 5 of user root."
            )
        );
        assert_eq!(
            (r.facility, r.severity),
            (Some(Facility::Daemon), Some(Severity::Info))
        );
    }

    #[test]
    fn rfc3164_without_hostname_as_local_syslog_sends_it() {
        let r = p("<14>Nov 23 04:05:06 myapp[42]: hello there");
        assert_eq!(fields(&r), (None, Some("myapp"), Some("42"), "hello there"));
        let r = p("<14>Nov 23 04:05:06 myapp: hello");
        assert_eq!(fields(&r), (None, Some("myapp"), None, "hello"));
    }

    #[test]
    fn rfc3164_with_hostname_and_no_tag() {
        let r = p("<134>Oct 30 16:05:54 opsaudit  {\"user\": \"admin\"}");
        assert_eq!(
            fields(&r),
            (Some("opsaudit"), None, None, "{\"user\": \"admin\"}")
        );
    }

    #[test]
    fn rfc3164_structured_data_lookalikes_stay_in_the_message() {
        let r = p("<13>Oct 11 22:14:15 host app[1]: [id k=\"v\"] rest");
        assert_eq!(
            fields(&r),
            (Some("host"), Some("app"), Some("1"), "[id k=\"v\"] rest")
        );
        assert_eq!(r.structured_data, None);
    }

    #[test]
    fn rfc3164_fractional_seconds_and_trailing_colon() {
        let r = p("<13>Nov  1 12:00:00.123 host app: x");
        assert_eq!(fields(&r), (Some("host"), Some("app"), None, "x"));
        assert_eq!(r.ts, us(utc(2026, 11, 1, 12, 0, 0)) + 123_000);
        let r = p("<13>Dec 28 16:49:07: host app: x");
        assert_eq!(r.ts, us(utc(2026, 12, 28, 16, 49, 7)));
    }

    #[test]
    fn leading_dash_is_not_a_missing_timestamp() {
        // syslog_loose reads "-" as "no timestamp", then "foo" as the host
        // and "bar" as the app.
        let r = p("<13>- foo bar baz");
        assert_eq!(fields(&r), (None, None, None, "- foo bar baz"));
        assert_eq!(r.ts, us(recv()));
        assert_eq!(r.severity, Some(Severity::Notice));
        assert!(!r.unparsed);
    }

    #[test]
    fn priority_without_timestamp_is_relayed_as_content() {
        let r = p("<13>myapp: started");
        assert_eq!(fields(&r), (None, Some("myapp"), None, "started"));
        let r = p("<13>just some words");
        assert_eq!(fields(&r), (None, None, None, "just some words"));
        assert_eq!(r.ts, us(recv()));
    }

    #[test]
    fn year_less_dates_take_the_closest_year() {
        let new_year = utc(2027, 1, 1, 0, 0, 5);
        let r = parse(b"<13>Dec 31 23:59:59 h a: x", new_year, 1024);
        assert_eq!(r.ts, us(utc(2026, 12, 31, 23, 59, 59)));
        let eve = utc(2026, 12, 31, 23, 59, 59);
        let r = parse(b"<13>Jan  1 00:00:01 h a: x", eve, 1024);
        assert_eq!(r.ts, us(utc(2027, 1, 1, 0, 0, 1)));
        // Closest, literally: mid-July is 169 days back, 196 ahead...
        let r = parse(b"<13>Jul 15 12:00:00 h a: x", eve, 1024);
        assert_eq!(r.ts, us(utc(2026, 7, 15, 12, 0, 0)));
        // ...and mid-June 199 days back but 166 ahead.
        let r = parse(b"<13>Jun 15 12:00:00 h a: x", eve, 1024);
        assert_eq!(r.ts, us(utc(2027, 6, 15, 12, 0, 0)));
    }

    #[test]
    fn february_29th_finds_a_leap_year_or_falls_back() {
        let r = parse(
            b"<13>Feb 29 10:00:00 h a: x",
            utc(2028, 3, 1, 0, 0, 0),
            1024,
        );
        assert_eq!(r.ts, us(utc(2028, 2, 29, 10, 0, 0)));
        // No leap year within a year of 2026: the date is not believed.
        let r = parse(
            b"<13>Feb 29 10:00:00 h a: x",
            utc(2026, 3, 1, 0, 0, 0),
            1024,
        );
        assert_eq!(r.ts, us(utc(2026, 3, 1, 0, 0, 0)));
        assert_eq!(r.message, "Feb 29 10:00:00 h a: x");
    }

    #[test]
    fn zone_applies_to_timestamps_without_one() {
        let opts = ParseOptions {
            zone: FixedOffset::east_opt(2 * 3600).unwrap(),
            ..ParseOptions::new(recv())
        };
        let r = parse_with(b"<13>Nov 23 04:05:06 h a: x", &opts);
        assert_eq!(r.ts, us(utc(2026, 11, 23, 2, 5, 6)));
        let r = parse_file_line_with(b"Dec 28 2008 16:49:07 h a: x", &opts);
        assert_eq!(r.ts, us(utc(2008, 12, 28, 14, 49, 7)));
        let r = parse_file_line_with(b"2019-06-14T10:40:20.5 localhost sudo: x", &opts);
        assert_eq!(r.ts, us(utc(2019, 6, 14, 8, 40, 20)) + 500_000);
        // A zone in the text wins.
        let r = parse_with(b"<13>1 2026-11-23T04:05:06Z h a - - - x", &opts);
        assert_eq!(r.ts, us(utc(2026, 11, 23, 4, 5, 6)));
    }

    #[test]
    fn lines_without_priority_are_kept_whole() {
        for line in ["hello world", "<999>x", "<13", "<>x", "<1a>x", "", "   "] {
            let r = p(line);
            assert!(r.unparsed, "{line:?}");
            assert_eq!(r.message, line);
            assert_eq!((r.severity, r.facility), (None, None));
            assert_eq!(r.ts, us(recv()));
        }
        // A traditional file line sent as is still gets its header.
        let r = p("Nov 23 04:05:06 host sshd[7]: hi");
        assert_eq!(fields(&r), (Some("host"), Some("sshd"), Some("7"), "hi"));
        assert!(!r.unparsed);
    }

    #[test]
    fn long_lines_are_truncated_but_keep_their_header() {
        let mut line = b"<13>Nov 23 04:05:06 host app: ".to_vec();
        line.extend(std::iter::repeat_n(b'x', 1 << 20));
        let r = parse(&line, recv(), 65536);
        assert!(r.truncated);
        assert_eq!(fields(&r).0, Some("host"));
        assert_eq!(r.message.len(), 65536 - 30);
    }

    #[test]
    fn invalid_utf8_and_nul_bytes_stay_visible() {
        let r = parse(
            b"<13>Nov 23 04:05:06 host app: caf\xe9 a\0b\n",
            recv(),
            1024,
        );
        assert!(r.invalid_utf8);
        assert_eq!(r.message, "caf\u{FFFD} a\u{2400}b");
        assert_eq!(fields(&r).1, Some("app"));
        let r = parse(b"\xff\xfe\0garbage", recv(), 1024);
        assert!(r.unparsed && r.invalid_utf8);
        assert_eq!(r.message, "\u{FFFD}\u{FFFD}\u{2400}garbage");
    }

    #[test]
    fn file_lines() {
        let app = Some("nginx");
        let r = parse_file_line(b"Nov  1 12:00:00 host sshd[123]: msg", recv(), 1024, app);
        assert_eq!(fields(&r), (Some("host"), Some("sshd"), Some("123"), "msg"));
        assert_eq!(r.ts, us(utc(2026, 11, 1, 12, 0, 0)));
        assert!(!r.unparsed);

        let line = "77.179.66.156 - - [25/Oct/2016:14:49:33 +0200] \"GET / HTTP/1.1\" 200 612";
        let r = parse_file_line(line.as_bytes(), recv(), 1024, app);
        assert_eq!(fields(&r), (None, Some("nginx"), None, line));
        assert_eq!(r.ts, us(recv()));
        assert!(!r.unparsed);

        let r = parse_file_line(b"- - [x] whatever", recv(), 1024, None);
        assert_eq!(fields(&r), (None, None, None, "- - [x] whatever"));

        let r = parse_file_line(
            b"Apr 4 03:39:57 --- last message repeated 1 time ---",
            recv(),
            1024,
            None,
        );
        assert_eq!(
            fields(&r),
            (None, None, None, "--- last message repeated 1 time ---")
        );
        // April is closer in 2027 than in 2026, seen from November 23rd.
        assert_eq!(r.ts, us(utc(2027, 4, 4, 3, 39, 57)));

        let r = parse_file_line(
            b"Dec 13 11:35:28 a-mac Google Chrome[85294]: hi: there",
            recv(),
            1024,
            None,
        );
        assert_eq!(
            fields(&r),
            (
                Some("a-mac"),
                Some("Google Chrome"),
                Some("85294"),
                "hi: there"
            )
        );

        let r = parse_file_line(
            b"<30>Nov 23 04:05:06 web1 cron[9]: x",
            recv(),
            1024,
            Some("ignored"),
        );
        assert_eq!(fields(&r).1, Some("cron"));
        assert_eq!(r.severity, Some(Severity::Info));
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let alphabet = b"<>0123456789 :-[]\"=TZ.+\n\r\0\xff\xe2\x82abcJanFebDec";
        for round in 0..3000 {
            let len = (next() % 200) as usize;
            let mut line: Vec<u8> = (0..len)
                .map(|_| {
                    if round % 2 == 0 {
                        alphabet[(next() % alphabet.len() as u64) as usize]
                    } else {
                        next() as u8
                    }
                })
                .collect();
            if round % 3 == 0 {
                let prefix: &[u8] = match next() % 4 {
                    0 => b"<13>",
                    1 => b"<13>1 ",
                    2 => b"<13>Nov 23 04:05:06 ",
                    _ => b"<13>1 2026-01-01T00:00:00Z ",
                };
                line.splice(0..0, prefix.iter().copied());
            }
            let max = 1 + (next() % 300) as usize;
            for r in [
                parse(&line, recv(), max),
                parse_file_line(&line, recv(), max, Some("app")),
            ] {
                assert!(r.message.len() <= max, "{line:?}");
                if r.unparsed {
                    assert_eq!(r.message, decode(&line, max).text);
                }
            }
        }
    }
}
