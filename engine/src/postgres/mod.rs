//! The PostgreSQL adapter: [`Postgres`] implements [`Adapter`] with tokio-postgres sessions,
//! logical decoding (`cdc`) for capture, replication origins for the applier, and the `splice`
//! schema as the state store. Everything PostgreSQL-specific in the engine lives here:
//! catalog queries ([`catalog`]), the statements that move rows ([`sql`], [`backfill`]),
//! capture and the applier ([`capture`]), verify's COPY reads ([`verify`]), the cutover swap and
//! quarantine DDL ([`cutover`]), planning and `splice plan`'s rendering ([`plan`]) and the state
//! store with its runner lock ([`state`]).

pub mod alter;
pub mod backfill;
pub mod capture;
pub mod catalog;
pub mod cutover;
pub mod plan;
pub mod sql;
pub mod state;
pub mod verify;

pub use state::RunnerLock;

use crate::adapter::Sessions;
use crate::phases::Engine;
use crate::EngineError;
use tokio_postgres::Client;

impl EngineError {
    /// A PostgreSQL error, described by the server's message.
    pub fn db(context: impl Into<String>, e: tokio_postgres::Error) -> EngineError {
        EngineError::Database {
            context: context.into(),
            message: db_message(&e),
        }
    }
}

/// The server's message (with detail and hint) rather than the driver's "db error".
pub fn db_message(e: &tokio_postgres::Error) -> String {
    cdc::describe_pg_error(e)
}

/// Connects with tokio-postgres and drives the connection in the background, with the session
/// settings verify's canonical text depends on; errors name the URL's host and the fix.
pub async fn connect(url: &str) -> Result<Client, EngineError> {
    // TLS, the libpq environment and the password file: the same rules as change capture.
    let (client, _connection) = cdc::connect(url).await?;
    // One canonical text form for every value verify hashes; and string literals read the
    // same whatever the database or role sets (verify re-queries keys holding backslashes).
    client
        .batch_execute(
            "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; \
             SET extra_float_digits = 3; SET bytea_output = 'hex'; \
             SET standard_conforming_strings = on",
        )
        .await
        .map_err(|e| EngineError::db("setting session defaults", e))?;
    Ok(client)
}

/// One PostgreSQL database, by URL.
#[derive(Debug, Clone)]
pub struct Postgres {
    url: String,
}

impl Postgres {
    pub fn new(url: impl Into<String>) -> Postgres {
        Postgres { url: url.into() }
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Sessions for Postgres {
    type Conn = Client;

    async fn connect(&self) -> Result<Client, EngineError> {
        connect(&self.url).await
    }
}

impl Engine<Postgres> {
    /// The engine of the PostgreSQL database at `url`.
    pub fn new(url: impl Into<String>) -> Engine<Postgres> {
        Engine::with_adapter(Postgres::new(url))
    }
}
