//! `splice verify`: drain capture, hash both sides through the mapping, record the result.

use super::Engine;
use crate::adapter::Adapter;
use crate::error::Refusal;
use crate::plan;
use crate::seam::{Continuity, VerifyReport};
use crate::state::{Phase, PhaseChange};
use crate::{verify, EngineError};
use serde_json::json;

/// Ranges verify reads at once, each on its own pair of sessions (source, target).
const VERIFY_PAIRS: usize = 2;

impl<A: Adapter> Engine<A> {
    /// `splice verify`: drains capture, hashes both sides, records the result; a pass moves
    /// `syncing` to `verified`, a failure moves `verified` back to `syncing`.
    pub async fn verify(&self, name: &str) -> Result<VerifyReport, EngineError> {
        self.verify_counted(name, &verify::VerifyCounters::default())
            .await
    }

    /// [`verify`](Engine::verify), counting the ranges and rows it has checked into
    /// `counters` as it goes (a progress line reads them).
    pub async fn verify_counted(
        &self,
        name: &str,
        counters: &verify::VerifyCounters,
    ) -> Result<VerifyReport, EngineError> {
        let super::Loaded { db, record, spec } = self.load(name).await?;
        if !matches!(record.phase, Phase::Syncing | Phase::Verified) {
            return Err(super::wrong_phase(
                &record,
                "verify runs after sync has started and before cutover",
            ));
        }
        if !record.backfill_done {
            return Err(Refusal::BackfillIncomplete {
                name: name.into(),
                copied: record.rows_copied,
                total: record.rows_total,
            }
            .into());
        }
        let lock = self.locked(name).await?;
        let plan = plan::build(&self.adapter, &db, &spec).await?;
        self.check_source_drift(&db, name, &plan).await?;
        let mut capture = self
            .forward_applier(&spec, plan.forward.clone(), Continuity::Resume)
            .await?;
        let mut pairs = vec![(db, self.db().await?)];
        for _ in 1..VERIFY_PAIRS {
            pairs.push((self.db().await?, self.db().await?));
        }
        let report = verify::verify(
            &self.adapter,
            &pairs,
            &mut capture,
            &plan.forward,
            self.verify_range_rows,
            counters,
        )
        .await;
        capture.close().await?;
        let mut report = report?;
        // Names for the fields of `expected` and `found`, so a report can say which differ.
        report.key_columns = plan.forward.key.iter().map(|k| k.name.clone()).collect();
        report.columns = plan
            .forward
            .columns
            .iter()
            .map(|(c, _)| c.clone())
            .collect();
        self.adapter.record_verify(&lock, &report).await?;
        let figures = json!({
            "rows_checked": report.rows_checked,
            "diverged": report.diverged.len(),
            "seconds": report.seconds,
        });
        match (report.passed(), record.phase) {
            (true, Phase::Syncing) => {
                self.adapter
                    .transition(
                        &lock,
                        &PhaseChange::new(Phase::Syncing, Phase::Verified, figures),
                    )
                    .await?
            }
            (false, Phase::Verified) => {
                self.adapter
                    .transition(
                        &lock,
                        &PhaseChange::new(Phase::Verified, Phase::Syncing, figures),
                    )
                    .await?
            }
            _ => {}
        }
        Ok(report)
    }
}
