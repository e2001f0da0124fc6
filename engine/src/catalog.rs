//! What the live schema says about a table: columns, key, and the objects that depend on it
//! (which cutover has to carry over). The adapter reads them
//! ([`Adapter::describe_table`](crate::adapter::Adapter::describe_table),
//! [`Adapter::dependents`](crate::adapter::Adapter::dependents)).

use crate::spec::QualifiedName;

/// One column as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// `format_type` output, usable in a cast: `bigint`, `character(3)`, `numeric(12,2)`.
    pub sql_type: String,
    pub not_null: bool,
    pub has_default: bool,
    /// GENERATED ALWAYS AS (...) STORED columns cannot be written.
    pub generated: bool,
    /// The collation values sort by (empty for types without one).
    pub collation: String,
}

/// A table's shape.
#[derive(Debug, Clone)]
pub struct Table {
    pub name: QualifiedName,
    /// PostgreSQL's object id of the table; 0 where the database has none.
    pub oid: u32,
    pub columns: Vec<Column>,
    pub primary_key: Vec<String>,
    /// The planner's estimate; -1 when the table was never analyzed (unknown).
    pub approx_rows: i64,
}

impl Table {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// An object that refers to the table and must follow it through a rename swap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dependent {
    /// A view (or materialized view) that selects from the table.
    View {
        name: QualifiedName,
        definition: String,
        materialized: bool,
    },
    /// A foreign key on another table that references this one.
    ForeignKeyIn {
        table: QualifiedName,
        constraint: String,
        definition: String,
    },
    /// A trigger on this table (not internal ones), with its firing state (PostgreSQL's
    /// `tgenabled`: `O` origin and local, `D` disabled, `R` replica, `A` always).
    Trigger {
        name: String,
        definition: String,
        enabled: String,
    },
    /// A sequence owned by a column of this table (serial / identity).
    OwnedSequence {
        sequence: QualifiedName,
        column: String,
    },
    /// A grant of privileges on this table.
    Grant { grantee: String, privilege: String },
}

impl std::fmt::Display for Dependent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dependent::View {
                name, materialized, ..
            } => write!(
                f,
                "{} {name}",
                if *materialized {
                    "materialized view"
                } else {
                    "view"
                }
            ),
            Dependent::ForeignKeyIn {
                table, constraint, ..
            } => {
                write!(f, "foreign key {constraint} on {table}")
            }
            Dependent::Trigger { name, .. } => write!(f, "trigger {name}"),
            Dependent::OwnedSequence { sequence, column } => {
                write!(f, "sequence {sequence} owned by column {column}")
            }
            Dependent::Grant { grantee, privilege } => write!(f, "grant {privilege} to {grantee}"),
        }
    }
}
