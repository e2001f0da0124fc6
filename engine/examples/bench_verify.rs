//! `scripts/bench verify`: splice's verify against reladiff on one throwaway server, in one
//! run, printing ratios with their targets.
//!
//! (i)  a full `verify` of a migrated ROWS-row pair vs reladiff's best time on the same pair
//!      (`-j 2`; its auto algorithm, joindiff on one database, and hashdiff; each with and
//!      without `--assume-unique-key`), one row tampered with in the new table: both must find
//!      it. reladiff compares the new table with a view of the old one through the mapping.
//! (ii) an incremental verify after 1% of the rows changed (and sync applied them) vs a full
//!      verify of the same state: the changed rows a contiguous block of keys (recent rows, the
//!      usual pattern), and, for the record, the same number of rows scattered over the whole
//!      key (every range changes).
//!
//! Usage: RELADIFF=/path/to/reladiff cargo run --release -p splice-engine --example
//! bench_verify -- [ROWS (1000000)] [ROWS_PER_VERIFY_RANGE (the engine's default)]

use engine::backfill::{Control, NoProgress};
use engine::{Engine, Postgres, RateLimit, VerifyKind, VerifyReport};
use std::time::Instant;
use tokio_postgres::Client;

const EXAMPLE: &str = include_str!("../../migrations/orders_v2.toml");
const NAME: &str = "orders_bench";
const NEW: &str = "_splice_orders_bench_new";

/// The mapping of orders_v2, as a view reladiff can compare with the new table.
const MAPPED_VIEW: &str = "CREATE VIEW orders_mapped AS
    SELECT id, customer_id, (amount * 100)::bigint AS amount_cents,
           coalesce(currency, 'EUR')::char(3) AS currency, note FROM orders";

const TARGET_VS_RELADIFF: f64 = 1.5;

/// Rows per verify range when given (the engine's default otherwise).
static RANGE_ROWS: std::sync::OnceLock<Option<i64>> = std::sync::OnceLock::new();
const TARGET_INCREMENTAL: f64 = 10.0;

fn die<T, E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> T + '_ {
    move |e| {
        eprintln!("bench: {what}: {e}");
        std::process::exit(2)
    }
}

async fn exec(db: &Client, sql: &str) {
    if let Err(e) = db.batch_execute(sql).await {
        eprintln!("bench: {sql}: {}", engine::db_message(&e));
        std::process::exit(2);
    }
}

/// Runs `work` as the CLI would: a fresh engine on a runtime of its own (current thread).
async fn as_the_cli_runs<T, F, Fut>(url: &str, work: F) -> T
where
    F: FnOnce(Engine<Postgres>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
    T: Send + 'static,
{
    let url = url.to_string();
    tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(die("starting a runtime"));
        let mut engine = Engine::new(url);
        if let Some(r) = RANGE_ROWS.get().copied().flatten() {
            engine = engine.with_verify_range_rows(r);
        }
        rt.block_on(work(engine))
    })
    .await
    .unwrap_or_else(die("joining a command"))
}

/// `splice sync NAME --until-caught-up`: the backfill, or applying what capture holds.
async fn sync_caught_up(url: &str) {
    as_the_cli_runs(url, |engine| async move {
        let opts = engine::phases::SyncOptions {
            until_caught_up: true,
            ..Default::default()
        };
        engine
            .sync(
                NAME,
                &opts,
                &Control::new(RateLimit::Unlimited),
                &mut NoProgress,
            )
            .await
    })
    .await
    .unwrap_or_else(die("sync"));
}

/// One verify of `kind`, wall time included (connect, plan, drain).
async fn timed_verify(url: &str, kind: VerifyKind) -> (f64, VerifyReport) {
    let t = Instant::now();
    let report = as_the_cli_runs(url, move |engine| async move {
        engine
            .verify_kind(NAME, kind, &engine::verify::VerifyCounters::default())
            .await
    })
    .await
    .unwrap_or_else(die("verify"));
    (t.elapsed().as_secs_f64(), report)
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "FAIL"
    }
}

/// One reladiff run: (seconds, whether its output names the tampered key).
fn reladiff(bin: &str, url: &str, args: &[&str], tampered: i64) -> (f64, bool) {
    // reladiff knows the scheme by its long name only.
    let url = url.replacen("postgres://", "postgresql://", 1);
    let t = Instant::now();
    let out = std::process::Command::new(bin)
        .arg(&url)
        .args(["orders_mapped", NEW, "-k", "id"])
        .args([
            "-c",
            "customer_id",
            "-c",
            "amount_cents",
            "-c",
            "currency",
            "-c",
            "note",
        ])
        .args(["-j", "2", "--json"])
        .args(args)
        .output()
        .unwrap_or_else(die("running reladiff"));
    let secs = t.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        eprintln!(
            "bench: reladiff {args:?} failed: {}{}",
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        return (secs, false);
    }
    // JSONL: one line per differing row, `["-" or "+", [its values as text]]`.
    let key = serde_json::Value::String(tampered.to_string());
    let found = stdout.lines().any(|l| {
        serde_json::from_str::<serde_json::Value>(l)
            .ok()
            .and_then(|v| v.get(1).and_then(|r| r.as_array()).cloned())
            .is_some_and(|values| values.contains(&key))
    });
    if !found {
        eprintln!(
            "bench: reladiff {args:?} did not name key {tampered}; its output began: {}{}",
            stdout.chars().take(400).collect::<String>(),
            String::from_utf8_lossy(&out.stderr)
                .chars()
                .take(1500)
                .collect::<String>()
        );
    }
    (secs, found)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rows: i64 = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let _ = RANGE_ROWS.set(args.get(2).and_then(|a| a.parse().ok()));
    let pg = tokio::task::spawn_blocking(|| {
        testkit::Postgres::builder()
            .setting("fsync", "on")
            .setting("shared_buffers", "512MB")
            .setting("max_wal_size", "4GB")
            .setting("checkpoint_timeout", "30min")
            .start()
    })
    .await
    .unwrap_or_else(die("starting PostgreSQL"))
    .unwrap_or_else(die("starting PostgreSQL"));
    let url = pg.url();
    let db = engine::connect(&url)
        .await
        .unwrap_or_else(die("connecting"));
    eprintln!("bench: loading {rows} rows");
    exec(
        &db,
        &format!(
            "CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id bigint NOT NULL,
                                  amount numeric(12,2) NOT NULL, currency text, note text);
             INSERT INTO orders (customer_id, amount, currency, note)
             SELECT g % 9973, (g % 100000) / 100.0, CASE WHEN g % 7 = 0 THEN NULL ELSE 'USD' END,
                    'order number ' || g FROM generate_series(1, {rows}) g;
             {MAPPED_VIEW}"
        ),
    )
    .await;
    exec(&db, "VACUUM ANALYZE orders").await;
    let engine = Engine::new(url.clone());
    let spec = EXAMPLE.replace("orders_v2", NAME);
    engine
        .expand(&spec, "bench")
        .await
        .unwrap_or_else(die("expand"));
    eprintln!("bench: sync (backfill)");
    sync_caught_up(&url).await;
    exec(&db, &format!("VACUUM ANALYZE {NEW}")).await;
    exec(&db, "CHECKPOINT").await;
    // A first pass warms the caches the same way for every tool after it.
    timed_verify(&url, VerifyKind::Full).await;

    // (i) full verify vs reladiff, one row tampered with behind splice's back.
    let tampered = rows / 2 + 17;
    exec(
        &db,
        &format!("UPDATE {NEW} SET note = 'tampered' WHERE id = {tampered}"),
    )
    .await;
    // Two rounds, each tool in turn, so drift on a shared machine hits both alike; each
    // tool's best time counts.
    let settings: [(&str, &[&str]); 4] = [
        ("auto", &["-a", "auto"]),
        (
            "auto --assume-unique-key",
            &["-a", "auto", "--assume-unique-key"],
        ),
        ("hashdiff", &["-a", "hashdiff"]),
        (
            "hashdiff --assume-unique-key",
            &["-a", "hashdiff", "--assume-unique-key"],
        ),
    ];
    let reladiff_bin = std::env::var("RELADIFF").ok();
    if reladiff_bin.is_none() {
        eprintln!("bench: RELADIFF is not set; figure (i) cannot be measured");
    }
    let mut splice_best = f64::MAX;
    let mut splice_found = true;
    let mut reladiff_times: Vec<Vec<f64>> = vec![Vec::new(); settings.len()];
    let mut reladiff_all_found = true;
    for _round in 0..2 {
        let (secs, report) = timed_verify(&url, VerifyKind::Full).await;
        let found = report
            .diverged
            .iter()
            .map(|d| d.key.join(","))
            .collect::<Vec<_>>()
            == vec![tampered.to_string()];
        eprintln!("bench: splice verify (full) {secs:.2}s, found the row: {found}");
        splice_found &= found;
        splice_best = splice_best.min(secs);
        if let Some(bin) = &reladiff_bin {
            for (i, (label, extra)) in settings.iter().enumerate() {
                let (secs, found) = reladiff(bin, &url, extra, tampered);
                eprintln!("bench: reladiff -j 2 -a {label} {secs:.2}s, found the row: {found}");
                reladiff_all_found &= found;
                if found {
                    reladiff_times[i].push(secs);
                }
            }
        }
    }
    let best = |times: &[f64]| times.iter().copied().fold(f64::MAX, f64::min);
    for ((label, _), times) in settings.iter().zip(&reladiff_times) {
        if !times.is_empty() {
            println!("  reladiff -j 2 -a {label:<28} best {:>6.2} s", best(times));
        }
    }
    println!(
        "  splice verify (full)                            best {splice_best:>6.2} s  found the row: {splice_found}"
    );
    let reladiff_best = settings
        .iter()
        .zip(&reladiff_times)
        .filter(|(_, t)| !t.is_empty())
        .map(|((label, _), t)| (best(t), *label))
        .min_by(|a, b| a.0.total_cmp(&b.0));
    match reladiff_best {
        Some((best, label)) => {
            let ratio = best / splice_best;
            println!(
                "(i)  full verify vs reladiff's best ({label}): {ratio:.2}x faster \
                 (target >= {TARGET_VS_RELADIFF}x, both find the row)  {}",
                verdict(ratio >= TARGET_VS_RELADIFF && splice_found && reladiff_all_found)
            );
        }
        None => println!(
            "(i)  full verify vs reladiff: not measured (reladiff missing or it never found \
             the row)  FAIL"
        ),
    }

    // (ii) incremental after 1% of the rows changed. The row is repaired through capture,
    // and a full pass (timed: the denominator) stores every range as matching.
    exec(
        &db,
        &format!("UPDATE orders SET note = note || '.' WHERE id = {tampered}"),
    )
    .await;
    let changed = rows / 100;
    for (label, change) in [
        (
            "a contiguous block of keys",
            format!(
                "UPDATE orders SET customer_id = customer_id + 1
                  WHERE id > {lo} AND id <= {hi}",
                lo = rows * 7 / 10,
                hi = rows * 7 / 10 + changed
            ),
        ),
        (
            "scattered over the whole key",
            "UPDATE orders SET customer_id = customer_id + 1 WHERE id % 100 = 37".to_string(),
        ),
    ] {
        let (full_secs, full) = timed_verify(&url, VerifyKind::Full).await;
        if !full.passed() {
            eprintln!("bench: the full pass before (ii) failed: {full:?}");
            std::process::exit(2);
        }
        exec(&db, &change).await;
        // Sync applies the changes (and marks their ranges) as it does while it follows the
        // application; the verify timed next is the one right before cutover.
        sync_caught_up(&url).await;
        let (secs, report) = timed_verify(&url, VerifyKind::Incremental).await;
        let ratio = full_secs / secs;
        println!(
            "  1% of the rows ({changed}) changed, {label}: incremental {secs:.2} s re-read {} \
             rows in {} of {} ranges; full {full_secs:.2} s",
            report.rows_checked, report.ranges, report.ranges_total
        );
        let ok = report.kind == VerifyKind::Incremental && report.passed();
        if label.starts_with("a contiguous") {
            // The floor: the same command with nothing to re-read (sessions, runner lock, plan,
            // drift check, capture opened, drained and closed, results recorded).
            let (floor, idle) = timed_verify(&url, VerifyKind::Incremental).await;
            println!(
                "  incremental with nothing changed (the fixed cost of a verify command): \
                 {floor:.2} s, {} ranges read; so no incremental pass can beat full by more \
                 than {:.1}x on this table here",
                idle.ranges,
                full_secs / floor
            );
            println!(
                "  rows read: incremental {} of full {}: {:.0}x less work",
                report.rows_checked,
                full.rows_checked,
                full.rows_checked as f64 / report.rows_checked.max(1) as f64
            );
            println!(
                "(ii) incremental verify after 1% changed ({label}) vs full: {ratio:.1}x faster \
                 (target >= {TARGET_INCREMENTAL}x)  {}",
                verdict(ratio >= TARGET_INCREMENTAL && ok)
            );
        } else {
            println!(
                "     the same with the changes {label}: {ratio:.1}x (no target: every range \
                 holds a changed key, so every range is re-read)"
            );
        }
    }
}
