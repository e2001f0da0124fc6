//! Shared pieces of the cdc integration tests: a stream with test settings, and reading with a
//! hang guard (a guard, not an assertion on time). A SQL session is `testkit::connect`.

#![allow(dead_code)]

use anyhow::{anyhow, Result};
use cdc::{CaptureName, ChangeSource, Op, PgChangeStream, PgSourceConfig, TableName, Transaction};
use std::time::Duration;
use testkit::Postgres;

/// How long a test waits for something that should arrive before it fails instead of hanging.
pub const HANG_GUARD: Duration = Duration::from_secs(60);

pub fn table(name: &str) -> TableName {
    TableName::parse(name).expect("test table names are valid")
}

pub fn config(pg: &Postgres, name: &str, tables: &[&str]) -> PgSourceConfig {
    PgSourceConfig::new(
        pg.url(),
        CaptureName::exact(name).expect("test slot names are valid"),
        tables.iter().map(|t| table(t)).collect(),
    )
}

pub async fn open(pg: &Postgres, name: &str, tables: &[&str]) -> Result<PgChangeStream> {
    Ok(PgChangeStream::open(config(pg, name, tables)).await?)
}

/// The next transaction, failing the test if none arrives.
pub async fn next(stream: &mut PgChangeStream) -> Result<Transaction> {
    tokio::time::timeout(HANG_GUARD, stream.next_transaction())
        .await
        .map_err(|_| anyhow!("no transaction arrived"))??
        .ok_or_else(|| anyhow!("the stream ended"))
}

/// Whether a transaction arrives within `wait` (for "nothing more arrives" checks).
pub async fn maybe_next(
    stream: &mut PgChangeStream,
    wait: Duration,
) -> Result<Option<Transaction>> {
    match tokio::time::timeout(wait, stream.next_transaction()).await {
        Err(_) => Ok(None),
        Ok(result) => Ok(result?),
    }
}

/// A transaction as (op, integer id) pairs, for comparing with what the test wrote.
pub fn ops(txn: &Transaction) -> Vec<(Op, i64)> {
    txn.changes
        .iter()
        .map(|c| {
            let id = match c.key.first() {
                Some((_, cdc::Value::Int(i))) => *i,
                _ => -1,
            };
            (c.op, id)
        })
        .collect()
}

/// The slot's confirmed position, as the server has it.
pub async fn confirmed_flush(
    client: &tokio_postgres::Client,
    slot: &str,
) -> Result<Option<cdc::Lsn>> {
    let row = client
        .query_opt(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await?;
    match row.and_then(|r| r.get::<_, Option<String>>(0)) {
        Some(text) => Ok(Some(text.parse()?)),
        None => Ok(None),
    }
}

/// Wait until no process holds the slot (a dropped stream's walsender has exited).
pub async fn wait_slot_released(client: &tokio_postgres::Client, slot: &str) -> Result<()> {
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    loop {
        let active: bool = client
            .query_one(
                "SELECT coalesce(bool_or(active), false) FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await?
            .get(0);
        if !active {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(anyhow!("slot {slot} still active"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Slots and publications on the server, for "nothing left behind" checks.
pub async fn leftovers(client: &tokio_postgres::Client) -> Result<(Vec<String>, Vec<String>)> {
    let slots = client
        .query(
            "SELECT slot_name::text FROM pg_replication_slots ORDER BY 1",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let pubs = client
        .query("SELECT pubname::text FROM pg_publication ORDER BY 1", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok((slots, pubs))
}
