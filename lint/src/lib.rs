//! `lint`: the splice DDL linter. SQL text in, [`Diagnostic`]s out.
//!
//! This crate has no database and no async: it is used by `splice lint` in CI and by the engine
//! on the DDL it generates. It does not read files, apply `splice.toml`, or format output; the
//! binary does that.

use serde::Serialize;
use std::collections::BTreeSet;

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
