//! Walks `fixtures/lint/<rule>/`: every `fires*.<dialect>.sql` must produce exactly the
//! diagnostics its `-- expect: rule[, rule]` markers name, on the marked lines (for the folder's
//! rule and every rule a marker names); every `ok*.<dialect>.sql` must produce none of the
//! folder's rule. A first-line `-- options: assume_in_transaction, postgres_version=10` sets
//! options.

use lint::{check, rules, Dialect, Options};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/lint");

fn dialect_of(path: &Path) -> Dialect {
    let name = path.file_name().unwrap().to_str().unwrap();
    if name.ends_with(".postgres.sql") {
        Dialect::Postgres
    } else if name.ends_with(".mysql.sql") {
        Dialect::Mysql
    } else {
        panic!(
            "{}: fixture names end in .postgres.sql or .mysql.sql",
            path.display()
        )
    }
}

fn options_for(path: &Path, sql: &str) -> Options {
    let mut opts = Options {
        dialect: dialect_of(path),
        ..Options::default()
    };
    if let Some(list) = sql
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("-- options:"))
    {
        for opt in list.split(',').map(str::trim) {
            match opt.split_once('=') {
                None if opt == "assume_in_transaction" => opts.assume_in_transaction = true,
                Some(("postgres_version", v)) => opts.postgres_version = v.parse().unwrap(),
                _ => panic!("{}: unknown option {opt}", path.display()),
            }
        }
    }
    opts
}

/// `(line, rule)` for every `-- expect:` marker, one entry per rule named.
fn markers(sql: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, line) in sql.lines().enumerate() {
        if let Some((_, list)) = line.split_once("-- expect:") {
            for rule in list.split(',').map(str::trim).filter(|r| !r.is_empty()) {
                assert!(
                    lint::rule(rule).is_some(),
                    "marker names unknown rule {rule}"
                );
                out.push((i + 1, rule.to_string()));
            }
        }
    }
    out.sort();
    out
}

fn fixture_files() -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for dir in std::fs::read_dir(ROOT).unwrap() {
        let dir = dir.unwrap().path();
        let rule = dir.file_name().unwrap().to_str().unwrap().to_string();
        if rule == "examples" || !dir.is_dir() {
            continue;
        }
        assert!(
            lint::rule(&rule).is_some(),
            "fixtures/lint/{rule} is not a rule"
        );
        for f in std::fs::read_dir(&dir).unwrap() {
            out.push((rule.clone(), f.unwrap().path()));
        }
    }
    out.sort();
    out
}

#[test]
fn fires_fixtures_produce_exactly_the_marked_diagnostics() {
    let mut checked = 0;
    for (rule, path) in fixture_files() {
        let name = path.file_name().unwrap().to_str().unwrap();
        if !name.starts_with("fires") {
            continue;
        }
        let sql = std::fs::read_to_string(&path).unwrap();
        let want = markers(&sql);
        assert!(
            want.iter().any(|(_, r)| *r == rule),
            "{}: no marker for {rule}",
            path.display()
        );
        let judged: BTreeSet<&str> = want
            .iter()
            .map(|(_, r)| r.as_str())
            .chain([rule.as_str()])
            .collect();
        let mut got: Vec<(usize, String)> = check(&sql, &options_for(&path, &sql))
            .into_iter()
            .filter(|d| judged.contains(d.rule))
            .map(|d| (d.line, d.rule.to_string()))
            .collect();
        got.sort();
        assert_eq!(got, want, "{}", path.display());
        checked += 1;
    }
    assert!(checked > 20);
}

#[test]
fn ok_fixtures_do_not_fire_their_rule() {
    let mut checked = 0;
    for (rule, path) in fixture_files() {
        let name = path.file_name().unwrap().to_str().unwrap();
        if !name.starts_with("ok") {
            continue;
        }
        let sql = std::fs::read_to_string(&path).unwrap();
        let hits: Vec<_> = check(&sql, &options_for(&path, &sql))
            .into_iter()
            .filter(|d| d.rule == rule)
            .collect();
        assert!(hits.is_empty(), "{}: {hits:#?}", path.display());
        checked += 1;
    }
    assert!(checked > 20);
}

#[test]
fn fixtures_never_contain_unexpected_syntax_errors_or_unparsed_statements() {
    for (rule, path) in fixture_files() {
        if rule == "syntax-error" || rule == "unparsed-statement" {
            continue;
        }
        let sql = std::fs::read_to_string(&path).unwrap();
        let bad: Vec<_> = check(&sql, &options_for(&path, &sql))
            .into_iter()
            .filter(|d| d.rule == "syntax-error" || d.rule == "unparsed-statement")
            .collect();
        assert!(bad.is_empty(), "{}: {bad:#?}", path.display());
    }
}

#[test]
fn every_rule_has_a_firing_and_a_near_miss_fixture_per_dialect() {
    for info in rules() {
        for dialect in info.dialects {
            let suffix = match dialect {
                Dialect::Postgres => "postgres.sql",
                Dialect::Mysql => "mysql.sql",
            };
            for kind in ["fires", "ok"] {
                let path = Path::new(ROOT)
                    .join(info.id)
                    .join(format!("{kind}.{suffix}"));
                assert!(path.is_file(), "missing {}", path.display());
            }
        }
    }
}

#[test]
fn example_migrations_lint_as_their_names_say() {
    let dir = Path::new(ROOT).join("examples");
    let mut seen = 0;
    for f in std::fs::read_dir(dir).unwrap() {
        let path = f.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let sql = std::fs::read_to_string(&path).unwrap();
        let diags = check(&sql, &options_for(&path, &sql));
        let errors = diags
            .iter()
            .filter(|d| d.severity == lint::Severity::Error)
            .count();
        if name.contains("unsafe") {
            assert!(errors > 0, "{name} should fail the check");
        } else {
            assert!(diags.is_empty(), "{name}: {diags:#?}");
        }
        seen += 1;
    }
    assert!(seen >= 4);
}
