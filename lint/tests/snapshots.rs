//! Snapshot of every diagnostic (message and help, the human-facing text) on the example
//! migrations in `fixtures/lint/examples/`.

use std::fmt::Write;
use std::path::Path;

#[test]
fn example_migration_diagnostics() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/lint/examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut out = String::new();
    for path in files {
        let name = path.file_name().unwrap().to_str().unwrap();
        let dialect = if name.ends_with(".mysql.sql") {
            lint::Dialect::Mysql
        } else {
            lint::Dialect::Postgres
        };
        let sql = std::fs::read_to_string(&path).unwrap();
        let opts = lint::Options {
            dialect,
            ..lint::Options::default()
        };
        writeln!(out, "== {name}").unwrap();
        for d in lint::check(&sql, &opts) {
            writeln!(
                out,
                "{}:{} {:?} {}: {}\n    help: {}",
                d.line, d.column, d.severity, d.rule, d.message, d.help
            )
            .unwrap();
        }
    }
    insta::assert_snapshot!(out);
}
