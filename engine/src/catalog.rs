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

/// What a table's structure holds beyond its columns: an index (with the primary-key, unique
/// or exclusion constraint it backs), a check constraint, or an outgoing foreign key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StructureKind {
    Index,
    Check,
    ForeignKey,
}

/// One index or constraint, with a shape that does not depend on its name or its table's, so
/// the live table's and the new shape's can be compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Structure {
    pub kind: StructureKind,
    pub name: String,
    pub shape: String,
}

impl std::fmt::Display for Structure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            StructureKind::Index => "index",
            StructureKind::Check => "check constraint",
            StructureKind::ForeignKey => "foreign key",
        };
        write!(f, "{kind} {}", self.name)
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
        /// 1 for a view on the table, 2 for a view on such a view, and so on: views are
        /// dropped deepest first and re-created shallowest first.
        depth: i32,
        /// The adapter's statements that restore what the view carries besides its query
        /// (owner, grants, comment); `{view}` stands for its name. With its options
        /// (`security_barrier`, `check_option`) in `options`.
        extras: Vec<String>,
        options: Option<String>,
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
    /// Anything else the table carries (owner, row-level security and its policies, column
    /// grants, publication membership, replica identity, storage parameters, comments,
    /// statistics targets): what it is, and the adapter's statements that give it to the table
    /// that takes the live name. `{table}` in them stands for that table, `{old}` for the one
    /// that gives it up. `column`: carried only when the incoming table has that column.
    Property {
        what: String,
        column: Option<String>,
        statements: Vec<String>,
    },
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
            Dependent::Property { what, .. } => f.write_str(what),
        }
    }
}
