//! The migration commands end to end through the binary, against a real PostgreSQL server:
//! exit codes, crash-resume, and what each command prints.

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
        let pg = Postgres::start().expect("start PostgreSQL");
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

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
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
        String::from_utf8_lossy(&out.stdout).contains("key (42)"),
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
