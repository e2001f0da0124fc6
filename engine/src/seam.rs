//! The words the engine and its database adapters speak in: the mapping of one direction
//! ([`Direction`]), key ranges, verify's selections, the cutover swap, the server load backfill
//! reads, the rate limit, the resolved [`Plan`] and verify's [`VerifyReport`]. A leaf module:
//! it imports nothing of the engine but the other leaves (`spec`, `catalog`, `state`), so the
//! adapter traits, the neutral modules and every adapter depend on it and never on each other.

use crate::catalog::{Dependent, Structure, Table};
use crate::spec::{MigrationSpec, QualifiedName};
use std::num::NonZeroU32;

/// Rows flow `from` → `to`; `columns` are (column of `to`, expression over the `from` row
/// aliased `s`, already cast to the column's type, in the adapter's SQL dialect). Backfill, the
/// change applier and verify all go through one `Direction`.
#[derive(Debug, Clone)]
pub struct Direction {
    pub from: QualifiedName,
    pub to: QualifiedName,
    pub key: Vec<KeyColumn>,
    pub columns: Vec<(String, String)>,
}

/// A key column: its name and its type in the source table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyColumn {
    pub name: String,
    pub sql_type: String,
}

/// How a backfill chunk writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// Insert only keys the target does not have (an empty target being filled).
    Missing,
    /// Upsert every row, writing where it differs, and delete the target's rows in the range
    /// whose key the source no longer has (a table restored from quarantine: it must end up
    /// equal to the source, row for row).
    Mirror,
}

/// A key range: `(lower, upper]`, either side open. Keys travel as text, one string per key
/// column in key order; the adapter casts them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyRange {
    pub lower: Option<Vec<String>>,
    pub upper: Option<Vec<String>>,
}

/// Which rows of one side of a [`Direction`] verify reads.
#[derive(Debug, Clone, Copy)]
pub enum Selection<'r> {
    /// A key range, in key order, without the key fields (the fast path: one digest).
    Range(&'r KeyRange),
    /// A key range, in key order, the key fields leading each row (narrowing a range).
    KeyedRange(&'r KeyRange),
    /// A set of keys (re-checking suspects), in key order, the key fields leading each row.
    Keys(&'r [Vec<String>]),
}

/// The side of a [`Direction`] a read is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Mapped rows of `from`, in the target's column types.
    Source,
    /// Rows of `to`, the key in the source's key types.
    Target,
}

/// Whether opening a change stream may create it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Continuity {
    /// Nothing depends on earlier changes yet (a backfill follows, or nothing was written):
    /// create the stream, or adopt one a crashed run of the same step created.
    Start,
    /// The copy depends on every change since the stream was created: it must exist, unbroken
    /// (PostgreSQL: the slot exists and its `wal_status` is not `lost`); else
    /// [`EngineError::StreamLost`](crate::EngineError::StreamLost). Never re-created "from now".
    Resume,
}

/// How an attempt to lock the tables for a swap ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwapLock {
    /// Both tables are locked; the swap transaction is open.
    Locked,
    /// The lock timeout passed; nothing is held. `holders` describes the sessions that held
    /// a lock on the tables (PostgreSQL: pid, state, transaction age, query).
    TimedOut { holders: Vec<String> },
}

/// How much WAL a change stream keeps the server from recycling.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SlotRetention {
    pub slot: String,
    /// From the slot's restart point to the server's current WAL position.
    pub retained_wal_bytes: i64,
    /// PostgreSQL's `wal_status`: `reserved`, `extended`, `unreserved` (about to be
    /// invalidated) or `lost`.
    pub wal_status: String,
    /// Above this, sync warns: half of `max_slot_wal_keep_size`, or 10 GiB when unlimited.
    pub warn_above_bytes: i64,
}

/// A rename swap: `live` (the name applications use) gets `incoming`'s table; the table that
/// had it is renamed `outgoing_as`.
#[derive(Debug, Clone)]
pub struct Swap {
    pub live: QualifiedName,
    pub incoming: QualifiedName,
    pub outgoing_as: QualifiedName,
}

/// What backfill's throttle reads from the server between chunks.
#[derive(Debug, Clone, Default)]
pub struct Load {
    /// Seconds the slowest replica is behind; 1e9 when one's lag is unknown (replication
    /// stopped or broken, or the replica unreachable).
    pub replica_lag_s: f64,
    /// Which replica that is, and why its lag is unknown when it is, where the database can
    /// say (a replica listed in `[throttle] replicas`).
    pub replica: Option<String>,
    /// Sessions waiting for a lock on the source table.
    pub lock_waiters: i64,
    /// Sessions running a statement right now (MySQL's `Threads_running`), where the database
    /// reports it; compared with `[throttle] max_threads_running`.
    pub threads_running: Option<i64>,
}

/// A session holding a lock another one waits for: what the progress line names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockHolder {
    pub pid: i32,
    /// Its `application_name`, empty when it has none.
    pub application: String,
    /// Its current (or last) statement, shortened to one line.
    pub query: String,
}

/// A backfill rate limit: the one encoding of "how fast may backfill copy" in the engine, the
/// state store and the CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimit {
    Unlimited,
    RowsPerSecond(NonZeroU32),
}

impl RateLimit {
    /// `0` is unlimited, as on the command line (`--rows-per-second 0`).
    pub fn from_rows_per_second(rows: u32) -> RateLimit {
        NonZeroU32::new(rows).map_or(RateLimit::Unlimited, RateLimit::RowsPerSecond)
    }

    /// Rows per second, `0` for unlimited: how the state store keeps it.
    pub fn rows_per_second(self) -> u32 {
        match self {
            RateLimit::Unlimited => 0,
            RateLimit::RowsPerSecond(r) => r.get(),
        }
    }
}

impl std::fmt::Display for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RateLimit::Unlimited => f.write_str("unlimited"),
            RateLimit::RowsPerSecond(r) => write!(f, "{r} rows/s"),
        }
    }
}

/// A checked, resolved migration.
#[derive(Debug, Clone)]
pub struct Plan {
    pub spec: MigrationSpec,
    pub source: Table,
    pub target: Table,
    pub key: Vec<KeyColumn>,
    /// old → new, through `up`.
    pub forward: Direction,
    /// new → old, through `down`; `None` when some NOT NULL old column has no way to be filled.
    pub reverse: Option<Direction>,
    /// Why `reverse` is `None`, or notes about columns reverse sync leaves to defaults.
    pub reverse_notes: Vec<String>,
    /// The statements expand runs to create the shadow table.
    pub expand_ddl: Vec<String>,
    pub dependents: Vec<Dependent>,
    /// Indexes and constraints of the live table the new shape lacks and the file does not
    /// declare dropped (`drop_indexes`, `drop_constraints`): expand and cutover refuse them.
    pub not_carried: Vec<Structure>,
    /// Indexes and constraints of the live table the new shape drops on purpose: declared in
    /// the file, or (alter mode) removed by the ALTER itself.
    pub dropped: Vec<Structure>,
}

impl Plan {
    /// What depends on the table and cannot be carried over at cutover (materialized views),
    /// by name: plan, expand and cutover refuse while there is any.
    pub fn cannot_carry(&self) -> Vec<String> {
        self.dependents
            .iter()
            .filter(|d| {
                matches!(
                    d,
                    Dependent::View {
                        materialized: true,
                        ..
                    }
                )
            })
            .map(|d| d.to_string())
            .collect()
    }
}

/// A key whose rows differ after re-checking.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DivergedKey {
    pub key: Vec<String>,
    /// The mapped source row (canonical text), or None when the key is missing from the source.
    pub expected: Option<String>,
    /// The target row, or None when the key is missing from the target.
    pub found: Option<String>,
}

/// Which kind of verify pass to run, or ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyKind {
    /// Every key range, with bounds sampled afresh; what it finds replaces the stored pass.
    #[default]
    Full,
    /// Only the ranges the stored pass cannot vouch for: marked by capture since they were last
    /// checked, or whose last check did not match (see [`crate::verify`]).
    Incremental,
}

impl std::fmt::Display for VerifyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VerifyKind::Full => "full",
            VerifyKind::Incremental => "incremental",
        })
    }
}

/// One stored verify range: its bounds, what its last check found, and capture's marks.
/// The range is vouched for ([`StoredRange::vouched`]) when its last check matched and
/// nothing was marked since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRange {
    /// Its place in key order, from 0.
    pub idx: i32,
    pub range: KeyRange,
    /// Its last check matched (no key diverged after re-checks).
    pub passed: bool,
    /// How many times capture marked it (a counter that only grows).
    pub marks: i64,
    /// The value of `marks` read before its last check; `None`: never checked.
    pub checked_marks: Option<i64>,
}

impl StoredRange {
    /// Its last check matched and capture has applied no change to its keys since.
    pub fn vouched(&self) -> bool {
        self.passed && self.checked_marks == Some(self.marks)
    }
}

/// The ranges of the last pass of a migration, as stored.
#[derive(Debug, Clone, Default)]
pub struct StoredPass {
    /// [`crate::verify::shape`] of the direction the ranges were verified on.
    pub shape: String,
    /// In key order; the first open below, the last open above.
    pub ranges: Vec<StoredRange>,
}

/// What checking one range found, to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeResult {
    pub idx: i32,
    /// BLAKE3 of each side's canonical rows in key order.
    pub source_digest: [u8; 32],
    pub target_digest: [u8; 32],
    pub rows: u64,
    /// No key of the range diverged after re-checks.
    pub passed: bool,
    /// The range's `marks` read before the check.
    pub checked_marks: i64,
}

/// The outcome of one verify pass. The engine decides: [`cutover_allowed`] is its answer.
///
/// [`cutover_allowed`]: VerifyReport::cutover_allowed
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct VerifyReport {
    /// The kind of pass that ran.
    pub kind: VerifyKind,
    /// Why a pass asked to be incremental ran full (no stored pass, the mapping changed…).
    pub full_because: Option<String>,
    /// Ranges the key is split into; `ranges` of them were read by this pass.
    pub ranges_total: u64,
    /// Rows read (on the source side) by this pass.
    pub rows_checked: u64,
    /// Ranges read by this pass.
    pub ranges: u64,
    /// Keys that differed on first read and were re-checked after capture caught up.
    pub rechecked: u64,
    pub diverged: Vec<DivergedKey>,
    pub seconds: f64,
    /// The key columns, in key order: the first fields of `expected` and `found`.
    pub key_columns: Vec<String>,
    /// The new table's mapped columns, in the order they follow the key in `expected` and
    /// `found`.
    pub columns: Vec<String>,
}

/// One column of a diverged key whose values differ, by name.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ColumnDifference {
    pub column: String,
    /// The mapped source value (`None`: NULL).
    pub expected: Option<String>,
    /// The new table's value (`None`: NULL).
    pub found: Option<String>,
}

/// How a diverged key differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Divergence {
    /// The key is in the source but not in the new table.
    MissingInTarget,
    /// The key is in the new table but not in the source.
    MissingInSource,
    /// The key is on both sides; these columns differ.
    Columns(Vec<ColumnDifference>),
}

impl VerifyReport {
    pub fn passed(&self) -> bool {
        self.diverged.is_empty()
    }

    /// Whether this result opens the gate to cutover: nothing diverged.
    pub fn cutover_allowed(&self) -> bool {
        self.passed()
    }

    /// How `d` (one of `diverged`) differs: which side lacks it, or its differing columns by
    /// name (the key fields, which both sides share, are left out).
    pub fn divergence(&self, d: &DivergedKey) -> Divergence {
        let (expected, found) = match (&d.expected, &d.found) {
            (Some(e), Some(f)) => (e, f),
            (Some(_), None) => return Divergence::MissingInTarget,
            _ => return Divergence::MissingInSource,
        };
        let skip = self.key_columns.len();
        let expected: Vec<&str> = expected.split('\t').skip(skip).collect();
        let found: Vec<&str> = found.split('\t').skip(skip).collect();
        let mut out = Vec::new();
        for (i, (e, f)) in expected.iter().zip(&found).enumerate() {
            if e != f {
                out.push(ColumnDifference {
                    column: self
                        .columns
                        .get(i)
                        .cloned()
                        .unwrap_or_else(|| format!("column {}", i + 1)),
                    expected: copy_text_value(e),
                    found: copy_text_value(f),
                });
            }
        }
        Divergence::Columns(out)
    }

    /// Diverged keys per checked row.
    pub fn divergence_rate(&self) -> f64 {
        if self.rows_checked == 0 {
            0.0
        } else {
            self.diverged.len() as f64 / self.rows_checked as f64
        }
    }
}

/// One field of PostgreSQL's COPY text form as its value: `\N` is NULL; backslash escapes
/// are undone.
fn copy_text_value(field: &str) -> Option<String> {
    if field == "\\N" {
        return None;
    }
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> VerifyReport {
        VerifyReport {
            key_columns: vec!["id".into()],
            columns: vec!["id".into(), "amount_cents".into(), "note".into()],
            ..Default::default()
        }
    }

    #[test]
    fn a_diverged_key_names_only_the_columns_that_differ() {
        let d = DivergedKey {
            key: vec!["42".into()],
            expected: Some("42\t42\t12345\tedited".into()),
            found: Some("42\t42\t12300\t\\N".into()),
        };
        assert_eq!(
            report().divergence(&d),
            Divergence::Columns(vec![
                ColumnDifference {
                    column: "amount_cents".into(),
                    expected: Some("12345".into()),
                    found: Some("12300".into()),
                },
                ColumnDifference {
                    column: "note".into(),
                    expected: Some("edited".into()),
                    found: None,
                },
            ])
        );
    }

    #[test]
    fn a_key_missing_on_one_side_says_which() {
        let d = DivergedKey {
            key: vec!["7".into()],
            expected: Some("7\t7\t1\tx".into()),
            found: None,
        };
        assert_eq!(report().divergence(&d), Divergence::MissingInTarget);
        let d = DivergedKey {
            expected: None,
            found: Some("7\t7\t1\tx".into()),
            ..d
        };
        assert_eq!(report().divergence(&d), Divergence::MissingInSource);
    }

    #[test]
    fn copy_text_escapes_are_undone() {
        assert_eq!(copy_text_value("a\\tb\\\\c").as_deref(), Some("a\tb\\c"));
        assert_eq!(copy_text_value("\\N"), None);
    }
}
