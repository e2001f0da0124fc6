//! `drop-schema`: `DROP SCHEMA` / `DROP DATABASE`.

use crate::ops::Op;
use crate::rules::{Context, BOTH};
use crate::{RuleInfo, Severity};

pub(crate) const INFO: RuleInfo = RuleInfo {
    id: "drop-schema",
    severity: Severity::Error,
    dialects: BOTH,
    summary: "Dropping a schema or database loses every table in it",
    doc: r#"## What it does
Flags `DROP SCHEMA` and `DROP DATABASE`.

## Why is this bad?
Every table, view and function inside is deleted at once, with no undo, and every query that
touches any of them fails.

## Example
```sql
DROP SCHEMA reporting CASCADE;
```

## Use instead
Retire the tables one at a time with splice (`splice contract` moves each into quarantine,
`splice drop` deletes it after the quarantine expires), then drop the empty schema in a
migration reviewed by hand:
```sql
-- splice:ignore drop-schema -- emptied by splice contract/drop of every table, reviewed
DROP SCHEMA reporting;
```
"#,
    help: "retire its tables one by one with splice (`splice contract`, then `splice drop` after \
           the quarantine), then drop the empty schema with a reviewed `-- splice:ignore drop-schema`",
};

pub(crate) fn check(op: &Op, _cx: &Context) -> Option<String> {
    match op {
        Op::DropSchema { name, kind } => Some(format!(
            "dropping {kind} \"{}\" deletes every table in it and breaks running code",
            name.display
        )),
        _ => None,
    }
}
