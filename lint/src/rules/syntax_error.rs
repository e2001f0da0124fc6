//! `syntax-error`: input that cannot be SQL at all. Reported by the splitter.

use crate::rules::BOTH;
use crate::{RuleInfo, Severity};

pub(crate) const INFO: RuleInfo = RuleInfo {
    id: "syntax-error",
    severity: Severity::Error,
    dialects: BOTH,
    summary: "Input that cannot be SQL: unterminated quote, comment or dollar body, unbalanced parentheses",
    doc: r#"## What it does
Reports, at the place it starts, a string literal, quoted identifier, block comment or
`$tag$` body that is never closed, and parentheses that do not balance within a statement.
The statement that contains it is not linted further; the rest of the file is.

Statements that are well-formed but that the parser does not know are *not* syntax errors:
they are reported as `unparsed-statement` warnings.

## Why is this bad?
The database will reject the file, usually after running the statements before the error, and
everything after an unterminated quote is swallowed into it, hiding whatever it contains from
review and from the other rules.

## Example
```sql
UPDATE users SET note = 'it's broken';
```

## Use instead
```sql
UPDATE users SET note = 'it''s fixed';
```
"#,
    help: "close the quote, comment, dollar body or parenthesis where it starts",
};
