//! `rename-table`: `ALTER TABLE … RENAME TO`, MySQL `RENAME TABLE`.

use crate::ops::Op;
use crate::rules::{Context, BOTH};
use crate::{RuleInfo, Severity};

pub(crate) const INFO: RuleInfo = RuleInfo {
    id: "rename-table",
    severity: Severity::Error,
    dialects: BOTH,
    summary: "Renaming a table breaks running code that uses the old name",
    doc: r#"## What it does
Flags `ALTER TABLE … RENAME TO …` (and MySQL `RENAME AS`) and MySQL `RENAME TABLE a TO b`
on a table that was not created earlier in the same file.

## Why is this bad?
Every query of the running application that names the old table fails the moment the rename
commits.

## Example
```sql
ALTER TABLE customers RENAME TO accounts;
```

## Use instead
A splice table migration: `splice plan` with the new table as `target`, `splice expand`
creates it, `splice sync` backfills it and keeps it current from change capture,
`splice verify` proves both sides hold the same data, and `splice cutover` swaps the names
atomically under a short lock, with reverse sync keeping the old shape current so
`splice rollback` stays possible; `splice contract` quarantines the old table.
"#,
    help: "use a splice table migration (splice plan / expand / sync / verify / cutover / contract): cutover swaps the names atomically under a short lock with reverse sync, so `splice rollback` stays possible",
};

pub(crate) fn check(op: &Op, cx: &Context) -> Option<String> {
    match op {
        Op::RenameTable { from, to } if !cx.is_new(from) => Some(format!(
            "renaming table \"{}\" to \"{}\" breaks running code that uses \"{}\"",
            from.display, to.display, from.display
        )),
        _ => None,
    }
}
