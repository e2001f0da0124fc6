//! The concerns of the MySQL adapter not built yet. Each method refuses with
//! [`EngineError::NotBuilt`] before it changes anything, so a command that reaches one says
//! plainly that it does not work on MySQL/MariaDB yet.

use super::capture::ApplierSession;
use super::{MySql, Session};
use crate::adapter::Cutover;
use crate::catalog::Dependent;
use crate::seam::{Swap, SwapLock};
use crate::spec::MigrationSpec;
use crate::state::PhaseChange;
use crate::EngineError;

const DATABASE: &str = "MySQL/MariaDB";

fn not_built<T>(what: &str) -> Result<T, EngineError> {
    Err(EngineError::NotBuilt {
        what: what.into(),
        database: DATABASE,
    })
}

impl Cutover for MySql {
    async fn lock_for_swap(
        &self,
        _applier: &mut ApplierSession,
        _spec: &MigrationSpec,
        _swap: &Swap,
        _hold_budget: std::time::Duration,
    ) -> Result<SwapLock, EngineError> {
        not_built("`splice cutover`")
    }

    async fn finish_swap(
        &self,
        _applier: &mut ApplierSession,
        _swap: &Swap,
        _dependents: &[Dependent],
        _incoming_columns: &[String],
        _lock: &Self::Lock,
        _change: &PhaseChange,
    ) -> Result<Vec<String>, EngineError> {
        not_built("`splice cutover`")
    }

    async fn validate_incoming(
        &self,
        _applier: &mut ApplierSession,
        _swap: &Swap,
    ) -> Result<Vec<String>, EngineError> {
        not_built("`splice cutover`")
    }

    async fn abort_swap(&self, _applier: &mut ApplierSession) {}

    async fn settle_carried_over(&self, _db: &Session, _dependents: &[Dependent]) {}
}
