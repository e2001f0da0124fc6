//! The phase machine, the applier, backfill and verify against the in-memory adapter: gates,
//! batching, narrowing, re-check rounds and crashes between steps, in milliseconds and with
//! no server. What only a server can show lives in `phases.rs` and `lifecycle.rs`.

use engine::backfill::{Control, NoProgress};
use engine::memory::Memory;
use engine::phases::{Quarantine, ReverseSync, SyncOptions};
use engine::{Engine, EngineError, Phase, RateLimit, Refusal, VerifyKind};

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
            refusal(&err),
            Refusal::WrongPhase {
                phase: Phase::Expanded,
                ..
            }
        ),
        "{err}"
    );

    // Before sync the next step is sync, never verify (which would refuse too).
    let err = engine
        .cutover("orders_v2", u64::MAX, ReverseSync::Start)
        .await
        .expect_err("before verify");
    assert!(matches!(refusal(&err), Refusal::WrongPhase { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("next: `splice sync orders_v2 --until-caught-up`"),
        "{err}"
    );
    assert!(!err.to_string().contains("splice verify"), "{err}");

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
    assert_eq!(dropped.table, "splice_quarantine._splice_orders_v2_old");
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

/// Writes to the source while the backfill runs: before its first chunk, and after its first
/// chunk landed (before the applier runs): to the last key that chunk copied, to keys beyond
/// it, and a delete beyond it.
struct WritesDuringBackfill {
    db: Memory,
    before_first: bool,
    after_first: bool,
    last: Option<engine::backfill::SyncProgress>,
}

impl engine::backfill::ProgressSink for WritesDuringBackfill {
    fn update(&mut self, p: &engine::backfill::SyncProgress) {
        use engine::backfill::SyncState;
        let write = |id: &str, amount: &str| {
            self.db.upsert(
                "orders",
                &[
                    ("id", Some(id)),
                    ("amount", Some(amount)),
                    ("note", Some("w")),
                ],
            )
        };
        if p.state == SyncState::Copying && !self.before_first {
            self.before_first = true;
            write("10", "7");
        }
        if p.state == SyncState::Applying && !self.after_first && !p.backfill_done {
            self.after_first = true;
            assert_eq!(p.rows_copied, 1000, "the first chunk is 1,000 rows");
            write("1000", "8");
            write("1001", "9");
            write("5000", "4");
            self.db.delete("orders", &["1500"]);
        }
        self.last = Some(p.clone());
    }
}

#[tokio::test]
async fn changes_ahead_of_the_backfill_are_left_to_it_and_every_row_still_arrives() {
    let db = database(3000);
    let e = engine(&db);
    e.expand(SPEC, "spec.toml").await.expect("expand");
    let mut sink = WritesDuringBackfill {
        db: db.clone(),
        before_first: false,
        after_first: false,
        last: None,
    };
    let opts = SyncOptions {
        until_caught_up: true,
        ..Default::default()
    };
    e.sync(
        "orders_v2",
        &opts,
        &Control::new(RateLimit::Unlimited),
        &mut sink,
    )
    .await
    .expect("sync");
    assert!(sink.after_first, "the backfill took more than one chunk");
    let new = db.rows("_splice_orders_v2_new").expect("shadow");
    let cents = |id: &str| {
        new.iter()
            .find(|r| r["id"].as_deref() == Some(id))
            .and_then(|r| r["amount_cents"].clone())
    };
    // Key 1000 was copied by the first chunk, then changed: the applier re-synced it. So was
    // key 10, changed while the first chunk was about to copy it: the applier runs after it.
    assert_eq!(cents("1000").as_deref(), Some("800"));
    assert_eq!(cents("10").as_deref(), Some("700"));
    // 1001 and 1500 were ahead of the copy when they changed: later chunks copied them (and
    // not the deleted one). 5000 is past the backfill's end (the source's highest key, 3000,
    // when it started): the applier wrote it.
    assert_eq!(cents("1001").as_deref(), Some("900"));
    assert_eq!(cents("5000").as_deref(), Some("400"));
    assert_eq!(cents("1500"), None, "the deleted row never arrived");
    assert_eq!(new.len(), 3000, "3,000 rows, one deleted and one added");
    let left = sink.last.map(|p| p.keys_left_to_backfill).unwrap_or(0);
    assert_eq!(left, 2, "keys 1001 and 1500 were left to the backfill");
    assert!(e
        .verify("orders_v2")
        .await
        .expect("verify")
        .cutover_allowed());
}

/// After each chunk, the application appends more rows past the end of the table than the
/// chunk copied (a held-back backfill under an application inserting with an
/// `AUTO_INCREMENT` key). The backfill stops at the source's highest key when it started, so
/// it ends; capture writes the appended rows.
struct AppendsFasterThanTheCopy {
    db: Memory,
    next_id: i64,
    chunks: usize,
    /// Rows copied at the last chunk counted: a chunk can be reported more than once while
    /// capture is applied after it (once before a hold, once after).
    copied: u64,
}

impl engine::backfill::ProgressSink for AppendsFasterThanTheCopy {
    fn update(&mut self, p: &engine::backfill::SyncProgress) {
        use engine::backfill::SyncState;
        if p.state != SyncState::Applying || p.backfill_done || p.rows_copied == self.copied {
            return;
        }
        self.copied = p.rows_copied;
        self.chunks += 1;
        // Enough chunks to tell: a backfill chasing the end never catches up before this.
        if self.chunks > 8 {
            return;
        }
        for _ in 0..p.chunk_size + 500 {
            let id = self.next_id.to_string();
            self.next_id += 1;
            self.db.upsert(
                "orders",
                &[
                    ("id", Some(&id)),
                    ("amount", Some("1")),
                    ("note", Some("a")),
                ],
            );
        }
    }
}

#[tokio::test]
async fn a_backfill_ends_while_the_application_appends_faster_than_it_copies() {
    let db = database(3000);
    let e = engine(&db);
    e.expand(SPEC, "spec.toml").await.expect("expand");
    let mut sink = AppendsFasterThanTheCopy {
        db: db.clone(),
        next_id: 100_000,
        chunks: 0,
        copied: 0,
    };
    // The impact budget off: the appends are application writes, and a budget holding back
    // would shrink the chunks below the rate's 1,000 rows (the count below assumes them).
    let opts = SyncOptions {
        until_caught_up: true,
        max_latency_increase: Some(None),
        ..Default::default()
    };
    e.sync(
        "orders_v2",
        &opts,
        // A rate keeps chunks at 1,000 rows, as a held-back backfill's are small.
        &Control::new(RateLimit::RowsPerSecond(
            std::num::NonZeroU32::new(1000).expect("non-zero"),
        )),
        &mut sink,
    )
    .await
    .expect("sync");
    assert!(
        sink.chunks <= 3,
        "the backfill took {} chunks: it chased the rows appended after it started",
        sink.chunks
    );
    // Row by row, independently of verify: the new table is the mapping of the old one.
    let source = db.rows("orders").expect("source");
    assert!(source.len() > 3000, "rows were appended");
    let mapped = |rows: Vec<engine::memory::Row>, column: &str, times: i64| {
        rows.iter()
            .map(|r| {
                let id = r["id"].clone().unwrap_or_default();
                let v: i64 = r[column]
                    .as_deref()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(-1);
                (id, v * times)
            })
            .collect::<std::collections::BTreeMap<String, i64>>()
    };
    assert_eq!(
        mapped(
            db.rows("_splice_orders_v2_new").expect("shadow"),
            "amount_cents",
            1
        ),
        mapped(source, "amount", 100),
        "capture wrote the rows appended past the backfill's end"
    );
}

#[tokio::test]
async fn a_crash_between_a_chunk_and_its_checkpoint_loses_no_change_made_after_the_copy() {
    // A clean run: the second chunk copies the rest of the table; find its checkpoint step.
    let clean = database(3000);
    let e = engine(&clean);
    e.expand(SPEC, "spec.toml").await.expect("expand");
    let before = clean.steps().len();
    sync_until_caught_up(&e).await;
    let steps = clean.steps();
    let second_checkpoint = steps[before..]
        .iter()
        .enumerate()
        .filter(|(_, s)| *s == "checkpoint")
        .nth(1)
        .map(|(i, _)| i + 1)
        .expect("two chunks");

    let db = database(3000);
    let e = engine(&db);
    e.expand(SPEC, "spec.toml").await.expect("expand");
    db.crash_at_step(second_checkpoint);
    let opts = SyncOptions {
        until_caught_up: true,
        ..Default::default()
    };
    let control = Control::new(RateLimit::Unlimited);
    assert!(
        e.sync("orders_v2", &opts, &control, &mut NoProgress)
            .await
            .is_err(),
        "the run died after copying its second chunk"
    );
    // Written after the copy of the key's chunk, before the next run: a run that resumes
    // from the last checkpoint copies that range again (small chunks first), keeping the rows
    // already there, so this change must be re-synced, not left to the backfill.
    db.upsert(
        "orders",
        &[
            ("id", Some("2500")),
            ("amount", Some("9")),
            ("note", Some("late")),
        ],
    );
    let e = engine(&db);
    sync_until_caught_up(&e).await;
    let new = db.rows("_splice_orders_v2_new").expect("shadow");
    let late = new
        .iter()
        .find(|r| r["id"].as_deref() == Some("2500"))
        .and_then(|r| r["amount_cents"].clone());
    assert_eq!(late.as_deref(), Some("900"));
    assert!(e
        .verify("orders_v2")
        .await
        .expect("verify")
        .cutover_allowed());
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
    // A stream lost before a command opens it is refused (see
    // `a_lost_slot_is_refused_by_every_command_that_needs_continuity`); one lost while open
    // is an error, never a silent stop.
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

// ── crash windows: every step of cutover, rollback, contract, restore and drop ──

/// A database with a verified migration of `rows` rows.
async fn verified(rows: i64) -> Memory {
    let db = database(rows);
    let e = engine(&db);
    e.expand(SPEC, "spec.toml").await.expect("expand");
    sync_until_caught_up(&e).await;
    assert!(e
        .verify("orders_v2")
        .await
        .expect("verify")
        .cutover_allowed());
    db
}

async fn cut_over(rows: i64) -> Memory {
    let db = verified(rows).await;
    engine(&db)
        .cutover("orders_v2", u64::MAX, ReverseSync::Start)
        .await
        .expect("cutover");
    db
}

async fn contracted(rows: i64) -> Memory {
    let db = cut_over(rows).await;
    engine(&db)
        .contract("orders_v2", None)
        .await
        .expect("contract");
    db
}

/// True when the live `orders` has the new shape.
fn new_shape_is_live(db: &Memory) -> bool {
    db.rows("orders").expect("live")[0].contains_key("amount_cents")
}

/// The old-shape rows the live new-shape table maps back to.
fn mapped_down(db: &Memory) -> Vec<engine::memory::Row> {
    db.rows("orders")
        .expect("live")
        .into_iter()
        .map(|mut r| {
            let cents: i64 = r["amount_cents"]
                .as_deref()
                .and_then(|c| c.parse().ok())
                .expect("cents");
            r.remove("amount_cents");
            r.insert("amount".into(), Some((cents / 100).to_string()));
            r
        })
        .collect()
}

/// How many steps `run` takes on a fresh copy of the state `setup` builds.
async fn steps_of<S, R, SF, RF>(setup: S, run: R) -> usize
where
    S: Fn() -> SF,
    SF: std::future::Future<Output = Memory>,
    R: Fn(Memory) -> RF,
    RF: std::future::Future<Output = ()>,
{
    let db = setup().await;
    let before = db.steps().len();
    run(db.clone()).await;
    db.steps().len() - before
}

/// A write to the live new-shape table (after cutover).
fn write_new(db: &Memory, id: &str, cents: &str) {
    db.upsert(
        "orders",
        &[
            ("id", Some(id)),
            ("amount_cents", Some(cents)),
            ("note", Some("after")),
        ],
    );
}

#[tokio::test]
async fn a_crash_at_any_step_of_cutover_leaves_swap_and_phase_together_and_a_rerun_finishes() {
    let cutover = |db: Memory| async move {
        engine(&db)
            .cutover("orders_v2", u64::MAX, ReverseSync::Start)
            .await
            .expect("cutover");
    };
    let steps = steps_of(|| verified(12), cutover).await;
    assert!(steps >= 5, "cutover takes {steps} steps");
    for step in 1..=steps {
        let db = verified(12).await;
        db.crash_at_step(step);
        let first = engine(&db)
            .cutover("orders_v2", u64::MAX, ReverseSync::Start)
            .await;
        // Whatever happened, the recorded phase says which table is live.
        let phase_now = phase(&engine(&db)).await;
        assert_eq!(
            new_shape_is_live(&db),
            phase_now == "cut_over",
            "crash at step {step} ({first:?}): phase {phase_now} disagrees with the live table"
        );
        // The re-run finishes the cutover, and goes no further.
        let e = engine(&db);
        e.cutover("orders_v2", u64::MAX, ReverseSync::Start)
            .await
            .unwrap_or_else(|err| panic!("re-run after a crash at step {step}: {err}"));
        assert_eq!(phase(&e).await, "cut_over", "crash at step {step}");
        assert_eq!(db.rows("orders").expect("live").len(), 12);
        // Rollback stays open: a write after cutover reaches the old table.
        write_new(&db, "5", "4200");
        e.rollback("orders_v2")
            .await
            .unwrap_or_else(|err| panic!("rollback after a crash at step {step}: {err}"));
        assert!(!new_shape_is_live(&db), "crash at step {step}");
        let five = db.rows("orders").expect("live");
        assert_eq!(
            five[4]["amount"].as_deref(),
            Some("42"),
            "crash at step {step}"
        );
    }
}

#[tokio::test]
async fn a_crash_at_any_step_of_rollback_after_cutover_is_finished_by_a_rerun_that_goes_no_further()
{
    let rollback = |db: Memory| async move {
        engine(&db).rollback("orders_v2").await.expect("rollback");
    };
    let steps = steps_of(|| cut_over(12), rollback).await;
    for step in 1..=steps {
        let db = cut_over(12).await;
        write_new(&db, "3", "7700");
        db.crash_at_step(step);
        let first = engine(&db).rollback("orders_v2").await;
        let phase_now = phase(&engine(&db)).await;
        assert_eq!(
            new_shape_is_live(&db),
            phase_now == "cut_over",
            "crash at step {step} ({first:?}): phase {phase_now} disagrees with the live table"
        );
        let e = engine(&db);
        let again = e
            .rollback("orders_v2")
            .await
            .unwrap_or_else(|err| panic!("re-run after a crash at step {step}: {err}"));
        assert_eq!(again.to, "syncing", "crash at step {step}");
        assert!(!new_shape_is_live(&db));
        let live = db.rows("orders").expect("live");
        assert_eq!(live.len(), 12);
        assert_eq!(
            live[2]["amount"].as_deref(),
            Some("77"),
            "crash at step {step}"
        );
        // A third run (the terminal died after the second) changes nothing.
        let third = e.rollback("orders_v2").await.expect("third rollback");
        assert!(third.already_done, "crash at step {step}");
        assert_eq!(phase(&e).await, "syncing");
        assert!(db.has_table("_splice_orders_v2_new"), "not abandoned");
    }
}

#[tokio::test]
async fn a_crash_at_any_step_of_contract_is_finished_by_a_rerun() {
    let contract = |db: Memory| async move {
        engine(&db)
            .contract("orders_v2", None)
            .await
            .expect("contract");
    };
    let steps = steps_of(|| cut_over(6), contract).await;
    for step in 1..=steps {
        let db = cut_over(6).await;
        db.crash_at_step(step);
        let first = engine(&db).contract("orders_v2", None).await;
        let phase_now = phase(&engine(&db)).await;
        assert_eq!(
            db.has_table("splice_quarantine._splice_orders_v2_old"),
            phase_now == "contracted",
            "crash at step {step} ({first:?})"
        );
        if phase_now == "cut_over" {
            assert!(
                db.has_slot("splice_orders_v2_rev"),
                "crash at step {step}: a cut-over migration keeps its reverse capture"
            );
        }
        let e = engine(&db);
        e.contract("orders_v2", None)
            .await
            .unwrap_or_else(|err| panic!("re-run after a crash at step {step}: {err}"));
        assert_eq!(phase(&e).await, "contracted");
        assert!(db.has_table("splice_quarantine._splice_orders_v2_old"));
        assert!(!db.has_slot("splice_orders_v2_rev"), "crash at step {step}");
        assert!(!db.has_slot("splice_orders_v2_fwd"), "crash at step {step}");
    }
}

#[tokio::test]
async fn a_crash_at_any_step_of_restore_from_quarantine_ends_in_a_table_equal_to_the_live_one() {
    let restore = |db: Memory| async move {
        engine(&db).rollback("orders_v2").await.expect("restore");
    };
    let steps = steps_of(|| contracted(10), restore).await;
    for step in 1..=steps {
        let db = contracted(10).await;
        // While the old table sits in quarantine: a row is deleted, one changed, one added.
        db.delete("orders", &["4"]);
        write_new(&db, "6", "1100");
        write_new(&db, "11", "2200");
        db.crash_at_step(step);
        let _ = engine(&db).rollback("orders_v2").await;
        let e = engine(&db);
        let done = e
            .rollback("orders_v2")
            .await
            .unwrap_or_else(|err| panic!("re-run after a crash at step {step}: {err}"));
        assert_eq!(done.to, "cut_over", "crash at step {step}");
        assert_eq!(phase(&e).await, "cut_over");
        assert_eq!(
            db.rows("_splice_orders_v2_old").expect("restored"),
            mapped_down(&db),
            "crash at step {step}: the restored table equals the live one, row for row"
        );
        // And rollback stays open from here: the next step back swaps.
        let again = e.rollback("orders_v2").await.expect("rollback again");
        assert!(again.already_done, "a re-run goes no further");
    }
}

/// The refill of a table restored from quarantine stops chunking at the live table's highest
/// key, and its last chunk still removes the restored table's rows past that key: the live
/// table lost them while the old one sat in quarantine.
#[tokio::test]
async fn a_refill_from_quarantine_removes_rows_deleted_past_the_live_tables_last_key() {
    let db = contracted(3000).await;
    // The live table keeps exactly one first chunk's worth of rows (1,000): that chunk reaches
    // the end.
    for id in 1001..=3000 {
        db.delete("orders", &[id.to_string().as_str()]);
    }
    let e = engine(&db);
    let restored = e.rollback("orders_v2").await.expect("restore");
    assert_eq!(restored.to, "cut_over");
    let old = db.rows("_splice_orders_v2_old").expect("restored");
    assert_eq!(old.len(), 1000, "rows 1001 to 3000 were removed");
    assert_eq!(
        old,
        mapped_down(&db),
        "the restored table equals the live one"
    );
}

#[tokio::test]
async fn a_crash_at_any_step_of_drop_is_finished_by_a_rerun() {
    let drop = |db: Memory| async move {
        engine(&db)
            .drop_quarantined("orders_v2", Quarantine::Override)
            .await
            .expect("drop");
    };
    let steps = steps_of(|| contracted(4), drop).await;
    for step in 1..=steps {
        let db = contracted(4).await;
        db.crash_at_step(step);
        let _ = engine(&db)
            .drop_quarantined("orders_v2", Quarantine::Override)
            .await;
        let phase_now = phase(&engine(&db)).await;
        assert_eq!(
            db.has_table("splice_quarantine._splice_orders_v2_old"),
            phase_now == "contracted",
            "crash at step {step}"
        );
        let e = engine(&db);
        e.drop_quarantined("orders_v2", Quarantine::Override)
            .await
            .unwrap_or_else(|err| panic!("re-run after a crash at step {step}: {err}"));
        assert_eq!(phase(&e).await, "dropped");
        assert!(!db.has_table("splice_quarantine._splice_orders_v2_old"));
    }
}

#[tokio::test]
async fn rollback_run_twice_takes_one_step_and_abandoning_is_abort() {
    let db = cut_over(5).await;
    let e = engine(&db);
    let first = e.rollback("orders_v2").await.expect("rollback");
    assert_eq!(
        (first.from.as_str(), first.to.as_str()),
        ("cut_over", "syncing")
    );
    assert!(!first.already_done);
    let second = e.rollback("orders_v2").await.expect("rollback again");
    assert!(second.already_done);
    assert_eq!(phase(&e).await, "syncing");
    assert!(
        db.has_table("_splice_orders_v2_new"),
        "the shadow table stays"
    );
    assert!(db.has_slot("splice_orders_v2_fwd"), "forward capture stays");

    let aborted = e.abort("orders_v2").await.expect("abort");
    assert!(!aborted.already_done);
    assert_eq!(phase(&e).await, "rolled_back");
    assert!(!db.has_table("_splice_orders_v2_new"));
    assert!(!db.has_slot("splice_orders_v2_fwd"));
    assert!(
        e.abort("orders_v2")
            .await
            .expect("abort again")
            .already_done
    );

    // Abort refuses while the new table is live.
    let db = cut_over(3).await;
    let err = engine(&db).abort("orders_v2").await.expect_err("live");
    assert!(matches!(refusal(&err), Refusal::WrongPhase { .. }), "{err}");
    assert!(
        err.to_string().contains("splice rollback orders_v2"),
        "{err}"
    );
}

#[tokio::test]
async fn phase_changes_are_compare_and_set_on_the_expected_phase() {
    use engine::adapter::StateStore;
    use engine::state::PhaseChange;
    let db = verified(3).await;
    let lock = db.acquire_lock("orders_v2").await.expect("lock");
    let stale = PhaseChange::new(Phase::Syncing, Phase::Verified, serde_json::json!({}));
    let err = db.transition(&lock, &stale).await.expect_err("not syncing");
    assert!(
        matches!(refusal(&err), Refusal::PhaseChanged { .. }),
        "{err}"
    );
    drop(lock);
    assert_eq!(phase(&engine(&db)).await, "verified", "nothing was written");
}

#[tokio::test]
async fn a_lost_slot_is_refused_by_every_command_that_needs_continuity() {
    // Forward capture lost before cutover: rows written since would be missing.
    let db = verified(5).await;
    db.lose_slot("splice_orders_v2_fwd");
    db.upsert(
        "orders",
        &[
            ("id", Some("6")),
            ("amount", Some("1")),
            ("note", Some("x")),
        ],
    );
    let e = engine(&db);
    let err = e
        .cutover("orders_v2", u64::MAX, ReverseSync::Start)
        .await
        .expect_err("cutover");
    assert!(
        matches!(refusal(&err), Refusal::CaptureLost { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("splice abort orders_v2"), "{err}");
    assert!(!new_shape_is_live(&db), "nothing was swapped");
    let err = e.verify("orders_v2").await.expect_err("verify");
    assert!(
        matches!(refusal(&err), Refusal::CaptureLost { .. }),
        "{err}"
    );
    let opts = SyncOptions {
        until_caught_up: true,
        ..Default::default()
    };
    let err = e
        .sync(
            "orders_v2",
            &opts,
            &Control::new(RateLimit::Unlimited),
            &mut NoProgress,
        )
        .await
        .expect_err("sync");
    assert!(
        matches!(refusal(&err), Refusal::CaptureLost { .. }),
        "{err}"
    );
    assert!(
        !db.has_slot("splice_orders_v2_fwd"),
        "never re-created from now"
    );

    // Reverse capture lost after cutover: rollback would lose the writes since.
    let db = cut_over(5).await;
    db.lose_slot("splice_orders_v2_rev");
    write_new(&db, "2", "500");
    let err = engine(&db)
        .rollback("orders_v2")
        .await
        .expect_err("rollback");
    assert!(
        matches!(refusal(&err), Refusal::CaptureLost { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("splice contract"), "{err}");
    assert!(new_shape_is_live(&db));
}

#[tokio::test]
async fn after_a_restore_from_quarantine_an_explicit_step_swaps_back_and_forward_sync_resumes() {
    let db = contracted(6).await;
    let e = engine(&db);
    let restored = e.rollback("orders_v2").await.expect("restore");
    assert_eq!(restored.to, "cut_over");
    // A plain re-run goes no further; --from cut_over is the explicit next step.
    assert!(e.rollback("orders_v2").await.expect("re-run").already_done);
    let err = e
        .rollback_from("orders_v2", Some(Phase::Verified))
        .await
        .expect_err("not verified");
    assert!(matches!(refusal(&err), Refusal::WrongPhase { .. }), "{err}");
    let back = e
        .rollback_from("orders_v2", Some(Phase::CutOver))
        .await
        .expect("swap back");
    assert_eq!(
        (back.from.as_str(), back.to.as_str()),
        ("cut_over", "syncing")
    );
    assert!(!new_shape_is_live(&db));
    // Contract had dropped forward capture; the swap back started it again first, so a write
    // to the old table right after reaches the new one.
    db.upsert(
        "orders",
        &[
            ("id", Some("2")),
            ("amount", Some("77")),
            ("note", Some("back")),
        ],
    );
    sync_until_caught_up(&e).await;
    let new = db.rows("_splice_orders_v2_new").expect("new");
    assert_eq!(new[1]["amount_cents"].as_deref(), Some("7700"));
    // Re-running the same explicit step reports it done.
    let again = e
        .rollback_from("orders_v2", Some(Phase::CutOver))
        .await
        .expect("re-run");
    assert!(again.already_done);
}

// ── guard rails ──

/// The example migration under another name, on the same table.
fn second_spec() -> String {
    SPEC.replace("orders_v2", "orders_v3")
}

#[tokio::test]
async fn expand_refuses_a_second_migration_of_a_table_until_the_first_is_contracted() {
    let db = database(6);
    let e = engine(&db);
    e.expand(SPEC, "spec.toml").await.expect("expand");
    let refused = |err: EngineError, phase: Phase| {
        match refusal(&err) {
            Refusal::TableInFlight {
                other, phase: p, ..
            } => {
                assert_eq!(other, "orders_v2");
                assert_eq!(*p, phase);
            }
            r => panic!("expected TableInFlight, got {r}"),
        }
        assert!(err.to_string().contains("splice abort orders_v2"), "{err}");
    };
    let err = e
        .expand(&second_spec(), "v3.toml")
        .await
        .expect_err("orders_v2 is in flight");
    refused(err, Phase::Expanded);
    // Nothing of the refused migration was left behind to block anyone.
    assert!(!db.has_table("_splice_orders_v3_new"));
    assert_eq!(e.status(None).await.expect("status").len(), 1);

    sync_until_caught_up(&e).await;
    e.verify("orders_v2").await.expect("verify");
    e.cutover("orders_v2", u64::MAX, ReverseSync::Start)
        .await
        .expect("cutover");
    let err = e
        .expand(&second_spec(), "v3.toml")
        .await
        .expect_err("cut over is still in flight");
    refused(err, Phase::CutOver);

    // Contracted: the live table is settled, its old shape in quarantine; a new one may start.
    e.contract("orders_v2", None).await.expect("contract");
    let v3 = SPEC
        .replace("orders_v2", "orders_v3")
        .replace(
            "amount_cents bigint NOT NULL",
            "amount_cents bigint NOT NULL, flag text",
        )
        .replace("[up]\namount_cents = \"amount * 100\"", "[up]")
        .replace("[down]\namount = \"amount_cents / 100\"", "[down]");
    e.expand(&v3, "v3.toml")
        .await
        .expect("expand after contract");
    // …and then the contracted one cannot be restored under it.
    let err = e
        .rollback("orders_v2")
        .await
        .expect_err("a later migration followed");
    assert!(
        matches!(refusal(&err), Refusal::TableMovedOn { other, .. } if other == "orders_v3"),
        "{err}"
    );
    e.abort("orders_v3").await.expect("abort v3");
    let restored = e
        .rollback("orders_v2")
        .await
        .expect("restore after v3 is gone");
    assert_eq!(restored.to, "cut_over");
}

#[tokio::test]
async fn re_running_a_finished_expand_cutover_contract_or_drop_reports_it_as_already_done() {
    let db = database(5);
    let e = engine(&db);
    assert!(!e.expand(SPEC, "spec.toml").await.expect("expand").already);
    let again = e.expand(SPEC, "spec.toml").await.expect("expand again");
    assert!(again.already);
    assert_eq!(again.phase, Phase::Expanded);
    sync_until_caught_up(&e).await;
    e.verify("orders_v2").await.expect("verify");
    let first = e
        .cutover("orders_v2", u64::MAX, ReverseSync::Start)
        .await
        .expect("cutover");
    assert!(!first.already);
    let again = e
        .cutover("orders_v2", u64::MAX, ReverseSync::Start)
        .await
        .expect("cutover again");
    assert!(again.already);
    assert!(again.cut_over_at.is_some(), "{again:?}");
    assert!(
        !e.contract("orders_v2", None)
            .await
            .expect("contract")
            .already
    );
    assert!(e.contract("orders_v2", None).await.expect("again").already);
    assert!(
        e.cutover("orders_v2", u64::MAX, ReverseSync::Start)
            .await
            .expect("cutover after contract")
            .already
    );
    let dropped = e
        .drop_quarantined("orders_v2", Quarantine::Override)
        .await
        .expect("drop");
    assert!(!dropped.already);
    let again = e
        .drop_quarantined("orders_v2", Quarantine::Override)
        .await
        .expect("drop again");
    assert!(again.already);
}

#[tokio::test]
async fn every_gate_is_a_refusal_that_suggests_a_command_that_would_run() {
    let db = database(5);
    let e = engine(&db);
    e.expand(SPEC, "spec.toml").await.expect("expand");
    let next = |err: &EngineError| {
        assert!(matches!(err, EngineError::Refused(_)), "{err}");
        err.to_string()
    };
    // (phase, command) → the next step the refusal names.
    let err = e.verify("orders_v2").await.expect_err("verify before sync");
    assert!(
        next(&err).contains("next: `splice sync orders_v2 --until-caught-up`"),
        "{err}"
    );
    sync_until_caught_up(&e).await;
    let err = e
        .cutover("orders_v2", u64::MAX, ReverseSync::Start)
        .await
        .expect_err("cutover before verify");
    assert!(
        next(&err).contains("next: `splice verify orders_v2`"),
        "{err}"
    );
    let err = e.contract("orders_v2", None).await.expect_err("contract");
    assert!(
        next(&err).contains("next: `splice verify orders_v2`"),
        "{err}"
    );
    e.verify("orders_v2").await.expect("verify");
    let err = e
        .drop_quarantined("orders_v2", Quarantine::Override)
        .await
        .expect_err("drop");
    assert!(
        next(&err).contains("next: `splice cutover orders_v2`"),
        "{err}"
    );
    e.abort("orders_v2").await.expect("abort");
    let err = e
        .sync(
            "orders_v2",
            &SyncOptions::default(),
            &Control::new(RateLimit::Unlimited),
            &mut NoProgress,
        )
        .await
        .expect_err("sync after rollback");
    assert!(next(&err).contains("next: `splice expand FILE`"), "{err}");
    let err = e
        .verify("orders_v2")
        .await
        .expect_err("verify after rollback");
    assert!(next(&err).contains("splice expand FILE"), "{err}");
}

/// Records what every progress update said about the rate; on the first update it can run
/// an action (as an operator running `splice throttle` would while the sync runs).
struct RateLog {
    seen: Vec<(u32, engine::backfill::RateSource, Option<u32>)>,
    on_first: Option<Box<dyn FnOnce() + Send>>,
}

impl engine::backfill::ProgressSink for RateLog {
    fn update(&mut self, p: &engine::backfill::SyncProgress) {
        self.seen
            .push((p.rate_limit, p.rate_source, p.replaced_override));
        if let Some(f) = self.on_first.take() {
            f();
        }
    }
}

fn set_override(db: &Memory, limit: Option<RateLimit>) {
    use engine::adapter::StateStore;
    use futures_util::FutureExt;
    db.set_rate_limit(&(), "orders_v2", limit)
        .now_or_never()
        .expect("the in-memory store answers at once")
        .expect("set");
}

#[tokio::test]
async fn the_rate_typed_on_sync_replaces_an_earlier_throttle_override() {
    use engine::backfill::RateSource;
    let db = database(50);
    let e = engine(&db);
    e.expand(SPEC, "spec.toml").await.expect("expand");
    e.set_rate_limit("orders_v2", Some(RateLimit::from_rows_per_second(50_000)))
        .await
        .expect("throttle");
    let control = Control::new(RateLimit::Unlimited);
    let opts = SyncOptions {
        until_caught_up: true,
        rate_limit: Some(RateLimit::from_rows_per_second(5_000)),
        ..Default::default()
    };
    let mut log = RateLog {
        seen: vec![],
        on_first: None,
    };
    e.sync("orders_v2", &opts, &control, &mut log)
        .await
        .expect("sync");
    assert_eq!(control.rate(), RateLimit::from_rows_per_second(5_000));
    assert_eq!(log.seen[0], (5_000, RateSource::CommandLine, Some(50_000)));
    assert!(log.seen.iter().all(|s| s.0 == 5_000), "{:?}", log.seen);
    let status = &e.status(Some("orders_v2")).await.expect("status")[0];
    assert_eq!(status.rate_override, None, "the override was replaced");
}

#[tokio::test]
async fn throttle_set_and_cleared_while_sync_runs_reaches_it_and_is_reported() {
    use engine::backfill::RateSource;
    let db = database(3_000);
    let e = engine(&db);
    e.expand(SPEC, "spec.toml").await.expect("expand");
    let control = Control::new(RateLimit::Unlimited);
    let opts = SyncOptions {
        until_caught_up: true,
        rate_limit: Some(RateLimit::from_rows_per_second(900_000)),
        // Tiny chunks: many checkpoints.
        chunk_target: Some(std::time::Duration::from_nanos(1)),
        ..Default::default()
    };
    // Set while the sync runs: it wins over the command line, and is reported.
    let shared = db.clone();
    let mut log = RateLog {
        seen: vec![],
        on_first: Some(Box::new(move || {
            set_override(&shared, Some(RateLimit::from_rows_per_second(800_000)))
        })),
    };
    e.sync("orders_v2", &opts, &control, &mut log)
        .await
        .expect("sync");
    assert_eq!(log.seen[0], (900_000, RateSource::CommandLine, None));
    assert!(
        log.seen.contains(&(800_000, RateSource::Override, None)),
        "{:?}",
        log.seen
    );

    // Cleared while a later sync runs (one that named no rate, so the override applied from
    // its start): back to the sync's own rate, the file's.
    e.abort("orders_v2").await.expect("abort");
    e.expand(SPEC, "spec.toml").await.expect("re-expand");
    set_override(&db, Some(RateLimit::from_rows_per_second(800_000)));
    let shared = db.clone();
    let mut log = RateLog {
        seen: vec![],
        on_first: Some(Box::new(move || set_override(&shared, None))),
    };
    let control = Control::new(RateLimit::Unlimited);
    let opts = SyncOptions {
        rate_limit: None,
        ..opts
    };
    e.sync("orders_v2", &opts, &control, &mut log)
        .await
        .expect("sync");
    assert_eq!(log.seen[0].1, RateSource::Override, "{:?}", log.seen);
    assert_eq!(
        log.seen.last().map(|s| (s.0, s.1)),
        Some((0, RateSource::File)),
        "{:?}",
        log.seen
    );
    assert_eq!(control.rate(), RateLimit::Unlimited);
}

async fn overridden(e: &Engine<Memory>) -> Option<u32> {
    e.status(Some("orders_v2")).await.expect("status")[0].rate_override
}

#[tokio::test]
async fn a_throttle_override_ends_with_rollback_abort_and_re_expand() {
    let db = database(5);
    let e = engine(&db);
    e.expand(SPEC, "spec.toml").await.expect("expand");
    set_override(&db, Some(RateLimit::from_rows_per_second(50_000)));
    assert_eq!(overridden(&e).await, Some(50_000));
    e.rollback("orders_v2").await.expect("rollback");
    assert_eq!(overridden(&e).await, None, "rollback ends it");

    e.expand(SPEC, "spec.toml").await.expect("re-expand");
    set_override(&db, Some(RateLimit::from_rows_per_second(50_000)));
    e.abort("orders_v2").await.expect("abort");
    assert_eq!(overridden(&e).await, None, "abort ends it");

    // One set on a rolled-back migration does not carry into its next run.
    set_override(&db, Some(RateLimit::from_rows_per_second(50_000)));
    e.expand(SPEC, "spec.toml").await.expect("re-expand");
    assert_eq!(overridden(&e).await, None, "re-expand starts from the file");
}

/// Every progress update, for the tests that watch a long phase.
#[derive(Default)]
struct Recorded(Vec<engine::backfill::SyncProgress>);

impl engine::backfill::ProgressSink for Recorded {
    fn update(&mut self, p: &engine::backfill::SyncProgress) {
        self.0.push(p.clone());
    }
}

#[tokio::test]
async fn cutover_reports_its_catch_up_and_a_restore_reports_its_refill() {
    let db = verified(8).await;
    let e = engine(&db);
    let mut seen = Recorded::default();
    e.cutover_watched("orders_v2", u64::MAX, ReverseSync::Start, &mut seen)
        .await
        .expect("cutover");
    assert!(
        seen.0
            .iter()
            .any(|p| p.state == engine::backfill::SyncState::CatchingUp),
        "cutover said it was catching up: {:?}",
        seen.0
    );
    e.contract("orders_v2", None).await.expect("contract");
    let mut seen = Recorded::default();
    e.rollback_watched("orders_v2", None, &mut seen)
        .await
        .expect("restore");
    // Its first report knows how many rows the refill goes through; its last, that it is done.
    assert_eq!(
        seen.0.first().map(|p| p.rows_total),
        Some(8),
        "{:?}",
        seen.0
    );
    assert!(
        seen.0.last().is_some_and(|p| p.backfill_done),
        "the refill reported its end: {:?}",
        seen.0
    );
}

/// 100 rows in ranges of 10 (bounds 10, 20, …, 90), expanded, synced and verified by a full
/// pass that stored its ranges.
async fn verified_in_ranges() -> (Memory, Engine<Memory>) {
    let db = database(100);
    let e = engine(&db);
    e.expand(SPEC, "spec.toml").await.expect("expand");
    sync_until_caught_up(&e).await;
    let full = e.verify("orders_v2").await.expect("full verify");
    assert_eq!(full.kind, VerifyKind::Full);
    assert_eq!((full.ranges, full.ranges_total), (10, 10), "{full:?}");
    (db, e)
}

async fn incremental(e: &Engine<Memory>) -> engine::VerifyReport {
    e.verify_kind(
        "orders_v2",
        VerifyKind::Incremental,
        &engine::verify::VerifyCounters::default(),
    )
    .await
    .expect("incremental verify")
}

fn change_source(db: &Memory, id: &str, amount: &str) {
    db.upsert(
        "orders",
        &[
            ("id", Some(id)),
            ("amount", Some(amount)),
            ("note", Some("changed")),
        ],
    );
}

#[tokio::test]
async fn incremental_verify_rereads_only_changed_ranges_and_finds_a_tampered_row_in_one() {
    let (db, e) = verified_in_ranges().await;
    assert_eq!(phase(&e).await, "verified");
    // Key 55 changes through capture; key 57, in the same range (50, 60], is tampered with
    // behind splice's back.
    change_source(&db, "55", "9");
    sync_until_caught_up(&e).await;
    db.tamper("_splice_orders_v2_new", &["57"], "amount_cents", Some("1"));
    let report = incremental(&e).await;
    assert_eq!(report.kind, VerifyKind::Incremental);
    assert_eq!(report.full_because, None);
    assert_eq!(
        (report.ranges, report.ranges_total, report.rows_checked),
        (1, 10, 10),
        "only the range of key 55 is re-read: {report:?}"
    );
    let keys: Vec<&Vec<String>> = report.diverged.iter().map(|d| &d.key).collect();
    assert_eq!(keys, vec![&vec!["57".to_string()]]);
    assert_eq!(
        phase(&e).await,
        "syncing",
        "a failing incremental closes the gate"
    );

    // Repaired by hand (no capture, no mark): the range's last check failed, so the next
    // incremental pass re-reads it, passes, and opens the gate again.
    db.tamper(
        "_splice_orders_v2_new",
        &["57"],
        "amount_cents",
        Some("300"),
    );
    let report = incremental(&e).await;
    assert_eq!((report.kind, report.ranges), (VerifyKind::Incremental, 1));
    assert!(report.cutover_allowed(), "{report:?}");
    assert_eq!(phase(&e).await, "verified");

    // Nothing changed since: an incremental pass reads nothing and still vouches for all.
    let report = incremental(&e).await;
    assert_eq!((report.ranges, report.rows_checked), (0, 0), "{report:?}");
    assert!(report.cutover_allowed());
}

#[tokio::test]
async fn a_row_tampered_in_an_unchanged_range_is_missed_by_incremental_and_found_by_full() {
    let (db, e) = verified_in_ranges().await;
    change_source(&db, "55", "9");
    sync_until_caught_up(&e).await;
    // Range (10, 20] saw no change through capture: incremental cannot see this.
    db.tamper("_splice_orders_v2_new", &["15"], "amount_cents", Some("1"));
    let report = incremental(&e).await;
    assert_eq!(report.ranges, 1);
    assert!(
        report.cutover_allowed(),
        "the documented limit: a write outside capture in an unchanged range is not re-read"
    );
    let full = e.verify("orders_v2").await.expect("full verify");
    assert_eq!((full.kind, full.ranges), (VerifyKind::Full, 10));
    let keys: Vec<&Vec<String>> = full.diverged.iter().map(|d| &d.key).collect();
    assert_eq!(keys, vec![&vec!["15".to_string()]], "a full pass finds it");
}

#[tokio::test]
async fn incremental_with_no_stored_pass_runs_full_and_says_so() {
    let db = database(100);
    let e = engine(&db);
    e.expand(SPEC, "spec.toml").await.expect("expand");
    sync_until_caught_up(&e).await;
    db.tamper("_splice_orders_v2_new", &["15"], "amount_cents", Some("1"));
    let report = incremental(&e).await;
    assert_eq!(report.kind, VerifyKind::Full);
    assert!(
        report
            .full_because
            .as_deref()
            .is_some_and(|w| w.contains("no verify pass is stored")),
        "{report:?}"
    );
    assert_eq!((report.ranges, report.ranges_total), (10, 10));
    assert_eq!(report.diverged.len(), 1);
}

#[tokio::test]
async fn rollback_and_cutover_forget_the_stored_ranges() {
    let (db, e) = verified_in_ranges().await;
    assert!(db.stored_verify_ranges("orders_v2").is_some());
    e.rollback("orders_v2").await.expect("rollback");
    assert!(db.stored_verify_ranges("orders_v2").is_none());
    // Started again: the first incremental request runs full.
    e.expand(SPEC, "spec.toml").await.expect("re-expand");
    sync_until_caught_up(&e).await;
    assert_eq!(incremental(&e).await.kind, VerifyKind::Full);
    e.cutover("orders_v2", u64::MAX, ReverseSync::Start)
        .await
        .expect("cutover");
    assert!(
        db.stored_verify_ranges("orders_v2").is_none(),
        "after cutover the new table is written directly, not through capture"
    );
    e.rollback("orders_v2")
        .await
        .expect("rollback from cutover");
    assert_eq!(phase(&e).await, "syncing");
    assert_eq!(incremental(&e).await.kind, VerifyKind::Full);
}

#[tokio::test]
async fn a_crash_at_any_step_between_capture_and_apply_cannot_lose_a_dirty_mark() {
    // Count the steps sync takes to apply one change, then crash at each one in turn.
    let (clean, clean_engine) = verified_in_ranges().await;
    change_source(&clean, "55", "9");
    let before = clean.steps().len();
    sync_until_caught_up(&clean_engine).await;
    let steps = clean.steps().len() - before;
    assert!(
        clean.steps()[before..].iter().any(|s| s == "mark_changed"),
        "{:?}",
        &clean.steps()[before..]
    );
    for step in 1..=steps {
        let (db, e) = verified_in_ranges().await;
        change_source(&db, "55", "9");
        db.tamper("_splice_orders_v2_new", &["57"], "amount_cents", Some("1"));
        db.crash_at_step(db.steps().len() + step);
        let first = {
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
        };
        drop(e);
        // A new process: the change was not acknowledged unless it was applied and marked.
        let e = engine(&db);
        if first.is_err() {
            sync_until_caught_up(&e).await;
        }
        let stored = db.stored_verify_ranges("orders_v2").expect("stored ranges");
        assert!(
            !stored.ranges[5].vouched(),
            "crash at step {step}: range (50, 60] must be marked: {:?}",
            stored.ranges[5]
        );
        let report = incremental(&e).await;
        let keys: Vec<&Vec<String>> = report.diverged.iter().map(|d| &d.key).collect();
        assert_eq!(
            keys,
            vec![&vec!["57".to_string()]],
            "crash at step {step}: the changed range is re-read"
        );
    }
}

/// Raises the commit latency once the backfill copies (while the application writes the
/// table: an idle application is not held back for), records every reason it held back for,
/// and stops the sync once it held back for the latency (or after `give_up`).
struct LatencyRises {
    db: Memory,
    control: Control,
    raise_to: std::time::Duration,
    reasons: Vec<String>,
    started: std::time::Instant,
    give_up: std::time::Duration,
    writes: u64,
    /// The key the application writes.
    write_id: &'static str,
}

impl engine::backfill::ProgressSink for LatencyRises {
    fn update(&mut self, p: &engine::backfill::SyncProgress) {
        use engine::backfill::SyncState;
        match &p.state {
            SyncState::Copying => {
                self.db.set_commit_latency(self.raise_to);
                self.writes += 1;
                let note = format!("w{}", self.writes);
                self.db.upsert(
                    "orders",
                    &[
                        ("id", Some(self.write_id)),
                        ("amount", Some("3")),
                        ("note", Some(note.as_str())),
                    ],
                );
            }
            SyncState::HoldingBack { reason, pace } => {
                assert!(*pace < 1.0 && *pace > 0.0, "pace {pace}");
                if reason.contains("> budget") {
                    self.control.stop();
                }
                self.reasons.push(reason.clone());
            }
            _ => {}
        }
        if self.started.elapsed() > self.give_up {
            self.control.stop();
        }
    }
}

async fn backfill_under_latency(
    baseline: std::time::Duration,
    during: std::time::Duration,
) -> (Vec<String>, Memory) {
    backfill_under_latency_writing(baseline, during, "1").await
}

/// [`backfill_under_latency`], the application writing key `write_id` (of 1..=4000).
async fn backfill_under_latency_writing(
    baseline: std::time::Duration,
    during: std::time::Duration,
    write_id: &'static str,
) -> (Vec<String>, Memory) {
    let db = database(4000);
    db.set_commit_latency(baseline);
    let engine = engine(&db);
    engine.expand(SPEC, "spec.toml").await.expect("expand");
    let control = Control::new(RateLimit::from_rows_per_second(1000));
    let mut sink = LatencyRises {
        db: db.clone(),
        control: control.clone(),
        raise_to: during,
        reasons: Vec::new(),
        started: std::time::Instant::now(),
        give_up: std::time::Duration::from_secs(3),
        writes: 0,
        write_id,
    };
    engine
        .sync("orders_v2", &SyncOptions::default(), &control, &mut sink)
        .await
        .expect("sync");
    (sink.reasons, db)
}

#[tokio::test]
async fn the_backfill_holds_back_while_commit_latency_is_above_the_impact_budget() {
    // The probe measured 1 ms before the backfill started; 10 ms while it copies.
    let (reasons, db) = backfill_under_latency(
        std::time::Duration::from_millis(1),
        std::time::Duration::from_millis(10),
    )
    .await;
    assert!(
        db.heartbeats() > 8,
        "the probe beat {} times",
        db.heartbeats()
    );
    let over = reasons
        .iter()
        .find(|r| r.contains("> budget"))
        .unwrap_or_else(|| panic!("never held back for the latency: {reasons:?}"));
    assert!(over.contains("+20%"), "{over}");
}

#[tokio::test]
async fn writes_only_to_keys_the_backfill_has_yet_to_copy_still_hold_it_back() {
    // The application writes only the last key: capture leaves each write to the backfill
    // (the key is ahead of it) and applies none, yet the application is writing the table.
    let (reasons, _) = backfill_under_latency_writing(
        std::time::Duration::from_millis(1),
        std::time::Duration::from_millis(10),
        "4000",
    )
    .await;
    assert!(
        reasons.iter().any(|r| r.contains("> budget")),
        "never held back for the latency: {reasons:?}"
    );
}

#[tokio::test]
async fn a_backfill_whose_commit_latency_stays_flat_never_holds_back_for_it() {
    let flat = std::time::Duration::from_millis(1);
    let (reasons, db) = backfill_under_latency(flat, flat).await;
    assert!(
        db.heartbeats() > 8,
        "the probe beat {} times",
        db.heartbeats()
    );
    assert!(
        reasons.iter().all(|r| !r.contains("> budget")),
        "{reasons:?}"
    );
}
