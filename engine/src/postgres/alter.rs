//! Alter mode (`alter = "ALTER TABLE …"`): the shadow table starts as an exact structural copy
//! of the live one and the migration's ALTER TABLE statements are applied to it, so nothing
//! the table carries is lost by restating it by hand.
//!
//! The copy is `CREATE TABLE … (LIKE live INCLUDING ALL)` (columns, defaults, identity and
//! generated columns, NOT NULL, check constraints, every index with the unique, primary-key
//! and exclusion constraints they back, storage and compression settings, column and index
//! comments, extended statistics), then what `LIKE` leaves out: outgoing foreign keys (added
//! `NOT VALID`, validated before cutover), storage parameters and the table's comment.

use super::sql::{qualified, quote_ident, quote_literal};
use crate::adapter::ImpliedMappings as Implied;
use crate::spec::MigrationSpec;
use crate::EngineError;
use sqlparser::ast::{
    AlterColumnOperation, AlterTableOperation, ObjectName, ObjectNamePart, Statement,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use std::collections::BTreeMap;
use tokio_postgres::Client;

fn ident_value(part: &ObjectNamePart) -> String {
    match part {
        ObjectNamePart::Identifier(id) if id.quote_style.is_some() => id.value.clone(),
        ObjectNamePart::Identifier(id) => id.value.to_lowercase(),
        _ => String::new(),
    }
}

fn ident(id: &sqlparser::ast::Ident) -> String {
    if id.quote_style.is_some() {
        id.value.clone()
    } else {
        id.value.to_lowercase()
    }
}

/// The migration's ALTER TABLE statements, each checked to name the live table.
fn parse(
    spec: &MigrationSpec,
    alter: &str,
) -> Result<Vec<sqlparser::ast::AlterTable>, EngineError> {
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, alter).map_err(|e| {
        EngineError::Plan(format!(
            "alter: cannot parse ({e}); give ALTER TABLE {} statements separated by `;`, or the \
             whole new table as target = \"CREATE TABLE …\"",
            spec.table
        ))
    })?;
    if statements.is_empty() {
        return Err(EngineError::Plan(format!(
            "alter: no statement; give ALTER TABLE {} …",
            spec.table
        )));
    }
    statements
        .into_iter()
        .map(|st| match st {
            Statement::AlterTable(at) => {
                let parts: Vec<String> = at.name.0.iter().map(ident_value).collect();
                let names_live = match parts.as_slice() {
                    [name] => *name == spec.table.name,
                    [schema, name] => *schema == spec.table.schema && *name == spec.table.name,
                    _ => false,
                };
                if !names_live {
                    return Err(EngineError::Plan(format!(
                        "alter: `ALTER TABLE {}` is not the migration's table {}; a migration \
                         changes one table",
                        at.name, spec.table
                    )));
                }
                if let Some(op) = at
                    .operations
                    .iter()
                    .find(|op| matches!(op, AlterTableOperation::RenameTable { .. }))
                {
                    return Err(EngineError::Plan(format!(
                        "alter: `{op}` renames the table, which cutover does by itself; leave \
                         the name as it is"
                    )));
                }
                Ok(at)
            }
            other => Err(EngineError::Plan(format!(
                "alter: `{}` is not ALTER TABLE; alter takes ALTER TABLE {} statements only",
                other.to_string().chars().take(60).collect::<String>(),
                spec.table
            ))),
        })
        .collect()
}

/// The statements that create the shadow table in alter mode.
pub async fn shadow_ddl(
    db: &Client,
    spec: &MigrationSpec,
    alter: &str,
) -> Result<Vec<String>, EngineError> {
    let alters = parse(spec, alter)?;
    let live = qualified(&spec.table);
    let shadow_q = spec.shadow_table();
    let shadow = qualified(&shadow_q);
    let row = db
        .query_opt(
            "SELECT c.oid, array_to_string(c.reloptions, ', '), obj_description(c.oid, 'pg_class'),
                    c.relkind::text
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relname = $2",
            &[&spec.table.schema, &spec.table.name],
        )
        .await
        .map_err(|e| EngineError::db("reading the live table for alter", e))?
        .ok_or_else(|| {
            EngineError::Plan(format!(
                "table {} does not exist; check `table` in the migration file",
                spec.table
            ))
        })?;
    let oid: u32 = row
        .try_get(0)
        .map_err(|e| EngineError::db("reading the table's oid", e))?;
    let reloptions: Option<String> = row.try_get(1).unwrap_or(None);
    let comment: Option<String> = row.try_get(2).unwrap_or(None);
    let mut out = vec![format!("CREATE TABLE {shadow} (LIKE {live} INCLUDING ALL)")];
    for fk in db
        .query(
            "SELECT conname::text, pg_get_constraintdef(oid), confrelid = conrelid
             FROM pg_constraint WHERE conrelid = $1 AND contype = 'f' ORDER BY conname",
            &[&oid],
        )
        .await
        .map_err(|e| EngineError::db("reading the table's foreign keys", e))?
    {
        let name: String = fk.get(0);
        let definition: String = fk.get(1);
        let to_itself: bool = fk.get(2);
        if to_itself {
            return Err(EngineError::Plan(format!(
                "alter: foreign key {name} references {} itself; alter mode cannot carry a \
                 self-referencing key yet — give the whole new table as target, with the key \
                 referencing it",
                spec.table
            )));
        }
        // Checked for new rows at once; existing rows are validated before cutover.
        out.push(format!(
            "ALTER TABLE {shadow} ADD CONSTRAINT {} {} NOT VALID",
            quote_ident(&name),
            definition.trim_end_matches(" NOT VALID")
        ));
    }
    if let Some(opts) = reloptions.filter(|o| !o.is_empty()) {
        out.push(format!("ALTER TABLE {shadow} SET ({opts})"));
    }
    if let Some(c) = comment {
        out.push(format!(
            "COMMENT ON TABLE {shadow} IS {}",
            quote_literal(&c)
        ));
    }
    let shadow_name = ObjectName(vec![
        ObjectNamePart::Identifier(sqlparser::ast::Ident::with_quote('"', &shadow_q.schema)),
        ObjectNamePart::Identifier(sqlparser::ast::Ident::with_quote('"', &shadow_q.name)),
    ]);
    for mut at in alters {
        at.name = shadow_name.clone();
        out.push(Statement::AlterTable(at).to_string());
    }
    Ok(out)
}

/// The mappings an ALTER implies, for the entries the file does not give itself: a renamed
/// column maps to its old name (`up`) and back (`down`); a type change with `USING` maps
/// through that expression.
pub fn implied_mappings(spec: &MigrationSpec, alter: &str) -> Result<Implied, EngineError> {
    // current name → the source column it started as
    let mut origin: BTreeMap<String, String> = BTreeMap::new();
    let mut using: BTreeMap<String, String> = BTreeMap::new();
    for at in parse(spec, alter)? {
        for op in &at.operations {
            match op {
                AlterTableOperation::RenameColumn {
                    old_column_name,
                    new_column_name,
                } => {
                    let old = ident(old_column_name);
                    let new = ident(new_column_name);
                    let source = origin.remove(&old).unwrap_or_else(|| old.clone());
                    if let Some(u) = using.remove(&old) {
                        using.insert(new.clone(), u);
                    }
                    origin.insert(new, source);
                }
                AlterTableOperation::AlterColumn {
                    column_name,
                    op:
                        AlterColumnOperation::SetDataType {
                            using: Some(expr), ..
                        },
                } => {
                    let name = ident(column_name);
                    // The expression reads the row as it is before this statement: columns
                    // renamed earlier in the file are still under their source names there
                    // only if renamed later; keep it simple and refuse the mix.
                    if origin.contains_key(&name) {
                        return Err(EngineError::Plan(format!(
                            "alter: column {name} is renamed and retyped with USING; give its \
                             [up] expression yourself"
                        )));
                    }
                    using.insert(name, expr.to_string());
                }
                _ => {}
            }
        }
    }
    let mut implied = Implied::default();
    for (new, source) in origin {
        if new == source {
            continue;
        }
        implied.up.insert(new.clone(), quote_ident(&source));
        implied.down.insert(source, quote_ident(&new));
    }
    for (column, expr) in using {
        implied.up.insert(column, expr);
    }
    implied.up.retain(|k, _| !spec.up.contains_key(k));
    implied.down.retain(|k, _| !spec.down.contains_key(k));
    Ok(implied)
}

/// The table the first ALTER TABLE statement of `alter` names (`schema.table`, or `table`),
/// as written; `None` when there is no ALTER TABLE to read it from.
pub fn table_of(alter: &str) -> Option<String> {
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, alter).ok()?;
    statements.into_iter().find_map(|st| match st {
        Statement::AlterTable(at) => Some(
            at.name
                .0
                .iter()
                .map(ident_value)
                .collect::<Vec<_>>()
                .join("."),
        ),
        _ => None,
    })
}

/// The text of a migration file that runs `alter` online on `table`.
pub fn migration_file(name: &str, table: &str, alter: &str) -> String {
    let alter = alter.trim().trim_end_matches(';').trim();
    let quoted = if alter.contains("\"\"\"") || alter.contains('\\') {
        // A TOML literal string keeps every character as it is.
        format!("'''{alter}'''")
    } else {
        format!("\"\"\"{alter}\"\"\"")
    };
    format!(
        "# {name}: {alter_line}\n\
         # splice plan {name}.toml, then expand, sync, verify, cutover, contract.\n\
         name = \"{name}\"\n\
         table = \"{table}\"\n\
         # The shadow table starts as an exact copy of the live one (columns, indexes,\n\
         # constraints, foreign keys, storage parameters, comments); this runs on it.\n\
         alter = {quoted}\n\
         quarantine = \"30d\"\n\
         \n\
         [up]      # new column = SQL expression over the old row, where the ALTER does not say\n\
         \n\
         [down]    # old column = SQL expression over the new row, for rollback after cutover\n",
        alter_line = alter.lines().next().unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(alter: &str) -> MigrationSpec {
        MigrationSpec::parse(
            &format!(
                "name = \"m\"\ntable = \"public.orders\"\nalter = \"\"\"{alter}\"\"\"\n[up]\nkept = \"1\"\n"
            ),
            "test",
        )
        .expect("spec")
    }

    #[test]
    fn renames_map_both_ways_and_using_maps_forward() {
        let alter = "ALTER TABLE orders RENAME COLUMN amount TO total; \
                     ALTER TABLE public.orders RENAME COLUMN total TO grand_total; \
                     ALTER TABLE orders ALTER COLUMN qty TYPE bigint USING qty * 10";
        let s = spec(alter);
        let implied = implied_mappings(&s, alter).expect("implied");
        assert_eq!(implied.up["grand_total"], "\"amount\"");
        assert_eq!(implied.down["amount"], "\"grand_total\"");
        assert_eq!(implied.up["qty"], "qty * 10");
        assert!(!implied.up.contains_key("total"));
    }

    #[test]
    fn a_generated_file_parses_back_to_the_same_alter() {
        let alter = "ALTER TABLE public.community ALTER COLUMN title TYPE varchar(200);";
        assert_eq!(table_of(alter).as_deref(), Some("public.community"));
        let file = migration_file("widen_title", "public.community", alter);
        let spec = MigrationSpec::parse(&file, "generated").expect("parses");
        assert_eq!(
            spec.shape,
            crate::spec::Shape::Alter(
                "ALTER TABLE public.community ALTER COLUMN title TYPE varchar(200)".into()
            )
        );
        assert_eq!(spec.table.to_string(), "public.community");
    }

    #[test]
    fn other_tables_other_statements_and_table_renames_are_refused() {
        for (alter, says) in [
            (
                "ALTER TABLE customers ADD COLUMN x int",
                "is not the migration's table",
            ),
            (
                "ALTER TABLE other.orders ADD COLUMN x int",
                "is not the migration's table",
            ),
            ("DROP TABLE orders", "is not ALTER TABLE"),
            ("ALTER TABLE orders RENAME TO orders2", "renames the table"),
            ("ALTER TABLE orders ALTER COLUMN", "cannot parse"),
        ] {
            let s = spec(alter);
            let err = implied_mappings(&s, alter).expect_err(alter);
            assert!(err.to_string().contains(says), "{alter}: {err}");
        }
    }
}
