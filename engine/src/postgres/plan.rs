//! PostgreSQL's side of planning: the shadow table's DDL (the target's CREATE TABLE renamed,
//! parsed with sqlparser's PostgreSQL dialect), expand's script, compiling mapping expressions,
//! and the rendering of every phase's SQL for `splice plan`.

use super::sql::{self, qualified, quote_ident, quote_literal};
use super::{catalog, Postgres};
use crate::adapter::{ImpliedMappings, Planner};
use crate::catalog::{Column, Dependent, Structure, Table};
use crate::seam::{Direction, Fill, KeyRange, Plan, Side};
use crate::spec::{MigrationSpec, QualifiedName, Shape};
use crate::EngineError;
use sqlparser::ast::{ObjectName, ObjectNamePart, Statement};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use tokio_postgres::Client;

fn last_ident(name: &ObjectName) -> String {
    match name.0.last() {
        Some(ObjectNamePart::Identifier(id)) if id.quote_style.is_some() => id.value.clone(),
        Some(ObjectNamePart::Identifier(id)) => id.value.to_lowercase(),
        _ => String::new(),
    }
}

fn first_words(s: &str) -> String {
    s.split_whitespace().take(4).collect::<Vec<_>>().join(" ")
}

/// Target mode: the target's CREATE TABLE under the shadow name; CREATE INDEX statements on
/// the target name follow it.
fn target_ddl(spec: &MigrationSpec, ddl: &str) -> Result<Vec<String>, EngineError> {
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, ddl).map_err(|e| {
        EngineError::Plan(format!(
            "target: cannot parse the CREATE TABLE ({e}); give one CREATE TABLE statement, \
             optionally followed by CREATE INDEX statements on it"
        ))
    })?;
    let shadow = spec.shadow_table();
    let shadow_name = ObjectName(vec![
        ObjectNamePart::Identifier(sqlparser::ast::Ident::with_quote('"', &shadow.schema)),
        ObjectNamePart::Identifier(sqlparser::ast::Ident::with_quote('"', &shadow.name)),
    ]);
    let mut out = Vec::new();
    let mut target_name: Option<String> = None;
    for mut st in statements {
        match &mut st {
            Statement::CreateTable(ct) if target_name.is_none() => {
                if ct.temporary || ct.query.is_some() {
                    return Err(EngineError::Plan(
                        "target: must be a plain CREATE TABLE with column definitions \
                         (not TEMP, not AS SELECT)"
                            .into(),
                    ));
                }
                target_name = Some(last_ident(&ct.name));
                ct.name = shadow_name.clone();
                ct.if_not_exists = false;
            }
            Statement::CreateIndex(ci) if target_name.is_some() => {
                if Some(last_ident(&ci.table_name)) != target_name {
                    return Err(EngineError::Plan(format!(
                        "target: CREATE INDEX on {} — indexes in target must be on the new table",
                        ci.table_name
                    )));
                }
                ci.table_name = shadow_name.clone();
                // A fresh, empty table: a plain build takes no lock anyone waits on.
                ci.concurrently = false;
            }
            other => {
                return Err(EngineError::Plan(format!(
                    "target: unexpected statement `{}`; give one CREATE TABLE statement, \
                     optionally followed by CREATE INDEX statements on it",
                    first_words(&other.to_string())
                )))
            }
        }
        out.push(format!("{st}"));
    }
    if target_name.is_none() {
        return Err(EngineError::Plan(
            "target: no CREATE TABLE statement; give the new shape as CREATE TABLE".into(),
        ));
    }
    Ok(out)
}

impl Planner for Postgres {
    async fn structures(&self, db: &Client, table: &Table) -> Result<Vec<Structure>, EngineError> {
        catalog::structures(db, table.oid).await
    }

    fn implied_mappings(&self, spec: &MigrationSpec) -> Result<ImpliedMappings, EngineError> {
        match &spec.shape {
            Shape::Target(_) => Ok(ImpliedMappings::default()),
            Shape::Alter(alter) => super::alter::implied_mappings(spec, alter),
        }
    }

    fn cast_expression(&self, expr: &str, sql_type: &str) -> String {
        format!("({expr})::{sql_type}")
    }

    fn source_column(&self, column: &str, sql_type: &str) -> String {
        format!("s.{}::{sql_type}", quote_ident(column))
    }

    /// The same type and collation, an integer widened, or a string type exchanged for another
    /// under the same collation.
    fn sorts_alike(&self, source: &Column, target: &Column) -> bool {
        fn family(sql_type: &str) -> &str {
            match sql_type {
                "smallint" | "integer" | "bigint" => "integer",
                "text" => "string",
                t if t.starts_with("character varying") => "string",
                t => t,
            }
        }
        source.collation == target.collation
            && (source.sql_type == target.sql_type
                || family(&source.sql_type) == family(&target.sql_type))
    }

    async fn begin_planning(&self, db: &Client) -> Result<(), EngineError> {
        db.batch_execute("BEGIN")
            .await
            .map_err(|e| EngineError::db("starting the planning transaction", e))
    }

    async fn end_planning(&self, db: &Client) -> Result<(), EngineError> {
        db.batch_execute("ROLLBACK")
            .await
            .map_err(|e| EngineError::db("ending the planning transaction", e))
    }

    async fn describe_table(
        &self,
        db: &Client,
        name: &QualifiedName,
    ) -> Result<Option<Table>, EngineError> {
        catalog::table(db, name).await
    }

    async fn has_unique_key(
        &self,
        db: &Client,
        table: &Table,
        columns: &[String],
    ) -> Result<bool, EngineError> {
        catalog::has_unique_index_on(db, table.oid, columns).await
    }

    async fn dependents(&self, db: &Client, table: &Table) -> Result<Vec<Dependent>, EngineError> {
        catalog::dependents(db, table).await
    }

    /// Rewrites the target DDL so it creates the shadow table: the CREATE TABLE's name becomes the
    /// shadow name; CREATE INDEX statements on the target name follow it.
    async fn shadow_ddl(
        &self,
        db: &Client,
        spec: &MigrationSpec,
    ) -> Result<Vec<String>, EngineError> {
        // Refused at plan, before anything is created (sync's throttle refuses it too).
        if !spec.throttle.replicas.is_empty() {
            return Err(super::backfill::replicas_refused());
        }
        match &spec.shape {
            Shape::Target(ddl) => target_ddl(spec, ddl),
            Shape::Alter(alter) => super::alter::shadow_ddl(db, spec, alter).await,
        }
    }

    /// The statements expand runs, as one script, linted before they run.
    fn expand_script(&self, spec: &MigrationSpec, plan: &Plan) -> String {
        let mut s = format!(
            "SET lock_timeout = {};\n",
            quote_literal(&format!("{}ms", spec.throttle.lock_timeout.as_millis()))
        );
        for ddl in super::state::SCHEMA_DDL {
            s.push_str(ddl);
            s.push_str(";\n");
        }
        for ddl in &plan.expand_ddl {
            s.push_str(ddl);
            s.push_str(";\n");
        }
        s
    }

    /// Compiles one mapping expression (and its cast) against the real table, inside the planning
    /// transaction, without running it; `Err` carries the server's message.
    ///
    /// The expression is prepared (extended protocol), which takes exactly one statement: an
    /// expression that closes the SELECT and appends statements of its own (`1; COMMIT; DROP
    /// TABLE x`) is refused by the server before anything runs, where a simple-protocol query
    /// would have run them all, outside the planning transaction.
    async fn check_expression(
        &self,
        db: &Client,
        from: &QualifiedName,
        expr: &str,
    ) -> Result<(), String> {
        let sql = format!("SELECT {expr} FROM {} s LIMIT 0", qualified(from));
        db.prepare(&sql).await.map(|_| ()).map_err(|e| {
            let message = super::db_message(&e);
            if e.code() == Some(&tokio_postgres::error::SqlState::SYNTAX_ERROR) {
                format!(
                    "{message}; a mapping is one SQL expression over the old row, never a \
                     statement or several"
                )
            } else {
                message
            }
        })
    }

    /// Prepares (compiles without running) every statement backfill, the applier and verify
    /// build from `dir`, inside the planning transaction.
    async fn check_statements(
        &self,
        db: &Client,
        dir: &Direction,
        purpose: &str,
    ) -> Result<(), EngineError> {
        let every_row = KeyRange::default();
        let statements = [
            (
                "backfill chunk",
                sql::backfill_range(dir, true, true, Fill::Missing),
            ),
            ("chunk boundary", sql::range_boundary(dir, true)),
            (
                "refill after a restore from quarantine",
                sql::backfill_range(dir, true, true, Fill::Mirror),
            ),
            ("re-sync of captured keys", sql::resync_keys(dir)),
            ("delete after a TRUNCATE", sql::delete_orphans(dir)),
            ("verify's key sample", sql::sample_keys(dir)),
            (
                "verify's read of the old rows",
                sql::verify_range_select(dir, Side::Source, &every_row, true),
            ),
            (
                "verify's read of the new rows",
                sql::verify_range_select(dir, Side::Target, &every_row, true),
            ),
        ];
        for (what, statement) in statements {
            db.prepare(&statement).await.map_err(|e| {
                EngineError::Plan(format!(
                    "{purpose}: the {what} does not compile: {}\n  statement: {statement}",
                    super::db_message(&e)
                ))
            })?;
        }
        Ok(())
    }

    /// Runs the shadow DDL inside the planning transaction, one statement at a time through
    /// the extended protocol, so no statement can carry another.
    async fn try_shadow_ddl(&self, db: &Client, ddl: &[String]) -> Result<(), EngineError> {
        for statement in ddl {
            db.execute(statement.as_str(), &[]).await.map_err(|e| {
                EngineError::Plan(format!(
                    "target: the new shape does not build: {}\n  statement: {statement}",
                    super::db_message(&e)
                ))
            })?;
        }
        Ok(())
    }

    /// Human-readable: every phase with the SQL it runs and the locks it takes.
    fn render_plan(&self, plan: &Plan) -> String {
        let spec = &plan.spec;
        let mut s = String::new();
        let src = qualified(&plan.source.name);
        let shadow = qualified(&spec.shadow_table());
        let retired = qualified(&spec.retired_table());
        s.push_str(&format!(
            "migration {}: {} ({} columns, {}) → new shape ({} columns)\n",
            spec.name,
            plan.source.name,
            plan.source.columns.len(),
            match plan.source.approx_rows {
                n if n < 0 => "rows: not analyzed".to_string(),
                n => format!("~{n} rows"),
            },
            plan.target.columns.len()
        ));
        s.push_str(&format!(
            "key: ({})\n\nmapping old → new ([up]):\n",
            plan.key
                .iter()
                .map(|k| k.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        for (col, expr) in &plan.forward.columns {
            s.push_str(&format!("  {col} = {expr}\n"));
        }
        match &plan.reverse {
            Some(rev) => {
                s.push_str("mapping new → old ([down], reverse sync after cutover):\n");
                for (col, expr) in &rev.columns {
                    s.push_str(&format!("  {col} = {expr}\n"));
                }
            }
            None => {
                s.push_str("reverse sync: IMPOSSIBLE — rollback after cutover is not available\n")
            }
        }
        for n in &plan.reverse_notes {
            s.push_str(&format!("  note: {n}\n"));
        }
        if !plan.not_carried.is_empty() {
            s.push_str(
                "\nNOT CARRIED — the live table has these and the new shape does not; expand \
                 and cutover refuse until target has them or the file declares them dropped \
                 (drop_indexes / drop_constraints):\n",
            );
            for x in &plan.not_carried {
                s.push_str(&format!("  {x}: {}\n", x.shape));
            }
        }
        if !plan.dropped.is_empty() {
            s.push_str("\ndropped on purpose (declared in the file, or by the ALTER):\n");
            for x in &plan.dropped {
                s.push_str(&format!("  {x}\n"));
            }
        }
        s.push_str("\ndepends on the table (carried over at cutover):\n");
        if plan.dependents.is_empty() {
            s.push_str("  nothing\n");
        }
        for d in &plan.dependents {
            s.push_str(&format!("  {d}\n"));
        }
        s.push_str("\n1. expand — creates the shadow table; locks: none on the live table\n");
        for ddl in &plan.expand_ddl {
            s.push_str(&format!("   {ddl};\n"));
        }
        s.push_str(&format!(
            "\n2. sync — publication + logical slot {slot} on {src} (brief SHARE UPDATE EXCLUSIVE for \
             the publication), then chunked backfill; locks: none (each chunk is one INSERT … SELECT; \
             capture re-syncs what changed while it ran); each chunk finds its upper key, then \
             copies the key range:\n   {};\n   {}\n",
            sql::range_boundary(&plan.forward, true).replace('\n', "\n   "),
            sql::backfill_range(&plan.forward, true, true, Fill::Missing).replace('\n', "\n   "),
            slot = spec.forward_slot()
        ));
        s.push_str(&format!(
            "   each captured key is re-synced from the source of truth:\n   {}\n",
            sql::resync_keys(&plan.forward).replace('\n', "\n   ")
        ));
        s.push_str(&format!(
            "\n3. verify — BLAKE3 over canonical rows, per key range, both sides; locks: none\n   \
             COPY (SELECT <key>, <mapped columns> FROM {src} WHERE <range> ORDER BY <key>) TO STDOUT\n   \
             COPY (SELECT <key>, <columns> FROM {shadow} WHERE <range> ORDER BY <key>) TO STDOUT\n"
        ));
        s.push_str(&format!(
            "\n4. cutover — ACCESS EXCLUSIVE on {src} for the swap only (lock_timeout {}), capture \
             drained under the lock:\n   ALTER TABLE {src} RENAME TO {}; -- old shape, kept current by reverse sync\n   \
             ALTER TABLE {shadow} RENAME TO {};\n   then sequences, foreign keys, views, triggers and grants follow the new table\n",
            humantime::format_duration(spec.throttle.lock_timeout),
            quote_ident(&spec.retired_table().name),
            quote_ident(&spec.table.name)
        ));
        s.push_str(&format!(
            "\n5. contract — reverse sync stops; ALTER TABLE {retired} SET SCHEMA splice_quarantine \
             (quarantine {}); nothing is dropped\n",
            humantime::format_duration(spec.quarantine)
        ));
        s.push_str(
            "\n6. drop — DROP TABLE on the quarantined table once the quarantine expired (the only \
             one-way door)\n\nrollback — from any phase; before cutover: drop the shadow table and the \
             slot; after cutover: swap back and resume forward sync; after contract: restore from \
             quarantine and re-sync\n",
        );
        s
    }
}
