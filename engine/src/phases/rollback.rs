//! `splice rollback`: back to the old shape from any phase, losing nothing.

use super::swap::swap_under_lock;
use super::{column_names, Engine};
use crate::adapter::Adapter;
use crate::backfill::{self, BackfillCopy, Control, NoProgress};
use crate::error::Refusal;
use crate::plan;
use crate::seam::{Fill, RateLimit, Swap};
use crate::state::Phase;
use crate::EngineError;
use serde_json::json;
use std::time::Instant;

/// What rollback did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RollbackReport {
    pub from: String,
    pub to: String,
    pub seconds: f64,
    pub lock_ms: Option<f64>,
}

impl<A: Adapter> Engine<A> {
    /// `splice rollback`: before cutover drops the shadow table and capture; after cutover
    /// swaps back (reverse capture drained under the lock) and resumes forward sync; after
    /// contract restores the old table from quarantine and re-syncs it.
    pub async fn rollback(&self, name: &str) -> Result<RollbackReport, EngineError> {
        let started = Instant::now();
        let super::Loaded { db, record, spec } = self.load(name).await?;
        let lock = self.locked(name).await?;
        let report = |to: Phase, lock_ms: Option<f64>| RollbackReport {
            from: record.phase.to_string(),
            to: to.to_string(),
            seconds: started.elapsed().as_secs_f64(),
            lock_ms,
        };
        match record.phase {
            Phase::Planned | Phase::Expanded | Phase::Syncing | Phase::Verified => {
                self.adapter.drop_capture(&spec.forward_slot()).await?;
                self.adapter.drop_capture(&spec.reverse_slot()).await?;
                self.adapter.drop_shadow(&db, &spec).await?;
                self.adapter.forget_appliers(&db, &spec).await?;
                self.adapter.reset_backfill(&lock).await?;
                self.adapter
                    .transition(&lock, Some(record.phase), Phase::RolledBack, json!({}))
                    .await?;
                Ok(report(Phase::RolledBack, None))
            }
            Phase::CutOver => {
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
                let mut capture = self.reverse_applier(&spec, reverse).await?;
                capture.drain().await?;
                let swap = Swap {
                    live: spec.table.clone(),
                    incoming: spec.retired_table(),
                    outgoing_as: spec.shadow_table(),
                };
                // After cutover the plan's source is the old table, its target the live one.
                let result = swap_under_lock(
                    &spec,
                    &swap,
                    &mut capture,
                    &plan.dependents,
                    &column_names(&plan.source),
                )
                .await;
                capture.close().await?;
                let swapped = result?;
                // Reverse sync is over; a later cutover starts it afresh.
                self.adapter.drop_capture(&spec.reverse_slot()).await?;
                self.adapter
                    .transition(
                        &lock,
                        Some(Phase::CutOver),
                        Phase::Syncing,
                        json!({ "rolled_back_cutover": true, "lock_ms": swapped.lock_ms }),
                    )
                    .await?;
                Ok(report(Phase::Syncing, Some(swapped.lock_ms)))
            }
            Phase::Contracted => {
                self.adapter.restore_from_quarantine(&db, &spec).await?;
                self.adapter.set_quarantine(&lock, None).await?;
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
                let mut capture = self.reverse_applier(&spec, reverse).await?;
                self.adapter.reset_backfill(&lock).await?;
                backfill::backfill(
                    &db,
                    &lock,
                    &mut capture,
                    &spec,
                    BackfillCopy {
                        source: &plan.target,
                        // The restored table holds the rows of the day it was quarantined.
                        fill: Fill::Overwrite,
                    },
                    &Control::new(RateLimit::Unlimited),
                    &mut NoProgress,
                )
                .await?;
                capture.drain().await?;
                capture.close().await?;
                self.adapter
                    .transition(
                        &lock,
                        Some(Phase::Contracted),
                        Phase::CutOver,
                        json!({ "restored_from_quarantine": true }),
                    )
                    .await?;
                Ok(report(Phase::CutOver, None))
            }
            Phase::Dropped | Phase::RolledBack => Err(EngineError::WrongPhase {
                name: name.into(),
                phase: record.phase,
                expected: "there is nothing to roll back".into(),
            }),
        }
    }
}
