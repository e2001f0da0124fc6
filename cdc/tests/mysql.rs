//! The MySQL/MariaDB binlog source against a real throwaway MariaDB 10.11: whole transactions
//! in commit order with their keys, resuming by slot, the applier marker, the preconditions
//! and their fixes, purged positions, lag.

use anyhow::{anyhow, Result};
use cdc::{
    marker_sql, BinlogPosition, CdcError, ChangeSource, MySqlChangeStream, MySqlSourceConfig, Op,
    Position, TableName, Transaction, Value,
};
use std::time::Duration;
use testkit::MariaDb;

/// How long a test waits for something that should arrive before it fails instead of hanging.
const HANG_GUARD: Duration = Duration::from_secs(60);

fn config(db: &MariaDb, slot: &str, tables: &[&str]) -> MySqlSourceConfig {
    MySqlSourceConfig::new(
        db.url(),
        slot,
        tables
            .iter()
            .map(|t| {
                let (schema, name) = t.split_once('.').expect("database.table");
                TableName::new(schema, name)
            })
            .collect(),
    )
}

async fn open(db: &MariaDb, slot: &str, tables: &[&str]) -> Result<MySqlChangeStream, CdcError> {
    MySqlChangeStream::open(config(db, slot, tables)).await
}

async fn next(stream: &mut MySqlChangeStream) -> Result<Transaction> {
    tokio::time::timeout(HANG_GUARD, stream.next_transaction())
        .await
        .map_err(|_| anyhow!("no transaction arrived"))??
        .ok_or_else(|| anyhow!("the stream ended"))
}

/// A transaction as (op, table, first key value, old first key value).
fn summary(txn: &Transaction) -> Vec<(Op, String, Value, Option<Value>)> {
    txn.changes
        .iter()
        .map(|c| {
            (
                c.op,
                c.table.to_string(),
                c.key.first().map(|(_, v)| v.clone()).unwrap_or(Value::Null),
                c.old_key
                    .as_ref()
                    .and_then(|k| k.first().map(|(_, v)| v.clone())),
            )
        })
        .collect()
}

fn int(i: i64) -> Value {
    Value::Int(i)
}

fn binlog(position: &Position) -> BinlogPosition {
    match position {
        Position::Binlog(p) => p.clone(),
        other => panic!("not a binlog position: {other}"),
    }
}

fn shop(db: &MariaDb) -> Result<()> {
    db.sql(
        "CREATE DATABASE shop; \
         CREATE TABLE shop.orders (id INT PRIMARY KEY, note VARCHAR(50)) ENGINE=InnoDB; \
         CREATE TABLE shop.other (id INT PRIMARY KEY) ENGINE=InnoDB",
    )?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_arrive_whole_in_commit_order_with_their_keys() -> Result<()> {
    let db = MariaDb::start()?;
    shop(&db)?;
    db.sql(
        "CREATE TABLE shop.lines (sku VARCHAR(20), n BIGINT UNSIGNED, at DATETIME(6), \
         qty INT, PRIMARY KEY (sku, n)) ENGINE=InnoDB",
    )?;
    let mut stream = open(&db, "t_order", &["shop.orders", "shop.lines"]).await?;
    assert!(stream.created_slot());
    db.sql("BEGIN; INSERT INTO shop.orders VALUES (1,'a'),(2,'b'),(3,'c'); COMMIT")?;
    db.sql(
        "BEGIN; UPDATE shop.orders SET note = 'B' WHERE id = 2; \
         UPDATE shop.orders SET id = 30 WHERE id = 3; INSERT INTO shop.other VALUES (1); COMMIT",
    )?;
    // Nothing captured: skipped, never delivered.
    db.sql("INSERT INTO shop.other VALUES (2)")?;
    db.sql("DELETE FROM shop.orders WHERE id = 1")?;
    db.sql(
        "INSERT INTO shop.lines VALUES ('ab-1', 18446744073709551615, \
         '2024-02-29 01:02:03.250000', 5)",
    )?;
    db.sql("TRUNCATE TABLE shop.orders")?;

    let t1 = next(&mut stream).await?;
    assert_eq!(
        summary(&t1),
        vec![
            (Op::Insert, "shop.orders".into(), int(1), None),
            (Op::Insert, "shop.orders".into(), int(2), None),
            (Op::Insert, "shop.orders".into(), int(3), None),
        ]
    );
    let t2 = next(&mut stream).await?;
    assert_eq!(
        summary(&t2),
        vec![
            (Op::Update, "shop.orders".into(), int(2), None),
            (Op::Update, "shop.orders".into(), int(30), Some(int(3))),
        ],
        "a whole transaction, the uncaptured table left out, the key change carried"
    );
    let t3 = next(&mut stream).await?;
    assert_eq!(
        summary(&t3),
        vec![(Op::Delete, "shop.orders".into(), int(1), None)]
    );
    let t4 = next(&mut stream).await?;
    assert_eq!(
        t4.changes[0].key,
        vec![
            ("sku".to_string(), Value::Text("ab-1".into())),
            ("n".to_string(), Value::Text("18446744073709551615".into())),
        ]
    );
    let t5 = next(&mut stream).await?;
    assert_eq!(
        summary(&t5),
        vec![(Op::Truncate, "shop.orders".into(), Value::Null, None)]
    );

    // Commit order, positions that grow, and MariaDB GTIDs counting up in domain 0.
    let positions: Vec<BinlogPosition> = [&t1, &t2, &t3, &t4, &t5]
        .iter()
        .map(|t| binlog(&t.position))
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    for (txn, position) in [&t1, &t2, &t3, &t4, &t5].iter().zip(&positions) {
        assert!(txn.changes.iter().all(|c| c.position == txn.position));
        assert!(position.gtid.starts_with("0-1-"), "{position}");
        assert_eq!(
            position.gtid,
            format!("0-1-{}", txn.source_id),
            "the GTID state after the transaction is its own GTID"
        );
    }
    let gtid_now = db.sql("SELECT @@gtid_binlog_pos")?;
    assert_eq!(positions[4].gtid, gtid_now);
    stream.close_and_drop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_and_resume_by_slot_continues_exactly() -> Result<()> {
    let db = MariaDb::start()?;
    shop(&db)?;
    let mut stream = open(&db, "t_resume", &["shop.orders"]).await?;
    for id in 1..=3 {
        db.sql(&format!("INSERT INTO shop.orders VALUES ({id}, 'x')"))?;
    }
    let t1 = next(&mut stream).await?;
    let t2 = next(&mut stream).await?;
    let t3 = next(&mut stream).await?;
    assert_eq!(summary(&t3)[0].2, int(3));
    // The consumer handled the first two only.
    stream.ack(&t2.position)?;
    assert!(
        stream.ack(&t1.position).is_ok(),
        "acknowledging older is harmless"
    );
    stream.close().await?;
    let stored = db.sql("SELECT CONCAT(binlog_file, ':', binlog_offset) FROM splice.cdc_slots WHERE slot = 't_resume'")?;
    let t2_at = binlog(&t2.position);
    assert_eq!(stored, format!("{}:{}", t2_at.file, t2_at.offset));

    db.sql("INSERT INTO shop.orders VALUES (4, 'x')")?;
    let mut again =
        MySqlChangeStream::open(config(&db, "t_resume", &["shop.orders"]).resume_only()).await?;
    assert!(!again.created_slot());
    let r1 = next(&mut again).await?;
    assert_eq!(
        summary(&r1),
        summary(&t3),
        "the first transaction not acknowledged comes again, nothing before it"
    );
    assert_eq!(r1.position, t3.position);
    let r2 = next(&mut again).await?;
    assert_eq!(summary(&r2)[0].2, int(4));
    again.ack(&r2.position)?;
    again.close().await?;

    // All acknowledged: the next run starts with what is written next.
    let mut third = open(&db, "t_resume", &["shop.orders"]).await?;
    db.sql("INSERT INTO shop.orders VALUES (5, 'x')")?;
    assert_eq!(summary(&next(&mut third).await?)[0].2, int(5));
    third.close_and_drop().await?;
    assert_eq!(db.sql("SELECT COUNT(*) FROM splice.cdc_slots")?, "0");

    let missing = MySqlChangeStream::open(config(&db, "t_resume", &["shop.orders"]).resume_only())
        .await
        .expect_err("a dropped slot is not re-created from now");
    assert!(matches!(missing, CdcError::SlotMissing { .. }), "{missing}");
    Ok(())
}

/// A consumer that acknowledges every transaction of a busy application does not add a
/// durable write of the slot's row for each: the writes are at least 200 ms apart, and a clean
/// stop still stores the last acknowledged position exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledging_every_transaction_writes_the_slot_a_few_times_a_second() -> Result<()> {
    let db = MariaDb::start()?;
    shop(&db)?;
    let updates = || -> Result<u64> {
        let row = db.sql("SHOW GLOBAL STATUS LIKE 'Com_update'")?;
        Ok(row.split_whitespace().last().unwrap_or("0").parse()?)
    };
    let mut stream = open(&db, "t_coalesce", &["shop.orders"]).await?;
    let before = updates()?;
    let started = std::time::Instant::now();
    let inserts: Vec<String> = (1..=300)
        .map(|id| format!("INSERT INTO shop.orders VALUES ({id}, 'x')"))
        .collect();
    db.sql(&inserts.join("; "))?;
    let mut last = None;
    for _ in 0..300 {
        let txn = next(&mut stream).await?;
        stream.ack(&txn.position)?;
        last = Some(txn.position);
    }
    let elapsed = started.elapsed();
    // The slot's writes are the only UPDATE statements here.
    let writes = updates()? - before;
    let bound = (elapsed.as_millis() / 200) as u64 + 2;
    assert!(
        writes <= bound,
        "{writes} writes of the slot's row in {elapsed:?} for 300 acknowledgements (at most {bound})"
    );
    stream.close().await?;
    let stored = db.sql(
        "SELECT CONCAT(binlog_file, ':', binlog_offset) FROM splice.cdc_slots WHERE slot = 't_coalesce'",
    )?;
    let last = binlog(&last.ok_or_else(|| anyhow!("nothing arrived"))?);
    assert_eq!(stored, format!("{}:{}", last.file, last.offset));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_marker_skips_the_appliers_transactions() -> Result<()> {
    let db = MariaDb::start()?;
    shop(&db)?;
    let mut stream = MySqlChangeStream::open(
        config(&db, "t_marker", &["shop.orders"]).skip_origin("splice_app"),
    )
    .await?;
    db.sql(&format!(
        "BEGIN; {}; INSERT INTO shop.orders VALUES (1, 'applier'); COMMIT",
        marker_sql("splice_app")
    ))?;
    db.sql(&format!(
        "BEGIN; INSERT INTO shop.orders VALUES (2, 'someone else'); {}; COMMIT",
        marker_sql("other_tool")
    ))?;
    db.sql("INSERT INTO shop.orders VALUES (3, 'application')")?;
    let first = next(&mut stream).await?;
    assert_eq!(
        summary(&first)[0].2,
        int(2),
        "the applier's transaction was skipped"
    );
    assert_eq!(first.origin.as_deref(), Some("other_tool"));
    let second = next(&mut stream).await?;
    assert_eq!(summary(&second)[0].2, int(3));
    assert_eq!(second.origin, None);
    stream.close_and_drop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_counts_bytes_and_the_age_of_what_waits() -> Result<()> {
    let db = MariaDb::start()?;
    shop(&db)?;
    let mut stream = open(&db, "t_lag", &["shop.orders"]).await?;
    db.sql("INSERT INTO shop.orders VALUES (1, 'x')")?;
    db.sql("INSERT INTO shop.orders VALUES (2, 'x')")?;
    next(&mut stream).await?;
    let last = next(&mut stream).await?;
    let before = stream.lag().await?;
    let acked = binlog(&before.acked_position);
    let source = binlog(&before.source_position);
    assert_eq!(before.bytes, source.offset - acked.offset);
    assert!(before.bytes > 0);
    assert!(before.behind > Duration::ZERO, "two commits wait");
    stream.ack(&last.position)?;
    let after = stream.lag().await?;
    assert_eq!(after.behind, Duration::ZERO);
    assert_eq!(after.acked_position, last.position);
    assert!(after.bytes < before.bytes);
    // Past what was delivered: refused.
    let mut beyond = binlog(&last.position);
    beyond.offset += 1_000_000;
    assert!(stream.ack(&Position::Binlog(beyond)).is_err());
    stream.close_and_drop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purged_position_is_refused_never_skipped() -> Result<()> {
    let db = MariaDb::start()?;
    shop(&db)?;
    let mut stream = open(&db, "t_purge", &["shop.orders"]).await?;
    db.sql("INSERT INTO shop.orders VALUES (1, 'x')")?;
    let t = next(&mut stream).await?;
    stream.ack(&t.position)?;
    stream.close().await?;
    // Changes the slot has not read, then the binlog holding them goes away.
    db.sql("INSERT INTO shop.orders VALUES (2, 'lost')")?;
    db.sql("FLUSH BINARY LOGS")?;
    let current = db.sql("SHOW MASTER STATUS")?;
    let current = current.split('\t').next().unwrap_or_default().to_string();
    // A file becomes purgeable once MariaDB's binlog checkpoint has moved past it (its
    // background thread writes it soon after the rotation) and no reader has it open (close
    // killed the dump thread; the server reaps it on its own time): purge until it is gone.
    let deadline = std::time::Instant::now() + HANG_GUARD;
    loop {
        db.sql(&format!("PURGE BINARY LOGS TO '{current}'"))?;
        if !db
            .sql("SHOW BINARY LOGS")?
            .contains(&binlog(&t.position).file)
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server never purged the file"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let err = open(&db, "t_purge", &["shop.orders"])
        .await
        .expect_err("resuming past purged changes is refused");
    assert!(matches!(err, CdcError::PositionPurged { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("binlog_expire_logs_seconds") && text.contains("t_purge"),
        "{text}"
    );
    // Refused again, and the stored position did not move.
    let stored = db.sql("SELECT binlog_file FROM splice.cdc_slots WHERE slot = 't_purge'")?;
    assert_eq!(stored, binlog(&t.position).file);
    assert!(matches!(
        open(&db, "t_purge", &["shop.orders"]).await,
        Err(CdcError::PositionPurged { .. })
    ));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_precondition_failure_names_its_fix_and_leaves_nothing_behind() -> Result<()> {
    let db = MariaDb::start()?;
    shop(&db)?;
    db.sql(
        "CREATE TABLE shop.nokey (id INT) ENGINE=InnoDB; \
         CREATE TABLE shop.enumkey (k ENUM('a','b') PRIMARY KEY) ENGINE=InnoDB; \
         CREATE VIEW shop.v AS SELECT id FROM shop.orders",
    )?;
    async fn refused(db: &MariaDb, tables: &[&str]) -> String {
        match open(db, "t_pre", tables).await {
            Ok(_) => panic!("open should have been refused"),
            Err(e) => {
                assert!(e.to_string().len() > 20);
                e.to_string()
            }
        }
    }
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "SET GLOBAL binlog_format = 'STATEMENT'",
            "SET GLOBAL binlog_format = 'ROW'",
            &[
                "binlog_format is STATEMENT",
                "SET GLOBAL binlog_format = 'ROW'",
            ],
        ),
        (
            "SET GLOBAL binlog_format = 'MIXED'",
            "SET GLOBAL binlog_format = 'ROW'",
            &["binlog_format is MIXED"],
        ),
        (
            "SET GLOBAL binlog_row_image = 'MINIMAL'",
            "SET GLOBAL binlog_row_image = 'FULL'",
            &[
                "binlog_row_image is MINIMAL",
                "SET GLOBAL binlog_row_image = 'FULL'",
            ],
        ),
        (
            "SET GLOBAL binlog_expire_logs_seconds = 3600",
            "SET GLOBAL binlog_expire_logs_seconds = 0",
            &[
                "binlog_expire_logs_seconds",
                "SET GLOBAL binlog_expire_logs_seconds = 604800",
            ],
        ),
    ];
    for (break_it, fix_it, expected) in cases {
        db.sql(break_it)?;
        let text = refused(&db, &["shop.orders"]).await;
        for part in *expected {
            assert!(text.contains(part), "{break_it}: {text}");
        }
        db.sql(fix_it)?;
    }
    let text = refused(&db, &["shop.nokey"]).await;
    assert!(
        text.contains("no primary key") && text.contains("ADD PRIMARY KEY"),
        "{text}"
    );
    let text = refused(&db, &["shop.enumkey"]).await;
    assert!(
        text.contains("enum('a','b')") && text.contains("cannot carry"),
        "{text}"
    );
    let text = refused(&db, &["shop.missing"]).await;
    assert!(text.contains("does not exist"), "{text}");
    let text = refused(&db, &["shop.v"]).await;
    assert!(text.contains("view"), "{text}");

    // A user without the replication grants.
    db.sql(
        "CREATE USER app@'%' IDENTIFIED BY 'pw'; GRANT ALL ON shop.* TO app@'%'; \
         GRANT ALL ON splice.* TO app@'%'",
    )?;
    let as_app = |db: &MariaDb| {
        MySqlSourceConfig::new(
            db.url_as("app", "pw"),
            "t_pre",
            vec![TableName::new("shop", "orders")],
        )
    };
    let err = MySqlChangeStream::open(as_app(&db))
        .await
        .expect_err("no REPLICATION SLAVE");
    assert!(
        err.to_string()
            .contains("GRANT REPLICATION SLAVE ON *.* TO 'app'@'%'"),
        "{err}"
    );
    db.sql("GRANT REPLICATION SLAVE ON *.* TO app@'%'")?;
    let err = MySqlChangeStream::open(as_app(&db))
        .await
        .expect_err("no BINLOG MONITOR");
    assert!(
        err.to_string()
            .contains("GRANT BINLOG MONITOR ON *.* TO 'app'@'%'"),
        "{err}"
    );
    db.sql("GRANT BINLOG MONITOR ON *.* TO app@'%'")?;

    // Nothing was created by any refused start.
    assert_eq!(
        db.sql("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'splice'")?,
        "0"
    );
    // With every grant the start succeeds.
    let stream = MySqlChangeStream::open(as_app(&db)).await?;
    stream.close_and_drop().await?;

    // A server without a binlog.
    let plain = MariaDb::builder().without_binlog().start()?;
    let err = open(&plain, "t_pre", &[]).await.expect_err("no binlog");
    assert!(err.to_string().contains("log_bin=mysql-bin"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_logging_statements_stops_the_stream_with_the_fix() -> Result<()> {
    let db = MariaDb::start()?;
    shop(&db)?;
    let mut stream = open(&db, "t_stmt", &["shop.orders"]).await?;
    // A statement inside a row-based transaction that is not a row change passes.
    db.sql("INSERT INTO shop.other VALUES (1), (2)")?;
    db.sql("CREATE TABLE shop.copy ENGINE=InnoDB AS SELECT * FROM shop.other")?;
    db.sql("INSERT INTO shop.orders VALUES (1, 'row')")?;
    db.sql("SET SESSION binlog_format = 'STATEMENT'; BEGIN; INSERT INTO shop.orders VALUES (2, 'stmt'); COMMIT")?;
    let t = next(&mut stream).await?;
    assert_eq!(summary(&t)[0].2, int(1));
    let err = tokio::time::timeout(HANG_GUARD, stream.next_transaction())
        .await?
        .expect_err("a statement-logged transaction cannot be followed");
    assert!(matches!(err, CdcError::StatementLogged { .. }), "{err}");
    assert!(
        err.to_string().contains("SET GLOBAL binlog_format = 'ROW'"),
        "{err}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_has_one_reader_at_a_time() -> Result<()> {
    let db = MariaDb::start()?;
    shop(&db)?;
    let first = open(&db, "t_busy", &["shop.orders"]).await?;
    let err = open(&db, "t_busy", &["shop.orders"])
        .await
        .expect_err("in use");
    assert!(matches!(err, CdcError::BinlogSlotInUse { .. }), "{err}");
    assert!(err.to_string().contains("--slot"), "{err}");
    first.close().await?;
    let second = open(&db, "t_busy", &["shop.orders"]).await?;
    second.close_and_drop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_mode_in_the_url_encrypts_and_checks_the_certificate() -> Result<()> {
    let db = MariaDb::builder().tls_only().start()?;
    shop(&db)?;
    let ca = db
        .ca_cert_path()
        .ok_or_else(|| anyhow!("a TLS server has a CA"))?
        .display()
        .to_string();
    let with = |query: &str| {
        MySqlSourceConfig::new(
            format!("{}?{query}", db.url()),
            "t_tls",
            vec![TableName::new("shop", "orders")],
        )
    };
    // Without TLS the server refuses the session (MariaDB answers "access denied").
    let err = MySqlChangeStream::open(with("ssl-mode=DISABLED"))
        .await
        .expect_err("the server requires TLS");
    assert!(err.to_string().contains("connecting to MySQL"), "{err}");
    for (id, query) in [
        (1, "ssl-mode=REQUIRED".to_string()),
        (2, format!("ssl-mode=VERIFY_IDENTITY&ssl-ca={ca}")),
    ] {
        let mut stream = MySqlChangeStream::open(with(&query)).await?;
        db.sql(&format!("INSERT INTO shop.orders VALUES ({id}, 'tls')"))?;
        let txn = next(&mut stream).await?;
        assert_eq!(summary(&txn)[0].2, int(id), "{query}");
        stream.ack(&txn.position)?;
        stream.close_and_drop().await?;
    }
    // A CA that did not sign the server's certificate: refused.
    let other = testkit::TestCa::generate("another CA")?;
    let other_path =
        std::env::temp_dir().join(format!("splice-other-ca-{}.pem", std::process::id()));
    other.write_cert(&other_path)?;
    let err = MySqlChangeStream::open(with(&format!(
        "ssl-mode=VERIFY_CA&ssl-ca={}",
        other_path.display()
    )))
    .await
    .expect_err("an unknown issuer is refused");
    let _ = std::fs::remove_file(&other_path);
    assert!(
        err.to_string().to_lowercase().contains("certificate")
            || err.to_string().contains("issuer"),
        "{err}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xa_transactions_elsewhere_pass_and_on_a_captured_table_stop_the_stream() -> Result<()> {
    let db = MariaDb::start()?;
    shop(&db)?;
    let mut stream = open(&db, "t_xa", &["shop.orders"]).await?;
    db.sql(
        "XA START 'a'; INSERT INTO shop.other VALUES (1); XA END 'a'; XA PREPARE 'a'; \
         XA COMMIT 'a'",
    )?;
    db.sql("INSERT INTO shop.orders VALUES (1, 'after xa')")?;
    let t = next(&mut stream).await?;
    assert_eq!(
        summary(&t)[0].2,
        int(1),
        "XA on an uncaptured table is skipped"
    );
    db.sql(
        "XA START 'b'; INSERT INTO shop.orders VALUES (2, 'xa'); XA END 'b'; XA PREPARE 'b'; \
         XA COMMIT 'b'",
    )?;
    let err = tokio::time::timeout(HANG_GUARD, stream.next_transaction())
        .await?
        .expect_err("XA on a captured table is not followed");
    assert!(err.to_string().contains("XA transaction"), "{err}");
    Ok(())
}
