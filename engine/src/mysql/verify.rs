//! MySQL's verify reads: range bounds by walking the primary key, and canonical rows built by
//! the server. Each value is turned into the text of the target column's type the same way on
//! both sides (the source's mapped value is first converted to that type: `DECIMAL(p,s)`,
//! `DATETIME(n)`, integers, doubles), text in utf8mb4 whatever its column's character set,
//! binary values as `\x` + lowercase hex, NULL as `\N`; a backslash, tab, newline or carriage
//! return inside a value is escaped as COPY's text form does. So equal mapped rows give equal
//! bytes, and `engine::verify` hashes them with BLAKE3 as it does PostgreSQL's COPY text.

use super::sql::{self, bound_params, key_equals, key_list, key_text};
use super::{col, quote_ident, quote_name, MySql, Session};
use crate::adapter::{BackfillSource, VerifySource};
use crate::seam::{Direction, Selection, Side};
use crate::spec::QualifiedName;
use crate::EngineError;
use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row, Value};
use std::collections::HashMap;

fn base(sql_type: &str) -> String {
    let t = sql_type.trim().to_ascii_lowercase();
    let end = t.find(['(', ' ']).unwrap_or(t.len());
    t[..end].to_string()
}

/// `(…)` of `decimal(12,2)`, `datetime(6)`; `None` when the type has none.
fn type_params(sql_type: &str) -> Option<String> {
    let i = sql_type.find('(')?;
    let j = sql_type[i..].find(')')?;
    Some(sql_type[i..i + j + 1].to_string())
}

/// The text of value `v` as a value of column type `sql_type` (NULL stays NULL).
pub fn canonical_text(v: &str, sql_type: &str) -> String {
    let t = sql_type.to_ascii_lowercase();
    match base(&t).as_str() {
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" | "bit" => {
            let sign = if t.contains("unsigned") || base(&t) == "bit" {
                "UNSIGNED"
            } else {
                "SIGNED"
            };
            format!("CAST(CAST({v} AS {sign}) AS CHAR)")
        }
        "decimal" | "numeric" => format!(
            "CAST(CAST({v} AS DECIMAL{}) AS CHAR)",
            type_params(&t).unwrap_or_else(|| "(10,0)".into())
        ),
        "double" | "real" => format!("CAST(({v}) + 0E0 AS CHAR)"),
        "date" => format!("CAST(CAST({v} AS DATE) AS CHAR)"),
        "datetime" | "timestamp" => format!(
            "CAST(CAST({v} AS DATETIME{}) AS CHAR)",
            type_params(&t).unwrap_or_default()
        ),
        "time" => format!(
            "CAST(CAST({v} AS TIME{}) AS CHAR)",
            type_params(&t).unwrap_or_default()
        ),
        "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => {
            format!(r"CONCAT('\\x', LOWER(HEX({v})))")
        }
        _ => format!("CAST({v} AS CHAR CHARACTER SET utf8mb4)"),
    }
}

/// One canonical field: the text escaped, NULL as `\N`.
pub fn field(text: &str) -> String {
    format!(
        r"COALESCE(REPLACE(REPLACE(REPLACE(REPLACE({text}, '\\', '\\\\'), '\t', '\\t'), '\n', '\\n'), '\r', '\\r'), '\\N')"
    )
}

/// The target table's column types, by name.
pub(crate) async fn column_types(
    conn: &mut Conn,
    table: &QualifiedName,
) -> Result<HashMap<String, String>, EngineError> {
    let ctx = format!("reading the columns of {table}");
    let rows: Vec<Row> = conn
        .query(format!("SHOW COLUMNS FROM {}", quote_name(table)))
        .await
        .map_err(|e| EngineError::my(ctx.clone(), &e))?;
    rows.iter()
        .map(|r| {
            Ok((
                col(r, 0, &ctx)?,
                col::<String>(r, 1, &ctx)?.to_ascii_lowercase(),
            ))
        })
        .collect()
}

/// Refuses target columns verify cannot compare: single-precision FLOAT (the source's value
/// has no text "as a FLOAT" to compare with).
pub fn refuse_uncomparable(
    dir: &Direction,
    types: &HashMap<String, String>,
) -> Result<(), EngineError> {
    for (c, _) in &dir.columns {
        if let Some(t) = types.get(c) {
            if base(t) == "float" {
                return Err(EngineError::Plan(format!(
                    "column {c} of {} is FLOAT: verify cannot compare single-precision values \
                     with their mapping; use DOUBLE or DECIMAL in the new shape",
                    dir.to
                )));
            }
        }
    }
    Ok(())
}

/// The statement reading one side's canonical rows (one column: the row, fields joined by
/// tabs) and its parameters.
pub fn canonical_statement(
    dir: &Direction,
    side: Side,
    rows: Selection<'_>,
    types: &HashMap<String, String>,
) -> (String, Vec<Value>) {
    let (table, alias) = match side {
        Side::Source => (&dir.from, "s."),
        Side::Target => (&dir.to, "t."),
    };
    let mut fields = Vec::new();
    if matches!(rows, Selection::KeyedRange(_) | Selection::Keys(_)) {
        for k in &dir.key {
            fields.push(field(&key_text(k, alias)));
        }
    }
    for (c, expr) in &dir.columns {
        let value = match side {
            Side::Source => expr.clone(),
            Side::Target => format!("t.{}", quote_ident(c)),
        };
        let ty = types.get(c).map(String::as_str).unwrap_or("text");
        fields.push(field(&canonical_text(&value, ty)));
    }
    let (cond, params) = match rows {
        Selection::Range(r) | Selection::KeyedRange(r) => {
            let bound = sql::range_condition(dir, alias, r.lower.is_some(), r.upper.is_some());
            let params = bound_params(
                &sql::Bound {
                    sql: String::new(),
                    params: bound.1,
                },
                r.lower.as_deref(),
                r.upper.as_deref(),
            );
            (bound.0, params)
        }
        Selection::Keys(keys) => {
            let one = format!("({})", key_equals(dir, alias));
            let cond = if keys.is_empty() {
                vec!["FALSE".to_string()]
            } else {
                vec![format!("({})", vec![one; keys.len()].join(" OR "))]
            };
            let params = keys
                .iter()
                .flat_map(|k| k.iter().map(|v| Value::from(v.as_str())))
                .collect();
            (cond, params)
        }
    };
    let sql = format!(
        "SELECT CONCAT_WS('\\t', {}) FROM {} AS {}{} ORDER BY {}",
        fields.join(", "),
        quote_name(table),
        alias.trim_end_matches('.'),
        if cond.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", cond.join(" AND "))
        },
        key_list(dir, alias)
    );
    (sql, params)
}

impl VerifySource for MySql {
    /// Every `range_rows`-th key of the source, found by stepping through the primary key
    /// (`LIMIT 1 OFFSET n` on the key index; MySQL has no sampling scan).
    async fn sample_bounds(
        &self,
        db: &Session,
        dir: &Direction,
        range_rows: i64,
    ) -> Result<Vec<Vec<String>>, EngineError> {
        let mut bounds: Vec<Vec<String>> = Vec::new();
        let step = range_rows.max(1);
        loop {
            let after = bounds.last().map(Vec::as_slice);
            match self.chunk_upper(db, dir, after, step - 1).await? {
                Some(key) => bounds.push(key),
                None => break,
            }
        }
        // The last bound leaves the rest (up to `step` rows) to an open last range.
        Ok(bounds)
    }

    async fn read_canonical<'a>(
        &'a self,
        db: &'a Session,
        dir: &Direction,
        side: Side,
        rows: Selection<'_>,
    ) -> Result<BoxStream<'a, Result<Bytes, EngineError>>, EngineError> {
        let ctx = "reading canonical rows for verify";
        let mut conn = db.lock().await;
        let types = column_types(&mut conn, &dir.to).await?;
        let (statement, params) = canonical_statement(dir, side, rows, &types);
        let result: Vec<Row> = conn
            .exec(statement, params)
            .await
            .map_err(|e| EngineError::my(ctx, &e))?;
        let mut buf = Vec::new();
        for r in &result {
            let line: Vec<u8> = col(r, 0, ctx)?;
            buf.extend_from_slice(&line);
            buf.push(b'\n');
        }
        Ok(stream::iter([Ok(Bytes::from(buf))]).boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_converted_to_the_target_columns_type_before_their_text() {
        assert_eq!(
            canonical_text("(amount_cents / 100)", "decimal(12,2)"),
            "CAST(CAST((amount_cents / 100) AS DECIMAL(12,2)) AS CHAR)"
        );
        assert_eq!(
            canonical_text("s.`at`", "datetime(6)"),
            "CAST(CAST(s.`at` AS DATETIME(6)) AS CHAR)"
        );
        assert_eq!(
            canonical_text("s.`n`", "bigint(20) unsigned"),
            "CAST(CAST(s.`n` AS UNSIGNED) AS CHAR)"
        );
        assert_eq!(
            canonical_text("s.`b`", "varbinary(8)"),
            r"CONCAT('\\x', LOWER(HEX(s.`b`)))"
        );
    }
}
