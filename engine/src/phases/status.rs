//! `splice status`: phase, progress, capture lag, last verify, lock time, quarantine and
//! history of one migration or all of them. Figures the phase made stale (a verify from
//! before a rollback, the rate of a sync no longer running) are left out here, so no renderer
//! shows them.

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
    /// Where the backfill stands, for this phase.
    pub backfill: Backfill,
    /// The backfill rate of the sync running now (`None` when none runs or it is done).
    pub backfill_rows_per_second: Option<f64>,
    /// Seconds left at that rate.
    pub eta_seconds: Option<f64>,
    pub capture_lag_bytes: Option<i64>,
    /// The last verify, unless a rollback came after it (`{"passed", "diverged_keys", "at",
    /// "rows_checked"}`).
    pub last_verify: Option<serde_json::Value>,
    /// The process running the migration now.
    pub runner: Option<state::Runner>,
    /// The rate a running sync copies at, its source and its pause; with no sync running, an
    /// override `splice throttle` set for the next one.
    pub throttle: Option<state::SyncThrottle>,
    /// The running sync's impact budget: the application's commit latency (baseline, now,
    /// budget), the pace, and why it holds back while it does. `None` when no sync runs or its
    /// budget is off.
    pub impact: Option<state::Impact>,
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
    /// The last requests made of it (pause, resume, throttle, cutover and rollback asked of
    /// the daemon or by `splice throttle`), oldest first.
    pub events: Vec<state::Event>,
}

/// How many of a migration's last requests `status` lists.
pub const STATUS_EVENTS: usize = 50;

/// Where a migration's backfill stands, as far as its phase makes it meaningful.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Backfill {
    /// Before the first sync (planned, expanded): nothing copied, nothing estimated.
    NotStarted,
    /// Copying: rows copied so far of the estimate taken when this backfill started.
    Copying { copied: i64, estimated: i64 },
    /// Complete: every source row was copied (and capture keeps the copy current).
    Complete { copied: i64 },
    /// The migration was abandoned or its old table dropped: no backfill figures apply.
    None,
}

/// A transition that steps back (a rollback), after which earlier checks no longer hold.
/// `verified → syncing` is verify's own failure, recorded with the result it follows.
fn steps_back(t: &state::Transition) -> bool {
    let rank = |p: &str| Phase::parse(p).map(phase_rank);
    match (t.from.as_deref(), t.to.as_str()) {
        (Some("verified"), "syncing") => false,
        (_, "rolled_back") => true,
        (Some(from), to) => matches!((rank(from), rank(to)), (Some(f), Some(t)) if t < f),
        _ => false,
    }
}

fn phase_rank(p: Phase) -> u8 {
    match p {
        Phase::Planned => 0,
        Phase::Expanded => 1,
        Phase::Syncing => 2,
        Phase::Verified => 3,
        Phase::CutOver => 4,
        Phase::Contracted => 5,
        Phase::Dropped => 6,
        Phase::RolledBack => 7,
    }
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
            let history = self.adapter.history(&db, &r.name).await?;
            let events = self.adapter.events(&db, &r.name, STATUS_EVENTS).await?;
            let last = self
                .adapter
                .last_verify(&db, &r.name)
                .await?
                .filter(|v| {
                    !matches!(r.phase, Phase::RolledBack | Phase::Dropped)
                        && !history.iter().any(|t| t.at > v.at && steps_back(t))
                })
                .map(|v| {
                    json!({
                        "passed": v.passed,
                        "diverged_keys": v.diverged_keys,
                        "at": v.at,
                        "rows_checked": v.rows_checked,
                    })
                });
            let runner = self.adapter.runner(&db, &r.name).await?;
            let syncing = runner
                .as_ref()
                .is_some_and(|x| x.command.starts_with("splice sync"));
            let backfill = match r.phase {
                Phase::Planned | Phase::Expanded => Backfill::NotStarted,
                Phase::RolledBack | Phase::Dropped => Backfill::None,
                _ if r.backfill_done => Backfill::Complete {
                    copied: r.rows_copied,
                },
                _ => Backfill::Copying {
                    copied: r.rows_copied,
                    estimated: r.rows_total,
                },
            };
            // A rate is news only while the sync that measured it is still copying.
            let rate = match backfill {
                Backfill::Copying { .. } if syncing => r.backfill_rate,
                _ => None,
            };
            let eta = match (rate, &backfill) {
                (Some(rate), Backfill::Copying { copied, estimated }) if rate > 0.0 => {
                    Some((estimated - copied).max(0) as f64 / rate)
                }
                _ => None,
            };
            let throttle = if syncing {
                r.sync_throttle.clone().map(|mut t| {
                    if let Some(o) = r.rate_limit {
                        t.rows_per_second = o.rows_per_second();
                        t.source = "override".into();
                    }
                    t
                })
            } else {
                r.rate_limit.map(|o| state::SyncThrottle {
                    rows_per_second: o.rows_per_second(),
                    source: "override".into(),
                    paused: None,
                })
            };
            // Saved by a running sync and cleared when it ends: shown while a runner holds the
            // migration (the CLI's sync or the daemon's).
            let impact = if runner.is_some() {
                r.sync_impact.clone()
            } else {
                None
            };
            out.push(Status {
                impact,
                name: r.name.clone(),
                table: spec.table.to_string(),
                phase: r.phase.to_string(),
                rows_copied: r.rows_copied,
                rows_total: r.rows_total,
                backfill_done: r.backfill_done,
                backfill,
                backfill_rows_per_second: rate,
                eta_seconds: eta,
                capture_lag_bytes: lag,
                last_verify: last,
                runner,
                throttle,
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
                history,
                events,
            });
        }
        Ok(out)
    }
}
