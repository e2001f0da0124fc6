//! `not-null-without-default`: `ADD [COLUMN] … NOT NULL` with no `DEFAULT`.

use crate::ops::{Fill, Op};
use crate::rules::{Context, BOTH};
use crate::{RuleInfo, Severity};

pub(crate) const INFO: RuleInfo = RuleInfo {
    id: "not-null-without-default",
    severity: Severity::Error,
    dialects: BOTH,
    summary: "Adding a NOT NULL column without a default fails on existing rows and breaks inserts",
    doc: r#"## What it does
Flags `ALTER TABLE … ADD [COLUMN] c type NOT NULL` (or `PRIMARY KEY`) without a non-null
`DEFAULT`, identity or serial, on a table that was not created earlier in the same file.

## Why is this bad?
On PostgreSQL the statement fails as soon as the table has a row. On MySQL (strict mode) it
succeeds, but every `INSERT` of the running application that does not name the new column
now fails with "Field doesn't have a default value".

## Example
```sql
ALTER TABLE users ADD COLUMN tenant_id bigint NOT NULL;
```

## Use instead
Expand/contract by hand: add the column nullable (or with a constant default, free since
PostgreSQL 11), backfill it in batches, then enforce NOT NULL through a validated CHECK:
```sql
ALTER TABLE users ADD COLUMN tenant_id bigint;
-- backfill in batches, then:
ALTER TABLE users ADD CONSTRAINT users_tenant_id_nn CHECK (tenant_id IS NOT NULL) NOT VALID;
ALTER TABLE users VALIDATE CONSTRAINT users_tenant_id_nn;
```
Or let splice do it: a migration whose `target` declares `tenant_id bigint NOT NULL` with an
`[up]` expression that computes it; `splice sync` fills every row and `splice verify` proves
it before `splice cutover`.
"#,
    help: "add the column nullable (or with a constant DEFAULT), backfill it, then enforce NOT NULL with CHECK … NOT VALID + VALIDATE CONSTRAINT; or write a splice migration that computes it (splice plan / expand / sync / verify / cutover / contract)",
};

pub(crate) fn check(op: &Op, cx: &Context) -> Option<String> {
    match op {
        Op::AddColumn {
            table,
            column,
            not_null: true,
            fill: Fill::Nothing | Fill::Null,
        } if !cx.is_new(table) => Some(format!(
            "adding NOT NULL column \"{column}\" to table \"{}\" without a default fails on existing rows and breaks inserts that do not set it",
            table.display
        )),
        _ => None,
    }
}
