//! `change-column-type`: `ALTER COLUMN … [SET DATA] TYPE`, MySQL `MODIFY` / `CHANGE`.

use crate::ops::Op;
use crate::rules::{Context, BOTH};
use crate::{Dialect, RuleInfo, Severity};

pub(crate) const INFO: RuleInfo = RuleInfo {
    id: "change-column-type",
    severity: Severity::Error,
    dialects: BOTH,
    summary:
        "Changing a column's type rewrites the table under an exclusive lock and can break code",
    doc: r#"## What it does
Flags `ALTER TABLE … ALTER [COLUMN] c [SET DATA] TYPE …`, MySQL `MODIFY [COLUMN] c …`, and
MySQL `CHANGE [COLUMN] c c …` that keeps the name (a `CHANGE` that renames is reported by
`rename-column`; a linter that reads only the migration cannot see the old type, so it does not
also guess at a type change there). Tables created earlier in the same file are exempt.

## Why is this bad?
Most type changes rewrite the whole table and every index on it while holding an
`ACCESS EXCLUSIVE` lock (PostgreSQL) or copying it (MySQL): reads and writes stop for the
duration. Code written for the old type may also break on the new one.

## Example
```sql
ALTER TABLE orders ALTER COLUMN amount TYPE numeric(12,2);
```

## Use instead
A splice migration whose `target` has the new type, with the conversion in `[up]` and its
inverse in `[down]` (so rollback works after cutover): `splice plan`, `expand`, `sync`,
`verify`, `cutover`, `contract`. The table stays readable and writable throughout.
```toml
target = "CREATE TABLE orders (id bigint PRIMARY KEY, amount_cents bigint NOT NULL)"
[up]
amount_cents = "(amount * 100)::bigint"
[down]
amount = "amount_cents / 100.0"
```
"#,
    help: "write a splice migration that maps the old column to the new type ([up] conversion, [down] inverse; splice plan / expand / sync / verify / cutover / contract)",
};

pub(crate) fn check(op: &Op, cx: &Context) -> Option<String> {
    match op {
        Op::ChangeType {
            table,
            column,
            new_type,
        } if !cx.is_new(table) => {
            let to = if new_type.is_empty() {
                String::new()
            } else {
                format!(" to {new_type}")
            };
            let cost = match cx.opts.dialect {
                Dialect::Postgres => {
                    "rewrites the table and its indexes under an ACCESS EXCLUSIVE lock"
                }
                Dialect::Mysql => "usually rebuilds the table, blocking writes while it copies",
            };
            Some(format!(
                "changing the type of column \"{column}\" on table \"{}\"{to} {cost}, and can break running code",
                table.display
            ))
        }
        _ => None,
    }
}
