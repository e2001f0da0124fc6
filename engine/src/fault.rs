//! Named failure points for the crash tests. In debug builds, when `SPLICE_FAULT_POINT` names
//! a point, the process aborts there: no destructor runs, no transaction is ended, exactly as
//! `kill -9` would leave it. Release builds compile the points away.
//!
//! The points sit between the steps whose order matters: inside the cutover lock, around the
//! swap's commit, and between each command's database changes. `tests/engine_cli.rs` kills at
//! every one and re-runs the command; `scripts/bench faults` kills at random ones under load.

/// Every named point, in the order a lifecycle passes them.
pub const POINTS: &[&str] = &[
    "cutover.reverse_created",
    "swap.locked",
    "swap.drained",
    "swap.committed",
    "cutover.swapped",
    "rollback.swapped",
    "contract.quarantined",
    "restore.moved",
    "restore.copied",
    "drop.dropped",
    "abort.captures_dropped",
];

/// Aborts the process here when `SPLICE_FAULT_POINT` is `name` (debug builds only); with
/// `SPLICE_FAULT_ACTION=stop` it freezes instead (SIGSTOP), as a paused VM would.
#[inline]
pub fn point(name: &str) {
    #[cfg(debug_assertions)]
    if std::env::var("SPLICE_FAULT_POINT").is_ok_and(|p| p == name) {
        if std::env::var("SPLICE_FAULT_ACTION").is_ok_and(|a| a == "stop") {
            eprintln!("splice: SPLICE_FAULT_POINT={name}: freezing here");
            let _ = std::process::Command::new("kill")
                .args(["-STOP", &std::process::id().to_string()])
                .status();
            return;
        }
        eprintln!("splice: SPLICE_FAULT_POINT={name}: aborting here");
        std::process::abort();
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
}
