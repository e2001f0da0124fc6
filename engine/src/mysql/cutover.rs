//! MySQL's cut-over: gh-ost's sentry swap. `RENAME TABLE` is refused under `LOCK TABLES`
//! (MariaDB 10.11: error 1192), so the session that locks is not the one that renames:
//!
//! 1. the applier's session creates a sentry table under the retired name, then (autocommit
//!    off) `LOCK TABLES` the live table, the incoming table (each also under the aliases the
//!    applier's statements use), the sentry and `splice.cdc_marker`, under
//!    `lock_wait_timeout`; the server ends the session (and its locks) if this process stops
//!    answering for longer than the hold budget (`wait_timeout`);
//! 2. the stream is drained inside the lock on that session (the engine's applier);
//! 3. it commits (the locks stay), a second session issues `RENAME TABLE live TO retired,
//!    incoming TO live`, which waits for the locks (and is served before the application's
//!    queued statements); once it is seen waiting, the first session drops the sentry and
//!    unlocks, and the rename runs. Both renames are one atomic statement: the live name is
//!    never missing. If the first session dies before dropping the sentry, the rename fails on
//!    the sentry's name and the old table stays live and intact.
//!
//! The phase change is recorded right after the rename (MySQL DDL cannot join a transaction);
//! after a crash between the two, [`Cutover::swapped_unrecorded`] tells the engine to record it.

use super::capture::ApplierSession;
use super::state::{fenced, record_change, RunnerLock};
use super::{col, connect, quote_name, MySql, Session};
use crate::adapter::Cutover;
use crate::catalog::Dependent;
use crate::seam::{Swap, SwapLock};
use crate::spec::MigrationSpec;
use crate::state::PhaseChange;
use crate::EngineError;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};
use std::time::{Duration, Instant};

/// The comment that marks a sentry table (the only table of the retired name splice drops).
const SENTRY_COMMENT: &str = "splice cut-over sentry";

/// How long the rename may take to show up waiting for the locks before the swap gives up.
const RENAME_QUEUED_WITHIN: Duration = Duration::from_secs(5);

fn is_lock_timeout(e: &mysql_async::Error) -> bool {
    // ER_LOCK_WAIT_TIMEOUT
    matches!(e, mysql_async::Error::Server(s) if s.code == 1205)
}

/// The sessions in a transaction or waiting for a metadata lock: who held the tables.
async fn lock_holders(conn: &mut Conn) -> Vec<String> {
    let rows: Vec<Row> = conn
        .query(
            "SELECT p.ID, CONCAT(p.USER, '@', p.HOST), p.TIME, COALESCE(p.STATE, ''), \
                    LEFT(COALESCE(p.INFO, ''), 80) \
             FROM information_schema.PROCESSLIST p \
             LEFT JOIN information_schema.INNODB_TRX t ON t.trx_mysql_thread_id = p.ID \
             WHERE p.ID <> CONNECTION_ID() AND (t.trx_id IS NOT NULL \
                   OR p.STATE LIKE '%metadata lock%')",
        )
        .await
        .unwrap_or_default();
    rows.iter()
        .filter_map(|r| {
            let id: i64 = col(r, 0, "").ok()?;
            let who: String = col(r, 1, "").ok()?;
            let secs: i64 = col(r, 2, "").ok()?;
            let state: String = col(r, 3, "").ok()?;
            let query: String = col(r, 4, "").ok()?;
            Some(format!(
                "connection {id} ({who}, {secs}s{}{})",
                if state.is_empty() {
                    String::new()
                } else {
                    format!(", {state}")
                },
                if query.is_empty() {
                    String::new()
                } else {
                    format!(": {query}")
                }
            ))
        })
        .collect()
}

/// Creates the sentry under the retired name, or finds one an earlier attempt left; refuses a
/// real table of that name.
async fn ensure_sentry(conn: &mut Conn, swap: &Swap) -> Result<(), EngineError> {
    let name = &swap.outgoing_as;
    let existing: Option<Row> = conn
        .exec_first(
            "SELECT TABLE_COMMENT FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (&name.schema, &name.name),
        )
        .await
        .map_err(|e| EngineError::my("looking for the cut-over sentry", &e))?;
    match existing {
        Some(r) if col::<String>(&r, 0, "reading the sentry's comment")? == SENTRY_COMMENT => Ok(()),
        Some(_) => Err(EngineError::Missing(format!(
            "{name} exists and is not splice's cut-over sentry; the swap would rename the live \
             table to that name — rename or drop it, then cut over again"
        ))),
        None => conn
            .query_drop(format!(
                "CREATE TABLE {} (sentry INT NOT NULL PRIMARY KEY) ENGINE=InnoDB COMMENT = '{SENTRY_COMMENT}'",
                quote_name(name)
            ))
            .await
            .map_err(|e| EngineError::my("creating the cut-over sentry", &e)),
    }
}

/// Drops the sentry if it is one (never a real table of the retired name).
async fn drop_sentry(conn: &mut Conn, swap: &Swap) {
    let name = &swap.outgoing_as;
    let is_sentry: Option<Row> = conn
        .exec_first(
            "SELECT 1 FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND TABLE_COMMENT = ?",
            (&name.schema, &name.name, SENTRY_COMMENT),
        )
        .await
        .unwrap_or(None);
    if is_sentry.is_some() {
        let _ = conn
            .query_drop(format!("DROP TABLE IF EXISTS {}", quote_name(name)))
            .await;
    }
}

/// Ends a locked swap on the applier's session: rolls back, unlocks, autocommit on again.
async fn unlock(conn: &mut Conn) {
    let _ = conn.query_drop("ROLLBACK").await;
    let _ = conn.query_drop("UNLOCK TABLES").await;
    let _ = conn
        .query_drop("SET SESSION autocommit = 1, wait_timeout = @@GLOBAL.wait_timeout")
        .await;
}

impl Cutover for MySql {
    async fn lock_for_swap(
        &self,
        applier: &mut ApplierSession,
        spec: &MigrationSpec,
        swap: &Swap,
        hold_budget: Duration,
    ) -> Result<SwapLock, EngineError> {
        let db = &mut applier.db;
        db.query_drop(format!(
            "SET SESSION lock_wait_timeout = {}",
            spec.throttle.lock_timeout.as_secs().max(1)
        ))
        .await
        .map_err(|e| EngineError::my("setting lock_wait_timeout", &e))?;
        match ensure_sentry(db, swap).await {
            Ok(()) => {}
            Err(EngineError::Database { ref message, .. }) if message.contains("1205") => {
                return Ok(SwapLock::TimedOut {
                    holders: lock_holders(&mut applier.marker_db).await,
                })
            }
            Err(e) => return Err(e),
        }
        let (live, incoming) = (quote_name(&swap.live), quote_name(&swap.incoming));
        db.query_drop(format!(
            "SET SESSION autocommit = 0, wait_timeout = {}",
            hold_budget.as_secs().max(1)
        ))
        .await
        .map_err(|e| EngineError::my("preparing the swap's session", &e))?;
        let locked = db
            .query_drop(format!(
                "LOCK TABLES {live} WRITE, {live} AS s WRITE, {incoming} WRITE, \
                 {incoming} AS t WRITE, {} WRITE, `splice`.`cdc_marker` WRITE",
                quote_name(&swap.outgoing_as)
            ))
            .await;
        match locked {
            Ok(()) => {
                applier.in_swap = true;
                Ok(SwapLock::Locked)
            }
            Err(e) if is_lock_timeout(&e) => {
                unlock(db).await;
                let holders = lock_holders(&mut applier.marker_db).await;
                drop_sentry(&mut applier.db, swap).await;
                Ok(SwapLock::TimedOut { holders })
            }
            Err(e) => {
                unlock(db).await;
                drop_sentry(&mut applier.db, swap).await;
                Err(EngineError::my("locking the tables for the swap", &e))
            }
        }
    }

    /// Commits what was drained, queues the rename on a second session, drops the sentry and
    /// unlocks, then records `change` once the rename has run. On failure the old table is
    /// live, nothing was swapped and nothing recorded.
    async fn finish_swap(
        &self,
        applier: &mut ApplierSession,
        swap: &Swap,
        _dependents: &[Dependent],
        _incoming_columns: &[String],
        lock: &RunnerLock,
        change: &PhaseChange,
    ) -> Result<Vec<String>, EngineError> {
        let result = self.rename_while_locked(applier, swap).await;
        applier.in_swap = false;
        if let Err(e) = result {
            unlock(&mut applier.db).await;
            drop_sentry(&mut applier.db, swap).await;
            return Err(e);
        }
        crate::fault::point("swap.renamed");
        let ctx = "recording the swap";
        let mut conn = lock.session().await;
        let (mut tx, phase) = fenced(&mut conn, lock, ctx).await?;
        record_change(&mut tx, lock, &phase, change).await?;
        tx.commit().await.map_err(|e| EngineError::my(ctx, &e))?;
        Ok(Vec::new())
    }

    /// Nothing is created NOT VALID on MySQL.
    async fn validate_incoming(
        &self,
        _applier: &mut ApplierSession,
        _swap: &Swap,
    ) -> Result<Vec<String>, EngineError> {
        Ok(Vec::new())
    }

    /// The incoming table's name is gone and the outgoing name holds a real table (not the
    /// sentry): only the rename does that.
    async fn swapped_unrecorded(&self, db: &Session, swap: &Swap) -> Result<bool, EngineError> {
        let mut conn = db.lock().await;
        let row: Option<Row> = conn
            .exec_first(
                "SELECT \
                   (SELECT COUNT(*) FROM information_schema.TABLES \
                     WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?), \
                   (SELECT COUNT(*) FROM information_schema.TABLES \
                     WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND TABLE_COMMENT <> ?)",
                (
                    &swap.incoming.schema,
                    &swap.incoming.name,
                    &swap.outgoing_as.schema,
                    &swap.outgoing_as.name,
                    SENTRY_COMMENT,
                ),
            )
            .await
            .map_err(|e| EngineError::my("looking for an unrecorded swap", &e))?;
        let ctx = "looking for an unrecorded swap";
        Ok(match row {
            Some(r) => col::<i64>(&r, 0, ctx)? == 0 && col::<i64>(&r, 1, ctx)? == 1,
            None => false,
        })
    }

    async fn abort_swap(&self, applier: &mut ApplierSession) {
        applier.in_swap = false;
        unlock(&mut applier.db).await;
    }

    async fn settle_carried_over(&self, _db: &Session, _dependents: &[Dependent]) {}
}

impl MySql {
    /// Steps 3 of the module docs; returns once the rename ran (or failed).
    async fn rename_while_locked(
        &self,
        applier: &mut ApplierSession,
        swap: &Swap,
    ) -> Result<(), EngineError> {
        applier
            .db
            .query_drop("COMMIT")
            .await
            .map_err(|e| EngineError::my("committing what was drained under the lock", &e))?;
        let mut renamer = connect(&self.target).await?;
        let id_row: Option<Row> = renamer
            .query_first("SELECT CONNECTION_ID()")
            .await
            .map_err(|e| EngineError::my("opening the rename's session", &e))?;
        let renamer_id: i64 = match id_row {
            Some(r) => col(&r, 0, "reading the rename session's id")?,
            None => 0,
        };
        renamer
            .query_drop("SET SESSION lock_wait_timeout = 30")
            .await
            .map_err(|e| EngineError::my("opening the rename's session", &e))?;
        let rename = format!(
            "RENAME TABLE {live} TO {out}, {incoming} TO {live}",
            live = quote_name(&swap.live),
            out = quote_name(&swap.outgoing_as),
            incoming = quote_name(&swap.incoming)
        );
        let task = tokio::spawn(async move {
            let result = renamer.query_drop(rename).await;
            let _ = renamer.disconnect().await;
            result
        });
        // Unlock only once the rename waits for the locks: it is then served before the
        // application's statements queued behind them.
        let deadline = Instant::now() + RENAME_QUEUED_WITHIN;
        loop {
            if task.is_finished() {
                break;
            }
            let waiting: Option<Row> = applier
                .marker_db
                .exec_first(
                    "SELECT 1 FROM information_schema.PROCESSLIST \
                     WHERE ID = ? AND STATE LIKE '%metadata lock%'",
                    (renamer_id,),
                )
                .await
                .map_err(|e| EngineError::my("watching the rename", &e))?;
            if waiting.is_some() {
                break;
            }
            if Instant::now() > deadline {
                task.abort();
                return Err(EngineError::Missing(format!(
                    "the rename did not queue for the locks within {}s; nothing was swapped — \
                     cut over again",
                    RENAME_QUEUED_WITHIN.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        crate::fault::point("swap.rename_queued");
        applier
            .db
            .query_drop(format!("DROP TABLE {}", quote_name(&swap.outgoing_as)))
            .await
            .map_err(|e| EngineError::my("dropping the cut-over sentry", &e))?;
        unlock(&mut applier.db).await;
        match task.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(EngineError::my(
                "renaming the tables (nothing was swapped; the old table is live)",
                &e,
            )),
            Err(e) => Err(EngineError::Missing(format!(
                "the rename's task failed: {e}"
            ))),
        }
    }
}
