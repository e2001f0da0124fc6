//! MySQL's state store: the `splice` database on the same server. Migrations, their phase,
//! backfill checkpoints, verify results and an append-only history of transitions (the same
//! tables as PostgreSQL's `splice` schema); and the runner lock (`GET_LOCK` on a session of its
//! own + a fencing token in the migration's row) that lets one process at a time drive a
//! migration. Every fenced write locks the migration's row (`FOR UPDATE`) and checks the token
//! inside the transaction that writes, so a phase change is a compare-and-set.

use super::{col, connect, MySql, Session};
use crate::adapter::StateStore;
use crate::error::Refusal;
use crate::seam::{KeyRange, RangeResult, RateLimit, StoredPass, StoredRange, VerifyReport};
use crate::state::{
    actor, Checkpoint, Event, Figure, Impact, LastVerify, MigrationRecord, Phase, PhaseChange,
    QuarantineEntry, Runner, SyncThrottle, Transition,
};
use crate::EngineError;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row, Transaction, TxOpts, Value};
use serde_json::Value as Json;
use tokio::sync::Mutex;

/// The statements that create the state database; idempotent, additive only.
pub const SCHEMA_DDL: &[&str] = &[
    "CREATE DATABASE IF NOT EXISTS `splice` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
    "CREATE TABLE IF NOT EXISTS `splice`.`migrations` (
    name VARCHAR(64) NOT NULL PRIMARY KEY,
    spec MEDIUMTEXT NOT NULL,
    phase VARCHAR(32) NOT NULL,
    fence BIGINT NOT NULL DEFAULT 0,
    created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    backfill_last_key MEDIUMTEXT NULL,
    backfill_done BOOLEAN NOT NULL DEFAULT FALSE,
    rows_copied BIGINT NOT NULL DEFAULT 0,
    rows_total BIGINT NOT NULL DEFAULT 0,
    backfill_rate DOUBLE NULL,
    rate_limit INT NULL,
    lock_ms DOUBLE NULL,
    quarantined_as VARCHAR(200) NULL,
    quarantine_until DATETIME(6) NULL,
    sync_rate INT NULL,
    sync_rate_source VARCHAR(16) NULL,
    sync_paused TEXT NULL,
    sync_impact LONGTEXT NULL
) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS `splice`.`history` (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    migration VARCHAR(64) NOT NULL,
    at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    actor TEXT NOT NULL,
    from_phase VARCHAR(32) NULL,
    to_phase VARCHAR(32) NOT NULL,
    figures LONGTEXT NOT NULL,
    KEY (migration, id)
) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS `splice`.`verify_results` (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    migration VARCHAR(64) NOT NULL,
    at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    passed BOOLEAN NOT NULL,
    rows_checked BIGINT NOT NULL,
    ranges BIGINT NOT NULL,
    rechecked BIGINT NOT NULL,
    diverged_keys LONGTEXT NOT NULL,
    seconds DOUBLE NOT NULL,
    kind VARCHAR(16) NOT NULL DEFAULT 'full',
    ranges_total BIGINT NULL,
    KEY (migration, id)
) ENGINE=InnoDB",
    // Requests made of a migration that are not steps (throttle, and what a daemon is asked):
    // kept apart from `history`, which the engine reads.
    "CREATE TABLE IF NOT EXISTS `splice`.`events` (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    migration VARCHAR(64) NOT NULL,
    at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    action TEXT NOT NULL,
    caller TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT NULL,
    outcome TEXT NULL,
    KEY (migration, id)
) ENGINE=InnoDB",
    // The impact budget's heartbeat: one row per migration, updated every 100 ms while a sync
    // runs (a durable autocommit UPDATE, timed); removed with the migration's appliers.
    "CREATE TABLE IF NOT EXISTS `splice`.`heartbeat` (
    migration VARCHAR(64) NOT NULL PRIMARY KEY,
    beats BIGINT NOT NULL DEFAULT 0
) ENGINE=InnoDB",
    // Incremental verify: the last pass's key ranges (bounds as JSON arrays of the key's text,
    // NULL where open), what each one's last check found, and capture's marks (`marks` grows
    // with every applied batch holding one of its keys; the range is vouched for while
    // `passed` and `marks = checked_marks`). `upper_num`: the upper bound of a one-column
    // integer key as a number, indexed, so the applier finds a key's range in one probe.
    "CREATE TABLE IF NOT EXISTS `splice`.`verify_ranges` (
    migration VARCHAR(64) NOT NULL,
    idx INT NOT NULL,
    shape VARCHAR(64) NOT NULL,
    lower_key LONGTEXT NULL,
    upper_key LONGTEXT NULL,
    source_digest VARBINARY(32) NULL,
    target_digest VARBINARY(32) NULL,
    `rows` BIGINT NULL,
    passed BOOLEAN NOT NULL DEFAULT FALSE,
    checked_at DATETIME(6) NULL,
    marks BIGINT NOT NULL DEFAULT 0,
    checked_marks BIGINT NULL,
    upper_num DECIMAL(65,0) NULL,
    PRIMARY KEY (migration, idx),
    KEY by_upper (migration, shape, upper_num)
) ENGINE=InnoDB",
    // Capture drains by writing a marker here and reading the stream until it arrives.
    "CREATE TABLE IF NOT EXISTS `splice`.`sync_marker` (
    migration VARCHAR(64) NOT NULL,
    id BIGINT NOT NULL,
    PRIMARY KEY (migration, id)
) ENGINE=InnoDB",
];

/// `DATETIME(6)` column `c` as RFC 3339 UTC with milliseconds (sessions run in UTC).
fn rfc3339_ms(c: &str) -> String {
    format!(
        "CONCAT(DATE_FORMAT({c}, '%Y-%m-%dT%H:%i:%s.'), LPAD(MICROSECOND({c}) DIV 1000, 3, '0'), 'Z')"
    )
}

/// The columns `record` reads, in its order.
fn migration_columns() -> String {
    "SELECT name, spec, phase, fence, backfill_last_key, backfill_done, rows_copied, rows_total, \
     backfill_rate, lock_ms, quarantined_as, \
     DATE_FORMAT(quarantine_until, '%Y-%m-%dT%H:%i:%sZ'), \
     COALESCE(quarantine_until <= NOW(6), FALSE), rate_limit, sync_rate, sync_rate_source, \
     sync_paused, sync_impact FROM `splice`.`migrations`"
        .to_string()
}

fn record(r: &Row) -> Result<MigrationRecord, EngineError> {
    let ctx = "reading splice.migrations";
    let phase_text: String = col(r, 2, ctx)?;
    let phase = Phase::parse(&phase_text).ok_or_else(|| {
        EngineError::Missing(format!(
            "splice.migrations has unknown phase `{phase_text}`; was it written by a newer splice?"
        ))
    })?;
    let last_key: Option<String> = col(r, 4, ctx)?;
    let backfill_last_key = match last_key {
        None => None,
        Some(text) => Some(serde_json::from_str::<Vec<String>>(&text).map_err(|e| {
            EngineError::Missing(format!(
                "splice.migrations.backfill_last_key is not a list of keys ({e}); was it edited \
                 by hand?"
            ))
        })?),
    };
    let sync_rate: Option<i64> = col(r, 14, ctx)?;
    let sync_source: Option<String> = col(r, 15, ctx)?;
    Ok(MigrationRecord {
        name: col(r, 0, ctx)?,
        spec: col(r, 1, ctx)?,
        phase,
        fence: col(r, 3, ctx)?,
        backfill_last_key,
        backfill_done: col::<i64>(r, 5, ctx)? != 0,
        rows_copied: col(r, 6, ctx)?,
        rows_total: col(r, 7, ctx)?,
        backfill_rate: col(r, 8, ctx)?,
        sync_throttle: match (sync_rate, sync_source) {
            (Some(rate), Some(source)) => Some(SyncThrottle {
                rows_per_second: rate.clamp(0, u32::MAX as i64) as u32,
                source,
                paused: col(r, 16, ctx)?,
            }),
            _ => None,
        },
        lock_ms: col(r, 9, ctx)?,
        quarantined_as: col(r, 10, ctx)?,
        quarantine_until: col(r, 11, ctx)?,
        quarantine_expired: col::<i64>(r, 12, ctx)? != 0,
        rate_limit: col::<Option<i64>>(r, 13, ctx)?
            .map(|r| RateLimit::from_rows_per_second(r.clamp(0, u32::MAX as i64) as u32)),
        // Written only by `save_impact`; a value this version cannot read is left out.
        sync_impact: col::<Option<String>>(r, 17, ctx)?
            .and_then(|text| serde_json::from_str(&text).ok()),
    })
}

async fn state_exists(conn: &mut Conn) -> Result<bool, EngineError> {
    let n: Option<Row> = conn
        .query_first(
            "SELECT COUNT(*) FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = 'splice' AND TABLE_NAME = 'migrations'",
        )
        .await
        .map_err(|e| EngineError::my("looking for the splice state database", &e))?;
    match n {
        Some(r) => Ok(col::<i64>(&r, 0, "looking for the splice state database")? > 0),
        None => Ok(false),
    }
}

/// The name of a migration's `GET_LOCK` lock (at most 64 characters, as the server requires).
pub fn lock_name(migration: &str) -> String {
    let name = format!("splice.migration.{migration}");
    if name.len() <= 64 {
        return name;
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in migration.as_bytes() {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let keep: String = migration.chars().take(30).collect();
    format!("splice.migration.{keep}.{hash:016x}")
}

/// The right to drive one migration: a `GET_LOCK` lock held by a session of its own, and a
/// fencing token. Every state write checks the token under the migration row's lock, so a
/// runner that lost its lock (its session died while it kept going) cannot write.
pub struct RunnerLock {
    conn: Mutex<Conn>,
    pub name: String,
    pub fence: i64,
}

impl RunnerLock {
    /// Takes the lock for `name` or fails at once naming who holds it.
    pub async fn acquire(db: &MySql, name: &str) -> Result<RunnerLock, EngineError> {
        let mut conn = connect(&db.target).await?;
        let lock = lock_name(name);
        // A runner that just finished (or was killed) may hold its session for a moment while
        // the server tears it down: try for a short while before giving up.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        let got = loop {
            let row: Option<Row> = conn
                .exec_first("SELECT GET_LOCK(?, 0)", (&lock,))
                .await
                .map_err(|e| EngineError::my("taking the runner lock", &e))?;
            let got = match row {
                Some(r) => col::<Option<i64>>(&r, 0, "taking the runner lock")? == Some(1),
                None => false,
            };
            if got || std::time::Instant::now() > deadline {
                break got;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        };
        if !got {
            let holder = lock_holder(&mut conn, &lock).await.ok().flatten();
            return Err(EngineError::Busy(busy_message(name, holder)));
        }
        Ok(RunnerLock {
            conn: Mutex::new(conn),
            name: name.into(),
            fence: 0,
        })
    }

    /// Bumps the fencing token; call once the migration row exists. Waits for a backfill
    /// chunk in flight, which holds the row in share mode at the old token.
    pub async fn fence(&mut self) -> Result<(), EngineError> {
        let conn = self.conn.get_mut();
        let mut tx = conn
            .start_transaction(TxOpts::default())
            .await
            .map_err(|e| EngineError::my("taking the fencing token", &e))?;
        tx.exec_drop(
            "UPDATE `splice`.`migrations` SET fence = fence + 1 WHERE name = ?",
            (&self.name,),
        )
        .await
        .map_err(|e| EngineError::my("taking the fencing token", &e))?;
        let row: Option<Row> = tx
            .exec_first(
                "SELECT fence FROM `splice`.`migrations` WHERE name = ?",
                (&self.name,),
            )
            .await
            .map_err(|e| EngineError::my("taking the fencing token", &e))?;
        tx.commit()
            .await
            .map_err(|e| EngineError::my("taking the fencing token", &e))?;
        self.fence = match row {
            Some(r) => col(&r, 0, "taking the fencing token")?,
            None => 0,
        };
        Ok(())
    }

    /// The lock's session (state writes run on it).
    pub async fn session(&self) -> tokio::sync::MutexGuard<'_, Conn> {
        self.conn.lock().await
    }

    /// The error of a write refused because another runner took the migration over.
    pub(crate) fn stale(&self) -> EngineError {
        EngineError::Busy(format!(
            "migration {}: another runner took over (fencing token {} is stale); this \
             process stops without writing",
            self.name, self.fence
        ))
    }
}

/// The session holding `lock`: connection id, user@host, current statement.
async fn lock_holder(conn: &mut Conn, lock: &str) -> Result<Option<Runner>, EngineError> {
    let row: Option<Row> = conn
        .exec_first(
            "SELECT p.ID, COALESCE(p.INFO, ''), CONCAT(p.USER, '@', p.HOST) \
             FROM information_schema.PROCESSLIST p WHERE p.ID = IS_USED_LOCK(?)",
            (lock,),
        )
        .await
        .map_err(|e| EngineError::my("looking for the migration's runner", &e))?;
    let ctx = "looking for the migration's runner";
    Ok(match row {
        Some(r) => Some(Runner {
            pid: col::<i64>(&r, 0, ctx)?.clamp(0, i32::MAX as i64) as i32,
            command: String::new(),
            host: col(&r, 2, ctx)?,
        }),
        None => None,
    })
}

fn busy_message(name: &str, holder: Option<Runner>) -> String {
    match holder {
        None => format!(
            "migration {name} is being run by another splice process (it let go as this one \
             looked: run this again)"
        ),
        Some(r) => format!(
            "migration {name} is being run by another splice process: connection {} of {}; \
             let it finish, or stop it (its work is checkpointed; a `splice sync` without \
             --until-caught-up follows changes until it is stopped), then run this again",
            r.pid, r.host
        ),
    }
}

/// Starts a transaction on `conn` holding the migration's row at `lock`'s token: the stale
/// error (and nothing written) when another runner took over. Returns the phase it is in.
pub(crate) async fn fenced<'a>(
    conn: &'a mut Conn,
    lock: &RunnerLock,
    context: &str,
) -> Result<(Transaction<'a>, String), EngineError> {
    let mut tx = conn
        .start_transaction(TxOpts::default())
        .await
        .map_err(|e| EngineError::my(context.to_string(), &e))?;
    let row: Option<Row> = tx
        .exec_first(
            "SELECT phase, fence FROM `splice`.`migrations` WHERE name = ? FOR UPDATE",
            (&lock.name,),
        )
        .await
        .map_err(|e| EngineError::my(context.to_string(), &e))?;
    let Some(row) = row else {
        return Err(lock.stale());
    };
    if col::<i64>(&row, 1, context)? != lock.fence {
        return Err(lock.stale());
    }
    let phase: String = col(&row, 0, context)?;
    Ok((tx, phase))
}

/// Records `change` and its history row inside `tx` (begun by [`fenced`], which read `phase`),
/// as a compare-and-set on `change.from`.
pub(crate) async fn record_change(
    tx: &mut Transaction<'_>,
    lock: &RunnerLock,
    phase: &str,
    change: &PhaseChange,
) -> Result<(), EngineError> {
    if phase != change.from.as_str() {
        return Err(Refusal::PhaseChanged {
            name: lock.name.clone(),
            expected: change.from,
            found: phase.to_string(),
        }
        .into());
    }
    let ctx = "recording the phase transition";
    tx.exec_drop(
        "UPDATE `splice`.`migrations` SET phase = ?, updated_at = NOW(6) WHERE name = ?",
        (change.to.as_str(), &lock.name),
    )
    .await
    .map_err(|e| EngineError::my(ctx, &e))?;
    tx.exec_drop(
        "INSERT INTO `splice`.`history` (migration, actor, from_phase, to_phase, figures) \
         VALUES (?, ?, ?, ?, ?)",
        (
            &lock.name,
            actor(),
            change.from.as_str(),
            change.to.as_str(),
            change.figures.to_string(),
        ),
    )
    .await
    .map_err(|e| EngineError::my(ctx, &e))?;
    Ok(())
}

/// Records (or with `None` clears) the quarantine entry inside a fenced `tx`.
pub(crate) async fn record_quarantine(
    tx: &mut Transaction<'_>,
    lock: &RunnerLock,
    quarantine: Option<&QuarantineEntry>,
) -> Result<(), EngineError> {
    tx.exec_drop(
        "UPDATE `splice`.`migrations` SET quarantined_as = ?, \
         quarantine_until = CASE WHEN ? IS NULL THEN NULL \
                                 ELSE NOW(6) + INTERVAL ? MICROSECOND END \
         WHERE name = ?",
        (
            quarantine.map(|q| q.quarantined_as.clone()),
            quarantine.map(|q| q.seconds),
            quarantine.map(|q| (q.seconds * 1e6) as i64),
            &lock.name,
        ),
    )
    .await
    .map_err(|e| EngineError::my("recording the quarantine", &e))
}

/// Runs `sql` with `params` in a fenced transaction on the lock's session and commits.
async fn fenced_write(
    lock: &RunnerLock,
    context: &str,
    sql: &str,
    params: Vec<Value>,
) -> Result<(), EngineError> {
    let mut conn = lock.session().await;
    let (mut tx, _) = fenced(&mut conn, lock, context).await?;
    tx.exec_drop(sql, params)
        .await
        .map_err(|e| EngineError::my(context.to_string(), &e))?;
    tx.commit()
        .await
        .map_err(|e| EngineError::my(context.to_string(), &e))
}

impl StateStore for MySql {
    type Lock = RunnerLock;

    async fn ensure_state(&self, db: &Session) -> Result<(), EngineError> {
        let mut conn = db.lock().await;
        for ddl in SCHEMA_DDL {
            conn.query_drop(*ddl)
                .await
                .map_err(|e| EngineError::my("creating the splice state database", &e))?;
        }
        Ok(())
    }

    async fn register(&self, db: &Session, name: &str, spec_text: &str) -> Result<(), EngineError> {
        db.lock()
            .await
            .exec_drop(
                "INSERT IGNORE INTO `splice`.`migrations` (name, spec, phase) \
                 VALUES (?, ?, 'planned')",
                (name, spec_text),
            )
            .await
            .map_err(|e| EngineError::my("registering the migration", &e))
    }

    async fn reregister(&self, lock: &RunnerLock, spec_text: &str) -> Result<(), EngineError> {
        let ctx = "re-registering the migration";
        let mut conn = lock.session().await;
        let (mut tx, phase) = fenced(&mut conn, lock, ctx).await?;
        if phase != Phase::RolledBack.as_str() {
            return Err(lock.stale());
        }
        tx.exec_drop(
            "UPDATE `splice`.`migrations` SET spec = ? WHERE name = ?",
            (spec_text, &lock.name),
        )
        .await
        .map_err(|e| EngineError::my(ctx, &e))?;
        tx.commit().await.map_err(|e| EngineError::my(ctx, &e))
    }

    async fn load_record(
        &self,
        db: &Session,
        name: &str,
    ) -> Result<Option<MigrationRecord>, EngineError> {
        let mut conn = db.lock().await;
        if !state_exists(&mut conn).await? {
            return Ok(None);
        }
        let row: Option<Row> = conn
            .exec_first(format!("{} WHERE name = ?", migration_columns()), (name,))
            .await
            .map_err(|e| EngineError::my(format!("reading migration {name}"), &e))?;
        row.map(|r| record(&r)).transpose()
    }

    async fn load_records(&self, db: &Session) -> Result<Vec<MigrationRecord>, EngineError> {
        let mut conn = db.lock().await;
        if !state_exists(&mut conn).await? {
            return Ok(Vec::new());
        }
        let rows: Vec<Row> = conn
            .query(format!("{} ORDER BY created_at, name", migration_columns()))
            .await
            .map_err(|e| EngineError::my("reading migrations", &e))?;
        rows.iter().map(record).collect()
    }

    async fn history(&self, db: &Session, name: &str) -> Result<Vec<Transition>, EngineError> {
        let ctx = format!("reading the history of {name}");
        let rows: Vec<Row> = db
            .lock()
            .await
            .exec(
                format!(
                    "SELECT {}, actor, from_phase, to_phase, figures FROM `splice`.`history` \
                     WHERE migration = ? ORDER BY id",
                    rfc3339_ms("at")
                ),
                (name,),
            )
            .await
            .map_err(|e| EngineError::my(ctx.clone(), &e))?;
        rows.iter()
            .map(|r| {
                let figures: String = col(r, 4, &ctx)?;
                Ok(Transition {
                    at: col(r, 0, &ctx)?,
                    actor: col(r, 1, &ctx)?,
                    from: col(r, 2, &ctx)?,
                    to: col(r, 3, &ctx)?,
                    figures: serde_json::from_str(&figures).unwrap_or(Json::Null),
                })
            })
            .collect()
    }

    async fn runner(&self, db: &Session, name: &str) -> Result<Option<Runner>, EngineError> {
        lock_holder(&mut *db.lock().await, &lock_name(name)).await
    }

    async fn last_verify(
        &self,
        db: &Session,
        name: &str,
    ) -> Result<Option<LastVerify>, EngineError> {
        let ctx = "reading the last verify result";
        let row: Option<Row> = db
            .lock()
            .await
            .exec_first(
                format!(
                    "SELECT passed, diverged_keys, {}, rows_checked FROM `splice`.`verify_results` \
                     WHERE migration = ? ORDER BY id DESC LIMIT 1",
                    rfc3339_ms("at")
                ),
                (name,),
            )
            .await
            .map_err(|e| EngineError::my(ctx, &e))?;
        let Some(r) = row else { return Ok(None) };
        let keys: String = col(&r, 1, ctx)?;
        Ok(Some(LastVerify {
            passed: col::<i64>(&r, 0, ctx)? != 0,
            diverged_keys: serde_json::from_str(&keys).unwrap_or(Json::Null),
            at: col(&r, 2, ctx)?,
            rows_checked: col(&r, 3, ctx)?,
        }))
    }

    async fn set_rate_limit(
        &self,
        db: &Session,
        name: &str,
        limit: Option<RateLimit>,
    ) -> Result<bool, EngineError> {
        let ctx = "setting the rate limit";
        let mut conn = db.lock().await;
        let exists: Option<Row> = conn
            .exec_first(
                "SELECT 1 FROM `splice`.`migrations` WHERE name = ?",
                (name,),
            )
            .await
            .map_err(|e| EngineError::my(ctx, &e))?;
        if exists.is_none() {
            return Ok(false);
        }
        conn.exec_drop(
            "UPDATE `splice`.`migrations` SET rate_limit = ? WHERE name = ?",
            (limit.map(|l| i64::from(l.rows_per_second())), name),
        )
        .await
        .map_err(|e| EngineError::my(ctx, &e))?;
        Ok(true)
    }

    async fn acquire_lock(&self, name: &str) -> Result<RunnerLock, EngineError> {
        let mut lock = RunnerLock::acquire(self, name).await?;
        lock.fence().await?;
        Ok(lock)
    }

    async fn transition(&self, lock: &RunnerLock, change: &PhaseChange) -> Result<(), EngineError> {
        let ctx = "recording the phase transition";
        let mut conn = lock.session().await;
        let (mut tx, phase) = fenced(&mut conn, lock, ctx).await?;
        record_change(&mut tx, lock, &phase, change).await?;
        tx.commit().await.map_err(|e| EngineError::my(ctx, &e))
    }

    async fn checkpoint(
        &self,
        lock: &RunnerLock,
        checkpoint: &Checkpoint,
    ) -> Result<Option<RateLimit>, EngineError> {
        let ctx = "saving the backfill checkpoint";
        let last_key = match &checkpoint.last_key {
            Some(k) => Some(serde_json::to_string(k).map_err(|e| EngineError::Database {
                context: ctx.into(),
                message: e.to_string(),
            })?),
            None => None,
        };
        let throttle = checkpoint.throttle.as_ref();
        let mut conn = lock.session().await;
        let (mut tx, _) = fenced(&mut conn, lock, ctx).await?;
        tx.exec_drop(
            "UPDATE `splice`.`migrations` SET backfill_last_key = COALESCE(?, backfill_last_key), \
             rows_copied = ?, backfill_done = ?, backfill_rate = COALESCE(?, backfill_rate), \
             updated_at = NOW(6), \
             sync_rate = IF(?, ?, sync_rate), sync_rate_source = IF(?, ?, sync_rate_source), \
             sync_paused = IF(?, ?, sync_paused) \
             WHERE name = ?",
            vec![
                Value::from(last_key),
                Value::from(checkpoint.rows_copied),
                Value::from(checkpoint.done),
                Value::from(checkpoint.rows_per_second),
                Value::from(throttle.is_some()),
                Value::from(throttle.map(|t| i64::from(t.rows_per_second))),
                Value::from(throttle.is_some()),
                Value::from(throttle.map(|t| t.source.clone())),
                Value::from(throttle.is_some()),
                Value::from(throttle.and_then(|t| t.paused.clone())),
                Value::from(lock.name.clone()),
            ],
        )
        .await
        .map_err(|e| EngineError::my(ctx, &e))?;
        let row: Option<Row> = tx
            .exec_first(
                "SELECT rate_limit FROM `splice`.`migrations` WHERE name = ?",
                (&lock.name,),
            )
            .await
            .map_err(|e| EngineError::my(ctx, &e))?;
        tx.commit().await.map_err(|e| EngineError::my(ctx, &e))?;
        let limit: Option<i64> = match row {
            Some(r) => col(&r, 0, ctx)?,
            None => None,
        };
        Ok(limit.map(|r| RateLimit::from_rows_per_second(r.clamp(0, u32::MAX as i64) as u32)))
    }

    async fn set_figure(
        &self,
        lock: &RunnerLock,
        figure: Figure,
        value: f64,
    ) -> Result<(), EngineError> {
        let (sql, v) = match figure {
            Figure::RowsTotal => (
                "UPDATE `splice`.`migrations` SET rows_total = ? WHERE name = ?",
                Value::from(value.round() as i64),
            ),
            Figure::LockMs => (
                "UPDATE `splice`.`migrations` SET lock_ms = ? WHERE name = ?",
                Value::from(value),
            ),
        };
        fenced_write(
            lock,
            "saving a figure",
            sql,
            vec![v, Value::from(lock.name.clone())],
        )
        .await
    }

    async fn reset_backfill(&self, lock: &RunnerLock) -> Result<(), EngineError> {
        fenced_write(
            lock,
            "resetting the backfill checkpoint",
            "UPDATE `splice`.`migrations` SET backfill_last_key = NULL, backfill_done = FALSE, \
             rows_copied = 0 WHERE name = ?",
            vec![Value::from(lock.name.clone())],
        )
        .await
    }

    async fn set_quarantine(
        &self,
        lock: &RunnerLock,
        quarantine: Option<&QuarantineEntry>,
    ) -> Result<(), EngineError> {
        let ctx = "recording the quarantine";
        let mut conn = lock.session().await;
        let (mut tx, _) = fenced(&mut conn, lock, ctx).await?;
        record_quarantine(&mut tx, lock, quarantine).await?;
        tx.commit().await.map_err(|e| EngineError::my(ctx, &e))
    }

    async fn record_verify(
        &self,
        lock: &RunnerLock,
        result: &VerifyReport,
    ) -> Result<(), EngineError> {
        let keys = serde_json::to_string(&result.diverged).unwrap_or_else(|_| "null".into());
        fenced_write(
            lock,
            "recording the verify result",
            "INSERT INTO `splice`.`verify_results` \
             (migration, passed, rows_checked, ranges, rechecked, diverged_keys, seconds, kind, \
             ranges_total) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            vec![
                Value::from(lock.name.clone()),
                Value::from(result.passed()),
                Value::from(result.rows_checked as i64),
                Value::from(result.ranges as i64),
                Value::from(result.rechecked as i64),
                Value::from(keys),
                Value::from(result.seconds),
                Value::from(result.kind.to_string()),
                Value::from(result.ranges_total as i64),
            ],
        )
        .await
    }

    async fn record_event(&self, db: &Session, name: &str, e: &Event) -> Result<bool, EngineError> {
        let mut conn = db.lock().await;
        if !state_exists(&mut conn).await? {
            return Ok(false);
        }
        let ctx = format!("recording a request of {name}");
        conn.exec_drop(
            "INSERT INTO `splice`.`events` (migration, action, caller, actor, reason, outcome) \
             SELECT name, ?, ?, ?, ?, ? FROM `splice`.`migrations` WHERE name = ?",
            (
                &e.action,
                &e.caller,
                &e.actor,
                e.reason.as_deref(),
                e.outcome.as_deref(),
                name,
            ),
        )
        .await
        .map_err(|err| EngineError::my(ctx, &err))?;
        Ok(conn.affected_rows() == 1)
    }

    async fn events(
        &self,
        db: &Session,
        name: &str,
        limit: usize,
    ) -> Result<Vec<Event>, EngineError> {
        let ctx = format!("reading the requests of {name}");
        let mut conn = db.lock().await;
        if !state_exists(&mut conn).await? {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<Row> = conn
            .exec(
                format!(
                    "SELECT at, action, caller, actor, reason, outcome FROM ( \
                       SELECT id, {} AS at, action, caller, actor, reason, outcome \
                       FROM `splice`.`events` WHERE migration = ? ORDER BY id DESC LIMIT ? \
                     ) last ORDER BY id",
                    rfc3339_ms("at")
                ),
                (name, limit),
            )
            .await
            .map_err(|e| EngineError::my(ctx.clone(), &e))?;
        rows.iter()
            .map(|r| {
                Ok(Event {
                    at: col(r, 0, &ctx)?,
                    action: col(r, 1, &ctx)?,
                    caller: col(r, 2, &ctx)?,
                    actor: col(r, 3, &ctx)?,
                    reason: col(r, 4, &ctx)?,
                    outcome: col(r, 5, &ctx)?,
                })
            })
            .collect()
    }

    async fn save_impact(
        &self,
        lock: &RunnerLock,
        impact: Option<&Impact>,
    ) -> Result<(), EngineError> {
        let value = impact.and_then(|i| serde_json::to_string(i).ok());
        fenced_write(
            lock,
            "saving the impact budget's figures",
            "UPDATE `splice`.`migrations` SET sync_impact = ? WHERE name = ?",
            vec![Value::from(value), Value::from(lock.name.clone())],
        )
        .await
    }

    /// The stored ranges, bounds decoded from their JSON arrays; `None` when none are stored
    /// (or the state database predates them).
    async fn verify_ranges(
        &self,
        db: &Session,
        name: &str,
    ) -> Result<Option<StoredPass>, EngineError> {
        let ctx = "reading the stored verify ranges";
        let rows: Vec<Row> = match db
            .lock()
            .await
            .exec(
                "SELECT idx, shape, lower_key, upper_key, passed, marks, checked_marks \
                   FROM `splice`.`verify_ranges` WHERE migration = ? ORDER BY idx",
                (name,),
            )
            .await
        {
            Ok(rows) => rows,
            Err(mysql_async::Error::Server(e)) if e.code == 1146 => return Ok(None),
            Err(e) => return Err(EngineError::my(ctx, &e)),
        };
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let bound = |text: Option<String>| -> Result<Option<Vec<String>>, EngineError> {
            text.map(|t| {
                serde_json::from_str::<Vec<String>>(&t).map_err(|e| {
                    EngineError::Missing(format!(
                        "a stored verify bound of {name} is not a JSON array of strings ({e}); \
                         `splice verify` (a full pass) stores new ones"
                    ))
                })
            })
            .transpose()
        };
        let mut pass = StoredPass {
            shape: col(first, 1, ctx)?,
            ranges: Vec::with_capacity(rows.len()),
        };
        for r in &rows {
            let shape: String = col(r, 1, ctx)?;
            if shape != pass.shape {
                // Ranges of two shapes: no pass wrote that; vouch for nothing.
                pass.shape.clear();
            }
            pass.ranges.push(StoredRange {
                idx: col(r, 0, ctx)?,
                range: KeyRange {
                    lower: bound(col(r, 2, ctx)?)?,
                    upper: bound(col(r, 3, ctx)?)?,
                },
                passed: col(r, 4, ctx)?,
                marks: col(r, 5, ctx)?,
                checked_marks: col(r, 6, ctx)?,
            });
        }
        Ok(Some(pass))
    }

    /// One fenced transaction: the old ranges go and the new ones come together, so the
    /// stored ranges always cover every key.
    async fn start_verify_pass(
        &self,
        lock: &RunnerLock,
        shape: &str,
        ranges: &[KeyRange],
    ) -> Result<(), EngineError> {
        let ctx = "storing the verify ranges";
        let json = |b: &Option<Vec<String>>| -> Value {
            match b {
                Some(k) => Value::from(serde_json::to_string(k).unwrap_or_default()),
                None => Value::NULL,
            }
        };
        let mut conn = lock.session().await;
        let (mut tx, _) = fenced(&mut conn, lock, ctx).await?;
        tx.exec_drop(
            "DELETE FROM `splice`.`verify_ranges` WHERE migration = ?",
            (&lock.name,),
        )
        .await
        .map_err(|e| EngineError::my(ctx, &e))?;
        // The bound as a number when it is one integer (a one-column integer key's).
        let number = |b: &Option<Vec<String>>| -> Value {
            match b.as_deref() {
                Some([v]) if v.parse::<i128>().is_ok() => Value::from(v.as_str()),
                _ => Value::NULL,
            }
        };
        // Multi-row inserts of up to 500 ranges each.
        for (n, group) in ranges.chunks(500).enumerate() {
            let values = vec!["(?, ?, ?, ?, ?, ?)"; group.len()].join(", ");
            let mut params = Vec::with_capacity(group.len() * 6);
            for (i, r) in group.iter().enumerate() {
                params.push(Value::from(lock.name.clone()));
                params.push(Value::from((n * 500 + i) as i64));
                params.push(Value::from(shape));
                params.push(json(&r.lower));
                params.push(json(&r.upper));
                params.push(number(&r.upper));
            }
            tx.exec_drop(
                format!(
                    "INSERT INTO `splice`.`verify_ranges` \
                     (migration, idx, shape, lower_key, upper_key, upper_num) VALUES {values}"
                ),
                params,
            )
            .await
            .map_err(|e| EngineError::my(ctx, &e))?;
        }
        tx.commit().await.map_err(|e| EngineError::my(ctx, &e))
    }

    async fn record_verify_ranges(
        &self,
        lock: &RunnerLock,
        results: &[RangeResult],
    ) -> Result<(), EngineError> {
        if results.is_empty() {
            return Ok(());
        }
        let ctx = "recording the verify ranges";
        let mut conn = lock.session().await;
        let (mut tx, _) = fenced(&mut conn, lock, ctx).await?;
        tx.exec_batch(
            "UPDATE `splice`.`verify_ranges` SET source_digest = ?, target_digest = ?, \
               `rows` = ?, passed = ?, checked_marks = ?, checked_at = CURRENT_TIMESTAMP(6) \
             WHERE migration = ? AND idx = ?",
            results.iter().map(|r| {
                (
                    r.source_digest.to_vec(),
                    r.target_digest.to_vec(),
                    r.rows,
                    r.passed,
                    r.checked_marks,
                    lock.name.as_str(),
                    r.idx,
                )
            }),
        )
        .await
        .map_err(|e| EngineError::my(ctx, &e))?;
        tx.commit().await.map_err(|e| EngineError::my(ctx, &e))
    }

    async fn forget_verify_ranges(&self, lock: &RunnerLock) -> Result<(), EngineError> {
        fenced_write(
            lock,
            "forgetting the stored verify ranges",
            "DELETE FROM `splice`.`verify_ranges` WHERE migration = ?",
            vec![Value::from(lock.name.clone())],
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_names_fit_the_servers_limit_and_stay_distinct() {
        assert_eq!(lock_name("orders_v2"), "splice.migration.orders_v2");
        let a = lock_name(&"a".repeat(63));
        let b = lock_name(&format!("{}b", "a".repeat(62)));
        assert!(a.len() <= 64 && b.len() <= 64, "{a} {b}");
        assert_ne!(a, b);
    }
}
