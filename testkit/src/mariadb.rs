//! A throwaway MariaDB server: `mariadb-install-db` once into a cached template, copy it per
//! server, start `mariadbd` on a free loopback port with a row-based binlog (full row images)
//! and GTIDs, kill it and delete its directory on drop.

use crate::process::{
    client_output, free_port, log_tail, scratch_root, tear_down, unique_dir, RunAs,
};
use crate::tls::TestCa;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Settings every server starts with (`mariadbd --name=value`); [`MariaDbBuilder::setting`]
/// overrides any of them.
const DEFAULT_SETTINGS: &[(&str, &str)] = &[
    ("binlog-format", "ROW"),
    ("binlog-row-image", "FULL"),
    ("server-id", "1"),
    ("gtid-domain-id", "0"),
    ("gtid-strict-mode", "1"),
    // Binlogs are kept until a test purges them.
    ("binlog-expire-logs-seconds", "0"),
    ("innodb-buffer-pool-size", "16M"),
    ("innodb-log-file-size", "4M"),
    // 1 (the default): a binlog file is purgeable as soon as a newer one starts (with 2, its
    // binlog checkpoint waits for the next InnoDB log flush).
    ("innodb-flush-log-at-trx-commit", "1"),
    ("sync-binlog", "0"),
    ("max-connections", "60"),
    ("skip-name-resolve", "1"),
    ("character-set-server", "utf8mb4"),
    ("collation-server", "utf8mb4_bin"),
    ("default-time-zone", "+00:00"),
    ("performance-schema", "0"),
];

/// Bumped when the template's install arguments change, so stale templates are not reused.
const TEMPLATE_VERSION: u32 = 1;

/// Arguments both `mariadb-install-db` and `mariadbd` must agree on.
const STORAGE_ARGS: &[&str] = &[
    "--innodb-log-file-size=4M",
    "--innodb-data-file-path=ibdata1:4M:autoextend",
];

/// A running throwaway MariaDB server. Dropping it kills the server and deletes its directory.
///
/// The superuser is `root` without a password, reachable over loopback TCP; the binlog is in
/// `ROW` format with `FULL` row images, `server_id=1`, GTID domain 0 with strict mode.
#[derive(Debug)]
pub struct MariaDb {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
    /// Kills the server if this process dies without dropping it.
    watchdog: Option<Child>,
    /// The CA certificate file of a [`MariaDbBuilder::tls_only`] server.
    ca_cert: Option<PathBuf>,
}

/// Settings for a server before it starts: `MariaDb::builder().setting("binlog-format", "MIXED").start()`.
#[derive(Debug, Default, Clone)]
pub struct MariaDbBuilder {
    settings: Vec<(String, String)>,
    no_binlog: bool,
    tls_only: bool,
}

impl MariaDbBuilder {
    /// A server option (`mariadbd --name=value`), overriding the harness default.
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.to_string(), value.to_string()));
        self
    }

    /// Start without a binary log (to see what splice says about one).
    pub fn without_binlog(mut self) -> Self {
        self.no_binlog = true;
        self
    }

    /// Serve TLS with a certificate for `localhost` and `127.0.0.1` signed by a throwaway CA
    /// ([`MariaDb::ca_cert_path`]), and refuse TCP connections without TLS
    /// (`require_secure_transport`). [`MariaDb::sql`] still works (the local socket).
    pub fn tls_only(mut self) -> Self {
        self.tls_only = true;
        self
    }

    /// Start the server and wait until it accepts connections.
    pub fn start(self) -> Result<MariaDb> {
        let bins = find_binaries()?;
        let run_as = RunAs::for_server("mysql")?;
        let template = ensure_template(&bins, run_as)?;
        let mut last_error = None;
        // A port found free can be taken by a parallel test before the server binds it.
        for _attempt in 0..5 {
            match start_once(&bins, run_as, &template, &self) {
                Ok(server) => return Ok(server),
                Err(e) => {
                    tracing::warn!("throwaway mariadb did not start, retrying: {e:#}");
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("mariadbd did not start")))
    }
}

impl MariaDb {
    /// Start a server with the harness defaults.
    pub fn start() -> Result<MariaDb> {
        MariaDbBuilder::default().start()
    }

    /// Choose settings before starting.
    pub fn builder() -> MariaDbBuilder {
        MariaDbBuilder::default()
    }

    /// `mysql://root@127.0.0.1:PORT/` (no default database).
    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}/", self.port)
    }

    /// A URL for another user (with a password, or `""` for none).
    pub fn url_as(&self, user: &str, password: &str) -> String {
        if password.is_empty() {
            format!("mysql://{user}@127.0.0.1:{}/", self.port)
        } else {
            format!("mysql://{user}:{password}@127.0.0.1:{}/", self.port)
        }
    }

    /// The server process's id (`None` once stopped).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The loopback TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Always `127.0.0.1`.
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The PEM file of the CA that signed a [`MariaDbBuilder::tls_only`] server's certificate.
    pub fn ca_cert_path(&self) -> Option<&Path> {
        self.ca_cert.as_deref()
    }

    /// The data directory (binlogs are in it).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Run SQL through the `mariadb` client as root and return its tab-separated output
    /// without column names. For setup in synchronous code.
    pub fn sql(&self, sql: &str) -> Result<String> {
        let out = Command::new("mariadb")
            .args(["--no-defaults", "-u", "root", "-N", "-B"])
            .arg(format!(
                "--socket={}",
                self.dir.join("mariadb.sock").display()
            ))
            .arg("-e")
            .arg(sql)
            .stdin(Stdio::null())
            .output()
            .context("running the mariadb client")?;
        client_output("mariadb", sql, out)
    }

    /// Kill the server now and delete its directory.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        // Throwaway data: no clean shutdown needed.
        tear_down(
            &mut self.watchdog,
            &mut self.child,
            libc::SIGKILL,
            &self.dir,
            &self.dir.join("mariadb.err"),
        );
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[derive(Debug, Clone)]
struct Binaries {
    mariadbd: PathBuf,
    install_db: PathBuf,
    version: String,
}

/// `$SPLICE_MARIADB_BINDIR` (holding `mariadbd` and `mariadb-install-db`), else the Debian
/// package's places.
fn find_binaries() -> Result<Binaries> {
    let candidates: Vec<(PathBuf, PathBuf)> = match std::env::var_os("SPLICE_MARIADB_BINDIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            vec![(dir.join("mariadbd"), dir.join("mariadb-install-db"))]
        }
        None => vec![
            (
                PathBuf::from("/usr/sbin/mariadbd"),
                PathBuf::from("/usr/bin/mariadb-install-db"),
            ),
            (
                PathBuf::from("/usr/local/mysql/bin/mariadbd"),
                PathBuf::from("/usr/local/mysql/scripts/mariadb-install-db"),
            ),
        ],
    };
    for (mariadbd, install_db) in &candidates {
        if mariadbd.is_file() && install_db.is_file() {
            let out = Command::new(mariadbd)
                .arg("--version")
                .output()
                .with_context(|| format!("running {} --version", mariadbd.display()))?;
            // "mariadbd  Ver 10.11.14-MariaDB-0+deb12u2 for debian-linux-gnu on x86_64"
            let text = String::from_utf8_lossy(&out.stdout);
            let version = text
                .split_whitespace()
                .skip_while(|w| *w != "Ver")
                .nth(1)
                .unwrap_or("unknown")
                .to_string();
            return Ok(Binaries {
                mariadbd: mariadbd.clone(),
                install_db: install_db.clone(),
                version,
            });
        }
    }
    bail!(
        "MariaDB server binaries (mariadbd, mariadb-install-db) not found in {}; install them: \
         apt-get install mariadb-server, or set SPLICE_MARIADB_BINDIR to their directory",
        candidates
            .iter()
            .map(|(d, _)| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Install the system tables once per server version into a template directory shared by
/// every test process; each server starts from a copy.
fn ensure_template(bins: &Binaries, run_as: RunAs) -> Result<PathBuf> {
    let template = scratch_root()?.join(format!(
        "template-mariadb{}-v{TEMPLATE_VERSION}-uid{}",
        bins.version, run_as.uid
    ));
    if template.join("mysql").is_dir() {
        return Ok(template);
    }
    let building = unique_dir("mariadb-template-building")?;
    run_as.chown_tree(&building)?;
    let building_tmp = unique_dir("mariadb-template-tmp")?;
    run_as.chown_tree(&building_tmp)?;
    let mut cmd = Command::new(&bins.install_db);
    cmd.arg("--no-defaults")
        .arg(format!("--datadir={}", building.display()))
        // Passed on to the bootstrap server: like every server here, not the shared /tmp.
        .arg(format!("--tmpdir={}", building_tmp.display()))
        .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
        .args(STORAGE_ARGS)
        .stdin(Stdio::null());
    run_as.apply(&mut cmd);
    let out = cmd
        .output()
        .with_context(|| format!("running {}", bins.install_db.display()));
    let _ = std::fs::remove_dir_all(&building_tmp);
    let out = out?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&building);
        bail!(
            "mariadb-install-db failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if std::fs::rename(&building, &template).is_err() {
        let _ = std::fs::remove_dir_all(&building);
        if !template.join("mysql").is_dir() {
            bail!("could not create the template at {}", template.display());
        }
    }
    Ok(template)
}

fn start_once(
    bins: &Binaries,
    run_as: RunAs,
    template: &Path,
    builder: &MariaDbBuilder,
) -> Result<MariaDb> {
    let dir = unique_dir("mariadb")?;
    let data = dir.join("data");
    let copied = Command::new("cp")
        .arg("-a")
        .arg(template)
        .arg(&data)
        .status()
        .context("copying the template data directory (cp -a)")?;
    if !copied.success() {
        let _ = std::fs::remove_dir_all(&dir);
        bail!("cp -a {} {} failed", template.display(), data.display());
    }
    let mut tls_settings = Vec::new();
    let ca_cert = if builder.tls_only {
        let ca = TestCa::generate("splice test CA")?;
        let server = ca.issue_server(&["localhost", "127.0.0.1"])?;
        let ca_path = dir.join("ca.crt");
        ca.write_cert(&ca_path)?;
        std::fs::write(dir.join("server.crt"), &server.cert_pem).context("writing server.crt")?;
        std::fs::write(dir.join("server.key"), &server.key_pem).context("writing server.key")?;
        for (name, file) in [
            ("ssl-ca", "ca.crt"),
            ("ssl-cert", "server.crt"),
            ("ssl-key", "server.key"),
        ] {
            tls_settings.push((name.to_string(), dir.join(file).display().to_string()));
        }
        tls_settings.push(("require-secure-transport".into(), "ON".into()));
        Some(ca_path)
    } else {
        None
    };
    // Its own tmpdir: a starting mariadbd deletes every `#sql*` file in its tmpdir (left-over
    // temporary tables), which in a shared /tmp are the live temporary tables of the servers
    // other tests run (seen as "Error on delete of '/tmp/#sql-temptable-….MAD'" and sessions
    // closed mid-statement).
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    run_as.chown_tree(&dir)?;
    let port = free_port()?;
    let log_path = dir.join("mariadb.err");
    let mut cmd = Command::new(&bins.mariadbd);
    cmd.arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--port={port}"))
        .arg("--bind-address=127.0.0.1")
        .arg(format!("--socket={}", dir.join("mariadb.sock").display()))
        .arg(format!("--pid-file={}", dir.join("mariadb.pid").display()))
        .arg(format!("--log-error={}", log_path.display()))
        .arg(format!("--tmpdir={}", tmp.display()))
        .args(STORAGE_ARGS);
    if !builder.no_binlog {
        cmd.arg(format!("--log-bin={}", data.join("binlog").display()));
    }
    let mut settings: Vec<(String, String)> = DEFAULT_SETTINGS
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    for (name, value) in tls_settings.iter().chain(&builder.settings) {
        let name = name.replace('_', "-");
        settings.retain(|(n, _)| *n != name);
        settings.push((name, value.clone()));
    }
    for (name, value) in settings {
        cmd.arg(format!("--{name}={value}"));
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    run_as.apply(&mut cmd);
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", bins.mariadbd.display()))?;
    let mut server = MariaDb {
        dir,
        port,
        child: Some(child),
        watchdog: None,
        ca_cert,
    };
    wait_ready(&mut server, &log_path)?;
    server.watchdog = spawn_watchdog(&server, run_as);
    Ok(server)
}

/// A small shell loop, running as the server's account, that kills the server and removes
/// its directory once this process is gone (a test killed by a timeout). Best effort.
fn spawn_watchdog(server: &MariaDb, run_as: RunAs) -> Option<Child> {
    const SCRIPT: &str = "while [ -d /proc/$1 ]; do sleep 1; done; \
        kill -9 \"$(cat \"$2/mariadb.pid\")\" >/dev/null 2>&1; rm -rf \"$2\"";
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(SCRIPT)
        .arg("splice-testkit-watchdog")
        .arg(std::process::id().to_string())
        .arg(&server.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    run_as.apply(&mut cmd);
    cmd.spawn().ok()
}

/// Wait until the server accepts a TCP connection and says "ready for connections".
fn wait_ready(server: &mut MariaDb, log_path: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(child) = server.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                bail!(
                    "mariadbd exited during startup ({status}) on port {}:\n{}",
                    server.port,
                    log_tail(log_path, 20)
                );
            }
        }
        let ready = std::fs::read_to_string(log_path)
            .is_ok_and(|log| log.contains("ready for connections"));
        if ready && std::net::TcpStream::connect(("127.0.0.1", server.port)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "mariadbd did not become ready within 60s on port {}:\n{}",
                server.port,
                log_tail(log_path, 20)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
