//! Where and how to connect, read from a database URL as libpq reads it: the TLS parameters
//! (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`), which tokio-postgres does not take, are
//! taken out of the URL first; `PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT` and `PGSSLKEY` fill
//! the ones the URL leaves out; a URL without a password takes `PGPASSWORD`, else the
//! password file. Every connection splice opens (SQL sessions and the replication stream) goes
//! through [`PgTarget`].

use super::pgpass::{self, PgpassQuery};
use super::tls::{rustls_error, ClientCert, SslMode, TlsSettings, TrustRoots};
use crate::error::describe_pg_error;
use std::path::{Path, PathBuf};
use tokio::task::JoinHandle;
use tokio_postgres::config::Host;

/// Why a connection could not be opened, each with the fix.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("the database URL does not parse: {detail}")]
    Url { detail: String },

    /// A TLS parameter is wrong on its own (unknown sslmode, sslcert without sslkey, …).
    #[error("{detail}")]
    Setting { detail: String },

    /// A certificate or key file named by a parameter cannot be used.
    #[error("cannot use {param}={}: {detail}", path.display())]
    File {
        param: &'static str,
        path: PathBuf,
        detail: String,
    },

    #[error(
        "could not connect to {target}: the server's certificate is not signed by {roots} \
         ({detail}); give the CA that signed it with sslrootcert=FILE, or use sslmode=require \
         to encrypt without checking the certificate"
    )]
    UntrustedCertificate {
        target: String,
        /// `the CA in sslrootcert=FILE` or `any of this machine's trusted CAs`.
        roots: String,
        detail: String,
    },

    #[error(
        "could not connect to {target}: the server's certificate does not name host {host} \
         ({detail}); connect by a name the certificate lists, or use sslmode=verify-ca to check \
         only that a trusted CA signed it"
    )]
    HostNameMismatch {
        target: String,
        host: String,
        detail: String,
    },

    #[error(
        "could not connect to {target}: the server accepts only TLS connections ({detail}); \
         use sslmode=require (or sslmode=verify-full with sslrootcert=FILE to also check the \
         server's certificate)"
    )]
    TlsRequiredByServer { target: String, detail: String },

    #[error(
        "could not connect to {target}: the server does not offer TLS but sslmode={mode} \
         requires it; enable ssl on the server, or use sslmode=prefer"
    )]
    TlsNotOffered { target: String, mode: SslMode },

    #[error(
        "could not connect to {target}: TLS handshake failed ({detail}); check sslmode, \
         sslrootcert, sslcert and sslkey"
    )]
    Handshake { target: String, detail: String },

    #[error(
        "could not connect to {target}: {detail}; check the database URL and that the server \
         is running"
    )]
    Failed { target: String, detail: String },
}

/// A parsed connection target: the tokio-postgres settings (password resolved) and TLS.
#[derive(Clone, Debug)]
pub struct PgTarget {
    config: tokio_postgres::Config,
    tls: TlsSettings,
}

/// The TLS parameters splice reads itself; tokio-postgres never sees them. `sslnegotiation`
/// is taken out and ignored: every connection uses the classic negotiation (SSLRequest), which
/// every server that offers direct negotiation also accepts.
const TLS_PARAMS: &[&str] = &[
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslnegotiation",
];

impl PgTarget {
    /// Read `url` (`postgres://…` or `key=value …`) with the process environment.
    pub fn from_url(url: &str) -> Result<PgTarget, ConnectError> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        PgTarget::from_url_in(url, &env)
    }

    /// [`PgTarget::from_url`] with the environment given (tests pass their own).
    pub fn from_url_in(
        url: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<PgTarget, ConnectError> {
        let split = split_tls_params(url)?;
        let mut config: tokio_postgres::Config =
            split
                .rest
                .parse()
                .map_err(|e: tokio_postgres::Error| ConnectError::Url {
                    detail: e.to_string(),
                })?;
        let param = |name: &str| {
            split
                .params
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .or_else(|| env(&format!("PG{}", name.to_uppercase())))
        };
        let home = env("HOME").map(PathBuf::from);
        let tls = tls_settings(
            param("sslmode").as_deref(),
            param("sslrootcert").as_deref(),
            param("sslcert").as_deref(),
            param("sslkey").as_deref(),
            home.as_deref(),
        )?;
        // TLS is never used over a Unix socket (libpq ignores sslmode there too).
        let unix = matches!(config.get_hosts().first(), Some(Host::Unix(_)));
        config.ssl_mode(match tls.mode {
            _ if unix => tokio_postgres::config::SslMode::Disable,
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        });
        if config.get_user().is_none() {
            if let Some(user) = env("PGUSER").or_else(|| env("USER")) {
                config.user(&user);
            }
        }
        if config.get_password().is_none() {
            if let Some(password) = env("PGPASSWORD").or_else(|| password_file(&config, env)) {
                config.password(password);
            }
        }
        Ok(PgTarget { config, tls })
    }

    /// The tokio-postgres settings (TLS mode mapped, password filled in).
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    pub fn tls(&self) -> &TlsSettings {
        &self.tls
    }

    /// `host:port/database`, never the password.
    pub fn describe(&self) -> String {
        format!(
            "{}:{}/{}",
            self.host(),
            self.port(),
            self.config.get_dbname().unwrap_or("(default database)")
        )
    }

    /// The first host (a Unix socket directory as its path), `localhost` if none is given.
    pub fn host(&self) -> String {
        match self.config.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            #[cfg(unix)]
            Some(Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        }
    }

    /// The first port, 5432 if none is given.
    pub fn port(&self) -> u16 {
        self.config.get_ports().first().copied().unwrap_or(5432)
    }

    fn is_unix_socket(&self) -> bool {
        matches!(self.config.get_hosts().first(), Some(Host::Unix(_)))
    }

    /// Open an ordinary SQL session; its connection runs on a task of the current runtime
    /// until the client is dropped (or the handle aborted).
    pub async fn connect(&self) -> Result<(tokio_postgres::Client, JoinHandle<()>), ConnectError> {
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(self.tls.rustls_config()?);
        let (client, connection) = self
            .config
            .connect(tls)
            .await
            .map_err(|e| self.explain(&e))?;
        let task = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("database connection ended: {e}");
            }
        });
        Ok((client, task))
    }

    /// The replication client's TLS settings (disabled over a Unix socket, as libpq does).
    pub async fn replication_tls(&self) -> Result<pgwire_replication::TlsConfig, ConnectError> {
        if self.is_unix_socket() {
            return Ok(pgwire_replication::TlsConfig::disabled());
        }
        if self.tls.mode == SslMode::Disable {
            return Ok(self.tls.replication_tls(&self.host()));
        }
        // Name an unusable file now rather than as the replication client's error.
        self.tls.rustls_config()?;
        if self.tls.mode != SslMode::VerifyCa {
            return Ok(self.tls.replication_tls(&self.host()));
        }
        // pgwire-replication =0.5.0 accepts another host's certificate under verify-ca only
        // when rustls reports the name error it knew (`NotValidForName`); rustls now reports
        // `NotValidForNameContext`, so its verify-ca fails whenever the host name is not in
        // the certificate. Instead: check the chain here (our verify-ca), take a name the
        // CA-signed certificate lists, and let the client verify-full against that name.
        // Same guarantee, a certificate from the trusted CA, checked on the connection itself.
        let mut tls = self.tls.replication_tls(&self.host());
        if let Some(name) = self.name_in_certificate().await? {
            tls.mode = pgwire_replication::SslMode::VerifyFull;
            tls.sni_hostname = Some(name);
        }
        Ok(tls)
    }

    /// Where to open TCP connections: `hostaddr` when given, else the host name.
    pub fn address(&self) -> String {
        self.config
            .get_hostaddrs()
            .first()
            .map(|a| a.to_string())
            .unwrap_or_else(|| self.host())
    }

    /// A TLS handshake with the server under this target's settings (the chain checked), and
    /// the first DNS name or address its certificate lists. `None` when the server does not
    /// offer TLS or the certificate lists no name.
    async fn name_in_certificate(&self) -> Result<Option<String>, ConnectError> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let failed = |detail: String| ConnectError::Failed {
            target: self.describe(),
            detail,
        };
        let mut tcp = tokio::net::TcpStream::connect((self.address().as_str(), self.port()))
            .await
            .map_err(|e| failed(e.to_string()))?;
        // SSLRequest: length 8, code 80877103.
        tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
            .await
            .map_err(|e| failed(e.to_string()))?;
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer)
            .await
            .map_err(|e| failed(e.to_string()))?;
        if answer[0] != b'S' {
            return Ok(None);
        }
        let connector =
            tokio_rustls::TlsConnector::from(std::sync::Arc::new(self.tls.rustls_config()?));
        let server_name = rustls::pki_types::ServerName::try_from(self.host()).map_err(|e| {
            failed(format!(
                "{} is not a valid TLS server name: {e}",
                self.host()
            ))
        })?;
        let stream =
            connector
                .connect(server_name, tcp)
                .await
                .map_err(|e| match rustls_error(&e) {
                    Some(tls) => self.explain_tls(tls),
                    None => failed(format!("TLS handshake failed: {e}")),
                })?;
        let (_, session) = stream.get_ref();
        Ok(session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|cert| super::tls::first_name(cert)))
    }

    /// Turn a failed connect into the error that names the fix.
    fn explain(&self, e: &tokio_postgres::Error) -> ConnectError {
        let target = self.describe();
        if let Some(tls) = rustls_error(e) {
            return self.explain_tls(tls);
        }
        if let Some(db) = e.as_db_error() {
            // pg_hba.conf's `hostnossl … reject` (or no `host` line for a plain connection):
            // the server reports the missing encryption only in its message.
            if db.code() == &tokio_postgres::error::SqlState::INVALID_AUTHORIZATION_SPECIFICATION
                && db.message().ends_with("no encryption")
            {
                return ConnectError::TlsRequiredByServer {
                    target,
                    detail: db.message().to_string(),
                };
            }
        }
        // tokio-postgres reports a server that answers the TLS request with "no" only as text.
        if e.to_string().contains("server does not support TLS") {
            return ConnectError::TlsNotOffered {
                target,
                mode: self.tls.mode,
            };
        }
        ConnectError::Failed {
            target,
            detail: describe_pg_error(e),
        }
    }
}

impl PgTarget {
    /// A failed TLS handshake, named by what the user can change.
    fn explain_tls(&self, tls: &rustls::Error) -> ConnectError {
        use rustls::CertificateError as Cert;
        let target = self.describe();
        let detail = tls.to_string();
        match tls {
            rustls::Error::InvalidCertificate(
                Cert::NotValidForName | Cert::NotValidForNameContext { .. },
            ) => ConnectError::HostNameMismatch {
                target,
                host: self.host(),
                detail,
            },
            rustls::Error::InvalidCertificate(
                Cert::UnknownIssuer | Cert::BadSignature | Cert::BadEncoding,
            ) => ConnectError::UntrustedCertificate {
                target,
                roots: match &self.tls.roots {
                    TrustRoots::File(path) => {
                        format!("the CA in sslrootcert={}", path.display())
                    }
                    TrustRoots::Platform => "any of this machine's trusted CAs".into(),
                },
                detail,
            },
            _ => ConnectError::Handshake { target, detail },
        }
    }
}

/// Connect an ordinary SQL session to `url` (see [`PgTarget::from_url`]).
pub async fn connect(url: &str) -> Result<(tokio_postgres::Client, JoinHandle<()>), ConnectError> {
    PgTarget::from_url(url)?.connect().await
}

/// libpq's rules from the raw parameters: the default mode is `prefer`; a root certificate
/// (given, or `~/.postgresql/root.crt`) makes `require` check the chain like `verify-ca`;
/// `sslrootcert=system` means the platform's CAs and defaults to `verify-full`;
/// `~/.postgresql/postgresql.crt` and `.key` are the default client certificate.
fn tls_settings(
    mode: Option<&str>,
    rootcert: Option<&str>,
    cert: Option<&str>,
    key: Option<&str>,
    home: Option<&Path>,
) -> Result<TlsSettings, ConnectError> {
    let given_mode = match mode {
        None => None,
        Some(value) => Some(SslMode::parse(value).ok_or_else(|| ConnectError::Setting {
            detail: format!(
                "sslmode={value} is not supported; use disable, prefer, require, verify-ca or \
                 verify-full"
            ),
        })?),
    };
    let libpq_dir = home.map(|h| h.join(".postgresql"));
    let default_file = |name: &str| {
        libpq_dir
            .as_ref()
            .map(|d| d.join(name))
            .filter(|p| p.is_file())
    };
    let (mode, roots) = match rootcert {
        Some("system") => {
            let mode = given_mode.unwrap_or(SslMode::VerifyFull);
            if mode != SslMode::VerifyFull {
                return Err(ConnectError::Setting {
                    detail: format!(
                        "sslmode={mode} may not be used with sslrootcert=system (anyone can get \
                         a certificate from a public CA); use sslmode=verify-full"
                    ),
                });
            }
            (mode, TrustRoots::Platform)
        }
        Some(path) => (
            upgrade_require(given_mode.unwrap_or(SslMode::Prefer)),
            TrustRoots::File(PathBuf::from(path)),
        ),
        None => match default_file("root.crt") {
            Some(path) => (
                upgrade_require(given_mode.unwrap_or(SslMode::Prefer)),
                TrustRoots::File(path),
            ),
            None => (given_mode.unwrap_or(SslMode::Prefer), TrustRoots::Platform),
        },
    };
    let client_cert = match (cert, key) {
        (Some(cert), Some(key)) => Some(ClientCert {
            cert: cert.into(),
            key: key.into(),
        }),
        (Some(_), None) | (None, Some(_)) => {
            return Err(ConnectError::Setting {
                detail: "a client certificate needs both sslcert=FILE and sslkey=FILE".into(),
            })
        }
        (None, None) => match (
            default_file("postgresql.crt"),
            default_file("postgresql.key"),
        ) {
            (Some(cert), Some(key)) => Some(ClientCert { cert, key }),
            _ => None,
        },
    };
    Ok(TlsSettings {
        mode,
        roots,
        client_cert,
    })
}

/// "If a root CA file exists, sslmode=require behaves like verify-ca" (libpq).
fn upgrade_require(mode: SslMode) -> SslMode {
    if mode == SslMode::Require {
        SslMode::VerifyCa
    } else {
        mode
    }
}

/// The password file's entry for this target, as libpq looks it up: a Unix socket counts as
/// host `localhost`, the database defaults to the user name.
fn password_file(
    config: &tokio_postgres::Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<String> {
    let path = pgpass::default_path(env)?;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.as_str(),
        _ => "localhost",
    };
    let user = config.get_user()?;
    let query = PgpassQuery {
        host,
        port: config.get_ports().first().copied().unwrap_or(5432),
        database: config.get_dbname().unwrap_or(user),
        user,
    };
    pgpass::password_from_file(&path, &query)
}

/// A URL with the TLS parameters taken out, and those parameters (decoded), in order.
#[derive(Debug, PartialEq, Eq)]
struct Split {
    rest: String,
    params: Vec<(String, String)>,
}

fn split_tls_params(url: &str) -> Result<Split, ConnectError> {
    let trimmed = url.trim();
    if trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://") {
        split_url(trimmed)
    } else {
        split_key_values(trimmed)
    }
}

/// `postgres://…?a=b&sslmode=require`: the query is after the first `?` past the credentials.
fn split_url(url: &str) -> Result<Split, ConnectError> {
    let search_from = url.rfind('@').unwrap_or(0);
    let Some(q) = url[search_from..].find('?').map(|i| i + search_from) else {
        return Ok(Split {
            rest: url.to_string(),
            params: Vec::new(),
        });
    };
    let mut kept = Vec::new();
    let mut params = Vec::new();
    for piece in url[q + 1..].split('&').filter(|p| !p.is_empty()) {
        let (key, value) = piece.split_once('=').unwrap_or((piece, ""));
        let key = percent_decode(key)?;
        if TLS_PARAMS.contains(&key.as_str()) {
            params.push((key, percent_decode(value)?));
        } else {
            kept.push(piece);
        }
    }
    let mut rest = url[..q].to_string();
    if !kept.is_empty() {
        rest.push('?');
        rest.push_str(&kept.join("&"));
    }
    Ok(Split { rest, params })
}

fn percent_decode(s: &str) -> Result<String, ConnectError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| ConnectError::Url {
                    detail: format!("bad percent-encoding in {s:?}"),
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ConnectError::Url {
        detail: format!("{s:?} does not decode to UTF-8"),
    })
}

/// `host=db sslmode=verify-full sslrootcert='/etc/ca dir/ca.pem'`: libpq's key=value form.
fn split_key_values(s: &str) -> Result<Split, ConnectError> {
    let mut kept = Vec::new();
    let mut params = Vec::new();
    for (key, value) in key_value_pairs(s)? {
        if TLS_PARAMS.contains(&key.as_str()) {
            params.push((key, value));
        } else {
            let quoted = value.replace('\\', "\\\\").replace('\'', "\\'");
            kept.push(format!("{key}='{quoted}'"));
        }
    }
    Ok(Split {
        rest: kept.join(" "),
        params,
    })
}

fn key_value_pairs(s: &str) -> Result<Vec<(String, String)>, ConnectError> {
    let bad = |detail: String| ConnectError::Url { detail };
    let mut pairs = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(bad(format!("expected `=` after {key:?}")));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err(bad(format!("unterminated quoted value of {key:?}"))),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn target(url: &str) -> PgTarget {
        PgTarget::from_url_in(url, &no_env).expect("parses")
    }

    #[test]
    fn tls_parameters_are_taken_out_of_a_url_and_the_rest_is_kept() {
        let split = split_tls_params(
            "postgres://u:p%3Fw@db:5433/app?sslmode=verify-full&application_name=x\
             &sslrootcert=%2Fetc%2Fca%20dir%2Fca.pem",
        )
        .expect("splits");
        assert_eq!(
            split.rest,
            "postgres://u:p%3Fw@db:5433/app?application_name=x"
        );
        assert_eq!(
            split.params,
            vec![
                ("sslmode".to_string(), "verify-full".to_string()),
                ("sslrootcert".to_string(), "/etc/ca dir/ca.pem".to_string()),
            ]
        );
    }

    #[test]
    fn tls_parameters_are_taken_out_of_the_key_value_form() {
        let split = split_tls_params(
            "host=db  dbname = 'my app' sslmode=verify-ca sslrootcert='/c a/ca.pem' user=o\\'k",
        )
        .expect("splits");
        assert_eq!(split.rest, "host='db' dbname='my app' user='o\\'k'");
        assert_eq!(split.params[0], ("sslmode".into(), "verify-ca".into()));
        assert_eq!(
            split.params[1],
            ("sslrootcert".into(), "/c a/ca.pem".into())
        );
        let t = target("host=db dbname='my app' sslmode=verify-ca sslrootcert=/ca.pem user=o\\'k");
        assert_eq!(t.config().get_dbname(), Some("my app"));
        assert_eq!(t.config().get_user(), Some("o'k"));
    }

    #[test]
    fn verify_modes_parse_and_map_to_what_tokio_postgres_accepts() {
        let t = target("postgres://u@db/app?sslmode=verify-full&sslrootcert=/ca.pem");
        assert_eq!(t.tls().mode, SslMode::VerifyFull);
        assert_eq!(t.tls().roots, TrustRoots::File("/ca.pem".into()));
        assert_eq!(
            t.config().get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
        let t = target("postgres://u@db/app?sslmode=disable");
        assert_eq!(
            t.config().get_ssl_mode(),
            tokio_postgres::config::SslMode::Disable
        );
    }

    #[test]
    fn the_default_is_prefer_with_the_platform_roots() {
        let t = target("postgres://u@db/app");
        assert_eq!(t.tls().mode, SslMode::Prefer);
        assert_eq!(t.tls().roots, TrustRoots::Platform);
        assert_eq!(t.tls().client_cert, None);
    }

    #[test]
    fn require_with_a_root_certificate_checks_the_chain_like_libpq() {
        let t = target("postgres://u@db/app?sslmode=require&sslrootcert=/ca.pem");
        assert_eq!(t.tls().mode, SslMode::VerifyCa);
        let t = target("postgres://u@db/app?sslmode=require");
        assert_eq!(t.tls().mode, SslMode::Require);
    }

    #[test]
    fn sslrootcert_system_means_platform_roots_and_verify_full() {
        let t = target("postgres://u@db/app?sslrootcert=system");
        assert_eq!(t.tls().mode, SslMode::VerifyFull);
        assert_eq!(t.tls().roots, TrustRoots::Platform);
        let err = PgTarget::from_url_in(
            "postgres://u@db/app?sslrootcert=system&sslmode=require",
            &no_env,
        )
        .expect_err("weak mode with public CAs");
        assert!(err.to_string().contains("use sslmode=verify-full"), "{err}");
    }

    #[test]
    fn an_unknown_sslmode_or_half_a_client_certificate_is_refused_with_the_fix() {
        let err = PgTarget::from_url_in("postgres://u@db/app?sslmode=verify", &no_env)
            .expect_err("unknown mode");
        assert!(err.to_string().contains("verify-full"), "{err}");
        let err = PgTarget::from_url_in("postgres://u@db/app?sslcert=/c.pem", &no_env)
            .expect_err("no key");
        assert!(err.to_string().contains("sslkey"), "{err}");
        let t = target("postgres://u@db/app?sslcert=/c.pem&sslkey=/k.pem");
        assert_eq!(
            t.tls().client_cert,
            Some(ClientCert {
                cert: "/c.pem".into(),
                key: "/k.pem".into()
            })
        );
    }

    #[test]
    fn pg_environment_fills_what_the_url_leaves_out() {
        let env = |k: &str| match k {
            "PGSSLMODE" => Some("verify-full".to_string()),
            "PGSSLROOTCERT" => Some("/env-ca.pem".to_string()),
            "PGPASSWORD" => Some("from-env".to_string()),
            _ => None,
        };
        let t = PgTarget::from_url_in("postgres://u@db/app", &env).expect("parses");
        assert_eq!(t.tls().mode, SslMode::VerifyFull);
        assert_eq!(t.tls().roots, TrustRoots::File("/env-ca.pem".into()));
        assert_eq!(t.config().get_password(), Some(&b"from-env"[..]));

        let t = PgTarget::from_url_in("postgres://u:inurl@db/app?sslmode=disable", &env)
            .expect("parses");
        assert_eq!(t.tls().mode, SslMode::Disable, "the URL wins");
        assert_eq!(t.config().get_password(), Some(&b"inurl"[..]));
    }

    #[test]
    fn the_password_file_is_used_when_neither_url_nor_environment_has_one() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("splice-connect-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("pgpass");
        std::fs::write(&file, "db:5432:app:u:from-file\n").expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let file_name = file.display().to_string();
        let env = move |k: &str| (k == "PGPASSFILE").then(|| file_name.clone());
        let t = PgTarget::from_url_in("postgres://u@db/app", &env).expect("parses");
        assert_eq!(t.config().get_password(), Some(&b"from-file"[..]));
        let t = PgTarget::from_url_in("postgres://u@db/other", &env).expect("parses");
        assert_eq!(t.config().get_password(), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn describe_never_shows_the_password() {
        let t = target("postgres://u:s3cret@db:6543/app?sslmode=require");
        assert_eq!(t.describe(), "db:6543/app");
    }

    #[test]
    fn an_unreadable_sslrootcert_is_named() {
        let t = target("postgres://u@db/app?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem");
        let err = t.tls().rustls_config().expect_err("no such file");
        let text = err.to_string();
        assert!(text.contains("sslrootcert=/nonexistent/ca.pem"), "{text}");
    }
}
