//! A SQL session for tests and benchmarks.

use anyhow::{Context, Result};

/// A session on `url` (no TLS), its connection driven by a task on the current tokio runtime
/// until the client is dropped. Call it from inside a runtime.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}
