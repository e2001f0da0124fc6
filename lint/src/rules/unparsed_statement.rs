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
A typo, or a statement from a server version or extension the parser does not know yet:
```sql
ALTR TABLE users DROP COLUMN email;
```

## Use instead
Fix the typo:
```sql
ALTER TABLE users DROP COLUMN email;
```
or, when the statement is valid and you have reviewed it by hand, acknowledge it (and please
report it, so the recogniser can learn it):
```sql
-- splice:ignore unparsed-statement -- reviewed: only changes the extension's settings
ALTER EXTENSION_FEATURE foo ENABLE;
```
"#,
    help:
        "review this statement by hand; if it is safe, add `-- splice:ignore unparsed-statement` \
           with the reason",
};
