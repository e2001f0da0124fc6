//! Start a throwaway PostgreSQL server for scripts (the benchmarks): prints its URL and bin
//! directory, then keeps it running until stdin closes or the process is signalled.
//!
//! `cargo run -p splice-testkit --example throwaway-postgres [-- name=value ...]`

use std::io::{BufRead, Write};

fn main() -> anyhow::Result<()> {
    let mut builder = testkit::Postgres::builder();
    for arg in std::env::args().skip(1) {
        let Some((name, value)) = arg.split_once('=') else {
            anyhow::bail!("expected name=value server settings, got {arg:?}");
        };
        builder = builder.setting(name, value);
    }
    let pg = builder.start()?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "url={}", pg.url())?;
    writeln!(out, "bindir={}", pg.bindir().display())?;
    writeln!(out, "port={}", pg.port())?;
    out.flush()?;
    drop(out);
    // Hold the server until our stdin closes (the script's fifo/pipe ends).
    let mut line = String::new();
    while std::io::stdin().lock().read_line(&mut line)? > 0 {
        line.clear();
    }
    drop(pg);
    Ok(())
}
