//! `splice sync`: capture first, then the throttled backfill, then keep applying changes.
//! After cutover it runs reverse sync (new → old) instead.

use super::Engine;
use crate::adapter::Adapter;
use crate::applier::Applier;
use crate::backfill::{self, BackfillCopy, Control, ProgressSink, SyncProgress};
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
        // The command line's rate wins; else a rate the caller already set on `control`; else
        // the file's.
        match opts.rate_limit {
            Some(limit) => control.set_rate(limit),
            None if control.rate() == RateLimit::Unlimited => {
                control.set_rate(spec.throttle.rate_limit)
            }
            None => {}
        }
        let lock = self.locked(name).await?;
        let span = info_span!("sync", migration = name, phase = %record.phase);
        async move {
            match record.phase {
                Phase::Expanded | Phase::Syncing | Phase::Verified => {
                    let plan = plan::build(&self.adapter, &db, &spec).await?;
                    self.check_source_drift(&db, name, &plan).await?;
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
                    if record.phase == Phase::Expanded {
                        self.adapter
                            .transition(
                                &lock,
                                &PhaseChange::new(Phase::Expanded, Phase::Syncing, json!({})),
                            )
                            .await?;
                    }
                    let mut p = backfill::backfill(
                        &db,
                        &lock,
                        &mut capture,
                        &spec,
                        BackfillCopy {
                            source: &plan.source,
                            fill: Fill::Missing,
                        },
                        control,
                        progress,
                    )
                    .await?;
                    if p.backfill_done {
                        // Indexes in bulk now the copy is done; capture keeps the slot's
                        // place meanwhile and the applier catches up right after.
                        let (built, seconds) = self.build_deferred_indexes(&db, &spec).await?;
                        p.indexes_built = built;
                        p.index_build_s = seconds;
                    }
                    let result = follow(&mut capture, opts, control, progress, &mut p).await;
                    capture.close().await?;
                    result.map(|_| p)
                }
                Phase::CutOver => {
                    let plan = plan::build_after_cutover(&self.adapter, &db, &spec).await?;
                    let Some(reverse) = plan.reverse.clone() else {
                        return Err(EngineError::WrongPhase {
                            name: name.into(),
                            phase: record.phase,
                            expected: "it was cut over without reverse sync; there is nothing \
                                       to sync"
                                .into(),
                        });
                    };
                    let mut capture = self
                        .reverse_applier(&spec, reverse, Continuity::Resume)
                        .await?;
                    let mut p = SyncProgress {
                        backfill_done: true,
                        ..Default::default()
                    };
                    let result = follow(&mut capture, opts, control, progress, &mut p).await;
                    capture.close().await?;
                    result.map(|_| p)
                }
                other => Err(EngineError::WrongPhase {
                    name: name.into(),
                    phase: other,
                    expected: "sync runs between expand and contract".into(),
                }),
            }
        }
        .instrument(span)
        .await
    }
}

/// Applies changes until stopped, or until caught up when asked.
async fn follow<A: Adapter>(
    capture: &mut Applier<'_, A>,
    opts: &SyncOptions,
    control: &Control,
    progress: &mut dyn ProgressSink,
    p: &mut SyncProgress,
) -> Result<(), EngineError> {
    if opts.until_caught_up {
        if p.backfill_done {
            capture.drain_for_reopen().await?;
        }
    } else {
        while !control.stopping() {
            capture.apply_for(Duration::from_millis(250)).await?;
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
