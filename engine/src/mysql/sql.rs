//! The statements that move rows along one [`Direction`] on MySQL/MariaDB, and how keys travel:
//! as text (the binlog source's text for each key type), read back with `CAST(… AS CHAR)` (hex
//! with a `\x` prefix for binary keys) and turned into values by the expression
//! [`key_param`] gives for the column's type.

use super::plan::base_type as base;
use super::{quote_ident, quote_name};
use crate::seam::{Direction, Fill, KeyColumn};
use crate::spec::QualifiedName;

/// Whether the key column is of an integer type.
fn is_integer(k: &KeyColumn) -> bool {
    super::plan::is_integer(&base(&k.sql_type))
}

/// The value of a key parameter (`?`, text) in the column's type.
pub fn key_param(k: &KeyColumn) -> String {
    let t = k.sql_type.to_ascii_lowercase();
    match base(&t).as_str() {
        _ if is_integer(k) => {
            if t.contains("unsigned") {
                "CAST(? AS UNSIGNED)".into()
            } else {
                "CAST(? AS SIGNED)".into()
            }
        }
        "decimal" | "numeric" => {
            let params = t
                .find('(')
                .and_then(|i| t[i..].find(')').map(|j| &t[i..i + j + 1]))
                .unwrap_or("(65,30)");
            format!("CAST(? AS DECIMAL{params})")
        }
        "date" => "CAST(? AS DATE)".into(),
        "datetime" | "timestamp" => "CAST(? AS DATETIME(6))".into(),
        "binary" | "varbinary" => "UNHEX(SUBSTRING(?, 3))".into(),
        _ => "?".into(),
    }
}

/// A key column of `alias` as the text keys travel in.
pub fn key_text(k: &KeyColumn, alias: &str) -> String {
    let c = format!("{alias}{}", quote_ident(&k.name));
    match base(&k.sql_type).as_str() {
        "binary" | "varbinary" => format!("CONCAT('\\\\x', LOWER(HEX({c})))"),
        _ => format!("CAST({c} AS CHAR)"),
    }
}

/// The highest key of `table`, as text.
///
/// A locking read: an insert whose binlog event is already written, before a change stream
/// opened, may not be committed in InnoDB yet; a plain read would miss its row while the
/// stream never delivers it. The locking read waits for that commit (the new record is locked
/// until then), as the backfill's chunks do.
pub fn last_key(table: &QualifiedName, key: &[KeyColumn]) -> String {
    let texts: Vec<String> = key.iter().map(|k| key_text(k, "t.")).collect();
    let order: Vec<String> = key
        .iter()
        .map(|k| format!("t.{} DESC", quote_ident(&k.name)))
        .collect();
    format!(
        "SELECT {} FROM {} AS t ORDER BY {} LIMIT 1 LOCK IN SHARE MODE",
        texts.join(", "),
        quote_name(table),
        order.join(", ")
    )
}

/// `alias.k1, alias.k2`.
pub fn key_list(dir: &Direction, alias: &str) -> String {
    dir.key
        .iter()
        .map(|k| format!("{alias}{}", quote_ident(&k.name)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The key of `alias` compared with `op` (`>` or `<=`) to a key given as parameters, written
/// out column by column so the range optimizer reads it (`k1 > ? OR (k1 = ? AND k2 > ?)`).
/// Returns the condition and, for each `?` in it, the index of the key field it takes.
pub fn key_compare(dir: &Direction, alias: &str, op: &str) -> (String, Vec<usize>) {
    let strict = if op == "<=" { "<" } else { ">" };
    let n = dir.key.len();
    let mut order = Vec::new();
    let mut alternatives = Vec::new();
    for i in 0..n {
        let mut parts = Vec::new();
        for (j, k) in dir.key.iter().enumerate().take(i) {
            parts.push(format!(
                "{alias}{} = {}",
                quote_ident(&k.name),
                key_param(k)
            ));
            order.push(j);
        }
        let k = &dir.key[i];
        let last_op = if i == n - 1 { op } else { strict };
        parts.push(format!(
            "{alias}{} {last_op} {}",
            quote_ident(&k.name),
            key_param(k)
        ));
        order.push(i);
        alternatives.push(format!("({})", parts.join(" AND ")));
    }
    (format!("({})", alternatives.join(" OR ")), order)
}

/// `alias.k1 = ? AND alias.k2 = ?` (parameters in key order).
pub fn key_equals(dir: &Direction, alias: &str) -> String {
    dir.key
        .iter()
        .map(|k| format!("{alias}{} = {}", quote_ident(&k.name), key_param(k)))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// A statement with its parameters: which bound (lower/upper) and which key field each `?`
/// takes.
pub struct Bound {
    pub sql: String,
    pub params: Vec<(BoundSide, usize)>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum BoundSide {
    Lower,
    Upper,
}

pub(crate) fn range_condition(
    dir: &Direction,
    alias: &str,
    lower: bool,
    upper: bool,
) -> (Vec<String>, Vec<(BoundSide, usize)>) {
    let mut parts = Vec::new();
    let mut params = Vec::new();
    if lower {
        let (c, order) = key_compare(dir, alias, ">");
        parts.push(c);
        params.extend(order.into_iter().map(|i| (BoundSide::Lower, i)));
    }
    if upper {
        let (c, order) = key_compare(dir, alias, "<=");
        parts.push(c);
        params.extend(order.into_iter().map(|i| (BoundSide::Upper, i)));
    }
    (parts, params)
}

/// The key `OFFSET` rows after the lower bound (parameters: the lower bound's fields as
/// `Lower`).
pub fn range_boundary(dir: &Direction, after: bool, offset: i64) -> Bound {
    let (cond, params) = range_condition(dir, "s.", after, false);
    let texts: Vec<String> = dir.key.iter().map(|k| key_text(k, "s.")).collect();
    Bound {
        sql: format!(
            "SELECT {} FROM {} AS s{} ORDER BY {} LIMIT 1 OFFSET {}",
            texts.join(", "),
            quote_name(&dir.from),
            if cond.is_empty() {
                String::new()
            } else {
                format!(" WHERE {}", cond.join(" AND "))
            },
            key_list(dir, "s."),
            offset.max(0)
        ),
        params,
    }
}

/// The target's columns and the mapped source row (`INSERT INTO to (…) SELECT … FROM from s`).
fn insert_select(dir: &Direction) -> String {
    let cols: Vec<String> = dir.columns.iter().map(|(c, _)| quote_ident(c)).collect();
    let exprs: Vec<&str> = dir.columns.iter().map(|(_, e)| e.as_str()).collect();
    format!(
        "INSERT INTO {} ({}) SELECT {} FROM {} AS s",
        quote_name(&dir.to),
        cols.join(", "),
        exprs.join(", "),
        quote_name(&dir.from)
    )
}

/// Overwrites every mapped column of an existing row.
fn upsert_tail(dir: &Direction) -> String {
    let sets: Vec<String> = dir
        .columns
        .iter()
        .map(|(c, _)| format!("{}.{1} = VALUES({1})", quote_name(&dir.to), quote_ident(c)))
        .collect();
    format!("ON DUPLICATE KEY UPDATE {}", sets.join(", "))
}

/// A key column assigned to itself: a duplicate key changes nothing.
fn keep_tail(dir: &Direction) -> String {
    // Qualified: the source's columns of the same name are in scope too.
    let k = format!("{}.{}", quote_name(&dir.to), quote_ident(&dir.key[0].name));
    format!("ON DUPLICATE KEY UPDATE {k} = {k}")
}

/// The copy of one key range `(lower, upper]`, in key order; its `INSERT … SELECT` reads the
/// source rows with shared locks (InnoDB, REPEATABLE READ), so a write to them waits for the
/// chunk's commit and reaches the change stream after it.
pub fn backfill_range(dir: &Direction, lower: bool, upper: bool, fill: Fill) -> Bound {
    let (cond, params) = range_condition(dir, "s.", lower, upper);
    let tail = match fill {
        // Keys already there were written by the applier from a read no older than this one.
        Fill::Missing => keep_tail(dir),
        Fill::Mirror => upsert_tail(dir),
    };
    Bound {
        sql: format!(
            "{}{} ORDER BY {} {}",
            insert_select(dir),
            if cond.is_empty() {
                String::new()
            } else {
                format!(" WHERE {}", cond.join(" AND "))
            },
            key_list(dir, "s."),
            tail
        ),
        params,
    }
}

/// Under [`Fill::Mirror`]: deletes the range's target rows whose key the source lost. A
/// single-table DELETE naming the target in full (the multi-table form resolves its alias
/// against the session's default database, which splice's sessions do not have).
pub fn delete_gone_in_range(dir: &Direction, lower: bool, upper: bool) -> Bound {
    let to = quote_name(&dir.to);
    let (cond, params) = range_condition(dir, &format!("{to}."), lower, upper);
    let mut all = cond;
    all.push(gone_from_source(dir));
    Bound {
        sql: format!("DELETE FROM {to} WHERE {}", all.join(" AND ")),
        params,
    }
}

/// A target row (named by the target's full name) whose key the source no longer has.
fn gone_from_source(dir: &Direction) -> String {
    let to = quote_name(&dir.to);
    let same_key: Vec<String> = dir
        .key
        .iter()
        .map(|k| format!("s.{0} = {to}.{0}", quote_ident(&k.name)))
        .collect();
    format!(
        "NOT EXISTS (SELECT 1 FROM {} AS s WHERE {})",
        quote_name(&dir.from),
        same_key.join(" AND ")
    )
}

/// The key of `alias` equal to one of `n` keys given as parameters (key after key, each in
/// key order): `k IN (?, …)` for a one-column key, `(k1 = ? AND k2 = ?) OR …` otherwise, both
/// of which the range optimizer reads as `n` point lookups.
pub fn key_in(dir: &Direction, alias: &str, n: usize) -> String {
    if let [k] = dir.key.as_slice() {
        return format!(
            "{alias}{} IN ({})",
            quote_ident(&k.name),
            vec![key_param(k); n].join(", ")
        );
    }
    let one = format!("({})", key_equals(dir, alias));
    format!("({})", vec![one; n].join(" OR "))
}

/// The statements that re-sync a batch of `n` keys (each takes the `n` keys as parameters,
/// see [`key_in`]), run in this order in one transaction.
pub struct ResyncBatch {
    /// The mapped rows of the keys the source has, upserted. Under REPEATABLE READ its
    /// `INSERT … SELECT` is a locking read of the source rows (and of the gaps of keys that
    /// are gone): it waits for a transaction still committing one of them, reads the
    /// committed rows, and no write to them lands until the batch commits.
    pub upsert: String,
    /// The target rows of the keys the source lost, deleted.
    pub delete: String,
}

/// See [`ResyncBatch`].
pub fn resync_batch(dir: &Direction, n: usize) -> ResyncBatch {
    let to = quote_name(&dir.to);
    ResyncBatch {
        upsert: format!(
            "{} WHERE {} {}",
            insert_select(dir),
            key_in(dir, "s.", n),
            upsert_tail(dir)
        ),
        delete: format!(
            "DELETE FROM {to} WHERE {} AND {}",
            key_in(dir, &format!("{to}."), n),
            gone_from_source(dir)
        ),
    }
}

/// The character set and collation a string key column compares under.
pub type Collation = (String, String);

/// A key field given as the text `text` (an SQL expression, `?` for a parameter) as a value
/// that compares the way the key column does: in the column's type, and for a string column
/// in its character set and collation (`collation`, from `information_schema.COLUMNS`).
pub fn key_value(k: &KeyColumn, text: &str, collation: Option<&Collation>) -> String {
    let plain =
        |c: &str| !c.is_empty() && c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_');
    match collation {
        Some((charset, coll)) if plain(charset) && plain(coll) && key_param(k) == "?" => {
            format!("CONVERT({text} USING {charset}) COLLATE {coll}")
        }
        _ => key_param(k).replacen('?', text, 1),
    }
}

/// The indexes of the stored verify ranges of a migration (`?` 1, 2: migration and shape)
/// that hold any of `n` keys (the parameters after those, key after key): range `i` is
/// `(upper of i - 1, upper of i]`, so a key's range is the first whose upper bound is not below
/// it (the last, open range when none). A one-column integer key finds it in one probe of
/// `upper_num`'s index; other keys count the stored bounds below them (each bound, a JSON
/// array of the key's text, compared in the key columns' types and collations, field after
/// field), which reads every stored range per key. No row when the migration has no stored
/// ranges.
pub fn verify_ranges_of_keys(
    dir: &Direction,
    collations: &[Option<Collation>],
    n: usize,
) -> String {
    let field = |i: usize, text: &str| {
        key_value(
            &dir.key[i],
            text,
            collations.get(i).and_then(Option::as_ref),
        )
    };
    let key = |i: usize| field(i, &format!("k.`k{i}`"));
    let bound = |i: usize| {
        field(
            i,
            &format!("JSON_UNQUOTE(JSON_EXTRACT(b.upper_key, '$[{i}]'))"),
        )
    };
    let one: Vec<String> = (0..dir.key.len()).map(|i| format!("? AS `k{i}`")).collect();
    let rest = vec![vec!["?"; dir.key.len()].join(", "); n.saturating_sub(1)];
    let mut keys = format!("SELECT {}", one.join(", "));
    for r in rest {
        keys.push_str(&format!(" UNION ALL SELECT {r}"));
    }
    let idx = if matches!(dir.key.as_slice(), [k] if is_integer(k)) {
        "COALESCE((SELECT b.idx FROM `splice`.`verify_ranges` AS b \
           WHERE b.migration = r.migration AND b.shape = r.shape \
             AND b.upper_num >= CAST(k.`k0` AS DECIMAL(65,0)) ORDER BY b.upper_num LIMIT 1), \
           (SELECT MAX(b.idx) FROM `splice`.`verify_ranges` AS b \
             WHERE b.migration = r.migration AND b.shape = r.shape))"
            .to_string()
    } else {
        let mut above = Vec::new();
        for i in 0..dir.key.len() {
            let mut parts: Vec<String> = (0..i)
                .map(|j| format!("{} = {}", key(j), bound(j)))
                .collect();
            parts.push(format!("{} > {}", key(i), bound(i)));
            above.push(format!("({})", parts.join(" AND ")));
        }
        format!(
            "(SELECT COUNT(*) FROM `splice`.`verify_ranges` AS b \
               WHERE b.migration = r.migration AND b.shape = r.shape \
                 AND b.upper_key IS NOT NULL AND ({}))",
            above.join(" OR ")
        )
    };
    format!(
        "SELECT DISTINCT {idx} AS idx \
         FROM ({keys}) AS k \
         JOIN (SELECT migration, shape FROM `splice`.`verify_ranges` \
                WHERE migration = ? AND shape = ? LIMIT 1) AS r"
    )
}

/// The parameters of `bound` from the two key bounds.
pub fn bound_params(
    bound: &Bound,
    lower: Option<&[String]>,
    upper: Option<&[String]>,
) -> Vec<mysql_async::Value> {
    bound
        .params
        .iter()
        .map(|(side, i)| {
            let key = match side {
                BoundSide::Lower => lower,
                BoundSide::Upper => upper,
            };
            key.and_then(|k| k.get(*i))
                .map(|v| mysql_async::Value::from(v.as_str()))
                .unwrap_or(mysql_async::Value::NULL)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::QualifiedName;

    fn dir(keys: &[(&str, &str)]) -> Direction {
        Direction {
            from: QualifiedName {
                schema: "shop".into(),
                name: "orders".into(),
            },
            to: QualifiedName {
                schema: "shop".into(),
                name: "_splice_o_new".into(),
            },
            key: keys
                .iter()
                .map(|(n, t)| KeyColumn {
                    name: n.to_string(),
                    sql_type: t.to_string(),
                })
                .collect(),
            columns: vec![("id".into(), "s.`id`".into()), ("n".into(), "(s.x)".into())],
        }
    }

    #[test]
    fn a_composite_key_range_is_written_out_column_by_column() {
        let d = dir(&[("a", "int(11)"), ("b", "varchar(10)")]);
        let (c, order) = key_compare(&d, "s.", ">");
        assert_eq!(
            c,
            "((s.`a` > CAST(? AS SIGNED)) OR (s.`a` = CAST(? AS SIGNED) AND s.`b` > ?))"
        );
        assert_eq!(order, vec![0, 0, 1]);
        let (c, _) = key_compare(&d, "t.", "<=");
        assert!(c.ends_with("t.`b` <= ?))"), "{c}");
    }

    #[test]
    fn key_parameters_take_the_columns_type() {
        let k = |t: &str| KeyColumn {
            name: "k".into(),
            sql_type: t.into(),
        };
        assert_eq!(key_param(&k("bigint(20) unsigned")), "CAST(? AS UNSIGNED)");
        assert_eq!(key_param(&k("decimal(12,2)")), "CAST(? AS DECIMAL(12,2))");
        assert_eq!(key_param(&k("varbinary(16)")), "UNHEX(SUBSTRING(?, 3))");
        assert_eq!(key_param(&k("varchar(10)")), "?");
    }

    #[test]
    fn a_backfill_chunk_keeps_what_the_applier_wrote() {
        let d = dir(&[("id", "bigint(20)")]);
        let b = backfill_range(&d, true, true, Fill::Missing);
        assert_eq!(
            b.sql,
            "INSERT INTO `shop`.`_splice_o_new` (`id`, `n`) SELECT s.`id`, (s.x) FROM \
             `shop`.`orders` AS s WHERE ((s.`id` > CAST(? AS SIGNED))) AND ((s.`id` <= CAST(? \
             AS SIGNED))) ORDER BY s.`id` ON DUPLICATE KEY UPDATE `shop`.`_splice_o_new`.`id` = \
             `shop`.`_splice_o_new`.`id`"
        );
        assert_eq!(b.params, vec![(BoundSide::Lower, 0), (BoundSide::Upper, 0)]);
    }

    #[test]
    fn a_batch_of_keys_is_read_as_point_lookups() {
        let one = dir(&[("id", "bigint(20)")]);
        assert_eq!(
            key_in(&one, "s.", 3),
            "s.`id` IN (CAST(? AS SIGNED), CAST(? AS SIGNED), CAST(? AS SIGNED))"
        );
        let two = dir(&[("a", "int(11)"), ("b", "varchar(10)")]);
        assert_eq!(
            key_in(&two, "s.", 2),
            "((s.`a` = CAST(? AS SIGNED) AND s.`b` = ?) OR (s.`a` = CAST(? AS SIGNED) AND s.`b` = ?))"
        );
        let b = resync_batch(&one, 1);
        assert_eq!(
            b.delete,
            "DELETE FROM `shop`.`_splice_o_new` WHERE `shop`.`_splice_o_new`.`id` IN (CAST(? AS \
             SIGNED)) AND NOT EXISTS (SELECT 1 FROM `shop`.`orders` AS s WHERE s.`id` = \
             `shop`.`_splice_o_new`.`id`)"
        );
        assert!(b.upsert.contains("ON DUPLICATE KEY UPDATE"), "{}", b.upsert);
    }
}
