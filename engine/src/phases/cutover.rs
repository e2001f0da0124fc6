//! `splice cutover`: the new table takes the live name under a short lock once capture has
//! drained, and reverse sync (new → old) starts so rollback stays open.

use super::swap::swap_under_lock;
use super::{column_names, Engine};
use crate::adapter::Adapter;
use crate::backfill::{NoProgress, ProgressSink};
use crate::error::Refusal;
use crate::plan;
use crate::seam::{Continuity, Swap};
use crate::state::{self, Phase, PhaseChange};
use crate::EngineError;
use serde_json::json;

/// What cutover measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CutoverReport {
    pub lock_ms: f64,
    pub attempts: u32,
    pub carried_over: Vec<String>,
    pub reverse_sync: bool,
    /// True when an earlier run had cut it over: nothing was done this time.
    pub already: bool,
    /// When it was cut over (RFC 3339, UTC), for a re-run that found it done.
    pub cut_over_at: Option<String>,
}

/// Whether cutover keeps the old shape current afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReverseSync {
    /// Start reverse sync (new → old): rollback after cutover stays open. The default.
    Start,
    /// Accept a one-way cutover: the old table goes stale.
    Skip,
}

impl<A: Adapter> Engine<A> {
    /// `splice cutover`: swaps the tables under a short lock once capture has drained; refuses
    /// unless the last verify passed and capture lag is under `max_lag_bytes`.
    pub async fn cutover(
        &self,
        name: &str,
        max_lag_bytes: u64,
        reverse_sync: ReverseSync,
    ) -> Result<CutoverReport, EngineError> {
        self.cutover_watched(name, max_lag_bytes, reverse_sync, &mut NoProgress)
            .await
    }

    /// [`cutover`](Engine::cutover), reporting the catch-up before each lock attempt to
    /// `progress` (capture lag, transactions applied).
    pub async fn cutover_watched(
        &self,
        name: &str,
        max_lag_bytes: u64,
        reverse_sync: ReverseSync,
        progress: &mut dyn ProgressSink,
    ) -> Result<CutoverReport, EngineError> {
        let super::Loaded { db, record, spec } = self.load(name).await?;
        if matches!(
            record.phase,
            Phase::CutOver | Phase::Contracted | Phase::Dropped
        ) {
            // The swap and the phase change committed together: a re-run after a crash has
            // only the settling left.
            if record.phase == Phase::CutOver {
                if let Ok(plan) = plan::build_after_cutover(&self.adapter, &db, &spec).await {
                    self.adapter
                        .settle_carried_over(&db, &plan.dependents)
                        .await;
                }
            }
            let swapped = self
                .adapter
                .history(&db, name)
                .await?
                .into_iter()
                .rev()
                .find(|t| {
                    t.to == Phase::CutOver.as_str() && !state::PhaseChange::is_rollback(&t.figures)
                });
            return Ok(CutoverReport {
                lock_ms: record.lock_ms.unwrap_or(0.0),
                attempts: 0,
                carried_over: vec![],
                reverse_sync: swapped
                    .as_ref()
                    .and_then(|t| t.figures.get("reverse_sync"))
                    .and_then(|r| r.as_bool())
                    .unwrap_or(true)
                    && record.phase == Phase::CutOver,
                already: true,
                cut_over_at: swapped.map(|t| t.at),
            });
        }
        if record.phase != Phase::Verified {
            return Err(super::wrong_phase(
                &record,
                "cutover comes after a passing verify",
            ));
        }
        if !self
            .adapter
            .last_verify(&db, name)
            .await?
            .is_some_and(|v| v.passed)
        {
            return Err(Refusal::NotVerified { name: name.into() }.into());
        }
        let lock = self.locked(name).await?;
        let swap = Swap {
            live: spec.table.clone(),
            incoming: spec.shadow_table(),
            outgoing_as: spec.retired_table(),
        };
        if self.adapter.swapped_unrecorded(&db, &swap).await? {
            // A crash between the rename and its record (MySQL): the reverse slot was created
            // before the rename, so only the record is left.
            let reverse_sync = reverse_sync == ReverseSync::Start;
            self.adapter
                .transition(
                    &lock,
                    &PhaseChange::new(
                        Phase::Verified,
                        Phase::CutOver,
                        json!({ "reverse_sync": reverse_sync, "recorded_after_a_crash": true }),
                    ),
                )
                .await?;
            return Ok(CutoverReport {
                lock_ms: 0.0,
                attempts: 0,
                carried_over: vec![],
                reverse_sync,
                already: true,
                cut_over_at: None,
            });
        }
        let plan = plan::build(&self.adapter, &db, &spec).await?;
        self.check_source_drift(&db, name, &plan.source).await?;
        super::expand::refuse_not_carried(&plan)?;
        // A sync stopped between the backfill and the index builds left them to do.
        self.build_deferred_indexes(&db, &spec).await?;
        if plan.reverse.is_none() && reverse_sync == ReverseSync::Start {
            return Err(Refusal::NoReverseSync {
                name: name.into(),
                why: format!(
                    "reverse sync is impossible ({}), so rollback after cutover would lose \
                     writes; add the missing [down] entries, or pass --without-reverse-sync to \
                     accept a one-way cutover",
                    plan.reverse_notes.join("; ")
                ),
            }
            .into());
        }
        let mut capture = self
            .forward_applier(&spec, plan.forward.clone(), Continuity::Resume)
            .await?;
        capture.drain().await?;
        let lag = capture.lag().await?;
        if lag.bytes > max_lag_bytes {
            capture.close().await?;
            return Err(Refusal::CaptureLag {
                name: name.into(),
                bytes: lag.bytes,
                bound: max_lag_bytes,
            }
            .into());
        }
        // From the swap on, the application writes the new table directly, not through
        // capture: stored verify ranges would vouch for what they cannot see. They go before
        // the swap (a crash after it cannot leave them behind); a cutover that then fails to
        // lock costs the next verify a full pass.
        self.adapter.forget_verify_ranges(&lock).await?;
        // Reverse sync's slot exists before the swap, so no write to the new table is missed.
        let reverse = plan
            .reverse
            .clone()
            .filter(|_| reverse_sync == ReverseSync::Start);
        if let Some(rev) = &reverse {
            let mut pre = rev.clone();
            pre.from = spec.shadow_table();
            let c = self.reverse_applier(&spec, pre, Continuity::Start).await?;
            c.close().await?;
            crate::fault::point("cutover.reverse_created");
        }
        let change = PhaseChange::new(
            Phase::Verified,
            Phase::CutOver,
            json!({ "reverse_sync": reverse.is_some() }),
        );
        let result = swap_under_lock(
            &spec,
            &swap,
            &mut capture,
            &plan.dependents,
            &column_names(&plan.target),
            (&lock, &change),
            progress,
        )
        .await;
        capture.close().await?;
        let swapped = result?;
        crate::fault::point("cutover.swapped");
        self.adapter
            .set_figure(&lock, state::Figure::LockMs, swapped.lock_ms)
            .await?;
        self.adapter
            .settle_carried_over(&db, &plan.dependents)
            .await;
        Ok(CutoverReport {
            lock_ms: swapped.lock_ms,
            attempts: swapped.attempts,
            carried_over: swapped.carried_over,
            reverse_sync: reverse.is_some(),
            already: false,
            cut_over_at: None,
        })
    }
}
