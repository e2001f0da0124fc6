//! `splice demo`: the whole sequence on a throwaway local PostgreSQL, under a concurrent write
//! load, with a report. Runs `migrations/orders_v2.toml` (compiled in).

use clap::Args;
use engine::backfill::{Control, SyncProgress};
use engine::phases::ReverseSync;
use engine::{Engine, EngineError, RateLimit};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MIGRATION: &str = include_str!("../migrations/orders_v2.toml");

/// Run an online migration end to end on a throwaway PostgreSQL, under write load.
#[derive(Args)]
#[command(
    after_help = "Examples:\n  splice demo                  1,000,000 rows, ~200 writes/s\n  splice demo --rows 100000 --writes-per-second 500\n  splice demo --mysql --rows 100000\n\nNeeds the PostgreSQL server binaries (apt-get install postgresql), or with --mysql MariaDB's\n(apt-get install mariadb-server); as root the server runs as postgres or mysql. Everything is\ndeleted at the end."
)]
pub struct DemoArgs {
    /// Rows in the demo's orders table.
    #[arg(long, default_value_t = 1_000_000)]
    rows: i64,
    /// Concurrent application writes per second (updates, inserts, deletes, key changes).
    #[arg(long, default_value_t = 200)]
    writes_per_second: u32,
    /// Run it on a throwaway MariaDB instead (Debian's `mariadb-server`), with
    /// `migrations/mysql/orders_v2.toml`.
    #[arg(long)]
    mysql: bool,
}

pub fn run(args: DemoArgs) -> u8 {
    // Worker threads, one per core: the write load runs beside the migration's commands.
    let rt = match crate::runtime::multi_thread(None) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return crate::EXIT_USAGE;
        }
    };
    let result = if args.mysql {
        rt.block_on(crate::demo_mysql::demo(args.rows, args.writes_per_second))
    } else {
        rt.block_on(demo(args))
    };
    match result {
        Ok(true) => crate::EXIT_OK,
        Ok(false) => crate::EXIT_CHECK_FAILED,
        Err(e) => {
            eprintln!("error: {e}");
            crate::EXIT_USAGE
        }
    }
}

pub(crate) fn step(s: &str) {
    eprintln!("==> {s}");
}

struct Counters {
    writes: AtomicU64,
    failed: AtomicU64,
    /// Why the first failed write failed, for the report.
    first_failure: std::sync::Mutex<Option<String>>,
}

/// The application: single-row writes at a steady rate. It follows the expand/contract
/// discipline an application must keep while its table changes shape under it: every
/// statement names only columns both shapes have (`id`, `customer_id`, `currency`, `note`),
/// and a new order copies an existing row whole (`jsonb_populate_record` over the row of
/// whichever table is live), so no statement fails when cutover or rollback swaps the tables.
async fn write_load(url: String, per_second: u32, stop: Arc<AtomicBool>, c: Arc<Counters>) {
    use rand::{Rng, SeedableRng};
    let Ok(db) = engine::connect(&url).await else {
        return;
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let pause = Duration::from_secs_f64(1.0 / per_second.max(1) as f64);
    let mut tick = tokio::time::interval(pause);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let id: i64 = rng.random_range(1..1_000_000);
        let sql = match rng.random_range(0..10) {
            0..=4 => format!(
                "UPDATE orders SET note = 'edited', customer_id = customer_id + 1 WHERE id = {id}"
            ),
            // The row is built once (`OFFSET 0` keeps the subquery, so the sequence is
            // called once), from one existing row found through the key.
            5..=6 => format!(
                "INSERT INTO orders
                 SELECT (r).* FROM (
                     SELECT jsonb_populate_record(o, jsonb_build_object(
                                'id', nextval('orders_id_seq'), 'note', 'new order')) AS r
                     FROM orders o
                     WHERE o.id = (SELECT min(id) FROM orders WHERE id >= {id})
                     OFFSET 0) s"
            ),
            7 => format!("DELETE FROM orders WHERE id = {id}"),
            8 => format!("UPDATE orders SET currency = 'EUR' WHERE id = {id}"),
            _ => format!("UPDATE orders SET id = id + 5000000 WHERE id = {id}"),
        };
        match db.batch_execute(&sql).await {
            Ok(()) => c.writes.fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                let mut first = c.first_failure.lock().unwrap_or_else(|e| e.into_inner());
                first.get_or_insert_with(|| format!("{}: {sql}", engine::db_message(&e)));
                c.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// The highest capture lag the progress reported (ms, bytes).
#[derive(Default)]
struct MaxLag {
    ms: AtomicU64,
    bytes: AtomicU64,
}

/// The sync's progress line on stderr, remembering the highest capture lag seen.
fn progress(max: &Arc<MaxLag>) -> crate::progress::Progress {
    let max = max.clone();
    crate::progress::Progress::on_stderr().observing(move |p: &SyncProgress| {
        max.ms.fetch_max(p.capture_lag_ms, Ordering::Relaxed);
        max.bytes.fetch_max(p.capture_lag_bytes, Ordering::Relaxed);
    })
}

/// What can stop the demo: its own set-up, or a migration command.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DemoError {
    #[error("{what}: {detail}")]
    Setup { what: &'static str, detail: String },
    #[error("{0}")]
    Engine(#[from] EngineError),
}

async fn demo(args: DemoArgs) -> Result<bool, DemoError> {
    let fail = |what: &'static str, detail: String| DemoError::Setup { what, detail };
    step("starting a throwaway PostgreSQL (wal_level=logical)");
    let pg = tokio::task::spawn_blocking(testkit::Postgres::start)
        .await
        .map_err(|e| fail("starting PostgreSQL", e.to_string()))?
        .map_err(|e| fail("starting PostgreSQL", format!("{e:#}")))?;
    let url = pg.url();
    let db = engine::connect(&url).await?;
    step(&format!("loading {} rows into public.orders", args.rows));
    let t = Instant::now();
    db.batch_execute(&format!(
        "CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id bigint NOT NULL,
                              amount numeric(12,2) NOT NULL, currency text, note text);
         INSERT INTO orders (customer_id, amount, currency, note)
         SELECT g % 9973, (g % 100000) / 100.0, CASE WHEN g % 7 = 0 THEN NULL ELSE 'USD' END,
                CASE WHEN g % 3 = 0 THEN NULL ELSE 'order ' || g END
         FROM generate_series(1, {}) g;
         ANALYZE orders;",
        args.rows
    ))
    .await
    .map_err(|e| fail("loading the demo table", engine::db_message(&e)))?;
    eprintln!("    loaded in {:.1}s", t.elapsed().as_secs_f64());

    step(&format!(
        "starting the application: {} writes/s",
        args.writes_per_second
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters {
        writes: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        first_failure: std::sync::Mutex::new(None),
    });
    let load = tokio::spawn(write_load(
        url.clone(),
        args.writes_per_second,
        stop.clone(),
        counters.clone(),
    ));

    let engine = Engine::new(url.clone());
    let spec = engine::MigrationSpec::parse(MIGRATION, "migrations/orders_v2.toml")
        .map_err(EngineError::from)?;
    step("splice plan migrations/orders_v2.toml");
    let plan = engine.plan(&spec).await?;
    for (col, expr) in &plan.forward.columns {
        eprintln!("    {col} = {expr}");
    }
    step("splice expand");
    engine
        .expand(MIGRATION, "migrations/orders_v2.toml")
        .await?;

    step("splice sync --until-caught-up (capture first, then the throttled backfill)");
    let max_lag = Arc::new(MaxLag::default());
    let mut line = progress(&max_lag);
    let t = Instant::now();
    let opts = engine::phases::SyncOptions {
        until_caught_up: true,
        ..Default::default()
    };
    let synced = engine
        .sync(
            "orders_v2",
            &opts,
            &Control::new(RateLimit::Unlimited),
            &mut line,
        )
        .await;
    line.finish();
    let synced = synced?;
    let sync_s = t.elapsed().as_secs_f64();
    let backfill_rate = synced.rows_copied as f64 / sync_s;

    step("splice verify (while the application keeps writing)");
    let report = engine.verify("orders_v2").await?;
    eprintln!(
        "    {} rows, {} re-checked, {} diverged, {:.1}s",
        report.rows_checked,
        report.rechecked,
        report.diverged.len(),
        report.seconds
    );
    if !report.passed() {
        stop.store(true, Ordering::Relaxed);
        eprintln!("verify found divergence: {:?}", report.diverged);
        return Ok(false);
    }

    step("splice cutover");
    let cut = engine
        .cutover("orders_v2", u64::MAX, ReverseSync::Start)
        .await?;
    eprintln!("    table locked for {:.1} ms", cut.lock_ms);

    step("the application writes to the new shape for 2s; reverse sync keeps the old one current");
    tokio::time::sleep(Duration::from_secs(2)).await;

    step("splice rollback (swap back; forward sync resumes)");
    let t = Instant::now();
    let rb = engine.rollback("orders_v2").await?;
    let rollback_s = t.elapsed().as_secs_f64();

    step("stopping the application; final sync and an independent row-by-row comparison");
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let _ = load.await;
    let mut line = progress(&max_lag);
    let synced_again = engine
        .sync(
            "orders_v2",
            &opts,
            &Control::new(RateLimit::Unlimited),
            &mut line,
        )
        .await;
    line.finish();
    synced_again?;
    let differing = testkit::orders_divergence_sql("orders", "_splice_orders_v2_new");
    let mismatched: i64 = db
        .query_one(&format!("SELECT count(*) FROM ({differing}) d"), &[])
        .await
        .map_err(|e| fail("comparing old and new", engine::db_message(&e)))?
        .get(0);
    let writes = counters.writes.load(Ordering::Relaxed);
    let failed = counters.failed.load(Ordering::Relaxed);

    println!();
    println!(
        "splice demo report ({} rows, {} writes/s)",
        args.rows, args.writes_per_second
    );
    println!(
        "  backfill + catch-up     {:>10.0} rows/s  ({} rows in {:.1}s)",
        backfill_rate, synced.rows_copied, sync_s
    );
    println!(
        "  capture lag (max seen)  {:>10} ms     ({} bytes)",
        max_lag.ms.load(Ordering::Relaxed),
        max_lag.bytes.load(Ordering::Relaxed)
    );
    println!(
        "  verify                  {:>10}        ({} rows, {} re-checked after capture, {:.1}s)",
        if report.passed() { "passed" } else { "FAILED" },
        report.rows_checked,
        report.rechecked,
        report.seconds
    );
    println!("  cutover lock time       {:>10.1} ms", cut.lock_ms);
    println!(
        "  rollback after cutover  {:>10.2} s      (table locked {:.1} ms)",
        rollback_s,
        rb.lock_ms.unwrap_or(0.0)
    );
    println!(
        "  application writes      {:>10}        ({} failed; every statement is valid in both shapes)",
        writes, failed
    );
    if let Some(why) = counters
        .first_failure
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_deref()
    {
        println!("    first failed write: {why}");
    }
    println!(
        "  rows differing old/new  {:>10}        (compared in SQL, independently of verify)",
        mismatched
    );
    drop(pg);
    Ok(mismatched == 0)
}
