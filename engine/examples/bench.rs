//! `scripts/bench engine`: splice against the plain-SQL baselines on one throwaway server, in
//! one run, printing ratios.
//!
//! (a) backfill rows/s vs `INSERT INTO new SELECT <mapping> FROM old`
//! (b) single-row update TPS while sync runs vs without (each paired with a run just before),
//!     and beside a looping plain `INSERT … SELECT` (what any bulk copy costs, no splice)
//! (c) verify rows/s vs `COPY old TO '/dev/null'`, and vs the server's share of verify alone
//! (d) cutover lock time under write load (p50 / p99 / max over repeated swaps)
//! (e) rollback-after-cutover time
//! (f) secondary indexes built in bulk after the backfill vs maintained by every copied row:
//!     an `alter` migration of a table with four secondary indexes, expand + sync, each order
//!
//! Usage: cargo run --release -p splice-engine --example bench -- [ROWS] [SWAPS]

use engine::backfill::{Control, NoProgress};
use engine::phases::ReverseSync;
use engine::{Engine, Postgres, RateLimit};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// The example migration, under its own name.
const EXAMPLE: &str = include_str!("../../migrations/orders_v2.toml");

const MAPPING: &str =
    "id, customer_id, (amount * 100)::bigint, coalesce(currency, 'EUR')::char(3), note";

/// The migration's target shape, for the tables the plain-SQL baselines fill.
const TARGET_COLUMNS: &str = "(id bigint PRIMARY KEY, customer_id bigint NOT NULL, \
     amount_cents bigint NOT NULL, currency char(3) NOT NULL, note text)";

/// The backfill rate of the throttled variant of (b).
const THROTTLED_ROWS_PER_SECOND: u32 = 20_000;

/// The steady application write rate during cutovers and rollbacks, (d) and (e).
const LOAD_PER_SECOND: u32 = 1_000;

async fn connect(url: &str) -> Client {
    match engine::connect(url).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bench: cannot connect: {e}");
            std::process::exit(2);
        }
    }
}

async fn exec(db: &Client, sql: &str) {
    if let Err(e) = db.batch_execute(sql).await {
        eprintln!("bench: {sql}: {}", engine::db_message(&e));
        std::process::exit(2);
    }
}

fn die<T, E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> T + '_ {
    move |e| {
        eprintln!("bench: {what}: {e}");
        std::process::exit(2)
    }
}

/// How the application's commits wait.
#[derive(Clone, Copy, PartialEq)]
enum Commit {
    /// PostgreSQL's default: each commit waits for its WAL to reach the disk.
    Durable,
    /// `synchronous_commit = off`: commits do not wait, so the load is bound by CPU.
    Async,
}

/// Single-row updates by primary key from `clients` connections until `stop`; returns the count.
async fn update_load(
    url: &str,
    clients: usize,
    rows: i64,
    per_second: Option<u32>,
    commit: Commit,
    stop: Arc<AtomicBool>,
) -> Arc<AtomicU64> {
    let count = Arc::new(AtomicU64::new(0));
    for c in 0..clients {
        let db = connect(url).await;
        if commit == Commit::Async {
            exec(&db, "SET synchronous_commit = off").await;
        }
        let stop = stop.clone();
        let count = count.clone();
        let mut pace = per_second.map(|r| {
            let every = Duration::from_secs_f64(clients as f64 / r.max(1) as f64);
            let mut i = tokio::time::interval(every);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        tokio::spawn(async move {
            let Ok(stmt) = db
                .prepare("UPDATE orders SET customer_id = customer_id + 1 WHERE id = $1")
                .await
            else {
                return;
            };
            let mut x: i64 = 12345 + c as i64 * 7919;
            while !stop.load(Ordering::Relaxed) {
                if let Some(p) = pace.as_mut() {
                    p.tick().await;
                }
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407)
                    & i64::MAX;
                let id = x % rows + 1;
                if db.execute(&stmt, &[&id]).await.is_ok() {
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    count
}

async fn measure_tps(url: &str, rows: i64, secs: u64, commit: Commit) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let count = update_load(url, 2, rows, None, commit, stop.clone()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let start = count.load(Ordering::Relaxed);
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let n = count.load(Ordering::Relaxed) - start;
    let tps = n as f64 / t.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(100)).await;
    tps
}

/// What runs beside the application while (b) measures.
#[derive(Clone, Copy)]
enum Sync {
    /// Capture and the backfill at this rate (None: unthrottled).
    Backfilling(Option<u32>),
    /// Capture and the applier only: the backfill finished first.
    Following,
}

/// Update TPS measured while the one-statement copy of (a) runs over and over beside the
/// application, into a scratch table: what any bulk copy of the table costs the application,
/// with no splice involved.
async fn tps_beside_bulk_copy(url: &str, rows: i64, secs: u64, commit: Commit) -> f64 {
    let db = connect(url).await;
    exec(&db, &format!("CREATE TABLE bulk_copy {TARGET_COLUMNS}")).await;
    let stop = Arc::new(AtomicBool::new(false));
    let copier = {
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                exec(
                    &db,
                    &format!(
                        "TRUNCATE bulk_copy; INSERT INTO bulk_copy SELECT {MAPPING} FROM orders"
                    ),
                )
                .await;
            }
            exec(&db, "DROP TABLE bulk_copy").await;
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tps = measure_tps(url, rows, secs, commit).await;
    stop.store(true, Ordering::Relaxed);
    let _ = copier.await;
    tps
}

/// Update TPS measured while a fresh migration of the same table syncs, then rolled back.
async fn tps_while_syncing(
    url: &str,
    engine: &Engine<Postgres>,
    name: &str,
    what: Sync,
    (rows, secs): (i64, u64),
    commit: Commit,
) -> f64 {
    let spec = EXAMPLE.replace("orders_v2", name);
    engine
        .expand(&spec, name)
        .await
        .unwrap_or_else(die("expand"));
    let rate = match what {
        Sync::Backfilling(rate) => rate,
        Sync::Following => {
            let opts = engine::phases::SyncOptions {
                until_caught_up: true,
                ..Default::default()
            };
            engine
                .sync(
                    name,
                    &opts,
                    &Control::new(RateLimit::Unlimited),
                    &mut NoProgress,
                )
                .await
                .unwrap_or_else(die("sync"));
            None
        }
    };
    let control = Control::new(rate.map_or(RateLimit::Unlimited, RateLimit::from_rows_per_second));
    let sync = {
        let control = control.clone();
        let name = name.to_string();
        let url = url.to_string();
        tokio::spawn(async move {
            as_the_cli_runs(&url, move |engine| async move {
                // The copy itself, unthrottled or at a fixed rate: the impact budget (on by
                // default) is measured by `scripts/bench impact`.
                let opts = engine::phases::SyncOptions {
                    max_latency_increase: Some(None),
                    ..Default::default()
                };
                engine.sync(&name, &opts, &control, &mut NoProgress).await
            })
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tps = measure_tps(url, rows, secs, commit).await;
    control.stop();
    let _ = sync.await;
    engine.rollback(name).await.unwrap_or_else(die("rollback"));
    tps
}

/// Runs `work` on a thread of its own with a current-thread runtime, as the CLI runs every
/// migration command (src/migrate_cmd.rs), beside whatever this runtime is doing.
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
        rt.block_on(work(Engine::new(url)))
    })
    .await
    .unwrap_or_else(die("joining a command"))
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rows: i64 = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let swaps: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(5);
    // A durable server, as in production (the test harness turns fsync off).
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
    let db = connect(&url).await;
    eprintln!("bench: loading {rows} rows");
    exec(
        &db,
        &format!(
            "CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id bigint NOT NULL,
                                  amount numeric(12,2) NOT NULL, currency text, note text);
             INSERT INTO orders (customer_id, amount, currency, note)
             SELECT g % 9973, (g % 100000) / 100.0, CASE WHEN g % 7 = 0 THEN NULL ELSE 'USD' END,
                    'order number ' || g FROM generate_series(1, {rows}) g"
        ),
    )
    .await;
    exec(&db, "VACUUM ANALYZE orders").await;
    exec(&db, "CHECKPOINT").await;
    let engine = Engine::new(url.clone());

    // (a) backfill vs one INSERT … SELECT.
    exec(&db, &format!("CREATE TABLE baseline {TARGET_COLUMNS}")).await;
    let t = Instant::now();
    exec(
        &db,
        &format!("INSERT INTO baseline SELECT {MAPPING} FROM orders"),
    )
    .await;
    let insert_rate = rows as f64 / t.elapsed().as_secs_f64();
    exec(&db, "DROP TABLE baseline").await;
    exec(&db, "CHECKPOINT").await;
    let spec = EXAMPLE.replace("orders_v2", "orders_bench");
    engine
        .expand(&spec, "bench")
        .await
        .unwrap_or_else(die("expand"));
    // The copy mechanism on an idle server: without the impact budget, which would slow it
    // down for the heartbeat's sake (`scripts/bench impact` measures the defaults).
    let opts = engine::phases::SyncOptions {
        until_caught_up: true,
        max_latency_increase: Some(None),
        ..Default::default()
    };
    let t = Instant::now();
    let first = opts.clone();
    as_the_cli_runs(&url, move |engine| async move {
        engine
            .sync(
                "orders_bench",
                &first,
                &Control::new(RateLimit::Unlimited),
                &mut NoProgress,
            )
            .await
    })
    .await
    .unwrap_or_else(die("sync"));
    let backfill_rate = rows as f64 / t.elapsed().as_secs_f64();
    exec(&db, "CHECKPOINT").await;

    // (c) verify vs COPY TO /dev/null, and vs a COPY of the mapped rows in key order (what
    // verify's source side must read, without the target side or the hashing).
    let t = Instant::now();
    exec(&db, "COPY orders TO '/dev/null'").await;
    let copy_rate = rows as f64 / t.elapsed().as_secs_f64();
    let source_copy = format!("COPY (SELECT {MAPPING} FROM orders ORDER BY id) TO '/dev/null'");
    let t = Instant::now();
    exec(&db, &source_copy).await;
    let mapped_copy_rate = rows as f64 / t.elapsed().as_secs_f64();
    // The server's share of verify alone: both sides read in key order at once, on two
    // sessions, written to /dev/null by the server. No client-side verify can beat it here.
    let (src_db, tgt_db) = (connect(&url).await, connect(&url).await);
    let t = Instant::now();
    tokio::join!(
        exec(&src_db, &source_copy),
        exec(
            &tgt_db,
            "COPY (SELECT * FROM _splice_orders_bench_new ORDER BY id) TO '/dev/null'",
        )
    );
    let floor_rate = rows as f64 / t.elapsed().as_secs_f64();
    let report = as_the_cli_runs(
        &url,
        |engine| async move { engine.verify("orders_bench").await },
    )
    .await
    .unwrap_or_else(die("verify"));
    let verify_rate = report.rows_checked as f64 / report.seconds;

    // (b) update TPS without and with a sync running (a second migration's backfill). Each
    // run with sync is paired with a run without it just before, so drift on a shared machine
    // (checkpoints, autovacuum, neighbours) does not masquerade as sync's cost.
    let secs = 6;
    // Per commit mode: [unthrottled backfill, throttled backfill, backfill done], each as
    // (without sync, with sync).
    let mut tps = [[(0.0, 0.0); 3]; 2];
    // Per commit mode: the plain INSERT … SELECT of (a) beside the application instead.
    let mut bulk = [(0.0, 0.0); 2];
    // One migration per table at a time: (b)'s migrations take the table in turn, and
    // orders_bench is expanded again for (d) and (e) afterwards.
    engine
        .abort("orders_bench")
        .await
        .unwrap_or_else(die("abort"));
    for (i, commit) in [Commit::Durable, Commit::Async].into_iter().enumerate() {
        let runs = [
            Sync::Backfilling(None),
            Sync::Backfilling(Some(THROTTLED_ROWS_PER_SECOND)),
            Sync::Following,
        ];
        for (j, what) in runs.into_iter().enumerate() {
            let name = format!("orders_bench_{i}_{j}");
            let alone = measure_tps(&url, rows, secs, commit).await;
            let with = tps_while_syncing(&url, &engine, &name, what, (rows, secs), commit).await;
            tps[i][j] = (alone, with);
        }
        let alone = measure_tps(&url, rows, secs, commit).await;
        bulk[i] = (alone, tps_beside_bulk_copy(&url, rows, secs, commit).await);
    }

    let again = EXAMPLE.replace("orders_v2", "orders_bench");
    engine
        .expand(&again, "bench")
        .await
        .unwrap_or_else(die("expand"));
    let resync = opts.clone();
    as_the_cli_runs(&url, move |engine| async move {
        engine
            .sync(
                "orders_bench",
                &resync,
                &Control::new(RateLimit::Unlimited),
                &mut NoProgress,
            )
            .await
    })
    .await
    .unwrap_or_else(die("sync"));
    as_the_cli_runs(
        &url,
        |engine| async move { engine.verify("orders_bench").await },
    )
    .await
    .unwrap_or_else(die("verify"));

    // (d) + (e) cutover lock time under write load; rollback after cutover.
    let stop = Arc::new(AtomicBool::new(false));
    let _load = update_load(
        &url,
        2,
        rows,
        Some(LOAD_PER_SECOND),
        Commit::Durable,
        stop.clone(),
    )
    .await;
    let mut locks = Vec::new();
    let mut rollbacks = Vec::new();
    for i in 0..swaps {
        if i > 0 {
            engine
                .sync(
                    "orders_bench",
                    &opts,
                    &Control::new(RateLimit::Unlimited),
                    &mut NoProgress,
                )
                .await
                .unwrap_or_else(die("sync"));
            let r = engine
                .verify("orders_bench")
                .await
                .unwrap_or_else(die("verify"));
            if !r.passed() {
                eprintln!("bench: verify failed: {:?}", r.diverged);
                std::process::exit(1);
            }
        }
        let cut = engine
            .cutover("orders_bench", u64::MAX, ReverseSync::Start)
            .await
            .unwrap_or_else(die("cutover"));
        locks.push(cut.lock_ms);
        let t = Instant::now();
        let rb = engine
            .rollback("orders_bench")
            .await
            .unwrap_or_else(die("rollback"));
        rollbacks.push(t.elapsed().as_secs_f64());
        if let Some(l) = rb.lock_ms {
            locks.push(l);
        }
        eprintln!(
            "bench: swap {}: cutover lock {:.1} ms, rollback {:.2} s",
            i + 1,
            cut.lock_ms,
            t.elapsed().as_secs_f64()
        );
    }
    stop.store(true, Ordering::Relaxed);
    locks.sort_by(f64::total_cmp);
    rollbacks.sort_by(f64::total_cmp);

    println!(
        "engine benchmark: {rows} rows, {} cores, one run",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!(
        "  (a) backfill           {:>10.0} rows/s  vs INSERT…SELECT {:>10.0} rows/s  ratio {:.2}x (target >= 0.8x)",
        backfill_rate, insert_rate, backfill_rate / insert_rate
    );
    let labels = ["durable commits", "synchronous_commit=off (CPU-bound)"];
    let variants = [
        "backfill unthrottled    ".to_string(),
        format!("backfill at {THROTTLED_ROWS_PER_SECOND} rows/s"),
        "backfill done (capture) ".to_string(),
    ];
    for ((label, runs), (alone, with)) in labels.into_iter().zip(tps).zip(bulk) {
        println!(
            "  (b) update TPS, 2 clients, {label} (each beside a run without sync just before):"
        );
        for (variant, (alone, with)) in variants.iter().zip(runs) {
            println!(
                "        sync, {variant}  {with:>8.0} tx/s  vs {alone:>8.0} without  ratio {:.2}x (target >= 0.9x)",
                with / alone
            );
        }
        println!(
            "        no splice: INSERT…SELECT looping  {with:>8.0} tx/s  vs {alone:>8.0} without  ratio {:.2}x (what any bulk copy costs)",
            with / alone
        );
    }
    println!(
        "  (c) verify             {:>10.0} rows/s  vs COPY TO /dev/null {:>6.0} rows/s  ratio {:.2}x (target >= 0.7x)",
        verify_rate, copy_rate, verify_rate / copy_rate
    );
    println!(
        "      vs COPY of the mapped rows in key order {:>10.0} rows/s  ratio {:.2}x",
        mapped_copy_rate,
        verify_rate / mapped_copy_rate
    );
    println!(
        "      vs the server's share alone (both sides' COPY at once, no client) {:>10.0} rows/s  ratio {:.2}x",
        floor_rate,
        verify_rate / floor_rate
    );
    println!(
        "  (d) cutover lock under {LOAD_PER_SECOND} updates/s: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} swaps (target p99 < 200 ms)",
        pct(&locks, 0.5), pct(&locks, 0.99), locks.last().copied().unwrap_or(0.0), locks.len()
    );
    println!(
        "  (e) rollback after cutover: p50 {:.2} s, max {:.2} s over {} rollbacks (target < 5 s)",
        pct(&rollbacks, 0.5),
        rollbacks.last().copied().unwrap_or(0.0),
        rollbacks.len()
    );
    // (f) the shadow's secondary indexes: built after the backfill vs at expand.
    let item_rows = (rows / 2).max(1);
    let mut index_orders = Vec::new();
    for (order, setting) in [
        ("at_expand", "at_expand"),
        ("after_backfill", "after_backfill"),
    ] {
        let table = format!("items_{order}");
        exec(
            &db,
            &format!(
                "CREATE TABLE {table} (id bigint PRIMARY KEY, sku text NOT NULL, title varchar(80) NOT NULL,
                                       price numeric(10,2) NOT NULL, created_at timestamptz NOT NULL);
                 INSERT INTO {table} SELECT g, 'sku-' || (g::bigint * 7919 % 1000003), 'item ' || g,
                                           (g % 10000) / 100.0, now() - (g || ' s')::interval
                 FROM generate_series(1, {item_rows}) g;
                 CREATE INDEX {table}_sku ON {table} (sku);
                 CREATE INDEX {table}_title ON {table} (lower(title));
                 CREATE INDEX {table}_price ON {table} (price, created_at);
                 CREATE INDEX {table}_created ON {table} (created_at DESC);"
            ),
        )
        .await;
        exec(&db, &format!("VACUUM ANALYZE {table}")).await;
        exec(&db, "CHECKPOINT").await;
        let spec = format!(
            "name = \"{table}\"\ntable = \"public.{table}\"\nbuild_indexes = \"{setting}\"\n\
             alter = \"ALTER TABLE {table} ALTER COLUMN title TYPE varchar(200)\"\n"
        );
        let t = Instant::now();
        engine
            .expand(&spec, "bench")
            .await
            .unwrap_or_else(die("expand"));
        let name = table.clone();
        let opts = opts.clone();
        as_the_cli_runs(&url, move |engine| async move {
            engine
                .sync(
                    &name,
                    &opts,
                    &Control::new(RateLimit::Unlimited),
                    &mut NoProgress,
                )
                .await
        })
        .await
        .unwrap_or_else(die("sync"));
        index_orders.push((order, t.elapsed().as_secs_f64()));
        eprintln!("bench: (f) {order}: {:.1} s", t.elapsed().as_secs_f64());
        engine.abort(&table).await.unwrap_or_else(die("abort"));
        exec(&db, &format!("DROP TABLE {table}; CHECKPOINT")).await;
    }

    if let [(_, at_expand), (_, after)] = index_orders[..] {
        println!(
            "  (f) alter migration of {item_rows} rows with 4 secondary indexes, expand + sync: indexes built after the backfill {after:.1} s vs maintained during it {at_expand:.1} s  ratio {:.2}x (the default is the faster order)",
            at_expand / after
        );
    }
}
