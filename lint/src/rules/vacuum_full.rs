//! `vacuum-full`: `VACUUM FULL` rewrites tables under an `ACCESS EXCLUSIVE` lock.

use crate::ops::Op;
use crate::rules::{Context, POSTGRES};
use crate::{RuleInfo, Severity};

pub(crate) const INFO: RuleInfo = RuleInfo {
    id: "vacuum-full",
    severity: Severity::Error,
    dialects: POSTGRES,
    summary: "VACUUM FULL rewrites the table under an ACCESS EXCLUSIVE lock",
    doc: r#"## What it does
Flags PostgreSQL `VACUUM FULL` and `VACUUM (FULL)`, with or without a table (without one it
rewrites every table of the database in turn), except on a table created earlier in the same
file.

## Why is this bad?
`VACUUM FULL` copies the whole table into a new file and rebuilds every index, holding an
`ACCESS EXCLUSIVE` lock the whole time: no query, not even a `SELECT`, reads the table until it
finishes, for minutes or hours on a large table. It also needs free disk space for a second
copy of the table.

## Example
```sql
VACUUM FULL orders;
```

## Use instead
A plain `VACUUM` (or autovacuum) makes dead space reusable without blocking anyone. To give
space back to the operating system, rebuild the table online: a splice migration whose new
shape is the same table (splice plan / expand / sync / verify / cutover / contract) copies it
while the application keeps writing, and locks only for the rename swap; or use `pg_repack`.
"#,
    help: "use a plain VACUUM, or rebuild the table online with a splice migration to the same shape (splice plan / expand / sync / verify / cutover / contract) or pg_repack",
};

pub(crate) fn check(op: &Op, cx: &Context) -> Option<String> {
    match op {
        Op::VacuumFull { table: Some(t) } if !cx.is_new(t) => Some(format!(
            "VACUUM FULL rewrites table \"{}\" under an ACCESS EXCLUSIVE lock: no query reads or writes it until it finishes",
            t.display
        )),
        Op::VacuumFull { table: None } => Some(
            "VACUUM FULL without a table rewrites every table of the database, each under an ACCESS EXCLUSIVE lock"
                .to_string(),
        ),
        _ => None,
    }
}
