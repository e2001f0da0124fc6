//! `splice cdc …`: an operator's view of change capture.

use clap::{Args, Subcommand};

/// Change capture commands.
#[derive(Args)]
pub struct CdcArgs {
    #[command(subcommand)]
    command: CdcCommand,
}

#[derive(Subcommand)]
enum CdcCommand {
    /// Print committed changes as JSON lines (not built yet).
    Tail,
}

pub fn run(args: CdcArgs) -> u8 {
    match args.command {
        CdcCommand::Tail => {
            eprintln!("error: `splice cdc tail` is not built yet");
            crate::EXIT_USAGE
        }
    }
}
