//! `mysql-copy-algorithm`: MySQL `ALGORITHM=COPY` or `LOCK=SHARED|EXCLUSIVE`.

use crate::ops::Op;
use crate::rules::{Context, MYSQL};
use crate::{RuleInfo, Severity};

pub(crate) const INFO: RuleInfo = RuleInfo {
    id: "mysql-copy-algorithm",
    severity: Severity::Error,
    dialects: MYSQL,
    summary: "ALGORITHM=COPY or LOCK=SHARED|EXCLUSIVE blocks writes for the whole table copy",
    doc: r#"## What it does
Flags MySQL/MariaDB `ALTER TABLE … ALGORITHM=COPY` and `LOCK=SHARED` / `LOCK=EXCLUSIVE` on a
table not created earlier in the same file.

## Why is this bad?
`ALGORITHM=COPY` rebuilds the table row by row while writes are blocked; `LOCK=SHARED` blocks
writes and `LOCK=EXCLUSIVE` blocks reads too, for as long as the change runs.

## Example
```sql
ALTER TABLE orders MODIFY note TEXT, ALGORITHM=COPY;
```

## Use instead
Ask for an online change, and let MySQL refuse it if it cannot do one:
```sql
ALTER TABLE orders ADD COLUMN note TEXT, ALGORITHM=INPLACE, LOCK=NONE;
```
For changes that need a copy, use a splice migration (splice plan / expand / sync / verify /
cutover / contract): it copies in throttled chunks while the table stays writable.
"#,
    help: "use ALGORITHM=INSTANT or INPLACE with LOCK=NONE; for changes that need a copy, use a splice migration (splice plan / expand / sync / verify / cutover / contract)",
};

pub(crate) fn check(op: &Op, cx: &Context) -> Option<String> {
    match op {
        Op::Algorithm { table, algorithm } if algorithm == "COPY" && !cx.is_new(table) => {
            Some(format!(
                "ALGORITHM=COPY on table \"{}\" rebuilds it while blocking writes",
                table.display
            ))
        }
        Op::Lock { table, lock }
            if (lock == "SHARED" || lock == "EXCLUSIVE") && !cx.is_new(table) =>
        {
            Some(format!(
                "LOCK={lock} on table \"{}\" blocks {} for the whole change",
                table.display,
                if lock == "SHARED" {
                    "writes"
                } else {
                    "reads and writes"
                }
            ))
        }
        _ => None,
    }
}
