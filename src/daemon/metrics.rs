//! `/metrics`: every migration's view as Prometheus gauges (prometheus-client, OpenMetrics
//! text). Rendered from the views at each scrape, so a series that no longer applies (a
//! throttle reason that ended, a slot that was dropped) disappears with it.

use super::runner::{unix_now, MigrationRun};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every phase a migration can be in, so `splice_migration_phase` has one series per phase
/// (1 for the current one, 0 for the others).
const PHASES: &[&str] = &[
    "planned",
    "expanded",
    "syncing",
    "verified",
    "cut_over",
    "contracted",
    "dropped",
    "rolled_back",
];

/// Why a backfill is throttled, as the label values of `splice_throttled`.
const THROTTLE_REASONS: &[&str] = &[
    "capture_lag",
    "replica_lag",
    "lock_waits",
    "latency",
    "paused",
    "other",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Migration {
    migration: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MigrationPhase {
    migration: String,
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MigrationReason {
    migration: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MigrationSlot {
    migration: String,
    slot: String,
}

type F64 = Gauge<f64, AtomicU64>;

/// A family of f64 gauges, registered under `name`.
fn family<L>(registry: &mut Registry, name: &str, help: &str) -> Family<L, F64>
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    let f = Family::<L, F64>::default();
    registry.register(name, help, f.clone());
    f
}

/// The Prometheus text of every migration's metrics.
pub fn render(runs: &[Arc<MigrationRun>]) -> Result<String, std::fmt::Error> {
    let mut r = Registry::default();
    let phase = family::<MigrationPhase>(
        &mut r,
        "splice_migration_phase",
        "1 for the phase the migration is in, 0 for the others",
    );
    let up = family::<Migration>(
        &mut r,
        "splice_runner_healthy",
        "1 when the migration's database answered and its runner's last step succeeded",
    );
    let paused = family::<Migration>(
        &mut r,
        "splice_paused",
        "1 while the migration is paused over the daemon's API",
    );
    let copied = family::<Migration>(
        &mut r,
        "splice_backfill_rows_copied",
        "Rows the backfill has copied",
    );
    let total = family::<Migration>(
        &mut r,
        "splice_backfill_rows_total",
        "Rows in the source table (the planner's estimate when the backfill started)",
    );
    let rate = family::<Migration>(
        &mut r,
        "splice_backfill_rows_per_second",
        "The backfill's copy rate",
    );
    let done = family::<Migration>(
        &mut r,
        "splice_backfill_done",
        "1 once the backfill has copied the whole key range",
    );
    let lag_bytes = family::<Migration>(
        &mut r,
        "splice_capture_lag_bytes",
        "WAL between the server's position and what the applier has applied",
    );
    let lag_seconds = family::<Migration>(
        &mut r,
        "splice_capture_lag_seconds",
        "How far behind the applier is, in time (measured while a sync runs)",
    );
    let applied = family::<Migration>(
        &mut r,
        "splice_capture_transactions_applied",
        "Captured transactions the running sync has applied",
    );
    let throttled = family::<MigrationReason>(
        &mut r,
        "splice_throttled",
        "1 while the backfill is paused (or, reason latency, the backfill and the applier slow \
         down) for this reason",
    );
    let latency = family::<Migration>(
        &mut r,
        "splice_commit_latency_seconds",
        "The application's commit latency now, as the impact budget's heartbeat measures it \
         (median of the last second)",
    );
    let latency_baseline = family::<Migration>(
        &mut r,
        "splice_commit_latency_baseline_seconds",
        "The heartbeat's commit latency while splice stood still (the budget's baseline)",
    );
    let latency_budget = family::<Migration>(
        &mut r,
        "splice_commit_latency_budget_seconds",
        "The commit latency above which the backfill and the applier slow down",
    );
    let pace = family::<Migration>(
        &mut r,
        "splice_impact_pace",
        "The pace the impact budget lets the backfill and the applier run at (1: full speed)",
    );
    let divergent = family::<Migration>(
        &mut r,
        "splice_verify_divergent_rows",
        "Keys that differed in the last verify pass",
    );
    let ratio = family::<Migration>(
        &mut r,
        "splice_verify_divergence_ratio",
        "Differing keys per checked row in the last verify pass",
    );
    let checked = family::<Migration>(
        &mut r,
        "splice_verify_rows_checked",
        "Rows the last verify pass hashed (an incremental pass: only those of the ranges it re-read)",
    );
    let incremental = family::<Migration>(
        &mut r,
        "splice_verify_incremental",
        "1 when the last verify pass was incremental (re-read only the key ranges changed since), 0 when full",
    );
    let ranges_checked = family::<Migration>(
        &mut r,
        "splice_verify_ranges_checked",
        "Key ranges the last verify pass read",
    );
    let ranges_total = family::<Migration>(
        &mut r,
        "splice_verify_ranges_total",
        "Key ranges the table is split into for verify",
    );
    let last_pass = family::<Migration>(
        &mut r,
        "splice_verify_last_pass_timestamp_seconds",
        "When the last verify pass finished (Unix time)",
    );
    let passes = family::<Migration>(
        &mut r,
        "splice_verify_passes",
        "Verify passes this daemon process has run",
    );
    let lock = family::<Migration>(
        &mut r,
        "splice_cutover_lock_seconds",
        "How long cutover held the table locked",
    );
    let retained = family::<MigrationSlot>(
        &mut r,
        "splice_slot_retained_wal_bytes",
        "WAL each of the migration's replication slots keeps on the server",
    );
    let automatic_rollbacks = family::<Migration>(
        &mut r,
        "splice_automatic_rollbacks",
        "Rollbacks the [automation] watch asked for since this daemon started",
    );
    let watching = family::<Migration>(
        &mut r,
        "splice_watching",
        "1 while the [automation] watch runs after a cutover (a failure rolls back)",
    );
    let gates_held = family::<Migration>(
        &mut r,
        "splice_cutover_gates_held_seconds",
        "How long the automatic cutover's gates have held together (cutover = \"auto\")",
    );

    for run in runs {
        let m = Migration {
            migration: run.name.clone(),
        };
        let healthy = run.health().is_ok();
        let is_paused = run.paused();
        let view = run.view().clone();
        up.get_or_create(&m).set(flag(healthy));
        paused.get_or_create(&m).set(flag(is_paused));
        if let Some(s) = &view.status {
            for p in PHASES {
                phase
                    .get_or_create(&MigrationPhase {
                        migration: run.name.clone(),
                        phase: p.to_string(),
                    })
                    .set(flag(s.phase == *p));
            }
            copied.get_or_create(&m).set(s.rows_copied as f64);
            total.get_or_create(&m).set(s.rows_total as f64);
            done.get_or_create(&m).set(flag(s.backfill_done));
            if let Some(rps) = s.backfill_rows_per_second {
                rate.get_or_create(&m).set(rps);
            }
            if let Some(l) = s.capture_lag_bytes {
                lag_bytes.get_or_create(&m).set(l as f64);
            }
            if let Some(ms) = s.cutover_lock_ms {
                lock.get_or_create(&m).set(ms / 1000.0);
            }
            for slot in &s.slots {
                retained
                    .get_or_create(&MigrationSlot {
                        migration: run.name.clone(),
                        slot: slot.slot.clone(),
                    })
                    .set(slot.retained_wal_bytes as f64);
            }
            // A verify pass recorded before this process started (or by the CLI).
            if view.last_verify.is_none() {
                if let Some(v) = &s.last_verify {
                    let keys = v
                        .get("diverged_keys")
                        .and_then(|k| k.as_array())
                        .map_or(0, Vec::len);
                    divergent.get_or_create(&m).set(keys as f64);
                    if let Some(at) = v
                        .get("at")
                        .and_then(|a| a.as_str())
                        .and_then(|a| humantime::parse_rfc3339(a).ok())
                        .and_then(|t| t.duration_since(std::time::SystemTime::UNIX_EPOCH).ok())
                    {
                        last_pass.get_or_create(&m).set(at.as_secs_f64());
                    }
                }
            }
        }
        // The rate this daemon's backfill measured stays after it is done; a running backfill
        // overrides it just below.
        if let Some(r) = view.backfill_rate {
            rate.get_or_create(&m).set(r);
        }
        // The running sync knows more, and more recently, than the last status read.
        if let Some(p) = &view.progress {
            copied.get_or_create(&m).set(p.rows_copied as f64);
            if p.rows_total > 0 {
                total.get_or_create(&m).set(p.rows_total as f64);
            }
            if p.rows_per_second > 0.0 {
                rate.get_or_create(&m).set(p.rows_per_second);
            }
            lag_seconds
                .get_or_create(&m)
                .set(p.capture_lag_ms as f64 / 1000.0);
            applied.get_or_create(&m).set(p.txns_applied as f64);
        }
        // The running sync's impact budget, else the one status last read.
        let impact = view
            .progress
            .as_ref()
            .and_then(|p| p.impact.clone())
            .or_else(|| view.status.as_ref().and_then(|s| s.impact.clone()));
        if let Some(i) = &impact {
            latency.get_or_create(&m).set(i.current_ms / 1000.0);
            latency_baseline
                .get_or_create(&m)
                .set(i.baseline_ms / 1000.0);
            latency_budget.get_or_create(&m).set(i.budget_ms / 1000.0);
            pace.get_or_create(&m).set(i.pace);
        }
        let over_budget = impact.as_ref().is_some_and(|i| i.holding_back.is_some());
        let active = if is_paused {
            Some("paused")
        } else if let Some(reason) = view.progress.as_ref().and_then(|p| p.throttled.as_deref()) {
            Some(throttle_reason(reason))
        } else {
            over_budget.then_some("latency")
        };
        for reason in THROTTLE_REASONS {
            throttled
                .get_or_create(&MigrationReason {
                    migration: run.name.clone(),
                    reason: reason.to_string(),
                })
                .set(flag(active == Some(*reason)));
        }
        if let Some(v) = &view.last_verify {
            divergent.get_or_create(&m).set(v.divergent_rows as f64);
            ratio.get_or_create(&m).set(v.divergence_ratio);
            checked.get_or_create(&m).set(v.rows_checked as f64);
            incremental
                .get_or_create(&m)
                .set(flag(v.kind == engine::VerifyKind::Incremental));
            ranges_checked.get_or_create(&m).set(v.ranges as f64);
            ranges_total.get_or_create(&m).set(v.ranges_total as f64);
            last_pass.get_or_create(&m).set(v.finished_at);
        }
        passes.get_or_create(&m).set(view.verify_passes as f64);
        let a = &view.automation;
        automatic_rollbacks
            .get_or_create(&m)
            .set(a.automatic_rollbacks as f64);
        watching
            .get_or_create(&m)
            .set(flag(a.watching_until.is_some()));
        if let Some(held) = a.gates_held_seconds {
            gates_held.get_or_create(&m).set(held);
        }
    }
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &r)?;
    Ok(out)
}

/// The label value of a throttle message. `SyncProgress::throttled` is text today; this is
/// the one place that reads it, to be replaced by the typed reason once the engine has one.
fn throttle_reason(message: &str) -> &'static str {
    if message.starts_with("capture lag") {
        "capture_lag"
    } else if message.starts_with("replica lag") {
        "replica_lag"
    } else if message.contains("waiting for a lock") {
        "lock_waits"
    } else {
        "other"
    }
}

fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

/// Seconds since the last verify pass finished, if there was one (for the JSON API).
pub fn seconds_since(at: f64) -> f64 {
    (unix_now() - at).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_following(holding_back: Option<&str>) -> Arc<MigrationRun> {
        let file =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/orders_v2.toml");
        let run = MigrationRun::open(&file, "postgres://splice@127.0.0.1:1/none").expect("open");
        run.view().progress = Some(engine::backfill::SyncProgress {
            backfill_done: true,
            state: engine::backfill::SyncState::Following,
            impact: Some(engine::state::Impact {
                baseline_ms: 2.0,
                current_ms: 3.0,
                budget_ms: 2.4,
                pace: 0.25,
                holding_back: holding_back.map(str::to_string),
            }),
            ..Default::default()
        });
        Arc::new(run)
    }

    #[test]
    fn the_impact_budget_shows_as_latency_gauges_and_a_latency_throttle_reason() {
        let text = render(&[run_following(Some("commit latency 3.0 ms > budget 2.4 ms"))])
            .expect("render");
        for series in [
            "splice_throttled{migration=\"orders_v2\",reason=\"latency\"} 1.0",
            "splice_commit_latency_seconds{migration=\"orders_v2\"} 0.003",
            "splice_commit_latency_baseline_seconds{migration=\"orders_v2\"} 0.002",
            "splice_commit_latency_budget_seconds{migration=\"orders_v2\"} 0.0024",
            "splice_impact_pace{migration=\"orders_v2\"} 0.25",
        ] {
            assert!(text.contains(series), "{series} missing from\n{text}");
        }
        let within = render(&[run_following(None)]).expect("render");
        assert!(
            within.contains("splice_throttled{migration=\"orders_v2\",reason=\"latency\"} 0.0"),
            "{within}"
        );
    }

    #[test]
    fn throttle_messages_map_to_a_few_reasons() {
        assert_eq!(throttle_reason("capture lag 12 MB > 10 MB"), "capture_lag");
        assert_eq!(throttle_reason("replica lag 3.0s > 1s"), "replica_lag");
        assert_eq!(
            throttle_reason("2 session(s) waiting for a lock on the table"),
            "lock_waits"
        );
        assert_eq!(throttle_reason("a probe said so"), "other");
    }
}
