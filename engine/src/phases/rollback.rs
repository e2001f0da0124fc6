//! `splice rollback`: one step back to the old shape, losing nothing; and `splice abort`:
//! abandoning a migration that has not been cut over, as an act of its own.
//!
//! Rollback takes exactly one step back, and re-running it finishes that step and goes no
//! further: a rollback that already brought the migration back (its last transition was a
//! rollback) does nothing the second time. Abandoning after a rollback from cutover is
//! `splice abort`.

use super::swap::swap_under_lock;
use super::{column_names, Engine};
use crate::adapter::Adapter;
use crate::backfill::{self, BackfillCopy, Control, NoProgress, ProgressSink};
use crate::error::Refusal;
use crate::impact::ImpactBudget;
use crate::plan;
use crate::seam::{Continuity, Fill, RateLimit, Swap};
use crate::spec::MigrationSpec;
use crate::state::{MigrationRecord, Phase, PhaseChange};
use crate::EngineError;
use serde_json::json;
use std::time::{Duration, Instant};

/// What rollback (or abort) did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RollbackReport {
    pub from: String,
    pub to: String,
    pub seconds: f64,
    pub lock_ms: Option<f64>,
    /// True when an earlier run had already done it: nothing was done this time.
    pub already_done: bool,
}

impl<A: Adapter> Engine<A> {
    /// `splice rollback`: before cutover abandons the migration (drops the shadow table and
    /// capture); after cutover swaps back (reverse capture drained under the lock) and resumes
    /// forward sync; after contract restores the old table from quarantine and re-syncs it.
    /// A rollback whose step is already done reports it and does nothing.
    pub async fn rollback(&self, name: &str) -> Result<RollbackReport, EngineError> {
        self.rollback_from(name, None).await
    }

    /// `splice rollback --from PHASE`: rolls back only from `expected` (a re-run after it
    /// finished reports it as done); takes a further step after a rollback, which plain
    /// [`rollback`](Engine::rollback) does not.
    pub async fn rollback_from(
        &self,
        name: &str,
        expected: Option<Phase>,
    ) -> Result<RollbackReport, EngineError> {
        self.rollback_watched(name, expected, &mut NoProgress).await
    }

    /// [`rollback_from`](Engine::rollback_from), reporting to `progress` the catch-up of a
    /// swap back and the refill of a table restored from quarantine.
    pub async fn rollback_watched(
        &self,
        name: &str,
        expected: Option<Phase>,
        progress: &mut dyn ProgressSink,
    ) -> Result<RollbackReport, EngineError> {
        let started = Instant::now();
        let super::Loaded { db, record, spec } = self.load(name).await?;
        let lock = self.locked(name).await?;
        let report = |to: Phase, lock_ms: Option<f64>| RollbackReport {
            from: record.phase.to_string(),
            to: to.to_string(),
            seconds: started.elapsed().as_secs_f64(),
            lock_ms,
            already_done: false,
        };
        let already = self.rolled_back_already(&db, &record).await?;
        match expected {
            None => {
                if let Some(done) = already {
                    return Ok(done);
                }
            }
            Some(p) if p != record.phase => {
                return match already {
                    Some(done) if done.from == p.as_str() => Ok(done),
                    _ => Err(Refusal::WrongPhase {
                        name: name.into(),
                        phase: record.phase,
                        expected: format!(
                            "not {p}; nothing was rolled back (`splice status {name}`)"
                        ),
                    }
                    .into()),
                };
            }
            Some(_) => {}
        }
        // Whatever is rolled back, the stored verify ranges no longer describe the tables
        // (after cutover the new table was written directly; before, it is dropped).
        if record.phase != Phase::RolledBack {
            self.adapter.forget_verify_ranges(&lock).await?;
        }
        match record.phase {
            Phase::Planned | Phase::Expanded | Phase::Syncing | Phase::Verified => {
                self.abandon(&db, &lock, &spec, record.phase).await?;
                Ok(report(Phase::RolledBack, None))
            }
            Phase::CutOver => {
                let swap_back = Swap {
                    live: spec.table.clone(),
                    incoming: spec.retired_table(),
                    outgoing_as: spec.shadow_table(),
                };
                if self.adapter.swapped_unrecorded(&db, &swap_back).await? {
                    // A crash between the swap back and its record (MySQL): record it, and
                    // finish what came after it.
                    self.adapter
                        .transition(
                            &lock,
                            &PhaseChange::new(
                                Phase::CutOver,
                                Phase::Syncing,
                                json!({ "rollback": true, "rolled_back_cutover": true,
                                        "recorded_after_a_crash": true }),
                            ),
                        )
                        .await?;
                    self.adapter.drop_capture(&spec.reverse_slot()).await?;
                    return Ok(report(Phase::Syncing, None));
                }
                let plan = plan::build_after_cutover(&self.adapter, &db, &spec).await?;
                let Some(reverse) = plan.reverse.clone() else {
                    return Err(Refusal::NoReverseSync {
                        name: name.into(),
                        why: "it was cut over without reverse sync; the old table is stale, so \
                              swapping back would lose writes"
                            .into(),
                    }
                    .into());
                };
                // Forward capture must exist before the swap back, so no write to the old table
                // after it is missed. Until the swap the new table is live and complete, so a
                // forward stream created now (after a restore from quarantine, or one lost
                // while cut over) misses nothing.
                let planned = started.elapsed();
                self.forward_applier(&spec, plan.forward.clone(), Continuity::Start)
                    .await?
                    .close()
                    .await?;
                let forward = started.elapsed();
                let mut capture = self
                    .reverse_applier(&spec, reverse, Continuity::Resume)
                    .await?;
                let opened = started.elapsed();
                capture.drain().await?;
                let drained = started.elapsed();
                let swap = Swap {
                    live: spec.table.clone(),
                    incoming: spec.retired_table(),
                    outgoing_as: spec.shadow_table(),
                };
                let change = PhaseChange::new(
                    Phase::CutOver,
                    Phase::Syncing,
                    json!({ "rollback": true, "rolled_back_cutover": true }),
                );
                // After cutover the plan's source is the old table, its target the live one.
                let result = swap_under_lock(
                    &spec,
                    &swap,
                    &mut capture,
                    &plan.dependents,
                    &column_names(&plan.source),
                    (&lock, &change),
                    progress,
                )
                .await;
                let swapped_at = started.elapsed();
                capture.close().await?;
                let swapped = result?;
                crate::fault::point("rollback.swapped");
                // Reverse sync is over; a later cutover starts it afresh. A crash before this
                // leaves a slot the next cutover adopts (Continuity::Start).
                self.adapter.drop_capture(&spec.reverse_slot()).await?;
                let ms = |d: Duration| d.as_millis() as u64;
                tracing::debug!(
                    planned_ms = ms(planned),
                    forward_stream_ms = ms(forward - planned),
                    reverse_opened_ms = ms(opened - forward),
                    drained_ms = ms(drained - opened),
                    swap_ms = ms(swapped_at - drained),
                    closed_ms = ms(started.elapsed() - swapped_at),
                    lock_ms = swapped.lock_ms,
                    "rolled back a cutover"
                );
                Ok(report(Phase::Syncing, Some(swapped.lock_ms)))
            }
            Phase::Contracted => {
                self.check_nothing_followed(&db, &spec).await?;
                // The move out of quarantine clears the quarantine entry in the same
                // transaction; a re-run after a crash finds it cleared and goes on re-syncing.
                if record.quarantined_as.is_some() {
                    self.adapter
                        .restore_from_quarantine(&db, &spec, &lock)
                        .await?;
                    crate::fault::point("restore.moved");
                }
                // Re-sync the restored table from the live one (new → old), then keep it
                // current with reverse sync: the state cutover left it in.
                let plan = plan::build_after_cutover(&self.adapter, &db, &spec).await?;
                let Some(reverse) = plan.reverse.clone() else {
                    return Err(Refusal::NoReverseSync {
                        name: name.into(),
                        why: "there is no reverse mapping; the restored table cannot be \
                              re-synced"
                            .into(),
                    }
                    .into());
                };
                // Contract dropped reverse capture: a fresh one, then a full re-copy.
                let mut capture = self
                    .reverse_applier(&spec, reverse, Continuity::Start)
                    .await?;
                self.adapter.reset_backfill(&lock).await?;
                backfill::backfill(
                    &db,
                    &lock,
                    &mut capture,
                    &spec,
                    BackfillCopy {
                        source: &plan.target,
                        // The restored table holds the rows of the day it was quarantined:
                        // every row is overwritten, and rows deleted since are removed.
                        fill: Fill::Mirror,
                        // A rollback restores the application's table: no budget holds it back.
                        impact: &ImpactBudget::off(),
                    },
                    &Control::new(RateLimit::Unlimited),
                    progress,
                )
                .await?;
                capture.drain().await?;
                capture.close().await?;
                crate::fault::point("restore.copied");
                self.adapter
                    .transition(
                        &lock,
                        &PhaseChange::new(
                            Phase::Contracted,
                            Phase::CutOver,
                            json!({ "rollback": true, "restored_from_quarantine": true }),
                        ),
                    )
                    .await?;
                Ok(report(Phase::CutOver, None))
            }
            Phase::Dropped => Err(super::wrong_phase(
                &record,
                "the old table was dropped; there is nothing to roll back to",
            )),
            Phase::RolledBack => unreachable_rolled_back(name),
        }
    }

    /// `splice abort`: abandons a migration that has not been cut over (or was rolled back
    /// from cutover): drops the shadow table and capture. Refuses while the new table is live.
    pub async fn abort(&self, name: &str) -> Result<RollbackReport, EngineError> {
        let started = Instant::now();
        let super::Loaded { db, record, spec } = self.load(name).await?;
        let done = |already_done: bool| RollbackReport {
            from: record.phase.to_string(),
            to: Phase::RolledBack.to_string(),
            seconds: started.elapsed().as_secs_f64(),
            lock_ms: None,
            already_done,
        };
        match record.phase {
            Phase::RolledBack => Ok(done(true)),
            p if p.before_cutover() => {
                let lock = self.locked(name).await?;
                self.abandon(&db, &lock, &spec, p).await?;
                Ok(done(false))
            }
            Phase::CutOver | Phase::Contracted => Err(Refusal::WrongPhase {
                name: name.into(),
                phase: record.phase,
                expected: format!(
                    "the new table is live; `splice rollback {name}` first (until the old \
                     table is live again), then abort"
                ),
            }
            .into()),
            _ => Err(super::wrong_phase(&record, "there is nothing to abort")),
        }
    }

    /// Drops what expand and sync created; every step is idempotent, so a re-run after a
    /// crash finishes the job.
    async fn abandon(
        &self,
        db: &A::Conn,
        lock: &A::Lock,
        spec: &MigrationSpec,
        from: Phase,
    ) -> Result<(), EngineError> {
        self.adapter.drop_capture(&spec.forward_slot()).await?;
        self.adapter.drop_capture(&spec.reverse_slot()).await?;
        crate::fault::point("abort.captures_dropped");
        self.adapter.drop_shadow(db, spec).await?;
        self.adapter.forget_appliers(db, spec).await?;
        self.adapter.reset_backfill(lock).await?;
        self.adapter.forget_verify_ranges(lock).await?;
        // A `splice throttle` override ends with the run it was set for.
        self.adapter.set_rate_limit(db, &spec.name, None).await?;
        self.adapter
            .transition(
                lock,
                &PhaseChange::new(from, Phase::RolledBack, json!({ "rollback": true })),
            )
            .await
    }

    /// Refuses the restore of a contracted migration when a later migration of the same table
    /// (one whose expand recorded it in `follows`) has not been rolled back: the live table
    /// may no longer be the shape this migration's reverse mapping reads.
    async fn check_nothing_followed(
        &self,
        db: &A::Conn,
        spec: &MigrationSpec,
    ) -> Result<(), EngineError> {
        for other in self.adapter.load_records(db).await? {
            if other.name == spec.name || other.phase == Phase::RolledBack {
                continue;
            }
            let history = self.adapter.history(db, &other.name).await?;
            let follows = history
                .iter()
                .rev()
                .find(|t| t.to == Phase::Expanded.as_str())
                .and_then(|t| t.figures.get("follows"))
                .and_then(|f| f.as_array())
                .is_some_and(|f| f.iter().any(|n| n.as_str() == Some(spec.name.as_str())));
            if follows {
                return Err(Refusal::TableMovedOn {
                    name: spec.name.clone(),
                    table: spec.table.to_string(),
                    other: other.name.clone(),
                }
                .into());
            }
        }
        Ok(())
    }

    /// When the migration's last transition was a rollback (or it is rolled back), the report
    /// of a rollback that has nothing left to do.
    async fn rolled_back_already(
        &self,
        db: &A::Conn,
        record: &MigrationRecord,
    ) -> Result<Option<RollbackReport>, EngineError> {
        let last = self.adapter.history(db, &record.name).await?.pop();
        let already = record.phase == Phase::RolledBack
            || last.as_ref().is_some_and(|t| {
                t.to == record.phase.as_str() && PhaseChange::is_rollback(&t.figures)
            });
        Ok(already.then(|| RollbackReport {
            from: last
                .and_then(|t| t.from)
                .unwrap_or_else(|| record.phase.to_string()),
            to: record.phase.to_string(),
            seconds: 0.0,
            lock_ms: None,
            already_done: true,
        }))
    }
}

/// `rolled_back_already` answers for this phase before the match.
fn unreachable_rolled_back(name: &str) -> Result<RollbackReport, EngineError> {
    Err(Refusal::WrongPhase {
        name: name.into(),
        phase: Phase::RolledBack,
        expected: "there is nothing to roll back".into(),
    }
    .into())
}
