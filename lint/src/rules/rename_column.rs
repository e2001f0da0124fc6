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
A splice migration that adds the new column and keeps both in sync while code moves over:
`splice plan` (map `email_address = email`), `splice expand` (adds the column),
`splice backfill` and capture keep it current, `splice verify`, `splice cutover`, and finally
`splice contract` quarantines the old column once nothing reads it.
"#,
    help:
        "write a splice migration that maps the old column to the new one (splice plan / expand / \
           backfill / verify / cutover / contract) so both names work while the code moves over",
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
