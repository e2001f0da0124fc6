//! `rename-column`: `RENAME COLUMN`, and MySQL `CHANGE [COLUMN] old new …` with a new name.

use crate::ops::Op;
use crate::rules::{Context, BOTH};
use crate::{RuleInfo, Severity};

pub(crate) const INFO: RuleInfo = RuleInfo {
    id: "rename-column",
    severity: Severity::Error,
    dialects: BOTH,
    summary: "Renaming a column breaks running code that uses the old name",
    doc: r#"## What it does
Flags `ALTER TABLE … RENAME [COLUMN] a TO b` and MySQL `ALTER TABLE … CHANGE [COLUMN] a b …`
where the new name differs from the old one.

## Why is this bad?
The rename is instant, but every query of the running application that names the old column
starts failing at that instant, and the new code cannot be deployed at the same moment.

## Example
```sql
ALTER TABLE users RENAME COLUMN email TO email_address;
```

## Use instead
A splice migration whose `target` has the new name, with `[up]` mapping it from the old column
and `[down]` mapping back: `splice plan`, `splice expand` creates the new shape, `splice sync`
backfills it and keeps it current from change capture, `splice verify` proves it,
`splice cutover` swaps it in with reverse sync (so `splice rollback` still works), and
`splice contract` quarantines the old shape once nothing reads it.
```toml
target = "CREATE TABLE users (id bigint PRIMARY KEY, email_address text)"
[up]
email_address = "email"
[down]
email = "email_address"
```
"#,
    help: "write a splice migration that maps the old column to the new one ([up]/[down] in the spec; splice plan / expand / sync / verify / cutover / contract) so running code keeps working and rollback stays open",
};

pub(crate) fn check(op: &Op, cx: &Context) -> Option<String> {
    match op {
        Op::RenameColumn { table, from, to } if !cx.is_new(table) => Some(format!(
            "renaming column \"{from}\" to \"{to}\" on table \"{}\" breaks running code that uses \"{from}\"",
            table.display
        )),
        _ => None,
    }
}
