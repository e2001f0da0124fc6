//! TLS for every PostgreSQL connection splice opens, with libpq's `sslmode` meanings: one
//! [`TlsSettings`] makes both the rustls config of the SQL sessions and the replication
//! client's TLS config, so the two connections of a capture always agree.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::connect::ConnectError;

/// libpq's `sslmode`, less `allow` (plain first, TLS only if refused), which nobody should want.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS if the server offers it, without checking its certificate; plain otherwise.
    Prefer,
    /// TLS always, without checking the certificate (unless a root certificate is given, which
    /// makes it `VerifyCa`, as in libpq).
    Require,
    /// TLS, and the certificate chains to a trusted CA; the host name is not checked.
    VerifyCa,
    /// TLS, the certificate chains to a trusted CA and names the host connected to.
    VerifyFull,
}

impl SslMode {
    /// `disable`, `prefer`, `require`, `verify-ca` or `verify-full`.
    pub fn parse(value: &str) -> Option<SslMode> {
        Some(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// True when the server's certificate must chain to a trusted CA.
    pub fn verifies_chain(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which CAs a verifying mode trusts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrustRoots {
    /// The platform's trust store (`sslrootcert=system`, or no root certificate anywhere).
    Platform,
    /// The PEM file named by `sslrootcert` (or libpq's default `~/.postgresql/root.crt`).
    File(PathBuf),
}

/// A client certificate and its key (`sslcert` / `sslkey`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Everything TLS about one connection target, with libpq's defaults already applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: SslMode,
    pub roots: TrustRoots,
    pub client_cert: Option<ClientCert>,
}

impl TlsSettings {
    /// Where the trust roots come from, as the user would write it.
    pub fn roots_described(&self) -> String {
        match &self.roots {
            TrustRoots::File(path) => format!("sslrootcert={}", path.display()),
            TrustRoots::Platform => "this machine's trusted CAs".into(),
        }
    }

    /// The rustls configuration for the SQL sessions. Reads the root and client certificate
    /// files now, so a missing or unreadable file is named before any network traffic.
    pub(crate) fn rustls_config(&self) -> Result<ClientConfig, ConnectError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| ConnectError::Setting {
                detail: format!("TLS setup failed: {e}"),
            })?;
        let verifier: Arc<dyn ServerCertVerifier> = match self.mode {
            // Disable never starts TLS; the config only has to exist.
            SslMode::Disable | SslMode::Prefer | SslMode::Require => Arc::new(AcceptAnyCert {
                algorithms: provider.signature_verification_algorithms,
            }),
            SslMode::VerifyCa | SslMode::VerifyFull => {
                let roots = Arc::new(self.root_store()?);
                let inner = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                    .build()
                    .map_err(|e| ConnectError::Setting {
                        detail: format!("TLS setup failed: {e}"),
                    })?;
                if self.mode == SslMode::VerifyFull {
                    inner
                } else {
                    Arc::new(ChainOnly { inner })
                }
            }
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        match (&self.client_cert, self.mode) {
            (Some(client), mode) if mode != SslMode::Disable => {
                let chain = read_certificates("sslcert", &client.cert)?;
                let key = read_private_key(&client.key)?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| ConnectError::File {
                        param: "sslkey",
                        path: client.key.clone(),
                        detail: format!("it does not fit sslcert={}: {e}", client.cert.display()),
                    })
            }
            _ => Ok(builder.with_no_client_auth()),
        }
    }

    /// The replication client's TLS settings for a server known as `host` (the name the
    /// certificate must list under verify-full, even when `hostaddr` gives the address).
    pub(crate) fn replication_tls(&self, host: &str) -> pgwire_replication::TlsConfig {
        use pgwire_replication::SslMode as Mode;
        let mode = match self.mode {
            SslMode::Disable => Mode::Disable,
            SslMode::Prefer => Mode::Prefer,
            SslMode::Require => Mode::Require,
            SslMode::VerifyCa => Mode::VerifyCa,
            SslMode::VerifyFull => Mode::VerifyFull,
        };
        let ca_pem_path = match &self.roots {
            TrustRoots::File(path) => Some(path.clone()),
            // The client takes one PEM file; the platform's bundle is one (it falls back to
            // the Mozilla roots when none is found).
            TrustRoots::Platform => openssl_probe::probe().cert_file,
        };
        // Named explicitly: the client otherwise checks the address it connects to, and
        // refuses verify-full to an IP address (which the certificate may well list).
        let sni_hostname = Some(host.to_string());
        pgwire_replication::TlsConfig {
            mode,
            ca_pem_path,
            sni_hostname,
            client_cert_pem_path: self.client_cert.as_ref().map(|c| c.cert.clone()),
            client_key_pem_path: self.client_cert.as_ref().map(|c| c.key.clone()),
        }
    }

    fn root_store(&self) -> Result<RootCertStore, ConnectError> {
        let mut store = RootCertStore::empty();
        match &self.roots {
            TrustRoots::File(path) => {
                let certs = read_certificates("sslrootcert", path)?;
                let (added, _) = store.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(ConnectError::File {
                        param: "sslrootcert",
                        path: path.clone(),
                        detail: "it holds no usable CA certificate".into(),
                    });
                }
            }
            TrustRoots::Platform => {
                let found = rustls_native_certs::load_native_certs();
                for e in &found.errors {
                    tracing::debug!("reading the platform's trusted CAs: {e}");
                }
                store.add_parsable_certificates(found.certs);
                if store.is_empty() {
                    return Err(ConnectError::Setting {
                        detail: format!(
                            "sslmode={} checks the server's certificate, but this machine has \
                             no trusted CA certificates; pass the server's CA with \
                             sslrootcert=FILE",
                            self.mode
                        ),
                    });
                }
            }
        }
        Ok(store)
    }
}

/// Every certificate in a PEM file; errors name the parameter and the file.
fn read_certificates(
    param: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, ConnectError> {
    let bytes = std::fs::read(path).map_err(|e| ConnectError::File {
        param,
        path: path.to_path_buf(),
        detail: format!("cannot read it: {e}"),
    })?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConnectError::File {
            param,
            path: path.to_path_buf(),
            detail: format!("it is not a PEM certificate file: {e}"),
        })?;
    if certs.is_empty() {
        return Err(ConnectError::File {
            param,
            path: path.to_path_buf(),
            detail: "it holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        });
    }
    Ok(certs)
}

fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, ConnectError> {
    let bytes = std::fs::read(path).map_err(|e| ConnectError::File {
        param: "sslkey",
        path: path.to_path_buf(),
        detail: format!("cannot read it: {e}"),
    })?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| ConnectError::File {
        param: "sslkey",
        path: path.to_path_buf(),
        detail: format!("it holds no unencrypted PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
    })
}

/// `prefer` and `require`: encrypt, trust any certificate (libpq does the same). The handshake
/// signatures are still checked, so the session key belongs to whoever sent the certificate.
#[derive(Debug)]
struct AcceptAnyCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must verify; a certificate for another host name is accepted.
/// webpki checks the chain before the name, so a name error means the chain was good.
#[derive(Debug)]
struct ChainOnly {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::CertificateError::{NotValidForName, NotValidForNameContext};
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                NotValidForName | NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The rustls error somewhere in `e`'s chain (tokio-rustls wraps it in an `io::Error`, whose
/// `source()` skips it, so each `io::Error` is looked into as well).
pub(crate) fn rustls_error<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(inner);
        }
        next = err.source();
    }
    None
}

/// The first DNS name (a wildcard's `*` filled in) or IP address a certificate lists.
pub(crate) fn first_name(cert: &CertificateDer<'_>) -> Option<String> {
    use x509_cert::der::Decode;
    use x509_cert::ext::pkix::name::GeneralName;
    use x509_cert::ext::pkix::SubjectAltName;
    let cert = x509_cert::Certificate::from_der(cert.as_ref()).ok()?;
    let (_, names) = cert.tbs_certificate.get::<SubjectAltName>().ok()??;
    names.0.iter().find_map(|name| match name {
        GeneralName::DnsName(dns) => Some(dns.as_str().replacen('*', "splice", 1)),
        GeneralName::IpAddress(octets) => match octets.as_bytes().len() {
            4 => <[u8; 4]>::try_from(octets.as_bytes())
                .ok()
                .map(|a| std::net::IpAddr::from(a).to_string()),
            16 => <[u8; 16]>::try_from(octets.as_bytes())
                .ok()
                .map(|a| std::net::IpAddr::from(a).to_string()),
            _ => None,
        },
        _ => None,
    })
}
