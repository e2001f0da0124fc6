//! `splice daemon` end to end through the binary, against a real PostgreSQL server: it drives
//! the example migration to verified on its own, reports it over /healthz and /metrics, takes
//! pause and resume over HTTP, stops cleanly on SIGTERM, and says which database it cannot
//! reach.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testkit::Postgres;

const MIGRATION: &str = include_str!("../migrations/orders_v2.toml");

/// Metric names the daemon must always expose (docs/daemon.md lists them).
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
    "splice_cutover_lock_seconds",
    "splice_slot_retained_wal_bytes",
];

/// A running `splice daemon` and what it printed.
struct Daemon {
    child: Child,
    base: String,
    stderr: Arc<Mutex<String>>,
}

impl Daemon {
    /// Starts the daemon on a free port (it prints the address it bound).
    fn start(dir: &std::path::Path, database_url: &str, args: &[&str]) -> Daemon {
        let mut child = Command::new(env!("CARGO_BIN_EXE_splice"))
            .arg("daemon")
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .current_dir(dir)
            .env("SPLICE_DATABASE_URL", database_url)
            .env("SPLICE_LOG", "info")
            .env_remove("DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn splice daemon");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let pipe = child.stderr.take().expect("stderr piped");
        let log = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let addr = rest.split(';').next().unwrap_or_default().to_string();
                    let _ = tx.send(addr);
                }
                let mut log = log.lock().expect("log");
                log.push_str(&line);
                log.push('\n');
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                panic!(
                    "the daemon printed no address: {}",
                    stderr.lock().expect("log")
                )
            });
        Daemon {
            child,
            base: format!("http://{addr}"),
            stderr,
        }
    }

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into()
    }

    /// GET `path`: status code and body.
    fn get(&self, path: &str) -> (u16, String) {
        let mut r = Self::agent()
            .get(format!("{}{path}", self.base))
            .call()
            .expect("GET");
        let body = r.body_mut().read_to_string().expect("body");
        (r.status().as_u16(), body)
    }

    fn post(&self, path: &str) -> (u16, String) {
        let mut r = Self::agent()
            .post(format!("{}{path}", self.base))
            .send_empty()
            .expect("POST");
        let body = r.body_mut().read_to_string().expect("body");
        (r.status().as_u16(), body)
    }

    fn log(&self) -> String {
        self.stderr.lock().expect("log").clone()
    }

    /// Polls `check` on the metrics until it holds, failing with `what` at the deadline.
    fn metrics_until(&self, what: &str, check: impl Fn(&Metrics) -> bool) -> Metrics {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (code, text) = self.get("/metrics");
            assert_eq!(code, 200, "{text}");
            let m = Metrics::parse(&text);
            if check(&m) {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "{what} did not happen in time\nmetrics:\n{text}\ndaemon log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Sends SIGTERM and waits (at most `within`) for the exit code.
    fn terminate(&mut self, within: Duration) -> Option<i32> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return s.code();
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not exit within {within:?} of SIGTERM\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Prometheus text as `name{labels}` → value.
struct Metrics {
    text: String,
    samples: HashMap<String, f64>,
}

impl Metrics {
    fn parse(text: &str) -> Metrics {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                Some((series.to_string(), value.parse().ok()?))
            })
            .collect();
        Metrics {
            text: text.to_string(),
            samples,
        }
    }

    fn get(&self, series: &str) -> Option<f64> {
        self.samples.get(series).copied()
    }

    fn value(&self, series: &str) -> f64 {
        self.get(series)
            .unwrap_or_else(|| panic!("no series {series} in\n{}", self.text))
    }
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("splice-daemon-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("orders_v2.toml"), MIGRATION).expect("write migration");
    dir
}

#[test]
fn the_daemon_drives_a_migration_to_verified_reports_it_in_metrics_and_stops_cleanly_on_sigterm() {
    let pg = Postgres::start().expect("start PostgreSQL");
    pg.psql(
        "CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id bigint NOT NULL,
                              amount numeric(12,2) NOT NULL, currency text, note text);
         INSERT INTO orders (customer_id, amount, currency, note)
         SELECT g % 97, (g % 1000) / 7.0, CASE WHEN g % 5 = 0 THEN NULL ELSE 'USD' END,
                'n' || g FROM generate_series(1, 5000) g;",
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
            && m.get("splice_verify_passes{migration=\"orders_v2\"}")
                .is_some_and(|n| n >= 1.0)
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
    let rows: f64 = pg
        .psql("SELECT count(*) FROM orders")
        .expect("count")
        .parse()
        .expect("number");
    assert_eq!(
        m.value("splice_backfill_rows_copied{migration=\"orders_v2\"}"),
        rows
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
        rows
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
    assert_eq!(
        m.value("splice_throttled{migration=\"orders_v2\",reason=\"paused\"}"),
        0.0
    );
    let (code, body) = daemon.get("/healthz/ready");
    assert_eq!(code, 200, "{body}\n{}", daemon.log());

    // Continuous verification: a write after the first pass is followed, and a later pass
    // (the interval is 1s) checks it too.
    let passes = m.value("splice_verify_passes{migration=\"orders_v2\"}");
    pg.psql("INSERT INTO orders (customer_id, amount) VALUES (1, 2.50)")
        .expect("insert");
    let m = daemon.metrics_until("a later verify pass that saw the new row", |m| {
        m.get("splice_verify_passes{migration=\"orders_v2\"}")
            .is_some_and(|n| n > passes + 1.0)
    });
    assert_eq!(
        m.value("splice_verify_rows_checked{migration=\"orders_v2\"}"),
        rows + 1.0
    );
    assert_eq!(
        m.value("splice_verify_divergent_rows{migration=\"orders_v2\"}"),
        0.0
    );

    // Pause and resume over HTTP, each seen in the metrics and the JSON API.
    let (code, body) = daemon.post("/api/v1/migrations/orders_v2/pause");
    assert_eq!(code, 200, "{body}");
    daemon.metrics_until("the pause", |m| {
        m.get("splice_throttled{migration=\"orders_v2\",reason=\"paused\"}") == Some(1.0)
    });
    let (code, body) = daemon.get("/api/v1/migrations/orders_v2");
    assert_eq!(code, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(json["paused"], true, "{json}");
    assert_eq!(json["phase"], "verified", "{json}");
    assert_eq!(json["control"][0]["action"], "pause", "{json}");
    let (code, _) = daemon.post("/api/v1/migrations/orders_v2/resume");
    assert_eq!(code, 200);
    daemon.metrics_until("the resume", |m| {
        m.get("splice_paused{migration=\"orders_v2\"}") == Some(0.0)
    });
    assert_eq!(daemon.get("/api/v1/migrations/nope").0, 404);

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
    let out = Command::new(env!("CARGO_BIN_EXE_splice"))
        .args(["status", "orders_v2", "--json"])
        .env("SPLICE_DATABASE_URL", pg.url())
        .env_remove("DATABASE_URL")
        .output()
        .expect("splice status");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    assert_eq!(status["phase"], "verified", "{status}");
    assert_eq!(status["backfill_done"], true, "{status}");
    assert_eq!(status["last_verify"]["passed"], true, "{status}");
    let differing = testkit::orders_divergence_sql("orders", "_splice_orders_v2_new");
    assert_eq!(
        pg.psql(&format!("SELECT count(*) FROM ({differing}) d"))
            .expect("compare"),
        "0",
        "every row equals the mapping"
    );
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
    let daemon = Daemon::start(&dir, &url, &["orders_v2.toml"]);

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
    let _ = std::fs::remove_dir_all(&dir);
}
