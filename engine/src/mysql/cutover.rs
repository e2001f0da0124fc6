//! MySQL's cut-over: a lock, the drain, and a rename queued ahead of the application.
//! `RENAME TABLE` is refused under `LOCK TABLES` (MariaDB 10.11: error 1192), so the session
//! that locks is not the one that renames:
//!
//! 1. a locking session of its own takes `LOCK TABLES live READ` under `lock_wait_timeout`
//!    (the application's writes wait, its reads go on); the server ends the session (and its
//!    lock) if this process stops answering for longer than the hold budget (`wait_timeout`);
//! 2. the applier drains the stream on its own session, in transactions of its own (the live
//!    table is only read, the incoming one is not locked);
//! 3. a third session issues `RENAME TABLE live TO retired, incoming TO live`. It takes its
//!    metadata locks in name order: the incoming and the retired names (free), then it queues
//!    for the live table's lock, and the application's statements queue behind it. A probe
//!    confirms it holds the retired name (a lock on that name cannot be had at once), and only
//!    then the locking session unlocks: the rename runs before any of the application's
//!    statements, so no write reaches the old table after the drain. Both renames are one
//!    atomic statement: the live name is never missing.
//!
//! Why no sentry table (gh-ost's) under the retired name: with it dropped under the lock just
//! before unlocking, as gh-ost does, a write queued behind the lock could commit on the old
//! table between the drop and the rename (seen on MariaDB 10.11 in the binlog, about one
//! cutover in six under the tests' mixed write load), and it never reached the new table. The
//! sentry only guarded against a rename issued before the drain was done; here it is issued
//! after, once the locking session is seen still holding the lock.
//! A crash before the rename is issued leaves the old table live and intact; after it, the
//! rename runs once the dead session's lock is gone, with everything drained.
//!
//! The phase change is recorded right after the rename (MySQL DDL cannot join a transaction);
//! after a crash between the two, [`Cutover::swapped_unrecorded`] tells the engine to record it.

use super::capture::ApplierSession;
use super::state::{fenced, record_change, RunnerLock};
use super::{col, connect, quote_name, triggers, MySql, Session};
use crate::adapter::Cutover;
use crate::catalog::Dependent;
use crate::seam::{Swap, SwapLock};
use crate::spec::MigrationSpec;
use crate::state::PhaseChange;
use crate::EngineError;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};
use std::time::{Duration, Instant};

/// The comment that marked the sentry table earlier versions put under the retired name (the
/// only table of that name splice drops).
const SENTRY_COMMENT: &str = "splice cut-over sentry";

/// How long the rename may take to show up waiting for the locks before the swap gives up.
const RENAME_QUEUED_WITHIN: Duration = Duration::from_secs(5);
/// How long the rename may take to queue for the live table's lock once seen waiting.
const RENAME_AT_LIVE_WITHIN: Duration = Duration::from_secs(2);

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

/// Makes sure the retired name is free for the rename: drops a sentry an earlier version of
/// splice left there, and refuses a real table of that name.
async fn ensure_outgoing_free(conn: &mut Conn, swap: &Swap) -> Result<(), EngineError> {
    let name = &swap.outgoing_as;
    let existing: Option<Row> = conn
        .exec_first(
            "SELECT TABLE_COMMENT FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (&name.schema, &name.name),
        )
        .await
        .map_err(|e| EngineError::my("looking at the retired name", &e))?;
    match existing {
        Some(r) if col::<String>(&r, 0, "reading a table's comment")? == SENTRY_COMMENT => {
            drop_sentry(conn, swap).await;
            Ok(())
        }
        Some(_) => Err(EngineError::Missing(format!(
            "{name} exists; the swap would rename the live table to that name — rename or drop \
             it, then cut over again"
        ))),
        None => Ok(()),
    }
}

/// Whether a rename takes the metadata lock of table `a` before that of table `b` (same
/// database): in the order of their names' bytes, lower-cased first when the server folds
/// names (`folded`).
fn sorts_first(a: &str, b: &str, folded: bool) -> bool {
    if folded {
        a.to_lowercase().as_bytes() < b.to_lowercase().as_bytes()
    } else {
        a.as_bytes() < b.as_bytes()
    }
}

/// Ends the statement of connection `id` (a queued rename that must not run).
async fn kill_query(conn: &mut Conn, id: i64) {
    let _ = conn.query_drop(format!("KILL QUERY {id}")).await;
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

/// Ends a locked swap: unlocks and closes the locking session.
async fn unlock(applier: &mut ApplierSession) {
    if let Some(mut conn) = applier.swap_lock.take() {
        let _ = conn.query_drop("UNLOCK TABLES").await;
        let _ = conn.disconnect().await;
    }
}

impl Cutover for MySql {
    async fn lock_for_swap(
        &self,
        applier: &mut ApplierSession,
        spec: &MigrationSpec,
        swap: &Swap,
        hold_budget: Duration,
    ) -> Result<SwapLock, EngineError> {
        unlock(applier).await;
        let mut db = connect(&self.target).await?;
        db.query_drop(format!(
            "SET SESSION lock_wait_timeout = {}, wait_timeout = {}",
            spec.throttle.lock_timeout.as_secs().max(1),
            hold_budget.as_secs().max(1)
        ))
        .await
        .map_err(|e| EngineError::my("preparing the swap's locking session", &e))?;
        match ensure_outgoing_free(&mut db, swap).await {
            Ok(()) => {}
            Err(EngineError::Database { ref message, .. }) if message.contains("1205") => {
                return Ok(SwapLock::TimedOut {
                    holders: lock_holders(&mut applier.marker_db).await,
                })
            }
            Err(e) => return Err(e),
        }
        let locked = db
            .query_drop(format!("LOCK TABLES {} READ", quote_name(&swap.live)))
            .await;
        match locked {
            Ok(()) => {
                let folded: Option<i64> =
                    db.query_first("SELECT @@lower_case_table_names")
                        .await
                        .map_err(|e| EngineError::my("reading lower_case_table_names", &e))?;
                applier.swap_names_folded = folded.unwrap_or(0) != 0;
                applier.swap_lock = Some(db);
                applier.swap_lock_timeout = spec.throttle.lock_timeout.as_secs().max(1);
                Ok(SwapLock::Locked)
            }
            Err(e) => {
                let holders = lock_holders(&mut applier.marker_db).await;
                let _ = db.disconnect().await;
                if is_lock_timeout(&e) {
                    Ok(SwapLock::TimedOut { holders })
                } else {
                    Err(EngineError::my("locking the tables for the swap", &e))
                }
            }
        }
    }

    /// Queues the rename on a third session, unlocks once it waits for the live table, then
    /// records `change` once the rename has run. On failure the old table is
    /// live, nothing was swapped and nothing recorded.
    async fn finish_swap(
        &self,
        applier: &mut ApplierSession,
        swap: &Swap,
        _dependents: &[Dependent],
        _incoming_columns: &[String],
        lock: &RunnerLock,
        change: &PhaseChange,
    ) -> Result<Result<Vec<String>, Vec<String>>, EngineError> {
        // The live table's triggers as they are now, onto the incoming table: the drain is
        // done and the application's writes wait, so none of them fires on a write of splice's.
        let carried = match self.carry_triggers(applier, swap).await {
            Ok(carried) => carried,
            Err(e) => {
                self.uncarry_triggers(applier, swap).await;
                unlock(applier).await;
                return Err(e);
            }
        };
        crate::fault::point("swap.triggers_carried");
        let renamed = self.rename_while_locked(applier, swap).await;
        if !matches!(renamed, Ok(Ok(()))) {
            self.uncarry_triggers(applier, swap).await;
            unlock(applier).await;
        }
        match renamed {
            Ok(Ok(())) => {}
            Ok(Err(holders)) => return Ok(Err(holders)),
            Err(e) => return Err(e),
        }
        crate::fault::point("swap.renamed");
        // The outgoing table's copies go before anything writes into it (reverse sync).
        triggers::drop_all(&mut applier.marker_db, &swap.outgoing_as)
            .await
            .map_err(|e| {
                EngineError::Missing(format!(
                    "the tables were swapped, but the old table's triggers were not dropped \
                     ({e}); run the command again: it records the swap, and the triggers go \
                     before splice next writes into the old table"
                ))
            })?;
        let ctx = "recording the swap";
        let mut conn = lock.session().await;
        let (mut tx, phase) = fenced(&mut conn, lock, ctx).await?;
        record_change(&mut tx, lock, &phase, change).await?;
        tx.commit().await.map_err(|e| EngineError::my(ctx, &e))?;
        Ok(Ok(carried))
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
        unlock(applier).await;
    }

    async fn settle_carried_over(&self, _db: &Session, _dependents: &[Dependent]) {}
}

impl MySql {
    /// Creates the live table's triggers on the incoming table under their carried names
    /// (`triggers.rs`), on the marker session (the applier's own carries its origin marker).
    async fn carry_triggers(
        &self,
        applier: &mut ApplierSession,
        swap: &Swap,
    ) -> Result<Vec<String>, EngineError> {
        let conn = &mut applier.marker_db;
        let live = triggers::on_table(conn, &swap.live).await?;
        if live.is_empty() {
            return Ok(Vec::new());
        }
        conn.query_drop(format!(
            "SET SESSION lock_wait_timeout = {}",
            applier.swap_lock_timeout
        ))
        .await
        .map_err(|e| EngineError::my("bounding the triggers' locks", &e))?;
        triggers::create_carried(conn, &live, &swap.incoming).await
    }

    /// Drops what [`carry_triggers`](Self::carry_triggers) created on a swap that did not
    /// happen (best effort: an applier opened on the table drops what is left).
    async fn uncarry_triggers(&self, applier: &mut ApplierSession, swap: &Swap) {
        if let Err(e) = triggers::drop_all(&mut applier.marker_db, &swap.incoming).await {
            tracing::warn!(error = %e, table = %swap.incoming, "the triggers carried over for a swap that did not happen stay until sync resumes");
        }
    }

    /// Step 3 of the module docs; returns once the rename ran (or failed). On an error before
    /// the rename ran, the rename was not left queued: the caller unlocks and the old table
    /// stays live. `Ok(Err(holders))` when the rename waited longer than the file's
    /// `lock_timeout` for the live table (a reader of it holds it up) and gave up: nothing was
    /// swapped, and the engine retries.
    async fn rename_while_locked(
        &self,
        applier: &mut ApplierSession,
        swap: &Swap,
    ) -> Result<Result<(), Vec<String>>, EngineError> {
        // The locking session idled through the drain: make sure it still holds the lock (the
        // server ends it after `wait_timeout` of silence, and then the application may have
        // written after the drain), which also restarts that clock for the steps below.
        let alive = match applier.swap_lock.as_mut() {
            Some(lock) => lock.query_drop("SELECT 1").await.is_ok(),
            None => false,
        };
        if !alive {
            return Err(EngineError::Missing(
                "the swap's locking session ended before the rename; nothing was swapped — cut \
                 over again"
                    .into(),
            ));
        }
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
            .query_drop(format!(
                "SET SESSION lock_wait_timeout = {}",
                applier.swap_lock_timeout
            ))
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
                kill_query(&mut applier.marker_db, renamer_id).await;
                return Err(EngineError::Missing(format!(
                    "the rename did not queue for the locks within {}s; nothing was swapped — \
                     cut over again",
                    RENAME_QUEUED_WITHIN.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        crate::fault::point("swap.rename_queued");
        // Unlock only once the rename waits on the live table's lock alone. When the live name
        // sorts first, its first wait is that one (seen above). Otherwise it holds the retired
        // name by then: a lock on that name that cannot be had at once proves it.
        let deadline = Instant::now() + RENAME_AT_LIVE_WITHIN;
        let folded = applier.swap_names_folded;
        let live_first = sorts_first(&swap.live.name, &swap.outgoing_as.name, folded)
            && sorts_first(&swap.live.name, &swap.incoming.name, folded);
        if !live_first {
            loop {
                if task.is_finished() {
                    break;
                }
                let probe = applier
                    .marker_db
                    .query_drop(format!(
                        "LOCK TABLES {} READ NOWAIT",
                        quote_name(&swap.outgoing_as)
                    ))
                    .await;
                match probe {
                    Err(e) if is_lock_timeout(&e) => break,
                    Ok(()) => {
                        let _ = applier.marker_db.query_drop("UNLOCK TABLES").await;
                    }
                    Err(_) => {}
                }
                if Instant::now() > deadline {
                    // Stop the rename itself before the lock goes.
                    task.abort();
                    kill_query(&mut applier.marker_db, renamer_id).await;
                    return Err(EngineError::Missing(format!(
                        "the rename did not reach the live table's lock within {}s; nothing was \
                     swapped — cut over again",
                        RENAME_AT_LIVE_WITHIN.as_secs()
                    )));
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        crate::fault::point("swap.rename_at_live");
        unlock(applier).await;
        match task.await {
            Ok(Ok(())) => Ok(Ok(())),
            Ok(Err(e)) if is_lock_timeout(&e) => {
                Ok(Err(lock_holders(&mut applier.marker_db).await))
            }
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

#[cfg(test)]
mod tests {
    use super::sorts_first;

    #[test]
    fn a_rename_takes_the_locks_in_the_servers_name_order() {
        // Lower-case names sort after `_splice_…`: the rename takes splice's names first.
        assert!(!sorts_first("orders", "_splice_orders_v2_old", false));
        // An upper-case first letter sorts before `_` as given, after it folded.
        assert!(sorts_first("Orders", "_splice_orders_v2_old", false));
        assert!(!sorts_first("Orders", "_splice_orders_v2_old", true));
        assert!(sorts_first("2024_orders", "_splice_x_old", true));
    }
}
