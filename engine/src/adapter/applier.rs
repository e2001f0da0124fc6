//! [`ChangeApplier`]: the change stream of one direction and the applier session that
//! re-syncs keys from the source of truth.

use super::Sessions;
use crate::seam::{Continuity, Direction, SlotRetention};
use crate::spec::{MigrationSpec, QualifiedName};
use crate::EngineError;
use std::collections::HashSet;
use std::future::Future;

pub trait ChangeApplier: Sessions {
    /// The change stream of one direction's source table and of the marker table.
    type Stream: cdc::ChangeSource + 'static;
    /// The applier's session (its writes are skipped by capture) and its prepared statements.
    type ApplierSession: Send + 'static;

    /// Opens the change stream `slot` of `from` and the marker table, skipping the engine's
    /// own writes (both origins of `spec`); creates it only under [`Continuity::Start`]. `to`
    /// is the direction's target (the table that takes `from`'s name at a swap). It needs
    /// names only, no plan: a command opens it while it plans.
    fn open_stream(
        &self,
        spec: &MigrationSpec,
        from: &QualifiedName,
        to: &QualifiedName,
        slot: &str,
        continuity: Continuity,
    ) -> impl Future<Output = Result<Self::Stream, EngineError>> + Send;
    /// Opens the applier's sessions for `dir`, writing under `origin` (so that capture skips
    /// its writes).
    fn open_applier(
        &self,
        dir: &Direction,
        origin: &str,
    ) -> impl Future<Output = Result<Self::ApplierSession, EngineError>> + Send;
    /// The table drain markers are written to (its rows have columns `migration` and `id`).
    fn marker_table(&self) -> cdc::TableName;
    /// Writes the next drain marker of `migration`; returns its id.
    fn write_marker(
        &self,
        applier: &mut Self::ApplierSession,
        migration: &str,
    ) -> impl Future<Output = Result<i64, EngineError>> + Send;
    /// Re-syncs `keys` from the source of truth (after deleting orphans when `truncate`): in a
    /// transaction of its own that is committed, or inside the swap while one is locked.
    /// Upserts the mapped source row of every key the source has; deletes the target row only
    /// of those of `gone` (a subset of `keys`: deleted or moved away in the batch) the source
    /// no longer has. Every row the source loses reaches the applier as a `gone` key (a
    /// delete, or the old key of a key update) or as a truncate, so a key merely updated needs
    /// no look for a row to delete.
    /// `txns` are the source transactions (their `cdc` `source_id`s) whose changes named the
    /// keys: the re-read must see them, and a commit can reach the change stream a moment
    /// before other sessions see it. `keys` may be empty while `txns` are not, when every key
    /// was left to a running backfill ([`crate::applier::Applier::backfill_started`]):
    /// the backfill's next chunk must see `txns` then, and its read must be one that does.
    fn apply(
        &self,
        applier: &mut Self::ApplierSession,
        keys: HashSet<Vec<String>>,
        gone: &HashSet<Vec<String>>,
        txns: &[u64],
        truncate: bool,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// Marks the stored verify ranges of `migration` (for the direction `shape`, see
    /// [`crate::verify::shape`]) that hold any of `keys`, or every range when `every` (a
    /// truncate), as changed: incremental verify re-reads them. Idempotent (a mark is a counter
    /// bump: more marks only mean "read again"). Runs on the applier's session, so inside the
    /// swap while one is locked; the applier calls it before it applies the keys (see
    /// [`crate::applier`] for why that order is crash-safe).
    fn mark_changed(
        &self,
        applier: &mut Self::ApplierSession,
        migration: &str,
        shape: &str,
        keys: &HashSet<Vec<String>>,
        every: bool,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// Removes a change stream (slot and publication) if it exists.
    fn drop_capture(&self, slot: &str) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// Removes what marks the migration's appliers (PostgreSQL: both replication origins).
    fn forget_appliers(
        &self,
        conn: &Self::Conn,
        spec: &MigrationSpec,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// What the server lacks for the change streams `slots` (wal_level, replication rights,
    /// free slots and WAL senders), each worded with its fix; empty when nothing. Creates
    /// nothing: `splice plan` reports these before sync would fail on the first.
    fn capture_problems(
        &self,
        conn: &Self::Conn,
        slots: &[String],
    ) -> impl Future<Output = Result<Vec<String>, EngineError>> + Send;
    /// What the live table lacks for the migration: the runner's ownership (cutover renames
    /// it and carries its properties) and a replica identity that covers `key` (capture names
    /// rows by it). Each worded with its fix; empty when nothing.
    fn table_problems(
        &self,
        conn: &Self::Conn,
        table: &crate::catalog::Table,
        key: &[String],
    ) -> impl Future<Output = Result<Vec<String>, EngineError>> + Send {
        let _ = (conn, table, key);
        async { Ok(Vec::new()) }
    }
    /// The WAL the change stream `slot` retains, when it exists and the database can tell.
    fn slot_retention(
        &self,
        conn: &Self::Conn,
        slot: &str,
    ) -> impl Future<Output = Result<Option<SlotRetention>, EngineError>> + Send {
        let _ = (conn, slot);
        async { Ok(None) }
    }
    /// Bytes the change stream `slot` is behind, when it exists (`splice status`).
    fn capture_lag_bytes(
        &self,
        conn: &Self::Conn,
        slot: &str,
    ) -> impl Future<Output = Result<Option<i64>, EngineError>> + Send;
}
