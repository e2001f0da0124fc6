//! The PostgreSQL statements that move rows, all built from one [`Direction`] (from → to
//! through a mapping). Backfill, the change applier and verify all go through the same mapping.
//!
//! Key values travel as text and are cast in SQL (`$1::text::bigint`), so any key type works
//! without client-side type knowledge.

use crate::seam::{Direction, Fill, KeyColumn, KeyRange, Side};
use crate::spec::QualifiedName;

pub use cdc::quote_ident;

/// Quotes a string literal for PostgreSQL so that it reads back as exactly `s` under any
/// `standard_conforming_strings`: a value holding a backslash is written as an escape string
/// (`E'a\\b'`), as PostgreSQL's own `quote_literal` does.
pub fn quote_literal(s: &str) -> String {
    let quoted = s.replace('\'', "''");
    if s.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    }
}

/// A table's name quoted for SQL: `"schema"."name"`.
pub fn qualified(name: &QualifiedName) -> String {
    format!("{}.{}", quote_ident(&name.schema), quote_ident(&name.name))
}

/// A [`Direction`] seen as PostgreSQL SQL: the column lists and conditions its statements share.
struct Sql<'d>(&'d Direction);

impl std::ops::Deref for Sql<'_> {
    type Target = Direction;
    fn deref(&self) -> &Direction {
        self.0
    }
}

impl Sql<'_> {
    fn key_list(&self, alias: &str) -> String {
        self.key
            .iter()
            .map(|k| format!("{alias}{}", quote_ident(&k.name)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The key columns as text: `s."id"::text, …`.
    fn key_text(&self, alias: &str) -> String {
        self.key
            .iter()
            .map(|k| format!("{alias}{}::text", quote_ident(&k.name)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `($n::text::type, …)` starting at parameter `first`.
    fn key_params(&self, first: usize) -> String {
        self.key
            .iter()
            .enumerate()
            .map(|(i, k)| format!("${}::text::{}", first + i, k.sql_type))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn target_cols(&self) -> String {
        self.columns
            .iter()
            .map(|(c, _)| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn non_key_cols(&self) -> Vec<&str> {
        self.columns
            .iter()
            .map(|(c, _)| c.as_str())
            .filter(|c| !self.key.iter().any(|k| k.name == *c))
            .collect()
    }

    /// `ON CONFLICT (key) DO UPDATE … WHERE (t.cols::text) IS DISTINCT FROM
    /// (EXCLUDED.cols::text)`: writes only when something differs, so re-syncing an unchanged
    /// key writes nothing.
    ///
    /// Columns are compared by their text form, which every type has: `json`, `xml` and `point`
    /// have no `=` at all, and where `=` exists it can call two values equal whose text differs
    /// (`1.5` and `1.50` as numeric, `0` and `-0` as float, citext). The text form (under the
    /// session settings of [`super::connect`]) is what verify compares, so the applier writes
    /// exactly when verify would see a difference.
    fn upsert_tail(&self) -> String {
        let non_key = self.non_key_cols();
        if non_key.is_empty() {
            return format!("ON CONFLICT ({}) DO NOTHING", self.key_list(""));
        }
        let set = non_key
            .iter()
            .map(|c| format!("{0} = EXCLUDED.{0}", quote_ident(c)))
            .collect::<Vec<_>>()
            .join(", ");
        let old = non_key
            .iter()
            .map(|c| format!("t.{}::text", quote_ident(c)))
            .collect::<Vec<_>>()
            .join(", ");
        let new = non_key
            .iter()
            .map(|c| format!("EXCLUDED.{}::text", quote_ident(c)))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "ON CONFLICT ({}) DO UPDATE SET {set}\n  WHERE ROW({old}) IS DISTINCT FROM ROW({new})",
            self.key_list("")
        )
    }

    fn mapped_select(&self) -> String {
        self.columns
            .iter()
            .map(|(c, e)| format!("{e} AS {}", quote_ident(c)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Every mapped column over the source row `s`, after the key when `with_key`: what verify
    /// reads on the source.
    fn source_row(&self, with_key: bool) -> String {
        let mapped = self
            .columns
            .iter()
            .map(|(_, e)| e.clone())
            .collect::<Vec<_>>()
            .join(", ");
        if with_key {
            format!("{}, {mapped}", self.key_list("s."))
        } else {
            mapped
        }
    }

    /// Every column of the target row `t`, after the key (in the source's key types) when
    /// `with_key`.
    fn target_row(&self, with_key: bool) -> String {
        let cols = self
            .columns
            .iter()
            .map(|(c, _)| format!("t.{}", quote_ident(c)))
            .collect::<Vec<_>>()
            .join(", ");
        if !with_key {
            return cols;
        }
        let key = self
            .key
            .iter()
            .map(|kc| format!("t.{}::{}", quote_ident(&kc.name), kc.sql_type))
            .collect::<Vec<_>>()
            .join(", ");
        format!("{key}, {cols}")
    }

    /// The keyset condition on the source row `s` (`$1..$k` = the last key seen) when
    /// `after_key`, and the number of the parameter that follows the key.
    fn after_key(&self, after_key: bool) -> (String, usize) {
        if after_key {
            let cond = format!("WHERE ({}) > ({})", self.key_list("s."), self.key_params(1));
            (cond, self.key.len() + 1)
        } else {
            (String::new(), 1)
        }
    }
}

/// Copies one chunk of source rows: the key range `(lower, upper]` (`$1..$k` = lower when
/// `lower`, then `$..` = upper when `upper`; an absent bound is open), in one statement (one
/// snapshot, one commit). The upper bound comes from [`range_boundary`] first, so the
/// copy itself is a plain `INSERT … SELECT` over a key range, the cheapest form measured
/// (docs/benchmarks.md).
///
/// No resurrection, DBLog-style: the applier runs in the same task as the backfill, between
/// chunks, never while one is in flight. A delete (or update) that commits while a chunk is being
/// copied is therefore applied after the chunk landed, and its re-sync reads the source of truth
/// again: a stale row written by the chunk is corrected, never left behind. Changes committed
/// before the chunk's snapshot are in the rows it reads. So the chunk needs no row locks on the
/// source, which would write a lock record for every row it copies.
/// The command tag counts the rows written.
pub fn backfill_range(dir: &Direction, lower: bool, upper: bool, mode: Fill) -> String {
    let dir = Sql(dir);
    let k = dir.key.len();
    let bounds = |alias: &str| {
        let mut parts = Vec::new();
        if lower {
            parts.push(format!(
                "({}) > ({})",
                dir.key_list(alias),
                dir.key_params(1)
            ));
        }
        if upper {
            let first = if lower { k + 1 } else { 1 };
            parts.push(format!(
                "({}) <= ({})",
                dir.key_list(alias),
                dir.key_params(first)
            ));
        }
        parts
    };
    let source_cond = bounds("s.");
    let source_where = if source_cond.is_empty() {
        String::new()
    } else {
        format!("\n  WHERE {}", source_cond.join(" AND "))
    };
    let write = match mode {
        // A plain insert of the keys not there yet: capture wrote the others from a snapshot
        // no newer than this chunk's, and re-syncs anything that changed since. Nothing else
        // writes the target while backfill runs (one runner per migration).
        // The range bounds on the target keep the anti-join to the chunk's own key range:
        // without them the planner may hash the whole target for every chunk.
        Fill::Missing => {
            let mut cond = vec![format!(
                "({}) = ({})",
                dir.key_list("t."),
                dir.key_list("s.")
            )];
            cond.extend(bounds("t."));
            format!(
                "{}NOT EXISTS (SELECT 1 FROM {} t WHERE {})",
                if source_cond.is_empty() {
                    "\n  WHERE "
                } else {
                    " AND "
                },
                qualified(&dir.to),
                cond.join(" AND ")
            )
        }
        // Every row, overwriting what differs: for a target that holds stale rows (a table
        // restored from quarantine).
        Fill::Mirror => format!("\n  {}", dir.upsert_tail()),
    };
    // Mirror also deletes the range's target rows whose key the source lost; the delete and
    // the upsert see one snapshot and touch disjoint keys.
    let delete_gone = match mode {
        Fill::Missing => String::new(),
        Fill::Mirror => {
            let mut cond = bounds("t.");
            cond.push(format!(
                "NOT EXISTS (SELECT 1 FROM {} s WHERE ({}) = ({}))",
                qualified(&dir.from),
                dir.key_list("s."),
                dir.key_list("t.")
            ));
            format!(
                "WITH gone AS (DELETE FROM {} t WHERE {})\n",
                qualified(&dir.to),
                cond.join(" AND ")
            )
        }
    };
    format!(
        "{delete_gone}INSERT INTO {to} AS t ({cols}) OVERRIDING SYSTEM VALUE\n  SELECT {mapped}\n  FROM {from} s{source_where}{write}",
        to = qualified(&dir.to),
        cols = dir.target_cols(),
        mapped = dir.mapped_select(),
        from = qualified(&dir.from),
    )
}

/// How many of the transaction ids in `$N::bigint[]` (32-bit, as logical decoding gives them)
/// the statement's own snapshot does not see yet. Each id is widened to a full xid8 in the
/// epoch of the snapshot's xmax (it was assigned before now, less than 2^31 transactions ago).
fn invisible_txns(param: usize) -> String {
    format!(
        "SELECT count(*) AS n FROM unnest(${param}::bigint[]) AS x(id), pg_current_snapshot() AS s
  WHERE NOT pg_visible_in_snapshot(
      (pg_snapshot_xmax(s)::text::bigint
       - ((pg_snapshot_xmax(s)::text::bigint % 4294967296) - x.id + 4294967296)
         % 4294967296)::text::xid8,
      s)"
    )
}

/// [`invisible_txns`] on its own: the wait for transactions whose keys were all left to a
/// running backfill (its next chunk must see them).
pub fn count_invisible_txns() -> String {
    invisible_txns(1)
}

/// Re-syncs a batch of keys from the source of truth: upserts the mapped row of every key that
/// exists in the source, deletes the target row of every *gone* key (deleted or moved away in
/// the batch) that does not. Parameters: one `text[]` per key column for the keys, all the
/// same length, then one per key column for the gone keys, then the batch's source
/// transactions (`bigint[]`, see [`invisible_txns`]). Idempotent and order-insensitive.
///
/// The statement writes only when its snapshot sees every one of those transactions (a commit
/// reaches the change stream a moment before other sessions see it): it returns how many it
/// does not see, and writes nothing unless none, so that the caller runs it again. One
/// statement, one round trip and one implicit transaction per batch.
/// Returns (transactions not visible yet, rows written, rows deleted).
pub fn resync_keys(dir: &Direction) -> String {
    let dir = Sql(dir);
    let n = dir.key.len();
    let arrays = |from: usize| {
        (from..from + n)
            .map(|i| format!("${i}::text[]"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (unnest_args, gone_args) = (arrays(1), arrays(n + 1));
    let key_aliases = (0..dir.key.len())
        .map(|i| format!("\"__k{i}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let key_cast = |alias: &str| {
        dir.key
            .iter()
            .enumerate()
            .map(|(i, k)| format!("{alias}\"__k{i}\"::{}", k.sql_type))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "WITH pending AS (\n  {pending}\n), keys AS (\n  SELECT DISTINCT * FROM unnest({unnest_args}) AS k({key_aliases})\n), src AS (\n  SELECT {mapped}\n  FROM {from} s WHERE ({skey}) IN (SELECT {kcast} FROM keys)\n    AND (SELECT n FROM pending) = 0\n), ins AS (\n  INSERT INTO {to} AS t ({cols}) OVERRIDING SYSTEM VALUE\n  SELECT {cols} FROM src\n  {tail}\n  RETURNING 1\n), del AS (\n  DELETE FROM {to} t USING (SELECT DISTINCT * FROM unnest({gone_args}) AS g({key_aliases})) k\n  WHERE ({tkey}) = ({kcast_k})\n    AND NOT EXISTS (SELECT 1 FROM {from} s WHERE ({skey}) = ({tkey}))\n    AND (SELECT n FROM pending) = 0\n  RETURNING 1\n)\nSELECT (SELECT n FROM pending), (SELECT count(*) FROM ins), (SELECT count(*) FROM del)",
        pending = invisible_txns(2 * n + 1),
        mapped = dir.mapped_select(),
        from = qualified(&dir.from),
        skey = dir.key_list("s."),
        tkey = dir.key_list("t."),
        kcast = key_cast(""),
        kcast_k = key_cast("k."),
        to = qualified(&dir.to),
        cols = dir.target_cols(),
        tail = dir.upsert_tail(),
    )
}

/// After a TRUNCATE of the source: delete every target row whose key is gone from the source.
pub fn delete_orphans(dir: &Direction) -> String {
    let dir = Sql(dir);
    format!(
        "DELETE FROM {to} t WHERE NOT EXISTS (SELECT 1 FROM {from} s WHERE ({skey}) = ({tkey}))",
        to = qualified(&dir.to),
        from = qualified(&dir.from),
        skey = dir.key_list("s."),
        tkey = dir.key_list("t."),
    )
}

/// The condition selecting `range` on the row aliased `alias`.
fn range_condition(range: &KeyRange, dir: &Sql<'_>, alias: &str) -> String {
    {
        let lit = |vals: &[String]| {
            dir.key
                .iter()
                .zip(vals)
                .map(|(k, v)| format!("{}::{}", quote_literal(v), k.sql_type))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut parts = Vec::new();
        if let Some(lo) = &range.lower {
            parts.push(format!("({}) > ({})", dir.key_list(alias), lit(lo)));
        }
        if let Some(hi) = &range.upper {
            parts.push(format!("({}) <= ({})", dir.key_list(alias), lit(hi)));
        }
        if parts.is_empty() {
            "true".into()
        } else {
            parts.join(" AND ")
        }
    }
}

/// The key `n` rows after `lower` in the source (the upper bound of the next verify range);
/// parameters `$1..$k` for the lower key when `after_key`, then the offset.
pub fn range_boundary(dir: &Direction, after_key: bool) -> String {
    let dir = Sql(dir);
    let (cond, offset) = dir.after_key(after_key);
    let key_text = dir.key_text("s.");
    format!(
        "SELECT {key_text} FROM {from} s {cond} ORDER BY {order} OFFSET ${offset}::bigint LIMIT 1",
        from = qualified(&dir.from),
        order = dir.key_list("s."),
    )
}

/// The highest key of `table`, as text.
pub fn last_key(table: &QualifiedName, key: &[KeyColumn]) -> String {
    let texts: Vec<String> = key
        .iter()
        .map(|k| format!("t.{}::text", quote_ident(&k.name)))
        .collect();
    let order: Vec<String> = key
        .iter()
        .map(|k| format!("t.{} DESC", quote_ident(&k.name)))
        .collect();
    format!(
        "SELECT {} FROM {} t ORDER BY {} LIMIT 1",
        texts.join(", "),
        qualified(table),
        order.join(", ")
    )
}

/// The planner's row and page counts of a table as of its last ANALYZE, and its pages now
/// (parameter: its name as SQL).
pub fn table_size() -> String {
    "SELECT c.reltuples::float8, c.relpages::float8, \
            (pg_relation_size(c.oid) / current_setting('block_size')::int)::float8 \
     FROM pg_class c WHERE c.oid = $1::text::regclass"
        .to_string()
}

/// Source keys from a sample of pages (`$1` = percent of the table), in key order, as text.
/// Verify's range bounds from a page sample of the source's keys (`$1`: percent of pages):
/// the sample is cut into `$2` buckets in key order on the server, which returns only the first
/// key of each bucket after the first, so the client holds one key per range whatever the
/// sample's size.
pub fn sample_keys(dir: &Direction) -> String {
    let dir = Sql(dir);
    let key_text = dir.key_text("s.");
    let order = dir.key_list("s.");
    format!(
        "SELECT DISTINCT ON (splice__bucket) * FROM (
            SELECT {key_text}, ntile($2::int) OVER (ORDER BY {order}) AS splice__bucket,
                   row_number() OVER (ORDER BY {order}) AS splice__n
            FROM {from} s TABLESAMPLE SYSTEM ($1::float8)) q
         WHERE splice__bucket > 1
         ORDER BY splice__bucket, splice__n",
        from = qualified(&dir.from),
    )
}

/// Canonical rows of one side of a range: on the source every mapped target column in the
/// target's types, on the target its columns in the same order (after the key when
/// `with_key`), in key order, as PostgreSQL's COPY text form.
pub fn verify_range_copy(dir: &Direction, side: Side, range: &KeyRange, with_key: bool) -> String {
    format!(
        "COPY ({}) TO STDOUT",
        verify_range_select(dir, side, range, with_key)
    )
}

/// The query of [`verify_range_copy`] (planning compiles it on its own: COPY cannot be
/// prepared).
pub fn verify_range_select(
    dir: &Direction,
    side: Side,
    range: &KeyRange,
    with_key: bool,
) -> String {
    let dir = Sql(dir);
    let (row, table, alias) = if side == Side::Source {
        (dir.source_row(with_key), qualified(&dir.from), "s.")
    } else {
        (dir.target_row(with_key), qualified(&dir.to), "t.")
    };
    format!(
        "SELECT {row} FROM {table} {a} WHERE {cond} ORDER BY {order}",
        a = &alias[..1],
        cond = range_condition(range, &dir, alias),
        order = dir.key_list(alias),
    )
}

/// Canonical rows of a set of keys on either side (for re-checking suspects).
pub fn verify_keys_copy(dir: &Direction, side: Side, keys: &[Vec<String>]) -> String {
    let dir = Sql(dir);
    let list = keys
        .iter()
        .map(|k| {
            let values = dir
                .key
                .iter()
                .zip(k)
                .map(|(kc, v)| format!("{}::{}", quote_literal(v), kc.sql_type))
                .collect::<Vec<_>>()
                .join(", ");
            format!("({values})")
        })
        .collect::<Vec<_>>()
        .join(", ");
    let (row, table, alias) = if side == Side::Source {
        (dir.source_row(true), qualified(&dir.from), "s")
    } else {
        (dir.target_row(true), qualified(&dir.to), "t")
    };
    format!(
        "COPY (SELECT {row} FROM {table} {alias} WHERE ({k}) IN ({list}) ORDER BY {k}) TO STDOUT",
        k = dir.key_list(&format!("{alias}.")),
    )
}

/// Marks the stored verify ranges holding a batch of keys as changed (incremental verify
/// re-reads them). Parameters: `$1` the migration, `$2` the direction's shape, then one
/// `text[]` per key column, as [`resync_keys`].
///
/// A range is `(lower, upper]`; range `i` (from 0) is bounded above by the `i`-th stored
/// upper bound, so a key's range is the number of bounds below it: `width_bucket` counts the
/// bounds at or below it (a binary search over the key type's order, bounds cast as the range
/// reads cast them), less one when the key is a bound itself. Keys above the last bound fall
/// in the last, open-ended range; with one range (no bounds) every key is in range 0.
///
/// `collations` holds, per key column, the `COLLATE` clause of its collation when it is not the
/// database default (`COLLATE "pg_catalog"."C"`), else an empty string: ranges are read under
/// the column's collation (the column's implicit collation wins over a literal's), so keys are
/// placed under the same one.
pub fn mark_verify_ranges(dir: &Direction, collations: &[String]) -> String {
    let dir = Sql(dir);
    let coll = |i: usize| {
        collations
            .get(i)
            .filter(|c| !c.is_empty())
            .map(|c| format!(" {c}"))
            .unwrap_or_default()
    };
    let unnest_args = (1..=dir.key.len())
        .map(|i| format!("${}::text[]", i + 2))
        .collect::<Vec<_>>()
        .join(", ");
    let key_aliases = (0..dir.key.len())
        .map(|i| format!("\"__k{i}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let key = dir
        .key
        .iter()
        .enumerate()
        .map(|(i, k)| format!("k.\"__k{i}\"::{}{}", k.sql_type, coll(i)))
        .collect::<Vec<_>>()
        .join(", ");
    let bound = dir
        .key
        .iter()
        .enumerate()
        .map(|(i, k)| format!("r.upper_key[{}]::{}{}", i + 1, k.sql_type, coll(i)))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "WITH b AS (
  SELECT array_agg(ROW({bound}) ORDER BY r.idx) AS bounds
    FROM splice.verify_ranges r
   WHERE r.migration = $1 AND r.shape = $2 AND r.upper_key IS NOT NULL
), hit AS (
  SELECT DISTINCT coalesce(
           width_bucket(ROW({key}), b.bounds) - (ROW({key}) = ANY (b.bounds))::int, 0) AS idx
    FROM unnest({unnest_args}) AS k({key_aliases}) CROSS JOIN b
)
UPDATE splice.verify_ranges r SET marks = r.marks + 1
  FROM hit WHERE r.migration = $1 AND r.shape = $2 AND r.idx = hit.idx"
    )
}

/// Marks every stored verify range of a migration as changed (a truncate). `$1` the
/// migration, `$2` the direction's shape.
pub const MARK_EVERY_VERIFY_RANGE: &str = "UPDATE splice.verify_ranges SET marks = marks + 1
  WHERE migration = $1 AND shape = $2";

/// Per key column of `dir.from`, in key order: `COLLATE "schema"."name"` when its collation is
/// not the database default, else empty (for [`mark_verify_ranges`]). Parameters: `$1` the
/// table as SQL, `$2` the key column names.
pub const KEY_COLLATIONS: &str = "SELECT CASE WHEN a.attcollation IN (0, 100) THEN ''
            ELSE 'COLLATE ' || quote_ident(n.nspname) || '.' || quote_ident(c.collname) END
       FROM unnest($2::text[]) WITH ORDINALITY AS k(name, i)
       JOIN pg_attribute a ON a.attrelid = $1::text::regclass AND a.attname = k.name
       LEFT JOIN pg_collation c ON c.oid = a.attcollation
       LEFT JOIN pg_namespace n ON n.oid = c.collnamespace
      ORDER BY k.i";
