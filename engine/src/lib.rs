//! `engine`: splice's migration engine. A migration file ([`spec`]) is checked against the live
//! schema ([`plan`]) and driven through its phases ([`phases`]): expand, sync (change capture
//! applied by the [`applier`] + throttled [`backfill`]), verify ([`verify`]), cutover,
//! contract, drop, and rollback from any of them. State lives in the database ([`state`]).
//!
//! The database sits behind small traits split by concern ([`adapter`]), which speak in the
//! leaf types of [`seam`]: the phase machine, the backfill loop, the applier's batching and
//! draining and verify's range loop are written against them and contain no SQL.
//! PostgreSQL is [`postgres::Postgres`] ([`Engine::new`] drives a PostgreSQL database),
//! MySQL/MariaDB [`mysql::MySql`] ([`Engine::mysql`]).
//!
//! The invariant everything is tested against: once capture has caught up, the target equals
//! the mapping of the source for every key. Backfill, the change applier and verify all go
//! through one mapping ([`plan::Direction`]).
//!
//! Not for: linting SQL files (the `lint` crate, which this crate calls on the DDL it
//! generates), decoding the change stream (the `cdc` crate), or what the [`mysql`] adapter does not have yet (`alter` mode refuses with
//! [`EngineError::NotBuilt`]).

pub mod adapter;
pub mod applier;
pub mod backfill;
pub mod catalog;
pub mod drift;
mod error;
pub mod fault;
pub mod impact;
pub mod memory;
pub mod mysql;
pub mod phases;
pub mod plan;
pub mod postgres;
pub mod seam;
pub mod spec;
pub mod state;
pub mod verify;

pub use adapter::Adapter;
pub use error::{EngineError, Refusal};
pub use mysql::MySql;
pub use phases::Engine;
pub use postgres::{connect, db_message, Postgres};
pub use seam::{Plan, RateLimit, VerifyKind, VerifyReport};
pub use spec::{MigrationSpec, QualifiedName};
pub use state::Phase;
