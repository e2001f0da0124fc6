//! One migration's runner: the loop that drives it through the engine's commands, each under
//! the engine's fenced runner lock, and what it has seen (for `/metrics`, `/healthz/ready` and
//! the JSON API).
//!
//! The runner lock is one per migration and every command takes it, so sync and verify cannot
//! run at once: the loop alternates. It syncs (capture + backfill) until caught up, verifies
//! (a full pass), follows changes until the next pass is due, stops that sync (it checkpoints
//! and acknowledges only what it applied), verifies again, and so on. Changes committed while
//! verify holds the lock wait in the replication slot; verify itself drains them first. Nothing
//! captured is lost between the two.
//!
//! Cutover and rollback are requests to the runner (over HTTP, or from the automation in
//! `automation.rs`): it stops its sync at a checkpoint, runs the engine's step under the same
//! lock discipline, and carries on in the new phase. It never contracts or drops.

use super::any_engine::DaemonEngine;
use engine::backfill::{Control, ProgressSink, SyncProgress};
use engine::phases::{CutoverReport, ReverseSync, RollbackReport, Status, SyncOptions};
use engine::spec::Automation;
use engine::{EngineError, MigrationSpec, Phase, VerifyKind, VerifyReport};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{oneshot, watch};
use tracing::{debug, info, info_span, warn, Instrument};

/// How often each migration's status (and so its database) is read for metrics and readiness.
pub const STATUS_EVERY: Duration = Duration::from_secs(2);
/// A status read that takes longer counts as the database being unreachable.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);
/// After SIGTERM, how long a verify pass in flight may take before it is abandoned (as safe as
/// a crash: verify writes its result in one statement at the end).
const VERIFY_GRACE: Duration = Duration::from_secs(5);
/// Retry delays after a failed step: doubling from the first to the last.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_LAST: Duration = Duration::from_secs(60);
/// The capture lag cutover accepts: the same default as `splice cutover --max-lag-bytes`.
pub const CUTOVER_MAX_LAG_BYTES: u64 = 16 * 1024 * 1024;

/// What the runner is doing now.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "detail")]
pub enum Activity {
    Starting,
    Expanding,
    /// Capture + backfill, until caught up.
    Backfilling,
    /// A verify pass (the first full, then incremental).
    Verifying,
    /// Applying captured changes until the next verify pass is due.
    Following,
    /// Paused over the API: no sync runs, captured changes wait in the slot.
    Paused,
    CuttingOver,
    RollingBack,
    /// Nothing to drive in this phase (the reason says why).
    Idle(String),
    /// The last step failed; it is retried after a delay.
    Failed(String),
    Stopped,
}

/// The result of one verify pass, as the daemon keeps it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifyPass {
    /// Seconds since the Unix epoch.
    pub finished_at: f64,
    pub passed: bool,
    /// `full` or `incremental`.
    pub kind: engine::VerifyKind,
    /// Rows and ranges this pass read, of `ranges_total`.
    pub rows_checked: u64,
    pub ranges: u64,
    pub ranges_total: u64,
    pub divergent_rows: u64,
    pub divergence_ratio: f64,
    pub seconds: f64,
}

impl VerifyPass {
    fn of(report: &VerifyReport) -> VerifyPass {
        VerifyPass {
            finished_at: unix_now(),
            passed: report.passed(),
            kind: report.kind,
            rows_checked: report.rows_checked,
            ranges: report.ranges,
            ranges_total: report.ranges_total,
            divergent_rows: report.diverged.len() as u64,
            divergence_ratio: report.divergence_rate(),
            seconds: report.seconds,
        }
    }
}

/// A control request (over HTTP, or from the automation), for the JSON API. Each is also
/// recorded in the state store's event log (`Engine::record_event`), which `splice status
/// --history` lists and a restarted daemon reads back; that log sits beside the transitions,
/// never among them, because the engine reads the transitions (the last says whether a
/// rollback already happened; cutover's figures say whether reverse sync runs).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ControlEvent {
    pub at: f64,
    pub action: String,
    /// The HTTP caller's address, or `automation`.
    pub caller: String,
    /// Why the automation asked (its gate or its failed watch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For cutover and rollback: `done`, `already done`, or the error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

/// A phase step the runner is asked to take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Cutover,
    /// `splice rollback`: one step back from wherever the migration is.
    Rollback,
    /// A rollback from `cut_over` only (the watch's): does nothing in any other phase.
    RollbackCutover,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Cutover => "cutover",
            Action::Rollback | Action::RollbackCutover => "rollback",
        }
    }
}

/// What a cutover or rollback request did.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(untagged)]
pub enum Done {
    Cutover(CutoverReport),
    Rollback(RollbackReport),
}

/// A request waiting for the runner, with where to send what came of it.
pub struct Request {
    pub action: Action,
    pub caller: String,
    pub reason: Option<String>,
    pub reply: Option<oneshot::Sender<Result<Done, EngineError>>>,
}

/// The automation's state, for the JSON API and `/metrics`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct AutomationView {
    /// How long the cutover gates have held together (automatic cutover only).
    pub gates_held_seconds: Option<f64>,
    /// What the automatic cutover waits for, if anything.
    pub waiting_for: Option<String>,
    /// Why automatic cutover is off although the file asks for it.
    pub disarmed: Option<String>,
    /// While the watch runs after a cutover: until when (Unix time), and checks that passed.
    pub watching_until: Option<f64>,
    pub watch_checks: u64,
    /// Rollbacks the watch asked for in this process, and the last one's reason.
    pub automatic_rollbacks: u64,
    pub last_automatic_rollback: Option<String>,
}

/// What the daemon knows of one migration; read by the HTTP handlers.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct View {
    pub activity: Option<Activity>,
    /// The last status read from the state store (none before the first read, or before
    /// expand registered the migration).
    pub status: Option<Status>,
    /// Why the last status read failed, if it did.
    pub database_error: Option<String>,
    /// Whether the database answered a status read at least once.
    pub database_answered: bool,
    /// The running (or last) sync's progress.
    pub progress: Option<SyncProgress>,
    /// The rate this daemon's backfill last measured, kept once it is done (a later sync
    /// that only follows changes measures none).
    pub backfill_rate: Option<f64>,
    /// Verify passes this daemon ran: the last one, and how many.
    pub last_verify: Option<VerifyPass>,
    pub verify_passes: u64,
    pub events: Vec<ControlEvent>,
    pub automation: AutomationView,
}

/// One migration the daemon drives.
pub struct MigrationRun {
    pub name: String,
    pub file: String,
    spec_text: String,
    engine: DaemonEngine,
    /// The database URL (with the daemon's application name), for the watch's session.
    pub(super) url: String,
    pub automation: Automation,
    /// The database, as shown to people (no password).
    pub database: String,
    view: Mutex<View>,
    paused: watch::Sender<bool>,
    /// At most one cutover or rollback waits for the runner; `requested` says one does.
    request: Mutex<Option<Request>>,
    requested: watch::Sender<bool>,
}

impl MigrationRun {
    /// Reads and checks the migration file; connects nothing yet.
    pub fn open(file: &std::path::Path, database_url: &str) -> Result<MigrationRun, String> {
        let shown = file.display().to_string();
        let spec_text = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read migration file {shown}: {e}"))?;
        let spec = MigrationSpec::parse(&spec_text, &shown).map_err(|e| e.to_string())?;
        let database = crate::db_url::describe(database_url)?;
        let url = crate::session_name::with_application_name(
            database_url,
            &crate::session_name::of_command(&["daemon", &spec.name]),
        );
        Ok(MigrationRun {
            name: spec.name.clone(),
            file: shown,
            spec_text,
            engine: DaemonEngine::for_url(&url)?,
            url,
            automation: spec.automation.clone(),
            database,
            view: Mutex::new(View::default()),
            paused: watch::channel(false).0,
            request: Mutex::new(None),
            requested: watch::channel(false).0,
        })
    }

    pub fn view(&self) -> MutexGuard<'_, View> {
        // A panic elsewhere leaves a view that is at worst stale, never unsafe to read.
        self.view.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn paused(&self) -> bool {
        *self.paused.borrow()
    }

    /// Pauses (or resumes) the runner; returns false when it already was.
    pub async fn set_paused(&self, paused: bool, caller: &str) -> bool {
        let changed = self.paused.send_if_modified(|p| {
            let changed = *p != paused;
            *p = paused;
            changed
        });
        let action = if paused { "pause" } else { "resume" };
        info!(migration = %self.name, caller, changed, "{action} requested");
        self.record_event(action, caller).await;
        changed
    }

    pub async fn record_event(&self, action: &str, caller: &str) {
        self.record(ControlEvent {
            at: unix_now(),
            action: action.into(),
            caller: caller.into(),
            reason: None,
            outcome: None,
        })
        .await;
    }

    /// Records a request in the view, then in the state store's event log. A migration not
    /// registered yet (before expand) has no log: the request is kept in the view only.
    ///
    /// [`MigrationRun::load_events`] (the runner's start, while the API already takes requests)
    /// merges what it read from the store with what the view holds then: the request may be in
    /// the view, the store or both when the log is read, and both the merge and [`push_event`]
    /// keep it once (a push after a read that found it stored listed it twice, seen once in
    /// `tests/daemon_mysql.rs`).
    async fn record(&self, event: ControlEvent) {
        push_event(&mut self.view(), event.clone());
        self.store_event(&event).await;
    }

    /// Records a request in the state store's event log (a migration not registered yet has
    /// none; a failure is logged): the view is [`push_event`]'s.
    async fn store_event(&self, event: &ControlEvent) {
        let stored = tokio::time::timeout(
            STATUS_TIMEOUT,
            self.engine.record_event(
                &self.name,
                &event.action,
                &event.caller,
                event.reason.as_deref(),
                event.outcome.as_deref(),
            ),
        )
        .await;
        match stored {
            Ok(Ok(())) => {}
            Ok(Err(EngineError::NoSuchMigration { .. })) => {
                debug!(action = %event.action, "not registered yet: request kept in memory only")
            }
            Ok(Err(e)) => warn!(
                action = %event.action,
                error = %e,
                "could not record the request in the state store; kept in memory only"
            ),
            Err(_) => warn!(
                action = %event.action,
                "the state store did not answer within {}s; request kept in memory only",
                STATUS_TIMEOUT.as_secs()
            ),
        }
    }

    /// Records that this daemon (its API at `api`) drives the migration; false while the
    /// migration is not registered yet.
    async fn announce(&self, api: &str) -> bool {
        let recorded = tokio::time::timeout(
            STATUS_TIMEOUT,
            self.engine
                .record_event(&self.name, engine::state::DAEMON_STARTED, api, None, None),
        )
        .await;
        match recorded {
            Ok(Ok(())) => true,
            // Before expand there is no record (or no state store) to add it to; a failed
            // write is tried again at the next step.
            Ok(Err(e)) => {
                debug!(error = %e, "this daemon's address not recorded yet");
                false
            }
            Err(_) => false,
        }
    }

    /// Reads the requests an earlier daemon recorded into the view (at start).
    async fn load_events(&self) {
        match self.engine.events(&self.name, KEPT_EVENTS).await {
            Ok(stored) => {
                let events = stored
                    .into_iter()
                    .map(|e| ControlEvent {
                        at: humantime::parse_rfc3339(&e.at)
                            .ok()
                            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                            .map(|d| d.as_secs_f64())
                            .unwrap_or(0.0),
                        action: e.action,
                        caller: e.caller,
                        reason: e.reason,
                        outcome: e.outcome,
                    })
                    .collect();
                let mut view = self.view();
                // The API is up before the runner starts: a request taken while the log was
                // read is in the view already, and maybe not in what was read.
                let taken = std::mem::take(&mut view.events);
                view.events = merge_events(events, taken);
            }
            Err(e) => debug!(error = %e, "no earlier requests read"),
        }
    }

    /// Queues a cutover or rollback for the runner, which stops its sync at a checkpoint to
    /// take it. Gives the request back when another one is still waiting.
    pub fn submit(&self, request: Request) -> Result<(), Request> {
        let mut slot = self.request.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_some() {
            return Err(request);
        }
        info!(
            migration = %self.name,
            caller = %request.caller,
            reason = request.reason.as_deref().unwrap_or(""),
            "{} requested",
            request.action.as_str()
        );
        *slot = Some(request);
        self.requested.send_replace(true);
        Ok(())
    }

    /// Whether a cutover or rollback waits for the runner.
    pub fn request_pending(&self) -> bool {
        *self.requested.borrow()
    }

    fn take_request(&self) -> Option<Request> {
        let taken = self
            .request
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        self.requested.send_replace(false);
        taken
    }

    pub fn engine(&self) -> &DaemonEngine {
        &self.engine
    }

    /// Healthy, or why not: the database answered the last status read and the last step
    /// did not fail.
    pub fn health(&self) -> Result<(), String> {
        let view = self.view();
        if let Some(e) = &view.database_error {
            return Err(format!(
                "migration {}: database {} unreachable: {e}",
                self.name, self.database
            ));
        }
        match &view.activity {
            Some(Activity::Failed(why)) => Err(format!("migration {}: {why}", self.name)),
            None | Some(Activity::Starting) if !view.database_answered => Err(format!(
                "migration {}: starting (database {} not read yet)",
                self.name, self.database
            )),
            Some(Activity::Stopped) => Err(format!("migration {}: stopped", self.name)),
            _ => Ok(()),
        }
    }

    fn set_activity(&self, activity: Activity) {
        self.view().activity = Some(activity);
    }

    /// Reads the migration's status into the view, recording whether the database answered.
    pub async fn refresh_status(&self) {
        let read = tokio::time::timeout(STATUS_TIMEOUT, self.engine.status(Some(&self.name))).await;
        let mut view = self.view();
        match read {
            Ok(Ok(mut list)) => {
                view.status = list.pop();
                view.database_error = None;
                view.database_answered = true;
            }
            // Not registered yet: the database answered.
            Ok(Err(EngineError::NoSuchMigration { .. })) => {
                view.status = None;
                view.database_error = None;
                view.database_answered = true;
            }
            Ok(Err(e)) => view.database_error = Some(e.to_string()),
            Err(_) => {
                view.database_error =
                    Some(format!("no answer within {}s", STATUS_TIMEOUT.as_secs()))
            }
        }
    }
}

/// Keeps every migration's status current until shutdown.
pub async fn watch_status(run: Arc<MigrationRun>, mut shutdown: watch::Receiver<bool>) {
    loop {
        run.refresh_status().await;
        tokio::select! {
            _ = tokio::time::sleep(STATUS_EVERY) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

/// The next step of a migration in `phase`.
enum Step {
    Expand,
    Backfill,
    Verify,
    /// Follow changes (forward before cutover, reverse after) until the next verify pass is
    /// due, or until stopped when none ever is.
    Follow {
        until: Option<Instant>,
    },
    Idle(String),
}

impl Step {
    /// The name of the step in the logs' `step` span.
    fn label(&self) -> &'static str {
        match self {
            Step::Expand => "expand",
            Step::Backfill => "backfill",
            Step::Verify => "verify",
            Step::Follow { .. } => "follow",
            Step::Idle(_) => "idle",
        }
    }
}

/// Drives one migration until `shutdown` turns true.
pub async fn drive(
    run: Arc<MigrationRun>,
    api: String,
    verify_every: Duration,
    shutdown: watch::Receiver<bool>,
) {
    let span = info_span!("migration", migration = %run.name);
    async move {
        let mut retry = RETRY_FIRST;
        // A verify pass is due as soon as the backfill is complete, then every `verify_every`.
        let mut next_verify: Option<Instant> = None;
        // The first pass of this daemon is full; later ones re-read only the key ranges capture
        // changed since (incremental verify), and run full again when nothing is stored.
        let mut full_done = false;
        run.set_activity(Activity::Starting);
        run.load_events().await;
        // Recorded once the migration is registered (expand registers it), so a command run
        // by hand that the runner lock refuses names this daemon's address.
        let mut announced = false;
        while !*shutdown.borrow() {
            if !announced {
                announced = run.announce(&api).await;
            }
            if let Some(request) = run.take_request() {
                let span = info_span!("step", step = request.action.as_str());
                if carry_out(&run, request).instrument(span).await {
                    // A verify pass right away takes the rolled-back migration to verified.
                    next_verify = None;
                    full_done = false;
                }
                run.refresh_status().await;
                continue;
            }
            if run.paused() {
                run.set_activity(Activity::Paused);
                let mut paused = run.paused.subscribe();
                let mut stop = shutdown.clone();
                let mut requested = run.requested.subscribe();
                tokio::select! {
                    _ = paused.wait_for(|p| !*p) => {}
                    _ = stop.wait_for(|s| *s) => {}
                    _ = requested.wait_for(|r| *r) => {}
                }
                continue;
            }
            let step = match next_step(&run, next_verify).await {
                Ok(step) => step,
                Err(e) => {
                    failed(&run, &e, &mut retry, &shutdown).await;
                    continue;
                }
            };
            let span = info_span!("step", step = step.label());
            let result = async {
                match step {
                    Step::Expand => {
                        run.set_activity(Activity::Expanding);
                        run.engine
                            .expand(&run.spec_text, &run.file)
                            .await
                            .map(|r| info!(already = r.already, "expanded"))
                    }
                    Step::Backfill => {
                        run.set_activity(Activity::Backfilling);
                        sync(&run, true, None, &shutdown).await
                    }
                    Step::Verify => {
                        run.set_activity(Activity::Verifying);
                        let kind = if full_done {
                            VerifyKind::Incremental
                        } else {
                            VerifyKind::Full
                        };
                        let outcome = verify(&run, kind, &shutdown).await;
                        if let Ok(ran) = &outcome {
                            next_verify = Some(Instant::now() + verify_every);
                            full_done |= *ran == Some(VerifyKind::Full);
                        }
                        outcome.map(|_| ())
                    }
                    Step::Follow { until } => {
                        run.set_activity(Activity::Following);
                        sync(&run, false, until, &shutdown).await
                    }
                    Step::Idle(why) => {
                        run.set_activity(Activity::Idle(why));
                        let mut stop = shutdown.clone();
                        let mut paused = run.paused.subscribe();
                        let mut requested = run.requested.subscribe();
                        tokio::select! {
                            _ = tokio::time::sleep(STATUS_EVERY) => {}
                            _ = stop.wait_for(|s| *s) => {}
                            _ = paused.wait_for(|p| *p) => {}
                            _ = requested.wait_for(|r| *r) => {}
                        }
                        Ok(())
                    }
                }
            }
            .instrument(span)
            .await;
            match result {
                Ok(()) => retry = RETRY_FIRST,
                Err(e) => failed(&run, &e, &mut retry, &shutdown).await,
            }
            run.refresh_status().await;
        }
        run.set_activity(Activity::Stopped);
        info!("stopped");
    }
    .instrument(span)
    .await
}

/// Decides the next step from the migration's record.
async fn next_step(run: &MigrationRun, next_verify: Option<Instant>) -> Result<Step, EngineError> {
    let status = match run.engine.status(Some(&run.name)).await {
        Ok(mut list) => list.pop(),
        Err(EngineError::NoSuchMigration { .. }) => None,
        Err(e) => return Err(e),
    };
    let Some(status) = status else {
        return Ok(Step::Expand);
    };
    let phase = Phase::parse(&status.phase);
    run.view().status = Some(status.clone());
    Ok(match phase {
        Some(Phase::Planned) => Step::Expand,
        Some(Phase::Expanded) => Step::Backfill,
        Some(Phase::Syncing | Phase::Verified) if !status.backfill_done => Step::Backfill,
        Some(Phase::Syncing | Phase::Verified) => match next_verify {
            Some(at) if at > Instant::now() => Step::Follow { until: Some(at) },
            _ => Step::Verify,
        },
        // Cut over by a person: keep the old shape current (reverse sync) so rollback stays
        // open; verify compares the forward direction only, so it does not run here.
        Some(Phase::CutOver) => Step::Follow { until: None },
        Some(p) => Step::Idle(format!(
            "phase {p}: the daemon drives expand, sync, verify, cutover and rollback only (it \
             never contracts, drops or re-expands)"
        )),
        None => Step::Idle(format!("unknown phase {}", status.phase)),
    })
}

/// Records a failed step and waits before the next try (doubling, up to a minute).
async fn failed(
    run: &MigrationRun,
    e: &EngineError,
    retry: &mut Duration,
    shutdown: &watch::Receiver<bool>,
) {
    warn!(error = %e, retry_in_s = retry.as_secs(), "step failed");
    run.set_activity(Activity::Failed(e.to_string()));
    let mut stop = shutdown.clone();
    let mut requested = run.requested.subscribe();
    tokio::select! {
        _ = tokio::time::sleep(*retry) => {}
        _ = stop.wait_for(|s| *s) => {}
        _ = requested.wait_for(|r| *r) => {}
    }
    *retry = (*retry * 2).min(RETRY_LAST);
}

/// One `Engine::sync`: until caught up, or following changes until `until`, a pause or
/// shutdown. A stop lets the chunk in flight finish and checkpoint.
async fn sync(
    run: &Arc<MigrationRun>,
    until_caught_up: bool,
    until: Option<Instant>,
    shutdown: &watch::Receiver<bool>,
) -> Result<(), EngineError> {
    let control = Control::default();
    let stopper = {
        let control = control.clone();
        let mut stop = shutdown.clone();
        let mut paused = run.paused.subscribe();
        let mut requested = run.requested.subscribe();
        tokio::spawn(async move {
            let deadline = async {
                match until {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = deadline => {}
                _ = stop.wait_for(|s| *s) => {}
                _ = paused.wait_for(|p| *p) => {}
                _ = requested.wait_for(|r| *r) => {}
            }
            control.stop();
        })
    };
    let opts = SyncOptions {
        until_caught_up,
        ..Default::default()
    };
    let mut sink = ViewProgress(run.clone());
    let result = run.engine.sync(&run.name, &opts, &control, &mut sink).await;
    stopper.abort();
    result.map(|p| {
        if until_caught_up && p.backfill_done {
            info!(rows = p.rows_copied, "backfill complete and caught up");
        }
        sink.update(&p);
    })
}

/// Takes a cutover or rollback request: the engine's step, recorded in the control log with
/// its caller, reason and outcome, and the answer sent back. True when it rolled back.
async fn carry_out(run: &MigrationRun, request: Request) -> bool {
    let Request {
        action,
        caller,
        reason,
        reply,
    } = request;
    let result = match action {
        Action::Cutover => {
            run.set_activity(Activity::CuttingOver);
            run.engine
                .cutover(&run.name, CUTOVER_MAX_LAG_BYTES, ReverseSync::Start)
                .await
                .map(Done::Cutover)
        }
        Action::Rollback => {
            run.set_activity(Activity::RollingBack);
            run.engine.rollback(&run.name).await.map(Done::Rollback)
        }
        Action::RollbackCutover => {
            run.set_activity(Activity::RollingBack);
            run.engine
                .rollback_from(&run.name, Some(Phase::CutOver))
                .await
                .map(Done::Rollback)
        }
    };
    let outcome = match &result {
        Ok(Done::Cutover(r)) if r.already => "already cut over".to_string(),
        Ok(Done::Rollback(r)) if r.already_done => "already rolled back".to_string(),
        Ok(Done::Cutover(r)) => format!("cut over; table locked {:.0} ms", r.lock_ms),
        Ok(Done::Rollback(r)) => format!(
            "rolled back from {} to {} in {:.2} s",
            r.from, r.to, r.seconds
        ),
        Err(e) => format!("failed: {e}"),
    };
    match &result {
        Ok(_) => info!(%caller, %outcome, "{}", action.as_str()),
        Err(e) => warn!(%caller, error = %e, "{} failed", action.as_str()),
    }
    let automatic = caller == super::automation::CALLER;
    let rolled_back = matches!(&result, Ok(Done::Rollback(r)) if !r.already_done);
    let event = ControlEvent {
        at: unix_now(),
        action: action.as_str().into(),
        caller,
        reason: reason.clone(),
        outcome: Some(outcome),
    };
    run.store_event(&event).await;
    {
        // One lock: whoever reads the view sees the request in the control log together with
        // what it changed (a reader that saw `automatic_rollbacks` go up, and no rollback in
        // the log, was a race).
        let mut view = run.view();
        match &result {
            Ok(Done::Cutover(r)) if !r.already => {
                view.automation.watch_checks = 0;
                view.automation.watching_until = run
                    .automation
                    .watch
                    .as_ref()
                    .map(|_| unix_now() + run.automation.watch_for.as_secs_f64());
            }
            _ if rolled_back => {
                view.automation.watching_until = None;
                if automatic {
                    view.automation.automatic_rollbacks += 1;
                    view.automation.last_automatic_rollback = reason.clone();
                }
            }
            _ => {}
        }
        push_event(&mut view, event);
    }
    if let Some(reply) = reply {
        let _ = reply.send(result);
    }
    rolled_back
}

/// The requests read from the state store, with those taken meanwhile that it did not hold
/// yet (the same action from the same caller within a second is the same request: the store
/// keeps milliseconds), in time order, the last [`KEPT_EVENTS`].
fn merge_events(stored: Vec<ControlEvent>, taken: Vec<ControlEvent>) -> Vec<ControlEvent> {
    let mut events = stored;
    for e in taken {
        add_once(&mut events, e);
    }
    events.sort_by(|a, b| a.at.total_cmp(&b.at));
    keep_last(&mut events);
    events
}

/// Adds a request to the view's control log unless it holds it already, keeping the last
/// [`KEPT_EVENTS`].
fn push_event(view: &mut View, event: ControlEvent) {
    add_once(&mut view.events, event);
    keep_last(&mut view.events);
}

/// Adds `e` to `events` unless they hold it already: the same action from the same caller
/// within a second is the same request (the store keeps milliseconds, and stamps it with its
/// own clock).
fn add_once(events: &mut Vec<ControlEvent>, e: ControlEvent) {
    let known = events
        .iter()
        .any(|s| s.action == e.action && s.caller == e.caller && (s.at - e.at).abs() < 1.0);
    if !known {
        events.push(e);
    }
}

/// Drops all but the last [`KEPT_EVENTS`] requests.
fn keep_last(events: &mut Vec<ControlEvent>) {
    let excess = events.len().saturating_sub(KEPT_EVENTS);
    events.drain(..excess);
}

/// One verify pass of `kind` (an incremental one runs full when no pass is stored); returns
/// the kind that ran, `None` when it was abandoned. After shutdown it gets [`VERIFY_GRACE`] to
/// finish, then is dropped.
async fn verify(
    run: &MigrationRun,
    kind: VerifyKind,
    shutdown: &watch::Receiver<bool>,
) -> Result<Option<VerifyKind>, EngineError> {
    let mut stop = shutdown.clone();
    let grace = async {
        let _ = stop.wait_for(|s| *s).await;
        tokio::time::sleep(VERIFY_GRACE).await;
    };
    let counters = engine::verify::VerifyCounters::default();
    let report = tokio::select! {
        r = run.engine.verify_kind(&run.name, kind, &counters) => r?,
        _ = grace => {
            warn!("verify pass abandoned at shutdown; it recorded nothing");
            return Ok(None);
        }
    };
    let pass = VerifyPass::of(&report);
    if pass.passed {
        info!(
            kind = %pass.kind,
            rows = pass.rows_checked,
            ranges = pass.ranges,
            ranges_total = pass.ranges_total,
            seconds = pass.seconds,
            "verify pass: no divergence"
        );
    } else {
        warn!(
            rows = pass.rows_checked,
            divergent = pass.divergent_rows,
            "verify pass: rows diverge"
        );
    }
    let mut view = run.view();
    let ran = pass.kind;
    view.last_verify = Some(pass);
    view.verify_passes += 1;
    Ok(Some(ran))
}

/// Progress of the running sync, into the view.
struct ViewProgress(Arc<MigrationRun>);

impl ProgressSink for ViewProgress {
    fn update(&mut self, p: &SyncProgress) {
        let mut view = self.0.view();
        if p.rows_per_second > 0.0 {
            view.backfill_rate = Some(p.rows_per_second);
        }
        view.progress = Some(p.clone());
    }
}

/// Requests kept in the view (and read back at start).
const KEPT_EVENTS: usize = 100;

pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(at: f64, action: &str) -> ControlEvent {
        ControlEvent {
            at,
            action: action.into(),
            caller: "127.0.0.1:5000".into(),
            reason: None,
            outcome: None,
        }
    }

    #[test]
    fn a_request_the_log_read_found_stored_is_listed_once_when_it_reaches_the_view() {
        // The runner's start read the request from the store (its own clock, milliseconds)
        // before the API handler pushed it to the view.
        let mut view = View {
            events: merge_events(vec![event(20.014, "pause")], Vec::new()),
            ..View::default()
        };
        push_event(&mut view, event(20.000_113_6, "pause"));
        let actions: Vec<&str> = view.events.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, ["pause"]);
        // A pause a second later is another request.
        push_event(&mut view, event(21.5, "pause"));
        assert_eq!(view.events.len(), 2);
    }

    #[test]
    fn a_request_taken_while_the_log_was_read_is_kept_once() {
        let stored = vec![
            event(10.0, "daemon started"),
            event(20.0004, "throttle 5 rows/s"),
        ];
        // The throttle was stored before the read (its time rounded to ms); the pause was
        // taken after the read.
        let taken = vec![event(20.000_412, "throttle 5 rows/s"), event(21.5, "pause")];
        let merged = merge_events(stored, taken);
        let actions: Vec<&str> = merged.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, ["daemon started", "throttle 5 rows/s", "pause"]);
    }
}
