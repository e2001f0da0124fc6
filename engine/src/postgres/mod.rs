//! The PostgreSQL adapter: [`Postgres`] implements [`Adapter`] with tokio-postgres sessions,
//! logical decoding (`cdc`) for capture, replication origins for the applier, and the `splice`
//! schema as the state store. Everything PostgreSQL-specific in the engine lives here:
//! catalog queries ([`catalog`]), the statements that move rows ([`sql`], [`backfill`]),
//! capture and the applier ([`capture`]), verify's COPY reads ([`verify`]), the cutover swap and
//! quarantine DDL ([`cutover`]), planning and `splice plan`'s rendering ([`plan`]) and the state
//! store with its runner lock ([`state`]).

pub mod backfill;
pub mod capture;
pub mod catalog;
pub mod cutover;
pub mod plan;
pub mod sql;
pub mod state;
pub mod verify;

pub use state::RunnerLock;

use crate::adapter::{Adapter, Load, Selection, Side, Swap};
use crate::catalog::{Dependent, Table};
use crate::plan::{Direction, Fill, Plan};
use crate::spec::{quote_ident, MigrationSpec, QualifiedName};
use crate::state::{Figure, MigrationRecord, Phase, Transition};
use crate::verify::VerifyReport;
use crate::EngineError;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use serde_json::Value as Json;
use std::collections::HashSet;
use tokio_postgres::Client;

impl EngineError {
    /// A PostgreSQL error, described by the server's message.
    pub fn db(context: impl Into<String>, e: tokio_postgres::Error) -> EngineError {
        EngineError::Database {
            context: context.into(),
            message: db_message(&e),
        }
    }
}

/// The server's message (with detail and hint) rather than the driver's "db error".
pub fn db_message(e: &tokio_postgres::Error) -> String {
    cdc::describe_pg_error(e)
}

/// Connects with tokio-postgres and drives the connection in the background, with the session
/// settings verify's canonical text depends on; errors name the URL's host and the fix.
pub async fn connect(url: &str) -> Result<Client, EngineError> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| EngineError::Database {
            context: "cannot connect to the database (check --database-url / \
                      SPLICE_DATABASE_URL and that the server is running)"
                .into(),
            message: db_message(&e),
        })?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "database connection ended");
        }
    });
    // One canonical text form for every value verify hashes.
    client
        .batch_execute(
            "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; \
             SET extra_float_digits = 3; SET bytea_output = 'hex'",
        )
        .await
        .map_err(|e| EngineError::db("setting session defaults", e))?;
    Ok(client)
}

/// One PostgreSQL database, by URL.
#[derive(Debug, Clone)]
pub struct Postgres {
    url: String,
}

impl Postgres {
    pub fn new(url: impl Into<String>) -> Postgres {
        Postgres { url: url.into() }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The statements expand runs, as one script (see [`plan::expand_script`]).
    pub fn expand_script(spec: &MigrationSpec, plan: &Plan) -> String {
        plan::expand_script(spec, plan)
    }
}

impl Adapter for Postgres {
    type Conn = Client;
    type Stream = cdc::PgChangeStream;
    type Applier = capture::Applier;
    type Lock = RunnerLock;

    async fn connect(&self) -> Result<Client, EngineError> {
        connect(&self.url).await
    }

    fn shadow_ddl(&self, spec: &MigrationSpec) -> Result<Vec<String>, EngineError> {
        plan::shadow_ddl(spec)
    }

    fn expand_script(&self, spec: &MigrationSpec, plan: &Plan) -> String {
        plan::expand_script(spec, plan)
    }

    fn cast_expression(&self, expr: &str, sql_type: &str) -> String {
        format!("({expr})::{sql_type}")
    }

    fn source_column(&self, column: &str, sql_type: &str) -> String {
        format!("s.{}::{sql_type}", quote_ident(column))
    }

    async fn begin_planning(&self, conn: &Client) -> Result<(), EngineError> {
        conn.batch_execute("BEGIN")
            .await
            .map_err(|e| EngineError::db("starting the planning transaction", e))
    }

    async fn end_planning(&self, conn: &Client) -> Result<(), EngineError> {
        conn.batch_execute("ROLLBACK")
            .await
            .map_err(|e| EngineError::db("ending the planning transaction", e))
    }

    async fn try_shadow_ddl(&self, conn: &Client, ddl: &[String]) -> Result<(), EngineError> {
        plan::try_shadow_ddl(conn, ddl).await
    }

    async fn describe_table(
        &self,
        conn: &Client,
        name: &QualifiedName,
    ) -> Result<Option<Table>, EngineError> {
        catalog::table(conn, name).await
    }

    async fn has_unique_key(
        &self,
        conn: &Client,
        table: &Table,
        columns: &[String],
    ) -> Result<bool, EngineError> {
        catalog::has_unique_index_on(conn, table.oid, columns).await
    }

    async fn check_expression(
        &self,
        conn: &Client,
        from: &QualifiedName,
        expr: &str,
    ) -> Result<(), String> {
        plan::check_expression(conn, from, expr).await
    }

    async fn dependents(
        &self,
        conn: &Client,
        table: &Table,
    ) -> Result<Vec<Dependent>, EngineError> {
        catalog::dependents(conn, table).await
    }

    fn render_plan(&self, plan: &Plan) -> String {
        plan::render_plan(plan)
    }

    async fn create_shadow(
        &self,
        conn: &Client,
        spec: &MigrationSpec,
        ddl: &[String],
    ) -> Result<(), EngineError> {
        cutover::create_shadow(conn, spec, ddl).await
    }

    async fn drop_shadow(&self, conn: &Client, spec: &MigrationSpec) -> Result<(), EngineError> {
        cutover::drop_shadow(conn, spec).await
    }

    async fn quarantine(&self, conn: &Client, spec: &MigrationSpec) -> Result<(), EngineError> {
        cutover::quarantine(conn, spec).await
    }

    async fn restore_from_quarantine(
        &self,
        conn: &Client,
        spec: &MigrationSpec,
    ) -> Result<(), EngineError> {
        cutover::restore_from_quarantine(conn, spec).await
    }

    async fn drop_quarantined(
        &self,
        conn: &Client,
        spec: &MigrationSpec,
    ) -> Result<(), EngineError> {
        cutover::drop_quarantined(conn, spec).await
    }

    async fn estimate_rows(&self, conn: &Client, table: &Table) -> Result<i64, EngineError> {
        backfill::estimate_rows(conn, table).await
    }

    async fn chunk_upper(
        &self,
        conn: &Client,
        dir: &Direction,
        after: Option<&[String]>,
        offset: i64,
    ) -> Result<Option<Vec<String>>, EngineError> {
        backfill::chunk_upper(conn, dir, after, offset).await
    }

    async fn copy_range(
        &self,
        conn: &Client,
        runner: &RunnerLock,
        dir: &Direction,
        lower: Option<&[String]>,
        upper: Option<&[String]>,
        fill: Fill,
    ) -> Result<u64, EngineError> {
        backfill::copy_range(conn, runner, dir, lower, upper, fill).await
    }

    async fn refresh_statistics(
        &self,
        conn: &Client,
        table: &QualifiedName,
    ) -> Result<(), EngineError> {
        // SHARE UPDATE EXCLUSIVE on the filled table only; nothing else waits for it.
        conn.batch_execute(&format!("ANALYZE {}", table.sql()))
            .await
            .map_err(|e| EngineError::db(format!("analyzing {table}"), e))
    }

    async fn server_load(&self, conn: &Client, table: &Table) -> Result<Load, EngineError> {
        backfill::server_load(conn, table).await
    }

    async fn open_capture(
        &self,
        spec: &MigrationSpec,
        dir: &Direction,
        slot: &str,
        origin: &str,
    ) -> Result<(cdc::PgChangeStream, capture::Applier), EngineError> {
        capture::open(&self.url, spec, dir, slot, origin).await
    }

    fn marker_table(&self) -> cdc::TableName {
        capture::marker_table()
    }

    async fn write_marker(
        &self,
        applier: &mut capture::Applier,
        migration: &str,
    ) -> Result<i64, EngineError> {
        capture::write_marker(applier, migration).await
    }

    async fn apply(
        &self,
        applier: &mut capture::Applier,
        keys: HashSet<Vec<String>>,
        txns: &[u64],
        truncate: bool,
    ) -> Result<(), EngineError> {
        capture::apply(applier, keys, txns, truncate).await
    }

    async fn drop_capture(&self, slot: &str) -> Result<(), EngineError> {
        capture::drop_capture(&self.url, slot).await
    }

    async fn forget_appliers(
        &self,
        conn: &Client,
        spec: &MigrationSpec,
    ) -> Result<(), EngineError> {
        capture::drop_origin(conn, &spec.origin()).await?;
        capture::drop_origin(conn, &spec.reverse_origin()).await
    }

    async fn capture_lag_bytes(
        &self,
        conn: &Client,
        slot: &str,
    ) -> Result<Option<i64>, EngineError> {
        Ok(conn
            .query_opt(
                "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint
                 FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .map_err(|e| EngineError::db("reading capture lag", e))?
            .and_then(|row| row.get(0)))
    }

    async fn sample_bounds(
        &self,
        conn: &Client,
        dir: &Direction,
        range_rows: i64,
    ) -> Result<Vec<Vec<String>>, EngineError> {
        verify::sample_bounds(conn, dir, range_rows).await
    }

    async fn read_canonical<'a>(
        &'a self,
        conn: &'a Client,
        dir: &Direction,
        side: Side,
        rows: Selection<'_>,
    ) -> Result<BoxStream<'a, Result<Bytes, EngineError>>, EngineError> {
        verify::read_canonical(conn, dir, side, rows).await
    }

    async fn lock_for_swap(
        &self,
        applier: &mut capture::Applier,
        spec: &MigrationSpec,
        swap: &Swap,
    ) -> Result<bool, EngineError> {
        cutover::lock_for_swap(applier, spec, swap).await
    }

    async fn finish_swap(
        &self,
        applier: &mut capture::Applier,
        swap: &Swap,
        dependents: &[Dependent],
        incoming_columns: &[String],
    ) -> Result<Vec<String>, EngineError> {
        cutover::finish_swap(applier, swap, dependents, incoming_columns).await
    }

    async fn abort_swap(&self, applier: &mut capture::Applier) {
        cutover::abort_swap(applier).await
    }

    async fn settle_carried_over(&self, conn: &Client, dependents: &[Dependent]) {
        cutover::validate_foreign_keys(conn, dependents).await
    }

    async fn ensure_state(&self, conn: &Client) -> Result<(), EngineError> {
        state::ensure_schema(conn).await
    }

    async fn register(
        &self,
        conn: &Client,
        name: &str,
        spec_text: &str,
    ) -> Result<(), EngineError> {
        conn.execute(
            "INSERT INTO splice.migrations (name, spec, phase) VALUES ($1, $2, 'planned')
             ON CONFLICT (name) DO NOTHING",
            &[&name, &spec_text],
        )
        .await
        .map_err(|e| EngineError::db("registering the migration", e))?;
        Ok(())
    }

    async fn reregister(&self, lock: &RunnerLock, spec_text: &str) -> Result<(), EngineError> {
        lock.reregister(spec_text).await
    }

    async fn load_record(
        &self,
        conn: &Client,
        name: &str,
    ) -> Result<Option<MigrationRecord>, EngineError> {
        state::load(conn, name).await
    }

    async fn load_records(&self, conn: &Client) -> Result<Vec<MigrationRecord>, EngineError> {
        state::load_all(conn).await
    }

    async fn history(&self, conn: &Client, name: &str) -> Result<Vec<Transition>, EngineError> {
        state::history(conn, name).await
    }

    async fn last_verify(
        &self,
        conn: &Client,
        name: &str,
    ) -> Result<Option<(bool, Json, String)>, EngineError> {
        state::last_verify(conn, name).await
    }

    async fn set_rate_limit(
        &self,
        conn: &Client,
        name: &str,
        rows_per_second: Option<i32>,
    ) -> Result<bool, EngineError> {
        state::set_rate_limit(conn, name, rows_per_second).await
    }

    async fn acquire_lock(&self, name: &str) -> Result<RunnerLock, EngineError> {
        let mut lock = RunnerLock::acquire(&self.url, name).await?;
        lock.fence().await?;
        Ok(lock)
    }

    async fn transition(
        &self,
        lock: &RunnerLock,
        from: Option<Phase>,
        to: Phase,
        figures: Json,
    ) -> Result<(), EngineError> {
        lock.transition(from, to, figures).await
    }

    async fn checkpoint(
        &self,
        lock: &RunnerLock,
        last_key: Option<&[String]>,
        rows_copied: i64,
        done: bool,
        rate: Option<f64>,
    ) -> Result<Option<i32>, EngineError> {
        lock.checkpoint(last_key, rows_copied, done, rate).await
    }

    async fn set_figure(
        &self,
        lock: &RunnerLock,
        figure: Figure,
        value: f64,
    ) -> Result<(), EngineError> {
        lock.set_figure(figure, value).await
    }

    async fn reset_backfill(&self, lock: &RunnerLock) -> Result<(), EngineError> {
        lock.reset_backfill().await
    }

    async fn set_quarantine(
        &self,
        lock: &RunnerLock,
        quarantined_as: Option<&str>,
        seconds: Option<f64>,
    ) -> Result<(), EngineError> {
        lock.set_quarantine(quarantined_as, seconds).await
    }

    async fn record_verify(
        &self,
        lock: &RunnerLock,
        report: &VerifyReport,
    ) -> Result<(), EngineError> {
        lock.record_verify(report).await
    }
}
