//! `stored-generated-column`: `ADD COLUMN … GENERATED ALWAYS AS (…) STORED` rewrites the table.

use crate::ops::{Fill, Op};
use crate::rules::{Context, POSTGRES};
use crate::{RuleInfo, Severity};

pub(crate) const INFO: RuleInfo = RuleInfo {
    id: "stored-generated-column",
    severity: Severity::Error,
    dialects: POSTGRES,
    summary: "Adding a stored generated column rewrites the whole table under an exclusive lock",
    doc: r#"## What it does
Flags PostgreSQL `ALTER TABLE … ADD [COLUMN] … GENERATED ALWAYS AS (expr) STORED` on a table
not created earlier in the same file.

## Why is this bad?
PostgreSQL computes the expression for every existing row and writes it, rewriting the table
and all its indexes while holding an `ACCESS EXCLUSIVE` lock: no reads, no writes until the
rewrite ends. Unlike a default, the value cannot be filled in later: a generated column is
always computed from its row.

## Example
```sql
ALTER TABLE orders ADD COLUMN total_cents bigint GENERATED ALWAYS AS (quantity * price_cents) STORED;
```

## Use instead
Write a splice migration whose new shape has the generated column (`target` with the column,
or `alter` with this statement): the shadow table gets the column, `splice sync` copies the
rows in throttled chunks while the application keeps writing, and PostgreSQL computes the
column as each row lands (splice plan / expand / sync / verify / cutover). Or add a plain
column, fill it in batches and keep it current with a trigger.
"#,
    help: "write a splice migration whose new shape has the generated column (splice plan / expand / sync / verify / cutover): the rows are copied in throttled chunks and computed as they land, with one short lock for the swap",
};

pub(crate) fn check(op: &Op, cx: &Context) -> Option<String> {
    match op {
        Op::AddColumn {
            table,
            column,
            fill: Fill::Generated,
            ..
        } if !cx.is_new(table) => Some(format!(
            "adding stored generated column \"{column}\" to table \"{}\" computes it for every row, rewriting the table under an ACCESS EXCLUSIVE lock",
            table.display
        )),
        _ => None,
    }
}
