//! `splice status` for people: one line per migration (what it is doing, how far, how fast,
//! what holds it back, who runs it, what it costs the server), and with `--history` every
//! phase change under it. The engine has already left out the figures its phase made stale.

use crate::progress::{short_count, short_duration};
use crate::units;
use engine::phases::{Backfill, Status};
use engine::RateLimit;
use std::time::Duration;

/// One line: `name (table): phase | progress | rate | ETA | lag | throttle | verify | runner |
/// slot WAL | quarantine | next`, each part only when it applies.
pub fn line(s: &Status) -> String {
    let mut parts: Vec<String> = Vec::new();
    match &s.backfill {
        Backfill::NotStarted => parts.push("not synced yet".into()),
        Backfill::Copying { copied, estimated } if *estimated > 0 => parts.push(format!(
            "{}/{} rows ({:.1}%)",
            short_count(*copied as u64),
            short_count((*estimated).max(*copied) as u64),
            (100.0 * *copied as f64 / *estimated as f64).min(100.0)
        )),
        Backfill::Copying { copied, .. } => {
            parts.push(format!("{} rows copied", short_count(*copied as u64)))
        }
        Backfill::Complete { copied } => parts.push(format!(
            "backfill complete ({} rows)",
            short_count(*copied as u64)
        )),
        Backfill::None => {}
    }
    if let Some(rate) = s.backfill_rows_per_second {
        parts.push(format!("{} rows/s", short_count(rate as u64)));
    }
    if let Some(eta) = s.eta_seconds {
        parts.push(format!(
            "ETA {}",
            short_duration(Duration::from_secs_f64(eta))
        ));
    }
    if let Some(lag) = s.capture_lag_bytes {
        parts.push(format!("lag {}", units::bytes(lag.max(0) as u64)));
    }
    if let Some(t) = &s.throttle {
        let rate = RateLimit::from_rows_per_second(t.rows_per_second);
        let source = match t.source.as_str() {
            "override" => "`splice throttle`",
            "flag" => "--rows-per-second",
            "file" => "the migration file",
            other => other,
        };
        parts.push(match &t.paused {
            Some(reason) => format!("paused ({reason}); rate {rate} from {source}"),
            None => format!("rate {rate} from {source}"),
        });
    }
    if let Some(i) = &s.impact {
        parts.push(match &i.holding_back {
            Some(why) => format!("holding back, pace {:.0}% ({why})", i.pace * 100.0),
            None => format!(
                "impact: commit latency {:.1} ms, budget {:.1} ms",
                i.current_ms, i.budget_ms
            ),
        });
    }
    if let Some(v) = &s.last_verify {
        let at = v["at"].as_str().unwrap_or("?");
        let diverged = v["diverged_keys"].as_array().map_or(0, Vec::len);
        parts.push(if v["passed"].as_bool().unwrap_or(false) {
            format!(
                "verify passed at {at} ({} rows)",
                short_count(v["rows_checked"].as_u64().unwrap_or(0))
            )
        } else {
            format!("verify FAILED at {at} ({diverged} rows diverged)")
        });
    } else if matches!(s.phase.as_str(), "syncing" | "verified") {
        parts.push("not verified".into());
    }
    if let Some(ms) = s.cutover_lock_ms {
        if matches!(s.phase.as_str(), "cut_over" | "contracted") {
            parts.push(format!("cutover lock {ms:.1} ms"));
        }
    }
    match &s.runner {
        Some(r) => parts.push(format!(
            "run by `{}` (pid {} from {})",
            if r.command.is_empty() {
                "a session without an application_name"
            } else {
                r.command.as_str()
            },
            r.pid,
            r.host
        )),
        None if matches!(s.phase.as_str(), "syncing" | "verified" | "cut_over") => {
            parts.push("no sync running".into())
        }
        None => {}
    }
    for slot in &s.slots {
        let side = if slot.slot.ends_with("_rev") {
            "reverse"
        } else {
            "forward"
        };
        parts.push(format!(
            "{side} slot keeps {} of WAL{}",
            units::bytes(slot.retained_wal_bytes.max(0) as u64),
            if slot.retained_wal_bytes > slot.warn_above_bytes {
                " (above the warning threshold)"
            } else if slot.wal_status != "reserved" {
                " (wal_status not reserved)"
            } else {
                ""
            }
        ));
    }
    if let Some(q) = &s.quarantined_as {
        parts.push(format!(
            "quarantined as {q} until {}",
            s.quarantine_until.as_deref().unwrap_or("?")
        ));
    }
    parts.push(format!("next: {}", s.next));
    format!(
        "{} ({}): {} | {}",
        s.name,
        s.table,
        s.phase,
        parts.join(" | ")
    )
}

/// A request made of the migration (not a step): who asked, why, and what came of it.
fn event_line(e: &engine::state::Event) -> String {
    let mut line = format!("    {} request: {} from {}", e.at, e.action, e.caller);
    if e.actor != e.caller {
        line.push_str(&format!(" (via {})", e.actor));
    }
    if let Some(reason) = &e.reason {
        line.push_str(&format!("; because {reason}"));
    }
    if let Some(outcome) = &e.outcome {
        line.push_str(&format!("; {outcome}"));
    }
    line.push('\n');
    line
}

/// Every phase change and request, oldest first, indented under the line.
pub fn history(s: &Status) -> String {
    let mut out = String::new();
    for slot in &s.slots {
        out.push_str(&format!(
            "  slot {}: retains {} of WAL (wal_status {}){}\n",
            slot.slot,
            units::bytes(slot.retained_wal_bytes.max(0) as u64),
            slot.wal_status,
            if slot.retained_wal_bytes > slot.warn_above_bytes {
                "; above the warning threshold: keep sync running, or contract/abort to release it"
            } else {
                ""
            }
        ));
    }
    if let Some(v) = &s.last_verify {
        if let Some(keys) = v["diverged_keys"].as_array().filter(|k| !k.is_empty()) {
            out.push_str(&format!(
                "  last verify: {} key(s) diverged (run `splice verify {}` for the columns)\n",
                keys.len(),
                s.name
            ));
        }
    }
    out.push_str("  history:\n");
    // Transitions and requests, merged by time (both are UTC in one format, so text order is
    // time order; at equal times the transition comes first).
    let mut events = s.events.iter().peekable();
    for t in &s.history {
        while let Some(e) = events.next_if(|e| e.at < t.at) {
            out.push_str(&event_line(e));
        }
        out.push_str(&format!(
            "    {} {} → {} by {}{}\n",
            t.at,
            t.from.as_deref().unwrap_or("-"),
            t.to,
            t.actor,
            match t.figures.as_object() {
                Some(o) if !o.is_empty() => format!(
                    " ({})",
                    o.iter()
                        .map(|(k, v)| format!("{k} {v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                _ => String::new(),
            }
        ));
    }
    for e in events {
        out.push_str(&event_line(e));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::seam::SlotRetention;
    use engine::state::{Event, Impact, Runner, SyncThrottle, Transition};

    fn syncing() -> Status {
        Status {
            name: "orders_v2".into(),
            table: "public.orders".into(),
            phase: "syncing".into(),
            rows_copied: 1_300_000,
            rows_total: 2_000_000,
            backfill_done: false,
            backfill: Backfill::Copying {
                copied: 1_300_000,
                estimated: 2_000_000,
            },
            backfill_rows_per_second: Some(61_000.0),
            eta_seconds: Some(11.5),
            capture_lag_bytes: Some(3_100),
            last_verify: None,
            runner: Some(Runner {
                pid: 4242,
                command: "splice sync orders_v2".into(),
                host: "10.0.0.7".into(),
            }),
            throttle: Some(SyncThrottle {
                rows_per_second: 0,
                source: "file".into(),
                paused: Some("capture lag 40 MB > 32 MB".into()),
            }),
            impact: Some(Impact {
                baseline_ms: 2.0,
                current_ms: 3.1,
                budget_ms: 2.4,
                pace: 0.25,
                holding_back: Some(
                    "commit latency 3.1 ms > budget 2.4 ms (baseline 2.0 ms +20%)".into(),
                ),
            }),
            cutover_lock_ms: None,
            quarantined_as: None,
            quarantine_until: None,
            rate_override: None,
            next: "splice verify orders_v2 (once the backfill is complete)".into(),
            slots: vec![SlotRetention {
                slot: "splice_orders_v2_fwd".into(),
                retained_wal_bytes: 13_019_136,
                wal_status: "reserved".into(),
                warn_above_bytes: 10 << 30,
            }],
            history: vec![Transition {
                at: "2026-12-02T10:00:01.120Z".into(),
                actor: "app@db1 pid 4242".into(),
                from: Some("planned".into()),
                to: "expanded".into(),
                figures: serde_json::json!({"shadow_table": "public._splice_orders_v2_new"}),
            }],
            events: vec![
                Event {
                    at: "2026-12-02T10:00:00.500Z".into(),
                    action: "throttle 5000 rows/s".into(),
                    caller: "10.0.0.9:51234".into(),
                    actor: "splice@ops1 pid 77".into(),
                    reason: None,
                    outcome: None,
                },
                Event {
                    at: "2026-12-02T10:05:00.000Z".into(),
                    action: "pause".into(),
                    caller: "10.0.0.9:51240".into(),
                    actor: "splice@ops1 pid 77".into(),
                    reason: None,
                    outcome: None,
                },
            ],
        }
    }

    fn expanded() -> Status {
        Status {
            phase: "expanded".into(),
            rows_copied: 0,
            rows_total: 0,
            backfill: Backfill::NotStarted,
            backfill_rows_per_second: None,
            eta_seconds: None,
            capture_lag_bytes: None,
            runner: None,
            throttle: None,
            impact: None,
            slots: vec![],
            next: "splice sync orders_v2 --until-caught-up".into(),
            ..syncing()
        }
    }

    fn cut_over() -> Status {
        Status {
            phase: "cut_over".into(),
            backfill_done: true,
            backfill: Backfill::Complete { copied: 2_000_000 },
            backfill_rows_per_second: None,
            eta_seconds: None,
            capture_lag_bytes: Some(1024),
            last_verify: Some(serde_json::json!({
                "passed": true, "diverged_keys": [], "at": "2026-12-02T10:03:12.902Z",
                "rows_checked": 2_000_000,
            })),
            runner: None,
            throttle: None,
            impact: None,
            cutover_lock_ms: Some(9.0),
            next: "splice contract orders_v2".into(),
            ..syncing()
        }
    }

    #[test]
    fn the_status_line_says_phase_progress_rate_lag_throttle_verify_runner_and_wal() {
        let l = line(&syncing());
        for part in [
            "orders_v2 (public.orders): syncing",
            "1.3M/2.0M rows (65.0%)",
            "61.0k rows/s",
            "ETA 11.5s",
            "lag 3.0 KiB",
            "paused (capture lag 40 MB > 32 MB); rate unlimited from the migration file",
            "holding back, pace 25% (commit latency 3.1 ms > budget 2.4 ms (baseline 2.0 ms +20%))",
            "not verified",
            "run by `splice sync orders_v2` (pid 4242 from 10.0.0.7)",
            "forward slot keeps 12.4 MiB of WAL",
        ] {
            assert!(l.contains(part), "{part} missing from {l}");
        }
        assert!(!l.contains('\n'));
        insta::assert_snapshot!(
            "status_lines",
            [line(&expanded()), line(&syncing()), line(&cut_over())].join("\n")
        );
    }

    #[test]
    fn before_sync_the_line_says_not_synced_not_zero_of_zero() {
        let l = line(&expanded());
        assert!(l.contains("not synced yet"), "{l}");
        assert!(!l.contains("0/0"), "{l}");
        assert!(!l.contains("rows/s"), "{l}");
    }

    #[test]
    fn a_complete_backfill_shows_no_percentage_or_rate() {
        let l = line(&cut_over());
        assert!(l.contains("backfill complete (2.0M rows)"), "{l}");
        assert!(!l.contains('%') && !l.contains("rows/s"), "{l}");
        assert!(
            l.contains("verify passed at 2026-12-02T10:03:12.902Z"),
            "{l}"
        );
    }

    #[test]
    fn the_history_lists_every_transition_with_its_figures() {
        let h = history(&syncing());
        assert!(h.contains(
            "2026-12-02T10:00:01.120Z planned → expanded by app@db1 pid 4242 (shadow_table \"public._splice_orders_v2_new\")"
        ), "{h}");
        assert!(
            h.contains("slot splice_orders_v2_fwd: retains 12.4 MiB of WAL (wal_status reserved)"),
            "{h}"
        );
    }

    #[test]
    fn the_history_merges_requests_with_transitions_by_time() {
        let h = history(&syncing());
        let throttle = h
            .find("2026-12-02T10:00:00.500Z request: throttle 5000 rows/s from 10.0.0.9:51234 (via splice@ops1 pid 77)")
            .unwrap_or_else(|| panic!("the throttle request is listed: {h}"));
        let expanded = h
            .find("planned → expanded")
            .unwrap_or_else(|| panic!("{h}"));
        let pause = h
            .find("request: pause from 10.0.0.9:51240")
            .unwrap_or_else(|| panic!("the pause request is listed: {h}"));
        assert!(
            throttle < expanded && expanded < pause,
            "in time order: {h}"
        );
    }
}
