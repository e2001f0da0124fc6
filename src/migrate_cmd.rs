//! The migration commands: plan, expand, sync, verify, cutover, rollback, contract, drop,
//! status. Each is one call into `engine::Engine`; this module parses arguments, shows
//! progress and maps outcomes to exit codes.

use crate::db_url;
use clap::{Args, Subcommand};
use engine::backfill::{Control, ProgressSink, RateSource, SyncProgress};
use engine::phases::{Quarantine, ReverseSync, RollbackReport, SyncOptions};
use engine::{Engine, EngineError, MigrationSpec, Phase, Postgres, RateLimit, VerifyReport};
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// The database every migration command talks to.
#[derive(Args, Clone)]
pub struct DbArgs {
    /// PostgreSQL URL (libpq URL or key=value form; sslmode, sslrootcert, sslcert and sslkey
    /// are honoured); defaults to $SPLICE_DATABASE_URL, then $DATABASE_URL, then
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
        after_help = "Examples:\n  splice sync orders_v2 --until-caught-up          exit 0 once backfill is done and capture caught up\n  splice sync orders_v2 --rows-per-second 20000   follow changes until Ctrl-C (checkpointed)\n\nResumes from its checkpoint after any crash. Backfill pauses while capture lag, replica lag or\nlock waits exceed their bounds; the progress line says why."
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
        after_help = "Example:\n  splice verify orders_v2 --json\n\nWorks while the application keeps writing. Exit 0 when nothing diverges, 1 otherwise."
    )]
    Verify {
        name: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
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
    /// Phase, progress, capture lag, last verify, lock times, quarantine and history.
    #[command(after_help = "Examples:\n  splice status\n  splice status orders_v2 --json")]
    Status {
        name: Option<String>,
        #[arg(long)]
        json: bool,
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
    rt.block_on(run_async(cmd, url))
}

impl MigrateCommand {
    /// `splice sync orders_v2`: what its sessions are called in `pg_stat_activity`.
    fn session_name(&self) -> String {
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
        crate::session_name::of_command(&[command, subject.as_str()])
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

async fn run_async(cmd: MigrateCommand, url: String) -> u8 {
    let engine = Engine::new(url);
    match cmd {
        MigrateCommand::Plan { file, .. } => plan(&engine, &file).await,
        MigrateCommand::Expand { file, .. } => expand(&engine, &file).await,
        MigrateCommand::Sync {
            name,
            until_caught_up,
            rows_per_second,
            chunk_target,
            ..
        } => {
            let opts = SyncOptions {
                until_caught_up,
                rate_limit: rows_per_second.map(RateLimit::from_rows_per_second),
                chunk_target,
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
        MigrateCommand::Verify { name, json, .. } => verify(&engine, &name, json).await,
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
        } => rollback(&name, engine.rollback_from(&name, from).await, json),
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
        MigrateCommand::Status { name, json, .. } => status(&engine, name.as_deref(), json).await,
    }
}

async fn plan(engine: &Engine<Postgres>, file: &str) -> u8 {
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
            let materialized: Vec<String> = plan
                .dependents
                .iter()
                .filter(|d| {
                    matches!(
                        d,
                        engine::catalog::Dependent::View {
                            materialized: true,
                            ..
                        }
                    )
                })
                .map(|d| d.to_string())
                .collect();
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

async fn expand(engine: &Engine<Postgres>, file: &str) -> u8 {
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

async fn sync(engine: &Engine<Postgres>, name: &str, opts: &SyncOptions) -> u8 {
    let control = Control::new(opts.rate_limit.unwrap_or(RateLimit::Unlimited));
    stop_on_signals(control.clone());
    let mut bar = ProgressLine::new(name);
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

async fn throttle(engine: &Engine<Postgres>, name: &str, limit: Option<RateLimit>) -> u8 {
    match engine.set_rate_limit(name, limit).await {
        Ok(()) => {
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

/// Verify's `--json`: the engine's report and its answers, as one object.
#[derive(serde::Serialize)]
struct VerifyJson<'r> {
    passed: bool,
    rows_checked: u64,
    ranges: u64,
    rechecked: u64,
    divergence_rate: f64,
    diverged: &'r [engine::seam::DivergedKey],
    seconds: f64,
    cutover_allowed: bool,
}

impl<'r> From<&'r VerifyReport> for VerifyJson<'r> {
    fn from(r: &'r VerifyReport) -> VerifyJson<'r> {
        VerifyJson {
            passed: r.passed(),
            rows_checked: r.rows_checked,
            ranges: r.ranges,
            rechecked: r.rechecked,
            divergence_rate: r.divergence_rate(),
            diverged: &r.diverged,
            seconds: r.seconds,
            cutover_allowed: r.cutover_allowed(),
        }
    }
}

async fn verify(engine: &Engine<Postgres>, name: &str, json: bool) -> u8 {
    let report = match engine.verify(name).await {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    if json {
        print_json(&VerifyJson::from(&report));
    } else {
        println!(
            "verify {name}: {} rows in {} ranges, {} re-checked, {} diverged ({:.1}s); cutover {}",
            report.rows_checked,
            report.ranges,
            report.rechecked,
            report.diverged.len(),
            report.seconds,
            if report.cutover_allowed() {
                "allowed"
            } else {
                "refused"
            }
        );
        for d in report.diverged.iter().take(50) {
            println!(
                "  key ({}): expected {} found {}",
                d.key.join(", "),
                d.expected.as_deref().unwrap_or("<missing>"),
                d.found.as_deref().unwrap_or("<missing>")
            );
        }
        if report.diverged.len() > 50 {
            println!("  … {} more (see --json)", report.diverged.len() - 50);
        }
    }
    if report.cutover_allowed() {
        crate::EXIT_OK
    } else {
        crate::EXIT_CHECK_FAILED
    }
}

async fn cutover(
    engine: &Engine<Postgres>,
    name: &str,
    max_lag_bytes: u64,
    reverse: ReverseSync,
    json: bool,
) -> u8 {
    match engine.cutover(name, max_lag_bytes, reverse).await {
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

async fn status(engine: &Engine<Postgres>, name: Option<&str>, json: bool) -> u8 {
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
            print!("{}", render_status(s));
        }
    }
    crate::EXIT_OK
}

fn render_status(s: &engine::phases::Status) -> String {
    let mut out = format!("{} ({}): {}\n", s.name, s.table, s.phase);
    let pct = if s.rows_total > 0 {
        100.0 * s.rows_copied as f64 / s.rows_total as f64
    } else {
        0.0
    };
    out.push_str(&format!(
        "  backfill: {}/{} rows ({pct:.1}%){}{}\n",
        s.rows_copied,
        s.rows_total,
        if s.backfill_done { ", complete" } else { "" },
        s.backfill_rows_per_second
            .map(|r| format!(", {r:.0} rows/s"))
            .unwrap_or_default()
    ));
    if let Some(l) = s.capture_lag_bytes {
        out.push_str(&format!("  capture lag: {l} bytes\n"));
    }
    for slot in &s.slots {
        out.push_str(&format!(
            "  slot {}: retains {} of WAL (wal_status {}){}\n",
            slot.slot,
            human_bytes(slot.retained_wal_bytes),
            slot.wal_status,
            if slot.retained_wal_bytes > slot.warn_above_bytes {
                " — above the warning threshold: keep sync running, or contract/abort to release it"
            } else {
                ""
            }
        ));
    }
    if let Some(v) = &s.last_verify {
        out.push_str(&format!("  last verify: {v}\n"));
    }
    if let Some(l) = s.cutover_lock_ms {
        out.push_str(&format!("  cutover lock: {l:.1} ms\n"));
    }
    if let Some(q) = &s.quarantined_as {
        out.push_str(&format!(
            "  quarantine: {q} until {}\n",
            s.quarantine_until.as_deref().unwrap_or("?")
        ));
    }
    if let Some(r) = s.rate_override {
        out.push_str(&format!(
            "  rate override (splice throttle): {}\n",
            RateLimit::from_rows_per_second(r)
        ));
    }
    out.push_str(&format!("  next: {}\n", s.next));
    out.push_str("  history:\n");
    for t in &s.history {
        out.push_str(&format!(
            "    {} {} → {} by {} {}\n",
            t.at,
            t.from.as_deref().unwrap_or("-"),
            t.to,
            t.actor,
            if t.figures.as_object().is_some_and(|o| o.is_empty()) {
                String::new()
            } else {
                t.figures.to_string()
            }
        ));
    }
    out
}

/// SIGINT / SIGTERM ask a running sync to checkpoint and stop.
fn stop_on_signals(control: Control) {
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
        eprintln!("stopping: finishing the current chunk and saving the checkpoint…");
        control.stop();
    });
}

/// gh-ost-style status: one rewritten line on a terminal, a plain line every few seconds in CI.
struct ProgressLine {
    name: String,
    tty: bool,
    last: Option<Instant>,
    drawn: bool,
    /// The rate limit and its source last shown.
    rate: Option<(u32, RateSource)>,
}

impl ProgressLine {
    fn new(name: &str) -> ProgressLine {
        ProgressLine {
            name: name.into(),
            tty: std::io::stderr().is_terminal(),
            last: None,
            drawn: false,
            rate: None,
        }
    }

    /// A line of its own whenever the rate in force changes source: an override of
    /// `splice throttle` never changes a sync's rate silently.
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
        let mut err = std::io::stderr().lock();
        if self.tty && self.drawn {
            let _ = write!(err, "\r\x1b[2K");
        }
        let _ = writeln!(err, "{message}");
        let _ = err.flush();
    }

    fn finish(&mut self) {
        if self.tty && self.drawn {
            eprintln!();
        }
    }
}

impl ProgressSink for ProgressLine {
    fn update(&mut self, p: &SyncProgress) {
        self.note_rate(p);
        let every = if self.tty {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(5)
        };
        if self.last.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        self.last = Some(Instant::now());
        let pct = if p.rows_total > 0 {
            (p.rows_copied as f64 / p.rows_total as f64).min(1.0)
        } else {
            1.0
        };
        let eta = if p.backfill_done {
            "done".to_string()
        } else if p.rows_per_second > 0.0 {
            let left = p.rows_total.saturating_sub(p.rows_copied) as f64 / p.rows_per_second;
            humantime::format_duration(Duration::from_secs(left as u64)).to_string()
        } else {
            "?".into()
        };
        let state = match &p.throttled {
            Some(why) => format!("throttled ({why})"),
            None if p.backfill_done => "following changes".into(),
            None => "copying".into(),
        };
        let width = 20;
        let filled = (pct * width as f64) as usize;
        let line = format!(
            "[{}{}] {}/{} rows {:.1}% | {:.0} rows/s | chunk {} | applied {} txns | lag {} KB {} ms | ETA {} | {}",
            "#".repeat(filled),
            "-".repeat(width - filled),
            p.rows_copied,
            p.rows_total,
            pct * 100.0,
            p.rows_per_second,
            p.chunk_size,
            p.txns_applied,
            p.capture_lag_bytes / 1024,
            p.capture_lag_ms,
            eta,
            state
        );
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{line}");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
        self.drawn = true;
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

/// `1536` → `1.5 KiB`.
fn human_bytes(n: i64) -> String {
    let mut v = n as f64;
    for unit in ["B", "KiB", "MiB", "GiB", "TiB"] {
        if v.abs() < 1024.0 || unit == "TiB" {
            return if unit == "B" {
                format!("{n} B")
            } else {
                format!("{v:.1} {unit}")
            };
        }
        v /= 1024.0;
    }
    format!("{n} B")
}
