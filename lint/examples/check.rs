//! Prints the diagnostics for one file: `cargo run -p splice-lint --example check -- FILE [mysql]`.

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: check FILE [postgres|mysql]");
    let dialect = match args.next().as_deref() {
        Some("mysql") => lint::Dialect::Mysql,
        _ => lint::Dialect::Postgres,
    };
    let sql = std::fs::read_to_string(&path).expect("readable file");
    let opts = lint::Options {
        dialect,
        ..lint::Options::default()
    };
    for d in lint::check(&sql, &opts) {
        println!(
            "{path}:{}:{} {:?} {}: {}",
            d.line, d.column, d.severity, d.rule, d.message
        );
    }
}
