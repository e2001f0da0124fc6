//! `splice new`: writes the migration file that runs one ALTER TABLE online, so nobody
//! hand-writes TOML for the common case.

use clap::Args;
use std::path::PathBuf;

/// Write a migration file that runs an ALTER TABLE online.
#[derive(Args, Debug)]
#[command(
    after_help = "Example:\n  splice new widen_title --alter \"ALTER TABLE community ALTER COLUMN title TYPE varchar(200)\"\n  splice plan widen_title.toml\n\nThe table comes from the ALTER unless --table gives it. One the ALTER names without a schema is\nin public on PostgreSQL, in the URL's database on MySQL/MariaDB (--database-url, else\n$SPLICE_DATABASE_URL or $DATABASE_URL; nothing connects):\n  splice new add_note --alter \"ALTER TABLE orders ADD COLUMN note text\" --database-url mysql://app@db/shop\nThe file is written as NAME.toml in the current directory unless --out says where; an\nexisting file is left alone unless --force."
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
    /// The server the migration is for, read only for where a table named without a schema
    /// lives (PostgreSQL: public; MySQL/MariaDB: the URL's database). Defaults to
    /// $SPLICE_DATABASE_URL, then $DATABASE_URL; nothing connects.
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
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
    // PostgreSQL's grammar first; MySQL's ALTER (MODIFY, CHANGE, …) read by its name.
    let (table, mysql_syntax) = match &args.table {
        Some(t) => (t.clone(), false),
        None => match engine::postgres::alter::table_of(&args.alter) {
            Some(t) => (t, false),
            None => (
                engine::mysql::alter::table_of(&args.alter).ok_or_else(|| {
                    "--alter has no ALTER TABLE statement to take the table from; give ALTER \
                     TABLE SCHEMA.TABLE …, or --table"
                        .to_string()
                })?,
                true,
            ),
        },
    };
    let table = if table.contains('.') {
        table
    } else {
        let url = crate::db_url::resolve(args.database_url.clone()).ok();
        format!("{}.{table}", default_schema(url.as_deref(), mysql_syntax)?)
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

/// Where a table named without a schema lives: the MySQL/MariaDB URL's database, else
/// PostgreSQL's `public`. An ALTER only MySQL's grammar reads, with no MySQL URL to take the
/// database from, is refused rather than given PostgreSQL's `public`.
fn default_schema(url: Option<&str>, mysql_syntax: bool) -> Result<String, String> {
    match url {
        Some(url) if crate::db_url::is_mysql(url) => {
            let target = cdc::mysql::MySqlTarget::from_url(url).map_err(|e| e.to_string())?;
            target.database().map(str::to_string).ok_or_else(|| {
                "the table is named without its database and the MySQL/MariaDB URL names none: \
                 give --table DATABASE.TABLE, or end the URL with /DATABASE"
                    .to_string()
            })
        }
        _ if mysql_syntax => Err("the ALTER is MySQL syntax and names the table without its \
             database: give --table DATABASE.TABLE, or --database-url mysql://USER@HOST/DATABASE"
            .to_string()),
        _ => Ok("public".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::default_schema;

    #[test]
    fn a_table_named_without_a_schema_lives_where_the_server_kind_says() {
        assert_eq!(default_schema(None, false).as_deref(), Ok("public"));
        assert_eq!(
            default_schema(Some("postgres://app@db/app"), false).as_deref(),
            Ok("public")
        );
        assert_eq!(
            default_schema(Some("mysql://app@db:3306/shop"), false).as_deref(),
            Ok("shop")
        );
        assert_eq!(
            default_schema(Some("mariadb://app@db/shop?ssl-mode=REQUIRED"), true).as_deref(),
            Ok("shop")
        );
        // No database to take: refused, never PostgreSQL's public.
        let no_db = default_schema(Some("mysql://app@db"), false).unwrap_err();
        assert!(no_db.contains("--table DATABASE.TABLE"), "{no_db}");
        let mysql_alter = default_schema(Some("postgres://app@db/app"), true).unwrap_err();
        assert!(mysql_alter.contains("MySQL syntax"), "{mysql_alter}");
        assert!(default_schema(None, true).is_err());
    }
}
