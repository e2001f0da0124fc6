//! Triggers on the migrated table, carried to the table that takes the live name.
//!
//! MySQL keeps a trigger with its table through `RENAME TABLE`, and a trigger's name is unique
//! within its database. So at each swap (cutover, and the swap back of a rollback) the triggers
//! of the live table are created on the incoming table under their *carried* names (`_splice`
//! appended, or taken off a name that ends in it: the names alternate from one migration to
//! the next, as gh-ost's `--trigger-suffix` does), after the drain and before the rename, while
//! the application's writes wait on the lock; once the rename ran, the outgoing table's
//! copies are dropped. So exactly one set fires for each of the application's writes, and none
//! for the applier's: the table splice writes into (the new table before cutover, the old
//! one after it) never has triggers, and an applier opened on one drops any a crash left there.
//!
//! Each trigger is created as it was read from `information_schema.TRIGGERS`: its definer,
//! timing, event, body and `sql_mode`, in its order among the triggers of the same timing and
//! event. A body naming a column (`NEW.x`, `OLD.x`) the new shape does not have is refused at
//! plan; expand creates each trigger once on a scratch copy of the new table, so a body that
//! does not compile there, or a definer splice may not create triggers for, is refused before
//! anything is copied.

use super::{col, quote_ident, quote_name};
use crate::spec::QualifiedName;
use crate::EngineError;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};

/// The suffix of a carried trigger's name.
pub const SUFFIX: &str = "_splice";
/// MySQL's longest trigger name.
const NAME_MAX: usize = 64;

/// One trigger as `information_schema.TRIGGERS` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    pub name: String,
    /// `BEFORE` or `AFTER`.
    pub timing: String,
    /// `INSERT`, `UPDATE` or `DELETE`.
    pub event: String,
    /// The body as written (`BEGIN … END` or one statement).
    pub body: String,
    /// `user@host` (or a role).
    pub definer: String,
    pub sql_mode: String,
}

/// The name a trigger takes on the table that takes the live name.
pub fn carried_name(name: &str) -> String {
    match name.strip_suffix(SUFFIX) {
        Some(base) if !base.is_empty() => base.to_string(),
        _ => format!("{name}{SUFFIX}"),
    }
}

/// `user@host` as a `DEFINER` clause's value: `'user'@'host'` (a role: `'role'`).
fn definer_clause(definer: &str) -> String {
    let lit = |s: &str| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"));
    match definer.rsplit_once('@') {
        Some((user, host)) => format!("{}@{}", lit(user), lit(host)),
        None => lit(definer),
    }
}

impl Trigger {
    /// `CREATE TRIGGER` of this trigger under `name` on `table` (in `table`'s database).
    pub fn create_sql(&self, name: &str, table: &QualifiedName) -> String {
        format!(
            "CREATE DEFINER = {} TRIGGER {}.{} {} {} ON {} FOR EACH ROW {}",
            definer_clause(&self.definer),
            quote_ident(&table.schema),
            quote_ident(name),
            self.timing,
            self.event,
            quote_name(table),
            self.body
        )
    }

    /// The columns the body reads or writes as `NEW.x` / `OLD.x` that are not in `columns`
    /// (compared without case, as MySQL compares column names).
    pub fn missing_columns(&self, columns: &[String]) -> Vec<String> {
        let mut missing: Vec<String> = Vec::new();
        for name in row_references(&self.body) {
            if !columns.iter().any(|c| c.eq_ignore_ascii_case(&name))
                && !missing.iter().any(|m| m.eq_ignore_ascii_case(&name))
            {
                missing.push(name);
            }
        }
        missing
    }
}

/// The column names after `NEW.` and `OLD.` in a trigger body, outside strings and comments.
fn row_references(body: &str) -> Vec<String> {
    let chars: Vec<char> = body.chars().collect();
    let word = |c: char| c.is_alphanumeric() || c == '_' || c == '$';
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\'' | '"' => {
                // A string: to its closing quote (a doubled quote or a backslash escapes one).
                i += 1;
                while i < chars.len() {
                    if chars[i] == '\\' {
                        i += 2;
                        continue;
                    }
                    if chars[i] == c {
                        if chars.get(i + 1) == Some(&c) {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i += 1;
            }
            '`' => {
                i += 1;
                while i < chars.len() && chars[i] != '`' {
                    i += 1;
                }
                i += 1;
            }
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '-' if chars.get(i + 1) == Some(&'-')
                && chars.get(i + 2).is_some_and(|c| c.is_whitespace()) =>
            {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '/' if chars.get(i + 1) == Some(&'*') => {
                i += 2;
                while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                    i += 1;
                }
                i += 2;
            }
            c if word(c) => {
                let start = i;
                while i < chars.len() && word(chars[i]) {
                    i += 1;
                }
                let w: String = chars[start..i].iter().collect();
                let preceded_by_dot = start > 0 && chars[start - 1] == '.';
                if !preceded_by_dot
                    && (w.eq_ignore_ascii_case("new") || w.eq_ignore_ascii_case("old"))
                    && chars.get(i) == Some(&'.')
                {
                    i += 1;
                    if chars.get(i) == Some(&'`') {
                        let from = i + 1;
                        let mut end = from;
                        while end < chars.len() && chars[end] != '`' {
                            end += 1;
                        }
                        out.push(chars[from..end].iter().collect());
                        i = end + 1;
                    } else {
                        let from = i;
                        while i < chars.len() && word(chars[i]) {
                            i += 1;
                        }
                        if i > from {
                            out.push(chars[from..i].iter().collect());
                        }
                    }
                }
            }
            _ => i += 1,
        }
    }
    out
}

/// The triggers on `table`, in the order they fire within each timing and event.
pub async fn on_table(conn: &mut Conn, table: &QualifiedName) -> Result<Vec<Trigger>, EngineError> {
    let ctx = format!("reading the triggers of {table}");
    let rows: Vec<Row> = conn
        .exec(
            "SELECT TRIGGER_NAME, ACTION_TIMING, EVENT_MANIPULATION, ACTION_STATEMENT, DEFINER, \
                    SQL_MODE \
             FROM information_schema.TRIGGERS \
             WHERE EVENT_OBJECT_SCHEMA = ? AND EVENT_OBJECT_TABLE = ? \
             ORDER BY ACTION_TIMING, EVENT_MANIPULATION, ACTION_ORDER, TRIGGER_NAME",
            (&table.schema, &table.name),
        )
        .await
        .map_err(|e| EngineError::my(ctx.clone(), &e))?;
    rows.iter()
        .map(|r| {
            Ok(Trigger {
                name: col(r, 0, &ctx)?,
                timing: col(r, 1, &ctx)?,
                event: col(r, 2, &ctx)?,
                body: col(r, 3, &ctx)?,
                definer: col(r, 4, &ctx)?,
                sql_mode: col(r, 5, &ctx)?,
            })
        })
        .collect()
}

/// Why the triggers of `table` cannot be carried under their carried names: a name too long,
/// or one another trigger of the database already has. One line per problem.
pub async fn naming_problems(
    conn: &mut Conn,
    table: &QualifiedName,
    triggers: &[Trigger],
) -> Result<Vec<String>, EngineError> {
    let ctx = "reading the database's trigger names";
    let taken: Vec<Row> = conn
        .exec(
            "SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE FROM information_schema.TRIGGERS \
             WHERE TRIGGER_SCHEMA = ?",
            (&table.schema,),
        )
        .await
        .map_err(|e| EngineError::my(ctx, &e))?;
    let mut problems = Vec::new();
    for t in triggers {
        let carried = carried_name(&t.name);
        if carried.chars().count() > NAME_MAX {
            problems.push(format!(
                "trigger {} cannot be carried over: its name on the new table, {carried}, is \
                 longer than MySQL's {NAME_MAX} characters (rename the trigger: drop it and \
                 create it under a shorter name)",
                t.name
            ));
            continue;
        }
        for r in &taken {
            let (name, on): (String, String) = (col(r, 0, ctx)?, col(r, 1, ctx)?);
            // A copy on one of splice's tables is what a crash inside a swap left: the next
            // swap replaces it.
            if on.starts_with(crate::spec::SPLICE_TABLE_PREFIX) {
                continue;
            }
            if name.eq_ignore_ascii_case(&carried) && on != table.name {
                problems.push(format!(
                    "trigger {} cannot be carried over: its name on the new table, {carried}, \
                     is taken by a trigger on {on} (rename one of them)",
                    t.name
                ));
            } else if name.eq_ignore_ascii_case(&carried) && on == table.name {
                problems.push(format!(
                    "triggers {} and {name} on the same table cannot be carried over: the \
                     first takes the second's name on the new table (rename one of them)",
                    t.name
                ));
            }
        }
    }
    Ok(problems)
}

/// Sets the session's `sql_mode` (a trigger keeps the one it was created under).
async fn set_sql_mode(conn: &mut Conn, mode: &str) -> Result<(), EngineError> {
    if !mode
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ',')
    {
        return Err(EngineError::Missing(format!(
            "a trigger's sql_mode is not a list of modes: {mode:?}"
        )));
    }
    conn.query_drop(format!("SET SESSION sql_mode = '{mode}'"))
        .await
        .map_err(|e| EngineError::my("setting a trigger's sql_mode", &e))
}

/// Creates `triggers` on `table` under their carried names (replacing a copy an interrupted
/// swap left), in order; the session's `sql_mode` is restored after. Returns what it created,
/// as "trigger X (as Y)".
pub async fn create_carried(
    conn: &mut Conn,
    triggers: &[Trigger],
    table: &QualifiedName,
) -> Result<Vec<String>, EngineError> {
    let previous: Option<String> = conn
        .query_first("SELECT @@SESSION.sql_mode")
        .await
        .map_err(|e| EngineError::my("reading the session's sql_mode", &e))?;
    let mut done = Vec::new();
    let mut result = Ok(());
    for t in triggers {
        let carried = carried_name(&t.name);
        let created = async {
            let failed = |e: mysql_async::Error| EngineError::Database {
                context: format!(
                    "creating trigger {} on {table} as {carried} (splice's user needs the \
                     TRIGGER privilege; with binary logging on, SUPER or the server setting \
                     log_bin_trust_function_creators = 1; and to create it for its definer {}, \
                     SET USER on MariaDB or SET_USER_ID on MySQL)",
                    t.name, t.definer
                ),
                message: cdc::describe_mysql_error(&e),
            };
            conn.query_drop(format!(
                "DROP TRIGGER IF EXISTS {}.{}",
                quote_ident(&table.schema),
                quote_ident(&carried)
            ))
            .await
            .map_err(failed)?;
            set_sql_mode(conn, &t.sql_mode).await?;
            conn.query_drop(t.create_sql(&carried, table))
                .await
                .map_err(failed)
        }
        .await;
        if let Err(e) = created {
            result = Err(e);
            break;
        }
        done.push(format!("trigger {} (as {carried})", t.name));
    }
    if let Some(mode) = previous {
        set_sql_mode(conn, &mode).await?;
    }
    result.map(|()| done)
}

/// Drops every trigger on `table`; returns their names.
pub async fn drop_all(conn: &mut Conn, table: &QualifiedName) -> Result<Vec<String>, EngineError> {
    let names: Vec<String> = on_table(conn, table)
        .await?
        .into_iter()
        .map(|t| t.name)
        .collect();
    for name in &names {
        conn.query_drop(format!(
            "DROP TRIGGER IF EXISTS {}.{}",
            quote_ident(&table.schema),
            quote_ident(name)
        ))
        .await
        .map_err(|e| EngineError::my(format!("dropping trigger {name} of {table}"), &e))?;
    }
    Ok(names)
}

/// Creates the live table's triggers once on `scratch`, a copy of `shadow`'s shape made for
/// the purpose and dropped after: what would fail at cutover (a body that does not compile
/// against the new shape, a definer splice may not act for) fails here instead.
pub async fn try_on_copy(
    conn: &mut Conn,
    live: &QualifiedName,
    shadow: &QualifiedName,
    scratch: &QualifiedName,
) -> Result<(), EngineError> {
    let triggers = on_table(conn, live).await?;
    if triggers.is_empty() {
        return Ok(());
    }
    let ctx = "trying the triggers on a copy of the new table";
    conn.query_drop(format!("DROP TABLE IF EXISTS {}", quote_name(scratch)))
        .await
        .map_err(|e| EngineError::my(ctx, &e))?;
    conn.query_drop(format!(
        "CREATE TABLE {} LIKE {}",
        quote_name(scratch),
        quote_name(shadow)
    ))
    .await
    .map_err(|e| EngineError::my(ctx, &e))?;
    let created = create_carried(conn, &triggers, scratch).await;
    let dropped = conn
        .query_drop(format!("DROP TABLE IF EXISTS {}", quote_name(scratch)))
        .await
        .map_err(|e| EngineError::my(ctx, &e));
    created?;
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carried_names_alternate_between_migrations() {
        assert_eq!(carried_name("orders_audit"), "orders_audit_splice");
        assert_eq!(carried_name("orders_audit_splice"), "orders_audit");
        assert_eq!(carried_name("_splice"), "_splice_splice");
    }

    #[test]
    fn row_references_skip_strings_comments_and_qualified_names() {
        let t = Trigger {
            name: "t".into(),
            timing: "AFTER".into(),
            event: "UPDATE".into(),
            body: "BEGIN -- NEW.in_comment\n\
                   INSERT INTO audit (id, v, note) VALUES (NEW.id, OLD.`Total Cents`, 'NEW.in_string');\n\
                   /* OLD.in_block */ SET @x = new . nope, @y = x.NEW.z, @w = new.Status; # OLD.hash\n\
                   END"
                .into(),
            definer: "root@localhost".into(),
            sql_mode: String::new(),
        };
        assert_eq!(row_references(&t.body), ["id", "Total Cents", "Status"]);
        let columns = ["ID".to_string(), "status".to_string()];
        assert_eq!(t.missing_columns(&columns), ["Total Cents"]);
    }

    #[test]
    fn a_definer_is_quoted_as_user_at_host() {
        assert_eq!(definer_clause("root@localhost"), "'root'@'localhost'");
        assert_eq!(definer_clause("a@b@%"), "'a@b'@'%'");
        assert_eq!(definer_clause("o'brien@%"), "'o''brien'@'%'");
        assert_eq!(definer_clause("app_role"), "'app_role'");
    }
}
