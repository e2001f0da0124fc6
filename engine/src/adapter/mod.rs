//! The seam between the engine and a database: small traits split by concern, each speaking
//! in the leaf types of [`seam`](crate::seam), [`catalog`](crate::catalog),
//! [`state`](crate::state) and [`spec`](crate::spec). An adapter implements all of them and
//! is then an [`Adapter`] (a blanket impl); the phase machine, backfill, the applier and
//! verify are written against these traits and name no database.
//!
//! | trait | concern |
//! |---|---|
//! | [`Sessions`] | opening a session with the canonical settings |
//! | [`Planner`] | reading the catalog, compiling mappings, rendering `splice plan` |
//! | [`SchemaChanges`] | the DDL of expand, rollback, contract, drop |
//! | [`BackfillSource`] | chunk bounds, the fenced range copy, server load |
//! | [`CommitProbe`] | the impact budget's heartbeat write |
//! | [`ChangeApplier`] | the change stream and the applier that re-syncs keys |
//! | [`VerifySource`] | verify's range bounds and canonical rows |
//! | [`Cutover`] | the locked rename swap |
//! | [`StateStore`] | migration records, history, the fenced runner lock |
//!
//! Implementations: [`Postgres`](crate::postgres::Postgres), [`MySql`](crate::mysql::MySql)
//! and, for tests,
//! [`Memory`](crate::memory::Memory).
//!
//! The contract every implementation keeps:
//! - **Keys travel as text**, one string per key column in key order; the adapter casts them.
//! - **Canonical rows** (verify) are bytes: one row per `\n`-terminated line, fields separated
//!   by `\t`, the key fields first when asked for, every value in one fixed text form for its
//!   type; a backslash, tab, newline or carriage return inside a value is escaped as `\\`, `\t`,
//!   `\n`, `\r` (COPY's text form), NULL is `\N`. Equal mapped rows give equal bytes on both
//!   sides, and a key field unescaped ([`crate::verify::unescape_field`]) is the key's text.
//! - **The applier's writes are not captured again** (PostgreSQL: replication origins; MySQL:
//!   a marker row per applier transaction), and applying a key is idempotent: it re-reads the
//!   source of truth and writes only what differs.
//! - **State writes through a [`StateStore::Lock`] are fenced**: once another runner took the
//!   migration over they fail with [`EngineError::Busy`] and write nothing.

mod applier;
mod backfill;
mod cutover;
mod planner;
mod probe;
mod schema;
mod state;
mod verify;

pub use applier::ChangeApplier;
pub use backfill::BackfillSource;
pub use cutover::Cutover;
pub use planner::{ImpliedMappings, Planner};
pub use probe::CommitProbe;
pub use schema::SchemaChanges;
pub use state::StateStore;
pub use verify::VerifySource;

use crate::EngineError;
use std::future::Future;

/// Sessions with the database. One adapter value per database (PostgreSQL: its URL); every
/// method of every trait returns a `Send` future, so a sync can run on a spawned task.
pub trait Sessions: Send + Sync + Sized + 'static {
    /// A session with the canonical settings.
    type Conn: Send + Sync + 'static;

    /// Opens a session with the canonical settings verify's row text depends on.
    fn connect(&self) -> impl Future<Output = Result<Self::Conn, EngineError>> + Send;
}

/// A database the phase machine can drive: every concern implemented.
pub trait Adapter:
    Planner
    + SchemaChanges
    + BackfillSource
    + CommitProbe
    + ChangeApplier
    + VerifySource
    + Cutover
    + StateStore
{
}

impl<T> Adapter for T where
    T: Planner
        + SchemaChanges
        + BackfillSource
        + CommitProbe
        + ChangeApplier
        + VerifySource
        + Cutover
        + StateStore
{
}
