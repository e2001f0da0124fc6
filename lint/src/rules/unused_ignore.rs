//! `unused-ignore`: a `splice:ignore` comment that suppresses nothing.

use crate::rules::BOTH;
use crate::{RuleInfo, Severity};

pub(crate) const INFO: RuleInfo = RuleInfo {
    id: "unused-ignore",
    severity: Severity::Warning,
    dialects: BOTH,
    summary: "A splice:ignore comment that suppresses nothing, or names an unknown rule",
    doc: r#"## What it does
Reports each rule named in a `-- splice:ignore` or `-- splice:ignore-file` comment that did not
suppress any diagnostic: the statement was fixed, the comment is not attached to the statement
it was meant for (it must be on the line(s) right before it, with no blank line, or at the end
of its first or last line), or the rule name is misspelled or unknown. Ignores of rules that
are disabled (`splice.toml` `disable`) or do not apply to the file's dialect are not reported.
A file-level `-- splice:ignore-file unused-ignore` silences this rule for the file.

## Why is this bad?
A stale ignore silently allows the next dangerous statement someone writes at that spot, and a
misspelled one suppresses nothing while looking like it does.

## Example
```sql
-- splice:ignore drop-colum
ALTER TABLE users DROP COLUMN email;
```

## Use instead
```sql
-- splice:ignore drop-column -- quarantined by splice contract on 2026-10-01
ALTER TABLE users DROP COLUMN email;
```
Remove ignores that no longer suppress anything.
"#,
    help: "remove the ignore, fix the rule name, or move it to the line right before the statement",
};
