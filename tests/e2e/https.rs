//! HTTPS with `[http] tls_cert` and `tls_key`: a certificate made by the
//! `openssl` CLI, the real server serving the API and dashboard over TLS only,
//! a client that trusts the certificate gets answers and `Secure` cookies, a
//! plain-HTTP client and a client without the CA get nothing.

use anyhow::{ensure, Context, Result};
use metrolog_e2e::{binary, run_ok, Proc};
use std::process::Command;
use std::time::Duration;

#[test]
fn the_dashboard_and_api_are_served_over_https_with_secure_cookies() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // A CA and a leaf for 127.0.0.1 (webpki refuses a CA as a leaf, so a
    // lone self-signed certificate will not do).
    let openssl = |args: &[&str]| {
        run_ok(
            Command::new("openssl").current_dir(dir.path()).args(args),
            "apt-get install openssl",
        )
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "1",
                "-subj",
                "/CN=metrolog-e2e-ca",
            ],
        ]
        .concat(),
    )?;
    openssl(
        &[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "key.pem",
                "-out",
                "leaf.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat(),
    )?;
    std::fs::write(
        dir.path().join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "cert.pem",
        "-days",
        "1",
        "-extfile",
        "leaf.ext",
    ])?;
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\ntls_cert = {:?}\ntls_key = {:?}\n",
            dir.path().join("cert.pem"),
            dir.path().join("key.pem")
        ),
    )?;
    // A key that does not exist is named by check-config with its key.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[http]\ntls_cert = \"/nonexistent/cert.pem\"\ntls_key = \"/nonexistent/key.pem\"\n",
    )?;
    let out = Command::new(binary("metrolog-server"))
        .arg("check-config")
        .arg(&bad)
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && err.contains("http.tls_cert: cannot read"),
        "{err}"
    );

    let mut cmd = Command::new(binary("metrolog-server"));
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--syslog-udp",
        "off",
        "--syslog-tcp",
        "off",
    ])
    .arg("--config")
    .arg(&config)
    .arg("--data-dir")
    .arg(dir.path().join("data"))
    .env("METROLOG_ADMIN_PASSWORD", "e2e-admin-password");
    let mut server = Proc::spawn("metrolog-server", cmd)?;
    let line = server.wait_for_line("Dashboard: https://", Duration::from_secs(30))?;
    let url = line
        .split("Dashboard: ")
        .nth(1)
        .context("no URL")?
        .trim()
        .trim_end_matches('/')
        .to_string();

    let ca = reqwest::Certificate::from_pem(&std::fs::read(dir.path().join("ca.pem"))?)?;
    let client = reqwest::blocking::Client::builder()
        .add_root_certificate(ca)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()?;
    let health = client.get(format!("{url}/healthz")).send()?;
    ensure!(health.status() == 200, "{}", health.status());

    // The login form's cookie, and the session's, are Secure.
    let form = client.get(format!("{url}/login")).send()?;
    let set = form.headers()["set-cookie"].to_str()?.to_string();
    ensure!(set.contains("Secure") && set.contains("HttpOnly"), "{set}");
    let csrf = set
        .split(';')
        .next()
        .unwrap_or("")
        .trim_start_matches("ml_login_csrf=")
        .to_string();
    let login = client
        .post(format!("{url}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", format!("ml_login_csrf={csrf}"))
        .body(format!(
            "username=admin&password=e2e-admin-password&csrf={csrf}"
        ))
        .send()?;
    ensure!(login.status() == 303, "login: {}", login.status());
    let session = login
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("ml_session="))
        .unwrap_or("")
        .to_string();
    ensure!(
        session.contains("Secure") && session.contains("SameSite=Strict"),
        "{session}"
    );

    // Plain HTTP on the same port gets no answer; neither does a client that
    // does not trust the certificate.
    let plain = url.replacen("https://", "http://", 1);
    let r = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?
        .get(format!("{plain}/healthz"))
        .send();
    ensure!(
        r.is_err() || r.is_ok_and(|r| r.status() != 200),
        "plain HTTP was answered"
    );
    let untrusting = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?
        .get(format!("{url}/healthz"))
        .send();
    ensure!(untrusting.is_err(), "a client without the CA was answered");
    // The listener still serves after those failed handshakes.
    ensure!(client.get(format!("{url}/readyz")).send()?.status() == 200);
    server.terminate();
    server.wait_exit(Duration::from_secs(20))?;
    Ok(())
}
