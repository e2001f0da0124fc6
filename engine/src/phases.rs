//! The phase machine: each command is one method of [`Engine`], idempotent and resumable.
//! It is written against the [`Adapter`] and holds no SQL; `Engine::new(url)` drives a
//! PostgreSQL database ([`Postgres`]).
//!
//! ```text
//! planned → expanded → syncing → verified → cut_over → contracted → dropped
//!    any phase → rolled_back (after cutover: back to syncing, with the old table live again)
//! ```

use crate::adapter::{Adapter, Swap};
use crate::catalog::{self, Dependent};
use crate::plan::{Direction, Fill, Plan};
use crate::postgres::Postgres;
use crate::spec::MigrationSpec;
use crate::state::{self, MigrationRecord, Phase};
use crate::sync::{self, Capture, Control, ProgressSink, SyncProgress};
use crate::verify::{self, VerifyReport};
use crate::EngineError;
use serde_json::json;
use std::time::{Duration, Instant};
use tracing::{info, info_span, warn, Instrument};

pub use crate::spec::QUARANTINE_SCHEMA;

/// Options of `splice sync`.
#[derive(Debug, Clone, Default)]
pub struct SyncOptions {
    /// Return once backfill is done and capture has caught up.
    pub until_caught_up: bool,
    pub rows_per_second: Option<u32>,
    pub chunk_target: Option<Duration>,
}

/// What cutover measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CutoverReport {
    pub lock_ms: f64,
    pub attempts: u32,
    pub carried_over: Vec<String>,
    pub reverse_sync: bool,
}

/// What rollback did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RollbackReport {
    pub from: String,
    pub to: String,
    pub seconds: f64,
    pub lock_ms: Option<f64>,
}

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
    pub history: Vec<state::Transition>,
}

/// Drives migrations in one database, through its adapter (PostgreSQL by default).
pub struct Engine<A: Adapter = Postgres> {
    adapter: A,
    verify_range_rows: i64,
}

fn backoff(attempt: u32) -> Duration {
    let base = 100u64 * 2u64.pow(attempt.min(6));
    let jitter = rand::random_range(0..=base / 2);
    Duration::from_millis(base + jitter)
}

impl Engine<Postgres> {
    /// The engine of the PostgreSQL database at `url`.
    pub fn new(url: impl Into<String>) -> Engine<Postgres> {
        Engine::with_adapter(Postgres::new(url))
    }

    /// The statements expand runs, as one script, linted before they run.
    pub fn expand_script(spec: &MigrationSpec, plan: &Plan) -> String {
        Postgres::expand_script(spec, plan)
    }
}

impl<A: Adapter> Engine<A> {
    /// The engine of the database behind `adapter`.
    pub fn with_adapter(adapter: A) -> Engine<A> {
        Engine {
            adapter,
            verify_range_rows: VERIFY_RANGE_ROWS,
        }
    }

    pub fn adapter(&self) -> &A {
        &self.adapter
    }

    /// About how many source rows verify hashes per key range (default 100,000). A range
    /// whose digests differ is read again row by row, so smaller ranges narrow faster and
    /// larger ones cost fewer round trips.
    pub fn with_verify_range_rows(mut self, rows: i64) -> Engine<A> {
        self.verify_range_rows = rows.max(1);
        self
    }

    async fn db(&self) -> Result<A::Conn, EngineError> {
        self.adapter.connect().await
    }

    async fn record(&self, db: &A::Conn, name: &str) -> Result<MigrationRecord, EngineError> {
        self.adapter.load_record(db, name).await?.ok_or_else(|| {
            EngineError::Phase(format!(
                "no migration named {name} in this database; run `splice expand FILE` first \
                 (`splice status` lists migrations)"
            ))
        })
    }

    fn spec_of(record: &MigrationRecord) -> Result<MigrationSpec, EngineError> {
        MigrationSpec::parse(&record.spec, &format!("stored spec of {}", record.name))
            .map_err(|e| EngineError::Plan(e.0))
    }

    /// Forward sync's capture (old → new): slot `splice_<name>_fwd`, origin `splice_<name>`.
    async fn forward_capture(
        &self,
        spec: &MigrationSpec,
        dir: Direction,
    ) -> Result<Capture<'_, A>, EngineError> {
        Capture::open(
            &self.adapter,
            spec,
            dir,
            &spec.forward_slot(),
            &spec.origin(),
        )
        .await
    }

    /// Reverse sync's capture (new → old): slot `splice_<name>_rev`, origin `splice_<name>_rev`.
    async fn reverse_capture(
        &self,
        spec: &MigrationSpec,
        dir: Direction,
    ) -> Result<Capture<'_, A>, EngineError> {
        Capture::open(
            &self.adapter,
            spec,
            dir,
            &spec.reverse_slot(),
            &spec.reverse_origin(),
        )
        .await
    }

    async fn locked(&self, name: &str) -> Result<A::Lock, EngineError> {
        self.adapter.acquire_lock(name).await
    }

    /// `splice plan`: checks the file against the live schema. Changes nothing.
    pub async fn plan(&self, spec: &MigrationSpec) -> Result<Plan, EngineError> {
        let db = self.db().await?;
        Plan::build(&self.adapter, &db, spec).await
    }

    /// Every phase of `plan` with the statements it runs and the locks it takes.
    pub fn render(&self, plan: &Plan) -> String {
        self.adapter.render_plan(plan)
    }

    /// `splice throttle`: sets (or with `None` clears) the backfill rate limit of a migration;
    /// a running sync picks it up at its next checkpoint. `Some(0)` means unlimited. False when
    /// there is no such migration.
    pub async fn set_rate_limit(
        &self,
        name: &str,
        rows_per_second: Option<i32>,
    ) -> Result<bool, EngineError> {
        let db = self.db().await?;
        self.adapter
            .set_rate_limit(&db, name, rows_per_second)
            .await
    }

    /// `splice expand`: registers the migration and creates the shadow table.
    pub async fn expand(&self, spec_text: &str, origin: &str) -> Result<Plan, EngineError> {
        let spec = MigrationSpec::parse(spec_text, origin).map_err(|e| EngineError::Plan(e.0))?;
        let db = self.db().await?;
        let different_file = || {
            EngineError::Phase(format!(
                "a migration named {} already exists with a different file; names are \
                 unique per database — pick a new name, or roll the old one back",
                spec.name
            ))
        };
        if let Some(existing) = self.adapter.load_record(&db, &spec.name).await? {
            if existing.phase != Phase::RolledBack && existing.spec != spec_text {
                return Err(different_file());
            }
            if !matches!(existing.phase, Phase::Planned | Phase::RolledBack) {
                info!(phase = %existing.phase, "already expanded");
                return Plan::build(&self.adapter, &db, &spec).await;
            }
        }
        let plan = Plan::build(&self.adapter, &db, &spec).await?;
        let script = self.adapter.expand_script(&spec, &plan);
        let findings: Vec<_> = lint::check(&script, &lint::Options::default())
            .into_iter()
            .filter(|d| d.severity == lint::Severity::Error)
            .collect();
        if let Some(d) = findings.first() {
            return Err(EngineError::Plan(format!(
                "expand's DDL does not pass splice lint ({}: {}); this is a splice bug — \
                 please report it with the migration file",
                d.rule, d.message
            )));
        }
        self.adapter.ensure_state(&db).await?;
        self.adapter.register(&db, &spec.name, spec_text).await?;
        let lock = self.locked(&spec.name).await?;
        let record = self.record(&db, &spec.name).await?;
        match record.phase {
            // A rolled-back migration left nothing behind: expand starts it again, from the
            // file as it is now, under the lock. Its history stays.
            Phase::RolledBack => self.adapter.reregister(&lock, spec_text).await?,
            _ if record.spec != spec_text => return Err(different_file()),
            Phase::Planned => {}
            _ => return Ok(plan),
        }
        self.adapter
            .create_shadow(&db, &spec, &plan.expand_ddl)
            .await?;
        self.adapter
            .transition(
                &lock,
                Some(record.phase),
                Phase::Expanded,
                json!({ "shadow_table": spec.shadow_table().to_string() }),
            )
            .await?;
        Ok(plan)
    }

    /// `splice sync`: capture first, then the throttled backfill, then keep applying changes
    /// until `control` stops it (or, with `until_caught_up`, until caught up). After cutover it
    /// runs reverse sync (new → old) instead.
    pub async fn sync(
        &self,
        name: &str,
        opts: &SyncOptions,
        control: &Control,
        progress: &mut dyn ProgressSink,
    ) -> Result<SyncProgress, EngineError> {
        let db = self.db().await?;
        let record = self.record(&db, name).await?;
        let mut spec = Self::spec_of(&record)?;
        if let Some(t) = opts.chunk_target {
            spec.throttle.chunk_target = t;
        }
        if opts.rows_per_second.is_some() {
            control.set_rate(opts.rows_per_second);
        } else if control.rate().is_none() {
            control.set_rate(spec.throttle.rows_per_second);
        }
        let lock = self.locked(name).await?;
        let span = info_span!("sync", migration = name, phase = %record.phase);
        async move {
            match record.phase {
                Phase::Expanded | Phase::Syncing | Phase::Verified => {
                    let plan = Plan::build(&self.adapter, &db, &spec).await?;
                    // Capture starts (slot created, position recorded) before the first chunk.
                    let mut capture = self.forward_capture(&spec, plan.forward.clone()).await?;
                    if record.phase == Phase::Expanded {
                        self.adapter
                            .transition(&lock, Some(Phase::Expanded), Phase::Syncing, json!({}))
                            .await?;
                    }
                    let mut p = sync::backfill(
                        &db,
                        &lock,
                        &mut capture,
                        &spec,
                        sync::BackfillCopy {
                            source: &plan.source,
                            fill: Fill::Missing,
                        },
                        control,
                        progress,
                    )
                    .await?;
                    let result = self
                        .follow(&mut capture, opts, control, progress, &mut p)
                        .await;
                    capture.close().await?;
                    result.map(|_| p)
                }
                Phase::CutOver => {
                    let plan = Plan::build_after_cutover(&self.adapter, &db, &spec).await?;
                    let Some(reverse) = plan.reverse.clone() else {
                        return Err(EngineError::Phase(format!(
                            "{name} was cut over without reverse sync; there is nothing to sync"
                        )));
                    };
                    let mut capture = self.reverse_capture(&spec, reverse).await?;
                    let mut p = SyncProgress {
                        backfill_done: true,
                        ..Default::default()
                    };
                    let result = self
                        .follow(&mut capture, opts, control, progress, &mut p)
                        .await;
                    capture.close().await?;
                    result.map(|_| p)
                }
                other => Err(EngineError::Phase(format!(
                    "{name} is {other}; sync runs between expand and contract"
                ))),
            }
        }
        .instrument(span)
        .await
    }

    /// Applies changes until stopped, or until caught up when asked.
    async fn follow(
        &self,
        capture: &mut Capture<'_, A>,
        opts: &SyncOptions,
        control: &Control,
        progress: &mut dyn ProgressSink,
        p: &mut SyncProgress,
    ) -> Result<(), EngineError> {
        if opts.until_caught_up {
            if p.backfill_done {
                capture.drain_for_reopen().await?;
            }
        } else {
            while !control.stopping() {
                capture.apply_for(Duration::from_millis(250)).await?;
                let lag = capture.lag().await?;
                p.capture_lag_bytes = lag.bytes;
                p.capture_lag_ms = lag.behind.as_millis() as u64;
                p.txns_applied = capture.txns_applied;
                progress.update(p);
            }
        }
        let lag = capture.lag().await?;
        p.capture_lag_bytes = lag.bytes;
        p.capture_lag_ms = lag.behind.as_millis() as u64;
        p.txns_applied = capture.txns_applied;
        progress.update(p);
        Ok(())
    }

    /// `splice verify`: drains capture, hashes both sides, records the result.
    pub async fn verify(&self, name: &str) -> Result<VerifyReport, EngineError> {
        let db = self.db().await?;
        let record = self.record(&db, name).await?;
        let spec = Self::spec_of(&record)?;
        if !matches!(record.phase, Phase::Syncing | Phase::Verified) {
            return Err(EngineError::Phase(format!(
                "{name} is {}; verify runs after sync has started and before cutover",
                record.phase
            )));
        }
        if !record.backfill_done {
            return Err(EngineError::Refused(format!(
                "{name}: backfill is not complete ({} of ~{} rows); run `splice sync {name} \
                 --until-caught-up` first",
                record.rows_copied, record.rows_total
            )));
        }
        let lock = self.locked(name).await?;
        let plan = Plan::build(&self.adapter, &db, &spec).await?;
        let mut capture = self.forward_capture(&spec, plan.forward.clone()).await?;
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
        )
        .await;
        capture.close().await?;
        let report = report?;
        self.adapter.record_verify(&lock, &report).await?;
        let figures = json!({
            "rows_checked": report.rows_checked,
            "diverged": report.diverged.len(),
            "seconds": report.seconds,
        });
        match (report.passed(), record.phase) {
            (true, Phase::Syncing) => {
                self.adapter
                    .transition(&lock, Some(Phase::Syncing), Phase::Verified, figures)
                    .await?
            }
            (false, Phase::Verified) => {
                self.adapter
                    .transition(&lock, Some(Phase::Verified), Phase::Syncing, figures)
                    .await?
            }
            _ => {}
        }
        Ok(report)
    }

    /// `splice cutover`: swaps the tables under a short lock once capture has drained.
    pub async fn cutover(
        &self,
        name: &str,
        max_lag_bytes: u64,
        without_reverse: bool,
    ) -> Result<CutoverReport, EngineError> {
        let db = self.db().await?;
        let record = self.record(&db, name).await?;
        let spec = Self::spec_of(&record)?;
        if record.phase == Phase::CutOver {
            return Ok(CutoverReport {
                lock_ms: record.lock_ms.unwrap_or(0.0),
                attempts: 0,
                carried_over: vec![],
                reverse_sync: true,
            });
        }
        if record.phase != Phase::Verified {
            return Err(EngineError::Refused(format!(
                "{name} is {}; cutover needs a passing verify first (`splice verify {name}`)",
                record.phase
            )));
        }
        match self.adapter.last_verify(&db, name).await? {
            Some((true, _, _)) => {}
            _ => {
                return Err(EngineError::Refused(format!(
                    "{name}: the last verify did not pass; run `splice verify {name}` until it does"
                )))
            }
        }
        let lock = self.locked(name).await?;
        let plan = Plan::build(&self.adapter, &db, &spec).await?;
        if plan.reverse.is_none() && !without_reverse {
            return Err(EngineError::Refused(format!(
                "{name}: reverse sync is impossible ({}), so rollback after cutover would lose \
                 writes; add the missing [down] entries, or pass --without-reverse-sync to \
                 accept a one-way cutover",
                plan.reverse_notes.join("; ")
            )));
        }
        let refused: Vec<String> = plan
            .dependents
            .iter()
            .filter(|d| {
                matches!(
                    d,
                    Dependent::View {
                        materialized: true,
                        ..
                    }
                )
            })
            .map(|d| d.to_string())
            .collect();
        if !refused.is_empty() {
            return Err(EngineError::Refused(format!(
                "{name}: cannot carry these over automatically: {}; drop and recreate them \
                 around the cutover",
                refused.join(", ")
            )));
        }
        let mut capture = self.forward_capture(&spec, plan.forward.clone()).await?;
        capture.drain().await?;
        let lag = capture.lag().await?;
        if lag.bytes > max_lag_bytes {
            capture.close().await?;
            return Err(EngineError::Refused(format!(
                "{name}: capture lag {} bytes is above the bound {max_lag_bytes}; let sync catch up",
                lag.bytes
            )));
        }
        // Reverse sync's slot exists before the swap, so no write to the new table is missed.
        let reverse = plan.reverse.clone().filter(|_| !without_reverse);
        if let Some(rev) = &reverse {
            let mut pre = rev.clone();
            pre.from = spec.shadow_table();
            let c = self.reverse_capture(&spec, pre).await?;
            c.close().await?;
        }
        let swap = Swap {
            live: spec.table.clone(),
            incoming: spec.shadow_table(),
            outgoing_as: spec.retired_table(),
        };
        let result = swap_under_lock(
            &spec,
            &swap,
            &mut capture,
            &plan.dependents,
            &column_names(&plan.target),
        )
        .await;
        let (lock_ms, attempts, carried) = match result {
            Ok(r) => r,
            Err(e) => {
                capture.close().await?;
                return Err(e);
            }
        };
        capture.close().await?;
        self.adapter
            .set_figure(&lock, state::Figure::LockMs, lock_ms)
            .await?;
        self.adapter.transition(&lock,
            Some(Phase::Verified),
            Phase::CutOver,
            json!({ "lock_ms": lock_ms, "attempts": attempts, "reverse_sync": reverse.is_some() }),
        )
        .await?;
        self.adapter
            .settle_carried_over(&db, &plan.dependents)
            .await;
        Ok(CutoverReport {
            lock_ms,
            attempts,
            carried_over: carried,
            reverse_sync: reverse.is_some(),
        })
    }

    /// `splice rollback`: back to the old shape from any phase, losing nothing.
    pub async fn rollback(&self, name: &str) -> Result<RollbackReport, EngineError> {
        let started = Instant::now();
        let db = self.db().await?;
        let record = self.record(&db, name).await?;
        let spec = Self::spec_of(&record)?;
        let lock = self.locked(name).await?;
        match record.phase {
            Phase::Planned | Phase::Expanded | Phase::Syncing | Phase::Verified => {
                self.adapter.drop_capture(&spec.forward_slot()).await?;
                self.adapter.drop_capture(&spec.reverse_slot()).await?;
                self.adapter.drop_shadow(&db, &spec).await?;
                self.adapter.forget_appliers(&db, &spec).await?;
                self.adapter.reset_backfill(&lock).await?;
                self.adapter
                    .transition(&lock, Some(record.phase), Phase::RolledBack, json!({}))
                    .await?;
                Ok(RollbackReport {
                    from: record.phase.to_string(),
                    to: Phase::RolledBack.to_string(),
                    seconds: started.elapsed().as_secs_f64(),
                    lock_ms: None,
                })
            }
            Phase::CutOver => {
                let plan = Plan::build_after_cutover(&self.adapter, &db, &spec).await?;
                let Some(reverse) = plan.reverse.clone() else {
                    return Err(EngineError::Refused(format!(
                        "{name} was cut over without reverse sync; the old table is stale, so \
                         swapping back would lose writes"
                    )));
                };
                let mut capture = self.reverse_capture(&spec, reverse).await?;
                capture.drain().await?;
                let swap = Swap {
                    live: spec.table.clone(),
                    incoming: spec.retired_table(),
                    outgoing_as: spec.shadow_table(),
                };
                // After cutover the plan's source is the old table, its target the live one.
                let r = swap_under_lock(
                    &spec,
                    &swap,
                    &mut capture,
                    &plan.dependents,
                    &column_names(&plan.source),
                )
                .await;
                capture.close().await?;
                let (lock_ms, _, _) = r?;
                // Reverse sync is over; a later cutover starts it afresh.
                self.adapter.drop_capture(&spec.reverse_slot()).await?;
                self.adapter
                    .transition(
                        &lock,
                        Some(Phase::CutOver),
                        Phase::Syncing,
                        json!({ "rolled_back_cutover": true, "lock_ms": lock_ms }),
                    )
                    .await?;
                Ok(RollbackReport {
                    from: Phase::CutOver.to_string(),
                    to: Phase::Syncing.to_string(),
                    seconds: started.elapsed().as_secs_f64(),
                    lock_ms: Some(lock_ms),
                })
            }
            Phase::Contracted => {
                self.adapter.restore_from_quarantine(&db, &spec).await?;
                self.adapter.set_quarantine(&lock, None, None).await?;
                // Re-sync the restored table from the live one (new → old), then keep it
                // current with reverse sync: the state cutover left it in.
                let plan = Plan::build_after_cutover(&self.adapter, &db, &spec).await?;
                let Some(reverse) = plan.reverse.clone() else {
                    return Err(EngineError::Refused(format!(
                        "{name} has no reverse mapping; the restored table cannot be re-synced"
                    )));
                };
                let mut capture = self.reverse_capture(&spec, reverse).await?;
                self.adapter.reset_backfill(&lock).await?;
                let control = Control::new(None);
                let mut quiet = QuietProgress;
                sync::backfill(
                    &db,
                    &lock,
                    &mut capture,
                    &spec,
                    sync::BackfillCopy {
                        source: &plan.target,
                        // The restored table holds the rows of the day it was quarantined.
                        fill: Fill::Overwrite,
                    },
                    &control,
                    &mut quiet,
                )
                .await?;
                capture.drain().await?;
                capture.close().await?;
                self.adapter
                    .transition(
                        &lock,
                        Some(Phase::Contracted),
                        Phase::CutOver,
                        json!({ "restored_from_quarantine": true }),
                    )
                    .await?;
                Ok(RollbackReport {
                    from: Phase::Contracted.to_string(),
                    to: Phase::CutOver.to_string(),
                    seconds: started.elapsed().as_secs_f64(),
                    lock_ms: None,
                })
            }
            Phase::Dropped | Phase::RolledBack => Err(EngineError::Phase(format!(
                "{name} is {}; there is nothing to roll back",
                record.phase
            ))),
        }
    }

    /// `splice contract`: stops reverse sync and moves the old table into quarantine.
    pub async fn contract(
        &self,
        name: &str,
        quarantine: Option<Duration>,
    ) -> Result<String, EngineError> {
        let db = self.db().await?;
        let record = self.record(&db, name).await?;
        let spec = Self::spec_of(&record)?;
        if record.phase == Phase::Contracted {
            return Ok(record.quarantine_until.unwrap_or_default());
        }
        if record.phase != Phase::CutOver {
            return Err(EngineError::Refused(format!(
                "{name} is {}; contract comes after cutover",
                record.phase
            )));
        }
        let lock = self.locked(name).await?;
        let period = quarantine.unwrap_or(spec.quarantine);
        self.adapter.drop_capture(&spec.reverse_slot()).await?;
        self.adapter.drop_capture(&spec.forward_slot()).await?;
        let quarantined = spec.quarantined_table();
        self.adapter.quarantine(&db, &spec).await?;
        self.adapter
            .set_quarantine(
                &lock,
                Some(&quarantined.to_string()),
                Some(period.as_secs_f64()),
            )
            .await?;
        self.adapter.transition(&lock,
            Some(Phase::CutOver),
            Phase::Contracted,
            json!({ "quarantined_as": quarantined.to_string(), "quarantine_seconds": period.as_secs() }),
        )
        .await?;
        let record = self.record(&db, name).await?;
        Ok(record.quarantine_until.unwrap_or_default())
    }

    /// `splice drop`: drops the quarantined table once its quarantine expired.
    pub async fn drop_quarantined(&self, name: &str, force: bool) -> Result<String, EngineError> {
        let db = self.db().await?;
        let record = self.record(&db, name).await?;
        let spec = Self::spec_of(&record)?;
        if record.phase == Phase::Dropped {
            return Ok(record.quarantined_as.unwrap_or_default());
        }
        if record.phase != Phase::Contracted {
            return Err(EngineError::Refused(format!(
                "{name} is {}; drop comes after contract",
                record.phase
            )));
        }
        if !record.quarantine_expired && !force {
            return Err(EngineError::Refused(format!(
                "{name}: the quarantine of {} runs until {}; drop refuses before then \
                 (--force drops it now, and nothing can bring it back)",
                record.quarantined_as.clone().unwrap_or_default(),
                record.quarantine_until.clone().unwrap_or_default()
            )));
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
                json!({ "forced": force && !record.quarantine_expired }),
            )
            .await?;
        Ok(quarantined.to_string())
    }

    /// `splice status`.
    pub async fn status(&self, name: Option<&str>) -> Result<Vec<Status>, EngineError> {
        let db = self.db().await?;
        let records = match name {
            Some(n) => vec![self.record(&db, n).await?],
            None => self.adapter.load_records(&db).await?,
        };
        let mut out = Vec::new();
        for r in records {
            let spec = Self::spec_of(&r)?;
            let slot = if r.phase == Phase::CutOver {
                spec.reverse_slot()
            } else {
                spec.forward_slot()
            };
            let lag = self.adapter.capture_lag_bytes(&db, &slot).await?;
            let last = self.adapter.last_verify(&db, &r.name).await?.map(
                |(passed, keys, at)| json!({ "passed": passed, "diverged_keys": keys, "at": at }),
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
                history: self.adapter.history(&db, &r.name).await?,
            });
        }
        Ok(out)
    }
}

fn column_names(table: &catalog::Table) -> Vec<String> {
    table.columns.iter().map(|c| c.name.clone()).collect()
}

/// Locks `swap.live`, drains `capture` inside the lock, renames, carries `dependents` (of the
/// table that has the live name now) over to the incoming table, commits. Retries lock
/// timeouts with backoff and jitter. Returns (lock ms, attempts, what was carried over).
async fn swap_under_lock<A: Adapter>(
    spec: &MigrationSpec,
    swap: &Swap,
    capture: &mut Capture<'_, A>,
    dependents: &[Dependent],
    incoming_columns: &[String],
) -> Result<(f64, u32, Vec<String>), EngineError> {
    match swap_attempts(spec, swap, capture, dependents, incoming_columns).await? {
        Some(r) => Ok(r),
        None => Err(EngineError::Refused(format!(
            "could not lock {} within {MAX_LOCK_ATTEMPTS} attempts; long transactions are \
             holding it — retry later or raise throttle.lock_timeout",
            swap.live
        ))),
    }
}

/// The lock-retry loop of a swap; `None` when every attempt timed out. The swap runs on the
/// applier's own session: what it writes carries the engine's marks (PostgreSQL: its
/// replication origin), so reverse capture skips it.
async fn swap_attempts<A: Adapter>(
    spec: &MigrationSpec,
    swap: &Swap,
    capture: &mut Capture<'_, A>,
    dependents: &[Dependent],
    target_columns: &[String],
) -> Result<Option<(f64, u32, Vec<String>)>, EngineError> {
    for attempt in 1..=MAX_LOCK_ATTEMPTS {
        // Catch up right before locking, so what is left to apply under the lock is only what
        // committed in the last moments.
        catch_up(capture).await?;
        match capture.swap(spec, swap, dependents, target_columns).await? {
            Some(lock_ms_and_carried) => {
                let (lock_ms, carried) = lock_ms_and_carried;
                info!(lock_ms, attempt, "swapped");
                return Ok(Some((lock_ms, attempt, carried)));
            }
            None => {
                let wait = backoff(attempt);
                warn!(attempt, ?wait, "cutover lock timed out; retrying");
                tokio::time::sleep(wait).await;
            }
        }
    }
    Ok(None)
}

/// Drains until one drain completes quickly: only then is the backlog small enough to apply
/// under the lock. Refuses when capture cannot keep up with the application's writes.
async fn catch_up<A: Adapter>(capture: &mut Capture<'_, A>) -> Result<(), EngineError> {
    let give_up = Instant::now() + CATCH_UP_BUDGET;
    loop {
        let started = Instant::now();
        capture.drain().await?;
        if started.elapsed() < CAUGHT_UP {
            return Ok(());
        }
        if Instant::now() > give_up {
            return Err(EngineError::Refused(format!(
                "capture did not catch up within {}: the application writes as fast as the                  applier can re-sync, so the backlog under the lock would be too long; nothing                  was swapped — cut over when the write load is lower",
                humantime::format_duration(CATCH_UP_BUDGET)
            )));
        }
    }
}

/// A drain that finishes within this is "caught up".
/// Ranges verify reads at once, each on its own pair of sessions (source, target).
const VERIFY_PAIRS: usize = 2;

/// Source rows per verify range (about): a range whose digests differ is read again row by row.
const VERIFY_RANGE_ROWS: i64 = 100_000;

const CAUGHT_UP: Duration = Duration::from_millis(500);
/// How long cutover keeps trying to catch up before refusing.
const CATCH_UP_BUDGET: Duration = Duration::from_secs(120);

const MAX_LOCK_ATTEMPTS: u32 = 10;

/// A progress sink that reports nothing (internal re-syncs).
pub struct QuietProgress;

impl ProgressSink for QuietProgress {
    fn update(&mut self, _: &SyncProgress) {}
}
