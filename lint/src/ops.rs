//! The operations a statement performs, as the rules see them. Both the sqlparser AST
//! ([`crate::ast`]) and the fallback token recogniser ([`crate::recognise`]) produce these, so
//! every rule is written once and applies to statements either side understood.

use crate::Dialect;

/// A table, column, index or schema name as written, and the key used to match it against
/// other statements in the same input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Name {
    /// Dotted, unquoted, as written: `public.users`.
    pub display: String,
    /// Last part, lower-cased unless it was quoted: tables are matched on this.
    pub key: String,
}

impl Name {
    /// Builds a name from its parts: `(value, was_quoted)`.
    pub fn from_parts<'s>(parts: impl IntoIterator<Item = (&'s str, bool)>) -> Name {
        let mut display = String::new();
        let mut key = String::new();
        for (value, quoted) in parts {
            if !display.is_empty() {
                display.push('.');
            }
            display.push_str(value);
            key = if quoted {
                value.to_string()
            } else {
                value.to_lowercase()
            };
        }
        Name { display, key }
    }

    #[cfg(test)]
    pub fn plain(s: &str) -> Name {
        Name::from_parts(s.split('.').map(|p| (p, false)))
    }
}

/// How an added column gets its values for existing rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fill {
    /// No DEFAULT.
    Nothing,
    /// `DEFAULT NULL`.
    Null,
    /// `DEFAULT <expr>`, the expression's source text.
    Default(String),
    /// A `serial` type or MySQL `AUTO_INCREMENT`: a sequence fills every row.
    Serial,
    /// `GENERATED … AS IDENTITY`.
    Identity,
    /// `GENERATED ALWAYS AS (expr) STORED`.
    Generated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConstraintKind {
    PrimaryKey,
    Unique,
    ForeignKey,
    Check,
}

impl ConstraintKind {
    pub fn label(self) -> &'static str {
        match self {
            ConstraintKind::PrimaryKey => "PRIMARY KEY",
            ConstraintKind::Unique => "UNIQUE",
            ConstraintKind::ForeignKey => "FOREIGN KEY",
            ConstraintKind::Check => "CHECK",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    CreateTable {
        table: Name,
    },
    DropTable {
        table: Name,
    },
    /// `DROP SCHEMA` / `DROP DATABASE`; `kind` is "schema" or "database".
    DropSchema {
        name: Name,
        kind: &'static str,
    },
    Truncate {
        table: Name,
    },
    RenameTable {
        from: Name,
        to: Name,
    },
    DropColumn {
        table: Name,
        column: String,
    },
    RenameColumn {
        table: Name,
        from: String,
        to: String,
    },
    AddColumn {
        table: Name,
        column: String,
        not_null: bool,
        fill: Fill,
    },
    /// `ALTER COLUMN … TYPE`, MySQL `MODIFY`, or a MySQL `CHANGE` that keeps the name.
    ChangeType {
        table: Name,
        column: String,
        new_type: String,
    },
    SetNotNull {
        table: Name,
        column: String,
    },
    AddConstraint {
        table: Name,
        name: Option<String>,
        kind: ConstraintKind,
        not_valid: bool,
        using_index: bool,
    },
    /// MySQL `ALGORITHM=…`, upper-cased.
    Algorithm {
        table: Name,
        algorithm: String,
    },
    /// MySQL `LOCK=…`, upper-cased.
    Lock {
        table: Name,
        lock: String,
    },
    /// Any other `ALTER TABLE` action: it still takes the table's lock.
    OtherAlter {
        table: Name,
    },
    CreateIndex {
        name: Option<Name>,
        table: Name,
        concurrently: bool,
    },
    DropIndex {
        name: Name,
        /// MySQL `DROP INDEX i ON t`.
        table: Option<Name>,
        concurrently: bool,
    },
    Reindex {
        target: String,
        concurrently: bool,
    },
    /// `VACUUM FULL` (`VACUUM (FULL)`); `table` is `None` for the whole database.
    VacuumFull {
        table: Option<Name>,
    },
    /// `CLUSTER`; `table` is `None` for every table clustered before.
    Cluster {
        table: Option<Name>,
    },
    Begin,
    /// `COMMIT`, `ROLLBACK`, `END`, `ABORT`.
    Commit,
    /// `SET lock_timeout` (PostgreSQL) or `SET lock_wait_timeout` (MySQL).
    SetLockTimeout,
}

impl Op {
    /// The table whose lock this operation waits for, if it locks an existing relation.
    /// Concurrent index builds still wait, but do not block other sessions while they do.
    pub fn locked_table(&self, dialect: Dialect) -> Option<&Name> {
        match self {
            Op::DropTable { table }
            | Op::Truncate { table }
            | Op::DropColumn { table, .. }
            | Op::RenameColumn { table, .. }
            | Op::AddColumn { table, .. }
            | Op::ChangeType { table, .. }
            | Op::SetNotNull { table, .. }
            | Op::AddConstraint { table, .. }
            | Op::Algorithm { table, .. }
            | Op::Lock { table, .. }
            | Op::OtherAlter { table } => Some(table),
            Op::VacuumFull { table: Some(table) } | Op::Cluster { table: Some(table) } => {
                Some(table)
            }
            Op::RenameTable { from, .. } => Some(from),
            Op::CreateIndex {
                table,
                concurrently,
                ..
            } => (dialect == Dialect::Mysql || !concurrently).then_some(table),
            Op::DropIndex {
                name,
                table,
                concurrently,
            } => (dialect == Dialect::Mysql || !concurrently)
                .then_some(table.as_ref().unwrap_or(name)),
            _ => None,
        }
    }
}
