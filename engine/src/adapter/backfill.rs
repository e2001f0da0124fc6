//! [`BackfillSource`]: what the throttled backfill reads and writes.

use super::StateStore;
use crate::catalog::Table;
use crate::seam::{Direction, Fill, KeyColumn, Load, LockHolder};
use crate::spec::QualifiedName;
use crate::EngineError;
use std::future::Future;

pub trait BackfillSource: StateStore {
    /// The source's row count, estimated where the database keeps an estimate.
    fn estimate_rows(
        &self,
        conn: &Self::Conn,
        table: &Table,
    ) -> impl Future<Output = Result<i64, EngineError>> + Send;
    /// The key `offset` rows after `after` (from the first key when `None`) in `dir.from`, in
    /// key order: the upper bound of a chunk. `None` past the last key.
    fn chunk_upper(
        &self,
        conn: &Self::Conn,
        dir: &Direction,
        after: Option<&[String]>,
        offset: i64,
    ) -> impl Future<Output = Result<Option<Vec<String>>, EngineError>> + Send;
    /// The highest key `table` holds (its `key` columns, in key order), as text; `None` when
    /// it is empty. A backfill asks it of the target (a chunk that committed before a crash
    /// kept its checkpoint from being saved leaves rows past the checkpoint) and of the source
    /// (its end).
    fn last_key(
        &self,
        conn: &Self::Conn,
        table: &QualifiedName,
        key: &[KeyColumn],
    ) -> impl Future<Output = Result<Option<Vec<String>>, EngineError>> + Send;
    /// Copies the mapped rows of the key range `(lower, upper]` (an absent bound is open) in
    /// one statement; returns the rows written. Fenced like a state write, and in a way that a
    /// runner taking over waits for a chunk in flight: once it holds the migration, a stale
    /// runner's chunk copies nothing (it could otherwise write a row back that the new
    /// runner's applier has deleted meanwhile).
    fn copy_range(
        &self,
        conn: &Self::Conn,
        runner: &Self::Lock,
        dir: &Direction,
        lower: Option<&[String]>,
        upper: Option<&[String]>,
        fill: Fill,
    ) -> impl Future<Output = Result<u64, EngineError>> + Send;
    /// Refreshes the planner statistics of a table backfill just filled, so verify's range
    /// reads and, after cutover, the application's queries are planned for its real size.
    fn refresh_statistics(
        &self,
        conn: &Self::Conn,
        table: &QualifiedName,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;
    /// Replica lag and lock waiters on `table`, for backfill's throttle. `replicas` are the
    /// file's `[throttle] replicas` (`host[:port]`), asked directly where the database's
    /// primary cannot see its replicas' lag.
    fn server_load(
        &self,
        conn: &Self::Conn,
        table: &Table,
        replicas: &[String],
    ) -> impl Future<Output = Result<Load, EngineError>> + Send;
    /// The server process id of `conn`'s session, where the database has one (default: none,
    /// and lock waits are then not watched).
    fn session_pid(
        &self,
        _conn: &Self::Conn,
    ) -> impl Future<Output = Result<Option<i32>, EngineError>> + Send {
        async { Ok(None) }
    }
    /// The session whose lock the session `pid` waits for, if it waits (asked on another
    /// session `conn`).
    fn lock_blocker(
        &self,
        _conn: &Self::Conn,
        _pid: i32,
    ) -> impl Future<Output = Result<Option<LockHolder>, EngineError>> + Send {
        async { Ok(None) }
    }
}
