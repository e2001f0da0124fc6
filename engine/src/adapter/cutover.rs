//! [`Cutover`]: the rename swap under a short lock, on the applier's session.

use super::{ChangeApplier, StateStore};
use crate::catalog::Dependent;
use crate::seam::{Swap, SwapLock};
use crate::spec::MigrationSpec;
use crate::state::PhaseChange;
use crate::EngineError;
use std::future::Future;

pub trait Cutover: ChangeApplier + StateStore {
    /// Begins the swap on the applier's session: a transaction holding exclusive locks on
    /// `swap.live` and `swap.incoming`, taken under the spec's lock timeout, which the server
    /// itself ends if this process stops answering for longer than `hold_budget` (a frozen
    /// runner must not keep the table locked). [`SwapLock::TimedOut`] (nothing held) names
    /// who held the tables; until [`finish_swap`] or [`abort_swap`],
    /// [`apply`](ChangeApplier::apply) writes inside it.
    ///
    /// [`finish_swap`]: Cutover::finish_swap
    /// [`abort_swap`]: Cutover::abort_swap
    fn lock_for_swap(
        &self,
        applier: &mut Self::ApplierSession,
        spec: &MigrationSpec,
        swap: &Swap,
        hold_budget: std::time::Duration,
    ) -> impl Future<Output = Result<SwapLock, EngineError>> + Send;
    /// Renames, carries `dependents` over to the incoming table (whose columns are
    /// `incoming_columns`), records `change` through `lock` (fenced, compare-and-set) in the
    /// same transaction, commits; returns what was carried over. On failure nothing was
    /// swapped and nothing recorded; `Ok(Err(holders))` when the swap's last lock (MySQL: the
    /// rename's, which a reader of the live table can hold up) timed out, and the caller
    /// retries as after [`SwapLock::TimedOut`].
    fn finish_swap(
        &self,
        applier: &mut Self::ApplierSession,
        swap: &Swap,
        dependents: &[Dependent],
        incoming_columns: &[String],
        lock: &Self::Lock,
        change: &PhaseChange,
    ) -> impl Future<Output = Result<Result<Vec<String>, Vec<String>>, EngineError>> + Send;
    /// Before the first lock attempt, outside any transaction: validates the constraints the
    /// incoming table holds `NOT VALID` (alter mode's foreign keys) that the table it replaces
    /// holds valid; returns their names. Refuses with
    /// [`Refusal::CarryOverFailed`](crate::Refusal::CarryOverFailed) when one does not hold.
    fn validate_incoming(
        &self,
        applier: &mut Self::ApplierSession,
        swap: &Swap,
    ) -> impl Future<Output = Result<Vec<String>, EngineError>> + Send;
    /// True when `swap` was made but its phase change was not recorded (a crash between the
    /// two): only databases whose rename cannot share a transaction with the record (MySQL)
    /// can be in that state, and they tell it from the tables; the default is never. The
    /// engine then records the change instead of swapping again.
    fn swapped_unrecorded(
        &self,
        conn: &Self::Conn,
        swap: &Swap,
    ) -> impl Future<Output = Result<bool, EngineError>> + Send {
        let _ = (conn, swap);
        async { Ok(false) }
    }
    /// Abandons a locked swap.
    fn abort_swap(&self, applier: &mut Self::ApplierSession) -> impl Future<Output = ()> + Send;
    /// After the swap committed: finishes what was carried over without the lock (PostgreSQL:
    /// validates foreign keys re-created NOT VALID). Best effort; failures are logged.
    fn settle_carried_over(
        &self,
        conn: &Self::Conn,
        dependents: &[Dependent],
    ) -> impl Future<Output = ()> + Send;
}
