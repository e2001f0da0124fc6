//! PostgreSQL's backfill statements and throttle probes: the row estimate, a chunk's upper key,
//! the range copy, replica lag and lock waiters.

use super::sql::{self, qualified};
use super::state::RunnerLock;
use super::Postgres;
use crate::adapter::BackfillSource;
use crate::catalog::Table;
use crate::seam::{Direction, Fill, KeyColumn, Load};
use crate::spec::QualifiedName;
use crate::EngineError;
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

/// The impact budget's probe: a session of its own and its prepared heartbeat.
pub struct Probe {
    db: Client,
    beat: tokio_postgres::Statement,
    migration: String,
}

impl crate::adapter::CommitProbe for Postgres {
    type Probe = Probe;

    /// A plain session (the server's default `synchronous_commit`, as the application's) and
    /// the migration's row in `splice.heartbeat`.
    async fn open_probe(&self, migration: &str) -> Result<Probe, EngineError> {
        let db = super::connect(self.url()).await?;
        db.execute(
            "INSERT INTO splice.heartbeat (migration) VALUES ($1) ON CONFLICT DO NOTHING",
            &[&migration],
        )
        .await
        .map_err(|e| EngineError::db("creating the impact budget's heartbeat row", e))?;
        let beat = db
            .prepare("UPDATE splice.heartbeat SET beats = beats + 1 WHERE migration = $1")
            .await
            .map_err(|e| EngineError::db("preparing the impact budget's heartbeat", e))?;
        Ok(Probe {
            db,
            beat,
            migration: migration.to_string(),
        })
    }

    async fn beat(probe: &mut Probe) -> Result<(), EngineError> {
        probe
            .db
            .execute(&probe.beat, &[&probe.migration])
            .await
            .map_err(|e| EngineError::db("committing the impact budget's heartbeat", e))?;
        Ok(())
    }
}

/// The first `n` columns of `row` (a key as text), if there is a row.
fn key_of(
    row: Option<tokio_postgres::Row>,
    n: usize,
    ctx: &'static str,
) -> Result<Option<Vec<String>>, EngineError> {
    let Some(row) = row else { return Ok(None) };
    (0..n)
        .map(|i| row.try_get::<_, String>(i))
        .collect::<Result<Vec<String>, _>>()
        .map(Some)
        .map_err(|e| EngineError::db(ctx, e))
}

impl BackfillSource for Postgres {
    /// The planner's row estimate: counting would read the whole table once more. A table never
    /// analyzed (reltuples < 0) is counted.
    async fn estimate_rows(&self, db: &Client, table: &Table) -> Result<i64, EngineError> {
        Ok(db
            .query_one(
                &format!(
                    "SELECT CASE WHEN c.reltuples < 0 THEN (SELECT count(*) FROM {}) \
                     ELSE c.reltuples::bigint END FROM pg_class c WHERE c.oid = $1::oid",
                    qualified(&table.name)
                ),
                &[&table.oid],
            )
            .await
            .map_err(|e| EngineError::db("estimating the source rows", e))?
            .get(0))
    }

    /// The key `offset` rows after `after` (the first key when `None`): a chunk's upper bound.
    async fn chunk_upper(
        &self,
        db: &Client,
        dir: &Direction,
        after: Option<&[String]>,
        offset: i64,
    ) -> Result<Option<Vec<String>>, EngineError> {
        let probe = sql::range_boundary(dir, after.is_some());
        let mut params: Vec<&(dyn ToSql + Sync)> = after
            .into_iter()
            .flatten()
            .map(|v| v as &(dyn ToSql + Sync))
            .collect();
        params.push(&offset);
        let row = db
            .query_opt(&probe, &params)
            .await
            .map_err(|e| EngineError::db("finding the end of a backfill chunk", e))?;
        key_of(
            row,
            dir.key.len(),
            "reading the end of a backfill chunk as text",
        )
    }

    async fn last_key(
        &self,
        db: &Client,
        table: &QualifiedName,
        key: &[KeyColumn],
    ) -> Result<Option<Vec<String>>, EngineError> {
        let ctx = "finding a table's highest key";
        let row = db
            .query_opt(&sql::last_key(table, key), &[])
            .await
            .map_err(|e| EngineError::db(ctx, e))?;
        key_of(row, key.len(), ctx)
    }

    /// Copies the key range `(lower, upper]` in one `INSERT … SELECT`; returns the rows written.
    ///
    /// Fenced: the chunk's transaction first share-locks the migration's state row at `runner`'s
    /// fencing token. A runner taking over bumps the token with an UPDATE of that row, which waits
    /// for this chunk to commit, and only then starts its own capture; after that, this runner
    /// finds its token stale and copies nothing. So a stale chunk can never land after the new
    /// runner's applier deleted one of its rows.
    async fn copy_range(
        &self,
        db: &Client,
        runner: &RunnerLock,
        dir: &Direction,
        lower: Option<&[String]>,
        upper: Option<&[String]>,
        fill: Fill,
    ) -> Result<u64, EngineError> {
        let statement = sql::backfill_range(dir, lower.is_some(), upper.is_some(), fill);
        let params: Vec<&(dyn ToSql + Sync)> = lower
            .into_iter()
            .flatten()
            .chain(upper.into_iter().flatten())
            .map(|v| v as &(dyn ToSql + Sync))
            .collect();
        db.batch_execute("BEGIN")
            .await
            .map_err(|e| EngineError::db("starting a backfill chunk", e))?;
        let copied = async {
            let held = db
                .query_opt(
                    "SELECT 1 FROM splice.migrations WHERE name = $1 AND fence = $2 FOR SHARE",
                    &[&runner.name, &runner.fence],
                )
                .await
                .map_err(|e| EngineError::db("checking the fencing token", e))?;
            if held.is_none() {
                return Err(runner.stale());
            }
            db.execute(&statement, &params)
                .await
                .map_err(|e| EngineError::db("copying a backfill chunk", e))
        }
        .await;
        match copied {
            Ok(rows) => {
                db.batch_execute("COMMIT")
                    .await
                    .map_err(|e| EngineError::db("committing a backfill chunk", e))?;
                Ok(rows)
            }
            Err(e) => {
                // The session stays usable; the error is what matters.
                let _ = db.batch_execute("ROLLBACK").await;
                Err(e)
            }
        }
    }

    async fn refresh_statistics(
        &self,
        db: &Client,
        table: &QualifiedName,
    ) -> Result<(), EngineError> {
        // SHARE UPDATE EXCLUSIVE on the filled table only; nothing else waits for it.
        db.batch_execute(&format!("ANALYZE {}", qualified(table)))
            .await
            .map_err(|e| EngineError::db(format!("analyzing {table}"), e))
    }

    /// Replica lag (`pg_stat_replication`) and sessions waiting for a lock on `table`. The
    /// primary reports its standbys' lag itself, so `[throttle] replicas` is refused.
    async fn server_load(
        &self,
        db: &Client,
        table: &Table,
        replicas: &[String],
    ) -> Result<Load, EngineError> {
        if !replicas.is_empty() {
            return Err(replicas_refused());
        }
        let row = db
            .query_one(
                // Physical standbys only: logical walsenders (splice's own capture, other CDC
                // consumers) stream from a logical slot and replay nothing.
                "SELECT coalesce(max(extract(epoch FROM r.replay_lag)), 0)::float8,
                        (SELECT count(*) FROM pg_locks WHERE relation = $1 AND NOT granted)
                 FROM pg_stat_replication r
                 WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots s
                                   WHERE s.active_pid = r.pid AND s.slot_type = 'logical')",
                &[&table.oid],
            )
            .await
            .map_err(|e| EngineError::db("reading replica lag and lock waits", e))?;
        Ok(Load {
            replica_lag_s: row.get(0),
            replica: None,
            lock_waiters: row.get(1),
            threads_running: None,
        })
    }

    async fn session_pid(&self, db: &Client) -> Result<Option<i32>, EngineError> {
        let row = db
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .map_err(|e| EngineError::db("reading the backfill session's pid", e))?;
        Ok(Some(row.get(0)))
    }

    async fn lock_blocker(
        &self,
        db: &Client,
        pid: i32,
    ) -> Result<Option<crate::seam::LockHolder>, EngineError> {
        let row = db
            .query_opt(
                "SELECT b.pid, coalesce(b.application_name, ''),
                        left(regexp_replace(coalesce(b.query, ''), '\\s+', ' ', 'g'), 200)
                 FROM unnest(pg_blocking_pids($1)) AS w(pid)
                 JOIN pg_stat_activity b ON b.pid = w.pid
                 ORDER BY b.xact_start NULLS LAST LIMIT 1",
                &[&pid],
            )
            .await
            .map_err(|e| EngineError::db("asking which session holds the lock", e))?;
        Ok(row.map(|r| crate::seam::LockHolder {
            pid: r.get(0),
            application: r.get(1),
            query: r.get(2),
        }))
    }
}

/// `[throttle] replicas` on PostgreSQL: refused, with why and the fix.
pub(super) fn replicas_refused() -> EngineError {
    EngineError::Plan(
        "[throttle] replicas is for MySQL/MariaDB, whose primary cannot see its replicas' lag; \
         a PostgreSQL primary reports its standbys' replay lag (pg_stat_replication), which \
         splice reads: remove replicas from the file"
            .into(),
    )
}
