//! The migration commands: plan, expand, sync, verify, cutover, rollback, contract, drop,
//! status. Each is one call into `engine::Engine`; this module parses arguments, shows
//! progress and maps outcomes to exit codes.

use crate::db_url;
use crate::progress::{Notes, Progress};
use clap::{Args, Subcommand};
use engine::backfill::{Control, ProgressSink, RateSource, SyncProgress};
use engine::phases::{Quarantine, ReverseSync, RollbackReport, SyncOptions};
use engine::{Adapter, Engine, EngineError, MigrationSpec, Phase, RateLimit};
use std::time::Duration;

/// The database every migration command talks to.
#[derive(Args, Clone)]
pub struct DbArgs {
    /// PostgreSQL URL (libpq URL or key=value form; sslmode, sslrootcert, sslcert and sslkey
    /// are honoured), or MySQL/MariaDB URL (mysql://user:password@host:port/, ssl-mode and
    /// ssl-ca honoured); defaults to $SPLICE_DATABASE_URL, then $DATABASE_URL, then
    /// $PGHOST/$PGPORT/$PGUSER/$PGDATABASE. See docs/connecting.md.
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
}

#[derive(Subcommand)]
pub enum MigrateCommand {
    /// Check a migration file against the live schema and print every phase's SQL and locks.
    #[command(
        after_help = "Example:\n  splice plan migrations/orders_v2.toml --database-url postgres://app@localhost/app\n\nChanges nothing. Exit 0 when the file is valid and the server has what sync needs (wal_level=logical,\nreplication rights, free slots and WAL senders), 1 when the server lacks one of those (each named\nwith its fix), 2 when the file does not fit (the error says what to change)."
    )]
    Plan {
        /// The migration file (TOML).
        file: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Register the migration and create the new shape under a shadow name (additive DDL only).
    #[command(
        after_help = "Example:\n  splice expand migrations/orders_v2.toml\n\nIdempotent: running it again after a crash continues."
    )]
    Expand {
        file: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Start change capture, then the throttled backfill; keep applying changes until interrupted.
    #[command(
        after_help = "Examples:\n  splice sync orders_v2 --until-caught-up          exit 0 once backfill is done and capture caught up\n  splice sync orders_v2 --rows-per-second 20000   follow changes until Ctrl-C (checkpointed)\n\nResumes from its checkpoint after any crash. Backfill pauses while capture lag, replica lag or\nlock waits exceed their bounds, and the backfill and the applier slow down while the application's\ncommit latency is above the impact budget (--max-latency-increase 20%); the progress line says why."
    )]
    Sync {
        /// The migration's name.
        name: String,
        /// Exit 0 once backfill is complete and capture has caught up.
        #[arg(long)]
        until_caught_up: bool,
        /// Backfill rate limit in rows per second (default: the file's throttle, else unlimited).
        #[arg(long, value_name = "N")]
        rows_per_second: Option<u32>,
        /// Target duration of one backfill chunk; chunk sizes adapt to it.
        #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse_duration)]
        chunk_target: Option<Duration>,
        /// The impact budget: how much the application's commit latency may rise before the
        /// backfill and the applier slow down, e.g. 20% (default: the file's, else 20%); off (or
        /// 0) turns it off.
        #[arg(long, value_name = "PERCENT", value_parser = parse_latency_increase)]
        max_latency_increase: Option<LatencyIncrease>,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Change the backfill rate limit of a running (or the next) sync, without restarting it.
    #[command(
        after_help = "Examples:\n  splice throttle orders_v2 --rows-per-second 5000   slow the running backfill down\n  splice throttle orders_v2 --rows-per-second 0      unlimited\n  splice throttle orders_v2 --clear                  back to the sync's own setting\n\nA running sync picks the new rate up at its next chunk."
    )]
    Throttle {
        name: String,
        /// Rows per second; 0 means unlimited.
        #[arg(long, value_name = "N", required_unless_present = "clear")]
        rows_per_second: Option<u32>,
        /// Remove the override.
        #[arg(long, conflicts_with = "rows_per_second")]
        clear: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Drain capture, hash both sides through the mapping, and list the keys that differ.
    #[command(
        after_help = "Examples:\n  splice verify orders_v2 --json\n  splice verify orders_v2 --incremental\n\nWorks while the application keeps writing. Exit 0 when nothing diverges, 1 otherwise.\n--incremental re-reads only the key ranges capture changed since the last pass (the first\nverify is always full); writes made to the new table outside splice are found by a full pass only."
    )]
    Verify {
        name: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Re-read only the key ranges changed since the last pass (full when none is stored).
        #[arg(long)]
        incremental: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Swap the new table in under a short lock and start reverse sync (new → old).
    #[command(
        after_help = "Example:\n  splice cutover orders_v2\n\nRefuses (exit 1) unless the last verify passed and capture lag is under the bound.\nPrints the time the table was locked."
    )]
    Cutover {
        name: String,
        /// Refuse when capture lag exceeds this many bytes.
        #[arg(long, value_name = "BYTES", default_value_t = 16 * 1024 * 1024)]
        max_lag_bytes: u64,
        /// Cut over even though the old shape cannot be kept current (no rollback afterwards).
        #[arg(long)]
        without_reverse_sync: bool,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// One step back to the old shape, with no data lost.
    #[command(
        after_help = "Example:\n  splice rollback orders_v2\n\nBefore cutover: abandons the migration (drops the shadow table and the slot). After cutover:\nswaps back and resumes forward sync. After contract: restores the old table from quarantine\nand re-syncs it. Running it again does nothing more: after a restore from quarantine,\n`splice rollback orders_v2 --from cut_over` swaps back; abandoning after a rollback from cutover\nis `splice abort`."
    )]
    Rollback {
        name: String,
        /// Roll back only from this phase (e.g. cut_over); also takes a step after an earlier
        /// rollback, which a plain re-run never does.
        #[arg(long, value_name = "PHASE", value_parser = parse_phase)]
        from: Option<Phase>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Abandon a migration that is not cut over: drop its shadow table and capture.
    #[command(
        after_help = "Example:\n  splice abort orders_v2\n\nRefuses (exit 1) while the new table is live: `splice rollback` first. Running it again\nafter it finished does nothing."
    )]
    Abort {
        name: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Stop reverse sync and move the old table into quarantine. Nothing is dropped.
    #[command(after_help = "Example:\n  splice contract orders_v2 --quarantine 7d")]
    Contract {
        name: String,
        /// How long the old table stays in quarantine (default: the file's, else 30d).
        #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse_duration)]
        quarantine: Option<Duration>,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Drop the quarantined old table once its quarantine has expired.
    #[command(
        after_help = "Example:\n  splice drop orders_v2\n\nRefuses (exit 1) before the quarantine expires unless --force. This is the only one-way door."
    )]
    Drop {
        name: String,
        /// Drop even though the quarantine has not expired.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// One line per migration: phase, progress, rate, ETA, lag, throttle, last verify, runner, WAL kept.
    #[command(
        after_help = "Examples:\n  splice status\n  splice status orders_v2 --history\n  splice status orders_v2 --json\n\nSee docs/understanding-output.md for every part of the line and the JSON fields."
    )]
    Status {
        name: Option<String>,
        #[arg(long)]
        json: bool,
        /// Also list every phase change (when, who, figures) under each migration.
        #[arg(long)]
        history: bool,
        #[command(flatten)]
        db: DbArgs,
    },
}

fn fail(e: &EngineError) -> u8 {
    eprintln!("error: {e}");
    if e.is_check_failure() {
        crate::EXIT_CHECK_FAILED
    } else {
        crate::EXIT_USAGE
    }
}

fn print_json(v: &impl serde::Serialize) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("error: cannot encode the report: {e}"),
    }
}

fn read_spec(file: &str) -> Result<(String, MigrationSpec), String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read migration file {file}: {e}"))?;
    let spec = MigrationSpec::parse(&text, file).map_err(|e| e.to_string())?;
    Ok((text, spec))
}

pub fn run(cmd: MigrateCommand) -> u8 {
    let url = match db_url::resolve(cmd.db().database_url.clone()) {
        Ok(url) => crate::session_name::with_application_name(&url, &cmd.session_name()),
        Err(e) => {
            eprintln!("error: {e}");
            return crate::EXIT_USAGE;
        }
    };
    // One thread: a migration command is one task driving database sessions, and the work is
    // the server's; on a multi-threaded runtime every message a connection task hands to the
    // reading task is a wake-up across threads (docs/benchmarks.md has the cost).
    let rt = match crate::runtime::current_thread() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return crate::EXIT_USAGE;
        }
    };
    if db_url::is_mysql(&url) {
        // The URL picks the database: mysql:// and mariadb:// drive the MySQL adapter.
        return match Engine::mysql(url) {
            Ok(engine) => rt.block_on(run_async(cmd, engine)),
            Err(e) => {
                eprintln!("error: {e}");
                crate::EXIT_USAGE
            }
        };
    }
    rt.block_on(run_async(cmd, Engine::new(url)))
}

impl MigrateCommand {
    /// `splice sync orders_v2`: what its sessions are called in `pg_stat_activity`.
    fn session_name(&self) -> String {
        let (command, subject) = self.verb_and_subject();
        crate::session_name::of_command(&[command, subject.as_str()])
    }

    /// The command's name and what it works on (a file name or a migration name).
    fn verb_and_subject(&self) -> (&'static str, String) {
        let file_name = |f: &str| {
            std::path::Path::new(f)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let (command, subject) = match self {
            MigrateCommand::Plan { file, .. } => ("plan", file_name(file)),
            MigrateCommand::Expand { file, .. } => ("expand", file_name(file)),
            MigrateCommand::Sync { name, .. } => ("sync", name.clone()),
            MigrateCommand::Throttle { name, .. } => ("throttle", name.clone()),
            MigrateCommand::Verify { name, .. } => ("verify", name.clone()),
            MigrateCommand::Cutover { name, .. } => ("cutover", name.clone()),
            MigrateCommand::Rollback { name, .. } => ("rollback", name.clone()),
            MigrateCommand::Abort { name, .. } => ("abort", name.clone()),
            MigrateCommand::Contract { name, .. } => ("contract", name.clone()),
            MigrateCommand::Drop { name, .. } => ("drop", name.clone()),
            MigrateCommand::Status { name, .. } => ("status", name.clone().unwrap_or_default()),
        };
        (command, subject)
    }

    /// Every command talks to one database.
    fn db(&self) -> &DbArgs {
        match self {
            MigrateCommand::Plan { db, .. }
            | MigrateCommand::Expand { db, .. }
            | MigrateCommand::Sync { db, .. }
            | MigrateCommand::Throttle { db, .. }
            | MigrateCommand::Verify { db, .. }
            | MigrateCommand::Cutover { db, .. }
            | MigrateCommand::Rollback { db, .. }
            | MigrateCommand::Abort { db, .. }
            | MigrateCommand::Contract { db, .. }
            | MigrateCommand::Drop { db, .. }
            | MigrateCommand::Status { db, .. } => db,
        }
    }
}

/// `--max-latency-increase`: a fraction, or `None` for off.
#[derive(Debug, Clone, Copy)]
pub struct LatencyIncrease(Option<f64>);

fn parse_latency_increase(s: &str) -> Result<LatencyIncrease, String> {
    engine::spec::parse_latency_increase(s)
        .map(LatencyIncrease)
        .map_err(|_| format!("`{s}` is not a budget; give a percentage such as 20%, or off (or 0)"))
}

async fn run_async<A: Adapter>(cmd: MigrateCommand, engine: Engine<A>) -> u8 {
    match cmd {
        MigrateCommand::Plan { file, .. } => plan(&engine, &file).await,
        MigrateCommand::Expand { file, .. } => expand(&engine, &file).await,
        MigrateCommand::Sync {
            name,
            until_caught_up,
            rows_per_second,
            chunk_target,
            max_latency_increase,
            ..
        } => {
            let opts = SyncOptions {
                until_caught_up,
                rate_limit: rows_per_second.map(RateLimit::from_rows_per_second),
                chunk_target,
                max_latency_increase: max_latency_increase.map(|b| b.0),
            };
            sync(&engine, &name, &opts).await
        }
        MigrateCommand::Throttle {
            name,
            rows_per_second,
            clear,
            ..
        } => {
            let limit = if clear {
                None
            } else {
                rows_per_second.map(RateLimit::from_rows_per_second)
            };
            throttle(&engine, &name, limit).await
        }
        MigrateCommand::Verify {
            name,
            json,
            incremental,
            ..
        } => {
            let kind = if incremental {
                engine::VerifyKind::Incremental
            } else {
                engine::VerifyKind::Full
            };
            verify(&engine, &name, kind, json).await
        }
        MigrateCommand::Cutover {
            name,
            max_lag_bytes,
            without_reverse_sync,
            json,
            ..
        } => {
            let reverse = if without_reverse_sync {
                ReverseSync::Skip
            } else {
                ReverseSync::Start
            };
            cutover(&engine, &name, max_lag_bytes, reverse, json).await
        }
        MigrateCommand::Rollback {
            name, from, json, ..
        } => {
            // A swap back catches capture up first; a restore refills the whole table.
            let mut view = SyncProgressView::new(&name);
            let result = engine.rollback_watched(&name, from, &mut view).await;
            view.finish();
            rollback(&name, result, json)
        }
        MigrateCommand::Abort { name, json, .. } => {
            rollback(&name, engine.abort(&name).await, json)
        }
        MigrateCommand::Contract {
            name, quarantine, ..
        } => match engine.contract(&name, quarantine).await {
            Ok(c) if c.already => {
                println!(
                    "{name} is already contracted{}; nothing to do",
                    if c.quarantine_until.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " (the old table is in quarantine until {})",
                            c.quarantine_until
                        )
                    }
                );
                crate::EXIT_OK
            }
            Ok(c) => {
                println!(
                    "contracted {name}: the old table is in quarantine until {}; nothing was dropped",
                    c.quarantine_until
                );
                crate::EXIT_OK
            }
            Err(e) => fail(&e),
        },
        MigrateCommand::Drop { name, force, .. } => {
            let quarantine = if force {
                Quarantine::Override
            } else {
                Quarantine::Respect
            };
            match engine.drop_quarantined(&name, quarantine).await {
                Ok(d) if d.already => {
                    println!(
                        "{name} is already dropped ({} is gone); nothing to do",
                        d.table
                    );
                    crate::EXIT_OK
                }
                Ok(d) => {
                    println!("dropped {}", d.table);
                    crate::EXIT_OK
                }
                Err(e) => fail(&e),
            }
        }
        MigrateCommand::Status {
            name,
            json,
            history,
            ..
        } => status(&engine, name.as_deref(), json, history).await,
    }
}

async fn plan<A: Adapter>(engine: &Engine<A>, file: &str) -> u8 {
    let (_, spec) = match read_spec(file) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return crate::EXIT_USAGE;
        }
    };
    match engine.plan(&spec).await {
        Ok(plan) => {
            print!("{}", engine.render(&plan));
            let materialized = plan.cannot_carry();
            if !materialized.is_empty() {
                eprintln!(
                    "error: cutover cannot carry {} over to the new table; drop it before the migration and create it again after cutover (expand refuses until then)",
                    materialized.join(", ")
                );
                crate::EXIT_CHECK_FAILED
            } else if plan.not_carried.is_empty() {
                crate::EXIT_OK
            } else {
                eprintln!(
                    "error: the new shape lacks {} index(es)/constraint(s) of the live table (listed under NOT CARRIED); expand would refuse",
                    plan.not_carried.len()
                );
                crate::EXIT_CHECK_FAILED
            }
        }
        Err(e) => fail(&e),
    }
}

async fn expand<A: Adapter>(engine: &Engine<A>, file: &str) -> u8 {
    let (text, spec) = match read_spec(file) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return crate::EXIT_USAGE;
        }
    };
    match engine.expand(&text, file).await {
        Ok(r) if r.already => {
            println!(
                "{} is already expanded ({} exists; phase {}); nothing to do. See `splice \
                 status {}` for the next step",
                spec.name,
                spec.shadow_table(),
                r.phase,
                spec.name
            );
            crate::EXIT_OK
        }
        Ok(r) => {
            println!(
                "expanded {}: created {} ({} columns); next: splice sync {} --until-caught-up",
                spec.name,
                spec.shadow_table(),
                r.plan.target.columns.len(),
                spec.name
            );
            crate::EXIT_OK
        }
        Err(e) => fail(&e),
    }
}

async fn sync<A: Adapter>(engine: &Engine<A>, name: &str, opts: &SyncOptions) -> u8 {
    let control = Control::new(opts.rate_limit.unwrap_or(RateLimit::Unlimited));
    let mut bar = SyncProgressView::new(name);
    stop_on_signals(control.clone(), bar.notes.clone());
    let result = engine.sync(name, opts, &control, &mut bar).await;
    bar.finish();
    match result {
        Ok(p) => {
            if p.indexes_built > 0 {
                println!(
                    "sync {name}: built {} deferred index(es) in {:.1}s",
                    p.indexes_built, p.index_build_s
                );
            }
            println!(
                "sync {name}: {} rows copied{}, {} transactions applied, capture lag {} bytes{}",
                p.rows_copied,
                if p.backfill_done {
                    " (backfill complete)"
                } else {
                    " (backfill paused; run sync again to continue)"
                },
                p.txns_applied,
                p.capture_lag_bytes,
                if opts.until_caught_up {
                    ", caught up"
                } else {
                    ""
                }
            );
            crate::EXIT_OK
        }
        Err(e) => fail(&e),
    }
}

async fn throttle<A: Adapter>(engine: &Engine<A>, name: &str, limit: Option<RateLimit>) -> u8 {
    match engine.set_rate_limit(name, limit).await {
        Ok(()) => {
            let action = match limit {
                Some(l) => format!("throttle {l}"),
                None => "throttle cleared".into(),
            };
            let me = engine::state::actor();
            if let Err(e) = engine.record_event(name, &action, &me, None, None).await {
                eprintln!("warning: the rate is set, but it was not recorded in the history: {e}");
            }
            match limit {
                None => println!(
                    "{name}: rate override cleared; a running sync returns to its own rate at \
                     its next chunk"
                ),
                Some(limit) => println!(
                    "{name}: backfill {}; a running sync picks it up at its next chunk and says \
                     so. It overrides the rate the sync was started with until `splice throttle \
                     {name} --clear`, and ends with a rollback",
                    match limit {
                        RateLimit::Unlimited => "unlimited".to_string(),
                        RateLimit::RowsPerSecond(r) => format!("limited to {r} rows/s"),
                    }
                ),
            }
            crate::EXIT_OK
        }
        Err(e) => fail(&e),
    }
}

async fn verify<A: Adapter>(
    engine: &Engine<A>,
    name: &str,
    kind: engine::VerifyKind,
    json: bool,
) -> u8 {
    let counters = engine::verify::VerifyCounters::default();
    let watch = crate::progress::VerifyLine::start(name, counters.clone());
    let result = engine.verify_kind(name, kind, &counters).await;
    watch.finish();
    let report = match result {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    if json {
        print_json(&crate::verify_report::VerifyJson::from(&report));
    } else {
        print!("{}", crate::verify_report::render(name, &report));
    }
    if report.cutover_allowed() {
        crate::EXIT_OK
    } else {
        crate::EXIT_CHECK_FAILED
    }
}

async fn cutover<A: Adapter>(
    engine: &Engine<A>,
    name: &str,
    max_lag_bytes: u64,
    reverse: ReverseSync,
    json: bool,
) -> u8 {
    // The catch-up before each lock attempt can take a while under a heavy write load.
    let mut view = SyncProgressView::new(name);
    let result = engine
        .cutover_watched(name, max_lag_bytes, reverse, &mut view)
        .await;
    view.finish();
    match result {
        Ok(r) => {
            if json {
                print_json(&r);
            } else if r.already {
                println!(
                    "{name} is already cut over{}; nothing to do",
                    r.cut_over_at
                        .as_deref()
                        .map(|at| format!(" (at {at})"))
                        .unwrap_or_default()
                );
            } else {
                println!(
                    "cut over {name}: table locked for {:.1} ms (attempt {}); reverse sync {}",
                    r.lock_ms,
                    r.attempts,
                    if r.reverse_sync {
                        "started (rollback stays open)"
                    } else {
                        "off"
                    }
                );
                for c in &r.carried_over {
                    println!("  carried over {c}");
                }
            }
            crate::EXIT_OK
        }
        Err(e) => fail(&e),
    }
}

/// Prints what rollback or abort did.
fn rollback(name: &str, result: Result<RollbackReport, EngineError>, json: bool) -> u8 {
    match result {
        Ok(r) => {
            if json {
                print_json(&r);
            } else if r.already_done {
                println!(
                    "{name} is already {} (rolled back from {}); nothing to do{}",
                    r.to,
                    r.from,
                    match r.to.as_str() {
                        "rolled_back" => String::new(),
                        "cut_over" => format!(
                            ". To step back further (swap the old table back): splice rollback \
                             {name} --from cut_over"
                        ),
                        _ => format!(". To abandon the migration: splice abort {name}"),
                    }
                );
            } else {
                println!(
                    "rolled back {name}: {} → {} in {:.2}s{}",
                    r.from,
                    r.to,
                    r.seconds,
                    r.lock_ms
                        .map(|l| format!(" (table locked {l:.1} ms)"))
                        .unwrap_or_default()
                );
            }
            crate::EXIT_OK
        }
        Err(e) => fail(&e),
    }
}

async fn status<A: Adapter>(
    engine: &Engine<A>,
    name: Option<&str>,
    json: bool,
    history: bool,
) -> u8 {
    let list = match engine.status(name).await {
        Ok(list) => list,
        Err(e) => return fail(&e),
    };
    if json {
        if name.is_some() && list.len() == 1 {
            print_json(&list[0]);
        } else {
            print_json(&list);
        }
    } else if list.is_empty() {
        println!("no migrations in this database");
    } else {
        for s in &list {
            println!("{}", crate::status_view::line(s));
            if history {
                print!("{}", crate::status_view::history(s));
            }
        }
    }
    crate::EXIT_OK
}

/// SIGINT / SIGTERM ask a running sync to checkpoint and stop.
fn stop_on_signals(control: Control, notes: Notes) {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let mut term = match signal(SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return,
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        notes.note("stopping: finishing the current chunk and saving the checkpoint…");
        control.stop();
    });
}

/// The progress line, and a line of its own whenever the rate in force changes source: an
/// override of `splice throttle` never changes a sync's rate silently.
struct SyncProgressView {
    name: String,
    line: Progress,
    notes: Notes,
    /// The rate limit and its source last shown.
    rate: Option<(u32, RateSource)>,
}

impl SyncProgressView {
    fn new(name: &str) -> SyncProgressView {
        let line = Progress::on_stderr();
        SyncProgressView {
            name: name.into(),
            notes: line.notes(),
            line,
            rate: None,
        }
    }

    fn note_rate(&mut self, p: &SyncProgress) {
        let now = (p.rate_limit, p.rate_source);
        let first = self.rate.is_none();
        if self.rate == Some(now) {
            return;
        }
        self.rate = Some(now);
        let name = &self.name;
        let rate = RateLimit::from_rows_per_second(p.rate_limit);
        let message = match (first, p.rate_source) {
            (true, RateSource::Override) => format!(
                "note: backfill rate {rate}, set by `splice throttle` before this sync started; \
                 `splice throttle {name} --clear` returns to the sync's own rate"
            ),
            (true, _) => match p.replaced_override {
                Some(r) => format!(
                    "note: the rate on the command line ({rate}) replaced the earlier `splice \
                     throttle` override ({})",
                    RateLimit::from_rows_per_second(r)
                ),
                None => return,
            },
            (false, RateSource::Override) => format!(
                "warning: `splice throttle` changed the backfill rate to {rate}, overriding the \
                 rate this sync started with until `splice throttle {name} --clear`"
            ),
            (false, source) => format!(
                "note: the `splice throttle` override was cleared; backfill rate back to {rate} \
                 (from {})",
                match source {
                    RateSource::CommandLine => "the command line",
                    _ => "the migration file",
                }
            ),
        };
        self.notes.note(&message);
    }

    fn finish(&mut self) {
        self.line.finish();
    }
}

impl ProgressSink for SyncProgressView {
    fn update(&mut self, p: &SyncProgress) {
        self.note_rate(p);
        self.line.update(p);
    }
}

/// A phase name as `splice status` prints it.
fn parse_phase(s: &str) -> Result<Phase, String> {
    Phase::parse(s).ok_or_else(|| {
        format!(
            "{s:?} is not a phase; use one of planned, expanded, syncing, verified, cut_over, \
             contracted"
        )
    })
}
