//! TLS end to end: the binary against a PostgreSQL that refuses every connection without TLS
//! (replication included), with the libpq `sslmode`s, the test CA, a wrong CA, and the PG*
//! environment.

mod common;
use common::text;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use testkit::{Postgres, TestCa};

const MIGRATION: &str = include_str!("../migrations/orders_v2.toml");

/// A TLS-only server with the example `orders` table, and a directory holding the migration.
struct TlsEnv {
    pg: Postgres,
    dir: PathBuf,
}

impl TlsEnv {
    fn new(rows: i64) -> TlsEnv {
        TlsEnv::with(Postgres::builder().tls_only(), rows)
    }

    fn with(builder: testkit::PostgresBuilder, rows: i64) -> TlsEnv {
        let pg = builder.start().expect("start a TLS-only PostgreSQL");
        pg.psql(&format!(
            "CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id bigint NOT NULL,
                                  amount numeric(12,2) NOT NULL, currency text, note text);
             INSERT INTO orders (customer_id, amount, currency, note)
             SELECT g % 97, (g % 1000) / 7.0, CASE WHEN g % 5 = 0 THEN NULL ELSE 'USD' END,
                    'n' || g FROM generate_series(1, {rows}) g;"
        ))
        .expect("create orders");
        let dir =
            std::env::temp_dir().join(format!("splice-tls-{}-{}", std::process::id(), pg.port()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("orders_v2.toml"), MIGRATION).expect("write migration");
        TlsEnv { pg, dir }
    }

    fn ca(&self) -> &Path {
        self.pg.ca_cert_path().expect("a TLS-only server has a CA")
    }

    /// The server's URL with `params` as its query.
    fn url(&self, params: &str) -> String {
        format!("{}?{params}", self.pg.url())
    }

    fn verify_full_url(&self) -> String {
        self.url(&format!(
            "sslmode=verify-full&sslrootcert={}",
            self.ca().display()
        ))
    }

    /// `splice ARGS` with `url` as the database and no other database setting in the
    /// environment.
    fn splice(&self, url: &str, args: &[&str]) -> Output {
        self.command(args)
            .env("SPLICE_DATABASE_URL", url)
            .output()
            .expect("run splice")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_splice"));
        // HOME is the test's directory: no ~/.pgpass or ~/.postgresql of the machine applies.
        c.args(args)
            .current_dir(&self.dir)
            .env("HOME", &self.dir)
            .stdin(Stdio::null());
        for var in [
            "SPLICE_DATABASE_URL",
            "DATABASE_URL",
            "PGHOST",
            "PGPORT",
            "PGUSER",
            "PGDATABASE",
            "PGPASSWORD",
            "PGPASSFILE",
            "PGSSLMODE",
            "PGSSLROOTCERT",
            "PGSSLCERT",
            "PGSSLKEY",
        ] {
            c.env_remove(var);
        }
        c
    }
}

impl Drop for TlsEnv {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// plan → expand → sync → verify → cutover → rollback through `url`, each exiting 0, with a
/// write after cutover carried back to the old table by the rollback (reverse sync, over the
/// replication connection).
fn lifecycle_passes(env: &TlsEnv, url: &str) {
    for args in [
        &["plan", "orders_v2.toml"][..],
        &["expand", "orders_v2.toml"],
        &["sync", "orders_v2", "--until-caught-up"],
        &["verify", "orders_v2"],
        &["cutover", "orders_v2"],
    ] {
        let out = env.splice(url, args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
    }
    // Reverse sync runs over the replication connection too: a write to the new table must
    // reach the old one before the rollback swaps back.
    env.pg
        .psql("UPDATE orders SET amount_cents = 12345 WHERE id = 10")
        .expect("write after cutover");
    let out = env.splice(url, &["rollback", "orders_v2"]);
    assert_eq!(out.status.code(), Some(0), "rollback: {}", text(&out));
    assert_eq!(
        env.pg
            .psql("SELECT amount::text FROM orders WHERE id = 10")
            .expect("read the old table"),
        "123.45",
        "the write after cutover is in the table the rollback restored"
    );
    let out = env.splice(url, &["status", "orders_v2", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    // Rolling back a cutover swaps back and resumes forward sync.
    assert_eq!(status["phase"], "syncing", "{status}");
}

#[test]
fn the_whole_lifecycle_passes_over_tls_with_sslmode_require() {
    let env = TlsEnv::new(500);
    let url = env.url("sslmode=require");
    lifecycle_passes(&env, &url);
}

#[test]
fn the_whole_lifecycle_passes_over_tls_with_verify_full_against_the_test_ca() {
    let env = TlsEnv::new(500);
    let url = env.verify_full_url();
    lifecycle_passes(&env, &url);
}

#[test]
fn cdc_tail_streams_changes_over_tls() {
    let env = TlsEnv::new(0);
    let url = env.verify_full_url();
    let tail = |extra: &[&str]| {
        let mut args = vec!["cdc", "tail", "--database-url", &url, "--table", "orders"];
        args.extend_from_slice(extra);
        env.command(&args).output().expect("run splice cdc tail")
    };
    // The first run creates the slot; what is written after it is captured.
    let out = tail(&["--idle-timeout", "100ms"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    env.pg
        .psql("INSERT INTO orders (id, customer_id, amount) VALUES (7, 1, 2.50)")
        .expect("insert");
    let out = tail(&["--limit", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let line: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .expect("one change printed"),
    )
    .expect("json");
    assert_eq!(line["op"], "insert");
    assert_eq!(line["key"]["id"], 7);
}

#[test]
fn a_wrong_ca_fails_with_an_error_naming_sslrootcert() {
    let env = TlsEnv::new(10);
    let wrong = env.dir.join("wrong-ca.crt");
    TestCa::generate("some other CA")
        .expect("CA")
        .write_cert(&wrong)
        .expect("write");
    let url = env.url(&format!(
        "sslmode=verify-full&sslrootcert={}",
        wrong.display()
    ));
    let expected = format!(
        "the server's certificate is not signed by the CA in sslrootcert={}",
        wrong.display()
    );

    let out = env.splice(&url, &["plan", "orders_v2.toml"]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&expected), "{}", text(&out));

    let out = env
        .command(&["cdc", "tail", "--database-url", &url, "--table", "orders"])
        .output()
        .expect("run splice cdc tail");
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&expected),
        "{}",
        text(&out)
    );
}

#[test]
fn an_unreadable_sslrootcert_is_named_in_the_error() {
    let env = TlsEnv::new(10);
    let missing = env.dir.join("no-such-ca.crt");
    let url = env.url(&format!(
        "sslmode=verify-full&sslrootcert={}",
        missing.display()
    ));
    let out = env.splice(&url, &["plan", "orders_v2.toml"]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(&format!("sslrootcert={}", missing.display())),
        "{}",
        text(&out)
    );
}

#[test]
fn sslmode_disable_against_a_tls_only_server_fails_suggesting_sslmode_require() {
    let env = TlsEnv::new(10);
    let out = env.splice(&env.url("sslmode=disable"), &["plan", "orders_v2.toml"]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("accepts only TLS"), "{}", text(&out));
    assert!(err.contains("use sslmode=require"), "{}", text(&out));
}

#[test]
fn pg_variables_connect_when_no_url_is_given() {
    let env = TlsEnv::new(10);
    let port = env.pg.port().to_string();
    let ca = env.ca().display().to_string();
    let out = env
        .command(&["plan", "orders_v2.toml"])
        .env("PGHOST", "localhost")
        .env("PGPORT", &port)
        .env("PGUSER", "postgres")
        .env("PGDATABASE", "postgres")
        .env("PGSSLMODE", "verify-full")
        .env("PGSSLROOTCERT", &ca)
        .output()
        .expect("run splice");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("_splice_orders_v2_new"),
        "{}",
        text(&out)
    );
}

#[test]
fn verify_full_refuses_a_host_name_the_certificate_does_not_list_and_verify_ca_accepts_it() {
    let env = TlsEnv::new(0);
    // Connect to the server's address under a name its certificate does not carry.
    let url = |mode: &str| {
        format!(
            "postgres://postgres@not-in-the-certificate.invalid:{}/postgres?hostaddr=127.0.0.1\
             &sslmode={mode}&sslrootcert={}",
            env.pg.port(),
            env.ca().display()
        )
    };

    let out = env.splice(&url("verify-full"), &["plan", "orders_v2.toml"]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("does not name host not-in-the-certificate.invalid"),
        "{}",
        text(&out)
    );
    assert!(err.contains("sslmode=verify-ca"), "{}", text(&out));

    // verify-ca checks only the chain, on the SQL and the replication connection alike.
    let out = env.splice(&url("verify-ca"), &["plan", "orders_v2.toml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let verify_ca = url("verify-ca");
    let out = env
        .command(&[
            "cdc",
            "tail",
            "--database-url",
            &verify_ca,
            "--table",
            "orders",
            "--idle-timeout",
            "100ms",
        ])
        .output()
        .expect("run splice cdc tail");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// `splice cdc tail` over `url` until 100 ms pass without a change: it opens an SQL session
/// and the replication connection, so success means both authenticated.
fn tail_briefly(env: &TlsEnv, url: &str, extra_env: &[(&str, &str)]) -> Output {
    let mut cmd = env.command(&[
        "cdc",
        "tail",
        "--database-url",
        url,
        "--table",
        "orders",
        "--idle-timeout",
        "100ms",
    ]);
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd.output().expect("run splice cdc tail")
}

fn write_private(path: &Path, contents: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, contents).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

#[test]
fn client_certificates_authenticate_the_sql_and_the_replication_connection() {
    let env = TlsEnv::with(
        Postgres::builder()
            .tls_only()
            .hba_rule("hostssl all app all cert")
            .hba_rule("hostssl replication app all cert"),
        0,
    );
    env.pg
        .psql("CREATE ROLE app LOGIN SUPERUSER REPLICATION")
        .expect("role");
    let issued = env.pg.issue_client_cert("app").expect("client certificate");
    let (cert, key) = (env.dir.join("app.crt"), env.dir.join("app.key"));
    write_private(&cert, &issued.cert_pem, 0o644);
    write_private(&key, &issued.key_pem, 0o600);
    let base = format!(
        "postgres://app@localhost:{}/postgres?sslmode=verify-full&sslrootcert={}",
        env.pg.port(),
        env.ca().display()
    );

    let with_cert = format!("{base}&sslcert={}&sslkey={}", cert.display(), key.display());
    let out = tail_briefly(&env, &with_cert, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let out = tail_briefly(&env, &base, &[]);
    assert_ne!(out.status.code(), Some(0), "no certificate: {}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("certificate"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_password_comes_from_pgpassword_or_a_private_password_file_and_is_never_printed() {
    const PASSWORD: &str = "s3cret-pw";
    let env = TlsEnv::with(
        Postgres::builder()
            .tls_only()
            .hba_rule("hostssl all app all scram-sha-256")
            .hba_rule("hostssl replication app all scram-sha-256"),
        0,
    );
    env.pg
        .psql(&format!(
            "SET password_encryption = 'scram-sha-256';
             CREATE ROLE app LOGIN SUPERUSER REPLICATION PASSWORD '{PASSWORD}'"
        ))
        .expect("role");
    let url = format!(
        "postgres://app@127.0.0.1:{}/postgres?sslmode=require",
        env.pg.port()
    );

    let out = tail_briefly(&env, &url, &[]);
    assert_ne!(out.status.code(), Some(0), "no password: {}", text(&out));

    let out = tail_briefly(&env, &url, &[("PGPASSWORD", PASSWORD)]);
    assert_eq!(out.status.code(), Some(0), "PGPASSWORD: {}", text(&out));

    let pgpass = env.dir.join("pgpass");
    let line = format!("127.0.0.1:{}:postgres:app:{PASSWORD}\n", env.pg.port());
    let pgpass_env = pgpass.display().to_string();
    write_private(&pgpass, &line, 0o600);
    let out = tail_briefly(&env, &url, &[("PGPASSFILE", &pgpass_env)]);
    assert_eq!(out.status.code(), Some(0), "PGPASSFILE: {}", text(&out));

    // Readable by others: ignored, with a warning that says how to fix it.
    write_private(&pgpass, &line, 0o644);
    let out = tail_briefly(&env, &url, &[("PGPASSFILE", &pgpass_env)]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("chmod 0600"), "{}", text(&out));
    assert!(!err.contains(PASSWORD), "{}", text(&out));
}
