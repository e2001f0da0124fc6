//! MySQL's DDL (the shadow table, quarantine, drop; each under `lock_wait_timeout`) and
//! backfill: the row estimate, a chunk's upper key, the fenced range copy, and the throttle's probes.

use super::capture::{again_after, failed, repeatable_read, Failed};
use super::sql::{self, bound_params};
use super::state::{fenced, record_change, record_quarantine, RunnerLock};
use super::{col, quote_name, MySql, Session};
use crate::adapter::{BackfillSource, SchemaChanges};
use crate::catalog::Table;
use crate::seam::{Direction, Fill, KeyColumn, Load};
use crate::spec::{IndexBuild, MigrationSpec, QualifiedName, QUARANTINE_SCHEMA};
use crate::state::{DeferredIndex, PhaseChange, QuarantineEntry};
use crate::EngineError;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};

/// Whether `name` is a base table (not a temporary one: information_schema does not list
/// those).
async fn table_exists(conn: &mut Conn, name: &QualifiedName) -> Result<bool, EngineError> {
    let row: Option<Row> = conn
        .exec_first(
            "SELECT COUNT(*) FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (&name.schema, &name.name),
        )
        .await
        .map_err(|e| EngineError::my(format!("looking for {name}"), &e))?;
    Ok(match row {
        Some(r) => col::<i64>(&r, 0, "looking for a table")? > 0,
        None => false,
    })
}

/// `SET SESSION lock_wait_timeout` to the spec's bound (whole seconds, at least one: the
/// server's unit).
async fn bound_locks(conn: &mut Conn, spec: &MigrationSpec) -> Result<(), EngineError> {
    conn.query_drop(format!(
        "SET SESSION lock_wait_timeout = {}",
        spec.throttle.lock_timeout.as_secs().max(1)
    ))
    .await
    .map_err(|e| EngineError::my("setting lock_wait_timeout", &e))
}

impl SchemaChanges for MySql {
    /// MySQL's DDL commits on its own, so the table and the phase change are two commits: the
    /// table first (unless it exists), then the change. A crash between them leaves the table
    /// and the phase `planned`; expand run again finds the table and records the change.
    ///
    /// Under `build_indexes = "after_backfill"` the plain secondary indexes (`KEY`: not
    /// unique, not full-text or spatial) are recorded with the change and only then dropped,
    /// so no crash can lose one: before the record they are all still on the table (a re-run
    /// reads them again), after it their definitions are stored. A drop that fails leaves them
    /// to be maintained by the copy (slower, never wrong).
    async fn create_shadow(
        &self,
        db: &Session,
        spec: &MigrationSpec,
        ddl: &[String],
        lock: &RunnerLock,
        change: &PhaseChange,
    ) -> Result<Vec<DeferredIndex>, EngineError> {
        let shadow = spec.shadow_table();
        let deferred = {
            let mut conn = db.lock().await;
            bound_locks(&mut conn, spec).await?;
            if !table_exists(&mut conn, &shadow).await? {
                for statement in ddl {
                    conn.query_drop(statement.as_str())
                        .await
                        .map_err(|e| EngineError::my("creating the shadow table", &e))?;
                }
            }
            // What cutover will do with the live table's triggers, tried now on a copy.
            let trial = spec.trial_table();
            super::triggers::try_on_copy(&mut conn, &spec.table, &shadow, &trial)
                .await
                .map_err(|e| {
                    EngineError::Plan(format!(
                        "cutover could not carry the table's triggers over to the new table: \
                         {e}\nFix the trigger (or its definer's privileges) and run expand \
                         again; `splice rollback {}` removes the new table",
                        spec.name
                    ))
                })?;
            if spec.build_indexes == IndexBuild::AfterBackfill {
                plain_secondary_indexes(&mut conn, &shadow).await?
            } else {
                Vec::new()
            }
        };
        let mut change = change.clone();
        if let Some(figures) = change.figures.as_object_mut() {
            figures.insert(
                "deferred_indexes".into(),
                serde_json::to_value(&deferred).unwrap_or_default(),
            );
        }
        let ctx = "recording the expand";
        {
            let mut conn = lock.session().await;
            let (mut tx, phase) = fenced(&mut conn, lock, ctx).await?;
            record_change(&mut tx, lock, &phase, &change).await?;
            tx.commit().await.map_err(|e| EngineError::my(ctx, &e))?;
        }
        if !deferred.is_empty() {
            let drops = deferred
                .iter()
                .map(|i| format!("DROP KEY {}", super::quote_ident(&i.name)))
                .collect::<Vec<_>>()
                .join(", ");
            let dropped = db
                .lock()
                .await
                .query_drop(format!("ALTER TABLE {} {drops}", quote_name(&shadow)))
                .await;
            if let Err(e) = dropped {
                tracing::warn!(error = %e, "the new table's secondary indexes stay during the copy: dropping them failed");
            }
        }
        Ok(deferred)
    }

    /// `ALTER TABLE … ADD KEY …` on the shadow table (InnoDB builds it in place, sorted, and
    /// lets the applier's writes go on), unless an index of that name exists. An interrupted
    /// build leaves nothing behind (InnoDB drops a half-built index on recovery).
    async fn build_index(
        &self,
        db: &Session,
        spec: &MigrationSpec,
        index: &DeferredIndex,
    ) -> Result<bool, EngineError> {
        let shadow = spec.shadow_table();
        let mut conn = db.lock().await;
        let exists: Option<Row> = conn
            .exec_first(
                "SELECT COUNT(*) FROM information_schema.STATISTICS \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND INDEX_NAME = ?",
                (&shadow.schema, &shadow.name, &index.name),
            )
            .await
            .map_err(|e| EngineError::my("looking up a deferred index", &e))?;
        if let Some(r) = exists {
            if col::<i64>(&r, 0, "looking up a deferred index")? > 0 {
                return Ok(false);
            }
        }
        if !index.definition.starts_with("ALTER TABLE ") {
            return Err(EngineError::Missing(format!(
                "the recorded definition of index {} is not an ALTER TABLE … ADD KEY: {}",
                index.name, index.definition
            )));
        }
        bound_locks(&mut conn, spec).await?;
        conn.query_drop(index.definition.as_str())
            .await
            .map_err(|e| {
                EngineError::my(
                    format!("building index {} on the new table", index.name),
                    &e,
                )
            })?;
        Ok(true)
    }

    async fn drop_shadow(&self, db: &Session, spec: &MigrationSpec) -> Result<(), EngineError> {
        let mut conn = db.lock().await;
        bound_locks(&mut conn, spec).await?;
        conn.query_drop(format!(
            "DROP TABLE IF EXISTS {}",
            quote_name(&spec.shadow_table())
        ))
        .await
        .map_err(|e| EngineError::my("dropping the shadow table", &e))
    }

    /// Moves the retired table into `splice_quarantine` (`RENAME TABLE` across databases),
    /// then records the entry and the change. Two commits (MySQL DDL cannot join a
    /// transaction): a re-run after a crash between them finds the table moved and records.
    async fn quarantine(
        &self,
        db: &Session,
        spec: &MigrationSpec,
        lock: &RunnerLock,
        entry: &QuarantineEntry,
        change: &PhaseChange,
    ) -> Result<(), EngineError> {
        let (retired, quarantined) = (spec.retired_table(), spec.quarantined_table());
        {
            let mut conn = db.lock().await;
            bound_locks(&mut conn, spec).await?;
            conn.query_drop(format!(
                "CREATE DATABASE IF NOT EXISTS {}",
                super::quote_ident(QUARANTINE_SCHEMA)
            ))
            .await
            .map_err(|e| EngineError::my("creating the quarantine database", &e))?;
            let moved = !table_exists(&mut conn, &retired).await?
                && table_exists(&mut conn, &quarantined).await?;
            if !moved {
                // A trigger cannot leave its database; the old table's were carried over at
                // cutover and dropped from it then, unless a crash came in between.
                super::triggers::drop_all(&mut conn, &retired).await?;
                conn.query_drop(format!(
                    "RENAME TABLE {} TO {}",
                    quote_name(&retired),
                    quote_name(&quarantined)
                ))
                .await
                .map_err(|e| EngineError::my("moving the old table into quarantine", &e))?;
            }
        }
        let ctx = "recording the quarantine";
        let mut conn = lock.session().await;
        let (mut tx, phase) = fenced(&mut conn, lock, ctx).await?;
        record_quarantine(&mut tx, lock, Some(entry)).await?;
        record_change(&mut tx, lock, &phase, change).await?;
        tx.commit().await.map_err(|e| EngineError::my(ctx, &e))
    }

    /// Moves the quarantined table back under its retired name, then clears the entry (a
    /// re-run after a crash between them finds it moved back and clears).
    async fn restore_from_quarantine(
        &self,
        db: &Session,
        spec: &MigrationSpec,
        lock: &RunnerLock,
    ) -> Result<(), EngineError> {
        let (retired, quarantined) = (spec.retired_table(), spec.quarantined_table());
        {
            let mut conn = db.lock().await;
            bound_locks(&mut conn, spec).await?;
            if table_exists(&mut conn, &quarantined).await? {
                conn.query_drop(format!(
                    "RENAME TABLE {} TO {}",
                    quote_name(&quarantined),
                    quote_name(&retired)
                ))
                .await
                .map_err(|e| EngineError::my("restoring the old table from quarantine", &e))?;
            }
        }
        let ctx = "clearing the quarantine";
        let mut conn = lock.session().await;
        let (mut tx, _) = fenced(&mut conn, lock, ctx).await?;
        record_quarantine(&mut tx, lock, None).await?;
        tx.commit().await.map_err(|e| EngineError::my(ctx, &e))
    }

    /// Drops the quarantined table (the one-way door), then records the change.
    async fn drop_quarantined(
        &self,
        db: &Session,
        spec: &MigrationSpec,
        lock: &RunnerLock,
        change: &PhaseChange,
    ) -> Result<(), EngineError> {
        {
            let mut conn = db.lock().await;
            bound_locks(&mut conn, spec).await?;
            conn.query_drop(format!(
                "DROP TABLE IF EXISTS {}",
                quote_name(&spec.quarantined_table())
            ))
            .await
            .map_err(|e| EngineError::my("dropping the quarantined table", &e))?;
        }
        let ctx = "recording the drop";
        let mut conn = lock.session().await;
        let (mut tx, phase) = fenced(&mut conn, lock, ctx).await?;
        record_change(&mut tx, lock, &phase, change).await?;
        tx.commit().await.map_err(|e| EngineError::my(ctx, &e))
    }
}

/// The plain secondary indexes of `table` (`KEY …` in `SHOW CREATE TABLE`: neither unique nor
/// full-text nor spatial), each with the statement that adds it back as the server wrote it
/// (prefix lengths, order, comments and all).
async fn plain_secondary_indexes(
    conn: &mut Conn,
    table: &QualifiedName,
) -> Result<Vec<DeferredIndex>, EngineError> {
    let ctx = "listing the new table's secondary indexes";
    let row: Option<Row> = conn
        .query_first(format!("SHOW CREATE TABLE {}", quote_name(table)))
        .await
        .map_err(|e| EngineError::my(ctx, &e))?;
    let Some(row) = row else {
        return Err(EngineError::Missing(format!(
            "{table}: SHOW CREATE TABLE returned nothing"
        )));
    };
    let create: String = col(&row, 1, ctx)?;
    Ok(key_clauses(&create)
        .into_iter()
        .map(|(name, clause)| DeferredIndex {
            name,
            definition: format!("ALTER TABLE {} ADD {clause}", quote_name(table)),
        })
        .collect())
}

/// The `KEY `name` (…)…` clauses of a `SHOW CREATE TABLE` text: (name, clause).
fn key_clauses(create: &str) -> Vec<(String, String)> {
    create
        .lines()
        .filter_map(|line| {
            let clause = line.trim().trim_end_matches(',');
            let quoted = clause.strip_prefix("KEY `")?;
            // The name ends at the first single backtick (a doubled one is part of it).
            let mut name = String::new();
            let mut chars = quoted.chars().peekable();
            while let Some(c) = chars.next() {
                if c == '`' {
                    if chars.peek() == Some(&'`') {
                        chars.next();
                    } else {
                        return Some((name, clause.to_string()));
                    }
                }
                name.push(c);
            }
            None
        })
        .collect()
}

/// The impact budget's probe: a session of its own and its prepared heartbeat.
pub struct Probe {
    db: mysql_async::Conn,
    beat: mysql_async::Statement,
    migration: String,
}

impl crate::adapter::CommitProbe for MySql {
    type Probe = Probe;

    /// A plain session (autocommit, the server's default `innodb_flush_log_at_trx_commit` and
    /// `sync_binlog`, as the application's commits) and the migration's row in
    /// `splice.heartbeat`.
    async fn open_probe(&self, migration: &str) -> Result<Probe, EngineError> {
        let mut db = super::connect(&self.target).await?;
        db.exec_drop(
            "INSERT IGNORE INTO `splice`.`heartbeat` (migration) VALUES (?)",
            (migration,),
        )
        .await
        .map_err(|e| EngineError::my("creating the impact budget's heartbeat row", &e))?;
        let beat = db
            .prep("UPDATE `splice`.`heartbeat` SET beats = beats + 1 WHERE migration = ?")
            .await
            .map_err(|e| EngineError::my("preparing the impact budget's heartbeat", &e))?;
        Ok(Probe {
            db,
            beat,
            migration: migration.to_string(),
        })
    }

    /// One autocommit UPDATE: its commit is durable (redo log, and the binlog when it is on).
    async fn beat(probe: &mut Probe) -> Result<(), EngineError> {
        probe
            .db
            .exec_drop(&probe.beat, (&probe.migration,))
            .await
            .map_err(|e| EngineError::my("committing the impact budget's heartbeat", &e))
    }
}

/// One chunk's statements inside its transaction: the fencing check (`None`: the token is
/// stale, nothing copied), then the copy (and under [`Fill::Mirror`] the removal of rows the
/// source lost); returns the rows read.
async fn copy_in(
    tx: &mut mysql_async::Transaction<'_>,
    runner: &RunnerLock,
    dir: &Direction,
    copy: &sql::Bound,
    lower: Option<&[String]>,
    upper: Option<&[String]>,
    fill: Fill,
) -> Result<Option<u64>, Failed> {
    let ctx = "copying a backfill chunk";
    let held: Option<Row> = tx
        .exec_first(
            "SELECT 1 FROM `splice`.`migrations` WHERE name = ? AND fence = ? \
             LOCK IN SHARE MODE",
            (&runner.name, runner.fence),
        )
        .await
        .map_err(failed("checking the fencing token"))?;
    if held.is_none() {
        return Ok(None);
    }
    tx.exec_drop(copy.sql.as_str(), bound_params(copy, lower, upper))
        .await
        .map_err(failed(ctx))?;
    // ON DUPLICATE KEY UPDATE counts 2 for a changed row and 0 for an unchanged one: the rows
    // read are what progress means.
    let info = tx.info().to_string();
    let mut written = tx.affected_rows();
    if fill == Fill::Mirror {
        let gone = sql::delete_gone_in_range(dir, lower.is_some(), upper.is_some());
        tx.exec_drop(gone.sql.as_str(), bound_params(&gone, lower, upper))
            .await
            .map_err(failed(ctx))?;
    }
    // "Records: N  Duplicates: D  Warnings: W"
    if let Some(records) = info
        .split_whitespace()
        .skip_while(|w| *w != "Records:")
        .nth(1)
        .and_then(|n| n.parse::<u64>().ok())
    {
        written = records;
    }
    Ok(Some(written))
}

/// The first `n` columns of `row` (a key as text), if there is a row.
fn key_of(row: Option<Row>, n: usize, ctx: &str) -> Result<Option<Vec<String>>, EngineError> {
    let Some(row) = row else { return Ok(None) };
    (0..n)
        .map(|i| col::<String>(&row, i, ctx))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

impl BackfillSource for MySql {
    /// InnoDB's estimate; counted when it is small (InnoDB's estimate of a small or new table
    /// is often 0).
    async fn estimate_rows(&self, db: &Session, table: &Table) -> Result<i64, EngineError> {
        let ctx = "estimating the source rows";
        let mut conn = db.lock().await;
        let row: Option<Row> = conn
            .exec_first(
                "SELECT COALESCE(TABLE_ROWS, 0) FROM information_schema.TABLES \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (&table.name.schema, &table.name.name),
            )
            .await
            .map_err(|e| EngineError::my(ctx, &e))?;
        let estimate = match row {
            Some(r) => col::<i64>(&r, 0, ctx)?,
            None => 0,
        };
        if estimate >= 100_000 {
            return Ok(estimate);
        }
        let row: Option<Row> = conn
            .query_first(format!("SELECT COUNT(*) FROM {}", quote_name(&table.name)))
            .await
            .map_err(|e| EngineError::my(ctx, &e))?;
        match row {
            Some(r) => col(&r, 0, ctx),
            None => Ok(0),
        }
    }

    async fn chunk_upper(
        &self,
        db: &Session,
        dir: &Direction,
        after: Option<&[String]>,
        offset: i64,
    ) -> Result<Option<Vec<String>>, EngineError> {
        let ctx = "finding the end of a backfill chunk";
        let bound = sql::range_boundary(dir, after.is_some(), offset);
        let params = bound_params(&bound, after, None);
        let row: Option<Row> = db
            .lock()
            .await
            .exec_first(bound.sql, params)
            .await
            .map_err(|e| EngineError::my(ctx, &e))?;
        key_of(row, dir.key.len(), ctx)
    }

    async fn last_key(
        &self,
        db: &Session,
        table: &QualifiedName,
        key: &[KeyColumn],
    ) -> Result<Option<Vec<String>>, EngineError> {
        let ctx = "finding a table's highest key";
        let row: Option<Row> = db
            .lock()
            .await
            .query_first(sql::last_key(table, key))
            .await
            .map_err(|e| EngineError::my(ctx, &e))?;
        key_of(row, key.len(), ctx)
    }

    /// Copies the key range `(lower, upper]` in one `INSERT … SELECT`; returns the rows read.
    ///
    /// Fenced: the chunk's transaction first reads the migration's state row in share mode at
    /// `runner`'s token. A runner taking over bumps the token with an UPDATE of that row, which
    /// waits for this chunk to commit, and only then opens its own change stream; after that
    /// this runner finds its token stale and copies nothing.
    async fn copy_range(
        &self,
        db: &Session,
        runner: &RunnerLock,
        dir: &Direction,
        lower: Option<&[String]>,
        upper: Option<&[String]>,
        fill: Fill,
    ) -> Result<u64, EngineError> {
        let copy = sql::backfill_range(dir, lower.is_some(), upper.is_some(), fill);
        let mut conn = db.lock().await;
        let mut attempt = 1;
        loop {
            // REPEATABLE READ whatever the server's default: there `INSERT … SELECT` reads the
            // source with shared locks, so it waits for a transaction still committing a change
            // the applier left to this chunk (under READ COMMITTED it would read around it).
            let mut tx = conn
                .start_transaction(repeatable_read())
                .await
                .map_err(|e| EngineError::my("copying a backfill chunk", &e))?;
            let copied = copy_in(&mut tx, runner, dir, &copy, lower, upper, fill).await;
            let done = match copied {
                Ok(Some(written)) => tx
                    .commit()
                    .await
                    .map(|()| written)
                    .map_err(failed("committing a backfill chunk")),
                Ok(None) => return Err(runner.stale()),
                Err(e) => {
                    // Best effort, as for the applier: a deadlock already rolled back.
                    let _ = tx.rollback().await;
                    Err(e)
                }
            };
            match done {
                Ok(written) => return Ok(written),
                // An application transaction locked rows in another order than the chunk's
                // key order (or held them too long): the chunk is idempotent, copy it again.
                Err(e) => again_after(
                    e,
                    &mut attempt,
                    "a backfill chunk met a lock conflict with another session; copying it again",
                )
                .await?,
            }
        }
    }

    async fn refresh_statistics(
        &self,
        db: &Session,
        table: &QualifiedName,
    ) -> Result<(), EngineError> {
        db.lock()
            .await
            .query_drop(format!("ANALYZE TABLE {}", quote_name(table)))
            .await
            .map_err(|e| EngineError::my(format!("analyzing {table}"), &e))
    }

    /// Replica lag: of this server when it is itself a replica, and of each replica listed
    /// in `[throttle] replicas` (asked directly: a primary cannot see its replicas' lag); an
    /// unreachable replica, or one not replicating, counts as unknown lag. Then InnoDB lock
    /// waits on `table` (see [`lock_waiters`]), and `Threads_running`.
    async fn server_load(
        &self,
        db: &Session,
        table: &Table,
        replicas: &[String],
    ) -> Result<Load, EngineError> {
        let (mut lag, mut replica) = (0.0_f64, None);
        for address in replicas {
            let (behind, problem) = self.listed_replica_lag(address).await;
            if behind > lag || (behind >= lag && replica.is_none()) {
                lag = behind;
                replica = Some(match problem {
                    Some(p) => format!("{address}: {p}"),
                    None => address.clone(),
                });
            }
        }
        let mut conn = db.lock().await;
        if let Some(own) = replication_lag(&mut conn).await {
            if own > lag {
                lag = own;
                replica = None;
            }
        }
        let lock_waiters = lock_waiters(&mut conn, &table.name).await;
        let running: Option<Row> = conn
            .query_first("SHOW GLOBAL STATUS LIKE 'Threads_running'")
            .await
            .map_err(|e| EngineError::my("reading Threads_running", &e))?;
        let threads_running = match running {
            Some(r) => col::<String>(&r, 1, "reading Threads_running")?
                .trim()
                .parse()
                .ok(),
            None => None,
        };
        Ok(Load {
            replica_lag_s: if lag.is_finite() { lag } else { 1e9 },
            replica,
            lock_waiters,
            threads_running,
        })
    }

    async fn session_pid(&self, db: &Session) -> Result<Option<i32>, EngineError> {
        let row: Option<Row> = db
            .lock()
            .await
            .query_first("SELECT CONNECTION_ID()")
            .await
            .map_err(|e| EngineError::my("reading the backfill session's id", &e))?;
        Ok(match row {
            Some(r) => {
                Some(col::<i64>(&r, 0, "reading the session id")?.clamp(0, i32::MAX as i64) as i32)
            }
            None => None,
        })
    }
}

/// How far behind this session's server replicates (the slowest of its replication
/// connections: `SHOW ALL SLAVES STATUS` on MariaDB, `SHOW REPLICA STATUS` on MySQL), infinite
/// when one is stopped or broken (`Seconds_Behind_Master` NULL); `None` when it replicates
/// from nothing (or the statement is not allowed).
async fn replication_lag(conn: &mut Conn) -> Option<f64> {
    let status = match conn.query::<Row, _>("SHOW ALL SLAVES STATUS").await {
        Ok(rows) => Ok(rows),
        Err(_) => conn.query::<Row, _>("SHOW REPLICA STATUS").await,
    };
    let rows = status.ok()?;
    let mut lag: Option<f64> = None;
    for r in rows {
        let behind = r
            .columns_ref()
            .iter()
            .position(|c| {
                c.name_str() == "Seconds_Behind_Master" || c.name_str() == "Seconds_Behind_Source"
            })
            .and_then(|i| r.get_opt::<Option<f64>, usize>(i))
            .and_then(Result::ok)
            .flatten();
        // NULL: replication stopped or broken: as bad as it gets.
        lag = Some(lag.unwrap_or(0.0).max(behind.unwrap_or(f64::INFINITY)));
    }
    lag
}

/// How long a listed replica may take to answer before its lag counts as unknown.
const REPLICA_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl MySql {
    /// The lag of the replica at `address` (a session kept open between calls), and why it
    /// is unknown when it is (then the lag is infinite).
    async fn listed_replica_lag(&self, address: &str) -> (f64, Option<String>) {
        let mut sessions = self.replica_sessions.lock().await;
        if !sessions.contains_key(address) {
            let url = super::url_at(self.url(), address);
            let opened = match cdc::mysql::MySqlTarget::from_url(&url) {
                Ok(target) => tokio::time::timeout(REPLICA_TIMEOUT, super::connect(&target))
                    .await
                    .unwrap_or_else(|_| {
                        Err(EngineError::Missing(format!(
                            "no answer within {} s",
                            REPLICA_TIMEOUT.as_secs()
                        )))
                    }),
                Err(e) => Err(e.into()),
            };
            match opened {
                Ok(conn) => {
                    sessions.insert(address.to_string(), conn);
                }
                Err(e) => return (f64::INFINITY, Some(format!("unreachable: {e}"))),
            }
        }
        let Some(conn) = sessions.get_mut(address) else {
            return (f64::INFINITY, Some("unreachable".into()));
        };
        match tokio::time::timeout(REPLICA_TIMEOUT, replication_lag(conn)).await {
            Ok(Some(lag)) if lag.is_finite() => (lag, None),
            Ok(Some(_)) => (
                f64::INFINITY,
                Some("replication stopped or broken (Seconds_Behind_Master is NULL)".into()),
            ),
            Ok(None) => {
                // Not a replica, or the session broke: open a new one next time.
                sessions.remove(address);
                (
                    f64::INFINITY,
                    Some(
                        "reports no replication (is it a replica of this server? does the \
                         user have REPLICATION CLIENT / BINLOG MONITOR there?)"
                            .into(),
                    ),
                )
            }
            Err(_) => {
                sessions.remove(address);
                (
                    f64::INFINITY,
                    Some(format!("no answer within {} s", REPLICA_TIMEOUT.as_secs())),
                )
            }
        }
    }
}

/// How many sessions wait for a row lock on `table`: from InnoDB's lock-wait tables in
/// `information_schema` (MariaDB, MySQL 5.7), else `performance_schema` (MySQL 8 dropped the
/// former). 0, with a warning, when neither answers (a user without `PROCESS`, or
/// `performance_schema` off on MySQL 8): that pause is then off, the others still work.
async fn lock_waiters(conn: &mut mysql_async::Conn, table: &QualifiedName) -> i64 {
    let innodb = conn
        .exec_first::<Row, _, _>(
            "SELECT COUNT(*) FROM information_schema.INNODB_LOCK_WAITS w \
             JOIN information_schema.INNODB_LOCKS l ON l.lock_id = w.requested_lock_id \
             WHERE l.lock_table = ?",
            (quote_name(table),),
        )
        .await;
    let counted = match innodb {
        Ok(row) => Ok(row),
        Err(_) => {
            conn.exec_first::<Row, _, _>(
                "SELECT COUNT(*) FROM performance_schema.data_lock_waits w \
                 JOIN performance_schema.data_locks l \
                   ON l.ENGINE_LOCK_ID = w.REQUESTING_ENGINE_LOCK_ID \
                 WHERE l.OBJECT_SCHEMA = ? AND l.OBJECT_NAME = ?",
                (&table.schema, &table.name),
            )
            .await
        }
    };
    let read = counted
        .map_err(|e| e.to_string())
        .and_then(|row| match row {
            Some(r) => col::<i64>(&r, 0, "reading lock waits").map_err(|e| e.to_string()),
            None => Ok(0),
        });
    read.unwrap_or_else(|why| {
        warn_once_lock_waits(&why);
        0
    })
}

/// The lock-wait pause is off: said once per process, not at every throttle check.
fn warn_once_lock_waits(why: &str) {
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        tracing::warn!(
            "cannot count sessions waiting for locks ({why}); the backfill will not pause for \
             them. Fix: GRANT PROCESS ON *.* to splice's user (and on MySQL 8, \
             performance_schema = ON)"
        );
    });
}

#[cfg(test)]
mod tests {
    use super::key_clauses;

    #[test]
    fn only_plain_keys_are_deferred_each_with_its_whole_clause() {
        let create = "CREATE TABLE `t` (\n  `id` bigint(20) NOT NULL,\n  `k` bigint(20) NOT NULL,\n  \
                      `c` varchar(20) NOT NULL,\n  PRIMARY KEY (`id`),\n  UNIQUE KEY `u` (`c`),\n  \
                      KEY `k_1` (`k`),\n  KEY `odd``name` (`c`(8) DESC,`k`) COMMENT 'x',\n  \
                      FULLTEXT KEY `f` (`c`),\n  CONSTRAINT `chk` CHECK (`k` >= 0)\n) ENGINE=InnoDB";
        assert_eq!(
            key_clauses(create),
            vec![
                ("k_1".to_string(), "KEY `k_1` (`k`)".to_string()),
                (
                    "odd`name".to_string(),
                    "KEY `odd``name` (`c`(8) DESC,`k`) COMMENT 'x'".to_string()
                ),
            ]
        );
    }
}
