//! `scripts/bench faults`: a randomized fault campaign against a real PostgreSQL.
//!
//! Each seed runs the example migration through its whole life (expand, sync, verify, cutover,
//! rollback, cutover again, contract, restore from quarantine) while an application inserts,
//! updates, deletes and changes primary keys concurrently, and kills the `splice` process at
//! random: at a random named fault point (`SPLICE_FAULT_POINT`, inside and around the cutover
//! swap, between the changes of contract and restore) or with SIGKILL after a random delay.
//! Every killed command is run again until it finishes. At the end it counts:
//! - **rows lost**: rows the application inserted (commit acknowledged) that the live table
//!   does not have;
//! - **rows divergent**: keys where the old and the new table differ (the other table is kept
//!   current by reverse sync, so both must agree row for row).
//!
//! Usage: `fault_campaign SPLICE_BINARY [SEEDS (50)] [ROWS (3000)]`. The binary must be a debug
//! build (the fault points are compiled into debug builds only).

use anyhow::{bail, Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MIGRATION: &str = include_str!("../migrations/orders_v2.toml");

/// The fault points each command passes (see `engine::fault::POINTS`).
fn points_of(command: &str) -> &'static [&'static str] {
    match command {
        "cutover" => &[
            "cutover.reverse_created",
            "swap.locked",
            "swap.drained",
            "swap.committed",
            "cutover.swapped",
        ],
        "rollback" => &[
            "swap.locked",
            "swap.drained",
            "swap.committed",
            "rollback.swapped",
            "restore.moved",
            "restore.copied",
        ],
        "contract" => &["contract.quarantined"],
        _ => &[],
    }
}

#[derive(Default)]
struct Tally {
    seeds: u64,
    kills: u64,
    fault_point_kills: u64,
    reruns: u64,
    writes: u64,
    rows_lost: u64,
    rows_divergent: u64,
}

struct Seed<'a> {
    splice: &'a Path,
    url: String,
    dir: PathBuf,
    rng: StdRng,
    tally: &'a mut Tally,
}

impl Seed<'_> {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(self.splice);
        c.args(args)
            .current_dir(&self.dir)
            .env("SPLICE_DATABASE_URL", &self.url)
            .env_remove("DATABASE_URL")
            .env_remove("SPLICE_FAULT_POINT")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// Runs `args` to completion, retrying while a killed runner's session is being torn down.
    fn finish(&mut self, args: &[&str]) -> Result<Output> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = self.command(args).output()?;
            let err = String::from_utf8_lossy(&out.stderr);
            let busy = err.contains("being run by another") || err.contains("is active for PID");
            if out.status.success() {
                return Ok(out);
            }
            if !busy || Instant::now() > deadline {
                bail!(
                    "{args:?} failed: exit {:?}\n{}\n{}",
                    out.status.code(),
                    String::from_utf8_lossy(&out.stdout),
                    err
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs `args` once with a random fault (a named point, or SIGKILL after a random delay,
    /// or none), then again until it finishes.
    fn with_faults(&mut self, args: &[&str]) -> Result<()> {
        let points = points_of(args[0]);
        let roll = self.rng.random_range(0..10);
        if roll < 5 && !points.is_empty() {
            let point = points[self.rng.random_range(0..points.len())];
            let out = self
                .command(args)
                .env("SPLICE_FAULT_POINT", point)
                .output()?;
            if out.status.code().is_none() {
                self.tally.kills += 1;
                self.tally.fault_point_kills += 1;
            }
        } else if roll < 8 {
            let mut child = self.command(args).spawn()?;
            let delay = self.rng.random_range(20..1500);
            std::thread::sleep(Duration::from_millis(delay));
            if child.try_wait()?.is_none() {
                child.kill()?;
                self.tally.kills += 1;
            }
            child.wait()?;
        } else {
            self.finish(args)?;
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(150));
        self.tally.reruns += 1;
        self.finish(args)?;
        Ok(())
    }

    /// Runs `sql` (one or more statements) on the seed's database.
    fn exec(&self, sql: &str) -> Result<()> {
        let rt = runtime()?;
        rt.block_on(async {
            let db = testkit::connect(&self.url).await?;
            Ok(db.batch_execute(sql).await?)
        })
    }

    /// The `bigint` the query returns.
    fn count(&self, sql: &str) -> Result<i64> {
        let rt = runtime()?;
        rt.block_on(async {
            let db = testkit::connect(&self.url).await?;
            Ok(db.query_one(sql, &[]).await?.try_get(0)?)
        })
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// The application: random single-row writes that fit either shape of `orders`, recording
/// the ids of the rows it inserted (commit acknowledged).
fn application(
    url: String,
    seed: u64,
    stop: Arc<AtomicBool>,
    inserted: Arc<Mutex<Vec<i64>>>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(_) => return 0,
        };
        rt.block_on(async move {
            let Ok(db) = testkit::connect(&url).await else {
                return 0;
            };
            let mut rng = StdRng::seed_from_u64(seed);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let id: i64 = rng.random_range(1..3_000);
                let fresh = 50_000_000 + n as i64;
                match rng.random_range(0..10) {
                    0..=4 => {
                        let _ = db
                            .batch_execute(&format!(
                                "UPDATE orders SET note = 'w{n}' WHERE id = {id}"
                            ))
                            .await;
                    }
                    5..=6 => {
                        let old = format!(
                            "INSERT INTO orders (id, customer_id, amount) VALUES ({fresh}, 3, 9.99)"
                        );
                        let new = format!(
                            "INSERT INTO orders (id, customer_id, amount_cents, currency) \
                             VALUES ({fresh}, 3, 999, 'USD')"
                        );
                        let ok = db.batch_execute(&old).await.is_ok()
                            || db.batch_execute(&new).await.is_ok();
                        if ok {
                            if let Ok(mut v) = inserted.lock() {
                                v.push(fresh);
                            }
                        }
                    }
                    7 => {
                        let _ = db
                            .batch_execute(&format!("DELETE FROM orders WHERE id = {id}"))
                            .await;
                    }
                    _ => {
                        let _ = db
                            .batch_execute(&format!(
                                "UPDATE orders SET id = id + 10000000 WHERE id = {id}"
                            ))
                            .await;
                    }
                }
                n += 1;
                if n % 10 == 0 {
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
            }
            n
        })
    })
}

fn run_seed(
    splice: &Path,
    server: &testkit::Postgres,
    seed: u64,
    rows: i64,
    tally: &mut Tally,
) -> Result<()> {
    let database = format!("seed_{seed}");
    server.psql(&format!("CREATE DATABASE {database}"))?;
    let url = server.url_as("postgres", &database);
    let dir = std::env::temp_dir().join(format!("splice-faults-{}-{seed}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("orders_v2.toml"), MIGRATION)?;
    let mut s = Seed {
        splice,
        url: url.clone(),
        dir: dir.clone(),
        rng: StdRng::seed_from_u64(seed),
        tally,
    };
    s.exec(&format!(
        "CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id bigint NOT NULL,
                              amount numeric(12,2) NOT NULL, currency text, note text);
         INSERT INTO orders (customer_id, amount, currency, note)
         SELECT g % 97, (g % 1000) / 7.0, CASE WHEN g % 5 = 0 THEN NULL ELSE 'USD' END, 'n' || g
         FROM generate_series(1, {rows}) g"
    ))?;
    let stop = Arc::new(AtomicBool::new(false));
    let inserted = Arc::new(Mutex::new(Vec::new()));
    let app = application(url.clone(), seed, stop.clone(), inserted.clone());

    s.finish(&["expand", "orders_v2.toml"])?;
    s.with_faults(&[
        "sync",
        "orders_v2",
        "--until-caught-up",
        "--chunk-target",
        "20ms",
    ])?;
    for _ in 0..2 {
        s.finish(&["sync", "orders_v2", "--until-caught-up"])?;
        verify_until_it_passes(&mut s)?;
        s.with_faults(&["cutover", "orders_v2"])?;
        std::thread::sleep(Duration::from_millis(s.rng.random_range(0..500)));
        s.finish(&["sync", "orders_v2", "--until-caught-up"])?;
        s.with_faults(&["rollback", "orders_v2"])?;
    }
    s.finish(&["sync", "orders_v2", "--until-caught-up"])?;
    verify_until_it_passes(&mut s)?;
    s.with_faults(&["cutover", "orders_v2"])?;
    s.with_faults(&["contract", "orders_v2"])?;
    std::thread::sleep(Duration::from_millis(300));
    s.with_faults(&["rollback", "orders_v2"])?;

    stop.store(true, Ordering::Relaxed);
    s.tally.writes += app.join().unwrap_or(0);
    s.finish(&["sync", "orders_v2", "--until-caught-up"])?;
    let divergent = testkit::orders_divergence_sql("_splice_orders_v2_old", "orders");
    let d = s.count(&format!("SELECT count(*) FROM ({divergent}) d"))? as u64;
    let ids = inserted.lock().map(|v| v.clone()).unwrap_or_default();
    let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    let lost: u64 = if ids.is_empty() {
        0
    } else {
        s.count(&format!(
            "SELECT count(*) FROM unnest(ARRAY[{list}]::bigint[]) i WHERE NOT EXISTS \
             (SELECT 1 FROM orders o WHERE o.id = i)"
        ))? as u64
    };
    s.tally.rows_divergent += d;
    s.tally.rows_lost += lost;
    s.tally.seeds += 1;
    let _ = std::fs::remove_dir_all(&dir);
    // The seed's database goes; its slots went with contract.
    let _ = server.psql(&format!("DROP DATABASE {database} WITH (FORCE)"));
    println!(
        "seed {seed:>3}: kills so far {:>4}, lost {lost}, divergent {d}",
        s.tally.kills
    );
    Ok(())
}

/// A verify can fail while the application races it (a key changed between the passes);
/// sync and verify again, as an operator would.
fn verify_until_it_passes(s: &mut Seed<'_>) -> Result<()> {
    for _ in 0..10 {
        let out = s.command(&["verify", "orders_v2"]).output()?;
        if out.status.success() {
            return Ok(());
        }
        s.finish(&["sync", "orders_v2", "--until-caught-up"])?;
    }
    bail!("verify did not pass in 10 rounds")
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let splice = PathBuf::from(
        args.next()
            .context("usage: fault_campaign SPLICE_BINARY [SEEDS] [ROWS]")?,
    );
    // A copy of its own: a rebuild of the original while the campaign runs must not pull
    // the binary from under it.
    let copy = std::env::temp_dir().join(format!("splice-faults-{}", std::process::id()));
    std::fs::copy(&splice, &copy).with_context(|| format!("copying {}", splice.display()))?;
    let splice = copy;
    let seeds: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(50);
    let rows: i64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(3_000);
    let server = testkit::Postgres::start()?;
    let started = Instant::now();
    let mut tally = Tally::default();
    for seed in 1..=seeds {
        let ran = run_seed(&splice, &server, seed, rows, &mut tally);
        if let Err(e) = ran {
            let _ = std::fs::remove_file(&splice);
            return Err(e.context(format!("seed {seed}")));
        }
    }
    let _ = std::fs::remove_file(&splice);
    println!();
    println!("fault campaign: {} s", started.elapsed().as_secs());
    println!("  seeds run            {}", tally.seeds);
    println!(
        "  kills                {} ({} at named fault points, {} by SIGKILL at random times)",
        tally.kills,
        tally.fault_point_kills,
        tally.kills - tally.fault_point_kills
    );
    println!("  re-runs              {}", tally.reruns);
    println!("  application writes   {}", tally.writes);
    println!("  rows lost            {}", tally.rows_lost);
    println!("  rows divergent       {}", tally.rows_divergent);
    if tally.rows_lost > 0 || tally.rows_divergent > 0 {
        bail!("the campaign found lost or divergent rows");
    }
    Ok(())
}
