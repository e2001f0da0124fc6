//! `constraint-not-valid`: adding a FOREIGN KEY or CHECK constraint without `NOT VALID`.

use crate::ops::{ConstraintKind, Op};
use crate::rules::{Context, POSTGRES};
use crate::{RuleInfo, Severity};

pub(crate) const INFO: RuleInfo = RuleInfo {
    id: "constraint-not-valid",
    severity: Severity::Error,
    dialects: POSTGRES,
    summary:
        "Adding a FOREIGN KEY or CHECK constraint without NOT VALID scans the table under a lock",
    doc: r#"## What it does
Flags PostgreSQL `ALTER TABLE … ADD [CONSTRAINT …] FOREIGN KEY …` and `… CHECK (…)` without
`NOT VALID`, on a table that was not created earlier in the same file.

## Why is this bad?
Validating the constraint scans the whole table (and, for a foreign key, the referenced one)
while holding a lock that blocks writes (`SHARE ROW EXCLUSIVE` on both tables for a foreign
key, `ACCESS EXCLUSIVE` for a check).

## Example
```sql
ALTER TABLE orders ADD CONSTRAINT orders_customer_fk
    FOREIGN KEY (customer_id) REFERENCES customers (id);
```

## Use instead
Add it `NOT VALID` (instant, enforced for new rows), then validate in a separate statement,
which only takes a `SHARE UPDATE EXCLUSIVE` lock and lets writes continue; `splice expand`
adds constraints this way.
```sql
ALTER TABLE orders ADD CONSTRAINT orders_customer_fk
    FOREIGN KEY (customer_id) REFERENCES customers (id) NOT VALID;
ALTER TABLE orders VALIDATE CONSTRAINT orders_customer_fk;
```
"#,
    help: "add the constraint NOT VALID, then `ALTER TABLE … VALIDATE CONSTRAINT …` in a separate \
           statement (as `splice expand` does)",
};

pub(crate) fn check(op: &Op, cx: &Context) -> Option<String> {
    match op {
        Op::AddConstraint {
            table,
            name,
            kind: kind @ (ConstraintKind::ForeignKey | ConstraintKind::Check),
            not_valid: false,
            ..
        } if !cx.is_new(table) => {
            let name = name
                .as_ref()
                .map(|n| format!(" \"{n}\""))
                .unwrap_or_default();
            Some(format!(
                "adding {} constraint{name} to table \"{}\" without NOT VALID scans the table while blocking writes",
                kind.label(),
                table.display
            ))
        }
        _ => None,
    }
}
