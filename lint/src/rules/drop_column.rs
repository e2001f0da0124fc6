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
Stop reading and writing the column in the application first. Then write a splice migration
(a `migrations/*.toml` spec) whose `target` table leaves the column out, and run
`splice plan`, `expand`, `sync`, `verify` and `cutover`: the live table is swapped for the new
shape with reverse sync keeping the old one current, so `splice rollback` still brings the
column back. `splice contract` moves the old table, column and data included, into
quarantine; only `splice drop`, after the quarantine expires, deletes it.
```toml
# migrations/users_drop_email.toml
name = "users_drop_email"
table = "public.users"
target = "CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL)"
```
"#,
    help: "stop using the column, then write a splice migration whose target leaves it out (splice plan / expand / sync / verify / cutover / contract): the data stays in quarantine, restorable with `splice rollback`, until `splice drop`",
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
