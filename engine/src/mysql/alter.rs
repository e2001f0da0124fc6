//! Alter mode on MySQL/MariaDB (`alter = "ALTER TABLE …"`): the shadow table starts as
//! `CREATE TABLE shadow LIKE live`, an exact structural copy (columns with their types,
//! defaults, AUTO_INCREMENT and generated expressions, every index and the primary key,
//! column comments, the table's engine, options, comment and partitioning), and the
//! migration's ALTER TABLE statements run on it under the shadow's name, so nothing the table
//! carries is lost by restating it by hand. gh-ost and pt-online-schema-change take the same
//! statements (`--alter "MODIFY k BIGINT"`); here they are whole statements naming the table.
//!
//! `ALGORITHM=` and `LOCK=` clauses are dropped: they say how the server may change the live
//! table in place, and the shadow is a new, empty table. What cannot be carried is refused:
//! renaming the table (cutover does that), foreign keys (as in `target` mode), `ALTER IGNORE`
//! (it would drop rows).

use super::plan::{read_name, split_statements, strip_quoted, strip_word};
use super::{quote_ident, quote_name};
use crate::adapter::ImpliedMappings;
use crate::spec::MigrationSpec;
use crate::EngineError;
use std::collections::BTreeMap;

/// One ALTER TABLE statement of the migration: its clauses (split at top-level commas), as
/// written.
struct Alter<'a> {
    clauses: Vec<&'a str>,
}

fn refuse(why: String) -> EngineError {
    EngineError::Plan(format!("alter: {why}"))
}

/// The migration's ALTER TABLE statements, each checked to name the live table and to hold
/// nothing the shadow cannot carry.
fn parse<'a>(spec: &MigrationSpec, alter: &'a str) -> Result<Vec<Alter<'a>>, EngineError> {
    let statements: Vec<&str> = split_statements(alter)
        .into_iter()
        .filter(|s| !s.trim().is_empty())
        .collect();
    if statements.is_empty() {
        return Err(refuse(format!(
            "no statement; give ALTER TABLE {} …",
            spec.table
        )));
    }
    let mut out = Vec::new();
    for stmt in statements {
        let shown: String = stmt.trim().chars().take(60).collect();
        let not_alter = || {
            refuse(format!(
                "`{shown}` is not ALTER TABLE; alter takes ALTER TABLE {} statements only",
                spec.table
            ))
        };
        let mut rest = strip_word(stmt.trim_start(), "ALTER").ok_or_else(not_alter)?;
        if let Some(r) = strip_word(rest, "ONLINE") {
            rest = r;
        }
        if strip_word(rest, "IGNORE").is_some() {
            return Err(refuse(
                "ALTER IGNORE drops the rows a new unique key finds duplicated, and splice \
                 never drops rows: remove the duplicates first, then ALTER TABLE without IGNORE"
                    .into(),
            ));
        }
        rest = strip_word(rest, "TABLE").ok_or_else(not_alter)?;
        if let Some(r) = strip_word(rest, "IF").and_then(|r| strip_word(r, "EXISTS")) {
            rest = r;
        }
        let (parts, after) =
            read_name(rest).ok_or_else(|| refuse(format!("`{shown}` names no table")))?;
        let names_live = match parts.as_slice() {
            [name] => *name == spec.table.name,
            [db, name] => *db == spec.table.schema && *name == spec.table.name,
            _ => false,
        };
        if !names_live {
            return Err(refuse(format!(
                "`ALTER TABLE {}` is not the migration's table {}; a migration changes one table",
                parts.join("."),
                spec.table
            )));
        }
        let upper = strip_quoted(after).to_ascii_uppercase();
        if upper.contains("FOREIGN KEY") || upper.contains(" REFERENCES ") {
            return Err(refuse(
                "foreign keys are not carried by the MySQL adapter (RENAME TABLE would leave \
                 them pointing at the retired table); add them after contract"
                    .into(),
            ));
        }
        let mut clauses = Vec::new();
        for clause in split_clauses(after) {
            let words = words(clause);
            let first = words.first().map(String::as_str).unwrap_or("");
            let second = words.get(1).map(String::as_str).unwrap_or("");
            match first {
                "" => continue,
                // How the server may change the live table in place: nothing to say about a
                // new, empty one.
                "ALGORITHM" | "LOCK" => continue,
                "RENAME" if !matches!(second, "COLUMN" | "INDEX" | "KEY") => {
                    return Err(refuse(format!(
                        "`{}` renames the table, which cutover does by itself; leave the name \
                         as it is",
                        clause.trim()
                    )))
                }
                _ => clauses.push(clause.trim()),
            }
        }
        if clauses.is_empty() {
            return Err(refuse(format!("`{shown}` changes nothing")));
        }
        out.push(Alter { clauses });
    }
    Ok(out)
}

/// `s` split at commas outside quotes, backquotes and parentheses.
fn split_clauses(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut depth) = (0, 0_i32);
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match quote {
            Some(_) if escaped => escaped = false,
            Some(q) if c == '\\' && q != '`' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '\'' | '"' | '`' => quote = Some(c),
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    out.push(&s[start..i]);
                    start = i + 1;
                }
                _ => {}
            },
        }
    }
    out.push(&s[start..]);
    out
}

/// The leading keywords of a clause, upper-cased (up to the first non-word character).
fn words(clause: &str) -> Vec<String> {
    clause
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .take(3)
        .map(str::to_ascii_uppercase)
        .collect()
}

/// The table the first statement of `alter` names when it is `ALTER [ONLINE] TABLE name …`
/// (`db.table` or `table`, bare parts lowercased), read as MySQL writes names.
pub fn table_of(alter: &str) -> Option<String> {
    let first = split_statements(alter)
        .into_iter()
        .find(|s| !s.trim().is_empty())?;
    let mut rest = strip_word(first.trim_start(), "ALTER")?;
    if let Some(r) = strip_word(rest, "ONLINE") {
        rest = r;
    }
    let (parts, _) = read_name(strip_word(rest, "TABLE")?)?;
    Some(parts.join("."))
}

/// The statements that create the shadow table in alter mode.
pub fn shadow_ddl(spec: &MigrationSpec, alter: &str) -> Result<Vec<String>, EngineError> {
    let shadow = quote_name(&spec.shadow_table());
    let mut out = vec![format!(
        "CREATE TABLE {shadow} LIKE {}",
        quote_name(&spec.table)
    )];
    for a in parse(spec, alter)? {
        out.push(format!("ALTER TABLE {shadow} {}", a.clauses.join(", ")));
    }
    Ok(out)
}

/// The mappings an ALTER implies, for the entries the file does not give itself: a column
/// renamed (`CHANGE [COLUMN] old new …`, `RENAME COLUMN old TO new`) maps to its old name
/// (`up`) and back (`down`).
pub fn implied_mappings(spec: &MigrationSpec, alter: &str) -> Result<ImpliedMappings, EngineError> {
    // current name → the source column it started as
    let mut origin: BTreeMap<String, String> = BTreeMap::new();
    for a in parse(spec, alter)? {
        for clause in &a.clauses {
            let Some((old, new)) = renamed(clause) else {
                continue;
            };
            let source = origin.remove(&old).unwrap_or_else(|| old.clone());
            origin.insert(new, source);
        }
    }
    let mut implied = ImpliedMappings::default();
    for (new, source) in origin {
        if new == source {
            continue;
        }
        implied.up.insert(new.clone(), quote_ident(&source));
        implied.down.insert(source, quote_ident(&new));
    }
    implied.up.retain(|k, _| !spec.up.contains_key(k));
    implied.down.retain(|k, _| !spec.down.contains_key(k));
    Ok(implied)
}

/// (old, new) when `clause` renames a column.
fn renamed(clause: &str) -> Option<(String, String)> {
    let rest = clause.trim_start();
    if let Some(r) = strip_word(rest, "CHANGE") {
        let mut r = strip_word(r, "COLUMN").unwrap_or(r);
        if let Some(x) = strip_word(r, "IF").and_then(|x| strip_word(x, "EXISTS")) {
            r = x;
        }
        let (old, r) = read_name(r)?;
        let (new, _) = read_name(r)?;
        return Some((old.join("."), new.join(".")));
    }
    let r = strip_word(rest, "RENAME").and_then(|r| strip_word(r, "COLUMN"))?;
    let (old, r) = read_name(r)?;
    let r = strip_word(r.trim_start(), "TO")?;
    let (new, _) = read_name(r)?;
    Some((old.join("."), new.join(".")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(alter: &str) -> MigrationSpec {
        MigrationSpec::parse(
            &format!("name = \"orders_v2\"\ntable = \"shop.orders\"\nalter = '''{alter}'''\n"),
            "t.toml",
        )
        .expect("spec")
    }

    #[test]
    fn the_shadow_is_a_copy_of_the_live_table_with_the_alter_applied() {
        let a = "ALTER TABLE shop.orders MODIFY k BIGINT NOT NULL, ALGORITHM=INPLACE, LOCK=NONE, \
                 ADD INDEX k_2 (k, note); ALTER TABLE `orders` ADD COLUMN x INT DEFAULT 1";
        let ddl = shadow_ddl(&spec(a), a).expect("ddl");
        assert_eq!(
            ddl,
            vec![
                "CREATE TABLE `shop`.`_splice_orders_v2_new` LIKE `shop`.`orders`",
                "ALTER TABLE `shop`.`_splice_orders_v2_new` MODIFY k BIGINT NOT NULL, ADD INDEX \
                 k_2 (k, note)",
                "ALTER TABLE `shop`.`_splice_orders_v2_new` ADD COLUMN x INT DEFAULT 1",
            ]
        );
    }

    #[test]
    fn the_table_is_read_from_a_mysql_alter() {
        assert_eq!(
            table_of("ALTER TABLE `shop`.orders MODIFY k BIGINT").as_deref(),
            Some("shop.orders")
        );
        assert_eq!(table_of("CREATE INDEX i ON t (c)"), None);
    }

    #[test]
    fn renames_map_both_ways() {
        let a = "ALTER TABLE shop.orders CHANGE COLUMN amount total DECIMAL(12,2) NOT NULL, \
                 RENAME COLUMN note TO memo; ALTER TABLE shop.orders CHANGE memo remark TEXT";
        let m = implied_mappings(&spec(a), a).expect("mappings");
        assert_eq!(m.up.get("total").map(String::as_str), Some("`amount`"));
        assert_eq!(m.up.get("remark").map(String::as_str), Some("`note`"));
        assert_eq!(m.down.get("note").map(String::as_str), Some("`remark`"));
        assert_eq!(m.down.get("amount").map(String::as_str), Some("`total`"));
        assert!(!m.up.contains_key("memo"), "{m:?}");
    }

    #[test]
    fn other_tables_table_renames_foreign_keys_and_ignore_are_refused() {
        for (a, says) in [
            (
                "ALTER TABLE shop.other ADD COLUMN x INT",
                "not the migration's table",
            ),
            (
                "ALTER TABLE shop.orders RENAME TO shop.orders2",
                "renames the table",
            ),
            (
                "ALTER TABLE shop.orders ADD x INT, RENAME AS y",
                "renames the table",
            ),
            (
                "ALTER TABLE shop.orders ADD FOREIGN KEY (c) REFERENCES shop.c (id)",
                "foreign keys",
            ),
            (
                "ALTER IGNORE TABLE shop.orders ADD UNIQUE (note)",
                "never drops rows",
            ),
            ("CREATE INDEX i ON shop.orders (note)", "is not ALTER TABLE"),
            (
                "ALTER TABLE shop.orders ALGORITHM=INSTANT",
                "changes nothing",
            ),
        ] {
            let e = shadow_ddl(&spec(a), a).expect_err(a).to_string();
            assert!(e.contains(says), "{a}: {e}");
        }
        // Renaming a column or an index is not renaming the table.
        let a = "ALTER TABLE shop.orders RENAME COLUMN a TO b, RENAME INDEX i TO j";
        assert!(shadow_ddl(&spec(a), a).is_ok());
    }
}
