//! The impact budget ([`ImpactBudget`]): a probe commits a tiny heartbeat write on the source
//! every 100 ms, on the same durability path as the application's commits, and a controller
//! compares its latency with the latency measured while splice stood still. While the latency
//! is above the budget (`max_latency_increase`), the backfill and the applier slow down,
//! multiplicatively; once it is comfortably within, they speed up again, additively (AIMD).
//!
//! The baseline comes from *quiet windows*: at the start and then once a minute the backfill
//! and the applier stand still for eight quick heartbeats (tens of milliseconds). So a migration
//! that starts while the application is already busy gets the application's own latency as its
//! baseline, not an idle server's, and the baseline follows the application's load as it
//! changes. Without quiet windows yet, a rolling low percentile of per-second medians stands in.

use crate::adapter::CommitProbe;
use crate::state::Impact;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the probe commits its heartbeat.
pub const BEAT_EVERY: Duration = Duration::from_millis(100);
/// How often it beats during a quiet window: nearly back to back, so the window is short
/// (8 commits, a few tens of milliseconds on a durable server).
const QUIET_BEAT_EVERY: Duration = Duration::from_millis(2);
/// Beats a quiet window collects.
const QUIET_BEATS: usize = 8;
/// A quiet window ends after this even with fewer beats (a slow probe).
pub const QUIET_AT_MOST: Duration = Duration::from_secs(1);
/// How often a quiet window is taken.
const QUIET_EVERY: Duration = Duration::from_secs(60);
/// Quiet windows older than this no longer count.
const QUIET_KEPT: Duration = Duration::from_secs(300);
/// The window of the current latency (its median).
const CURRENT_WINDOW: Duration = Duration::from_secs(1);
/// Beats the current window needs before it counts.
const CURRENT_BEATS: usize = 5;
/// The window of the rolling per-second medians (the fallback baseline).
const ROLLING: Duration = Duration::from_secs(300);
/// How often the pace is decided.
const DECIDE_EVERY: Duration = Duration::from_millis(500);
/// After a decrease, the next may come only this much later: the last one must show first.
const COOLDOWN: Duration = Duration::from_secs(1);
/// The slowest pace: the backfill copies 2% of the time.
pub const MIN_PACE: f64 = 0.02;
/// The pace a sync starts at: a tenth, until the probe says more is affordable (it reaches
/// full pace in under ten seconds then, or at once for a table nobody writes). It was a half:
/// beside a saturating application the first halvings, one a second, took four seconds to
/// bring the pace down to what the budget allowed, and the application lost a third of its
/// throughput meanwhile.
const START_PACE: f64 = 0.1;
/// The additive increase per decision.
const STEP_UP: f64 = 0.05;
/// Latency differences below this are measurement jitter (a wakeup on a busy scheduler),
/// milliseconds: the budget allows at least this much over the baseline. It was 0.2 ms: on a
/// MariaDB server without `sync_binlog` a commit takes about 0.3 ms, so a 20% budget (0.06 ms)
/// allowed 0.2 ms, a 61% increase, and a 10% budget the same.
const JITTER_MS: f64 = 0.05;
/// Once capture has been seen to receive no write to the migrated table for this long, the
/// application is not writing it: nobody's commits wait behind the backfill, so it runs at
/// full pace. Short, so that a backfill of a table nobody writes runs at the starting pace for
/// well under a second; an application writing the table at all writes it more often.
pub const APPLICATION_IDLE: Duration = Duration::from_millis(500);

/// The controller behind [`ImpactBudget`]: fed probe latencies, it keeps the baseline and the
/// current figure and decides the pace. Pure (time is passed in), so it is tested without a
/// server.
#[derive(Debug)]
pub struct Controller {
    increase: f64,
    /// Beats outside quiet windows within [`CURRENT_WINDOW`]: (when, ms).
    recent: VecDeque<(Instant, f64)>,
    /// Per-second medians of non-quiet beats within [`ROLLING`].
    seconds: VecDeque<(Instant, f64)>,
    bucket: Vec<f64>,
    bucket_started: Option<Instant>,
    /// Finished quiet windows: (when, beats in ms).
    quiet: VecDeque<(Instant, Vec<f64>)>,
    /// The quiet window being collected.
    quiet_now: Option<(Instant, Vec<f64>)>,
    last_quiet: Option<Instant>,
    pace: f64,
    /// The last decision found the latency above the budget: (the latency, the budget) it
    /// judged by and its baseline. What status says is the decision's, never a figure taken between decisions
    /// (which could claim holding back while the pace is still full).
    over: Option<(f64, f64, f64)>,
    last_decision: Option<Instant>,
    last_decrease: Option<Instant>,
    problem: Option<String>,
    /// The count of the migrated table's keys capture saw written, when it last moved, and when
    /// it was last reported unmoved; `None` until the sync reports one (the application then
    /// counts as writing).
    application: Option<Pulse>,
    /// The last decision found the application idle (so nothing holds back).
    idle: bool,
}

/// The application's pulse: capture's count of the migrated table's written keys (applied,
/// or left to the backfill).
#[derive(Debug, Clone, Copy)]
struct Pulse {
    written: u64,
    /// When the count was first reported at `written`.
    moved: Instant,
    /// When it was last reported, still at `written`.
    still: Instant,
}

impl Controller {
    /// A controller for a budget of `increase` (0.2: 20% over the baseline).
    pub fn new(increase: f64) -> Controller {
        Controller {
            increase,
            recent: VecDeque::new(),
            seconds: VecDeque::new(),
            bucket: Vec::new(),
            bucket_started: None,
            quiet: VecDeque::new(),
            quiet_now: None,
            last_quiet: None,
            pace: START_PACE,
            over: None,
            last_decision: None,
            last_decrease: None,
            problem: None,
            application: None,
            idle: false,
        }
    }

    /// How many of the migrated table's keys capture has seen written so far (a counter: keys
    /// applied and keys left to the backfill, which a write ahead of it leaves uncounted
    /// otherwise), at `now`: while it is reported standing still for [`APPLICATION_IDLE`] the
    /// pace is full.
    pub fn application_writes(&mut self, written: u64, now: Instant) {
        match &mut self.application {
            Some(pulse) if pulse.written == written => pulse.still = now,
            _ => {
                self.application = Some(Pulse {
                    written,
                    moved: now,
                    still: now,
                })
            }
        }
    }

    /// Whether the application has not written the migrated table for [`APPLICATION_IDLE`],
    /// as a report of the count has shown. Time passing alone proves nothing: capture applies
    /// between backfill chunks, so during a long chunk the count cannot move, whoever writes.
    fn application_idle(&self) -> bool {
        self.application
            .as_ref()
            .is_some_and(|p| p.still.duration_since(p.moved) > APPLICATION_IDLE)
    }

    /// One heartbeat's commit latency, taken at `now`.
    pub fn record(&mut self, ms: f64, now: Instant) {
        if let Some((_, beats)) = &mut self.quiet_now {
            beats.push(ms);
            return;
        }
        self.recent.push_back((now, ms));
        while self
            .recent
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > CURRENT_WINDOW)
        {
            self.recent.pop_front();
        }
        let started = *self.bucket_started.get_or_insert(now);
        self.bucket.push(ms);
        if now.duration_since(started) >= Duration::from_secs(1) {
            if let Some(m) = median(&self.bucket) {
                self.seconds.push_back((now, m));
            }
            self.bucket.clear();
            self.bucket_started = Some(now);
            while self
                .seconds
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) > ROLLING)
            {
                self.seconds.pop_front();
            }
        }
    }

    /// The probe failed: the budget cannot judge, and says why.
    pub fn probe_failed(&mut self, why: String) {
        self.problem = Some(why);
    }

    /// Whether a quiet window is due (none yet, or the last one a minute ago).
    pub fn quiet_due(&self, now: Instant) -> bool {
        self.problem.is_none()
            && self
                .last_quiet
                .is_none_or(|t| now.duration_since(t) >= QUIET_EVERY)
    }

    /// Starts a quiet window: the caller stands still until [`Controller::quiet_done`].
    pub fn begin_quiet(&mut self, now: Instant) {
        self.last_quiet = Some(now);
        self.quiet_now = Some((now, Vec::new()));
    }

    /// Whether the quiet window collected enough beats (or ran out of time); ends it if so.
    pub fn quiet_done(&mut self, now: Instant) -> bool {
        let Some((started, beats)) = &self.quiet_now else {
            return true;
        };
        let enough = beats.len() >= QUIET_BEATS;
        if !enough && now.duration_since(*started) < QUIET_AT_MOST && self.problem.is_none() {
            return false;
        }
        if let Some((started, beats)) = self.quiet_now.take() {
            if beats.len() >= QUIET_BEATS / 2 {
                self.quiet.push_back((started, beats));
            }
        }
        while self.quiet.len() > 2
            || self
                .quiet
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) > QUIET_KEPT)
        {
            self.quiet.pop_front();
        }
        true
    }

    /// Whether a quiet window is being collected (the probe then beats faster).
    pub fn in_quiet(&self) -> bool {
        self.quiet_now.is_some()
    }

    /// The latency without splice's load, milliseconds: the median of the last two quiet
    /// windows' beats, else the 10th percentile of the last five minutes' per-second medians.
    pub fn baseline(&self) -> Option<f64> {
        let quiet: Vec<f64> = self
            .quiet
            .iter()
            .flat_map(|(_, b)| b.iter().copied())
            .collect();
        if quiet.len() >= QUIET_BEATS / 2 {
            return median(&quiet);
        }
        if self.seconds.len() >= 10 {
            let s: Vec<f64> = self.seconds.iter().map(|(_, m)| *m).collect();
            return percentile(&s, 0.10);
        }
        None
    }

    /// The latency now, milliseconds: the median of the last second's beats.
    pub fn current(&self) -> Option<f64> {
        if self.recent.len() < CURRENT_BEATS {
            return None;
        }
        let r: Vec<f64> = self.recent.iter().map(|(_, m)| *m).collect();
        median(&r)
    }

    /// The budget, milliseconds: the baseline plus the allowed increase (at least the
    /// measurement jitter).
    pub fn budget(&self) -> Option<f64> {
        self.baseline()
            .map(|b| b + (b * self.increase).max(JITTER_MS))
    }

    /// Decides the pace at `now` (at most every 500 ms; in between it returns the last one):
    /// halved while the latency is above the budget (at most once a second), raised by 0.05
    /// while it is within half the allowed increase, held in between.
    pub fn decide(&mut self, now: Instant) -> f64 {
        if self
            .last_decision
            .is_some_and(|t| now.duration_since(t) < DECIDE_EVERY)
        {
            return self.pace;
        }
        self.last_decision = Some(now);
        self.idle = self.application_idle();
        if self.idle {
            // The heartbeat's latency may rise with the backfill's own writes, but no
            // application commit waits: full pace. Writes coming back meet the AIMD from here.
            self.pace = 1.0;
            self.over = None;
            return self.pace;
        }
        // A probe that failed, or whose last beat is old (stalled), gives nothing to judge by.
        let fresh = self
            .recent
            .back()
            .is_some_and(|(t, _)| now.duration_since(*t) <= 2 * CURRENT_WINDOW);
        if self.problem.is_some() || !fresh {
            return self.pace;
        }
        let (Some(base), Some(current)) = (self.baseline(), self.current()) else {
            return self.pace;
        };
        let allowed = (base * self.increase).max(JITTER_MS);
        if current > base + allowed {
            self.over = Some((current, base + allowed, base));
            if self
                .last_decrease
                .is_none_or(|t| now.duration_since(t) >= COOLDOWN)
            {
                self.pace = (self.pace / 2.0).max(MIN_PACE);
                self.last_decrease = Some(now);
            }
        } else {
            self.over = None;
            if current <= base + allowed / 2.0 {
                self.pace = (self.pace + STEP_UP).min(1.0);
            }
        }
        self.pace
    }

    /// The pace in force (1: full speed).
    pub fn pace(&self) -> f64 {
        self.pace
    }

    /// What status, the progress line and the metrics show; `None` before the probe has a
    /// baseline and a current figure. It holds back while the last decision found the latency
    /// above the budget and while the pace comes back up after that (the ramp-up from half
    /// pace at the start, with the latency never above the budget, is not reported as holding
    /// back).
    pub fn figures(&self) -> Option<Impact> {
        let (baseline, current, budget) = (self.baseline()?, self.current()?, self.budget()?);
        let holding_back = if self.idle {
            None
        } else if let Some((over, limit, base)) = self.over {
            Some(format!(
                "commit latency {over:.1} ms > budget {limit:.1} ms (baseline {base:.1} \
                 ms +{:.0}%)",
                self.increase * 100.0
            ))
        } else if self.pace < 1.0 && self.last_decrease.is_some() {
            Some(format!(
                "speeding up: commit latency {current:.1} ms within budget {budget:.1} ms"
            ))
        } else {
            None
        };
        Some(Impact {
            baseline_ms: baseline,
            current_ms: current,
            budget_ms: budget,
            pace: self.pace,
            holding_back,
        })
    }
}

fn median(v: &[f64]) -> Option<f64> {
    percentile(v, 0.5)
}

fn percentile(v: &[f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let i = ((s.len() - 1) as f64 * q).round() as usize;
    s.get(i).copied()
}

/// A running sync's impact budget: its probe (a thread of its own, which ends when this is
/// dropped) and the controller the backfill and the applier ask for their pace.
/// [`ImpactBudget::off`] when the budget is off: full pace, no probe.
pub struct ImpactBudget {
    controller: Option<Arc<Mutex<Controller>>>,
    /// Dropped with the budget, which tells the probe's thread to end.
    _stop: Option<tokio::sync::watch::Sender<()>>,
}

impl ImpactBudget {
    /// No budget: full pace, no probe.
    pub fn off() -> ImpactBudget {
        ImpactBudget {
            controller: None,
            _stop: None,
        }
    }

    /// Starts the probe of `migration` (beating every 100 ms) under a budget of `increase`
    /// (`None`: [`ImpactBudget::off`]). A probe that cannot start or fails later is logged and
    /// leaves the pace where it was: the budget never fails a sync.
    ///
    /// The probe runs on a thread of its own, with a runtime and a session of its own: a beat
    /// timed on the sync's runtime would also count the time that runtime spent on other work
    /// (decoding the change stream, building a batch) before it got back to the beat, and
    /// that is splice's load, not the database's commit latency. Measured on a saturated
    /// PostgreSQL: beats timed on the sync's runtime read 0.8–0.9 ms in a quiet window while
    /// the application's own commits took 0.47 ms, so a budget of +20% let the application's
    /// latency rise by 60%.
    pub async fn start<A: CommitProbe>(
        adapter: &A,
        migration: &str,
        increase: Option<f64>,
    ) -> ImpactBudget {
        let Some(increase) = increase else {
            return ImpactBudget::off();
        };
        let controller = Arc::new(Mutex::new(Controller::new(increase)));
        match spawn_probe(adapter, migration, controller.clone()).await {
            Ok(stop) => ImpactBudget {
                controller: Some(controller),
                _stop: Some(stop),
            },
            Err(why) => {
                tracing::warn!(error = %why, "the impact budget's probe cannot start; the sync runs at full pace");
                ImpactBudget::off()
            }
        }
    }

    /// Whether a budget is in force.
    pub fn is_on(&self) -> bool {
        self.controller.is_some()
    }

    /// Tells the budget how many of the migrated table's keys capture has seen written so far
    /// (applied or left to the backfill): the application's writes. While they stand still the
    /// pace is full (see [`Controller::application_writes`]).
    pub fn application_writes(&self, written: u64) {
        if let Some(c) = &self.controller {
            lock(c).application_writes(written, Instant::now());
        }
    }

    /// The pace to run at now (1 when off).
    pub fn pace(&self) -> f64 {
        self.controller
            .as_ref()
            .map_or(1.0, |c| lock(c).decide(Instant::now()))
    }

    /// What the budget measured and decided, when it has figures.
    pub fn figures(&self) -> Option<Impact> {
        self.controller.as_ref().and_then(|c| lock(c).figures())
    }

    /// Starts a quiet window when one is due; the caller then stands still (applying nothing,
    /// copying nothing) until [`ImpactBudget::quiet_done`].
    pub fn begin_quiet_if_due(&self) -> bool {
        let Some(c) = &self.controller else {
            return false;
        };
        let mut c = lock(c);
        let now = Instant::now();
        if c.quiet_due(now) {
            c.begin_quiet(now);
            true
        } else {
            false
        }
    }

    /// Whether the quiet window is over (it ends itself once it has its beats).
    pub fn quiet_done(&self) -> bool {
        self.controller
            .as_ref()
            .is_none_or(|c| lock(c).quiet_done(Instant::now()))
    }

    /// Stands still for a quiet window when one is due (eight heartbeats, at most a second).
    pub async fn quiet_window_if_due(&self) {
        if !self.begin_quiet_if_due() {
            return;
        }
        while !self.quiet_done() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// Opens the probe of `migration` on a thread of its own (see [`ImpactBudget::start`]), which
/// beats into `c` until the returned sender is dropped.
async fn spawn_probe<A: CommitProbe>(
    adapter: &A,
    migration: &str,
    c: Arc<Mutex<Controller>>,
) -> Result<tokio::sync::watch::Sender<()>, String> {
    let (opened_tx, opened) = tokio::sync::oneshot::channel();
    let (stop, mut stopped) = tokio::sync::watch::channel(());
    let (adapter, migration) = (adapter.clone(), migration.to_string());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    std::thread::Builder::new()
        .name("splice-probe".into())
        .spawn(move || {
            runtime.block_on(async move {
                let probe = match adapter.open_probe(&migration).await {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = opened_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = opened_tx.send(Ok(()));
                // The budget dropped (the sync is over) ends the beats wherever they are: a
                // beat still waiting on the server is abandoned with its session.
                tokio::select! {
                    _ = beat::<A>(probe, &c) => {}
                    _ = stopped.changed() => {}
                }
            })
        })
        .map_err(|e| e.to_string())?;
    opened
        .await
        .unwrap_or_else(|_| Err("the probe's thread ended before it started".into()))?;
    Ok(stop)
}

/// Commits a heartbeat every 100 ms (every 2 ms in a quiet window) and records its latency
/// in `c`, until a beat fails.
async fn beat<A: CommitProbe>(mut probe: A::Probe, c: &Mutex<Controller>) {
    loop {
        let t = Instant::now();
        let beat = A::beat(&mut probe).await;
        let took = t.elapsed();
        let quiet = {
            let mut c = lock(c);
            match beat {
                Ok(()) => {
                    let ms = took.as_secs_f64() * 1000.0;
                    tracing::debug!(ms, quiet = c.in_quiet(), "heartbeat");
                    c.record(ms, Instant::now())
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the impact budget's probe failed; the pace stays where it is");
                    c.probe_failed(e.to_string());
                    return;
                }
            }
            c.in_quiet()
        };
        let every = if quiet { QUIET_BEAT_EVERY } else { BEAT_EVERY };
        tokio::time::sleep(every.saturating_sub(took)).await;
    }
}

fn lock(c: &Mutex<Controller>) -> std::sync::MutexGuard<'_, Controller> {
    // The controller holds plain figures; a panic elsewhere cannot leave it half-written in a
    // way that matters more than a lost beat.
    c.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `secs` seconds of beats of `ms` every 100 ms from `*t`, deciding after each.
    fn run(c: &mut Controller, t: &mut Instant, secs: u64, ms: f64) -> Vec<f64> {
        let mut paces = Vec::new();
        for _ in 0..secs * 10 {
            *t += BEAT_EVERY;
            c.record(ms, *t);
            paces.push(c.decide(*t));
        }
        paces
    }

    fn quiet(c: &mut Controller, t: &mut Instant, ms: f64) {
        c.begin_quiet(*t);
        for _ in 0..QUIET_BEATS {
            *t += QUIET_BEAT_EVERY;
            c.record(ms, *t);
        }
        assert!(c.quiet_done(*t));
    }

    #[test]
    fn latency_above_the_budget_halves_the_pace_and_within_it_raises_it_again() {
        let mut c = Controller::new(0.2);
        let mut t = Instant::now();
        quiet(&mut c, &mut t, 2.0);
        assert_eq!(c.baseline(), Some(2.0));
        // Within the budget: from the starting pace up to full speed, step by step.
        let paces = run(&mut c, &mut t, 10, 2.1);
        assert_eq!(paces.last().copied(), Some(1.0));
        assert!(c.figures().is_some_and(|f| f.holding_back.is_none()));
        // 3 ms > 2.4 ms: halved, at most once a second, down to the floor.
        let paces = run(&mut c, &mut t, 3, 3.0);
        let lowest = paces.iter().copied().fold(1.0, f64::min);
        assert!((0.125..=0.25).contains(&lowest), "{paces:?}");
        let f = c.figures().expect("figures");
        assert!(f.holding_back.is_some_and(|h| h.contains("> budget")));
        run(&mut c, &mut t, 30, 3.0);
        assert_eq!(c.pace(), MIN_PACE);
        // Back within half the allowed increase: it recovers.
        let paces = run(&mut c, &mut t, 15, 2.1);
        assert_eq!(paces.last().copied(), Some(1.0));
    }

    #[test]
    fn on_a_fast_commit_the_budget_is_the_asked_share_not_the_jitter_floor() {
        // A 0.3 ms commit (MariaDB without sync_binlog): 20% is 0.06 ms over it.
        let mut c = Controller::new(0.2);
        let mut t = Instant::now();
        quiet(&mut c, &mut t, 0.3);
        let budget = c.budget().expect("a budget");
        assert!((budget - 0.36).abs() < 1e-9, "{budget}");
        // 0.45 ms is 50% over: the pace falls, however small the difference in milliseconds.
        let paces = run(&mut c, &mut t, 3, 0.45);
        assert!(paces.last().is_some_and(|p| *p < START_PACE), "{paces:?}");
        // Differences under the jitter floor still count as none: 0.32 ms on a 0.3 ms baseline
        // at 5% (0.015 ms) is within the budget, and the pace recovers.
        let mut c = Controller::new(0.05);
        quiet(&mut c, &mut t, 0.3);
        let paces = run(&mut c, &mut t, 15, 0.32);
        assert_eq!(paces.last().copied(), Some(1.0), "{paces:?}");
    }

    #[test]
    fn holding_back_is_said_only_once_a_decision_has_cut_the_pace() {
        let mut c = Controller::new(0.2);
        let mut t = Instant::now();
        quiet(&mut c, &mut t, 2.0);
        run(&mut c, &mut t, 10, 2.1);
        assert_eq!(c.pace(), 1.0);
        // Beats above the budget, read before the next decision: the pace is still full, so
        // nothing is held back yet, whatever the latest beats say.
        for _ in 0..10 {
            t += Duration::from_millis(40);
            c.record(3.0, t);
        }
        let f = c.figures().expect("figures");
        assert!(f.current_ms > f.budget_ms, "{f:?}");
        assert!(f.holding_back.is_none(), "{f:?}");
        // The decision cuts the pace, and from then on it says so.
        t += DECIDE_EVERY;
        assert!(c.decide(t) < 1.0);
        let f = c.figures().expect("figures");
        assert!(f.holding_back.is_some_and(|h| h.contains("> budget")));
    }

    #[test]
    fn between_half_the_increase_and_the_budget_the_pace_holds_steady() {
        let mut c = Controller::new(0.2);
        let mut t = Instant::now();
        quiet(&mut c, &mut t, 10.0);
        run(&mut c, &mut t, 2, 13.0);
        let held = c.pace();
        assert!(held < START_PACE);
        // 11.5 ms: within the 12 ms budget, above 11 ms: no change either way.
        let paces = run(&mut c, &mut t, 20, 11.5);
        assert!(paces.iter().all(|p| *p == held), "{paces:?}");
    }

    #[test]
    fn a_probe_that_failed_or_stalled_leaves_the_pace_where_it_was() {
        let mut c = Controller::new(0.2);
        let mut t = Instant::now();
        quiet(&mut c, &mut t, 2.0);
        run(&mut c, &mut t, 2, 5.0);
        let held = c.pace();
        // No beat for 5 s: the last second's figures are stale.
        t += Duration::from_secs(5);
        assert_eq!(c.decide(t), held);
        // Fresh beats above the budget, then the probe fails: no further cut on their account.
        run(&mut c, &mut t, 1, 5.0);
        let before = c.pace();
        c.probe_failed("permission denied for table heartbeat".into());
        t += Duration::from_millis(1500);
        assert_eq!(c.decide(t), before);
    }

    #[test]
    fn without_application_writes_the_pace_is_full_and_with_them_the_budget_rules_again() {
        let mut c = Controller::new(0.2);
        let mut t = Instant::now();
        quiet(&mut c, &mut t, 2.0);
        // Latency far above the budget while the application writes: the pace falls.
        for second in 0..3 {
            c.application_writes(second, t);
            run(&mut c, &mut t, 1, 10.0);
        }
        assert!(c.pace() < START_PACE, "{}", c.pace());
        // The application stops writing the table (the count stands still): after
        // APPLICATION_IDLE the backfill's own latency no longer holds it back.
        for _ in 0..6 {
            c.application_writes(2, t);
            run(&mut c, &mut t, 1, 10.0);
        }
        assert_eq!(c.pace(), 1.0);
        assert!(c.figures().is_none_or(|f| f.holding_back.is_none()));
        // It writes again: the budget halves the pace at once.
        c.application_writes(3, t);
        run(&mut c, &mut t, 2, 10.0);
        assert!(c.pace() <= 0.5, "{}", c.pace());
    }

    #[test]
    fn only_a_report_of_the_count_standing_still_makes_the_application_idle() {
        let mut c = Controller::new(0.2);
        let mut t = Instant::now();
        quiet(&mut c, &mut t, 2.0);
        // Chunks of 3 s: the count is reported once per chunk and moved each time (capture
        // applied the application's writes between chunks). Seconds pass between reports with
        // latency over the budget; that alone never counts as idle.
        for applied in 0..4 {
            c.application_writes(applied, t);
            run(&mut c, &mut t, 3, 10.0);
            assert!(c.pace() < START_PACE, "{}", c.pace());
        }
        // It moves once more, then is reported unmoved 300 ms later: not idle yet.
        c.application_writes(4, t);
        let moved = t;
        t += Duration::from_millis(300);
        c.application_writes(4, t);
        t += DECIDE_EVERY;
        c.record(10.0, t);
        assert!(c.decide(t) < START_PACE, "{}", c.pace());
        // Reported unmoved again, more than APPLICATION_IDLE after it moved: full pace.
        c.application_writes(4, t);
        assert!(t.duration_since(moved) > APPLICATION_IDLE);
        t += DECIDE_EVERY;
        c.record(10.0, t);
        assert_eq!(c.decide(t), 1.0);
    }

    #[test]
    fn a_single_slow_beat_does_not_move_the_pace() {
        let mut c = Controller::new(0.2);
        let mut t = Instant::now();
        quiet(&mut c, &mut t, 2.0);
        run(&mut c, &mut t, 10, 2.0);
        assert_eq!(c.pace(), 1.0);
        for i in 0..50 {
            t += BEAT_EVERY;
            c.record(if i % 10 == 0 { 50.0 } else { 2.0 }, t);
            assert_eq!(c.decide(t), 1.0);
        }
    }

    #[test]
    fn the_baseline_follows_the_latest_quiet_windows_not_the_loaded_beats() {
        let mut c = Controller::new(0.2);
        let mut t = Instant::now();
        // The application is busy already when the migration starts: 5 ms without splice.
        quiet(&mut c, &mut t, 5.0);
        run(&mut c, &mut t, 5, 5.5);
        assert_eq!(c.baseline(), Some(5.0));
        assert_eq!(c.budget(), Some(6.0));
        // Later the application is quieter; two new quiet windows replace the first.
        t += QUIET_EVERY;
        assert!(c.quiet_due(t));
        quiet(&mut c, &mut t, 2.0);
        t += QUIET_EVERY;
        quiet(&mut c, &mut t, 2.0);
        assert_eq!(c.baseline(), Some(2.0));
    }

    #[test]
    fn without_quiet_windows_a_low_percentile_of_the_last_minutes_stands_in() {
        let mut c = Controller::new(0.2);
        let mut t = Instant::now();
        assert_eq!(c.baseline(), None);
        run(&mut c, &mut t, 5, 4.0);
        run(&mut c, &mut t, 30, 8.0);
        assert_eq!(c.baseline(), Some(4.0));
    }

    #[test]
    fn under_a_steady_overload_the_pace_settles_instead_of_swinging() {
        // A load whose latency grows with the pace: 2 ms plus 2 ms at full pace. The budget
        // (2.4 ms) holds at pace 0.2; the pace must stay near it, not swing between the ends.
        let mut c = Controller::new(0.2);
        let mut t = Instant::now();
        quiet(&mut c, &mut t, 2.0);
        let mut paces = Vec::new();
        for _ in 0..1200 {
            t += BEAT_EVERY;
            let ms = 2.0 + 2.0 * c.pace();
            c.record(ms, t);
            paces.push(c.decide(t));
        }
        let tail = &paces[600..];
        let max = tail.iter().copied().fold(0.0, f64::max);
        let mean = tail.iter().sum::<f64>() / tail.len() as f64;
        assert!(max <= 0.35, "max pace {max}");
        assert!(mean >= 0.08, "mean pace {mean}");
    }

    /// The probe times the database's commit, not the runtime that started it: a sync's
    /// runtime busy elsewhere (decoding changes, here a task that blocks its only thread for
    /// 30 ms at a time) must not show as commit latency. Timed on that runtime, every beat read
    /// about 30 ms.
    #[tokio::test(flavor = "current_thread")]
    async fn the_probe_times_commits_not_the_runtime_it_was_started_from() {
        let db = crate::memory::Memory::default();
        db.set_commit_latency(Duration::from_millis(1));
        let budget = ImpactBudget::start(&db, "m", Some(0.2)).await;
        assert!(budget.is_on());
        budget.quiet_window_if_due().await;
        let until = Instant::now() + Duration::from_millis(2500);
        while Instant::now() < until {
            std::thread::sleep(Duration::from_millis(30));
            tokio::task::yield_now().await;
        }
        let f = budget.figures().expect("a baseline and a current figure");
        assert!(f.baseline_ms < 10.0, "{f:?}");
        assert!(f.current_ms < 10.0, "{f:?}");
        assert!(db.heartbeats() > 15, "{} heartbeats", db.heartbeats());
    }
}
