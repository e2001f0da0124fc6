//! A throwaway PostgreSQL server: initdb once into a cached template, copy it per server, start
//! `postgres` on a free loopback port with logical decoding on, stop and delete it on drop.
//! [`PostgresBuilder::tls_only`] gives it a throwaway CA and certificate and refuses every
//! connection without TLS.

use crate::process::{
    client_output, free_port, log_tail, scratch_root, tear_down, unique_dir, RunAs,
};
use crate::tls::TestCa;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Settings every server starts with; [`PostgresBuilder::setting`] overrides any of them.
const DEFAULT_SETTINGS: &[(&str, &str)] = &[
    ("wal_level", "logical"),
    ("max_replication_slots", "16"),
    ("max_wal_senders", "16"),
    ("max_connections", "40"),
    ("shared_buffers", "32MB"),
    ("fsync", "off"),
    ("full_page_writes", "off"),
    ("synchronous_commit", "on"),
    ("wal_sender_timeout", "60s"),
    ("log_min_messages", "warning"),
    ("log_line_prefix", "%m [%p] "),
    ("timezone", "UTC"),
];

/// Bumped when the template's initdb arguments change, so stale templates are not reused.
const TEMPLATE_VERSION: u32 = 1;

/// A running throwaway PostgreSQL server. Dropping it stops the server (immediate shutdown)
/// and deletes its directory.
///
/// The superuser is `postgres`, authentication is `trust` for local and loopback connections
/// (replication included), and the database is `postgres`.
#[derive(Debug)]
pub struct Postgres {
    bindir: PathBuf,
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
    /// Stops the server if this process dies without dropping it (a killed or timed-out test).
    watchdog: Option<Child>,
    major: u32,
    /// The CA certificate file of a [`PostgresBuilder::tls_only`] server.
    ca_cert: Option<PathBuf>,
    ca: Option<std::sync::Arc<TestCa>>,
}

/// Settings for a server before it starts: `Postgres::builder().setting("wal_level", "replica").start()`.
#[derive(Debug, Default, Clone)]
pub struct PostgresBuilder {
    settings: Vec<(String, String)>,
    hba_rules: Vec<String>,
    tls_only: bool,
}

/// The `pg_hba.conf` lines of a TLS-only server, ahead of everything else: any connection
/// without TLS is refused, replication included (the Unix socket cannot do TLS and stays open
/// for the harness's own tools).
const TLS_ONLY_HBA: &[&str] = &[
    "hostnossl all all all reject",
    "hostnossl replication all all reject",
];

impl PostgresBuilder {
    /// Set a server setting (`postgres -c name=value`), overriding the harness default.
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.to_string(), value.to_string()));
        self
    }

    /// Put a `pg_hba.conf` line ahead of the default `trust` rules (the first matching line
    /// wins), e.g. `host replication app 127.0.0.1/32 reject`.
    pub fn hba_rule(mut self, line: &str) -> Self {
        self.hba_rules.push(line.to_string());
        self
    }

    /// Serve TLS (`ssl=on`) with a certificate for `localhost` and `127.0.0.1` signed by a
    /// throwaway CA ([`Postgres::ca_cert_path`]), and refuse every TCP connection without TLS,
    /// replication included. The server trusts client certificates from the same CA
    /// ([`Postgres::issue_client_cert`]); `hba_rule("hostssl all all all cert")` requires them.
    pub fn tls_only(mut self) -> Self {
        self.tls_only = true;
        self
    }

    /// Start the server and wait until it accepts connections.
    pub fn start(self) -> Result<Postgres> {
        let bins = find_server_binaries()?;
        let run_as = RunAs::for_server("postgres")?;
        let template = ensure_template(&bins, run_as)?;
        let ca = if self.tls_only {
            Some(std::sync::Arc::new(TestCa::generate("splice test CA")?))
        } else {
            None
        };
        let mut last_error = None;
        // A port found free can be taken by a parallel test before the server binds it.
        for _attempt in 0..5 {
            match start_once(&bins, run_as, &template, &self, ca.clone()) {
                Ok(pg) => return Ok(pg),
                Err(e) => {
                    tracing::warn!("throwaway postgres did not start, retrying: {e:#}");
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("postgres did not start")))
    }
}

impl Postgres {
    /// Start a server with the harness defaults (wal_level=logical, 16 replication slots and
    /// WAL senders, fsync off).
    pub fn start() -> Result<Postgres> {
        PostgresBuilder::default().start()
    }

    /// Choose settings before starting.
    pub fn builder() -> PostgresBuilder {
        PostgresBuilder::default()
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`
    pub fn url(&self) -> String {
        self.url_as("postgres", "postgres")
    }

    /// A URL for another role or database on this server.
    pub fn url_as(&self, user: &str, database: &str) -> String {
        format!("postgres://{user}@127.0.0.1:{}/{database}", self.port)
    }

    /// The loopback TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Always `127.0.0.1`.
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The server's major version (15 for PostgreSQL 15).
    pub fn major_version(&self) -> u32 {
        self.major
    }

    /// The directory holding the server binaries this server runs from (`psql`, `pgbench`,
    /// `pg_recvlogical` are there too).
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The PEM file of the CA that signed a [`PostgresBuilder::tls_only`] server's certificate
    /// (`None` for a server without TLS).
    pub fn ca_cert_path(&self) -> Option<&Path> {
        self.ca_cert.as_deref()
    }

    /// A client certificate for role `user` from a [`PostgresBuilder::tls_only`] server's CA.
    pub fn issue_client_cert(&self, user: &str) -> Result<crate::IssuedCert> {
        match &self.ca {
            Some(ca) => ca.issue_client(user),
            None => bail!("this server has no TLS; start it with Postgres::builder().tls_only()"),
        }
    }

    /// The directory holding the server's unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// Run SQL through `psql` as the superuser and return its unaligned, tuples-only output.
    /// For setup in synchronous code; tests that stream use a real client.
    pub fn psql(&self, sql: &str) -> Result<String> {
        let out = Command::new(self.bindir.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(self.url())
            .arg("-c")
            .arg(sql)
            .stdin(Stdio::null())
            .output()
            .context("running psql")?;
        client_output("psql", sql, out)
    }

    /// Stop the server now (immediate shutdown) and delete its directory.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        tear_down(
            &mut self.watchdog,
            &mut self.child,
            libc::SIGQUIT,
            &self.dir,
            &self.dir.join("postgres.log"),
        );
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Where the server binaries are.
#[derive(Debug, Clone)]
struct ServerBinaries {
    bindir: PathBuf,
    major: u32,
}

/// `$SPLICE_PG_BINDIR`, else the highest `/usr/lib/postgresql/N/bin`, else `pg_config --bindir`.
fn find_server_binaries() -> Result<ServerBinaries> {
    let has_server = |dir: &Path| dir.join("postgres").is_file() && dir.join("initdb").is_file();
    let mut looked = Vec::new();
    if let Some(dir) = std::env::var_os("SPLICE_PG_BINDIR") {
        let dir = PathBuf::from(dir);
        if has_server(&dir) {
            let major = server_major(&dir)?;
            return Ok(ServerBinaries { bindir: dir, major });
        }
        bail!(
            "SPLICE_PG_BINDIR={} has no `postgres` and `initdb`; point it at a PostgreSQL server's bin directory",
            dir.display()
        );
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((major, entry.path().join("bin")))
        })
        .collect();
    versions.sort();
    looked.push("/usr/lib/postgresql/*/bin".to_string());
    if let Some((major, dir)) = versions.into_iter().rev().find(|(_, d)| has_server(d)) {
        return Ok(ServerBinaries { bindir: dir, major });
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        looked.push(dir.display().to_string());
        if has_server(&dir) {
            let major = server_major(&dir)?;
            return Ok(ServerBinaries { bindir: dir, major });
        }
    }
    bail!(
        "PostgreSQL server binaries (postgres, initdb) not found in {}; install postgresql-15: \
         apt-get install postgresql-15, or set SPLICE_PG_BINDIR to their directory",
        looked.join(", ")
    )
}

fn server_major(bindir: &Path) -> Result<u32> {
    let out = Command::new(bindir.join("postgres"))
        .arg("--version")
        .output()
        .with_context(|| format!("running {}/postgres --version", bindir.display()))?;
    // "postgres (PostgreSQL) 15.8 (Debian 15.8-0+deb12u1)"
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .nth(2)
        .and_then(|v| v.split('.').next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("unexpected `postgres --version` output: {text}"))
}

/// initdb once per server version into a template directory shared by every test process;
/// each server then starts from a copy, which is much faster than initdb.
fn ensure_template(bins: &ServerBinaries, run_as: RunAs) -> Result<PathBuf> {
    let template = scratch_root()?.join(format!(
        "template-pg{}-v{TEMPLATE_VERSION}-uid{}",
        bins.major, run_as.uid
    ));
    if template.join("PG_VERSION").is_file() {
        return Ok(template);
    }
    // Build it beside the final name and rename it in place: renaming onto an existing
    // non-empty directory fails, so a parallel builder that lost the race just cleans up.
    let building = unique_dir("template-building")?;
    run_as.chown_tree(&building)?;
    let mut cmd = Command::new(bins.bindir.join("initdb"));
    cmd.arg("-D")
        .arg(&building)
        .args([
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        ])
        .stdin(Stdio::null());
    run_as.apply(&mut cmd);
    let out = cmd
        .output()
        .with_context(|| format!("running {}/initdb", bins.bindir.display()))?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&building);
        bail!(
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if std::fs::rename(&building, &template).is_err() {
        let _ = std::fs::remove_dir_all(&building);
        if !template.join("PG_VERSION").is_file() {
            bail!("could not create the template at {}", template.display());
        }
    }
    Ok(template)
}

fn start_once(
    bins: &ServerBinaries,
    run_as: RunAs,
    template: &Path,
    builder: &PostgresBuilder,
    ca: Option<std::sync::Arc<TestCa>>,
) -> Result<Postgres> {
    let dir = unique_dir("pg")?;
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
    let mut hba_rules = builder.hba_rules.clone();
    let ca_cert = match &ca {
        Some(ca) => {
            tls_settings = write_tls_files(ca, &dir)?;
            hba_rules.splice(0..0, TLS_ONLY_HBA.iter().map(|l| l.to_string()));
            Some(dir.join("ca.crt"))
        }
        None => None,
    };
    if !hba_rules.is_empty() {
        let hba = data.join("pg_hba.conf");
        let default_rules = std::fs::read_to_string(&hba).context("reading pg_hba.conf")?;
        let mut rules = hba_rules.join("\n");
        rules.push('\n');
        rules.push_str(&default_rules);
        std::fs::write(&hba, rules).context("writing pg_hba.conf")?;
    }
    run_as.chown_tree(&dir)?;
    let port = free_port()?;
    let log_path = dir.join("postgres.log");
    let log = std::fs::File::create(&log_path).context("creating the server log")?;

    let mut cmd = Command::new(bins.bindir.join("postgres"));
    cmd.arg("-D")
        .arg(&data)
        .arg("-p")
        .arg(port.to_string())
        .arg("-k")
        .arg(&dir)
        .args(["-c", "listen_addresses=127.0.0.1"]);
    // Later settings win: defaults first, then the caller's.
    for (name, value) in DEFAULT_SETTINGS
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .chain(tls_settings)
        .chain(builder.settings.iter().cloned())
    {
        cmd.arg("-c").arg(format!("{name}={value}"));
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    run_as.apply(&mut cmd);
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}/postgres", bins.bindir.display()))?;
    let mut pg = Postgres {
        bindir: bins.bindir.clone(),
        dir,
        port,
        child: Some(child),
        watchdog: None,
        major: bins.major,
        ca_cert,
        ca,
    };
    wait_ready(&mut pg, &log_path)?;
    pg.watchdog = spawn_watchdog(&pg, run_as);
    Ok(pg)
}

/// The CA certificate, the server's certificate and its key (mode 0600, as the server
/// requires; the caller gives the directory to the server's account) in `dir`, and the
/// settings that serve them.
fn write_tls_files(ca: &TestCa, dir: &Path) -> Result<Vec<(String, String)>> {
    use std::os::unix::fs::PermissionsExt;
    let server = ca.issue_server(&["localhost", "127.0.0.1"])?;
    ca.write_cert(&dir.join("ca.crt"))?;
    let cert = dir.join("server.crt");
    let key = dir.join("server.key");
    std::fs::write(&cert, &server.cert_pem).context("writing server.crt")?;
    std::fs::write(&key, &server.key_pem).context("writing server.key")?;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
        .context("chmod 0600 server.key")?;
    Ok(vec![
        ("ssl".into(), "on".into()),
        ("ssl_cert_file".into(), cert.display().to_string()),
        ("ssl_key_file".into(), key.display().to_string()),
        (
            "ssl_ca_file".into(),
            dir.join("ca.crt").display().to_string(),
        ),
    ])
}

/// A small shell loop, running as the server's account, that stops the server and removes its
/// directory once this process is gone: a test killed by a timeout must not leave a server
/// running. It watches the process (not a thread, unlike PR_SET_PDEATHSIG, which would fire
/// when the thread that started the server ends). Best effort: `None` if it cannot start.
fn spawn_watchdog(pg: &Postgres, run_as: RunAs) -> Option<Child> {
    const SCRIPT: &str = "while [ -d /proc/$1 ]; do sleep 1; done; \
        \"$2/pg_ctl\" -D \"$3\" stop -m immediate >/dev/null 2>&1; rm -rf \"$4\"";
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(SCRIPT)
        .arg("splice-testkit-watchdog")
        .arg(std::process::id().to_string())
        .arg(&pg.bindir)
        .arg(pg.data_dir())
        .arg(&pg.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    run_as.apply(&mut cmd);
    cmd.spawn().ok()
}

/// Wait until postmaster.pid says "ready" (PostgreSQL 10+ writes its status there).
fn wait_ready(pg: &mut Postgres, log_path: &Path) -> Result<()> {
    let pid_file = pg.data_dir().join("postmaster.pid");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(child) = pg.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                bail!(
                    "postgres exited during startup ({status}) on port {}:\n{}",
                    pg.port,
                    log_tail(log_path, 20)
                );
            }
        }
        if let Ok(text) = std::fs::read_to_string(&pid_file) {
            if text.lines().nth(7).is_some_and(|l| l.trim() == "ready") {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!(
                "postgres did not become ready within 60s on port {}:\n{}",
                pg.port,
                log_tail(log_path, 20)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
