//! `splice cdc …`: an operator's view of change capture. `tail` prints committed changes as JSON
//! lines and acknowledges what it printed, like pg_recvlogical with keys.

use crate::duration::parse_duration;
use cdc::{
    BatchLimits, CaptureName, CdcError, Change, ChangeSource, Key, MySqlChangeStream,
    MySqlSourceConfig, PgChangeStream, PgSourceConfig, Position, TableName, Transaction,
};
use clap::{Args, Subcommand};
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use std::io::Write;
use std::time::Duration;

/// Change capture commands.
#[derive(Args)]
pub struct CdcArgs {
    #[command(subcommand)]
    command: CdcCommand,
}

#[derive(Subcommand)]
enum CdcCommand {
    /// Print committed changes to tables as JSON lines, one per change, and acknowledge them.
    #[command(after_help = TAIL_EXAMPLES)]
    Tail(TailArgs),
}

const TAIL_EXAMPLES: &str = "\
Each line is one change:
  {\"op\":\"update\",\"table\":\"public.orders\",\"key\":{\"id\":42},\"old_key\":{\"id\":41},\"position\":\"0/16B3748\",\"committed_at\":\"2026-11-22T02:13:16.123456Z\"}
old_key appears only when an update changed the key. position is the transaction's commit end
LSN; the slot resumes after the last printed transaction.

Examples:
  # Print the next 10 changes to public.orders, then stop (the slot splice_tail stays):
  splice cdc tail --database-url postgres://app@localhost/app --table public.orders --limit 10

  # Follow two tables until nothing arrives for a minute, then remove the slot and publication:
  SPLICE_DATABASE_URL=postgres://app@localhost/app \\
    splice cdc tail --table orders --table public.customers --idle-timeout 60s --drop-slot

  # MySQL/MariaDB: the binlog from where slot audit stopped (tables are DATABASE.TABLE):
  splice cdc tail mysql://repl:secret@db:3306/ --table shop.orders --slot audit

PostgreSQL needs wal_level=logical, a role with REPLICATION (or superuser), a free replication
slot and WAL sender, and a primary key or replica identity on every table.
MySQL/MariaDB (mysql:// or mariadb://; position is binlog FILE:OFFSET@GTIDS) needs log_bin,
binlog_format=ROW, binlog_row_image=FULL, a server_id, REPLICATION SLAVE and BINLOG MONITOR
(MySQL: REPLICATION CLIENT) grants, privileges on the `splice` database (the slot's position is
kept in splice.cdc_slots), and a primary key on every table. See docs/cdc.md.";

#[derive(Args)]
struct TailArgs {
    /// The database URL, as an argument instead of --database-url.
    #[arg(value_name = "URL", conflicts_with = "database_url")]
    url: Option<String>,

    /// PostgreSQL URL (libpq URL or key=value form; sslmode, sslrootcert, sslcert and sslkey
    /// are honoured), or MySQL/MariaDB URL (mysql://user:password@host:port/, ssl-mode and
    /// ssl-ca honoured); defaults to $SPLICE_DATABASE_URL, then $DATABASE_URL, then
    /// $PGHOST/$PGPORT/$PGUSER/$PGDATABASE. See docs/connecting.md.
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,

    /// A table to capture, as SCHEMA.TABLE (a bare name means public.NAME; MySQL:
    /// DATABASE.TABLE). Repeatable.
    #[arg(long = "table", value_name = "SCHEMA.TABLE", required = true)]
    tables: Vec<String>,

    /// Replication slot and publication name (created if missing, reused if present). MySQL:
    /// the name of the position kept in splice.cdc_slots.
    #[arg(long, value_name = "NAME", default_value = "splice_tail")]
    slot: String,

    /// Stop at the end of the transaction that holds the Nth change.
    #[arg(long, value_name = "N")]
    limit: Option<u64>,

    /// Stop when nothing arrives for this long (e.g. 500ms, 30s, 5m).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    idle_timeout: Duration,

    /// Skip transactions written under this replication origin (MySQL: marked with this
    /// origin in splice.cdc_marker). Repeatable.
    #[arg(long = "skip-origin", value_name = "ORIGIN")]
    skip_origins: Vec<String>,

    /// Drop the slot and publication on exit (MySQL: the slot's row).
    #[arg(long)]
    drop_slot: bool,
}

pub fn run(args: CdcArgs) -> u8 {
    match args.command {
        CdcCommand::Tail(args) => run_tail(args),
    }
}

/// Why `tail` failed: reported, exit 2. Except [`BrokenPipe`]: a reader that went away
/// (`| head`) ends the tail normally.
///
/// [`BrokenPipe`]: TailError::BrokenPipe
#[derive(Debug, thiserror::Error)]
enum TailError {
    /// No database URL given (the message says how to give one).
    #[error("{0}")]
    DatabaseUrl(String),
    #[error("--table {0:?} is not SCHEMA.TABLE (e.g. public.orders)")]
    Table(String),
    #[error(
        "--table {0:?} is not DATABASE.TABLE (e.g. shop.orders): MySQL tables need their database"
    )]
    MySqlTable(String),
    #[error("--slot: {0}")]
    Slot(CdcError),
    /// The slot is a migration's change stream: consuming it would acknowledge changes its
    /// applier never applied.
    #[error(
        "--slot {slot} is the change stream of {owner}: tailing it would acknowledge changes \
         the migration's applier has not applied, and the new table would silently miss them. \
         Follow the migration with `splice status`; to see the table's changes, tail with a \
         slot of your own (leave out --slot for splice_tail)"
    )]
    MigrationSlot { slot: String, owner: String },
    #[error(transparent)]
    Cdc(#[from] CdcError),
    #[error("encoding a change: {0}")]
    Encode(#[from] serde_json::Error),
    /// Stdout was closed by its reader.
    #[error("broken pipe")]
    BrokenPipe,
    #[error("writing to stdout: {0}")]
    Stdout(std::io::Error),
}

fn run_tail(args: TailArgs) -> u8 {
    // Two threads: the replication reader keeps reading the socket while the printer works.
    let runtime = match crate::runtime::multi_thread(Some(2)) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return crate::EXIT_USAGE;
        }
    };
    match runtime.block_on(tail(args)) {
        Ok(()) => crate::EXIT_OK,
        Err(e) => {
            eprintln!("error: {e}");
            crate::EXIT_USAGE
        }
    }
}

async fn tail(args: TailArgs) -> Result<(), TailError> {
    let url = crate::db_url::resolve(args.url.clone().or(args.database_url.clone()))
        .map_err(TailError::DatabaseUrl)?;
    if crate::db_url::is_mysql(&url) {
        return tail_mysql(args, url).await;
    }
    let url = crate::session_name::with_application_name(
        &url,
        &crate::session_name::of_command(&["cdc", "tail", &args.slot]),
    );
    let tables = args
        .tables
        .iter()
        .map(|t| TableName::parse(t).ok_or_else(|| TailError::Table(t.clone())))
        .collect::<Result<Vec<_>, _>>()?;
    let name = CaptureName::exact(&args.slot).map_err(TailError::Slot)?;
    refuse_migration_slot(Some(&url), &args.slot).await?;
    let mut config = PgSourceConfig::new(url, name, tables);
    config.skip_origins = args.skip_origins;
    // Acknowledgements are tiny; reporting them often keeps the final wait of a clean stop
    // short.
    config.status_interval = Duration::from_millis(50);
    let mut stream = PgChangeStream::open(config).await?;
    let slot = &args.slot;
    if stream.created_slot() {
        eprintln!(
            "note: created replication slot {slot} and publication {slot}. The slot keeps WAL on \
             the server from now on, read or not, until it is dropped: run with --drop-slot \
             to drop both on exit"
        );
    } else {
        eprintln!(
            "note: resuming replication slot {slot} after its last acknowledged transaction; it \
             keeps WAL on the server until it is dropped with --drop-slot"
        );
    }

    let outcome = stream_to_stdout(&mut stream, args.limit, args.idle_timeout).await;
    let closed = if args.drop_slot {
        let closed = stream.close_and_drop().await;
        if closed.is_ok() {
            eprintln!("note: dropped replication slot {slot} and publication {slot}");
        }
        closed
    } else {
        let closed = stream.close().await;
        eprintln!(
            "note: replication slot {slot} stays and keeps WAL on the server until it is \
             dropped: run `splice cdc tail` again with --drop-slot, or in SQL `SELECT \
             pg_drop_replication_slot('{slot}'); DROP PUBLICATION {slot};`"
        );
        closed
    };
    outcome?;
    Ok(closed?)
}

/// `tail` on a MySQL/MariaDB binlog.
async fn tail_mysql(args: TailArgs, url: String) -> Result<(), TailError> {
    let tables = args
        .tables
        .iter()
        .map(|t| match t.trim().split_once('.') {
            Some((db, name)) if !db.is_empty() && !name.is_empty() && !name.contains('.') => {
                Ok(TableName::new(db, name))
            }
            _ => Err(TailError::MySqlTable(t.clone())),
        })
        .collect::<Result<Vec<_>, _>>()?;
    CaptureName::exact(&args.slot).map_err(TailError::Slot)?;
    refuse_migration_slot(None, &args.slot).await?;
    let mut config = MySqlSourceConfig::new(url, args.slot.clone(), tables);
    config.skip_origins = args.skip_origins;
    let mut stream = MySqlChangeStream::open(config).await?;
    let slot = &args.slot;
    if stream.created_slot() {
        eprintln!(
            "note: created slot {slot} at the binlog's current position (kept in \
             splice.cdc_slots). The server keeps binlogs by its own retention, not for the slot: \
             a slot left unread past binlog_expire_logs_seconds cannot resume. Run with \
             --drop-slot to remove it on exit"
        );
    } else {
        eprintln!(
            "note: resuming slot {slot} after its last acknowledged transaction ({})",
            stream.acked_position()
        );
    }
    let outcome = stream_to_stdout(&mut stream, args.limit, args.idle_timeout).await;
    let closed = if args.drop_slot {
        let closed = stream.close_and_drop().await;
        if closed.is_ok() {
            eprintln!("note: removed slot {slot}");
        }
        closed
    } else {
        let closed = stream.close().await;
        eprintln!(
            "note: slot {slot} stays in splice.cdc_slots: run `splice cdc tail` again with \
             --drop-slot, or in SQL `DELETE FROM splice.cdc_slots WHERE slot = '{slot}';`"
        );
        closed
    };
    outcome?;
    Ok(closed?)
}

/// Refuses a slot that is, or is named like, a migration's change stream: `splice_<name>_fwd`
/// and `splice_<name>_rev` are the migrations' own, whether or not one is registered here.
async fn refuse_migration_slot(url: Option<&str>, slot: &str) -> Result<(), TailError> {
    // Naming the migration is a courtesy: the name's form below refuses every migration's
    // slot anyway, so a failed look-up (no server) is left to the stream's own connect to
    // report, in its words. (MySQL: no migrations yet, so no look-up.)
    if let Some(url) = url {
        if let Ok(Some(migration)) = engine::Engine::new(url).migration_of_slot(slot).await {
            return Err(TailError::MigrationSlot {
                slot: slot.into(),
                owner: format!("migration {migration}"),
            });
        }
    }
    let reserved = slot
        .strip_prefix("splice_")
        .is_some_and(|rest| rest.len() > 4 && (rest.ends_with("_fwd") || rest.ends_with("_rev")));
    if reserved {
        return Err(TailError::MigrationSlot {
            slot: slot.into(),
            owner: "a migration (splice_<name>_fwd and splice_<name>_rev are reserved for \
                    migrations)"
                .into(),
        });
    }
    Ok(())
}

/// Print and acknowledge transactions until the limit, the idle timeout, Ctrl-C, or a closed
/// stdout.
async fn stream_to_stdout<S: ChangeSource>(
    stream: &mut S,
    limit: Option<u64>,
    idle_timeout: Duration,
) -> Result<(), TailError> {
    // Lines go out in batches: what arrives within FLUSH_AFTER of a batch's first transaction
    // (up to BATCH_CHANGES changes) is printed with one write and flush (one more each
    // BATCH_BYTES), then acknowledged, so a busy stream pays neither a syscall nor an
    // acknowledgement per change.
    const BATCH_BYTES: usize = 256 * 1024;
    const BATCH_CHANGES: usize = 2048;
    const FLUSH_AFTER: Duration = Duration::from_millis(2);
    let stdout = std::io::stdout();
    let mut out: Vec<u8> = Vec::with_capacity(BATCH_BYTES + 4096);
    let mut printed: u64 = 0;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        // A batch ends at the transaction holding the limit's last change.
        let left = limit.map(|n| usize::try_from(n.saturating_sub(printed)).unwrap_or(usize::MAX));
        let limits = BatchLimits {
            max_txns: usize::MAX,
            max_changes: left.map_or(BATCH_CHANGES, |left| left.min(BATCH_CHANGES)),
            linger: FLUSH_AFTER,
        };
        // Ctrl-C while a batch is being gathered (FLUSH_AFTER at most) drops it unprinted and
        // unacknowledged: the next run prints it.
        let next = tokio::select! {
            next = cdc::next_batch(stream, idle_timeout, &limits) => next,
            Ok(()) = &mut ctrl_c => return Ok(()),
        };
        let (transactions, ended, failure) = match next {
            Ok(batch) => (batch.transactions, batch.ended, None),
            Err(e) => (e.gathered, false, Some(e.error)),
        };
        if transactions.is_empty() {
            // Idle for idle_timeout, or the stream ended or failed before anything arrived.
            return failure.map_or(Ok(()), |e| Err(e.into()));
        }
        let mut done = ended;
        let mut last_position = None;
        for txn in &transactions {
            write_transaction(&mut out, txn)?;
            printed += txn.changes.len() as u64;
            last_position = Some(&txn.position);
            if limit.is_some_and(|n| printed >= n) {
                done = true;
                break;
            }
            if out.len() >= BATCH_BYTES && !deliver(&stdout, &mut out, stream, last_position)? {
                return Ok(());
            }
        }
        let reader_there = deliver(&stdout, &mut out, stream, last_position)?;
        if let Some(error) = failure {
            // What arrived before the failure is printed and acknowledged; then report it.
            return Err(error.into());
        }
        if done || !reader_there {
            return Ok(());
        }
    }
}

/// Write `out` to stdout, then acknowledge `printed`, the position of the last transaction in
/// it. False when the reader went away (`| head`): what it did not take stays unacknowledged.
fn deliver<S: ChangeSource>(
    stdout: &std::io::Stdout,
    out: &mut Vec<u8>,
    stream: &mut S,
    printed: Option<&Position>,
) -> Result<bool, TailError> {
    match flush(stdout, out) {
        Ok(()) => {}
        Err(TailError::BrokenPipe) => return Ok(false),
        Err(e) => return Err(e),
    }
    if let Some(position) = printed {
        stream.ack(position)?;
    }
    Ok(true)
}

fn flush(stdout: &std::io::Stdout, out: &mut Vec<u8>) -> Result<(), TailError> {
    let mut lock = stdout.lock();
    let result = lock.write_all(out).and_then(|()| lock.flush());
    out.clear();
    result.map_err(|e| {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            TailError::BrokenPipe
        } else {
            TailError::Stdout(e)
        }
    })
}

/// One JSON line per change of `txn`. The part every line of a transaction shares (position,
/// commit time, origin) is rendered once.
fn write_transaction(out: &mut Vec<u8>, txn: &Transaction) -> serde_json::Result<()> {
    let mut tail = format!(
        ",\"position\":\"{}\",\"committed_at\":\"{}\"",
        txn.position, txn.committed_at
    );
    if let Some(origin) = &txn.origin {
        tail.push_str(",\"origin\":");
        tail.push_str(&serde_json::to_string(origin)?);
    }
    tail.push_str("}\n");
    for change in &txn.changes {
        write_change_head(out, change)?;
        out.extend_from_slice(tail.as_bytes());
    }
    Ok(())
}

/// `{"op":…,"table":…,"key":{…}[,"old_key":{…}]` of one change.
fn write_change_head(out: &mut Vec<u8>, change: &Change) -> serde_json::Result<()> {
    out.extend_from_slice(b"{\"op\":\"");
    out.extend_from_slice(change.op.as_str().as_bytes());
    out.extend_from_slice(b"\",\"table\":");
    serde_json::to_writer(&mut *out, &change.table)?;
    out.extend_from_slice(b",\"key\":");
    serde_json::to_writer(&mut *out, &KeyObject(&change.key))?;
    if let Some(old_key) = &change.old_key {
        out.extend_from_slice(b",\"old_key\":");
        serde_json::to_writer(&mut *out, &KeyObject(old_key))?;
    }
    Ok(())
}

/// A key as a JSON object, columns in key order.
struct KeyObject<'a>(&'a Key);

impl Serialize for KeyObject<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (column, value) in self.0 {
            map.serialize_entry(column, value)?;
        }
        map.end()
    }
}
