//! `splice status`: phase, progress, capture lag, last verify, lock time, quarantine and
//! history of one migration or all of them.

use super::{spec_of, Engine};
use crate::adapter::Adapter;
use crate::state::{self, Phase};
use crate::EngineError;
use serde_json::json;

/// `splice status` for one migration.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    pub name: String,
    pub table: String,
    pub phase: String,
    pub rows_copied: i64,
    pub rows_total: i64,
    pub backfill_done: bool,
    pub backfill_rows_per_second: Option<f64>,
    pub capture_lag_bytes: Option<i64>,
    pub last_verify: Option<serde_json::Value>,
    pub cutover_lock_ms: Option<f64>,
    pub quarantined_as: Option<String>,
    pub quarantine_until: Option<String>,
    /// The override `splice throttle` set, rows per second (0: unlimited).
    pub rate_override: Option<u32>,
    /// The command that comes next.
    pub next: String,
    /// The WAL each of the migration's slots keeps on the server.
    pub slots: Vec<crate::seam::SlotRetention>,
    pub history: Vec<state::Transition>,
}

impl<A: Adapter> Engine<A> {
    /// The migration whose change stream `slot` is (forward or reverse), if any is
    /// registered: nobody else may consume it.
    pub async fn migration_of_slot(&self, slot: &str) -> Result<Option<String>, EngineError> {
        let db = self.db().await?;
        for r in self.adapter.load_records(&db).await? {
            let spec = spec_of(&r)?;
            if spec.forward_slot() == slot || spec.reverse_slot() == slot {
                return Ok(Some(r.name));
            }
        }
        Ok(None)
    }

    /// `splice status`: one migration, or every one (oldest first).
    pub async fn status(&self, name: Option<&str>) -> Result<Vec<Status>, EngineError> {
        let db = self.db().await?;
        let records = match name {
            Some(n) => vec![self.record(&db, n).await?],
            None => self.adapter.load_records(&db).await?,
        };
        let mut out = Vec::new();
        for r in records {
            let spec = spec_of(&r)?;
            let slot = if r.phase == Phase::CutOver {
                spec.reverse_slot()
            } else {
                spec.forward_slot()
            };
            let lag = self.adapter.capture_lag_bytes(&db, &slot).await?;
            let last = self.adapter.last_verify(&db, &r.name).await?.map(
                |v| json!({ "passed": v.passed, "diverged_keys": v.diverged_keys, "at": v.at }),
            );
            out.push(Status {
                name: r.name.clone(),
                table: spec.table.to_string(),
                phase: r.phase.to_string(),
                rows_copied: r.rows_copied,
                rows_total: r.rows_total,
                backfill_done: r.backfill_done,
                backfill_rows_per_second: r.backfill_rate,
                capture_lag_bytes: lag,
                last_verify: last,
                cutover_lock_ms: r.lock_ms,
                quarantined_as: r.quarantined_as.clone(),
                quarantine_until: r.quarantine_until.clone(),
                rate_override: r.rate_limit.map(|l| l.rows_per_second()),
                next: r.next_step(),
                slots: {
                    let mut slots = Vec::new();
                    for s in [spec.forward_slot(), spec.reverse_slot()] {
                        if let Some(kept) = self.adapter.slot_retention(&db, &s).await? {
                            slots.push(kept);
                        }
                    }
                    slots
                },
                history: self.adapter.history(&db, &r.name).await?,
            });
        }
        Ok(out)
    }
}
