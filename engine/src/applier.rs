//! The change applier ([`Applier`]): one direction's change stream applied to its target,
//! written against the adapter's [`ChangeApplier`] and [`Cutover`] traits.
//!
//! Capture turns every committed change to the source into "key K changed" and re-syncs K from
//! the source of truth through the mapping, so applying is idempotent, order-insensitive and
//! batchable. Backfill walks the key range in chunks; the applier runs between chunks, never
//! during one, so a change that commits while a chunk is copied is re-synced after the chunk
//! landed and a delete can never be undone by a stale chunk (see [`crate::backfill`]).

use crate::adapter::{ChangeApplier, Cutover};
use crate::catalog::Dependent;
use crate::error::Refusal;
use crate::seam::{Continuity, Direction, Swap, SwapLock};
use crate::spec::MigrationSpec;
use crate::state::PhaseChange;
use crate::EngineError;
use cdc::{ChangeSource, Op, TableName, Value};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use tracing::{info_span, Instrument};

/// Applies one direction's captured changes to its target.
pub struct Applier<'a, A: ChangeApplier> {
    adapter: &'a A,
    stream: A::Stream,
    session: A::ApplierSession,
    dir: Direction,
    source: TableName,
    marker: TableName,
    migration: String,
    /// [`crate::verify::shape`] of `dir`: which stored verify ranges this applier marks.
    verify_shape: String,
    /// Transactions and distinct keys applied since open.
    pub txns_applied: u64,
    pub keys_applied: u64,
    /// How long a batch keeps taking what arrives after its first transaction (see
    /// [`Applier::set_pace`]).
    linger: Duration,
    /// While a backfill runs in this process: how far it has copied (see
    /// [`Applier::backfill_started`]).
    horizon: Option<Horizon>,
    /// Keys left to the backfill since open: changed beyond what it had copied.
    pub keys_left_to_backfill: u64,
}

/// How far the running backfill has copied, for a key of integer columns only: the last key
/// of its last checkpointed chunk (`None`: none yet), the highest key the target held when
/// this run's backfill started (`None`: none), and the backfill's end (the source's highest
/// key when it started: it copies no further). A change to a key beyond the first two and up
/// to the end needs no re-sync: the target has no row for it, and the chunk that copies that
/// key reads the source after the change committed. Past the end, the applier writes every
/// change itself.
struct Horizon {
    copied_through: Option<Vec<i128>>,
    held_at_start: Option<Vec<i128>>,
    end: Vec<i128>,
}

impl Horizon {
    /// Whether the backfill has yet to copy `key` (compared as the database orders a key of
    /// integer columns: column after column). A key that does not parse is never left.
    fn ahead(&self, key: &[String]) -> bool {
        let Some(key) = integer_key(key) else {
            return false;
        };
        let past = |bound: &Option<Vec<i128>>| bound.as_ref().is_none_or(|b| key > *b);
        past(&self.copied_through) && past(&self.held_at_start) && key <= self.end
    }
}

/// A key's fields as integers, `None` when one is not.
pub(crate) fn integer_key(key: &[String]) -> Option<Vec<i128>> {
    key.iter().map(|f| f.parse::<i128>().ok()).collect()
}

/// Whether a key column's type (PostgreSQL's `format_type`, MySQL's column type) is an
/// integer type, whose order is the order of its values.
pub(crate) fn integer_type(sql_type: &str) -> bool {
    let t = sql_type.trim().to_ascii_lowercase();
    let base = &t[..t.find(['(', ' ']).unwrap_or(t.len())];
    matches!(
        base,
        "smallint"
            | "integer"
            | "int"
            | "bigint"
            | "tinyint"
            | "mediumint"
            | "int2"
            | "int4"
            | "int8"
    )
}

/// A batch of coalesced changes.
#[derive(Default)]
struct Batch {
    keys: HashSet<Vec<String>>,
    /// Those of `keys` the source lost in the batch (deleted, or moved away by a key
    /// update): only they can have a target row to delete.
    gone: HashSet<Vec<String>>,
    /// Keys changed beyond what the running backfill has copied: its later chunks copy them,
    /// so they are only marked for verify, not re-synced.
    ahead: HashSet<Vec<String>>,
    /// The source transactions that named `keys`.
    txn_ids: Vec<u64>,
    truncate: bool,
    markers: Vec<i64>,
    last_position: Option<cdc::Position>,
    txns: u64,
    /// How long ago its first transaction had committed when the batch was complete.
    oldest: Duration,
}

impl Batch {
    /// Adds a changed key (`gone`: the source lost it), or leaves it to the backfill when it is
    /// ahead of `horizon`.
    fn add(&mut self, key: Vec<String>, gone: bool, horizon: Option<&Horizon>) {
        if horizon.is_some_and(|h| h.ahead(&key)) {
            self.ahead.insert(key);
            return;
        }
        if gone {
            self.gone.insert(key.clone());
        }
        self.keys.insert(key);
    }
}

impl<'a, A: ChangeApplier> Applier<'a, A> {
    /// Opens the change stream `slot` capturing `dir.from` (creating it only under
    /// [`Continuity::Start`]), skipping the engine's own writes, and the applier writing under
    /// `origin`, both at once.
    pub async fn open(
        adapter: &'a A,
        spec: &MigrationSpec,
        dir: Direction,
        slot: &str,
        origin: &str,
        continuity: Continuity,
    ) -> Result<Applier<'a, A>, EngineError> {
        let (stream, session) = tokio::try_join!(
            adapter.open_stream(spec, &dir.from, &dir.to, slot, continuity),
            adapter.open_applier(&dir, origin)
        )?;
        Ok(Applier {
            adapter,
            stream,
            session,
            source: TableName::from(&dir.from),
            marker: adapter.marker_table(),
            verify_shape: crate::verify::shape(&dir),
            dir,
            migration: spec.name.clone(),
            txns_applied: 0,
            keys_applied: 0,
            linger: BATCH_LIMITS.linger,
            horizon: None,
            keys_left_to_backfill: 0,
        })
    }

    /// The adapter this applier writes through.
    pub fn adapter(&self) -> &'a A {
        self.adapter
    }

    pub fn direction(&self) -> &Direction {
        &self.dir
    }

    /// Sets the impact budget's pace (0 to 1): below 1 a batch lingers longer for what
    /// arrives after its first transaction (up to [`SLOWEST_LINGER`] more), so the applier
    /// commits less often and writes each key changed meanwhile once.
    pub fn set_pace(&mut self, pace: f64) {
        let slower = SLOWEST_LINGER.mul_f64((1.0 - pace).clamp(0.0, 1.0));
        self.linger = BATCH_LIMITS.linger + slower;
    }

    /// Tells the applier that a backfill runs alongside it from the checkpoint `last_key`
    /// (the last key of its last chunk whose checkpoint is saved; `None`: none yet), while the
    /// target's highest key is `target_last` (`None`: empty), up to `end`, the source's highest
    /// key when the backfill started (`None`: the source was empty, or its key is not of
    /// integer columns). Until [`Applier::backfill_finished`], a change to a key beyond the
    /// first two and up to `end` is not re-synced: the backfill copies that key later, in a
    /// chunk that reads the source after the change committed (the applier runs between
    /// chunks, never during one), and the target has no row of it that a chunk would keep.
    /// `target_last` covers a chunk that committed before a crash kept its checkpoint from
    /// being saved: its rows are kept when the range is copied again, so changes to them must
    /// still be re-synced. Keys past `end` are the applier's: the backfill stops there, so an
    /// application appending faster than the backfill copies cannot keep it from ending. This
    /// halves the applier's work during a backfill under uniformly spread writes.
    ///
    /// Only for keys of integer columns, whose order splice knows is the database's; for
    /// others every key is re-synced.
    pub fn backfill_started(
        &mut self,
        last_key: Option<&[String]>,
        target_last: Option<&[String]>,
        end: Option<&[String]>,
    ) {
        self.horizon = None;
        if !self.dir.key.iter().all(|k| integer_type(&k.sql_type)) {
            return;
        }
        // A key that does not parse after all: every key is re-synced.
        let parsed = |k: Option<&[String]>| match k {
            None => Some(None),
            Some(k) => integer_key(k).map(Some),
        };
        if let (Some(copied_through), Some(held_at_start), Some(Some(end))) =
            (parsed(last_key), parsed(target_last), parsed(end))
        {
            self.horizon = Some(Horizon {
                copied_through,
                held_at_start,
                end,
            });
        }
    }

    /// The backfill saved the checkpoint of a chunk that ends at `last_key`.
    pub fn backfill_copied_through(&mut self, last_key: &[String]) {
        let Some(h) = &mut self.horizon else { return };
        match integer_key(last_key) {
            Some(k) => h.copied_through = Some(k),
            None => self.horizon = None,
        }
    }

    /// The backfill is done (or stopped): every change is re-synced again.
    pub fn backfill_finished(&mut self) {
        self.horizon = None;
    }

    /// Bytes and time behind the source.
    pub async fn lag(&mut self) -> Result<cdc::Lag, EngineError> {
        Ok(self.stream.lag().await?)
    }

    /// Collects what arrives within `wait` (then what arrives within the batch window of the
    /// first transaction, up to a batch limit), through `cdc`'s one batching loop, and
    /// coalesces it into keys. With `until_marker`, the batch ends as soon as that drain marker
    /// (or a later one) arrived: a drain waits for its marker, not for more to batch.
    async fn collect(
        &mut self,
        wait: Duration,
        until_marker: Option<i64>,
    ) -> Result<Batch, EngineError> {
        let limits = cdc::BatchLimits {
            linger: self.linger,
            ..BATCH_LIMITS
        };
        let (marker, migration) = (&self.marker, self.migration.as_str());
        let ends = |txn: &cdc::Transaction| {
            until_marker.is_some_and(|id| {
                txn.changes
                    .iter()
                    .any(|c| marker_id(c, marker, migration).is_some_and(|m| m >= id))
            })
        };
        let gathered = cdc::next_batch_until(&mut self.stream, wait, &limits, ends)
            .await
            .map_err(cdc::CdcError::from)?;
        let mut batch = Batch::default();
        for txn in &gathered.transactions {
            for change in &txn.changes {
                if change.table == self.marker {
                    if let Some(id) = marker_id(change, &self.marker, &self.migration) {
                        batch.markers.push(id);
                    }
                    continue;
                }
                if change.table != self.source {
                    continue;
                }
                match change.op {
                    Op::Truncate => batch.truncate = true,
                    op => {
                        let key = self.key_of(&change.key)?;
                        batch.add(key, op == Op::Delete, self.horizon.as_ref());
                        if let Some(old) = &change.old_key {
                            batch.add(self.key_of(old)?, true, self.horizon.as_ref());
                        }
                    }
                }
                if batch.txn_ids.last() != Some(&txn.source_id) {
                    batch.txn_ids.push(txn.source_id);
                }
            }
            batch.txns += 1;
        }
        batch.last_position = gathered.last_position().cloned();
        batch.oldest = gathered
            .transactions
            .first()
            .map(|t| t.committed_at.until(cdc::Timestamp::now()))
            .unwrap_or_default();
        Ok(batch)
    }

    /// Our key columns, as text, from a captured key.
    fn key_of(&self, key: &cdc::Key) -> Result<Vec<String>, EngineError> {
        self.dir
            .key
            .iter()
            .map(|k| {
                let v = key.iter().find(|(c, _)| *c == k.name).map(|(_, v)| v);
                match v {
                    Some(Value::Int(i)) => Ok(i.to_string()),
                    Some(Value::Bool(b)) => Ok(b.to_string()),
                    Some(Value::Text(t)) => Ok(t.clone()),
                    Some(Value::Null) | None => Err(EngineError::KeyNotCaptured {
                        table: self.source.to_string(),
                        column: k.name.clone(),
                    }),
                }
            })
            .collect()
    }

    /// Keys of the migrated table capture saw written since open: applied, or left to the
    /// backfill (the impact budget's sign that the application writes the table).
    pub fn keys_written(&self) -> u64 {
        self.keys_applied + self.keys_left_to_backfill
    }

    /// Applies a batch. Under [`Acknowledge::Now`] it runs in a transaction of the applier's
    /// own that is committed, then acknowledged; under [`Acknowledge::AfterSwap`] it writes
    /// inside the locked swap, and the caller acknowledges once the swap committed.
    async fn apply(&mut self, batch: Batch, ack: Acknowledge) -> Result<(), EngineError> {
        self.txns_applied += batch.txns;
        let n_keys = batch.keys.len();
        let started = Instant::now();
        let (txns, oldest) = (batch.txns, batch.oldest);
        self.keys_left_to_backfill += batch.ahead.len() as u64;
        // A batch whose keys are all ahead of the backfill still goes to the adapter: the
        // next chunk must see its transactions, and a commit can reach the change stream a
        // moment before other sessions see it (PostgreSQL waits for them).
        if batch.truncate || n_keys > 0 || !batch.ahead.is_empty() {
            self.mark_for_verify(&batch).await?;
            self.adapter
                .apply(
                    &mut self.session,
                    batch.keys,
                    &batch.gone,
                    &batch.txn_ids,
                    batch.truncate,
                )
                .await?;
            self.keys_applied += n_keys as u64;
        }
        if ack == Acknowledge::Now {
            if let Some(pos) = &batch.last_position {
                self.stream.ack(pos)?;
            }
        }
        if txns > 0 {
            tracing::debug!(
                txns,
                keys = n_keys,
                oldest_ms = oldest.as_millis() as u64,
                apply_ms = started.elapsed().as_millis() as u64,
                "applied a batch"
            );
        }
        Ok(())
    }

    /// Incremental verify's hook: marks the stored verify ranges that hold the batch's keys
    /// as changed, before the batch is applied.
    ///
    /// Why a change can never be applied without its mark, whatever crashes when:
    /// - the mark commits before the apply starts (outside a swap the mark is a statement of its
    ///   own; inside one it is part of the swap's transaction, which commits or not as a whole);
    /// - the batch is acknowledged to the change stream only after the apply committed, so a
    ///   crash anywhere before the acknowledgement leaves the changes in the stream, and the
    ///   next run delivers them again, marks again and applies again.
    ///
    /// So a crash between mark and apply costs at most one range read more (a mark with no
    /// change behind it), and a crash between apply and acknowledgement repeats both. The
    /// mark costs one statement per batch, not per key; it finds no rows (and marks nothing)
    /// while no verify pass is stored.
    async fn mark_for_verify(&mut self, batch: &Batch) -> Result<(), EngineError> {
        // Keys left to the backfill are marked too: marks are only ever "read again".
        let owned;
        let keys = if batch.ahead.is_empty() {
            &batch.keys
        } else {
            owned = batch.keys.union(&batch.ahead).cloned().collect();
            &owned
        };
        self.adapter
            .mark_changed(
                &mut self.session,
                &self.migration,
                &self.verify_shape,
                keys,
                batch.truncate,
            )
            .await
    }

    /// Applies whatever arrives within `wait`. Returns the number of transactions applied.
    pub async fn apply_for(&mut self, wait: Duration) -> Result<u64, EngineError> {
        let batch = self.collect(wait, None).await?;
        let n = batch.txns;
        self.apply(batch, Acknowledge::Now).await?;
        Ok(n)
    }

    /// Applies everything committed to the source before this call: writes a marker, then
    /// applies until the marker arrives.
    pub async fn drain(&mut self) -> Result<(), EngineError> {
        self.drain_until_marker(Acknowledge::Now, None)
            .await
            .map(|_| ())
    }

    /// Writes a marker and applies until it arrives, giving up after `budget` when one is set;
    /// returns the last position applied.
    async fn drain_until_marker(
        &mut self,
        ack: Acknowledge,
        budget: Option<Duration>,
    ) -> Result<Option<cdc::Position>, EngineError> {
        let id = self
            .adapter
            .write_marker(&mut self.session, &self.migration)
            .await?;
        let deadline = budget.map(|d| (Instant::now() + d, d));
        let span = info_span!("capture.drain", marker = id);
        async {
            let mut last = None;
            loop {
                if let Some((at, budget)) = deadline {
                    if Instant::now() > at {
                        return Err(Refusal::DrainUnderLock {
                            budget: humantime::format_duration(budget).to_string(),
                        }
                        .into());
                    }
                }
                let batch = self.collect(Duration::from_millis(200), Some(id)).await?;
                let seen = batch.markers.iter().any(|m| *m >= id);
                if batch.last_position.is_some() {
                    last = batch.last_position.clone();
                }
                self.apply(batch, ack).await?;
                if seen {
                    return Ok(last);
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Applies everything committed to the source before this call, like [`drain`], and
    /// leaves the change stream so that the next open starts reading near here instead of
    /// decoding again what was already applied (after a backfill, its whole WAL).
    ///
    /// [`drain`]: Applier::drain
    pub async fn drain_for_reopen(&mut self) -> Result<(), EngineError> {
        self.stream.mark_restart_point().await?;
        self.drain().await
    }

    /// Stops cleanly; the change stream stays for the next run, and starts reading near where
    /// this one stopped.
    pub async fn close(mut self) -> Result<(), EngineError> {
        if self.stream.mark_restart_point().await? {
            self.drain().await?;
        }
        Ok(self.stream.close().await?)
    }
}

/// The id of the drain marker of `migration` that `change` inserts into the `marker` table;
/// `None` for any other change.
fn marker_id(change: &cdc::Change, marker: &TableName, migration: &str) -> Option<i64> {
    if change.table != *marker || change.op != Op::Insert {
        return None;
    }
    let mut ours = false;
    let mut id = None;
    for (col, v) in &change.key {
        match (col.as_str(), v) {
            ("migration", Value::Text(m)) => ours = m == migration,
            ("id", Value::Int(i)) => id = Some(*i),
            ("id", Value::Text(t)) => id = t.parse().ok(),
            _ => {}
        }
    }
    id.filter(|_| ours)
}

/// One applied batch: up to 2,000 transactions or 5,000 changes, taking what arrives within
/// 10 ms of the first (at full pace): one applier commit for every few of the application's,
/// at a few milliseconds of lag.
const BATCH_LIMITS: cdc::BatchLimits = cdc::BatchLimits {
    max_txns: 2000,
    max_changes: 5000,
    linger: Duration::from_millis(10),
};

/// How much longer a batch lingers at the impact budget's slowest pace: bounded so that change
/// lag stays well under 100 ms even then. Under a saturating application the budget sits at
/// its slowest pace, and the linger is most of the lag: 30 ms more (the earlier bound) put
/// change lag p99 at 72–103 ms, while the application's TPS measured the same with 0, 10 or
/// 30 ms (within its run-to-run noise); so the bound is 10 ms.
pub const SLOWEST_LINGER: Duration = Duration::from_millis(10);

/// When an applied batch is acknowledged to the change stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Acknowledge {
    /// Once its own transaction committed.
    Now,
    /// Once the swap it was written into committed (the caller acknowledges).
    AfterSwap,
}

/// What one swap did.
#[derive(Debug, Clone)]
pub struct Swapped {
    /// How long the tables were locked.
    pub lock_ms: f64,
    /// What was carried over to the incoming table.
    pub carried_over: Vec<String>,
}

/// How long the backlog left at the lock may take to apply under it.
const DRAIN_UNDER_LOCK: Duration = Duration::from_secs(5);
/// How long the server lets the swap transaction wait on this process (a statement, or idle
/// between statements) before it ends the transaction itself: a runner frozen while holding
/// the lock (SIGSTOP, a paused VM, a dropped tunnel) blocks the table for at most this long.
pub const HOLD_BUDGET: Duration = Duration::from_secs(6);

impl<A: Cutover> Applier<'_, A> {
    /// Validates, before the first lock attempt, what the incoming table holds `NOT VALID`
    /// that the table it replaces holds valid ([`Cutover::validate_incoming`]).
    pub async fn validate_incoming(&mut self, swap: &Swap) -> Result<Vec<String>, EngineError> {
        self.adapter
            .validate_incoming(&mut self.session, swap)
            .await
    }

    /// One cutover attempt on the applier's session (its writes carry the engine's marks, so
    /// the other direction's capture skips them): lock both tables, drain capture inside the
    /// lock, swap and carry `dependents` over, record `change` (with the lock time so far) in
    /// the same transaction, commit, acknowledge. `Err(holders)` when the lock timed out (who held
    /// the tables).
    pub async fn swap(
        &mut self,
        spec: &MigrationSpec,
        swap: &Swap,
        dependents: &[Dependent],
        incoming_columns: &[String],
        lock: &A::Lock,
        change: &PhaseChange,
    ) -> Result<Result<Swapped, Vec<String>>, EngineError> {
        if let SwapLock::TimedOut { holders } = self
            .adapter
            .lock_for_swap(&mut self.session, spec, swap, HOLD_BUDGET)
            .await?
        {
            return Ok(Err(holders));
        }
        let locked_at = Instant::now();
        crate::fault::point("swap.locked");
        let ack = match self
            .drain_until_marker(Acknowledge::AfterSwap, Some(DRAIN_UNDER_LOCK))
            .await
        {
            Ok(ack) => ack,
            Err(e) => {
                self.adapter.abort_swap(&mut self.session).await;
                return Err(e);
            }
        };
        crate::fault::point("swap.drained");
        let mut change = change.clone();
        if let Some(figures) = change.figures.as_object_mut() {
            let so_far = locked_at.elapsed().as_secs_f64() * 1000.0;
            figures.insert("lock_ms".into(), serde_json::json!(so_far));
        }
        let carried_over = match self
            .adapter
            .finish_swap(
                &mut self.session,
                swap,
                dependents,
                incoming_columns,
                lock,
                &change,
            )
            .await?
        {
            Ok(carried) => carried,
            // Nothing swapped; what was drained is applied (MySQL commits it) and is
            // acknowledged after a later attempt.
            Err(holders) => return Ok(Err(holders)),
        };
        let lock_ms = locked_at.elapsed().as_secs_f64() * 1000.0;
        crate::fault::point("swap.committed");
        if let Some(pos) = ack {
            self.stream.ack(&pos)?;
        }
        Ok(Ok(Swapped {
            lock_ms,
            carried_over,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(fields: &[&str]) -> Vec<String> {
        fields.iter().map(|f| f.to_string()).collect()
    }

    #[test]
    fn a_key_is_ahead_of_the_backfill_only_past_its_last_copied_key_in_column_order() {
        let h = Horizon {
            copied_through: integer_key(&key(&["5", "20"])),
            held_at_start: None,
            end: vec![i128::MAX],
        };
        assert!(!h.ahead(&key(&["5", "20"])), "the last copied key itself");
        assert!(!h.ahead(&key(&["5", "3"])));
        assert!(!h.ahead(&key(&["-7", "99"])));
        assert!(h.ahead(&key(&["5", "21"])));
        assert!(h.ahead(&key(&["6", "0"])), "numeric order, not text order");
        assert!(
            !h.ahead(&key(&["5", "x"])),
            "a key that does not parse is re-synced"
        );
        let none_yet = Horizon {
            copied_through: None,
            held_at_start: None,
            end: vec![i128::MAX],
        };
        assert!(none_yet.ahead(&key(&["-1", "0"])));
        let unsigned = Horizon {
            copied_through: integer_key(&key(&["18446744073709551614"])),
            held_at_start: None,
            end: vec![i128::MAX],
        };
        assert!(unsigned.ahead(&key(&["18446744073709551615"])));
        // Rows a chunk left past its checkpoint (a crash before it was saved) are not ahead.
        let resumed = Horizon {
            copied_through: integer_key(&key(&["1000"])),
            held_at_start: integer_key(&key(&["3000"])),
            end: vec![5000],
        };
        assert!(!resumed.ahead(&key(&["2500"])));
        assert!(resumed.ahead(&key(&["3001"])));
        // Past the backfill's end the applier writes every change: the backfill stops there.
        assert!(resumed.ahead(&key(&["5000"])));
        assert!(!resumed.ahead(&key(&["5001"])));
    }

    #[test]
    fn only_integer_key_types_of_either_database_count_as_ordered_by_value() {
        for t in [
            "bigint",
            "integer",
            "smallint",
            "int(11)",
            "bigint(20) unsigned",
            "INT",
        ] {
            assert!(integer_type(t), "{t}");
        }
        for t in [
            "text",
            "uuid",
            "numeric(12,2)",
            "varchar(32)",
            "character(3)",
            "interval",
        ] {
            assert!(!integer_type(t), "{t}");
        }
    }
}
