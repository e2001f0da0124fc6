//! `splice daemon` on a `mysql://` URL, end to end through the binary against a throwaway
//! MariaDB 10.11: the same scenarios as on PostgreSQL (tests/daemon.rs). It checkpoints a
//! backfill on SIGTERM and a restarted daemon carries on; it takes pause, throttle, resume,
//! cutover and rollback over HTTP under write load; it cuts over on its own once the gates held
//! and rolls back on its own when the watch turns false. Every row is compared at the end in
//! SQL written here, independently of verify.

use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::MariaDb;

#[path = "common/daemon.rs"]
mod harness;
use harness::{control_actions, control_event, Daemon};

const MIGRATION: &str = include_str!("../migrations/mysql/orders_v2.toml");
const PASSES: &str = "splice_verify_passes{migration=\"orders_v2\"}";
const ROWS: u32 = 20_000;

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("splice-daemon-mysql-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("orders_v2.toml"), MIGRATION).expect("write migration");
    dir
}

/// `shop.orders` in the migration file's old shape, `rows` rows (MariaDB's sequence engine).
fn create_orders(db: &MariaDb, rows: u32) {
    db.sql(&format!(
        "CREATE DATABASE shop; \
         CREATE TABLE shop.orders (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, \
           amount DECIMAL(12,2) NOT NULL, note VARCHAR(200) NULL, \
           created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) ENGINE=InnoDB; \
         USE shop; \
         INSERT INTO shop.orders (id, amount, note) \
           SELECT seq, (seq % 1000) / 7, IF(seq % 5 = 0, NULL, CONCAT('n', seq)) \
           FROM seq_1_to_{rows}"
    ))
    .expect("orders");
}

fn splice(db: &MariaDb, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_splice"))
        .args(args)
        .env("SPLICE_DATABASE_URL", db.url())
        .env_remove("DATABASE_URL")
        .stdin(Stdio::null())
        .output()
        .expect("run splice")
}

fn status_json(db: &MariaDb) -> serde_json::Value {
    let out = splice(db, &["status", "orders_v2", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

/// The application across a cutover and back: updates, inserts, deletes and key changes that
/// work on whichever shape `shop.orders` has (old: `amount`; new: `amount_cents`).
fn write_load_any_shape(url: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            use mysql_async::prelude::Queryable;
            use rand::{Rng, SeedableRng};
            let opts = mysql_async::Opts::from_url(&url).expect("url");
            let mut db = mysql_async::Conn::new(opts).await.expect("connect");
            let mut rng = rand::rngs::StdRng::seed_from_u64(19);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let id: i64 = rng.random_range(1..i64::from(ROWS));
                let sql = match rng.random_range(0..10) {
                    0..=4 => format!("UPDATE shop.orders SET note = 'w{n}' WHERE id = {id}"),
                    5..=6 => {
                        let old = "INSERT INTO shop.orders (amount, note) VALUES (9.99, 'new')";
                        if db.query_drop(old).await.is_ok() {
                            n += 1;
                            continue;
                        }
                        "INSERT INTO shop.orders (amount_cents, note) VALUES (999, 'new')".into()
                    }
                    7 => format!("DELETE FROM shop.orders WHERE id = {id}"),
                    _ => format!("UPDATE shop.orders SET id = id + 10000000 WHERE id = {id}"),
                };
                let _ = db.query_drop(sql).await;
                n += 1;
                if n % 20 == 0 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            let _ = db.disconnect().await;
            n
        })
    })
}

/// Whether `shop.orders` has the old shape (`amount`) rather than the new one.
fn old_shape_live(db: &MariaDb) -> bool {
    db.sql(
        "SELECT COUNT(*) FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = 'shop' AND TABLE_NAME = 'orders' AND COLUMN_NAME = 'amount'",
    )
    .expect("columns")
        == "1"
}

/// Keys where `new` (the new shape) is not the mapping of `old` (the old shape), either way.
fn differing(db: &MariaDb, old: &str, new: &str) -> String {
    db.sql(&format!(
        "SELECT COUNT(*) FROM ( \
           SELECT o.id FROM shop.{old} o LEFT JOIN shop.{new} n ON n.id = o.id \
            WHERE n.id IS NULL OR n.amount_cents <> ROUND(o.amount * 100) \
               OR NOT (n.note <=> o.note) OR n.created_at <> o.created_at \
           UNION ALL \
           SELECT n.id FROM shop.{new} n LEFT JOIN shop.{old} o ON o.id = n.id \
            WHERE o.id IS NULL) d"
    ))
    .expect("compare")
}

/// Polls until no row differs between the two shapes (the sync applies what the application
/// wrote last), failing at the deadline with how many do.
fn rows_match(db: &MariaDb, old: &str, new: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = differing(db, old, new);
        if n == "0" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{n} rows differ between {old} and {new}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Writes a note to one row of the live table and waits until `other` has it: the sync
/// between the two (forward or reverse) is running.
fn note_reaches(db: &MariaDb, other: &str, note: &str) {
    let id = db.sql("SELECT MIN(id) FROM shop.orders").expect("a row");
    db.sql(&format!(
        "UPDATE shop.orders SET note = '{note}' WHERE id = {id}"
    ))
    .expect("write");
    let deadline = Instant::now() + Duration::from_secs(60);
    while db
        .sql(&format!("SELECT note FROM shop.{other} WHERE id = {id}"))
        .expect("read")
        != note
    {
        assert!(Instant::now() < deadline, "{note} never reached {other}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn sigterm_mid_backfill_then_pause_throttle_resume_over_http_and_verified_under_load() {
    let db = MariaDb::start().expect("MariaDB");
    create_orders(&db, ROWS);
    let dir = temp_dir("drive");
    // Slow enough that SIGTERM lands mid-backfill (about ten seconds for the table).
    std::fs::write(
        dir.join("orders_v2.toml"),
        format!("{MIGRATION}rows_per_second = 2000\n"),
    )
    .expect("write migration");
    let mut daemon = Daemon::start(&dir, &db.url(), &["orders_v2.toml"]);
    assert_eq!(daemon.get("/healthz/live").0, 200);
    daemon.metrics_until("a backfill under way", |m| {
        m.get("splice_backfill_rows_copied{migration=\"orders_v2\"}")
            .is_some_and(|n| n > 0.0)
    });
    let json = daemon.migration();
    assert_eq!(json["activity"]["state"], "backfilling", "{json}");
    assert_eq!(
        daemon.terminate(Duration::from_secs(10)),
        Some(0),
        "{}",
        daemon.log()
    );
    let status = status_json(&db);
    let copied = status["rows_copied"].as_i64().expect("rows_copied");
    assert_eq!(status["backfill_done"], false, "{status}");
    assert!(
        copied > 0 && copied < i64::from(ROWS),
        "checkpointed mid-way: {status}"
    );

    // Restarted under write load, it carries on from the checkpoint; the API pauses it,
    // lifts its rate limit and resumes it.
    let stop = Arc::new(AtomicBool::new(false));
    let load = write_load_any_shape(db.url(), stop.clone());
    let mut daemon = Daemon::start(
        &dir,
        &db.url(),
        &["--verify-interval", "1s", "orders_v2.toml"],
    );
    let (code, body) = daemon.post("/api/v1/migrations/orders_v2/pause");
    assert_eq!(code, 200, "{body}");
    daemon.migration_until("paused", |j| {
        j["paused"] == true && j["activity"]["state"] == "paused"
    });
    let put = Daemon::agent()
        .put(format!(
            "{}/api/v1/migrations/orders_v2/throttle",
            daemon.base
        ))
        .header("content-type", "application/json")
        .send(r#"{"rows_per_second": 0}"#)
        .expect("PUT");
    assert_eq!(put.status().as_u16(), 200);
    let (code, body) = daemon.post("/api/v1/migrations/orders_v2/resume");
    assert_eq!(code, 200, "{body}");
    let m = daemon.metrics_until("verified after the restart", |m| {
        m.get("splice_migration_phase{migration=\"orders_v2\",phase=\"verified\"}") == Some(1.0)
            && m.get(PASSES).is_some_and(|n| n >= 1.0)
            && m.get("splice_backfill_done{migration=\"orders_v2\"}") == Some(1.0)
    });
    assert!(m.value("splice_backfill_rows_copied{migration=\"orders_v2\"}") >= f64::from(ROWS));
    assert_eq!(
        m.value("splice_verify_divergent_rows{migration=\"orders_v2\"}"),
        0.0
    );
    note_reaches(&db, "_splice_orders_v2_new", "followed");

    stop.store(true, Ordering::Relaxed);
    let writes = load.join().expect("load");
    assert!(writes > 100, "the load ran ({writes} statements)");
    rows_match(&db, "orders", "_splice_orders_v2_new");
    let json = daemon.migration_until("verified after the load stopped", |j| {
        j["phase"] == "verified"
    });
    let actions: Vec<String> = control_actions(&json)
        .into_iter()
        .filter(|(_, caller)| caller.starts_with("127.0.0.1:"))
        .map(|(action, _)| action)
        .collect();
    assert_eq!(actions, ["pause", "throttle unlimited", "resume"], "{json}");
    assert_eq!(
        daemon.terminate(Duration::from_secs(10)),
        Some(0),
        "{}",
        daemon.log()
    );
    assert_eq!(status_json(&db)["phase"], "verified");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cutover_and_rollback_over_http_under_write_load_lose_no_row() {
    let db = MariaDb::start().expect("MariaDB");
    create_orders(&db, ROWS);
    let dir = temp_dir("cutover");
    let mut daemon = Daemon::start(
        &dir,
        &db.url(),
        &["--verify-interval", "1s", "orders_v2.toml"],
    );
    daemon.metrics_until("verified", |m| {
        m.get("splice_migration_phase{migration=\"orders_v2\",phase=\"verified\"}") == Some(1.0)
            && m.get(PASSES).is_some_and(|n| n >= 1.0)
    });
    let stop = Arc::new(AtomicBool::new(false));
    let load = write_load_any_shape(db.url(), stop.clone());

    // Refused (409) while a pass under load found a key still in flight; taken once verified.
    let deadline = Instant::now() + Duration::from_secs(120);
    let body = loop {
        let (code, body) = daemon.post("/api/v1/migrations/orders_v2/cutover");
        if code == 200 {
            break body;
        }
        assert_eq!(code, 409, "{body}");
        assert!(Instant::now() < deadline, "never cut over: {body}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let done: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(done["done"]["reverse_sync"], true, "{done}");
    assert!(!old_shape_live(&db), "the new shape is live");
    assert_eq!(status_json(&db)["phase"], "cut_over");
    daemon.migration_until("reverse sync after the cutover", |j| {
        j["phase"] == "cut_over" && j["activity"]["state"] == "following"
    });
    note_reaches(&db, "_splice_orders_v2_old", "after cutover");
    let m = daemon.metrics_until("the cutover's lock time", |m| {
        m.get("splice_cutover_lock_seconds{migration=\"orders_v2\"}")
            .is_some()
    });
    assert!(m.value("splice_cutover_lock_seconds{migration=\"orders_v2\"}") > 0.0);

    let (code, body) = daemon.post("/api/v1/migrations/orders_v2/rollback");
    assert_eq!(code, 200, "{body}\n{}", daemon.log());
    let done: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(done["done"]["from"], "cut_over", "{done}");
    assert_eq!(done["done"]["to"], "syncing", "{done}");
    assert!(old_shape_live(&db), "the old shape is live again");
    note_reaches(&db, "_splice_orders_v2_new", "after rollback");

    stop.store(true, Ordering::Relaxed);
    let writes = load.join().expect("load");
    assert!(writes > 100, "the load ran ({writes} statements)");
    rows_match(&db, "orders", "_splice_orders_v2_new");
    let json = daemon.migration_until("verified again after the rollback", |j| {
        j["phase"] == "verified"
    });
    let actions = control_actions(&json);
    for wanted in ["cutover", "rollback"] {
        assert!(
            actions
                .iter()
                .any(|(a, c)| a == wanted && c.starts_with("127.0.0.1:")),
            "{wanted}: {json}"
        );
    }
    rows_match(&db, "orders", "_splice_orders_v2_new");
    assert_eq!(
        daemon.terminate(Duration::from_secs(10)),
        Some(0),
        "{}",
        daemon.log()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_automatic_cutover_once_the_gates_held_and_a_failing_watch_rolls_it_back() {
    let db = MariaDb::start().expect("MariaDB");
    create_orders(&db, ROWS);
    db.sql("CREATE TABLE shop.app_errors (id BIGINT AUTO_INCREMENT PRIMARY KEY, message TEXT)")
        .expect("app_errors");
    let dir = temp_dir("watch");
    std::fs::write(
        dir.join("orders_v2.toml"),
        format!(
            "{MIGRATION}\n[automation]\ncutover = \"auto\"\nhold = \"1s\"\n\
             watch = \"SELECT COUNT(*) = 0 FROM shop.app_errors\"\nwatch_for = \"10m\"\n"
        ),
    )
    .expect("write migration");
    let mut daemon = Daemon::start(&dir, &db.url(), &["orders_v2.toml"]);
    let stop = Arc::new(AtomicBool::new(false));
    let load = write_load_any_shape(db.url(), stop.clone());
    let json = daemon.migration_until("an automatic cutover and a passing watch", |j| {
        j["phase"] == "cut_over" && j["automation"]["watch_checks"].as_u64() >= Some(1)
    });
    let cutover = control_event(&json, "cutover");
    assert_eq!(cutover["caller"], "automation", "{cutover}");
    assert!(!old_shape_live(&db));

    // The application starts failing: the watch turns false and the daemon rolls back.
    db.sql("INSERT INTO shop.app_errors (message) VALUES ('500 on /orders')")
        .expect("an error");
    let failed_at = Instant::now();
    let deadline = failed_at + Duration::from_secs(60);
    while !old_shape_live(&db) {
        assert!(
            Instant::now() < deadline,
            "no automatic rollback\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "watch failure to the old shape live again: {:.0} ms",
        failed_at.elapsed().as_secs_f64() * 1000.0
    );
    let json = daemon.migration_until("the rollback in the control log", |j| {
        j["automation"]["automatic_rollbacks"] == 1
    });
    let rollback = control_event(&json, "rollback");
    assert_eq!(rollback["caller"], "automation", "{rollback}");
    assert!(
        rollback["reason"]
            .as_str()
            .is_some_and(|r| r.contains("returned false")),
        "{rollback}"
    );

    stop.store(true, Ordering::Relaxed);
    let writes = load.join().expect("load");
    assert!(writes > 100, "the load ran ({writes} statements)");
    rows_match(&db, "orders", "_splice_orders_v2_new");
    // Verified again, and it does not cut over on its own a second time.
    daemon.migration_until("verified and disarmed", |j| {
        j["phase"] == "verified" && j["automation"]["disarmed"].is_string()
    });
    rows_match(&db, "orders", "_splice_orders_v2_new");
    assert_eq!(
        daemon.terminate(Duration::from_secs(10)),
        Some(0),
        "{}",
        daemon.log()
    );
    assert_eq!(status_json(&db)["phase"], "verified");
    let _ = std::fs::remove_dir_all(&dir);
}
