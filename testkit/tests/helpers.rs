//! The SQL helpers against a real server: `connect` gives a working session, and
//! `orders_divergence_sql` names exactly the keys whose mapped rows differ or are missing.

use anyhow::Result;
use testkit::Postgres;

#[tokio::test]
async fn orders_divergence_sql_names_each_differing_or_missing_key() -> Result<()> {
    let pg = Postgres::start()?;
    let db = testkit::connect(&pg.url()).await?;
    db.batch_execute(
        "CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint NOT NULL,
                              amount numeric(12,2) NOT NULL, currency text, note text);
         CREATE TABLE orders_new (id bigint PRIMARY KEY, customer_id bigint NOT NULL,
                                  amount_cents bigint NOT NULL, currency char(3) NOT NULL,
                                  note text);
         INSERT INTO orders VALUES (1, 10, 1.50, 'USD', 'a'), (2, 20, 2.00, NULL, NULL),
                                   (3, 30, 3.00, 'USD', 'c'), (4, 40, 4.00, 'USD', 'd');
         -- 1 and 2 map exactly (2: NULL currency becomes EUR); 3's note differs; 4 is missing
         -- from the new table and 5 from the old one.
         INSERT INTO orders_new VALUES (1, 10, 150, 'USD', 'a'), (2, 20, 200, 'EUR', NULL),
                                       (3, 30, 300, 'USD', 'changed'), (5, 50, 500, 'USD', 'e');",
    )
    .await?;
    let differing = testkit::orders_divergence_sql("orders", "orders_new");
    let ids: Vec<i64> = db
        .query(&format!("{differing} ORDER BY 1"), &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, [3, 4, 5]);
    Ok(())
}
