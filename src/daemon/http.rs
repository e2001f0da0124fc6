//! The daemon's HTTP interface (axum): health probes, Prometheus metrics, the JSON API, the
//! control endpoints and a status page for people. It renders what the runners know and
//! forwards requests to them; it decides nothing about a migration.

use super::metrics;
use super::runner::{Action, Activity, MigrationRun, Request};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use engine::RateLimit;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// What every handler sees.
pub struct Daemon {
    pub runs: Vec<Arc<MigrationRun>>,
    /// Required on control requests when set.
    pub token: Option<String>,
    /// Set once SIGTERM arrived: readiness fails so traffic and probes move on.
    pub stopping: AtomicBool,
}

pub fn router(daemon: Arc<Daemon>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/healthz/live", get(live))
        .route("/healthz/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .route("/api/v1/migrations", get(list))
        .route("/api/v1/migrations/{name}", get(one))
        .route("/api/v1/migrations/{name}/pause", post(pause))
        .route("/api/v1/migrations/{name}/resume", post(resume))
        .route("/api/v1/migrations/{name}/throttle", put(throttle))
        .route("/api/v1/migrations/{name}/cutover", post(cutover))
        .route("/api/v1/migrations/{name}/rollback", post(rollback))
        .with_state(daemon)
}

async fn live() -> &'static str {
    "live\n"
}

/// 200 when every database answered and every runner is healthy; 503 naming each reason.
async fn ready(State(d): State<Arc<Daemon>>) -> Response {
    if d.stopping.load(Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: shutting down\n",
        )
            .into_response();
    }
    let reasons: Vec<String> = d.runs.iter().filter_map(|r| r.health().err()).collect();
    if reasons.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready:\n{}\n", reasons.join("\n")),
        )
            .into_response()
    }
}

async fn metrics_text(State(d): State<Arc<Daemon>>) -> Response {
    match metrics::render(&d.runs) {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode the metrics\n",
        )
            .into_response(),
    }
}

async fn list(State(d): State<Arc<Daemon>>) -> Json<serde_json::Value> {
    Json(json!(d
        .runs
        .iter()
        .map(|r| describe(r))
        .collect::<Vec<_>>()))
}

async fn one(State(d): State<Arc<Daemon>>, Path(name): Path<String>) -> Response {
    match find(&d, &name) {
        Ok(run) => Json(describe(run)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn pause(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    ConnectInfo(caller): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    set_paused(&d, &name, caller, &headers, true).await
}

async fn resume(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    ConnectInfo(caller): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    set_paused(&d, &name, caller, &headers, false).await
}

async fn set_paused(
    d: &Daemon,
    name: &str,
    caller: SocketAddr,
    headers: &HeaderMap,
    paused: bool,
) -> Response {
    let run = match controlled(d, name, headers) {
        Ok(run) => run,
        Err(e) => return e.into_response(),
    };
    let changed = run.set_paused(paused, &caller.to_string()).await;
    Json(json!({ "name": run.name, "paused": paused, "changed": changed })).into_response()
}

#[derive(serde::Deserialize)]
struct Throttle {
    /// Rows per second (0: unlimited); `null` clears the override.
    rows_per_second: Option<u32>,
}

async fn throttle(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    ConnectInfo(caller): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(body): Json<Throttle>,
) -> Response {
    let run = match controlled(&d, &name, &headers) {
        Ok(run) => run,
        Err(e) => return e.into_response(),
    };
    let limit = body.rows_per_second.map(RateLimit::from_rows_per_second);
    match run.engine().set_rate_limit(&run.name, limit).await {
        Ok(()) => {
            let action = match limit {
                Some(l) => format!("throttle {l}"),
                None => "throttle cleared".into(),
            };
            run.record_event(&action, &caller.to_string()).await;
            Json(json!({ "name": run.name, "rows_per_second": body.rows_per_second }))
                .into_response()
        }
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": e.to_string() })),
        )
            .into_response(),
    }
}

/// How long a cutover or rollback request waits for the runner's answer. A runner in the
/// middle of a verify pass takes the request when the pass ends; past this the request stays
/// queued and the answer is 202.
const ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_secs(60);

async fn cutover(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    ConnectInfo(caller): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    step(&d, &name, caller, &headers, Action::Cutover).await
}

async fn rollback(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    ConnectInfo(caller): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    step(&d, &name, caller, &headers, Action::Rollback).await
}

/// Hands a cutover or rollback to the migration's runner and answers with what it did: 200
/// and the engine's report, 409 when the engine refused (with why), 503 when it failed.
async fn step(
    d: &Daemon,
    name: &str,
    caller: SocketAddr,
    headers: &HeaderMap,
    action: Action,
) -> Response {
    let run = match controlled(d, name, headers) {
        Ok(run) => run,
        Err(e) => return e.into_response(),
    };
    if d.stopping.load(Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": "the daemon is stopping" })),
        )
            .into_response();
    }
    let (reply, answer) = tokio::sync::oneshot::channel();
    let request = Request {
        action,
        caller: caller.to_string(),
        reason: None,
        reply: Some(reply),
    };
    if run.submit(request).is_err() {
        return (
            StatusCode::CONFLICT,
            Json(json!({
                "error": "another cutover or rollback waits for this migration's runner; \
                          try again when it is done"
            })),
        )
            .into_response();
    }
    match tokio::time::timeout(ANSWER_WITHIN, answer).await {
        Ok(Ok(Ok(done))) => Json(json!({ "name": run.name, "done": done })).into_response(),
        Ok(Ok(Err(e))) => {
            let code = if e.is_check_failure() || e.is_busy() {
                StatusCode::CONFLICT
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (
                code,
                Json(json!({ "name": run.name, "error": e.to_string() })),
            )
                .into_response()
        }
        // The runner stopped (shutdown) before it took the request.
        Ok(Err(_)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": "the runner stopped before it took the request" })),
        )
            .into_response(),
        Err(_) => (
            StatusCode::ACCEPTED,
            Json(json!({
                "name": run.name,
                "queued": true,
                "note": format!(
                    "the runner has not taken the request within {}s (a verify pass runs \
                     first); it will, watch `phase` and `control`",
                    ANSWER_WITHIN.as_secs()
                ),
            })),
        )
            .into_response(),
    }
}

/// Why a request is turned away.
enum Rejection {
    /// A control request without the configured bearer token.
    Unauthorized,
    /// No migration of that name in this daemon.
    NoSuchMigration(String),
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        match self {
            Rejection::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "control requests need `Authorization: Bearer <token>` (the daemon's \
                 --token-file)\n",
            )
                .into_response(),
            Rejection::NoSuchMigration(name) => (
                StatusCode::NOT_FOUND,
                Json(json!({ "error": format!("this daemon drives no migration named {name}") })),
            )
                .into_response(),
        }
    }
}

/// Control requests carry the bearer token when one is configured.
fn authorized(d: &Daemon, headers: &HeaderMap) -> Result<(), Rejection> {
    let Some(token) = &d.token else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
        Ok(())
    } else {
        Err(Rejection::Unauthorized)
    }
}

/// Compares without stopping at the first difference, so timing says nothing of the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The migration a control request names, once the request is authorized.
fn controlled<'d>(
    d: &'d Daemon,
    name: &str,
    headers: &HeaderMap,
) -> Result<&'d Arc<MigrationRun>, Rejection> {
    authorized(d, headers)?;
    find(d, name)
}

fn find<'d>(d: &'d Daemon, name: &str) -> Result<&'d Arc<MigrationRun>, Rejection> {
    d.runs
        .iter()
        .find(|r| r.name == name)
        .ok_or_else(|| Rejection::NoSuchMigration(name.to_string()))
}

/// One migration as the JSON API shows it.
fn describe(run: &MigrationRun) -> serde_json::Value {
    let health = run.health();
    let paused = run.paused();
    let view = run.view().clone();
    let status = view.status.as_ref();
    let progress = view.progress.as_ref();
    let rows_copied = progress
        .map(|p| p.rows_copied as i64)
        .or(status.map(|s| s.rows_copied));
    let rows_total = progress
        .map(|p| p.rows_total as i64)
        .filter(|t| *t > 0)
        .or(status.map(|s| s.rows_total));
    let rate = progress
        .map(|p| p.rows_per_second)
        .filter(|r| *r > 0.0)
        .or(status.and_then(|s| s.backfill_rows_per_second));
    let backfill_done = status.is_some_and(|s| s.backfill_done);
    let eta_seconds = match (rows_copied, rows_total, rate) {
        _ if backfill_done => Some(0.0),
        (Some(c), Some(t), Some(r)) if r > 0.0 => Some((t - c).max(0) as f64 / r),
        _ => None,
    };
    json!({
        "name": run.name,
        "file": run.file,
        "database": run.database,
        "phase": status.map(|s| s.phase.clone()),
        "paused": paused,
        "activity": view.activity,
        "healthy": health.is_ok(),
        "problem": health.err(),
        "progress": {
            "rows_copied": rows_copied,
            "rows_total": rows_total,
            "percent": match (rows_copied, rows_total) {
                _ if backfill_done => Some(100.0),
                (Some(c), Some(t)) if t > 0 => Some((100.0 * c as f64 / t as f64).min(100.0)),
                _ => None,
            },
            "backfill_done": backfill_done,
            "rows_per_second": rate,
            "eta_seconds": eta_seconds,
        },
        "capture_lag_bytes": progress.map(|p| p.capture_lag_bytes as i64)
            .or(status.and_then(|s| s.capture_lag_bytes)),
        "capture_lag_seconds": progress.map(|p| p.capture_lag_ms as f64 / 1000.0),
        "throttled": paused || progress.is_some_and(|p| p.throttled.is_some()),
        "throttle_reason": if paused {
            Some("paused".to_string())
        } else {
            progress.and_then(|p| p.throttled.clone())
        },
        "rate_limit_rows_per_second": progress.map(|p| p.rate_limit),
        "rate_override_rows_per_second": status.and_then(|s| s.rate_override),
        "last_verify": view.last_verify.as_ref().map(|v| json!({
            "passed": v.passed,
            "rows_checked": v.rows_checked,
            "divergent_rows": v.divergent_rows,
            "divergence_ratio": v.divergence_ratio,
            "seconds": v.seconds,
            "finished_at": v.finished_at,
            "age_seconds": metrics::seconds_since(v.finished_at),
        })).or_else(|| status.and_then(|s| s.last_verify.clone())),
        "verify_passes": view.verify_passes,
        "slots": status.map(|s| s.slots.clone()),
        "next": status.map(|s| s.next.clone()),
        "control": view.events,
        "automation": {
            "cutover": match run.automation.cutover {
                engine::spec::CutoverMode::Manual => "manual",
                engine::spec::CutoverMode::Auto => "auto",
            },
            "hold_seconds": run.automation.hold.as_secs_f64(),
            "window": run.automation.window.map(|w| w.to_string()),
            "watch": run.automation.watch,
            "watch_for_seconds": run.automation.watch_for.as_secs_f64(),
            "gates_held_seconds": view.automation.gates_held_seconds,
            "waiting_for": view.automation.waiting_for,
            "disarmed": view.automation.disarmed,
            "watching_until": view.automation.watching_until,
            "watch_checks": view.automation.watch_checks,
            "automatic_rollbacks": view.automation.automatic_rollbacks,
            "last_automatic_rollback": view.automation.last_automatic_rollback,
        },
        "history": status.map(|s| s.history.clone()),
    })
}

/// A status page for people: server-rendered, reloading itself every two seconds.
async fn page(State(d): State<Arc<Daemon>>) -> Html<String> {
    let mut rows = String::new();
    for run in &d.runs {
        let v = describe(run);
        let pct = v["progress"]["percent"].as_f64().unwrap_or(0.0);
        let activity = match &run.view().activity {
            Some(Activity::Failed(why)) => format!("failed: {why}"),
            Some(Activity::Idle(why)) => format!("idle: {why}"),
            Some(a) => serde_json::to_value(a)
                .ok()
                .and_then(|j| j["state"].as_str().map(str::to_string))
                .unwrap_or_default(),
            None => String::new(),
        };
        let lv = &v["last_verify"];
        let verify = match (lv["divergent_rows"].as_u64(), lv["rows_checked"].as_u64()) {
            (Some(divergent), Some(checked)) => {
                format!("{divergent} divergent of {checked} rows")
            }
            // A pass recorded before this daemon started: the state store keeps less.
            _ => match lv["passed"].as_bool() {
                Some(true) => format!("passed at {}", lv["at"].as_str().unwrap_or("?")),
                Some(false) => format!("diverged at {}", lv["at"].as_str().unwrap_or("?")),
                None => "none yet".to_string(),
            },
        };
        rows.push_str(&format!(
            "<tr><td>{name}</td><td>{phase}</td><td>{activity}</td>\
             <td><progress max=\"100\" value=\"{pct:.1}\"></progress> {pct:.1}%</td>\
             <td>{rate}</td><td>{eta}</td><td>{lag}</td><td>{throttle}</td><td>{verify}</td><td>{automation}</td></tr>\n",
            name = escape(&run.name),
            phase = escape(v["phase"].as_str().unwrap_or("-")),
            activity = escape(&activity),
            rate = v["progress"]["rows_per_second"]
                .as_f64()
                .map(|r| format!("{r:.0} rows/s"))
                .unwrap_or_else(|| "-".into()),
            eta = v["progress"]["eta_seconds"]
                .as_f64()
                .map(|s| humantime::format_duration(std::time::Duration::from_secs(s as u64))
                    .to_string())
                .unwrap_or_else(|| "-".into()),
            lag = v["capture_lag_bytes"]
                .as_i64()
                .map(|b| format!("{b} B"))
                .unwrap_or_else(|| "-".into()),
            throttle = escape(v["throttle_reason"].as_str().unwrap_or("-")),
            verify = escape(&verify),
            automation = escape(&automation_line(&v["automation"])),
        ));
    }
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" \
         content=\"2\"><title>splice daemon</title><style>body{{font-family:sans-serif}}\
         td,th{{padding:4px 10px;text-align:left}}</style></head><body><h1>splice daemon</h1>\
         <table><tr><th>migration</th><th>phase</th><th>doing</th><th>backfill</th>\
         <th>rate</th><th>ETA</th><th>capture lag</th><th>throttled</th><th>last verify</th>\
         <th>automation</th>\
         </tr>\n{rows}</table></body></html>\n"
    ))
}

/// The automation column of the status page: manual, what automatic cutover waits for, or the
/// watch.
fn automation_line(a: &serde_json::Value) -> String {
    let rollbacks = a["automatic_rollbacks"].as_u64().unwrap_or(0);
    let mut line = if let Some(until) = a["watching_until"].as_f64() {
        format!(
            "watching ({} checks passed, {} left)",
            a["watch_checks"].as_u64().unwrap_or(0),
            humantime::format_duration(std::time::Duration::from_secs(
                (until - super::runner::unix_now()).max(0.0) as u64
            ))
        )
    } else if a["cutover"] == "auto" {
        match (a["disarmed"].as_str(), a["waiting_for"].as_str()) {
            (Some(why), _) => format!("auto cutover off: waits for {why}"),
            (None, Some(what)) => format!("auto cutover: waits for {what}"),
            (None, None) => "auto cutover".to_string(),
        }
    } else {
        "manual cutover".to_string()
    };
    if rollbacks > 0 {
        line.push_str(&format!(
            "; rolled back on its own: {}",
            a["last_automatic_rollback"].as_str().unwrap_or("?")
        ));
    }
    line
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
