//! `splice daemon` end to end through the binary, against a real PostgreSQL server: it drives
//! the example migration to verified on its own, reports it over /healthz and /metrics, takes
//! pause, resume, cutover and rollback over HTTP, cuts over on its own when the file's
//! `[automation]` gates held and rolls back on its own when the watch fails, stops cleanly on
//! SIGTERM, and says which database it cannot reach.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::Postgres;

#[path = "common/daemon.rs"]
mod harness;
use harness::{control_actions, control_event, Daemon, Metrics};

const MIGRATION: &str = include_str!("../migrations/orders_v2.toml");

/// Metric names the daemon exposes for every migration once its status was read
/// (docs/daemon.md lists them); `splice_cutover_lock_seconds` follows a cutover.
const REQUIRED_METRICS: &[&str] = &[
    "splice_migration_phase",
    "splice_backfill_rows_copied",
    "splice_backfill_rows_total",
    "splice_backfill_rows_per_second",
    "splice_capture_lag_bytes",
    "splice_capture_lag_seconds",
    "splice_throttled",
    "splice_verify_divergent_rows",
    "splice_verify_divergence_ratio",
    "splice_verify_last_pass_timestamp_seconds",
    "splice_slot_retained_wal_bytes",
];

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("splice-daemon-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("orders_v2.toml"), MIGRATION).expect("write migration");
    dir
}

/// The application: random updates, inserts, deletes and key changes until `stop`.
fn write_load(url: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            use rand::{Rng, SeedableRng};
            let db = testkit::connect(&url).await.expect("connect");
            let mut rng = rand::rngs::StdRng::seed_from_u64(13);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let id: i64 = rng.random_range(1..20_000);
                let sql = match rng.random_range(0..10) {
                    0..=4 => format!(
                        "UPDATE orders SET amount = amount + 1, note = 'w{n}' WHERE id = {id}"
                    ),
                    5..=6 => {
                        "INSERT INTO orders (customer_id, amount) VALUES (3, 9.99)".to_string()
                    }
                    7 => format!("DELETE FROM orders WHERE id = {id}"),
                    _ => format!("UPDATE orders SET id = id + 10000000 WHERE id = {id}"),
                };
                let _ = db.batch_execute(&sql).await;
                n += 1;
                if n % 20 == 0 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            n
        })
    })
}

fn splice(pg: &Postgres, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_splice"))
        .args(args)
        .env("SPLICE_DATABASE_URL", pg.url())
        .env_remove("DATABASE_URL")
        .stdin(Stdio::null())
        .output()
        .expect("run splice")
}

fn status_json(pg: &Postgres) -> serde_json::Value {
    let out = splice(pg, &["status", "orders_v2", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

const PASSES: &str = "splice_verify_passes{migration=\"orders_v2\"}";

#[test]
fn the_daemon_drives_a_migration_to_verified_keeps_verifying_under_load_and_stops_cleanly_on_sigterm(
) {
    let pg = Postgres::start().expect("start PostgreSQL");
    pg.psql(
        "CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id bigint NOT NULL,
                              amount numeric(12,2) NOT NULL, currency text, note text);
         INSERT INTO orders (customer_id, amount, currency, note)
         SELECT g % 97, (g % 1000) / 7.0, CASE WHEN g % 5 = 0 THEN NULL ELSE 'USD' END,
                'n' || g FROM generate_series(1, 20000) g;",
    )
    .expect("create orders");
    let dir = temp_dir("drive");
    let mut daemon = Daemon::start(
        &dir,
        &pg.url(),
        &["--verify-interval", "1s", "orders_v2.toml"],
    );

    assert_eq!(daemon.get("/healthz/live").0, 200);
    let m = daemon.metrics_until("backfill and a clean verify pass", |m| {
        m.get("splice_backfill_done{migration=\"orders_v2\"}") == Some(1.0)
            && m.get(PASSES).is_some_and(|n| n >= 1.0)
            && m.get("splice_migration_phase{migration=\"orders_v2\",phase=\"verified\"}")
                == Some(1.0)
    });
    for name in REQUIRED_METRICS {
        assert!(
            m.text.contains(&format!("# TYPE {name} gauge")),
            "{name} is exposed:\n{}",
            m.text
        );
    }
    assert_eq!(
        m.value("splice_backfill_rows_copied{migration=\"orders_v2\"}"),
        20000.0,
        "every row of the table was copied"
    );
    assert!(m.value("splice_backfill_rows_total{migration=\"orders_v2\"}") > 0.0);
    assert!(m.value("splice_backfill_rows_per_second{migration=\"orders_v2\"}") > 0.0);
    assert_eq!(
        m.value("splice_verify_divergent_rows{migration=\"orders_v2\"}"),
        0.0
    );
    assert_eq!(
        m.value("splice_verify_divergence_ratio{migration=\"orders_v2\"}"),
        0.0
    );
    assert_eq!(
        m.value("splice_verify_rows_checked{migration=\"orders_v2\"}"),
        20000.0
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let last = m.value("splice_verify_last_pass_timestamp_seconds{migration=\"orders_v2\"}");
    assert!(
        (now - 300.0..=now + 1.0).contains(&last),
        "the last pass was just now: {last} vs {now}"
    );
    assert_eq!(
        m.value("splice_migration_phase{migration=\"orders_v2\",phase=\"syncing\"}"),
        0.0
    );
    assert!(
        m.get(
            "splice_slot_retained_wal_bytes{migration=\"orders_v2\",slot=\"splice_orders_v2_fwd\"}"
        )
        .is_some(),
        "the forward slot's retained WAL is reported:\n{}",
        m.text
    );
    assert!(m
        .get("splice_capture_lag_bytes{migration=\"orders_v2\"}")
        .is_some());
    assert!(m
        .get("splice_capture_lag_seconds{migration=\"orders_v2\"}")
        .is_some());
    assert_eq!(
        m.value("splice_throttled{migration=\"orders_v2\",reason=\"paused\"}"),
        0.0
    );
    let (code, body) = daemon.get("/healthz/ready");
    assert_eq!(code, 200, "{body}\n{}", daemon.log());

    assert_eq!(
        m.value("splice_verify_incremental{migration=\"orders_v2\"}"),
        0.0,
        "the daemon's first pass is full"
    );
    // Continuous verification under the application's writes: passes keep coming while it
    // writes; after the first (full) one they are incremental, re-reading only the key ranges
    // capture changed, so once the writes stop and every change was re-read, a pass reads
    // nothing and still finds nothing differing.
    let stop = Arc::new(AtomicBool::new(false));
    let load = write_load(pg.url(), stop.clone());
    let before = m.value(PASSES);
    daemon.metrics_until("two verify passes under load", |m| {
        m.get(PASSES).is_some_and(|n| n >= before + 2.0)
    });
    stop.store(true, Ordering::Relaxed);
    let writes = load.join().expect("load");
    assert!(writes > 100, "the load ran ({writes} statements)");
    let rows: f64 = pg
        .psql("SELECT count(*) FROM orders")
        .expect("count")
        .parse()
        .expect("number");
    let stopped_at = daemon.metrics_until("any", |_| true).value(PASSES);
    // Pass +1 may have started before the load stopped, +2 re-reads what +1's drain had not
    // seen yet; +3 started after every change was applied and re-read.
    let m = daemon.metrics_until("a pass that started after the load stopped", |m| {
        m.get(PASSES).is_some_and(|n| n >= stopped_at + 3.0)
    });
    assert_eq!(
        m.value("splice_verify_incremental{migration=\"orders_v2\"}"),
        1.0,
        "{}",
        m.text
    );
    assert_eq!(
        m.value("splice_verify_rows_checked{migration=\"orders_v2\"}"),
        0.0,
        "nothing changed since the last pass: nothing re-read ({rows} rows in the table)"
    );
    assert!(m.value("splice_verify_ranges_total{migration=\"orders_v2\"}") >= 1.0);
    assert_eq!(
        m.value("splice_verify_divergent_rows{migration=\"orders_v2\"}"),
        0.0,
        "{}",
        m.text
    );
    let differing = testkit::orders_divergence_sql("orders", "_splice_orders_v2_new");
    let mismatches = || {
        pg.psql(&format!("SELECT count(*) FROM ({differing}) d"))
            .expect("compare")
    };
    assert_eq!(mismatches(), "0", "every row equals the mapping (in SQL)");

    // Pause: the runner stops its sync and lets go of the runner lock, so a command run by
    // hand gets it; throttle sets the same override `splice throttle` does; resume goes on.
    let (code, body) = daemon.post("/api/v1/migrations/orders_v2/pause");
    assert_eq!(code, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = daemon.get("/api/v1/migrations/orders_v2");
        let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        if json["activity"]["state"] == "paused" {
            assert_eq!(json["paused"], true, "{json}");
            assert_eq!(json["phase"], "verified", "{json}");
            assert_eq!(json["throttle_reason"], "paused", "{json}");
            assert_eq!(json["control"][0]["action"], "pause", "{json}");
            break;
        }
        assert!(Instant::now() < deadline, "never paused: {json}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let m = daemon.metrics_until("any", |_| true);
    assert_eq!(
        m.value("splice_throttled{migration=\"orders_v2\",reason=\"paused\"}"),
        1.0
    );
    let out = splice(&pg, &["verify", "orders_v2"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "a paused daemon holds no lock: {out:?}"
    );
    let put = Daemon::agent()
        .put(format!(
            "{}/api/v1/migrations/orders_v2/throttle",
            daemon.base
        ))
        .header("content-type", "application/json")
        .send(r#"{"rows_per_second": 5000}"#)
        .expect("PUT");
    assert_eq!(put.status().as_u16(), 200);
    assert_eq!(status_json(&pg)["rate_override"], 5000);
    let (code, _) = daemon.post("/api/v1/migrations/orders_v2/resume");
    assert_eq!(code, 200);
    let resumed_at = daemon.metrics_until("any", |_| true).value(PASSES);
    daemon.metrics_until("a pass after the resume", |m| {
        m.get("splice_paused{migration=\"orders_v2\"}") == Some(0.0)
            && m.get(PASSES).is_some_and(|n| n > resumed_at)
    });
    assert_eq!(daemon.get("/api/v1/migrations/nope").0, 404);
    let daemon_base = daemon.base.clone();
    let (code, page) = daemon.get("/");
    assert_eq!(code, 200);
    assert!(
        page.contains("orders_v2") && page.contains("verified"),
        "{page}"
    );

    assert_eq!(
        daemon.terminate(Duration::from_secs(10)),
        Some(0),
        "{}",
        daemon.log()
    );
    assert!(
        daemon.log().contains("splice daemon: stopped"),
        "{}",
        daemon.log()
    );

    // The CLI reads the same state: verified, the last verify passed, nothing lost.
    let status = status_json(&pg);
    assert_eq!(status["phase"], "verified", "{status}");
    assert_eq!(status["backfill_done"], true, "{status}");
    assert_eq!(status["last_verify"]["passed"], true, "{status}");
    assert_eq!(mismatches(), "0", "every row equals the mapping");
    // Each control request is in the migration's history, with its caller's address.
    let requests: Vec<(String, String)> = status["events"]
        .as_array()
        .unwrap_or_else(|| panic!("events in status --json: {status}"))
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or_default().to_string(),
                e["caller"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let actions: Vec<&str> = requests.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        actions,
        ["daemon started", "pause", "throttle 5000 rows/s", "resume"],
        "{status}"
    );
    assert_eq!(
        requests[0].1, daemon_base,
        "the daemon recorded its address"
    );
    assert!(
        requests[1..]
            .iter()
            .all(|(_, c)| c.starts_with("127.0.0.1:")),
        "{requests:?}"
    );
    let out = splice(&pg, &["status", "orders_v2", "--history"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("request: pause from 127.0.0.1:")
            && listed.contains("request: throttle 5000 rows/s from 127.0.0.1:"),
        "{listed}"
    );
    assert!(
        !m.text.contains("splice_cutover_lock_seconds{"),
        "no cutover lock time before a cutover:\n{}",
        m.text
    );

    // A person cuts over with the CLI; a restarted daemon carries the migration on from its
    // phase (reverse sync, no verify, no further step) and reports the lock time.
    let out = splice(&pg, &["cutover", "orders_v2"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let mut daemon = Daemon::start(
        &dir,
        &pg.url(),
        &["--verify-interval", "1s", "orders_v2.toml"],
    );
    let m = daemon.metrics_until("the cut-over phase after a restart", |m| {
        m.get("splice_migration_phase{migration=\"orders_v2\",phase=\"cut_over\"}") == Some(1.0)
    });
    assert!(m.value("splice_cutover_lock_seconds{migration=\"orders_v2\"}") > 0.0);
    assert!(m.text.contains("# TYPE splice_cutover_lock_seconds gauge"));
    // The restarted daemon lists the requests the first one took.
    daemon.migration_until("the first daemon's pause listed after a restart", |j| {
        control_actions(j)
            .iter()
            .any(|(action, _)| action == "pause")
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while daemon.get("/healthz/ready").0 != 200 {
        assert!(
            Instant::now() < deadline,
            "ready after the restart\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Reverse sync keeps the old shape current: a write to the live (new) table reaches it.
    let id = pg.psql("SELECT min(id) FROM orders").expect("a row");
    pg.psql(&format!(
        "UPDATE orders SET note = 'after cutover' WHERE id = {id}"
    ))
    .expect("write after cutover");
    let deadline = Instant::now() + Duration::from_secs(30);
    while pg
        .psql(&format!(
            "SELECT note FROM _splice_orders_v2_old WHERE id = {id}"
        ))
        .expect("old table")
        != "after cutover"
    {
        assert!(
            Instant::now() < deadline,
            "reverse sync ran\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A command run by hand meanwhile is refused, naming the daemon and how to pause it.
    let out = splice(&pg, &["sync", "orders_v2", "--until-caught-up"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        err.contains("`splice daemon orders_v2`")
            && err.contains(&format!(
                "{}/api/v1/migrations/orders_v2/pause",
                daemon.base
            )),
        "the refusal names the daemon's address: {err}"
    );
    assert_eq!(
        daemon.terminate(Duration::from_secs(10)),
        Some(0),
        "{}",
        daemon.log()
    );
    let status = status_json(&pg);
    assert_eq!(
        status["phase"], "cut_over",
        "the daemon took no further step: {status}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn control_requests_need_the_bearer_token_and_listening_beyond_localhost_needs_one() {
    let dir = temp_dir("token");
    let out = Command::new(env!("CARGO_BIN_EXE_splice"))
        .args(["daemon", "--listen", "0.0.0.0:0", "orders_v2.toml"])
        .current_dir(&dir)
        .env(
            "SPLICE_DATABASE_URL",
            "postgres://postgres@127.0.0.1:1/postgres",
        )
        .output()
        .expect("run splice daemon");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--token-file"),
        "{out:?}"
    );

    std::fs::write(dir.join("token"), "s3cret\n").expect("token file");
    let daemon = Daemon::start(
        &dir,
        "postgres://postgres@127.0.0.1:1/postgres?connect_timeout=2",
        &["--token-file", "token", "orders_v2.toml"],
    );
    let pause = format!("{}/api/v1/migrations/orders_v2/pause", daemon.base);
    let code = |token: Option<&str>| {
        let mut req = Daemon::agent().post(&pause);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        req.send_empty().expect("POST").status().as_u16()
    };
    assert_eq!(code(None), 401);
    assert_eq!(code(Some("wrong")), 401);
    assert_eq!(code(Some("s3cret")), 200);
    assert_eq!(daemon.get("/metrics").0, 200, "reads need no token");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unreachable_database_makes_readiness_503_and_names_it() {
    // A port nobody listens on: bound, read, released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let dir = temp_dir("unreachable");
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres?connect_timeout=2");
    let daemon = Daemon::start(&dir, &url, &["--log-format", "json", "orders_v2.toml"]);

    assert_eq!(daemon.get("/healthz/live").0, 200, "the process is up");
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let (code, body) = daemon.get("/healthz/ready");
        assert_eq!(code, 503, "never ready without its database: {body}");
        if body.contains("unreachable") {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "readiness never named the database: {body}\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(body.contains("orders_v2"), "{body}");
    assert!(body.contains(&format!("127.0.0.1:{port}")), "{body}");
    let (_, text) = daemon.get("/metrics");
    let m = Metrics::parse(&text);
    assert_eq!(
        m.value("splice_runner_healthy{migration=\"orders_v2\"}"),
        0.0
    );

    // `--log-format json`: the failed step is one JSON object, in the migration's span.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = daemon.log();
        let failed = log
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|j| j["fields"]["message"] == "step failed");
        if let Some(j) = failed {
            assert_eq!(j["level"], "WARN", "{j}");
            assert_eq!(j["span"]["migration"], "orders_v2", "{j}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no JSON log of the failure:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sigterm_mid_backfill_checkpoints_and_a_restarted_daemon_carries_on_to_verified() {
    let pg = Postgres::start().expect("start PostgreSQL");
    pg.psql(
        "CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id bigint NOT NULL,
                              amount numeric(12,2) NOT NULL, currency text, note text);
         INSERT INTO orders (customer_id, amount, currency, note)
         SELECT g % 97, (g % 1000) / 7.0, NULL, 'n' || g FROM generate_series(1, 20000) g;",
    )
    .expect("create orders");
    let dir = temp_dir("resume");
    // Slow enough that SIGTERM lands mid-backfill (about ten seconds for the table).
    std::fs::write(
        dir.join("orders_v2.toml"),
        format!("{MIGRATION}rows_per_second = 2000\n"),
    )
    .expect("write migration");
    let mut daemon = Daemon::start(&dir, &pg.url(), &["orders_v2.toml"]);
    daemon.metrics_until("a backfill under way", |m| {
        m.get("splice_backfill_rows_copied{migration=\"orders_v2\"}")
            .is_some_and(|n| n > 0.0)
    });
    let (_, body) = daemon.get("/api/v1/migrations/orders_v2");
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(json["activity"]["state"], "backfilling", "{json}");
    let percent = json["progress"]["percent"].as_f64().expect("percent");
    assert!((0.0..100.0).contains(&percent), "{json}");
    assert_eq!(
        daemon.terminate(Duration::from_secs(10)),
        Some(0),
        "{}",
        daemon.log()
    );
    let status = status_json(&pg);
    let copied = status["rows_copied"].as_i64().expect("rows_copied");
    assert_eq!(status["backfill_done"], false, "{status}");
    assert!(
        copied > 0 && copied < 20000,
        "checkpointed mid-way: {status}"
    );

    // Restarted, it carries on from the checkpoint; the throttle endpoint lifts the limit.
    let daemon = Daemon::start(&dir, &pg.url(), &["orders_v2.toml"]);
    let put = Daemon::agent()
        .put(format!(
            "{}/api/v1/migrations/orders_v2/throttle",
            daemon.base
        ))
        .header("content-type", "application/json")
        .send(r#"{"rows_per_second": 0}"#)
        .expect("PUT");
    assert_eq!(put.status().as_u16(), 200);
    let m = daemon.metrics_until("verified after the restart", |m| {
        m.get("splice_migration_phase{migration=\"orders_v2\",phase=\"verified\"}") == Some(1.0)
            && m.get(PASSES).is_some_and(|n| n >= 1.0)
    });
    assert_eq!(
        m.value("splice_backfill_rows_copied{migration=\"orders_v2\"}"),
        20000.0
    );
    assert_eq!(
        m.value("splice_verify_divergent_rows{migration=\"orders_v2\"}"),
        0.0
    );
    let differing = testkit::orders_divergence_sql("orders", "_splice_orders_v2_new");
    assert_eq!(
        pg.psql(&format!("SELECT count(*) FROM ({differing}) d"))
            .expect("compare"),
        "0"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The `orders` table of the example migration, with `rows` rows.
fn create_orders(pg: &Postgres, rows: u32) {
    pg.psql(&format!(
        "CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id bigint NOT NULL,
                              amount numeric(12,2) NOT NULL, currency text, note text);
         INSERT INTO orders (customer_id, amount, currency, note)
         SELECT g % 97, (g % 1000) / 7.0, CASE WHEN g % 5 = 0 THEN NULL ELSE 'USD' END,
                'n' || g FROM generate_series(1, {rows}) g;"
    ))
    .expect("create orders");
}

/// The application across a cutover and back: updates, inserts, deletes and key changes that
/// work on whichever shape `orders` has (old: `amount`; new: `amount_cents`, no id default).
fn write_load_any_shape(url: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            use rand::{Rng, SeedableRng};
            let db = testkit::connect(&url).await.expect("connect");
            let mut rng = rand::rngs::StdRng::seed_from_u64(17);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let id: i64 = rng.random_range(1..20_000);
                let sql = match rng.random_range(0..10) {
                    0..=4 => format!("UPDATE orders SET note = 'w{n}' WHERE id = {id}"),
                    5..=6 => {
                        let old = "INSERT INTO orders (customer_id, amount) VALUES (3, 9.99)";
                        if db.batch_execute(old).await.is_ok() {
                            n += 1;
                            continue;
                        }
                        format!(
                            "INSERT INTO orders (id, customer_id, amount_cents, currency)
                             VALUES ({}, 3, 999, 'USD')",
                            30_000_000 + n
                        )
                    }
                    7 => format!("DELETE FROM orders WHERE id = {id}"),
                    _ => format!("UPDATE orders SET id = id + 10000000 WHERE id = {id}"),
                };
                let _ = db.batch_execute(&sql).await;
                n += 1;
                if n % 20 == 0 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            n
        })
    })
}

/// Whether `orders` has the old shape (`amount`) rather than the new one (`amount_cents`).
fn old_shape_live(pg: &Postgres) -> bool {
    pg.psql(
        "SELECT count(*) FROM information_schema.columns
         WHERE table_schema = 'public' AND table_name = 'orders' AND column_name = 'amount'",
    )
    .expect("columns")
        == "1"
}

/// Writes a note to one row of the live table and waits until `other` has it: the sync
/// between the two (forward or reverse) is running.
fn note_reaches(pg: &Postgres, other: &str, note: &str) {
    let id = pg.psql("SELECT min(id) FROM orders").expect("a row");
    pg.psql(&format!(
        "UPDATE orders SET note = '{note}' WHERE id = {id}"
    ))
    .expect("write");
    let deadline = Instant::now() + Duration::from_secs(60);
    while pg
        .psql(&format!("SELECT note FROM {other} WHERE id = {id}"))
        .expect("read")
        != note
    {
        assert!(Instant::now() < deadline, "{note} never reached {other}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Polls until no row differs between the old shape and the new (the sync applies what the
/// application wrote last), failing at the deadline with how many do.
fn rows_match(pg: &Postgres, old: &str, new: &str) {
    let differing = testkit::orders_divergence_sql(old, new);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = pg
            .psql(&format!("SELECT count(*) FROM ({differing}) d"))
            .expect("compare");
        if n == "0" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{n} rows differ between {old} and {new}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn cutover_and_rollback_over_http_under_write_load_lose_no_row() {
    let pg = Postgres::start().expect("start PostgreSQL");
    create_orders(&pg, 20000);
    let dir = temp_dir("cutover");
    let mut daemon = Daemon::start(
        &dir,
        &pg.url(),
        &["--verify-interval", "1s", "orders_v2.toml"],
    );
    daemon.metrics_until("verified", |m| {
        m.get("splice_migration_phase{migration=\"orders_v2\",phase=\"verified\"}") == Some(1.0)
            && m.get(PASSES).is_some_and(|n| n >= 1.0)
    });
    let stop = Arc::new(AtomicBool::new(false));
    let load = write_load_any_shape(pg.url(), stop.clone());

    // Cutover: refused (409) while a pass under load has just found a key still in flight and
    // the phase is back to syncing; taken once verified again.
    let deadline = Instant::now() + Duration::from_secs(120);
    let body = loop {
        let (code, body) = daemon.post("/api/v1/migrations/orders_v2/cutover");
        if code == 200 {
            break body;
        }
        assert_eq!(code, 409, "{body}");
        assert!(Instant::now() < deadline, "never cut over: {body}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let done: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(done["done"]["reverse_sync"], true, "{done}");
    assert!(done["done"]["lock_ms"].as_f64().is_some(), "{done}");
    assert!(!old_shape_live(&pg), "the new shape is live");
    assert_eq!(status_json(&pg)["phase"], "cut_over");
    daemon.migration_until("reverse sync after the cutover", |j| {
        j["phase"] == "cut_over" && j["activity"]["state"] == "following"
    });
    note_reaches(&pg, "_splice_orders_v2_old", "after cutover");

    // Rollback: the old shape is live again, and forward sync carries on.
    let (code, body) = daemon.post("/api/v1/migrations/orders_v2/rollback");
    assert_eq!(code, 200, "{body}\n{}", daemon.log());
    let done: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(done["done"]["from"], "cut_over", "{done}");
    assert_eq!(done["done"]["to"], "syncing", "{done}");
    assert!(old_shape_live(&pg), "the old shape is live again");
    note_reaches(&pg, "_splice_orders_v2_new", "after rollback");

    stop.store(true, Ordering::Relaxed);
    let writes = load.join().expect("load");
    assert!(writes > 100, "the load ran ({writes} statements)");
    rows_match(&pg, "orders", "_splice_orders_v2_new");
    let json = daemon.migration_until("verified again after the rollback", |j| {
        j["phase"] == "verified"
    });
    let actions = control_actions(&json);
    assert!(
        actions
            .iter()
            .any(|(a, c)| a == "cutover" && c.starts_with("127.0.0.1:")),
        "{json}"
    );
    assert!(
        actions
            .iter()
            .any(|(a, c)| a == "rollback" && c.starts_with("127.0.0.1:")),
        "{json}"
    );
    assert!(
        json["control"]
            .as_array()
            .expect("control")
            .iter()
            .any(|e| e["action"] == "rollback"
                && e["outcome"]
                    .as_str()
                    .is_some_and(|o| o.starts_with("rolled back from cut_over"))),
        "{json}"
    );
    rows_match(&pg, "orders", "_splice_orders_v2_new");
    assert_eq!(
        daemon.terminate(Duration::from_secs(10)),
        Some(0),
        "{}",
        daemon.log()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn automatic_cutover_happens_once_the_gates_held_for_the_hold() {
    let pg = Postgres::start().expect("start PostgreSQL");
    create_orders(&pg, 20000);
    let dir = temp_dir("auto");
    std::fs::write(
        dir.join("orders_v2.toml"),
        format!("{MIGRATION}\n[automation]\ncutover = \"auto\"\nhold = \"2s\"\n"),
    )
    .expect("write migration");
    // The default verify interval: the gates stop the sync that follows the first pass.
    let mut daemon = Daemon::start(&dir, &pg.url(), &["orders_v2.toml"]);
    daemon.metrics_until("an automatic cutover", |m| {
        m.get("splice_migration_phase{migration=\"orders_v2\",phase=\"cut_over\"}") == Some(1.0)
    });
    let json = daemon.migration();
    assert_eq!(json["automation"]["cutover"], "auto", "{json}");
    let event = control_event(&json, "cutover");
    assert_eq!(event["caller"], "automation", "{event}");
    assert!(
        event["reason"]
            .as_str()
            .is_some_and(|r| r.contains("verified without divergence")),
        "{event}"
    );
    assert!(!old_shape_live(&pg));
    note_reaches(&pg, "_splice_orders_v2_old", "after automatic cutover");
    rows_match(&pg, "_splice_orders_v2_old", "orders");
    assert_eq!(status_json(&pg)["phase"], "cut_over");
    assert_eq!(
        daemon.terminate(Duration::from_secs(10)),
        Some(0),
        "{}",
        daemon.log()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_watch_that_turns_false_after_an_automatic_cutover_rolls_back_on_its_own() {
    let pg = Postgres::start().expect("start PostgreSQL");
    create_orders(&pg, 20000);
    pg.psql("CREATE TABLE app_errors (id bigserial PRIMARY KEY, message text)")
        .expect("app_errors");
    let dir = temp_dir("watch");
    std::fs::write(
        dir.join("orders_v2.toml"),
        format!(
            "{MIGRATION}\n[automation]\ncutover = \"auto\"\nhold = \"1s\"\n\
             watch = \"SELECT count(*) = 0 FROM public.app_errors\"\nwatch_for = \"10m\"\n"
        ),
    )
    .expect("write migration");
    let mut daemon = Daemon::start(&dir, &pg.url(), &["orders_v2.toml"]);
    let stop = Arc::new(AtomicBool::new(false));
    let load = write_load_any_shape(pg.url(), stop.clone());
    daemon.migration_until("an automatic cutover and a passing watch", |j| {
        j["phase"] == "cut_over" && j["automation"]["watch_checks"].as_u64() >= Some(1)
    });
    assert!(!old_shape_live(&pg));

    // The application starts failing: the watch turns false and the daemon rolls back.
    pg.psql("INSERT INTO app_errors (message) VALUES ('500 on /orders')")
        .expect("an error");
    let failed_at = Instant::now();
    let deadline = failed_at + Duration::from_secs(60);
    while !old_shape_live(&pg) {
        assert!(
            Instant::now() < deadline,
            "no automatic rollback\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = failed_at.elapsed();
    println!(
        "watch failure to the old shape live again: {:.0} ms",
        took.as_secs_f64() * 1000.0
    );

    let json = daemon.migration_until("the rollback in the control log", |j| {
        j["automation"]["automatic_rollbacks"] == 1
    });
    let event = control_event(&json, "rollback");
    assert_eq!(event["caller"], "automation", "{event}");
    assert!(
        event["reason"]
            .as_str()
            .is_some_and(|r| r.contains("returned false")),
        "{event}"
    );
    let m = daemon.metrics_until("any", |_| true);
    assert_eq!(
        m.value("splice_automatic_rollbacks{migration=\"orders_v2\"}"),
        1.0
    );
    assert!(
        daemon.log().contains("the watch failed"),
        "{}",
        daemon.log()
    );

    stop.store(true, Ordering::Relaxed);
    let writes = load.join().expect("load");
    assert!(writes > 100, "the load ran ({writes} statements)");
    rows_match(&pg, "orders", "_splice_orders_v2_new");
    // Verified again, and it does not cut over on its own a second time.
    let json = daemon.migration_until("verified and disarmed", |j| {
        j["phase"] == "verified" && j["automation"]["disarmed"].is_string()
    });
    assert_eq!(
        json["automation"]["watching_until"],
        serde_json::Value::Null
    );
    let (_, page) = daemon.get("/");
    assert!(
        page.contains("auto cutover off") && page.contains("rolled back on its own"),
        "{page}"
    );
    assert_eq!(status_json(&pg)["phase"], "verified");
    assert_eq!(
        daemon.terminate(Duration::from_secs(10)),
        Some(0),
        "{}",
        daemon.log()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_restarted_daemon_keeps_watching_a_cutover_made_over_http() {
    let pg = Postgres::start().expect("start PostgreSQL");
    create_orders(&pg, 5000);
    pg.psql("CREATE TABLE app_errors (id bigserial PRIMARY KEY, message text)")
        .expect("app_errors");
    let dir = temp_dir("rewatch");
    std::fs::write(
        dir.join("orders_v2.toml"),
        format!(
            "{MIGRATION}\n[automation]\n\
             watch = \"SELECT count(*) = 0 FROM public.app_errors\"\nwatch_for = \"10m\"\n"
        ),
    )
    .expect("write migration");
    let mut daemon = Daemon::start(&dir, &pg.url(), &["orders_v2.toml"]);
    daemon.migration_until("verified", |j| {
        j["phase"] == "verified" && j["last_verify"]["passed"] == true
    });
    assert_eq!(daemon.migration()["automation"]["cutover"], "manual");
    let (code, body) = daemon.post("/api/v1/migrations/orders_v2/cutover");
    assert_eq!(code, 200, "{body}");
    daemon.migration_until("the watch after an HTTP cutover", |j| {
        j["automation"]["watch_checks"].as_u64() >= Some(1)
    });
    assert_eq!(
        daemon.terminate(Duration::from_secs(10)),
        Some(0),
        "{}",
        daemon.log()
    );

    // Restarted within watch_for, it watches what is left of it; a failure rolls back.
    let daemon = Daemon::start(&dir, &pg.url(), &["orders_v2.toml"]);
    let json = daemon.migration_until("the watch after a restart", |j| {
        j["automation"]["watch_checks"].as_u64() >= Some(1)
    });
    assert!(
        json["automation"]["watching_until"].as_f64().is_some(),
        "{json}"
    );
    assert!(!old_shape_live(&pg));
    pg.psql("INSERT INTO app_errors (message) VALUES ('timeout')")
        .expect("an error");
    daemon.migration_until("an automatic rollback", |j| {
        j["automation"]["automatic_rollbacks"] == 1
    });
    assert!(old_shape_live(&pg));
    rows_match(&pg, "orders", "_splice_orders_v2_new");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A headless Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`:
/// the browser reads NUL-terminated JSON commands on fd 3 and writes on fd 4, which a shell
/// maps from its stdin and stdout). Only what the status page test needs: open a page and
/// read its rendered text.
struct Browser {
    child: Child,
    to: std::process::ChildStdin,
    from: BufReader<std::process::ChildStdout>,
    next_id: u64,
    session: Option<String>,
    profile: std::path::PathBuf,
}

impl Browser {
    fn start(tag: &str) -> Browser {
        let binary = std::env::var("SPLICE_CHROMIUM").unwrap_or_else(|_| "chromium".into());
        let profile = temp_dir(&format!("{tag}-chromium"));
        let child = Command::new("sh")
            .arg("-c")
            .arg(r#"exec "$0" "$@" 3<&0 4>&1 </dev/null >/dev/null"#)
            .arg(&binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--remote-debugging-pipe",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
        let mut child = child;
        let to = child.stdin.take().expect("browser stdin");
        let from = BufReader::new(child.stdout.take().expect("browser stdout"));
        let mut browser = Browser {
            child,
            to,
            from,
            next_id: 0,
            session: None,
            profile,
        };
        // Fails at once, naming the fix, when there is no browser: scripts/test installs it.
        let version = browser.call("Browser.getVersion", serde_json::json!({}));
        assert!(
            version["product"].is_string(),
            "no headless Chromium answered ({binary}): install Debian's `chromium` \
             (scripts/test does when root) or set SPLICE_CHROMIUM; got {version}"
        );
        browser
    }

    /// Sends one command (to the attached page once there is one) and returns its result.
    fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        use std::io::Write;
        self.next_id += 1;
        let id = self.next_id;
        let mut message = serde_json::json!({ "id": id, "method": method, "params": params });
        if let Some(s) = &self.session {
            if !method.starts_with("Target.") && !method.starts_with("Browser.") {
                message["sessionId"] = serde_json::json!(s);
            }
        }
        let mut bytes = message.to_string().into_bytes();
        bytes.push(0);
        if self
            .to
            .write_all(&bytes)
            .and_then(|_| self.to.flush())
            .is_err()
        {
            return serde_json::json!({ "error": "the browser is gone" });
        }
        loop {
            let mut buf = Vec::new();
            match self.from.read_until(0, &mut buf) {
                Ok(0) | Err(_) => {
                    return serde_json::json!({ "error": "the browser closed the pipe" })
                }
                Ok(_) => {}
            }
            buf.pop();
            let Ok(reply) = serde_json::from_slice::<serde_json::Value>(&buf) else {
                continue;
            };
            // Events (no id) and answers to other commands are skipped.
            if reply["id"] == id {
                if reply.get("error").is_some() {
                    return reply;
                }
                return reply["result"].clone();
            }
        }
    }

    /// Opens `url` in a new page and attaches to it.
    fn open(&mut self, url: &str) {
        let target = self.call("Target.createTarget", serde_json::json!({ "url": url }));
        let id = target["targetId"]
            .as_str()
            .unwrap_or_else(|| panic!("no page opened: {target}"))
            .to_string();
        let attached = self.call(
            "Target.attachToTarget",
            serde_json::json!({ "targetId": id, "flatten": true }),
        );
        self.session = Some(
            attached["sessionId"]
                .as_str()
                .unwrap_or_else(|| panic!("not attached: {attached}"))
                .to_string(),
        );
    }

    /// The page's rendered text, as a person sees it (`innerText`), as it is now.
    fn text(&mut self) -> String {
        let r = self.call(
            "Runtime.evaluate",
            serde_json::json!({
                "expression": "document.body ? document.body.innerText : ''",
                "returnByValue": true
            }),
        );
        r["result"]["value"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// The percentages the status page shows in its backfill column.
fn percentages(text: &str) -> Vec<f64> {
    text.split_whitespace()
        .filter_map(|w| w.strip_suffix('%'))
        .filter_map(|n| n.parse::<f64>().ok())
        .collect()
}

#[test]
fn the_status_page_in_a_headless_browser_names_the_migration_and_follows_it_on_its_own() {
    let pg = Postgres::start().expect("start PostgreSQL");
    create_orders(&pg, 30_000);
    let dir = temp_dir("page");
    // A slow backfill (about 10 s) so the page can be seen moving.
    std::fs::write(
        dir.join("orders_v2.toml"),
        MIGRATION.replace("[throttle]\n", "[throttle]\nrows_per_second = 3000\n"),
    )
    .expect("write migration");
    let daemon = Daemon::start(
        &dir,
        &pg.url(),
        &["--verify-interval", "1s", "orders_v2.toml"],
    );
    daemon.metrics_until("the backfill under way", |m| {
        m.get("splice_backfill_rows_copied{migration=\"orders_v2\"}")
            .is_some_and(|n| n > 0.0)
    });

    // Paused at a checkpoint, the backfill stays part-way however long the browser takes to
    // start on a loaded machine.
    let (code, body) = daemon.post("/api/v1/migrations/orders_v2/pause");
    assert_eq!(code, 200, "{body}");
    daemon.migration_until("paused part-way", |j| {
        j["activity"]["state"] == "paused"
            && j["progress"]["percent"]
                .as_f64()
                .is_some_and(|p| p > 0.0 && p < 100.0)
    });

    let mut browser = Browser::start("page");
    browser.open(&format!("{}/", daemon.base));
    let deadline = Instant::now() + Duration::from_secs(120);
    let first = loop {
        let text = browser.text();
        let partial = percentages(&text)
            .first()
            .copied()
            .filter(|p| *p > 0.0 && *p < 100.0);
        if let Some(p) = partial.filter(|_| text.contains("orders_v2") && text.contains("syncing"))
        {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "the page never named the migration syncing part-way:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let (code, body) = daemon.post("/api/v1/migrations/orders_v2/resume");
    assert_eq!(code, 200, "{body}");
    // The page is opened once; every later reading is the same page refreshing itself.
    let last = loop {
        let text = browser.text();
        if text.contains("orders_v2") && text.contains("verified") {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "the page never showed the migration verified; last text:\n{text}\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(
        percentages(&last).first().is_some_and(|&p| p > first),
        "verified shows more than the first reading ({first}%): {last}"
    );
    assert!(last.contains("manual cutover"), "{last}");
    drop(browser);
    let _ = std::fs::remove_dir_all(&dir);
}
