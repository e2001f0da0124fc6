//! What the daemon's end-to-end tests share (PostgreSQL and MariaDB): the daemon process, its
//! HTTP API and its metrics.
#![allow(dead_code)] // each test binary uses part of it

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `splice daemon` and what it printed.
pub struct Daemon {
    child: Child,
    pub base: String,
    stderr: Arc<Mutex<String>>,
}

impl Daemon {
    /// Starts the daemon on a free port (it prints the address it bound).
    pub fn start(dir: &std::path::Path, database_url: &str, args: &[&str]) -> Daemon {
        let mut child = Command::new(env!("CARGO_BIN_EXE_splice"))
            .arg("daemon")
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .current_dir(dir)
            .env("SPLICE_DATABASE_URL", database_url)
            .env_remove("SPLICE_LOG")
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

    pub fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into()
    }

    /// GET `path`: status code and body.
    pub fn get(&self, path: &str) -> (u16, String) {
        let mut r = Self::agent()
            .get(format!("{}{path}", self.base))
            .call()
            .expect("GET");
        let body = r.body_mut().read_to_string().expect("body");
        (r.status().as_u16(), body)
    }

    /// POST `path`: status code and body. Cutover and rollback answer once the runner took
    /// the step (after a verify pass in flight), so this waits longer than a read.
    pub fn post(&self, path: &str) -> (u16, String) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(90)))
            .build()
            .into();
        let mut r = agent
            .post(format!("{}{path}", self.base))
            .send_empty()
            .expect("POST");
        let body = r.body_mut().read_to_string().expect("body");
        (r.status().as_u16(), body)
    }

    pub fn log(&self) -> String {
        self.stderr.lock().expect("log").clone()
    }

    /// Polls `check` on the metrics until it holds, failing with `what` at the deadline.
    pub fn metrics_until(&self, what: &str, check: impl Fn(&Metrics) -> bool) -> Metrics {
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
    pub fn terminate(&mut self, within: Duration) -> Option<i32> {
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
pub struct Metrics {
    pub text: String,
    samples: HashMap<String, f64>,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
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

    pub fn get(&self, series: &str) -> Option<f64> {
        self.samples.get(series).copied()
    }

    pub fn value(&self, series: &str) -> f64 {
        self.get(series)
            .unwrap_or_else(|| panic!("no series {series} in\n{}", self.text))
    }
}

impl Daemon {
    /// The migration as `GET /api/v1/migrations/orders_v2` shows it.
    pub fn migration(&self) -> serde_json::Value {
        let (code, body) = self.get("/api/v1/migrations/orders_v2");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).expect("JSON")
    }

    /// Polls the migration's JSON until `check` holds, failing with `what` at the deadline.
    pub fn migration_until(
        &self,
        what: &str,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let json = self.migration();
            if check(&json) {
                return json;
            }
            assert!(
                Instant::now() < deadline,
                "{what} did not happen in time: {json}\ndaemon log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

pub fn control_actions(json: &serde_json::Value) -> Vec<(String, String)> {
    json["control"]
        .as_array()
        .expect("control log")
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or_default().to_string(),
                e["caller"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The first request `action` in a migration's control log (failing when there is none).
pub fn control_event(json: &serde_json::Value, action: &str) -> serde_json::Value {
    json["control"]
        .as_array()
        .expect("control log")
        .iter()
        .find(|e| e["action"] == action)
        .cloned()
        .unwrap_or_else(|| panic!("the {action} is in the control log: {json}"))
}
