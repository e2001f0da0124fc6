//! `splice lint`: find the files, apply `splice.toml`, lint them in parallel, print a report.
//!
//! The linting itself is `lint::check`; this module owns everything around it that touches the
//! file system or the terminal.

use crate::lint_output::{self, FileReport, Format};
use clap::{Args, ValueEnum};
use globset::{Glob, GlobSet, GlobSetBuilder};
use rayon::prelude::*;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Lint SQL migrations for irreversible or lock-heavy DDL.
///
/// Exit codes: 0 no error-level diagnostic, 1 at least one, 2 usage or I/O error.
#[derive(Args)]
#[command(after_help = "\
Examples:
  splice lint migrations/                      lint every *.sql under migrations/
  splice lint --format github migrations/*.sql annotate a GitHub pull request
  splice lint --dialect mysql schema/          MySQL / MariaDB syntax and rules
  git diff --name-only main -- '*.sql' | xargs splice lint
  echo 'ALTER TABLE users DROP COLUMN email;' | splice lint -
  splice lint --list-rules
  splice lint --explain set-not-null")]
pub struct LintArgs {
    /// Files, directories (searched recursively for *.sql), or `-` for stdin.
    paths: Vec<String>,

    /// SQL dialect of the files [default: postgres, or `dialect` in splice.toml].
    #[arg(long, value_enum)]
    dialect: Option<DialectArg>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,

    /// Configuration file [default: ./splice.toml when it exists].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Treat each file as running inside one transaction block (as many migration tools do).
    #[arg(long)]
    assume_in_transaction: bool,

    /// Print every rule with its id, severity, dialects and summary, then exit.
    #[arg(long)]
    list_rules: bool,

    /// Print the full documentation of one rule, then exit.
    #[arg(long, value_name = "RULE")]
    explain: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum DialectArg {
    Postgres,
    Mysql,
}

/// The `[lint]` table of `splice.toml`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LintConfig {
    #[serde(default)]
    disable: Vec<String>,
    #[serde(default)]
    warn: Vec<String>,
    dialect: Option<String>,
    postgres_version: Option<u32>,
    #[serde(default)]
    assume_in_transaction: bool,
    #[serde(default)]
    exclude: Vec<String>,
}

#[derive(Deserialize, Default)]
struct ConfigFile {
    #[serde(default)]
    lint: LintConfig,
}

/// A usage or I/O problem: reported on stderr, exit 2.
struct UsageError(String);

pub fn run(args: LintArgs) -> u8 {
    match run_inner(args) {
        Ok(code) => code,
        Err(UsageError(msg)) => {
            eprintln!("error: {msg}");
            crate::EXIT_USAGE
        }
    }
}

fn run_inner(args: LintArgs) -> Result<u8, UsageError> {
    if args.list_rules {
        print!("{}", lint_output::rule_list());
        return Ok(crate::EXIT_OK);
    }
    if let Some(id) = &args.explain {
        return match lint::rule(id) {
            Some(rule) => {
                println!("{}", lint_output::explain(rule));
                Ok(crate::EXIT_OK)
            }
            None => Err(UsageError(format!(
                "unknown rule `{id}`; `splice lint --list-rules` lists them"
            ))),
        };
    }
    if args.paths.is_empty() {
        return Err(UsageError(
            "no input: give SQL files, directories, or `-` to read stdin \
             (example: splice lint migrations/)"
                .into(),
        ));
    }

    let config = load_config(args.config.as_deref())?;
    let options = options_from(&args, &config)?;
    let exclude = exclude_set(&config.exclude)?;
    let inputs = collect_inputs(&args.paths, &exclude)?;

    let reports: Vec<Result<FileReport, UsageError>> = inputs
        .into_par_iter()
        .map(|input| {
            let sql = input.read()?;
            let diagnostics = lint::check(&sql, &options);
            Ok(FileReport {
                name: input.display_name(),
                sql,
                diagnostics,
            })
        })
        .collect();
    let reports = reports.into_iter().collect::<Result<Vec<_>, _>>()?;

    let has_error = reports
        .iter()
        .flat_map(|r| &r.diagnostics)
        .any(|d| d.severity == lint::Severity::Error);
    lint_output::print(args.format, &reports).map_err(|e| UsageError(e.to_string()))?;
    Ok(if has_error {
        crate::EXIT_CHECK_FAILED
    } else {
        crate::EXIT_OK
    })
}

fn load_config(path: Option<&Path>) -> Result<LintConfig, UsageError> {
    let (path, required) = match path {
        Some(p) => (p.to_path_buf(), true),
        None => (PathBuf::from("splice.toml"), false),
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(LintConfig::default())
        }
        Err(e) => {
            return Err(UsageError(format!(
                "cannot read config {}: {e}",
                path.display()
            )))
        }
    };
    let file: ConfigFile = toml::from_str(&text).map_err(|e| {
        UsageError(format!(
            "invalid config {}: {e}\n  the [lint] table takes: disable, warn, dialect, \
             postgres_version, assume_in_transaction, exclude",
            path.display()
        ))
    })?;
    Ok(file.lint)
}

fn options_from(args: &LintArgs, config: &LintConfig) -> Result<lint::Options, UsageError> {
    let dialect = match (args.dialect, config.dialect.as_deref()) {
        (Some(DialectArg::Postgres), _) => lint::Dialect::Postgres,
        (Some(DialectArg::Mysql), _) => lint::Dialect::Mysql,
        (None, None) => lint::Dialect::Postgres,
        (None, Some(d)) => match d.to_ascii_lowercase().as_str() {
            "postgres" | "postgresql" => lint::Dialect::Postgres,
            "mysql" | "mariadb" => lint::Dialect::Mysql,
            other => {
                return Err(UsageError(format!(
                    "splice.toml: unknown dialect `{other}`; use \"postgres\" or \"mysql\""
                )))
            }
        },
    };
    let known = |ids: &[String], key: &str| -> Result<BTreeSet<String>, UsageError> {
        for id in ids {
            if lint::rule(id).is_none() {
                return Err(UsageError(format!(
                    "splice.toml: [lint] {key} names unknown rule `{id}`; \
                     `splice lint --list-rules` lists them"
                )));
            }
        }
        Ok(ids.iter().cloned().collect())
    };
    let defaults = lint::Options::default();
    Ok(lint::Options {
        dialect,
        postgres_version: config.postgres_version.unwrap_or(defaults.postgres_version),
        assume_in_transaction: args.assume_in_transaction || config.assume_in_transaction,
        disable: known(&config.disable, "disable")?,
        warn: known(&config.warn, "warn")?,
    })
}

fn exclude_set(patterns: &[String]) -> Result<GlobSet, UsageError> {
    let mut builder = GlobSetBuilder::new();
    for p in patterns {
        let glob = Glob::new(p)
            .map_err(|e| UsageError(format!("splice.toml: [lint] exclude pattern `{p}`: {e}")))?;
        builder.add(glob);
    }
    builder
        .build()
        .map_err(|e| UsageError(format!("splice.toml: [lint] exclude: {e}")))
}

/// One thing to lint: a file, or standard input.
enum Input {
    Stdin,
    File { shown: String, path: PathBuf },
}

impl Input {
    fn display_name(&self) -> String {
        match self {
            Input::Stdin => "<stdin>".into(),
            Input::File { shown, .. } => shown.clone(),
        }
    }

    fn read(&self) -> Result<String, UsageError> {
        match self {
            Input::Stdin => {
                let mut s = String::new();
                std::io::stdin()
                    .read_to_string(&mut s)
                    .map_err(|e| UsageError(format!("cannot read stdin: {e}")))?;
                Ok(s)
            }
            Input::File { shown, path } => {
                let bytes = std::fs::read(path)
                    .map_err(|e| UsageError(format!("cannot read {shown}: {e}")))?;
                String::from_utf8(bytes).map_err(|e| {
                    UsageError(format!(
                        "{shown} is not UTF-8 (invalid byte at offset {}); \
                         convert it with iconv -t UTF-8",
                        e.utf8_error().valid_up_to()
                    ))
                })
            }
        }
    }
}

/// Expand the command line into inputs, in a stable order: arguments as given, directory
/// contents sorted. Exclude globs match the path as it would be shown.
fn collect_inputs(paths: &[String], exclude: &GlobSet) -> Result<Vec<Input>, UsageError> {
    let mut inputs = Vec::new();
    let mut stdin_seen = false;
    let mut empty_dirs = Vec::new();
    for arg in paths {
        if arg == "-" {
            if !stdin_seen {
                inputs.push(Input::Stdin);
                stdin_seen = true;
            }
            continue;
        }
        let path = PathBuf::from(arg);
        let meta = std::fs::metadata(&path).map_err(|e| {
            UsageError(format!(
                "cannot read {arg}: {e}; give existing files, directories, or `-`"
            ))
        })?;
        if meta.is_dir() {
            let mut found = Vec::new();
            for entry in walkdir::WalkDir::new(&path).sort_by_file_name() {
                let entry = entry.map_err(|e| UsageError(format!("cannot walk {arg}: {e}")))?;
                let p = entry.path();
                let is_sql = p
                    .extension()
                    .is_some_and(|ext| ext.eq_ignore_ascii_case("sql"));
                if entry.file_type().is_file() && is_sql {
                    let shown = p.to_string_lossy().into_owned();
                    if !exclude.is_match(&shown) {
                        found.push(Input::File {
                            shown,
                            path: p.to_path_buf(),
                        });
                    }
                }
            }
            if found.is_empty() {
                empty_dirs.push(arg.as_str());
            }
            inputs.extend(found);
        } else if !exclude.is_match(arg) {
            inputs.push(Input::File {
                shown: arg.clone(),
                path,
            });
        }
    }
    // A wrong path in CI must not pass as "nothing to complain about".
    if inputs.is_empty() {
        return Err(UsageError(if empty_dirs.is_empty() {
            "no files to lint: every path given is excluded by `exclude` in splice.toml".into()
        } else {
            format!(
                "no .sql files in {} (directories are searched recursively for *.sql, minus \
                 `exclude` in splice.toml); check the path",
                empty_dirs.join(", ")
            )
        }));
    }
    Ok(inputs)
}
