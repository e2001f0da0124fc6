//! `splice throttle`: change the rate limit of a running (or the next) sync.

use super::Engine;
use crate::adapter::Adapter;
use crate::seam::RateLimit;
use crate::EngineError;

impl<A: Adapter> Engine<A> {
    /// Sets (or with `None` clears) the backfill rate limit of a migration; a running sync
    /// picks it up at its next checkpoint. Refuses a migration that does not exist.
    pub async fn set_rate_limit(
        &self,
        name: &str,
        limit: Option<RateLimit>,
    ) -> Result<(), EngineError> {
        let db = self.db().await?;
        if self.adapter.set_rate_limit(&db, name, limit).await? {
            Ok(())
        } else {
            Err(EngineError::NoSuchMigration { name: name.into() })
        }
    }
}
