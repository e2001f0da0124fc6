//! MySQL's side of capture: the binlog stream (`cdc`'s MySQL source), the applier's session
//! (each of its transactions writes the cdc marker row of its origin, so both streams skip
//! it) and its statements, and drain markers.

use super::sql;
use super::{col, MySql, Session};
use crate::adapter::ChangeApplier;
use crate::seam::{Continuity, Direction};
use crate::spec::{MigrationSpec, QualifiedName};
use crate::EngineError;
use cdc::{CdcError, MySqlChangeStream, MySqlSourceConfig, TableName};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row, TxOpts, Value};
use std::collections::{HashMap, HashSet};

/// The applier of one direction: its session, a session for drain markers, and the
/// statements it runs, built once (those of a batch once per batch size).
pub struct ApplierSession {
    pub(super) db: Conn,
    pub(super) marker_db: Conn,
    /// Cutover's locking session while it holds the live table (see `cutover.rs`): the
    /// applier itself writes on `db` in transactions of its own, locked or not.
    pub(super) swap_lock: Option<Conn>,
    /// The file's `lock_timeout` (whole seconds) while a swap is locked: the rename's too.
    pub(super) swap_lock_timeout: u64,
    /// The server folds table names to lower case (`lower_case_table_names` ≠ 0): metadata
    /// locks are taken in the order of the folded names.
    pub(super) swap_names_folded: bool,
    origin_sql: String,
    orphans_sql: String,
    dir: Direction,
    batches: HashMap<usize, sql::ResyncBatch>,
    /// Per key column of `dir.from`: its character set and collation when it is a string.
    collations: Vec<Option<sql::Collation>>,
    /// [`sql::verify_ranges_of_keys`] by number of keys.
    range_lookups: HashMap<usize, String>,
}

/// How many columns `table` has; `None` when it does not exist.
async fn column_count(db: &mut Conn, table: &QualifiedName) -> Result<Option<usize>, EngineError> {
    let ctx = "counting a table's columns";
    let row: Option<Row> = db
        .exec_first(
            "SELECT COUNT(*) FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (&table.schema, &table.name),
        )
        .await
        .map_err(|e| EngineError::my(ctx, &e))?;
    let n: i64 = match row {
        Some(r) => col(&r, 0, ctx)?,
        None => 0,
    };
    Ok((n > 0).then_some(n as usize))
}

/// Per key column of `table`, in key order: its character set and collation when it is a
/// string column (verify ranges are read under them, so keys are placed under them too).
async fn key_collations(
    db: &mut Conn,
    dir: &Direction,
) -> Result<Vec<Option<sql::Collation>>, EngineError> {
    let ctx = "reading the key columns' collations";
    let mut out = Vec::with_capacity(dir.key.len());
    for k in &dir.key {
        let row: Option<Row> = db
            .exec_first(
                "SELECT CHARACTER_SET_NAME, COLLATION_NAME FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND COLUMN_NAME = ?",
                (&dir.from.schema, &dir.from.name, &k.name),
            )
            .await
            .map_err(|e| EngineError::my(ctx, &e))?;
        let pair = match row {
            Some(r) => {
                let charset: Option<String> = col(&r, 0, ctx)?;
                let collation: Option<String> = col(&r, 1, ctx)?;
                charset.zip(collation)
            }
            None => None,
        };
        out.push(pair);
    }
    Ok(out)
}

/// The most keys one set of re-sync statements takes; a batch is split into groups of at
/// most this many, each padded to a power of two (by repeating its last key) so that a few
/// prepared statements serve every size.
const KEYS_PER_STATEMENT: usize = 128;

/// `keys` in groups of at most [`KEYS_PER_STATEMENT`], each padded to a power of two by
/// repeating its last key: (the padded size, the group's key fields as parameters).
fn key_groups<K: std::borrow::Borrow<Vec<String>>>(
    keys: &[K],
) -> impl Iterator<Item = (usize, Vec<Value>)> + '_ {
    keys.chunks(KEYS_PER_STATEMENT).filter_map(|group| {
        let last = group.last()?;
        let n = group.len().next_power_of_two();
        let params = group
            .iter()
            .chain(std::iter::repeat_n(last, n - group.len()))
            .flat_map(|key| key.borrow().iter().map(|v| Value::from(v.as_str())))
            .collect();
        Some((n, params))
    })
}

/// A transaction in REPEATABLE READ whatever the server's default: there InnoDB reads the
/// source rows of an `INSERT … SELECT` (and of a `DELETE`'s subquery) with shared next-key
/// locks, so the re-sync waits for a transaction still committing one of its keys (a commit can
/// reach the binlog a moment before other sessions see it), reads the latest committed rows,
/// and no write to them lands before the batch commits. Under READ COMMITTED it would read a
/// snapshot around them.
pub(super) fn repeatable_read() -> TxOpts {
    let mut opts = TxOpts::default();
    opts.with_isolation_level(mysql_async::IsolationLevel::RepeatableRead);
    opts
}

/// The statements of one applied batch on `db` (a transaction in [`repeatable_read`]): the
/// applier's marker, orphan removal after a TRUNCATE, then the keys re-synced group by group
/// (upserted where the source has them, by a locking read of it), then the gone keys (a subset
/// of `keys`) deleted where the source does not have them.
async fn resync<Q: Queryable + Send>(
    db: &mut Q,
    origin_sql: &str,
    orphans_sql: Option<&str>,
    dir: &Direction,
    batches: &mut HashMap<usize, sql::ResyncBatch>,
    keys: &[Vec<String>],
    gone: &[Vec<String>],
) -> Result<(), Failed> {
    let ctx = "applying captured changes";
    db.query_drop(origin_sql)
        .await
        .map_err(failed("marking the applier's transaction"))?;
    if let Some(sql) = orphans_sql {
        db.query_drop(sql)
            .await
            .map_err(failed("applying a truncate"))?;
    }
    for (n, params) in key_groups(keys) {
        let statements = batches
            .entry(n)
            .or_insert_with(|| sql::resync_batch(dir, n));
        db.exec_drop(statements.upsert.as_str(), params)
            .await
            .map_err(failed(ctx))?;
    }
    for (n, params) in key_groups(gone) {
        let statements = batches
            .entry(n)
            .or_insert_with(|| sql::resync_batch(dir, n));
        db.exec_drop(statements.delete.as_str(), params)
            .await
            .map_err(failed(ctx))?;
    }
    Ok(())
}

/// A statement that failed, and what it was doing.
pub(super) struct Failed(&'static str, mysql_async::Error);

pub(super) fn failed(ctx: &'static str) -> impl Fn(mysql_async::Error) -> Failed {
    move |e| Failed(ctx, e)
}

impl Failed {
    /// A lock conflict with another session that ended the statement: a deadlock (1213, InnoDB
    /// rolled the transaction back) or a lock wait timeout (1205). Running the whole
    /// transaction again is safe wherever it is idempotent, as a re-sync or a chunk copy is.
    pub(super) fn lock_conflict(&self) -> bool {
        matches!(&self.1, mysql_async::Error::Server(s) if s.code == 1213 || s.code == 1205)
    }

    pub(super) fn into_error(self) -> EngineError {
        EngineError::my(self.0, &self.1)
    }
}

/// How often an idempotent transaction runs again after a lock conflict with the application
/// (see [`Failed::lock_conflict`]) before the error stands.
pub(super) const LOCK_CONFLICT_ATTEMPTS: u32 = 5;

/// The wait before attempt `attempt + 1` after a lock conflict: 20, 40, 80… ms, with jitter
/// so two sessions that deadlocked do not meet again in step.
fn conflict_backoff(attempt: u32) -> std::time::Duration {
    let base = 20u64 << attempt.min(6);
    std::time::Duration::from_millis(base + rand::random_range(0..=base))
}

/// After attempt `attempt` of an idempotent transaction failed with `e`: when it was a lock
/// conflict and attempts are left, warns (`again` says what runs again), waits the backoff,
/// counts the attempt and returns `Ok` (run it again); otherwise the error.
pub(super) async fn again_after(
    e: Failed,
    attempt: &mut u32,
    again: &'static str,
) -> Result<(), EngineError> {
    if !(e.lock_conflict() && *attempt < LOCK_CONFLICT_ATTEMPTS) {
        return Err(e.into_error());
    }
    tracing::warn!(attempt = *attempt, error = %e.1, "{again}");
    tokio::time::sleep(conflict_backoff(*attempt)).await;
    *attempt += 1;
    Ok(())
}

impl ChangeApplier for MySql {
    type Stream = MySqlChangeStream;
    type ApplierSession = ApplierSession;

    /// Opens (creating only under [`Continuity::Start`]) the binlog slot `slot` capturing
    /// `from` and the marker table, skipping both of the migration's applier origins.
    /// A slot that must continue and is gone, or whose position the server purged, is
    /// [`EngineError::StreamLost`]: never re-created from now.
    async fn open_stream(
        &self,
        spec: &MigrationSpec,
        from: &QualifiedName,
        to: &QualifiedName,
        slot: &str,
        continuity: Continuity,
    ) -> Result<MySqlChangeStream, EngineError> {
        let mut config = MySqlSourceConfig::new(
            self.url(),
            slot,
            vec![TableName::from(from), self.marker_table()],
        )
        .skip_origin(spec.origin())
        .skip_origin(spec.reverse_origin());
        // The stream follows the live name across a swap (from a position before it, the
        // other table had the name): its rows, shaped as `to` is, are accepted too (the
        // key sits at the same position in both, plan checks).
        let other_shape = {
            let mut db = super::connect(&self.target).await?;
            column_count(&mut db, to).await?
        };
        if let Some(n) = other_shape {
            config = config.other_shape(TableName::from(from), n);
        }
        if continuity == Continuity::Resume {
            config = config.resume_only();
        }
        MySqlChangeStream::open(config).await.map_err(|e| match e {
            CdcError::SlotMissing { slot } => EngineError::StreamLost {
                slot,
                why: "does not exist any more (its row in splice.cdc_slots was deleted)".into(),
            },
            CdcError::PositionPurged {
                slot,
                position,
                why,
            } => EngineError::StreamLost {
                slot,
                why: format!(
                    "needs binlog position {position}, which the server no longer has ({why})"
                ),
            },
            other => other.into(),
        })
    }

    /// The applier's sessions for `dir`: one writing under `origin` (each of its transactions
    /// carries the origin's marker), one for drain markers.
    async fn open_applier(
        &self,
        dir: &Direction,
        origin: &str,
    ) -> Result<ApplierSession, EngineError> {
        let (mut db, marker_db) =
            tokio::try_join!(super::connect(&self.target), super::connect(&self.target))?;
        let collations = key_collations(&mut db, dir).await?;
        // The table the applier writes into carries no triggers (they would fire a second
        // time for each of the application's writes); only a crash inside a swap, between
        // carrying them over and the rename or between the rename and dropping the outgoing
        // table's copies, leaves some on one of splice's tables. Never the live table's: a
        // rollback opens an applier into it only to create its stream.
        if dir.to.name.starts_with(crate::spec::SPLICE_TABLE_PREFIX) {
            let dropped = super::triggers::drop_all(&mut db, &dir.to).await?;
            if !dropped.is_empty() {
                tracing::warn!(table = %dir.to, triggers = ?dropped, "dropped the triggers an interrupted swap left on the table splice writes into");
            }
        }
        let truncate = sql::delete_gone_in_range(dir, false, false);
        Ok(ApplierSession {
            db,
            marker_db,
            origin_sql: cdc::marker_sql(origin),
            orphans_sql: truncate.sql,
            dir: dir.clone(),
            batches: HashMap::new(),
            collations,
            range_lookups: HashMap::new(),
            swap_lock: None,
            swap_lock_timeout: 1,
            swap_names_folded: false,
        })
    }

    fn marker_table(&self) -> TableName {
        TableName::new(super::STATE_DATABASE, "sync_marker")
    }

    /// Writes the next drain marker of `migration` (on a session of its own, unmarked, so the
    /// stream delivers it) and prunes old ones; returns its id.
    async fn write_marker(
        &self,
        applier: &mut ApplierSession,
        migration: &str,
    ) -> Result<i64, EngineError> {
        let ctx = "writing a capture marker";
        let db = &mut applier.marker_db;
        let row: Option<Row> = db
            .exec_first(
                "SELECT COALESCE(MAX(id), 0) + 1 FROM `splice`.`sync_marker` WHERE migration = ?",
                (migration,),
            )
            .await
            .map_err(|e| EngineError::my(ctx, &e))?;
        let id: i64 = match row {
            Some(r) => col(&r, 0, ctx)?,
            None => 1,
        };
        db.exec_drop(
            "INSERT INTO `splice`.`sync_marker` (migration, id) VALUES (?, ?)",
            (migration, id),
        )
        .await
        .map_err(|e| EngineError::my(ctx, &e))?;
        db.exec_drop(
            "DELETE FROM `splice`.`sync_marker` WHERE migration = ? AND id < ?",
            (migration, id - 10),
        )
        .await
        .map_err(|e| EngineError::my("pruning capture markers", &e))?;
        Ok(id)
    }

    /// Re-syncs `keys` in one transaction that first writes the applier's marker row: in
    /// groups of keys, a locking read of their source rows (it sees the latest committed
    /// versions and waits for a transaction still committing one, so `txns` need no separate
    /// wait), then the mapped rows upserted and the target rows whose source row is gone
    /// deleted.
    async fn apply(
        &self,
        applier: &mut ApplierSession,
        keys: HashSet<Vec<String>>,
        gone: &HashSet<Vec<String>>,
        _txns: &[u64],
        truncate: bool,
    ) -> Result<(), EngineError> {
        if !truncate && keys.is_empty() {
            return Ok(());
        }
        let ctx = "applying captured changes";
        let mut keys: Vec<Vec<String>> = keys.into_iter().collect();
        // One order for every batch: two appliers never wait on each other's row locks in
        // opposite orders.
        keys.sort();
        let mut gone: Vec<Vec<String>> = gone.iter().cloned().collect();
        gone.sort();
        let mut attempt = 1;
        loop {
            let mut tx = applier
                .db
                .start_transaction(repeatable_read())
                .await
                .map_err(|e| EngineError::my(ctx, &e))?;
            let applied = resync(
                &mut tx,
                &applier.origin_sql,
                truncate.then_some(applier.orphans_sql.as_str()),
                &applier.dir,
                &mut applier.batches,
                &keys,
                &gone,
            )
            .await;
            let done = match applied {
                Ok(()) => tx
                    .commit()
                    .await
                    .map_err(failed("committing applied changes")),
                Err(e) => {
                    // A deadlock already rolled back; a lock wait timeout ended only its
                    // statement. Best effort: a session that cannot roll back fails next.
                    let _ = tx.rollback().await;
                    Err(e)
                }
            };
            match done {
                Ok(()) => return Ok(()),
                // The application's transaction and this batch locked rows in opposite orders
                // (or one waited too long): the re-sync is idempotent, run it again.
                Err(e) => again_after(
                    e,
                    &mut attempt,
                    "an applied batch met a lock conflict with another session; applying it again",
                )
                .await?,
            }
        }
    }

    /// Finds the stored ranges holding `keys` (groups of up to [`KEYS_PER_STATEMENT`], see
    /// [`sql::verify_ranges_of_keys`]), then bumps their marks in one statement; autocommit,
    /// before the apply's transaction.
    async fn mark_changed(
        &self,
        applier: &mut ApplierSession,
        migration: &str,
        shape: &str,
        keys: &HashSet<Vec<String>>,
        every: bool,
    ) -> Result<(), EngineError> {
        let ctx = "marking the verify ranges changed";
        if !every && keys.is_empty() {
            return Ok(());
        }
        if every {
            return applier
                .db
                .exec_drop(
                    "UPDATE `splice`.`verify_ranges` SET marks = marks + 1 \
                     WHERE migration = ? AND shape = ?",
                    (migration, shape),
                )
                .await
                .map_err(|e| EngineError::my(ctx, &e));
        }
        let keys: Vec<&Vec<String>> = keys.iter().collect();
        let mut hit = std::collections::BTreeSet::new();
        for (n, mut params) in key_groups(&keys) {
            let statement = applier.range_lookups.entry(n).or_insert_with(|| {
                sql::verify_ranges_of_keys(&applier.dir, &applier.collations, n)
            });
            params.push(Value::from(migration));
            params.push(Value::from(shape));
            let rows: Vec<Row> = applier
                .db
                .exec(statement.as_str(), params)
                .await
                .map_err(|e| EngineError::my(ctx, &e))?;
            if rows.is_empty() {
                // No stored ranges: nothing to mark for any group.
                return Ok(());
            }
            for r in &rows {
                hit.insert(col::<i64>(r, 0, ctx)?);
            }
        }
        let list: Vec<String> = hit.iter().map(i64::to_string).collect();
        applier
            .db
            .exec_drop(
                format!(
                    "UPDATE `splice`.`verify_ranges` SET marks = marks + 1 \
                     WHERE migration = ? AND shape = ? AND idx IN ({})",
                    list.join(", ")
                ),
                (migration, shape),
            )
            .await
            .map_err(|e| EngineError::my(ctx, &e))
    }

    async fn drop_capture(&self, slot: &str) -> Result<(), EngineError> {
        cdc::drop_binlog_slot(self.url(), slot).await?;
        Ok(())
    }

    /// Removes the marker rows of both applier origins and the impact budget's heartbeat row,
    /// which goes with the appliers it throttled (missing is fine).
    async fn forget_appliers(&self, db: &Session, spec: &MigrationSpec) -> Result<(), EngineError> {
        let mut conn = db.lock().await;
        match conn
            .exec_drop(
                "DELETE FROM `splice`.`heartbeat` WHERE migration = ?",
                (&spec.name,),
            )
            .await
        {
            Ok(()) => {}
            Err(mysql_async::Error::Server(s)) if s.code == 1146 || s.code == 1049 => {}
            Err(e) => {
                return Err(EngineError::my(
                    "removing the impact budget's heartbeat row",
                    &e,
                ))
            }
        }
        match conn
            .exec_drop(
                "DELETE FROM `splice`.`cdc_marker` WHERE origin IN (?, ?)",
                (spec.origin(), spec.reverse_origin()),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(mysql_async::Error::Server(s)) if s.code == 1146 || s.code == 1049 => Ok(()),
            Err(e) => Err(EngineError::my("removing the applier markers", &e)),
        }
    }

    /// The binlog preconditions (log_bin, ROW format, FULL images, server_id, grants,
    /// retention), each with its fix, as the binlog source checks them.
    async fn capture_problems(
        &self,
        _db: &Session,
        _slots: &[String],
    ) -> Result<Vec<String>, EngineError> {
        match cdc::binlog_preconditions(self.url()).await {
            Ok(_) => Ok(Vec::new()),
            Err(e) if e.is_precondition() => Ok(vec![e.to_string()]),
            Err(e) => Err(e.into()),
        }
    }

    /// Binlog bytes from the slot's acknowledged position to the end of the newest binlog.
    async fn capture_lag_bytes(
        &self,
        db: &Session,
        slot: &str,
    ) -> Result<Option<i64>, EngineError> {
        let ctx = "reading the capture lag";
        let mut conn = db.lock().await;
        let row: Option<Row> = match conn
            .exec_first(
                "SELECT binlog_file, binlog_offset FROM `splice`.`cdc_slots` WHERE slot = ?",
                (slot,),
            )
            .await
        {
            Ok(r) => r,
            Err(mysql_async::Error::Server(s)) if s.code == 1146 || s.code == 1049 => None,
            Err(e) => return Err(EngineError::my(ctx, &e)),
        };
        let Some(row) = row else { return Ok(None) };
        let (file, offset): (String, i64) = (col(&row, 0, ctx)?, col(&row, 1, ctx)?);
        let logs: Vec<Row> = match conn.query("SHOW BINARY LOGS").await {
            Ok(rows) => rows,
            // Without the privilege to list binlogs there is no figure.
            Err(_) => return Ok(None),
        };
        let mut lag = 0_i64;
        let mut seen = false;
        for r in &logs {
            let (name, size): (String, i64) = (col(r, 0, ctx)?, col(r, 1, ctx)?);
            if name == file {
                seen = true;
                lag += (size - offset).max(0);
            } else if seen || name > file {
                lag += size;
            }
        }
        Ok(Some(lag))
    }
}
