//! [`Planner`]: what planning reads and compiles. Nothing it does is kept.

use super::Sessions;
use crate::catalog::{Column, Dependent, Structure, Table};
use crate::seam::{Direction, Plan};
use crate::spec::{MigrationSpec, QualifiedName};
use crate::EngineError;
use std::collections::BTreeMap;
use std::future::Future;

/// `[up]` and `[down]` entries a migration's shape implies.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImpliedMappings {
    pub up: BTreeMap<String, String>,
    pub down: BTreeMap<String, String>,
}

pub trait Planner: Sessions {
    /// The indexes, check constraints and outgoing foreign keys of `table`, with shapes that
    /// compare across tables (see [`Structure`]). Adapters that cannot tell return none, and
    /// nothing is compared.
    fn structures(
        &self,
        conn: &Self::Conn,
        table: &Table,
    ) -> impl Future<Output = Result<Vec<Structure>, EngineError>> + Send {
        let _ = (conn, table);
        async { Ok(Vec::new()) }
    }
    /// The `[up]` and `[down]` entries the spec's shape implies and the file does not give
    /// (alter mode: a renamed column maps to its old name, a `USING` expression forward).
    fn implied_mappings(&self, spec: &MigrationSpec) -> Result<ImpliedMappings, EngineError> {
        let _ = spec;
        Ok(ImpliedMappings::default())
    }

    /// The statements that create the shadow table: the spec's target DDL renamed, or (alter
    /// mode) a structural copy of the live table with the ALTER statements applied.
    fn shadow_ddl(
        &self,
        conn: &Self::Conn,
        spec: &MigrationSpec,
    ) -> impl Future<Output = Result<Vec<String>, EngineError>> + Send;
    /// The dialect expand's script is linted in.
    fn lint_dialect(&self) -> lint::Dialect {
        lint::Dialect::Postgres
    }
    /// Expand's whole script (state store + shadow DDL under the lock timeout), for the linter.
    fn expand_script(&self, spec: &MigrationSpec, plan: &Plan) -> String;
    /// The mapping expression `expr` cast to the target column's type.
    fn cast_expression(&self, expr: &str, sql_type: &str) -> String;
    /// Column `column` of the `from` row, cast to `sql_type`.
    fn source_column(&self, column: &str, sql_type: &str) -> String;
    /// True when two key columns order their values the same way, so backfill and verify can
    /// walk both sides in one order.
    fn sorts_alike(&self, source: &Column, target: &Column) -> bool;
    /// Starts a planning scope on `conn`: what runs until [`end_planning`] is thrown away.
    ///
    /// [`end_planning`]: Planner::end_planning
    fn begin_planning(
        &self,
        conn: &Self::Conn,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// Ends the planning scope, discarding everything it did.
    fn end_planning(
        &self,
        conn: &Self::Conn,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// Runs the shadow DDL inside the planning scope; a failure is an [`EngineError::Plan`].
    fn try_shadow_ddl(
        &self,
        conn: &Self::Conn,
        ddl: &[String],
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// A table's columns and key; `None` when it does not exist.
    fn describe_table(
        &self,
        conn: &Self::Conn,
        name: &QualifiedName,
    ) -> impl Future<Output = Result<Option<Table>, EngineError>> + Send;
    /// True when `columns` are exactly the columns of a unique, valid, full index of `table`.
    fn has_unique_key(
        &self,
        conn: &Self::Conn,
        table: &Table,
        columns: &[String],
    ) -> impl Future<Output = Result<bool, EngineError>> + Send;
    /// Compiles `expr` over a row of `from`; `Err` carries the server's message.
    fn check_expression(
        &self,
        conn: &Self::Conn,
        from: &QualifiedName,
        expr: &str,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// Compiles, without running, every statement that moves rows along `dir` (backfill, the
    /// applier's re-sync, verify's reads) inside the planning scope, so that a mapping or a
    /// column type those statements cannot handle fails at plan time rather than at the first
    /// captured change; a failure is an [`EngineError::Plan`] that starts with `purpose`.
    /// An adapter whose statements cannot fail to compile keeps the default (nothing to do).
    fn check_statements(
        &self,
        _conn: &Self::Conn,
        _dir: &Direction,
        _purpose: &str,
    ) -> impl Future<Output = Result<(), EngineError>> + Send {
        async { Ok(()) }
    }
    /// Everything that depends on `table` and must follow it through a swap.
    fn dependents(
        &self,
        conn: &Self::Conn,
        table: &Table,
    ) -> impl Future<Output = Result<Vec<Dependent>, EngineError>> + Send;
    /// Every phase with the statements it runs and the locks it takes (`splice plan`).
    fn render_plan(&self, plan: &Plan) -> String;
}
