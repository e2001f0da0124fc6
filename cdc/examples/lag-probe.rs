//! Reads `splice cdc tail` JSON lines on stdin and reports how long each change took from its
//! commit to arriving here: p50, p99 and max in milliseconds. For `scripts/bench-cdc`.
//!
//! `splice cdc tail … | cargo run --release -p splice-cdc --example lag-probe`

use std::io::BufRead;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut lags_us: Vec<i64> = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let arrived = cdc::Timestamp::now();
        let value: serde_json::Value = serde_json::from_str(&line)?;
        let committed: cdc::Timestamp = value["committed_at"]
            .as_str()
            .ok_or("a line without committed_at")?
            .parse()?;
        lags_us.push(arrived.unix_micros - committed.unix_micros);
    }
    if lags_us.is_empty() {
        println!("changes=0");
        return Ok(());
    }
    lags_us.sort_unstable();
    let pick = |q: f64| {
        let i = ((lags_us.len() as f64 - 1.0) * q).round() as usize;
        lags_us[i] as f64 / 1000.0
    };
    println!(
        "changes={} p50_ms={:.2} p99_ms={:.2} max_ms={:.2}",
        lags_us.len(),
        pick(0.50),
        pick(0.99),
        pick(1.0)
    );
    Ok(())
}
