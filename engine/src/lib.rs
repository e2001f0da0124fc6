//! `engine`: splice's migration engine. A migration file ([`spec`]) is checked against the live
//! schema ([`plan`]) and driven through its phases ([`phases`]): expand, sync (change capture +
//! throttled backfill, [`sync`]), verify ([`verify`]), cutover, contract, drop, and rollback
//! from any of them. State lives in the database ([`state`]).
//!
//! The database sits behind one trait, [`Adapter`] ([`adapter`]): the phase machine, the
//! backfill loop, the applier's batching and draining and verify's range loop are written
//! against it and contain no SQL. PostgreSQL is [`postgres::Postgres`], the only adapter so
//! far; [`Engine::new`] drives a PostgreSQL database.
//!
//! The invariant everything is tested against: once capture has caught up, the target equals
//! the mapping of the source for every key. Backfill, the change applier and verify all go
//! through one mapping ([`plan::Direction`]).
//!
//! Not for: linting SQL files (the `lint` crate, which this crate calls on the DDL it
//! generates), decoding the change stream (the `cdc` crate), or anything MySQL yet.

pub mod adapter;
pub mod catalog;
pub mod phases;
pub mod plan;
pub mod postgres;
pub mod spec;
pub mod state;
pub mod sync;
pub mod verify;

pub use adapter::Adapter;
pub use phases::Engine;
pub use plan::Plan;
pub use postgres::{connect, db_message, Postgres};
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
    /// The database refused or failed (the adapter describes it with the server's message).
    #[error("{context}: {message}")]
    Database { context: String, message: String },
    #[error("change capture: {0}")]
    Capture(#[from] cdc::CdcError),
}

impl EngineError {
    /// True for a failed gate (exit 1) rather than a usage or connection problem (exit 2).
    pub fn is_check_failure(&self) -> bool {
        matches!(self, EngineError::Refused(_))
    }
}
