//! `drop-table`: `DROP TABLE` on an existing table.

use crate::ops::Op;
use crate::rules::{Context, BOTH};
use crate::{RuleInfo, Severity};

pub(crate) const INFO: RuleInfo = RuleInfo {
    id: "drop-table",
    severity: Severity::Error,
    dialects: BOTH,
    summary: "Dropping a table breaks running code and loses its data",
    doc: r#"## What it does
Flags `DROP TABLE` of a table that was not created earlier in the same file.

## Why is this bad?
Code that still queries the table fails at once, and every row is gone with no way back. On
PostgreSQL the statement also waits for an `ACCESS EXCLUSIVE` lock, queueing all other queries
on the table behind it.

## Example
```sql
DROP TABLE legacy_orders;
```

## Use instead
Stop using the table, then let splice retire it: `splice contract` moves an old table into the
quarantine schema with an expiry (restorable with `splice rollback`), and `splice drop` deletes
it only once the quarantine has expired. For a table that is already unused, a reviewed
suppression documents the decision:
```sql
-- splice:ignore drop-table -- unused since 2026-09, quarantined 30 days by splice contract
DROP TABLE legacy_orders;
```
"#,
    help: "stop using the table and retire it with splice: `splice contract` moves it to quarantine (restorable with `splice rollback`), `splice drop` deletes it after the quarantine expires",
};

pub(crate) fn check(op: &Op, cx: &Context) -> Option<String> {
    match op {
        Op::DropTable { table } if !cx.is_new(table) => Some(format!(
            "dropping table \"{}\" breaks running code and loses all of its rows",
            table.display
        )),
        _ => None,
    }
}
