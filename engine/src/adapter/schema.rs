//! [`SchemaChanges`]: the DDL of expand, rollback before cutover, contract and drop.

use super::Sessions;
use crate::spec::MigrationSpec;
use crate::EngineError;
use std::future::Future;

pub trait SchemaChanges: Sessions {
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
}
