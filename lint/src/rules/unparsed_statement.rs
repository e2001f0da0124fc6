//! `unparsed-statement`: a statement neither sqlparser nor the recogniser understood.

use crate::rules::BOTH;
use crate::{RuleInfo, Severity};

pub(crate) const INFO: RuleInfo = RuleInfo {
    id: "unparsed-statement",
    severity: Severity::Warning,
    dialects: BOTH,
    summary: "A statement the linter could not understand, so no rule checked it",
    doc: r#"## What it does
Reports a statement that sqlparser could not parse and whose leading keywords the fallback
recogniser does not know, with the parser's message and the location it gave up at. It is a
warning, never an error: valid SQL the linter does not understand must not fail the check.

## Why is this bad?
No rule looked at the statement, so a dangerous change in it would go unnoticed.

## Example
```sql
ALTER TABLESPACE fast_ssd SET (random_page_cost = 1.1);
```

## Use instead
Review the statement by hand. If it is safe, acknowledge it:
```sql
-- splice:ignore unparsed-statement -- reviewed: tablespace settings only
ALTER TABLESPACE fast_ssd SET (random_page_cost = 1.1);
```
and please report it, so the recogniser can learn the statement.
"#,
    help:
        "review this statement by hand; if it is safe, add `-- splice:ignore unparsed-statement` \
           with the reason",
};
