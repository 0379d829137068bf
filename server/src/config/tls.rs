//! TLS certificates and keys of the server's listeners (`[http]` and
//! `[syslog]` `tls_cert`/`tls_key`), read once when the configuration is
//! loaded so that `check-config` reports a bad file with its key. The
//! listeners (`crate::syslog`, `crate::http::tls`) do the handshakes.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

/// A certificate chain and its key, ready to accept connections.
///
/// Its `Debug` shows nothing of the key: configurations get printed.
#[derive(Clone)]
pub struct TlsSettings {
    config: Arc<rustls::ServerConfig>,
    client_auth: bool,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("client_auth", &self.client_auth)
            .finish_non_exhaustive()
    }
}

/// Where the PEM files are, as the configuration names them.
#[derive(Debug, Clone, Copy)]
pub struct TlsFiles<'a> {
    /// The server's certificate chain, leaf first.
    pub cert: &'a Path,
    /// Its private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    pub key: &'a Path,
    /// When given, clients must present a certificate signed by one of these CAs.
    pub client_ca: Option<&'a Path>,
    /// The configuration section the keys are in (`syslog`, `http`), to
    /// name them in errors.
    pub section: &'a str,
}

impl TlsSettings {
    /// Reads and checks the files. Each error starts with the key it concerns
    /// (`syslog.tls_cert: …`) and never quotes the key's contents.
    pub fn load(files: TlsFiles<'_>) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        let section = files.section;
        let chain =
            read_pem(files.cert, &format!("{section}.tls_cert"), &mut errors).and_then(|pem| {
                match CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>() {
                    Ok(chain) if !chain.is_empty() => Some(chain),
                    Ok(_) => {
                        errors.push(format!(
                            "{section}.tls_cert: {} holds no PEM certificate \
                         (\"-----BEGIN CERTIFICATE-----\")",
                            files.cert.display()
                        ));
                        None
                    }
                    Err(e) => {
                        errors.push(format!(
                            "{section}.tls_cert: {} is not a valid PEM certificate chain: {e}",
                            files.cert.display()
                        ));
                        None
                    }
                }
            });
        let key = read_pem(files.key, &format!("{section}.tls_key"), &mut errors).and_then(|pem| {
            match PrivateKeyDer::from_pem_slice(&pem) {
                Ok(key) => Some(key),
                // The PEM error names sections and markers, not key material.
                Err(e) => {
                    errors.push(format!(
                        "{section}.tls_key: {} holds no usable PEM private key \
                         (PKCS#8, RSA or SEC1): {e}",
                        files.key.display()
                    ));
                    None
                }
            }
        });
        let verifier = match files.client_ca {
            None => None,
            Some(path) => client_verifier(path, &mut errors),
        };
        let (Some(chain), Some(key)) = (chain, key) else {
            return Err(errors);
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = match rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
        {
            Ok(b) => b,
            Err(e) => return Err(vec![format!("{section}.tls: {e}")]),
        };
        let client_auth = verifier.is_some();
        let builder = match verifier {
            Some(v) => builder.with_client_cert_verifier(v),
            None => builder.with_no_client_auth(),
        };
        let config = builder.with_single_cert(chain, key).map_err(|e| {
            vec![format!(
                "{section}.tls_key: {} does not go with the certificate in {} \
                 (or is not a key rustls can use): {e}",
                files.key.display(),
                files.cert.display()
            )]
        })?;
        Ok(Self {
            config: Arc::new(config),
            client_auth,
        })
    }

    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.clone())
    }
}

fn read_pem(path: &Path, key: &str, errors: &mut Vec<String>) -> Option<Vec<u8>> {
    match std::fs::read(path) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            errors.push(format!("{key}: cannot read {}: {e}", path.display()));
            None
        }
    }
}

fn client_verifier(
    path: &Path,
    errors: &mut Vec<String>,
) -> Option<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
    let pem = read_pem(path, "syslog.tls_client_ca", errors)?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let added = cert
            .map_err(|e| e.to_string())
            .and_then(|c| roots.add(c).map_err(|e| e.to_string()));
        if let Err(e) = added {
            errors.push(format!(
                "syslog.tls_client_ca: {} holds a certificate that cannot be used: {e}",
                path.display()
            ));
            return None;
        }
    }
    if roots.is_empty() {
        errors.push(format!(
            "syslog.tls_client_ca: {} holds no PEM certificate",
            path.display()
        ));
        return None;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    match WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build() {
        Ok(v) => Some(v),
        Err(e) => {
            errors.push(format!("syslog.tls_client_ca: {}: {e}", path.display()));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn data(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/syslog/testdata")
            .join(name)
    }

    fn load(cert: &str, key: &str) -> Result<TlsSettings, String> {
        let (cert, key) = (data(cert), data(key));
        TlsSettings::load(TlsFiles {
            cert: &cert,
            key: &key,
            client_ca: None,
            section: "syslog",
        })
        .map_err(|e| e.join("\n"))
    }

    #[test]
    fn keys_in_pkcs8_sec1_and_rsa_encodings_are_accepted() {
        for (cert, key) in [
            ("server.crt", "server.key"),
            ("server.crt", "server-sec1.key"),
            ("rsa.crt", "rsa-pkcs1.key"),
        ] {
            let settings = load(cert, key).unwrap_or_else(|e| panic!("{key}: {e}"));
            assert!(!format!("{settings:?}").contains("BEGIN"));
        }
    }

    #[test]
    fn each_bad_file_is_reported_with_its_key_and_no_key_material() {
        let err = load("missing.crt", "missing.key").unwrap_err();
        assert!(err.contains("syslog.tls_cert: cannot read"), "{err}");
        assert!(err.contains("syslog.tls_key: cannot read"), "{err}");
        // Swapped files: a key is no certificate, a certificate no key.
        let err = load("server.key", "server.crt").unwrap_err();
        assert!(err.contains("syslog.tls_cert:") && err.contains("no PEM certificate"));
        assert!(err.contains("syslog.tls_key:") && err.contains("no usable PEM private key"));
        let err = load("server.crt", "other.key").unwrap_err();
        assert!(err.starts_with("syslog.tls_key:"), "{err}");
        assert!(err.contains("does not go with the certificate"), "{err}");
        let secret = std::fs::read_to_string(data("other.key")).unwrap();
        let body = secret.lines().nth(1).unwrap();
        assert!(!err.contains(body), "{err}");
    }

    #[test]
    fn a_client_ca_file_must_hold_certificates() {
        let (cert, key, ca) = (data("server.crt"), data("server.key"), data("server.key"));
        let files = TlsFiles {
            cert: &cert,
            key: &key,
            client_ca: Some(&ca),
            section: "syslog",
        };
        let err = TlsSettings::load(files).unwrap_err().join("\n");
        assert!(err.starts_with("syslog.tls_client_ca:"), "{err}");
        let ca = data("rsa.crt");
        let settings = TlsSettings::load(TlsFiles {
            client_ca: Some(&ca),
            ..files
        })
        .unwrap();
        assert!(settings.client_auth);
    }
}
