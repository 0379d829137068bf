//! Central logs end to end: real senders (util-linux `logger`, `rsyslogd`
//! forwarding, raw sockets) to the real server's syslog receivers, read back
//! through `/api/v1/logs` and its live tail.

use anyhow::{ensure, Context, Result};
use metrolog_e2e::{
    eventually, free_udp_port, logger, metric, records, spawn_rsyslogd, unique, wait_for_logs, Api,
    Proc, Server, SyslogAddrs,
};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn start() -> Result<(Server, SyslogAddrs, Api)> {
    let (server, addrs) = Server::start_with_syslog(&["--no-local-agent"])?;
    let api = Api::new(&server.url, &server.token("viewer")?);
    Ok((server, addrs, api))
}

fn wait_for(api: &Api, query: &str, n: usize) -> Result<Vec<Value>> {
    wait_for_logs(api, query, n, WAIT)
}

#[test]
fn logger_over_udp_and_tcp_in_rfc3164_and_rfc5424() -> Result<()> {
    let (_server, addrs, api) = start()?;
    let udp = addrs.udp.port().to_string();
    let tcp = addrs.tcp.port().to_string();
    let cases: [(&str, &[&str], &str); 5] = [
        ("udp3164", &["-d", "--rfc3164", "-P", &udp], "syslog-udp"),
        ("udp5424", &["-d", "--rfc5424", "-P", &udp], "syslog-udp"),
        ("tcp3164", &["-T", "--rfc3164", "-P", &tcp], "syslog-tcp"),
        ("tcp5424", &["-T", "--rfc5424", "-P", &tcp], "syslog-tcp"),
        (
            "tcpoctet",
            &["-T", "--rfc5424", "--octet-count", "-P", &tcp],
            "syslog-tcp",
        ),
    ];
    let run = unique("run");
    for (name, args, _) in &cases {
        let mut all = vec![
            "-n",
            "127.0.0.1",
            "-t",
            "e2eapp",
            "--id=4242",
            "-p",
            "local3.err",
        ];
        all.extend_from_slice(args);
        let msg = format!("{run} {name} disk <script>alert(1)</script> full");
        all.push(&msg);
        logger(&all)?;
    }
    let recs = wait_for(&api, &format!("q={run}"), cases.len())?;
    for (name, _, source) in &cases {
        let r = recs
            .iter()
            .find(|r| r["message"].as_str().is_some_and(|m| m.contains(name)))
            .with_context(|| format!("{name} not stored: {recs:?}"))?;
        assert_eq!(
            r["message"],
            format!("{run} {name} disk <script>alert(1)</script> full"),
            "{name}: the text is kept as sent, markup included"
        );
        assert_eq!(r["app_name"], "e2eapp", "{name}: {r}");
        assert_eq!(r["severity"], "err", "{name}: {r}");
        assert_eq!(r["facility"], "local3", "{name}: {r}");
        assert_eq!(r["source"], *source, "{name}: {r}");
        assert_eq!(r["procid"], "4242", "{name}: {r}");
        assert!(r["host"].as_str().is_some_and(|h| !h.is_empty()), "{r}");
        if name.contains("5424") {
            assert!(
                r["structured_data"]
                    .as_str()
                    .is_some_and(|sd| sd.contains("timeQuality")),
                "{name}: {r}"
            );
        }
    }
    // The sender is listed as a syslog-only host.
    let host = recs[0]["host"].as_str().unwrap_or_default().to_string();
    let (_, hosts) = api.get("/api/v1/hosts")?;
    let h = hosts
        .as_array()
        .and_then(|hs| hs.iter().find(|h| h["hostname"] == host.as_str()))
        .with_context(|| format!("no host {host} in {hosts}"))?;
    assert_eq!(h["source"], "syslog");
    assert_eq!(h["passive"], true);

    // Search by word, by host and by severity.
    let sev = unique("sev");
    for (pri, word) in [
        ("user.info", "calm"),
        ("user.warning", "odd"),
        ("user.crit", "broken"),
    ] {
        logger(&[
            "-n",
            "127.0.0.1",
            "-P",
            &udp,
            "-d",
            "-t",
            "sevapp",
            "-p",
            pri,
            &format!("{sev} {word}"),
        ])?;
    }
    wait_for(&api, &format!("q={sev}"), 3)?;
    let warn = records(&api, &format!("q={sev}&severity=warning"))?;
    let words: Vec<&str> = warn.iter().filter_map(|r| r["message"].as_str()).collect();
    assert_eq!(
        words,
        [format!("{sev} broken"), format!("{sev} odd")],
        "newest first"
    );
    assert_eq!(records(&api, &format!("q={sev}+broken"))?.len(), 1);
    assert_eq!(records(&api, &format!("q={sev}&host={host}"))?.len(), 3);
    assert_eq!(records(&api, &format!("q={sev}&host=elsewhere"))?.len(), 0);
    assert_eq!(
        records(&api, &format!("q={sev}&app=sevapp&severity=crit"))?.len(),
        1
    );
    Ok(())
}

/// A private `rsyslogd` forwarding what it receives on two UDP ports to our
/// TCP receiver: with its defaults, and with octet-counted RFC 5424 framing.
fn start_rsyslog(dir: &Path, target: SocketAddr) -> Result<(Proc, u16, u16)> {
    let plain = free_udp_port()?;
    let octet = free_udp_port()?;
    let conf = format!(
        r#"global(workDirectory="{dir}")
module(load="imudp")
input(type="imudp" address="127.0.0.1" port="{plain}" ruleset="plain")
input(type="imudp" address="127.0.0.1" port="{octet}" ruleset="octet")
ruleset(name="plain") {{
  action(type="omfwd" target="127.0.0.1" port="{port}" protocol="tcp")
}}
ruleset(name="octet") {{
  action(type="omfwd" target="127.0.0.1" port="{port}" protocol="tcp"
         TCP_Framing="octet-counted" template="RSYSLOG_SyslogProtocol23Format")
}}
"#,
        dir = dir.display(),
        port = target.port(),
    );
    let proc = spawn_rsyslogd(dir, &conf, "rsyslog")?;
    Ok((proc, plain, octet))
}

#[test]
fn rsyslog_forwards_to_the_tcp_receiver_with_its_defaults_and_octet_counting() -> Result<()> {
    let (_server, addrs, api) = start()?;
    let dir = tempfile::tempdir()?;
    let (_rsyslog, plain, octet) = start_rsyslog(dir.path(), addrs.tcp)?;
    // rsyslogd says nothing when it is ready: probe each input until a line
    // comes through.
    for port in [plain, octet] {
        let probe = unique("probe");
        eventually(WAIT, || {
            logger(&[
                "-n",
                "127.0.0.1",
                "-P",
                &port.to_string(),
                "-d",
                "-t",
                "probe",
                &probe,
            ])?;
            Ok((!records(&api, &format!("q={probe}"))?.is_empty()).then_some(()))
        })?;
    }
    let run = unique("fwd");
    for (port, kind) in [(plain, "plain"), (octet, "octet")] {
        logger(&[
            "-n",
            "127.0.0.1",
            "-P",
            &port.to_string(),
            "-d",
            "--rfc3164",
            "-t",
            "fwdapp",
            "-p",
            "mail.warning",
            &format!("{run} {kind} multi word message"),
        ])?;
    }
    let recs = wait_for(&api, &format!("q={run}"), 2)?;
    for kind in ["plain", "octet"] {
        let r = recs
            .iter()
            .find(|r| r["message"] == format!("{run} {kind} multi word message"))
            .with_context(|| format!("{kind}: {recs:?}"))?;
        assert_eq!(r["app_name"], "fwdapp", "{kind}: {r}");
        assert_eq!(r["severity"], "warning", "{kind}: {r}");
        assert_eq!(r["facility"], "mail", "{kind}: {r}");
        assert_eq!(r["source"], "syslog-tcp", "{kind}: {r}");
    }
    Ok(())
}

#[test]
fn every_sample_log_file_is_stored_with_its_fields() -> Result<()> {
    let (_server, addrs, api) = start()?;
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/logs");
    let mut files: Vec<_> = std::fs::read_dir(&data)
        .with_context(|| format!("reading {}", data.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    files.sort();
    ensure!(
        files.len() >= 17,
        "sample files missing in {}",
        data.display()
    );
    let mut expected = 0;
    for f in &files {
        let bytes = std::fs::read(f)?;
        // One connection per file, each line an octet-counted frame (RFC 6587),
        // as rsyslog forwards a file it reads with imfile. (Newline framing
        // would not do: a MySQL line starting `161209 14:18:50` reads as an
        // octet count, as RFC 6587 has it.)
        let mut framed = Vec::new();
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            expected += 1;
            framed.extend_from_slice(format!("{} ", line.len()).as_bytes());
            framed.extend_from_slice(line);
        }
        let mut s = TcpStream::connect(addrs.tcp)?;
        s.write_all(&framed)?;
    }
    let count = |api: &Api| -> Result<usize> {
        let mut n = 0;
        let mut before = String::new();
        loop {
            let (status, body) = api.get(&format!("/api/v1/logs?limit=1000{before}"))?;
            ensure!(status == 200, "{body}");
            n += body["records"].as_array().map_or(0, Vec::len);
            match body["next"].as_str() {
                Some(next) => before = format!("&before={next}"),
                None => return Ok(n),
            }
        }
    };
    eventually(WAIT, || {
        let n = count(&api)?;
        ensure!(
            n == expected,
            "{n} records stored for {expected} lines; {} received over TCP",
            metric(&api, "metrolog_syslog_received_total{transport=\"tcp\"} ")?
        );
        Ok(Some(()))
    })?;

    let one = |q: &str| -> Result<Value> {
        let recs = records(&api, q)?;
        ensure!(recs.len() == 1, "{q}: {recs:?}");
        Ok(recs[0].clone())
    };
    // RFC 3164 file line from RHEL: year-less date, host, tag with pid.
    // (The same text comes back at other times: pick the line by its time.)
    let recs = records(
        &api,
        "q=%22Failed+password+for+root+from+202.109.143.106+port+1786%22",
    )?;
    let r = recs
        .iter()
        .find(|r| {
            r["ts"]
                .as_str()
                .is_some_and(|t| t.contains("-02-22T16:45:20"))
        })
        .with_context(|| format!("{recs:?}"))?;
    assert_eq!(r["host"], "slave22");
    assert_eq!(r["app_name"], "sshd");
    assert_eq!(r["procid"], "2738");
    // rsyslog high-precision timestamps keep their offset and microseconds.
    let r = one("q=%22Stopped+target+Basic+System%22")?;
    assert_eq!(r["ts"], "2018-08-14T12:30:02.203151Z");
    assert_eq!(r["host"], "linux-sqrz");
    assert_eq!(r["app_name"], "systemd");
    let r = one("q=%22shutting+down+for+system+halt%22")?;
    assert_eq!(r["ts"], "1986-04-25T21:23:45.101000Z", "+0400 offset");
    assert_eq!(r["host"], "rmbkmonitor04");
    // HAProxy through syslog: the hostname is an IP address.
    let r = one("q=NOSRV")?;
    assert_eq!(r["host"], "127.0.0.1");
    assert_eq!(r["app_name"], "haproxy");
    // Lines that are not syslog are kept whole.
    let r = one("q=%2225/Oct/2016:14:49:34%22")?;
    assert!(
        r["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("77.179.66.156 - - [25/Oct/2016:14:49:34 +0200]"),
        "{r}"
    );
    assert_eq!(r["unparsed"], true);
    let mysql = records(&api, "q=InnoDB&limit=1000")?;
    assert!(mysql.len() > 20, "{}", mysql.len());
    Ok(())
}

#[test]
fn bad_input_and_idle_connections_do_not_stop_the_receivers() -> Result<()> {
    let (server, addrs, api) = start()?;
    // 1 000 connections that send nothing.
    let idle: Vec<TcpStream> = (0..1000)
        .map(|_| TcpStream::connect(addrs.tcp))
        .collect::<std::io::Result<_>>()?;
    // Random bytes, over both transports.
    let mut x: u64 = 0x2545F4914F6CDD1D;
    let mut noise = vec![0u8; 200_000];
    for b in noise.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let mut s = TcpStream::connect(addrs.tcp)?;
    s.write_all(&noise)?;
    drop(s);
    let udp = UdpSocket::bind("127.0.0.1:0")?;
    for chunk in noise.chunks(1400).take(50) {
        udp.send_to(chunk, addrs.udp)?;
    }
    // A 1 MiB line, NUL bytes, invalid UTF-8, then a good line, on one connection.
    let run = unique("bad");
    let mut s = TcpStream::connect(addrs.tcp)?;
    let mut big = format!("<13>Feb 22 16:45:20 bighost app: {run} big ").into_bytes();
    big.extend(std::iter::repeat_n(b'x', 1 << 20));
    big.push(b'\n');
    s.write_all(&big)?;
    let mut bad = format!("<13>Feb 22 16:45:20 utfhost app: {run} latin1 caf").into_bytes();
    bad.extend_from_slice(b"\xe9 \xff\xfe\n");
    s.write_all(&bad)?;
    s.write_all(format!("<13>Feb 22 16:45:20 goodhost app: {run} good\n").as_bytes())?;
    drop(s);
    // Over TCP a NUL ends a line (RFC 6587 tolerance); in a datagram it is kept.
    udp.send_to(
        format!("<13>Feb 22 16:45:20 nulhost app: {run} nul \0 inside").as_bytes(),
        addrs.udp,
    )?;
    let recs = wait_for(&api, &format!("q={run}"), 4)?;
    let find = |word: &str| {
        recs.iter()
            .find(|r| r["message"].as_str().is_some_and(|m| m.contains(word)))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let big = find("big");
    assert_eq!(big["truncated"], true);
    assert!(big["message"].as_str().unwrap_or("").len() <= 64 * 1024);
    assert_eq!(find("nul")["message"], format!("{run} nul \u{2400} inside"));
    let utf = find("latin1");
    assert_eq!(utf["invalid_utf8"], true);
    assert!(utf["message"].as_str().unwrap_or("").contains('\u{FFFD}'));
    assert!(metric(&api, "metrolog_syslog_marked_total{mark=\"truncated\"} ")? >= 1);
    assert!(metric(&api, "metrolog_syslog_marked_total{mark=\"invalid_utf8\"} ")? >= 1);
    assert!(metric(&api, "metrolog_syslog_marked_total{mark=\"unparsed\"} ")? >= 1);
    // The idle connections made room: others were evicted, not the newcomers.
    assert!(
        metric(
            &api,
            "metrolog_syslog_connections_total{event=\"evicted\"} "
        )? >= 400
    );
    drop(idle);

    // Live tail: one client stops reading, another keeps up and sees the end.
    let client = reqwest::blocking::Client::builder().timeout(None).build()?;
    let open = |q: &str| {
        client
            .get(format!("{}/api/v1/logs/stream?{q}", server.url))
            .bearer_auth(&api.token)
            .send()
    };
    let stalled = open("")?;
    ensure!(stalled.status() == 200);
    let tail = unique("tail");
    let reader = open(&format!("q={tail}end"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            if line.starts_with("data:") && line.contains("\"message\"") {
                let _ = tx.send(line);
            }
        }
    });
    let filler = "y".repeat(200);
    let mut s = TcpStream::connect(addrs.tcp)?;
    let mut buf = Vec::new();
    for i in 0..80_000 {
        buf.extend_from_slice(
            format!("<13>Feb 22 16:45:20 floodhost app: {tail} {i} {filler}\n").as_bytes(),
        );
        if buf.len() > 1 << 20 {
            s.write_all(&buf)?;
            buf.clear();
        }
    }
    buf.extend_from_slice(format!("<13>Feb 22 16:45:20 floodhost app: {tail}end\n").as_bytes());
    s.write_all(&buf)?;
    drop(s);
    let got = rx
        .recv_timeout(Duration::from_secs(60))
        .context("the reading client got nothing")?;
    assert!(got.contains(&format!("{tail}end")), "{got}");
    // The stalled client reads again: after what its socket held, it is told
    // how many records it missed, and the server counted them.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stalled).lines().map_while(Result::ok);
        while let Some(line) = lines.next() {
            if line == "event: lagged" {
                let _ = tx.send(lines.next().unwrap_or_default());
                return;
            }
        }
    });
    let lagged = rx
        .recv_timeout(Duration::from_secs(60))
        .context("the stalled client was never told it lagged")?;
    assert!(lagged.starts_with("data: {\"missed\":"), "{lagged}");
    assert!(metric(&api, "metrolog_log_tail_lagged_records_total ")? > 0);
    // Everyone else is still served.
    let (status, _) = api.get("/api/v1/logs?limit=1")?;
    assert_eq!(status, 200);
    Ok(())
}
