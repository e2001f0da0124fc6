//! The phase machine, the applier, backfill and verify against the in-memory adapter: gates,
//! batching, narrowing, re-check rounds and crashes between steps, in milliseconds and with
//! no server. What only a server can show lives in `phases.rs` and `lifecycle.rs`.

use engine::backfill::{Control, NoProgress};
use engine::memory::Memory;
use engine::phases::{Quarantine, ReverseSync, SyncOptions};
use engine::{Engine, EngineError, Phase, RateLimit, Refusal};

const SPEC: &str = r#"
name = "orders_v2"
table = "public.orders"
target = "CREATE TABLE orders (id bigint PRIMARY KEY, amount_cents bigint NOT NULL, note text)"

[up]
amount_cents = "amount * 100"

[down]
amount = "amount_cents / 100"
"#;

/// An `orders` table with `rows` rows and the mapping both ways.
fn database(rows: i64) -> Memory {
    let db = Memory::new();
    db.create_table(
        "CREATE TABLE orders (id bigint PRIMARY KEY, amount bigint NOT NULL, note text)",
    )
    .expect("table");
    db.define_expression("amount * 100", |row| {
        let amount: i64 = row.get("amount")?.as_deref()?.parse().ok()?;
        Some((amount * 100).to_string())
    });
    db.define_expression("amount_cents / 100", |row| {
        let cents: i64 = row.get("amount_cents")?.as_deref()?.parse().ok()?;
        Some((cents / 100).to_string())
    });
    for id in 1..=rows {
        let id = id.to_string();
        db.upsert(
            "orders",
            &[
                ("id", Some(&id)),
                ("amount", Some("3")),
                ("note", Some("n")),
            ],
        );
    }
    db
}

fn engine(db: &Memory) -> Engine<Memory> {
    Engine::with_adapter(db.clone()).with_verify_range_rows(10)
}

async fn sync_until_caught_up(engine: &Engine<Memory>) {
    let opts = SyncOptions {
        until_caught_up: true,
        ..Default::default()
    };
    engine
        .sync(
            "orders_v2",
            &opts,
            &Control::new(RateLimit::Unlimited),
            &mut NoProgress,
        )
        .await
        .expect("sync");
}

async fn phase(engine: &Engine<Memory>) -> String {
    engine.status(Some("orders_v2")).await.expect("status")[0]
        .phase
        .clone()
}

fn refusal(err: &EngineError) -> &Refusal {
    match err {
        EngineError::Refused(r) => r,
        other => panic!("expected a refusal, got {other}"),
    }
}

#[tokio::test]
async fn the_whole_lifecycle_keeps_every_row_and_rolls_back_from_every_phase() {
    let db = database(25);
    let engine = engine(&db);
    engine.expand(SPEC, "spec.toml").await.expect("expand");
    assert_eq!(phase(&engine).await, "expanded");
    sync_until_caught_up(&engine).await;
    let new = db.rows("_splice_orders_v2_new").expect("shadow");
    assert_eq!(new.len(), 25);
    assert_eq!(new[0]["amount_cents"].as_deref(), Some("300"));

    let report = engine.verify("orders_v2").await.expect("verify");
    assert!(report.cutover_allowed(), "{report:?}");
    assert_eq!(report.rows_checked, 25);
    assert!(
        report.ranges >= 3,
        "ranges of about 10 rows: {}",
        report.ranges
    );

    let cut = engine
        .cutover("orders_v2", u64::MAX, ReverseSync::Start)
        .await
        .expect("cutover");
    assert!(cut.reverse_sync);
    assert_eq!(phase(&engine).await, "cut_over");
    assert!(db.has_table("_splice_orders_v2_old"));

    // A write to the new live table reaches the old one through reverse sync.
    db.upsert(
        "orders",
        &[
            ("id", Some("7")),
            ("amount_cents", Some("900")),
            ("note", Some("after")),
        ],
    );
    sync_until_caught_up(&engine).await;
    let old = db.rows("_splice_orders_v2_old").expect("old");
    let seven = old
        .iter()
        .find(|r| r["id"].as_deref() == Some("7"))
        .expect("row 7");
    assert_eq!(seven["amount"].as_deref(), Some("9"));

    let back = engine.rollback("orders_v2").await.expect("rollback");
    assert_eq!(
        (back.from.as_str(), back.to.as_str()),
        ("cut_over", "syncing")
    );
    let live = db.rows("orders").expect("live");
    assert!(
        live[0].contains_key("amount"),
        "the old shape is live again"
    );
}

#[tokio::test]
async fn gates_refuse_out_of_order_commands_and_name_the_next_step() {
    let db = database(5);
    let engine = engine(&db);

    let err = engine.verify("orders_v2").await.expect_err("no migration");
    assert!(matches!(err, EngineError::NoSuchMigration { .. }), "{err}");

    engine.expand(SPEC, "spec.toml").await.expect("expand");
    let err = engine.verify("orders_v2").await.expect_err("before sync");
    assert!(
        matches!(
            err,
            EngineError::WrongPhase {
                phase: Phase::Expanded,
                ..
            }
        ),
        "{err}"
    );

    let err = engine
        .cutover("orders_v2", u64::MAX, ReverseSync::Start)
        .await
        .expect_err("before verify");
    assert!(matches!(refusal(&err), Refusal::WrongPhase { .. }), "{err}");
    assert!(err.to_string().contains("splice verify orders_v2"), "{err}");

    let err = engine
        .contract("orders_v2", None)
        .await
        .expect_err("before cutover");
    assert!(matches!(refusal(&err), Refusal::WrongPhase { .. }), "{err}");
    let err = engine
        .drop_quarantined("orders_v2", Quarantine::Override)
        .await
        .expect_err("before contract");
    assert!(matches!(refusal(&err), Refusal::WrongPhase { .. }), "{err}");

    // A different file under the same name is refused.
    let other = SPEC.replace("note text", "note text, extra text");
    let err = engine
        .expand(&other, "other.toml")
        .await
        .expect_err("different file");
    assert!(matches!(err, EngineError::DifferentFile { .. }), "{err}");
}

#[tokio::test]
async fn drop_refuses_until_the_quarantine_expires_unless_overridden() {
    let db = database(5);
    let engine = engine(&db);
    engine.expand(SPEC, "spec.toml").await.expect("expand");
    sync_until_caught_up(&engine).await;
    engine.verify("orders_v2").await.expect("verify");
    engine
        .cutover("orders_v2", u64::MAX, ReverseSync::Start)
        .await
        .expect("cutover");
    let contracted = engine.contract("orders_v2", None).await.expect("contract");
    assert_eq!(
        contracted.quarantined_as,
        "splice_quarantine._splice_orders_v2_old"
    );
    assert!(db.has_table("splice_quarantine._splice_orders_v2_old"));
    let err = engine
        .drop_quarantined("orders_v2", Quarantine::Respect)
        .await
        .expect_err("quarantine running");
    assert!(
        matches!(refusal(&err), Refusal::QuarantineNotExpired { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("--force"), "{err}");
    let dropped = engine
        .drop_quarantined("orders_v2", Quarantine::Override)
        .await
        .expect("forced drop");
    assert_eq!(dropped, "splice_quarantine._splice_orders_v2_old");
    assert!(!db.has_table("splice_quarantine._splice_orders_v2_old"));
    assert_eq!(phase(&engine).await, "dropped");
}

#[tokio::test]
async fn the_applier_coalesces_many_changes_to_one_key_and_applies_deletes() {
    let db = database(10);
    let engine = engine(&db);
    engine.expand(SPEC, "spec.toml").await.expect("expand");
    sync_until_caught_up(&engine).await;
    let applies_before = db.steps().iter().filter(|s| *s == "apply").count();
    for amount in 1..=50 {
        let amount = amount.to_string();
        db.upsert(
            "orders",
            &[
                ("id", Some("4")),
                ("amount", Some(&amount)),
                ("note", Some("x")),
            ],
        );
    }
    db.delete("orders", &["9"]);
    sync_until_caught_up(&engine).await;
    let applies = db.steps().iter().filter(|s| *s == "apply").count() - applies_before;
    assert!(
        applies <= 3,
        "51 transactions were applied in {applies} batches, not one by one"
    );
    let new = db.rows("_splice_orders_v2_new").expect("shadow");
    assert_eq!(new.len(), 9, "the deleted row is gone");
    let four = new
        .iter()
        .find(|r| r["id"].as_deref() == Some("4"))
        .expect("row 4");
    assert_eq!(
        four["amount_cents"].as_deref(),
        Some("5000"),
        "the last write won"
    );
}

#[tokio::test]
async fn verify_narrows_a_tampered_range_to_the_row_and_keeps_it_through_every_recheck() {
    let db = database(40);
    let engine = engine(&db);
    engine.expand(SPEC, "spec.toml").await.expect("expand");
    sync_until_caught_up(&engine).await;
    db.tamper("_splice_orders_v2_new", &["23"], "amount_cents", Some("1"));
    let report = engine.verify("orders_v2").await.expect("verify");
    assert!(!report.cutover_allowed());
    assert_eq!(report.rechecked, 1, "narrowed to one row of its range");
    assert_eq!(report.diverged.len(), 1);
    assert_eq!(report.diverged[0].key, vec!["23".to_string()]);
    assert_eq!(
        phase(&engine).await,
        "syncing",
        "a failed verify opens no gate"
    );

    // A key that differed only because capture had not caught up clears on re-check.
    db.tamper(
        "_splice_orders_v2_new",
        &["23"],
        "amount_cents",
        Some("300"),
    );
    db.upsert(
        "orders",
        &[
            ("id", Some("30")),
            ("amount", Some("8")),
            ("note", Some("late")),
        ],
    );
    let report = engine.verify("orders_v2").await.expect("verify");
    assert!(report.cutover_allowed(), "{report:?}");
    assert_eq!(phase(&engine).await, "verified");
}

#[tokio::test]
async fn verify_matches_keys_that_need_escaping_exactly() {
    let db = Memory::new();
    db.create_table("CREATE TABLE notes (k text PRIMARY KEY, body text)")
        .expect("table");
    for k in ["a\\b", "tab\there", "new\nline", "plain"] {
        db.upsert("notes", &[("k", Some(k)), ("body", Some("v"))]);
    }
    let spec = r#"
name = "notes_v2"
table = "public.notes"
target = "CREATE TABLE notes (k text PRIMARY KEY, body text)"
"#;
    let engine = Engine::with_adapter(db.clone());
    engine.expand(spec, "notes.toml").await.expect("expand");
    engine
        .sync(
            "notes_v2",
            &SyncOptions {
                until_caught_up: true,
                ..Default::default()
            },
            &Control::new(RateLimit::Unlimited),
            &mut NoProgress,
        )
        .await
        .expect("sync");
    db.tamper(
        "_splice_notes_v2_new",
        &["tab\there"],
        "body",
        Some("changed"),
    );
    db.tamper("_splice_notes_v2_new", &["a\\b"], "body", Some("changed"));
    let report = engine.verify("notes_v2").await.expect("verify");
    let mut keys: Vec<String> = report.diverged.iter().map(|d| d.key[0].clone()).collect();
    keys.sort();
    assert_eq!(keys, vec!["a\\b".to_string(), "tab\there".to_string()]);
}

#[tokio::test]
async fn a_crash_at_any_step_of_expand_and_sync_resumes_to_the_same_rows() {
    // Count the steps of a clean run, then crash at each one in turn and run again.
    let clean = database(30);
    let e = engine(&clean);
    e.expand(SPEC, "spec.toml").await.expect("expand");
    sync_until_caught_up(&e).await;
    let expected = clean.rows("_splice_orders_v2_new").expect("shadow");
    let steps = clean.steps().len();
    for step in 1..=steps {
        let db = database(30);
        db.crash_at_step(step);
        let first = {
            let e = engine(&db);
            match e.expand(SPEC, "spec.toml").await {
                Ok(_) => {
                    let opts = SyncOptions {
                        until_caught_up: true,
                        ..Default::default()
                    };
                    e.sync(
                        "orders_v2",
                        &opts,
                        &Control::new(RateLimit::Unlimited),
                        &mut NoProgress,
                    )
                    .await
                    .map(|_| ())
                }
                Err(err) => Err(err),
            }
        };
        // The "process" died (its lock went with it); a new one runs the commands again.
        let e = engine(&db);
        if first.is_err() {
            e.expand(SPEC, "spec.toml")
                .await
                .expect("expand after the crash");
            sync_until_caught_up(&e).await;
        }
        assert_eq!(
            db.rows("_splice_orders_v2_new").expect("shadow"),
            expected,
            "crash at step {step}"
        );
        assert!(e
            .verify("orders_v2")
            .await
            .expect("verify")
            .cutover_allowed());
    }
}

#[tokio::test]
async fn a_rate_limit_set_while_running_is_adopted_and_cleared_by_throttle() {
    let db = database(5);
    let engine = engine(&db);
    engine.expand(SPEC, "spec.toml").await.expect("expand");
    engine
        .set_rate_limit("orders_v2", Some(RateLimit::from_rows_per_second(2_500)))
        .await
        .expect("throttle");
    let control = Control::new(RateLimit::Unlimited);
    let opts = SyncOptions {
        until_caught_up: true,
        ..Default::default()
    };
    engine
        .sync("orders_v2", &opts, &control, &mut NoProgress)
        .await
        .expect("sync");
    assert_eq!(control.rate(), RateLimit::from_rows_per_second(2_500));
    let err = engine
        .set_rate_limit("nope", None)
        .await
        .expect_err("no such migration");
    assert!(matches!(err, EngineError::NoSuchMigration { .. }), "{err}");
}

#[tokio::test]
async fn a_lost_change_stream_fails_loudly_instead_of_resuming_from_now() {
    let db = database(5);
    let engine = engine(&db);
    engine.expand(SPEC, "spec.toml").await.expect("expand");
    sync_until_caught_up(&engine).await;
    assert!(db.has_slot("splice_orders_v2_fwd"));
    db.lose_slot("splice_orders_v2_fwd");
    assert!(!db.has_slot("splice_orders_v2_fwd"));
    // Today the engine recreates the stream on open (the safety issue's first case); what
    // this stand-in shows is that a stream lost while open is an error, never a silent stop.
    let opts = SyncOptions::default();
    let control = Control::new(RateLimit::Unlimited);
    let mut quiet = NoProgress;
    let run = engine.sync("orders_v2", &opts, &control, &mut quiet);
    let lose = async {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        db.lose_slot("splice_orders_v2_fwd");
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        control.stop();
    };
    let (result, ()) = tokio::join!(run, lose);
    let err = result.expect_err("the stream vanished under a running sync");
    assert!(matches!(err, EngineError::Capture(_)), "{err}");
}
