//! [`CommitProbe`]: the impact budget's heartbeat, a tiny durable write on the source.

use super::Sessions;
use crate::EngineError;
use std::future::Future;

/// `Clone + Send + Sync + 'static`: the probe runs on a thread of its own (see
/// [`crate::impact::ImpactBudget::start`]).
pub trait CommitProbe: Sessions + Clone + Send + Sync + 'static {
    /// The probe's own session and its prepared heartbeat.
    type Probe: Send + 'static;
    /// Opens the probe of `migration`: a session of its own and the migration's heartbeat row
    /// (created if missing; rollback, contract and drop remove it with the appliers' state).
    fn open_probe(
        &self,
        migration: &str,
    ) -> impl Future<Output = Result<Self::Probe, EngineError>> + Send;
    /// One heartbeat: a one-row write committed on the same durability path as the
    /// application's commits (PostgreSQL: an UPDATE committed with the server's default
    /// `synchronous_commit`). The caller times it.
    fn beat(probe: &mut Self::Probe) -> impl Future<Output = Result<(), EngineError>> + Send;
}
