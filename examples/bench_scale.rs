//! `scripts/bench scale`: whether the cost of a migration stays linear as the table grows.
//!
//! The sync runs with `--max-latency-increase off`: this measures how the copy scales, not how
//! the impact budget paces it (`scripts/bench impact` measures that, under an application).
//!
//! The example migration runs on the demo's `orders` table twice, at `SMALL` rows (1,000,000)
//! and at `LARGE` rows (10,000,000), each on a fresh durable server: `splice expand`, `splice
//! sync --until-caught-up` (the backfill) and `splice verify` (a full pass), each a separate
//! process of the release binary. For each it prints rows/s and the process's peak resident
//! memory (`VmHWM` from `/proc/PID/status`, read every 20 ms until it exits), then the ratios
//! with their targets:
//! - backfill and verify rows/s at LARGE ÷ at SMALL: ≥ 0.9×;
//! - peak RSS of sync and of verify at LARGE: ≤ 200 MB, and at most 1.2× that at SMALL.
//!
//! Usage: `bench_scale SPLICE_BINARY [SMALL (1000000)] [LARGE (10000000)]`.

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MIGRATION: &str = include_str!("../migrations/orders_v2.toml");

struct Run {
    rows: u64,
    backfill_rows_per_second: f64,
    sync_peak_bytes: u64,
    verify_rows_per_second: f64,
    verify_peak_bytes: u64,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let binary = args
        .get(1)
        .context("usage: bench_scale SPLICE_BINARY [SMALL] [LARGE]")?
        .clone();
    let number = |i: usize, default: u64| -> Result<u64> {
        args.get(i)
            .map(|s| s.parse().with_context(|| format!("not a number: {s}")))
            .unwrap_or(Ok(default))
    };
    let small = number(2, 1_000_000)?;
    let large = number(3, 10_000_000)?;
    println!("bench scale: the example migration at {small} and at {large} rows, fsync on");
    let a = one_size(&binary, small)?;
    let b = one_size(&binary, large)?;
    let mb = |b: u64| b as f64 / (1 << 20) as f64;
    let verdict = |ok: bool| if ok { "PASS" } else { "FAIL" };
    let backfill = b.backfill_rows_per_second / a.backfill_rows_per_second;
    let verify = b.verify_rows_per_second / a.verify_rows_per_second;
    println!(
        "  backfill rows/s at {} ÷ at {}: {:.2}× (target ≥ 0.9×: {})",
        b.rows,
        a.rows,
        backfill,
        verdict(backfill >= 0.9)
    );
    println!(
        "  verify rows/s at {} ÷ at {}: {:.2}× (target ≥ 0.9×: {})",
        b.rows,
        a.rows,
        verify,
        verdict(verify >= 0.9)
    );
    for (what, small_peak, large_peak) in [
        ("sync", a.sync_peak_bytes, b.sync_peak_bytes),
        ("verify", a.verify_peak_bytes, b.verify_peak_bytes),
    ] {
        let ratio = large_peak as f64 / small_peak.max(1) as f64;
        println!(
            "  peak RSS of {what}: {:.1} MB at {}, {:.1} MB at {} ({:.2}×) (target ≤ 200 MB and \
             ≤ 1.2×: {})",
            mb(small_peak),
            a.rows,
            mb(large_peak),
            b.rows,
            ratio,
            verdict(large_peak <= 200 << 20 && ratio <= 1.2)
        );
    }
    Ok(())
}

fn one_size(binary: &str, rows: u64) -> Result<Run> {
    let pg = testkit::Postgres::builder()
        .setting("fsync", "on")
        .setting("shared_buffers", "512MB")
        .setting("max_wal_size", "8GB")
        .setting("checkpoint_timeout", "30min")
        .start()?;
    let started = Instant::now();
    pg.psql(&format!(
        "CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id bigint NOT NULL,
                              amount numeric(12,2) NOT NULL, currency text, note text);
         INSERT INTO orders (customer_id, amount, currency, note)
         SELECT g % 97, (g % 1000) / 7.0, CASE WHEN g % 5 = 0 THEN NULL ELSE 'USD' END,
                'n' || g FROM generate_series(1, {rows}) g;"
    ))?;
    pg.psql("VACUUM ANALYZE orders")?;
    pg.psql("CHECKPOINT")?;
    println!(
        "  {rows} rows: table made in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let dir = std::env::temp_dir().join(format!("splice-bench-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("orders_v2.toml"), MIGRATION)?;
    let url = pg.url();
    measured(binary, &dir, &url, &["expand", "orders_v2.toml"])?;
    // The raw copy: with no application on the server, the impact budget would pace the
    // backfill against its own effect on the heartbeat (see docs/throttling.md).
    let sync = [
        "sync",
        "orders_v2",
        "--until-caught-up",
        "--max-latency-increase",
        "off",
    ];
    let (sync_seconds, sync_peak_bytes) = measured(binary, &dir, &url, &sync)?;
    pg.psql("CHECKPOINT")?;
    let (verify_seconds, verify_peak_bytes) =
        measured(binary, &dir, &url, &["verify", "orders_v2"])?;
    let _ = std::fs::remove_dir_all(&dir);
    let run = Run {
        rows,
        backfill_rows_per_second: rows as f64 / sync_seconds,
        sync_peak_bytes,
        verify_rows_per_second: rows as f64 / verify_seconds,
        verify_peak_bytes,
    };
    println!(
        "    sync --until-caught-up {:.1} s ({:.0} rows/s, peak RSS {:.1} MB); verify {:.1} s \
         ({:.0} rows/s, peak RSS {:.1} MB)",
        sync_seconds,
        run.backfill_rows_per_second,
        sync_peak_bytes as f64 / (1 << 20) as f64,
        verify_seconds,
        run.verify_rows_per_second,
        verify_peak_bytes as f64 / (1 << 20) as f64
    );
    Ok(run)
}

/// Runs `splice ARGS` to its end: wall seconds and peak resident memory (bytes).
fn measured(binary: &str, dir: &Path, url: &str, args: &[&str]) -> Result<(f64, u64)> {
    let started = Instant::now();
    let log = dir.join("splice.log");
    let mut child = Command::new(binary)
        .current_dir(dir)
        .args(args)
        .env("SPLICE_DATABASE_URL", url)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .with_context(|| format!("starting splice {}", args.join(" ")))?;
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0u64;
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(&status_file) {
            if let Some(kb) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak = peak.max(kb * 1024);
            }
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let seconds = started.elapsed().as_secs_f64();
    if !status.success() {
        let err = std::fs::read_to_string(&log).unwrap_or_default();
        bail!("splice {} failed: {err}", args.join(" "));
    }
    Ok((seconds, peak))
}
