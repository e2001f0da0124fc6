//! The MySQL/MariaDB adapter against a real throwaway MariaDB 10.11: the state store (phase
//! changes as compare-and-set, the fenced runner lock), planning (the shadow created in a
//! scope that leaves nothing behind, mappings compiled by the server, the refusals) and the
//! phases end to end under a write load (backfill, the binlog applier, verify, cut-over's
//! locked rename, reverse sync, rollback, contract, drop), compared row by row in SQL written
//! here.

use engine::adapter::{Sessions, StateStore};
use engine::seam::{DivergedKey, RateLimit, VerifyReport};
use engine::state::{Checkpoint, Phase, PhaseChange, QuarantineEntry, SyncThrottle};
use engine::{Engine, EngineError, MigrationSpec, MySql, Refusal};
use serde_json::json;
use testkit::MariaDb;

fn server() -> MariaDb {
    MariaDb::start().expect("start a throwaway MariaDB")
}

const ORDERS: &str = "CREATE DATABASE shop; \
    CREATE TABLE shop.orders (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, \
      amount DECIMAL(12,2) NOT NULL, note VARCHAR(200) NULL, \
      created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) ENGINE=InnoDB; \
    INSERT INTO shop.orders (amount, note) VALUES (12.50, 'a'), (3.10, NULL), (7.00, 'c');";

const ORDERS_V2: &str = r#"
name = "orders_v2"
table = "shop.orders"
target = """
CREATE TABLE shop.orders (
  id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  amount_cents BIGINT NOT NULL,
  note VARCHAR(200) NULL,
  created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
) ENGINE=InnoDB
"""

[up]
amount_cents = "ROUND(amount * 100)"

[down]
amount = "amount_cents / 100"
"#;

fn spec(text: &str) -> MigrationSpec {
    MigrationSpec::parse(text, "orders_v2.toml").expect("spec")
}

fn change(from: Phase, to: Phase) -> PhaseChange {
    PhaseChange::new(from, to, json!({ "step": to.as_str() }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_store_records_phases_as_compare_and_set() {
    let db = server();
    let my = MySql::new(db.url()).expect("url");
    let conn = my.connect().await.expect("connect");
    assert!(
        my.load_record(&conn, "orders_v2")
            .await
            .expect("load")
            .is_none(),
        "no state database yet: no record"
    );
    my.ensure_state(&conn).await.expect("ensure_state");
    my.ensure_state(&conn)
        .await
        .expect("ensure_state is idempotent");
    my.register(&conn, "orders_v2", "spec text")
        .await
        .expect("register");
    my.register(&conn, "orders_v2", "another text")
        .await
        .expect("register twice");
    let lock = my.acquire_lock("orders_v2").await.expect("lock");
    assert_eq!(lock.fence, 1);

    my.transition(&lock, &change(Phase::Planned, Phase::Expanded))
        .await
        .expect("planned → expanded");
    let err = my
        .transition(&lock, &change(Phase::Planned, Phase::Expanded))
        .await
        .expect_err("the migration is no longer planned");
    assert!(
        matches!(
            err,
            EngineError::Refused(Refusal::PhaseChanged { ref found, .. }) if found == "expanded"
        ),
        "{err}"
    );

    let key = vec!["it's\ta \\key".to_string(), "7".to_string()];
    let limit = my
        .checkpoint(
            &lock,
            &Checkpoint {
                last_key: Some(key.clone()),
                rows_copied: 42,
                done: false,
                rows_per_second: Some(1000.5),
                throttle: Some(SyncThrottle {
                    rows_per_second: 500,
                    source: "flag".into(),
                    paused: Some("replica lag".into()),
                }),
            },
        )
        .await
        .expect("checkpoint");
    assert_eq!(limit, None);
    assert!(my
        .set_rate_limit(
            &conn,
            "orders_v2",
            Some(RateLimit::from_rows_per_second(250))
        )
        .await
        .expect("throttle"));
    assert!(!my
        .set_rate_limit(&conn, "nope", None)
        .await
        .expect("throttle of nothing"));
    let limit = my
        .checkpoint(
            &lock,
            &Checkpoint {
                last_key: None,
                rows_copied: 43,
                ..Default::default()
            },
        )
        .await
        .expect("checkpoint");
    assert_eq!(limit, Some(RateLimit::from_rows_per_second(250)));

    my.set_quarantine(
        &lock,
        Some(&QuarantineEntry {
            quarantined_as: "splice_quarantine.orders".into(),
            seconds: 3600.0,
        }),
    )
    .await
    .expect("quarantine");
    let report = VerifyReport {
        rows_checked: 3,
        ranges: 1,
        diverged: vec![DivergedKey {
            key: vec!["2".into()],
            expected: Some("2\t310".into()),
            found: None,
        }],
        ..Default::default()
    };
    my.record_verify(&lock, &report)
        .await
        .expect("verify result");

    let r = my
        .load_record(&conn, "orders_v2")
        .await
        .expect("load")
        .expect("registered");
    assert_eq!(r.spec, "spec text", "a second register changes nothing");
    assert_eq!(r.phase, Phase::Expanded);
    assert_eq!(
        r.backfill_last_key,
        Some(key),
        "the key kept by a checkpoint without one"
    );
    assert_eq!(r.rows_copied, 43);
    assert_eq!(r.backfill_rate, Some(1000.5));
    assert_eq!(
        r.sync_throttle
            .as_ref()
            .map(|t| (t.rows_per_second, t.paused.clone())),
        Some((500, Some("replica lag".to_string())))
    );
    assert_eq!(
        r.quarantined_as.as_deref(),
        Some("splice_quarantine.orders")
    );
    assert!(!r.quarantine_expired);
    assert!(
        r.quarantine_until
            .as_deref()
            .is_some_and(|t| t.ends_with('Z') && t.len() == 20),
        "{:?}",
        r.quarantine_until
    );
    let last = my
        .last_verify(&conn, "orders_v2")
        .await
        .expect("last verify")
        .expect("recorded");
    assert!(!last.passed);
    assert_eq!(last.rows_checked, 3);
    assert_eq!(last.diverged_keys[0]["key"][0], "2");
    let history = my.history(&conn, "orders_v2").await.expect("history");
    assert_eq!(history.len(), 1, "the refused change wrote no history");
    assert_eq!(history[0].from.as_deref(), Some("planned"));
    assert_eq!(history[0].to, "expanded");
    assert_eq!(history[0].figures["step"], "expanded");
    assert_eq!(my.load_records(&conn).await.expect("all").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_runner_at_a_time_and_a_fenced_out_runner_writes_nothing() {
    let db = server();
    let my = MySql::new(db.url()).expect("url");
    let conn = my.connect().await.expect("connect");
    my.ensure_state(&conn).await.expect("state");
    my.register(&conn, "orders_v2", "spec")
        .await
        .expect("register");
    let first = my.acquire_lock("orders_v2").await.expect("first runner");
    let err = match my.acquire_lock("orders_v2").await {
        Ok(_) => panic!("a second runner got the lock"),
        Err(e) => e,
    };
    assert!(err.is_busy(), "{err}");
    assert!(err.to_string().contains("connection"), "{err}");
    let runner = my
        .runner(&conn, "orders_v2")
        .await
        .expect("runner")
        .expect("someone runs it");
    assert!(runner.pid > 0);

    // A takeover bumps the token (here by hand, as a runner whose session lost the lock
    // would see it): the first runner's writes are refused and write nothing.
    db.sql("UPDATE splice.migrations SET fence = fence + 1 WHERE name = 'orders_v2'")
        .expect("take over");
    let err = my
        .transition(&first, &change(Phase::Planned, Phase::Expanded))
        .await
        .expect_err("stale runner");
    assert!(err.is_busy(), "{err}");
    let err = my
        .checkpoint(
            &first,
            &Checkpoint {
                rows_copied: 99,
                ..Default::default()
            },
        )
        .await
        .expect_err("stale runner");
    assert!(err.is_busy(), "{err}");
    let r = my
        .load_record(&conn, "orders_v2")
        .await
        .expect("load")
        .expect("exists");
    assert_eq!((r.phase, r.rows_copied), (Phase::Planned, 0));
    assert!(my
        .history(&conn, "orders_v2")
        .await
        .expect("history")
        .is_empty());

    drop(first);
    let second = my
        .acquire_lock("orders_v2")
        .await
        .expect("the lock is free once the first runner is gone");
    assert_eq!(second.fence, 3);
    my.transition(&second, &change(Phase::Planned, Phase::Expanded))
        .await
        .expect("the new runner writes");
}

fn shadow_exists(db: &MariaDb) -> bool {
    db.sql(
        "SELECT COUNT(*) FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA = 'shop' AND TABLE_NAME = '_splice_orders_v2_new'",
    )
    .expect("query")
        != "0"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_checks_the_file_against_the_live_table_and_changes_nothing() {
    let db = server();
    db.sql(ORDERS).expect("orders");
    let engine = Engine::mysql(db.url()).expect("url");
    let plan = engine.plan(&spec(ORDERS_V2)).await.expect("plan");
    assert_eq!(plan.key.len(), 1);
    assert_eq!(plan.key[0].name, "id");
    let forward: Vec<(&str, &str)> = plan
        .forward
        .columns
        .iter()
        .map(|(c, e)| (c.as_str(), e.as_str()))
        .collect();
    assert_eq!(
        forward,
        vec![
            ("id", "s.`id`"),
            ("amount_cents", "(ROUND(amount * 100))"),
            ("note", "s.`note`"),
            ("created_at", "s.`created_at`"),
        ]
    );
    assert!(plan.reverse.is_some(), "{:?}", plan.reverse_notes);
    let text = engine.render(&plan);
    assert!(
        text.contains("CREATE TABLE `shop`.`_splice_orders_v2_new` ("),
        "{text}"
    );
    assert!(
        text.contains("RENAME TABLE `shop`.`orders` TO `shop`.`_splice_orders_v2_old`"),
        "{text}"
    );
    assert!(!shadow_exists(&db), "plan created no shadow table");
    assert_eq!(
        db.sql("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'splice'")
            .expect("query"),
        "0",
        "plan created no state database"
    );
    // A second plan on a fresh session: nothing left over from the first.
    engine.plan(&spec(ORDERS_V2)).await.expect("plan again");
    assert_eq!(
        db.sql("SELECT COUNT(*) FROM shop.orders").expect("count"),
        "3",
        "no row was touched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_refuses_what_it_cannot_migrate_and_names_the_fix() {
    let db = server();
    db.sql(ORDERS).expect("orders");
    db.sql(
        "CREATE TABLE shop.events (at DATETIME NOT NULL, what TEXT) ENGINE=InnoDB; \
         CREATE TABLE shop.customers (id INT PRIMARY KEY) ENGINE=InnoDB; \
         CREATE TABLE shop.invoices (id INT PRIMARY KEY, customer_id INT, \
           FOREIGN KEY fk_customer (customer_id) REFERENCES shop.customers (id)) ENGINE=InnoDB; \
         CREATE TABLE shop.places (id INT PRIMARY KEY, at POINT) ENGINE=InnoDB",
    )
    .expect("tables");
    let engine = Engine::mysql(db.url()).expect("url");
    let refused = |text: String| {
        let engine = &engine;
        async move {
            match engine.plan(&spec(&text)).await {
                Ok(_) => panic!("planned:\n{text}"),
                Err(e) => e.to_string(),
            }
        }
    };

    // No primary key.
    let e = refused(
        "name = \"e2\"\ntable = \"shop.events\"\n\
         target = \"CREATE TABLE shop.events (at DATETIME NOT NULL, what TEXT)\"\n"
            .into(),
    )
    .await;
    assert!(e.contains("no primary key") && e.contains("key = ["), "{e}");

    // An expression MySQL cannot compile: an unknown function, an unknown column.
    for (expr, says) in [
        ("NO_SUCH_FUNCTION(amount)", "NO_SUCH_FUNCTION"),
        ("amount_in_cents * 100", "amount_in_cents"),
    ] {
        let e = refused(ORDERS_V2.replace("ROUND(amount * 100)", expr)).await;
        assert!(
            e.contains(says) && e.contains("amount_cents"),
            "{expr}: {e}"
        );
    }

    // Foreign keys, both ways.
    for (table, says) in [
        ("customers", "foreign key fk_customer on shop.invoices"),
        ("invoices", "foreign key fk_customer of shop.invoices"),
    ] {
        let e = refused(format!(
            "name = \"x\"\ntable = \"shop.{table}\"\n\
             target = \"CREATE TABLE shop.{table} (id INT PRIMARY KEY, customer_id INT)\"\n"
        ))
        .await;
        assert!(
            e.contains(says) && e.contains("re-create it") && e.contains("not carried over"),
            "{table}: {e}"
        );
    }

    // An unsupported column type.
    let e = refused(
        "name = \"p2\"\ntable = \"shop.places\"\n\
         target = \"CREATE TABLE shop.places (id INT PRIMARY KEY, at POINT)\"\n"
            .into(),
    )
    .await;
    assert!(e.contains("column at of shop.places has type point"), "{e}");

    // A target the server rejects.
    let e = refused(ORDERS_V2.replace(
        "amount_cents BIGINT NOT NULL",
        "amount_cents BIGNT NOT NULL",
    ))
    .await;
    assert!(e.starts_with("target: ERROR") && e.contains("BIGNT"), "{e}");

    // A key column that moves: the binlog names rows by position.
    let e = refused(ORDERS_V2.replace(
        "  id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,\n  amount_cents BIGINT NOT NULL,",
        "  amount_cents BIGINT NOT NULL,\n  id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,",
    ))
    .await;
    assert!(
        e.contains("key column id is column 1") && e.contains("same position"),
        "{e}"
    );

    // A table without its database.
    let e = refused(ORDERS_V2.replace("table = \"shop.orders\"", "table = \"orders\"")).await;
    assert!(
        e.contains("names no database") && e.contains("shop.orders"),
        "{e}"
    );

    // Alter mode refuses what the shadow cannot carry, naming it.
    let e = refused(
        "name = \"a2\"\ntable = \"shop.orders\"\nalter = \"ALTER TABLE shop.orders RENAME TO shop.o2\"\n"
            .into(),
    )
    .await;
    assert!(e.contains("renames the table"), "{e}");
    // An ALTER the server refuses is refused at plan, in the server's words.
    let e = refused(
        "name = \"a2\"\ntable = \"shop.orders\"\nalter = \"ALTER TABLE shop.orders MODIFY nope INT\"\n"
            .into(),
    )
    .await;
    assert!(e.contains("alter: ") && e.contains("nope"), "{e}");
    assert!(!shadow_exists(&db));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_names_the_binlog_settings_sync_would_need() {
    let db = MariaDb::builder()
        .setting("binlog-format", "STATEMENT")
        .start()
        .expect("server");
    db.sql(ORDERS).expect("orders");
    let engine = Engine::mysql(db.url()).expect("url");
    let e = engine
        .plan(&spec(ORDERS_V2))
        .await
        .expect_err("a statement binlog cannot be captured");
    assert!(
        matches!(e, EngineError::Refused(Refusal::ServerNotReady { .. })),
        "{e}"
    );
    assert!(e.to_string().contains("binlog_format"), "{e}");
}

// ---- expand, sync (backfill + the binlog applier), rollback before cutover ----

use engine::backfill::{Control, NoProgress};
use engine::phases::SyncOptions;
use mysql_async::prelude::Queryable;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

async fn my_conn(db: &MariaDb) -> mysql_async::Conn {
    mysql_async::Conn::from_url(db.url())
        .await
        .expect("connect to MariaDB")
}

const DIGITS: &str = "(SELECT 0 d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 \
    UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 \
    UNION ALL SELECT 9)";

/// `shop.orders` with `rows` rows (ids 1..=rows), amounts and notes varied, some NULL.
fn create_orders(db: &MariaDb, rows: i64) {
    db.sql(
        "CREATE DATABASE shop; \
         CREATE TABLE shop.orders (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, \
           amount DECIMAL(12,2) NOT NULL, note VARCHAR(200) NULL, \
           created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) ENGINE=InnoDB",
    )
    .expect("orders");
    db.sql(&format!(
        "INSERT INTO shop.orders (id, amount, note) \
         SELECT n, (n % 1000) + 0.25, IF(n % 7 = 0, NULL, CONCAT('n', n)) \
         FROM (SELECT 1 + a.d + 10 * b.d + 100 * c.d + 1000 * e.d + 10000 * f.d AS n \
               FROM {DIGITS} a, {DIGITS} b, {DIGITS} c, {DIGITS} e, {DIGITS} f) q \
         WHERE n <= {rows}"
    ))
    .expect("rows");
}

async fn sync_until_caught_up(engine: &Engine<MySql>, opts: &SyncOptions, control: &Control) {
    engine
        .sync("orders_v2", opts, control, &mut NoProgress)
        .await
        .expect("sync");
}

/// The backfill in small, rate-limited chunks, so it runs while a load writes. The impact
/// budget is off: the load itself raises commit latency, and the budget would slow the
/// backfill down to a crawl (its own test is the_impact_budget_times_a_heartbeat_…).
async fn backfill_slowly(engine: &Engine<MySql>) {
    let opts = SyncOptions {
        until_caught_up: true,
        chunk_target: Some(std::time::Duration::from_millis(5)),
        max_latency_increase: Some(None),
        ..Default::default()
    };
    sync_until_caught_up(
        engine,
        &opts,
        &Control::new(RateLimit::from_rows_per_second(5_000)),
    )
    .await;
}

fn caught_up() -> SyncOptions {
    SyncOptions {
        until_caught_up: true,
        ..Default::default()
    }
}

/// Keys where the new table is not the mapping of the old one, compared row by row in SQL
/// written here, independently of verify: missing, extra, or differing in any column.
fn mismatches(db: &MariaDb) -> String {
    db.sql(
        "SELECT GROUP_CONCAT(id ORDER BY id) FROM ( \
           SELECT o.id FROM shop.orders o LEFT JOIN shop._splice_orders_v2_new n ON n.id = o.id \
            WHERE n.id IS NULL OR n.amount_cents <> ROUND(o.amount * 100) \
               OR NOT (n.note <=> o.note) OR n.created_at <> o.created_at \
           UNION ALL \
           SELECT n.id FROM shop._splice_orders_v2_new n LEFT JOIN shop.orders o ON o.id = n.id \
            WHERE o.id IS NULL) d",
    )
    .expect("compare")
}

const LOAD_STATEMENTS: u64 = 200;

/// Random inserts, updates, deletes and primary-key updates until `stop` is set, and at least
/// [`LOAD_STATEMENTS`] of them however slowly a busy machine runs them (a test that stops the
/// load after a fixed time would otherwise race nothing some runs); returns how many ran.
async fn write_load(url: String, stop: Arc<AtomicBool>, seed: u64, max_id: i64) -> u64 {
    use rand::{Rng, SeedableRng};
    let mut conn = mysql_async::Conn::from_url(url).await.expect("connect");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut n = 0;
    while n < LOAD_STATEMENTS || !stop.load(Ordering::Relaxed) {
        let id: i64 = rng.random_range(1..max_id);
        let r: u32 = rng.random_range(0..100);
        let sql = if r < 40 {
            format!("UPDATE shop.orders SET amount = amount + 1, note = 'u{n}' WHERE id = {id}")
        } else if r < 60 {
            "INSERT INTO shop.orders (amount, note) VALUES (12.34, NULL)".to_string()
        } else if r < 75 {
            format!("DELETE FROM shop.orders WHERE id = {id}")
        } else if r < 85 {
            // Primary-key update: the row moves to a fresh key.
            format!("UPDATE shop.orders SET id = id + 1000000 WHERE id = {id}")
        } else {
            format!(
                "START TRANSACTION; UPDATE shop.orders SET note = NULL WHERE id = {id}; \
                 INSERT INTO shop.orders (amount) VALUES (1); COMMIT"
            )
        };
        let ok = conn.query_drop(&sql).await;
        if ok.is_err() {
            let _ = conn.query_drop("ROLLBACK").await;
        }
        n += 1;
        if n % 50 == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }
    n
}

async fn expanded(rows: i64) -> (MariaDb, Engine<MySql>) {
    let db = server();
    create_orders(&db, rows);
    let engine = Engine::mysql(db.url()).expect("url");
    engine
        .expand(ORDERS_V2, "orders_v2.toml")
        .await
        .expect("expand");
    (db, engine)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expand_creates_the_shadow_and_a_second_expand_changes_nothing() {
    let (db, engine) = expanded(10).await;
    assert!(shadow_exists(&db));
    let plan = engine.plan(&spec(ORDERS_V2)).await.expect("plan");
    let script = engine.expand_script(&spec(ORDERS_V2), &plan);
    let findings = lint::check(
        &script,
        &lint::Options {
            dialect: lint::Dialect::Mysql,
            ..Default::default()
        },
    );
    assert!(findings.is_empty(), "{script}\n{findings:#?}");
    let again = engine
        .expand(ORDERS_V2, "orders_v2.toml")
        .await
        .expect("expand again");
    assert!(again.already, "a second expand reports it was done");
    let status = engine.status(Some("orders_v2")).await.expect("status");
    assert_eq!(status[0].phase, "expanded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_under_writes_leaves_the_new_table_equal_to_the_mapping() {
    let (db, engine) = expanded(5_000).await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        tokio::spawn(write_load(db.url(), stop, 7, 5_000))
    };
    backfill_slowly(&engine).await;
    // Keep writing while sync only applies changes.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.expect("load");
    sync_until_caught_up(&engine, &caught_up(), &Control::new(RateLimit::Unlimited)).await;
    assert_eq!(mismatches(&db), "NULL", "rows differ after catching up");
    let moved = db
        .sql("SELECT COUNT(*) FROM shop._splice_orders_v2_new WHERE id > 1000000")
        .expect("count");
    assert_ne!(moved, "0", "primary-key updates reached the new table");
    let report = engine.verify("orders_v2").await.expect("verify");
    assert!(report.passed(), "verify agrees: {:?}", report.diverged);
}

/// The last progress a sync reported.
#[derive(Default)]
struct Final(engine::backfill::SyncProgress);

impl engine::backfill::ProgressSink for Final {
    fn update(&mut self, p: &engine::backfill::SyncProgress) {
        self.0 = p.clone();
    }
}

/// The indexes of the new table, as `name: column(sub part),…` lines, `PRIMARY` first.
fn shadow_indexes(db: &MariaDb) -> String {
    db.sql(
        "SELECT GROUP_CONCAT(d ORDER BY INDEX_NAME <> 'PRIMARY', INDEX_NAME SEPARATOR '; ') FROM ( \
           SELECT INDEX_NAME, CONCAT(INDEX_NAME, ': ', GROUP_CONCAT( \
             CONCAT(COLUMN_NAME, IFNULL(CONCAT('(', SUB_PART, ')'), '')) ORDER BY SEQ_IN_INDEX)) d \
           FROM information_schema.STATISTICS \
           WHERE TABLE_SCHEMA = 'shop' AND TABLE_NAME = '_splice_orders_v2_new' \
           GROUP BY INDEX_NAME) i",
    )
    .expect("indexes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secondary_indexes_are_built_after_the_backfill_unless_the_file_says_at_expand() {
    let indexed = ORDERS_V2.replace(
        ") ENGINE=InnoDB",
        ",\n  KEY amount_idx (amount_cents),\n  KEY note_idx (note(20), id)\n) ENGINE=InnoDB",
    );
    let all = "PRIMARY: id; amount_idx: amount_cents; note_idx: note(20),id";
    let db = server();
    create_orders(&db, 3_000);
    let engine = Engine::mysql(db.url()).expect("url");
    engine
        .expand(&indexed, "orders_v2.toml")
        .await
        .expect("expand");
    // The copy maintains only the primary key; the two secondary indexes wait for it.
    assert_eq!(shadow_indexes(&db), "PRIMARY: id");
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        tokio::spawn(write_load(db.url(), stop, 11, 3_000))
    };
    let mut last = Final::default();
    engine
        .sync(
            "orders_v2",
            &caught_up(),
            &Control::new(RateLimit::Unlimited),
            &mut last,
        )
        .await
        .expect("sync");
    assert_eq!(last.0.indexes_built, 2);
    assert_eq!(shadow_indexes(&db), all);
    stop.store(true, Ordering::Relaxed);
    load.await.expect("load");
    // Built once: a second sync finds them and builds nothing.
    let mut again = Final::default();
    engine
        .sync(
            "orders_v2",
            &caught_up(),
            &Control::new(RateLimit::Unlimited),
            &mut again,
        )
        .await
        .expect("sync again");
    assert_eq!(again.0.indexes_built, 0);
    assert_eq!(mismatches(&db), "NULL", "rows differ after catching up");
    assert!(engine.verify("orders_v2").await.expect("verify").passed());

    // build_indexes = "at_expand": the new table has them from the start.
    engine.rollback("orders_v2").await.expect("rollback");
    let at_expand = indexed.replace(
        "table = \"shop.orders\"",
        "table = \"shop.orders\"\nbuild_indexes = \"at_expand\"",
    );
    assert_ne!(at_expand, indexed);
    engine
        .expand(&at_expand, "orders_v2.toml")
        .await
        .expect("expand");
    assert_eq!(shadow_indexes(&db), all);
}

/// The most keys a sync's progress said it had left to its backfill.
#[derive(Default)]
struct LeftToBackfill(u64);

impl engine::backfill::ProgressSink for LeftToBackfill {
    fn update(&mut self, p: &engine::backfill::SyncProgress) {
        self.0 = self.0.max(p.keys_left_to_backfill);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_never_resurrects_a_deleted_row_nor_loses_an_update_left_to_it() {
    let (db, engine) = expanded(20_000).await;
    let stop = Arc::new(AtomicBool::new(false));
    let updater = {
        let mut conn = my_conn(&db).await;
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut id = 11i64;
            let mut updates = 0u32;
            while !stop.load(Ordering::Relaxed) {
                id = (id * 104_729 + 17) % 20_000 + 1;
                let sql = "UPDATE shop.orders SET amount = amount + 1 WHERE id = ?";
                if conn.exec_drop(sql, (id,)).await.is_ok() && conn.affected_rows() == 1 {
                    updates += 1;
                }
            }
            updates
        })
    };
    let deleter = {
        let mut conn = my_conn(&db).await;
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut deleted = Vec::new();
            let mut id = 7i64;
            while !stop.load(Ordering::Relaxed) {
                id = (id * 7919 + 13) % 20_000 + 1;
                if conn
                    .exec_drop("DELETE FROM shop.orders WHERE id = ?", (id,))
                    .await
                    .is_ok()
                    && conn.affected_rows() == 1
                {
                    deleted.push(id);
                }
            }
            deleted
        })
    };
    let opts = SyncOptions {
        until_caught_up: true,
        chunk_target: Some(std::time::Duration::from_millis(5)),
        // Off: the writers raise commit latency, and the budget would slow the copy to a crawl.
        max_latency_increase: Some(None),
        ..Default::default()
    };
    let mut left = LeftToBackfill::default();
    engine
        .sync(
            "orders_v2",
            &opts,
            &Control::new(RateLimit::from_rows_per_second(10_000)),
            &mut left,
        )
        .await
        .expect("sync");
    stop.store(true, Ordering::Relaxed);
    let deleted = deleter.await.expect("deleter");
    let updates = updater.await.expect("updater");
    assert!(
        deleted.len() > 20 && updates > 20,
        "deletes ({}) and updates ({updates}) raced the backfill",
        deleted.len()
    );
    assert!(left.0 > 0, "the applier left changed keys to the backfill");
    sync_until_caught_up(&engine, &caught_up(), &Control::new(RateLimit::Unlimited)).await;
    let ids: Vec<String> = deleted.iter().map(i64::to_string).collect();
    let resurrected = db
        .sql(&format!(
            "SELECT COUNT(*) FROM shop._splice_orders_v2_new WHERE id IN ({})",
            ids.join(",")
        ))
        .expect("query");
    assert_eq!(resurrected, "0");
    assert_eq!(mismatches(&db), "NULL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_whose_fence_was_taken_over_copies_no_further_chunk() {
    use engine::adapter::BackfillSource;
    let (db, engine) = expanded(100).await;
    let my = engine.adapter();
    let plan = engine.plan(&spec(ORDERS_V2)).await.expect("plan");
    let conn = my.connect().await.expect("connect");
    let lock = my.acquire_lock("orders_v2").await.expect("lock");
    let copied = my
        .copy_range(
            &conn,
            &lock,
            &plan.forward,
            None,
            Some(&["10".to_string()]),
            engine::seam::Fill::Missing,
        )
        .await
        .expect("a chunk at the current token");
    assert_eq!(copied, 10);
    db.sql("UPDATE splice.migrations SET fence = fence + 1 WHERE name = 'orders_v2'")
        .expect("take over");
    let err = my
        .copy_range(
            &conn,
            &lock,
            &plan.forward,
            Some(&["10".to_string()]),
            None,
            engine::seam::Fill::Missing,
        )
        .await
        .expect_err("a stale runner copies nothing");
    assert!(err.is_busy(), "{err}");
    assert_eq!(
        db.sql("SELECT COUNT(*) FROM shop._splice_orders_v2_new")
            .expect("count"),
        "10"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_before_cutover_leaves_nothing_behind() {
    let (db, engine) = expanded(50).await;
    sync_until_caught_up(&engine, &caught_up(), &Control::new(RateLimit::Unlimited)).await;
    assert_eq!(mismatches(&db), "NULL");
    let report = engine.verify("orders_v2").await.expect("verify");
    assert!(report.passed(), "{:?}", report.diverged);
    engine.rollback("orders_v2").await.expect("rollback");
    assert!(!shadow_exists(&db), "the shadow table is gone");
    assert_eq!(
        db.sql("SELECT COUNT(*) FROM splice.cdc_slots")
            .expect("slots"),
        "0",
        "the binlog slot is gone"
    );
    let status = engine.status(Some("orders_v2")).await.expect("status");
    assert_eq!(status[0].phase, "rolled_back");
    assert_eq!(
        db.sql("SELECT COUNT(*) FROM shop.orders").expect("count"),
        "50",
        "the live table is untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_passes_after_sync_and_names_a_tampered_row_by_its_column() {
    let db = server();
    create_orders(&db, 3_000);
    // Values whose text needs escaping, and NULL next to an empty string.
    db.sql(
        "UPDATE shop.orders SET note = CONCAT('tab', CHAR(9), 'back', CHAR(92), 'nl', CHAR(10)) \
         WHERE id = 5; UPDATE shop.orders SET note = '' WHERE id = 6",
    )
    .expect("notes");
    let engine = Engine::mysql(db.url())
        .expect("url")
        .with_verify_range_rows(400);
    engine
        .expand(ORDERS_V2, "orders_v2.toml")
        .await
        .expect("expand");
    sync_until_caught_up(&engine, &caught_up(), &Control::new(RateLimit::Unlimited)).await;
    let report = engine.verify("orders_v2").await.expect("verify");
    assert!(report.passed(), "{:?}", report.diverged);
    assert_eq!(report.rows_checked, 3_000);
    assert!(report.ranges > 5, "several ranges ({})", report.ranges);
    let status = engine.status(Some("orders_v2")).await.expect("status");
    assert_eq!(status[0].phase, "verified");

    // Tamper with the new table behind splice's back (not captured: only the old table is).
    db.sql(
        "UPDATE shop._splice_orders_v2_new SET amount_cents = amount_cents + 1 WHERE id = 1234; \
         UPDATE shop._splice_orders_v2_new SET note = NULL WHERE id = 6; \
         DELETE FROM shop._splice_orders_v2_new WHERE id = 2000",
    )
    .expect("tamper");
    let report = engine.verify("orders_v2").await.expect("verify");
    assert!(!report.passed());
    let keys: Vec<&str> = report.diverged.iter().map(|d| d.key[0].as_str()).collect();
    assert_eq!(keys, vec!["6", "1234", "2000"], "{:?}", report.diverged);
    use engine::seam::Divergence;
    let columns = |i: usize| match report.divergence(&report.diverged[i]) {
        Divergence::Columns(c) => c.into_iter().map(|c| c.column).collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    assert_eq!(columns(0), vec!["note"]);
    assert_eq!(columns(1), vec!["amount_cents"]);
    assert_eq!(
        report.divergence(&report.diverged[2]),
        Divergence::MissingInTarget
    );
    let status = engine.status(Some("orders_v2")).await.expect("status");
    assert_eq!(
        status[0].phase, "syncing",
        "a failed verify closes the gate again"
    );
    // Incremental builds on that failed pass: the ranges whose last check did not match are
    // re-read, so it names the same rows.
    let counters = engine::verify::VerifyCounters::default();
    let report = engine
        .verify_kind("orders_v2", engine::VerifyKind::Incremental, &counters)
        .await
        .expect("verify --incremental");
    assert_eq!(report.kind, engine::VerifyKind::Incremental, "{report:?}");
    let keys: Vec<&str> = report.diverged.iter().map(|d| d.key[0].as_str()).collect();
    assert_eq!(keys, vec!["6", "1234", "2000"], "{:?}", report.diverged);
}

/// Keys where the old table is not the reverse mapping of the live (new) one after cutover.
fn reverse_mismatches(db: &MariaDb) -> String {
    db.sql(
        "SELECT GROUP_CONCAT(id ORDER BY id) FROM ( \
           SELECT n.id FROM shop.orders n LEFT JOIN shop._splice_orders_v2_old o ON o.id = n.id \
            WHERE o.id IS NULL OR o.amount <> n.amount_cents / 100 \
               OR NOT (n.note <=> o.note) OR n.created_at <> o.created_at \
           UNION ALL \
           SELECT o.id FROM shop._splice_orders_v2_old o LEFT JOIN shop.orders n ON n.id = o.id \
            WHERE n.id IS NULL) d",
    )
    .expect("compare")
}

fn columns_of(db: &MariaDb, table: &str) -> String {
    db.sql(&format!(
        "SELECT GROUP_CONCAT(COLUMN_NAME ORDER BY ORDINAL_POSITION) FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = 'shop' AND TABLE_NAME = '{table}'"
    ))
    .expect("columns")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutover_under_writes_then_reverse_sync_and_rollback_keep_every_row() {
    let (db, engine) = expanded(3_000).await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(write_load(db.url(), stop.clone(), 11, 3_000));
    sync_until_caught_up(&engine, &caught_up(), &Control::new(RateLimit::Unlimited)).await;
    let report = engine.verify("orders_v2").await.expect("verify");
    assert!(report.passed(), "{:?}", report.diverged);
    // The application keeps writing through the cutover.
    let cut = engine
        .cutover("orders_v2", u64::MAX, engine::phases::ReverseSync::Start)
        .await
        .expect("cutover");
    assert!(cut.reverse_sync);
    stop.store(true, Ordering::Relaxed);
    let statements = load.await.expect("load");
    // Every row the old table got before the swap is in the new one. After the swap the load
    // can only delete or move keys below 3,000 there (its inserts name the old shape's
    // `amount` and fail), so a key of 3,000 or more in the old table that the live one lacks
    // is a write the swap lost (reverse sync would later make the old table agree).
    let lost = db
        .sql(
            "SELECT GROUP_CONCAT(id) FROM shop._splice_orders_v2_old \
             WHERE id >= 3000 AND id NOT IN (SELECT id FROM shop.orders)",
        )
        .expect("lost");
    assert_eq!(
        lost, "NULL",
        "rows written before the swap, missing after it"
    );
    assert!(statements > 100, "the load ran ({statements})");
    assert_eq!(columns_of(&db, "orders"), "id,amount_cents,note,created_at");
    assert_eq!(
        columns_of(&db, "_splice_orders_v2_old"),
        "id,amount,note,created_at"
    );
    assert_eq!(
        columns_of(&db, "_splice_orders_v2_new"),
        "NULL",
        "the shadow name is free"
    );

    // Writes on the new shape reach the old table through reverse sync.
    db.sql(
        "INSERT INTO shop.orders (id, amount_cents, note) VALUES (5000001, 1234, 'after'); \
         UPDATE shop.orders SET amount_cents = amount_cents + 100 WHERE id BETWEEN 10 AND 20; \
         DELETE FROM shop.orders WHERE id BETWEEN 30 AND 35",
    )
    .expect("writes on the new shape");
    sync_until_caught_up(&engine, &caught_up(), &Control::new(RateLimit::Unlimited)).await;
    assert_eq!(
        reverse_mismatches(&db),
        "NULL",
        "the old table follows the new one"
    );

    let back = engine
        .rollback("orders_v2")
        .await
        .expect("rollback after cutover");
    assert_eq!(back.to, "syncing");
    assert_eq!(columns_of(&db, "orders"), "id,amount,note,created_at");
    assert_eq!(
        db.sql("SELECT amount FROM shop.orders WHERE id = 5000001")
            .expect("row"),
        "12.34",
        "a row written on the new shape is in the old table, live again"
    );
    assert_eq!(
        db.sql("SELECT COUNT(*) FROM shop.orders WHERE id BETWEEN 30 AND 35")
            .expect("count"),
        "0"
    );
    // Forward sync goes on from the swap back.
    db.sql("UPDATE shop.orders SET note = 'again' WHERE id = 40")
        .expect("write");
    sync_until_caught_up(&engine, &caught_up(), &Control::new(RateLimit::Unlimited)).await;
    assert_eq!(mismatches(&db), "NULL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutover_applies_what_the_stream_still_held_and_swaps_exactly() {
    let (db, engine) = expanded(2_000).await;
    sync_until_caught_up(&engine, &caught_up(), &Control::new(RateLimit::Unlimited)).await;
    let report = engine.verify("orders_v2").await.expect("verify");
    assert!(report.passed(), "{:?}", report.diverged);
    // Changes no sync applied yet: cutover's catch-up and the drain under the lock must.
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(write_load(db.url(), stop.clone(), 3, 2_000));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.expect("load");
    engine
        .cutover("orders_v2", u64::MAX, engine::phases::ReverseSync::Start)
        .await
        .expect("cutover");
    // No write since the swap: the old table mapped must be exactly the live one.
    assert_eq!(reverse_mismatches(&db), "NULL");
    let status = engine.status(Some("orders_v2")).await.expect("status");
    assert_eq!(status[0].phase, "cut_over");
    let history = engine
        .adapter()
        .history(&engine.adapter().connect().await.expect("db"), "orders_v2")
        .await
        .expect("history");
    assert_eq!(history.last().map(|t| t.to.as_str()), Some("cut_over"));
}

async fn cut_over(rows: i64) -> (MariaDb, Engine<MySql>) {
    let (db, engine) = expanded(rows).await;
    sync_until_caught_up(&engine, &caught_up(), &Control::new(RateLimit::Unlimited)).await;
    let report = engine.verify("orders_v2").await.expect("verify");
    assert!(report.passed(), "{:?}", report.diverged);
    engine
        .cutover("orders_v2", u64::MAX, engine::phases::ReverseSync::Start)
        .await
        .expect("cutover");
    (db, engine)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_quarantines_the_old_table_and_drop_removes_it_only_after() {
    let (db, engine) = cut_over(200).await;
    let c = engine.contract("orders_v2", None).await.expect("contract");
    assert!(!c.already);
    assert_eq!(c.quarantined_as, "splice_quarantine._splice_orders_v2_old");
    assert_eq!(columns_of(&db, "_splice_orders_v2_old"), "NULL");
    assert_eq!(
        db.sql("SELECT COUNT(*) FROM splice_quarantine._splice_orders_v2_old")
            .expect("count"),
        "200"
    );
    assert_eq!(
        db.sql("SELECT COUNT(*) FROM splice.cdc_slots")
            .expect("slots"),
        "0",
        "both binlog slots are gone"
    );
    let again = engine
        .contract("orders_v2", None)
        .await
        .expect("contract again");
    assert!(again.already);
    let e = engine
        .drop_quarantined("orders_v2", engine::phases::Quarantine::Respect)
        .await
        .expect_err("the quarantine has not ended");
    assert!(matches!(e, EngineError::Refused(_)), "{e}");
    engine
        .drop_quarantined("orders_v2", engine::phases::Quarantine::Override)
        .await
        .expect("drop --force");
    assert_eq!(
        db.sql(
            "SELECT COUNT(*) FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = 'splice_quarantine'"
        )
        .expect("count"),
        "0"
    );
    let status = engine.status(Some("orders_v2")).await.expect("status");
    assert_eq!(status[0].phase, "dropped");
    assert_eq!(
        db.sql("SELECT COUNT(*) FROM shop.orders").expect("count"),
        "200",
        "the live table is untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_after_contract_restores_the_old_table_with_the_writes_made_since() {
    let (db, engine) = cut_over(300).await;
    engine.contract("orders_v2", None).await.expect("contract");
    // Written on the new shape while the old table sat in quarantine, uncaptured.
    db.sql(
        "INSERT INTO shop.orders (id, amount_cents, note) VALUES (7000001, 999, 'late'); \
         DELETE FROM shop.orders WHERE id = 3",
    )
    .expect("writes");
    engine.rollback("orders_v2").await.expect("restore");
    let status = engine.status(Some("orders_v2")).await.expect("status");
    assert_eq!(
        status[0].phase, "cut_over",
        "back to cut over with reverse sync"
    );
    assert_eq!(reverse_mismatches(&db), "NULL");
    assert_eq!(
        db.sql("SELECT amount FROM shop._splice_orders_v2_old WHERE id = 7000001")
            .expect("row"),
        "9.99"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cutover_lock_that_times_out_is_retried_and_leaves_the_old_table_live_meanwhile() {
    let (db, engine) = expanded(100).await;
    sync_until_caught_up(&engine, &caught_up(), &Control::new(RateLimit::Unlimited)).await;
    assert!(engine.verify("orders_v2").await.expect("verify").passed());
    // A transaction that read the table holds its metadata lock until it ends: here, until a
    // lock attempt of the cutover timed out.
    let mut holder = my_conn(&db).await;
    holder.query_drop("START TRANSACTION").await.expect("begin");
    holder
        .query_drop("SELECT COUNT(*) FROM shop.orders")
        .await
        .expect("read");
    let cutover = {
        let url = db.url();
        tokio::spawn(async move {
            Engine::mysql(url)
                .expect("url")
                .cutover("orders_v2", u64::MAX, engine::phases::ReverseSync::Start)
                .await
        })
    };
    // Wait until a lock attempt has been seen waiting and then gave up; the old table is live
    // all the while. Then let the next attempt through. (The swap's `LOCK TABLES … READ`
    // shares the table with the reader; the rename is what waits for it.)
    let waiting = || {
        db.sql(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
             WHERE INFO LIKE 'RENAME TABLE%' AND STATE LIKE '%metadata lock%'",
        )
        .expect("processlist")
            != "0"
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !waiting() {
        assert!(
            std::time::Instant::now() < deadline,
            "no lock attempt was seen"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(columns_of(&db, "orders"), "id,amount,note,created_at");
    while waiting() {
        assert!(
            std::time::Instant::now() < deadline,
            "the lock attempt never timed out"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(columns_of(&db, "orders"), "id,amount,note,created_at");
    holder.query_drop("COMMIT").await.expect("commit");
    let report = cutover.await.expect("task").expect("cutover after a retry");
    assert!(report.attempts >= 2, "{report:?}");
    assert_eq!(columns_of(&db, "orders"), "id,amount_cents,note,created_at");
    assert_eq!(
        columns_of(&db, "_splice_orders_v2_old"),
        "id,amount,note,created_at",
        "the retired name holds the old table, not a sentry"
    );
    let _ = holder.query_drop("SELECT 1").await;
    assert_eq!(reverse_mismatches(&db), "NULL");
}

/// Stops the sync once it reports a pause, keeping the reason.
struct StopWhenPaused {
    control: Control,
    reason: Option<String>,
}

impl engine::backfill::ProgressSink for StopWhenPaused {
    fn update(&mut self, p: &engine::backfill::SyncProgress) {
        if let engine::backfill::SyncState::Paused { reason } = &p.state {
            self.reason = Some(reason.clone());
            self.control.stop();
        }
    }
}

/// Runs sync until the backfill pauses (then stops it); returns the pause's reason.
async fn sync_until_paused(engine: &Engine<MySql>) -> String {
    let control = Control::new(RateLimit::Unlimited);
    let mut sink = StopWhenPaused {
        control: control.clone(),
        reason: None,
    };
    engine
        .sync("orders_v2", &caught_up(), &control, &mut sink)
        .await
        .expect("sync stops when asked");
    sink.reason.expect("the backfill paused")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_pauses_while_threads_running_is_above_the_files_bound() {
    let db = server();
    create_orders(&db, 1_000);
    // Threads_running counts at least the backfill's own statement: a bound of 0 is exceeded.
    let file = format!("{ORDERS_V2}\n[throttle]\nmax_threads_running = 0\n");
    let engine = Engine::mysql(db.url()).expect("url");
    engine
        .expand(&file, "orders_v2.toml")
        .await
        .expect("expand");
    let reason = sync_until_paused(&engine).await;
    assert!(reason.starts_with("Threads_running "), "{reason}");
    assert_eq!(
        db.sql("SELECT COUNT(*) FROM shop._splice_orders_v2_new")
            .expect("count"),
        "0",
        "nothing was copied while paused"
    );
}

/// A session of the application waiting for a row lock on the table pauses the backfill
/// (InnoDB's lock-wait tables), naming why; nothing is copied until the wait ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_pauses_while_a_session_waits_for_a_lock_on_the_table() {
    let db = server();
    create_orders(&db, 1_000);
    let engine = Engine::mysql(db.url()).expect("url");
    engine
        .expand(ORDERS_V2, "orders_v2.toml")
        .await
        .expect("expand");
    let url = db.url();
    let holder = {
        let url = url.clone();
        tokio::spawn(async move {
            let mut conn = mysql_async::Conn::from_url(url).await.expect("connect");
            conn.query_drop("BEGIN").await.expect("begin");
            conn.query_drop("UPDATE shop.orders SET note = 'held' WHERE id = 5")
                .await
                .expect("hold key 5");
            tokio::time::sleep(std::time::Duration::from_secs(8)).await;
            conn.query_drop("COMMIT").await.expect("commit");
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let waiter = tokio::spawn(async move {
        let mut conn = mysql_async::Conn::from_url(url).await.expect("connect");
        conn.query_drop("UPDATE shop.orders SET note = 'waited' WHERE id = 5")
            .await
            .expect("the waiter's update");
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while db
        .sql(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
             WHERE INFO LIKE 'UPDATE shop.orders SET note = ''waited''%'",
        )
        .expect("processlist")
        == "0"
    {
        assert!(std::time::Instant::now() < deadline, "the waiter never ran");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let reason = sync_until_paused(&engine).await;
    assert_eq!(reason, "1 session(s) waiting for a lock on the table");
    assert_eq!(
        db.sql("SELECT COUNT(*) FROM shop._splice_orders_v2_new")
            .expect("count"),
        "0",
        "nothing was copied while the application waited"
    );
    holder.await.expect("holder");
    waiter.await.expect("waiter");
    sync_until_caught_up(&engine, &caught_up(), &Control::new(RateLimit::Unlimited)).await;
    assert_eq!(mismatches(&db), "NULL", "rows differ after the copy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_log_keeps_requests_in_order_and_refuses_an_unknown_migration() {
    let (_db, engine) = expanded(10).await;
    for action in ["throttle 500 rows/s", "throttle cleared"] {
        engine
            .record_event(
                "orders_v2",
                action,
                "tester",
                Some("a reason"),
                Some("done"),
            )
            .await
            .expect("record");
    }
    let err = engine
        .record_event("nope", "throttle cleared", "tester", None, None)
        .await
        .expect_err("no such migration: nothing recorded");
    assert!(matches!(err, EngineError::NoSuchMigration { .. }), "{err}");
    let events = engine.events("orders_v2", 10).await.expect("events");
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, vec!["throttle 500 rows/s", "throttle cleared"]);
    assert_eq!(events[0].caller, "tester");
    assert_eq!(events[0].reason.as_deref(), Some("a reason"));
    assert_eq!(events[0].outcome.as_deref(), Some("done"));
    assert!(events[0].at.ends_with('Z'), "{}", events[0].at);
    // The last `limit`, oldest first.
    let last = engine.events("orders_v2", 1).await.expect("events");
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].action, "throttle cleared");
    assert!(engine.events("nope", 10).await.expect("events").is_empty());
}

struct LastProgress(Arc<std::sync::Mutex<engine::backfill::SyncProgress>>);

impl engine::backfill::ProgressSink for LastProgress {
    fn update(&mut self, p: &engine::backfill::SyncProgress) {
        if let Ok(mut last) = self.0.lock() {
            *last = p.clone();
        }
    }
}

fn heartbeat_row(db: &MariaDb) -> Option<i64> {
    let beats = db
        .sql("SELECT beats FROM splice.heartbeat WHERE migration = 'orders_v2'")
        .expect("heartbeat row");
    let beats = beats.trim();
    (!beats.is_empty()).then(|| beats.parse().expect("a number of beats"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_impact_budget_times_a_heartbeat_on_the_source_holds_back_when_it_slows_and_says_so() {
    let (db, engine) = expanded(200).await;
    sync_until_caught_up(&engine, &caught_up(), &Control::new(RateLimit::Unlimited)).await;
    // Follow changes with the default budget, in the background.
    let last = Arc::new(std::sync::Mutex::new(
        engine::backfill::SyncProgress::default(),
    ));
    let control = Control::new(RateLimit::Unlimited);
    let sync = {
        let (url, control, last) = (db.url(), control.clone(), last.clone());
        tokio::spawn(async move {
            Engine::mysql(url)
                .expect("url")
                .sync(
                    "orders_v2",
                    &SyncOptions::default(),
                    &control,
                    &mut LastProgress(last),
                )
                .await
        })
    };
    let figures = |last: &Arc<std::sync::Mutex<engine::backfill::SyncProgress>>| {
        last.lock().ok().and_then(|p| p.impact.clone())
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while figures(&last).is_none() {
        assert!(std::time::Instant::now() < deadline, "no impact figures");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The probe commits its heartbeat on the source, and status shows what it measured.
    let beats = heartbeat_row(&db).expect("a heartbeat row");
    assert!(beats > 8, "{beats} heartbeats");
    let status = engine.status(Some("orders_v2")).await.expect("status");
    let impact = status[0]
        .impact
        .clone()
        .expect("status shows the impact figures");
    assert!(impact.baseline_ms > 0.0 && impact.budget_ms > impact.baseline_ms);
    // The application writes the table and its commits slow down: another session holds the
    // heartbeat's row for 40 ms at a time, so each heartbeat commit waits for it. (Without
    // writes to the table the budget counts the application as idle and does not hold back.)
    let stop = Arc::new(AtomicBool::new(false));
    let slow = {
        let (mut conn, stop) = (my_conn(&db).await, stop.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                conn.query_drop(format!(
                    "UPDATE shop.orders SET note = 'w{n}' WHERE id = 1; \
                     START TRANSACTION; \
                     SELECT 1 FROM splice.heartbeat WHERE migration = 'orders_v2' FOR UPDATE; \
                     DO SLEEP(0.04); COMMIT"
                ))
                .await
                .expect("write, and hold the heartbeat row");
            }
        })
    };
    // One report read once: the pace it shows is the one it says it holds back to.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let held = loop {
        let now = figures(&last);
        if let Some(i) = now.as_ref().filter(|i| {
            i.holding_back
                .as_ref()
                .is_some_and(|h| h.contains("> budget"))
        }) {
            break i.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never held back: {now:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(held.pace < 1.0, "{held:?}");
    // `splice status` (another process) says so once the sync saved it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let s = engine.status(Some("orders_v2")).await.expect("status");
        if s[0]
            .impact
            .as_ref()
            .and_then(|i| i.holding_back.as_ref())
            .is_some_and(|h| h.contains("> budget"))
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "status never said so");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    slow.await.expect("slow");
    control.stop();
    sync.await.expect("join").expect("sync");
    // No sync runs: status shows no stale figures; abandoning removes the heartbeat row.
    let s = engine.status(Some("orders_v2")).await.expect("status");
    assert!(s[0].impact.is_none(), "{:?}", s[0].impact);
    engine.rollback("orders_v2").await.expect("rollback");
    assert_eq!(heartbeat_row(&db), None);
}

/// The harness's servers must not share a tmpdir: a starting mariadbd deletes the `#sql*`
/// files in its tmpdir, which would be the live temporary tables of the other servers (the
/// cause of intermittent "Error on delete of '…#sql-temptable-….MAD'" failures).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_starting_test_server_leaves_the_temporary_tables_of_running_ones_alone() {
    use mysql_async::prelude::Queryable;
    let first = server();
    let mut conn = my_conn(&first).await;
    conn.query_drop(
        "CREATE DATABASE scratch; \
         CREATE TEMPORARY TABLE scratch.t (a INT) ENGINE=Aria; \
         INSERT INTO scratch.t VALUES (1)",
    )
    .await
    .expect("a temporary table");
    let second = server();
    conn.query_drop("DROP TEMPORARY TABLE scratch.t")
        .await
        .expect("the temporary table's files are still there");
    drop(second);
}

const PARTS_V2: &str = r#"
name = "parts_v2"
table = "shop.parts"
target = """
CREATE TABLE shop.parts (
  region VARCHAR(10) NOT NULL,
  code VARBINARY(6) NOT NULL,
  qty BIGINT NOT NULL,
  PRIMARY KEY (region, code)
) ENGINE=InnoDB
"""

[up]
qty = "qty * 10"

[down]
qty = "qty DIV 10"
"#;

/// Keys of two columns, one of them a case-insensitive string and the other binary, travel
/// from the binlog to the applier's batched statements and name exactly the rows they were:
/// inserts, updates, deletes and key updates in batches of many keys, compared row by row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_composite_key_of_text_and_binary_columns_is_applied_in_batches_row_for_row() {
    let db = server();
    db.sql(&format!(
        "CREATE DATABASE shop; \
         CREATE TABLE shop.parts (region VARCHAR(10) NOT NULL, code VARBINARY(6) NOT NULL, \
           qty INT NOT NULL, PRIMARY KEY (region, code)) ENGINE=InnoDB; \
         INSERT INTO shop.parts SELECT IF(n % 2 = 0, 'North', 'south'), \
           UNHEX(LPAD(HEX(n), 6, '0')), n FROM (SELECT 1 + a.d + 10 * b.d + 100 * c.d AS n \
           FROM {DIGITS} a, {DIGITS} b, {DIGITS} c) q"
    ))
    .expect("parts");
    let engine = Engine::mysql(db.url()).expect("url");
    engine
        .expand(PARTS_V2, "parts_v2.toml")
        .await
        .expect("expand");
    let opts = caught_up();
    let control = Control::new(RateLimit::Unlimited);
    engine
        .sync("parts_v2", &opts, &control, &mut NoProgress)
        .await
        .expect("backfill");
    // Each statement changes many keys, so each applied batch holds hundreds of them
    // (more than one statement group), some differing only in case from a live key.
    db.sql(
        "UPDATE shop.parts SET qty = qty + 1 WHERE qty % 3 = 0; \
         DELETE FROM shop.parts WHERE qty % 5 = 1; \
         UPDATE shop.parts SET region = 'west' WHERE qty % 7 = 2; \
         UPDATE shop.parts SET code = UNHEX(CONCAT('FF', HEX(code))) WHERE qty % 11 = 4 \
           AND LENGTH(code) < 6; \
         INSERT INTO shop.parts VALUES ('NORTH', UNHEX('00FF00'), 5), ('SOUTH', UNHEX('00'), 6)",
    )
    .expect("writes");
    engine
        .sync("parts_v2", &opts, &control, &mut NoProgress)
        .await
        .expect("apply");
    let differing = db
        .sql(
            "SELECT COUNT(*) FROM ( \
               SELECT o.region FROM shop.parts o LEFT JOIN shop._splice_parts_v2_new n \
                 ON BINARY n.region = BINARY o.region AND n.code = o.code \
                WHERE n.code IS NULL OR n.qty <> o.qty * 10 \
               UNION ALL \
               SELECT n.region FROM shop._splice_parts_v2_new n LEFT JOIN shop.parts o \
                 ON BINARY n.region = BINARY o.region AND n.code = o.code \
                WHERE o.code IS NULL) d",
        )
        .expect("compare");
    assert_eq!(differing, "0", "rows differ after the applier caught up");
    let (old, new) = (
        db.sql("SELECT COUNT(*) FROM shop.parts").expect("count"),
        db.sql("SELECT COUNT(*) FROM shop._splice_parts_v2_new")
            .expect("count"),
    );
    assert_eq!(old, new);
    let report = engine.verify("parts_v2").await.expect("verify");
    assert!(report.passed(), "verify agrees: {:?}", report.diverged);
}

async fn incremental(engine: &Engine<MySql>, name: &str) -> VerifyReport {
    engine
        .verify_kind(
            name,
            engine::VerifyKind::Incremental,
            &engine::verify::VerifyCounters::default(),
        )
        .await
        .expect("incremental verify")
}

/// The stored ranges of orders_v2: (idx, upper bound) in key order, the last open.
fn stored_ranges(db: &MariaDb) -> Vec<(i64, Option<i64>)> {
    let text = db
        .sql(
            "SELECT GROUP_CONCAT(CONCAT(idx, ':', \
               COALESCE(JSON_UNQUOTE(JSON_EXTRACT(upper_key, '$[0]')), '-')) ORDER BY idx) \
             FROM splice.verify_ranges WHERE migration = 'orders_v2'",
        )
        .expect("ranges");
    text.split(',')
        .filter_map(|r| r.split_once(':'))
        .map(|(i, u)| (i.parse().expect("idx"), u.parse().ok()))
        .collect()
}

/// The indexes of the stored ranges holding any key in `lo..=hi`.
fn covering(ranges: &[(i64, Option<i64>)], lo: i64, hi: i64) -> Vec<i64> {
    let mut lower = None;
    let mut out = Vec::new();
    for (i, upper) in ranges {
        if lower.is_none_or(|l| l < hi) && upper.is_none_or(|u| u >= lo) {
            out.push(*i);
        }
        lower = *upper;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_verify_rereads_only_the_ranges_capture_changed() {
    let (db, engine) = expanded(20_000).await;
    let engine = engine.with_verify_range_rows(1_000);
    sync_until_caught_up(&engine, &caught_up(), &Control::new(RateLimit::Unlimited)).await;

    // The first request for incremental has nothing to build on: a full pass, said so.
    let first = incremental(&engine, "orders_v2").await;
    assert_eq!(first.kind, engine::VerifyKind::Full);
    assert!(first.full_because.is_some(), "{first:?}");
    assert!(first.passed(), "{first:?}");
    let ranges = stored_ranges(&db);
    assert!(ranges.len() >= 10, "{ranges:?}");
    assert_eq!(first.ranges_total, ranges.len() as u64);

    // 1% of the rows change through the application; one of them sits exactly on a stored
    // bound (it belongs to the range below it). Key 5100, among the changed ones, and key
    // 15000, far from them, are tampered with in the new table behind splice's back.
    let (bound_idx, bound) = ranges[3];
    let bound = bound.expect("a bounded range");
    db.sql(&format!(
        "UPDATE shop.orders SET note = 'changed' WHERE id BETWEEN 5001 AND 5199 OR id = {bound}"
    ))
    .expect("changes");
    sync_until_caught_up(&engine, &caught_up(), &Control::new(RateLimit::Unlimited)).await;
    db.sql("UPDATE shop._splice_orders_v2_new SET note = 'tampered' WHERE id IN (5100, 15000)")
        .expect("tamper");
    let mut expected = covering(&ranges, 5001, 5199);
    expected.push(bound_idx);
    expected.sort();
    expected.dedup();
    assert!(!covering(&ranges, 15000, 15000)
        .iter()
        .any(|i| expected.contains(i)));

    let report = incremental(&engine, "orders_v2").await;
    assert_eq!(report.kind, engine::VerifyKind::Incremental);
    assert_eq!(
        report.ranges as usize,
        expected.len(),
        "{report:?} {expected:?}"
    );
    assert!(
        report.rows_checked < 20_000 / 3,
        "re-read {} of 20,000 rows",
        report.rows_checked
    );
    let keys: Vec<&[String]> = report.diverged.iter().map(|d| &d.key[..]).collect();
    assert_eq!(keys, vec![&["5100".to_string()][..]], "{report:?}");
    let checked = db
        .sql(
            "SELECT GROUP_CONCAT(idx ORDER BY idx) FROM splice.verify_ranges \
             WHERE migration = 'orders_v2' AND checked_marks > 0",
        )
        .expect("marked");
    let expected_text: Vec<String> = expected.iter().map(i64::to_string).collect();
    assert_eq!(
        checked,
        expected_text.join(","),
        "the ranges capture marked are the ones re-read"
    );

    // The tampered row of an unchanged range is the limit: a full pass finds it.
    let full = engine.verify("orders_v2").await.expect("full verify");
    assert_eq!(full.kind, engine::VerifyKind::Full);
    let mut keys: Vec<String> = full.diverged.iter().map(|d| d.key.join(",")).collect();
    keys.sort();
    assert_eq!(keys, vec!["15000".to_string(), "5100".to_string()]);

    // Repaired through capture (the application rewrites both rows): incremental re-reads
    // just their ranges, passes, and opens the gate.
    db.sql(
        "UPDATE shop.orders SET note = CONCAT(COALESCE(note, ''), '!') WHERE id IN (5100, 15000)",
    )
    .expect("rewrite");
    let report = incremental(&engine, "orders_v2").await;
    assert_eq!(report.kind, engine::VerifyKind::Incremental);
    assert!(report.passed(), "{report:?}");
    assert!(report.ranges <= 2, "{report:?}");
    assert_eq!(
        db.sql("SELECT phase FROM splice.migrations WHERE name = 'orders_v2'")
            .expect("phase"),
        "verified"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_verify_places_keys_of_a_collated_composite_key_in_their_ranges() {
    let db = server();
    // A composite key whose text part compares case-insensitively in latin1 (binary order
    // would put 'B' and 'Z' before 'a'): capture marks ranges under the collation the range
    // reads compare with.
    db.sql(&format!(
        "CREATE DATABASE shop; \
         CREATE TABLE shop.codes (region VARCHAR(4) CHARACTER SET latin1 \
           COLLATE latin1_general_ci NOT NULL, n INT NOT NULL, label VARCHAR(20) NULL, \
           PRIMARY KEY (region, n)) ENGINE=InnoDB; \
         INSERT INTO shop.codes SELECT r.r, q.n, CONCAT('l', q.n) \
           FROM (SELECT 'B' r UNION ALL SELECT 'a' UNION ALL SELECT 'Z' UNION ALL SELECT 'm') r, \
                (SELECT 1 + a.d + 10 * b.d + 100 * c.d AS n \
                   FROM {DIGITS} a, {DIGITS} b, {DIGITS} c) q WHERE q.n <= 500"
    ))
    .expect("table");
    let file = r#"
name = "codes_v2"
table = "shop.codes"
target = """
CREATE TABLE shop.codes (region VARCHAR(4) CHARACTER SET latin1 COLLATE latin1_general_ci NOT NULL,
  n INT NOT NULL, label VARCHAR(20) NOT NULL, PRIMARY KEY (region, n)) ENGINE=InnoDB
"""

[up]
label = "COALESCE(label, '')"
"#;
    let engine = Engine::mysql(db.url())
        .expect("url")
        .with_verify_range_rows(200);
    engine.expand(file, "codes_v2.toml").await.expect("expand");
    let control = Control::new(RateLimit::Unlimited);
    engine
        .sync("codes_v2", &caught_up(), &control, &mut NoProgress)
        .await
        .expect("sync");
    let full = engine.verify("codes_v2").await.expect("full verify");
    assert!(full.passed() && full.ranges_total >= 4, "{full:?}");
    // One key of each region changes; then the new table's rows of two of them are tampered
    // with.
    db.sql("UPDATE shop.codes SET label = 'changed' WHERE n = 250")
        .expect("change");
    engine
        .sync("codes_v2", &caught_up(), &control, &mut NoProgress)
        .await
        .expect("sync");
    // ('B', 250) and ('m', 250): in binary order both would be placed in other ranges than the
    // ones the reads use (ranges holding 'a' keys, say), whose re-reading would miss them.
    db.sql(
        "UPDATE shop._splice_codes_v2_new SET label = 'x' WHERE region IN ('B', 'm') AND n = 250",
    )
    .expect("tamper");
    let report = incremental(&engine, "codes_v2").await;
    assert_eq!(report.kind, engine::VerifyKind::Incremental);
    assert!(report.ranges < report.ranges_total, "{report:?}");
    let keys: Vec<String> = report.diverged.iter().map(|d| d.key.join(",")).collect();
    assert_eq!(
        keys,
        vec!["B,250".to_string(), "m,250".to_string()],
        "{report:?}"
    );
}

/// A primary cannot see its replicas' lag: the backfill asks each replica listed in
/// `[throttle] replicas` (with the database URL's credentials), pauses naming the one whose
/// replication stopped (and one it cannot reach), and copies once replication runs again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_pauses_while_a_listed_replica_stops_replicating_and_goes_on_after() {
    let primary = server();
    let replica = MariaDb::builder()
        .setting("server-id", "2")
        .start()
        .expect("start a replica");
    // Both servers come from one template: the replica starts where the primary is now.
    let position = primary.sql("SELECT @@gtid_binlog_pos").expect("position");
    let position = if position == "NULL" {
        String::new()
    } else {
        position
    };
    replica
        .sql(&format!(
            "SET GLOBAL gtid_slave_pos = '{position}'; \
             CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = {}, \
               MASTER_USER = 'root', MASTER_USE_GTID = slave_pos; \
             START SLAVE",
            primary.port()
        ))
        .expect("replicate");
    create_orders(&primary, 2_000);
    let replicated = || replica.sql("SELECT COUNT(*) FROM shop.orders").ok();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while replicated().as_deref() != Some("2000") {
        assert!(
            std::time::Instant::now() < deadline,
            "the replica did not catch up: {:?}",
            replica.sql("SHOW SLAVE STATUS\\G")
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let address = format!("127.0.0.1:{}", replica.port());
    let file = format!("{ORDERS_V2}\n[throttle]\nreplicas = [\"{address}\"]\n");
    let engine = Engine::mysql(primary.url()).expect("url");
    engine
        .expand(&file, "orders_v2.toml")
        .await
        .expect("expand");

    replica.sql("STOP SLAVE SQL_THREAD").expect("stop");
    let reason = sync_until_paused(&engine).await;
    assert!(
        reason.contains(&address) && reason.contains("replication stopped"),
        "{reason}"
    );
    assert_eq!(
        primary
            .sql("SELECT COUNT(*) FROM shop._splice_orders_v2_new")
            .expect("count"),
        "0",
        "nothing was copied while the replica stood still"
    );

    replica.sql("START SLAVE SQL_THREAD").expect("start");
    sync_until_caught_up(&engine, &caught_up(), &Control::new(RateLimit::Unlimited)).await;
    assert_eq!(mismatches(&primary), "NULL", "rows differ after the copy");

    // A listed replica nobody answers at counts as unknown lag too: no copy, and it says why.
    let unreachable = MigrationSpec::parse(
        &format!("{ORDERS_V2}\n[throttle]\nreplicas = [\"127.0.0.1:1\"]\n"),
        "orders_v2.toml",
    )
    .expect("spec");
    let load = {
        use engine::adapter::BackfillSource;
        let adapter = MySql::new(primary.url()).expect("url");
        let session = adapter.connect().await.expect("session");
        let table = engine::catalog::Table {
            name: engine::spec::QualifiedName {
                schema: "shop".into(),
                name: "orders".into(),
            },
            oid: 0,
            columns: Vec::new(),
            primary_key: vec!["id".into()],
            approx_rows: 0,
        };
        adapter
            .server_load(&session, &table, &unreachable.throttle.replicas)
            .await
            .expect("load")
    };
    assert!(load.replica_lag_s >= 1e9, "{load:?}");
    assert!(
        load.replica
            .as_deref()
            .is_some_and(|r| r.starts_with("127.0.0.1:1: unreachable")),
        "{load:?}"
    );
}

const ORDERS_ALTER: &str = r#"
name = "orders_v2"
table = "shop.orders"
alter = """
ALTER TABLE shop.orders CHANGE COLUMN amount total DECIMAL(14,2) NOT NULL,
  ADD COLUMN channel VARCHAR(10) NOT NULL DEFAULT 'web',
  ADD INDEX by_created (created_at), ALGORITHM=INPLACE, LOCK=NONE
"""
"#;

/// Keys where the new table is not the old one through ORDERS_ALTER (`total` is `amount`
/// renamed and widened, `channel` new with its default), either way, in SQL written here.
fn alter_mismatches(db: &MariaDb, old: &str, new: &str) -> String {
    db.sql(&format!(
        "SELECT COUNT(*) FROM ( \
           SELECT o.id FROM shop.{old} o LEFT JOIN shop.{new} n ON n.id = o.id \
            WHERE n.id IS NULL OR n.total <> o.amount OR NOT (n.note <=> o.note) \
               OR n.created_at <> o.created_at OR n.channel <> 'web' \
           UNION ALL \
           SELECT n.id FROM shop.{new} n LEFT JOIN shop.{old} o ON o.id = n.id \
            WHERE o.id IS NULL) d"
    ))
    .expect("compare")
}

/// Alter mode, as gh-ost and pt-osc users write it: the shadow is the live table copied
/// (`LIKE`) with the ALTER applied, a renamed column maps both ways by itself, and the
/// migration runs through sync under writes, verify, cutover and rollback with every row kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alter_migration_copies_the_table_applies_the_alter_and_maps_a_renamed_column() {
    let db = server();
    create_orders(&db, 3_000);
    db.sql("ALTER TABLE shop.orders ADD INDEX by_note (note), COMMENT = 'the orders'")
        .expect("index");
    let engine = Engine::mysql(db.url()).expect("url");
    let plan = engine.plan(&spec(ORDERS_ALTER)).await.expect("plan");
    assert!(
        plan.forward
            .columns
            .iter()
            .any(|(c, e)| c == "total" && e.contains("`amount`")),
        "{:?}",
        plan.forward.columns
    );
    assert!(!shadow_exists(&db), "plan leaves nothing behind");
    engine
        .expand(ORDERS_ALTER, "orders_v2.toml")
        .await
        .expect("expand");
    let shadow = db
        .sql("SHOW CREATE TABLE shop._splice_orders_v2_new")
        .expect("shadow");
    for carried in [
        "`total` decimal(14,2) NOT NULL",
        "`channel` varchar(10) NOT NULL DEFAULT 'web'",
        "COMMENT='the orders'",
    ] {
        assert!(shadow.contains(carried), "{carried} in {shadow}");
    }
    // The secondary indexes wait for the copy to end.
    let indexes = ["KEY `by_note` (`note`)", "KEY `by_created` (`created_at`)"];
    assert!(indexes.iter().all(|i| !shadow.contains(i)), "{shadow}");

    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(write_load(db.url(), stop.clone(), 11, 3_000));
    backfill_slowly(&engine).await;
    let shadow = db
        .sql("SHOW CREATE TABLE shop._splice_orders_v2_new")
        .expect("shadow");
    for index in indexes {
        assert!(shadow.contains(index), "{index} in {shadow}");
    }
    stop.store(true, Ordering::Relaxed);
    load.await.expect("load");
    sync_until_caught_up(&engine, &caught_up(), &Control::new(RateLimit::Unlimited)).await;
    assert_eq!(
        alter_mismatches(&db, "orders", "_splice_orders_v2_new"),
        "0"
    );
    let report = engine.verify("orders_v2").await.expect("verify");
    assert!(report.passed(), "verify agrees: {:?}", report.diverged);

    engine
        .cutover("orders_v2", u64::MAX, engine::phases::ReverseSync::Start)
        .await
        .expect("cutover");
    assert_eq!(
        columns_of(&db, "orders"),
        "id,total,note,created_at,channel"
    );
    db.sql(
        "UPDATE shop.orders SET total = total + 1 WHERE id BETWEEN 10 AND 20; \
         INSERT INTO shop.orders (id, total, note) VALUES (9000001, 5.50, 'after')",
    )
    .expect("writes on the new shape");
    sync_until_caught_up(&engine, &caught_up(), &Control::new(RateLimit::Unlimited)).await;
    let back = engine.rollback("orders_v2").await.expect("rollback");
    assert_eq!(back.to, "syncing");
    assert_eq!(columns_of(&db, "orders"), "id,amount,note,created_at");
    assert_eq!(
        db.sql("SELECT amount FROM shop.orders WHERE id = 9000001")
            .expect("row"),
        "5.50",
        "a row written on the new shape reached the old table through the renamed column"
    );
    sync_until_caught_up(&engine, &caught_up(), &Control::new(RateLimit::Unlimited)).await;
    assert_eq!(
        alter_mismatches(&db, "orders", "_splice_orders_v2_new"),
        "0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_table_whose_name_sorts_before_splices_names_cuts_over_too() {
    // `Orders` sorts before `_splice_…` (on a server that keeps the case of names): the rename
    // waits on the live table first, with nothing else held.
    let db = server();
    create_orders(&db, 200);
    db.sql("RENAME TABLE shop.orders TO shop.Orders")
        .expect("rename");
    let spec = ORDERS_V2
        .replace("table = \"shop.orders\"", "table = 'shop.\"Orders\"'")
        .replace("CREATE TABLE shop.orders", "CREATE TABLE shop.`Orders`");
    let engine = Engine::mysql(db.url()).expect("url");
    engine
        .expand(&spec, "orders_v2.toml")
        .await
        .expect("expand");
    sync_until_caught_up(&engine, &caught_up(), &Control::new(RateLimit::Unlimited)).await;
    assert!(engine.verify("orders_v2").await.expect("verify").passed());
    engine
        .cutover("orders_v2", u64::MAX, engine::phases::ReverseSync::Start)
        .await
        .expect("cutover");
    assert_eq!(columns_of(&db, "Orders"), "id,amount_cents,note,created_at");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_the_server_rolls_back_in_a_deadlock_with_the_application_is_applied_again() {
    let (db, engine) = expanded(3_000).await;
    sync_until_caught_up(&engine, &caught_up(), &Control::new(RateLimit::Unlimited)).await;
    // One committed change to keys 50 and 1000: the next batch re-syncs both, reading the
    // source in key order under shared locks.
    let mut writer = my_conn(&db).await;
    writer
        .query_drop("UPDATE shop.orders SET amount = amount + 1 WHERE id IN (50, 1000)")
        .await
        .expect("update");
    // The application: a large transaction holding key 1000 (large, so InnoDB makes the
    // applier's transaction the deadlock's victim).
    let mut app = my_conn(&db).await;
    app.query_drop("START TRANSACTION").await.expect("begin");
    app.query_drop(
        "UPDATE shop.orders SET note = 'held' WHERE id = 1000 OR id BETWEEN 2001 AND 2200",
    )
    .await
    .expect("hold key 1000");
    let (control, opts, mut quiet) = (Control::new(RateLimit::Unlimited), caught_up(), NoProgress);
    let sync = engine.sync("orders_v2", &opts, &control, &mut quiet);
    let application = async {
        // Once the applier holds key 50 and waits for key 1000, the application asks for key 50.
        let mut watch = my_conn(&db).await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            // The re-sync statement still running after a second waits for key 1000.
            let waits: Option<i64> = watch
                .query_first(
                    "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
                     WHERE INFO LIKE 'INSERT INTO `shop`.`_splice_orders_v2_new`%' AND TIME >= 1",
                )
                .await
                .expect("processlist");
            if waits.unwrap_or(0) > 0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the applier never waited for key 1000"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let took_50 = app
            .query_drop("UPDATE shop.orders SET note = 'app' WHERE id = 50")
            .await;
        app.query_drop("COMMIT").await.expect("commit");
        took_50
    };
    let (synced, took_50) = tokio::join!(sync, application);
    // The application's statement won the deadlock: the applier's transaction was rolled back.
    took_50.expect("the application's transaction survived the deadlock");
    let status: Option<(String, String, String)> = writer
        .query_first("SHOW ENGINE INNODB STATUS")
        .await
        .expect("innodb status");
    let status = status.map(|s| s.2).unwrap_or_default();
    assert!(status.contains("LATEST DETECTED DEADLOCK"), "{status}");
    synced.expect("sync applied the batch again after the deadlock");
    // The application's transaction committed after that sync's drain: one more catch-up.
    sync_until_caught_up(&engine, &caught_up(), &Control::new(RateLimit::Unlimited)).await;
    assert_eq!(mismatches(&db), "NULL");
}

const AUDIT_TABLE: &str = "CREATE TABLE shop.audit (n BIGINT AUTO_INCREMENT PRIMARY KEY, \
      order_id BIGINT NOT NULL, what VARCHAR(20) NOT NULL) ENGINE=InnoDB";

/// A body of several statements (sent whole: a client's `DELIMITER` is not the server's).
const AUDIT_FIRST: &str = "CREATE TRIGGER shop.orders_ai_first AFTER INSERT ON shop.orders \
    FOR EACH ROW BEGIN \
      DECLARE w VARCHAR(20) DEFAULT 'first'; \
      INSERT INTO shop.audit (order_id, what) VALUES (NEW.id, w); \
    END";

const AUDIT_MORE: &str = "CREATE TRIGGER shop.orders_ai_second AFTER INSERT ON shop.orders \
      FOR EACH ROW PRECEDES orders_ai_first \
      INSERT INTO shop.audit (order_id, what) VALUES (NEW.id, 'second'); \
    CREATE TRIGGER shop.orders_bu BEFORE UPDATE ON shop.orders FOR EACH ROW \
      SET NEW.note = CONCAT('u:', NEW.note)";

/// The triggers on `table`, in firing order within each timing and event.
fn triggers_of(db: &MariaDb, table: &str) -> String {
    db.sql(&format!(
        "SELECT GROUP_CONCAT(TRIGGER_NAME ORDER BY ACTION_TIMING, EVENT_MANIPULATION, ACTION_ORDER) \
         FROM information_schema.TRIGGERS \
         WHERE EVENT_OBJECT_SCHEMA = 'shop' AND EVENT_OBJECT_TABLE = '{table}'"
    ))
    .expect("triggers")
}

/// The note of row `id` of `shop.table`.
fn note_of(db: &MariaDb, table: &str, id: i64) -> String {
    db.sql(&format!("SELECT note FROM shop.{table} WHERE id = {id}"))
        .expect("note")
}

/// The audit trail: what fired for each order, in order.
fn audit(db: &MariaDb) -> String {
    db.sql("SELECT GROUP_CONCAT(order_id, ':', what ORDER BY n) FROM shop.audit")
        .expect("audit")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triggers_follow_the_live_name_through_cutover_and_rollback_and_fire_once_per_write() {
    let db = server();
    create_orders(&db, 500);
    db.sql(AUDIT_TABLE).expect("audit table");
    my_conn(&db)
        .await
        .query_drop(AUDIT_FIRST)
        .await
        .expect("a trigger of several statements");
    db.sql(AUDIT_MORE).expect("audit triggers");
    let engine = Engine::mysql(db.url()).expect("url");
    let plan = engine.plan(&spec(ORDERS_V2)).await.expect("plan");
    let listed: Vec<String> = plan.dependents.iter().map(|d| d.to_string()).collect();
    assert_eq!(
        listed,
        [
            "trigger orders_ai_second",
            "trigger orders_ai_first",
            "trigger orders_bu"
        ]
    );
    engine
        .expand(ORDERS_V2, "orders_v2.toml")
        .await
        .expect("expand");
    assert_eq!(triggers_of(&db, "_splice_orders_v2_new"), "NULL");
    assert_eq!(
        columns_of(&db, "_splice_orders_v2_try"),
        "NULL",
        "expand's trial copy is gone"
    );

    // Before cutover: the old table's triggers fire, once; the applier's writes fire none.
    db.sql(
        "INSERT INTO shop.orders (id, amount, note) VALUES (900001, 1.00, 'pre'); \
         UPDATE shop.orders SET note = 'x' WHERE id = 5",
    )
    .expect("writes");
    sync_until_caught_up(&engine, &caught_up(), &Control::new(RateLimit::Unlimited)).await;
    assert_eq!(mismatches(&db), "NULL");
    assert_eq!(note_of(&db, "_splice_orders_v2_new", 5), "u:x");
    assert_eq!(audit(&db), "900001:second,900001:first");
    let report = engine.verify("orders_v2").await.expect("verify");
    assert!(report.passed(), "{:?}", report.diverged);

    let cut = engine
        .cutover("orders_v2", u64::MAX, engine::phases::ReverseSync::Start)
        .await
        .expect("cutover");
    assert_eq!(
        cut.carried_over,
        [
            "trigger orders_ai_second (as orders_ai_second_splice)",
            "trigger orders_ai_first (as orders_ai_first_splice)",
            "trigger orders_bu (as orders_bu_splice)"
        ]
    );
    assert_eq!(
        triggers_of(&db, "orders"),
        "orders_ai_second_splice,orders_ai_first_splice,orders_bu_splice"
    );
    assert_eq!(triggers_of(&db, "_splice_orders_v2_old"), "NULL");

    // After cutover: the new table's copies fire, in the same order; reverse sync fires none.
    db.sql(
        "INSERT INTO shop.orders (id, amount_cents, note) VALUES (900002, 100, 'post'); \
         UPDATE shop.orders SET note = 'y' WHERE id = 6",
    )
    .expect("writes on the new shape");
    sync_until_caught_up(&engine, &caught_up(), &Control::new(RateLimit::Unlimited)).await;
    assert_eq!(reverse_mismatches(&db), "NULL");
    assert_eq!(note_of(&db, "_splice_orders_v2_old", 6), "u:y");
    assert_eq!(
        audit(&db),
        "900001:second,900001:first,900002:second,900002:first"
    );

    // Rollback carries them back under their own names.
    engine.rollback("orders_v2").await.expect("rollback");
    assert_eq!(
        triggers_of(&db, "orders"),
        "orders_ai_second,orders_ai_first,orders_bu"
    );
    assert_eq!(triggers_of(&db, "_splice_orders_v2_new"), "NULL");
    db.sql("INSERT INTO shop.orders (id, amount, note) VALUES (900003, 1.00, 'back')")
        .expect("write after the rollback");
    sync_until_caught_up(&engine, &caught_up(), &Control::new(RateLimit::Unlimited)).await;
    assert_eq!(mismatches(&db), "NULL");
    assert_eq!(
        audit(&db),
        "900001:second,900001:first,900002:second,900002:first,900003:second,900003:first"
    );

    // Cut over again, and contract: the old table leaves for quarantine without its triggers.
    let report = engine.verify("orders_v2").await.expect("verify");
    assert!(report.passed(), "{:?}", report.diverged);
    engine
        .cutover("orders_v2", u64::MAX, engine::phases::ReverseSync::Start)
        .await
        .expect("cutover again");
    engine.contract("orders_v2", None).await.expect("contract");
    assert_eq!(
        triggers_of(&db, "orders"),
        "orders_ai_second_splice,orders_ai_first_splice,orders_bu_splice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_that_cannot_be_carried_is_refused_before_anything_is_copied() {
    let db = server();
    db.sql(ORDERS).expect("orders");
    let engine = Engine::mysql(db.url()).expect("url");
    // A body naming a column the new shape drops: refused at plan, by name.
    db.sql(
        "CREATE TRIGGER shop.orders_amount BEFORE INSERT ON shop.orders FOR EACH ROW \
         SET NEW.amount = GREATEST(NEW.amount, 0)",
    )
    .expect("trigger");
    let e = engine
        .plan(&spec(ORDERS_V2))
        .await
        .expect_err("a trigger using a dropped column")
        .to_string();
    assert!(
        e.contains("trigger orders_amount") && e.contains("column amount"),
        "{e}"
    );
    db.sql("DROP TRIGGER shop.orders_amount").expect("drop");
    // A carried name another trigger holds.
    db.sql(
        "CREATE TABLE shop.other (id INT PRIMARY KEY) ENGINE=InnoDB; \
         CREATE TRIGGER shop.orders_t AFTER DELETE ON shop.orders FOR EACH ROW SET @x = OLD.id; \
         CREATE TRIGGER shop.orders_t_splice AFTER DELETE ON shop.other FOR EACH ROW SET @x = 1",
    )
    .expect("triggers");
    let e = engine
        .plan(&spec(ORDERS_V2))
        .await
        .expect_err("a carried name taken")
        .to_string();
    assert!(
        e.contains("trigger orders_t cannot be carried over")
            && e.contains("taken by a trigger on other"),
        "{e}"
    );
    db.sql("DROP TRIGGER shop.orders_t_splice").expect("drop");
    // A definer splice's user cannot create triggers for: refused at expand, the new table
    // left for rollback to remove.
    db.sql(
        "CREATE USER 'limited'@'%' IDENTIFIED BY 'pw'; \
         GRANT ALL ON shop.* TO 'limited'@'%'; GRANT ALL ON splice.* TO 'limited'@'%'; \
         GRANT ALL ON splice_quarantine.* TO 'limited'@'%'; \
         GRANT REPLICATION SLAVE, REPLICATION CLIENT, BINLOG MONITOR ON *.* TO 'limited'@'%'",
    )
    .expect("a user without SET USER");
    let engine = Engine::mysql(db.url_as("limited", "pw")).expect("url");
    let e = engine
        .expand(ORDERS_V2, "orders_v2.toml")
        .await
        .expect_err("a definer splice may not act for")
        .to_string();
    assert!(
        e.contains("trigger orders_t") && e.contains("SUPER") && e.contains("rollback"),
        "{e}"
    );
    assert_eq!(
        columns_of(&db, "_splice_orders_v2_try"),
        "NULL",
        "the trial copy is gone"
    );
}
