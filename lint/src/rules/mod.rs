//! The rule registry. Each rule lives in its own file with its documentation, id, default
//! severity, dialects, check and safe alternative; this module only lists them.

use crate::ops::{Name, Op};
use crate::{Options, RuleInfo};
use std::collections::HashSet;

mod change_column_type;
mod cluster;
mod concurrently_in_transaction;
mod constraint_not_valid;
mod constraint_without_index;
mod drop_column;
mod drop_schema;
mod drop_table;
mod index_not_concurrent;
pub(crate) mod missing_lock_timeout;
mod mysql_copy_algorithm;
mod not_null_without_default;
mod rename_column;
mod rename_table;
mod set_not_null;
mod stored_generated_column;
pub(crate) mod syntax_error;
mod truncate;
pub(crate) mod unparsed_statement;
pub(crate) mod unused_ignore;
mod vacuum_full;
mod volatile_default;

/// What a rule knows besides the operation it judges: the options and what earlier
/// statements in the same input did.
pub(crate) struct Context<'a> {
    pub opts: &'a Options,
    /// Inside an explicit transaction block (or `assume_in_transaction`).
    pub in_transaction: bool,
    /// A `SET lock_timeout` / `SET lock_wait_timeout` came earlier.
    pub lock_timeout_set: bool,
    /// `missing-lock-timeout` already fired in this input (it fires once).
    pub lock_timeout_reported: bool,
    /// Tables and indexes created earlier in the input (keys of [`Name`]).
    pub created: &'a HashSet<String>,
}

impl Context<'_> {
    /// The relation was created earlier in the same input: it is new and empty, and no running
    /// code depends on it yet, so locking and breaking-change rules do not apply to it.
    pub fn is_new(&self, name: &Name) -> bool {
        self.created.contains(&name.key)
    }
}

/// A rule's check: the message naming the table/column when `op` breaks the rule.
pub(crate) type Check = fn(&Op, &Context) -> Option<String>;

/// Every rule, in the order `--list-rules` prints them.
pub(crate) static RULES: &[RuleInfo] = &[
    drop_column::INFO,
    drop_table::INFO,
    drop_schema::INFO,
    rename_column::INFO,
    rename_table::INFO,
    not_null_without_default::INFO,
    change_column_type::INFO,
    truncate::INFO,
    index_not_concurrent::INFO,
    concurrently_in_transaction::INFO,
    constraint_not_valid::INFO,
    set_not_null::INFO,
    constraint_without_index::INFO,
    volatile_default::INFO,
    stored_generated_column::INFO,
    vacuum_full::INFO,
    cluster::INFO,
    mysql_copy_algorithm::INFO,
    syntax_error::INFO,
    missing_lock_timeout::INFO,
    unused_ignore::INFO,
    unparsed_statement::INFO,
];

/// The rules that judge operations (the others are reported by the driver).
pub(crate) static CHECKS: &[(&RuleInfo, Check)] = &[
    (&drop_column::INFO, drop_column::check),
    (&drop_table::INFO, drop_table::check),
    (&drop_schema::INFO, drop_schema::check),
    (&rename_column::INFO, rename_column::check),
    (&rename_table::INFO, rename_table::check),
    (
        &not_null_without_default::INFO,
        not_null_without_default::check,
    ),
    (&change_column_type::INFO, change_column_type::check),
    (&vacuum_full::INFO, vacuum_full::check),
    (
        &stored_generated_column::INFO,
        stored_generated_column::check,
    ),
    (&cluster::INFO, cluster::check),
    (&truncate::INFO, truncate::check),
    (&index_not_concurrent::INFO, index_not_concurrent::check),
    (
        &concurrently_in_transaction::INFO,
        concurrently_in_transaction::check,
    ),
    (&constraint_not_valid::INFO, constraint_not_valid::check),
    (&set_not_null::INFO, set_not_null::check),
    (
        &constraint_without_index::INFO,
        constraint_without_index::check,
    ),
    (&volatile_default::INFO, volatile_default::check),
    (&mysql_copy_algorithm::INFO, mysql_copy_algorithm::check),
    (&missing_lock_timeout::INFO, missing_lock_timeout::check),
];

pub(crate) const BOTH: &[crate::Dialect] = &[crate::Dialect::Postgres, crate::Dialect::Mysql];
pub(crate) const POSTGRES: &[crate::Dialect] = &[crate::Dialect::Postgres];
pub(crate) const MYSQL: &[crate::Dialect] = &[crate::Dialect::Mysql];
