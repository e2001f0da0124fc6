//! `EngineError`: every way a migration command can fail, each worded to name the problem and
//! the fix. Callers decide by kind ([`EngineError::is_check_failure`], the variants), never by
//! the text; the CLI maps kinds to exit codes.

use crate::state::Phase;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The migration file cannot be used (shape, syntax).
    #[error("{0}")]
    Spec(#[from] crate::spec::SpecError),
    /// The migration file does not fit the live schema.
    #[error("{0}")]
    Plan(String),
    /// No migration of that name is registered.
    #[error(
        "no migration named {name} in this database; run `splice expand FILE` first \
         (`splice status` lists migrations)"
    )]
    NoSuchMigration { name: String },
    /// A registered migration's name is taken by a different file.
    #[error(
        "a migration named {name} already exists with a different file; names are unique per \
         database — pick a new name, or roll the old one back"
    )]
    DifferentFile { name: String },
    /// A gate between phases is closed: exit code 1.
    #[error("{0}")]
    Refused(#[from] Refusal),
    /// Another runner holds the migration, or fenced this one out.
    #[error("{0}")]
    Busy(String),
    /// Captured changes do not name their row by the migration key.
    #[error(
        "captured changes of {table} do not carry key column {column}; make the table's replica \
         identity cover the migration key (ALTER TABLE … REPLICA IDENTITY USING INDEX <unique \
         index on the key>)"
    )]
    KeyNotCaptured { table: String, column: String },
    /// Something the engine needs from the database is missing or was changed by hand.
    #[error("{0}")]
    Missing(String),
    /// A schema splice keeps its own tables in (its state, quarantine) exists but is controlled
    /// by a role the runner is not; it is refused, never adopted.
    #[error(
        "schema {schema} {why}; splice keeps its state and quarantined tables in schemas of its \
         own and will not use one another role controls (that role could read, rewrite or \
         shadow what splice keeps there): drop or rename that schema if it is not meant for \
         splice, or run splice as a role that owns it"
    )]
    ForeignSchema { schema: String, why: String },
    /// The database refused or failed (the adapter describes it with the server's message).
    #[error("{context}: {message}")]
    Database { context: String, message: String },
    /// The database cannot be reached: the message names the target and the fix.
    #[error("{0}")]
    Connect(#[from] cdc::ConnectError),
    #[error("change capture: {0}")]
    Capture(#[from] cdc::CdcError),
    /// A change stream that must continue (see [`Continuity::Resume`]) is gone or unusable;
    /// the engine turns it into [`Refusal::CaptureLost`] with the way out.
    ///
    /// [`Continuity::Resume`]: crate::seam::Continuity::Resume
    #[error("replication slot {slot} {why}")]
    StreamLost { slot: String, why: String },
    /// What the database's adapter does not do yet (MySQL/MariaDB: the steps
    /// docs/migrations.md lists as not built). Raised before anything is changed.
    #[error(
        "{what} is not built for {database} yet; it was refused before it changed any table \
         (docs/migrations.md, \"MySQL/MariaDB\", lists what works today)"
    )]
    NotBuilt {
        what: String,
        database: &'static str,
    },
}

/// A closed gate: what failed, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The command runs only in another phase (cutover before verify, drop before contract…);
    /// `expected` says where it runs and names the command that comes next.
    #[error("{name} is {phase}; {expected}")]
    WrongPhase {
        name: String,
        phase: Phase,
        expected: String,
    },
    /// Another migration on the same live table is in flight: two copies of one table, two
    /// swaps of one name, cannot both be right.
    #[error(
        "{table} already has a migration in flight: {other} is {phase}. One migration per table \
         at a time: finish {other} (through `splice contract {other}`) or abandon it (`splice \
         abort {other}`; after cutover `splice rollback {other}` first), then expand {name}"
    )]
    TableInFlight {
        name: String,
        table: String,
        other: String,
        phase: Phase,
    },
    /// A later migration of the same table followed this contracted one: the live table no
    /// longer has the shape this migration's rollback would restore from.
    #[error(
        "{name}: {other} was expanded on {table} after {name} was contracted, so the live table \
         is no longer the shape {name} created; roll {other} back first (`splice rollback \
         {other}`, then `splice abort {other}`), then roll back {name}"
    )]
    TableMovedOn {
        name: String,
        table: String,
        other: String,
    },
    /// The server lacks something change capture needs (wal_level, replication rights, a free
    /// slot or WAL sender); each entry names the fix.
    #[error("the server is not ready for change capture (sync would fail):\n  - {}", problems.join("\n  - "))]
    ServerNotReady { problems: Vec<String> },
    #[error(
        "{name}: backfill is not complete ({copied} of ~{total} rows); run `splice sync {name} \
         --until-caught-up` first"
    )]
    BackfillIncomplete {
        name: String,
        copied: i64,
        total: i64,
    },
    #[error("{name}: the last verify did not pass; run `splice verify {name}` until it does")]
    NotVerified { name: String },
    #[error("{name}: {why}")]
    NoReverseSync { name: String, why: String },
    #[error(
        "{name}: cannot carry these over automatically: {objects}; drop and recreate them around \
         the cutover"
    )]
    CannotCarryOver { name: String, objects: String },
    #[error(
        "cannot carry over {object} to the new table: {message}; nothing was swapped. Adjust it \
         (or drop it and recreate it after cutover), then cut over again"
    )]
    CarryOverFailed { object: String, message: String },
    #[error("{name}: capture lag {bytes} bytes is above the bound {bound}; let sync catch up")]
    CaptureLag {
        name: String,
        bytes: u64,
        bound: u64,
    },
    #[error(
        "capture did not catch up within {budget}: the application writes as fast as the \
         applier can re-sync, so the backlog under the lock would be too long; nothing was \
         swapped — cut over when the write load is lower"
    )]
    CaptureBehind { budget: String },
    #[error(
        "capture did not drain within {budget} while the table was locked; nothing was swapped \
         — run sync until it has caught up, then cut over again"
    )]
    DrainUnderLock { budget: String },
    #[error(
        "could not lock {table} within {attempts} attempts; these sessions held it at the last \
         attempt: {holders}. End them (SELECT pg_terminate_backend(pid)) or wait for them, \
         then cut over again; nothing was swapped"
    )]
    LockTimeout {
        table: String,
        attempts: u32,
        holders: String,
    },
    /// A phase change found the migration in another phase than the one it was read in: a
    /// second process moved it in between.
    #[error(
        "{name}: its phase changed while this command ran (expected {expected}, found {found}); \
         nothing was changed — see `splice status {name}`, then run the command again"
    )]
    PhaseChanged {
        name: String,
        expected: Phase,
        found: String,
    },
    /// The new shape silently lacks indexes or constraints the live table has.
    #[error(
        "{name}: the new shape lacks what the live table has: {objects}. After cutover they \
         would be gone (uniqueness unenforced, lookups without their index). Add them to \
         target, or declare them dropped on purpose in the file (drop_indexes = [...], \
         drop_constraints = [...]), or give the change as alter = \"ALTER TABLE …\", which \
         keeps everything"
    )]
    NotCarried { name: String, objects: String },
    /// The source table changed shape after expand.
    #[error(
        "{name}: the source table {table} changed since expand: {changes}. The copy follows the \
         shape expand planned, so this would be lost or mis-copied at cutover. Undo the change, \
         or start again from a file that covers it: `splice abort {name}`, edit the file, then \
         `splice expand FILE`"
    )]
    SourceDrift {
        name: String,
        table: String,
        changes: String,
    },
    /// A change stream the migration depends on vanished or was invalidated: changes made
    /// since were not captured.
    #[error(
        "{name}: capture continuity is broken: replication slot {slot} {why}, so changes made \
         since were not captured and the copy may miss them; splice will not resume from \
         \"now\". {way_out}"
    )]
    CaptureLost {
        name: String,
        slot: String,
        why: String,
        way_out: String,
    },
    #[error(
        "{name}: the quarantine of {table} runs until {until}; drop refuses before then \
         (--force drops it now, and nothing can bring it back)"
    )]
    QuarantineNotExpired {
        name: String,
        table: String,
        until: String,
    },
}

impl EngineError {
    /// True for a failed gate (exit 1) rather than a usage or connection problem (exit 2).
    pub fn is_check_failure(&self) -> bool {
        matches!(self, EngineError::Refused(_))
    }

    /// True when another runner holds (or took over) the migration.
    pub fn is_busy(&self) -> bool {
        matches!(self, EngineError::Busy(_))
    }
}
