//! `concurrently-in-transaction`: `CONCURRENTLY` inside a transaction block.

use crate::ops::Op;
use crate::rules::{Context, POSTGRES};
use crate::{RuleInfo, Severity};

pub(crate) const INFO: RuleInfo = RuleInfo {
    id: "concurrently-in-transaction",
    severity: Severity::Error,
    dialects: POSTGRES,
    summary: "CONCURRENTLY cannot run inside a transaction block",
    doc: r#"## What it does
Flags `CREATE INDEX CONCURRENTLY`, `DROP INDEX CONCURRENTLY` and `REINDEX … CONCURRENTLY` after
an explicit `BEGIN` / `START TRANSACTION` that has not been committed or rolled back yet, or
anywhere when the migration tool wraps each file in a transaction (`--assume-in-transaction`).

## Why is this bad?
PostgreSQL refuses it: "CREATE INDEX CONCURRENTLY cannot run inside a transaction block". The
migration fails half-applied, or, if someone removes `CONCURRENTLY` to make it pass, it blocks
writes for the whole build.

## Example
```sql
BEGIN;
CREATE INDEX CONCURRENTLY orders_customer_idx ON orders (customer_id);
COMMIT;
```

## Use instead
Put the concurrent statement in its own migration file that runs outside a transaction (most
tools have a per-file switch), or let `splice expand` build the index.
```sql
CREATE INDEX CONCURRENTLY orders_customer_idx ON orders (customer_id);
```
"#,
    help:
        "run the CONCURRENTLY statement outside any transaction block: its own migration file with \
           the tool's no-transaction switch, or let `splice expand` build it",
};

pub(crate) fn check(op: &Op, cx: &Context) -> Option<String> {
    if !cx.in_transaction {
        return None;
    }
    let what = match op {
        Op::CreateIndex {
            table,
            concurrently: true,
            ..
        } => format!("CREATE INDEX CONCURRENTLY on table \"{}\"", table.display),
        Op::DropIndex {
            name,
            concurrently: true,
            ..
        } => format!("DROP INDEX CONCURRENTLY \"{}\"", name.display),
        Op::Reindex {
            target,
            concurrently: true,
        } => format!("REINDEX CONCURRENTLY {target}"),
        _ => return None,
    };
    Some(format!(
        "{what} inside a transaction block fails: PostgreSQL refuses CONCURRENTLY in a transaction"
    ))
}
