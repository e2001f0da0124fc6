//! The migration commands on a `mysql://` URL, end to end: the real binary against a
//! throwaway MariaDB 10.11 drives `migrations/mysql/orders_v2.toml` through plan, expand,
//! sync, verify, status, cutover, rollback, abort, contract and drop while an application
//! writes, and the new table is
//! compared with the old one row by row in SQL written here; plan's refusals exit non-zero
//! naming the fix.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use testkit::MariaDb;

const SPEC: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/migrations/mysql/orders_v2.toml"
);

fn splice(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_splice"))
        .args(args)
        .env_remove("SPLICE_DATABASE_URL")
        .env_remove("DATABASE_URL")
        .output()
        .expect("the splice binary runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn create_orders(db: &MariaDb) {
    db.sql(
        "CREATE DATABASE shop; \
         CREATE TABLE shop.orders (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, \
           amount DECIMAL(12,2) NOT NULL, note VARCHAR(200) NULL, \
           created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) ENGINE=InnoDB; \
         INSERT INTO shop.orders (amount, note) SELECT a.d * 10 + b.d + 0.5, \
           IF(b.d = 3, NULL, CONCAT('n', a.d, b.d)) \
         FROM (SELECT 0 d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 \
               UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 \
               UNION ALL SELECT 8 UNION ALL SELECT 9) a, \
              (SELECT 0 d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 \
               UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 \
               UNION ALL SELECT 8 UNION ALL SELECT 9) b",
    )
    .expect("orders");
}

/// Keys where the new table is not the mapping of the old one.
fn mismatches(db: &MariaDb) -> String {
    db.sql(
        "SELECT COUNT(*) FROM ( \
           SELECT o.id FROM shop.orders o LEFT JOIN shop._splice_orders_v2_new n ON n.id = o.id \
            WHERE n.id IS NULL OR n.amount_cents <> ROUND(o.amount * 100) \
               OR NOT (n.note <=> o.note) OR n.created_at <> o.created_at \
           UNION ALL \
           SELECT n.id FROM shop._splice_orders_v2_new n LEFT JOIN shop.orders o ON o.id = n.id \
            WHERE o.id IS NULL) d",
    )
    .expect("compare")
}

#[test]
fn a_mysql_migration_runs_through_cutover_and_back_under_writes() {
    let db = MariaDb::start().expect("MariaDB");
    create_orders(&db);
    let url = db.url().replace("mysql://", "mariadb://");
    let url = url.as_str();

    let out = splice(&["plan", SPEC, "--database-url", url]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("CREATE TABLE `shop`.`_splice_orders_v2_new`"),
        "{}",
        text(&out)
    );

    let out = splice(&["expand", SPEC, "--database-url", url]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // An application writes while sync copies and applies.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let port = db.port();
        std::thread::spawn(move || {
            let mut n = 0u64;
            let mut statements = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let id = (n * 37) % 100 + 1;
                statements.push(match n % 4 {
                    0 => format!("UPDATE shop.orders SET amount = amount + 1 WHERE id = {id}"),
                    1 => "INSERT INTO shop.orders (amount, note) VALUES (9.99, 'new')".to_string(),
                    2 => format!("DELETE FROM shop.orders WHERE id = {id}"),
                    _ => format!("UPDATE shop.orders SET id = id + 100000 WHERE id = {id}"),
                });
                n += 1;
                if statements.len() == 20 {
                    let _ = Command::new("mariadb")
                        .args(["--no-defaults", "-u", "root", "-h", "127.0.0.1", "-f"])
                        .arg(format!("--port={port}"))
                        .arg("-e")
                        .arg(statements.join("; "))
                        .output();
                    statements.clear();
                }
            }
            n
        })
    };
    let out = splice(&[
        "sync",
        "orders_v2",
        "--until-caught-up",
        "--database-url",
        url,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().expect("writer");
    assert!(written > 20, "the application wrote ({written})");
    let out = splice(&[
        "sync",
        "orders_v2",
        "--until-caught-up",
        "--database-url",
        url,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(mismatches(&db), "0");

    let out = splice(&["verify", "orders_v2", "--database-url", url]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // Incremental builds on the full pass before it: nothing changed since, nothing re-read.
    let out = splice(&[
        "verify",
        "orders_v2",
        "--incremental",
        "--database-url",
        url,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("incremental pass, 0 rows re-read"),
        "{}",
        text(&out)
    );
    // A throttle request is recorded in the migration's history.
    let out = splice(&[
        "throttle",
        "orders_v2",
        "--rows-per-second",
        "5000",
        "--database-url",
        url,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = splice(&["status", "orders_v2", "--history", "--database-url", url]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("throttle 5000"), "{}", text(&out));
    let out = splice(&["throttle", "orders_v2", "--clear", "--database-url", url]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = splice(&["status", "orders_v2", "--database-url", url]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("verified"), "{}", text(&out));

    let out = splice(&["cutover", "orders_v2", "--database-url", url]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        db.sql(
            "SELECT GROUP_CONCAT(COLUMN_NAME ORDER BY ORDINAL_POSITION) \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = 'shop' AND TABLE_NAME = 'orders'"
        )
        .expect("columns"),
        "id,amount_cents,note,created_at",
        "the new shape is live"
    );
    db.sql("INSERT INTO shop.orders (id, amount_cents, note) VALUES (900001, 555, 'new shape')")
        .expect("a write on the new shape");
    let out = splice(&[
        "sync",
        "orders_v2",
        "--until-caught-up",
        "--database-url",
        url,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let out = splice(&["rollback", "orders_v2", "--database-url", url]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        db.sql("SELECT amount FROM shop.orders WHERE id = 900001")
            .expect("row"),
        "5.55",
        "the old shape is live again, with the write made on the new one"
    );
    let out = splice(&["abort", "orders_v2", "--database-url", url]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        db.sql(
            "SELECT COUNT(*) FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = 'shop' AND TABLE_NAME LIKE '\\_splice%'"
        )
        .expect("query"),
        "0",
        "abort left no shadow or retired table"
    );
}

#[test]
fn contract_and_drop_on_mysql() {
    let db = MariaDb::start().expect("MariaDB");
    create_orders(&db);
    let url = db.url();
    let url = url.as_str();
    for args in [
        vec!["expand", SPEC],
        vec!["sync", "orders_v2", "--until-caught-up"],
        vec!["verify", "orders_v2"],
        vec!["cutover", "orders_v2"],
        vec!["contract", "orders_v2"],
        vec!["drop", "orders_v2", "--force"],
    ] {
        let mut args = args.clone();
        args.extend(["--database-url", url]);
        let out = splice(&args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
    }
    let out = splice(&["status", "orders_v2", "--database-url", url]);
    assert!(text(&out).contains("dropped"), "{}", text(&out));
    assert_eq!(
        db.sql("SELECT COUNT(*) FROM shop.orders").expect("count"),
        "100",
        "every row is in the live table"
    );
}

#[test]
fn plan_refuses_an_expression_mysql_cannot_compile_and_a_table_without_a_key() {
    let db = MariaDb::start().expect("MariaDB");
    create_orders(&db);
    db.sql("CREATE TABLE shop.events (at DATETIME NOT NULL, what TEXT)")
        .expect("events");
    let dir = std::env::temp_dir().join(format!("splice-mysql-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let spec = std::fs::read_to_string(SPEC).expect("spec");
    let bad_expr = dir.join("bad_expr.toml");
    std::fs::write(
        &bad_expr,
        spec.replace("ROUND(amount * 100)", "ROUND(amount_typo * 100)"),
    )
    .expect("write");
    let no_key = dir.join("no_key.toml");
    std::fs::write(
        &no_key,
        "name = \"events_v2\"\ntable = \"shop.events\"\n\
         target = \"CREATE TABLE shop.events (at DATETIME NOT NULL, what TEXT)\"\n",
    )
    .expect("write");
    let url = db.url();
    for (file, says) in [(&bad_expr, "amount_typo"), (&no_key, "no primary key")] {
        let file = file.to_string_lossy().into_owned();
        let out = splice(&["plan", &file, "--database-url", &url]);
        assert_ne!(out.status.code(), Some(0), "{}", text(&out));
        assert!(text(&out).contains(says), "{says}: {}", text(&out));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn splice_crashing_at(point: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_splice"))
        .args(args)
        .env_remove("SPLICE_DATABASE_URL")
        .env_remove("DATABASE_URL")
        .env("SPLICE_FAULT_POINT", point)
        .output()
        .expect("the splice binary runs")
}

fn live_columns(db: &MariaDb) -> String {
    db.sql(
        "SELECT GROUP_CONCAT(COLUMN_NAME ORDER BY ORDINAL_POSITION) \
         FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = 'shop' AND TABLE_NAME = 'orders'",
    )
    .expect("columns")
}

fn phase(db: &MariaDb) -> String {
    db.sql("SELECT phase FROM splice.migrations WHERE name = 'orders_v2'")
        .expect("phase")
}

#[test]
fn a_kill_between_the_rename_and_its_record_is_finished_by_running_the_command_again() {
    let db = MariaDb::start().expect("MariaDB");
    create_orders(&db);
    let url = db.url();
    let url = url.as_str();
    for args in [
        vec!["expand", SPEC],
        vec!["sync", "orders_v2", "--until-caught-up"],
        vec!["verify", "orders_v2"],
    ] {
        let mut args = args.clone();
        args.extend(["--database-url", url]);
        let out = splice(&args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
    }
    // Killed right after the rename: swapped, not recorded.
    let out = splice_crashing_at(
        "swap.renamed",
        &["cutover", "orders_v2", "--database-url", url],
    );
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("swap.renamed"), "{}", text(&out));
    assert_eq!(live_columns(&db), "id,amount_cents,note,created_at");
    assert_eq!(phase(&db), "verified");
    let out = splice(&["cutover", "orders_v2", "--database-url", url]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(phase(&db), "cut_over");
    assert_eq!(
        live_columns(&db),
        "id,amount_cents,note,created_at",
        "swapped once"
    );

    // The same for the swap back.
    let out = splice_crashing_at(
        "swap.renamed",
        &["rollback", "orders_v2", "--database-url", url],
    );
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(live_columns(&db), "id,amount,note,created_at");
    assert_eq!(phase(&db), "cut_over");
    let out = splice(&["rollback", "orders_v2", "--database-url", url]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(phase(&db), "syncing");
    assert_eq!(
        live_columns(&db),
        "id,amount,note,created_at",
        "swapped back once"
    );
    assert_eq!(
        db.sql("SELECT COUNT(*) FROM splice.cdc_slots WHERE slot LIKE '%\\_rev'")
            .expect("slots"),
        "0",
        "reverse sync is over"
    );
    // And the migration goes on: sync, verify, cut over again.
    for args in [
        vec!["sync", "orders_v2", "--until-caught-up"],
        vec!["verify", "orders_v2"],
        vec!["cutover", "orders_v2"],
    ] {
        let mut args = args.clone();
        args.extend(["--database-url", url]);
        let out = splice(&args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
    }
    assert_eq!(phase(&db), "cut_over");
}

/// `splice ARGS`, again while another process still holds the migration or its binlog slot
/// (a killed one, until the server notices its sessions are gone).
fn splice_retrying(args: &[&str]) -> Output {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let out = splice(args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        let busy = err.contains("being run by another") || err.contains("in use by another");
        if !busy || std::time::Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn sync_killed_with_sigkill_at_random_points_resumes_without_divergence() {
    let db = MariaDb::start().expect("MariaDB");
    create_orders(&db);
    // 100 rows × 100: 10,000.
    db.sql(
        "INSERT INTO shop.orders (amount, note) SELECT o.amount, o.note \
         FROM shop.orders o, shop.orders p WHERE p.id <= 99",
    )
    .expect("more rows");
    let url = db.url();
    let url = url.as_str();
    let out = splice(&["expand", SPEC, "--database-url", url]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let port = db.port();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let batch: Vec<String> = (0..20)
                    .map(|i| {
                        let id = ((n + i) * 7919) % 10_000 + 1;
                        match (n + i) % 4 {
                            0 => format!(
                                "UPDATE shop.orders SET amount = amount + 1 WHERE id = {id}"
                            ),
                            1 => "INSERT INTO shop.orders (amount) VALUES (1.5)".to_string(),
                            2 => format!("DELETE FROM shop.orders WHERE id = {id}"),
                            _ => {
                                format!("UPDATE shop.orders SET id = id + 1000000 WHERE id = {id}")
                            }
                        }
                    })
                    .collect();
                let _ = Command::new("mariadb")
                    .args(["--no-defaults", "-u", "root", "-h", "127.0.0.1", "-f"])
                    .arg(format!("--port={port}"))
                    .arg("-e")
                    .arg(batch.join("; "))
                    .output();
                n += 20;
            }
            n
        })
    };
    let mut kills = 0;
    for pause_ms in [400u64, 900, 250, 1300, 600] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_splice"))
            .args([
                "sync",
                "orders_v2",
                "--rows-per-second",
                "3000",
                "--chunk-target",
                "20ms",
                "--database-url",
                url,
            ])
            .env_remove("SPLICE_DATABASE_URL")
            .env_remove("DATABASE_URL")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn sync");
        std::thread::sleep(std::time::Duration::from_millis(pause_ms));
        if child.try_wait().expect("poll").is_none() {
            child.kill().expect("kill -9");
            kills += 1;
        }
        let _ = child.wait();
    }
    assert!(kills >= 3, "sync was killed mid-run {kills} times");
    let copied: i64 = db
        .sql("SELECT rows_copied FROM splice.migrations WHERE name = 'orders_v2'")
        .expect("checkpoint")
        .parse()
        .expect("number");
    assert!(copied > 0, "checkpoints survived the kills");
    let out = splice_retrying(&[
        "sync",
        "orders_v2",
        "--until-caught-up",
        "--database-url",
        url,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    stop.store(true, Ordering::Relaxed);
    let writes = writer.join().expect("writer");
    assert!(writes > 200, "the application wrote ({writes} statements)");
    let out = splice_retrying(&[
        "sync",
        "orders_v2",
        "--until-caught-up",
        "--database-url",
        url,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(mismatches(&db), "0", "every key equals the mapping");
    let out = splice(&["verify", "orders_v2", "--database-url", url]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn the_mysql_demo_runs_the_whole_sequence_and_reports_no_difference() {
    let out = Command::new(env!("CARGO_BIN_EXE_splice"))
        .args([
            "demo",
            "--mysql",
            "--rows",
            "20000",
            "--writes-per-second",
            "300",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run the demo");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = |start: &str| {
        report
            .lines()
            .find(|l| l.trim_start().starts_with(start))
            .unwrap_or_else(|| panic!("no {start} line: {report}"))
            .to_string()
    };
    assert!(line("verify").contains("passed"), "{report}");
    assert!(
        line("application writes").contains("(0 failed;"),
        "{report}"
    );
    let differing = line("rows differing old/new");
    assert_eq!(differing.split_whitespace().nth(3), Some("0"), "{report}");
}

#[test]
fn a_cutover_killed_before_the_rename_leaves_the_old_table_live_and_intact_and_after_it_swaps() {
    let db = MariaDb::start().expect("MariaDB");
    create_orders(&db);
    let url = db.url();
    let url = url.as_str();
    for args in [
        vec!["expand", SPEC],
        vec!["sync", "orders_v2", "--until-caught-up"],
        vec!["verify", "orders_v2"],
    ] {
        let mut args = args.clone();
        args.extend(["--database-url", url]);
        let out = splice(&args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
    }
    let rows = db.sql("SELECT COUNT(*) FROM shop.orders").expect("count");
    // Killed with the table locked, and after the drain: nothing was renamed.
    for point in ["swap.locked", "swap.drained"] {
        let out = splice_crashing_at(point, &["cutover", "orders_v2", "--database-url", url]);
        assert_ne!(out.status.code(), Some(0), "{point}: {}", text(&out));
        assert!(text(&out).contains(point), "{point}: {}", text(&out));
        // Wait until the server has ended the dead sessions' statements.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while db
            .sql(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
                 WHERE INFO LIKE 'RENAME TABLE%' OR INFO LIKE 'LOCK TABLES%'",
            )
            .expect("processlist")
            != "0"
        {
            assert!(
                std::time::Instant::now() < deadline,
                "{point}: a statement hangs"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(live_columns(&db), "id,amount,note,created_at", "{point}");
        assert_eq!(
            db.sql("SELECT COUNT(*) FROM shop.orders").expect("count"),
            rows,
            "{point}: the old table is intact"
        );
        assert_eq!(phase(&db), "verified", "{point}");
        // The application can write.
        db.sql("UPDATE shop.orders SET note = 'still live' WHERE id = 1")
            .expect("write to the live table");
    }
    // Killed once the rename was issued (everything drained): the rename runs when the dead
    // session's lock goes, and the next cutover records the swap it finds.
    let out = splice_crashing_at(
        "swap.rename_queued",
        &["cutover", "orders_v2", "--database-url", url],
    );
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while live_columns(&db) != "id,amount_cents,note,created_at" {
        assert!(
            std::time::Instant::now() < deadline,
            "the queued rename never ran"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(phase(&db), "verified", "not recorded yet");
    let out = splice_retrying(&["cutover", "orders_v2", "--database-url", url]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(phase(&db), "cut_over");
    assert_eq!(live_columns(&db), "id,amount_cents,note,created_at");
    assert_eq!(
        db.sql("SELECT note FROM shop.orders WHERE id = 1")
            .expect("row"),
        "still live",
        "the writes made between the attempts reached the new table"
    );
}

/// The triggers on `shop.table`.
fn triggers_on(db: &MariaDb, table: &str) -> String {
    db.sql(&format!(
        "SELECT GROUP_CONCAT(TRIGGER_NAME ORDER BY TRIGGER_NAME) FROM information_schema.TRIGGERS \
         WHERE EVENT_OBJECT_SCHEMA = 'shop' AND EVENT_OBJECT_TABLE = '{table}'"
    ))
    .expect("triggers")
}

#[test]
fn a_kill_inside_a_swap_that_carries_triggers_leaves_none_where_splice_writes() {
    let db = MariaDb::start().expect("MariaDB");
    create_orders(&db);
    // A trigger whose second firing shows: each firing prefixes the note.
    db.sql(
        "CREATE TRIGGER shop.orders_bu BEFORE UPDATE ON shop.orders FOR EACH ROW \
         SET NEW.note = CONCAT('u:', NEW.note)",
    )
    .expect("trigger");
    let url = db.url();
    let url = url.as_str();
    let run = |args: &[&str]| {
        let mut args = args.to_vec();
        args.extend(["--database-url", url]);
        let out = splice_retrying(&args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
    };
    run(&["expand", SPEC]);
    run(&["sync", "orders_v2", "--until-caught-up"]);
    run(&["verify", "orders_v2"]);

    // Killed with the triggers carried onto the new table, before the rename.
    let out = splice_crashing_at(
        "swap.triggers_carried",
        &["cutover", "orders_v2", "--database-url", url],
    );
    assert!(
        text(&out).contains("swap.triggers_carried"),
        "{}",
        text(&out)
    );
    assert_eq!(phase(&db), "verified");
    assert_eq!(live_columns(&db), "id,amount,note,created_at");
    assert_eq!(
        triggers_on(&db, "_splice_orders_v2_new"),
        "orders_bu_splice"
    );
    // Sync resumes: the applier drops them before writing, so its write fires nothing.
    db.sql("UPDATE shop.orders SET note = 'k' WHERE id = 1")
        .expect("write");
    run(&["sync", "orders_v2", "--until-caught-up"]);
    assert_eq!(
        db.sql("SELECT note FROM shop._splice_orders_v2_new WHERE id = 1")
            .expect("note"),
        "u:k"
    );
    assert_eq!(triggers_on(&db, "_splice_orders_v2_new"), "NULL");
    assert_eq!(mismatches(&db), "0");
    run(&["verify", "orders_v2"]);
    // Killed after the rename, before the old table's copies were dropped: the next command
    // records the swap, and the copies left on the old table do not stop a rollback.
    let out = splice_crashing_at(
        "swap.renamed",
        &["cutover", "orders_v2", "--database-url", url],
    );
    assert!(text(&out).contains("swap.renamed"), "{}", text(&out));
    run(&["cutover", "orders_v2"]);
    assert_eq!(phase(&db), "cut_over");
    assert_eq!(triggers_on(&db, "orders"), "orders_bu_splice");
    assert_eq!(triggers_on(&db, "_splice_orders_v2_old"), "orders_bu");

    // Killed after the swap back, before the outgoing table's copies were dropped.
    let out = splice_crashing_at(
        "swap.renamed",
        &["rollback", "orders_v2", "--database-url", url],
    );
    assert!(text(&out).contains("swap.renamed"), "{}", text(&out));
    assert_eq!(live_columns(&db), "id,amount,note,created_at");
    assert_eq!(triggers_on(&db, "orders"), "orders_bu");
    assert_eq!(
        triggers_on(&db, "_splice_orders_v2_new"),
        "orders_bu_splice"
    );
    run(&["rollback", "orders_v2"]);
    assert_eq!(phase(&db), "syncing");
    db.sql("UPDATE shop.orders SET note = 'm' WHERE id = 2")
        .expect("write");
    run(&["sync", "orders_v2", "--until-caught-up"]);
    assert_eq!(triggers_on(&db, "_splice_orders_v2_new"), "NULL");
    assert_eq!(
        db.sql("SELECT note FROM shop._splice_orders_v2_new WHERE id = 2")
            .expect("note"),
        "u:m"
    );
    assert_eq!(mismatches(&db), "0");
    run(&["verify", "orders_v2"]);
}
