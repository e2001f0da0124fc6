//! Cutover's lock-retry loop and the catch-up before each attempt, shared by cutover and
//! rollback after cutover.

use crate::adapter::Adapter;
use crate::applier::{Applier, Swapped};
use crate::backfill::{ProgressSink, SyncProgress, SyncState};
use crate::catalog::Dependent;
use crate::error::Refusal;
use crate::seam::Swap;
use crate::spec::MigrationSpec;
use crate::state::PhaseChange;
use crate::EngineError;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// What a swap under the lock did, over all its attempts.
#[derive(Debug, Clone)]
pub(super) struct SwapOutcome {
    pub lock_ms: f64,
    pub attempts: u32,
    pub carried_over: Vec<String>,
}

/// A drain that finishes within this is "caught up".
const CAUGHT_UP: Duration = Duration::from_millis(500);
/// How long cutover keeps trying to catch up before refusing.
const CATCH_UP_BUDGET: Duration = Duration::from_secs(120);
const MAX_LOCK_ATTEMPTS: u32 = 10;

fn backoff(attempt: u32) -> Duration {
    let base = 100u64 * 2u64.pow(attempt.min(6));
    let jitter = rand::random_range(0..=base / 2);
    Duration::from_millis(base + jitter)
}

/// Locks `swap.live`, drains `capture` inside the lock, renames, carries `dependents` (of the
/// table that has the live name now) over to the incoming table, records `change` in the same
/// transaction, commits. Retries lock
/// timeouts with backoff and jitter. The swap runs on the applier's own session: what it
/// writes carries the engine's marks (PostgreSQL: its replication origin), so reverse capture
/// skips it.
pub(super) async fn swap_under_lock<A: Adapter>(
    spec: &MigrationSpec,
    swap: &Swap,
    capture: &mut Applier<'_, A>,
    dependents: &[Dependent],
    incoming_columns: &[String],
    (lock, change): (&A::Lock, &PhaseChange),
    progress: &mut dyn ProgressSink,
) -> Result<SwapOutcome, EngineError> {
    let validated = capture.validate_incoming(swap).await?;
    if !validated.is_empty() {
        info!(constraints = %validated.join(", "), "validated on the incoming table");
    }
    let mut holders = Vec::new();
    for attempt in 1..=MAX_LOCK_ATTEMPTS {
        // Catch up right before locking, so what is left to apply under the lock is only what
        // committed in the last moments.
        catch_up(capture, progress).await?;
        match capture
            .swap(spec, swap, dependents, incoming_columns, lock, change)
            .await?
        {
            Ok(Swapped {
                lock_ms,
                carried_over,
            }) => {
                info!(lock_ms, attempt, "swapped");
                return Ok(SwapOutcome {
                    lock_ms,
                    attempts: attempt,
                    carried_over,
                });
            }
            Err(held_by) => {
                let wait = backoff(attempt);
                warn!(attempt, ?wait, holders = %held_by.join("; "), "cutover lock timed out; retrying");
                holders = held_by;
                tokio::time::sleep(wait).await;
            }
        }
    }
    Err(Refusal::LockTimeout {
        table: swap.live.to_string(),
        attempts: MAX_LOCK_ATTEMPTS,
        holders: if holders.is_empty() {
            "none seen".into()
        } else {
            holders.join("; ")
        },
    }
    .into())
}

/// Drains until one drain completes quickly: only then is the backlog small enough to apply
/// under the lock. Refuses when capture cannot keep up with the application's writes.
async fn catch_up<A: Adapter>(
    capture: &mut Applier<'_, A>,
    progress: &mut dyn ProgressSink,
) -> Result<(), EngineError> {
    let give_up = Instant::now() + CATCH_UP_BUDGET;
    let begun = Instant::now();
    loop {
        let started = Instant::now();
        capture.drain().await?;
        let lag = capture.lag().await?;
        progress.update(&SyncProgress {
            backfill_done: true,
            capture_lag_bytes: lag.bytes,
            capture_lag_ms: lag.behind.as_millis() as u64,
            txns_applied: capture.txns_applied,
            state: SyncState::CatchingUp,
            elapsed_s: begun.elapsed().as_secs_f64(),
            ..Default::default()
        });
        if started.elapsed() < CAUGHT_UP {
            return Ok(());
        }
        if Instant::now() > give_up {
            return Err(Refusal::CaptureBehind {
                budget: humantime::format_duration(CATCH_UP_BUDGET).to_string(),
            }
            .into());
        }
    }
}
