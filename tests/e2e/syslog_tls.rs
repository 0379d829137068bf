//! Syslog over TLS (RFC 5425) end to end: a throwaway CA made with the
//! `openssl` CLI, the real server's TLS receiver on a random port, and real
//! senders: `rsyslogd` with its gtls netstream driver (Debian package
//! `rsyslog-gnutls`), in octet-counted and newline framing, and `openssl
//! s_client`. Records are read back through `/api/v1/logs`.

use anyhow::{ensure, Context, Result};
use metrolog_e2e::{
    binary, eventually, free_udp_port, metric, records, run_ok, spawn_rsyslogd, unique,
    wait_for_logs, Api, Proc, Server,
};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// A CA, a server certificate for `localhost`/127.0.0.1 and a client
/// certificate, all signed by the CA (EC P-256: quick to make).
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    run_ok(
        Command::new("openssl").current_dir(dir).args(args),
        "apt-get install openssl",
    )?;
    Ok(())
}

fn make_pki(dir: &Path) -> Result<Pki> {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=Metrolog e2e CA"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.crt"]);
    openssl(dir, &ca)?;
    for (name, cn, usage, san) in [
        (
            "server",
            "localhost",
            "serverAuth",
            ",subjectAltName=DNS:localhost,IP:127.0.0.1",
        ),
        ("client", "e2e-client", "clientAuth", ""),
    ] {
        let (key, csr, crt, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
            format!("{name}.ext"),
        );
        let subj = format!("/CN={cn}");
        let mut req = vec!["req", "-new", "-subj", &subj];
        req.extend(ec);
        req.extend(["-keyout", &key, "-out", &csr]);
        openssl(dir, &req)?;
        std::fs::write(
            dir.join(&ext),
            format!(
                "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                 extendedKeyUsage={usage}\n{}\n",
                san.trim_start_matches(',')
            ),
        )?;
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                &crt,
            ],
        )?;
    }
    Ok(Pki {
        ca: dir.join("ca.crt"),
        server_cert: dir.join("server.crt"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.crt"),
        client_key: dir.join("client.key"),
    })
}

/// The server with its TLS receiver on a random loopback port, started with
/// `args` (certificate flags or a config file), and its TLS address.
fn start(args: &[&str]) -> Result<(Server, SocketAddr, Api)> {
    let mut all = vec!["--no-local-agent", "--syslog-tls", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let mut server = Server::start(&all)?;
    let addr = server.printed_addr("Syslog TLS")?;
    let api = Api::new(&server.url, &server.token("viewer")?);
    Ok((server, addr, api))
}

fn start_with_certs(pki: &Pki) -> Result<(Server, SocketAddr, Api)> {
    let (cert, key) = (path_str(&pki.server_cert)?, path_str(&pki.server_key)?);
    start(&["--syslog-tls-cert", cert, "--syslog-tls-key", key])
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str().context("non-UTF-8 temp path")
}

fn wait_for(api: &Api, query: &str, n: usize) -> Result<Vec<Value>> {
    wait_for_logs(api, query, n, WAIT)
}

/// Sends `text` with `openssl s_client`, verifying the server against the CA
/// (and presenting `client`, a certificate and key, if given). Returns
/// whether s_client succeeded, and its stderr.
fn s_client(
    addr: SocketAddr,
    ca: &Path,
    client: Option<(&Path, &Path)>,
    text: &str,
) -> Result<(bool, String)> {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-quiet", "-no_ign_eof", "-verify_return_error"])
        .args(["-verify_hostname", "localhost", "-connect"])
        .arg(addr.to_string())
        .arg("-CAfile")
        .arg(ca);
    if let Some((cert, key)) = client {
        cmd.arg("-cert").arg(cert).arg("-key").arg(key);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running openssl s_client")?;
    child
        .stdin
        .take()
        .context("s_client stdin")?
        .write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// A private `rsyslogd` forwarding what it receives on two UDP ports to the
/// TLS receiver through gtls, checking the server's certificate against the
/// CA and its name: RFC 5425 (octet counting, RFC 5424 format), and rsyslog's
/// default newline framing and format.
fn start_rsyslog(dir: &Path, ca: &Path, target: SocketAddr) -> Result<(Proc, u16, u16)> {
    let octet = free_udp_port()?;
    let plain = free_udp_port()?;
    let conf = format!(
        r#"global(workDirectory="{dir}"
       DefaultNetstreamDriver="gtls"
       DefaultNetstreamDriverCAFile="{ca}")
module(load="imudp")
input(type="imudp" address="127.0.0.1" port="{octet}" ruleset="octet")
input(type="imudp" address="127.0.0.1" port="{plain}" ruleset="plain")
ruleset(name="octet") {{
  action(type="omfwd" target="127.0.0.1" port="{port}" protocol="tcp"
         StreamDriver="gtls" StreamDriverMode="1"
         StreamDriverAuthMode="x509/name" StreamDriverPermittedPeers="localhost"
         TCP_Framing="octet-counted" template="RSYSLOG_SyslogProtocol23Format")
}}
ruleset(name="plain") {{
  action(type="omfwd" target="127.0.0.1" port="{port}" protocol="tcp"
         StreamDriver="gtls" StreamDriverMode="1"
         StreamDriverAuthMode="x509/name" StreamDriverPermittedPeers="localhost")
}}
"#,
        dir = dir.display(),
        ca = ca.display(),
        port = target.port(),
    );
    let proc = spawn_rsyslogd(dir, &conf, "rsyslog rsyslog-gnutls")?;
    Ok((proc, octet, plain))
}

fn logger(port: u16, tag: &str, prio: &str, msg: &str) -> Result<()> {
    let port = port.to_string();
    metrolog_e2e::logger(&[
        "-n",
        "127.0.0.1",
        "-d",
        "--rfc3164",
        "-P",
        &port,
        "-t",
        tag,
        "-p",
        prio,
        msg,
    ])
}

#[test]
fn rsyslog_gtls_and_openssl_deliver_over_tls_in_both_framings() -> Result<()> {
    let certs = tempfile::tempdir()?;
    let pki = make_pki(certs.path())?;
    let (_server, addr, api) = start_with_certs(&pki)?;
    let dir = tempfile::tempdir()?;
    let (mut rsyslog, octet, plain) = start_rsyslog(dir.path(), &pki.ca, addr)?;
    // rsyslogd says nothing when it is ready: probe each input until a line
    // comes through (which also proves its TLS session verified us).
    for port in [octet, plain] {
        let probe = unique("probe");
        eventually(WAIT, || {
            logger(port, "probe", "user.notice", &probe)?;
            Ok((!records(&api, &format!("q={probe}"))?.is_empty()).then_some(()))
        })
        .with_context(|| format!("rsyslogd never forwarded over TLS:\n{}", rsyslog.log()))?;
    }
    let run = unique("tls");
    for (port, kind) in [(octet, "octet"), (plain, "plain")] {
        logger(
            port,
            "tlsapp",
            "auth.crit",
            &format!("{run} {kind} rsyslog over TLS"),
        )?;
    }
    // Newline framing from another TLS stack; RFC 5424 with structured data.
    let line = format!(
        "<134>1 2024-05-01T12:34:56.789012+02:00 sclienthost sclientapp 777 ID7 \
         [ex@32473 k=\"v\"] {run} s_client newline framed\n"
    );
    let (ok, err) = s_client(addr, &pki.ca, None, &line)?;
    ensure!(ok, "s_client failed: {err}");

    let recs = wait_for(&api, &format!("q={run}"), 3)?;
    for kind in ["octet", "plain"] {
        let r = recs
            .iter()
            .find(|r| r["message"] == format!("{run} {kind} rsyslog over TLS"))
            .with_context(|| format!("{kind}: {recs:?}"))?;
        assert_eq!(r["app_name"], "tlsapp", "{kind}: {r}");
        assert_eq!(r["severity"], "crit", "{kind}: {r}");
        assert_eq!(r["facility"], "auth", "{kind}: {r}");
        assert_eq!(r["source"], "syslog-tcp", "{kind}: {r}");
    }
    let r = recs
        .iter()
        .find(|r| r["app_name"] == "sclientapp")
        .with_context(|| format!("s_client line: {recs:?}"))?;
    assert_eq!(
        r["message"],
        format!("{run} s_client newline framed"),
        "{r}"
    );
    assert_eq!(r["host"], "sclienthost", "{r}");
    assert_eq!(r["severity"], "info", "{r}");
    assert_eq!(r["facility"], "local0", "{r}");
    assert_eq!(r["procid"], "777", "{r}");
    assert_eq!(r["msgid"], "ID7", "{r}");
    assert_eq!(r["structured_data"], "[ex@32473 k=\"v\"]", "{r}");
    assert!(metric(&api, "metrolog_syslog_received_total{transport=\"tls\"} ")? >= 5);
    assert_eq!(
        metric(&api, "metrolog_syslog_received_total{transport=\"tcp\"} ")?,
        0
    );
    Ok(())
}

#[test]
fn garbage_instead_of_a_handshake_is_counted_and_others_are_still_served() -> Result<()> {
    let certs = tempfile::tempdir()?;
    let pki = make_pki(certs.path())?;
    let (mut server, addr, api) = start_with_certs(&pki)?;
    let run = unique("junk");
    // Plain syslog sent to the TLS port: the server refuses it and closes.
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(WAIT))?;
    s.write_all(format!("<13>Feb 22 16:45:20 h app: {run} cleartext\n").as_bytes())?;
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    eventually(WAIT, || {
        let n = metric(
            &api,
            "metrolog_syslog_tls_handshake_failures_total{reason=\"error\"} ",
        )?;
        Ok((n >= 1).then_some(()))
    })?;
    // A client that does not trust the server's CA gives up; the server
    // counts that too.
    let other = tempfile::tempdir()?;
    let stranger = make_pki(other.path())?;
    let (ok, _) = s_client(addr, &stranger.ca, None, "<13>never sent\n")?;
    ensure!(!ok, "s_client trusted a certificate from another CA");
    eventually(WAIT, || {
        let n = metric(
            &api,
            "metrolog_syslog_tls_handshake_failures_total{reason=\"error\"} ",
        )?;
        Ok((n >= 2).then_some(()))
    })?;
    // The receiver still serves a proper client.
    let (ok, err) = s_client(addr, &pki.ca, None, &format!("<13>{run} after\n"))?;
    ensure!(ok, "s_client failed: {err}");
    let recs = wait_for(&api, &format!("q={run}"), 1)?;
    assert_eq!(recs[0]["message"], format!("{run} after"));
    // Logged with the peer and the reason, never key material.
    let log = server.proc.log();
    assert!(log.contains("syslog TLS handshake failed"), "{log}");
    assert!(!log.contains("PRIVATE KEY"), "{log}");
    Ok(())
}

#[test]
fn with_a_client_ca_only_clients_with_a_certificate_it_signed_are_read() -> Result<()> {
    let certs = tempfile::tempdir()?;
    let pki = make_pki(certs.path())?;
    let config = certs.path().join("server.toml");
    std::fs::write(
        &config,
        format!(
            "[syslog]\ntls_cert = {:?}\ntls_key = {:?}\ntls_client_ca = {:?}\n",
            pki.server_cert, pki.server_key, pki.ca
        ),
    )?;
    let (_server, addr, api) = start(&["--config", path_str(&config)?])?;
    let run = unique("mtls");
    // TLS 1.3 lets the client finish before the server checks it: s_client
    // may "succeed", but the server drops the line.
    s_client(addr, &pki.ca, None, &format!("<13>{run} anonymous\n"))?;
    let client = Some((pki.client_cert.as_path(), pki.client_key.as_path()));
    let (ok, err) = s_client(addr, &pki.ca, client, &format!("<13>{run} known\n"))?;
    ensure!(ok, "s_client with a client certificate failed: {err}");
    let recs = wait_for(&api, &format!("q={run}"), 1)?;
    assert_eq!(recs[0]["message"], format!("{run} known"));
    eventually(WAIT, || {
        let n = metric(
            &api,
            "metrolog_syslog_tls_handshake_failures_total{reason=\"error\"} ",
        )?;
        Ok((n >= 1).then_some(()))
    })?;
    Ok(())
}

#[test]
fn check_config_names_the_key_of_each_bad_tls_setting() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = make_pki(dir.path())?;
    let check = |toml: String| -> Result<String> {
        let file = dir.path().join("check.toml");
        std::fs::write(&file, toml)?;
        let out = Command::new(binary("metrolog-server"))
            .arg("check-config")
            .arg(&file)
            .output()?;
        ensure!(
            !out.status.success(),
            "check-config accepted:\n{}",
            std::fs::read_to_string(&file)?
        );
        Ok(String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let err = check(format!(
        "[syslog]\ntls = \"127.0.0.1:0\"\ntls_cert = {:?}\ntls_key = \"/nonexistent/syslog.key\"\n",
        pki.server_cert
    ))?;
    assert!(
        err.contains("syslog.tls_key: cannot read /nonexistent/syslog.key"),
        "{err}"
    );
    let err = check(format!("[syslog]\ntls_cert = {:?}\n", pki.server_cert))?;
    assert!(err.contains("syslog.tls_key: missing"), "{err}");
    // The client's key does not go with the server's certificate.
    let err = check(format!(
        "[syslog]\ntls_cert = {:?}\ntls_key = {:?}\n",
        pki.server_cert, pki.client_key
    ))?;
    assert!(
        err.contains("syslog.tls_key:") && err.contains("does not go with"),
        "{err}"
    );
    let key = std::fs::read_to_string(&pki.client_key)?;
    let secret = key.lines().nth(1).unwrap_or("x");
    assert!(!err.contains(secret), "{err}");
    let err = check(format!(
        "[syslog]\ntls_cert = {:?}\ntls_key = {:?}\n",
        pki.server_key, pki.server_key
    ))?;
    assert!(
        err.contains("syslog.tls_cert:") && err.contains("no PEM certificate"),
        "{err}"
    );
    Ok(())
}
