//! The throttled backfill ([`backfill`]): walks the source's key range in chunks and writes
//! mapped rows, applying captured changes between chunks, never during one. So a change that
//! commits while a chunk is copied is re-synced after the chunk landed, and a delete can never
//! be undone by a stale chunk (no resurrection, DBLog-style). Chunks are sized to a target
//! duration; the rate limit ([`RateLimit`], changeable at run time through [`Control`] and the
//! state store), pauses on capture lag, replica lag and lock waits, and the impact budget
//! ([`ImpactBudget`]: it holds back after each chunk while the application's commit latency is
//! above its budget) bound what it costs.

use crate::adapter::{BackfillSource, ChangeApplier};
use crate::applier::{integer_key, integer_type, Applier};
use crate::catalog::Table;
use crate::impact::ImpactBudget;
use crate::seam::{Fill, RateLimit};
use crate::spec::MigrationSpec;
use crate::state::Checkpoint;
use crate::EngineError;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{debug, Instrument};

/// Run-time control of a running sync: the rate limit can change while it runs; stop asks it
/// to finish its current chunk, checkpoint and return.
///
/// The rate has two layers: the sync's own (the command line's, else the file's) and an
/// override `splice throttle` set in the state store. The override, while there is one, wins;
/// clearing it returns to the sync's own rate.
#[derive(Clone, Default)]
pub struct Control {
    rows_per_second: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
    setting: Arc<Mutex<RateSetting>>,
}

/// Where the rate a sync runs at comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RateSource {
    /// The migration file's `[throttle]` (or unlimited).
    #[default]
    File,
    /// `--rows-per-second` on the sync's command line (or the caller's `Control`).
    CommandLine,
    /// `splice throttle` while the sync ran (or before it, when the sync named no rate).
    Override,
}

impl RateSource {
    /// How `splice status` names it: `flag`, `file` or `override`.
    pub fn label(self) -> &'static str {
        match self {
            RateSource::File => "file",
            RateSource::CommandLine => "flag",
            RateSource::Override => "override",
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct RateSetting {
    /// The sync's own rate, `rows_per_second` encoding (0: unlimited).
    own: u32,
    own_source: RateSource,
    /// The override in force, if any.
    overridden: Option<RateLimit>,
    /// An earlier override the command line's rate replaced when the sync started.
    replaced: Option<RateLimit>,
}

impl Control {
    pub fn new(limit: RateLimit) -> Control {
        let c = Control::default();
        c.set_rate(limit);
        c
    }

    /// Sets the rate (the caller's own, replacing any override this control applied).
    pub fn set_rate(&self, limit: RateLimit) {
        self.set_own_rate(limit, RateSource::CommandLine);
    }

    /// Sets the sync's own rate and where it came from; an override stays in force over it.
    pub fn set_own_rate(&self, limit: RateLimit, source: RateSource) {
        let mut s = self.setting();
        s.own = limit.rows_per_second();
        s.own_source = source;
        self.store(&s);
    }

    /// Applies the override the state store holds (`None`: none). Returns the rate in force
    /// and its source when this changed it.
    pub fn apply_override(&self, limit: Option<RateLimit>) -> Option<(RateLimit, RateSource)> {
        let mut s = self.setting();
        if s.overridden == limit {
            return None;
        }
        s.overridden = limit;
        self.store(&s);
        let source = if limit.is_some() {
            RateSource::Override
        } else {
            s.own_source
        };
        Some((self.rate(), source))
    }

    /// Records that the sync's own rate replaced an override set before it started.
    pub fn replaced_override(&self, limit: RateLimit) {
        self.setting().replaced = Some(limit);
    }

    pub fn rate(&self) -> RateLimit {
        RateLimit::from_rows_per_second(self.rows_per_second.load(Ordering::Relaxed))
    }

    /// Where the rate in force comes from.
    pub fn rate_source(&self) -> RateSource {
        let s = self.setting();
        if s.overridden.is_some() {
            RateSource::Override
        } else {
            s.own_source
        }
    }

    fn setting(&self) -> std::sync::MutexGuard<'_, RateSetting> {
        // A panic elsewhere cannot leave a `RateSetting` half-written: it is `Copy` fields.
        self.setting.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn store(&self, s: &RateSetting) {
        let rate = s.overridden.map_or(s.own, RateLimit::rows_per_second);
        self.rows_per_second.store(rate, Ordering::Relaxed);
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// What a running sync reports after every chunk.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SyncProgress {
    pub rows_copied: u64,
    pub rows_total: u64,
    pub rows_per_second: f64,
    pub chunk_size: u64,
    pub backfill_done: bool,
    pub capture_lag_bytes: u64,
    pub capture_lag_ms: u64,
    pub txns_applied: u64,
    /// Changed keys the applier left to the backfill because it had yet to copy them (see
    /// [`crate::applier::Applier::backfill_started`]).
    pub keys_left_to_backfill: u64,
    /// Why the backfill is paused, when it is (the reason of [`SyncState::Paused`]).
    pub throttled: Option<String>,
    /// What the sync is doing right now.
    pub state: SyncState,
    /// Deferred secondary indexes this run built after the backfill, and how long that took.
    pub indexes_built: u32,
    pub index_build_s: f64,
    /// What the impact budget measured and decided (`None`: off, or no figures yet).
    pub impact: Option<crate::state::Impact>,
    /// The rate limit in force, rows per second (0: unlimited), and where it comes from.
    pub rate_limit: u32,
    pub rate_source: RateSource,
    /// An override `splice throttle` had set before this sync started, which the rate on
    /// the sync's command line replaced (rows per second, 0: unlimited).
    pub replaced_override: Option<u32>,
    pub elapsed_s: f64,
}

/// What a running sync is doing at the moment it reports: the progress line always says it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SyncState {
    /// Opening capture, reading the plan.
    #[default]
    Starting,
    /// A backfill chunk is being copied.
    Copying,
    /// Waiting until the rate limit allows the next chunk.
    WaitingForRate { rows_per_second: u32 },
    /// The backfill is paused (capture lag, replica lag, lock waiters); `reason` says which,
    /// with the figure and its bound.
    Paused { reason: String },
    /// The chunk in flight waits for a lock another session holds.
    BlockedOnLock {
        pid: i32,
        /// The holder's `application_name`, empty when it has none.
        application: String,
        /// The holder's current (or last) statement, shortened.
        query: String,
    },
    /// The backfill holds back after a chunk because the application's commit latency rose
    /// above the impact budget (or is just back within it); `reason` says which, with the
    /// figures, and `pace` the share of time it copies (0 to 1).
    HoldingBack { reason: String, pace: f64 },
    /// Captured changes are being applied between chunks.
    Applying,
    /// Building the deferred secondary indexes after the copy.
    BuildingIndexes,
    /// Waiting for capture to deliver everything up to now (`--until-caught-up`).
    CatchingUp,
    /// Capture delivered and applied everything up to the drain (`--until-caught-up`).
    CaughtUp,
    /// The backfill is done (or there is none): captured changes are applied as they come.
    Following,
}

/// Receives progress (a terminal bar, plain CI lines, metrics).
pub trait ProgressSink: Send {
    fn update(&mut self, p: &SyncProgress);
}

/// A progress sink that reports nothing (internal re-syncs, tests, benches).
pub struct NoProgress;

impl ProgressSink for NoProgress {
    fn update(&mut self, _: &SyncProgress) {}
}

/// Paces the backfill to its rate limit (a `governor` rate limiter, rebuilt when the limit
/// changes).
struct Pacer {
    limiter: Option<(u32, governor::DefaultDirectRateLimiter)>,
}

impl Pacer {
    /// Takes `rows` from the limit when it allows them now (always when unlimited); `false`
    /// when the caller must [`Pacer::wait`].
    fn try_now(&mut self, limit: RateLimit, rows: u32) -> bool {
        let RateLimit::RowsPerSecond(rate) = limit else {
            return true;
        };
        let burst = NonZeroU32::new(rows.max(rate.get())).unwrap_or(rate);
        if self.limiter.as_ref().map(|(r, _)| *r) != Some(rate.get()) {
            let quota = governor::Quota::per_second(rate).allow_burst(burst);
            self.limiter = Some((rate.get(), governor::RateLimiter::direct(quota)));
        }
        let n = NonZeroU32::new(rows.clamp(1, burst.get())).unwrap_or(NonZeroU32::MIN);
        matches!(
            self.limiter.as_ref().map(|(_, l)| l.check_n(n)),
            Some(Ok(Ok(())))
        )
    }

    /// Waits until `rows` more rows may be copied under `limit`.
    async fn wait(&mut self, limit: RateLimit, rows: u32) {
        let RateLimit::RowsPerSecond(rate) = limit else {
            self.limiter = None;
            return;
        };
        let burst = NonZeroU32::new(rows.max(rate.get())).unwrap_or(rate);
        if self.limiter.as_ref().map(|(r, _)| *r) != Some(rate.get()) {
            let quota = governor::Quota::per_second(rate).allow_burst(burst);
            self.limiter = Some((rate.get(), governor::RateLimiter::direct(quota)));
        }
        if let Some((_, limiter)) = &self.limiter {
            let n = NonZeroU32::new(rows.clamp(1, burst.get())).unwrap_or(NonZeroU32::MIN);
            if limiter.until_n_ready(n).await.is_err() {
                // More than the burst: wait proportionally instead.
                tokio::time::sleep(Duration::from_secs_f64(rows as f64 / rate.get() as f64)).await;
            }
        }
    }
}

/// Why backfill should pause now, if it should.
async fn throttle_reason<A: BackfillSource>(
    adapter: &A,
    db: &A::Conn,
    lag: &cdc::Lag,
    spec: &MigrationSpec,
    source: &Table,
) -> Result<Option<String>, EngineError> {
    if lag.bytes > spec.throttle.max_capture_lag_bytes {
        return Ok(Some(format!(
            "capture lag {} MB > {} MB",
            lag.bytes / 1_000_000,
            spec.throttle.max_capture_lag_bytes / 1_000_000
        )));
    }
    let load = adapter
        .server_load(db, source, &spec.throttle.replicas)
        .await?;
    let replica_lag = load.replica_lag_s;
    let waiting = load.lock_waiters;
    let max = spec.throttle.max_replica_lag.as_secs_f64();
    if replica_lag > max {
        let which = load
            .replica
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        return Ok(Some(if replica_lag >= 1e9 {
            format!("replica lag unknown{which}: replication stopped, broken or unreachable")
        } else {
            format!("replica lag {replica_lag:.1}s > {max}s{which}")
        }));
    }
    if waiting > 0 {
        return Ok(Some(format!(
            "{waiting} session(s) waiting for a lock on the table"
        )));
    }
    if let (Some(running), Some(max)) = (load.threads_running, spec.throttle.max_threads_running) {
        if running > i64::from(max) {
            return Ok(Some(format!("Threads_running {running} > {max}")));
        }
    }
    Ok(None)
}

/// What a backfill copies from, how it writes, and the impact budget that paces it.
#[derive(Clone, Copy)]
pub struct BackfillCopy<'t> {
    /// The table rows are read from (lock waits on it pause the backfill).
    pub source: &'t Table,
    pub fill: Fill,
    pub impact: &'t ImpactBudget,
}

/// Saves the impact budget's figures for `splice status`: when holding back starts or ends,
/// and otherwise every few seconds while a budget is on.
pub struct ImpactReport {
    saved_at: Option<Instant>,
    holding: bool,
}

impl ImpactReport {
    /// How often unchanged figures are saved again.
    const EVERY: Duration = Duration::from_secs(5);

    pub fn new() -> ImpactReport {
        ImpactReport {
            saved_at: None,
            holding: false,
        }
    }

    /// Puts the budget's figures in `p` and saves them when due.
    pub async fn update<A: crate::adapter::StateStore>(
        &mut self,
        adapter: &A,
        runner: &A::Lock,
        impact: &ImpactBudget,
        p: &mut SyncProgress,
    ) -> Result<(), EngineError> {
        if !impact.is_on() {
            return Ok(());
        }
        p.impact = impact.figures();
        let holding = p.impact.as_ref().is_some_and(|i| i.holding_back.is_some());
        let due = self.saved_at.is_none_or(|t| t.elapsed() >= Self::EVERY);
        if p.impact.is_some() && (due || holding != self.holding) {
            adapter.save_impact(runner, p.impact.as_ref()).await?;
            self.saved_at = Some(Instant::now());
            self.holding = holding;
        }
        Ok(())
    }
}

impl Default for ImpactReport {
    fn default() -> Self {
        ImpactReport::new()
    }
}

/// The longest the backfill holds back after one chunk.
const LONGEST_HOLD: Duration = Duration::from_secs(5);

/// How long to hold back after a chunk that took `took`, at `pace`: so that the backfill
/// copies `pace` of the time.
fn hold_after(took: Duration, pace: f64) -> Duration {
    if pace >= 1.0 {
        return Duration::ZERO;
    }
    let pace = pace.max(crate::impact::MIN_PACE);
    took.mul_f64((1.0 - pace) / pace).min(LONGEST_HOLD)
}

/// Runs the throttled backfill from its checkpoint to the end of the key range, applying
/// captured changes between chunks. Returns when done or when `control` asks it to stop.
pub async fn backfill<A: BackfillSource + ChangeApplier>(
    db: &A::Conn,
    runner: &A::Lock,
    capture: &mut Applier<'_, A>,
    spec: &MigrationSpec,
    copy: BackfillCopy<'_>,
    control: &Control,
    progress: &mut dyn ProgressSink,
) -> Result<SyncProgress, EngineError> {
    let BackfillCopy {
        source,
        fill,
        impact,
    } = copy;
    let adapter = capture.adapter();
    let record =
        adapter
            .load_record(db, &spec.name)
            .await?
            .ok_or_else(|| EngineError::NoSuchMigration {
                name: spec.name.clone(),
            })?;
    let total = adapter.estimate_rows(db, source).await?;
    adapter
        .set_figure(runner, crate::state::Figure::RowsTotal, total as f64)
        .await?;
    let dir = capture.direction().clone();
    let mut last_key = record.backfill_last_key.clone();
    let mut done = record.backfill_done;
    let started = Instant::now();
    let mut p = SyncProgress {
        rows_copied: record.rows_copied.max(0) as u64,
        rows_total: total.max(0) as u64,
        chunk_size: 1000,
        backfill_done: done,
        rate_limit: control.rate().rows_per_second(),
        rate_source: control.rate_source(),
        replaced_override: control.setting().replaced.map(RateLimit::rows_per_second),
        ..Default::default()
    };
    let copied_at_start = p.rows_copied;
    let mut chunk: i64 = 1000;
    let mut pacer = Pacer { limiter: None };
    let chunk_target = spec.throttle.chunk_target;
    // Measured once per chunk, after capture was applied; the next throttle check uses it.
    let mut lag = capture.lag().await?;
    // The backfill session's server process: a chunk that takes long is asked after by it.
    let session_pid = adapter.session_pid(db).await.ok().flatten();
    let mut report = ImpactReport::new();
    // Changes to keys the backfill has yet to copy are left to it (see
    // `Applier::backfill_started`): past the checkpoint it resumes at and past every row the
    // target holds, up to the backfill's end.
    // The end: for a key of integer columns, the source's highest key now. The backfill copies
    // no further; what is written past it later reaches the target through capture (the stream
    // is open already). Without an end, an application appending keys faster than a held-back
    // backfill copies would keep the backfill from ever finishing. Other keys have no order
    // splice knows, so their backfill copies to whatever end the table has when it gets there.
    let mut end: Option<Vec<i128>> = None;
    if !done {
        let target_last = adapter.last_key(db, &dir.to, &dir.key).await?;
        let end_key = if dir.key.iter().all(|k| integer_type(&k.sql_type)) {
            adapter.last_key(db, &dir.from, &dir.key).await?
        } else {
            None
        };
        end = end_key.as_deref().and_then(integer_key);
        capture.backfill_started(
            last_key.as_deref(),
            target_last.as_deref(),
            end_key.as_deref(),
        );
    }
    while !done && !control.stopping() {
        // Stand still a moment now and then, so the probe measures the application's commit
        // latency without splice's load: the budget's baseline.
        impact.quiet_window_if_due().await;
        if let Some(reason) = throttle_reason(adapter, db, &lag, spec, source).await? {
            if p.throttled.as_deref() != Some(reason.as_str()) {
                debug!(%reason, "backfill paused");
                // Saved so `splice status` shows the pause and its reason.
                let paused = Checkpoint {
                    last_key: None,
                    rows_copied: p.rows_copied as i64,
                    done,
                    rows_per_second: None,
                    throttle: Some(sync_throttle(control, Some(reason.clone()))),
                };
                adapter.checkpoint(runner, &paused).await?;
            }
            p.throttled = Some(reason.clone());
            p.state = SyncState::Paused { reason };
            progress.update(&p);
            capture.apply_for(Duration::from_millis(500)).await?;
            lag = capture.lag().await?;
            continue;
        }
        p.throttled = None;
        if !pacer.try_now(control.rate(), chunk as u32) {
            p.state = SyncState::WaitingForRate {
                rows_per_second: control.rate().rows_per_second(),
            };
            progress.update(&p);
            pacer.wait(control.rate(), chunk as u32).await;
        }
        p.state = SyncState::Copying;
        progress.update(&p);
        let t = Instant::now();
        // The chunk's upper key: the `chunk`-th key after the checkpoint (none: the last chunk).
        // The chunk's statements log inside a span of their own (`SPLICE_LOG=debug`).
        let chunk_span = tracing::debug_span!("chunk", rows = chunk, after = ?last_key);
        let upper = watching_locks(
            adapter,
            adapter.chunk_upper(db, &dir, last_key.as_deref(), chunk - 1),
            session_pid,
            &mut p,
            progress,
        )
        .instrument(chunk_span.clone())
        .await?;
        // A chunk reaching the end is the last. Like the last chunk of a table without an
        // end, it copies everything after the checkpoint: rows past the end that it copies
        // as well the applier re-syncs anyway, and a refill (`Fill::Mirror`) must delete every
        // stale row of the target past the checkpoint, wherever its key lies.
        let upper = match (upper, &end) {
            (Some(key), Some(end_n)) if integer_key(&key).is_some_and(|n| n >= *end_n) => None,
            (upper, _) => upper,
        };
        let copy = adapter.copy_range(
            db,
            runner,
            &dir,
            last_key.as_deref(),
            upper.as_deref(),
            fill,
        );
        let written = watching_locks(adapter, copy, session_pid, &mut p, progress)
            .instrument(chunk_span)
            .await?;
        let took = t.elapsed();
        match upper {
            // A full chunk: `chunk` source rows, some of which capture may have written first.
            Some(key) => {
                p.rows_copied += chunk as u64;
                last_key = Some(key);
            }
            // The rest of the table: done. The filled table gets its statistics now, before
            // verify reads it and long before applications do.
            _ => {
                p.rows_copied += written;
                // Best effort: statistics are an optimisation, never a reason to fail a copy
                // that is complete (autovacuum analyzes the table later anyway).
                if let Err(e) = adapter.refresh_statistics(db, &dir.to).await {
                    tracing::warn!(table = %dir.to, error = %e, "analyzing the filled table failed");
                }
                done = true;
            }
        }
        let rate =
            (p.rows_copied - copied_at_start) as f64 / started.elapsed().as_secs_f64().max(1e-3);
        // `splice throttle` changes the rate of a running sync through the state row; its
        // `--clear` returns to the sync's own rate.
        let saved = Checkpoint {
            last_key: last_key.clone(),
            rows_copied: p.rows_copied as i64,
            done,
            rows_per_second: Some(rate),
            throttle: Some(sync_throttle(control, None)),
        };
        let overridden = adapter.checkpoint(runner, &saved).await?;
        // Only now that a crash resumes the backfill after this chunk.
        match &last_key {
            Some(k) if !done => capture.backfill_copied_through(k),
            _ => capture.backfill_finished(),
        }
        if let Some((rate, source)) = control.apply_override(overridden) {
            tracing::info!(%rate, ?source, "the rate limit changed while sync ran");
        }
        p.rate_limit = control.rate().rows_per_second();
        p.rate_source = control.rate_source();
        // The impact budget's pace: below full pace, shorter chunks (down to a tenth of the
        // target) and holds between them, so the application sees small, spread-out bursts of
        // writes rather than one long one.
        impact.application_writes(capture.keys_written());
        let pace = impact.pace();
        let target = chunk_target.mul_f64(pace.clamp(0.1, 1.0));
        // Size the next chunk to the target duration, smoothly.
        let ideal = chunk as f64 * target.as_secs_f64() / took.as_secs_f64().max(1e-3);
        chunk = ((chunk as f64 * 0.5 + ideal * 0.5) as i64).clamp(100, 100_000);
        // Under a rate limit, no chunk larger than one second's worth: the pace stays even
        // (short waits between chunks, not one long wait before a huge chunk).
        if let RateLimit::RowsPerSecond(r) = control.rate() {
            chunk = chunk.min(i64::from(r.get()).max(100));
        }
        // Keep capture current while copying.
        p.state = SyncState::Applying;
        progress.update(&p);
        capture.apply_for(Duration::ZERO).await?;
        // The impact budget: copy only `pace` of the time, applying captured changes while
        // holding back.
        capture.set_pace(pace);
        report.update(adapter, runner, impact, &mut p).await?;
        let hold = if done {
            Duration::ZERO
        } else {
            hold_after(took, pace)
        };
        if !hold.is_zero() {
            let reason = match &p.impact {
                Some(i) => i.holding_back.clone().unwrap_or_else(|| {
                    format!(
                        "ramping up: commit latency {:.1} ms within budget {:.1} ms",
                        i.current_ms, i.budget_ms
                    )
                }),
                None => "starting at a tenth of full pace until the probe has figures".into(),
            };
            p.state = SyncState::HoldingBack { reason, pace };
            progress.update(&p);
            let until = Instant::now() + hold;
            while !control.stopping() {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                capture
                    .apply_for(left.min(Duration::from_millis(250)))
                    .await?;
            }
        }
        lag = capture.lag().await?;
        p.capture_lag_bytes = lag.bytes;
        p.capture_lag_ms = lag.behind.as_millis() as u64;
        p.txns_applied = capture.txns_applied;
        p.keys_left_to_backfill = capture.keys_left_to_backfill;
        p.chunk_size = chunk as u64;
        p.backfill_done = done;
        p.rows_per_second = rate;
        p.elapsed_s = started.elapsed().as_secs_f64();
        debug!(rows = p.rows_copied, chunk, "backfill chunk");
        progress.update(&p);
    }
    if done {
        p.state = SyncState::Following;
    }
    Ok(p)
}

/// The rate in force and its source, as the state store keeps them.
fn sync_throttle(control: &Control, paused: Option<String>) -> crate::state::SyncThrottle {
    crate::state::SyncThrottle {
        rows_per_second: control.rate().rows_per_second(),
        source: control.rate_source().label().to_string(),
        paused,
    }
}

/// Awaits a chunk's statement (its bound, its copy); while it takes longer than a second, asks (on a session of its own)
/// which session's lock it waits for, so the progress line can name it.
async fn watching_locks<A: BackfillSource, T>(
    adapter: &A,
    copy: impl std::future::Future<Output = Result<T, EngineError>>,
    session_pid: Option<i32>,
    p: &mut SyncProgress,
    progress: &mut dyn ProgressSink,
) -> Result<T, EngineError> {
    tokio::pin!(copy);
    let mut watch: Option<A::Conn> = None;
    loop {
        tokio::select! {
            written = &mut copy => return written,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let Some(pid) = session_pid else { continue };
        if watch.is_none() {
            // Best effort: without a second session the line keeps saying `copying`.
            watch = adapter.connect().await.ok();
        }
        let Some(w) = &watch else { continue };
        let state = match adapter.lock_blocker(w, pid).await {
            Ok(Some(b)) => SyncState::BlockedOnLock {
                pid: b.pid,
                application: b.application,
                query: b.query,
            },
            Ok(None) => SyncState::Copying,
            Err(_) => continue,
        };
        if p.state != state {
            p.state = state;
            progress.update(p);
        }
    }
}
