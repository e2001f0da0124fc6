//! The migration commands end to end through the binary, against a real PostgreSQL server:
//! exit codes, crash-resume, and what each command prints.

mod common;
use common::text;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::Postgres;

/// The example migration the demo runs (quarantine 30d).
const MIGRATION: &str = include_str!("../migrations/orders_v2.toml");

struct Env {
    pg: Postgres,
    dir: std::path::PathBuf,
}

impl Env {
    fn new(rows: i64) -> Env {
        Env::on(Postgres::start().expect("start PostgreSQL"), rows)
    }

    /// The orders table and the example migration on `pg`.
    fn on(pg: Postgres, rows: i64) -> Env {
        pg.psql(&format!(
            "CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id bigint NOT NULL,
                                  amount numeric(12,2) NOT NULL, currency text, note text);
             INSERT INTO orders (customer_id, amount, currency, note)
             SELECT g % 97, (g % 1000) / 7.0, CASE WHEN g % 5 = 0 THEN NULL ELSE 'USD' END,
                    'n' || g FROM generate_series(1, {rows}) g;"
        ))
        .expect("create orders");
        let dir =
            std::env::temp_dir().join(format!("splice-cli-{}-{}", std::process::id(), pg.port()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("orders_v2.toml"), MIGRATION).expect("write migration");
        Env { pg, dir }
    }

    fn splice(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run splice")
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

    /// Runs a command, retrying while the previous (killed) runner's session is still being
    /// torn down by the server.
    fn splice_retrying(&self, args: &[&str]) -> Output {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = self.splice(args);
            let err = String::from_utf8_lossy(&out.stderr);
            let busy = err.contains("being run by another") || err.contains("is active for PID");
            if !busy || Instant::now() > deadline {
                return out;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Keys whose mapped old row differs from the new row, computed in SQL, not by splice.
    fn mismatches(&self) -> String {
        let differing = testkit::orders_divergence_sql("orders", "_splice_orders_v2_new");
        self.pg
            .psql(&format!(
                "SELECT string_agg(id::text, ',' ORDER BY id) FROM ({differing}) d"
            ))
            .expect("compare")
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write_load(url: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            use rand::{Rng, SeedableRng};
            let db = testkit::connect(&url).await.expect("connect");
            let mut rng = rand::rngs::StdRng::seed_from_u64(42);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let id: i64 = rng.random_range(1..30_000);
                let sql = match rng.random_range(0..10) {
                    0..=4 => format!(
                        "UPDATE orders SET amount = amount + 1, note = 'w{n}' WHERE id = {id}"
                    ),
                    5..=6 => {
                        "INSERT INTO orders (customer_id, amount) VALUES (3, 9.99)".to_string()
                    }
                    7 => format!("DELETE FROM orders WHERE id = {id}"),
                    _ => format!("UPDATE orders SET id = id + 10000000 WHERE id = {id}"),
                };
                let _ = db.batch_execute(&sql).await;
                n += 1;
                if n % 20 == 0 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            n
        })
    })
}

#[test]
fn sync_killed_with_sigkill_at_random_points_resumes_without_divergence() {
    let env = Env::new(30_000);
    let out = env.splice(&["expand", "orders_v2.toml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let stop = Arc::new(AtomicBool::new(false));
    let load = write_load(env.pg.url(), stop.clone());
    let mut kills = 0;
    for pause_ms in [400u64, 900, 250, 1300, 600] {
        let mut child = env
            .command(&[
                "sync",
                "orders_v2",
                "--rows-per-second",
                "8000",
                "--chunk-target",
                "20ms",
            ])
            .spawn()
            .expect("spawn sync");
        std::thread::sleep(Duration::from_millis(pause_ms));
        if child.try_wait().expect("poll").is_none() {
            child.kill().expect("kill -9");
            kills += 1;
        }
        let _ = child.wait();
        // Give the server a moment to notice the dead session before the restart.
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(kills >= 3, "sync was killed mid-run {kills} times");
    let copied: i64 = env
        .pg
        .psql("SELECT rows_copied FROM splice.migrations WHERE name = 'orders_v2'")
        .expect("checkpoint")
        .parse()
        .expect("number");
    assert!(copied > 0, "checkpoints survived the kills");

    let out = env.splice_retrying(&["sync", "orders_v2", "--until-caught-up"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    stop.store(true, Ordering::Relaxed);
    let writes = load.join().expect("load");
    assert!(writes > 200, "the load ran ({writes} statements)");
    let out = env.splice_retrying(&["sync", "orders_v2", "--until-caught-up"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(env.mismatches(), "", "every key equals the mapping");
}

#[test]
fn the_phase_commands_report_and_exit_with_meaningful_codes() {
    let env = Env::new(1_000);
    let out = env.splice(&["plan", "orders_v2.toml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(
        plan.contains("CREATE TABLE \"public\".\"_splice_orders_v2_new\""),
        "{plan}"
    );
    assert!(
        plan.contains("ACCESS EXCLUSIVE"),
        "plan names the locks: {plan}"
    );

    // Cutover before verify is a closed gate: exit 1.
    assert_eq!(
        env.splice(&["expand", "orders_v2.toml"]).status.code(),
        Some(0)
    );
    let out = env.splice(&["cutover", "orders_v2"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    assert_eq!(
        env.splice(&["sync", "orders_v2", "--until-caught-up"])
            .status
            .code(),
        Some(0)
    );
    env.pg
        .psql("UPDATE _splice_orders_v2_new SET note = 'tampered' WHERE id = 42")
        .expect("tamper");
    let out = env.splice(&["verify", "orders_v2"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("key id=42: 1 column(s) differ"),
        "{}",
        text(&out)
    );

    env.pg
        .psql("UPDATE _splice_orders_v2_new SET note = 'n42' WHERE id = 42")
        .expect("repair");
    let out = env.splice(&["verify", "orders_v2", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["passed"], true);
    assert_eq!(v["rows_checked"], 1000);

    let out = env.splice(&["cutover", "orders_v2"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("table locked for"),
        "{}",
        text(&out)
    );
    assert_eq!(
        env.splice(&["contract", "orders_v2"]).status.code(),
        Some(0)
    );
    let out = env.splice(&["drop", "orders_v2"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "drop before the quarantine expires: {}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("quarantine"),
        "{}",
        text(&out)
    );

    let out = env.splice(&["status", "orders_v2", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(s["phase"], "contracted");
    assert_eq!(s["rows_copied"], 1000);
    assert!(s["cutover_lock_ms"].as_f64().is_some());
    assert_eq!(s["history"].as_array().map(|h| h.len()), Some(5));
}

#[test]
fn a_missing_database_url_is_a_usage_error_naming_the_fix() {
    let out = Command::new(env!("CARGO_BIN_EXE_splice"))
        .args(["status"])
        .env_remove("SPLICE_DATABASE_URL")
        .env_remove("DATABASE_URL")
        .env_remove("PGHOST")
        .env_remove("PGDATABASE")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SPLICE_DATABASE_URL"));
}

/// Writes that work on either shape of `orders` (before and after cutover): note updates,
/// inserts, deletes and key updates, until `stop`.
fn shape_agnostic_load(
    url: String,
    stop: Arc<AtomicBool>,
    seed: u64,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            use rand::{Rng, SeedableRng};
            let db = testkit::connect(&url).await.expect("connect");
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let id: i64 = rng.random_range(1..3_000);
                let fresh = 50_000_000 + seed as i64 * 1_000_000 + n as i64;
                match rng.random_range(0..10) {
                    0..=4 => {
                        let _ = db
                            .batch_execute(&format!(
                                "UPDATE orders SET note = 'w{n}' WHERE id = {id}"
                            ))
                            .await;
                    }
                    5..=6 => {
                        // One of the two fits the live shape.
                        let old = format!(
                            "INSERT INTO orders (id, customer_id, amount) VALUES ({fresh}, 3, 9.99)"
                        );
                        if db.batch_execute(&old).await.is_err() {
                            let _ = db
                                .batch_execute(&format!(
                                    "INSERT INTO orders (id, customer_id, amount_cents, currency) \
                                     VALUES ({fresh}, 3, 999, 'USD')"
                                ))
                                .await;
                        }
                    }
                    7 => {
                        let _ = db
                            .batch_execute(&format!("DELETE FROM orders WHERE id = {id}"))
                            .await;
                    }
                    _ => {
                        let _ = db
                            .batch_execute(&format!(
                                "UPDATE orders SET id = id + 10000000 WHERE id = {id}"
                            ))
                            .await;
                    }
                }
                n += 1;
                if n % 10 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            n
        })
    })
}

impl Env {
    /// Runs `args` with the process set to abort at `point`; asserts it died there.
    fn killed_at(&self, point: &str, args: &[&str]) {
        let out = self
            .command(args)
            .env("SPLICE_FAULT_POINT", point)
            .output()
            .expect("run splice");
        assert!(
            out.status.code().is_none() && String::from_utf8_lossy(&out.stderr).contains(point),
            "{args:?} should have died at {point}: {}",
            text(&out)
        );
        // The server notices the dead sessions (and ends their transactions) in a moment.
        std::thread::sleep(Duration::from_millis(200));
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.splice_retrying(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn phase(&self) -> String {
        self.pg
            .psql("SELECT phase FROM splice.migrations WHERE name = 'orders_v2'")
            .expect("phase")
    }

    /// True when the table named `orders` has the new shape.
    fn new_shape_is_live(&self) -> bool {
        self.pg
            .psql(
                "SELECT count(*) FROM information_schema.columns \
                 WHERE table_schema = 'public' AND table_name = 'orders' \
                   AND column_name = 'amount_cents'",
            )
            .expect("columns")
            == "1"
    }

    /// Keys where `old` (old shape) and `new` (new shape) differ, computed in SQL.
    fn differing(&self, old: &str, new: &str) -> String {
        let differing = testkit::orders_divergence_sql(old, new);
        self.pg
            .psql(&format!(
                "SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '') FROM ({differing}) d"
            ))
            .expect("compare")
    }
}

#[test]
fn a_kill_at_every_named_point_of_cutover_rollback_contract_restore_and_drop_loses_nothing() {
    let env = Env::new(3_000);
    env.ok(&["expand", "orders_v2.toml"]);
    env.ok(&["sync", "orders_v2", "--until-caught-up"]);
    let stop = Arc::new(AtomicBool::new(false));
    let load = shape_agnostic_load(env.pg.url(), stop.clone(), 7);

    // Cutover and rollback after cutover, killed inside and around the swap; each re-run
    // finishes its command, and the recorded phase always says which table is live.
    let cutover_points = [
        "cutover.reverse_created",
        "swap.locked",
        "swap.drained",
        "swap.committed",
        "cutover.swapped",
    ];
    let rollback_points = [
        "swap.locked",
        "swap.drained",
        "swap.committed",
        "rollback.swapped",
        "swap.committed",
    ];
    for (cut, back) in cutover_points.iter().zip(rollback_points) {
        env.ok(&["sync", "orders_v2", "--until-caught-up"]);
        env.ok(&["verify", "orders_v2"]);
        env.killed_at(cut, &["cutover", "orders_v2"]);
        assert_eq!(
            env.new_shape_is_live(),
            env.phase() == "cut_over",
            "killed at {cut}: phase {} disagrees with the live table",
            env.phase()
        );
        env.ok(&["cutover", "orders_v2"]);
        assert!(env.new_shape_is_live(), "after cutover (killed at {cut})");
        env.killed_at(back, &["rollback", "orders_v2"]);
        assert_eq!(
            env.new_shape_is_live(),
            env.phase() == "cut_over",
            "rollback killed at {back}: phase {} disagrees with the live table",
            env.phase()
        );
        env.ok(&["rollback", "orders_v2"]);
        assert_eq!(env.phase(), "syncing");
        // Re-running the rollback that finished goes no further.
        let again = env.ok(&["rollback", "orders_v2"]);
        assert!(again.contains("nothing to do"), "{again}");
        assert_eq!(env.phase(), "syncing", "a second rollback did not abandon");
    }

    // Every write so far is in both tables.
    stop.store(true, Ordering::Relaxed);
    let writes = load.join().expect("load");
    assert!(writes > 100, "the load ran ({writes} statements)");
    env.ok(&["sync", "orders_v2", "--until-caught-up"]);
    assert_eq!(env.differing("orders", "_splice_orders_v2_new"), "");

    // Contract, restore from quarantine and drop, each killed between its changes.
    env.ok(&["verify", "orders_v2"]);
    env.ok(&["cutover", "orders_v2"]);
    env.killed_at("contract.quarantined", &["contract", "orders_v2"]);
    env.ok(&["contract", "orders_v2"]);
    assert_eq!(env.phase(), "contracted");
    let stop = Arc::new(AtomicBool::new(false));
    let load = shape_agnostic_load(env.pg.url(), stop.clone(), 8);
    std::thread::sleep(Duration::from_millis(500));
    env.killed_at("restore.moved", &["rollback", "orders_v2"]);
    env.killed_at("restore.copied", &["rollback", "orders_v2"]);
    env.ok(&["rollback", "orders_v2"]);
    assert_eq!(env.phase(), "cut_over");
    stop.store(true, Ordering::Relaxed);
    load.join().expect("load");
    env.ok(&["sync", "orders_v2", "--until-caught-up"]);
    assert_eq!(
        env.differing("_splice_orders_v2_old", "orders"),
        "",
        "the restored table equals the live one, rows deleted meanwhile included"
    );
    env.ok(&["contract", "orders_v2"]);
    env.killed_at("drop.dropped", &["drop", "orders_v2", "--force"]);
    env.ok(&["drop", "orders_v2", "--force"]);
    assert_eq!(env.phase(), "dropped");
}

#[test]
fn cutover_refuses_when_the_forward_slot_was_lost_and_never_recreates_it() {
    let env = Env::new(500);
    env.ok(&["expand", "orders_v2.toml"]);
    env.ok(&["sync", "orders_v2", "--until-caught-up"]);
    env.ok(&["verify", "orders_v2"]);
    // A DBA cleans up a "stale" slot, then the application writes.
    env.pg
        .psql("SELECT pg_drop_replication_slot('splice_orders_v2_fwd')")
        .expect("drop slot");
    env.pg
        .psql(
            "INSERT INTO orders (customer_id, amount) \
             SELECT 1, 1.00 FROM generate_series(1, 100)",
        )
        .expect("insert");
    let out = env.splice(&["cutover", "orders_v2"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("capture continuity is broken"), "{err}");
    assert!(err.contains("splice abort orders_v2"), "{err}");
    assert!(!env.new_shape_is_live(), "nothing was swapped");
    let slots = env
        .pg
        .psql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'splice_orders_v2_fwd'")
        .expect("slots");
    assert_eq!(slots, "0", "the slot was not re-created from now");
    // The way out works: abort, expand again, a fresh full sync carries every row.
    env.ok(&["abort", "orders_v2"]);
    env.ok(&["expand", "orders_v2.toml"]);
    env.ok(&["sync", "orders_v2", "--until-caught-up"]);
    assert_eq!(env.mismatches(), "");
}

#[test]
fn a_runner_frozen_while_holding_the_cutover_lock_does_not_block_the_table() {
    let env = Env::new(500);
    env.ok(&["expand", "orders_v2.toml"]);
    env.ok(&["sync", "orders_v2", "--until-caught-up"]);
    env.ok(&["verify", "orders_v2"]);
    // The runner freezes (SIGSTOP) with the table locked, inside the swap.
    let mut frozen = env
        .command(&["cutover", "orders_v2"])
        .env("SPLICE_FAULT_POINT", "swap.drained")
        .env("SPLICE_FAULT_ACTION", "stop")
        .spawn()
        .expect("spawn cutover");
    let stat = format!("/proc/{}/stat", frozen.id());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let state = std::fs::read_to_string(&stat).unwrap_or_default();
        if state.split(' ').nth(2) == Some("T") {
            break;
        }
        assert!(Instant::now() < deadline, "the runner never froze");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The application's next statement waits at most for the server to end the frozen
    // transaction (the swap's hold budget), not forever: with a lock_timeout far above that
    // budget it gets through while the runner is still frozen.
    let count = env
        .pg
        .psql("SET lock_timeout = '60s'; SELECT count(*) FROM orders")
        .expect("the table is usable while the runner is frozen");
    assert!(count.ends_with("500"), "{count}");
    assert!(
        frozen.try_wait().expect("poll").is_none(),
        "the runner was still frozen when the table became usable"
    );
    assert!(!env.new_shape_is_live(), "the frozen swap was rolled back");
    frozen.kill().expect("kill the frozen runner");
    let _ = frozen.wait();
    env.ok(&["cutover", "orders_v2"]);
    assert!(env.new_shape_is_live());
    assert_eq!(env.differing("_splice_orders_v2_old", "orders"), "");
}

#[test]
fn a_column_added_to_the_source_after_expand_is_refused_by_name_before_cutover() {
    let env = Env::new(300);
    env.ok(&["expand", "orders_v2.toml"]);
    env.ok(&["sync", "orders_v2", "--until-caught-up"]);
    env.ok(&["verify", "orders_v2"]);
    env.pg
        .psql(
            "ALTER TABLE orders ADD COLUMN discount_code text; \
             UPDATE orders SET discount_code = 'SPRING' WHERE id <= 10",
        )
        .expect("alter");
    for args in [
        &["sync", "orders_v2", "--until-caught-up"][..],
        &["verify", "orders_v2"][..],
        &["cutover", "orders_v2"][..],
    ] {
        let out = env.splice(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("column discount_code (text) was added"),
            "{args:?}: {err}"
        );
        assert!(err.contains("splice abort orders_v2"), "{args:?}: {err}");
    }
    assert!(!env.new_shape_is_live());
    let kept = env
        .pg
        .psql("SELECT count(*) FROM orders WHERE discount_code = 'SPRING'")
        .expect("count");
    assert_eq!(kept, "10");
}

#[test]
fn an_audit_trigger_records_each_application_write_once_before_and_after_cutover_and_rollback() {
    let env = Env::new(200);
    env.pg
        .psql(
            "CREATE TABLE audit (n bigserial, op text, id bigint);
             CREATE FUNCTION audit_orders() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               INSERT INTO audit (op, id) VALUES (TG_OP, CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END);
               RETURN NULL;
             END $$;
             CREATE TRIGGER orders_audit AFTER INSERT OR UPDATE OR DELETE ON orders
               FOR EACH ROW EXECUTE FUNCTION audit_orders();",
        )
        .expect("audit trigger");
    let audited = || -> i64 {
        env.pg
            .psql("SELECT count(*) FROM audit")
            .expect("count")
            .parse()
            .expect("number")
    };
    env.ok(&["expand", "orders_v2.toml"]);
    env.ok(&["sync", "orders_v2", "--until-caught-up"]);
    // Before cutover: 3 application writes, 3 audit rows (the applier's copies fire nothing).
    env.pg
        .psql("UPDATE orders SET note = 'a' WHERE id IN (1, 2); DELETE FROM orders WHERE id = 3")
        .expect("writes");
    env.ok(&["sync", "orders_v2", "--until-caught-up"]);
    assert_eq!(audited(), 3);
    env.ok(&["verify", "orders_v2"]);
    env.ok(&["cutover", "orders_v2"]);
    // After cutover: the trigger fires on the new live table; reverse sync's writes into the
    // old table fire nothing.
    env.pg
        .psql(
            "UPDATE orders SET note = 'b' WHERE id IN (4, 5); \
             INSERT INTO orders (id, customer_id, amount_cents, currency) VALUES (9001, 1, 100, 'EUR')",
        )
        .expect("writes after cutover");
    env.ok(&["sync", "orders_v2", "--until-caught-up"]);
    assert_eq!(
        audited(),
        6,
        "one audit row per application write after cutover"
    );
    // Rollback works with the trigger present and leaves each table its triggers.
    let out = env.splice(&["rollback", "orders_v2"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!env.new_shape_is_live());
    env.pg
        .psql("UPDATE orders SET note = 'c' WHERE id = 6")
        .expect("write after rollback");
    env.ok(&["sync", "orders_v2", "--until-caught-up"]);
    assert_eq!(
        audited(),
        7,
        "one audit row per application write after rollback"
    );
    assert_eq!(env.mismatches(), "");
    // Cutover again: the disabled copy on the new table is replaced, not duplicated.
    env.ok(&["verify", "orders_v2"]);
    env.ok(&["cutover", "orders_v2"]);
    env.pg
        .psql("UPDATE orders SET note = 'd' WHERE id = 7")
        .expect("write after the second cutover");
    env.ok(&["sync", "orders_v2", "--until-caught-up"]);
    assert_eq!(audited(), 8);
    let enabled = env
        .pg
        .psql(
            "SELECT string_agg(c.relname || ':' || t.tgenabled::text, ',' ORDER BY c.relname) \
             FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid WHERE t.tgname = 'orders_audit'",
        )
        .expect("triggers");
    assert_eq!(enabled, "_splice_orders_v2_old:D,orders:O");
}

#[test]
fn owner_rls_policies_column_grants_publications_and_properties_follow_the_live_name() {
    let env = Env::new(300);
    env.pg
        .psql(
            "CREATE ROLE app_owner; CREATE ROLE tenant; CREATE ROLE reader;
             ALTER TABLE orders OWNER TO app_owner;
             ALTER TABLE orders ENABLE ROW LEVEL SECURITY;
             CREATE POLICY tenant_rows ON orders FOR ALL TO tenant
               USING (customer_id = 7) WITH CHECK (customer_id = 7);
             GRANT SELECT, INSERT, UPDATE ON orders TO tenant;
             GRANT USAGE ON SEQUENCE orders_id_seq TO tenant;
             GRANT SELECT (id, note) ON orders TO reader;
             CREATE PUBLICATION downstream FOR TABLE orders;
             ALTER TABLE orders REPLICA IDENTITY FULL;
             ALTER TABLE orders SET (fillfactor = 90);
             COMMENT ON TABLE orders IS 'one row per order';
             COMMENT ON COLUMN orders.note IS 'free text';
             ALTER TABLE orders ALTER COLUMN customer_id SET STATISTICS 500;",
        )
        .expect("properties");
    let tenant_rows = env
        .pg
        .psql("SELECT count(*) FROM orders WHERE customer_id = 7")
        .expect("count");
    // What the application sees, and what the catalog says, for the table named `orders`.
    let check = |when: &str| {
        let q = |sql: &str| env.pg.psql(sql).unwrap_or_else(|e| format!("ERROR {e}"));
        assert_eq!(
            q("SELECT pg_get_userbyid(relowner) || ' ' || relrowsecurity || ' ' || relreplident::text || ' ' || array_to_string(reloptions, ',') || ' ' || obj_description(oid, 'pg_class') FROM pg_class WHERE oid = 'public.orders'::regclass"),
            "app_owner true f fillfactor=90 one row per order",
            "{when}: owner, RLS, replica identity, storage parameters, comment"
        );
        assert_eq!(
            q("SELECT string_agg(policyname || ':' || array_to_string(roles, ',') || ':' || qual, ';') FROM pg_policies WHERE tablename = 'orders'"),
            "tenant_rows:tenant:(customer_id = 7)",
            "{when}: the policy"
        );
        assert_eq!(
            q("SELECT col_description('public.orders'::regclass, attnum) || ' ' || (SELECT attstattarget FROM pg_attribute WHERE attrelid = 'public.orders'::regclass AND attname = 'customer_id') FROM pg_attribute WHERE attrelid = 'public.orders'::regclass AND attname = 'note'"),
            "free text 500",
            "{when}: column comment and statistics target"
        );
        assert_eq!(
            q("SELECT string_agg(schemaname || '.' || tablename, ',') FROM pg_publication_tables WHERE pubname = 'downstream'"),
            "public.orders",
            "{when}: the other publication follows the live name"
        );
        // The tenant sees only its rows and cannot write another tenant's.
        assert!(
            q("SET ROLE tenant; SELECT count(*) FROM orders").ends_with(&tenant_rows),
            "{when}: RLS keeps the tenant to its rows"
        );
        assert!(
            !q("SET ROLE tenant; UPDATE orders SET note = 'mine' WHERE customer_id = 7")
                .starts_with("ERROR"),
            "{when}: the tenant can still write its rows"
        );
        assert!(
            q("SET ROLE tenant; INSERT INTO orders (customer_id, note) VALUES (8, 'x')")
                .contains("row-level security"),
            "{when}: WITH CHECK still holds"
        );
        // The reader's column grant: id and note, nothing else.
        assert!(
            !q("SET ROLE reader; SELECT id, note FROM orders LIMIT 1").contains("ERROR"),
            "{when}: the column grant"
        );
        assert!(
            q("SET ROLE reader; SELECT customer_id FROM orders LIMIT 1")
                .contains("permission denied"),
            "{when}: only the granted columns"
        );
    };
    check("before");
    env.ok(&["expand", "orders_v2.toml"]);
    env.ok(&["sync", "orders_v2", "--until-caught-up"]);
    env.ok(&["verify", "orders_v2"]);
    env.ok(&["cutover", "orders_v2"]);
    check("after cutover");
    env.ok(&["rollback", "orders_v2"]);
    check("after rollback");
}

// ── guard rails ──

/// `splice ARGS` must exit `code` with `fragment` in its output (stdout or stderr).
fn expect_exit(env: &Env, args: &[&str], code: i32, fragment: &str) {
    let out = env.splice(args);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {all}");
    assert!(
        all.contains(fragment),
        "{args:?} should say {fragment:?}: {all}"
    );
}

#[test]
fn every_phase_gate_exits_1_naming_the_command_that_comes_next_and_reruns_say_already_done() {
    let env = Env::new(300);
    env.ok(&["expand", "orders_v2.toml"]);
    let sync_next = "next: `splice sync orders_v2 --until-caught-up`";
    // (phase, command) → exit code, message fragment.
    let expanded: &[(&[&str], i32, &str)] = &[
        (&["verify", "orders_v2"], 1, sync_next),
        (&["cutover", "orders_v2"], 1, sync_next),
        (&["contract", "orders_v2"], 1, sync_next),
        (&["drop", "orders_v2"], 1, sync_next),
        (
            &["expand", "orders_v2.toml"],
            0,
            "orders_v2 is already expanded",
        ),
        (&["sync", "nope"], 2, "no migration named nope"),
    ];
    for (args, code, fragment) in expanded {
        expect_exit(&env, args, *code, fragment);
    }
    // Cutover before sync must not send the operator to verify, which would refuse too.
    let out = env.splice(&["cutover", "orders_v2"]);
    assert!(!text(&out).contains("splice verify"), "{}", text(&out));

    env.ok(&["sync", "orders_v2", "--until-caught-up"]);
    let synced: &[(&[&str], i32, &str)] = &[
        (
            &["cutover", "orders_v2"],
            1,
            "next: `splice verify orders_v2`",
        ),
        (&["drop", "orders_v2"], 1, "next: `splice verify orders_v2`"),
    ];
    for (args, code, fragment) in synced {
        expect_exit(&env, args, *code, fragment);
    }
    env.ok(&["verify", "orders_v2"]);
    expect_exit(
        &env,
        &["contract", "orders_v2"],
        1,
        "next: `splice cutover orders_v2`",
    );
    env.ok(&["cutover", "orders_v2"]);
    expect_exit(
        &env,
        &["cutover", "orders_v2"],
        0,
        "orders_v2 is already cut over (at ",
    );
    let out = env.splice(&["cutover", "orders_v2"]);
    assert!(!text(&out).contains("table locked"), "{}", text(&out));
    expect_exit(
        &env,
        &["verify", "orders_v2"],
        1,
        "next: `splice contract orders_v2`",
    );
    env.ok(&["contract", "orders_v2", "--quarantine", "1h"]);
    expect_exit(
        &env,
        &["contract", "orders_v2"],
        0,
        "orders_v2 is already contracted",
    );
    env.ok(&["drop", "orders_v2", "--force"]);
    expect_exit(
        &env,
        &["drop", "orders_v2"],
        0,
        "orders_v2 is already dropped",
    );
    expect_exit(&env, &["sync", "orders_v2"], 1, "orders_v2 is dropped");

    // After a rollback: sync and verify refuse (exit 1, not 2) and name expand.
    let env = Env::new(100);
    env.ok(&["expand", "orders_v2.toml"]);
    env.ok(&["abort", "orders_v2"]);
    let rolled_back: &[(&[&str], i32, &str)] = &[
        (
            &["sync", "orders_v2", "--until-caught-up"],
            1,
            "next: `splice expand FILE`",
        ),
        (&["verify", "orders_v2"], 1, "next: `splice expand FILE`"),
        (&["cutover", "orders_v2"], 1, "next: `splice expand FILE`"),
    ];
    for (args, code, fragment) in rolled_back {
        expect_exit(&env, args, *code, fragment);
    }
}

#[test]
fn expand_refuses_a_second_migration_of_a_table_and_names_the_one_in_flight() {
    let env = Env::new(100);
    env.ok(&["expand", "orders_v2.toml"]);
    std::fs::write(
        env.dir.join("orders_v3.toml"),
        MIGRATION.replace("orders_v2", "orders_v3"),
    )
    .expect("write");
    expect_exit(
        &env,
        &["expand", "orders_v3.toml"],
        1,
        "public.orders already has a migration in flight: orders_v2 is expanded",
    );
    assert_eq!(
        env.pg
            .psql("SELECT count(*) FROM splice.migrations WHERE name = 'orders_v3'")
            .expect("count"),
        "0",
        "the refused migration left nothing behind"
    );
    env.ok(&["abort", "orders_v2"]);
    env.ok(&["expand", "orders_v3.toml"]);
}

#[test]
fn cdc_tail_refuses_a_migrations_slot_and_leaves_it_unconsumed() {
    let env = Env::new(100);
    env.ok(&["expand", "orders_v2.toml"]);
    env.ok(&["sync", "orders_v2", "--until-caught-up"]);
    env.pg
        .psql("UPDATE orders SET note = 'pending' WHERE id = 1")
        .expect("a change for the migration");
    let confirmed = || {
        env.pg
            .psql(
                "SELECT confirmed_flush_lsn FROM pg_replication_slots \
                 WHERE slot_name = 'splice_orders_v2_fwd'",
            )
            .expect("slot")
    };
    let before = confirmed();
    for slot in ["splice_orders_v2_fwd", "splice_orders_v2_rev"] {
        let out = env.splice(&[
            "cdc",
            "tail",
            "--table",
            "orders",
            "--slot",
            slot,
            "--idle-timeout",
            "200ms",
        ]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("change stream of migration orders_v2"),
            "{err}"
        );
        assert!(out.stdout.is_empty(), "{}", text(&out));
    }
    // A name of the migrations' form is reserved even when no such migration is registered.
    let out = env.splice(&[
        "cdc",
        "tail",
        "--table",
        "orders",
        "--slot",
        "splice_other_fwd",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("reserved for migrations"),
        "{}",
        text(&out)
    );
    assert_eq!(
        confirmed(),
        before,
        "nothing was acknowledged on the migration's slot"
    );
    let slots = env
        .pg
        .psql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'splice_other_fwd'")
        .expect("slots");
    assert_eq!(slots, "0", "no slot was created for a refused name");
}

#[test]
fn plan_checks_every_server_precondition_of_sync_and_says_when_rows_are_unknown() {
    // Never analyzed (too few rows for autovacuum): the row count is unknown, not ~0.
    let env = Env::new(10);
    let out = env.splice(&["plan", "orders_v2.toml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(plan.contains("rows: not analyzed"), "{plan}");
    assert!(!plan.contains("~0 rows"), "{plan}");
    env.pg.psql("ANALYZE orders").expect("analyze");
    let out = env.splice(&["plan", "orders_v2.toml"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("~10 rows"),
        "{}",
        text(&out)
    );

    // A role without REPLICATION: plan fails (exit 1) naming the fix.
    env.pg
        .psql(
            "CREATE ROLE app LOGIN; GRANT ALL ON SCHEMA public TO app; \
             GRANT ALL ON ALL TABLES IN SCHEMA public TO app; \
             GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO app",
        )
        .expect("role");
    let out = env
        .command(&["plan", "orders_v2.toml"])
        .env("SPLICE_DATABASE_URL", env.pg.url_as("app", "postgres"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("ALTER ROLE \"app\" WITH REPLICATION"),
        "{}",
        text(&out)
    );
    // ...and names the other grants sync needs of an ordinary role.
    assert!(
        text(&out).contains("pg_replication_origin_session_setup(text)"),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("GRANT pg_monitor TO"), "{}", text(&out));
    assert!(
        text(&out).contains("does not own public.orders"),
        "{}",
        text(&out)
    );
    // With REPLICATION and those grants, an ordinary role passes plan.
    env.pg
        .psql(
            "ALTER ROLE app WITH REPLICATION; GRANT pg_monitor TO app; \
             GRANT EXECUTE ON FUNCTION pg_replication_origin_create(text), \
             pg_replication_origin_session_setup(text), pg_replication_origin_drop(text) TO app; \
             ALTER TABLE orders OWNER TO app",
        )
        .expect("grants");
    let out = env
        .command(&["plan", "orders_v2.toml"])
        .env("SPLICE_DATABASE_URL", env.pg.url_as("app", "postgres"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // Replication granted through membership, as Amazon RDS does it, counts.
    env.pg
        .psql("ALTER ROLE app WITH NOREPLICATION; CREATE ROLE rds_replication; GRANT rds_replication TO app")
        .expect("membership");
    let out = env
        .command(&["plan", "orders_v2.toml"])
        .env("SPLICE_DATABASE_URL", env.pg.url_as("app", "postgres"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // A replica identity that does not cover the key is named too.
    env.pg
        .psql("ALTER TABLE orders REPLICA IDENTITY NOTHING")
        .expect("identity");
    let out = env.splice(&["plan", "orders_v2.toml"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("replica identity"), "{}", text(&out));

    // wal_level=replica: sync would fail, so plan does (exit 1), naming the setting.
    let pg = testkit::Postgres::builder()
        .setting("wal_level", "replica")
        .start()
        .expect("start");
    pg.psql("CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id bigint NOT NULL, amount numeric(12,2) NOT NULL, currency text, note text)")
        .expect("table");
    let out = env
        .command(&["plan", "orders_v2.toml"])
        .env("SPLICE_DATABASE_URL", pg.url())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("wal_level"), "{}", text(&out));
    assert!(text(&out).contains("logical"), "{}", text(&out));
}

#[test]
fn every_session_is_named_for_its_command_and_a_second_runner_names_the_first() {
    let env = Env::new(2_000);
    env.ok(&["expand", "orders_v2.toml"]);
    // A sync that follows changes until stopped.
    let mut child = env
        .command(&["sync", "orders_v2", "--rows-per-second", "200"])
        .spawn()
        .expect("spawn sync");
    let deadline = Instant::now() + Duration::from_secs(20);
    let names = loop {
        let names = env
            .pg
            .psql(
                "SELECT string_agg(DISTINCT application_name, '|' ORDER BY application_name) \
                 FROM pg_stat_activity WHERE application_name LIKE 'splice%'",
            )
            .expect("activity");
        if names.contains("(splice_orders_v2_fwd)") || Instant::now() > deadline {
            break names;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(names.contains("splice sync orders_v2"), "{names}");
    assert!(
        names.contains("splice sync orders_v2 (splice_orders_v2_fwd)"),
        "the replication connection is named too: {names}"
    );
    let out = env.splice(&["sync", "orders_v2", "--until-caught-up"]);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`splice sync orders_v2` from"), "{err}");
    assert!(err.contains("backend pid"), "{err}");
    assert!(!err.contains("wait for it to finish"), "{err}");
    assert!(err.contains("until it is stopped"), "{err}");
}

#[test]
fn views_over_a_retyped_column_are_re_created_in_order_with_their_owner_grants_and_options() {
    let env = Env::new(200);
    env.pg
        .psql(
            "CREATE ROLE report_owner; CREATE ROLE analyst;
             CREATE VIEW order_notes WITH (security_barrier) AS SELECT id, currency, note FROM orders;
             CREATE VIEW usd_notes AS SELECT id, note FROM order_notes WHERE currency = 'USD';
             ALTER VIEW order_notes OWNER TO report_owner;
             GRANT SELECT ON orders TO report_owner;
             GRANT SELECT ON usd_notes TO analyst;
             COMMENT ON VIEW usd_notes IS 'for the monthly report';",
        )
        .expect("views");
    let describe = |when: &str| -> String {
        env.pg
            .psql(
                "SELECT string_agg(c.relname || ' ' || pg_get_userbyid(c.relowner) || ' ' ||
                                   coalesce(array_to_string(c.reloptions, ','), '-') || ' ' ||
                                   coalesce(obj_description(c.oid, 'pg_class'), '-') || ' ' ||
                                   coalesce(array_to_string(c.relacl, ','), '-'), E'\\n' ORDER BY c.relname)
                 FROM pg_class c WHERE c.relname IN ('order_notes', 'usd_notes')",
            )
            .unwrap_or_else(|e| panic!("{when}: {e}"))
    };
    let before = describe("before");
    let currency_type = || {
        env.pg
            .psql("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'order_notes'::regclass AND attname = 'currency'")
            .expect("type")
    };
    assert_eq!(currency_type(), "text");
    let usd_before = env
        .pg
        .psql("SELECT count(*) FROM usd_notes")
        .expect("count");
    env.ok(&["expand", "orders_v2.toml"]);
    env.ok(&["sync", "orders_v2", "--until-caught-up"]);
    env.ok(&["verify", "orders_v2"]);
    env.ok(&["cutover", "orders_v2"]);
    // The view now reads the new table: currency is char(3), and everything else is as it was.
    assert_eq!(currency_type(), "character(3)");
    assert_eq!(describe("after cutover"), before);
    assert_eq!(
        env.pg
            .psql("SELECT count(*) FROM usd_notes")
            .expect("count"),
        usd_before
    );
    let reads_new = env
        .pg
        .psql("SELECT count(*) FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid WHERE r.ev_class = 'order_notes'::regclass AND d.refobjid = 'public.orders'::regclass")
        .expect("depends");
    assert_ne!(reads_new, "0", "order_notes reads the live table");
    env.ok(&["rollback", "orders_v2"]);
    assert_eq!(currency_type(), "text");
    assert_eq!(describe("after rollback"), before);
}

#[test]
fn plan_refuses_partitioned_tables_and_materialized_views_and_status_shows_retained_wal() {
    let env = Env::new(100);
    env.pg
        .psql("CREATE MATERIALIZED VIEW order_totals AS SELECT customer_id, sum(amount) FROM orders GROUP BY 1")
        .expect("matview");
    let out = env.splice(&["plan", "orders_v2.toml"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("materialized view public.order_totals"),
        "{}",
        text(&out)
    );
    let out = env.splice(&["expand", "orders_v2.toml"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("order_totals"),
        "{}",
        text(&out)
    );
    env.pg
        .psql("DROP MATERIALIZED VIEW order_totals")
        .expect("drop matview");
    env.ok(&["expand", "orders_v2.toml"]);
    env.ok(&["sync", "orders_v2", "--until-caught-up"]);
    let status = env.ok(&["status", "orders_v2", "--history"]);
    assert!(
        status.contains("slot splice_orders_v2_fwd: retains") && status.contains("wal_status"),
        "{status}"
    );
    let json = env.ok(&["status", "orders_v2", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    let slots = &v["slots"];
    assert_eq!(slots[0]["slot"], "splice_orders_v2_fwd", "{v}");
    assert!(slots[0]["retained_wal_bytes"].as_i64().is_some(), "{v}");

    // A partitioned table is refused by plan, before anything is created.
    env.pg
        .psql(
            "CREATE TABLE events (id bigint, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
             CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');",
        )
        .expect("partitioned");
    std::fs::write(
        env.dir.join("events.toml"),
        "name = \"events_v2\"\ntable = \"public.events\"\nalter = \"ALTER TABLE events ADD COLUMN note text\"\n",
    )
    .expect("write");
    let out = env.splice(&["plan", "events.toml"]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("partitioned table"),
        "{}",
        text(&out)
    );
}

#[test]
fn sync_warns_when_a_slot_keeps_more_wal_than_the_threshold() {
    // max_slot_wal_keep_size = 64MB: sync warns above half of it.
    let pg = Postgres::builder()
        .setting("max_slot_wal_keep_size", "64MB")
        .start()
        .expect("start PostgreSQL");
    let env = Env::on(pg, 100);
    env.ok(&["expand", "orders_v2.toml"]);
    env.ok(&["sync", "orders_v2", "--until-caught-up"]);
    let quiet = env.splice(&["sync", "orders_v2", "--until-caught-up"]);
    assert!(
        !String::from_utf8_lossy(&quiet.stderr).contains("warning threshold"),
        "{}",
        text(&quiet)
    );
    // With no sync running, the application writes ~40 MB of WAL the slot must keep.
    env.pg
        .psql(
            "CREATE TABLE filler (b text); \
             INSERT INTO filler SELECT repeat('x', 1000) FROM generate_series(1, 40000)",
        )
        .expect("filler");
    let out = env.splice(&["sync", "orders_v2", "--until-caught-up"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("warning threshold"),
        "{}",
        text(&out)
    );
    let status = env.ok(&["status", "orders_v2", "--json"]);
    assert!(status.contains("retained_wal_bytes"), "{status}");
}

#[test]
fn verify_incremental_says_which_pass_ran_and_what_it_re_read() {
    let env = Env::new(1_000);
    env.ok(&["expand", "orders_v2.toml"]);
    env.ok(&["sync", "orders_v2", "--until-caught-up"]);
    // Nothing stored yet: a full pass, and the report says why.
    let out = env.splice(&["verify", "orders_v2", "--incremental", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["kind"], "full");
    assert!(
        v["full_because"]
            .as_str()
            .is_some_and(|w| w.contains("first verify is always full")),
        "{v}"
    );
    assert_eq!(v["rows_checked"], 1000);
    assert_eq!(v["ranges"], v["ranges_total"]);

    // One row changes through capture: the incremental pass re-reads only its range.
    env.pg
        .psql("UPDATE orders SET note = 'changed' WHERE id = 42")
        .expect("change");
    let out = env.splice(&["verify", "orders_v2", "--incremental"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let line = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        line.contains("incremental pass, ") && line.contains("rows re-read in 1 of "),
        "{line}"
    );
    assert!(line.contains("cutover allowed"), "{line}");

    // The default is still a full pass.
    let out = env.splice(&["verify", "orders_v2", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["kind"], "full");
    assert!(v.get("full_because").is_none(), "{v}");
    assert_eq!(v["rows_checked"], 1000);
}
