//! The independent check of the example migration (`migrations/orders_v2.toml`, orders → orders
//! with integer cents): every old row mapped by hand in SQL against the new row, without splice.

/// A query returning one row per key (`id bigint`) whose old row in `old`, mapped the way
/// orders_v2 maps it, differs from its row in `new`, or that is in only one of them. No
/// `ORDER BY`: wrap it (`SELECT count(*) FROM (…) d`) or append one (`… ORDER BY 1`). `old` and
/// `new` are spliced in as written: pass trusted, already-quoted table names.
///
/// ```
/// let sql = testkit::orders_divergence_sql("orders", "_splice_orders_v2_new");
/// let count = format!("SELECT count(*) FROM ({sql}) d");
/// # assert!(count.contains("FULL JOIN _splice_orders_v2_new n"));
/// ```
pub fn orders_divergence_sql(old: &str, new: &str) -> String {
    format!(
        "SELECT coalesce(o.id, n.id) AS id FROM
           (SELECT id, customer_id, (amount * 100)::bigint AS amount_cents,
                   coalesce(currency, 'EUR')::char(3) AS currency, note FROM {old}) o
         FULL JOIN {new} n ON n.id = o.id
         WHERE o.id IS NULL OR n.id IS NULL
            OR (o.customer_id, o.amount_cents, o.currency, o.note)
               IS DISTINCT FROM (n.customer_id, n.amount_cents, n.currency, n.note)"
    )
}
