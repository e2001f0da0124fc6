//! [`SchemaChanges`]: the DDL of expand, rollback before cutover, contract and drop.

use super::StateStore;
use crate::spec::MigrationSpec;
use crate::state::{PhaseChange, QuarantineEntry};
use crate::EngineError;
use std::future::Future;

pub trait SchemaChanges: StateStore {
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
