//! `set-not-null`: `ALTER COLUMN … SET NOT NULL` on an existing table.

use crate::ops::Op;
use crate::rules::{Context, POSTGRES};
use crate::{RuleInfo, Severity};

pub(crate) const INFO: RuleInfo = RuleInfo {
    id: "set-not-null",
    severity: Severity::Error,
    dialects: POSTGRES,
    summary: "SET NOT NULL scans the whole table under an ACCESS EXCLUSIVE lock",
    doc: r#"## What it does
Flags PostgreSQL `ALTER TABLE … ALTER [COLUMN] c SET NOT NULL` on a table not created earlier in
the same file. (MySQL's `MODIFY … NOT NULL` is reported by `change-column-type`.)

## Why is this bad?
PostgreSQL checks every row while holding an `ACCESS EXCLUSIVE` lock: no reads, no writes until
the scan finishes. It also breaks running code that still inserts NULLs.

## Example
```sql
ALTER TABLE users ALTER COLUMN email SET NOT NULL;
```

## Use instead
Prove it with a validated CHECK first (validation lets writes through); since PostgreSQL 12,
`SET NOT NULL` then skips the scan. splice enforces NOT NULL this way in the DDL it runs.
```sql
ALTER TABLE users ADD CONSTRAINT users_email_not_null CHECK (email IS NOT NULL) NOT VALID;
ALTER TABLE users VALIDATE CONSTRAINT users_email_not_null;
ALTER TABLE users ALTER COLUMN email SET NOT NULL; -- splice:ignore set-not-null -- proven by the validated check
ALTER TABLE users DROP CONSTRAINT users_email_not_null;
```
"#,
    help:
        "add CHECK (col IS NOT NULL) NOT VALID, VALIDATE CONSTRAINT it, then SET NOT NULL (no scan \
           on PostgreSQL 12+) and drop the check, as splice does in the DDL it runs",
};

pub(crate) fn check(op: &Op, cx: &Context) -> Option<String> {
    match op {
        Op::SetNotNull { table, column } if !cx.is_new(table) => Some(format!(
            "SET NOT NULL on column \"{column}\" of table \"{}\" scans the whole table under an ACCESS EXCLUSIVE lock",
            table.display
        )),
        _ => None,
    }
}
