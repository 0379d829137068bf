//! Every sample log in `shared/data/logs` goes through `parse_file_line`:
//! no line is lost or mangled, syslog-style files get their header fields,
//! other formats are kept whole. The folder is `METROLOG_SAMPLE_LOGS`, or
//! `shared/data/logs` beside the repository (as CI lays it out).

use chrono::{DateTime, TimeZone, Utc};
use metrolog_protocol::syslog::{parse_file_line, LogRecord, DEFAULT_MAX_LINE_BYTES};
use std::collections::BTreeMap;
use std::path::PathBuf;

fn samples_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("METROLOG_SAMPLE_LOGS") {
        return PathBuf::from(dir);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/logs")
}

fn received() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap()
}

fn utc_us(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
        .unwrap()
        .timestamp_micros()
}

/// Each file's lines and their records, by file name.
fn parse_all() -> BTreeMap<String, Vec<(String, LogRecord)>> {
    let dir = samples_dir();
    let mut files = BTreeMap::new();
    let entries =
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("sample logs at {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "log") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
        if lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        let records = lines
            .into_iter()
            .map(|line| {
                let rec = parse_file_line(line, received(), DEFAULT_MAX_LINE_BYTES, Some("sample"));
                (String::from_utf8(line.to_vec()).unwrap(), rec)
            })
            .collect();
        files.insert(name, records);
    }
    files
}

fn rec<'a>(
    files: &'a BTreeMap<String, Vec<(String, LogRecord)>>,
    file: &str,
    line: usize,
) -> &'a LogRecord {
    &files[file][line - 1].1
}

fn fields(r: &LogRecord) -> (Option<&str>, Option<&str>, Option<&str>) {
    (
        r.hostname.as_deref(),
        r.app_name.as_deref(),
        r.procid.as_deref(),
    )
}

#[test]
fn every_line_of_every_sample_is_kept() {
    let files = parse_all();
    assert!(files.len() >= 17, "only {} sample files found", files.len());
    let lines: usize = files.values().map(Vec::len).sum();
    assert_eq!(lines, 1855, "line count of the samples changed");
    for (file, records) in &files {
        for (i, (line, r)) in records.iter().enumerate() {
            let at = format!("{file}:{}", i + 1);
            // The message is the tail of the line: nothing invented, nothing
            // dropped from it.
            assert!(line.ends_with(&r.message), "{at}: {r:?}");
            assert!(!r.truncated && !r.invalid_utf8 && !r.unparsed, "{at}");
            assert_eq!(r.received_at, received().timestamp_micros());
            assert!(r.app_name.is_some(), "{at}");
            if r.ts == r.received_at {
                // No timestamp found: then no header either.
                assert_eq!(r.hostname, None, "{at}");
                assert_eq!(r.message, *line, "{at}");
            }
        }
    }
}

#[test]
fn non_syslog_formats_are_kept_whole() {
    let files = parse_all();
    for file in [
        "apache-access-test.log",
        "apache-error-ubuntu-2.2.22.log",
        "mysql-error-mysql-ubuntu-5.5.53.log",
        "nginx-access-access.log",
        "nginx-error-error.log",
        "postgresql-log-postgresql-9.6-debian-with-slowlog.log",
    ] {
        for (i, (line, r)) in files[file].iter().enumerate() {
            assert_eq!(&r.message, line, "{file}:{}", i + 1);
            assert_eq!(fields(r), (None, Some("sample"), None), "{file}:{}", i + 1);
            assert_eq!(r.ts, r.received_at);
            assert_eq!(r.severity, None);
        }
    }
}

#[test]
fn auth_logs() {
    let files = parse_all();
    for (i, (_, r)) in files["system-auth-secure-rhel7.log"].iter().enumerate() {
        assert_eq!(r.hostname.as_deref(), Some("slave22"), "line {}", i + 1);
        assert_ne!(r.ts, r.received_at, "line {}", i + 1);
    }
    let r = rec(&files, "system-auth-secure-rhel7.log", 1);
    assert_eq!(fields(r), (Some("slave22"), Some("sshd"), Some("2738")));
    assert_eq!(r.ts, utc_us(2026, 2, 22, 16, 45, 20));
    assert_eq!(
        r.message,
        "Failed password for root from 202.109.143.106 port 1786 ssh2"
    );

    let r = rec(&files, "system-auth-test.log", 1);
    assert_eq!(fields(r), (Some("localhost"), Some("sshd"), Some("3402")));
    assert_eq!(r.ts, utc_us(2026, 2, 21, 21, 54, 44));
    let r = rec(&files, "system-auth-test.log", 8);
    assert_eq!(fields(r), (Some("precise32"), Some("sudo"), None));
    assert!(r.message.starts_with("tsg : user NOT in sudoers"), "{r:?}");

    let r = rec(&files, "system-auth-timestamp.log", 1);
    assert_eq!(fields(r), (Some("localhost"), Some("sudo"), None));
    assert_eq!(r.ts, utc_us(2019, 6, 14, 10, 40, 20) + 912_134);
    assert!(r
        .message
        .starts_with("pam_unix(sudo-i:session): session opened"));
    let r = rec(&files, "system-auth-timestamp.log", 2);
    assert_eq!(fields(r), (Some("localhost"), Some("pam"), None));
    assert_eq!(r.ts, utc_us(2019, 6, 14, 11, 31, 15) + 412_000);
    assert_eq!(r.message, "user nobody logged out.");
}

#[test]
fn macos_syslog() {
    let files = parse_all();
    let file = "system-syslog-darwin-syslog-sample.log";
    let r = rec(&files, file, 1);
    assert_eq!(
        fields(r),
        (
            Some("a-mac-with-esc-key"),
            Some("GoogleSoftwareUpdateAgent"),
            Some("21412")
        )
    );
    // December, seen from June: the December before.
    assert_eq!(r.ts, utc_us(2025, 12, 13, 11, 35, 28));
    assert!(r
        .message
        .starts_with("2016-12-13 11:35:28.420 GoogleSoftwareUpdateAgent"));
    // A continuation line stays whole.
    let r = rec(&files, file, 2);
    assert!(r
        .message
        .starts_with("\t\tticketStore=<KSPersistentTicketStore"));
    assert_eq!(fields(r), (None, Some("sample"), None));
    let r = files[file].last().map(|(_, r)| r).unwrap();
    assert_eq!(r.message, "--- last message repeated 1 time ---");
    assert_eq!(fields(r), (None, Some("sample"), None));
    assert_eq!(r.ts, utc_us(2026, 4, 4, 3, 39, 57));

    let file = "system-syslog-darwin-syslog.log";
    for (i, (line, r)) in files[file].iter().enumerate() {
        let entry = !line.starts_with([' ', '\t']);
        assert_eq!(entry, r.ts != r.received_at, "{file}:{}", i + 1);
        if entry {
            assert_eq!(
                r.hostname.as_deref(),
                Some("a-mac-with-esc-key"),
                "{file}:{}",
                i + 1
            );
        }
    }
    let r = rec(&files, file, 153);
    assert_eq!(
        fields(r),
        (
            Some("a-mac-with-esc-key"),
            Some("Google Chrome"),
            Some("85294")
        )
    );
    assert!(r.message.starts_with("objc[85294]: __weak variable"));
    let r = rec(&files, file, 155);
    assert_eq!(
        fields(r),
        (
            Some("a-mac-with-esc-key"),
            Some("com.apple.xpc.launchd"),
            Some("1")
        )
    );
    assert!(r
        .message
        .starts_with("(com.apple.quicklook[21498]): Endpoint"));
}

#[test]
fn iso8601_syslog_files() {
    let files = parse_all();
    let r = rec(
        &files,
        "system-syslog-iso8601_timestamp_multiline_syslog.log",
        1,
    );
    assert_eq!(r.ts, utc_us(2020, 12, 25, 21, 59, 59));
    assert_eq!(r.app_name.as_deref(), Some("GoogleSoftwareUpdateAgent"));

    let r = rec(&files, "system-syslog-suse-syslog.log", 1);
    assert_eq!(
        fields(r),
        (Some("linux-sqrz"), Some("systemd"), Some("4179"))
    );
    assert_eq!(r.ts, utc_us(2018, 8, 14, 12, 30, 2) + 203_151);
    assert_eq!(r.message, "Stopped target Basic System.");

    let r = rec(&files, "system-syslog-test-syslog.log", 1);
    assert_eq!(r.ts, utc_us(2022, 4, 21, 14, 30, 0));
    assert_eq!(r.hostname.as_deref(), Some("greedy"));
    assert_eq!(r.message, "multiline");
    let r = rec(&files, "system-syslog-test-syslog.log", 2);
    assert_eq!(r.message, "syslog");
    assert_eq!(r.ts, r.received_at);

    let file = "system-syslog-tz-offset.log";
    let r = rec(&files, file, 1);
    assert_eq!(
        fields(r),
        (Some("rmbkmonitor04"), Some("shutdown"), Some("2649"))
    );
    assert_eq!(r.ts, utc_us(1986, 4, 25, 21, 23, 45) + 101_000);
    let r = rec(&files, file, 2);
    assert_eq!(fields(r), (Some("rmbkmonitor04"), Some("thermald"), None));
    assert_eq!(r.ts, utc_us(1986, 4, 25, 21, 23, 45) + 388_424);
    // No offset: UTC.
    let r = rec(&files, file, 3);
    assert_eq!(r.ts, utc_us(2019, 6, 14, 10, 40, 20) + 912_134);
}

#[test]
fn haproxy_through_syslog() {
    let files = parse_all();
    let r = rec(&files, "haproxy-log-haproxy.log", 1);
    assert_eq!(
        fields(r),
        (Some("localhost"), Some("haproxy"), Some("32450"))
    );
    assert_eq!(r.ts, utc_us(2026, 7, 30, 9, 3, 52));
    assert!(r
        .message
        .starts_with("1.2.3.4:38862 [30/Jul/2018:09:03:52.726]"));
    for (i, (_, r)) in files["haproxy-log-haproxy.log"].iter().enumerate() {
        assert_eq!(r.app_name.as_deref(), Some("haproxy"), "line {}", i + 1);
    }
    let r = rec(&files, "haproxy-log-tcplog.log", 1);
    assert_eq!(
        fields(r),
        (Some("127.0.0.1"), Some("haproxy"), Some("25457"))
    );
}
