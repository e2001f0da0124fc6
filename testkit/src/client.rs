//! A SQL session for tests and benchmarks.

use anyhow::{Context, Result};

/// A session on `url`, connecting the way splice does (TLS per `sslmode`, the libpq
/// environment), its connection driven by a task on the current tokio runtime until the
/// client is dropped. Call it from inside a runtime.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client> {
    let (client, _connection) = cdc::connect(url)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    Ok(client)
}
