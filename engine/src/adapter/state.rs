//! [`StateStore`]: migration records, their history, and the fenced runner lock.

use super::Sessions;
use crate::seam::{KeyRange, RangeResult, RateLimit, StoredPass, VerifyReport};
use crate::state::{Event, Figure, LastVerify, MigrationRecord, PhaseChange, Transition};
use crate::EngineError;
use std::future::Future;

pub trait StateStore: Sessions {
    /// The runner lock of one migration, with its fencing token.
    type Lock: Send + Sync + 'static;

    /// Creates the state store (idempotent, additive only).
    fn ensure_state(
        &self,
        conn: &Self::Conn,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// Registers a migration in phase `planned` unless it exists.
    fn register(
        &self,
        conn: &Self::Conn,
        name: &str,
        spec_text: &str,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// Replaces the spec of a rolled-back migration (expand starts it again); fenced.
    fn reregister(
        &self,
        lock: &Self::Lock,
        spec_text: &str,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// A migration's record; `None` when it (or the state store) does not exist.
    fn load_record(
        &self,
        conn: &Self::Conn,
        name: &str,
    ) -> impl Future<Output = Result<Option<MigrationRecord>, EngineError>> + Send;
    /// Every migration, oldest first.
    fn load_records(
        &self,
        conn: &Self::Conn,
    ) -> impl Future<Output = Result<Vec<MigrationRecord>, EngineError>> + Send;
    /// A migration's transitions, oldest first.
    fn history(
        &self,
        conn: &Self::Conn,
        name: &str,
    ) -> impl Future<Output = Result<Vec<Transition>, EngineError>> + Send;
    /// Appends a request to the migration's event log (needs no lock: it records what was
    /// asked, not a step); false when no such migration.
    fn record_event(
        &self,
        conn: &Self::Conn,
        name: &str,
        event: &Event,
    ) -> impl Future<Output = Result<bool, EngineError>> + Send;
    /// The migration's last `limit` events, oldest first.
    fn events(
        &self,
        conn: &Self::Conn,
        name: &str,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Event>, EngineError>> + Send;
    /// The process that holds the migration's runner lock now, if one does (default: not
    /// known).
    fn runner(
        &self,
        _conn: &Self::Conn,
        _name: &str,
    ) -> impl Future<Output = Result<Option<crate::state::Runner>, EngineError>> + Send {
        async { Ok(None) }
    }
    /// The last verify result.
    fn last_verify(
        &self,
        conn: &Self::Conn,
        name: &str,
    ) -> impl Future<Output = Result<Option<LastVerify>, EngineError>> + Send;
    /// Sets (`None`: clears) the rate limit a running sync picks up; false when no such
    /// migration. Needs no lock: it is a request.
    fn set_rate_limit(
        &self,
        conn: &Self::Conn,
        name: &str,
        limit: Option<RateLimit>,
    ) -> impl Future<Output = Result<bool, EngineError>> + Send;
    /// Takes the runner lock of `name` (or fails at once with [`EngineError::Busy`]) and bumps
    /// its fencing token.
    fn acquire_lock(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Self::Lock, EngineError>> + Send;
    /// Records a phase change and its history entry, as a compare-and-set on `change.from`:
    /// [`Refusal::PhaseChanged`](crate::Refusal::PhaseChanged) (and nothing written) when the
    /// migration is in another phase.
    fn transition(
        &self,
        lock: &Self::Lock,
        change: &PhaseChange,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// Saves the backfill checkpoint; returns the rate limit set while running (`None`: not
    /// set).
    fn checkpoint(
        &self,
        lock: &Self::Lock,
        checkpoint: &crate::state::Checkpoint,
    ) -> impl Future<Output = Result<Option<RateLimit>, EngineError>> + Send;
    /// Saves (or with `None` clears) what the running sync's impact budget measured and
    /// decided, for `splice status`.
    fn save_impact(
        &self,
        lock: &Self::Lock,
        impact: Option<&crate::state::Impact>,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
    fn set_figure(
        &self,
        lock: &Self::Lock,
        figure: Figure,
        value: f64,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
    fn reset_backfill(
        &self,
        lock: &Self::Lock,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// Records (or with `None` clears) where the old table is quarantined and for how long.
    fn set_quarantine(
        &self,
        lock: &Self::Lock,
        quarantine: Option<&crate::state::QuarantineEntry>,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
    fn record_verify(
        &self,
        lock: &Self::Lock,
        report: &VerifyReport,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// The ranges of the migration's last verify pass (incremental verify builds on them);
    /// `None` when none is stored.
    fn verify_ranges(
        &self,
        conn: &Self::Conn,
        name: &str,
    ) -> impl Future<Output = Result<Option<StoredPass>, EngineError>> + Send;
    /// Replaces the stored ranges with `ranges` (in key order), none of them checked yet, for
    /// the direction `shape`: a full pass stores its bounds before it reads a row, so a change
    /// capture applies while the pass runs marks the range it is in. Fenced.
    fn start_verify_pass(
        &self,
        lock: &Self::Lock,
        shape: &str,
        ranges: &[KeyRange],
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// Stores what checking these ranges found. Fenced.
    fn record_verify_ranges(
        &self,
        lock: &Self::Lock,
        results: &[RangeResult],
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// Forgets the stored ranges: something wrote the new table outside capture, or changed
    /// what it is compared with (rollback, cutover, a re-expand, a new backfill), so the next
    /// verify is a full pass. Fenced.
    fn forget_verify_ranges(
        &self,
        lock: &Self::Lock,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
}
