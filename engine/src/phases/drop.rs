//! `splice drop`: the one-way door. Drops the quarantined table once its quarantine expired.

use super::Engine;
use crate::adapter::Adapter;
use crate::error::Refusal;
use crate::state::{Phase, PhaseChange};
use crate::EngineError;
use serde_json::json;

/// Whether drop waits for the quarantine to expire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quarantine {
    /// Refuse before the quarantine expired. The default.
    Respect,
    /// Drop now (`--force`).
    Override,
}

/// What `splice drop` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DropReport {
    /// The quarantined table dropped.
    pub table: String,
    /// True when an earlier run had dropped it: nothing more was done than finishing.
    pub already: bool,
}

impl<A: Adapter> Engine<A> {
    /// `splice drop`: drops the quarantined table once its quarantine expired (or now, when
    /// told to override it); returns the table dropped.
    pub async fn drop_quarantined(
        &self,
        name: &str,
        quarantine: Quarantine,
    ) -> Result<DropReport, EngineError> {
        let super::Loaded { db, record, spec } = self.load(name).await?;
        if record.phase == Phase::Dropped {
            // A crash after the drop committed: finish the job.
            let _lock = self.locked(name).await?;
            self.adapter.forget_appliers(&db, &spec).await?;
            return Ok(DropReport {
                table: spec.quarantined_table().to_string(),
                already: true,
            });
        }
        if record.phase != Phase::Contracted {
            return Err(super::wrong_phase(&record, "drop comes after contract"));
        }
        let forced = quarantine == Quarantine::Override && !record.quarantine_expired;
        if !record.quarantine_expired && quarantine == Quarantine::Respect {
            return Err(Refusal::QuarantineNotExpired {
                name: name.into(),
                table: record.quarantined_as.clone().unwrap_or_default(),
                until: record.quarantine_until.clone().unwrap_or_default(),
            }
            .into());
        }
        let lock = self.locked(name).await?;
        let quarantined = spec.quarantined_table();
        if record.quarantined_as.is_none() {
            // A rollback from contract moved the table out of quarantine, then stopped.
            return Err(Refusal::WrongPhase {
                name: name.into(),
                phase: record.phase,
                expected: format!(
                    "the old table was restored from quarantine by a rollback that did not \
                     finish; run `splice rollback {name}` again to finish it"
                ),
            }
            .into());
        }
        let change = PhaseChange::new(
            Phase::Contracted,
            Phase::Dropped,
            json!({ "forced": forced }),
        );
        self.adapter
            .drop_quarantined(&db, &spec, &lock, &change)
            .await?;
        crate::fault::point("drop.dropped");
        self.adapter.forget_appliers(&db, &spec).await?;
        Ok(DropReport {
            table: quarantined.to_string(),
            already: false,
        })
    }
}
