//! [`SchemaChanges`]: the DDL of expand, rollback before cutover, contract and drop.

use super::StateStore;
use crate::spec::MigrationSpec;
use crate::state::{DeferredIndex, PhaseChange, QuarantineEntry};
use crate::EngineError;
use std::future::Future;

pub trait SchemaChanges: StateStore {
    /// Creates the shadow table (unless it exists) under the spec's lock timeout and records
    /// `change` through `lock` in the same transaction. Under
    /// [`IndexBuild::AfterBackfill`](crate::spec::IndexBuild) the secondary indexes (those no
    /// constraint backs and no upsert can use) are dropped again and their definitions
    /// recorded with the change (`deferred_indexes`) for
    /// [`build_index`](SchemaChanges::build_index) after the backfill: in that transaction, or,
    /// where DDL commits on its own (MySQL), dropped only once the record committed.
    fn create_shadow(
        &self,
        conn: &Self::Conn,
        spec: &MigrationSpec,
        ddl: &[String],
        lock: &Self::Lock,
        change: &PhaseChange,
    ) -> impl Future<Output = Result<Vec<DeferredIndex>, EngineError>> + Send;
    /// Builds one deferred index of the shadow table unless a valid one of that name exists
    /// (an invalid leftover of an interrupted build is dropped first); true when it built it.
    fn build_index(
        &self,
        conn: &Self::Conn,
        spec: &MigrationSpec,
        index: &DeferredIndex,
    ) -> impl Future<Output = Result<bool, EngineError>> + Send;
    /// Drops the shadow table if it exists (rollback before cutover).
    fn drop_shadow(
        &self,
        conn: &Self::Conn,
        spec: &MigrationSpec,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// Moves the retired table into quarantine (contract) and, in the same transaction,
    /// records `entry` and `change` through `lock`.
    fn quarantine(
        &self,
        conn: &Self::Conn,
        spec: &MigrationSpec,
        lock: &Self::Lock,
        entry: &QuarantineEntry,
        change: &PhaseChange,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// Moves the quarantined table back under its retired name (rollback after contract) and,
    /// in the same transaction, clears the migration's quarantine entry through `lock`.
    fn restore_from_quarantine(
        &self,
        conn: &Self::Conn,
        spec: &MigrationSpec,
        lock: &Self::Lock,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// Drops the quarantined table (the one-way door) and, in the same transaction, records
    /// `change` through `lock`.
    fn drop_quarantined(
        &self,
        conn: &Self::Conn,
        spec: &MigrationSpec,
        lock: &Self::Lock,
        change: &PhaseChange,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
}
