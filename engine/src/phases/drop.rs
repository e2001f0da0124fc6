//! `splice drop`: the one-way door. Drops the quarantined table once its quarantine expired.

use super::Engine;
use crate::adapter::Adapter;
use crate::error::Refusal;
use crate::state::Phase;
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

impl<A: Adapter> Engine<A> {
    /// `splice drop`: drops the quarantined table once its quarantine expired (or now, when
    /// told to override it); returns the table dropped.
    pub async fn drop_quarantined(
        &self,
        name: &str,
        quarantine: Quarantine,
    ) -> Result<String, EngineError> {
        let super::Loaded { db, record, spec } = self.load(name).await?;
        if record.phase == Phase::Dropped {
            return Ok(record.quarantined_as.unwrap_or_default());
        }
        if record.phase != Phase::Contracted {
            return Err(Refusal::WrongPhase {
                name: name.into(),
                phase: record.phase,
                expected: "drop comes after contract".into(),
            }
            .into());
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
        self.adapter.drop_quarantined(&db, &spec).await?;
        self.adapter.forget_appliers(&db, &spec).await?;
        self.adapter
            .transition(
                &lock,
                Some(Phase::Contracted),
                Phase::Dropped,
                json!({ "forced": forced }),
            )
            .await?;
        Ok(quarantined.to_string())
    }
}
