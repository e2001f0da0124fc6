//! `truncate`: `TRUNCATE` of an existing table.

use crate::ops::Op;
use crate::rules::{Context, BOTH};
use crate::{RuleInfo, Severity};

pub(crate) const INFO: RuleInfo = RuleInfo {
    id: "truncate",
    severity: Severity::Error,
    dialects: BOTH,
    summary: "Truncating a table deletes every row irreversibly",
    doc: r#"## What it does
Flags `TRUNCATE [TABLE] …` of a table not created earlier in the same file.

## Why is this bad?
Every row is deleted at once, with no row-level undo; on MySQL it cannot even be rolled back.
On PostgreSQL it also takes an `ACCESS EXCLUSIVE` lock.

## Example
```sql
TRUNCATE TABLE sessions;
```

## Use instead
Delete in throttled batches you can stop:
```sql
DELETE FROM sessions WHERE id IN (SELECT id FROM sessions WHERE expires_at < now() LIMIT 1000);
```
To replace a table's contents, build the replacement with a splice migration
(splice plan / expand / sync / verify / cutover): after `splice contract` the old rows stay in
quarantine until `splice drop`.
"#,
    help: "delete in throttled batches, or build the replacement with a splice migration (splice plan / expand / sync / verify / cutover / contract) so the old rows stay in quarantine",
};

pub(crate) fn check(op: &Op, cx: &Context) -> Option<String> {
    match op {
        Op::Truncate { table } if !cx.is_new(table) => Some(format!(
            "truncating table \"{}\" deletes every row irreversibly",
            table.display
        )),
        _ => None,
    }
}
