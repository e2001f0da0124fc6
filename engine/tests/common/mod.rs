//! Shared set-up for the engine's tests: a throwaway server, an `orders` table, a migration
//! file, and an independent comparison of every row (not splice's own verify).

#![allow(dead_code)]

use engine::backfill::{Control, NoProgress, SyncProgress};
use engine::{Engine, RateLimit};
use testkit::Postgres;
use tokio_postgres::Client;

/// The example migration the demo runs: orders → orders with integer cents.
pub const ORDERS_V2: &str = include_str!("../../../migrations/orders_v2.toml");

pub struct Db {
    pub pg: Postgres,
    pub url: String,
}

pub fn server() -> Db {
    let pg = Postgres::start().expect("start PostgreSQL");
    let url = pg.url();
    Db { pg, url }
}

pub async fn connect(url: &str) -> Client {
    testkit::connect(url).await.expect("connect")
}

/// `orders(id bigserial, customer_id, amount numeric(12,2), currency text, note text)` with
/// `rows` rows.
pub async fn create_orders(db: &Client, rows: i64) {
    db.batch_execute(&format!(
        "CREATE TABLE orders (
            id bigserial PRIMARY KEY,
            customer_id bigint NOT NULL,
            amount numeric(12,2) NOT NULL,
            currency text,
            note text
         );
         INSERT INTO orders (customer_id, amount, currency, note)
         SELECT g % 97, (g % 1000) / 7.0, CASE WHEN g % 5 = 0 THEN NULL ELSE 'USD' END,
                CASE WHEN g % 3 = 0 THEN NULL ELSE 'note ' || g END
         FROM generate_series(1, {rows}) g;"
    ))
    .await
    .expect("create orders");
}

/// Every key's mapped old row against the new row, computed in SQL independently of splice.
/// Returns the keys that differ (both directions).
pub async fn mismatches(db: &Client, old: &str, new: &str) -> Vec<i64> {
    let rows = db
        .query(
            &format!(
                "SELECT coalesce(o.id, n.id) FROM
                   (SELECT id, customer_id, (amount * 100)::bigint AS amount_cents,
                           coalesce(currency, 'EUR')::char(3) AS currency, note FROM {old}) o
                 FULL JOIN {new} n ON n.id = o.id
                 WHERE o.id IS NULL OR n.id IS NULL
                    OR (o.customer_id, o.amount_cents, o.currency, o.note)
                       IS DISTINCT FROM (n.customer_id, n.amount_cents, n.currency, n.note)
                 ORDER BY 1"
            ),
            &[],
        )
        .await
        .expect("compare");
    rows.iter().map(|r| r.get(0)).collect()
}

pub async fn sync_until_caught_up(engine: &Engine<engine::Postgres>, name: &str) -> SyncProgress {
    let opts = engine::phases::SyncOptions {
        until_caught_up: true,
        ..Default::default()
    };
    engine
        .sync(
            name,
            &opts,
            &Control::new(RateLimit::Unlimited),
            &mut NoProgress,
        )
        .await
        .expect("sync")
}

/// Random inserts, updates (some of the key) and deletes until `stop` is set; returns how
/// many statements ran.
pub async fn write_load(
    url: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    seed: u64,
) -> u64 {
    use rand::{Rng, SeedableRng};
    let db = connect(&url).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut n = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let id: i64 = rng.random_range(1..3000);
        let r: u32 = rng.random_range(0..100);
        let sql = if r < 40 {
            format!("UPDATE orders SET amount = amount + 1, note = 'u{n}' WHERE id = {id}")
        } else if r < 60 {
            "INSERT INTO orders (customer_id, amount, currency) VALUES (7, 12.34, NULL)".to_string()
        } else if r < 75 {
            format!("DELETE FROM orders WHERE id = {id}")
        } else if r < 85 {
            // Primary-key update: the row moves to a fresh key.
            format!("UPDATE orders SET id = id + 1000000 WHERE id = {id}")
        } else {
            format!(
                "BEGIN; UPDATE orders SET currency = 'GBP' WHERE id = {id}; \
                 INSERT INTO orders (customer_id, amount) VALUES ({id}, 1); COMMIT"
            )
        };
        if db.batch_execute(&sql).await.is_err() {
            let _ = db.batch_execute("ROLLBACK").await;
        }
        n += 1;
        if n % 50 == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }
    n
}
