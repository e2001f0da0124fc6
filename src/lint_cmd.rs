//! `splice lint`: find files, apply `splice.toml`, run the linter in parallel, print a report.

use clap::Args;

/// Lint SQL migrations for irreversible or lock-heavy DDL.
#[derive(Args)]
pub struct LintArgs {
    /// Files, directories (searched recursively for *.sql), or `-` for stdin.
    paths: Vec<String>,
}

pub fn run(_args: LintArgs) -> u8 {
    eprintln!("error: `splice lint` is not built yet");
    crate::EXIT_USAGE
}
