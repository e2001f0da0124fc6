//! `lint`: the splice DDL linter. SQL text in, [`Diagnostic`]s out.
//!
//! This crate has no database and no async: it is used by `splice lint` in CI and by the engine
//! on the DDL it generates. It does not read files, apply `splice.toml`, or format output; the
//! binary does that.
//!
//! How a file is read:
//! 1. `split`: one lexical pass yields statements, tokens and comments. It knows both dialects'
//!    quoting, dollar bodies, nested comments and MySQL `DELIMITER` lines, so nothing inside a
//!    comment, string or body is ever judged, and one bad statement cannot hide the rest. Input
//!    that cannot be SQL (unterminated quote/comment/body, unbalanced parentheses) is
//!    `syntax-error`.
//! 2. Each statement is parsed once with sqlparser (`ast`); when sqlparser rejects it, the
//!    fallback recogniser (`recognise`) reads its keywords. Both produce the same `ops::Op`s.
//!    A statement neither understands is an `unparsed-statement` warning, never an error.
//!    Statement kinds no rule judges (DML, grants, functions, …) are classified by their
//!    leading keywords without a full parse, since the outcome cannot differ.
//! 3. Every rule (`rules`, one file each) judges each operation, knowing what earlier
//!    statements did: tables and indexes created earlier in the input are new and empty, so
//!    locking and breaking-change rules skip them; an open `BEGIN`; an earlier lock timeout.
//! 4. `suppress` applies `-- splice:ignore` / `-- splice:ignore-file` comments and reports the
//!    unused ones; then `Options::disable` / `Options::warn` apply.

use serde::Serialize;
use std::collections::{BTreeSet, HashSet};

mod ast;
mod ops;
mod recognise;
mod rules;
mod split;
mod suppress;

use ops::Op;
use rules::Context;
use split::{LineIndex, Split};

/// The SQL dialect a file is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    #[default]
    Postgres,
    Mysql,
}

/// How bad a diagnostic is. `Error` fails the check (exit 1); `Warning` is reported only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Error,
}

/// What the caller tells the linter about the SQL it is given.
#[derive(Debug, Clone)]
pub struct Options {
    pub dialect: Dialect,
    /// Major PostgreSQL version the migration targets (constant defaults are free since 11).
    pub postgres_version: u32,
    /// Treat the whole input as running inside one transaction block (migration tools that wrap
    /// each file in BEGIN/COMMIT).
    pub assume_in_transaction: bool,
    /// Rule ids that never fire.
    pub disable: BTreeSet<String>,
    /// Rule ids whose diagnostics are downgraded to warnings.
    pub warn: BTreeSet<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            dialect: Dialect::Postgres,
            postgres_version: 15,
            assume_in_transaction: false,
            disable: BTreeSet::new(),
            warn: BTreeSet::new(),
        }
    }
}

/// One finding, positioned at the start of the offending statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// 1-based line where the offending statement starts.
    pub line: usize,
    /// 1-based column (in characters) where the offending statement starts.
    pub column: usize,
    pub rule: &'static str,
    pub severity: Severity,
    /// Names the table/column and what is wrong.
    pub message: String,
    /// The safe way to do it.
    pub help: String,
}

/// A rule's identity and documentation, as `--list-rules` and `--explain` print them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleInfo {
    /// Stable id used in output, `-- splice:ignore` and `splice.toml`.
    pub id: &'static str,
    /// Default severity.
    pub severity: Severity,
    /// Dialects the rule fires in.
    pub dialects: &'static [Dialect],
    /// One line.
    pub summary: &'static str,
    /// Full markdown: `## What it does`, `## Why is this bad?`, `## Example`, `## Use instead`.
    pub doc: &'static str,
    /// The safe way, as printed under each diagnostic.
    pub help: &'static str,
}

/// Every rule, including the ones the driver reports (`syntax-error`, `unparsed-statement`,
/// `missing-lock-timeout`, `unused-ignore`).
pub fn rules() -> &'static [RuleInfo] {
    rules::RULES
}

/// The rule with this id.
pub fn rule(id: &str) -> Option<&'static RuleInfo> {
    rules::RULES.iter().find(|r| r.id == id)
}

/// A finding before suppression: the statement it belongs to, for `-- splice:ignore`.
pub(crate) struct Finding {
    pub statement: Option<usize>,
    /// Byte offset the diagnostic points at.
    pub offset: usize,
    pub rule: &'static RuleInfo,
    pub message: String,
}

/// What earlier statements in the input did.
#[derive(Default)]
struct History {
    in_transaction: bool,
    lock_timeout_set: bool,
    lock_timeout_reported: bool,
    created: HashSet<String>,
}

impl History {
    fn record(&mut self, op: &Op) {
        match op {
            Op::CreateTable { table } => {
                self.created.insert(table.key.clone());
            }
            Op::CreateIndex {
                name: Some(name), ..
            } => {
                self.created.insert(name.key.clone());
            }
            Op::RenameTable { from, to } if self.created.remove(&from.key) => {
                self.created.insert(to.key.clone());
            }
            Op::DropTable { table } => {
                self.created.remove(&table.key);
            }
            Op::Begin => self.in_transaction = true,
            Op::Commit => self.in_transaction = false,
            Op::SetLockTimeout => self.lock_timeout_set = true,
            _ => {}
        }
    }
}

fn enabled(rule: &RuleInfo, opts: &Options) -> bool {
    rule.dialects.contains(&opts.dialect) && !opts.disable.contains(rule.id)
}

/// Lints `sql` (one file's worth) and returns its diagnostics sorted by position.
///
/// Never panics and never fails: input that cannot be SQL yields `syntax-error`, statements
/// neither sqlparser nor the recogniser understand yield `unparsed-statement` warnings.
pub fn check(sql: &str, opts: &Options) -> Vec<Diagnostic> {
    let split = split::split(sql, opts.dialect);
    let lines = LineIndex::new(sql);
    let mut findings = Vec::new();

    if enabled(&rules::syntax_error::INFO, opts) {
        for e in &split.errors {
            findings.push(Finding {
                statement: statement_at(&split, e.offset),
                offset: e.offset,
                rule: &rules::syntax_error::INFO,
                message: e.message.clone(),
            });
        }
    }

    let mut history = History {
        in_transaction: opts.assume_in_transaction,
        ..History::default()
    };
    let mut ops = Vec::new();
    for (index, st) in split.statements.iter().enumerate() {
        if st.broken {
            continue;
        }
        ops.clear();
        if let Err(message) = analyse(sql, &split, st, opts.dialect, &lines, &mut ops) {
            if enabled(&rules::unparsed_statement::INFO, opts) {
                findings.push(Finding {
                    statement: Some(index),
                    offset: st.start,
                    rule: &rules::unparsed_statement::INFO,
                    message,
                });
            }
            continue;
        }
        for op in &ops {
            for (rule, check) in rules::CHECKS {
                if !enabled(rule, opts) {
                    continue;
                }
                let cx = Context {
                    opts,
                    in_transaction: history.in_transaction,
                    lock_timeout_set: history.lock_timeout_set,
                    lock_timeout_reported: history.lock_timeout_reported,
                    created: &history.created,
                };
                if let Some(message) = check(op, &cx) {
                    if rule.id == rules::missing_lock_timeout::INFO.id {
                        history.lock_timeout_reported = true;
                    }
                    findings.push(Finding {
                        statement: Some(index),
                        offset: st.start,
                        rule,
                        message,
                    });
                }
            }
            history.record(op);
        }
    }

    let mut kept = suppress::apply(sql, &split, &lines, findings, opts);
    // Increasing offsets keep `line_col` linear on long lines.
    kept.sort_by_key(|f| f.offset);
    let mut out: Vec<Diagnostic> = kept
        .into_iter()
        .map(|f| {
            let (line, column) = lines.line_col(sql, f.offset);
            let severity = if opts.warn.contains(f.rule.id) {
                Severity::Warning
            } else {
                f.rule.severity
            };
            let statement = f
                .statement
                .and_then(|i| split.statements.get(i))
                .map(|st| &sql[st.start..st.end]);
            Diagnostic {
                line,
                column,
                rule: f.rule.id,
                severity,
                message: f.message,
                help: help_for(f.rule, statement, opts.dialect),
            }
        })
        .collect();
    out.sort_by_key(|d| (d.line, d.column));
    out
}

/// The rule's help; for an ALTER TABLE that rewrites or scans the table under its lock, also
/// the one command that writes the splice migration running that same ALTER online.
fn help_for(rule: &RuleInfo, statement: Option<&str>, dialect: Dialect) -> String {
    const ONLINE: [&str; 2] = ["change-column-type", "set-not-null"];
    let alter = statement.map(str::trim).filter(|st| {
        st.get(..11)
            .is_some_and(|p| p.eq_ignore_ascii_case("alter table"))
    });
    match alter {
        Some(st) if dialect == Dialect::Postgres && ONLINE.contains(&rule.id) => {
            let one_line = st.split_whitespace().collect::<Vec<_>>().join(" ");
            format!(
                "{}; or run this same ALTER online: splice new <name> --alter '{}'",
                rule.help,
                one_line.replace('\'', "'\\''")
            )
        }
        _ => rule.help.to_string(),
    }
}

/// Index of the statement whose text contains `offset`.
fn statement_at(split: &Split, offset: usize) -> Option<usize> {
    let i = split
        .statements
        .partition_point(|s| s.start <= offset)
        .checked_sub(1)?;
    (offset < split.statements[i].terminator_end).then_some(i)
}

/// Parses one statement with sqlparser, falling back to the recogniser; `Err` carries the
/// parser's message (with its location in file coordinates) when neither understood it.
fn analyse(
    sql: &str,
    split: &Split,
    st: &split::Statement,
    dialect: Dialect,
    lines: &LineIndex,
    out: &mut Vec<Op>,
) -> Result<(), String> {
    let tokens = split.tokens.get(st.tokens.clone()).unwrap_or(&[]);
    if recognise::is_unjudged(sql, tokens) {
        return Ok(());
    }
    let text = sql.get(st.start..st.end).unwrap_or("");
    let parsed = match dialect {
        Dialect::Postgres => {
            sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::PostgreSqlDialect {}, text)
        }
        Dialect::Mysql => {
            sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::MySqlDialect {}, text)
        }
    };
    let error = match parsed {
        Ok(statements) => {
            for s in &statements {
                ast::ops(s, dialect, out);
            }
            return Ok(());
        }
        Err(e) => e,
    };
    match recognise::recognise(sql, tokens, dialect) {
        recognise::Recognised::Ops(ops) => {
            out.extend(ops);
            Ok(())
        }
        recognise::Recognised::Unknown => {
            let (line, col) = lines.line_col(sql, st.start);
            Err(format!(
                "neither sqlparser nor the fallback recogniser understood this statement: {}",
                relocate(&error, line, col)
            ))
        }
    }
}

/// Rewrites sqlparser's `at Line: l, Column: c` (relative to the statement) into file
/// coordinates, given where the statement starts.
fn relocate(error: &sqlparser::parser::ParserError, line: usize, col: usize) -> String {
    use sqlparser::parser::ParserError;
    let msg = match error {
        ParserError::TokenizerError(m) | ParserError::ParserError(m) => m.clone(),
        ParserError::RecursionLimitExceeded => return "recursion limit exceeded".to_string(),
    };
    let Some(at) = msg.rfind(" at Line: ") else {
        return msg;
    };
    let loc = &msg[at + " at Line: ".len()..];
    let mut nums = loc
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse::<usize>().ok());
    match (nums.next(), nums.next()) {
        (Some(l), Some(c)) if l >= 1 && c >= 1 => {
            let (fl, fc) = if l == 1 {
                (line, col + c - 1)
            } else {
                (line + l - 1, c)
            };
            format!("{} at line {fl}, column {fc}", &msg[..at])
        }
        _ => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ops::Fill;

    /// Ops with the spelling differences of the two readers (type case, expression spacing)
    /// normalised away.
    fn normalised(ops: Vec<Op>) -> Vec<String> {
        ops.into_iter()
            .map(|op| match op {
                Op::ChangeType { table, column, .. } => format!("ChangeType {table:?} {column}"),
                Op::AddColumn {
                    table,
                    column,
                    not_null,
                    fill: Fill::Default(e),
                } => format!(
                    "AddColumn {table:?} {column} {not_null} default {}",
                    e.to_lowercase().replace(' ', "")
                ),
                other => format!("{other:?}"),
            })
            .collect()
    }

    /// Both readers of a statement sqlparser accepts must see the same operations, so the
    /// rules judge a statement alike whichever path read it.
    #[test]
    fn sqlparser_and_the_recogniser_agree_on_what_statements_do() {
        let cases: &[(Dialect, &str)] = &[
            (
                Dialect::Postgres,
                "ALTER TABLE public.users DROP COLUMN email",
            ),
            (
                Dialect::Postgres,
                "ALTER TABLE IF EXISTS ONLY \"Users\" DROP COLUMN IF EXISTS a CASCADE",
            ),
            (Dialect::Postgres, "ALTER TABLE users RENAME COLUMN a TO b"),
            (Dialect::Postgres, "ALTER TABLE users RENAME TO people"),
            (
                Dialect::Postgres,
                "ALTER TABLE users ADD COLUMN a int NOT NULL",
            ),
            (
                Dialect::Postgres,
                "ALTER TABLE users ADD b text NOT NULL DEFAULT 'x'",
            ),
            (
                Dialect::Postgres,
                "ALTER TABLE users ADD COLUMN c uuid DEFAULT gen_random_uuid()",
            ),
            (
                Dialect::Postgres,
                "ALTER TABLE users ADD COLUMN d timestamptz NOT NULL DEFAULT now()",
            ),
            (
                Dialect::Postgres,
                "ALTER TABLE users ADD COLUMN e text DEFAULT NULL",
            ),
            (
                Dialect::Postgres,
                "ALTER TABLE users ADD COLUMN f bigserial",
            ),
            (
                Dialect::Postgres,
                "ALTER TABLE users ADD COLUMN g int GENERATED ALWAYS AS IDENTITY",
            ),
            (
                Dialect::Postgres,
                "ALTER TABLE users ADD COLUMN h int GENERATED ALWAYS AS (a * 2) STORED",
            ),
            (
                Dialect::Postgres,
                "ALTER TABLE users ADD COLUMN i int PRIMARY KEY",
            ),
            (
                Dialect::Postgres,
                "ALTER TABLE users ADD COLUMN j text UNIQUE, ADD COLUMN k int",
            ),
            (
                Dialect::Postgres,
                "ALTER TABLE users ADD COLUMN \"unique\" int",
            ),
            (
                Dialect::Postgres,
                "ALTER TABLE users ALTER COLUMN a SET NOT NULL",
            ),
            (
                Dialect::Postgres,
                "ALTER TABLE users ALTER COLUMN a TYPE bigint",
            ),
            (
                Dialect::Postgres,
                "ALTER TABLE users ALTER a SET DATA TYPE bigint USING a::bigint",
            ),
            (
                Dialect::Postgres,
                "ALTER TABLE users ALTER COLUMN a DROP DEFAULT",
            ),
            (
                Dialect::Postgres,
                "ALTER TABLE users ADD CONSTRAINT fk FOREIGN KEY (a) REFERENCES o (id)",
            ),
            (
                Dialect::Postgres,
                "ALTER TABLE users ADD CONSTRAINT fk FOREIGN KEY (a) REFERENCES o (id) NOT VALID",
            ),
            (
                Dialect::Postgres,
                "ALTER TABLE users ADD CONSTRAINT c CHECK (a > 0)",
            ),
            (
                Dialect::Postgres,
                "ALTER TABLE users ADD CONSTRAINT u UNIQUE (a)",
            ),
            (Dialect::Postgres, "ALTER TABLE users ADD PRIMARY KEY (id)"),
            (Dialect::Postgres, "ALTER TABLE users VALIDATE CONSTRAINT c"),
            (Dialect::Postgres, "ALTER TABLE users DROP CONSTRAINT c"),
            (Dialect::Postgres, "CREATE INDEX i ON users (a)"),
            (
                Dialect::Postgres,
                "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS i ON users USING btree (a)",
            ),
            (Dialect::Postgres, "CREATE INDEX ON users (a)"),
            (Dialect::Postgres, "DROP INDEX i"),
            (Dialect::Postgres, "DROP TABLE IF EXISTS a, b CASCADE"),
            (Dialect::Postgres, "DROP SCHEMA s CASCADE"),
            (Dialect::Postgres, "DROP DATABASE d"),
            (Dialect::Postgres, "TRUNCATE TABLE a, b"),
            (Dialect::Postgres, "CREATE TABLE t (id int)"),
            (Dialect::Postgres, "CREATE TABLE IF NOT EXISTS s.t (id int)"),
            (Dialect::Postgres, "BEGIN"),
            (Dialect::Postgres, "START TRANSACTION"),
            (Dialect::Postgres, "COMMIT"),
            (Dialect::Postgres, "ROLLBACK"),
            (Dialect::Postgres, "SET lock_timeout = '2s'"),
            (Dialect::Postgres, "SET LOCAL lock_timeout TO '2s'"),
            (Dialect::Postgres, "SET statement_timeout = '2s'"),
            (
                Dialect::Mysql,
                "ALTER TABLE t CHANGE COLUMN a b INT NOT NULL",
            ),
            (Dialect::Mysql, "ALTER TABLE t CHANGE a a BIGINT"),
            (
                Dialect::Mysql,
                "ALTER TABLE t MODIFY COLUMN a VARCHAR(10) NOT NULL",
            ),
            (
                Dialect::Mysql,
                "ALTER TABLE t ADD COLUMN a INT NOT NULL AUTO_INCREMENT",
            ),
            (
                Dialect::Mysql,
                "ALTER TABLE t ADD COLUMN a INT, ALGORITHM=COPY, LOCK=SHARED",
            ),
            (
                Dialect::Mysql,
                "ALTER TABLE t ADD COLUMN a INT, ALGORITHM = INPLACE, LOCK = NONE",
            ),
            (Dialect::Mysql, "ALTER TABLE `t` DROP `a`"),
            (Dialect::Mysql, "ALTER TABLE t RENAME TO u"),
            (Dialect::Mysql, "RENAME TABLE a TO b, c TO d"),
            (Dialect::Mysql, "DROP INDEX i ON t"),
            (Dialect::Mysql, "SET SESSION lock_wait_timeout = 5"),
            (Dialect::Mysql, "SET innodb_lock_wait_timeout = 5"),
            (Dialect::Mysql, "TRUNCATE TABLE t"),
            (
                Dialect::Mysql,
                "CREATE INDEX i ON t (a) ALGORITHM=COPY LOCK=EXCLUSIVE",
            ),
            (Dialect::Mysql, "CREATE UNIQUE INDEX i ON t (a) LOCK = NONE"),
        ];
        let mut compared = 0;
        for &(dialect, sql) in cases {
            let s = split::split(sql, dialect);
            let toks = &s.tokens[s.statements[0].tokens.clone()];
            let parsed = match dialect {
                Dialect::Postgres => sqlparser::parser::Parser::parse_sql(
                    &sqlparser::dialect::PostgreSqlDialect {},
                    sql,
                ),
                Dialect::Mysql => {
                    sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::MySqlDialect {}, sql)
                }
            };
            let Ok(statements) = parsed else {
                continue;
            };
            let mut from_ast = Vec::new();
            for st in &statements {
                ast::ops(st, dialect, &mut from_ast);
            }
            let recognise::Recognised::Ops(from_tokens) = recognise::recognise(sql, toks, dialect)
            else {
                panic!("recogniser does not know {sql}");
            };
            assert_eq!(normalised(from_ast), normalised(from_tokens), "{sql}");
            compared += 1;
        }
        assert!(compared > 40, "only {compared} cases parsed");
    }
}
