//! Rough single-thread throughput of `lint::check` on the fixture examples, repeated:
//! `cargo run --release -p splice-lint --example throughput`.

use std::time::Instant;

fn main() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/lint/examples");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("examples dir") {
        let path = entry.expect("entry").path();
        let dialect = if path.to_string_lossy().contains("mysql") {
            lint::Dialect::Mysql
        } else {
            lint::Dialect::Postgres
        };
        files.push((std::fs::read_to_string(&path).expect("file"), dialect));
    }
    let rounds = 2000;
    let bytes: usize = files.iter().map(|(s, _)| s.len()).sum::<usize>() * rounds;
    let start = Instant::now();
    let mut diags = 0;
    for _ in 0..rounds {
        for (sql, dialect) in &files {
            let opts = lint::Options {
                dialect: *dialect,
                ..lint::Options::default()
            };
            diags += lint::check(sql, &opts).len();
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let n = files.len() * rounds;
    println!(
        "{n} files, {diags} diagnostics in {secs:.2}s: {:.0} files/s, {:.1} MB/s",
        n as f64 / secs,
        bytes as f64 / secs / 1e6
    );
}
