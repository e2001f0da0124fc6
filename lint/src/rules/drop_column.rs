//! `drop-column`: `ALTER TABLE … DROP COLUMN` on an existing table.

use crate::ops::Op;
use crate::rules::{Context, BOTH};
use crate::{RuleInfo, Severity};

pub(crate) const INFO: RuleInfo = RuleInfo {
    id: "drop-column",
    severity: Severity::Error,
    dialects: BOTH,
    summary: "Dropping a column breaks running code and loses its data",
    doc: r#"## What it does
Flags `ALTER TABLE … DROP [COLUMN] …` on a table that was not created earlier in the same file.

## Why is this bad?
Application servers deployed before the migration still read and write the column: their
queries fail the moment it is gone. The data is gone too, and no rollback brings it back.

## Example
```sql
ALTER TABLE users DROP COLUMN email;
```

## Use instead
Stop reading and writing the column in the application first, then drop it with splice, which
moves it to quarantine instead of deleting it:
```sql
-- splice plan users --drop-column email   (then: splice contract, later splice drop)
```
`splice contract` renames the column into quarantine, where `splice rollback` can restore it;
`splice drop` deletes it only after the quarantine period expires.
"#,
    help:
        "stop using the column in the application, then run a splice migration: `splice contract` \
           moves it to quarantine (restorable with `splice rollback`) and `splice drop` deletes it \
           once the quarantine expires",
};

pub(crate) fn check(op: &Op, cx: &Context) -> Option<String> {
    match op {
        Op::DropColumn { table, column } if !cx.is_new(table) => Some(format!(
            "dropping column \"{column}\" from table \"{}\" breaks running code and loses data",
            table.display
        )),
        _ => None,
    }
}
