//! What an operator runs a migration from, end to end against a real PostgreSQL: the progress
//! line's states, `splice status`'s one line and its stale figures, verify's divergence
//! report, `cdc tail`'s notes about its slot, and the demo's application.

mod common;
use common::text;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use testkit::Postgres;

const MIGRATION: &str = include_str!("../migrations/orders_v2.toml");

struct Env {
    pg: Postgres,
    dir: std::path::PathBuf,
}

impl Env {
    fn new(rows: i64) -> Env {
        let pg = Postgres::start().expect("start PostgreSQL");
        pg.psql(&format!(
            "CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id bigint NOT NULL,
                                  amount numeric(12,2) NOT NULL, currency text, note text);
             INSERT INTO orders (customer_id, amount, currency, note)
             SELECT g % 97, (g % 1000) / 7.0, CASE WHEN g % 5 = 0 THEN NULL ELSE 'USD' END,
                    'n' || g FROM generate_series(1, {rows}) g;
             ANALYZE orders;"
        ))
        .expect("create orders");
        let dir = std::env::temp_dir().join(format!(
            "splice-operator-{}-{}",
            std::process::id(),
            pg.port()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("orders_v2.toml"), MIGRATION).expect("write migration");
        Env { pg, dir }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_splice"));
        c.args(args)
            .current_dir(&self.dir)
            .env("SPLICE_DATABASE_URL", self.pg.url())
            .env_remove("DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    fn splice(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run splice")
    }

    /// Runs a command that must exit 0; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.splice(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn the_progress_line_says_it_waits_for_the_rate_limit_and_names_the_session_holding_the_lock() {
    let env = Env::new(12_000);
    env.ok(&["expand", "orders_v2.toml"]);
    let sync = env
        .command(&[
            "sync",
            "orders_v2",
            "--until-caught-up",
            "--rows-per-second",
            "2000",
        ])
        .spawn()
        .expect("start sync");
    // While it copies: status names the runner and the rate's source.
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let s = env.ok(&["status", "orders_v2"]);
        if s.contains("run by `splice sync orders_v2`") && s.contains("rows/s") {
            break s;
        }
        assert!(Instant::now() < deadline, "no runner in status: {s}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        status.contains("rate 2000 rows/s from --rows-per-second"),
        "{status}"
    );
    assert_eq!(status.lines().count(), 1, "{status}");
    // A session holds a lock the next chunk needs, for 4 s.
    env.pg
        .psql("BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(4); COMMIT;")
        .expect("hold the lock");
    let out = sync.wait_with_output().expect("sync");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("for the rate limit (2000 rows/s)"), "{err}");
    let blocked = err
        .lines()
        .find(|l| l.contains("on a lock held by pid"))
        .unwrap_or_else(|| panic!("no blocked state in {err}"));
    assert!(
        blocked.contains("(psql)") && blocked.contains("LOCK TABLE orders"),
        "the holder and its query: {blocked}"
    );
    assert!(
        err.lines()
            .any(|l| l.starts_with("[####################] 100.0%")),
        "the bar ends full: {err}"
    );
}

#[test]
fn status_is_one_line_per_migration_and_drops_figures_a_rollback_made_stale() {
    let env = Env::new(2_000);
    env.ok(&["expand", "orders_v2.toml"]);
    let before = env.ok(&["status"]);
    assert!(
        before.contains("orders_v2 (public.orders): expanded | not synced yet"),
        "{before}"
    );
    assert!(!before.contains("0/0"), "{before}");
    env.ok(&["sync", "orders_v2", "--until-caught-up"]);
    env.ok(&["verify", "orders_v2"]);
    env.ok(&["cutover", "orders_v2"]);
    let cut = env.ok(&["status", "orders_v2"]);
    assert!(cut.contains("verify passed at"), "{cut}");
    assert!(cut.contains("backfill complete (2000 rows)"), "{cut}");
    assert!(
        !cut.contains("rows/s"),
        "no rate once no sync copies: {cut}"
    );
    env.ok(&["rollback", "orders_v2"]);
    let after = env.ok(&["status", "orders_v2"]);
    assert!(after.contains(": syncing |"), "{after}");
    assert!(
        !after.contains("verify passed") && after.contains("not verified"),
        "the verify from before the cutover is stale after the rollback: {after}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&env.ok(&["status", "orders_v2", "--json"])).expect("json");
    assert!(json["last_verify"].is_null(), "{json}");
    assert_eq!(json["backfill"]["state"], "complete", "{json}");
    let history = env.ok(&["status", "orders_v2", "--history"]);
    assert!(history.contains("verified → cut_over by"), "{history}");
    assert!(history.contains("cut_over → syncing by"), "{history}");
}

#[test]
fn verify_names_the_key_once_and_the_differing_column_with_expected_and_found() {
    let env = Env::new(500);
    env.ok(&["expand", "orders_v2.toml"]);
    env.ok(&["sync", "orders_v2", "--until-caught-up"]);
    // A write past capture: straight into the new table.
    env.pg
        .psql("UPDATE _splice_orders_v2_new SET note = 'tampered' WHERE id = 5")
        .expect("tamper");
    let out = env.splice(&["verify", "orders_v2"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("  key id=5: 1 column(s) differ\n"),
        "{report}"
    );
    assert!(
        report.contains("note  expected n5  found tampered"),
        "{report}"
    );
    assert!(!report.contains('\t'), "no raw tuples: {report}");
    assert!(
        report.contains("UPDATE <old table> SET id = id WHERE id IN ('5')"),
        "{report}"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&env.splice(&["verify", "orders_v2", "--json"]).stdout)
            .expect("json");
    assert_eq!(
        json["diverged"][0]["differences"][0]["column"], "note",
        "{json}"
    );
    assert_eq!(
        json["diverged"][0]["differences"][0]["found"], "tampered",
        "{json}"
    );
}

#[test]
fn cdc_tail_says_which_slot_it_created_and_that_it_keeps_wal_until_dropped() {
    let env = Env::new(10);
    let tail = |extra: &[&str]| {
        let mut args = vec!["cdc", "tail", "--table", "orders", "--idle-timeout", "1s"];
        args.extend_from_slice(extra);
        env.splice(&args)
    };
    let first = tail(&[]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    let err = String::from_utf8_lossy(&first.stderr);
    assert!(
        err.contains("note: created replication slot splice_tail"),
        "{err}"
    );
    assert!(
        err.contains("splice_tail stays and keeps WAL on the server until it is dropped"),
        "{err}"
    );
    let second = tail(&["--drop-slot"]);
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("note: resuming replication slot splice_tail"),
        "{err}"
    );
    assert!(
        err.contains("note: dropped replication slot splice_tail"),
        "{err}"
    );
    let slots = env
        .pg
        .psql("SELECT count(*) FROM pg_replication_slots")
        .expect("slots");
    assert_eq!(slots, "0");
}

#[test]
fn the_demo_application_writes_statements_valid_in_both_shapes_so_none_fails() {
    let out = Command::new(env!("CARGO_BIN_EXE_splice"))
        .args(["demo", "--rows", "20000", "--writes-per-second", "300"])
        .stdin(Stdio::null())
        .output()
        .expect("run the demo");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report = String::from_utf8_lossy(&out.stdout);
    let writes = report
        .lines()
        .find(|l| l.trim_start().starts_with("application writes"))
        .unwrap_or_else(|| panic!("no writes line: {report}"));
    assert!(writes.contains("(0 failed;"), "{report}");
    // And it kept writing: no statement stalls the application.
    let made: u64 = writes
        .split_whitespace()
        .nth(2)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(made >= 300, "only {made} writes: {report}");
    assert!(!report.contains("first failed write"), "{report}");
}

#[test]
fn ctrl_c_prints_its_message_on_a_line_of_its_own_and_the_sync_exits_0() {
    let env = Env::new(1_000);
    env.ok(&["expand", "orders_v2.toml"]);
    let sync = env
        .command(&["sync", "orders_v2"])
        .spawn()
        .expect("start sync");
    // Wait until it follows changes (its runner shows in status and the backfill is done).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = env.ok(&["status", "orders_v2"]);
        if s.contains("backfill complete") && s.contains("run by `splice sync") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sync never followed changes: {s}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let killed = Command::new("kill")
        .args(["-INT", &sync.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(killed.success());
    let out = sync.wait_with_output().expect("sync");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.lines()
            .any(|l| l == "stopping: finishing the current chunk and saving the checkpoint…"),
        "{err}"
    );
    assert!(
        // (`following changes, pace N% (…)` while the impact budget holds the applier back.)
        err.lines().any(|l| l.contains("| following changes")),
        "{err}"
    );
}
