//! [`Adapter`]: everything the phase machine needs from a database, as operations rather than
//! SQL. The engine's neutral modules ([`phases`](crate::phases), [`sync`](crate::sync),
//! [`verify`](crate::verify), [`plan`](crate::plan)) drive migrations through it; the
//! PostgreSQL implementation is [`Postgres`](crate::postgres::Postgres) in
//! [`postgres`](crate::postgres), and a MySQL adapter is the next one.
//!
//! The contract every implementation keeps:
//! - **Keys travel as text**, one string per key column in key order; the adapter casts them.
//! - **Canonical rows** (verify) are bytes: one row per `\n`-terminated line, fields separated
//!   by `\t`, the key fields first when asked for, every value in one fixed text form for its
//!   type under the session settings [`connect`](Adapter::connect) sets. Equal mapped rows must
//!   give equal bytes on both sides.
//! - **The applier's writes are not captured again** (PostgreSQL: replication origins; MySQL:
//!   a marker row per applier transaction), and applying a key is idempotent: it re-reads the
//!   source of truth and writes only what differs.
//! - **State writes through a [`Lock`](Adapter::Lock) are fenced**: once another runner took
//!   the migration over they fail with [`EngineError::Busy`] and write nothing.
//!
//! Still PostgreSQL-shaped on the neutral side: mapping expressions in a [`Direction`] are SQL
//! text in the database's dialect (the adapter builds them, [`Adapter::cast_expression`]), the
//! spec's table names are quoted the PostgreSQL way ([`QualifiedName::sql`]), and
//! [`Table::oid`] is PostgreSQL's object id (an adapter without one leaves it 0).

use crate::catalog::{Dependent, Table};
use crate::plan::{Direction, Fill, KeyRange, Plan};
use crate::spec::{MigrationSpec, QualifiedName};
use crate::state::{Figure, MigrationRecord, Phase, Transition};
use crate::verify::VerifyReport;
use crate::EngineError;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use serde_json::Value as Json;
use std::collections::HashSet;
use std::future::Future;

/// A rename swap: `live` (the name applications use) gets `incoming`'s table; the table that
/// had it is renamed `outgoing_as`.
#[derive(Debug, Clone)]
pub struct Swap {
    pub live: QualifiedName,
    pub incoming: QualifiedName,
    pub outgoing_as: QualifiedName,
}

/// Which rows of one side of a [`Direction`] verify reads.
#[derive(Debug, Clone, Copy)]
pub enum Selection<'r> {
    /// A key range, in key order; the key fields lead each row when `with_key`.
    Range { range: &'r KeyRange, with_key: bool },
    /// A set of keys (re-checking suspects), in key order, the key fields leading each row.
    Keys(&'r [Vec<String>]),
}

/// The side of a [`Direction`] a read is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Mapped rows of `from`, in the target's column types.
    Source,
    /// Rows of `to`, the key in the source's key types.
    Target,
}

/// What backfill's throttle reads from the server between chunks.
#[derive(Debug, Clone, Copy, Default)]
pub struct Load {
    /// Seconds the slowest replica is behind.
    pub replica_lag_s: f64,
    /// Sessions waiting for a lock on the source table.
    pub lock_waiters: i64,
}

/// The database behind the phase machine. One value per database (PostgreSQL: its URL); every
/// method returns a `Send` future, so `Engine::sync` can run on a spawned task.
///
/// Sessions are [`Conn`](Adapter::Conn)s from [`connect`](Adapter::connect). Capture of one
/// direction is a [`Stream`](Adapter::Stream) (a `cdc` change source) plus an
/// [`Applier`](Adapter::Applier), the session that re-syncs keys and performs the cutover swap.
/// The right to drive one migration is a [`Lock`](Adapter::Lock).
pub trait Adapter: Send + Sync + Sized + 'static {
    /// A session with the canonical settings.
    type Conn: Send + Sync + 'static;
    /// The change stream of one direction's source table and of the marker table.
    type Stream: cdc::ChangeSource + 'static;
    /// The applier's session (its writes are skipped by capture) and its prepared statements.
    type Applier: Send + 'static;
    /// The runner lock of one migration, with its fencing token.
    type Lock: Send + Sync + 'static;

    // --- sessions -------------------------------------------------------------------------

    /// Opens a session with the canonical settings verify's row text depends on.
    fn connect(&self) -> impl Future<Output = Result<Self::Conn, EngineError>> + Send;

    // --- planning -------------------------------------------------------------------------

    /// The statements that create the shadow table from the spec's target DDL.
    fn shadow_ddl(&self, spec: &MigrationSpec) -> Result<Vec<String>, EngineError>;
    /// Expand's whole script (state store + shadow DDL under the lock timeout), for the linter.
    fn expand_script(&self, spec: &MigrationSpec, plan: &Plan) -> String;
    /// The mapping expression `expr` cast to the target column's type.
    fn cast_expression(&self, expr: &str, sql_type: &str) -> String;
    /// Column `column` of the `from` row, cast to `sql_type`.
    fn source_column(&self, column: &str, sql_type: &str) -> String;
    /// Starts a planning scope on `conn`: what runs until [`end_planning`] is thrown away.
    ///
    /// [`end_planning`]: Adapter::end_planning
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
    /// Everything that depends on `table` and must follow it through a swap.
    fn dependents(
        &self,
        conn: &Self::Conn,
        table: &Table,
    ) -> impl Future<Output = Result<Vec<Dependent>, EngineError>> + Send;
    /// Every phase with the statements it runs and the locks it takes (`splice plan`).
    fn render_plan(&self, plan: &Plan) -> String;

    // --- expand, contract, drop, rollback -------------------------------------------------

    /// Creates the shadow table (unless it exists) under the spec's lock timeout.
    fn create_shadow(
        &self,
        conn: &Self::Conn,
        spec: &MigrationSpec,
        ddl: &[String],
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// Drops the shadow table if it exists (rollback before cutover).
    fn drop_shadow(
        &self,
        conn: &Self::Conn,
        spec: &MigrationSpec,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// Moves the retired table into quarantine (contract).
    fn quarantine(
        &self,
        conn: &Self::Conn,
        spec: &MigrationSpec,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// Moves the quarantined table back under its retired name (rollback after contract).
    fn restore_from_quarantine(
        &self,
        conn: &Self::Conn,
        spec: &MigrationSpec,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// Drops the quarantined table (the one-way door).
    fn drop_quarantined(
        &self,
        conn: &Self::Conn,
        spec: &MigrationSpec,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;

    // --- backfill -------------------------------------------------------------------------

    /// The source's row count, estimated where the database keeps an estimate.
    fn estimate_rows(
        &self,
        conn: &Self::Conn,
        table: &Table,
    ) -> impl Future<Output = Result<i64, EngineError>> + Send;
    /// The key `offset` rows after `after` (from the first key when `None`) in `dir.from`, in
    /// key order: the upper bound of a chunk. `None` past the last key.
    fn chunk_upper(
        &self,
        conn: &Self::Conn,
        dir: &Direction,
        after: Option<&[String]>,
        offset: i64,
    ) -> impl Future<Output = Result<Option<Vec<String>>, EngineError>> + Send;
    /// Copies the mapped rows of the key range `(lower, upper]` (an absent bound is open) in
    /// one statement; returns the rows written. Fenced like a state write, and in a way that a
    /// runner taking over waits for a chunk in flight: once it holds the migration, a stale
    /// runner's chunk copies nothing (it could otherwise write a row back that the new
    /// runner's applier has deleted meanwhile).
    fn copy_range(
        &self,
        conn: &Self::Conn,
        runner: &Self::Lock,
        dir: &Direction,
        lower: Option<&[String]>,
        upper: Option<&[String]>,
        fill: Fill,
    ) -> impl Future<Output = Result<u64, EngineError>> + Send;
    /// Refreshes the planner statistics of a table backfill just filled, so verify's range
    /// reads and, after cutover, the application's queries are planned for its real size.
    fn refresh_statistics(
        &self,
        conn: &Self::Conn,
        table: &QualifiedName,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// Replica lag and lock waiters on `table`, for backfill's throttle.
    fn server_load(
        &self,
        conn: &Self::Conn,
        table: &Table,
    ) -> impl Future<Output = Result<Load, EngineError>> + Send;

    // --- capture and the applier ----------------------------------------------------------

    /// Opens (creating if needed) the change stream `slot` of `dir.from` and the marker table,
    /// skipping the engine's own writes, and the applier writing under `origin`.
    fn open_capture(
        &self,
        spec: &MigrationSpec,
        dir: &Direction,
        slot: &str,
        origin: &str,
    ) -> impl Future<Output = Result<(Self::Stream, Self::Applier), EngineError>> + Send;
    /// The table drain markers are written to (its rows have columns `migration` and `id`).
    fn marker_table(&self) -> cdc::TableName;
    /// Writes the next drain marker of `migration`; returns its id.
    fn write_marker(
        &self,
        applier: &mut Self::Applier,
        migration: &str,
    ) -> impl Future<Output = Result<i64, EngineError>> + Send;
    /// Re-syncs `keys` from the source of truth (after deleting orphans when `truncate`): in a
    /// transaction of its own that is committed, or inside the swap while one is locked.
    /// `txns` are the source transactions (their `cdc` `source_id`s) whose changes named the
    /// keys: the re-read must see them, and a commit can reach the change stream a moment
    /// before other sessions see it.
    fn apply(
        &self,
        applier: &mut Self::Applier,
        keys: HashSet<Vec<String>>,
        txns: &[u64],
        truncate: bool,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// Removes a change stream (slot and publication) if it exists.
    fn drop_capture(&self, slot: &str) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// Removes what marks the migration's appliers (PostgreSQL: both replication origins).
    fn forget_appliers(
        &self,
        conn: &Self::Conn,
        spec: &MigrationSpec,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// Bytes the change stream `slot` is behind, when it exists (`splice status`).
    fn capture_lag_bytes(
        &self,
        conn: &Self::Conn,
        slot: &str,
    ) -> impl Future<Output = Result<Option<i64>, EngineError>> + Send;

    // --- verify ---------------------------------------------------------------------------

    /// Upper bounds of verify's key ranges of roughly `range_rows` source rows each, found
    /// without walking the key; empty for one range.
    fn sample_bounds(
        &self,
        conn: &Self::Conn,
        dir: &Direction,
        range_rows: i64,
    ) -> impl Future<Output = Result<Vec<Vec<String>>, EngineError>> + Send;
    /// One side's canonical rows (see the module docs), as the server sends them.
    fn read_canonical<'a>(
        &'a self,
        conn: &'a Self::Conn,
        dir: &Direction,
        side: Side,
        rows: Selection<'_>,
    ) -> impl Future<Output = Result<BoxStream<'a, Result<Bytes, EngineError>>, EngineError>> + Send;

    // --- cutover --------------------------------------------------------------------------

    /// Begins the swap on the applier's session: a transaction holding exclusive locks on
    /// `swap.live` and `swap.incoming`, taken under the spec's lock timeout. `false` (and
    /// nothing held) when the lock timed out; until [`finish_swap`] or [`abort_swap`],
    /// [`apply`](Adapter::apply) writes inside it.
    ///
    /// [`finish_swap`]: Adapter::finish_swap
    /// [`abort_swap`]: Adapter::abort_swap
    fn lock_for_swap(
        &self,
        applier: &mut Self::Applier,
        spec: &MigrationSpec,
        swap: &Swap,
    ) -> impl Future<Output = Result<bool, EngineError>> + Send;
    /// Renames, carries `dependents` over to the incoming table (whose columns are
    /// `incoming_columns`), commits; returns what was carried over. On failure nothing was
    /// swapped.
    fn finish_swap(
        &self,
        applier: &mut Self::Applier,
        swap: &Swap,
        dependents: &[Dependent],
        incoming_columns: &[String],
    ) -> impl Future<Output = Result<Vec<String>, EngineError>> + Send;
    /// Abandons a locked swap.
    fn abort_swap(&self, applier: &mut Self::Applier) -> impl Future<Output = ()> + Send;
    /// After the swap committed: finishes what was carried over without the lock (PostgreSQL:
    /// validates foreign keys re-created NOT VALID). Best effort; failures are logged.
    fn settle_carried_over(
        &self,
        conn: &Self::Conn,
        dependents: &[Dependent],
    ) -> impl Future<Output = ()> + Send;

    // --- the state store ------------------------------------------------------------------

    /// Creates the state store (idempotent, additive only).
    fn ensure_state(
        &self,
        conn: &Self::Conn,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// Registers a migration in phase `planned` unless it exists.
    fn register(
        &self,
        conn: &Self::Conn,
        name: &str,
        spec_text: &str,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// Replaces the spec of a rolled-back migration (expand starts it again); fenced.
    fn reregister(
        &self,
        lock: &Self::Lock,
        spec_text: &str,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// A migration's record; `None` when it (or the state store) does not exist.
    fn load_record(
        &self,
        conn: &Self::Conn,
        name: &str,
    ) -> impl Future<Output = Result<Option<MigrationRecord>, EngineError>> + Send;
    /// Every migration, oldest first.
    fn load_records(
        &self,
        conn: &Self::Conn,
    ) -> impl Future<Output = Result<Vec<MigrationRecord>, EngineError>> + Send;
    fn history(
        &self,
        conn: &Self::Conn,
        name: &str,
    ) -> impl Future<Output = Result<Vec<Transition>, EngineError>> + Send;
    /// The last verify result: (passed, diverged keys, at).
    fn last_verify(
        &self,
        conn: &Self::Conn,
        name: &str,
    ) -> impl Future<Output = Result<Option<(bool, Json, String)>, EngineError>> + Send;
    /// Sets (`None`: clears) the rate limit a running sync picks up; false when no such
    /// migration. Needs no lock: it is a request.
    fn set_rate_limit(
        &self,
        conn: &Self::Conn,
        name: &str,
        rows_per_second: Option<i32>,
    ) -> impl Future<Output = Result<bool, EngineError>> + Send;
    /// Takes the runner lock of `name` (or fails at once with [`EngineError::Busy`]) and bumps
    /// its fencing token.
    fn acquire_lock(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Self::Lock, EngineError>> + Send;
    /// Records a phase change and its history entry.
    fn transition(
        &self,
        lock: &Self::Lock,
        from: Option<Phase>,
        to: Phase,
        figures: Json,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// Saves the backfill checkpoint; returns the rate limit set while running (`Some(0)`:
    /// unlimited, `None`: not set).
    fn checkpoint(
        &self,
        lock: &Self::Lock,
        last_key: Option<&[String]>,
        rows_copied: i64,
        done: bool,
        rate: Option<f64>,
    ) -> impl Future<Output = Result<Option<i32>, EngineError>> + Send;
    fn set_figure(
        &self,
        lock: &Self::Lock,
        figure: Figure,
        value: f64,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
    fn reset_backfill(
        &self,
        lock: &Self::Lock,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// Records (or with `None` clears) where the old table is quarantined and for how long.
    fn set_quarantine(
        &self,
        lock: &Self::Lock,
        quarantined_as: Option<&str>,
        seconds: Option<f64>,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
    fn record_verify(
        &self,
        lock: &Self::Lock,
        report: &VerifyReport,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
}
