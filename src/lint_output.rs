//! The four report formats of `splice lint` (human, json, sarif, github) and the rule listings.

use clap::ValueEnum;
use lint::{Diagnostic, RuleInfo, Severity};
use serde_json::{json, Value};
use std::io::{IsTerminal, Write};

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
pub enum Format {
    /// file:line:col, the source line, rule, message and help; colour on a terminal.
    Human,
    /// {"files_checked": N, "diagnostics": [...]}
    Json,
    /// SARIF 2.1.0, for code-scanning dashboards.
    Sarif,
    /// GitHub Actions workflow commands (::error file=…::…), shown as PR annotations.
    Github,
}

/// The diagnostics of one linted file, with its text for quoting source lines.
pub struct FileReport {
    /// The file as given on the command line (or found under a directory given there).
    pub name: String,
    pub sql: String,
    pub diagnostics: Vec<Diagnostic>,
}

pub fn print(format: Format, reports: &[FileReport]) -> std::io::Result<()> {
    let stdout = std::io::stdout();
    let color = format == Format::Human
        && stdout.is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let mut out = std::io::BufWriter::new(stdout.lock());
    match format {
        Format::Human => out.write_all(human(reports, color).as_bytes())?,
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, &json_report(reports))?;
            out.write_all(b"\n")?;
        }
        Format::Sarif => {
            serde_json::to_writer_pretty(&mut out, &sarif(reports))?;
            out.write_all(b"\n")?;
        }
        Format::Github => out.write_all(github(reports).as_bytes())?,
    }
    out.flush()?;
    if format != Format::Human {
        // Machine formats keep stdout parseable; the summary goes to stderr.
        eprintln!("{}", summary(reports));
    }
    Ok(())
}

fn severity_word(s: Severity) -> &'static str {
    match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
    }
}

/// "Checked 3 files: 1 error, 2 warnings; 0 statements unparsed."
pub fn summary(reports: &[FileReport]) -> String {
    let all = || reports.iter().flat_map(|r| &r.diagnostics);
    let errors = all().filter(|d| d.severity == Severity::Error).count();
    let warnings = all().filter(|d| d.severity == Severity::Warning).count();
    let unparsed = all().filter(|d| d.rule == "unparsed-statement").count();
    let plural = |n: usize, word: &str| {
        if n == 1 {
            format!("{n} {word}")
        } else {
            format!("{n} {word}s")
        }
    };
    format!(
        "Checked {}: {}, {}; {} unparsed.",
        plural(reports.len(), "file"),
        plural(errors, "error"),
        plural(warnings, "warning"),
        plural(unparsed, "statement")
    )
}

fn human(reports: &[FileReport], color: bool) -> String {
    let paint = |code: &str, text: &str| {
        if color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    };
    let mut s = String::new();
    for report in reports {
        let lines: Vec<&str> = report.sql.lines().collect();
        for d in &report.diagnostics {
            let (word, code) = match d.severity {
                Severity::Error => ("error", "1;31"),
                Severity::Warning => ("warning", "1;33"),
            };
            let source = lines
                .get(d.line.saturating_sub(1))
                .copied()
                .unwrap_or("")
                .trim_end();
            let gutter = " ".repeat(d.line.to_string().len());
            s.push_str(&format!(
                "{}:{}:{}: {}{} {}\n",
                paint("1", &report.name),
                d.line,
                d.column,
                paint(code, &format!("{word}[{}]", d.rule)),
                paint("1", ":"),
                d.message
            ));
            s.push_str(&format!("{gutter} |\n"));
            s.push_str(&format!("{} | {source}\n", d.line));
            s.push_str(&format!("{gutter} |\n"));
            s.push_str(&format!(
                "{gutter} = {} {}\n\n",
                paint("1;36", "help:"),
                d.help
            ));
        }
    }
    s.push_str(&summary(reports));
    s.push('\n');
    s
}

pub fn json_report(reports: &[FileReport]) -> Value {
    let diagnostics: Vec<Value> = reports
        .iter()
        .flat_map(|r| {
            r.diagnostics.iter().map(move |d| {
                json!({
                    "file": r.name,
                    "line": d.line,
                    "column": d.column,
                    "rule": d.rule,
                    "severity": severity_word(d.severity),
                    "message": d.message,
                    "help": d.help,
                })
            })
        })
        .collect();
    json!({ "files_checked": reports.len(), "diagnostics": diagnostics })
}

fn sarif_level(s: Severity) -> &'static str {
    match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
    }
}

pub fn sarif(reports: &[FileReport]) -> Value {
    let rules = lint::rules();
    let rule_meta: Vec<Value> = rules
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "name": r.id,
                "shortDescription": { "text": r.summary },
                "fullDescription": { "text": r.summary },
                "help": { "text": r.help, "markdown": r.doc },
                "defaultConfiguration": { "level": sarif_level(r.severity) },
                "properties": {
                    "dialects": r.dialects.iter().map(dialect_name).collect::<Vec<_>>()
                }
            })
        })
        .collect();
    let results: Vec<Value> = reports
        .iter()
        .flat_map(|r| {
            r.diagnostics.iter().map(move |d| {
                let mut result = json!({
                    "ruleId": d.rule,
                    "level": sarif_level(d.severity),
                    "message": { "text": format!("{}\nhelp: {}", d.message, d.help) },
                    "locations": [{
                        "physicalLocation": {
                            "artifactLocation": { "uri": sarif_uri(&r.name) },
                            "region": { "startLine": d.line, "startColumn": d.column }
                        }
                    }]
                });
                if let Some(i) = rules.iter().position(|x| x.id == d.rule) {
                    result["ruleIndex"] = json!(i);
                }
                result
            })
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {
                "driver": {
                    "name": "splice",
                    "version": env!("CARGO_PKG_VERSION"),
                    "informationUri": "https://example.invalid/splice#splice-lint",
                    "rules": rule_meta
                }
            },
            "results": results
        }]
    })
}

/// A relative URI reference for a path as given (no scheme, forward slashes, spaces escaped).
fn sarif_uri(name: &str) -> String {
    let name = name.strip_prefix("./").unwrap_or(name);
    let mut s = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '\\' => s.push('/'),
            ' ' => s.push_str("%20"),
            '%' => s.push_str("%25"),
            '#' => s.push_str("%23"),
            '?' => s.push_str("%3F"),
            _ => s.push(c),
        }
    }
    s
}

fn dialect_name(d: &lint::Dialect) -> &'static str {
    match d {
        lint::Dialect::Postgres => "postgres",
        lint::Dialect::Mysql => "mysql",
    }
}

/// Escaping of workflow-command data, per GitHub's toolkit.
fn gh_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Escaping of workflow-command property values (also `:` and `,`).
fn gh_property(s: &str) -> String {
    gh_data(s).replace(':', "%3A").replace(',', "%2C")
}

pub fn github(reports: &[FileReport]) -> String {
    let mut s = String::new();
    for r in reports {
        for d in &r.diagnostics {
            s.push_str(&format!(
                "::{} file={},line={},col={},title={}::{}\n",
                severity_word(d.severity),
                gh_property(&r.name),
                d.line,
                d.column,
                gh_property(&format!("splice {}", d.rule)),
                gh_data(&format!("{}\nhelp: {}", d.message, d.help)),
            ));
        }
    }
    s
}

pub fn rule_list() -> String {
    let rules = lint::rules();
    let width = rules.iter().map(|r| r.id.len()).max().unwrap_or(0);
    let mut s = String::new();
    for r in rules {
        let dialects: Vec<&str> = r.dialects.iter().map(dialect_name).collect();
        s.push_str(&format!(
            "{:width$}  {:7}  {:14}  {}\n",
            r.id,
            severity_word(r.severity),
            dialects.join(","),
            r.summary
        ));
    }
    s
}

pub fn explain(rule: &RuleInfo) -> String {
    let dialects: Vec<&str> = rule.dialects.iter().map(dialect_name).collect();
    format!(
        "# {}\n\nSeverity: {}. Dialects: {}.\n\n{}\n\n{}",
        rule.id,
        severity_word(rule.severity),
        dialects.join(", "),
        rule.summary,
        rule.doc.trim()
    )
}
