//! `constraint-without-index`: PRIMARY KEY / UNIQUE constraint not built `USING INDEX`.

use crate::ops::{ConstraintKind, Op};
use crate::rules::{Context, POSTGRES};
use crate::{RuleInfo, Severity};

pub(crate) const INFO: RuleInfo = RuleInfo {
    id: "constraint-without-index",
    severity: Severity::Error,
    dialects: POSTGRES,
    summary: "Adding a PRIMARY KEY or UNIQUE constraint builds its index under an exclusive lock",
    doc: r#"## What it does
Flags PostgreSQL `ALTER TABLE … ADD [CONSTRAINT …] PRIMARY KEY …` and `… UNIQUE …` that are not
`USING INDEX`, including a `PRIMARY KEY` or `UNIQUE` declared inline on an added column
(`ADD COLUMN code text UNIQUE`), on a table not created earlier in the same file.

## Why is this bad?
The constraint's unique index is built inside the `ALTER TABLE`, holding an `ACCESS EXCLUSIVE`
lock for the whole build: no reads, no writes.

## Example
```sql
ALTER TABLE users ADD CONSTRAINT users_email_key UNIQUE (email);
```

## Use instead
Build the unique index concurrently, then attach it, which is instant; `splice expand` does this.
```sql
CREATE UNIQUE INDEX CONCURRENTLY users_email_key ON users (email);
ALTER TABLE users ADD CONSTRAINT users_email_key UNIQUE USING INDEX users_email_key;
```
"#,
    help:
        "CREATE UNIQUE INDEX CONCURRENTLY first, then `ADD CONSTRAINT … UNIQUE | PRIMARY KEY USING \
           INDEX …` (as `splice expand` does)",
};

pub(crate) fn check(op: &Op, cx: &Context) -> Option<String> {
    match op {
        Op::AddConstraint {
            table,
            name,
            kind: kind @ (ConstraintKind::PrimaryKey | ConstraintKind::Unique),
            using_index: false,
            ..
        } if !cx.is_new(table) => {
            let name = name
                .as_ref()
                .map(|n| format!(" \"{n}\""))
                .unwrap_or_default();
            Some(format!(
                "adding {} constraint{name} to table \"{}\" builds its index under an ACCESS EXCLUSIVE lock",
                kind.label(),
                table.display
            ))
        }
        _ => None,
    }
}
