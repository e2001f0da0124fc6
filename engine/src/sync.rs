//! Sync: the change applier ([`Capture`]) and the throttled backfill ([`backfill`]), written
//! against the [`Adapter`].
//!
//! Capture turns every committed change to the source into "key K changed" and re-syncs K from
//! the source of truth through the mapping, so applying is idempotent, order-insensitive and
//! batchable. Backfill walks the key range in chunks; the applier runs between chunks, never
//! during one, so a change that commits while a chunk is copied is re-synced after the chunk
//! landed and a delete can never be undone by a stale chunk (see
//! `postgres::sql::backfill_range`).

use crate::adapter::{Adapter, Swap};
use crate::catalog::{Dependent, Table};
use crate::plan::{Direction, Fill};
use crate::spec::MigrationSpec;
use crate::EngineError;
use cdc::{ChangeSource, Op, TableName, Value};
use std::collections::HashSet;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info_span, Instrument};

/// Applies one direction's captured changes to its target.
pub struct Capture<'a, A: Adapter> {
    adapter: &'a A,
    stream: A::Stream,
    applier: A::Applier,
    dir: Direction,
    source: TableName,
    marker: TableName,
    migration: String,
    /// Transactions and distinct keys applied since open.
    pub txns_applied: u64,
    pub keys_applied: u64,
}

fn cdc_table(q: &crate::QualifiedName) -> TableName {
    TableName::new(q.schema.clone(), q.name.clone())
}

/// A batch of coalesced changes.
#[derive(Default)]
struct Batch {
    keys: HashSet<Vec<String>>,
    /// The source transactions that named `keys`.
    txn_ids: Vec<u64>,
    truncate: bool,
    markers: Vec<i64>,
    last_position: Option<cdc::Position>,
    txns: u64,
}

impl<'a, A: Adapter> Capture<'a, A> {
    /// Opens (creating if needed) the change stream `slot` capturing `dir.from`, skipping the
    /// engine's own writes, and the applier writing under `origin`.
    pub async fn open(
        adapter: &'a A,
        spec: &MigrationSpec,
        dir: Direction,
        slot: &str,
        origin: &str,
    ) -> Result<Capture<'a, A>, EngineError> {
        let (stream, applier) = adapter.open_capture(spec, &dir, slot, origin).await?;
        Ok(Capture {
            adapter,
            stream,
            applier,
            source: cdc_table(&dir.from),
            marker: adapter.marker_table(),
            dir,
            migration: spec.name.clone(),
            txns_applied: 0,
            keys_applied: 0,
        })
    }

    pub fn direction(&self) -> &Direction {
        &self.dir
    }

    /// Bytes and time behind the source.
    pub async fn lag(&mut self) -> Result<cdc::Lag, EngineError> {
        Ok(self.stream.lag().await?)
    }

    /// Collects what arrives within `wait` (then whatever is immediately available, up to a
    /// batch limit).
    async fn collect(&mut self, wait: Duration) -> Result<Batch, EngineError> {
        let mut batch = Batch::default();
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let budget = if batch.txns == 0 {
                left
            } else {
                Duration::from_millis(2)
            };
            let next = match tokio::time::timeout(budget, self.stream.next_transaction()).await {
                Ok(r) => r?,
                Err(_) => break,
            };
            let Some(txn) = next else { break };
            for change in &txn.changes {
                if change.table == self.marker {
                    if change.op == Op::Insert {
                        if let Some(id) = self.marker_id(&change.key) {
                            batch.markers.push(id);
                        }
                    }
                    continue;
                }
                if change.table != self.source {
                    continue;
                }
                match change.op {
                    Op::Truncate => batch.truncate = true,
                    _ => {
                        batch.keys.insert(self.key_of(&change.key)?);
                        if let Some(old) = &change.old_key {
                            batch.keys.insert(self.key_of(old)?);
                        }
                    }
                }
                if batch.txn_ids.last() != Some(&txn.source_id) {
                    batch.txn_ids.push(txn.source_id);
                }
            }
            batch.last_position = Some(txn.position.clone());
            batch.txns += 1;
            if batch.keys.len() >= 5000 || batch.txns >= 2000 {
                break;
            }
        }
        Ok(batch)
    }
    fn marker_id(&self, key: &cdc::Key) -> Option<i64> {
        let mut migration = None;
        let mut id = None;
        for (col, v) in key {
            match (col.as_str(), v) {
                ("migration", Value::Text(m)) => migration = Some(m.clone()),
                ("id", Value::Int(i)) => id = Some(*i),
                ("id", Value::Text(t)) => id = t.parse().ok(),
                _ => {}
            }
        }
        (migration.as_deref() == Some(self.migration.as_str()))
            .then_some(id)
            .flatten()
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
                    Some(Value::Null) | None => Err(EngineError::Plan(format!(
                        "captured changes of {} do not carry key column {}; make the table's \
                         replica identity cover the migration key (ALTER TABLE … REPLICA \
                         IDENTITY USING INDEX <unique index on the key>)",
                        self.source, k.name
                    ))),
                }
            })
            .collect()
    }

    /// Applies a batch: inside the locked swap when `locked` (the caller acknowledges once the
    /// swap committed), otherwise in a transaction of the applier's own that is committed and
    /// then acknowledged.
    async fn apply(&mut self, batch: Batch, locked: bool) -> Result<(), EngineError> {
        self.txns_applied += batch.txns;
        let n_keys = batch.keys.len();
        if batch.truncate || n_keys > 0 {
            self.adapter
                .apply(
                    &mut self.applier,
                    batch.keys,
                    &batch.txn_ids,
                    batch.truncate,
                )
                .await?;
            self.keys_applied += n_keys as u64;
        }
        if !locked {
            if let Some(pos) = &batch.last_position {
                self.stream.ack(pos)?;
            }
        }
        Ok(())
    }

    /// Applies whatever arrives within `wait`. Returns the number of transactions applied.
    pub async fn apply_for(&mut self, wait: Duration) -> Result<u64, EngineError> {
        let batch = self.collect(wait).await?;
        let n = batch.txns;
        self.apply(batch, false).await?;
        Ok(n)
    }

    /// Applies everything committed to the source before this call: writes a marker, then
    /// applies until the marker arrives.
    pub async fn drain(&mut self) -> Result<(), EngineError> {
        self.drain_through(false, None).await.map(|_| ())
    }

    async fn drain_through(
        &mut self,
        locked: bool,
        give_up: Option<Duration>,
    ) -> Result<Option<cdc::Position>, EngineError> {
        let id = self
            .adapter
            .write_marker(&mut self.applier, &self.migration)
            .await?;
        let deadline = give_up.map(|d| (Instant::now() + d, d));
        let span = info_span!("capture.drain", marker = id);
        async {
            let mut last = None;
            loop {
                if let Some((at, budget)) = deadline {
                    if Instant::now() > at {
                        return Err(EngineError::Refused(format!(
                            "capture did not drain within {} while the table was locked; \
                             nothing was swapped — run sync until it has caught up, then cut \
                             over again",
                            humantime::format_duration(budget)
                        )));
                    }
                }
                let batch = self.collect(Duration::from_millis(200)).await?;
                let seen = batch.markers.iter().any(|m| *m >= id);
                if batch.last_position.is_some() {
                    last = batch.last_position.clone();
                }
                self.apply(batch, locked).await?;
                if seen {
                    return Ok(last);
                }
            }
        }
        .instrument(span)
        .await
    }

    /// One cutover attempt on the applier's session (its writes carry the engine's marks, so
    /// the other direction's capture skips them): lock both tables, drain capture inside the
    /// lock, swap and carry `dependents` over, commit, acknowledge. Returns the lock time in
    /// ms and what was carried over; `None` when the lock timed out.
    pub async fn swap(
        &mut self,
        spec: &MigrationSpec,
        swap: &Swap,
        dependents: &[Dependent],
        incoming_columns: &[String],
    ) -> Result<Option<(f64, Vec<String>)>, EngineError> {
        if !self
            .adapter
            .lock_for_swap(&mut self.applier, spec, swap)
            .await?
        {
            return Ok(None);
        }
        let locked_at = Instant::now();
        let ack = match self.drain_through(true, Some(Duration::from_secs(5))).await {
            Ok(ack) => ack,
            Err(e) => {
                self.adapter.abort_swap(&mut self.applier).await;
                return Err(e);
            }
        };
        let carried = self
            .adapter
            .finish_swap(&mut self.applier, swap, dependents, incoming_columns)
            .await?;
        let lock_ms = locked_at.elapsed().as_secs_f64() * 1000.0;
        if let Some(pos) = ack {
            self.stream.ack(&pos)?;
        }
        Ok(Some((lock_ms, carried)))
    }

    /// Applies everything committed to the source before this call, like [`drain`], and
    /// leaves the change stream so that the next open starts reading near here instead of
    /// decoding again what was already applied (after a backfill, its whole WAL).
    ///
    /// [`drain`]: Capture::drain
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

/// Run-time control of a running sync: the rate limit can change while it runs; stop asks it
/// to finish its current chunk, checkpoint and return.
#[derive(Clone, Default)]
pub struct Control {
    rows_per_second: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
}

impl Control {
    pub fn new(rows_per_second: Option<u32>) -> Control {
        let c = Control::default();
        c.set_rate(rows_per_second);
        c
    }

    /// `None` = unlimited.
    pub fn set_rate(&self, rows_per_second: Option<u32>) {
        self.rows_per_second
            .store(rows_per_second.unwrap_or(0), Ordering::Relaxed);
    }

    pub fn rate(&self) -> Option<u32> {
        match self.rows_per_second.load(Ordering::Relaxed) {
            0 => None,
            r => Some(r),
        }
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// What a running sync reports after every chunk.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SyncProgress {
    pub rows_copied: u64,
    pub rows_total: u64,
    pub rows_per_second: f64,
    pub chunk_size: u64,
    pub backfill_done: bool,
    pub capture_lag_bytes: u64,
    pub capture_lag_ms: u64,
    pub txns_applied: u64,
    /// Why the backfill is paused, when it is.
    pub throttled: Option<String>,
    pub elapsed_s: f64,
}

/// Receives progress (a terminal bar, plain CI lines, metrics).
pub trait ProgressSink: Send {
    fn update(&mut self, p: &SyncProgress);
}

/// Bounds the backfill respects.
struct Governor {
    limiter: Option<(u32, governor::DefaultDirectRateLimiter)>,
}

impl Governor {
    /// Waits until `rows` more rows may be copied at `rate`.
    async fn wait(&mut self, rate: Option<u32>, rows: u32) {
        let Some(rate) = rate.and_then(NonZeroU32::new) else {
            self.limiter = None;
            return;
        };
        let burst = NonZeroU32::new(rows.max(rate.get())).unwrap_or(rate);
        if self.limiter.as_ref().map(|(r, _)| *r) != Some(rate.get()) {
            let quota = governor::Quota::per_second(rate).allow_burst(burst);
            self.limiter = Some((rate.get(), governor::RateLimiter::direct(quota)));
        }
        if let Some((_, limiter)) = &self.limiter {
            let n = NonZeroU32::new(rows.clamp(1, burst.get())).unwrap_or(NonZeroU32::MIN);
            if limiter.until_n_ready(n).await.is_err() {
                // More than the burst: wait proportionally instead.
                tokio::time::sleep(Duration::from_secs_f64(rows as f64 / rate.get() as f64)).await;
            }
        }
    }
}

/// Why backfill should pause now, if it should.
async fn throttle_reason<A: Adapter>(
    adapter: &A,
    db: &A::Conn,
    lag: &cdc::Lag,
    spec: &MigrationSpec,
    source: &Table,
) -> Result<Option<String>, EngineError> {
    if lag.bytes > spec.throttle.max_capture_lag_bytes {
        return Ok(Some(format!(
            "capture lag {} MB > {} MB",
            lag.bytes / 1_000_000,
            spec.throttle.max_capture_lag_bytes / 1_000_000
        )));
    }
    let load = adapter.server_load(db, source).await?;
    let replica_lag = load.replica_lag_s;
    let waiting = load.lock_waiters;
    if replica_lag > spec.throttle.max_replica_lag.as_secs_f64() {
        return Ok(Some(format!(
            "replica lag {replica_lag:.1}s > {}s",
            spec.throttle.max_replica_lag.as_secs_f64()
        )));
    }
    if waiting > 0 {
        return Ok(Some(format!(
            "{waiting} session(s) waiting for a lock on the table"
        )));
    }
    Ok(None)
}

/// What a backfill copies from and how it writes.
#[derive(Debug, Clone, Copy)]
pub struct BackfillCopy<'t> {
    /// The table rows are read from (lock waits on it pause the backfill).
    pub source: &'t Table,
    pub fill: Fill,
}

/// Runs the throttled backfill from its checkpoint to the end of the key range, applying
/// captured changes between chunks. Returns when done or when `control` asks it to stop.
pub async fn backfill<A: Adapter>(
    db: &A::Conn,
    runner: &A::Lock,
    capture: &mut Capture<'_, A>,
    spec: &MigrationSpec,
    copy: BackfillCopy<'_>,
    control: &Control,
    progress: &mut dyn ProgressSink,
) -> Result<SyncProgress, EngineError> {
    let BackfillCopy { source, fill } = copy;
    let adapter = capture.adapter;
    let record = adapter
        .load_record(db, &spec.name)
        .await?
        .ok_or_else(|| EngineError::Phase(format!("migration {} is not registered", spec.name)))?;
    let total = adapter.estimate_rows(db, source).await?;
    adapter
        .set_figure(runner, crate::state::Figure::RowsTotal, total as f64)
        .await?;
    let dir = capture.direction().clone();
    let mut last_key = record.backfill_last_key.clone();
    let mut done = record.backfill_done;
    let started = Instant::now();
    let mut p = SyncProgress {
        rows_copied: record.rows_copied.max(0) as u64,
        rows_total: total.max(0) as u64,
        chunk_size: 1000,
        backfill_done: done,
        ..Default::default()
    };
    let copied_at_start = p.rows_copied;
    let mut chunk: i64 = 1000;
    let mut gov = Governor { limiter: None };
    let target = spec.throttle.chunk_target;
    // Measured once per chunk, after capture was applied; the next throttle check uses it.
    let mut lag = capture.lag().await?;
    while !done && !control.stopping() {
        if let Some(reason) = throttle_reason(adapter, db, &lag, spec, source).await? {
            p.throttled = Some(reason);
            progress.update(&p);
            capture.apply_for(Duration::from_millis(500)).await?;
            lag = capture.lag().await?;
            continue;
        }
        p.throttled = None;
        gov.wait(control.rate(), chunk as u32).await;
        let t = Instant::now();
        // The chunk's upper key: the `chunk`-th key after the checkpoint (none: the last chunk).
        let upper = adapter
            .chunk_upper(db, &dir, last_key.as_deref(), chunk - 1)
            .await?;
        let written = adapter
            .copy_range(
                db,
                runner,
                &dir,
                last_key.as_deref(),
                upper.as_deref(),
                fill,
            )
            .await?;
        let took = t.elapsed();
        match upper {
            // A full chunk: `chunk` source rows, some of which capture may have written first.
            Some(key) => {
                p.rows_copied += chunk as u64;
                last_key = Some(key);
            }
            // The rest of the table: done. The filled table gets its statistics now, before
            // verify reads it and long before applications do.
            None => {
                p.rows_copied += written;
                // Best effort: statistics are an optimisation, never a reason to fail a copy
                // that is complete (autovacuum analyzes the table later anyway).
                if let Err(e) = adapter.refresh_statistics(db, &dir.to).await {
                    tracing::warn!(table = %dir.to, error = %e, "analyzing the filled table failed");
                }
                done = true;
            }
        }
        let rate =
            (p.rows_copied - copied_at_start) as f64 / started.elapsed().as_secs_f64().max(1e-3);
        // `splice throttle` changes the rate of a running sync through the state row.
        if let Some(limit) = adapter
            .checkpoint(
                runner,
                last_key.as_deref(),
                p.rows_copied as i64,
                done,
                Some(rate),
            )
            .await?
        {
            control.set_rate(u32::try_from(limit).ok().filter(|l| *l > 0));
        }
        // Size the next chunk to the target duration, smoothly.
        let ideal = chunk as f64 * target.as_secs_f64() / took.as_secs_f64().max(1e-3);
        chunk = ((chunk as f64 * 0.5 + ideal * 0.5) as i64).clamp(100, 100_000);
        // Keep capture current while copying.
        capture.apply_for(Duration::ZERO).await?;
        lag = capture.lag().await?;
        p.capture_lag_bytes = lag.bytes;
        p.capture_lag_ms = lag.behind.as_millis() as u64;
        p.txns_applied = capture.txns_applied;
        p.chunk_size = chunk as u64;
        p.backfill_done = done;
        p.rows_per_second = rate;
        p.elapsed_s = started.elapsed().as_secs_f64();
        debug!(rows = p.rows_copied, chunk, "backfill chunk");
        progress.update(&p);
    }
    Ok(p)
}
