//! `splice verify`: drain capture, hash both sides through the mapping, record the result.

use super::Engine;
use crate::adapter::Adapter;
use crate::applier::Applier;
use crate::error::Refusal;
use crate::plan;
use crate::seam::{Continuity, Direction, VerifyKind, VerifyReport};
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
        self.verify_kind(name, VerifyKind::Full, counters).await
    }

    /// `splice verify [--incremental]`: a pass of the kind asked for.
    ///
    /// A full pass samples new bounds, stores them before it reads a row, checks every range
    /// and stores what each one found. An incremental pass re-reads only the stored ranges it
    /// cannot vouch for (marked by capture since their last check, or whose last check did not
    /// match), each under short snapshots of its own; with no stored pass, or one made for
    /// another mapping, it runs full and says why ([`VerifyReport::full_because`]).
    ///
    /// The gate: a passing incremental pass opens cutover like a full one. After it, every
    /// range either was re-read now and matched, or matched at its last check with no change
    /// applied to it since; that is what a full pass run now would vouch for, as far as
    /// capture can see. What it cannot see: writes to the new table that do not go through
    /// splice (by hand, another program): they mark nothing, and only a full pass finds them.
    pub async fn verify_kind(
        &self,
        name: &str,
        kind: VerifyKind,
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
        // A state store made by an older splice gains the table of stored ranges (additive;
        // skipped while ranges are stored, which the statements creating it come before).
        if self.adapter.verify_ranges(&db, name).await?.is_none() {
            self.adapter.ensure_state(&db).await?;
        }
        // The plan only reads: it is read while the runner lock is taken (a lock held by
        // another runner is still the error reported first).
        let planned = async {
            let plan = plan::build_directions(&self.adapter, &db, &spec).await?;
            self.check_source_drift(&db, name, &plan.source).await?;
            Ok::<_, EngineError>(plan)
        };
        let (lock, plan) = tokio::join!(self.locked(name), planned);
        let lock = lock?;
        let plan = plan?;
        let mut capture = self
            .forward_applier(&spec, plan.forward.clone(), Continuity::Resume)
            .await?;
        let report = self
            .verify_pass(&lock, name, kind, db, &mut capture, &plan.forward, counters)
            .await;
        let mut report = match report {
            Ok(report) => report,
            Err(e) => {
                capture.close().await?;
                return Err(e);
            }
        };
        // Names for the fields of `expected` and `found`, so a report can say which differ.
        report.key_columns = plan.forward.key.iter().map(|k| k.name.clone()).collect();
        report.columns = plan
            .forward
            .columns
            .iter()
            .map(|(c, _)| c.clone())
            .collect();
        // The stream closes (waiting for the slot to confirm what was applied) while the
        // result is recorded: neither needs the other. The phase moves only once both did.
        let (closed, recorded) =
            tokio::join!(capture.close(), self.adapter.record_verify(&lock, &report));
        closed?;
        recorded?;
        let figures = json!({
            "kind": report.kind,
            "rows_checked": report.rows_checked,
            "ranges": report.ranges,
            "ranges_total": report.ranges_total,
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

    /// The sessions verify reads `ranges` ranges on: `db` and up to [`VERIFY_PAIRS`] - 1 more
    /// pairs (no more pairs than ranges), connected at the same time.
    async fn verify_pairs(
        &self,
        db: A::Conn,
        ranges: usize,
    ) -> Result<Vec<(A::Conn, A::Conn)>, EngineError> {
        let more = 2 * VERIFY_PAIRS.min(ranges).max(1) - 1;
        let sessions = futures_util::future::try_join_all((0..more).map(|_| self.db())).await?;
        let mut all = std::iter::once(db).chain(sessions);
        let mut pairs = Vec::with_capacity(VERIFY_PAIRS);
        while let (Some(source), Some(target)) = (all.next(), all.next()) {
            pairs.push((source, target));
        }
        Ok(pairs)
    }

    /// Drains capture (marking what changed), decides which ranges to read, reads them, and
    /// stores what each found.
    #[allow(clippy::too_many_arguments)]
    async fn verify_pass(
        &self,
        lock: &A::Lock,
        name: &str,
        kind: VerifyKind,
        db: A::Conn,
        capture: &mut Applier<'_, A>,
        dir: &Direction,
        counters: &verify::VerifyCounters,
    ) -> Result<VerifyReport, EngineError> {
        let started = std::time::Instant::now();
        let source_db = &db;
        // Everything committed before now is applied, and its ranges marked, before the
        // stored ranges are read.
        capture.drain().await?;
        let shape = verify::shape(dir);
        let (ran, full_because, to_check, total) = match kind {
            VerifyKind::Full => (VerifyKind::Full, None, None, 0),
            VerifyKind::Incremental => match self.adapter.verify_ranges(source_db, name).await? {
                None => (
                    VerifyKind::Full,
                    Some("no verify pass is stored yet (the first verify is always full)".into()),
                    None,
                    0,
                ),
                Some(stored) if stored.shape != shape || stored.ranges.is_empty() => (
                    VerifyKind::Full,
                    Some(
                        "the stored pass was made for another mapping or key; it vouches for nothing now"
                            .into(),
                    ),
                    None,
                    0,
                ),
                Some(stored) => {
                    let total = stored.ranges.len() as u64;
                    let dirty: Vec<verify::ToCheck> = stored
                        .ranges
                        .into_iter()
                        .filter(|r| !r.vouched())
                        .map(|r| verify::ToCheck {
                            idx: r.idx,
                            range: r.range,
                            marks: r.marks,
                        })
                        .collect();
                    (VerifyKind::Incremental, None, Some(dirty), total)
                }
            },
        };
        let (to_check, total) = match to_check {
            Some(dirty) => (dirty, total),
            None => {
                let ranges =
                    verify::full_ranges(&self.adapter, source_db, dir, self.verify_range_rows)
                        .await?;
                // Stored before a row is read: changes capture applies from here on mark them.
                self.adapter
                    .start_verify_pass(lock, &shape, &ranges)
                    .await?;
                let total = ranges.len() as u64;
                let all = ranges
                    .into_iter()
                    .enumerate()
                    .map(|(i, range)| verify::ToCheck {
                        idx: i as i32,
                        range,
                        marks: 0,
                    })
                    .collect();
                (all, total)
            }
        };
        let mut report = if to_check.is_empty() {
            // Every stored range is vouched for: no sessions to open, nothing to record.
            VerifyReport::default()
        } else {
            let pairs = self.verify_pairs(db, to_check.len()).await?;
            let (report, results) =
                verify::check(&self.adapter, &pairs, capture, dir, &to_check, counters).await?;
            self.adapter.record_verify_ranges(lock, &results).await?;
            report
        };
        report.kind = ran;
        report.full_because = full_because;
        report.ranges_total = total;
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }
}
