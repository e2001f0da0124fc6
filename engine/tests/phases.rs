//! Each phase's gates and guarantees on a real PostgreSQL server.

mod common;

use common::*;
use engine::phases::{Quarantine, ReverseSync};
use engine::{Engine, EngineError, MigrationSpec, Postgres};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

async fn expanded(rows: i64) -> (Db, tokio_postgres::Client, Engine<Postgres>) {
    let db = server();
    let client = connect(&db.url).await;
    create_orders(&client, rows).await;
    let engine = Engine::new(db.url.clone());
    engine
        .expand(ORDERS_V2, "orders_v2.toml")
        .await
        .expect("expand");
    (db, client, engine)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_statement_expand_runs_passes_the_linter() {
    let db = server();
    let client = connect(&db.url).await;
    create_orders(&client, 10).await;
    let spec = MigrationSpec::parse(ORDERS_V2, "orders_v2.toml").expect("spec");
    let engine = Engine::new(db.url.clone());
    let plan = engine.plan(&spec).await.expect("plan");
    let script = engine.expand_script(&spec, &plan);
    let findings = lint::check(&script, &lint::Options::default());
    assert!(
        findings.is_empty(),
        "expand's DDL:\n{script}\nlint says: {findings:#?}"
    );
    assert!(
        script.contains("CREATE TABLE \"public\".\"_splice_orders_v2_new\""),
        "{script}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_changes_nothing_and_names_what_is_wrong() {
    let db = server();
    let client = connect(&db.url).await;
    create_orders(&client, 10).await;
    let engine = Engine::new(db.url.clone());
    let spec = MigrationSpec::parse(ORDERS_V2, "f.toml").expect("spec");
    engine.plan(&spec).await.expect("plan");
    let shadow: Option<String> = client
        .query_one(
            "SELECT to_regclass('public._splice_orders_v2_new')::text",
            &[],
        )
        .await
        .expect("query")
        .get(0);
    assert_eq!(shadow, None, "plan created nothing");
    // A MySQL-only throttle input is refused with its reason.
    let with_replicas = ORDERS_V2.replace("[throttle]\n", "[throttle]\nreplicas = [\"db-2\"]\n");
    assert_ne!(with_replicas, ORDERS_V2);
    let e = engine
        .plan(&MigrationSpec::parse(&with_replicas, "f.toml").expect("spec"))
        .await
        .expect_err("replicas on PostgreSQL")
        .to_string();
    assert!(e.contains("pg_stat_replication"), "{e}");

    let bad_expr = ORDERS_V2.replace("(amount * 100)::bigint", "(amount_typo * 100)::bigint");
    let err = engine
        .plan(&MigrationSpec::parse(&bad_expr, "f.toml").expect("spec"))
        .await
        .expect_err("unknown column");
    assert!(err.to_string().contains("[up] amount_cents"), "{err}");
    assert!(err.to_string().contains("amount_typo"), "{err}");

    let new_not_null = ORDERS_V2.replace("note         text", "note text, region text NOT NULL");
    let err = engine
        .plan(&MigrationSpec::parse(&new_not_null, "f.toml").expect("spec"))
        .await
        .expect_err("NOT NULL without source");
    assert!(err.to_string().contains("add `region = "), "{err}");

    let key_as_text = ORDERS_V2.replace(
        "id           bigint PRIMARY KEY",
        "id           text PRIMARY KEY",
    );
    let err = engine
        .plan(&MigrationSpec::parse(&key_as_text, "f.toml").expect("spec"))
        .await
        .expect_err("a key that sorts differently");
    assert!(
        err.to_string()
            .contains("key column id changes from bigint to text"),
        "{err}"
    );
    let widened = ORDERS_V2.replace(
        "id           bigint PRIMARY KEY",
        "id           integer PRIMARY KEY",
    );
    engine
        .plan(&MigrationSpec::parse(&widened, "f.toml").expect("spec"))
        .await
        .expect("an integer key may change width");

    let no_down = ORDERS_V2.replace("amount = \"amount_cents / 100.0\"", "");
    let plan = engine
        .plan(&MigrationSpec::parse(&no_down, "f.toml").expect("spec"))
        .await
        .expect("a plan without reverse sync is still a plan");
    assert!(plan.reverse.is_none());
    let text = engine.render(&plan);
    assert!(
        text.contains("rollback after cutover is impossible"),
        "{text}"
    );
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
    let (db, client, engine) = expanded(20_000).await;
    // Delete and update rows all over the key range while small, rate-limited chunks copy it:
    // the applier leaves changes beyond the last copied key to the chunks still to come.
    let stop = Arc::new(AtomicBool::new(false));
    let updater = {
        let url = db.url.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let c = connect(&url).await;
            let mut id = 11i64;
            let mut updates = 0u32;
            while !stop.load(Ordering::Relaxed) {
                id = (id * 104_729 + 17) % 20_000 + 1;
                let sql = "UPDATE orders SET amount = amount + 1 WHERE id = $1";
                updates += u32::from(c.execute(sql, &[&id]).await.unwrap_or(0) == 1);
            }
            updates
        })
    };
    let deleter = {
        let url = db.url.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let c = connect(&url).await;
            let mut deleted = Vec::new();
            let mut id = 7i64;
            while !stop.load(Ordering::Relaxed) {
                id = (id * 7919 + 13) % 20_000 + 1;
                if c.execute("DELETE FROM orders WHERE id = $1", &[&id])
                    .await
                    .unwrap_or(0)
                    == 1
                {
                    deleted.push(id);
                }
            }
            deleted
        })
    };
    let control = engine::backfill::Control::new(engine::RateLimit::from_rows_per_second(10_000));
    let opts = engine::phases::SyncOptions {
        until_caught_up: true,
        chunk_target: Some(std::time::Duration::from_millis(5)),
        // Off: the writers raise commit latency, and the budget would slow the copy to a crawl.
        max_latency_increase: Some(None),
        ..Default::default()
    };
    let mut left = LeftToBackfill::default();
    engine
        .sync("orders_v2", &opts, &control, &mut left)
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
    sync_until_caught_up(&engine, "orders_v2").await;
    let resurrected: Vec<i64> = client
        .query(
            "SELECT id FROM _splice_orders_v2_new WHERE id = ANY($1) ORDER BY id",
            &[&deleted],
        )
        .await
        .expect("query")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(resurrected, Vec::<i64>::new());
    assert_eq!(
        mismatches(&client, "orders", "_splice_orders_v2_new").await,
        Vec::<i64>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_a_row_changed_behind_splices_back_and_names_it() {
    let (_db, client, engine) = expanded(2_000).await;
    // Several ranges: 77 in the first, 5,000,000 past the last source key (the open range).
    let engine = engine.with_verify_range_rows(400);
    client
        .batch_execute("ANALYZE orders")
        .await
        .expect("analyze");
    sync_until_caught_up(&engine, "orders_v2").await;
    let clean = engine.verify("orders_v2").await.expect("verify");
    assert!(clean.passed());
    assert!(clean.ranges >= 3, "{clean:?}");
    assert_eq!(clean.rows_checked, 2_000);
    client
        .batch_execute(
            "UPDATE _splice_orders_v2_new SET amount_cents = -1 WHERE id = 1234;
             DELETE FROM _splice_orders_v2_new WHERE id = 77;
             INSERT INTO _splice_orders_v2_new VALUES (5000000, 1, 1, 'EUR', NULL);",
        )
        .await
        .expect("tamper");
    let report = engine.verify("orders_v2").await.expect("verify");
    assert!(!report.passed());
    let mut keys: Vec<i64> = report
        .diverged
        .iter()
        .map(|d| d.key.join(",").parse().expect("numeric key"))
        .collect();
    keys.sort();
    assert_eq!(keys, vec![77, 1234, 5_000_000]);
    let missing = report
        .diverged
        .iter()
        .find(|d| d.key == ["77"])
        .expect("77");
    assert!(missing.expected.is_some() && missing.found.is_none());
    // A failed verify closes the cutover gate.
    let err = engine
        .cutover("orders_v2", u64::MAX, ReverseSync::Start)
        .await
        .expect_err("refused");
    assert!(matches!(err, EngineError::Refused(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_quarantines_and_drop_refuses_until_the_quarantine_expires() {
    let (_db, client, engine) = expanded(500).await;
    sync_until_caught_up(&engine, "orders_v2").await;
    assert!(engine.verify("orders_v2").await.expect("verify").passed());
    engine
        .cutover("orders_v2", u64::MAX, ReverseSync::Start)
        .await
        .expect("cutover");
    let contracted = engine.contract("orders_v2", None).await.expect("contract");
    assert!(!contracted.quarantine_until.is_empty());
    let quarantined: i64 = client
        .query_one(
            "SELECT count(*) FROM splice_quarantine._splice_orders_v2_old",
            &[],
        )
        .await
        .expect("the old table is in quarantine, not dropped")
        .get(0);
    assert_eq!(quarantined, 500);

    let err = engine
        .drop_quarantined("orders_v2", Quarantine::Respect)
        .await
        .expect_err("too early");
    assert!(matches!(err, EngineError::Refused(_)), "{err}");
    assert!(err.to_string().contains("--force"), "{err}");

    // Rollback from contract restores the old table and re-syncs it from the live one.
    client
        .batch_execute("UPDATE orders SET amount_cents = 99900 WHERE id = 3")
        .await
        .expect("write after contract");
    engine
        .rollback("orders_v2")
        .await
        .expect("restore from quarantine");
    let amount: String = client
        .query_one(
            "SELECT amount::text FROM _splice_orders_v2_old WHERE id = 3",
            &[],
        )
        .await
        .expect("restored")
        .get(0);
    assert_eq!(amount, "999.00");

    engine
        .contract("orders_v2", None)
        .await
        .expect("contract again");
    let dropped = engine
        .drop_quarantined("orders_v2", Quarantine::Override)
        .await
        .expect("forced drop");
    assert_eq!(dropped.table, "splice_quarantine._splice_orders_v2_old");
    let status = engine.status(Some("orders_v2")).await.expect("status");
    let phases: Vec<String> = status[0].history.iter().map(|t| t.to.clone()).collect();
    assert_eq!(
        phases,
        vec![
            "expanded",
            "syncing",
            "verified",
            "cut_over",
            "contracted",
            "cut_over",
            "contracted",
            "dropped"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_before_cutover_leaves_nothing_behind() {
    let (_db, client, engine) = expanded(100).await;
    sync_until_caught_up(&engine, "orders_v2").await;
    engine.rollback("orders_v2").await.expect("rollback");
    let left: i64 = client
        .query_one(
            "SELECT (SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'splice_orders_v2%')
                  + (SELECT count(*) FROM pg_publication WHERE pubname LIKE 'splice_orders_v2%')
                  + (SELECT count(*) FROM pg_class WHERE relname = '_splice_orders_v2_new')",
            &[],
        )
        .await
        .expect("query")
        .get(0);
    assert_eq!(left, 0);
    let rows: i64 = client
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .expect("q")
        .get(0);
    assert_eq!(rows, 100, "the live table is untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_migration_can_be_expanded_and_run_again() {
    let (_db, client, engine) = expanded(3_000).await;
    sync_until_caught_up(&engine, "orders_v2").await;
    engine.rollback("orders_v2").await.expect("rollback");
    // The file changed after the rollback: expand takes it as it is now.
    let edited = ORDERS_V2.replace("coalesce(currency, 'EUR')", "coalesce(currency, 'GBP')");
    engine
        .expand(&edited, "orders_v2.toml")
        .await
        .expect("expand again");
    let phase = engine.status(Some("orders_v2")).await.expect("status")[0]
        .phase
        .clone();
    assert_eq!(phase, "expanded");
    let p = sync_until_caught_up(&engine, "orders_v2").await;
    assert!(p.backfill_done, "{p:?}");
    let report = engine.verify("orders_v2").await.expect("verify");
    assert!(report.passed(), "{:?}", report.diverged);
    assert_eq!(report.rows_checked, 3_000);
    let gbp: i64 = client
        .query_one(
            "SELECT count(*) FROM _splice_orders_v2_new WHERE currency = 'GBP'",
            &[],
        )
        .await
        .expect("query")
        .get(0);
    assert!(gbp > 0, "the backfill ran the edited mapping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_leaves_the_new_table_analyzed() {
    let (_db, client, engine) = expanded(5_000).await;
    let reltuples = || async {
        let n: f32 = client
            .query_one(
                "SELECT reltuples FROM pg_class WHERE relname = '_splice_orders_v2_new'",
                &[],
            )
            .await
            .expect("query")
            .get(0);
        n
    };
    let before = reltuples().await;
    assert!(before < 0.0, "a new table has no statistics yet: {before}");
    sync_until_caught_up(&engine, "orders_v2").await;
    let after = reltuples().await;
    assert_eq!(after, 5_000.0, "ANALYZE ran once the backfill finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_runner_at_a_time() {
    let (db, _client, engine) = expanded(10).await;
    let _held = engine::postgres::RunnerLock::acquire(&db.url, "orders_v2")
        .await
        .expect("lock");
    let err = engine.verify("orders_v2").await.expect_err("busy");
    // verify refuses before the lock (backfill not done) — sync shows the lock.
    let _ = err;
    let err = engine
        .sync(
            "orders_v2",
            &Default::default(),
            &engine::backfill::Control::new(engine::RateLimit::Unlimited),
            &mut engine::backfill::NoProgress,
        )
        .await
        .expect_err("another runner holds it");
    assert!(matches!(err, EngineError::Busy(_)), "{err}");
    assert!(
        err.to_string()
            .contains("being run by another splice process"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_whose_fence_was_taken_over_copies_no_further_chunk() {
    let (db, client, _engine) = expanded(20_000).await;
    let target_rows = || async {
        let n: i64 = client
            .query_one("SELECT count(*) FROM _splice_orders_v2_new", &[])
            .await
            .expect("count")
            .get(0);
        n
    };
    // A slow backfill (small chunks, 2,000 rows/s), so it is mid-way when the fence moves.
    let url = db.url.clone();
    let sync = tokio::spawn(async move {
        let opts = engine::phases::SyncOptions {
            until_caught_up: true,
            rate_limit: Some(engine::RateLimit::from_rows_per_second(2_000)),
            chunk_target: Some(std::time::Duration::from_millis(5)),
            ..Default::default()
        };
        let engine = Engine::new(url);
        engine
            .sync(
                "orders_v2",
                &opts,
                &engine::backfill::Control::new(engine::RateLimit::Unlimited),
                &mut engine::backfill::NoProgress,
            )
            .await
    });
    for _ in 0..600 {
        if target_rows().await > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // Another runner takes over the way acquiring the lock does: it bumps the token (waiting
    // for a chunk in flight to commit).
    client
        .execute(
            "UPDATE splice.migrations SET fence = fence + 1 WHERE name = 'orders_v2'",
            &[],
        )
        .await
        .expect("take the fence");
    let at_takeover = target_rows().await;
    assert!(at_takeover > 0 && at_takeover < 20_000, "{at_takeover}");
    let err = sync
        .await
        .expect("join")
        .expect_err("the stale runner stops");
    assert!(matches!(err, EngineError::Busy(_)), "{err}");
    assert_eq!(
        target_rows().await,
        at_takeover,
        "the stale runner copied nothing after the takeover"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_set_while_sync_runs_is_picked_up_at_the_next_chunk() {
    let (_db, _client, engine) = expanded(5_000).await;
    engine
        .set_rate_limit(
            "orders_v2",
            Some(engine::RateLimit::from_rows_per_second(2_500)),
        )
        .await
        .expect("set");
    let control = engine::backfill::Control::new(engine::RateLimit::Unlimited);
    let opts = engine::phases::SyncOptions {
        until_caught_up: true,
        chunk_target: Some(std::time::Duration::from_millis(5)),
        ..Default::default()
    };
    engine
        .sync(
            "orders_v2",
            &opts,
            &control,
            &mut engine::backfill::NoProgress,
        )
        .await
        .expect("sync");
    assert_eq!(
        control.rate(),
        engine::RateLimit::from_rows_per_second(2_500),
        "the running sync adopted the new rate"
    );
    let err = engine
        .set_rate_limit("nope", Some(engine::RateLimit::from_rows_per_second(1)))
        .await
        .expect_err("no such migration");
    assert!(matches!(err, EngineError::NoSuchMigration { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutover_carries_views_foreign_keys_sequences_triggers_and_grants_over() {
    let db = server();
    let client = connect(&db.url).await;
    create_orders(&client, 200).await;
    client
        .batch_execute(
            "CREATE VIEW big_orders AS SELECT id, customer_id, note FROM orders WHERE customer_id > 10;
             CREATE TABLE order_items (id bigserial PRIMARY KEY, order_id bigint NOT NULL REFERENCES orders (id));
             INSERT INTO order_items (order_id) SELECT g FROM generate_series(1, 20) g;
             CREATE ROLE reader;
             GRANT SELECT ON orders TO reader;
             CREATE FUNCTION tidy_note() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN NEW.note := trim(NEW.note); RETURN NEW; END $$;
             CREATE TRIGGER tidy BEFORE INSERT OR UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION tidy_note();",
        )
        .await
        .expect("dependents");
    let engine = Engine::new(db.url.clone());
    engine
        .expand(ORDERS_V2, "orders_v2.toml")
        .await
        .expect("expand");
    sync_until_caught_up(&engine, "orders_v2").await;
    assert!(engine.verify("orders_v2").await.expect("verify").passed());
    let report = engine
        .cutover("orders_v2", u64::MAX, ReverseSync::Start)
        .await
        .expect("cutover");
    assert!(
        report.carried_over.iter().any(|c| c.contains("view")),
        "{:?}",
        report.carried_over
    );

    let one = |sql: &'static str| {
        let client = &client;
        async move {
            client
                .query_one(sql, &[])
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
        }
    };
    // The view reads the new table: it has the new table's rows and columns.
    let view_on_new: bool = one(
        "SELECT EXISTS (SELECT 1 FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
                        WHERE r.ev_class = 'big_orders'::regclass AND d.refobjid = 'orders'::regclass)",
    )
    .await
    .get(0);
    assert!(view_on_new, "the view follows the live name");
    let fk_target: String = one("SELECT confrelid::regclass::text FROM pg_constraint
         WHERE conrelid = 'order_items'::regclass AND contype = 'f'")
    .await
    .get(0);
    assert_eq!(fk_target, "orders");
    let granted: bool = one("SELECT has_table_privilege('reader', 'orders', 'SELECT')")
        .await
        .get(0);
    assert!(granted, "grants follow the table");
    let trimmed: String = one(
        "INSERT INTO orders (customer_id, amount_cents, currency, note) VALUES (1, 100, 'EUR', '  x  ')
         RETURNING note",
    )
    .await
    .get(0);
    assert_eq!(trimmed, "x", "the trigger fires on the new table");
    let new_id: i64 = one("SELECT max(id) FROM orders").await.get(0);
    assert!(
        new_id > 200,
        "the serial default continues past the copied keys (got {new_id})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_applier_waits_until_a_captured_transaction_is_visible() {
    use engine::adapter::ChangeApplier;
    let (db, client, engine) = expanded(10).await;
    let spec = MigrationSpec::parse(ORDERS_V2, "orders_v2.toml").expect("spec");
    let plan = engine.plan(&spec).await.expect("plan");
    // A transaction that is still running stands for one whose commit record was already
    // decoded while its backend had not yet left the running set: invisible to new snapshots.
    let writer = connect(&db.url).await;
    writer
        .batch_execute("BEGIN; UPDATE orders SET note = 'late' WHERE id = 1")
        .await
        .expect("update");
    let xid: i64 = writer
        .query_one("SELECT txid_current()", &[])
        .await
        .expect("xid")
        .get(0);
    let forward = plan.forward.clone();
    let applying = tokio::spawn(async move {
        let pg = engine.adapter();
        let mut session = pg
            .open_applier(&forward, "splice_test_visibility")
            .await
            .expect("applier");
        let keys = std::collections::HashSet::from([vec!["1".to_string()]]);
        pg.apply(
            &mut session,
            keys,
            &std::collections::HashSet::new(),
            &[xid as u64],
            false,
        )
        .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !applying.is_finished(),
        "it waits while the transaction runs"
    );
    let written: i64 = client
        .query_one("SELECT count(*) FROM _splice_orders_v2_new", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(
        written, 0,
        "nothing is written from a snapshot that misses it"
    );
    writer.batch_execute("COMMIT").await.expect("commit");
    applying
        .await
        .expect("join")
        .expect("applied once committed");
    let note: Option<String> = client
        .query_one("SELECT note FROM _splice_orders_v2_new WHERE id = 1", &[])
        .await
        .expect("the re-synced row")
        .get(0);
    assert_eq!(note.as_deref(), Some("late"), "the committed version");

    // Already visible transactions (and none) do not wait; a transaction that never becomes
    // visible ends in an error naming the fix rather than a re-sync that reads old rows.
    let count = client
        .prepare(&engine::postgres::sql::count_invisible_txns())
        .await
        .expect("prepare");
    let within = std::time::Duration::from_millis(100);
    engine::postgres::capture::until_visible(&client, &count, &[], &[xid as u64], within)
        .await
        .expect("visible");
    let stuck = connect(&db.url).await;
    stuck.batch_execute("BEGIN").await.expect("begin");
    let running: i64 = stuck
        .query_one("SELECT txid_current()", &[])
        .await
        .expect("xid")
        .get(0);
    let err =
        engine::postgres::capture::until_visible(&client, &count, &[], &[running as u64], within)
            .await
            .expect_err("never visible");
    assert!(err.to_string().contains("stayed invisible"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncate_applied_once_visible_leaves_only_the_rows_written_after_it() {
    use engine::adapter::ChangeApplier;
    let (db, client, engine) = expanded(10).await;
    let spec = MigrationSpec::parse(ORDERS_V2, "orders_v2.toml").expect("spec");
    let plan = engine.plan(&spec).await.expect("plan");
    let pg = engine.adapter();
    let mut session = pg
        .open_applier(&plan.forward, "splice_test_truncate")
        .await
        .expect("applier");
    let every: std::collections::HashSet<Vec<String>> =
        (1..=10).map(|i| vec![i.to_string()]).collect();
    let none = std::collections::HashSet::new();
    pg.apply(&mut session, every, &none, &[], false)
        .await
        .expect("re-sync every key");
    drop(session);
    // The TRUNCATE and a row written after it, in a transaction still open when the batch is
    // applied: the re-sync waits (for the table's lock, and until it sees the transaction),
    // then the orphan removal sees the TRUNCATE.
    let writer = connect(&db.url).await;
    writer
        .batch_execute(
            "BEGIN; TRUNCATE orders;
             INSERT INTO orders (id, customer_id, amount, currency, note)
             VALUES (3, 7, 1.50, 'EUR', 'after')",
        )
        .await
        .expect("truncate");
    let xid: i64 = writer
        .query_one("SELECT txid_current()", &[])
        .await
        .expect("xid")
        .get(0);
    let (url, forward) = (db.url.clone(), plan.forward.clone());
    let applying = tokio::spawn(async move {
        let engine = Engine::new(url);
        let pg = engine.adapter();
        let mut session = pg
            .open_applier(&forward, "splice_test_truncate_after")
            .await
            .expect("applier");
        let keys = std::collections::HashSet::from([vec!["3".to_string()]]);
        pg.apply(
            &mut session,
            keys,
            &std::collections::HashSet::new(),
            &[xid as u64],
            true,
        )
        .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!applying.is_finished(), "it waits while the TRUNCATE runs");
    writer.batch_execute("COMMIT").await.expect("commit");
    applying.await.expect("join").expect("applied");
    let rows: Vec<(i64, Option<String>)> = client
        .query(
            "SELECT id, note FROM _splice_orders_v2_new ORDER BY id",
            &[],
        )
        .await
        .expect("rows")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(rows, vec![(3, Some("after".to_string()))]);
}

/// The stored verify ranges of orders_v2 as (idx, lower, upper) of a bigint key.
async fn stored_ranges(client: &tokio_postgres::Client) -> Vec<(i32, Option<i64>, Option<i64>)> {
    client
        .query(
            "SELECT idx, lower_key[1]::bigint, upper_key[1]::bigint FROM splice.verify_ranges
              WHERE migration = 'orders_v2' ORDER BY idx",
            &[],
        )
        .await
        .expect("stored ranges")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// The stored ranges holding any key in `lo..=hi`.
fn covering(ranges: &[(i32, Option<i64>, Option<i64>)], lo: i64, hi: i64) -> Vec<i32> {
    ranges
        .iter()
        .filter(|(_, l, u)| l.is_none_or(|l| l < hi) && u.is_none_or(|u| u >= lo))
        .map(|(i, _, _)| *i)
        .collect()
}

async fn incremental(engine: &Engine<Postgres>) -> engine::VerifyReport {
    engine
        .verify_kind(
            "orders_v2",
            engine::VerifyKind::Incremental,
            &engine::verify::VerifyCounters::default(),
        )
        .await
        .expect("incremental verify")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_verify_rereads_only_the_ranges_capture_changed() {
    let (_db, client, engine) = expanded(20_000).await;
    let engine = engine.with_verify_range_rows(1_000);
    client
        .batch_execute("ANALYZE orders")
        .await
        .expect("analyze");
    sync_until_caught_up(&engine, "orders_v2").await;

    // The first request for incremental has nothing to build on: a full pass, said so.
    let first = incremental(&engine).await;
    assert_eq!(first.kind, engine::VerifyKind::Full);
    assert!(first.full_because.is_some(), "{first:?}");
    assert!(first.passed());
    let ranges = stored_ranges(&client).await;
    assert!(ranges.len() >= 10, "{ranges:?}");
    assert_eq!(first.ranges_total, ranges.len() as u64);

    // 1% of the rows change through the application; one of them sits exactly on a stored
    // bound (it belongs to the range below it). Key 5100, among the changed ones, and key
    // 15000, far from them, are tampered with in the new table behind splice's back.
    let (bound_idx, _, bound) = ranges[3];
    let bound = bound.expect("a bounded range");
    client
        .batch_execute(&format!(
            "UPDATE orders SET note = 'changed' WHERE id BETWEEN 5001 AND 5199 OR id = {bound}"
        ))
        .await
        .expect("changes");
    sync_until_caught_up(&engine, "orders_v2").await;
    client
        .batch_execute(
            "UPDATE _splice_orders_v2_new SET note = 'tampered' WHERE id IN (5100, 15000)",
        )
        .await
        .expect("tamper");
    let mut expected = covering(&ranges, 5001, 5199);
    expected.push(bound_idx);
    expected.sort();
    expected.dedup();
    assert!(!covering(&ranges, 15000, 15000)
        .iter()
        .any(|i| expected.contains(i)));

    let report = incremental(&engine).await;
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
    let checked: Vec<i32> = client
        .query(
            "SELECT idx FROM splice.verify_ranges WHERE migration = 'orders_v2'
                AND checked_marks > 0 ORDER BY idx",
            &[],
        )
        .await
        .expect("marked")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        checked, expected,
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
    client
        .batch_execute("UPDATE orders SET note = note || '!' WHERE id IN (5100, 15000)")
        .await
        .expect("rewrite");
    let report = incremental(&engine).await;
    assert_eq!(report.kind, engine::VerifyKind::Incremental);
    assert!(report.passed(), "{report:?}");
    assert!(report.ranges <= 2, "{report:?}");
    let phase: String = client
        .query_one(
            "SELECT phase FROM splice.migrations WHERE name = 'orders_v2'",
            &[],
        )
        .await
        .expect("phase")
        .get(0);
    assert_eq!(phase, "verified");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_verify_places_keys_of_a_collated_composite_key_in_their_ranges() {
    let db = server();
    let client = connect(&db.url).await;
    // A composite key whose text part has its own collation: capture marks ranges under the
    // collation the range reads compare with.
    client
        .batch_execute(
            "CREATE TABLE codes (region text COLLATE \"C\", n int, label text,
                                 PRIMARY KEY (region, n));
             INSERT INTO codes SELECT r, g, 'l' || g
               FROM unnest(ARRAY['B', 'a', 'Z', 'm']) r, generate_series(1, 500) g;
             ANALYZE codes;",
        )
        .await
        .expect("table");
    let spec = r#"
name = "codes_v2"
table = "public.codes"
target = "CREATE TABLE codes (region text COLLATE \"C\", n int, label text NOT NULL, PRIMARY KEY (region, n))"

[up]
label = "coalesce(label, '')"
"#;
    let engine = Engine::new(db.url.clone()).with_verify_range_rows(200);
    engine.expand(spec, "codes_v2.toml").await.expect("expand");
    sync_until_caught_up(&engine, "codes_v2").await;
    let full = engine.verify("codes_v2").await.expect("full verify");
    assert!(full.passed() && full.ranges_total >= 4, "{full:?}");
    // One key of each region changes; then the new table's row of one of them is tampered with.
    client
        .batch_execute("UPDATE codes SET label = 'changed' WHERE n = 250")
        .await
        .expect("change");
    sync_until_caught_up(&engine, "codes_v2").await;
    client
        .batch_execute("UPDATE _splice_codes_v2_new SET label = 'x' WHERE region = 'a' AND n = 250")
        .await
        .expect("tamper");
    let report = engine
        .verify_kind(
            "codes_v2",
            engine::VerifyKind::Incremental,
            &engine::verify::VerifyCounters::default(),
        )
        .await
        .expect("incremental");
    assert_eq!(report.kind, engine::VerifyKind::Incremental);
    assert!(report.ranges < report.ranges_total, "{report:?}");
    let keys: Vec<String> = report.diverged.iter().map(|d| d.key.join(",")).collect();
    assert_eq!(keys, vec!["a,250".to_string()], "{report:?}");
}

/// Keeps the last progress a sync reported.
struct LastProgress(Arc<std::sync::Mutex<engine::backfill::SyncProgress>>);

impl engine::backfill::ProgressSink for LastProgress {
    fn update(&mut self, p: &engine::backfill::SyncProgress) {
        if let Ok(mut last) = self.0.lock() {
            *last = p.clone();
        }
    }
}

async fn heartbeat_row(client: &tokio_postgres::Client) -> Option<i64> {
    client
        .query_opt(
            "SELECT beats FROM splice.heartbeat WHERE migration = 'orders_v2'",
            &[],
        )
        .await
        .expect("heartbeat row")
        .map(|r| r.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_impact_budget_times_a_heartbeat_on_the_source_holds_back_when_it_slows_and_says_so() {
    let (db, client, engine) = expanded(200).await;
    sync_until_caught_up(&engine, "orders_v2").await;
    // Follow changes with the default budget, in the background.
    let last = Arc::new(std::sync::Mutex::new(
        engine::backfill::SyncProgress::default(),
    ));
    let control = engine::backfill::Control::new(engine::RateLimit::Unlimited);
    let sync = {
        let (url, control, last) = (db.url.clone(), control.clone(), last.clone());
        tokio::spawn(async move {
            Engine::new(url)
                .sync(
                    "orders_v2",
                    &engine::phases::SyncOptions::default(),
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
    let beats = heartbeat_row(&client).await.expect("a heartbeat row");
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
        let (url, stop) = (db.url.clone(), stop.clone());
        tokio::spawn(async move {
            let c = connect(&url).await;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                c.batch_execute(&format!(
                    "UPDATE orders SET note = 'w{n}' WHERE id = 1;
                     BEGIN; SELECT 1 FROM splice.heartbeat WHERE migration = 'orders_v2' FOR UPDATE;
                     SELECT pg_sleep(0.04); COMMIT"
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
    assert_eq!(heartbeat_row(&client).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_deleted_reinserted_and_moved_within_one_batch_ends_equal_to_the_source() {
    let (_db, client, engine) = expanded(100).await;
    sync_until_caught_up(&engine, "orders_v2").await;
    // One transaction (so one applied batch): a row deleted and inserted again with other
    // values, a key moved away and another row moved onto the freed key, a row changed twice,
    // and a long value stored out of line (TOAST) next to an update that leaves it unchanged.
    let long = "x".repeat(100_000);
    client
        .execute(
            "UPDATE orders SET note = $1 WHERE id = 40",
            &[&long.as_str()],
        )
        .await
        .expect("toast");
    sync_until_caught_up(&engine, "orders_v2").await;
    client
        .batch_execute(
            "BEGIN;
             DELETE FROM orders WHERE id = 5;
             INSERT INTO orders (id, customer_id, amount, currency, note)
                 VALUES (5, 77, 12.34, 'EUR', 'back again');
             UPDATE orders SET id = 100006 WHERE id = 6;
             UPDATE orders SET id = 6, note = 'moved here' WHERE id = 7;
             UPDATE orders SET amount = 1 WHERE id = 8;
             UPDATE orders SET amount = 2 WHERE id = 8;
             UPDATE orders SET customer_id = customer_id + 1 WHERE id = 40;
             COMMIT",
        )
        .await
        .expect("writes");
    sync_until_caught_up(&engine, "orders_v2").await;
    assert_eq!(
        mismatches(&client, "orders", "_splice_orders_v2_new").await,
        Vec::<i64>::new()
    );
    let note: Option<String> = client
        .query_one("SELECT note FROM _splice_orders_v2_new WHERE id = 40", &[])
        .await
        .expect("toasted row")
        .get(0);
    assert_eq!(note.map(|n| n.len()), Some(100_000));
    let gone: i64 = client
        .query_one(
            "SELECT count(*) FROM _splice_orders_v2_new WHERE id = 7",
            &[],
        )
        .await
        .expect("moved key")
        .get(0);
    assert_eq!(gone, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_store_made_by_an_older_splice_is_brought_up_to_date_before_it_is_read() {
    let (_db, client, engine) = expanded(10).await;
    // What an older splice left: no table of stored verify ranges, no column for the impact
    // budget's figures, and no record of this version of the schema.
    client
        .batch_execute(
            "DROP TABLE splice.verify_ranges;
             ALTER TABLE splice.migrations DROP COLUMN sync_impact;
             DELETE FROM splice.schema_versions;",
        )
        .await
        .expect("age the store");
    let status = engine
        .status(Some("orders_v2"))
        .await
        .expect("status reads it");
    assert_eq!(status[0].phase, "expanded");
    let present: bool = client
        .query_one(
            "SELECT to_regclass('splice.verify_ranges') IS NOT NULL
                AND EXISTS (SELECT 1 FROM information_schema.columns
                            WHERE table_schema = 'splice' AND table_name = 'migrations'
                              AND column_name = 'sync_impact')
                AND EXISTS (SELECT 1 FROM splice.schema_versions)",
            &[],
        )
        .await
        .expect("catalog")
        .get(0);
    assert!(
        present,
        "the missing table and column were added, and the version recorded"
    );
}
