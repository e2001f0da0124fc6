//! `[automation]`: the daemon's own cutover once the gates held long enough, and the watch
//! after a cutover that rolls back on its own. It decides only when to ask: it submits the same
//! requests as the HTTP API, and the runner takes the steps under the runner lock.

use super::any_engine::{WatchError, WatchSession};
use super::runner::{unix_now, Action, MigrationRun, Request, View, CUTOVER_MAX_LAG_BYTES};
use engine::spec::{Automation, CutoverMode};
use engine::state::{PhaseChange, Transition};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::{info, info_span, warn, Instrument};

/// The caller the control log names for what the automation asked.
pub const CALLER: &str = "automation";
/// How often the gates are looked at and the watch runs.
const TICK: Duration = Duration::from_secs(1);
/// A watch query that takes longer fails (and so rolls back).
const WATCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the migration's automation until shutdown: nothing when the file has none.
pub async fn automate(run: Arc<MigrationRun>, mut shutdown: watch::Receiver<bool>) {
    let automation = run.automation.clone();
    if automation.cutover == CutoverMode::Manual && automation.watch.is_none() {
        return;
    }
    let span = info_span!("automation", migration = %run.name);
    async move {
        let mut gates = Gates::default();
        let mut session: Option<WatchSession> = None;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            if run.request_pending() {
                continue;
            }
            let (phase, watching_until) = {
                let mut view = run.view();
                let phase = view.status.as_ref().map(|s| s.phase.clone());
                // A cutover this process did not make (before a restart, or `splice cutover`
                // while paused) is watched too, for what is left of `watch_for`.
                if automation.watch.is_some()
                    && view.automation.watching_until.is_none()
                    && phase.as_deref() == Some("cut_over")
                {
                    let until = view
                        .status
                        .as_ref()
                        .and_then(|s| watch_until(&s.history, automation.watch_for))
                        .filter(|until| *until > unix_now());
                    if let Some(until) = until {
                        info!(
                            left_s = (until - unix_now()).round(),
                            "watching the cutover (it is younger than watch_for)"
                        );
                        view.automation.watching_until = Some(until);
                    }
                }
                (phase, view.automation.watching_until)
            };
            if let (Some(until), Some(sql)) = (watching_until, &automation.watch) {
                if unix_now() >= until {
                    info!(
                        watched_for = %humantime::format_duration(automation.watch_for),
                        "the watch held; rolling back is up to people from here"
                    );
                    run.view().automation.watching_until = None;
                } else if phase.as_deref() == Some("cut_over") {
                    watch_once(&run, sql, &mut session).await;
                }
                continue;
            }
            if automation.cutover == CutoverMode::Auto {
                gates.look(&run, &automation, Instant::now());
            }
        }
    }
    .instrument(span)
    .await
}

/// One run of the watch query; a failure asks the runner to roll back from cutover.
async fn watch_once(run: &MigrationRun, sql: &str, session: &mut Option<WatchSession>) {
    match check(run, sql, session).await {
        Ok(()) => run.view().automation.watch_checks += 1,
        Err(why) => {
            warn!(reason = %why, "the watch failed: rolling back");
            let request = Request {
                action: Action::RollbackCutover,
                caller: CALLER.into(),
                reason: Some(why),
                reply: None,
            };
            // Another request waits already: the watch asks again at the next tick.
            let _ = run.submit(request);
        }
    }
}

/// Runs the watch: Ok when it returned true; otherwise why not. A failed session is dropped
/// so the next check connects again.
async fn check(
    run: &MigrationRun,
    sql: &str,
    session: &mut Option<WatchSession>,
) -> Result<(), String> {
    if session.as_ref().is_none_or(|s| s.is_closed()) {
        *session = Some(WatchSession::connect(&run.url, WATCH_TIMEOUT).await?);
    }
    let Some(s) = session.as_mut() else {
        return Err("the watch has no session".into());
    };
    let answer = match tokio::time::timeout(WATCH_TIMEOUT, s.ask(sql)).await {
        Ok(answer) => answer,
        Err(_) => {
            *session = None;
            return Err(format!(
                "the watch gave no answer within {}s",
                WATCH_TIMEOUT.as_secs()
            ));
        }
    };
    match answer {
        Ok(Some(true)) => Ok(()),
        Ok(Some(false)) => Err(format!("the watch returned false: {sql}")),
        Ok(None) => Err(format!("the watch returned NULL: {sql}")),
        Err(WatchError::Failed(e)) => {
            *session = None;
            Err(format!("the watch failed: {e}"))
        }
        Err(WatchError::NotBoolean(e)) => {
            Err(format!("the watch returned no boolean ({e}): {sql}"))
        }
        Err(WatchError::Rows(n)) => Err(format!(
            "the watch returned {n} rows, not one boolean: {sql}"
        )),
    }
}

/// The automatic cutover's gates: since when they have held together.
#[derive(Default)]
struct Gates {
    held_since: Option<Instant>,
}

impl Gates {
    /// Looks at the gates once; asks for the cutover when they held for `hold` inside the
    /// window.
    fn look(&mut self, run: &MigrationRun, automation: &Automation, now: Instant) {
        let blocker = {
            let view = run.view();
            blocked_by(&view, run.paused())
        };
        let held = match blocker {
            Some(_) => {
                self.held_since = None;
                None
            }
            None => Some(now.duration_since(*self.held_since.get_or_insert(now))),
        };
        let outside = automation
            .window
            .filter(|w| !w.contains(minute_of_day_utc()))
            .map(|w| format!("the window {w}"));
        let ready = held.is_some_and(|h| h >= automation.hold) && outside.is_none();
        {
            let mut view = run.view();
            view.automation.gates_held_seconds = held.map(|h| h.as_secs_f64());
            view.automation.disarmed = disarmed(&view);
            view.automation.waiting_for = match (&blocker, held) {
                (Some(b), _) => Some(b.clone()),
                (None, Some(h)) if h < automation.hold => Some(format!(
                    "the gates to hold for {} (held {})",
                    humantime::format_duration(automation.hold),
                    humantime::format_duration(Duration::from_secs(h.as_secs()))
                )),
                _ => outside.clone(),
            };
        }
        if !ready {
            return;
        }
        let reason = format!(
            "verified without divergence, capture lag under {CUTOVER_MAX_LAG_BYTES} bytes, for {}",
            humantime::format_duration(automation.hold)
        );
        info!(%reason, "the gates held: cutting over");
        let request = Request {
            action: Action::Cutover,
            caller: CALLER.into(),
            reason: Some(reason),
            reply: None,
        };
        if run.submit(request).is_ok() {
            // A cutover the engine refuses (lag grew meanwhile) needs the gates to hold again.
            self.held_since = None;
        }
    }
}

/// What keeps the gates shut, if anything.
fn blocked_by(view: &View, paused: bool) -> Option<String> {
    if let Some(why) = disarmed(view) {
        return Some(why);
    }
    if paused {
        return Some("a resume (paused over the API)".into());
    }
    let Some(status) = view.status.as_ref() else {
        return Some("a status read".into());
    };
    if status.phase != "verified" {
        return Some(format!("phase verified (it is {})", status.phase));
    }
    match &view.last_verify {
        None => return Some("a verify pass by this daemon".into()),
        Some(v) if !v.passed || v.divergent_rows > 0 => {
            return Some(format!(
                "a verify pass without divergence (the last found {} rows)",
                v.divergent_rows
            ))
        }
        Some(_) => {}
    }
    let lag = view
        .progress
        .as_ref()
        .map(|p| p.capture_lag_bytes)
        .or(status.capture_lag_bytes.map(|l| l.max(0) as u64));
    match lag {
        Some(l) if l <= CUTOVER_MAX_LAG_BYTES => None,
        Some(l) => Some(format!(
            "capture lag under {CUTOVER_MAX_LAG_BYTES} bytes (it is {l})"
        )),
        None => Some("a capture lag measurement".into()),
    }
}

/// When the watch of the last cutover in `history` ends (Unix time), from the cutover's time.
fn watch_until(history: &[Transition], watch_for: Duration) -> Option<f64> {
    let cutover = history
        .iter()
        .rev()
        .find(|t| t.to == "cut_over" && !PhaseChange::is_rollback(&t.figures))?;
    let at = humantime::parse_rfc3339(&cutover.at)
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    Some((at + watch_for).as_secs_f64())
}

/// Automatic cutover stops for good once a cutover was rolled back (by the watch or by a
/// person): cutting over again on its own would repeat what failed. The state store's history
/// keeps this across restarts.
fn disarmed(view: &View) -> Option<String> {
    let status = view.status.as_ref()?;
    status
        .history
        .iter()
        .rev()
        .find(|t| t.from.as_deref() == Some("cut_over") && PhaseChange::is_rollback(&t.figures))
        .map(|t| {
            format!(
                "a person: a cutover was rolled back at {}, so the daemon no longer cuts over \
                 on its own (POST …/cutover does)",
                t.at
            )
        })
}

/// Minutes after 00:00 UTC now.
fn minute_of_day_utc() -> u16 {
    ((unix_now() as u64 % 86_400) / 60) as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn transition(at: &str, from: &str, to: &str, figures: serde_json::Value) -> Transition {
        Transition {
            at: at.into(),
            actor: "test".into(),
            from: Some(from.into()),
            to: to.into(),
            figures,
        }
    }

    #[test]
    fn the_watch_runs_for_watch_for_from_the_last_cutover_in_the_history() {
        let history = [
            transition(
                "2026-12-01T10:00:00.000Z",
                "verified",
                "cut_over",
                json!({}),
            ),
            transition(
                "2026-12-01T10:01:00.000Z",
                "cut_over",
                "syncing",
                json!({ "rollback": true }),
            ),
            transition(
                "2026-12-01T11:00:00.250Z",
                "verified",
                "cut_over",
                json!({}),
            ),
        ];
        let until = watch_until(&history, Duration::from_secs(300)).expect("a cutover");
        let at = humantime::parse_rfc3339("2026-12-01T11:05:00.250Z")
            .expect("time")
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs_f64();
        assert_eq!(until, at);
        // A rollback from contract lands in cut_over too; it is no cutover to watch.
        let restored = [transition(
            "2026-12-01T12:00:00.000Z",
            "contracted",
            "cut_over",
            json!({ "rollback": true }),
        )];
        assert_eq!(watch_until(&restored, Duration::from_secs(300)), None);
        assert_eq!(watch_until(&[], Duration::from_secs(300)), None);
    }
}
