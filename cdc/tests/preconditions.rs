//! Each precondition fails before anything is created, with a message that names the fix.

mod common;

use anyhow::Result;
use cdc::{CdcError, ChangeSource, PgChangeStream};
use common::*;
use testkit::Postgres;

/// Open a stream that must fail; return its error.
async fn open_err(config: cdc::PgSourceConfig) -> CdcError {
    match PgChangeStream::open(config).await {
        Ok(_) => panic!("the stream opened although a precondition fails"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn wal_level_replica_is_refused_with_the_setting_to_change() -> Result<()> {
    let pg = Postgres::builder()
        .setting("wal_level", "replica")
        .start()?;
    let admin = testkit::connect(&pg.url()).await?;
    admin
        .batch_execute("CREATE TABLE items (id int PRIMARY KEY)")
        .await?;
    let err = open_err(config(&pg, "splice_wal", &["public.items"])).await;
    assert!(matches!(err, CdcError::WalLevelNotLogical { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("wal_level is replica"), "{message}");
    assert!(message.contains("set wal_level=logical"), "{message}");
    assert!(message.contains("restart"), "{message}");
    assert_eq!(leftovers(&admin).await?, (vec![], vec![]));
    Ok(())
}

#[tokio::test]
async fn no_free_replication_slot_is_refused_and_leaves_nothing_behind() -> Result<()> {
    let pg = Postgres::builder()
        .setting("max_replication_slots", "1")
        .start()?;
    let admin = testkit::connect(&pg.url()).await?;
    admin
        .batch_execute("CREATE TABLE items (id int PRIMARY KEY)")
        .await?;
    admin
        .batch_execute("SELECT pg_create_logical_replication_slot('someone_elses', 'pgoutput')")
        .await?;
    let err = open_err(config(&pg, "splice_slots", &["public.items"])).await;
    assert!(
        matches!(err, CdcError::NoFreeReplicationSlot { .. }),
        "{err}"
    );
    let message = err.to_string();
    assert!(message.contains("max_replication_slots=1"), "{message}");
    assert!(message.contains("pg_drop_replication_slot"), "{message}");
    assert!(message.contains("raise max_replication_slots"), "{message}");
    assert_eq!(
        leftovers(&admin).await?,
        (vec!["someone_elses".into()], vec![]),
        "no publication or slot was created"
    );
    Ok(())
}

#[tokio::test]
async fn no_free_wal_sender_is_refused_with_the_setting_to_raise() -> Result<()> {
    let pg = Postgres::builder()
        .setting("max_wal_senders", "1")
        .start()?;
    let admin = testkit::connect(&pg.url()).await?;
    admin
        .batch_execute("CREATE TABLE items (id int PRIMARY KEY)")
        .await?;
    // The one WAL sender is busy with another stream.
    let busy = open(&pg, "splice_busy", &["public.items"]).await?;
    let err = open_err(config(&pg, "splice_second", &["public.items"])).await;
    assert!(matches!(err, CdcError::NoFreeWalSender { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("max_wal_senders=1"), "{message}");
    assert!(message.contains("raise max_wal_senders"), "{message}");
    assert_eq!(
        leftovers(&admin).await?,
        (vec!["splice_busy".into()], vec!["splice_busy".into()])
    );
    busy.close().await?;
    Ok(())
}

#[tokio::test]
async fn a_role_without_replication_is_told_the_grant_to_run() -> Result<()> {
    let pg = Postgres::start()?;
    let admin = testkit::connect(&pg.url()).await?;
    admin
        .batch_execute(
            "CREATE ROLE app LOGIN;
             CREATE TABLE items (id int PRIMARY KEY);
             ALTER TABLE items OWNER TO app;",
        )
        .await?;
    let mut cfg = config(&pg, "splice_role", &["public.items"]);
    cfg.database_url = pg.url_as("app", "postgres");
    let err = open_err(cfg).await;
    assert!(
        matches!(err, CdcError::MissingReplicationPrivilege { .. }),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains("ALTER ROLE \"app\" WITH REPLICATION"),
        "{message}"
    );
    assert_eq!(leftovers(&admin).await?, (vec![], vec![]));
    Ok(())
}

#[tokio::test]
async fn a_table_without_primary_key_or_replica_identity_is_refused() -> Result<()> {
    let pg = Postgres::start()?;
    let admin = testkit::connect(&pg.url()).await?;
    admin
        .batch_execute(
            "CREATE TABLE keyed (id int PRIMARY KEY);
             CREATE TABLE loose (v text);
             CREATE TABLE nothing (id int PRIMARY KEY);
             ALTER TABLE nothing REPLICA IDENTITY NOTHING;",
        )
        .await?;
    for bad in ["public.loose", "public.nothing"] {
        let err = open_err(config(&pg, "splice_key", &["public.keyed", bad])).await;
        assert!(matches!(err, CdcError::NoReplicaIdentity { .. }), "{err}");
        let message = err.to_string();
        assert!(message.contains(bad), "{message}");
        assert!(message.contains("add a primary key"), "{message}");
        assert!(
            message.contains("REPLICA IDENTITY USING INDEX"),
            "{message}"
        );
        assert!(message.contains("REPLICA IDENTITY FULL"), "{message}");
    }
    assert_eq!(leftovers(&admin).await?, (vec![], vec![]));
    Ok(())
}

#[tokio::test]
async fn a_missing_table_is_named() -> Result<()> {
    let pg = Postgres::start()?;
    let admin = testkit::connect(&pg.url()).await?;
    let err = open_err(config(&pg, "splice_missing", &["public.nowhere"])).await;
    assert!(matches!(err, CdcError::TableMissing { .. }), "{err}");
    assert!(
        err.to_string().contains("public.nowhere does not exist"),
        "{err}"
    );
    assert_eq!(leftovers(&admin).await?, (vec![], vec![]));
    Ok(())
}

#[tokio::test]
async fn a_slot_in_use_by_another_stream_is_refused() -> Result<()> {
    let pg = Postgres::start()?;
    let admin = testkit::connect(&pg.url()).await?;
    admin
        .batch_execute("CREATE TABLE items (id int PRIMARY KEY)")
        .await?;
    let first = open(&pg, "splice_twice", &["public.items"]).await?;
    let err = open_err(config(&pg, "splice_twice", &["public.items"])).await;
    assert!(matches!(err, CdcError::SlotInUse { .. }), "{err}");
    assert!(err.to_string().contains("stop that consumer"), "{err}");
    first.close().await?;
    Ok(())
}

#[tokio::test]
async fn a_start_that_fails_after_creating_the_publication_drops_it_again() -> Result<()> {
    let pg = Postgres::start()?;
    let admin = testkit::connect(&pg.url()).await?;
    admin
        .batch_execute(
            "CREATE ROLE app LOGIN REPLICATION;
             GRANT CREATE ON DATABASE postgres TO app;
             CREATE TABLE items (id int PRIMARY KEY);
             ALTER TABLE items OWNER TO app;
             ALTER ROLE app SET statement_timeout = '300ms';",
        )
        .await?;
    // Creating a logical slot waits for running transactions to finish; one that holds an xid
    // makes it run into the role's statement timeout, after the publication was created.
    let holder = testkit::connect(&pg.url()).await?;
    holder
        .batch_execute("BEGIN; SELECT txid_current();")
        .await?;
    let mut cfg = config(&pg, "splice_half", &["public.items"]);
    cfg.database_url = pg.url_as("app", "postgres");
    let err = open_err(cfg).await;
    assert!(
        err.to_string().contains("creating replication slot"),
        "{err}"
    );
    assert_eq!(
        leftovers(&admin).await?,
        (vec![], vec![]),
        "nothing left behind"
    );
    holder.batch_execute("COMMIT").await?;
    Ok(())
}
