//! `splice throttle`: change the rate limit of a running (or the next) sync.

use super::Engine;
use crate::adapter::Adapter;
use crate::seam::RateLimit;
use crate::state::{actor, Event};
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

    /// Records a request made of a migration (pause, resume, a rate, a cutover or rollback
    /// asked of the daemon) in its event log, which `splice status --history` lists beside the
    /// transitions. `caller` is who asked (an address, `automation`); the recording process is
    /// added as the actor. Refuses a migration that does not exist.
    pub async fn record_event(
        &self,
        name: &str,
        action: &str,
        caller: &str,
        reason: Option<&str>,
        outcome: Option<&str>,
    ) -> Result<(), EngineError> {
        let db = self.db().await?;
        let event = Event {
            at: String::new(),
            action: action.into(),
            caller: caller.into(),
            actor: actor(),
            reason: reason.map(Into::into),
            outcome: outcome.map(Into::into),
        };
        if self.adapter.record_event(&db, name, &event).await? {
            Ok(())
        } else {
            Err(EngineError::NoSuchMigration { name: name.into() })
        }
    }

    /// The last `limit` requests recorded for a migration, oldest first.
    pub async fn events(&self, name: &str, limit: usize) -> Result<Vec<Event>, EngineError> {
        let db = self.db().await?;
        self.adapter.events(&db, name, limit).await
    }
}
