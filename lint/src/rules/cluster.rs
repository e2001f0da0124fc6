//! `cluster`: `CLUSTER` rewrites tables in index order under an `ACCESS EXCLUSIVE` lock.

use crate::ops::Op;
use crate::rules::{Context, POSTGRES};
use crate::{RuleInfo, Severity};

pub(crate) const INFO: RuleInfo = RuleInfo {
    id: "cluster",
    severity: Severity::Error,
    dialects: POSTGRES,
    summary: "CLUSTER rewrites the table under an ACCESS EXCLUSIVE lock",
    doc: r#"## What it does
Flags PostgreSQL `CLUSTER`, with or without a table (without one it re-clusters every table
clustered before), except on a table created earlier in the same file.

## Why is this bad?
`CLUSTER` rewrites the whole table in the order of an index and rebuilds every index, holding
an `ACCESS EXCLUSIVE` lock the whole time: no query reads or writes the table until it
finishes. The order is not kept for rows written afterwards, so it is often run again.

## Example
```sql
CLUSTER orders USING orders_created_at_idx;
```

## Use instead
Rebuild the table online: a splice migration whose new shape is the same table (splice plan /
expand / sync / verify / cutover / contract) copies it while the application keeps writing and
locks only for the rename swap; or use `pg_repack --order-by`. Often a covering index or
BRIN index gives the locality without rewriting anything.
"#,
    help: "rebuild the table online with a splice migration to the same shape (splice plan / expand / sync / verify / cutover / contract) or pg_repack --order-by",
};

pub(crate) fn check(op: &Op, cx: &Context) -> Option<String> {
    match op {
        Op::Cluster { table: Some(t) } if !cx.is_new(t) => Some(format!(
            "CLUSTER rewrites table \"{}\" under an ACCESS EXCLUSIVE lock: no query reads or writes it until it finishes",
            t.display
        )),
        Op::Cluster { table: None } => Some(
            "CLUSTER without a table rewrites every table clustered before, each under an ACCESS EXCLUSIVE lock"
                .to_string(),
        ),
        _ => None,
    }
}
