//! The PostgreSQL change stream against a real server: ordering, acknowledgements and resume,
//! keys, TOAST, tables added while running, origins, lag, cleanup.

mod common;

use anyhow::Result;
use cdc::{ChangeSource, Op, Position, Value};
use common::*;
use std::collections::BTreeSet;
use std::time::Duration;
use testkit::Postgres;

/// A tiny deterministic generator, so a failing schedule can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// One writer session's state in the random schedule.
struct Writer {
    client: tokio_postgres::Client,
    /// Ids committed and present.
    committed: BTreeSet<i64>,
    /// Ids present as the open transaction sees them.
    visible: BTreeSet<i64>,
    /// The open transaction's changes so far.
    open: Option<Vec<(Op, i64)>>,
    next_id: i64,
    stride: i64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_changes_arrive_once_in_commit_order_and_rolled_back_ones_never() -> Result<()> {
    let pg = Postgres::start()?;
    let admin = testkit::connect(&pg.url()).await?;
    admin
        .batch_execute("CREATE TABLE items (id bigint PRIMARY KEY, v int NOT NULL)")
        .await?;
    let mut stream = open(&pg, "splice_order", &["public.items"]).await?;

    // Three sessions interleave statements of their open transactions; each owns the ids
    // congruent to its number, so they never wait on each other's row locks. Commit order is
    // the order of our COMMIT calls, not the order of the changes inside.
    let mut writers = Vec::new();
    for i in 0..3 {
        writers.push(Writer {
            client: testkit::connect(&pg.url()).await?,
            committed: BTreeSet::new(),
            visible: BTreeSet::new(),
            open: None,
            next_id: i + 1,
            stride: 3,
        });
    }
    let mut rng = Rng(0x5eed_1234_abcd);
    let mut expected: Vec<Vec<(Op, i64)>> = Vec::new();
    let mut rolled_back = 0;
    for _step in 0..600 {
        let w = &mut writers[rng.below(3) as usize];
        match &mut w.open {
            None => {
                w.client.batch_execute("BEGIN").await?;
                w.open = Some(Vec::new());
                w.visible = w.committed.clone();
            }
            Some(changes) => match rng.below(10) {
                0 => {
                    if changes.is_empty() || rng.below(4) == 0 {
                        w.client.batch_execute("ROLLBACK").await?;
                        rolled_back += 1;
                    } else {
                        w.client.batch_execute("COMMIT").await?;
                        expected.push(std::mem::take(changes));
                        w.committed = w.visible.clone();
                    }
                    w.open = None;
                }
                1..=4 => {
                    let id = w.next_id;
                    w.next_id += w.stride;
                    w.client
                        .execute("INSERT INTO items VALUES ($1, 0)", &[&id])
                        .await?;
                    w.visible.insert(id);
                    changes.push((Op::Insert, id));
                }
                5..=7 => {
                    let Some(&id) = w
                        .visible
                        .iter()
                        .nth(rng.below(w.visible.len().max(1) as u64) as usize)
                    else {
                        continue;
                    };
                    w.client
                        .execute("UPDATE items SET v = v + 1 WHERE id = $1", &[&id])
                        .await?;
                    changes.push((Op::Update, id));
                }
                _ => {
                    let Some(&id) = w
                        .visible
                        .iter()
                        .nth(rng.below(w.visible.len().max(1) as u64) as usize)
                    else {
                        continue;
                    };
                    w.client
                        .execute("DELETE FROM items WHERE id = $1", &[&id])
                        .await?;
                    w.visible.remove(&id);
                    changes.push((Op::Delete, id));
                }
            },
        }
    }
    for w in &mut writers {
        if w.open.take().is_some() {
            w.client.batch_execute("ROLLBACK").await?;
            rolled_back += 1;
        }
    }
    // A last transaction marks the end: everything before it must have arrived, nothing else.
    admin
        .execute("INSERT INTO items VALUES (-1, 0)", &[])
        .await?;
    expected.push(vec![(Op::Insert, -1)]);
    assert!(
        expected.len() > 20 && rolled_back > 5,
        "the schedule exercises too little"
    );

    let mut received = Vec::new();
    let mut last_position: Option<Position> = None;
    while received.len() < expected.len() {
        let txn = next(&mut stream).await?;
        if let Some(last) = &last_position {
            assert!(txn.position > *last, "positions go forward in commit order");
        }
        last_position = Some(txn.position.clone());
        received.push(ops(&txn));
        stream.ack(&txn.position)?;
    }
    assert_eq!(received, expected);
    assert!(
        maybe_next(&mut stream, Duration::from_millis(300))
            .await?
            .is_none(),
        "nothing arrives after the end marker"
    );
    stream.close().await?;
    Ok(())
}

/// Insert ids `from..=to`, one transaction each.
async fn insert_each(client: &tokio_postgres::Client, from: i64, to: i64) -> Result<()> {
    for id in from..=to {
        client
            .execute("INSERT INTO items VALUES ($1, 0)", &[&id])
            .await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_dropped_mid_stream_resumes_at_the_first_unacknowledged_transaction(
) -> Result<()> {
    let pg = Postgres::start()?;
    let admin = testkit::connect(&pg.url()).await?;
    admin
        .batch_execute("CREATE TABLE items (id bigint PRIMARY KEY, v int NOT NULL)")
        .await?;
    let mut first = open(&pg, "splice_crash", &["public.items"]).await?;
    insert_each(&admin, 1, 40).await?;

    // Acknowledge 1..=15, read 16..=20 without acknowledging, then vanish without a clean stop.
    let mut acked = None;
    for id in 1..=20 {
        let txn = next(&mut first).await?;
        assert_eq!(ops(&txn), vec![(Op::Insert, id)]);
        if id <= 15 {
            first.ack(&txn.position)?;
            acked = Some(txn.position.clone());
        }
    }
    let Some(Position::Lsn(acked)) = acked else {
        unreachable!("15 transactions were acknowledged")
    };
    // Acknowledgements travel within the status interval; wait until the server has the last
    // one, so the test knows exactly where "after the last acknowledgement" begins.
    loop {
        if confirmed_flush(&admin, "splice_crash")
            .await?
            .is_some_and(|c| c >= acked)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(first);
    wait_slot_released(&admin, "splice_crash").await?;
    assert_eq!(
        confirmed_flush(&admin, "splice_crash").await?,
        Some(acked),
        "the server never holds more than was acknowledged"
    );

    let mut second = open(&pg, "splice_crash", &["public.items"]).await?;
    for id in 16..=40 {
        let txn = next(&mut second).await?;
        assert_eq!(
            ops(&txn),
            vec![(Op::Insert, id)],
            "resume continues with the first unacknowledged transaction, nothing lost"
        );
        second.ack(&txn.position)?;
    }
    second.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_clean_stop_nothing_acknowledged_arrives_again() -> Result<()> {
    let pg = Postgres::start()?;
    let admin = testkit::connect(&pg.url()).await?;
    admin
        .batch_execute("CREATE TABLE items (id bigint PRIMARY KEY, v int NOT NULL)")
        .await?;
    let mut first = open(&pg, "splice_clean", &["public.items"]).await?;
    insert_each(&admin, 1, 30).await?;
    // Acknowledge 1..=12 one at a time, read 13..=17 without acknowledging, stop cleanly at
    // once: close() must get the last acknowledgement to the server before it disconnects.
    for id in 1..=17 {
        let txn = next(&mut first).await?;
        assert_eq!(ops(&txn), vec![(Op::Insert, id)]);
        if id <= 12 {
            first.ack(&txn.position)?;
        }
    }
    first.close().await?;

    let mut second = open(&pg, "splice_clean", &["public.items"]).await?;
    for id in 13..=30 {
        let txn = next(&mut second).await?;
        assert_eq!(ops(&txn), vec![(Op::Insert, id)]);
        second.ack(&txn.position)?;
    }
    second.close().await?;

    // Everything acknowledged and stopped cleanly: a third session gets only new work.
    let mut third = open(&pg, "splice_clean", &["public.items"]).await?;
    insert_each(&admin, 31, 31).await?;
    assert_eq!(ops(&next(&mut third).await?), vec![(Op::Insert, 31)]);
    third.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_that_changes_the_key_carries_the_old_key() -> Result<()> {
    let pg = Postgres::start()?;
    let admin = testkit::connect(&pg.url()).await?;
    admin
        .batch_execute(
            "CREATE TABLE pairs (a int, b text, v int, PRIMARY KEY (a, b));
             INSERT INTO pairs VALUES (1, 'x', 0), (2, 'y', 0);",
        )
        .await?;
    let mut stream = open(&pg, "splice_pk", &["public.pairs"]).await?;
    admin
        .batch_execute(
            "UPDATE pairs SET b = 'z' WHERE a = 1;
             UPDATE pairs SET v = 5 WHERE a = 2;
             DELETE FROM pairs WHERE a = 2;",
        )
        .await?;
    // One simple-query string is one transaction.
    let txn = next(&mut stream).await?;
    assert_eq!(txn.changes.len(), 3);
    let change = &txn.changes[0];
    assert_eq!(change.op, Op::Update);
    assert_eq!(
        change.key,
        vec![
            ("a".into(), Value::Int(1)),
            ("b".into(), Value::Text("z".into()))
        ]
    );
    assert_eq!(
        change.old_key,
        Some(vec![
            ("a".into(), Value::Int(1)),
            ("b".into(), Value::Text("x".into()))
        ])
    );
    let same_key = &txn.changes[1];
    assert_eq!(same_key.op, Op::Update);
    assert_eq!(
        same_key.old_key, None,
        "no old key when the key did not change"
    );
    let deleted = &txn.changes[2];
    assert_eq!(deleted.op, Op::Delete);
    assert_eq!(
        deleted.key,
        vec![
            ("a".into(), Value::Int(2)),
            ("b".into(), Value::Text("y".into()))
        ]
    );
    stream.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toasted_unchanged_columns_still_carry_the_key() -> Result<()> {
    let pg = Postgres::start()?;
    let admin = testkit::connect(&pg.url()).await?;
    // EXTERNAL storage keeps the values out of line and uncompressed, so they are TOASTed.
    admin
        .batch_execute(
            "CREATE TABLE docs (id int PRIMARY KEY, body text, n int);
             ALTER TABLE docs ALTER body SET STORAGE EXTERNAL;
             CREATE TABLE tagged (tag text PRIMARY KEY, n int);
             ALTER TABLE tagged ALTER tag SET STORAGE EXTERNAL;",
        )
        .await?;
    let big: String = (0..6000)
        .map(|i| char::from(b'a' + (i * 7 % 26) as u8))
        .collect();
    // A key long enough to be stored out of line, short enough for a btree entry.
    let big_key: String = (0..2500)
        .map(|i| char::from(b'a' + (i * 11 % 26) as u8))
        .collect();
    admin
        .execute("INSERT INTO docs VALUES (1, $1, 0)", &[&big])
        .await?;
    admin
        .execute("INSERT INTO tagged VALUES ($1, 0)", &[&big_key])
        .await?;
    // Both values live out of line, in the tables' TOAST relations.
    for t in ["docs", "tagged"] {
        let toast: String = admin
            .query_one(
                "SELECT reltoastrelid::regclass::text FROM pg_class WHERE relname = $1",
                &[&t],
            )
            .await?
            .get(0);
        let chunks: i64 = admin
            .query_one(&format!("SELECT count(*) FROM {toast}"), &[])
            .await?
            .get(0);
        assert!(chunks > 0, "{t} has TOASTed values");
    }
    let mut stream = open(&pg, "splice_toast", &["public.docs", "public.tagged"]).await?;
    admin
        .execute("UPDATE docs SET n = 1 WHERE id = 1", &[])
        .await?;
    admin.execute("UPDATE tagged SET n = 1", &[]).await?;

    let txn = next(&mut stream).await?;
    assert_eq!(txn.changes[0].key, vec![("id".into(), Value::Int(1))]);
    assert_eq!(txn.changes[0].old_key, None);
    let txn = next(&mut stream).await?;
    assert_eq!(
        txn.changes[0].key,
        vec![("tag".into(), Value::Text(big_key.clone()))],
        "a TOASTed key left out of the new row comes from the old key"
    );
    assert_eq!(txn.changes[0].old_key, None, "the key did not change");
    stream.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_added_while_running_is_streamed_from_then_on() -> Result<()> {
    let pg = Postgres::start()?;
    let admin = testkit::connect(&pg.url()).await?;
    admin
        .batch_execute("CREATE TABLE first (id int PRIMARY KEY); CREATE TABLE later (id int PRIMARY KEY); CREATE TABLE external (k int PRIMARY KEY)")
        .await?;
    let mut stream = open(&pg, "splice_grow", &["public.first"]).await?;
    admin
        .batch_execute("INSERT INTO later VALUES (1); INSERT INTO first VALUES (1);")
        .await?;
    let txn = next(&mut stream).await?;
    assert_eq!(
        txn.changes.len(),
        1,
        "the table not yet added is not streamed"
    );
    assert_eq!(txn.changes[0].table, table("public.first"));
    stream.ack(&txn.position)?;

    stream.add_table(&table("public.later")).await?;
    admin.batch_execute("INSERT INTO later VALUES (2)").await?;
    let txn = next(&mut stream).await?;
    assert_eq!(txn.changes[0].table, table("public.later"));
    assert_eq!(ops(&txn), vec![(Op::Insert, 2)]);
    stream.ack(&txn.position)?;

    // A table added by hand (ALTER PUBLICATION … ADD TABLE) is streamed too, keyed by the
    // replica identity the server reports.
    admin
        .batch_execute("ALTER PUBLICATION splice_grow ADD TABLE external")
        .await?;
    admin
        .batch_execute("INSERT INTO external VALUES (7)")
        .await?;
    let txn = next(&mut stream).await?;
    assert_eq!(txn.changes[0].table, table("public.external"));
    assert_eq!(txn.changes[0].key, vec![("k".into(), Value::Int(7))]);
    stream.ack(&txn.position)?;
    stream.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_written_under_a_skipped_origin_never_arrive() -> Result<()> {
    let pg = Postgres::start()?;
    let admin = testkit::connect(&pg.url()).await?;
    admin
        .batch_execute("CREATE TABLE items (id bigint PRIMARY KEY, v int NOT NULL)")
        .await?;
    let mut stream = cdc::PgChangeStream::open(
        config(&pg, "splice_origin", &["public.items"]).skip_origin("splice_applier"),
    )
    .await?;
    let applier = testkit::connect(&pg.url()).await?;
    // Each statement is its own transaction; the origin a transaction commits under is the
    // session's origin at commit.
    for statement in [
        "SELECT pg_replication_origin_create('splice_applier')",
        "SELECT pg_replication_origin_create('someone_else')",
        "SELECT pg_replication_origin_session_setup('splice_applier')",
        "INSERT INTO items VALUES (1, 0)",
        "INSERT INTO items VALUES (2, 0)",
        "SELECT pg_replication_origin_session_reset()",
        "SELECT pg_replication_origin_session_setup('someone_else')",
        "INSERT INTO items VALUES (3, 0)",
        "SELECT pg_replication_origin_session_reset()",
        "SELECT pg_replication_origin_session_setup('splice_applier')",
        "INSERT INTO items VALUES (4, 0)",
        "SELECT pg_replication_origin_session_reset()",
    ] {
        applier.batch_execute(statement).await?;
    }
    admin
        .execute("INSERT INTO items VALUES (5, 0)", &[])
        .await?;

    let txn = next(&mut stream).await?;
    assert_eq!(ops(&txn), vec![(Op::Insert, 3)]);
    assert_eq!(txn.origin.as_deref(), Some("someone_else"));
    assert_eq!(txn.changes[0].origin.as_deref(), Some("someone_else"));
    stream.ack(&txn.position)?;
    let txn = next(&mut stream).await?;
    assert_eq!(ops(&txn), vec![(Op::Insert, 5)]);
    assert_eq!(txn.origin, None);
    stream.ack(&txn.position)?;
    stream.close().await?;

    // The skipped transactions were acknowledged on the consumer's behalf: a restart does not
    // see them either.
    let mut again = open(&pg, "splice_origin", &["public.items"]).await?;
    admin
        .execute("INSERT INTO items VALUES (6, 0)", &[])
        .await?;
    assert_eq!(ops(&next(&mut again).await?), vec![(Op::Insert, 6)]);
    again.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_counts_from_the_last_acknowledgement() -> Result<()> {
    let pg = Postgres::start()?;
    let admin = testkit::connect(&pg.url()).await?;
    admin
        .batch_execute("CREATE TABLE items (id bigint PRIMARY KEY, v int NOT NULL)")
        .await?;
    let mut stream = open(&pg, "splice_lag", &["public.items"]).await?;
    insert_each(&admin, 1, 3).await?;
    let mut last = None;
    for _ in 0..3 {
        last = Some(next(&mut stream).await?.position);
    }
    let Some(Position::Lsn(last)) = last else {
        unreachable!()
    };
    let before = stream.lag().await?;
    let Position::Lsn(acked_before) = before.acked_position.clone() else {
        unreachable!("a PostgreSQL source")
    };
    assert!(acked_before < last, "nothing acknowledged yet");
    assert!(before.bytes >= last.bytes_since(acked_before));
    assert!(
        before.behind > Duration::ZERO,
        "three commits wait for acknowledgement"
    );

    stream.ack(&Position::Lsn(last))?;
    let after = stream.lag().await?;
    assert_eq!(after.acked_position, Position::Lsn(last));
    assert_eq!(
        after.behind,
        Duration::ZERO,
        "nothing received is unacknowledged"
    );
    let Position::Lsn(source) = after.source_position.clone() else {
        unreachable!("a PostgreSQL source")
    };
    assert_eq!(after.bytes, source.bytes_since(last));
    assert!(after.bytes < before.bytes);
    assert!(
        stream
            .ack(&Position::Lsn(cdc::Lsn(last.0 + 1_000_000)))
            .is_err(),
        "acknowledging past what was delivered is refused"
    );
    stream.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_and_drop_removes_the_slot_and_the_publication() -> Result<()> {
    let pg = Postgres::start()?;
    let admin = testkit::connect(&pg.url()).await?;
    admin
        .batch_execute("CREATE TABLE items (id bigint PRIMARY KEY); CREATE PUBLICATION unrelated FOR TABLE items")
        .await?;
    let stream = open(&pg, "splice_gone", &["public.items"]).await?;
    assert_eq!(
        leftovers(&admin).await?,
        (
            vec!["splice_gone".into()],
            vec!["splice_gone".into(), "unrelated".into()]
        )
    );
    stream.close_and_drop().await?;
    assert_eq!(leftovers(&admin).await?, (vec![], vec!["unrelated".into()]));

    // drop_capture does the same for a stream that is not running.
    let stream = open(&pg, "splice_gone", &["public.items"]).await?;
    stream.close().await?;
    cdc::drop_capture(&pg.url(), &cdc::CaptureName::for_migration("gone")?).await?;
    assert_eq!(leftovers(&admin).await?, (vec![], vec!["unrelated".into()]));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_identity_full_or_an_index_is_enough_for_a_table_without_primary_key() -> Result<()>
{
    let pg = Postgres::start()?;
    let admin = testkit::connect(&pg.url()).await?;
    admin
        .batch_execute(
            "CREATE TABLE full_row (a int, b text);
             ALTER TABLE full_row REPLICA IDENTITY FULL;
             CREATE TABLE by_index (code text NOT NULL, v int);
             CREATE UNIQUE INDEX by_index_code ON by_index (code);
             ALTER TABLE by_index REPLICA IDENTITY USING INDEX by_index_code;",
        )
        .await?;
    let mut stream = open(&pg, "splice_ident", &["public.full_row", "public.by_index"]).await?;
    admin
        .batch_execute(
            "INSERT INTO full_row VALUES (1, 'x');
             DELETE FROM full_row;
             INSERT INTO by_index VALUES ('k', 1);
             UPDATE by_index SET v = 2;",
        )
        .await?;
    let txn = next(&mut stream).await?;
    let c = &txn.changes;
    assert_eq!(c.len(), 4);
    let whole_row = vec![
        ("a".into(), Value::Int(1)),
        ("b".into(), Value::Text("x".into())),
    ];
    assert_eq!((c[0].op, &c[0].key), (Op::Insert, &whole_row));
    assert_eq!((c[1].op, &c[1].key), (Op::Delete, &whole_row));
    let code = vec![("code".into(), Value::Text("k".into()))];
    assert_eq!((c[2].op, &c[2].key), (Op::Insert, &code));
    assert_eq!((c[3].op, &c[3].key), (Op::Update, &code));
    assert_eq!(c[3].old_key, None);
    stream.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncate_names_the_table_without_a_key() -> Result<()> {
    let pg = Postgres::start()?;
    let admin = testkit::connect(&pg.url()).await?;
    admin
        .batch_execute("CREATE TABLE items (id bigint PRIMARY KEY); INSERT INTO items VALUES (1);")
        .await?;
    let mut stream = open(&pg, "splice_trunc", &["public.items"]).await?;
    admin.batch_execute("TRUNCATE items").await?;
    let txn = next(&mut stream).await?;
    assert_eq!(txn.changes.len(), 1);
    assert_eq!(txn.changes[0].op, Op::Truncate);
    assert_eq!(txn.changes[0].table, table("public.items"));
    assert!(txn.changes[0].key.is_empty());
    stream.close().await?;
    Ok(())
}

/// What a reopen decodes again runs to the WAL's end, not to the last acknowledgement: writes
/// the stream does not carry (as the applier's re-sync follows the changes it applied) count
/// toward a restart point. Measured to the acknowledgement, 10 MB of them after the last
/// captured change wrote none, and the next open decoded them all again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_after_the_last_captured_change_count_toward_a_restart_point() -> Result<()> {
    let pg = Postgres::start()?;
    let admin = testkit::connect(&pg.url()).await?;
    admin
        .batch_execute(
            "CREATE TABLE items (id bigint PRIMARY KEY, v int NOT NULL);
             CREATE TABLE bulk (id bigint, pad text)",
        )
        .await?;
    let mut stream = open(&pg, "splice_restart_end", &["public.items"]).await?;
    one_captured_row(&admin, &mut stream, 1).await?;
    admin
        .batch_execute(
            "INSERT INTO bulk SELECT g, repeat('x', 200) FROM generate_series(1, 40000) g",
        )
        .await?;
    let after_load: String = admin
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await?
        .get(0);
    assert!(
        stream.mark_restart_point().await?,
        "a restart point was written"
    );
    // The drain the engine runs after it: one captured row, read and acknowledged.
    one_captured_row(&admin, &mut stream, 2).await?;
    stream.close().await?;
    let past: bool = admin
        .query_one(
            "SELECT restart_lsn >= $2::text::pg_lsn FROM pg_replication_slots WHERE slot_name = $1",
            &[&"splice_restart_end", &after_load],
        )
        .await?
        .get(0);
    assert!(past, "the restart point moved past the load");
    Ok(())
}

/// Bytes a reopened stream on `slot` would decode again: from its restart point to its
/// confirmed position.
async fn restart_lag(admin: &tokio_postgres::Client, slot: &str) -> Result<i64> {
    Ok(admin
        .query_one(
            "SELECT (confirmed_flush_lsn - restart_lsn)::bigint FROM pg_replication_slots \
             WHERE slot_name = $1",
            &[&slot],
        )
        .await?
        .get(0))
}

/// Writes about 40 MB of WAL to `bulk` (not captured) in one transaction, then one captured
/// row to `items`, reads it and acknowledges it.
async fn bulk_load_then_one_captured_row(
    admin: &tokio_postgres::Client,
    stream: &mut cdc::PgChangeStream,
    id: i64,
) -> Result<()> {
    admin
        .batch_execute(
            "INSERT INTO bulk SELECT g, repeat('x', 200) FROM generate_series(1, 150000) g;
             TRUNCATE bulk",
        )
        .await?;
    one_captured_row(admin, stream, id).await
}

/// Inserts row `id` into `items` (captured), reads it from `stream` and acknowledges it.
async fn one_captured_row(
    admin: &tokio_postgres::Client,
    stream: &mut cdc::PgChangeStream,
    id: i64,
) -> Result<()> {
    admin
        .execute("INSERT INTO items VALUES ($1, 0)", &[&id])
        .await?;
    let txn = next(stream).await?;
    assert_eq!(ops(&txn), vec![(Op::Insert, id)]);
    stream.ack(&txn.position)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_point_keeps_a_reopened_stream_from_decoding_a_bulk_load_again() -> Result<()> {
    let pg = Postgres::start()?;
    let admin = testkit::connect(&pg.url()).await?;
    admin
        .batch_execute(
            "CREATE TABLE items (id bigint PRIMARY KEY, v int NOT NULL);
             CREATE TABLE bulk (id bigint, pad text);
             CREATE TABLE held (id bigint)",
        )
        .await?;

    // Without a restart point the slot's restart position stays before the load, so a reopen
    // decodes all of it again. (A transaction held open from before the load keeps it there
    // even if the server logs running transactions on its own meanwhile.)
    let mut stream = open(&pg, "splice_restart", &["public.items"]).await?;
    let holder = testkit::connect(&pg.url()).await?;
    holder
        .batch_execute("BEGIN; INSERT INTO held VALUES (0)")
        .await?;
    bulk_load_then_one_captured_row(&admin, &mut stream, 1).await?;
    stream.close().await?;
    holder.batch_execute("COMMIT").await?;
    let before = restart_lag(&admin, "splice_restart").await?;
    assert!(
        before > 16 << 20,
        "restart lag after a bulk load: {before} bytes"
    );

    // With one, written before the consumer's last drain, the restart point moves past it.
    let mut stream = open(&pg, "splice_restart", &["public.items"]).await?;
    bulk_load_then_one_captured_row(&admin, &mut stream, 2).await?;
    assert!(
        stream.mark_restart_point().await?,
        "a restart point was written"
    );
    // A second call before the drain writes nothing more.
    assert!(!stream.mark_restart_point().await?);
    one_captured_row(&admin, &mut stream, 3).await?;
    stream.close().await?;
    let after = restart_lag(&admin, "splice_restart").await?;
    assert!(
        after < 1 << 20,
        "restart lag after a restart point: {after} bytes"
    );

    // Nothing was lost on the way: the reopened stream gets exactly the next row.
    let mut stream = open(&pg, "splice_restart", &["public.items"]).await?;
    admin
        .execute("INSERT INTO items VALUES (4, 0)", &[])
        .await?;
    assert_eq!(ops(&next(&mut stream).await?), vec![(Op::Insert, 4)]);
    stream.close().await?;
    Ok(())
}
