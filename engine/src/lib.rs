//! `engine`: splice's migration engine for PostgreSQL. A migration file ([`spec`]) is checked
//! against the live schema ([`plan`]) and driven through its phases ([`phases`]): expand, sync
//! (change capture + throttled backfill, [`sync`]), verify ([`verify`]), cutover, contract,
//! drop, and rollback from any of them. State lives in the database ([`state`]).
//!
//! The invariant everything is tested against: once capture has caught up, the target equals
//! the mapping of the source for every key. Backfill, the change applier and verify all go
//! through one mapping ([`sql::Direction`]).
//!
//! Not for: linting SQL files (the `lint` crate, which this crate calls on the DDL it
//! generates), decoding the change stream (the `cdc` crate), or anything MySQL yet.

pub mod catalog;
pub mod phases;
pub mod plan;
pub mod spec;
pub mod sql;
pub mod state;
pub mod sync;
pub mod verify;

pub use phases::Engine;
pub use plan::Plan;
pub use spec::{MigrationSpec, QualifiedName};
pub use state::Phase;

/// What can go wrong, each naming the thing and the fix.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The migration file does not fit the live schema.
    #[error("{0}")]
    Plan(String),
    /// A gate between phases is closed (verify failed, lag too high, quarantine not expired…):
    /// exit code 1.
    #[error("{0}")]
    Refused(String),
    /// The command does not apply in the migration's current phase.
    #[error("{0}")]
    Phase(String),
    /// Another runner holds the migration, or fenced this one out.
    #[error("{0}")]
    Busy(String),
    #[error("{context}: {message}")]
    Database { context: String, message: String },
    #[error("change capture: {0}")]
    Capture(#[from] cdc::CdcError),
}

impl EngineError {
    pub fn db(context: impl Into<String>, e: tokio_postgres::Error) -> EngineError {
        EngineError::Database {
            context: context.into(),
            message: db_message(&e),
        }
    }

    /// True for a failed gate (exit 1) rather than a usage or connection problem (exit 2).
    pub fn is_check_failure(&self) -> bool {
        matches!(self, EngineError::Refused(_))
    }
}

/// The server's message (with detail and hint) rather than the driver's "db error".
pub fn db_message(e: &tokio_postgres::Error) -> String {
    cdc::describe_pg_error(e)
}

/// Connects with tokio-postgres and drives the connection in the background; errors name the
/// URL's host and the fix.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, EngineError> {
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
