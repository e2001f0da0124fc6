//! PostgreSQL's state store: the `splice` schema inside the target database. Migrations, their
//! phase, backfill checkpoints, verify results and an append-only history of transitions; and
//! the runner lock (advisory lock + fencing token) that lets one process at a time drive a
//! migration.

use super::Postgres;
use crate::adapter::StateStore;
use crate::error::Refusal;
use crate::seam::{KeyRange, RangeResult, RateLimit, StoredPass, StoredRange, VerifyReport};
use crate::state::{
    actor, Checkpoint, Event, Figure, LastVerify, MigrationRecord, Phase, PhaseChange,
    QuarantineEntry, Transition,
};
use crate::EngineError;
use serde_json::Value as Json;
use tokio_postgres::{Client, GenericClient};

/// The statements that create the state schema; idempotent, additive only.
pub const SCHEMA_DDL: &[&str] = &[
    "CREATE SCHEMA IF NOT EXISTS splice",
    // Which splice versions of this list were applied (see `schema_version`).
    "CREATE TABLE IF NOT EXISTS splice.schema_versions (version text PRIMARY KEY)",
    "CREATE TABLE IF NOT EXISTS splice.migrations (
    name text PRIMARY KEY,
    spec text NOT NULL,
    phase text NOT NULL,
    fence bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    backfill_last_key text[],
    backfill_done boolean NOT NULL DEFAULT false,
    rows_copied bigint NOT NULL DEFAULT 0,
    rows_total bigint NOT NULL DEFAULT 0,
    backfill_rate double precision,
    rate_limit integer,
    lock_ms double precision,
    quarantined_as text,
    quarantine_until timestamptz
)",
    "CREATE TABLE IF NOT EXISTS splice.history (
    id bigserial PRIMARY KEY,
    migration text NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    actor text NOT NULL,
    from_phase text,
    to_phase text NOT NULL,
    figures jsonb NOT NULL DEFAULT '{}'
)",
    // Requests made of a migration that are not steps (pause, resume, throttle, cutover and
    // rollback asked of the daemon): kept apart from `history`, which the engine reads.
    "CREATE TABLE IF NOT EXISTS splice.events (
    id bigserial PRIMARY KEY,
    migration text NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    action text NOT NULL,
    caller text NOT NULL,
    actor text NOT NULL,
    reason text,
    outcome text
)",
    "CREATE INDEX IF NOT EXISTS events_migration ON splice.events (migration, id)",
    "CREATE TABLE IF NOT EXISTS splice.verify_results (
    id bigserial PRIMARY KEY,
    migration text NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    passed boolean NOT NULL,
    rows_checked bigint NOT NULL,
    ranges bigint NOT NULL,
    rechecked bigint NOT NULL,
    diverged_keys jsonb NOT NULL,
    seconds double precision NOT NULL
)",
    "ALTER TABLE splice.migrations ADD COLUMN IF NOT EXISTS rate_limit integer",
    // What the running sync copies at and why it pauses, for `splice status`.
    "ALTER TABLE splice.migrations ADD COLUMN IF NOT EXISTS sync_rate integer",
    "ALTER TABLE splice.migrations ADD COLUMN IF NOT EXISTS sync_rate_source text",
    "ALTER TABLE splice.migrations ADD COLUMN IF NOT EXISTS sync_paused text",
    // Before splice.verify_ranges: verify skips this list while that table holds ranges.
    "ALTER TABLE splice.verify_results ADD COLUMN IF NOT EXISTS kind text NOT NULL DEFAULT 'full'",
    "ALTER TABLE splice.verify_results ADD COLUMN IF NOT EXISTS ranges_total bigint",
    // Incremental verify: the last pass's key ranges, what each one's last check found, and
    // capture's marks (`marks` grows with every applied batch holding one of its keys; the
    // range is vouched for while `passed` and `marks = checked_marks`).
    "CREATE TABLE IF NOT EXISTS splice.verify_ranges (
    migration text NOT NULL,
    idx integer NOT NULL,
    shape text NOT NULL,
    lower_key text[],
    upper_key text[],
    source_digest bytea,
    target_digest bytea,
    rows bigint,
    passed boolean NOT NULL DEFAULT false,
    checked_at timestamptz,
    marks bigint NOT NULL DEFAULT 0,
    checked_marks bigint,
    PRIMARY KEY (migration, idx)
)",
    // Capture drains by writing a marker here and reading the stream until the marker arrives:
    // everything committed before it has then been applied.
    "CREATE TABLE IF NOT EXISTS splice.sync_marker (
    migration text NOT NULL,
    id bigint NOT NULL,
    PRIMARY KEY (migration, id)
)",
    // The impact budget's heartbeat: one row per migration, updated every 100 ms while a sync
    // runs (a durable commit, timed); removed with the migration's appliers.
    "CREATE TABLE IF NOT EXISTS splice.heartbeat (
    migration text PRIMARY KEY,
    beats bigint NOT NULL DEFAULT 0
)",
    // What the running sync's impact budget measured and decided, for `splice status`.
    "ALTER TABLE splice.migrations ADD COLUMN IF NOT EXISTS sync_impact jsonb",
];

async fn schema_exists(db: &impl GenericClient) -> Result<bool, EngineError> {
    let row = db
        .query_one("SELECT to_regclass('splice.migrations') IS NOT NULL", &[])
        .await
        .map_err(|e| EngineError::db("looking for the splice state schema", e))?;
    Ok(row.get(0))
}

/// The state store's version: a digest of [`SCHEMA_DDL`]. A splice whose schema adds a table
/// or a column finds a store an older splice made without it, and brings it up to date
/// (additively) before reading it. Each version that did is listed, so processes of two
/// versions side by side do not take turns re-running the DDL.
fn schema_version() -> String {
    let mut digest = blake3::Hasher::new();
    for ddl in SCHEMA_DDL {
        digest.update(ddl.as_bytes());
        digest.update(b"\0");
    }
    digest.finalize().to_hex()[..16].to_string()
}

/// Whether this splice's version of the state schema was applied to the store.
async fn has_this_version(db: &Client) -> Result<bool, EngineError> {
    let row = db
        .query_one(
            "SELECT to_regclass('splice.schema_versions') IS NOT NULL",
            &[],
        )
        .await
        .map_err(|e| EngineError::db("looking for the state schema's version", e))?;
    if !row.get::<_, bool>(0) {
        return Ok(false);
    }
    let row = db
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM splice.schema_versions WHERE version = $1)",
            &[&schema_version()],
        )
        .await
        .map_err(|e| EngineError::db("reading the state schema's version", e))?;
    Ok(row.get(0))
}

/// Brings a store an older splice made up to date before it is read (nothing when it is
/// current: one query).
async fn upgrade_if_older(db: &Client) -> Result<(), EngineError> {
    if has_this_version(db).await? {
        return Ok(());
    }
    apply_schema(db).await
}

/// Creates the state store, or adds what an older splice's lacks (idempotent, additive only).
async fn apply_schema(db: &Client) -> Result<(), EngineError> {
    // Never adopt a `splice` schema another role controls: the state store's tables decide
    // what splice drops.
    super::catalog::ensure_own_schema(db, "splice").await?;
    if has_this_version(db).await? {
        return Ok(());
    }
    for ddl in SCHEMA_DDL {
        db.batch_execute(ddl)
            .await
            .map_err(|e| EngineError::db("creating the splice state schema", e))?;
    }
    db.execute(
        "INSERT INTO splice.schema_versions (version) VALUES ($1) ON CONFLICT DO NOTHING",
        &[&schema_version()],
    )
    .await
    .map_err(|e| EngineError::db("recording the state schema's version", e))?;
    Ok(())
}

/// The columns `record` reads, in its order.
const MIGRATION_COLUMNS: &str = "SELECT name, spec, phase, fence, backfill_last_key, backfill_done,
        rows_copied, rows_total, backfill_rate, lock_ms, quarantined_as,
        to_char(quarantine_until AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
        coalesce(quarantine_until <= now(), false), rate_limit, sync_rate, sync_rate_source,
        sync_paused, sync_impact
     FROM splice.migrations";

fn record(r: &tokio_postgres::Row) -> Result<MigrationRecord, EngineError> {
    let phase_text: String = r.get(2);
    let phase = Phase::parse(&phase_text).ok_or_else(|| {
        EngineError::Missing(format!(
            "splice.migrations has unknown phase `{phase_text}`; was it written by a newer splice?"
        ))
    })?;
    Ok(MigrationRecord {
        name: r.get(0),
        spec: r.get(1),
        phase,
        fence: r.get(3),
        backfill_last_key: r.get(4),
        backfill_done: r.get(5),
        rows_copied: r.get(6),
        rows_total: r.get(7),
        backfill_rate: r.get(8),
        sync_throttle: match (r.get::<_, Option<i32>>(14), r.get::<_, Option<String>>(15)) {
            (Some(rate), Some(source)) => Some(crate::state::SyncThrottle {
                rows_per_second: rate.max(0) as u32,
                source,
                paused: r.get(16),
            }),
            _ => None,
        },
        lock_ms: r.get(9),
        quarantined_as: r.get(10),
        quarantine_until: r.get(11),
        quarantine_expired: r.get(12),
        rate_limit: r
            .get::<_, Option<i32>>(13)
            .map(|r| RateLimit::from_rows_per_second(r.max(0) as u32)),
        // Written only by `save_impact`; a value this version cannot read is left out.
        sync_impact: r
            .get::<_, Option<serde_json::Value>>(17)
            .and_then(|v| serde_json::from_value(v).ok()),
    })
}

/// The right to drive one migration: a session advisory lock on a connection of its own, and
/// a fencing token. Every state write checks the token, so a runner that lost its lock (its
/// session died while it kept going) cannot write.
pub struct RunnerLock {
    conn: Client,
    pub name: String,
    pub fence: i64,
}

impl RunnerLock {
    /// Takes the lock for `name` or fails at once naming who to wait for.
    pub async fn acquire(url: &str, name: &str) -> Result<RunnerLock, EngineError> {
        let conn = super::connect(url).await?;
        // A runner that just finished (or was killed) may still be holding its session for a
        // moment while the server tears it down: try for a short while before giving up.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        let got = loop {
            let got: bool = conn
                .query_one(
                    "SELECT pg_try_advisory_lock(hashtext('splice.migration'), hashtext($1))",
                    &[&name],
                )
                .await
                .map_err(|e| EngineError::db("taking the runner lock", e))?
                .get(0);
            if got || std::time::Instant::now() > deadline {
                break got;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        };
        if !got {
            let holder = conn
                .query_opt(
                    "SELECT a.pid, coalesce(a.application_name, ''),
                            coalesce(a.client_hostname, host(a.client_addr), 'a local socket')
                     FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                     WHERE l.locktype = 'advisory' AND l.classid::int = hashtext('splice.migration')
                       AND l.objid::int = hashtext($1) AND l.granted LIMIT 1",
                    &[&name],
                )
                .await
                .ok()
                .flatten()
                .map(|r| {
                    (
                        r.get::<_, i32>(0),
                        r.get::<_, String>(1),
                        r.get::<_, String>(2),
                    )
                });
            // A daemon records the address of its API when it takes a migration.
            let daemon_api = conn
                .query_opt(
                    "SELECT caller FROM splice.events WHERE migration = $1 AND action = $2
                     ORDER BY id DESC LIMIT 1",
                    &[&name, &crate::state::DAEMON_STARTED],
                )
                .await
                .ok()
                .flatten()
                .map(|r| r.get::<_, String>(0));
            return Err(EngineError::Busy(busy_message(name, holder, daemon_api)));
        }
        Ok(RunnerLock {
            conn,
            name: name.into(),
            fence: 0,
        })
    }

    /// Bumps the fencing token; call once the migration row exists.
    pub async fn fence(&mut self) -> Result<(), EngineError> {
        let row = self
            .conn
            .query_opt(
                "UPDATE splice.migrations SET fence = fence + 1 WHERE name = $1 RETURNING fence",
                &[&self.name],
            )
            .await
            .map_err(|e| EngineError::db("taking the fencing token", e))?;
        self.fence = row.map(|r| r.get(0)).unwrap_or(0);
        Ok(())
    }

    pub fn client(&self) -> &Client {
        &self.conn
    }

    fn check_fenced(&self, rows: u64) -> Result<(), EngineError> {
        if rows == 0 {
            return Err(self.stale());
        }
        Ok(())
    }

    /// The error of a write refused because another runner took the migration over.
    pub(super) fn stale(&self) -> EngineError {
        EngineError::Busy(format!(
            "migration {}: another runner took over (fencing token {} is stale); this \
             process stops without writing",
            self.name, self.fence
        ))
    }
}

/// Who holds a migration (backend pid, application name, client host) and what to do: a
/// `splice sync` without `--until-caught-up` follows changes until it is stopped, and a
/// `splice daemon` never finishes, so waiting for either is no advice.
fn busy_message(
    name: &str,
    holder: Option<(i32, String, String)>,
    daemon_api: Option<String>,
) -> String {
    let Some((pid, command, host)) = holder else {
        return format!(
            "migration {name} is being run by another splice process (it let go as this one \
             looked: run this again)"
        );
    };
    let command = if command.is_empty() {
        "a session without an application_name".to_string()
    } else {
        format!("`{command}`")
    };
    let advice = if command.starts_with("`splice daemon") {
        let api = daemon_api.unwrap_or_else(|| "the daemon's address".into());
        format!(
            "a splice daemon drives this migration, its API at {api}: ask it for the step \
             (POST {api}/api/v1/migrations/{name}/cutover or …/rollback), or pause it (POST \
             {api}/api/v1/migrations/{name}/pause; it lets go of the migration) or stop it \
             (SIGTERM; its work is checkpointed)"
        )
    } else if command.starts_with("`splice sync") {
        "a sync keeps following changes until it is stopped: stop it (Ctrl-C or SIGTERM; its \
         work is checkpointed), or let it run and use `splice status` to watch"
            .to_string()
    } else {
        "let it finish, or stop it (its work is checkpointed)".to_string()
    };
    format!(
        "migration {name} is being run by another splice process: {command} from {host}, \
         backend pid {pid}; {advice}, then run this again"
    )
}

/// Records `change` and its history row on `db` (the lock's session, or the session whose
/// transaction holds the change it records), fenced and as a compare-and-set on `change.from`.
pub(super) async fn record_change(
    db: &impl GenericClient,
    lock: &RunnerLock,
    change: &PhaseChange,
) -> Result<(), EngineError> {
    let n = db
        .execute(
            "WITH m AS (UPDATE splice.migrations SET phase = $2, updated_at = now()
                        WHERE name = $1 AND fence = $3 AND phase = $5 RETURNING name)
             INSERT INTO splice.history (migration, actor, from_phase, to_phase, figures)
             SELECT name, $4, $5, $2, $6 FROM m",
            &[
                &lock.name,
                &change.to.as_str(),
                &lock.fence,
                &actor(),
                &change.from.as_str(),
                &change.figures,
            ],
        )
        .await
        .map_err(|e| EngineError::db("recording the phase transition", e))?;
    if n == 1 {
        return Ok(());
    }
    let now = db
        .query_opt(
            "SELECT phase, fence FROM splice.migrations WHERE name = $1",
            &[&lock.name],
        )
        .await
        .map_err(|e| EngineError::db("reading the migration's phase", e))?;
    match now {
        Some(row) if row.get::<_, i64>(1) == lock.fence => Err(Refusal::PhaseChanged {
            name: lock.name.clone(),
            expected: change.from,
            found: row.get(0),
        }
        .into()),
        _ => Err(lock.stale()),
    }
}

/// Records (or with `None` clears) the quarantine entry on `db`, fenced.
pub(super) async fn record_quarantine(
    db: &impl GenericClient,
    lock: &RunnerLock,
    quarantine: Option<&QuarantineEntry>,
) -> Result<(), EngineError> {
    let quarantined_as = quarantine.map(|q| q.quarantined_as.as_str());
    let seconds = quarantine.map(|q| q.seconds);
    let n = db
        .execute(
            "UPDATE splice.migrations SET quarantined_as = $2,
                    quarantine_until = CASE WHEN $3::float8 IS NULL THEN NULL
                                            ELSE now() + make_interval(secs => $3::float8) END
             WHERE name = $1 AND fence = $4",
            &[&lock.name, &quarantined_as, &seconds, &lock.fence],
        )
        .await
        .map_err(|e| EngineError::db("recording the quarantine", e))?;
    lock.check_fenced(n)
}

impl StateStore for Postgres {
    type Lock = RunnerLock;

    async fn ensure_state(&self, db: &Client) -> Result<(), EngineError> {
        apply_schema(db).await
    }

    async fn register(&self, db: &Client, name: &str, spec_text: &str) -> Result<(), EngineError> {
        db.execute(
            "INSERT INTO splice.migrations (name, spec, phase) VALUES ($1, $2, 'planned')
             ON CONFLICT (name) DO NOTHING",
            &[&name, &spec_text],
        )
        .await
        .map_err(|e| EngineError::db("registering the migration", e))?;
        Ok(())
    }

    async fn reregister(&self, lock: &RunnerLock, spec_text: &str) -> Result<(), EngineError> {
        let n = lock
            .conn
            .execute(
                "UPDATE splice.migrations SET spec = $3
                  WHERE name = $1 AND fence = $2 AND phase = 'rolled_back'",
                &[&lock.name, &lock.fence, &spec_text],
            )
            .await
            .map_err(|e| EngineError::db("re-registering the migration", e))?;
        lock.check_fenced(n)
    }

    async fn load_record(
        &self,
        db: &Client,
        name: &str,
    ) -> Result<Option<MigrationRecord>, EngineError> {
        if !schema_exists(db).await? {
            return Ok(None);
        }
        upgrade_if_older(db).await?;
        let row = db
            .query_opt(&format!("{MIGRATION_COLUMNS} WHERE name = $1"), &[&name])
            .await
            .map_err(|e| EngineError::db(format!("reading migration {name}"), e))?;
        row.map(|r| record(&r)).transpose()
    }

    async fn load_records(&self, db: &Client) -> Result<Vec<MigrationRecord>, EngineError> {
        if !schema_exists(db).await? {
            return Ok(Vec::new());
        }
        upgrade_if_older(db).await?;
        let rows = db
            .query(&format!("{MIGRATION_COLUMNS} ORDER BY created_at"), &[])
            .await
            .map_err(|e| EngineError::db("reading migrations", e))?;
        rows.iter().map(record).collect()
    }

    async fn history(&self, db: &Client, name: &str) -> Result<Vec<Transition>, EngineError> {
        let rows = db
            .query(
                "SELECT to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), actor,
                        from_phase, to_phase, figures
                 FROM splice.history WHERE migration = $1 ORDER BY id",
                &[&name],
            )
            .await
            .map_err(|e| EngineError::db(format!("reading the history of {name}"), e))?;
        Ok(rows
            .iter()
            .map(|r| Transition {
                at: r.get(0),
                actor: r.get(1),
                from: r.get(2),
                to: r.get(3),
                figures: r.get(4),
            })
            .collect())
    }

    async fn record_event(&self, db: &Client, name: &str, e: &Event) -> Result<bool, EngineError> {
        let n = db
            .execute(
                "INSERT INTO splice.events (migration, action, caller, actor, reason, outcome)
                 SELECT name, $2, $3, $4, $5, $6 FROM splice.migrations WHERE name = $1",
                &[&name, &e.action, &e.caller, &e.actor, &e.reason, &e.outcome],
            )
            .await
            .map_err(|err| EngineError::db(format!("recording a request of {name}"), err))?;
        Ok(n == 1)
    }

    async fn events(
        &self,
        db: &Client,
        name: &str,
        limit: usize,
    ) -> Result<Vec<Event>, EngineError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = db
            .query(
                "SELECT * FROM (
                    SELECT id, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS at,
                           action, caller, actor, reason, outcome
                    FROM splice.events WHERE migration = $1 ORDER BY id DESC LIMIT $2
                 ) last ORDER BY id",
                &[&name, &limit],
            )
            .await
            .map_err(|e| EngineError::db(format!("reading the requests of {name}"), e))?;
        Ok(rows
            .iter()
            .map(|r| Event {
                at: r.get(1),
                action: r.get(2),
                caller: r.get(3),
                actor: r.get(4),
                reason: r.get(5),
                outcome: r.get(6),
            })
            .collect())
    }

    async fn runner(
        &self,
        db: &Client,
        name: &str,
    ) -> Result<Option<crate::state::Runner>, EngineError> {
        let row = db
            .query_opt(
                "SELECT a.pid, coalesce(a.application_name, ''),
                        coalesce(a.client_hostname, host(a.client_addr), 'a local socket')
                 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                 WHERE l.locktype = 'advisory' AND l.classid::int = hashtext('splice.migration')
                   AND l.objid::int = hashtext($1) AND l.granted LIMIT 1",
                &[&name],
            )
            .await
            .map_err(|e| EngineError::db("looking for the migration's runner", e))?;
        Ok(row.map(|r| crate::state::Runner {
            pid: r.get(0),
            command: r.get(1),
            host: r.get(2),
        }))
    }

    async fn last_verify(
        &self,
        db: &Client,
        name: &str,
    ) -> Result<Option<LastVerify>, EngineError> {
        let row = db
            .query_opt(
                "SELECT passed, diverged_keys,
                        to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),
                        rows_checked
                 FROM splice.verify_results WHERE migration = $1 ORDER BY id DESC LIMIT 1",
                &[&name],
            )
            .await
            .map_err(|e| EngineError::db("reading the last verify result", e))?;
        Ok(row.map(|r| LastVerify {
            passed: r.get(0),
            diverged_keys: r.get(1),
            at: r.get(2),
            rows_checked: r.get(3),
        }))
    }

    async fn set_rate_limit(
        &self,
        db: &Client,
        name: &str,
        limit: Option<RateLimit>,
    ) -> Result<bool, EngineError> {
        let rows_per_second: Option<i32> =
            limit.map(|l| l.rows_per_second().min(i32::MAX as u32) as i32);
        let n = db
            .execute(
                "UPDATE splice.migrations SET rate_limit = $2 WHERE name = $1",
                &[&name, &rows_per_second],
            )
            .await
            .map_err(|e| EngineError::db("setting the rate limit", e))?;
        Ok(n == 1)
    }

    async fn acquire_lock(&self, name: &str) -> Result<RunnerLock, EngineError> {
        let mut lock = RunnerLock::acquire(self.url(), name).await?;
        lock.fence().await?;
        Ok(lock)
    }

    /// Records a transition (phase change + history row) if this runner still holds the fence
    /// and the migration is in `change.from`.
    async fn transition(&self, lock: &RunnerLock, change: &PhaseChange) -> Result<(), EngineError> {
        record_change(&lock.conn, lock, change).await
    }

    async fn checkpoint(
        &self,
        lock: &RunnerLock,
        checkpoint: &Checkpoint,
    ) -> Result<Option<RateLimit>, EngineError> {
        let row = lock
            .conn
            .query_opt(
                "UPDATE splice.migrations SET backfill_last_key = coalesce($2, backfill_last_key),
                        rows_copied = $3, backfill_done = $4,
                        backfill_rate = coalesce($6, backfill_rate), updated_at = now(),
                        sync_rate = CASE WHEN $7 THEN $8 ELSE sync_rate END,
                        sync_rate_source = CASE WHEN $7 THEN $9 ELSE sync_rate_source END,
                        sync_paused = CASE WHEN $7 THEN $10 ELSE sync_paused END
                 WHERE name = $1 AND fence = $5 RETURNING rate_limit",
                &[
                    &lock.name,
                    &checkpoint.last_key,
                    &checkpoint.rows_copied,
                    &checkpoint.done,
                    &lock.fence,
                    &checkpoint.rows_per_second,
                    &checkpoint.throttle.is_some(),
                    &checkpoint
                        .throttle
                        .as_ref()
                        .map(|t| t.rows_per_second.min(i32::MAX as u32) as i32),
                    &checkpoint.throttle.as_ref().map(|t| t.source.clone()),
                    &checkpoint.throttle.as_ref().and_then(|t| t.paused.clone()),
                ],
            )
            .await
            .map_err(|e| EngineError::db("saving the backfill checkpoint", e))?;
        match row {
            Some(r) => Ok(r
                .get::<_, Option<i32>>(0)
                .map(|r| RateLimit::from_rows_per_second(r.max(0) as u32))),
            None => lock.check_fenced(0).map(|_| None),
        }
    }

    async fn save_impact(
        &self,
        lock: &RunnerLock,
        impact: Option<&crate::state::Impact>,
    ) -> Result<(), EngineError> {
        let value = impact.and_then(|i| serde_json::to_value(i).ok());
        let n = lock
            .conn
            .execute(
                "UPDATE splice.migrations SET sync_impact = $2 WHERE name = $1 AND fence = $3",
                &[&lock.name, &value, &lock.fence],
            )
            .await
            .map_err(|e| EngineError::db("saving the impact budget's figures", e))?;
        lock.check_fenced(n)
    }

    async fn set_figure(
        &self,
        lock: &RunnerLock,
        figure: Figure,
        value: f64,
    ) -> Result<(), EngineError> {
        let sql = match figure {
            Figure::RowsTotal => {
                "UPDATE splice.migrations SET rows_total = $2::float8::bigint WHERE name = $1 AND fence = $3"
            }
            Figure::LockMs => {
                "UPDATE splice.migrations SET lock_ms = $2 WHERE name = $1 AND fence = $3"
            }
        };
        let n = lock
            .conn
            .execute(sql, &[&lock.name, &value, &lock.fence])
            .await
            .map_err(|e| EngineError::db("saving a figure", e))?;
        lock.check_fenced(n)
    }

    async fn reset_backfill(&self, lock: &RunnerLock) -> Result<(), EngineError> {
        let n = lock
            .conn
            .execute(
                "UPDATE splice.migrations SET backfill_last_key = NULL, backfill_done = false,
                        rows_copied = 0 WHERE name = $1 AND fence = $2",
                &[&lock.name, &lock.fence],
            )
            .await
            .map_err(|e| EngineError::db("resetting the backfill checkpoint", e))?;
        lock.check_fenced(n)
    }

    async fn set_quarantine(
        &self,
        lock: &RunnerLock,
        quarantine: Option<&QuarantineEntry>,
    ) -> Result<(), EngineError> {
        record_quarantine(&lock.conn, lock, quarantine).await
    }

    async fn record_verify(
        &self,
        lock: &RunnerLock,
        result: &VerifyReport,
    ) -> Result<(), EngineError> {
        let keys = serde_json::to_value(&result.diverged).unwrap_or(Json::Null);
        // Fenced like every state write: nothing is recorded once another runner took over.
        let n = lock
            .conn
            .execute(
                "INSERT INTO splice.verify_results
                    (migration, passed, rows_checked, ranges, rechecked, diverged_keys, seconds,
                     kind, ranges_total)
                 SELECT $1, $2, $3, $4, $5, $6, $7, $9, $10
                  WHERE EXISTS (SELECT 1 FROM splice.migrations WHERE name = $1 AND fence = $8)",
                &[
                    &lock.name,
                    &result.passed(),
                    &(result.rows_checked as i64),
                    &(result.ranges as i64),
                    &(result.rechecked as i64),
                    &keys,
                    &result.seconds,
                    &lock.fence,
                    &result.kind.to_string(),
                    &(result.ranges_total as i64),
                ],
            )
            .await
            .map_err(|e| EngineError::db("recording the verify result", e))?;
        lock.check_fenced(n)
    }

    async fn verify_ranges(
        &self,
        db: &Client,
        name: &str,
    ) -> Result<Option<StoredPass>, EngineError> {
        let exists: bool = db
            .query_one(
                "SELECT to_regclass('splice.verify_ranges') IS NOT NULL",
                &[],
            )
            .await
            .map_err(|e| EngineError::db("looking for splice.verify_ranges", e))?
            .get(0);
        if !exists {
            return Ok(None);
        }
        let rows = db
            .query(
                "SELECT idx, shape, lower_key, upper_key, passed, marks, checked_marks
                   FROM splice.verify_ranges WHERE migration = $1 ORDER BY idx",
                &[&name],
            )
            .await
            .map_err(|e| EngineError::db("reading the stored verify ranges", e))?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let mut pass = StoredPass {
            shape: first.get(1),
            ranges: Vec::with_capacity(rows.len()),
        };
        for r in &rows {
            let shape: String = r.get(1);
            if shape != pass.shape {
                // Ranges of two shapes: no pass wrote that; vouch for nothing.
                pass.shape.clear();
            }
            pass.ranges.push(StoredRange {
                idx: r.get(0),
                range: KeyRange {
                    lower: r.get(2),
                    upper: r.get(3),
                },
                passed: r.get(4),
                marks: r.get(5),
                checked_marks: r.get(6),
            });
        }
        Ok(Some(pass))
    }

    async fn start_verify_pass(
        &self,
        lock: &RunnerLock,
        shape: &str,
        ranges: &[KeyRange],
    ) -> Result<(), EngineError> {
        // One transaction: the old ranges go and the new ones come together, so the stored
        // ranges always cover every key.
        let uppers: Vec<String> = ranges
            .iter()
            .filter_map(|r| r.upper.clone())
            .flatten()
            .collect();
        let key_len = ranges
            .iter()
            .find_map(|r| r.upper.as_ref().map(|u| u.len()))
            .unwrap_or(1) as i32;
        let n = ranges.len() as i32;
        in_transaction(&lock.conn, "storing the verify ranges", async {
            lock.conn
                .execute(
                    "DELETE FROM splice.verify_ranges WHERE migration = $1
                       AND EXISTS (SELECT 1 FROM splice.migrations WHERE name = $1 AND fence = $2)",
                    &[&lock.name, &lock.fence],
                )
                .await
                .map_err(|e| EngineError::db("replacing the stored verify ranges", e))?;
            // Range i is (upper of i - 1, upper of i]: the first open below, the last above.
            let inserted = lock
                .conn
                .execute(
                    "INSERT INTO splice.verify_ranges (migration, idx, shape, lower_key, upper_key)
                     SELECT $1, g.i, $3,
                            CASE WHEN g.i = 0 THEN NULL
                                 ELSE ($4::text[])[(g.i - 1) * $5 + 1 : g.i * $5] END,
                            CASE WHEN g.i = $6 - 1 THEN NULL
                                 ELSE ($4::text[])[g.i * $5 + 1 : (g.i + 1) * $5] END
                       FROM generate_series(0, $6 - 1) AS g(i)
                      WHERE EXISTS (SELECT 1 FROM splice.migrations WHERE name = $1 AND fence = $2)",
                    &[&lock.name, &lock.fence, &shape, &uppers, &key_len, &n],
                )
                .await
                .map_err(|e| EngineError::db("storing the verify ranges", e))?;
            lock.check_fenced(inserted)
        })
        .await
    }

    async fn record_verify_ranges(
        &self,
        lock: &RunnerLock,
        results: &[RangeResult],
    ) -> Result<(), EngineError> {
        if results.is_empty() {
            return Ok(());
        }
        let idx: Vec<i32> = results.iter().map(|r| r.idx).collect();
        let source: Vec<Vec<u8>> = results.iter().map(|r| r.source_digest.to_vec()).collect();
        let target: Vec<Vec<u8>> = results.iter().map(|r| r.target_digest.to_vec()).collect();
        let rows: Vec<i64> = results.iter().map(|r| r.rows as i64).collect();
        let passed: Vec<bool> = results.iter().map(|r| r.passed).collect();
        let marks: Vec<i64> = results.iter().map(|r| r.checked_marks).collect();
        let n = lock
            .conn
            .execute(
                "UPDATE splice.verify_ranges r
                    SET source_digest = u.s, target_digest = u.t, rows = u.n, passed = u.p,
                        checked_marks = u.m, checked_at = now()
                   FROM unnest($3::int[], $4::bytea[], $5::bytea[], $6::bigint[], $7::bool[],
                               $8::bigint[]) AS u(i, s, t, n, p, m)
                  WHERE r.migration = $1 AND r.idx = u.i
                    AND EXISTS (SELECT 1 FROM splice.migrations WHERE name = $1 AND fence = $2)",
                &[
                    &lock.name,
                    &lock.fence,
                    &idx,
                    &source,
                    &target,
                    &rows,
                    &passed,
                    &marks,
                ],
            )
            .await
            .map_err(|e| EngineError::db("recording the verify ranges", e))?;
        lock.check_fenced(n)
    }

    async fn forget_verify_ranges(&self, lock: &RunnerLock) -> Result<(), EngineError> {
        let exists: bool = lock
            .conn
            .query_one(
                "SELECT to_regclass('splice.verify_ranges') IS NOT NULL",
                &[],
            )
            .await
            .map_err(|e| EngineError::db("looking for splice.verify_ranges", e))?
            .get(0);
        if !exists {
            return Ok(());
        }
        // Fenced: a runner that lost its lock deletes nothing (its fence no longer matches).
        let fenced: i64 = lock
            .conn
            .query_one(
                "WITH f AS (SELECT 1 FROM splice.migrations WHERE name = $1 AND fence = $2),
                      d AS (DELETE FROM splice.verify_ranges
                             WHERE migration = $1 AND EXISTS (SELECT 1 FROM f))
                 SELECT count(*) FROM f",
                &[&lock.name, &lock.fence],
            )
            .await
            .map_err(|e| EngineError::db("forgetting the stored verify ranges", e))?
            .get(0);
        lock.check_fenced(fenced as u64)
    }
}

/// Runs `body` inside `BEGIN … COMMIT` on `db` (a shared client: the runner lock's session),
/// rolling back when it fails.
async fn in_transaction(
    db: &Client,
    what: &str,
    body: impl std::future::Future<Output = Result<(), EngineError>>,
) -> Result<(), EngineError> {
    db.batch_execute("BEGIN")
        .await
        .map_err(|e| EngineError::db(what.to_string(), e))?;
    match body.await {
        Ok(()) => db
            .batch_execute("COMMIT")
            .await
            .map_err(|e| EngineError::db(what.to_string(), e)),
        Err(e) => {
            let _ = db.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}
