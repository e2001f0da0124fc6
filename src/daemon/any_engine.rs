//! The engine a daemon's migration runs on, picked by its database URL: `postgres://` (or a
//! libpq string) drives the PostgreSQL adapter, `mysql://`/`mariadb://` the MySQL one. The
//! runner, the HTTP API and the automation call the same commands on either; only the watch's
//! session (a query of the application's own) speaks each server's protocol.

use cdc::mysql::Flavor;
use engine::backfill::{Control, ProgressSink, SyncProgress};
use engine::phases::{
    CutoverReport, ExpandReport, ReverseSync, RollbackReport, Status, SyncOptions,
};
use engine::state::Event;
use engine::verify::VerifyCounters;
use engine::{Engine, EngineError, MySql, Phase, Postgres, RateLimit, VerifyKind, VerifyReport};
use mysql_async::prelude::Queryable;
use std::time::Duration;

/// One migration's engine.
pub enum DaemonEngine {
    Postgres(Engine<Postgres>),
    MySql(Engine<MySql>),
}

/// Runs `$body` with `$e` bound to whichever engine this is.
macro_rules! on_engine {
    ($self:expr, $e:ident => $body:expr) => {
        match $self {
            DaemonEngine::Postgres($e) => $body,
            DaemonEngine::MySql($e) => $body,
        }
    };
}

impl DaemonEngine {
    /// The engine for `url` (connects nothing yet).
    pub fn for_url(url: &str) -> Result<DaemonEngine, String> {
        if crate::db_url::is_mysql(url) {
            Engine::mysql(url)
                .map(DaemonEngine::MySql)
                .map_err(|e| e.to_string())
        } else {
            Ok(DaemonEngine::Postgres(Engine::new(url)))
        }
    }

    pub async fn expand(&self, spec_text: &str, origin: &str) -> Result<ExpandReport, EngineError> {
        on_engine!(self, e => e.expand(spec_text, origin).await)
    }

    pub async fn sync(
        &self,
        name: &str,
        opts: &SyncOptions,
        control: &Control,
        progress: &mut dyn ProgressSink,
    ) -> Result<SyncProgress, EngineError> {
        on_engine!(self, e => e.sync(name, opts, control, progress).await)
    }

    pub async fn verify_kind(
        &self,
        name: &str,
        kind: VerifyKind,
        counters: &VerifyCounters,
    ) -> Result<VerifyReport, EngineError> {
        on_engine!(self, e => e.verify_kind(name, kind, counters).await)
    }

    pub async fn cutover(
        &self,
        name: &str,
        max_lag_bytes: u64,
        reverse_sync: ReverseSync,
    ) -> Result<CutoverReport, EngineError> {
        on_engine!(self, e => e.cutover(name, max_lag_bytes, reverse_sync).await)
    }

    pub async fn rollback(&self, name: &str) -> Result<RollbackReport, EngineError> {
        on_engine!(self, e => e.rollback(name).await)
    }

    pub async fn rollback_from(
        &self,
        name: &str,
        expected: Option<Phase>,
    ) -> Result<RollbackReport, EngineError> {
        on_engine!(self, e => e.rollback_from(name, expected).await)
    }

    pub async fn status(&self, name: Option<&str>) -> Result<Vec<Status>, EngineError> {
        on_engine!(self, e => e.status(name).await)
    }

    pub async fn set_rate_limit(
        &self,
        name: &str,
        limit: Option<RateLimit>,
    ) -> Result<(), EngineError> {
        on_engine!(self, e => e.set_rate_limit(name, limit).await)
    }

    pub async fn record_event(
        &self,
        name: &str,
        action: &str,
        caller: &str,
        reason: Option<&str>,
        outcome: Option<&str>,
    ) -> Result<(), EngineError> {
        on_engine!(self, e => e.record_event(name, action, caller, reason, outcome).await)
    }

    pub async fn events(&self, name: &str, limit: usize) -> Result<Vec<Event>, EngineError> {
        on_engine!(self, e => e.events(name, limit).await)
    }
}

/// The watch's own session on the migration's database (not the engine's: a slow or failing
/// watch must not hold up the runner).
pub enum WatchSession {
    Postgres(<Postgres as engine::adapter::Sessions>::Conn),
    MySql(mysql_async::Conn),
}

impl WatchSession {
    /// Connects to `url` with every statement bounded by `timeout` on the server too.
    pub async fn connect(url: &str, timeout: Duration) -> Result<WatchSession, String> {
        let cannot = |e: String| format!("the watch cannot connect: {e}");
        if crate::db_url::is_mysql(url) {
            let target =
                cdc::mysql::MySqlTarget::from_url(url).map_err(|e| cannot(e.to_string()))?;
            let mut conn = engine::mysql::connect(&target)
                .await
                .map_err(|e| cannot(e.to_string()))?;
            let version: Option<String> = conn
                .query_first("SELECT VERSION()")
                .await
                .map_err(|e| cannot(cdc::describe_mysql_error(&e)))?;
            // MariaDB bounds every statement (seconds); MySQL only its SELECTs (milliseconds).
            let bound = match Flavor::of_version(version.as_deref().unwrap_or_default()) {
                Flavor::MariaDb => {
                    format!("SET SESSION max_statement_time = {}", timeout.as_secs_f64())
                }
                Flavor::MySql => {
                    format!("SET SESSION max_execution_time = {}", timeout.as_millis())
                }
            };
            conn.query_drop(bound)
                .await
                .map_err(|e| cannot(cdc::describe_mysql_error(&e)))?;
            return Ok(WatchSession::MySql(conn));
        }
        let client = engine::connect(url)
            .await
            .map_err(|e| cannot(e.to_string()))?;
        client
            .batch_execute(&format!("SET statement_timeout = {}", timeout.as_millis()))
            .await
            .map_err(|e| cannot(engine::db_message(&e)))?;
        Ok(WatchSession::Postgres(client))
    }

    /// Whether the session is known to be gone (the next check connects again).
    pub fn is_closed(&self) -> bool {
        match self {
            WatchSession::Postgres(c) => c.is_closed(),
            // A broken MySQL session shows at its next query, which drops it.
            WatchSession::MySql(_) => false,
        }
    }

    /// Runs `sql`: Ok(true/false/None for NULL) from its one row's one value, or why it
    /// gave no boolean. The PostgreSQL value must be a boolean; MySQL has none, so its
    /// comparisons' 1 and 0 (any integer: 0 is false) count.
    pub async fn ask(&mut self, sql: &str) -> Result<Option<bool>, WatchError> {
        match self {
            WatchSession::Postgres(client) => {
                let rows = client
                    .query(sql, &[])
                    .await
                    .map_err(|e| WatchError::Failed(engine::db_message(&e)))?;
                match rows.as_slice() {
                    [row] => row
                        .try_get::<_, Option<bool>>(0)
                        .map_err(|e| WatchError::NotBoolean(e.to_string())),
                    rows => Err(WatchError::Rows(rows.len())),
                }
            }
            WatchSession::MySql(conn) => {
                let rows: Vec<mysql_async::Row> = conn
                    .query(sql)
                    .await
                    .map_err(|e| WatchError::Failed(cdc::describe_mysql_error(&e)))?;
                match rows.as_slice() {
                    [row] if row.len() == 1 => match row.as_ref(0) {
                        Some(mysql_async::Value::NULL) => Ok(None),
                        Some(mysql_async::Value::Int(i)) => Ok(Some(*i != 0)),
                        Some(mysql_async::Value::UInt(u)) => Ok(Some(*u != 0)),
                        Some(mysql_async::Value::Bytes(b)) => {
                            match std::str::from_utf8(b).ok().map(str::trim) {
                                Some("1") => Ok(Some(true)),
                                Some("0") => Ok(Some(false)),
                                _ => Err(WatchError::NotBoolean(format!(
                                    "the value {:?} is not 1 or 0",
                                    String::from_utf8_lossy(b)
                                ))),
                            }
                        }
                        other => Err(WatchError::NotBoolean(format!(
                            "the value {other:?} is not 1 or 0"
                        ))),
                    },
                    [_] => Err(WatchError::NotBoolean("more than one column".into())),
                    rows => Err(WatchError::Rows(rows.len())),
                }
            }
        }
    }
}

/// Why a watch query gave no boolean.
pub enum WatchError {
    /// The server refused or the session broke (the session is dropped).
    Failed(String),
    NotBoolean(String),
    Rows(usize),
}
