//! `splice daemon`: a long-running process that drives migrations on its own (expand, sync,
//! then a verify pass at every interval) and serves `/healthz/*`, `/metrics` and a small
//! JSON API with pause, resume, throttle, cutover and rollback. Wiring only: the engine does
//! the work under its fenced runner lock; `runner.rs` sequences its commands, `automation.rs`
//! asks for cutover and rollback when the file's `[automation]` gates say so, `http.rs`
//! renders what they know.

mod any_engine;
mod automation;
mod config;
mod http;
mod metrics;
mod runner;

use clap::Args;
use config::{CommandLine, Settings};
use runner::MigrationRun;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// After SIGTERM, how long the runners get to checkpoint and let go before the process exits.
const SHUTDOWN_BUDGET: Duration = Duration::from_secs(9);

/// Drive migrations on their own, with /metrics, /healthz and a control API.
#[derive(Args)]
#[command(
    after_help = "Examples:\n  splice daemon migrations/orders_v2.toml\n  splice daemon --listen 0.0.0.0:9187 --token-file /etc/splice/token --config /etc/splice/daemon.toml\n\nFor each migration: expand (unless done), sync until caught up, then a full verify pass, and every\n--verify-interval an incremental one (only the key ranges changed since) while following changes in between. It cuts over and rolls back when asked\n(POST …/cutover, …/rollback) or when the file's [automation] gates say so; it never contracts or drops.\nGET /healthz/live, /healthz/ready, /metrics, /api/v1/migrations[/NAME], /;\nPOST /api/v1/migrations/NAME/pause|resume|cutover|rollback; PUT /api/v1/migrations/NAME/throttle {\"rows_per_second\": N}.\nSIGTERM (or Ctrl-C) stops every sync at a checkpoint and exits 0. See docs/daemon.md."
)]
pub struct DaemonArgs {
    /// Migration files to drive (TOML), in the database of --database-url.
    #[arg(value_name = "MIGRATION_FILE")]
    files: Vec<PathBuf>,
    /// Address for HTTP; beyond loopback it needs --token-file.
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// A config file (TOML): listen, token_file, database_url, verify_interval and
    /// [[migration]] tables with file and an optional database_url each.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// A file holding the bearer token control requests must carry.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Time between two verify passes (default 5m): the first full, the next incremental.
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse_duration)]
    verify_interval: Option<Duration>,
    /// PostgreSQL URL; defaults to $SPLICE_DATABASE_URL, then $DATABASE_URL, then the PG*
    /// variables, then the config file's database_url.
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Log lines on stderr as text or as one JSON object per line. The level is $SPLICE_LOG
    /// (default: info for splice, warn for the rest).
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// The daemon's logs: a step per line at info (expanded, caught up, each verify pass, pauses),
/// warnings and failed steps; `SPLICE_LOG` overrides the level as for every command.
fn init_logs(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("SPLICE_LOG")
        .unwrap_or_else(|_| EnvFilter::new("warn,splice=info,engine=info,cdc=info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => logs.try_init(),
        LogFormat::Json => logs.json().try_init(),
    };
}

pub fn run(args: DaemonArgs) -> u8 {
    init_logs(args.log_format);
    let settings = match Settings::resolve(CommandLine {
        listen: args.listen,
        config: args.config,
        token_file: args.token_file,
        database_url: args.database_url,
        verify_interval: args.verify_interval,
        files: args.files,
    }) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return crate::EXIT_USAGE;
        }
    };
    let mut runs: Vec<Arc<MigrationRun>> = Vec::new();
    for m in &settings.migrations {
        match MigrationRun::open(&m.file, &m.database_url) {
            Ok(run) => {
                if let Some(other) = runs
                    .iter()
                    .find(|r| r.name == run.name && r.database == run.database)
                {
                    eprintln!(
                        "error: {} and {} are both migration {} in {}; give each once",
                        other.file, run.file, run.name, run.database
                    );
                    return crate::EXIT_USAGE;
                }
                runs.push(Arc::new(run));
            }
            Err(e) => {
                eprintln!("error: {e}");
                return crate::EXIT_USAGE;
            }
        }
    }
    // Worker threads: migrations run at once, and the HTTP server answers while they work.
    let rt = match crate::runtime::multi_thread(None) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return crate::EXIT_USAGE;
        }
    };
    rt.block_on(serve(settings, runs))
}

async fn serve(settings: Settings, runs: Vec<Arc<MigrationRun>>) -> u8 {
    let listener = match tokio::net::TcpListener::bind(settings.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "error: cannot listen on {}: {e}; pick another --listen address",
                settings.listen
            );
            return crate::EXIT_USAGE;
        }
    };
    let addr = listener.local_addr().unwrap_or(settings.listen);
    let (shutdown, stop) = watch::channel(false);
    let signalled = signal_received();
    let daemon = Arc::new(http::Daemon {
        runs: runs.clone(),
        token: settings.token.clone(),
        stopping: Default::default(),
    });
    let app =
        http::router(daemon.clone()).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let mut server_stop = stop.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = server_stop.wait_for(|s| *s).await;
            })
            .await
    });
    eprintln!(
        "splice daemon: listening on http://{addr}; driving {} (verify every {})",
        runs.iter()
            .map(|r| format!("{} in {}", r.name, r.database))
            .collect::<Vec<_>>()
            .join(", "),
        humantime::format_duration(settings.verify_interval)
    );
    let mut drivers = tokio::task::JoinSet::new();
    for run in &runs {
        tokio::spawn(runner::watch_status(run.clone(), stop.clone()));
        tokio::spawn(automation::automate(run.clone(), stop.clone()));
        drivers.spawn(runner::drive(
            run.clone(),
            format!("http://{addr}"),
            settings.verify_interval,
            stop.clone(),
        ));
    }
    signalled.await;
    eprintln!("splice daemon: stopping: each sync finishes its chunk and checkpoints…");
    daemon.stopping.store(true, Ordering::Relaxed);
    let _ = shutdown.send(true);
    let all_stopped = tokio::time::timeout(SHUTDOWN_BUDGET, async {
        while drivers.join_next().await.is_some() {}
    })
    .await
    .is_ok();
    if !all_stopped {
        // As safe as a crash (every step resumes from its checkpoint), but say so.
        eprintln!(
            "splice daemon: a runner did not stop within {}s; exiting anyway (its work resumes \
             from the last checkpoint)",
            SHUTDOWN_BUDGET.as_secs()
        );
        drivers.abort_all();
    }
    match tokio::time::timeout(Duration::from_secs(1), server).await {
        Ok(Ok(Err(e))) => eprintln!("splice daemon: the HTTP server failed: {e}"),
        Err(_) => eprintln!("splice daemon: HTTP connections still open at exit"),
        _ => {}
    }
    eprintln!("splice daemon: stopped");
    crate::EXIT_OK
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
fn signal_received() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    async move {
        #[cfg(unix)]
        {
            match term {
                Ok(mut term) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}
