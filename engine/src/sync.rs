//! Sync: the change applier ([`Capture`]) and the throttled backfill ([`backfill`]).
//!
//! Capture turns every committed change to the source into "key K changed" and re-syncs K from
//! the source of truth through the mapping, so applying is idempotent, order-insensitive and
//! batchable. Backfill walks the key range in chunks; the applier runs between chunks, never
//! during one, so a change that commits while a chunk is copied is re-synced after the chunk
//! landed and a delete can never be undone by a stale chunk (see `sql::backfill_range`).

use crate::spec::MigrationSpec;
use crate::sql::{self, Direction};
use crate::state::RunnerLock;
use crate::EngineError;
use cdc::{CaptureName, ChangeSource, Op, PgChangeStream, PgSourceConfig, TableName, Value};
use std::collections::HashSet;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::{Client, GenericClient};
use tracing::{debug, info_span, Instrument};

/// The table capture drains through (see `state::SCHEMA_DDL`).
pub fn marker_table() -> TableName {
    TableName::new("splice", "sync_marker")
}

/// Applies one direction's captured changes to its target.
pub struct Capture {
    stream: PgChangeStream,
    dir: Direction,
    source: TableName,
    apply_db: Option<Client>,
    marker_db: Client,
    migration: String,
    /// The applier's statements, built once from `dir`.
    resync_sql: String,
    orphans_sql: String,
    /// Transactions and distinct keys applied since open.
    pub txns_applied: u64,
    pub keys_applied: u64,
}

/// Creates the replication origin the applier writes under (idempotent).
pub async fn ensure_origin(db: &impl GenericClient, origin: &str) -> Result<(), EngineError> {
    db.execute(
        "SELECT pg_replication_origin_create($1) WHERE pg_replication_origin_oid($1) IS NULL",
        &[&origin],
    )
    .await
    .map_err(|e| {
        EngineError::db(
            format!(
                "creating replication origin {origin} (needs superuser, or EXECUTE on \
                 pg_replication_origin_create granted to this role)"
            ),
            e,
        )
    })?;
    Ok(())
}

pub async fn drop_origin(db: &impl GenericClient, origin: &str) -> Result<(), EngineError> {
    db.execute(
        "SELECT pg_replication_origin_drop($1) WHERE pg_replication_origin_oid($1) IS NOT NULL",
        &[&origin],
    )
    .await
    .map_err(|e| EngineError::db(format!("dropping replication origin {origin}"), e))?;
    Ok(())
}

fn cdc_table(q: &crate::QualifiedName) -> TableName {
    TableName::new(q.schema.clone(), q.name.clone())
}

/// A batch of coalesced changes.
#[derive(Default)]
struct Batch {
    keys: HashSet<Vec<String>>,
    truncate: bool,
    markers: Vec<i64>,
    last_position: Option<cdc::Position>,
    txns: u64,
}

impl Capture {
    /// Opens (creating if needed) the slot `slot` capturing `dir.from`, skipping the engine's
    /// own writes (origin `spec.origin()`).
    pub async fn open(
        url: &str,
        spec: &MigrationSpec,
        dir: Direction,
        slot: &str,
        origin: &str,
    ) -> Result<Capture, EngineError> {
        let name = CaptureName::exact(slot)?;
        let source = cdc_table(&dir.from);
        let config = PgSourceConfig::new(url, name, vec![source.clone(), marker_table()])
            .skip_origin(spec.origin())
            .skip_origin(spec.reverse_origin());
        let stream = PgChangeStream::open(config).await?;
        let apply_db = crate::connect(url).await?;
        ensure_origin(&apply_db, origin).await?;
        apply_db
            .execute("SELECT pg_replication_origin_session_setup($1)", &[&origin])
            .await
            .map_err(|e| EngineError::db("marking the applier's session with its origin", e))?;
        let marker_db = crate::connect(url).await?;
        Ok(Capture {
            stream,
            resync_sql: sql::resync_keys(&dir),
            orphans_sql: sql::delete_orphans(&dir),
            dir,
            source,
            apply_db: Some(apply_db),
            marker_db,
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
                if change.table == marker_table() {
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

    /// Applies a batch through `tx` (cutover's locked transaction) or, without one, in a
    /// transaction of the applier's own session that is committed and then acknowledged. With
    /// `tx`, the caller acknowledges once `tx` committed.
    async fn apply(
        &mut self,
        batch: Batch,
        tx: Option<&tokio_postgres::Transaction<'_>>,
    ) -> Result<(), EngineError> {
        self.txns_applied += batch.txns;
        if batch.truncate || !batch.keys.is_empty() {
            // One text[] parameter per key column.
            let mut columns: Vec<Vec<String>> =
                vec![Vec::with_capacity(batch.keys.len()); self.dir.key.len()];
            let n_keys = batch.keys.len();
            for key in batch.keys {
                for (column, value) in columns.iter_mut().zip(key) {
                    column.push(value);
                }
            }
            let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = columns
                .iter()
                .map(|c| c as &(dyn tokio_postgres::types::ToSql + Sync))
                .collect();
            let statements = ApplyStatements {
                orphans: batch.truncate.then_some(self.orphans_sql.as_str()),
                resync: (n_keys > 0).then_some(self.resync_sql.as_str()),
            };
            match tx {
                Some(tx) => statements.run(tx, &params).await?,
                None => {
                    let conn = self.apply_db.as_mut().ok_or_else(|| {
                        EngineError::Phase("the applier's connection is lent out".into())
                    })?;
                    let own = conn
                        .transaction()
                        .await
                        .map_err(|e| EngineError::db("starting an apply transaction", e))?;
                    statements.run(&own, &params).await?;
                    own.commit()
                        .await
                        .map_err(|e| EngineError::db("committing applied changes", e))?;
                }
            }
            self.keys_applied += n_keys as u64;
        }
        if tx.is_none() {
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
        self.apply(batch, None).await?;
        Ok(n)
    }

    async fn write_marker(&mut self) -> Result<i64, EngineError> {
        let row = self
            .marker_db
            .query_one(
                "INSERT INTO splice.sync_marker (migration, id)
                 SELECT $1, coalesce(max(id), 0) + 1 FROM splice.sync_marker WHERE migration = $1
                 RETURNING id",
                &[&self.migration],
            )
            .await
            .map_err(|e| EngineError::db("writing a capture marker", e))?;
        let id: i64 = row.get(0);
        self.marker_db
            .execute(
                "DELETE FROM splice.sync_marker WHERE migration = $1 AND id < $2",
                &[&self.migration, &(id - 10)],
            )
            .await
            .map_err(|e| EngineError::db("pruning capture markers", e))?;
        Ok(id)
    }

    /// Applies everything committed to the source before this call: writes a marker, then
    /// applies until the marker arrives.
    pub async fn drain(&mut self) -> Result<(), EngineError> {
        self.drain_through(None, None).await.map(|_| ())
    }

    /// Like [`drain`](Self::drain) but applies through `tx` (which holds the source's lock),
    /// giving up after `give_up`; returns the position to acknowledge once `tx` committed.
    pub async fn drain_in(
        &mut self,
        tx: &tokio_postgres::Transaction<'_>,
        give_up: Duration,
    ) -> Result<Option<cdc::Position>, EngineError> {
        self.drain_through(Some(tx), Some(give_up)).await
    }

    async fn drain_through(
        &mut self,
        tx: Option<&tokio_postgres::Transaction<'_>>,
        give_up: Option<Duration>,
    ) -> Result<Option<cdc::Position>, EngineError> {
        let id = self.write_marker().await?;
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
                self.apply(batch, tx).await?;
                if seen {
                    return Ok(last);
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Lends out the applier's connection (its session writes under the engine's replication
    /// origin, so capture skips what it writes): cutover runs its locked transaction on it.
    pub fn take_apply_db(&mut self) -> Result<Client, EngineError> {
        self.apply_db
            .take()
            .ok_or_else(|| EngineError::Phase("the applier's connection is lent out".into()))
    }

    pub fn put_apply_db(&mut self, db: Client) {
        self.apply_db = Some(db);
    }

    pub fn ack(&mut self, pos: &cdc::Position) -> Result<(), EngineError> {
        Ok(self.stream.ack(pos)?)
    }

    /// Stops cleanly; the slot stays for the next run.
    pub async fn close(self) -> Result<(), EngineError> {
        Ok(self.stream.close().await?)
    }
}

/// The statements of one applied batch: orphan removal after a TRUNCATE, then the re-sync of
/// the changed keys.
struct ApplyStatements<'a> {
    orphans: Option<&'a str>,
    resync: Option<&'a str>,
}

impl ApplyStatements<'_> {
    async fn run(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<(), EngineError> {
        if let Some(sql) = self.orphans {
            tx.execute(sql, &[])
                .await
                .map_err(|e| EngineError::db("applying a truncate", e))?;
        }
        if let Some(sql) = self.resync {
            tx.query_one(sql, params)
                .await
                .map_err(|e| EngineError::db("applying captured changes", e))?;
        }
        Ok(())
    }
}

/// Drops a capture's slot and publication if they exist.
pub async fn drop_capture(url: &str, slot: &str) -> Result<(), EngineError> {
    let name = CaptureName::exact(slot)?;
    cdc::drop_capture(url, &name).await?;
    Ok(())
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
async fn throttle_reason(
    db: &Client,
    lag: &cdc::Lag,
    spec: &MigrationSpec,
    source_oid: u32,
) -> Result<Option<String>, EngineError> {
    if lag.bytes > spec.throttle.max_capture_lag_bytes {
        return Ok(Some(format!(
            "capture lag {} MB > {} MB",
            lag.bytes / 1_000_000,
            spec.throttle.max_capture_lag_bytes / 1_000_000
        )));
    }
    let row = db
        .query_one(
            "SELECT coalesce(max(extract(epoch FROM replay_lag)), 0)::float8,
                    (SELECT count(*) FROM pg_locks WHERE relation = $1 AND NOT granted)
             FROM pg_stat_replication",
            &[&source_oid],
        )
        .await
        .map_err(|e| EngineError::db("reading replica lag and lock waits", e))?;
    let replica_lag: f64 = row.get(0);
    let waiting: i64 = row.get(1);
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
pub struct BackfillCopy {
    /// The table rows are read from (lock waits on it pause the backfill).
    pub source_oid: u32,
    pub fill: sql::Fill,
}

/// Runs the throttled backfill from its checkpoint to the end of the key range, applying
/// captured changes between chunks. Returns when done or when `control` asks it to stop.
pub async fn backfill(
    db: &Client,
    runner: &RunnerLock,
    capture: &mut Capture,
    spec: &MigrationSpec,
    copy: BackfillCopy,
    control: &Control,
    progress: &mut dyn ProgressSink,
) -> Result<SyncProgress, EngineError> {
    let BackfillCopy { source_oid, fill } = copy;
    let record = crate::state::load(db, &spec.name)
        .await?
        .ok_or_else(|| EngineError::Phase(format!("migration {} is not registered", spec.name)))?;
    // The planner's row estimate: counting would read the whole table once more. A table
    // never analyzed (reltuples < 0) is counted.
    let total: i64 = db
        .query_one(
            &format!(
                "SELECT CASE WHEN c.reltuples < 0 THEN (SELECT count(*) FROM {}) \
                 ELSE c.reltuples::bigint END FROM pg_class c WHERE c.oid = $1::oid",
                capture.direction().from.sql()
            ),
            &[&source_oid],
        )
        .await
        .map_err(|e| EngineError::db("estimating the source rows", e))?
        .get(0);
    runner
        .set_figure(crate::state::Figure::RowsTotal, total as f64)
        .await?;
    let dir = capture.direction().clone();
    let first_upper = sql::range_boundary(&dir, false);
    let next_upper = sql::range_boundary(&dir, true);
    let chunk_sql = |lower: bool, upper: bool| sql::backfill_range(&dir, lower, upper, fill);
    let statements = [
        [chunk_sql(false, false), chunk_sql(false, true)],
        [chunk_sql(true, false), chunk_sql(true, true)],
    ];
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
        if let Some(reason) = throttle_reason(db, &lag, spec, source_oid).await? {
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
        let offset = chunk - 1;
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = last_key
            .iter()
            .flatten()
            .map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        let probe = if last_key.is_some() {
            &next_upper
        } else {
            &first_upper
        };
        params.push(&offset);
        let upper: Option<Vec<String>> = db
            .query_opt(probe, &params)
            .await
            .map_err(|e| EngineError::db("finding the end of a backfill chunk", e))?
            .map(|row| {
                (0..dir.key.len())
                    .map(|i| row.get::<_, String>(i))
                    .collect()
            });
        params.pop();
        params.extend(
            upper
                .iter()
                .flatten()
                .map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync)),
        );
        let written = db
            .execute(
                &statements[usize::from(last_key.is_some())][usize::from(upper.is_some())],
                &params,
            )
            .await
            .map_err(|e| EngineError::db("copying a backfill chunk", e))?;
        let took = t.elapsed();
        match upper {
            // A full chunk: `chunk` source rows, some of which capture may have written first.
            Some(key) => {
                p.rows_copied += chunk as u64;
                last_key = Some(key);
            }
            // The rest of the table: done.
            None => {
                p.rows_copied += written;
                done = true;
            }
        }
        let rate =
            (p.rows_copied - copied_at_start) as f64 / started.elapsed().as_secs_f64().max(1e-3);
        // `splice throttle` changes the rate of a running sync through the state row.
        if let Some(limit) = runner
            .checkpoint(last_key.as_deref(), p.rows_copied as i64, done, Some(rate))
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
