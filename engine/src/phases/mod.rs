//! The phase machine: each command is one method of [`Engine`], in a file of its own, each
//! idempotent and resumable. Written against the [`Adapter`] traits; it holds no SQL and names
//! no database.
//!
//! ```text
//! planned → expanded → syncing → verified → cut_over → contracted → dropped
//!    any phase → rolled_back (after cutover: back to syncing, with the old table live again)
//! ```

mod contract;
mod cutover;
mod drop;
mod expand;
mod rollback;
mod status;
mod swap;
mod sync;
mod throttle;
mod verify;

pub use contract::Contracted;
pub use cutover::CutoverReport;
pub use cutover::ReverseSync;
pub use drop::{DropReport, Quarantine};
pub use expand::ExpandReport;
pub use rollback::RollbackReport;
pub use status::{Backfill, Status};
pub use sync::SyncOptions;

use crate::adapter::Adapter;
use crate::applier::Applier;
use crate::drift::SourceShape;
use crate::error::Refusal;
use crate::seam::{Continuity, Direction};
use crate::spec::MigrationSpec;
use crate::state::{DeferredIndex, MigrationRecord, Phase};
use crate::EngineError;

pub use crate::spec::QUARANTINE_SCHEMA;

/// Drives migrations in one database, through its adapter.
pub struct Engine<A: Adapter> {
    adapter: A,
    verify_range_rows: i64,
}

/// Source rows per verify range (about): a range whose digests differ is read again row by row,
/// and incremental verify re-reads every range holding a changed key, so ranges are small; the
/// adapter caps how many a table is split into (PostgreSQL: 4,096), which makes them larger on
/// tables of more than about 40 million rows.
const VERIFY_RANGE_ROWS: i64 = 10_000;

/// A registered migration, loaded: what every command starts from.
struct Loaded<C> {
    db: C,
    record: MigrationRecord,
    spec: MigrationSpec,
}

impl<A: Adapter> Engine<A> {
    /// The engine of the database behind `adapter`.
    pub fn with_adapter(adapter: A) -> Engine<A> {
        Engine {
            adapter,
            verify_range_rows: VERIFY_RANGE_ROWS,
        }
    }

    pub fn adapter(&self) -> &A {
        &self.adapter
    }

    /// About how many source rows verify hashes per key range (default 10,000). A range
    /// whose digests differ is read again row by row, so smaller ranges narrow faster and
    /// larger ones cost fewer round trips.
    pub fn with_verify_range_rows(mut self, rows: i64) -> Engine<A> {
        self.verify_range_rows = rows.max(1);
        self
    }

    async fn db(&self) -> Result<A::Conn, EngineError> {
        self.adapter.connect().await
    }

    /// The preamble of every command on a registered migration: a session, its record, its
    /// stored spec.
    async fn load(&self, name: &str) -> Result<Loaded<A::Conn>, EngineError> {
        let db = self.db().await?;
        let record = self.record(&db, name).await?;
        let spec = spec_of(&record)?;
        Ok(Loaded { db, record, spec })
    }

    async fn record(&self, db: &A::Conn, name: &str) -> Result<MigrationRecord, EngineError> {
        self.adapter
            .load_record(db, name)
            .await?
            .ok_or_else(|| EngineError::NoSuchMigration { name: name.into() })
    }

    /// Forward sync's applier (old → new): slot `splice_<name>_fwd`, origin `splice_<name>`.
    /// A stream that must continue but cannot is refused with the way out.
    async fn forward_applier(
        &self,
        spec: &MigrationSpec,
        dir: Direction,
        continuity: Continuity,
    ) -> Result<Applier<'_, A>, EngineError> {
        Applier::open(
            &self.adapter,
            spec,
            dir,
            &spec.forward_slot(),
            &spec.origin(),
            continuity,
        )
        .await
        .map_err(|e| {
            capture_lost(
                e,
                &spec.name,
                format!(
                    "Start again from a fresh capture: `splice abort {name}` (if it was cut over, \
                     `splice rollback {name}` first), then `splice expand FILE`, `splice sync \
                     {name}` (a full backfill) and `splice verify {name}` before cutover.",
                    name = spec.name
                ),
            )
        })
    }

    /// Reverse sync's applier (new → old): slot `splice_<name>_rev`, origin
    /// `splice_<name>_rev`.
    async fn reverse_applier(
        &self,
        spec: &MigrationSpec,
        dir: Direction,
        continuity: Continuity,
    ) -> Result<Applier<'_, A>, EngineError> {
        Applier::open(
            &self.adapter,
            spec,
            dir,
            &spec.reverse_slot(),
            &spec.reverse_origin(),
            continuity,
        )
        .await
        .map_err(|e| {
            capture_lost(
                e,
                &spec.name,
                format!(
                    "The old table misses writes made to the live one since, so swapping back \
                     would lose them: rollback after cutover is closed. The new table is live \
                     and complete; `splice contract {name}` retires the old one.",
                    name = spec.name
                ),
            )
        })
    }

    async fn locked(&self, name: &str) -> Result<A::Lock, EngineError> {
        self.adapter.acquire_lock(name).await
    }
}

impl<A: Adapter> Engine<A> {
    /// A figure the last expand recorded with its phase change (`source_shape`,
    /// `deferred_indexes`); `None` when it recorded none (an older expand).
    async fn expand_figure<T: serde::de::DeserializeOwned>(
        &self,
        db: &A::Conn,
        name: &str,
        key: &str,
    ) -> Result<Option<T>, EngineError> {
        let history = self.adapter.history(db, name).await?;
        Ok(history
            .iter()
            .rev()
            .find(|t| t.to == Phase::Expanded.as_str())
            .and_then(|t| t.figures.get(key))
            .and_then(|v| serde_json::from_value(v.clone()).ok()))
    }

    /// Refuses when the source table no longer has the shape expand recorded. Migrations
    /// expanded before the shape was recorded are not checked.
    async fn check_source_drift(
        &self,
        db: &A::Conn,
        name: &str,
        source: &crate::catalog::Table,
    ) -> Result<(), EngineError> {
        let Some(recorded) = self
            .expand_figure::<SourceShape>(db, name, "source_shape")
            .await?
        else {
            tracing::warn!(
                migration = name,
                "no source shape recorded at expand; drift is not checked"
            );
            return Ok(());
        };
        let changes = recorded.changes(&SourceShape::of(source));
        if changes.is_empty() {
            return Ok(());
        }
        Err(Refusal::SourceDrift {
            name: name.into(),
            table: source.name.to_string(),
            changes: changes.join("; "),
        }
        .into())
    }
}

impl<A: Adapter> Engine<A> {
    /// Builds the shadow's secondary indexes expand deferred (`CREATE INDEX CONCURRENTLY`;
    /// those already built are skipped): after the backfill, and again before cutover in case
    /// a sync stopped in between. Returns how many it built and how long that took.
    async fn build_deferred_indexes(
        &self,
        db: &A::Conn,
        spec: &MigrationSpec,
    ) -> Result<(u32, f64), EngineError> {
        let deferred: Vec<DeferredIndex> = self
            .expand_figure(db, &spec.name, "deferred_indexes")
            .await?
            .unwrap_or_default();
        let started = std::time::Instant::now();
        let mut built = 0;
        for index in &deferred {
            if self.adapter.build_index(db, spec, index).await? {
                tracing::info!(index = %index.name, "built a deferred index");
                built += 1;
            }
        }
        Ok((built, started.elapsed().as_secs_f64()))
    }
}

/// The refusal of a command run in a phase where it does not apply: where it runs (`runs`),
/// and the command that actually comes next.
fn wrong_phase(record: &MigrationRecord, runs: &str) -> EngineError {
    Refusal::WrongPhase {
        name: record.name.clone(),
        phase: record.phase,
        expected: format!("{runs}; next: {}", record.next_step()),
    }
    .into()
}

/// A lost stream, as the refusal that names the way out.
fn capture_lost(e: EngineError, name: &str, way_out: String) -> EngineError {
    match e {
        EngineError::StreamLost { slot, why } => Refusal::CaptureLost {
            name: name.into(),
            slot,
            why,
            way_out,
        }
        .into(),
        other => other,
    }
}

fn spec_of(record: &MigrationRecord) -> Result<MigrationSpec, EngineError> {
    Ok(MigrationSpec::parse(
        &record.spec,
        &format!("stored spec of {}", record.name),
    )?)
}

fn column_names(table: &crate::catalog::Table) -> Vec<String> {
    table.columns.iter().map(|c| c.name.clone()).collect()
}
