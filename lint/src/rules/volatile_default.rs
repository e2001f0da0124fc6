//! `volatile-default`: `ADD COLUMN` with a default that rewrites the table.

use crate::ops::{Fill, Op};
use crate::rules::{Context, POSTGRES};
use crate::split::{split, Kind};
use crate::{Dialect, RuleInfo, Severity};

pub(crate) const INFO: RuleInfo = RuleInfo {
    id: "volatile-default",
    severity: Severity::Error,
    dialects: POSTGRES,
    summary: "Adding a column with a volatile default rewrites the whole table under an exclusive lock",
    doc: r#"## What it does
Flags PostgreSQL `ALTER TABLE … ADD [COLUMN]` whose default must be computed row by row:
a volatile function (`random()`, `gen_random_uuid()`, `uuid_generate_v4()`, `clock_timestamp()`,
`timeofday()`, `nextval()`, …), a `serial` type or an identity column. (A stored generated
column is `stored-generated-column`.) `now()`, `CURRENT_TIMESTAMP` and constants are free since PostgreSQL 11; with
`postgres_version` below 11 any non-null default is flagged. Tables created earlier in the same
file are exempt. Defaults that call user-defined functions are not flagged (their volatility
is not visible in the migration).

## Why is this bad?
PostgreSQL fills the new column by rewriting the table and all its indexes while holding an
`ACCESS EXCLUSIVE` lock: no reads, no writes until the rewrite ends.

## Example
```sql
ALTER TABLE orders ADD COLUMN public_id uuid DEFAULT gen_random_uuid();
```

## Use instead
Add the column without a default, set the default for new rows only, and backfill the
existing rows in batches:
```sql
ALTER TABLE orders ADD COLUMN public_id uuid;
ALTER TABLE orders ALTER COLUMN public_id SET DEFAULT gen_random_uuid();
UPDATE orders SET public_id = gen_random_uuid() WHERE id BETWEEN 1 AND 10000 AND public_id IS NULL;
```
Or write a splice migration with `public_id = "gen_random_uuid()"` in `[up]`: `splice sync`
fills it in throttled chunks (splice plan / expand / sync / verify / cutover).
"#,
    help: "add the column without the default, `ALTER COLUMN … SET DEFAULT` for new rows, and backfill existing rows in batches, or write a splice migration that computes it (splice plan / expand / sync / verify / cutover / contract)",
};

/// Built-in functions whose value differs per row.
const VOLATILE: &[&str] = &[
    "random",
    "random_normal",
    "gen_random_uuid",
    "gen_random_bytes",
    "uuid_generate_v1",
    "uuid_generate_v1mc",
    "uuid_generate_v4",
    "uuidv4",
    "uuidv7",
    "clock_timestamp",
    "timeofday",
    "nextval",
    "txid_current",
    "setseed",
];

/// The first volatile function the expression calls.
fn volatile_call(expr: &str) -> Option<String> {
    let toks = split(expr, Dialect::Postgres).tokens;
    toks.windows(2).find_map(|w| {
        let name = w[0].text(expr);
        (w[0].kind == Kind::Word
            && w[1].is_punct(expr, '(')
            && VOLATILE.iter().any(|v| name.eq_ignore_ascii_case(v)))
        .then(|| name.to_ascii_lowercase())
    })
}

pub(crate) fn check(op: &Op, cx: &Context) -> Option<String> {
    let Op::AddColumn {
        table,
        column,
        fill,
        ..
    } = op
    else {
        return None;
    };
    if cx.is_new(table) {
        return None;
    }
    let old = cx.opts.postgres_version < 11;
    let why = match fill {
        // Not a default: `stored-generated-column` says what to do instead.
        Fill::Nothing | Fill::Null | Fill::Generated => return None,
        Fill::Default(expr) => match volatile_call(expr) {
            Some(f) => format!("its default calls the volatile function {f}()"),
            None if old => format!(
                "before PostgreSQL 11 any non-null default ({expr}) is written into every row"
            ),
            None => return None,
        },
        Fill::Serial => "a serial column takes nextval() for every row".to_string(),
        Fill::Identity => "an identity column takes a sequence value for every row".to_string(),
    };
    Some(format!(
        "adding column \"{column}\" to table \"{}\" rewrites the table under an ACCESS EXCLUSIVE lock: {why}",
        table.display
    ))
}

#[cfg(test)]
mod tests {
    use super::volatile_call;

    #[test]
    fn finds_volatile_calls_but_not_in_strings_or_stable_functions() {
        assert_eq!(
            volatile_call("public.gen_random_uuid()"),
            Some("gen_random_uuid".into())
        );
        assert_eq!(
            volatile_call("nextval('s'::regclass)"),
            Some("nextval".into())
        );
        assert_eq!(volatile_call("'random()'"), None);
        assert_eq!(volatile_call("now()"), None);
        assert_eq!(volatile_call("random"), None);
    }
}
