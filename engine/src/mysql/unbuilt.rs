//! The concerns of the MySQL adapter not built yet. Each method refuses with
//! [`EngineError::NotBuilt`] before it changes anything, so a command that reaches one says
//! plainly that it does not work on MySQL/MariaDB yet. What is real here: the binlog
//! preconditions `splice plan` reports ([`ChangeApplier::capture_problems`]).

use super::{MySql, Session};
use crate::adapter::{BackfillSource, ChangeApplier, Cutover, SchemaChanges, VerifySource};
use crate::catalog::{Dependent, Table};
use crate::seam::{Continuity, Direction, Fill, Load, Selection, Side, Swap, SwapLock};
use crate::spec::{MigrationSpec, QualifiedName};
use crate::state::{DeferredIndex, PhaseChange, QuarantineEntry};
use crate::EngineError;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use std::collections::HashSet;

const DATABASE: &str = "MySQL/MariaDB";

fn not_built<T>(what: &str) -> Result<T, EngineError> {
    Err(EngineError::NotBuilt {
        what: what.into(),
        database: DATABASE,
    })
}

impl SchemaChanges for MySql {
    async fn create_shadow(
        &self,
        _db: &Session,
        _spec: &MigrationSpec,
        _ddl: &[String],
        _lock: &Self::Lock,
        _change: &PhaseChange,
    ) -> Result<Vec<DeferredIndex>, EngineError> {
        not_built("`splice expand` (creating the shadow table)")
    }

    async fn build_index(
        &self,
        _db: &Session,
        _spec: &MigrationSpec,
        _index: &DeferredIndex,
    ) -> Result<bool, EngineError> {
        not_built("building a deferred index")
    }

    async fn drop_shadow(&self, _db: &Session, _spec: &MigrationSpec) -> Result<(), EngineError> {
        not_built("`splice rollback` (dropping the shadow table)")
    }

    async fn quarantine(
        &self,
        _db: &Session,
        _spec: &MigrationSpec,
        _lock: &Self::Lock,
        _entry: &QuarantineEntry,
        _change: &PhaseChange,
    ) -> Result<(), EngineError> {
        not_built("`splice contract`")
    }

    async fn restore_from_quarantine(
        &self,
        _db: &Session,
        _spec: &MigrationSpec,
        _lock: &Self::Lock,
    ) -> Result<(), EngineError> {
        not_built("`splice rollback` after contract")
    }

    async fn drop_quarantined(
        &self,
        _db: &Session,
        _spec: &MigrationSpec,
        _lock: &Self::Lock,
        _change: &PhaseChange,
    ) -> Result<(), EngineError> {
        not_built("`splice drop`")
    }
}

impl BackfillSource for MySql {
    async fn estimate_rows(&self, _db: &Session, _table: &Table) -> Result<i64, EngineError> {
        not_built("`splice sync` (backfill)")
    }

    async fn chunk_upper(
        &self,
        _db: &Session,
        _dir: &Direction,
        _after: Option<&[String]>,
        _offset: i64,
    ) -> Result<Option<Vec<String>>, EngineError> {
        not_built("`splice sync` (backfill)")
    }

    async fn copy_range(
        &self,
        _db: &Session,
        _runner: &Self::Lock,
        _dir: &Direction,
        _lower: Option<&[String]>,
        _upper: Option<&[String]>,
        _fill: Fill,
    ) -> Result<u64, EngineError> {
        not_built("`splice sync` (backfill)")
    }

    async fn refresh_statistics(
        &self,
        _db: &Session,
        _table: &QualifiedName,
    ) -> Result<(), EngineError> {
        not_built("`splice sync` (backfill)")
    }

    async fn server_load(&self, _db: &Session, _table: &Table) -> Result<Load, EngineError> {
        not_built("`splice sync` (backfill throttle)")
    }
}

impl ChangeApplier for MySql {
    type Stream = cdc::MySqlChangeStream;
    type ApplierSession = Session;

    async fn open_capture(
        &self,
        _spec: &MigrationSpec,
        _dir: &Direction,
        _slot: &str,
        _origin: &str,
        _continuity: Continuity,
    ) -> Result<(cdc::MySqlChangeStream, Session), EngineError> {
        not_built("`splice sync` (the change applier)")
    }

    fn marker_table(&self) -> cdc::TableName {
        cdc::TableName::new(super::STATE_DATABASE, "sync_marker")
    }

    async fn write_marker(
        &self,
        _applier: &mut Session,
        _migration: &str,
    ) -> Result<i64, EngineError> {
        not_built("`splice sync` (the change applier)")
    }

    async fn apply(
        &self,
        _applier: &mut Session,
        _keys: HashSet<Vec<String>>,
        _txns: &[u64],
        _truncate: bool,
    ) -> Result<(), EngineError> {
        not_built("`splice sync` (the change applier)")
    }

    async fn drop_capture(&self, _slot: &str) -> Result<(), EngineError> {
        not_built("removing a change stream")
    }

    async fn forget_appliers(
        &self,
        _db: &Session,
        _spec: &MigrationSpec,
    ) -> Result<(), EngineError> {
        not_built("removing the applier markers")
    }

    /// The binlog preconditions (log_bin, ROW format, FULL images, server_id, grants,
    /// retention), each with its fix, as the binlog source checks them.
    async fn capture_problems(
        &self,
        _db: &Session,
        _slots: &[String],
    ) -> Result<Vec<String>, EngineError> {
        match cdc::binlog_preconditions(self.url()).await {
            Ok(_) => Ok(Vec::new()),
            Err(e) if e.is_precondition() => Ok(vec![e.to_string()]),
            Err(e) => Err(e.into()),
        }
    }

    /// No MySQL migration opens a change stream yet (sync is not built): no lag to report.
    async fn capture_lag_bytes(
        &self,
        _db: &Session,
        _slot: &str,
    ) -> Result<Option<i64>, EngineError> {
        Ok(None)
    }
}

impl VerifySource for MySql {
    async fn sample_bounds(
        &self,
        _db: &Session,
        _dir: &Direction,
        _range_rows: i64,
    ) -> Result<Vec<Vec<String>>, EngineError> {
        not_built("`splice verify`")
    }

    async fn read_canonical<'a>(
        &'a self,
        _db: &'a Session,
        _dir: &Direction,
        _side: Side,
        _rows: Selection<'_>,
    ) -> Result<BoxStream<'a, Result<Bytes, EngineError>>, EngineError> {
        not_built("`splice verify`")
    }
}

impl Cutover for MySql {
    async fn lock_for_swap(
        &self,
        _applier: &mut Session,
        _spec: &MigrationSpec,
        _swap: &Swap,
        _hold_budget: std::time::Duration,
    ) -> Result<SwapLock, EngineError> {
        not_built("`splice cutover`")
    }

    async fn finish_swap(
        &self,
        _applier: &mut Session,
        _swap: &Swap,
        _dependents: &[Dependent],
        _incoming_columns: &[String],
        _lock: &Self::Lock,
        _change: &PhaseChange,
    ) -> Result<Vec<String>, EngineError> {
        not_built("`splice cutover`")
    }

    async fn validate_incoming(
        &self,
        _applier: &mut Session,
        _swap: &Swap,
    ) -> Result<Vec<String>, EngineError> {
        not_built("`splice cutover`")
    }

    async fn abort_swap(&self, _applier: &mut Session) {}

    async fn settle_carried_over(&self, _db: &Session, _dependents: &[Dependent]) {}
}
