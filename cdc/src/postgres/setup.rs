//! Everything done on an ordinary SQL connection: the preconditions checked before a stream
//! starts, the publication and slot it needs, each table's key columns, and dropping it all.

use crate::change::{quote_ident, TableName};
use crate::error::{describe_pg_error, CdcError};
use crate::lsn::Lsn;
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// Slot and publication share one name: `splice_<migration>` for the engine, `splice_tail` for
/// `splice cdc tail` unless told otherwise.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CaptureName(String);

impl CaptureName {
    /// `splice_<migration>`, with anything but lowercase letters, digits and `_` replaced by
    /// `_` and the whole cut to PostgreSQL's 63-byte identifier limit.
    pub fn for_migration(migration: &str) -> Result<CaptureName, CdcError> {
        let cleaned: String = migration
            .chars()
            .map(|c| c.to_ascii_lowercase())
            .map(|c| {
                if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if cleaned.is_empty() {
            return Err(CdcError::InvalidName {
                name: migration.to_string(),
            });
        }
        let mut name = format!("splice_{cleaned}");
        name.truncate(63);
        CaptureName::exact(&name)
    }

    /// Exactly this name, which must be a valid slot name (1–63 of `[a-z0-9_]`).
    pub fn exact(name: &str) -> Result<CaptureName, CdcError> {
        let valid = !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid {
            return Err(CdcError::InvalidName {
                name: name.to_string(),
            });
        }
        Ok(CaptureName(name.to_string()))
    }

    /// The logical replication slot's name.
    pub fn slot(&self) -> &str {
        &self.0
    }

    /// The publication's name (the same as the slot's).
    pub fn publication(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for CaptureName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A table the stream captures, with the columns that make its key.
#[derive(Clone, Debug)]
pub(crate) struct CapturedTable {
    pub table: TableName,
    pub key: Vec<String>,
}

/// What an existing slot looks like.
#[derive(Clone, Debug)]
pub(crate) struct SlotState {
    pub confirmed_flush: Lsn,
}

/// Every server-wide precondition the streams named `names` need, checked without creating
/// anything: logical WAL, a role allowed to replicate, a free slot for each of them that does
/// not exist yet, a free WAL sender (unless one of them is streaming now). Returns each failing
/// one (its message names the fix), so a planner can report them all before a stream would
/// fail on the first.
pub async fn capture_preconditions(
    client: &Client,
    names: &[CaptureName],
) -> Result<Vec<CdcError>, CdcError> {
    let mut problems = Vec::new();
    problems.extend(wal_level_problem(client).await?);
    problems.extend(role_problem(client).await?);
    let mut missing = 0;
    let mut streaming = false;
    for name in names {
        let row = client
            .query_opt(
                "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1",
                &[&name.slot()],
            )
            .await
            .map_err(|e| CdcError::db("looking up the replication slot", &e))?;
        match row {
            Some(r) => streaming |= r.get::<_, Option<i32>>(0).is_some(),
            None => missing += 1,
        }
    }
    problems.extend(free_slot_problem(client, missing).await?);
    if !streaming {
        problems.extend(wal_sender_problem(client).await?);
    }
    Ok(problems)
}

/// The server-wide preconditions: logical WAL, a role allowed to replicate, a free slot (unless
/// ours exists and is idle) and a free WAL sender. Returns our slot if it exists.
pub(crate) async fn check_server(
    client: &Client,
    name: &CaptureName,
) -> Result<Option<SlotState>, CdcError> {
    if let Some(problem) = wal_level_problem(client).await? {
        return Err(problem);
    }
    if let Some(problem) = role_problem(client).await? {
        return Err(problem);
    }
    let slot = client
        .query_opt(
            "SELECT s.plugin::text, s.slot_type, s.database::text, s.active_pid, \
                    s.confirmed_flush_lsn::text, current_database()::text, s.wal_status \
             FROM pg_replication_slots s WHERE s.slot_name = $1",
            &[&name.slot()],
        )
        .await
        .map_err(|e| CdcError::db("looking up the replication slot", &e))?;
    let existing = match slot {
        Some(row) => {
            let plugin: Option<String> = row.get(0);
            let slot_type: String = row.get(1);
            let database: Option<String> = row.get(2);
            let active_pid: Option<i32> = row.get(3);
            let confirmed: Option<String> = row.get(4);
            let current_db: String = row.get(5);
            let mismatch = |what: String| CdcError::SlotMismatch {
                slot: name.slot().to_string(),
                what,
            };
            if slot_type != "logical" {
                return Err(mismatch(format!("it is a {slot_type} slot")));
            }
            if plugin.as_deref() != Some("pgoutput") {
                return Err(mismatch(format!(
                    "its plugin is {}",
                    plugin.unwrap_or_default()
                )));
            }
            if database.as_deref() != Some(current_db.as_str()) {
                return Err(mismatch(format!(
                    "it belongs to database {}",
                    database.unwrap_or_default()
                )));
            }
            // The server removed WAL the slot still needed (max_slot_wal_keep_size): what was
            // in it is gone for good.
            let wal_status: Option<String> = row.get(6);
            if wal_status.as_deref() == Some("lost") {
                return Err(CdcError::SlotInvalidated {
                    slot: name.slot().to_string(),
                });
            }
            if let Some(pid) = active_pid {
                return Err(CdcError::SlotInUse {
                    slot: name.slot().to_string(),
                    pid,
                });
            }
            let confirmed_flush = confirmed
                .as_deref()
                .unwrap_or("0/0")
                .parse::<Lsn>()
                .map_err(|e| CdcError::Protocol(format!("slot {}: {e}", name.slot())))?;
            Some(SlotState { confirmed_flush })
        }
        None => {
            if let Some(problem) = free_slot_problem(client, 1).await? {
                return Err(problem);
            }
            None
        }
    };

    if let Some(problem) = wal_sender_problem(client).await? {
        return Err(problem);
    }
    Ok(existing)
}

async fn wal_level_problem(client: &Client) -> Result<Option<CdcError>, CdcError> {
    let wal_level: String = query_one(client, "reading wal_level", "SHOW wal_level", &[]).await?;
    Ok((wal_level != "logical").then_some(CdcError::WalLevelNotLogical { current: wal_level }))
}

async fn role_problem(client: &Client) -> Result<Option<CdcError>, CdcError> {
    let row = client
        .query_one(
            // Managed platforms grant replication through role membership (RDS and Aurora:
            // rds_replication), not only through the REPLICATION attribute.
            "SELECT current_user::text, rolsuper, rolreplication OR EXISTS ( \
                 SELECT 1 FROM pg_roles g WHERE g.rolname = 'rds_replication' \
                 AND pg_has_role(current_user, g.oid, 'MEMBER')) \
             FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .map_err(|e| CdcError::db("reading the role's privileges", &e))?;
    let (role, superuser, replication): (String, bool, bool) = (row.get(0), row.get(1), row.get(2));
    Ok(
        (!superuser && !replication).then(|| CdcError::MissingReplicationPrivilege {
            role: quote_ident(&role),
        }),
    )
}

/// `needed` more slots than exist now would not fit under max_replication_slots.
async fn free_slot_problem(client: &Client, needed: i64) -> Result<Option<CdcError>, CdcError> {
    if needed == 0 {
        return Ok(None);
    }
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM pg_replication_slots), \
                    current_setting('max_replication_slots')::int8",
            &[],
        )
        .await
        .map_err(|e| CdcError::db("counting replication slots", &e))?;
    let (used, max): (i64, i64) = (row.get(0), row.get(1));
    Ok((used + needed > max).then_some(CdcError::NoFreeReplicationSlot { used, max }))
}

async fn wal_sender_problem(client: &Client) -> Result<Option<CdcError>, CdcError> {
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender'), \
                    current_setting('max_wal_senders')::int8",
            &[],
        )
        .await
        .map_err(|e| CdcError::db("counting WAL senders", &e))?;
    let (used, max): (i64, i64) = (row.get(0), row.get(1));
    Ok((used >= max).then_some(CdcError::NoFreeWalSender { used, max }))
}

/// Check that `table` exists, is an ordinary table, and has a key changes can carry; return
/// its key columns: the primary key, or the replica identity index's columns, or (identity
/// FULL without a primary key) every column.
pub(crate) async fn check_table(
    client: &Client,
    table: &TableName,
) -> Result<CapturedTable, CdcError> {
    let row = client
        .query_opt(
            "SELECT c.oid, c.relkind::text, c.relreplident::text \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2",
            &[&table.schema, &table.name],
        )
        .await
        .map_err(|e| CdcError::db(format!("looking up table {table}"), &e))?;
    let Some(row) = row else {
        return Err(CdcError::TableMissing {
            table: table.clone(),
        });
    };
    let (oid, kind, ident): (u32, String, String) = (row.get(0), row.get(1), row.get(2));
    if kind != "r" {
        let kind = match kind.as_str() {
            "v" => "view",
            "m" => "materialized view",
            "p" => "partitioned table",
            "f" => "foreign table",
            "i" | "I" => "index",
            "S" => "sequence",
            _ => "relation of another kind",
        };
        return Err(CdcError::NotATable {
            table: table.clone(),
            kind: kind.to_string(),
        });
    }
    let primary = index_columns(client, oid, "indisprimary").await?;
    let key = match ident.as_str() {
        "d" => primary,
        "i" => index_columns(client, oid, "indisreplident").await?,
        "f" if !primary.is_empty() => primary,
        "f" => {
            let rows = client
                .query(
                    "SELECT attname::text FROM pg_attribute \
                     WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                    &[&oid],
                )
                .await
                .map_err(|e| CdcError::db(format!("reading the columns of {table}"), &e))?;
            rows.iter().map(|r| r.get(0)).collect()
        }
        _ => Vec::new(),
    };
    if key.is_empty() {
        return Err(CdcError::NoReplicaIdentity {
            table: table.clone(),
            quoted: table.quoted(),
        });
    }
    Ok(CapturedTable {
        table: table.clone(),
        key,
    })
}

/// The columns of the table's primary key (`flag` = `indisprimary`) or replica identity index
/// (`indisreplident`), in index order.
async fn index_columns(client: &Client, oid: u32, flag: &str) -> Result<Vec<String>, CdcError> {
    let sql = format!(
        "SELECT a.attname::text \
         FROM pg_index i \
         CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) \
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
         WHERE i.indrelid = $1 AND i.{flag} ORDER BY k.ord"
    );
    let rows = client
        .query(&sql, &[&oid])
        .await
        .map_err(|e| CdcError::db("reading key columns", &e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Create the publication for `tables`, or add the missing ones to it. Returns whether it was
/// created (and so should be dropped if the start fails).
pub(crate) async fn ensure_publication(
    client: &Client,
    name: &CaptureName,
    tables: &[TableName],
) -> Result<bool, CdcError> {
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_publication WHERE pubname = $1",
            &[&name.publication()],
        )
        .await
        .map_err(|e| CdcError::db("looking up the publication", &e))?
        .is_some();
    if !exists {
        let list: Vec<String> = tables.iter().map(TableName::quoted).collect();
        let sql = format!(
            "CREATE PUBLICATION {} FOR TABLE {}",
            quote_ident(name.publication()),
            list.join(", ")
        );
        client
            .batch_execute(&sql)
            .await
            .map_err(|e| publication_error(name, &e))?;
        return Ok(true);
    }
    for table in tables {
        add_to_publication(client, name, table).await?;
    }
    Ok(false)
}

/// `ALTER PUBLICATION … ADD TABLE` unless the table is already in it.
pub(crate) async fn add_to_publication(
    client: &Client,
    name: &CaptureName,
    table: &TableName,
) -> Result<(), CdcError> {
    let present = client
        .query_opt(
            "SELECT 1 FROM pg_publication_tables \
             WHERE pubname = $1 AND schemaname = $2 AND tablename = $3",
            &[&name.publication(), &table.schema, &table.name],
        )
        .await
        .map_err(|e| CdcError::db("reading the publication's tables", &e))?
        .is_some();
    if present {
        return Ok(());
    }
    let sql = format!(
        "ALTER PUBLICATION {} ADD TABLE {}",
        quote_ident(name.publication()),
        table.quoted()
    );
    client
        .batch_execute(&sql)
        .await
        .map_err(|e| publication_error(name, &e))
}

fn publication_error(name: &CaptureName, e: &tokio_postgres::Error) -> CdcError {
    let mut detail = describe_pg_error(e);
    if e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) {
        detail.push_str(
            "; a publication needs the CREATE privilege on the database and ownership of \
             the tables (or superuser): GRANT CREATE ON DATABASE … TO the role, or run as the owner",
        );
    }
    CdcError::Database {
        context: format!("creating publication {name}"),
        detail,
    }
}

/// Create the logical slot with `pgoutput`. Its position is where the stream starts.
pub(crate) async fn create_slot(client: &Client, name: &CaptureName) -> Result<Lsn, CdcError> {
    let row = client
        .query_one(
            "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&name.slot()],
        )
        .await
        .map_err(|e| {
            if e.code() == Some(&tokio_postgres::error::SqlState::CONFIGURATION_LIMIT_EXCEEDED) {
                CdcError::Database {
                    context: format!("creating replication slot {name}"),
                    detail: format!(
                        "{}; drop an unused slot or raise max_replication_slots and restart",
                        describe_pg_error(&e)
                    ),
                }
            } else {
                CdcError::db(format!("creating replication slot {name}"), &e)
            }
        })?;
    let lsn: String = row.get(0);
    lsn.parse()
        .map_err(|e| CdcError::Protocol(format!("slot {name}: {e}")))
}

/// The slot's confirmed position as the server holds it now.
pub(crate) async fn confirmed_flush(
    client: &Client,
    name: &CaptureName,
) -> Result<Option<Lsn>, CdcError> {
    let row = client
        .query_opt(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&name.slot()],
        )
        .await
        .map_err(|e| CdcError::db("reading the slot's confirmed position", &e))?;
    match row.and_then(|r| r.get::<_, Option<String>>(0)) {
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|e| CdcError::Protocol(format!("slot {name}: {e}"))),
        None => Ok(None),
    }
}

/// The slot's restart point and confirmed position as the server holds them now, and the
/// WAL's end: a stream reopened on the slot decodes the WAL from the restart point on again,
/// up to the end (the part before the confirmed position only to rebuild its state).
pub(crate) async fn restart_confirmed_and_end(
    client: &Client,
    name: &CaptureName,
) -> Result<Option<(Lsn, Lsn, Lsn)>, CdcError> {
    let row = client
        .query_opt(
            "SELECT restart_lsn::text, confirmed_flush_lsn::text, pg_current_wal_lsn()::text \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&name.slot()],
        )
        .await
        .map_err(|e| CdcError::db("reading the slot's restart position", &e))?;
    let Some(row) = row else { return Ok(None) };
    let parse = |i: usize| -> Result<Option<Lsn>, CdcError> {
        row.get::<_, Option<String>>(i)
            .map(|t| t.parse())
            .transpose()
            .map_err(|e| CdcError::Protocol(format!("slot {name}: {e}")))
    };
    Ok(match (parse(0)?, parse(1)?, parse(2)?) {
        (Some(restart), Some(confirmed), Some(end)) => Some((restart, confirmed, end)),
        _ => None,
    })
}

/// The temporary slot [`log_restart_record`] creates for `name`: never the slot's own name,
/// whatever its length (slot names are ASCII).
fn restart_slot_name(name: &CaptureName) -> String {
    let slot = name.slot();
    format!("{}_restart", &slot[..slot.len().min(63 - "_restart".len())])
}

/// Writes a running-transactions record to the WAL: decoding can restart at such a record, so
/// once the slot's stream has read past one and confirmed it, the slot's restart point moves
/// up to it. PostgreSQL 16 has `pg_log_standby_snapshot()`; before that, creating a logical
/// slot writes one, so a temporary slot is created and dropped. Creating it waits for the
/// transactions running now to end, so it runs under a short statement timeout. Returns the
/// record's position.
pub(crate) async fn log_restart_record(
    client: &Client,
    name: &CaptureName,
) -> Result<Lsn, CdcError> {
    let version: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .map_err(|e| CdcError::db("reading the server version", &e))?
        .get(0);
    let text: String = if version >= 160000 {
        client
            .query_one("SELECT pg_log_standby_snapshot()::text", &[])
            .await
            .map_err(|e| CdcError::db("logging a standby snapshot", &e))?
            .get(0)
    } else {
        let temporary = restart_slot_name(name);
        client
            .batch_execute("SET statement_timeout = '1s'")
            .await
            .map_err(|e| CdcError::db("bounding the restart-point slot", &e))?;
        let created = client
            .query_one(
                "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput', true)",
                &[&temporary],
            )
            .await;
        let dropped = client
            .execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                 WHERE slot_name = $1 AND temporary",
                &[&temporary],
            )
            .await;
        let reset = client.batch_execute("RESET statement_timeout").await;
        let lsn = created
            .map_err(|e| CdcError::db("creating a temporary slot to mark a restart point", &e))?
            .get(0);
        dropped.map_err(|e| CdcError::db("dropping the temporary restart-point slot", &e))?;
        reset.map_err(|e| CdcError::db("resetting the statement timeout", &e))?;
        lsn
    };
    text.parse()
        .map_err(|e| CdcError::Protocol(format!("standby snapshot position: {e}")))
}

/// Drop the slot (waiting up to `wait` for a just-stopped stream to release it) and the
/// publication. Missing ones are fine.
pub(crate) async fn drop_slot_and_publication(
    client: &Client,
    name: &CaptureName,
    wait: Duration,
) -> Result<(), CdcError> {
    drop_slot(client, name, wait).await?;
    drop_publication(client, name).await
}

/// Drop the slot, waiting up to `wait` for a just-stopped stream to release it.
pub(crate) async fn drop_slot(
    client: &Client,
    name: &CaptureName,
    wait: Duration,
) -> Result<(), CdcError> {
    let deadline = Instant::now() + wait;
    loop {
        let result = client
            .query(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                 WHERE slot_name = $1",
                &[&name.slot()],
            )
            .await;
        match result {
            Ok(_) => break,
            // The walsender of a stream that just stopped may still hold it for a moment.
            Err(e)
                if e.code() == Some(&tokio_postgres::error::SqlState::OBJECT_IN_USE)
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => {
                return Err(CdcError::db(
                    format!("dropping replication slot {name}"),
                    &e,
                ))
            }
        }
    }
    Ok(())
}

/// Drop the publication if it exists.
pub(crate) async fn drop_publication(client: &Client, name: &CaptureName) -> Result<(), CdcError> {
    client
        .batch_execute(&format!(
            "DROP PUBLICATION IF EXISTS {}",
            quote_ident(name.publication())
        ))
        .await
        .map_err(|e| CdcError::db(format!("dropping publication {name}"), &e))
}

async fn query_one(
    client: &Client,
    context: &str,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<String, CdcError> {
    // SHOW returns text; simple_query avoids a prepared statement for it.
    if params.is_empty() {
        let messages = client
            .simple_query(sql)
            .await
            .map_err(|e| CdcError::db(context, &e))?;
        for m in messages {
            if let tokio_postgres::SimpleQueryMessage::Row(row) = m {
                return Ok(row.get(0).unwrap_or_default().to_string());
            }
        }
        return Err(CdcError::Protocol(format!("{context}: no row")));
    }
    let row = client
        .query_one(sql, params)
        .await
        .map_err(|e| CdcError::db(context, &e))?;
    Ok(row.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_restart_point_slot_is_a_valid_name_other_than_the_slot_itself() {
        for slot in [
            "splice_orders_v2_fwd".to_string(),
            "s".repeat(63),
            "s".repeat(60),
        ] {
            let name = CaptureName::exact(&slot).unwrap();
            let temporary = restart_slot_name(&name);
            assert_ne!(temporary, slot);
            assert!(CaptureName::exact(&temporary).is_ok(), "{temporary}");
        }
    }

    #[test]
    fn migration_names_become_valid_slot_names() {
        assert_eq!(
            CaptureName::for_migration("Orders-v2").unwrap().slot(),
            "splice_orders_v2"
        );
        assert_eq!(
            CaptureName::for_migration(&"x".repeat(100))
                .unwrap()
                .slot()
                .len(),
            63
        );
        assert!(CaptureName::exact("Bad Name").is_err());
        assert!(CaptureName::exact("").is_err());
        assert!(CaptureName::for_migration("").is_err());
    }
}
