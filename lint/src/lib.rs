//! `lint`: the splice DDL linter. SQL text in, [`Diagnostic`]s out.
//!
//! This crate has no database and no async: it is used by `splice lint` in CI and by the engine
//! on the DDL it generates. It does not read files, apply `splice.toml`, or format output; the
//! binary does that.

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

    let kept = suppress::apply(sql, &split, &lines, findings, opts);
    let mut out: Vec<Diagnostic> = kept
        .into_iter()
        .map(|f| {
            let (line, column) = lines.line_col(sql, f.offset);
            let severity = if opts.warn.contains(f.rule.id) {
                Severity::Warning
            } else {
                f.rule.severity
            };
            Diagnostic {
                line,
                column,
                rule: f.rule.id,
                severity,
                message: f.message,
                help: f.rule.help.to_string(),
            }
        })
        .collect();
    out.sort_by_key(|d| (d.line, d.column));
    out
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
