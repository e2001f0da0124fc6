//! `splice contract`: reverse sync stops and the old table moves into quarantine. Nothing is
//! dropped here.

use super::Engine;
use crate::adapter::Adapter;
use crate::spec::MigrationSpec;
use crate::state::{Phase, PhaseChange, QuarantineEntry};
use crate::EngineError;
use serde_json::json;
use std::time::Duration;

/// Where contract put the old table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Contracted {
    pub quarantined_as: String,
    /// RFC 3339, UTC: when `splice drop` may drop it.
    pub quarantine_until: String,
    /// True when an earlier run had contracted it: nothing more was done than finishing.
    pub already: bool,
}

impl<A: Adapter> Engine<A> {
    /// `splice contract`: stops reverse sync and moves the old table into quarantine for
    /// `quarantine` (default: the file's).
    pub async fn contract(
        &self,
        name: &str,
        quarantine: Option<Duration>,
    ) -> Result<Contracted, EngineError> {
        let super::Loaded { db, record, spec } = self.load(name).await?;
        let quarantined = spec.quarantined_table().to_string();
        let contracted = |until: Option<String>, already: bool| Contracted {
            quarantined_as: quarantined.clone(),
            quarantine_until: until.unwrap_or_default(),
            already,
        };
        if record.phase == Phase::Contracted && record.quarantined_as.is_some() {
            // A crash after the move into quarantine: finish the job.
            let _lock = self.locked(name).await?;
            self.drop_captures(&spec).await?;
            return Ok(contracted(record.quarantine_until, true));
        }
        if record.phase == Phase::Dropped {
            return Ok(contracted(None, true));
        }
        if record.phase != Phase::CutOver {
            return Err(super::wrong_phase(&record, "contract comes after cutover"));
        }
        let lock = self.locked(name).await?;
        let period = quarantine.unwrap_or(spec.quarantine);
        // The move into quarantine and the phase change commit together; the captures go
        // after, so a crash in between leaves a contracted migration whose re-run (or
        // rollback) finds its way, never a cut-over one whose reverse capture is gone.
        self.adapter
            .quarantine(
                &db,
                &spec,
                &lock,
                &QuarantineEntry {
                    quarantined_as: quarantined.clone(),
                    seconds: period.as_secs_f64(),
                },
                &PhaseChange::new(
                    Phase::CutOver,
                    Phase::Contracted,
                    json!({ "quarantined_as": quarantined, "quarantine_seconds": period.as_secs() }),
                ),
            )
            .await?;
        crate::fault::point("contract.quarantined");
        self.drop_captures(&spec).await?;
        let record = self.record(&db, name).await?;
        Ok(contracted(record.quarantine_until, false))
    }

    /// Reverse sync is over once the old table is in quarantine; forward capture was over at
    /// cutover.
    async fn drop_captures(&self, spec: &MigrationSpec) -> Result<(), EngineError> {
        self.adapter.drop_capture(&spec.reverse_slot()).await?;
        self.adapter.drop_capture(&spec.forward_slot()).await
    }
}
