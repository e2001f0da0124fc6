//! The planner: a migration file checked against the live schema, resolved into the column
//! mappings of both directions and the exact SQL of every phase. Planning changes nothing.

use crate::catalog::{self, Dependent, Table};
use crate::spec::{quote_ident, MigrationSpec, QualifiedName};
use crate::sql::Direction;
use crate::EngineError;
use sqlparser::ast::{ObjectName, ObjectNamePart, Statement};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use tokio_postgres::Client;

/// A key column: its name and its type in the source table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyColumn {
    pub name: String,
    pub sql_type: String,
}

/// A checked, resolved migration.
#[derive(Debug, Clone)]
pub struct Plan {
    pub spec: MigrationSpec,
    pub source: Table,
    pub target: Table,
    pub key: Vec<KeyColumn>,
    /// old → new, through `up`.
    pub forward: Direction,
    /// new → old, through `down`; `None` when some NOT NULL old column has no way to be filled.
    pub reverse: Option<Direction>,
    /// Why `reverse` is `None`, or notes about columns reverse sync leaves to defaults.
    pub reverse_notes: Vec<String>,
    /// The statements expand runs to create the shadow table.
    pub expand_ddl: Vec<String>,
    pub dependents: Vec<Dependent>,
}

/// Rewrites the target DDL so it creates the shadow table: the CREATE TABLE's name becomes the
/// shadow name; CREATE INDEX statements on the target name follow it.
pub fn shadow_ddl(spec: &MigrationSpec) -> Result<Vec<String>, EngineError> {
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, &spec.target_ddl).map_err(|e| {
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

impl Plan {
    /// Checks `spec` against the live database and resolves it. When the shadow table does not
    /// exist yet it is created inside a transaction that is rolled back.
    pub async fn build(db: &mut Client, spec: &MigrationSpec) -> Result<Plan, EngineError> {
        let expand_ddl = shadow_ddl(spec)?;
        let tx = db
            .transaction()
            .await
            .map_err(|e| EngineError::db("starting the planning transaction", e))?;
        let source = catalog::table(&tx, &spec.table).await?.ok_or_else(|| {
            EngineError::Plan(format!(
                "table {} does not exist; check `table` in the migration file",
                spec.table
            ))
        })?;
        let shadow = spec.shadow_table();
        let mut target = catalog::table(&tx, &shadow).await?;
        if target.is_none() {
            for ddl in &expand_ddl {
                tx.batch_execute(ddl).await.map_err(|e| {
                    EngineError::Plan(format!(
                        "target: the new shape does not build: {}\n  statement: {ddl}",
                        crate::db_message(&e)
                    ))
                })?;
            }
            target = catalog::table(&tx, &shadow).await?;
        }
        let target = target.ok_or_else(|| {
            EngineError::Plan(format!("target: the shadow table {shadow} was not created"))
        })?;

        let key = resolve_key(&tx, spec, &source, &target).await?;
        let forward = resolve_forward(spec, &source, &target, &key)?;
        let (reverse, reverse_notes) = resolve_reverse(spec, &source, &target, &key)?;
        check_expressions(&tx, &forward, &source.name, "up").await?;
        if let Some(rev) = &reverse {
            // Before cutover the new shape lives under the shadow name.
            check_expressions(&tx, rev, &target.name, "down").await?;
        }
        let dependents = catalog::dependents(&tx, &source).await?;
        // Nothing planned is kept.
        tx.rollback()
            .await
            .map_err(|e| EngineError::db("ending the planning transaction", e))?;
        Ok(Plan {
            spec: spec.clone(),
            source,
            target,
            key,
            forward,
            reverse,
            reverse_notes,
            expand_ddl,
            dependents,
        })
    }
}

impl Plan {
    /// The plan as it stands after cutover: the new table carries the live name, the old one
    /// the retired name. `forward` then points old → new (used only to describe), `reverse`
    /// new → old.
    pub async fn build_after_cutover(
        db: &mut Client,
        spec: &MigrationSpec,
    ) -> Result<Plan, EngineError> {
        let old = catalog::table(&*db, &spec.retired_table())
            .await?
            .ok_or_else(|| {
                EngineError::Phase(format!(
                    "the old table {} is missing; was it moved or dropped by hand?",
                    spec.retired_table()
                ))
            })?;
        let new = catalog::table(&*db, &spec.table)
            .await?
            .ok_or_else(|| EngineError::Phase(format!("table {} is missing", spec.table)))?;
        let names = match &spec.key {
            Some(k) if !k.is_empty() => k.clone(),
            _ => old.primary_key.clone(),
        };
        let key: Vec<KeyColumn> = names
            .iter()
            .map(|n| KeyColumn {
                name: n.clone(),
                sql_type: old
                    .column(n)
                    .map(|c| c.sql_type.clone())
                    .unwrap_or_else(|| "text".into()),
            })
            .collect();
        let mut forward = resolve_forward(spec, &old, &new, &key)?;
        forward.from = spec.retired_table();
        forward.to = spec.table.clone();
        let (reverse, reverse_notes) = resolve_reverse(spec, &old, &new, &key)?;
        let dependents = catalog::dependents(&*db, &new).await?;
        Ok(Plan {
            spec: spec.clone(),
            expand_ddl: shadow_ddl(spec)?,
            source: old,
            target: new,
            key,
            forward,
            reverse,
            reverse_notes,
            dependents,
        })
    }
}

async fn resolve_key(
    db: &impl tokio_postgres::GenericClient,
    spec: &MigrationSpec,
    source: &Table,
    target: &Table,
) -> Result<Vec<KeyColumn>, EngineError> {
    let names = match &spec.key {
        Some(k) if !k.is_empty() => {
            if !catalog::has_unique_index_on(db, source.oid, k).await? {
                return Err(EngineError::Plan(format!(
                    "key ({}) is not backed by a unique index on {}; create one \
                     (CREATE UNIQUE INDEX CONCURRENTLY) or use the primary key",
                    k.join(", "),
                    source.name
                )));
            }
            k.clone()
        }
        _ if !source.primary_key.is_empty() => source.primary_key.clone(),
        _ => {
            return Err(EngineError::Plan(format!(
                "table {} has no primary key; declare key = [\"col\", …] naming a unique \
                 NOT NULL key in the migration file",
                source.name
            )))
        }
    };
    let mut key = Vec::new();
    for name in &names {
        let col = source.column(name).ok_or_else(|| {
            EngineError::Plan(format!(
                "key column {name} does not exist in {}",
                source.name
            ))
        })?;
        if !col.not_null {
            return Err(EngineError::Plan(format!(
                "key column {name} of {} is nullable; a key must be NOT NULL",
                source.name
            )));
        }
        if target.column(name).is_none() {
            return Err(EngineError::Plan(format!(
                "key column {name} is missing from the target; the new shape must keep the key \
                 columns under the same names"
            )));
        }
        if spec.up.contains_key(name) {
            return Err(EngineError::Plan(format!(
                "[up] maps key column {name}; key columns are copied as they are — remove it \
                 from [up]"
            )));
        }
        key.push(KeyColumn {
            name: name.clone(),
            sql_type: col.sql_type.clone(),
        });
    }
    if !catalog::has_unique_index_on(db, target.oid, &names).await? {
        return Err(EngineError::Plan(format!(
            "target: the new table needs a PRIMARY KEY or UNIQUE constraint on ({}) — \
             sync writes by key",
            names.join(", ")
        )));
    }
    Ok(key)
}

fn resolve_forward(
    spec: &MigrationSpec,
    source: &Table,
    target: &Table,
    key: &[KeyColumn],
) -> Result<Direction, EngineError> {
    for col in spec.up.keys() {
        if target.column(col).is_none() {
            return Err(EngineError::Plan(format!(
                "[up] names column {col}, which the target does not have"
            )));
        }
    }
    let mut columns = Vec::new();
    for col in target.columns.iter().filter(|c| !c.generated) {
        let expr = match spec.up.get(&col.name) {
            Some(e) => format!("({e})::{}", col.sql_type),
            None if source.column(&col.name).is_some() => {
                format!("s.{}::{}", quote_ident(&col.name), col.sql_type)
            }
            None if !col.not_null || col.has_default => continue,
            None => {
                return Err(EngineError::Plan(format!(
                    "target column {} is NOT NULL, has no default and no source column of that \
                     name; add `{} = \"<expression over the old row>\"` to [up]",
                    col.name, col.name
                )))
            }
        };
        columns.push((col.name.clone(), expr));
    }
    Ok(Direction {
        from: source.name.clone(),
        to: spec.shadow_table(),
        key: key.to_vec(),
        columns,
    })
}

fn resolve_reverse(
    spec: &MigrationSpec,
    source: &Table,
    target: &Table,
    key: &[KeyColumn],
) -> Result<(Option<Direction>, Vec<String>), EngineError> {
    for col in spec.down.keys() {
        if source.column(col).is_none() {
            return Err(EngineError::Plan(format!(
                "[down] names column {col}, which {} does not have",
                source.name
            )));
        }
    }
    let mut notes = Vec::new();
    let mut impossible = false;
    let mut columns = Vec::new();
    for col in source.columns.iter().filter(|c| !c.generated) {
        let expr = match spec.down.get(&col.name) {
            Some(e) => format!("({e})::{}", col.sql_type),
            None if target.column(&col.name).is_some() => {
                format!("s.{}::{}", quote_ident(&col.name), col.sql_type)
            }
            None if !col.not_null || col.has_default => {
                notes.push(format!(
                    "old column {} has no counterpart and no [down] entry: rows written after \
                     cutover get {} there",
                    col.name,
                    if col.has_default {
                        "its default"
                    } else {
                        "NULL"
                    }
                ));
                continue;
            }
            None => {
                impossible = true;
                notes.push(format!(
                    "old column {} is NOT NULL without a default and has no [down] entry: \
                     rollback after cutover is impossible; add `{} = \"<expression over the \
                     new row>\"` to [down]",
                    col.name, col.name
                ));
                continue;
            }
        };
        columns.push((col.name.clone(), expr));
    }
    if impossible {
        return Ok((None, notes));
    }
    // After cutover the new table carries the live name and the old one the retired name.
    Ok((
        Some(Direction {
            from: spec.table.clone(),
            to: spec.retired_table(),
            key: key.to_vec(),
            columns,
        }),
        notes,
    ))
}

/// Compiles every mapping expression (and its cast) against the real tables, one column at a
/// time so an error names the column.
async fn check_expressions(
    db: &impl tokio_postgres::GenericClient,
    dir: &Direction,
    from: &QualifiedName,
    section: &str,
) -> Result<(), EngineError> {
    for (col, expr) in &dir.columns {
        let sql = format!("SELECT {expr} FROM {} s LIMIT 0", from.sql());
        db.simple_query(&format!(
            "SAVEPOINT splice_check; {sql}; RELEASE splice_check"
        ))
        .await
        .map_err(|e| {
            EngineError::Plan(format!(
                "[{section}] {col}: `{expr}` does not compile against {}: {}",
                from,
                crate::db_message(&e)
            ))
        })?;
    }
    Ok(())
}

/// Human-readable: every phase with the SQL it runs and the locks it takes.
pub fn render(plan: &Plan) -> String {
    let spec = &plan.spec;
    let mut s = String::new();
    let src = plan.source.name.sql();
    let shadow = spec.shadow_table().sql();
    let retired = spec.retired_table().sql();
    s.push_str(&format!(
        "migration {}: {} ({} columns, ~{} rows) → new shape ({} columns)\n",
        spec.name,
        plan.source.name,
        plan.source.columns.len(),
        plan.source.approx_rows,
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
        None => s.push_str("reverse sync: IMPOSSIBLE — rollback after cutover is not available\n"),
    }
    for n in &plan.reverse_notes {
        s.push_str(&format!("  note: {n}\n"));
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
        crate::sql::range_boundary(&plan.forward, true).replace('\n', "\n   "),
        crate::sql::backfill_range(&plan.forward, true, true, crate::sql::Fill::Missing)
            .replace('\n', "\n   "),
        slot = spec.forward_slot()
    ));
    s.push_str(&format!(
        "   each captured key is re-synced from the source of truth:\n   {}\n",
        crate::sql::resync_keys(&plan.forward).replace('\n', "\n   ")
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
