//! `splice demo --mysql`: the same sequence on a throwaway MariaDB under a concurrent write
//! load, with the same report. Runs `migrations/mysql/orders_v2.toml` (compiled in).

use crate::demo::{step, DemoError};
use engine::backfill::{Control, NoProgress};
use engine::phases::{ReverseSync, SyncOptions};
use engine::{Engine, EngineError, RateLimit};
use mysql_async::prelude::Queryable;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MIGRATION: &str = include_str!("../migrations/mysql/orders_v2.toml");
const FILE: &str = "migrations/mysql/orders_v2.toml";

/// Ten rows of digits, for generating rows without a sequence table.
const DIGITS: &str = "(SELECT 0 d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 \
    UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL \
    SELECT 8 UNION ALL SELECT 9)";

/// The application: single-row writes at a steady rate, each valid in both shapes (`id` and
/// `note` only; a new order takes the amount column's default in either shape).
async fn write_load(
    url: String,
    per_second: u32,
    stop: Arc<AtomicBool>,
    c: Arc<(AtomicU64, AtomicU64)>,
    rows: i64,
) {
    use rand::{Rng, SeedableRng};
    let Ok(mut db) = mysql_async::Conn::from_url(url).await else {
        return;
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / per_second.max(1) as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let id: i64 = rng.random_range(1..=rows.max(1));
        let sql = match rng.random_range(0..10) {
            0..=4 => format!("UPDATE shop.orders SET note = 'edited' WHERE id = {id}"),
            5..=6 => "INSERT INTO shop.orders (note) VALUES ('new order')".to_string(),
            7 => format!("DELETE FROM shop.orders WHERE id = {id}"),
            8 => format!("UPDATE shop.orders SET note = NULL WHERE id = {id}"),
            // A primary-key move to a key no insert can take (AUTO_INCREMENT only counts up
            // from the highest positive key): moving up (`id + 50000000`) raised the counter
            // into the moved keys' range, and a later move collided with an inserted row.
            _ => format!("UPDATE shop.orders SET id = -id WHERE id = {id}"),
        };
        match db.query_drop(&sql).await {
            Ok(()) => c.0.fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                eprintln!(
                    "    an application write failed: {sql}: {}",
                    cdc::describe_mysql_error(&e)
                );
                c.1.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

fn setup(what: &'static str) -> impl Fn(String) -> DemoError {
    move |detail| DemoError::Setup { what, detail }
}

pub async fn demo(rows: i64, writes_per_second: u32) -> Result<bool, DemoError> {
    step("starting a throwaway MariaDB (row binlog, full images, GTIDs)");
    let server = tokio::task::spawn_blocking(testkit::MariaDb::start)
        .await
        .map_err(|e| setup("starting MariaDB")(e.to_string()))?
        .map_err(|e| setup("starting MariaDB")(format!("{e:#}")))?;
    let url = server.url();
    let mut db = mysql_async::Conn::from_url(url.clone())
        .await
        .map_err(|e| setup("connecting to MariaDB")(e.to_string()))?;
    step(&format!("loading {rows} rows into shop.orders"));
    let t = Instant::now();
    let digits: Vec<String> = (0..7).map(|i| format!("{DIGITS} d{i}")).collect();
    let n: Vec<String> = (0..7)
        .map(|i| format!("d{i}.d * {}", 10i64.pow(i)))
        .collect();
    db.query_drop(format!(
        "CREATE DATABASE shop; \
         CREATE TABLE shop.orders (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, \
           amount DECIMAL(12,2) NOT NULL DEFAULT 0, note VARCHAR(200) NULL, \
           created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) ENGINE=InnoDB; \
         INSERT INTO shop.orders (id, amount, note) \
         SELECT n, (n % 100000) / 100, IF(n % 3 = 0, NULL, CONCAT('order ', n)) \
         FROM (SELECT 1 + {} AS n FROM {}) g WHERE n <= {rows}",
        n.join(" + "),
        digits.join(", ")
    ))
    .await
    .map_err(|e| setup("loading the demo table")(cdc::describe_mysql_error(&e)))?;
    eprintln!("    loaded in {:.1}s", t.elapsed().as_secs_f64());

    step(&format!(
        "starting the application: {writes_per_second} writes/s"
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let load = tokio::spawn(write_load(
        url.clone(),
        writes_per_second,
        stop.clone(),
        counters.clone(),
        rows,
    ));

    let engine = Engine::mysql(url.clone())?;
    let spec = engine::MigrationSpec::parse(MIGRATION, FILE).map_err(EngineError::from)?;
    step(&format!("splice plan {FILE}"));
    let plan = engine.plan(&spec).await?;
    for (col, expr) in &plan.forward.columns {
        eprintln!("    {col} = {expr}");
    }
    step("splice expand");
    engine.expand(MIGRATION, FILE).await?;

    step("splice sync --until-caught-up (binlog slot first, then the throttled backfill)");
    let t = Instant::now();
    let opts = SyncOptions {
        until_caught_up: true,
        ..Default::default()
    };
    let synced = engine
        .sync(
            "orders_v2",
            &opts,
            &Control::new(RateLimit::Unlimited),
            &mut NoProgress,
        )
        .await?;
    let sync_s = t.elapsed().as_secs_f64();

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
    step("splice cutover (sentry swap: LOCK TABLES, drain, RENAME TABLE from a second session)");
    let cut = engine
        .cutover("orders_v2", u64::MAX, ReverseSync::Start)
        .await?;
    eprintln!("    tables locked for {:.1} ms", cut.lock_ms);
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
    engine
        .sync(
            "orders_v2",
            &opts,
            &Control::new(RateLimit::Unlimited),
            &mut NoProgress,
        )
        .await?;
    let mismatched: Option<i64> = db
        .query_first(
            "SELECT COUNT(*) FROM ( \
               SELECT o.id FROM shop.orders o LEFT JOIN shop._splice_orders_v2_new n ON n.id = o.id \
                WHERE n.id IS NULL OR n.amount_cents <> ROUND(o.amount * 100) \
                   OR NOT (n.note <=> o.note) OR n.created_at <> o.created_at \
               UNION ALL \
               SELECT n.id FROM shop._splice_orders_v2_new n LEFT JOIN shop.orders o ON o.id = n.id \
                WHERE o.id IS NULL) d",
        )
        .await
        .map_err(|e| setup("comparing old and new")(cdc::describe_mysql_error(&e)))?;
    let mismatched = mismatched.unwrap_or(-1);
    let _ = db.disconnect().await;

    println!();
    println!("splice demo report (MariaDB, {rows} rows, {writes_per_second} writes/s)");
    println!(
        "  backfill + catch-up     {:>10.0} rows/s  ({} rows in {:.1}s)",
        synced.rows_copied as f64 / sync_s,
        synced.rows_copied,
        sync_s
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
        "  rollback after cutover  {:>10.2} s      (tables locked {:.1} ms)",
        rollback_s,
        rb.lock_ms.unwrap_or(0.0)
    );
    println!(
        "  application writes      {:>10}        ({} failed; every statement is valid in both shapes)",
        counters.0.load(Ordering::Relaxed),
        counters.1.load(Ordering::Relaxed)
    );
    println!(
        "  rows differing old/new  {:>10}        (compared in SQL, independently of verify)",
        mismatched
    );
    drop(server);
    Ok(mismatched == 0)
}
