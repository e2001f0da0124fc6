//! The MySQL/MariaDB adapter: [`MySql`] implements the engine's traits with `mysql_async`
//! sessions and keeps its state in a `splice` database on the same server. Everything
//! MySQL-specific in the engine lives here: the state store with its runner lock ([`state`]),
//! planning and `splice plan`'s rendering ([`plan`]), expand and the fenced backfill
//! ([`backfill`], with its statements in [`sql`]), the binlog stream and the applier
//! ([`capture`]), verify's canonical rows ([`verify`]), the cut-over ([`cutover`]) and the triggers it carries
//! over ([`triggers`]).
//! `alter` mode starts the shadow as a copy of the live table and runs the ALTER on it
//! ([`alter`]).
//!
//! Tested on MariaDB 10.11 only (the server the test harness starts); the SQL sticks to what
//! MySQL 8 shares with it.

pub mod alter;
pub mod backfill;
pub mod capture;
pub mod cutover;
pub mod plan;
pub mod sql;
pub mod state;
pub mod triggers;
pub mod verify;

pub use state::RunnerLock;

use crate::adapter::Sessions;
use crate::phases::Engine;
use crate::spec::QualifiedName;
use crate::EngineError;
use cdc::mysql::MySqlTarget;
use mysql_async::prelude::{FromValue, Queryable};
use mysql_async::{Conn, Row};
use tokio::sync::Mutex;

/// The database splice keeps its state in (shared with the binlog source's slots and marker).
pub const STATE_DATABASE: &str = "splice";

impl EngineError {
    /// A MySQL/MariaDB error, described by the server's message.
    pub fn my(context: impl Into<String>, e: &mysql_async::Error) -> EngineError {
        EngineError::Database {
            context: context.into(),
            message: cdc::describe_mysql_error(e),
        }
    }
}

/// The settings every session runs with: UTC, strict assignment (a value that does not fit
/// its column is an error, never a silent truncation), an explicit 0 in an AUTO_INCREMENT
/// column kept as 0 (copied rows keep their keys), and utf8mb4 on the wire.
const SESSION_SETTINGS: &str = "SET time_zone = '+00:00', \
     sql_mode = 'STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,\
NO_ENGINE_SUBSTITUTION,NO_AUTO_VALUE_ON_ZERO', NAMES utf8mb4";

/// Opens a session on `target` with [`SESSION_SETTINGS`].
pub async fn connect(target: &MySqlTarget) -> Result<Conn, EngineError> {
    let mut conn = target.connect().await?;
    conn.query_drop(SESSION_SETTINGS)
        .await
        .map_err(|e| EngineError::my("setting session defaults", &e))?;
    Ok(conn)
}

/// One session. `mysql_async` sessions need `&mut` for every statement, the engine's traits
/// hand sessions around by `&`: the mutex bridges the two (a session runs one statement at a
/// time either way).
pub struct Session {
    conn: Mutex<Conn>,
    /// Temporary tables the planning scope created on this session, dropped when it ends.
    planning: std::sync::Mutex<Vec<String>>,
}

impl Session {
    fn new(conn: Conn) -> Session {
        Session {
            conn: Mutex::new(conn),
            planning: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The session, for one statement or a transaction.
    pub async fn lock(&self) -> tokio::sync::MutexGuard<'_, Conn> {
        self.conn.lock().await
    }
}

/// One MySQL or MariaDB server, by URL (`mysql://` or `mariadb://`, `ssl-mode` as the `mysql`
/// client spells it).
#[derive(Debug, Clone)]
pub struct MySql {
    url: String,
    target: MySqlTarget,
    /// Sessions on the replicas of `[throttle] replicas`, by address, opened when first asked.
    replica_sessions: std::sync::Arc<Mutex<std::collections::HashMap<String, Conn>>>,
}

impl MySql {
    /// Reads the URL; a malformed one is refused with what to write instead.
    pub fn new(url: impl Into<String>) -> Result<MySql, EngineError> {
        let url = url.into();
        let target = MySqlTarget::from_url(&url)?;
        Ok(MySql {
            url,
            target,
            replica_sessions: Default::default(),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

/// `url` with its host and port replaced by `address` (`host` or `host:port`): the same
/// user, password, database and settings (TLS too) on another server.
pub fn url_at(url: &str, address: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("mysql", url));
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let user = authority.rsplit_once('@').map(|(u, _)| u);
    match user {
        Some(u) => format!("{scheme}://{u}@{address}{tail}"),
        None => format!("{scheme}://{address}{tail}"),
    }
}

impl Sessions for MySql {
    type Conn = Session;

    async fn connect(&self) -> Result<Session, EngineError> {
        Ok(Session::new(connect(&self.target).await?))
    }
}

impl Engine<MySql> {
    /// The engine of the MySQL/MariaDB server at `url`.
    pub fn mysql(url: impl Into<String>) -> Result<Engine<MySql>, EngineError> {
        Ok(Engine::with_adapter(MySql::new(url)?))
    }
}

/// `` `db`.`table` ``.
pub fn quote_name(name: &QualifiedName) -> String {
    format!("{}.{}", quote_ident(&name.schema), quote_ident(&name.name))
}

/// An identifier in backquotes.
pub fn quote_ident(ident: &str) -> String {
    format!("`{}`", ident.replace('`', "``"))
}

/// A string literal (the session's sql_mode has no NO_BACKSLASH_ESCAPES: backslashes doubled).
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// Column `i` of `row` as a `T`, or an error naming `context` (never a panic on a value the
/// server sent).
pub(crate) fn col<T: FromValue>(row: &Row, i: usize, context: &str) -> Result<T, EngineError> {
    match row.get_opt::<T, usize>(i) {
        Some(Ok(v)) => Ok(v),
        Some(Err(e)) => Err(EngineError::Database {
            context: context.to_string(),
            message: format!("unexpected value in column {i}: {e}"),
        }),
        None => Err(EngineError::Database {
            context: context.to_string(),
            message: format!("the server sent no column {i}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::url_at;

    #[test]
    fn a_replica_url_keeps_everything_but_the_host_and_port() {
        assert_eq!(
            url_at(
                "mysql://splice:pw@db-1:3306/shop?ssl-mode=VERIFY_IDENTITY",
                "db-2:3307"
            ),
            "mysql://splice:pw@db-2:3307/shop?ssl-mode=VERIFY_IDENTITY"
        );
        assert_eq!(
            url_at("mariadb://root@127.0.0.1:4000", "db-2"),
            "mariadb://root@db-2"
        );
        assert_eq!(
            url_at("mysql://db-1/?ssl-mode=REQUIRED", "db-2"),
            "mysql://db-2/?ssl-mode=REQUIRED"
        );
    }
}
