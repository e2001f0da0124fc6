//! CPU time of a process, for the benchmarks that say where the CPU went.

/// CPU time (seconds) of process `pid` (or `"self"`) from `/proc/PID/stat`: utime + stime of
/// its own threads, not its children's. `None` once it is gone. Linux reports it in USER_HZ
/// ticks, 100 a second.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it follow its `)`.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    Some((ticks(11)? + ticks(12)?) / 100.0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_process_has_a_cpu_time_and_a_gone_one_has_none() {
        assert!(super::cpu_seconds("self").is_some_and(|s| s >= 0.0));
        assert_eq!(super::cpu_seconds("0"), None);
    }
}
