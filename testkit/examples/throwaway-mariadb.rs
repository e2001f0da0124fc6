//! Start a throwaway MariaDB server for scripts (the benchmarks): prints its URL and port, then
//! keeps it running until stdin closes or the process is signalled.
//!
//! `cargo run -p splice-testkit --example throwaway-mariadb [-- name=value ...]`

use std::io::{BufRead, Write};

fn main() -> anyhow::Result<()> {
    let mut builder = testkit::MariaDb::builder();
    for arg in std::env::args().skip(1) {
        let Some((name, value)) = arg.split_once('=') else {
            anyhow::bail!("expected name=value server options, got {arg:?}");
        };
        builder = builder.setting(name, value);
    }
    let server = builder.start()?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "url={}", server.url())?;
    writeln!(out, "port={}", server.port())?;
    out.flush()?;
    drop(out);
    // Hold the server until our stdin closes (the script's fifo/pipe ends).
    let mut line = String::new();
    while std::io::stdin().lock().read_line(&mut line)? > 0 {
        line.clear();
    }
    drop(server);
    Ok(())
}
