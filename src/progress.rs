//! The progress line of `sync` (and of every phase that runs one): what splice is doing right
//! now, fitted to the terminal's width. On a terminal, indicatif draws it and redraws it on a
//! timer (so the time spent in a state keeps counting while splice waits); elsewhere a plain
//! line is printed every few seconds.

use engine::backfill::{ProgressSink, SyncProgress, SyncState};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the line is redrawn on a terminal.
const REDRAW: Duration = Duration::from_millis(200);
/// How often a plain line is printed when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(5);
/// Before this much of a run's backfill has passed, its rate is a probe's, not the sync's.
const RATE_SETTLES_AFTER_S: f64 = 2.0;

/// The last progress reported and since when its state holds.
#[derive(Clone)]
struct Latest {
    progress: Option<SyncProgress>,
    state_since: Instant,
}

/// Called with every update besides drawing it.
type Observer = Box<dyn FnMut(&SyncProgress) + Send>;

/// Draws the line; [`Notes`] print lines of their own above it. Call [`Progress::finish`].
pub struct Progress {
    latest: Arc<Mutex<Latest>>,
    /// Extra work each update does (the demo remembers the highest lag).
    observe: Option<Observer>,
    out: Output,
}

enum Output {
    Terminal(ProgressBar),
    Plain {
        stop: Arc<AtomicBool>,
        printer: Option<std::thread::JoinHandle<()>>,
    },
}

/// Prints a message on a line of its own, never glued to the progress line.
#[derive(Clone)]
pub struct Notes {
    bar: Option<ProgressBar>,
}

impl Notes {
    pub fn note(&self, message: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("{message}")),
            None => eprintln!("{message}"),
        }
    }
}

impl Progress {
    /// A progress line on stderr: drawn in place on a terminal, plain lines otherwise.
    pub fn on_stderr() -> Progress {
        let latest = Arc::new(Mutex::new(Latest {
            progress: None,
            state_since: Instant::now(),
        }));
        let out = if std::io::stderr().is_terminal() {
            Output::Terminal(terminal_bar(latest.clone()))
        } else {
            let stop = Arc::new(AtomicBool::new(false));
            let printer = plain_printer(latest.clone(), stop.clone());
            Output::Plain {
                stop,
                printer: Some(printer),
            }
        };
        Progress {
            latest,
            observe: None,
            out,
        }
    }

    /// Also calls `f` with every update.
    pub fn observing(mut self, f: impl FnMut(&SyncProgress) + Send + 'static) -> Progress {
        self.observe = Some(Box::new(f));
        self
    }

    pub fn notes(&self) -> Notes {
        Notes {
            bar: match &self.out {
                Output::Terminal(bar) => Some(bar.clone()),
                Output::Plain { .. } => None,
            },
        }
    }

    /// Draws the last state once more and leaves it on its own line.
    pub fn finish(&mut self) {
        match &mut self.out {
            Output::Terminal(bar) => {
                if lock(&self.latest).progress.is_some() {
                    bar.finish();
                    // indicatif leaves the cursor at the end of the finished line.
                    eprintln!();
                } else {
                    bar.finish_and_clear();
                }
            }
            Output::Plain { stop, printer } => {
                stop.store(true, Ordering::Relaxed);
                if let Some(p) = printer.take() {
                    let _ = p.join();
                }
                let latest = lock(&self.latest).clone();
                if let Some(p) = &latest.progress {
                    eprintln!(
                        "{}",
                        render_line(p, latest.state_since.elapsed(), usize::MAX)
                    );
                }
            }
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Output::Plain { stop, .. } = &self.out {
            stop.store(true, Ordering::Relaxed);
        }
    }
}

impl ProgressSink for Progress {
    fn update(&mut self, p: &SyncProgress) {
        if let Some(f) = &mut self.observe {
            f(p);
        }
        let mut latest = lock(&self.latest);
        let changed = latest.progress.as_ref().is_none_or(|old| {
            std::mem::discriminant(&old.state) != std::mem::discriminant(&p.state)
        });
        if changed {
            latest.state_since = Instant::now();
        }
        latest.progress = Some(p.clone());
        drop(latest);
        if let Output::Terminal(bar) = &self.out {
            // Redraws now (rate-limited by indicatif), besides the timer's redraws.
            bar.tick();
        }
    }
}

fn lock(latest: &Mutex<Latest>) -> std::sync::MutexGuard<'_, Latest> {
    // A panic while holding it leaves a complete value behind: it is replaced whole.
    latest.lock().unwrap_or_else(|e| e.into_inner())
}

fn terminal_bar(latest: Arc<Mutex<Latest>>) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(10));
    let style = ProgressStyle::with_template("{line}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
        .with_key(
            "line",
            move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
                let latest = lock(&latest).clone();
                if let Some(p) = &latest.progress {
                    // One column spare: a line that fills the last column wraps on some terminals.
                    let width = terminal_width().saturating_sub(1).max(20);
                    let _ = w.write_str(&render_line(p, latest.state_since.elapsed(), width));
                }
            },
        );
    bar.set_style(style);
    bar.enable_steady_tick(REDRAW);
    bar
}

fn terminal_width() -> usize {
    console::Term::stderr()
        .size_checked()
        .map(|(_, cols)| cols as usize)
        .unwrap_or(80)
}

/// Plain lines: every [`PLAIN_EVERY`], and as soon as a new state (a pause, a lock wait) has
/// held for a second, so a log shows each one.
fn plain_printer(latest: Arc<Mutex<Latest>>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut printed: Option<(Instant, std::mem::Discriminant<SyncState>)> = None;
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
            let latest = lock(&latest).clone();
            let Some(p) = &latest.progress else { continue };
            let kind = std::mem::discriminant(&p.state);
            let due = match printed {
                None => true,
                Some((at, _)) if at.elapsed() >= PLAIN_EVERY => true,
                Some((at, last)) => {
                    last != kind
                        && latest.state_since.elapsed() >= Duration::from_secs(1)
                        && at.elapsed() >= Duration::from_secs(1)
                }
            };
            if due {
                eprintln!(
                    "{}",
                    render_line(p, latest.state_since.elapsed(), usize::MAX)
                );
                printed = Some((Instant::now(), kind));
            }
        }
    })
}

/// The progress line for `p`, the state held for `held`, at most `width` columns: the bar and
/// the state always; then, as room allows, rows, rate, ETA, capture lag, applied changes and
/// chunk size.
pub fn render_line(p: &SyncProgress, held: Duration, width: usize) -> String {
    let done = p.backfill_done;
    let fraction = if done {
        1.0
    } else if p.rows_total > 0 {
        (p.rows_copied as f64 / p.rows_total as f64).min(1.0)
    } else {
        0.0
    };
    let bar_cells = if width >= 120 { 20 } else { 10 };
    let filled = if done {
        bar_cells
    } else {
        ((fraction * bar_cells as f64) as usize).min(bar_cells)
    };
    let head = format!(
        "[{}{}] {:>5.1}%",
        "#".repeat(filled),
        "-".repeat(bar_cells - filled),
        fraction * 100.0
    );
    let settled = done || p.elapsed_s >= RATE_SETTLES_AFTER_S;
    let rows = if p.rows_total == 0 && done {
        format!("{} rows", short_count(p.rows_copied))
    } else {
        format!(
            "{}/{} rows",
            short_count(p.rows_copied),
            short_count(p.rows_total.max(p.rows_copied))
        )
    };
    let rate = if done {
        None
    } else if settled {
        Some(format!("{} rows/s", short_count(p.rows_per_second as u64)))
    } else {
        Some("rate ?".to_string())
    };
    let eta = if done {
        None
    } else if settled && p.rows_per_second > 0.0 {
        let left = p.rows_total.saturating_sub(p.rows_copied) as f64 / p.rows_per_second;
        Some(format!(
            "ETA {}",
            short_duration(Duration::from_secs_f64(left.max(0.0)))
        ))
    } else {
        Some("ETA ?".to_string())
    };
    let lag = format!(
        "lag {} {}",
        crate::units::bytes(p.capture_lag_bytes),
        short_duration(Duration::from_millis(p.capture_lag_ms))
    );
    let applied = format!("applied {}", short_count(p.txns_applied));
    let chunk = format!("chunk {}", short_count(p.chunk_size));
    let state = state_text(p, held);

    // Optional fields in the order they give way (last first), shown in display order.
    // No rows at all (cutover's catch-up, a swap back): the row count says nothing.
    let rows = (p.rows_total > 0 || p.rows_copied > 0 || !done).then_some(rows);
    let optional: Vec<(usize, String)> = [rows, rate, eta, Some(lag), Some(applied)]
        .into_iter()
        .chain([(!done).then_some(chunk)])
        .flatten()
        .enumerate()
        .collect();
    let sep = " | ";
    // The state comes first: the other fields take only the room it leaves, and only a state
    // longer than the whole line (a blocking query) is cut.
    let state_room = width.saturating_sub(head.chars().count() + sep.len());
    let fixed = head.chars().count() + sep.len() + state.chars().count().min(state_room);
    let mut room = width.saturating_sub(fixed);
    let mut shown = Vec::new();
    for (i, field) in &optional {
        let need = field.chars().count() + sep.len();
        if need > room {
            break;
        }
        room -= need;
        shown.push((*i, field.clone()));
    }
    let mut line = head;
    for (_, field) in &shown {
        line.push_str(sep);
        line.push_str(field);
    }
    line.push_str(sep);
    let left = width.saturating_sub(line.chars().count());
    line.push_str(&fit(&state, left));
    line
}

/// What splice is doing, in words; once a state has held for 2 s, for how long, right after
/// its first word (so a cut never hides it).
fn state_text(p: &SyncProgress, held_for: Duration) -> String {
    let held = (held_for >= Duration::from_secs(2)).then(|| {
        let secs = held_for.as_secs();
        if secs < 60 {
            format!("{secs}s")
        } else {
            short_duration(Duration::from_secs(secs))
        }
    });
    let text = |verb: &str, rest: String| match &held {
        Some(h) => format!("{verb} {h} {rest}"),
        None => format!("{verb} {rest}"),
    };
    match &p.state {
        SyncState::Starting => "starting capture".into(),
        SyncState::Copying => match &held {
            Some(h) if held_for >= Duration::from_secs(5) => format!("copying (this chunk {h})"),
            _ => "copying".into(),
        },
        SyncState::WaitingForRate { rows_per_second } => text(
            "waiting",
            format!(
                "for the rate limit ({} rows/s)",
                short_count(u64::from(*rows_per_second))
            ),
        ),
        SyncState::Paused { reason } => text("paused", format!("({reason})")),
        SyncState::BlockedOnLock {
            pid,
            application,
            query,
        } => {
            let who = if application.is_empty() {
                format!("pid {pid}")
            } else {
                format!("pid {pid} ({application})")
            };
            text("blocked", format!("on a lock held by {who}: {query}"))
        }
        SyncState::HoldingBack { reason, pace } => text(
            "holding",
            format!("back, pace {:.0}% ({reason})", pace * 100.0),
        ),
        SyncState::Applying => text("applying", "changes".into()),
        SyncState::BuildingIndexes => text("building", "deferred indexes".into()),
        SyncState::CatchingUp => text("catching", "up with capture".into()),
        SyncState::CaughtUp => "caught up".into(),
        SyncState::Following => match p.impact.as_ref().and_then(|i| {
            i.holding_back
                .as_ref()
                .map(|why| format!("following changes, pace {:.0}% ({why})", i.pace * 100.0))
        }) {
            Some(held_back) => held_back,
            None => "following changes".into(),
        },
    }
}

/// `s` cut to `width` characters, ending in `…` when cut.
fn fit(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    if width == 0 {
        return String::new();
    }
    let mut out: String = s.chars().take(width - 1).collect();
    out.push('…');
    out
}

/// `1300000` → `1.3M`, `61000` → `61.0k`, `950` → `950`.
pub fn short_count(n: u64) -> String {
    match n {
        0..=9_999 => n.to_string(),
        10_000..=999_999 => format!("{:.1}k", n as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.1}M", n as f64 / 1e6),
        _ => format!("{:.1}G", n as f64 / 1e9),
    }
}

/// `12 ms`, `3.4s`, `2m05s`, `1h02m`.
pub fn short_duration(d: Duration) -> String {
    let ms = d.as_millis();
    let s = d.as_secs();
    if ms < 1000 {
        format!("{ms} ms")
    } else if s < 60 {
        format!("{:.1}s", d.as_secs_f64())
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    }
}

/// One progress line of verify: what it has hashed, and what it is doing.
pub fn verify_line(name: &str, (done, total, rows): (u64, u64, u64), elapsed: Duration) -> String {
    format!(
        "verify {name}: {done}/{} ranges, {} rows hashed, {} | {}",
        if total == 0 {
            "?".to_string()
        } else {
            total.to_string()
        },
        short_count(rows),
        short_duration(elapsed),
        if total == 0 {
            "draining capture, sampling key ranges"
        } else if done >= total {
            "re-checking differing keys"
        } else {
            "hashing ranges"
        }
    )
}

/// Verify's progress on stderr while it runs: ranges checked of all, rows, elapsed; redrawn
/// on a terminal, a plain line every 5 s otherwise. Nothing is printed for a verify that ends
/// within a second.
pub struct VerifyLine {
    task: Option<tokio::task::JoinHandle<()>>,
    bar: Option<indicatif::ProgressBar>,
}

impl VerifyLine {
    pub fn start(name: &str, counters: engine::verify::VerifyCounters) -> VerifyLine {
        let started = std::time::Instant::now();
        let tty = std::io::stderr().is_terminal();
        let bar = tty.then(|| {
            let bar = indicatif::ProgressBar::with_draw_target(
                None,
                indicatif::ProgressDrawTarget::stderr_with_hz(5),
            );
            bar.set_style(
                indicatif::ProgressStyle::with_template("{msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            bar
        });
        let name = name.to_string();
        let drawn = bar.clone();
        let task = tokio::spawn(async move {
            let every = if tty {
                Duration::from_millis(250)
            } else {
                Duration::from_secs(5)
            };
            tokio::time::sleep(Duration::from_secs(1)).await;
            loop {
                let (done, total, rows) = counters.read();
                let line = verify_line(&name, (done, total, rows), started.elapsed());
                match &drawn {
                    Some(bar) => bar.set_message(line),
                    None => eprintln!("{line}"),
                }
                tokio::time::sleep(every).await;
            }
        });
        VerifyLine {
            task: Some(task),
            bar,
        }
    }

    pub fn finish(mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cutovers_catch_up_line_shows_lag_and_what_it_does_not_a_row_count() {
        let p = SyncProgress {
            backfill_done: true,
            capture_lag_bytes: 2_048,
            capture_lag_ms: 40,
            txns_applied: 12,
            state: SyncState::CatchingUp,
            elapsed_s: 3.0,
            ..Default::default()
        };
        let line = render_line(&p, Duration::from_secs(1), 80);
        assert!(!line.contains("rows"), "{line}");
        assert!(line.contains("lag 2.0 KiB"), "{line}");
        assert!(line.contains("applied 12"), "{line}");
        assert!(line.chars().count() <= 80, "{line}");
    }

    #[test]
    fn the_verify_line_says_how_far_verify_is_and_what_it_does() {
        let t = Duration::from_millis(3_400);
        assert_eq!(
            verify_line("orders_v2", (0, 0, 0), t),
            "verify orders_v2: 0/? ranges, 0 rows hashed, 3.4s | draining capture, sampling key ranges"
        );
        assert_eq!(
            verify_line("orders_v2", (7, 20, 700_000), t),
            "verify orders_v2: 7/20 ranges, 700.0k rows hashed, 3.4s | hashing ranges"
        );
        assert!(verify_line("orders_v2", (20, 20, 2_000_000), t)
            .ends_with("re-checking differing keys"));
    }

    fn copying() -> SyncProgress {
        SyncProgress {
            rows_copied: 1_300_000,
            rows_total: 2_000_000,
            rows_per_second: 61_000.0,
            chunk_size: 12_000,
            capture_lag_bytes: 3_100,
            capture_lag_ms: 12,
            txns_applied: 52,
            state: SyncState::Copying,
            elapsed_s: 21.0,
            ..Default::default()
        }
    }

    fn paused() -> SyncProgress {
        SyncProgress {
            state: SyncState::Paused {
                reason: "capture lag 40 MB > 32 MB".into(),
            },
            throttled: Some("capture lag 40 MB > 32 MB".into()),
            capture_lag_bytes: 40_000_000,
            capture_lag_ms: 2_300,
            ..copying()
        }
    }

    fn blocked() -> SyncProgress {
        SyncProgress {
            state: SyncState::BlockedOnLock {
                pid: 4242,
                application: "psql".into(),
                query: "ALTER TABLE orders ADD COLUMN shipped_at timestamptz".into(),
            },
            ..copying()
        }
    }

    #[test]
    fn the_progress_line_fits_80_columns_and_always_says_what_splice_does() {
        let held = Duration::from_secs(12);
        let lines = [
            render_line(&copying(), Duration::ZERO, 79),
            render_line(&paused(), held, 79),
            render_line(&blocked(), held, 79),
            render_line(
                &SyncProgress {
                    state: SyncState::WaitingForRate {
                        rows_per_second: 5000,
                    },
                    ..copying()
                },
                Duration::from_secs(3),
                79,
            ),
            render_line(
                &SyncProgress {
                    backfill_done: true,
                    rows_copied: 2_000_000,
                    state: SyncState::Following,
                    ..copying()
                },
                held,
                79,
            ),
        ];
        for l in &lines {
            assert!(l.chars().count() <= 79, "{l} is {} long", l.chars().count());
        }
        assert!(lines[0].ends_with("| copying"), "{}", lines[0]);
        assert!(
            lines[1].ends_with("| paused 12s (capture lag 40 MB > 32 MB)"),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].contains("blocked 12s on a lock held by pid 4242"),
            "{}",
            lines[2]
        );
        assert!(
            lines[3].contains("waiting 3s for the rate limit"),
            "{}",
            lines[3]
        );
        insta::assert_snapshot!("progress_line_80_columns", lines.join("\n"));
    }

    #[test]
    fn holding_back_for_the_impact_budget_says_so_with_the_pace_and_the_latency() {
        let reason = "commit latency 3.1 ms > budget 2.4 ms (baseline 2.0 ms +20%)";
        let holding = SyncProgress {
            state: SyncState::HoldingBack {
                reason: reason.into(),
                pace: 0.25,
            },
            ..copying()
        };
        let line = render_line(&holding, Duration::from_secs(3), 159);
        assert!(
            line.ends_with(&format!("| holding 3s back, pace 25% ({reason})")),
            "{line}"
        );
        let following = SyncProgress {
            backfill_done: true,
            state: SyncState::Following,
            impact: Some(engine::state::Impact {
                baseline_ms: 2.0,
                current_ms: 3.1,
                budget_ms: 2.4,
                pace: 0.5,
                holding_back: Some(reason.into()),
            }),
            ..copying()
        };
        let line = render_line(&following, Duration::ZERO, 159);
        assert!(
            line.ends_with(&format!("| following changes, pace 50% ({reason})")),
            "{line}"
        );
    }

    #[test]
    fn at_160_columns_the_line_shows_every_field() {
        let line = render_line(&copying(), Duration::ZERO, 159);
        assert!(line.chars().count() <= 159, "{line}");
        for field in [
            "1.3M/2.0M rows",
            "61.0k rows/s",
            "ETA",
            "lag 3.0 KiB 12 ms",
            "applied 52",
            "chunk 12.0k",
            "copying",
        ] {
            assert!(line.contains(field), "{field} missing from {line}");
        }
        insta::assert_snapshot!("progress_line_160_columns", line);
    }

    #[test]
    fn the_first_rate_is_not_a_probe_s() {
        let early = SyncProgress {
            rows_copied: 1000,
            rows_per_second: 250_000.0,
            elapsed_s: 0.004,
            ..copying()
        };
        let line = render_line(&early, Duration::ZERO, 159);
        assert!(line.contains("rate ?") && line.contains("ETA ?"), "{line}");
        assert!(!line.contains("250.0k"), "{line}");
    }

    #[test]
    fn the_bar_is_full_when_the_backfill_is_done_even_past_the_estimate() {
        let done = SyncProgress {
            rows_copied: 2_100_000,
            backfill_done: true,
            state: SyncState::Following,
            ..copying()
        };
        let line = render_line(&done, Duration::ZERO, 79);
        assert!(line.starts_with("[##########] 100.0%"), "{line}");
        let almost = SyncProgress {
            rows_copied: 1_999_999,
            ..copying()
        };
        assert!(render_line(&almost, Duration::ZERO, 79).starts_with("[#########-]"));
    }

    #[test]
    fn a_long_state_is_cut_to_the_width_never_wrapped() {
        let mut p = blocked();
        if let SyncState::BlockedOnLock { query, .. } = &mut p.state {
            *query = "x".repeat(300);
        }
        let line = render_line(&p, Duration::ZERO, 79);
        assert_eq!(line.chars().count(), 79, "{line}");
        assert!(line.ends_with('…'));
    }
}
