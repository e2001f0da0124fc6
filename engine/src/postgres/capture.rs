//! PostgreSQL's side of capture: the logical-decoding stream (`cdc`), the applier's session
//! (marked with a replication origin, so capture skips what it writes) and its statements, drain
//! markers, and the swap transaction the applier runs at cutover.

use super::sql;
use super::Postgres;
use crate::adapter::ChangeApplier;
use crate::seam::{Continuity, Direction, SlotRetention};
use crate::spec::{MigrationSpec, QualifiedName};
use crate::EngineError;
use cdc::{CaptureName, CdcError, PgChangeStream, PgSourceConfig, TableName};
use std::collections::HashSet;
use tokio_postgres::{Client, GenericClient};

/// The applier of one direction: its session (under a replication origin), a session for
/// drain markers, and the statements it runs, built once.
/// How often the applier's stream sends its acknowledged position to the server.
const APPLIER_STATUS_INTERVAL: std::time::Duration = std::time::Duration::from_millis(20);

pub struct ApplierSession {
    db: Client,
    marker_db: Client,
    /// [`sql::resync_keys`] of the direction, and the statement prepared from it at the first
    /// batch (the direction's target may not exist when the applier opens: the reverse
    /// direction's appears at cutover).
    resync_sql: String,
    resync: Option<tokio_postgres::Statement>,
    /// [`sql::count_invisible_txns`], prepared once.
    visible_sql: tokio_postgres::Statement,
    orphans_sql: String,
    key_len: usize,
    /// [`sql::mark_verify_ranges`] of the direction; `None` when the state store has no
    /// `splice.verify_ranges` (made by an older splice; no pass can be stored then either).
    mark_sql: Option<tokio_postgres::Statement>,
    /// A swap transaction is open on `db` (cutover): applied changes go into it.
    in_swap: bool,
}

impl ApplierSession {
    /// The applier's session (cutover's swap runs on it).
    pub(super) fn db(&self) -> &Client {
        &self.db
    }

    pub(super) fn set_in_swap(&mut self, in_swap: bool) {
        self.in_swap = in_swap;
    }
}

/// Creates the replication origin the applier writes under (idempotent).
pub async fn ensure_origin(db: &impl GenericClient, origin: &str) -> Result<(), EngineError> {
    db.execute(
        "SELECT pg_replication_origin_create($1) WHERE pg_replication_origin_oid($1) IS NULL",
        &[&origin],
    )
    .await
    .map_err(|e| {
        EngineError::db(
            format!(
                "creating replication origin {origin} (needs superuser, or EXECUTE on \
                 pg_replication_origin_create granted to this role)"
            ),
            e,
        )
    })?;
    Ok(())
}

pub async fn drop_origin(db: &impl GenericClient, origin: &str) -> Result<(), EngineError> {
    db.execute(
        "SELECT pg_replication_origin_drop($1) WHERE pg_replication_origin_oid($1) IS NOT NULL",
        &[&origin],
    )
    .await
    .map_err(|e| EngineError::db(format!("dropping replication origin {origin}"), e))?;
    Ok(())
}

/// How long [`apply`] waits for a committed source transaction to become visible before it
/// gives up (a backend that wrote its commit record and then stalled).
const VISIBLE_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs `statement` (the re-sync, or [`sql::count_invisible_txns`]) with `params` and, last,
/// the batch's source transactions `txns` (32-bit ids, as logical decoding gives them), until
/// its snapshot sees them all; an error naming the fix after `within`. The statement returns
/// how many it does not see as its first column, and does nothing else unless none.
///
/// A transaction's commit record is flushed, and can be decoded and delivered, a moment before
/// its backend leaves the set of running transactions; a snapshot taken in between still sees
/// the old rows. A re-sync that read them then would write the old version, acknowledge the
/// change, and lose it. So the re-sync statement itself checks, in its own snapshot, that it
/// sees them all, and writes only then ([`sql::resync_keys`]): one round trip per batch when
/// they are visible, as they almost always are.
pub async fn until_visible(
    db: &impl GenericClient,
    statement: &tokio_postgres::Statement,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    txns: &[u64],
    within: std::time::Duration,
) -> Result<(), EngineError> {
    let ids: Vec<i64> = txns.iter().map(|x| (*x & 0xFFFF_FFFF) as i64).collect();
    let mut all = params.to_vec();
    all.push(&ids);
    let deadline = std::time::Instant::now() + within;
    loop {
        let pending: i64 = db
            .query_one(statement, &all)
            .await
            .map_err(|e| EngineError::db("applying captured changes", e))?
            .get(0);
        if pending == 0 {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(EngineError::Missing(format!(
                "{pending} captured transaction(s) committed but stayed invisible to new \
                 snapshots for {}s; check for a stalled backend (pg_stat_activity), then run \
                 the command again (nothing was applied or acknowledged)",
                within.as_secs()
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

/// Removes every target row whose key the source lost, after a TRUNCATE of the source (in the
/// transaction of the batch's re-sync, after it: a statement of a later snapshot, which sees
/// the TRUNCATE once the re-sync saw it).
async fn apply_truncate(tx: &impl GenericClient, orphans_sql: &str) -> Result<(), EngineError> {
    tx.execute(orphans_sql, &[])
        .await
        .map_err(|e| EngineError::db("applying a truncate", e))?;
    Ok(())
}

impl ChangeApplier for Postgres {
    type Stream = PgChangeStream;
    type ApplierSession = ApplierSession;

    /// Opens (creating if needed) the slot `slot` capturing `from` and the marker table,
    /// skipping the engine's own writes (both origins of `spec`).
    async fn open_stream(
        &self,
        spec: &MigrationSpec,
        from: &QualifiedName,
        _to: &QualifiedName,
        slot: &str,
        continuity: Continuity,
    ) -> Result<PgChangeStream, EngineError> {
        let name = CaptureName::exact(slot)?;
        let mut config = PgSourceConfig::new(
            self.url(),
            name,
            vec![TableName::from(from), self.marker_table()],
        )
        .skip_origin(spec.origin())
        .skip_origin(spec.reverse_origin());
        if continuity == Continuity::Resume {
            config = config.resume_only();
        }
        // Acknowledgements reach the server within this: a command that closes its stream
        // waits until the slot shows its last one, so this bounds what closing costs (a
        // status message is a few bytes; the slot is written to disk only when its restart
        // point moves, not per message).
        config.status_interval = APPLIER_STATUS_INTERVAL;
        PgChangeStream::open(config).await.map_err(|e| match e {
            CdcError::SlotMissing { slot } => EngineError::StreamLost {
                slot,
                why: "does not exist any more (dropped by hand, or lost in a failover)".into(),
            },
            CdcError::SlotInvalidated { slot } => EngineError::StreamLost {
                slot,
                why: "was invalidated by the server (wal_status = lost: WAL it still needed \
                      was removed, see max_slot_wal_keep_size)"
                    .into(),
            },
            other => other.into(),
        })
    }

    /// The applier's sessions for `dir`: one writing under `origin` (with the verify-range
    /// marks prepared when the state store has them), one for drain markers.
    async fn open_applier(
        &self,
        dir: &Direction,
        origin: &str,
    ) -> Result<ApplierSession, EngineError> {
        let (apply_db, marker_db) =
            tokio::try_join!(super::connect(self.url()), super::connect(self.url()))?;
        ensure_origin(&apply_db, origin).await?;
        apply_db
            .execute("SELECT pg_replication_origin_session_setup($1)", &[&origin])
            .await
            .map_err(|e| EngineError::db("marking the applier's session with its origin", e))?;
        let has_ranges: bool = apply_db
            .query_one(
                "SELECT to_regclass('splice.verify_ranges') IS NOT NULL",
                &[],
            )
            .await
            .map_err(|e| EngineError::db("looking for splice.verify_ranges", e))?
            .get(0);
        let mark_sql = match has_ranges {
            true => {
                let names: Vec<String> = dir.key.iter().map(|k| k.name.clone()).collect();
                let collations: Vec<String> = apply_db
                    .query(sql::KEY_COLLATIONS, &[&sql::qualified(&dir.from), &names])
                    .await
                    .map_err(|e| EngineError::db("reading the key columns' collations", e))?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                Some(
                    apply_db
                        .prepare(&sql::mark_verify_ranges(dir, &collations))
                        .await
                        .map_err(|e| EngineError::db("preparing the verify-range marks", e))?,
                )
            }
            false => None,
        };
        let visible_sql = apply_db
            .prepare(&sql::count_invisible_txns())
            .await
            .map_err(|e| EngineError::db("preparing the applier's statements", e))?;
        Ok(ApplierSession {
            db: apply_db,
            marker_db,
            resync_sql: sql::resync_keys(dir),
            resync: None,
            visible_sql,
            orphans_sql: sql::delete_orphans(dir),
            key_len: dir.key.len(),
            mark_sql,
            in_swap: false,
        })
    }

    /// The table capture drains through (see `state::SCHEMA_DDL`).
    fn marker_table(&self) -> TableName {
        TableName::new("splice", "sync_marker")
    }

    /// Writes the next drain marker of `migration` and prunes old ones; returns its id.
    async fn write_marker(
        &self,
        applier: &mut ApplierSession,
        migration: &str,
    ) -> Result<i64, EngineError> {
        let row = applier
            .marker_db
            .query_one(
                "INSERT INTO splice.sync_marker (migration, id)
                 SELECT $1, coalesce(max(id), 0) + 1 FROM splice.sync_marker WHERE migration = $1
                 RETURNING id",
                &[&migration],
            )
            .await
            .map_err(|e| EngineError::db("writing a capture marker", e))?;
        let id: i64 = row.get(0);
        applier
            .marker_db
            .execute(
                "DELETE FROM splice.sync_marker WHERE migration = $1 AND id < $2",
                &[&migration, &(id - 10)],
            )
            .await
            .map_err(|e| EngineError::db("pruning capture markers", e))?;
        Ok(id)
    }

    /// Applies one batch: the re-sync of the changed keys (one `text[]` parameter per key
    /// column), which checks in its own snapshot that it sees the batch's transactions
    /// ([`until_visible`]), then orphan removal after a TRUNCATE (its later snapshot sees what
    /// the re-sync saw). Inside the swap transaction while one is open; otherwise the re-sync
    /// is one statement on its own (its implicit transaction is the batch's), or, after a
    /// TRUNCATE, a transaction with the orphan removal.
    async fn apply(
        &self,
        applier: &mut ApplierSession,
        keys: HashSet<Vec<String>>,
        gone: &HashSet<Vec<String>>,
        txns: &[u64],
        truncate: bool,
    ) -> Result<(), EngineError> {
        let started = std::time::Instant::now();
        if !truncate && keys.is_empty() {
            // Every key left to the backfill: its next chunk must see `txns`.
            if !txns.is_empty() {
                until_visible(&applier.db, &applier.visible_sql, &[], txns, VISIBLE_WITHIN).await?;
            }
            return Ok(());
        }
        let mut columns: Vec<Vec<String>> = vec![Vec::with_capacity(keys.len()); applier.key_len];
        let n_keys = keys.len();
        for key in keys {
            for (column, value) in columns.iter_mut().zip(key) {
                column.push(value);
            }
        }
        let mut gone_columns: Vec<Vec<&str>> =
            vec![Vec::with_capacity(gone.len()); applier.key_len];
        for key in gone {
            for (column, value) in gone_columns.iter_mut().zip(key) {
                column.push(value);
            }
        }
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = columns
            .iter()
            .map(|c| c as &(dyn tokio_postgres::types::ToSql + Sync))
            .chain(
                gone_columns
                    .iter()
                    .map(|c| c as &(dyn tokio_postgres::types::ToSql + Sync)),
            )
            .collect();
        let resync = match &applier.resync {
            Some(prepared) => prepared.clone(),
            None => {
                let prepared =
                    applier.db.prepare(&applier.resync_sql).await.map_err(|e| {
                        EngineError::db("preparing the re-sync of captured keys", e)
                    })?;
                applier.resync = Some(prepared.clone());
                prepared
            }
        };
        let resync = &resync;
        if applier.in_swap {
            until_visible(&applier.db, resync, &params, txns, VISIBLE_WITHIN).await?;
            if truncate {
                apply_truncate(&applier.db, &applier.orphans_sql).await?;
            }
            return Ok(());
        }
        if truncate {
            let own = applier
                .db
                .transaction()
                .await
                .map_err(|e| EngineError::db("starting an apply transaction", e))?;
            until_visible(&own, resync, &params, txns, VISIBLE_WITHIN).await?;
            apply_truncate(&own, &applier.orphans_sql).await?;
            own.commit()
                .await
                .map_err(|e| EngineError::db("committing applied changes", e))?;
        } else {
            until_visible(&applier.db, resync, &params, txns, VISIBLE_WITHIN).await?;
        }
        tracing::debug!(
            keys = n_keys,
            apply_ms = started.elapsed().as_secs_f64() * 1000.0,
            "applied the keys of a batch"
        );
        Ok(())
    }

    /// One statement on the applier's session: on its own (autocommit) before the apply's
    /// transaction, or inside the swap's transaction while one is open.
    async fn mark_changed(
        &self,
        applier: &mut ApplierSession,
        migration: &str,
        shape: &str,
        keys: &HashSet<Vec<String>>,
        every: bool,
    ) -> Result<(), EngineError> {
        let Some(mark_sql) = &applier.mark_sql else {
            return Ok(());
        };
        if every {
            applier
                .db
                .execute(sql::MARK_EVERY_VERIFY_RANGE, &[&migration, &shape])
                .await
                .map_err(|e| EngineError::db("marking the verify ranges changed", e))?;
            return Ok(());
        }
        if keys.is_empty() {
            return Ok(());
        }
        let mut columns: Vec<Vec<&str>> = vec![Vec::with_capacity(keys.len()); applier.key_len];
        for key in keys {
            for (column, value) in columns.iter_mut().zip(key) {
                column.push(value);
            }
        }
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&migration, &shape];
        params.extend(
            columns
                .iter()
                .map(|c| c as &(dyn tokio_postgres::types::ToSql + Sync)),
        );
        applier
            .db
            .execute(mark_sql, &params)
            .await
            .map_err(|e| EngineError::db("marking the verify ranges changed", e))?;
        Ok(())
    }

    /// Drops a capture's slot and publication if they exist.
    async fn drop_capture(&self, slot: &str) -> Result<(), EngineError> {
        let name = CaptureName::exact(slot)?;
        cdc::drop_capture(self.url(), &name).await?;
        Ok(())
    }

    async fn forget_appliers(&self, db: &Client, spec: &MigrationSpec) -> Result<(), EngineError> {
        // The impact budget's heartbeat row goes with the appliers it throttled.
        db.execute(
            "DELETE FROM splice.heartbeat WHERE migration = $1",
            &[&spec.name],
        )
        .await
        .map_err(|e| EngineError::db("removing the impact budget's heartbeat row", e))?;
        drop_origin(db, &spec.origin()).await?;
        drop_origin(db, &spec.reverse_origin()).await
    }

    async fn capture_problems(
        &self,
        db: &Client,
        slots: &[String],
    ) -> Result<Vec<String>, EngineError> {
        let names = slots
            .iter()
            .map(|s| CaptureName::exact(s))
            .collect::<Result<Vec<_>, _>>()?;
        let mut problems: Vec<String> = cdc::capture_preconditions(db, &names)
            .await?
            .iter()
            .map(ToString::to_string)
            .collect();
        // What else sync needs of the role: the applier's replication origin, and the
        // statistics that show replicas' lag (the max_replica_lag gate).
        let row = db
            .query_one(
                "SELECT quote_ident(current_user),
                        has_function_privilege('pg_replication_origin_create(text)', 'EXECUTE')
                        AND has_function_privilege('pg_replication_origin_session_setup(text)', 'EXECUTE')
                        AND has_function_privilege('pg_replication_origin_drop(text)', 'EXECUTE'),
                        pg_has_role('pg_read_all_stats', 'MEMBER')",
                &[],
            )
            .await
            .map_err(|e| EngineError::db("reading the role's privileges", e))?;
        let (role, origins, stats): (String, bool, bool) = (row.get(0), row.get(1), row.get(2));
        if !origins {
            problems.push(format!(
                "role {role} may not use replication origins, which keep the applier's own \
                 writes out of capture; as a superuser run GRANT EXECUTE ON FUNCTION \
                 pg_replication_origin_create(text), pg_replication_origin_session_setup(text), \
                 pg_replication_origin_drop(text) TO {role}"
            ));
        }
        if !stats {
            problems.push(format!(
                "role {role} cannot see replicas' lag (pg_stat_replication shows it only to \
                 pg_read_all_stats), so the max_replica_lag gate would read 0; run GRANT \
                 pg_monitor TO {role}"
            ));
        }
        Ok(problems)
    }

    async fn table_problems(
        &self,
        db: &Client,
        table: &crate::catalog::Table,
        key: &[String],
    ) -> Result<Vec<String>, EngineError> {
        let row = db
            .query_one(
                "SELECT quote_ident(current_user), quote_ident(pg_get_userbyid(c.relowner)),
                        pg_has_role(c.relowner, 'MEMBER'), c.relreplident::text,
                        coalesce((SELECT array_agg(a.attname::text)
                                  FROM pg_index x
                                  JOIN pg_attribute a ON a.attrelid = x.indrelid
                                                     AND a.attnum = ANY (x.indkey)
                                  WHERE x.indrelid = c.oid
                                    AND (x.indisreplident
                                         OR (c.relreplident = 'd' AND x.indisprimary))),
                                 '{}')
                 FROM pg_class c WHERE c.oid = $1",
                &[&table.oid],
            )
            .await
            .map_err(|e| EngineError::db("reading the table's owner and replica identity", e))?;
        let (role, owner, owns, identity, covered): (String, String, bool, String, Vec<String>) =
            (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
        let mut problems = Vec::new();
        if !owns {
            problems.push(format!(
                "role {role} does not own {} (its owner is {owner}); cutover renames the table \
                 and gives its owner, policies and grants to the new one, which takes ownership: \
                 run GRANT {owner} TO {role}, or run splice as {owner}",
                table.name
            ));
        }
        let uncovered: Vec<&String> = key.iter().filter(|k| !covered.contains(k)).collect();
        if identity == "n" || (identity != "f" && !uncovered.is_empty()) {
            problems.push(format!(
                "the replica identity of {} does not cover the migration key ({}), so captured \
                 updates and deletes could not name their rows; give it a primary key on the \
                 key, or ALTER TABLE {} REPLICA IDENTITY USING INDEX <unique index on the key> \
                 (or REPLICA IDENTITY FULL)",
                table.name,
                key.join(", "),
                super::sql::qualified(&table.name)
            ));
        }
        Ok(problems)
    }

    async fn slot_retention(
        &self,
        db: &Client,
        slot: &str,
    ) -> Result<Option<SlotRetention>, EngineError> {
        let row = db
            .query_opt(
                "SELECT coalesce((pg_current_wal_lsn() - restart_lsn)::bigint, 0),
                        coalesce(wal_status, 'unknown'),
                        -- pg_settings gives the number in its unit (MB); current_setting
                        -- would give '64MB'.
                        (SELECT CASE WHEN setting::bigint < 0
                                     THEN 10::bigint * 1024 * 1024 * 1024
                                     ELSE setting::bigint * 1024 * 1024 / 2 END
                         FROM pg_settings WHERE name = 'max_slot_wal_keep_size')
                 FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .map_err(|e| EngineError::db("reading the slot's retained WAL", e))?;
        Ok(row.map(|r| SlotRetention {
            slot: slot.to_string(),
            retained_wal_bytes: r.get(0),
            wal_status: r.get(1),
            warn_above_bytes: r.get(2),
        }))
    }

    async fn capture_lag_bytes(&self, db: &Client, slot: &str) -> Result<Option<i64>, EngineError> {
        Ok(db
            .query_opt(
                "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint
                 FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .map_err(|e| EngineError::db("reading capture lag", e))?
            .and_then(|row| row.get(0)))
    }
}
