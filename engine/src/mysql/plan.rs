//! MySQL's [`Planner`]: the shadow DDL (the file's `CREATE TABLE` under the shadow's name),
//! catalog reads (`SHOW FULL COLUMNS`, `SHOW INDEX`, `information_schema`), mappings compiled
//! with a server-side prepare (never run), the refusals (foreign keys, triggers, column types
//! verify cannot compare) and `splice plan`'s text.
//!
//! MySQL's DDL commits on its own, so planning cannot create the shadow inside a transaction
//! it rolls back as PostgreSQL does: it creates it as a TEMPORARY table of its own session
//! (which hides nothing from other sessions and disappears with it) and drops it when the
//! planning scope ends.

use super::{col, quote_ident, quote_name, sql, MySql, Session};
use crate::adapter::Planner;
use crate::catalog::{Column, Dependent, Table};
use crate::seam::{Direction, Fill, KeyRange, Plan, Selection, Side};
use crate::spec::{MigrationSpec, QualifiedName, Shape};
use crate::EngineError;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};
use std::collections::BTreeMap;

/// Column types the adapter refuses: nothing gives them a canonical text verify could compare
/// on both sides.
const UNSUPPORTED_TYPES: &[&str] = &[
    "geometry",
    "point",
    "linestring",
    "polygon",
    "multipoint",
    "multilinestring",
    "multipolygon",
    "geometrycollection",
];

/// Key column types the binlog source can name rows by (cdc's key decoding).
const KEY_TYPES: &[&str] = &[
    "tinyint",
    "smallint",
    "mediumint",
    "int",
    "integer",
    "bigint",
    "decimal",
    "numeric",
    "char",
    "varchar",
    "binary",
    "varbinary",
    "date",
    "datetime",
    "timestamp",
];

/// `bigint(20) unsigned` → `bigint`.
pub(super) fn base_type(sql_type: &str) -> String {
    let t = sql_type.trim().to_ascii_lowercase();
    let end = t.find(['(', ' ']).unwrap_or(t.len());
    t[..end].to_string()
}

pub(super) fn is_integer(base: &str) -> bool {
    matches!(
        base,
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint"
    )
}

/// The file's `target` statement with the shadow's name in place of the live table's.
/// Refuses what it cannot carry: several statements, a name other than the live table's,
/// anything but `CREATE TABLE name (…)`, foreign keys.
pub fn shadow_create_table(spec: &MigrationSpec, ddl: &str) -> Result<String, EngineError> {
    let stmts: Vec<&str> = split_statements(ddl)
        .into_iter()
        .filter(|s| !s.trim().is_empty())
        .collect();
    let [stmt] = stmts.as_slice() else {
        return Err(EngineError::Plan(format!(
            "target: write one CREATE TABLE statement for MySQL (found {}); declare indexes \
             inside it (INDEX name (cols), UNIQUE KEY …) rather than as CREATE INDEX",
            stmts.len()
        )));
    };
    let mut rest = stmt.trim_start();
    for word in ["CREATE", "TABLE"] {
        rest = strip_word(rest, word).ok_or_else(|| {
            EngineError::Plan(
                "target: must start with CREATE TABLE (a whole new table, not TEMPORARY, not \
                 ALTER)"
                    .into(),
            )
        })?;
    }
    if let Some(r) = strip_word(rest, "IF") {
        rest = strip_word(r, "NOT")
            .and_then(|r| strip_word(r, "EXISTS"))
            .ok_or_else(|| EngineError::Plan("target: expected IF NOT EXISTS".into()))?;
    }
    let (parts, after) = read_name(rest).ok_or_else(|| {
        EngineError::Plan("target: CREATE TABLE must name the table (database.table)".into())
    })?;
    let names_live = match parts.as_slice() {
        [name] => *name == spec.table.name,
        [db, name] => *db == spec.table.schema && *name == spec.table.name,
        _ => false,
    };
    if !names_live {
        return Err(EngineError::Plan(format!(
            "target: CREATE TABLE names {}, not the live table {}; write CREATE TABLE {} (…) — \
             splice creates it under its shadow name {}",
            parts.join("."),
            spec.table,
            spec.table,
            spec.shadow_table()
        )));
    }
    if !after.trim_start().starts_with('(') {
        return Err(EngineError::Plan(
            "target: write the columns out (CREATE TABLE name (…)); CREATE TABLE … LIKE / AS \
             SELECT are not supported"
                .into(),
        ));
    }
    let upper = strip_quoted(after).to_ascii_uppercase();
    if upper.contains("FOREIGN KEY") || upper.contains(" REFERENCES ") {
        return Err(EngineError::Plan(
            "target: foreign keys are not carried by the MySQL adapter (RENAME TABLE would \
             leave them pointing at the retired table); leave them out of target and add them \
             after contract"
                .into(),
        ));
    }
    Ok(format!(
        "CREATE TABLE {} {}",
        quote_name(&spec.shadow_table()),
        after.trim()
    ))
}

/// `rest` after `word` (case-insensitive, followed by a non-word character), leading space
/// removed.
pub(super) fn strip_word<'a>(rest: &'a str, word: &str) -> Option<&'a str> {
    let head = rest.get(..word.len())?;
    let next = rest[word.len()..].chars().next();
    if head.eq_ignore_ascii_case(word) && !next.is_some_and(|c| c.is_alphanumeric() || c == '_') {
        Some(rest[word.len()..].trim_start())
    } else {
        None
    }
}

/// A possibly qualified identifier (`` `a`.b ``): its parts (bare parts lowercased, as the
/// migration file's names are) and what follows.
pub(super) fn read_name(s: &str) -> Option<(Vec<String>, &str)> {
    let mut parts = Vec::new();
    let mut rest = s.trim_start();
    loop {
        if let Some(r) = rest.strip_prefix('`') {
            let mut part = String::new();
            let mut chars = r.char_indices();
            let end = loop {
                let (i, c) = chars.next()?;
                if c == '`' {
                    if r[i + 1..].starts_with('`') {
                        part.push('`');
                        chars.next();
                        continue;
                    }
                    break i + 1;
                }
                part.push(c);
            };
            parts.push(part);
            rest = &r[end..];
        } else {
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
                .unwrap_or(rest.len());
            if end == 0 {
                return None;
            }
            parts.push(rest[..end].to_ascii_lowercase());
            rest = &rest[end..];
        }
        match rest.strip_prefix('.') {
            Some(r) => rest = r,
            None => return Some((parts, rest)),
        }
    }
}

/// Splits on `;` outside quotes, backquotes and comments.
pub(super) fn split_statements(sql: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quote: Option<char> = None;
    let bytes: Vec<(usize, char)> = sql.char_indices().collect();
    let mut i = 0;
    while i < bytes.len() {
        let (pos, c) = bytes[i];
        match quote {
            Some(q) if c == '\\' && q != '`' => i += 1,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' || c == '`' => quote = Some(c),
            None if c == '-' && sql[pos..].starts_with("-- ") || c == '#' => {
                while i < bytes.len() && bytes[i].1 != '\n' {
                    i += 1;
                }
            }
            None if c == ';' => {
                out.push(&sql[start..pos]);
                start = pos + 1;
            }
            None => {}
        }
        i += 1;
    }
    out.push(&sql[start..]);
    out
}

/// `s` with quoted strings and backquoted names blanked, so a keyword search finds keywords.
pub(super) fn strip_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in s.chars() {
        match quote {
            Some(_) if escaped => escaped = false,
            Some(q) if c == '\\' && q != '`' => escaped = true,
            Some(q) if c == q => {
                quote = None;
                out.push(' ');
            }
            Some(_) => {}
            None if c == '\'' || c == '"' || c == '`' => quote = Some(c),
            None => out.push(if c.is_whitespace() { ' ' } else { c }),
        }
    }
    out
}

async fn show_index(conn: &mut Conn, name: &QualifiedName) -> Result<Vec<Row>, EngineError> {
    conn.query(format!("SHOW INDEX FROM {}", quote_name(name)))
        .await
        .map_err(|e| EngineError::my(format!("reading the indexes of {name}"), &e))
}

/// Unique indexes of `table` (without prefix parts): name → columns in index order.
async fn unique_indexes(
    conn: &mut Conn,
    table: &QualifiedName,
) -> Result<BTreeMap<String, Vec<String>>, EngineError> {
    let ctx = "reading indexes";
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut partial = Vec::new();
    // SHOW INDEX: Table, Non_unique, Key_name, Seq_in_index, Column_name, Collation,
    // Cardinality, Sub_part, …
    for r in show_index(conn, table).await? {
        let non_unique: i64 = col(&r, 1, ctx)?;
        let key: String = col(&r, 2, ctx)?;
        let column: Option<String> = col(&r, 4, ctx)?;
        let sub_part: Option<i64> = col(&r, 7, ctx)?;
        if non_unique != 0 {
            continue;
        }
        match column {
            Some(c) if sub_part.is_none() => out.entry(key).or_default().push(c),
            _ => partial.push(key),
        }
    }
    for key in partial {
        out.remove(&key);
    }
    Ok(out)
}

/// A table's column names in their order (sees the planning scope's temporary table).
async fn column_order(conn: &mut Conn, table: &QualifiedName) -> Result<Vec<String>, EngineError> {
    let ctx = format!("reading the columns of {table}");
    let rows: Vec<Row> = conn
        .query(format!("SHOW COLUMNS FROM {}", quote_name(table)))
        .await
        .map_err(|e| EngineError::my(ctx.clone(), &e))?;
    rows.iter().map(|r| col(r, 0, &ctx)).collect()
}

fn is_missing_table(e: &mysql_async::Error) -> bool {
    // ER_NO_SUCH_TABLE, ER_BAD_DB_ERROR
    matches!(e, mysql_async::Error::Server(s) if s.code == 1146 || s.code == 1049)
}

impl Planner for MySql {
    fn implied_mappings(
        &self,
        spec: &MigrationSpec,
    ) -> Result<crate::adapter::ImpliedMappings, EngineError> {
        match &spec.shape {
            Shape::Target(_) => Ok(Default::default()),
            Shape::Alter(alter) => super::alter::implied_mappings(spec, alter),
        }
    }

    async fn shadow_ddl(
        &self,
        db: &Session,
        spec: &MigrationSpec,
    ) -> Result<Vec<String>, EngineError> {
        // `table = "orders"` parses as PostgreSQL's `public.orders`: on MySQL that is almost
        // always a missing database name.
        if spec.table.schema == "public" {
            let found: Option<Row> = db
                .lock()
                .await
                .query_first(
                    "SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'public'",
                )
                .await
                .map_err(|e| EngineError::my("looking for the table's database", &e))?;
            if found.is_none() {
                return Err(EngineError::Plan(format!(
                    "table = \"{}\" names no database; on MySQL/MariaDB write \
                     database.table (e.g. shop.{})",
                    spec.table.name, spec.table.name
                )));
            }
        }
        match &spec.shape {
            Shape::Target(ddl) => Ok(vec![shadow_create_table(spec, ddl)?]),
            Shape::Alter(alter) => super::alter::shadow_ddl(spec, alter),
        }
    }

    fn lint_dialect(&self) -> lint::Dialect {
        lint::Dialect::Mysql
    }

    fn expand_script(&self, spec: &MigrationSpec, plan: &Plan) -> String {
        let mut s = format!(
            "SET SESSION lock_wait_timeout = {};\n",
            spec.throttle.lock_timeout.as_secs().max(1)
        );
        for ddl in &plan.expand_ddl {
            s.push_str(ddl);
            s.push_str(";\n");
        }
        s
    }

    /// Assignment converts to the column's type (strict mode: an error, never a silent
    /// truncation); MySQL's CAST knows too few types to spell every column type.
    fn cast_expression(&self, expr: &str, _sql_type: &str) -> String {
        format!("({expr})")
    }

    fn source_column(&self, column: &str, _sql_type: &str) -> String {
        format!("s.{}", quote_ident(column))
    }

    fn sorts_alike(&self, source: &Column, target: &Column) -> bool {
        let (a, b) = (base_type(&source.sql_type), base_type(&target.sql_type));
        let unsigned = |c: &Column| c.sql_type.to_ascii_lowercase().contains("unsigned");
        if is_integer(&a) && is_integer(&b) {
            return unsigned(source) == unsigned(target);
        }
        a == b && unsigned(source) == unsigned(target) && source.collation == target.collation
    }

    async fn begin_planning(&self, db: &Session) -> Result<(), EngineError> {
        if let Ok(mut p) = db.planning.lock() {
            p.clear();
        }
        Ok(())
    }

    async fn end_planning(&self, db: &Session) -> Result<(), EngineError> {
        let created: Vec<String> = match db.planning.lock() {
            Ok(mut p) => std::mem::take(&mut *p),
            Err(_) => Vec::new(),
        };
        let mut conn = db.lock().await;
        for name in created {
            conn.query_drop(format!("DROP TEMPORARY TABLE IF EXISTS {name}"))
                .await
                .map_err(|e| EngineError::my("dropping the planning scope's table", &e))?;
        }
        Ok(())
    }

    async fn try_shadow_ddl(&self, db: &Session, ddl: &[String]) -> Result<(), EngineError> {
        let mut conn = db.lock().await;
        for stmt in ddl {
            // Alter mode's ALTER TABLE runs as it is: the temporary table created before it
            // hides the real name on this session.
            if stmt.starts_with("ALTER TABLE ") {
                conn.query_drop(stmt.as_str()).await.map_err(|e| {
                    EngineError::Plan(format!("alter: {}", cdc::describe_mysql_error(&e)))
                })?;
                continue;
            }
            let Some(rest) = stmt.strip_prefix("CREATE TABLE ") else {
                return Err(EngineError::Plan(format!(
                    "target: cannot try `{stmt}` without running it"
                )));
            };
            let (parts, _) = read_name(rest)
                .ok_or_else(|| EngineError::Plan("target: the shadow has no name".into()))?;
            conn.query_drop(format!("CREATE TEMPORARY TABLE {rest}"))
                .await
                .map_err(|e| {
                    EngineError::Plan(format!("target: {}", cdc::describe_mysql_error(&e)))
                })?;
            let quoted: Vec<String> = parts.iter().map(|p| quote_ident(p)).collect();
            if let Ok(mut p) = db.planning.lock() {
                p.push(quoted.join("."));
            }
        }
        Ok(())
    }

    async fn describe_table(
        &self,
        db: &Session,
        name: &QualifiedName,
    ) -> Result<Option<Table>, EngineError> {
        let ctx = format!("describing {name}");
        let mut conn = db.lock().await;
        // SHOW FULL COLUMNS sees the planning scope's temporary table; information_schema
        // does not.
        let rows: Vec<Row> = match conn
            .query(format!("SHOW FULL COLUMNS FROM {}", quote_name(name)))
            .await
        {
            Ok(rows) => rows,
            Err(e) if is_missing_table(&e) => return Ok(None),
            Err(e) => return Err(EngineError::my(ctx, &e)),
        };
        let mut columns = Vec::new();
        // Field, Type, Collation, Null, Key, Default, Extra, Privileges, Comment
        for r in &rows {
            let column: String = col(r, 0, &ctx)?;
            let sql_type: String = col(r, 1, &ctx)?;
            let collation: Option<String> = col(r, 2, &ctx)?;
            let null: String = col(r, 3, &ctx)?;
            let default: Option<String> = col(r, 5, &ctx)?;
            let extra: String = col::<Option<String>>(r, 6, &ctx)?.unwrap_or_default();
            let extra = extra.to_ascii_lowercase();
            let base = base_type(&sql_type);
            if UNSUPPORTED_TYPES.contains(&base.as_str()) {
                return Err(EngineError::Plan(format!(
                    "column {column} of {name} has type {sql_type}, which the MySQL adapter \
                     cannot copy and compare (verify has no canonical text for spatial types); \
                     migrate this table with another tool, or move the column to a table of \
                     its own first"
                )));
            }
            columns.push(Column {
                name: column,
                sql_type: sql_type.to_ascii_lowercase(),
                not_null: null.eq_ignore_ascii_case("NO"),
                has_default: default.is_some() || extra.contains("auto_increment"),
                generated: extra.contains("generated") || extra.contains("persistent"),
                collation: collation.unwrap_or_default(),
            });
        }
        let mut primary_key = Vec::new();
        for r in show_index(&mut conn, name).await? {
            let key: String = col(&r, 2, &ctx)?;
            if key == "PRIMARY" {
                primary_key.push(col::<String>(&r, 4, &ctx)?);
            }
        }
        let approx: Option<Row> = conn
            .exec_first(
                "SELECT TABLE_ROWS FROM information_schema.TABLES \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (&name.schema, &name.name),
            )
            .await
            .map_err(|e| EngineError::my(ctx.clone(), &e))?;
        let approx_rows = match approx {
            Some(r) => col::<Option<i64>>(&r, 0, &ctx)?.unwrap_or(-1),
            None => -1,
        };
        Ok(Some(Table {
            name: name.clone(),
            oid: 0,
            columns,
            primary_key,
            approx_rows,
        }))
    }

    async fn has_unique_key(
        &self,
        db: &Session,
        table: &Table,
        columns: &[String],
    ) -> Result<bool, EngineError> {
        let mut want: Vec<&str> = columns.iter().map(String::as_str).collect();
        want.sort_unstable();
        let indexes = unique_indexes(&mut *db.lock().await, &table.name).await?;
        Ok(indexes.values().any(|cols| {
            let mut have: Vec<&str> = cols.iter().map(String::as_str).collect();
            have.sort_unstable();
            have == want
        }))
    }

    /// Compiled by a server-side prepare (`COM_STMT_PREPARE`): names, functions and syntax
    /// are resolved, nothing runs.
    async fn check_expression(
        &self,
        db: &Session,
        from: &QualifiedName,
        expr: &str,
    ) -> Result<(), String> {
        let mut conn = db.lock().await;
        let sql = format!("SELECT ({expr}) FROM {} AS s WHERE 1 = 0", quote_name(from));
        match conn.prep(sql).await {
            Ok(stmt) => {
                let _ = conn.close(stmt).await;
                Ok(())
            }
            Err(e) => Err(cdc::describe_mysql_error(&e)),
        }
    }

    /// Compiles (server-side prepare, nothing runs) backfill's copy, the applier's statements
    /// and verify's reads of both sides, and refuses target columns verify cannot compare.
    async fn check_statements(
        &self,
        db: &Session,
        dir: &Direction,
        purpose: &str,
    ) -> Result<(), EngineError> {
        let mut conn = db.lock().await;
        // The binlog names rows by column position, and the reverse stream reads the live name
        // from before the swap (the old table) into after it (the new one): each key column
        // must sit at the same position in both.
        let from_order = column_order(&mut conn, &dir.from).await?;
        let to_order = column_order(&mut conn, &dir.to).await?;
        for k in &dir.key {
            let at = |order: &[String]| order.iter().position(|c| *c == k.name);
            if at(&from_order) != at(&to_order) {
                return Err(EngineError::Plan(format!(
                    "{purpose}: key column {} is column {} of {} but column {} of {}; the binlog \
                     names rows by column position, so keep each key column at the same \
                     position in the new shape",
                    k.name,
                    at(&from_order).map_or(0, |i| i + 1),
                    dir.from,
                    at(&to_order).map_or(0, |i| i + 1),
                    dir.to
                )));
            }
        }
        // The triggers the swap carries from `dir.from` onto `dir.to` must find their columns.
        for t in super::triggers::on_table(&mut conn, &dir.from).await? {
            let missing = t.missing_columns(&to_order);
            if !missing.is_empty() {
                return Err(EngineError::Plan(format!(
                    "{purpose}: trigger {} of {} uses {} that {} does not have; cutover \
                     carries the trigger over as it is, so drop it (or change it) before the \
                     migration, or keep the column",
                    t.name,
                    dir.from,
                    missing
                        .iter()
                        .map(|c| format!("column {c}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    dir.to
                )));
            }
        }
        let types = super::verify::column_types(&mut conn, &dir.to).await?;
        super::verify::refuse_uncomparable(dir, &types)
            .map_err(|e| EngineError::Plan(format!("{purpose}: {e}")))?;
        let range = KeyRange {
            lower: Some(Vec::new()),
            upper: Some(Vec::new()),
        };
        let statements = [
            sql::backfill_range(dir, true, true, Fill::Missing).sql,
            sql::backfill_range(dir, true, true, Fill::Mirror).sql,
            sql::resync_batch(dir, 2).upsert,
            sql::resync_batch(dir, 2).delete,
            super::verify::canonical_statement(
                dir,
                Side::Source,
                Selection::KeyedRange(&range),
                &types,
            )
            .0,
            super::verify::canonical_statement(
                dir,
                Side::Target,
                Selection::KeyedRange(&range),
                &types,
            )
            .0,
        ];
        for statement in statements {
            match conn.prep(statement).await {
                Ok(stmt) => {
                    let _ = conn.close(stmt).await;
                }
                Err(e) => {
                    return Err(EngineError::Plan(format!(
                        "{purpose}: the statements splice runs cannot be compiled: {}",
                        cdc::describe_mysql_error(&e)
                    )))
                }
            }
        }
        Ok(())
    }

    /// The table's triggers, carried over at each swap (`triggers.rs`); refuses what cannot
    /// follow the table through `RENAME TABLE`: foreign keys (both directions: MySQL repoints
    /// a referencing key at the renamed, retired table, and InnoDB's cascades are not in the
    /// binlog), triggers whose carried names cannot be had, and key columns the binlog source
    /// cannot name rows by. Views need nothing: MySQL resolves a view's table by name when
    /// the view is used.
    async fn dependents(&self, db: &Session, table: &Table) -> Result<Vec<Dependent>, EngineError> {
        let ctx = format!("reading what depends on {}", table.name);
        let mut conn = db.lock().await;
        let triggers = super::triggers::on_table(&mut conn, &table.name).await?;
        let mut problems =
            super::triggers::naming_problems(&mut conn, &table.name, &triggers).await?;
        let carried: Vec<Dependent> = triggers
            .iter()
            .map(|t| Dependent::Trigger {
                name: t.name.clone(),
                definition: t.create_sql(&super::triggers::carried_name(&t.name), &table.name),
                enabled: "O".into(),
            })
            .collect();
        let fks: Vec<Row> = conn
            .exec(
                "SELECT CONSTRAINT_SCHEMA, TABLE_NAME, CONSTRAINT_NAME, REFERENCED_TABLE_NAME, \
                        CONCAT(UPDATE_RULE, ' ', DELETE_RULE) \
                 FROM information_schema.REFERENTIAL_CONSTRAINTS \
                 WHERE (CONSTRAINT_SCHEMA = ? AND TABLE_NAME = ?) \
                    OR (UNIQUE_CONSTRAINT_SCHEMA = ? AND REFERENCED_TABLE_NAME = ?) \
                 ORDER BY CONSTRAINT_NAME",
                (
                    &table.name.schema,
                    &table.name.name,
                    &table.name.schema,
                    &table.name.name,
                ),
            )
            .await
            .map_err(|e| EngineError::my(ctx.clone(), &e))?;
        for r in &fks {
            let (schema, on, name): (String, String, String) =
                (col(r, 0, &ctx)?, col(r, 1, &ctx)?, col(r, 2, &ctx)?);
            let rules: String = col(r, 4, &ctx)?;
            let why = if rules.contains("CASCADE") || rules.contains("SET") {
                "the rows its cascade changes have no binlog events of their own, so capture \
                 would miss them"
            } else {
                "a copy on the new table would fail the application's deletes of a parent row \
                 while the new table still holds a child row the old one no longer has"
            };
            problems.push(if on == table.name.name && schema == table.name.schema {
                format!(
                    "foreign key {name} of {schema}.{on} (not carried over: {why}; drop it \
                     before the migration and re-create it on the new table after cutover)"
                )
            } else {
                format!(
                    "foreign key {name} on {schema}.{on}, which references this table (not \
                     carried over: RENAME TABLE repoints it at the retired table, and pointing \
                     it back means rebuilding {on} under a lock; drop it before the migration \
                     and re-create it after cutover)"
                )
            });
        }
        for k in &table.primary_key {
            if let Some(c) = table.column(k) {
                if !KEY_TYPES.contains(&base_type(&c.sql_type).as_str()) {
                    problems.push(format!(
                        "key column {k} has type {} (the binlog source names rows by integer, \
                         decimal, string, binary and date/time keys only: key the migration on \
                         another unique key with `key = [...]`)",
                        c.sql_type
                    ));
                }
            }
        }
        if problems.is_empty() {
            return Ok(carried);
        }
        Err(EngineError::Plan(format!(
            "{} cannot be migrated by the MySQL adapter as it is:\n  - {}",
            table.name,
            problems.join("\n  - ")
        )))
    }

    fn render_plan(&self, plan: &Plan) -> String {
        let spec = &plan.spec;
        let mut s = format!(
            "migration {}: {} ({} columns, {}) → new shape ({} columns)  [MySQL/MariaDB]\n",
            spec.name,
            plan.source.name,
            plan.source.columns.len(),
            match plan.source.approx_rows {
                n if n < 0 => "rows: unknown".to_string(),
                n => format!("~{n} rows"),
            },
            plan.target.columns.len()
        );
        s.push_str(&format!(
            "key: ({})\n\nmapping old → new ([up]):\n",
            plan.key
                .iter()
                .map(|k| k.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        for (c, expr) in &plan.forward.columns {
            s.push_str(&format!("  {c} = {expr}\n"));
        }
        match &plan.reverse {
            Some(rev) => {
                s.push_str("mapping new → old ([down], reverse sync after cutover):\n");
                for (c, expr) in &rev.columns {
                    s.push_str(&format!("  {c} = {expr}\n"));
                }
            }
            None => s.push_str(
                "reverse sync: IMPOSSIBLE — rollback after cutover would not be available\n",
            ),
        }
        for n in &plan.reverse_notes {
            s.push_str(&format!("  note: {n}\n"));
        }
        let lock = spec.throttle.lock_timeout.as_secs().max(1);
        s.push_str(&format!(
            "\nexpand runs, under lock_wait_timeout = {lock}s (the state database `splice` first):\n"
        ));
        for ddl in &plan.expand_ddl {
            s.push_str(&format!("  {ddl};\n"));
        }
        let (live, shadow, retired) = (
            quote_name(&spec.table),
            quote_name(&spec.shadow_table()),
            quote_name(&spec.retired_table()),
        );
        s.push_str(&format!(
            "\nsync: binlog slot {} first, then chunks of INSERT INTO {shadow} (…) SELECT … FROM \
             {live} by primary-key range (ON DUPLICATE KEY UPDATE), the applier re-syncing changed \
             keys between chunks\n\
             verify: canonical rows of both sides per key range, BLAKE3\n\
             cutover: reverse slot {} created first; LOCK TABLES {live} READ on a session of its \
             own (lock_wait_timeout {lock}s, retried); the binlog drained under the lock; the \
             live table's triggers created on {shadow}; RENAME TABLE {live} TO {retired}, \
             {shadow} TO {live} from a third session, queued before the unlock; the triggers \
             dropped from {retired}\n\
             contract: RENAME TABLE {retired} TO {}\n",
            spec.forward_slot(),
            spec.reverse_slot(),
            quote_name(&spec.quarantined_table()),
        ));
        let triggers: Vec<&str> = plan
            .dependents
            .iter()
            .filter_map(|d| match d {
                Dependent::Trigger { name, .. } => Some(name.as_str()),
                _ => None,
            })
            .collect();
        if !triggers.is_empty() {
            s.push_str(
                "\ntriggers carried over at cutover (a trigger's name is unique in its database):\n",
            );
            for t in triggers {
                s.push_str(&format!(
                    "  {t} → {} on the new table\n",
                    super::triggers::carried_name(t)
                ));
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(target: &str) -> MigrationSpec {
        MigrationSpec::parse(
            &format!("name = \"orders_v2\"\ntable = \"shop.orders\"\ntarget = '''{target}'''\n"),
            "t.toml",
        )
        .expect("spec")
    }

    #[test]
    fn the_target_is_created_under_the_shadow_name() {
        let s = spec("CREATE TABLE shop.orders (id BIGINT PRIMARY KEY, note TEXT) ENGINE=InnoDB;");
        let ddl = shadow_create_table(
            &s,
            match &s.shape {
                Shape::Target(t) => t,
                Shape::Alter(_) => unreachable!(),
            },
        )
        .expect("ddl");
        assert_eq!(
            ddl,
            "CREATE TABLE `shop`.`_splice_orders_v2_new` (id BIGINT PRIMARY KEY, note TEXT) ENGINE=InnoDB"
        );
        let s = spec("create table `orders` (id int primary key)");
        let Shape::Target(t) = &s.shape else {
            unreachable!()
        };
        assert!(shadow_create_table(&s, t).is_ok());
    }

    #[test]
    fn a_target_it_cannot_carry_is_refused_by_name() {
        for (target, says) in [
            ("CREATE TABLE shop.other (id int primary key)", "not the live table"),
            (
                "CREATE TABLE shop.orders (id int primary key); CREATE INDEX i ON shop.orders (id)",
                "one CREATE TABLE",
            ),
            (
                "CREATE TABLE shop.orders (id int primary key, c int, FOREIGN KEY (c) REFERENCES shop.c (id))",
                "foreign keys",
            ),
            ("CREATE TABLE shop.orders LIKE shop.x", "columns out"),
        ] {
            let s = spec(target);
            let Shape::Target(t) = &s.shape else { unreachable!() };
            let e = shadow_create_table(&s, t).expect_err(target).to_string();
            assert!(e.contains(says), "{target}: {e}");
        }
    }

    #[test]
    fn quoted_text_does_not_look_like_a_foreign_key() {
        let s = spec(
            "CREATE TABLE shop.orders (id int primary key, c varchar(9) DEFAULT 'FOREIGN KEY')",
        );
        let Shape::Target(t) = &s.shape else {
            unreachable!()
        };
        assert!(shadow_create_table(&s, t).is_ok());
    }

    #[test]
    fn integer_keys_may_widen_but_not_change_sign() {
        let c = |t: &str| Column {
            name: "id".into(),
            sql_type: t.into(),
            not_null: true,
            has_default: false,
            generated: false,
            collation: String::new(),
        };
        let m = MySql::new("mysql://root@127.0.0.1:1/").expect("url");
        assert!(m.sorts_alike(&c("int(11)"), &c("bigint(20)")));
        assert!(!m.sorts_alike(&c("int(11)"), &c("int(10) unsigned")));
        assert!(!m.sorts_alike(&c("int(11)"), &c("varchar(20)")));
    }
}
