//! `missing-lock-timeout`: lock-taking DDL with no earlier lock timeout in the input.

use crate::ops::Op;
use crate::rules::{Context, BOTH};
use crate::{Dialect, RuleInfo, Severity};

pub(crate) const INFO: RuleInfo = RuleInfo {
    id: "missing-lock-timeout",
    severity: Severity::Warning,
    dialects: BOTH,
    summary: "Lock-taking DDL without a lock timeout can stall every query on the table",
    doc: r#"## What it does
Reports the first statement in a file that takes a lock on an existing table (`ALTER TABLE`,
`CREATE`/`DROP INDEX` without `CONCURRENTLY`, `DROP TABLE`, `TRUNCATE`, `RENAME TABLE`) when no
`SET lock_timeout` (PostgreSQL) or `SET [SESSION] lock_wait_timeout` (MySQL) comes before it
in the file. It fires once per file: one `SET` at the top fixes every statement.

## Why is this bad?
A DDL statement that waits for its lock (behind a long transaction, say) makes every later
query on the table queue behind it: a one-millisecond `ALTER` becomes an outage. A short lock
timeout makes it fail fast instead, and it can be retried.

## Example
```sql
ALTER TABLE users ADD COLUMN nickname text;
```

## Use instead
```sql
SET lock_timeout = '2s';               -- MySQL: SET SESSION lock_wait_timeout = 2;
ALTER TABLE users ADD COLUMN nickname text;
```
splice runs every DDL statement this way, with retries and backoff.
"#,
    help:
        "put `SET lock_timeout = '2s';` (MySQL: `SET SESSION lock_wait_timeout = 2;`) before the \
           first DDL statement and retry on timeout, as splice does for every statement it runs",
};

pub(crate) fn check(op: &Op, cx: &Context) -> Option<String> {
    if cx.lock_timeout_set || cx.lock_timeout_reported {
        return None;
    }
    let table = op.locked_table(cx.opts.dialect)?;
    if cx.is_new(table) {
        return None;
    }
    let setting = match cx.opts.dialect {
        Dialect::Postgres => "SET lock_timeout",
        Dialect::Mysql => "SET lock_wait_timeout",
    };
    Some(format!(
        "this statement locks \"{}\" with no earlier `{setting}` in the file: waiting for the lock stalls every query on it",
        table.display
    ))
}
