//! `index-not-concurrent`: PostgreSQL index create/drop/reindex without `CONCURRENTLY`.

use crate::ops::Op;
use crate::rules::{Context, POSTGRES};
use crate::{RuleInfo, Severity};

pub(crate) const INFO: RuleInfo = RuleInfo {
    id: "index-not-concurrent",
    severity: Severity::Error,
    dialects: POSTGRES,
    summary: "Building or dropping an index without CONCURRENTLY blocks writes to the table",
    doc: r#"## What it does
Flags PostgreSQL `CREATE INDEX`, `DROP INDEX` and `REINDEX` without `CONCURRENTLY`, except
on a table (or index) created earlier in the same file, which is new and empty.

## Why is this bad?
`CREATE INDEX` holds a `SHARE` lock for the whole build: every `INSERT`, `UPDATE` and `DELETE` on
the table waits, for minutes on a large table. `DROP INDEX` and `REINDEX` take
`ACCESS EXCLUSIVE` locks that block reads too.

## Example
```sql
CREATE INDEX orders_customer_idx ON orders (customer_id);
```

## Use instead
```sql
CREATE INDEX CONCURRENTLY orders_customer_idx ON orders (customer_id);
```
Run it outside a transaction block (see `concurrently-in-transaction`); `splice expand` builds
its indexes this way.
"#,
    help:
        "use CREATE INDEX CONCURRENTLY / DROP INDEX CONCURRENTLY / REINDEX … CONCURRENTLY, outside \
           a transaction block (as `splice expand` does)",
};

pub(crate) fn check(op: &Op, cx: &Context) -> Option<String> {
    match op {
        Op::CreateIndex {
            name,
            table,
            concurrently: false,
        } if !cx.is_new(table) => {
            let name = name
                .as_ref()
                .map(|n| format!(" \"{}\"", n.display))
                .unwrap_or_default();
            Some(format!(
                "creating index{name} on table \"{}\" without CONCURRENTLY blocks writes to the table for the whole build",
                table.display
            ))
        }
        Op::DropIndex {
            name,
            concurrently: false,
            ..
        } if !cx.is_new(name) => Some(format!(
            "dropping index \"{}\" without CONCURRENTLY takes an ACCESS EXCLUSIVE lock on its table",
            name.display
        )),
        Op::Reindex {
            target,
            concurrently: false,
        } => Some(format!(
            "REINDEX {target} without CONCURRENTLY blocks writes (and reads through the index) until it finishes"
        )),
        _ => None,
    }
}
