//! The linter's behaviour as the issue specifies it, through the public API.

use lint::{check, rule, rules, Diagnostic, Dialect, Options, Severity};
use proptest::prelude::*;

fn pg(sql: &str) -> Vec<Diagnostic> {
    check(sql, &Options::default())
}

fn my(sql: &str) -> Vec<Diagnostic> {
    check(
        sql,
        &Options {
            dialect: Dialect::Mysql,
            ..Options::default()
        },
    )
}

fn ids(d: &[Diagnostic]) -> Vec<&'static str> {
    d.iter().map(|d| d.rule).collect()
}

const TIMEOUT: &str = "SET lock_timeout = '2s';\n";

#[test]
fn sql_in_comments_strings_and_function_bodies_never_fires() {
    let sql = r#"
-- DROP TABLE users;
/* ALTER TABLE users DROP COLUMN email; /* nested */ TRUNCATE users; */
SELECT 'DROP TABLE users; TRUNCATE users', E'it\'s; DROP TABLE users';
SELECT "DROP TABLE users" FROM t;
CREATE FUNCTION wipe() RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
  DROP TABLE users;
  ALTER TABLE orders DROP COLUMN total;
END
$fn$;
DO $$ BEGIN TRUNCATE sessions; END $$;
COMMENT ON TABLE users IS 'never DROP TABLE users';
"#;
    assert_eq!(pg(sql), vec![]);

    let sql = r#"
# DROP TABLE users;
SELECT 'DROP TABLE users; \' TRUNCATE x', "RENAME TABLE a TO b;";
DELIMITER //
CREATE PROCEDURE wipe()
BEGIN
  DROP TABLE users;
  TRUNCATE TABLE sessions;
END //
DELIMITER ;
"#;
    assert_eq!(my(sql), vec![]);
}

#[test]
fn diagnostics_point_at_the_start_of_the_offending_statement() {
    let sql =
        "SET lock_timeout = '1s'; SELECT 1;\n  SELECT 2; ALTER TABLE users\n DROP COLUMN email;";
    let d = pg(sql);
    assert_eq!(d.len(), 1);
    assert_eq!((d[0].line, d[0].column, d[0].rule), (2, 13, "drop-column"));
    assert_eq!(d[0].severity, Severity::Error);
    assert!(d[0].message.contains("\"email\"") && d[0].message.contains("\"users\""));
    assert!(d[0].help.contains("splice"));
}

#[test]
fn diagnostics_are_sorted_by_position() {
    let sql = "DROP TABLE b;\nTRUNCATE a;\nALTER TABLE c DROP COLUMN x;";
    let d = pg(sql);
    let pos: Vec<(usize, usize)> = d.iter().map(|d| (d.line, d.column)).collect();
    let mut sorted = pos.clone();
    sorted.sort();
    assert_eq!(pos, sorted);
    assert_eq!(
        ids(&d),
        vec![
            "drop-table",
            "missing-lock-timeout",
            "truncate",
            "drop-column"
        ]
    );
}

#[test]
fn a_syntax_error_does_not_hide_the_statements_around_it() {
    let sql = format!("{TIMEOUT}DROP TABLE a;\nSELECT (1;\nDROP TABLE b;");
    let d = pg(&sql);
    assert_eq!(
        d.iter().map(|d| (d.line, d.rule)).collect::<Vec<_>>(),
        vec![(2, "drop-table"), (3, "syntax-error"), (4, "drop-table")]
    );
    assert_eq!(d[1].column, 8);
}

#[test]
fn statements_nobody_understands_are_warnings_with_the_parser_location() {
    let d = pg("SELECT 1;\n\n  FROBNICATE the widgets;");
    assert_eq!(ids(&d), vec!["unparsed-statement"]);
    assert_eq!(d[0].severity, Severity::Warning);
    assert_eq!((d[0].line, d[0].column), (3, 3));
    assert!(
        d[0].message.contains("line 3, column 3"),
        "{}",
        d[0].message
    );
}

#[test]
fn the_fallback_recogniser_applies_rules_to_statements_sqlparser_rejects() {
    // sqlparser 0.63 rejects USING INDEX, DROP INDEX CONCURRENTLY and REINDEX; the
    // recogniser still judges them.
    let sql = format!(
        "{TIMEOUT}ALTER TABLE t ADD CONSTRAINT t_pk PRIMARY KEY USING INDEX t_idx, DROP COLUMN legacy;\nBEGIN;\nDROP INDEX CONCURRENTLY t_old;\nREINDEX TABLE t;\nCOMMIT;"
    );
    assert_eq!(
        ids(&pg(&sql)),
        vec![
            "drop-column",
            "concurrently-in-transaction",
            "index-not-concurrent"
        ]
    );
}

#[test]
fn ignore_on_the_lines_before_or_at_the_end_of_a_statement_suppresses_it() {
    let sql = format!(
        "{TIMEOUT}-- splice:ignore drop-column -- contract step\n-- another comment line\nALTER TABLE u DROP COLUMN a;\n\
         ALTER TABLE u DROP COLUMN b; -- splice:ignore drop-column\n\
         ALTER TABLE u -- splice:ignore drop-column\n  DROP COLUMN c;\n\
         ALTER TABLE u DROP COLUMN d, DROP COLUMN e; /* splice:ignore drop-column */"
    );
    assert_eq!(pg(&sql), vec![]);
}

#[test]
fn ignore_separated_by_a_blank_line_does_not_attach_and_is_reported() {
    let sql = format!("{TIMEOUT}-- splice:ignore drop-column\n\nALTER TABLE u DROP COLUMN a;");
    let d = pg(&sql);
    assert_eq!(ids(&d), vec!["unused-ignore", "drop-column"]);
    assert_eq!(d[0].line, 2);
    assert_eq!(d[0].severity, Severity::Warning);
}

#[test]
fn ignore_only_suppresses_the_rules_it_names() {
    let sql = format!("{TIMEOUT}-- splice:ignore drop-table\nALTER TABLE u DROP COLUMN a;");
    assert_eq!(ids(&pg(&sql)), vec!["unused-ignore", "drop-column"]);
}

#[test]
fn ignore_file_suppresses_everywhere() {
    let sql =
        "DROP TABLE a;\nDROP TABLE b;\n-- splice:ignore-file drop-table, missing-lock-timeout";
    assert_eq!(pg(sql), vec![]);
}

#[test]
fn unknown_rules_in_ignores_are_reported() {
    let sql = format!("{TIMEOUT}DROP TABLE a; -- splice:ignore drop-table, drop-tabel");
    let d = pg(&sql);
    assert_eq!(ids(&d), vec!["unused-ignore"]);
    assert!(d[0].message.contains("drop-tabel") && d[0].message.contains("not a splice rule"));
}

#[test]
fn ignores_of_disabled_rules_are_not_reported_as_unused() {
    let opts = Options {
        disable: ["drop-table".to_string()].into(),
        ..Options::default()
    };
    let sql = format!("{TIMEOUT}-- splice:ignore drop-table\nDROP TABLE a;");
    assert_eq!(check(&sql, &opts), vec![]);
}

#[test]
fn ignore_file_unused_ignore_silences_unused_ignores() {
    let sql = format!(
        "{TIMEOUT}-- splice:ignore truncate\nSELECT 1;\n-- splice:ignore-file unused-ignore"
    );
    assert_eq!(pg(&sql), vec![]);
    let lonely = format!("{TIMEOUT}SELECT 1;\n-- splice:ignore-file unused-ignore");
    assert_eq!(ids(&pg(&lonely)), vec!["unused-ignore"]);
}

#[test]
fn disable_and_warn_options_apply() {
    let sql = "DROP TABLE a;\nTRUNCATE b;";
    let opts = Options {
        disable: ["drop-table".to_string(), "missing-lock-timeout".to_string()].into(),
        warn: ["truncate".to_string()].into(),
        ..Options::default()
    };
    let d = check(sql, &opts);
    assert_eq!(ids(&d), vec!["truncate"]);
    assert_eq!(d[0].severity, Severity::Warning);
}

#[test]
fn concurrently_fires_inside_explicit_or_assumed_transactions_only() {
    let idx = "CREATE INDEX CONCURRENTLY i ON t (a);";
    assert_eq!(pg(idx), vec![]);
    assert_eq!(
        ids(&pg(&format!("BEGIN;\n{idx}\nCOMMIT;"))),
        vec!["concurrently-in-transaction"]
    );
    assert_eq!(
        ids(&pg(&format!("START TRANSACTION;\n{idx}"))),
        vec!["concurrently-in-transaction"]
    );
    assert_eq!(pg(&format!("BEGIN;\nCOMMIT;\n{idx}")), vec![]);
    let assumed = Options {
        assume_in_transaction: true,
        ..Options::default()
    };
    assert_eq!(
        ids(&check(idx, &assumed)),
        vec!["concurrently-in-transaction"]
    );
}

#[test]
fn constant_defaults_are_free_from_postgres_11_only() {
    let sql = format!("{TIMEOUT}ALTER TABLE t ADD COLUMN a boolean NOT NULL DEFAULT false;\nALTER TABLE t ADD COLUMN b timestamptz DEFAULT now();");
    assert_eq!(pg(&sql), vec![]);
    let pg10 = Options {
        postgres_version: 10,
        ..Options::default()
    };
    let d = check(&sql, &pg10);
    assert_eq!(ids(&d), vec!["volatile-default", "volatile-default"]);
    let volatile = format!("{TIMEOUT}ALTER TABLE t ADD COLUMN c uuid DEFAULT gen_random_uuid();");
    assert_eq!(ids(&pg(&volatile)), vec!["volatile-default"]);
}

#[test]
fn tables_created_earlier_in_the_input_are_exempt_from_locking_and_breaking_rules() {
    let sql = "CREATE TABLE fresh (id bigint);\n\
               ALTER TABLE fresh ADD COLUMN a int NOT NULL, ADD COLUMN b uuid DEFAULT gen_random_uuid();\n\
               ALTER TABLE fresh ALTER COLUMN a SET NOT NULL, ALTER COLUMN a TYPE bigint;\n\
               ALTER TABLE fresh ADD CONSTRAINT f_pk PRIMARY KEY (id), ADD CONSTRAINT f_c CHECK (a > 0);\n\
               CREATE INDEX fresh_a ON fresh (a);\n\
               ALTER TABLE fresh DROP COLUMN b, RENAME COLUMN a TO c;\n\
               TRUNCATE fresh;\n\
               DROP TABLE fresh;";
    assert_eq!(pg(sql), vec![]);
    // Once dropped it is not new any more.
    assert_eq!(
        ids(&pg(&format!(
            "{sql}\nSET lock_timeout = '1s';\nTRUNCATE fresh;"
        ))),
        vec!["truncate"]
    );
}

#[test]
fn missing_lock_timeout_fires_once_and_not_after_a_timeout_is_set() {
    let sql = "ALTER TABLE a ADD COLUMN x int;\nALTER TABLE b ADD COLUMN y int;";
    let d = pg(sql);
    assert_eq!(ids(&d), vec!["missing-lock-timeout"]);
    assert_eq!(d[0].line, 1);
    assert_eq!(pg(&format!("{TIMEOUT}{sql}")), vec![]);
    assert_eq!(
        my(&format!("SET SESSION lock_wait_timeout = 5;\n{sql}")),
        vec![]
    );
    // PostgreSQL's setting does nothing on MySQL.
    assert_eq!(
        ids(&my(&format!("{TIMEOUT}{sql}"))),
        vec!["missing-lock-timeout"]
    );
}

#[test]
fn mysql_change_reports_rename_or_type_change() {
    let sql = "SET lock_wait_timeout = 5;\nALTER TABLE t CHANGE a b INT;\nALTER TABLE t CHANGE c c BIGINT;";
    let d = my(sql);
    assert_eq!(
        d.iter().map(|d| (d.line, d.rule)).collect::<Vec<_>>(),
        vec![(2, "rename-column"), (3, "change-column-type")]
    );
}

#[test]
fn postgres_only_rules_do_not_fire_on_mysql() {
    let sql = "SET lock_wait_timeout = 5;\nCREATE INDEX i ON t (a);\nALTER TABLE t ADD CONSTRAINT fk FOREIGN KEY (a) REFERENCES u (id);\nALTER TABLE t ADD UNIQUE (a);\nALTER TABLE t ADD COLUMN u CHAR(36) DEFAULT (UUID());";
    assert_eq!(my(sql), vec![]);
}

#[test]
fn ddl_that_splice_expand_emits_passes() {
    let sql = "SET lock_timeout = '2s';\n\
               ALTER TABLE users ADD COLUMN email_address text;\n\
               CREATE INDEX CONCURRENTLY IF NOT EXISTS users_email_address_idx ON users (email_address);\n\
               ALTER TABLE users ADD CONSTRAINT users_email_address_nn CHECK (email_address IS NOT NULL) NOT VALID;\n\
               ALTER TABLE users VALIDATE CONSTRAINT users_email_address_nn;\n\
               CREATE UNIQUE INDEX CONCURRENTLY users_email_address_key ON users (email_address);\n\
               ALTER TABLE users ADD CONSTRAINT users_email_address_key UNIQUE USING INDEX users_email_address_key;";
    assert_eq!(pg(sql), vec![]);
}

#[test]
fn every_rule_is_documented_with_all_four_sections_and_help() {
    let mut seen = std::collections::BTreeSet::new();
    for r in rules() {
        assert!(seen.insert(r.id), "duplicate rule id {}", r.id);
        assert_eq!(rule(r.id), Some(r));
        for section in [
            "## What it does",
            "## Why is this bad?",
            "## Example",
            "## Use instead",
        ] {
            assert!(r.doc.contains(section), "{} lacks {section}", r.id);
        }
        assert!(
            !r.summary.trim().is_empty() && !r.summary.contains('\n'),
            "{}",
            r.id
        );
        assert!(!r.help.trim().is_empty(), "{}", r.id);
        assert!(!r.dialects.is_empty(), "{}", r.id);
        assert!(r.doc.contains("```sql"), "{} has no SQL example", r.id);
    }
    for id in [
        "drop-column",
        "drop-table",
        "drop-schema",
        "rename-column",
        "rename-table",
        "not-null-without-default",
        "change-column-type",
        "truncate",
        "index-not-concurrent",
        "concurrently-in-transaction",
        "constraint-not-valid",
        "set-not-null",
        "constraint-without-index",
        "volatile-default",
        "stored-generated-column",
        "vacuum-full",
        "cluster",
        "mysql-copy-algorithm",
        "syntax-error",
        "missing-lock-timeout",
        "unused-ignore",
        "unparsed-statement",
    ] {
        assert!(seen.remove(id), "missing rule {id}");
    }
    assert!(seen.is_empty(), "undocumented extra rules {seen:?}");
    assert_eq!(rule("no-such-rule"), None);
}

#[test]
fn severities_match_the_issue() {
    for r in rules() {
        let warning = matches!(
            r.id,
            "missing-lock-timeout" | "unused-ignore" | "unparsed-statement"
        );
        let want = if warning {
            Severity::Warning
        } else {
            Severity::Error
        };
        assert_eq!(r.severity, want, "{}", r.id);
    }
}

proptest! {
    #[test]
    fn check_never_panics_and_positions_are_in_the_input(src in any::<String>()) {
        for dialect in [Dialect::Postgres, Dialect::Mysql] {
            let opts = Options { dialect, ..Options::default() };
            let lines = src.split('\n').count();
            for d in check(&src, &opts) {
                prop_assert!(d.line >= 1 && d.line <= lines);
                prop_assert!(d.column >= 1);
            }
        }
    }

    #[test]
    fn check_never_panics_on_sql_shaped_noise(
        parts in prop::collection::vec(
            prop_oneof![
                Just("ALTER TABLE"), Just("DROP"), Just("COLUMN"), Just("t"), Just("("), Just(")"),
                Just(";"), Just(","), Just("'x'"), Just("$$"), Just("--"), Just("\n"), Just("/*"),
                Just("*/"), Just("CREATE INDEX"), Just("ON"), Just("ADD"), Just("NOT NULL"),
                Just("DEFAULT"), Just("CHANGE"), Just("RENAME"), Just("TO"), Just("DELIMITER //\n"),
                Just("splice:ignore drop-column"), Just("BEGIN"), Just("CONCURRENTLY"),
            ],
            0..40,
        )
    ) {
        let src = parts.join(" ");
        for dialect in [Dialect::Postgres, Dialect::Mysql] {
            let opts = Options { dialect, ..Options::default() };
            let _ = check(&src, &opts);
        }
    }
}

/// The ```sql blocks of one `## Section` of a rule's doc.
fn sql_blocks<'a>(doc: &'a str, section: &str) -> Vec<&'a str> {
    let Some(start) = doc.find(section) else {
        return vec![];
    };
    let body = &doc[start + section.len()..];
    let body = &body[..body.find("\n## ").unwrap_or(body.len())];
    body.split("```sql\n")
        .skip(1)
        .map(|b| &b[..b.find("```").unwrap()])
        .collect()
}

#[test]
fn rule_docs_examples_fire_and_their_alternatives_do_not() {
    for r in rules() {
        let opts = Options {
            dialect: r.dialects[0],
            ..Options::default()
        };
        let examples = sql_blocks(r.doc, "## Example");
        assert!(!examples.is_empty(), "{}: no SQL example", r.id);
        for sql in examples {
            assert!(
                ids(&check(sql, &opts)).contains(&r.id),
                "{}: its example does not fire:\n{sql}",
                r.id
            );
        }
        for sql in sql_blocks(r.doc, "## Use instead") {
            assert!(
                !ids(&check(sql, &opts)).contains(&r.id),
                "{}: its alternative fires:\n{sql}",
                r.id
            );
        }
    }
}

#[test]
fn windows_files_with_a_byte_order_mark_and_crlf_lint_like_any_other() {
    let sql = "\u{feff}SET lock_timeout = '2s';\r\n-- splice:ignore drop-table\r\nDROP TABLE a;\r\nALTER TABLE b DROP COLUMN c;\r\n";
    let d = pg(sql);
    assert_eq!(
        d.iter()
            .map(|d| (d.line, d.column, d.rule))
            .collect::<Vec<_>>(),
        vec![(4, 1, "drop-column")]
    );
    let d = pg("\u{feff}TRUNCATE t;");
    assert_eq!((d[0].line, d[0].column, d[0].rule), (1, 1, "truncate"));
}

const POOL: &[&str] = &[
    "ALTER TABLE users DROP COLUMN email;",
    "DROP TABLE orders;",
    "TRUNCATE sessions;",
    "CREATE INDEX i ON t (a);",
    "ALTER TABLE t ADD COLUMN c int NOT NULL, ADD COLUMN d uuid DEFAULT gen_random_uuid();",
    "SELECT 1;",
    "ALTER TABLE t RENAME TO u;",
    "BEGIN;",
    "COMMIT;",
    "CREATE INDEX CONCURRENTLY j ON t (a);",
    "CREATE TABLE t (id int);",
    "SET lock_timeout = '1s';",
    "FROBNICATE;",
    "SELECT (1;",
];

proptest! {
    /// For any file built from the pool, an ignore listing a statement's rules, put on the line
    /// before it, removes exactly that statement's diagnostics and reports nothing unused.
    #[test]
    fn an_ignore_removes_exactly_its_statements_diagnostics(
        picks in prop::collection::vec(0..POOL.len(), 1..12),
        target in any::<prop::sample::Index>(),
    ) {
        let lines: Vec<&str> = picks.iter().map(|&i| POOL[i]).collect();
        let sql = lines.join("\n");
        let before = pg(&sql);
        let line = target.index(lines.len()) + 1;
        let rules_here: Vec<&str> = before.iter().filter(|d| d.line == line).map(|d| d.rule).collect();
        prop_assume!(!rules_here.is_empty());
        let mut with_ignore = lines.clone();
        let comment = format!("-- splice:ignore {}", rules_here.join(", "));
        with_ignore.insert(line - 1, &comment);
        let after = pg(&with_ignore.join("\n"));
        let expected: Vec<(usize, &str)> = before
            .iter()
            .filter(|d| d.line != line)
            .map(|d| (if d.line > line { d.line + 1 } else { d.line }, d.rule))
            .collect();
        let got: Vec<(usize, &str)> = after.iter().map(|d| (d.line, d.rule)).collect();
        prop_assert_eq!(got, expected);
    }
}

#[test]
fn many_diagnostics_on_one_long_line_cost_linear_time() {
    // Minified or generated SQL: 300,000 diagnostics (unmatched `)`) on one 600 kB line.
    // Counting each column from the line start would be quadratic (9e10 steps, far beyond the
    // bound); incrementally it takes milliseconds.
    let sql = ") ".repeat(300_000);
    let start = std::time::Instant::now();
    let d = pg(&sql);
    let elapsed = start.elapsed();
    assert_eq!(d.len(), 300_000);
    assert_eq!((d[0].line, d[0].column), (1, 1));
    assert_eq!(d[299_999].column, 2 * 299_999 + 1);
    assert!(elapsed < std::time::Duration::from_secs(4), "{elapsed:?}");
}
