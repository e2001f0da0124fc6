//! The `splice` binary: command-line parsing and wiring only. The work lives in the `lint`
//! and `cdc` crates.

mod cdc_cmd;
mod daemon;
mod db_url;
mod demo;
mod demo_mysql;
mod duration;
mod lint_cmd;
mod lint_output;
mod migrate_cmd;
mod new_cmd;
mod progress;
mod runtime;
mod session_name;
mod status_view;
mod units;
mod verify_report;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Exit code: every check passed.
pub const EXIT_OK: u8 = 0;
/// Exit code: a check failed (an error-level lint diagnostic, a divergence, a refused gate).
pub const EXIT_CHECK_FAILED: u8 = 1;
/// Exit code: bad usage, unreadable input, or a connection error.
pub const EXIT_USAGE: u8 = 2;

#[derive(Parser)]
#[command(
    name = "splice",
    version,
    about = "Online schema migrations for PostgreSQL, and a DDL linter for PostgreSQL and MySQL/MariaDB migrations",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Lint(lint_cmd::LintArgs),
    /// Change capture: `splice cdc tail` prints committed changes as JSON lines.
    Cdc(cdc_cmd::CdcArgs),
    /// Run an online migration end to end on a throwaway PostgreSQL, under write load.
    Demo(demo::DemoArgs),
    New(new_cmd::NewArgs),
    Daemon(daemon::DaemonArgs),
    #[command(flatten)]
    Migrate(migrate_cmd::MigrateCommand),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    // The daemon sets up its own logs (info by default, optionally JSON).
    if !matches!(cli.command, Command::Daemon(_)) {
        init_tracing();
    }
    let code = match cli.command {
        Command::Lint(args) => lint_cmd::run(args),
        Command::Cdc(args) => cdc_cmd::run(args),
        Command::Migrate(cmd) => migrate_cmd::run(cmd),
        Command::Demo(args) => demo::run(args),
        Command::New(args) => new_cmd::run(args),
        Command::Daemon(args) => daemon::run(args),
    };
    ExitCode::from(code)
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("SPLICE_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
