//! The state a migration keeps in its database (the adapter's state store, PostgreSQL: the
//! `splice` schema): its phase, backfill checkpoint, figures, verify results and an
//! append-only history of transitions; and, through the adapter's runner lock (advisory lock +
//! fencing token), one process at a time driving it.

use crate::seam::RateLimit;
use serde_json::Value as Json;

/// Where a migration is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Planned,
    Expanded,
    Syncing,
    Verified,
    CutOver,
    Contracted,
    Dropped,
    RolledBack,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Planned => "planned",
            Phase::Expanded => "expanded",
            Phase::Syncing => "syncing",
            Phase::Verified => "verified",
            Phase::CutOver => "cut_over",
            Phase::Contracted => "contracted",
            Phase::Dropped => "dropped",
            Phase::RolledBack => "rolled_back",
        }
    }

    pub fn parse(s: &str) -> Option<Phase> {
        Some(match s {
            "planned" => Phase::Planned,
            "expanded" => Phase::Expanded,
            "syncing" => Phase::Syncing,
            "verified" => Phase::Verified,
            "cut_over" => Phase::CutOver,
            "contracted" => Phase::Contracted,
            "dropped" => Phase::Dropped,
            "rolled_back" => Phase::RolledBack,
            _ => return None,
        })
    }

    /// Before cutover the old table is live and sync runs forward.
    pub fn before_cutover(self) -> bool {
        matches!(
            self,
            Phase::Planned | Phase::Expanded | Phase::Syncing | Phase::Verified
        )
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A phase change, recorded as a compare-and-set on `from` and, where it records a change to
/// the tables (the swap, the move to or from quarantine, the drop), in the same transaction as
/// that change: a crash leaves either both or neither.
#[derive(Debug, Clone)]
pub struct PhaseChange {
    pub from: Phase,
    pub to: Phase,
    /// What the step measured; `"rollback": true` marks the steps `splice rollback` took.
    pub figures: Json,
}

impl PhaseChange {
    pub fn new(from: Phase, to: Phase, figures: Json) -> PhaseChange {
        PhaseChange { from, to, figures }
    }

    /// True when this change was a step of `splice rollback`.
    pub fn is_rollback(figures: &Json) -> bool {
        figures.get("rollback").and_then(Json::as_bool) == Some(true)
    }
}

/// A secondary index of the shadow table that is built after the backfill.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeferredIndex {
    pub name: String,
    /// The adapter's statement that creates it (PostgreSQL: `pg_get_indexdef`).
    pub definition: String,
}

/// A migration's row in `splice.migrations`.
#[derive(Debug, Clone)]
pub struct MigrationRecord {
    pub name: String,
    pub spec: String,
    pub phase: Phase,
    pub fence: i64,
    pub backfill_last_key: Option<Vec<String>>,
    pub backfill_done: bool,
    pub rows_copied: i64,
    pub rows_total: i64,
    pub backfill_rate: Option<f64>,
    /// The rate and pause state the last sync saved (see [`SyncThrottle`]).
    pub sync_throttle: Option<SyncThrottle>,
    /// The override `splice throttle` set, if any.
    pub rate_limit: Option<RateLimit>,
    /// What the running sync's impact budget last measured and decided (see [`Impact`]).
    pub sync_impact: Option<Impact>,
    pub lock_ms: Option<f64>,
    pub quarantined_as: Option<String>,
    /// RFC 3339, UTC.
    pub quarantine_until: Option<String>,
    pub quarantine_expired: bool,
}

impl MigrationRecord {
    /// The command that comes next from this phase and backfill state. Refusals and reports
    /// suggest it, so none suggests a command that would itself refuse.
    pub fn next_step(&self) -> String {
        let n = &self.name;
        match self.phase {
            Phase::Planned => format!("`splice expand FILE` (or `splice abort {n}`)"),
            Phase::Expanded => format!("`splice sync {n} --until-caught-up`"),
            Phase::Syncing if !self.backfill_done => {
                format!("`splice sync {n} --until-caught-up`")
            }
            Phase::Syncing => format!("`splice verify {n}`"),
            Phase::Verified => format!("`splice cutover {n}`"),
            Phase::CutOver => format!("`splice contract {n}` (or `splice rollback {n}`)"),
            Phase::Contracted if self.quarantined_as.is_none() => {
                format!("`splice rollback {n}` (to finish the restore from quarantine)")
            }
            Phase::Contracted if !self.quarantine_expired => format!(
                "`splice drop {n}` once the quarantine ends ({})",
                self.quarantine_until.as_deref().unwrap_or("?")
            ),
            Phase::Contracted => format!("`splice drop {n}`"),
            Phase::Dropped => "nothing, the migration is finished".into(),
            Phase::RolledBack => "`splice expand FILE` to start again".into(),
        }
    }
}

/// One entry of a migration's history.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Transition {
    pub at: String,
    pub actor: String,
    pub from: Option<String>,
    pub to: String,
    pub figures: Json,
}

/// A request made of a migration that changes no phase by itself: a pause, a resume, a rate
/// set, or a cutover or rollback asked of the daemon (with what came of it). Kept beside the
/// history, never in it: the engine reads the history's transitions to decide what a rollback
/// or an automatic cutover may do, and a request is not a step.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Event {
    /// When it was recorded, UTC (`2026-12-02T06:07:31.120Z`); set by the state store.
    #[serde(default)]
    pub at: String,
    /// `pause`, `resume`, `throttle 5000 rows/s`, `cutover`, `rollback`, …
    pub action: String,
    /// Who asked: the HTTP caller's address, `automation`, or the CLI's `user@host pid N`.
    pub caller: String,
    /// The process that recorded it (`user@host pid N`).
    pub actor: String,
    /// Why it was asked (the automation's gate or failed watch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What came of it: `done`, `already done`, or the error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

/// The event a daemon records when it takes a migration; its `caller` is the daemon's API
/// address (`http://127.0.0.1:9187`), which a command refused by the daemon's runner lock names.
pub const DAEMON_STARTED: &str = "daemon started";

/// Who is running: `user@host pid N`.
pub fn actor() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{user}@{host} pid {}", std::process::id())
}

/// Figures kept on the migration row.
pub enum Figure {
    RowsTotal,
    LockMs,
}

/// The process running a migration now: its database session's pid, `application_name`
/// (`splice sync orders_v2`) and client host.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Runner {
    pub pid: i32,
    /// The command, as its `application_name`; empty when it set none.
    pub command: String,
    pub host: String,
}

/// The last recorded verify of a migration.
#[derive(Debug, Clone)]
pub struct LastVerify {
    pub passed: bool,
    /// The diverged keys as recorded (a JSON list of `DivergedKey`s).
    pub diverged_keys: Json,
    /// RFC 3339, UTC.
    pub at: String,
    pub rows_checked: i64,
}

/// Where a backfill stands, saved after every chunk.
#[derive(Debug, Clone, Default)]
pub struct Checkpoint {
    /// The last key copied; `None` keeps the saved one.
    pub last_key: Option<Vec<String>>,
    pub rows_copied: i64,
    pub done: bool,
    /// The backfill's rate so far, rows per second.
    pub rows_per_second: Option<f64>,
    /// The rate the sync runs at and whether it is paused (`None` keeps the saved one).
    pub throttle: Option<SyncThrottle>,
}

/// The rate a running sync copies at, where that rate comes from, and why it is paused:
/// saved with its checkpoints so `splice status` can show them from another process.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SyncThrottle {
    /// Rows per second; 0: unlimited.
    pub rows_per_second: u32,
    /// `flag` (the sync's `--rows-per-second`), `file` (the migration file's `[throttle]`)
    /// or `override` (`splice throttle`).
    pub source: String,
    /// Why the backfill is paused, while it is.
    pub paused: Option<String>,
}

/// What a sync's impact budget measured and decided: the application's commit latency as the
/// probe sees it, the budget, and the pace the backfill and the applier run at. Saved while a
/// sync runs so `splice status` (another process) can say when and why it holds back.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Impact {
    /// Commit latency without splice's load (the probe's baseline), milliseconds.
    pub baseline_ms: f64,
    /// Commit latency now (median of the probe's last second), milliseconds.
    pub current_ms: f64,
    /// The budget: the baseline plus `max_latency_increase`, milliseconds.
    pub budget_ms: f64,
    /// The pace the backfill and the applier run at, from 0 (almost stopped) to 1 (full speed).
    pub pace: f64,
    /// Why they hold back, while they do (the latency above its budget, or recovering from it).
    pub holding_back: Option<String>,
}

/// Where contract moved the old table, and for how long it stays.
#[derive(Debug, Clone)]
pub struct QuarantineEntry {
    pub quarantined_as: String,
    pub seconds: f64,
}
