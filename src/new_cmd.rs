//! `splice new`: writes the migration file that runs one ALTER TABLE online, so nobody
//! hand-writes TOML for the common case.

use clap::Args;
use std::path::PathBuf;

/// Write a migration file that runs an ALTER TABLE online.
#[derive(Args, Debug)]
#[command(
    after_help = "Example:\n  splice new widen_title --alter \"ALTER TABLE community ALTER COLUMN title TYPE varchar(200)\"\n  splice plan widen_title.toml\n\nThe table comes from the ALTER (public when it names no schema) unless --table gives it.\nThe file is written as NAME.toml in the current directory unless --out says where; an\nexisting file is left alone unless --force."
)]
pub struct NewArgs {
    /// The migration's name: 1-40 characters of a-z, 0-9 and _.
    name: String,
    /// One or more ALTER TABLE statements on the table, separated by `;`.
    #[arg(long, value_name = "SQL")]
    alter: String,
    /// The table (SCHEMA.TABLE); default: the one the ALTER names.
    #[arg(long, value_name = "SCHEMA.TABLE")]
    table: Option<String>,
    /// Where to write the file (default: NAME.toml).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Overwrite an existing file.
    #[arg(long)]
    force: bool,
}

pub fn run(args: NewArgs) -> u8 {
    match write(&args) {
        Ok(path) => {
            println!("wrote {}", path.display());
            println!("next: splice plan {}", path.display());
            crate::EXIT_OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            crate::EXIT_USAGE
        }
    }
}

fn write(args: &NewArgs) -> Result<PathBuf, String> {
    let table = match &args.table {
        Some(t) => t.clone(),
        // PostgreSQL's grammar first; MySQL's ALTER (MODIFY, CHANGE, …) read by its name.
        None => engine::postgres::alter::table_of(&args.alter)
            .or_else(|| engine::mysql::alter::table_of(&args.alter))
            .ok_or_else(|| {
                "--alter has no ALTER TABLE statement to take the table from; give ALTER TABLE \
             SCHEMA.TABLE …, or --table"
                    .to_string()
            })?,
    };
    let table = if table.contains('.') {
        table
    } else {
        format!("public.{table}")
    };
    let text = engine::postgres::alter::migration_file(&args.name, &table, &args.alter);
    // The file must be one splice accepts: the same checks expand makes of the file alone.
    engine::MigrationSpec::parse(&text, "the generated file").map_err(|e| e.to_string())?;
    let path = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.toml", args.name)));
    if path.exists() && !args.force {
        return Err(format!(
            "{} exists; pass --force to overwrite it, or --out FILE",
            path.display()
        ));
    }
    std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}
