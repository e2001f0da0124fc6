//! `splice sync`: capture first, then the throttled backfill, then keep applying changes.
//! After cutover it runs reverse sync (new → old) instead.

use super::Engine;
use crate::adapter::Adapter;
use crate::applier::Applier;
use crate::backfill::{
    self, BackfillCopy, Control, ImpactReport, ProgressSink, RateSource, SyncProgress, SyncState,
};
use crate::impact::ImpactBudget;
use crate::plan;
use crate::seam::{Continuity, Fill, RateLimit};
use crate::state::{Phase, PhaseChange};
use crate::EngineError;
use serde_json::json;
use std::time::Duration;
use tracing::{info_span, Instrument};

/// Options of `splice sync`.
#[derive(Debug, Clone, Default)]
pub struct SyncOptions {
    /// Return once backfill is done and capture has caught up.
    pub until_caught_up: bool,
    /// The rate limit asked for on the command line; `None`: the file's.
    pub rate_limit: Option<RateLimit>,
    pub chunk_target: Option<Duration>,
    /// The impact budget asked for on the command line (`Some(None)`: off); `None`: the
    /// file's.
    pub max_latency_increase: Option<Option<f64>>,
}

impl<A: Adapter> Engine<A> {
    /// `splice sync`: capture first, then the throttled backfill, then keep applying changes
    /// until `control` stops it (or, with `until_caught_up`, until caught up). After cutover it
    /// runs reverse sync (new → old) instead.
    pub async fn sync(
        &self,
        name: &str,
        opts: &SyncOptions,
        control: &Control,
        progress: &mut dyn ProgressSink,
    ) -> Result<SyncProgress, EngineError> {
        let super::Loaded {
            db,
            record,
            mut spec,
        } = self.load(name).await?;
        if let Some(t) = opts.chunk_target {
            spec.throttle.chunk_target = t;
        }
        if let Some(budget) = opts.max_latency_increase {
            spec.throttle.max_latency_increase = budget;
        }
        let lock = self.locked(name).await?;
        // The rate typed on the command line wins (else one the caller set on `control`, else
        // the file's). An override `splice throttle` set before this sync started applies
        // only when the sync named no rate; one named replaces it (and says so). An override
        // set while the sync runs wins until `splice throttle --clear`.
        let own = match opts.rate_limit {
            Some(limit) => Some(limit),
            None if control.rate() != RateLimit::Unlimited => Some(control.rate()),
            None => None,
        };
        match own {
            Some(limit) => control.set_own_rate(limit, RateSource::CommandLine),
            None => control.set_own_rate(spec.throttle.rate_limit, RateSource::File),
        }
        match (own, record.rate_limit) {
            (Some(_), Some(earlier)) => {
                self.adapter.set_rate_limit(&db, name, None).await?;
                control.replaced_override(earlier);
                tracing::warn!(
                    migration = name,
                    %earlier,
                    "the rate on the command line replaces the earlier `splice throttle` override"
                );
            }
            (None, overridden) => {
                control.apply_override(overridden);
            }
            (Some(_), None) => {}
        }
        let span = info_span!("sync", migration = name, phase = %record.phase);
        // The impact figures of an earlier sync (one that was killed) are stale now.
        self.adapter.save_impact(&lock, None).await?;
        let result = async {
            match record.phase {
                Phase::Expanded | Phase::Syncing | Phase::Verified => {
                    let plan = plan::build_directions(&self.adapter, &db, &spec).await?;
                    self.check_source_drift(&db, name, &plan.source).await?;
                    // Capture starts (slot created, position recorded) before the first chunk.
                    // The first sync starts capture; every later one must continue it.
                    let continuity = if record.phase == Phase::Expanded {
                        Continuity::Start
                    } else {
                        Continuity::Resume
                    };
                    let mut capture = self
                        .forward_applier(&spec, plan.forward.clone(), continuity)
                        .await?;
                    self.warn_about_retention(&db, &spec.forward_slot()).await;
                    if record.phase == Phase::Expanded {
                        self.adapter
                            .transition(
                                &lock,
                                &PhaseChange::new(Phase::Expanded, Phase::Syncing, json!({})),
                            )
                            .await?;
                    }
                    let impact = ImpactBudget::start(
                        &self.adapter,
                        name,
                        spec.throttle.max_latency_increase,
                    )
                    .await;
                    let mut p = backfill::backfill(
                        &db,
                        &lock,
                        &mut capture,
                        &spec,
                        BackfillCopy {
                            source: &plan.source,
                            fill: Fill::Missing,
                            impact: &impact,
                        },
                        control,
                        progress,
                    )
                    .await?;
                    if p.backfill_done {
                        p.state = SyncState::BuildingIndexes;
                        progress.update(&p);
                        // Indexes in bulk now the copy is done; capture keeps the slot's
                        // place meanwhile and the applier catches up right after.
                        let (built, seconds) = self.build_deferred_indexes(&db, &spec).await?;
                        p.indexes_built = built;
                        p.index_build_s = seconds;
                    }
                    let result = follow(
                        &mut capture,
                        &lock,
                        &impact,
                        opts,
                        control,
                        progress,
                        &mut p,
                    )
                    .await;
                    capture.close().await?;
                    result.map(|_| p)
                }
                Phase::CutOver => {
                    let plan = plan::build_after_cutover(&self.adapter, &db, &spec).await?;
                    let Some(reverse) = plan.reverse.clone() else {
                        return Err(super::wrong_phase(
                            &record,
                            "it was cut over without reverse sync; there is nothing to sync",
                        ));
                    };
                    let mut capture = self
                        .reverse_applier(&spec, reverse, Continuity::Resume)
                        .await?;
                    self.warn_about_retention(&db, &spec.reverse_slot()).await;
                    // Forward capture is not read while cut over: its slot keeps WAL too.
                    self.warn_about_retention(&db, &spec.forward_slot()).await;
                    let mut p = SyncProgress {
                        backfill_done: true,
                        state: SyncState::Following,
                        ..Default::default()
                    };
                    let impact = ImpactBudget::start(
                        &self.adapter,
                        name,
                        spec.throttle.max_latency_increase,
                    )
                    .await;
                    let result = follow(
                        &mut capture,
                        &lock,
                        &impact,
                        opts,
                        control,
                        progress,
                        &mut p,
                    )
                    .await;
                    capture.close().await?;
                    result.map(|_| p)
                }
                _ => Err(super::wrong_phase(
                    &record,
                    "sync runs between expand and contract",
                )),
            }
        }
        .instrument(span)
        .await;
        // Best effort: status shows the figures only while a runner holds the migration.
        if let Err(e) = self.adapter.save_impact(&lock, None).await {
            tracing::debug!(error = %e, "clearing the impact figures");
        }
        result
    }
}

impl<A: Adapter> Engine<A> {
    /// Warns when `slot` keeps more WAL than its threshold (half of max_slot_wal_keep_size, or
    /// 10 GiB): the disk fills, or the server invalidates the slot.
    async fn warn_about_retention(&self, db: &A::Conn, slot: &str) {
        if let Ok(Some(kept)) = self.adapter.slot_retention(db, slot).await {
            if kept.retained_wal_bytes > kept.warn_above_bytes {
                tracing::warn!(
                    slot,
                    retained_bytes = kept.retained_wal_bytes,
                    wal_status = %kept.wal_status,
                    "the slot keeps more WAL than the warning threshold ({} bytes): keep sync \
                     running so it is read, or contract (after cutover) / abort to release it",
                    kept.warn_above_bytes
                );
            }
        }
    }
}

/// Applies changes until stopped, or until caught up when asked; paced by the impact budget
/// (a slower pace: bigger, less frequent batches; a quiet window now and then for its baseline).
async fn follow<A: Adapter>(
    capture: &mut Applier<'_, A>,
    runner: &A::Lock,
    impact: &ImpactBudget,
    opts: &SyncOptions,
    control: &Control,
    progress: &mut dyn ProgressSink,
    p: &mut SyncProgress,
) -> Result<(), EngineError> {
    if opts.until_caught_up {
        if p.backfill_done {
            p.state = SyncState::CatchingUp;
            progress.update(p);
            capture.drain_for_reopen().await?;
            p.state = SyncState::CaughtUp;
        }
    } else {
        if p.backfill_done {
            p.state = SyncState::Following;
        }
        let mut report = ImpactReport::new();
        while !control.stopping() {
            impact.quiet_window_if_due().await;
            impact.application_writes(capture.keys_written());
            capture.set_pace(impact.pace());
            capture.apply_for(Duration::from_millis(250)).await?;
            report.update(capture.adapter(), runner, impact, p).await?;
            report_lag(capture, progress, p).await?;
        }
    }
    report_lag(capture, progress, p).await
}

async fn report_lag<A: Adapter>(
    capture: &mut Applier<'_, A>,
    progress: &mut dyn ProgressSink,
    p: &mut SyncProgress,
) -> Result<(), EngineError> {
    let lag = capture.lag().await?;
    p.capture_lag_bytes = lag.bytes;
    p.capture_lag_ms = lag.behind.as_millis() as u64;
    p.txns_applied = capture.txns_applied;
    progress.update(p);
    Ok(())
}
