//! PostgreSQL's cutover swap and the DDL of contract, drop and rollback: `LOCK TABLE` under
//! `lock_timeout` in a transaction on the applier's session, renames, and the carrying over of
//! views, foreign keys, triggers, owned sequences and grants.

use super::capture::ApplierSession;
use super::sql::{qualified, quote_ident, quote_literal};
use super::state::{record_change, record_quarantine, RunnerLock};
use super::Postgres;
use crate::adapter::{Cutover, SchemaChanges};
use crate::catalog::Dependent;
use crate::error::Refusal;
use crate::seam::{Swap, SwapLock};
use crate::spec::IndexBuild;
use crate::spec::{MigrationSpec, QUARANTINE_SCHEMA};
use crate::state::{DeferredIndex, PhaseChange, QuarantineEntry};
use crate::EngineError;
use tokio_postgres::{Client, GenericClient};
use tracing::warn;

fn ddl_error(what: &str, e: tokio_postgres::Error) -> EngineError {
    EngineError::db(what.to_string(), e)
}

/// True for lock_timeout / deadlock errors worth retrying.
fn is_lock_timeout(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|c| {
        *c == tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE
            || *c == tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED
    })
}

/// Ends the swap transaction without a trace (best effort: a broken session ends it anyway).
async fn rollback(db: &Client) {
    if let Err(e) = db.batch_execute("ROLLBACK").await {
        tracing::debug!(error = %e, "rolling back the swap transaction");
    }
}

/// The sessions holding a lock on any of `tables`: pid, state, transaction age and query, for
/// the operator to end or wait for. Best effort: empty when the catalog cannot be read.
async fn lock_holders(db: &Client, tables: &[&crate::spec::QualifiedName]) -> Vec<String> {
    let names: Vec<String> = tables.iter().map(|t| qualified(t)).collect();
    let rows = db
        .query(
            "SELECT DISTINCT a.pid, coalesce(a.state, '?'), a.usename::text,
                    coalesce(extract(epoch FROM now() - a.xact_start)::float8, 0),
                    left(regexp_replace(coalesce(a.query, ''), '\\s+', ' ', 'g'), 120)
               FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
              WHERE l.granted AND l.locktype = 'relation'
                AND l.relation = ANY (SELECT to_regclass(n)::oid FROM unnest($1::text[]) n)
                AND a.pid <> pg_backend_pid()
              ORDER BY a.pid",
            &[&names],
        )
        .await;
    match rows {
        Ok(rows) => rows
            .iter()
            .map(|r| {
                let (pid, state, user, age, query): (i32, String, Option<String>, f64, String) =
                    (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
                format!(
                    "pid {pid} ({}, {state} for {age:.0}s in its transaction: {query})",
                    user.unwrap_or_default()
                )
            })
            .collect(),
        Err(e) => {
            warn!(error = %super::db_message(&e), "listing who holds the table's locks");
            Vec::new()
        }
    }
}

/// Drops the secondary indexes of the freshly created `shadow` (those no constraint backs and
/// no upsert can arbitrate on: non-unique, partial or expression indexes) and returns their
/// definitions, to be built in bulk after the backfill.
async fn defer_secondary_indexes(
    db: &Client,
    shadow: &crate::spec::QualifiedName,
) -> Result<Vec<DeferredIndex>, EngineError> {
    let rows = db
        .query(
            "SELECT c.relname::text, pg_get_indexdef(x.indexrelid)
             FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid
             WHERE x.indrelid = to_regclass($1)
               AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = x.indexrelid
                               AND k.conrelid = x.indrelid)
               AND NOT (x.indisunique AND x.indpred IS NULL AND x.indexprs IS NULL)
             ORDER BY c.relname",
            &[&qualified(shadow)],
        )
        .await
        .map_err(|e| EngineError::db("listing the new table's secondary indexes", e))?;
    let mut deferred = Vec::new();
    for r in rows {
        let index = DeferredIndex {
            name: r.get(0),
            definition: r.get(1),
        };
        db.batch_execute(&format!(
            "DROP INDEX {}.{}",
            quote_ident(&shadow.schema),
            quote_ident(&index.name)
        ))
        .await
        .map_err(|e| ddl_error("deferring a secondary index", e))?;
        deferred.push(index);
    }
    Ok(deferred)
}

/// `CREATE [UNIQUE] INDEX name …` as `CREATE [UNIQUE] INDEX CONCURRENTLY IF NOT EXISTS name …`.
fn concurrent(definition: &str) -> Option<String> {
    for prefix in ["CREATE UNIQUE INDEX ", "CREATE INDEX "] {
        if let Some(rest) = definition.strip_prefix(prefix) {
            return Some(format!("{prefix}CONCURRENTLY IF NOT EXISTS {rest}"));
        }
    }
    None
}

/// Cutover's refusal when `d` could not be carried over (nothing was swapped).
fn carry_failed(d: &Dependent, e: &tokio_postgres::Error) -> EngineError {
    Refusal::CarryOverFailed {
        object: d.to_string(),
        message: super::db_message(e),
    }
    .into()
}

/// Runs `work` in a transaction on `db`: committed when it succeeds, rolled back when not.
async fn in_transaction<T>(
    db: &Client,
    what: &str,
    work: impl std::future::Future<Output = Result<T, EngineError>>,
) -> Result<T, EngineError> {
    db.batch_execute("BEGIN")
        .await
        .map_err(|e| ddl_error(what, e))?;
    match work.await {
        Ok(v) => {
            db.batch_execute("COMMIT")
                .await
                .map_err(|e| ddl_error(what, e))?;
            Ok(v)
        }
        Err(e) => {
            rollback(db).await;
            Err(e)
        }
    }
}

/// Renames, then moves what depended on the outgoing table to the incoming one. Runs inside
/// the locked transaction: either all of it happens or none.
async fn carry_over(
    tx: &impl GenericClient,
    swap: &Swap,
    dependents: &[Dependent],
    incoming_columns: &[String],
) -> Result<Vec<String>, EngineError> {
    let mut done = Vec::new();
    let sql = format!(
        "-- splice:ignore rename-table cutover's atomic swap, under lock_timeout\n\
         ALTER TABLE {} RENAME TO {};\n\
         -- splice:ignore rename-table cutover's atomic swap, under lock_timeout\n\
         ALTER TABLE {} RENAME TO {}",
        qualified(&swap.live),
        quote_ident(&swap.outgoing_as.name),
        qualified(&swap.incoming),
        quote_ident(&swap.live.name)
    );
    tx.batch_execute(&sql)
        .await
        .map_err(|e| ddl_error("swapping the table names", e))?;
    let live = qualified(&swap.live);
    // Indexes (and the constraints they back) keep their names on whichever table has the
    // live name: each pair of same-shaped indexes trades names.
    let pairs = super::catalog::matching_indexes(tx, &swap.outgoing_as, &swap.live).await?;
    for (k, (outgoing_name, incoming_name)) in pairs.iter().enumerate() {
        let in_schema = |n: &str| format!("{}.{}", quote_ident(&swap.live.schema), quote_ident(n));
        let tmp = format!("_splice_swap_{k}");
        tx.batch_execute(&format!(
            "ALTER INDEX {} RENAME TO {};\nALTER INDEX {} RENAME TO {};\nALTER INDEX {} RENAME TO {}",
            in_schema(outgoing_name),
            quote_ident(&tmp),
            in_schema(incoming_name),
            quote_ident(outgoing_name),
            in_schema(&tmp),
            quote_ident(incoming_name),
        ))
        .await
        .map_err(|e| ddl_error(&format!("giving index {outgoing_name} its name back"), e))?;
        done.push(format!("index name {outgoing_name}"));
    }
    // Views follow the table by being re-created: dropped deepest first, created shallowest
    // first, each with its options, owner, grants and comment. CREATE OR REPLACE could not
    // change a column's type (varchar(50) → text is the common case).
    let mut views: Vec<&Dependent> = dependents
        .iter()
        .filter(|d| {
            matches!(
                d,
                Dependent::View {
                    materialized: false,
                    ..
                }
            )
        })
        .collect();
    views.sort_by_key(|d| match d {
        Dependent::View { depth, .. } => -depth,
        _ => 0,
    });
    for d in &views {
        if let Dependent::View { name, .. } = d {
            tx.batch_execute(&format!("DROP VIEW {}", qualified(name)))
                .await
                .map_err(|e| carry_failed(d, &e))?;
        }
    }
    for d in views.iter().rev() {
        if let Dependent::View {
            name,
            definition,
            options,
            extras,
            ..
        } = d
        {
            let view = qualified(name);
            let with = options
                .as_ref()
                .map(|o| format!(" WITH ({o})"))
                .unwrap_or_default();
            let mut sql = vec![format!(
                "CREATE VIEW {view}{with} AS {}",
                definition.trim_end().trim_end_matches(';')
            )];
            sql.extend(extras.iter().map(|e| e.replace("{view}", &view)));
            tx.batch_execute(&sql.join(";\n"))
                .await
                .map_err(|e| carry_failed(d, &e))?;
            done.push(d.to_string());
        }
    }
    for d in dependents {
        let stmt = match d {
            Dependent::View { .. } => None,
            Dependent::ForeignKeyIn { table, constraint, definition } => Some(format!(
                "ALTER TABLE {t} DROP CONSTRAINT {c}; ALTER TABLE {t} ADD CONSTRAINT {c} {def} NOT VALID",
                t = qualified(table),
                c = quote_ident(constraint),
                def = definition.replace(" NOT VALID", "")
            )),
            // The incoming table gets the trigger as it was (dropping the disabled copy an
            // earlier swap left on it); the outgoing table's copy is disabled, so the applier's
            // writes into it (reverse sync, or forward sync after a rollback) fire nothing.
            Dependent::Trigger { name, definition, enabled } => {
                let t = quote_ident(name);
                let state = match enabled.as_str() {
                    "D" => format!("\nALTER TABLE {live} DISABLE TRIGGER {t};"),
                    "R" => format!("\nALTER TABLE {live} ENABLE REPLICA TRIGGER {t};"),
                    "A" => format!("\nALTER TABLE {live} ENABLE ALWAYS TRIGGER {t};"),
                    _ => String::new(),
                };
                Some(format!(
                    "DROP TRIGGER IF EXISTS {t} ON {live};\n{definition};{state}\n\
                     ALTER TABLE {outgoing} DISABLE TRIGGER {t}",
                    outgoing = qualified(&swap.outgoing_as),
                ))
            }
            Dependent::OwnedSequence { sequence, column } => {
                if incoming_columns.iter().any(|c| c == column) {
                    Some(format!(
                        "ALTER SEQUENCE {seq} OWNED BY NONE;\n\
                         ALTER TABLE {live} ALTER COLUMN {col} SET DEFAULT nextval({lit}::regclass);\n\
                         ALTER SEQUENCE {seq} OWNED BY {live}.{col};\n\
                         SELECT setval({lit}::regclass, greatest((SELECT max({col}) FROM {live})::bigint, (SELECT last_value FROM {seq}), 1))",
                        seq = qualified(sequence),
                        col = quote_ident(column),
                        lit = quote_literal(&qualified(sequence)),
                    ))
                } else {
                    None
                }
            }
            Dependent::Grant { grantee, privilege } => Some(format!("GRANT {privilege} ON {live} TO {grantee}")),
            Dependent::Property { column, statements, .. } => {
                if column.as_ref().is_some_and(|c| !incoming_columns.contains(c)) {
                    None
                } else {
                    let old = qualified(&swap.outgoing_as);
                    Some(
                        statements
                            .iter()
                            .map(|s| s.replace("{table}", &live).replace("{old}", &old))
                            .collect::<Vec<_>>()
                            .join(";\n"),
                    )
                }
            }
        };
        if let Some(stmt) = stmt {
            tx.batch_execute(&stmt)
                .await
                .map_err(|e| carry_failed(d, &e))?;
            done.push(d.to_string());
        }
    }
    // Identity and serial columns of the incoming table continue after the highest key.
    tx.batch_execute(&format!(
        "DO $splice$ DECLARE r record; BEGIN
           FOR r IN SELECT a.attname, pg_get_serial_sequence({lit}, a.attname) AS seq
                    FROM pg_attribute a WHERE a.attrelid = {lit}::regclass AND a.attnum > 0
                      AND NOT a.attisdropped AND pg_get_serial_sequence({lit}, a.attname) IS NOT NULL
           LOOP
             EXECUTE format('SELECT setval(%L, greatest((SELECT max(%I) FROM %s)::bigint, 1))', r.seq, r.attname, {lit});
           END LOOP;
         END $splice$",
        lit = quote_literal(&live)
    ))
    .await
    .map_err(|e| ddl_error("advancing the new table's sequences", e))?;
    Ok(done)
}

impl SchemaChanges for Postgres {
    /// Creates the shadow table (unless it exists), defers its secondary indexes, and records
    /// the phase change, in one transaction under the lock timeout.
    async fn create_shadow(
        &self,
        db: &Client,
        spec: &MigrationSpec,
        ddl: &[String],
        lock: &RunnerLock,
        change: &PhaseChange,
    ) -> Result<Vec<DeferredIndex>, EngineError> {
        in_transaction(db, "creating the shadow table", async {
            db.batch_execute(&format!(
                "SET LOCAL lock_timeout = '{}ms'",
                spec.throttle.lock_timeout.as_millis()
            ))
            .await
            .map_err(|e| ddl_error("setting lock_timeout", e))?;
            let mut deferred = Vec::new();
            if super::catalog::table(db, &spec.shadow_table())
                .await?
                .is_none()
            {
                // One statement per round trip (extended protocol): nothing rides along.
                for statement in ddl {
                    db.execute(statement.as_str(), &[])
                        .await
                        .map_err(|e| ddl_error("creating the shadow table", e))?;
                }
                if spec.build_indexes == IndexBuild::AfterBackfill {
                    deferred = defer_secondary_indexes(db, &spec.shadow_table()).await?;
                }
            }
            let mut change = change.clone();
            if let Some(figures) = change.figures.as_object_mut() {
                figures.insert(
                    "deferred_indexes".into(),
                    serde_json::to_value(&deferred).unwrap_or_default(),
                );
            }
            record_change(db, lock, &change).await?;
            Ok(deferred)
        })
        .await
    }

    /// `CREATE INDEX CONCURRENTLY` on the shadow table: writes (the applier's) go on.
    async fn build_index(
        &self,
        db: &Client,
        spec: &MigrationSpec,
        index: &DeferredIndex,
    ) -> Result<bool, EngineError> {
        let shadow = spec.shadow_table();
        let valid: Option<bool> = db
            .query_opt(
                "SELECT x.indisvalid FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = $1 AND c.relname = $2",
                &[&shadow.schema, &index.name],
            )
            .await
            .map_err(|e| EngineError::db("looking up a deferred index", e))?
            .map(|r| r.get(0));
        let qualified_index = format!(
            "{}.{}",
            quote_ident(&shadow.schema),
            quote_ident(&index.name)
        );
        match valid {
            Some(true) => return Ok(false),
            // An interrupted concurrent build leaves an invalid index behind.
            Some(false) => db
                .batch_execute(&format!(
                    "DROP INDEX CONCURRENTLY IF EXISTS {qualified_index}"
                ))
                .await
                .map_err(|e| ddl_error("dropping an interrupted index build", e))?,
            None => {}
        }
        let concurrently = concurrent(&index.definition).ok_or_else(|| {
            EngineError::Missing(format!(
                "the recorded definition of index {} is not a CREATE INDEX: {}",
                index.name, index.definition
            ))
        })?;
        db.batch_execute(&concurrently).await.map_err(|e| {
            ddl_error(
                &format!("building index {} on the new table", index.name),
                e,
            )
        })?;
        Ok(true)
    }

    async fn drop_shadow(&self, db: &Client, spec: &MigrationSpec) -> Result<(), EngineError> {
        db.batch_execute(&format!(
            "SET lock_timeout = '{}ms'; \
             -- splice:ignore drop-table the shadow table holds only copied rows\n\
             DROP TABLE IF EXISTS {}",
            spec.throttle.lock_timeout.as_millis(),
            qualified(&spec.shadow_table())
        ))
        .await
        .map_err(|e| ddl_error("dropping the shadow table", e))
    }

    async fn quarantine(
        &self,
        db: &Client,
        spec: &MigrationSpec,
        lock: &RunnerLock,
        entry: &QuarantineEntry,
        change: &PhaseChange,
    ) -> Result<(), EngineError> {
        let ddl = format!(
            "SET LOCAL lock_timeout = '{}ms'; ALTER TABLE {} SET SCHEMA {}",
            spec.throttle.lock_timeout.as_millis(),
            qualified(&spec.retired_table()),
            quote_ident(QUARANTINE_SCHEMA)
        );
        in_transaction(db, "moving the old table into quarantine", async {
            super::catalog::ensure_own_schema(db, QUARANTINE_SCHEMA).await?;
            db.batch_execute(&ddl)
                .await
                .map_err(|e| ddl_error("moving the old table into quarantine", e))?;
            record_quarantine(db, lock, Some(entry)).await?;
            record_change(db, lock, change).await
        })
        .await
    }

    async fn restore_from_quarantine(
        &self,
        db: &Client,
        spec: &MigrationSpec,
        lock: &RunnerLock,
    ) -> Result<(), EngineError> {
        let ddl = format!(
            "SET LOCAL lock_timeout = '{}ms'; ALTER TABLE {} SET SCHEMA {}",
            spec.throttle.lock_timeout.as_millis(),
            qualified(&spec.quarantined_table()),
            quote_ident(&spec.table.schema)
        );
        in_transaction(db, "restoring the old table from quarantine", async {
            db.batch_execute(&ddl)
                .await
                .map_err(|e| ddl_error("restoring the old table from quarantine", e))?;
            record_quarantine(db, lock, None).await
        })
        .await
    }

    async fn drop_quarantined(
        &self,
        db: &Client,
        spec: &MigrationSpec,
        lock: &RunnerLock,
        change: &PhaseChange,
    ) -> Result<(), EngineError> {
        let ddl = format!(
            "SET LOCAL lock_timeout = '{}ms';\n\
             -- splice:ignore drop-table the quarantine expired (or was forced); this is the one-way door\n\
             DROP TABLE IF EXISTS {}",
            spec.throttle.lock_timeout.as_millis(),
            qualified(&spec.quarantined_table())
        );
        in_transaction(db, "dropping the quarantined table", async {
            db.batch_execute(&ddl)
                .await
                .map_err(|e| ddl_error("dropping the quarantined table", e))?;
            record_change(db, lock, change).await
        })
        .await
    }
}

impl Cutover for Postgres {
    /// Begins the swap transaction and locks both tables; `false` when the lock timed out.
    async fn lock_for_swap(
        &self,
        applier: &mut ApplierSession,
        spec: &MigrationSpec,
        swap: &Swap,
        hold_budget: std::time::Duration,
    ) -> Result<SwapLock, EngineError> {
        let db = applier.db();
        db.batch_execute("BEGIN")
            .await
            .map_err(|e| EngineError::db("starting cutover", e))?;
        // The server ends the transaction (and frees the table) if this process stops
        // answering: no statement and no idle gap inside it may outlast the hold budget.
        if let Err(e) = db
            .batch_execute(&format!(
                "SET LOCAL lock_timeout = '{}ms'; SET LOCAL statement_timeout = '{budget}ms'; \
                 SET LOCAL idle_in_transaction_session_timeout = '{budget}ms'",
                spec.throttle.lock_timeout.as_millis(),
                budget = hold_budget.as_millis()
            ))
            .await
        {
            rollback(db).await;
            return Err(ddl_error("setting the swap's timeouts", e));
        }
        let lock_sql = format!(
            "LOCK TABLE {}, {} IN ACCESS EXCLUSIVE MODE",
            qualified(&swap.live),
            qualified(&swap.incoming)
        );
        if let Err(e) = db.batch_execute(&lock_sql).await {
            rollback(db).await;
            if is_lock_timeout(&e) {
                return Ok(SwapLock::TimedOut {
                    holders: lock_holders(db, &[&swap.live, &swap.incoming]).await,
                });
            }
            return Err(ddl_error("locking the table for cutover", e));
        }
        applier.set_in_swap(true);
        Ok(SwapLock::Locked)
    }

    /// Renames, carries dependents over, commits. On failure the transaction is rolled back.
    async fn finish_swap(
        &self,
        applier: &mut ApplierSession,
        swap: &Swap,
        dependents: &[Dependent],
        incoming_columns: &[String],
        lock: &RunnerLock,
        change: &PhaseChange,
    ) -> Result<Result<Vec<String>, Vec<String>>, EngineError> {
        applier.set_in_swap(false);
        let db = applier.db();
        let swapped = async {
            let carried = carry_over(db, swap, dependents, incoming_columns).await?;
            // The phase change commits with the swap: a crash leaves both or neither.
            record_change(db, lock, change).await?;
            Ok(carried)
        };
        let carried = match swapped.await {
            Ok(c) => c,
            Err(e) => {
                rollback(db).await;
                return Err(e);
            }
        };
        db.batch_execute("COMMIT")
            .await
            .map_err(|e| EngineError::db("committing the swap", e))?;
        Ok(Ok(carried))
    }

    async fn validate_incoming(
        &self,
        applier: &mut ApplierSession,
        swap: &Swap,
    ) -> Result<Vec<String>, EngineError> {
        let db = applier.db();
        let rows = db
            .query(
                "SELECT i.conname::text FROM pg_constraint i
                 WHERE i.conrelid = to_regclass($1) AND NOT i.convalidated
                   AND EXISTS (SELECT 1 FROM pg_constraint o
                               WHERE o.conrelid = to_regclass($2) AND o.conname = i.conname
                                 AND o.convalidated)
                 ORDER BY 1",
                &[&qualified(&swap.incoming), &qualified(&swap.live)],
            )
            .await
            .map_err(|e| EngineError::db("listing constraints to validate", e))?;
        let mut done = Vec::new();
        for r in rows {
            let name: String = r.get(0);
            // SHARE UPDATE EXCLUSIVE on the incoming table: writes go on.
            db.batch_execute(&format!(
                "ALTER TABLE {} VALIDATE CONSTRAINT {}",
                qualified(&swap.incoming),
                quote_ident(&name)
            ))
            .await
            .map_err(|e| {
                EngineError::from(Refusal::CarryOverFailed {
                    object: format!("constraint {name}"),
                    message: super::db_message(&e),
                })
            })?;
            done.push(name);
        }
        Ok(done)
    }

    async fn abort_swap(&self, applier: &mut ApplierSession) {
        applier.set_in_swap(false);
        rollback(applier.db()).await;
    }

    /// Foreign keys were re-created NOT VALID under the lock; validate them now (SHARE UPDATE
    /// EXCLUSIVE: writes continue).
    async fn settle_carried_over(&self, db: &Client, dependents: &[Dependent]) {
        for d in dependents {
            if let Dependent::ForeignKeyIn {
                table, constraint, ..
            } = d
            {
                let sql = format!(
                    "ALTER TABLE {} VALIDATE CONSTRAINT {}",
                    qualified(table),
                    quote_ident(constraint)
                );
                if let Err(e) = db.batch_execute(&sql).await {
                    warn!(%table, constraint, error = %super::db_message(&e), "validating a carried-over foreign key failed; it stays NOT VALID");
                }
            }
        }
    }
}
