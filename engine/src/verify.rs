//! Verify: both sides hashed through the mapping, per key range, and compared.
//!
//! Rows are encoded canonically by the database itself, read through
//! [`VerifySource::read_canonical`]. PostgreSQL's is COPY's text form of the target's column types
//! (typed, NULL as `\N` and distinct from empty, escapes for tabs and newlines), under fixed
//! session settings (UTC, ISO dates, `extra_float_digits = 3`, hex bytea). Each row is
//! hashed with BLAKE3 on the client: a range's digest is BLAKE3 over its canonical rows in key
//! order. A range whose digests differ is read again keeping each row's key and BLAKE3 digest,
//! which narrows it to the rows that differ, and every such key
//! is re-checked after capture has passed the position at which it was read: only keys that
//! still differ count.
//!
//! Incremental verify builds on the ranges of the last full pass, kept in the state store
//! ([`crate::adapter::StateStore::verify_ranges`]): a full pass stores its bounds before it
//! reads a row ([`full_ranges`], then `start_verify_pass`), and each checked range's result
//! after ([`RangeResult`]). The applier marks a stored range (bumps its `marks` counter) before
//! it applies a batch holding one of its keys ([`crate::applier`] says why that order loses no
//! mark). A range is vouched for while its last check matched and `marks` still equals the
//! value read before that check ([`ToCheck::marks`]), so a mark made while a pass runs (the
//! re-check rounds drain capture) keeps the range dirty for the next pass. An incremental pass
//! re-reads every range not vouched for, with the stored bounds; what it cannot see are writes
//! to the new table that bypass capture, which only a full pass reads.

use crate::adapter::{ChangeApplier, VerifySource};
use crate::applier::Applier;
use crate::seam::{Direction, DivergedKey, KeyRange, RangeResult, Selection, Side, VerifyReport};
use crate::EngineError;
use futures_util::TryStreamExt;
use std::collections::HashMap;
use std::time::Instant;

/// One side's rows of a keyed read, in the order they arrived: their bytes in one buffer, so
/// reading a range of 100,000 rows allocates nothing per row.
#[derive(Default)]
struct Rows {
    bytes: Vec<u8>,
    rows: Vec<Row>,
}

/// One row of [`Rows`]: `bytes[start..key_end]` is its key (the first `k` fields), and
/// `bytes[start..end]` what was kept of it (the key, or the whole line).
struct Row {
    start: usize,
    key_end: usize,
    end: usize,
    digest: [u8; 32],
}

impl Rows {
    fn key(&self, row: &Row) -> &[u8] {
        &self.bytes[row.start..row.key_end]
    }

    /// Key bytes → row.
    fn by_key(&self) -> HashMap<&[u8], &Row> {
        self.rows.iter().map(|r| (self.key(r), r)).collect()
    }

    /// The kept text of the row with `key`.
    fn line(&self, index: &HashMap<&[u8], &Row>, key: &[u8]) -> Option<String> {
        index
            .get(key)
            .map(|r| String::from_utf8_lossy(&self.bytes[r.start..r.end]).into_owned())
    }
}

/// A key's fields as text, from its canonical bytes: each field unescaped, so the key is
/// re-queried byte for byte (a text key holding a backslash, tab or newline, or a bytea key,
/// would otherwise name no row on either side and "match"). A field that is not UTF-8 (a
/// `SQL_ASCII` database) cannot be re-queried exactly: that is an error, never a lossy guess
/// that would clear the key.
fn key_fields(key: &[u8]) -> Result<Vec<String>, EngineError> {
    key.split(|b| *b == b'\t')
        .map(|f| {
            String::from_utf8(unescape_field(f)).map_err(|e| EngineError::Database {
                context: format!(
                    "verify cannot re-check the key {}",
                    String::from_utf8_lossy(key)
                ),
                message: format!(
                    "its text is not valid UTF-8 ({e}); verify re-queries keys by their exact \
                     text, so the database's encoding must be UTF-8 (or the key's values ASCII)"
                ),
            })
        })
        .collect()
}

/// One canonical field's value: `\\`, `\t`, `\n`, `\r` (and COPY's `\b`, `\f`, `\v`) turned
/// back into the bytes they stand for. Key fields are never NULL.
pub fn unescape_field(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut bytes = field.iter();
    while let Some(&b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b't') => out.push(b'\t'),
            Some(b'n') => out.push(b'\n'),
            Some(b'r') => out.push(b'\r'),
            Some(b'b') => out.push(0x08),
            Some(b'f') => out.push(0x0c),
            Some(b'v') => out.push(0x0b),
            Some(&other) => out.push(other),
            None => out.push(b'\\'),
        }
    }
    out
}

/// What a read keeps besides the range digest.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// Only the range digest (BLAKE3 over the range's canonical rows in key order): the fast
    /// path for ranges that match.
    Digest,
    /// Every row's key and digest, to find the rows that differ.
    Rows,
    /// Also every row's text, to report diverged keys.
    Lines,
}

/// Bytes of rows hashed in one BLAKE3 update on the fast path.
const HASH_BATCH: usize = 64 * 1024;

/// Hashes and empties `batch`; returns the rows (lines) it held.
fn hash_batch(hasher: &mut blake3::Hasher, batch: &mut Vec<u8>) -> u64 {
    hasher.update(batch);
    let rows = memchr::memchr_iter(b'\n', batch).count() as u64;
    batch.clear();
    rows
}

/// Reads one side's canonical rows: the range digest (fast path only), the row count, and
/// what `keep` asks for.
async fn read_side<A: VerifySource>(
    adapter: &A,
    db: &A::Conn,
    dir: &Direction,
    side: Side,
    rows_wanted: Selection<'_>,
    keep: Keep,
) -> Result<(blake3::Hash, Rows, u64), EngineError> {
    let key_len = dir.key.len();
    let mut stream = adapter.read_canonical(db, dir, side, rows_wanted).await?;
    let mut rows = Rows::default();
    let mut carry: Vec<u8> = Vec::new();
    let mut fast = blake3::Hasher::new();
    let mut fast_rows = 0u64;
    let mut batch: Vec<u8> = Vec::with_capacity(HASH_BATCH + 4096);
    let mut row = |line: &[u8]| {
        // The key is the first `key_len` fields: up to the `key_len`-th tab.
        let key_len_bytes = memchr::memchr_iter(b'\t', line)
            .nth(key_len - 1)
            .unwrap_or(line.len());
        let kept = if keep == Keep::Lines {
            line
        } else {
            &line[..key_len_bytes]
        };
        let start = rows.bytes.len();
        rows.bytes.extend_from_slice(kept);
        rows.rows.push(Row {
            start,
            key_end: start + key_len_bytes,
            end: start + kept.len(),
            digest: *blake3::hash(line).as_bytes(),
        });
    };
    while let Some(chunk) = stream.try_next().await? {
        if keep == Keep::Digest {
            // The fast path hashes the canonical rows as one stream, in key order: equal
            // ranges give equal bytes. Rows are only told apart when a range differs.
            // The server may send a message per row (PostgreSQL does); BLAKE3 hashes many 1 KiB chunks at once
            // (SIMD) only when it is given them together, so rows are hashed in batches.
            batch.extend_from_slice(&chunk);
            if batch.len() >= HASH_BATCH {
                fast_rows += hash_batch(&mut fast, &mut batch);
            }
            continue;
        }
        // A row split across messages is carried over.
        let mut rest: &[u8] = &chunk;
        while let Some(end) = memchr::memchr(b'\n', rest) {
            if carry.is_empty() {
                row(&rest[..end]);
            } else {
                carry.extend_from_slice(&rest[..end]);
                row(&carry);
                carry.clear();
            }
            rest = &rest[end + 1..];
        }
        carry.extend_from_slice(rest);
    }
    if keep == Keep::Digest {
        fast_rows += hash_batch(&mut fast, &mut batch);
        return Ok((fast.finalize(), rows, fast_rows));
    }
    let n = rows.rows.len() as u64;
    Ok((fast.finalize(), rows, n))
}

/// Keys present on one side only, or with different digests (as key bytes).
fn differing<'a>(
    a: &'a Rows,
    a_index: &HashMap<&'a [u8], &'a Row>,
    b: &'a Rows,
    b_index: &HashMap<&'a [u8], &'a Row>,
) -> Vec<&'a [u8]> {
    let mut out: Vec<&[u8]> = a
        .rows
        .iter()
        .filter(|r| b_index.get(a.key(r)).map(|o| o.digest) != Some(r.digest))
        .map(|r| a.key(r))
        .collect();
    out.extend(
        b.rows
            .iter()
            .map(|r| b.key(r))
            .filter(|k| !a_index.contains_key(k)),
    );
    out
}

/// How far a running verify is, for a progress line: read from another task while it runs.
#[derive(Debug, Clone, Default)]
pub struct VerifyCounters {
    pub ranges_total: std::sync::Arc<std::sync::atomic::AtomicU64>,
    pub ranges_done: std::sync::Arc<std::sync::atomic::AtomicU64>,
    pub rows_checked: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl VerifyCounters {
    /// (ranges done, ranges in all, rows checked) so far.
    pub fn read(&self) -> (u64, u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.ranges_done.load(Relaxed),
            self.ranges_total.load(Relaxed),
            self.rows_checked.load(Relaxed),
        )
    }
}

/// The fingerprint of a direction's shape (tables, key and mapping): stored ranges, and
/// capture's marks on them, only count for the shape they were made for.
pub fn shape(dir: &Direction) -> String {
    blake3::hash(format!("{dir:?}").as_bytes()).to_hex()[..32].to_string()
}

/// The key ranges of a full pass over `dir`: bounds sampled from the source, the first range
/// open below and the last open above (so keys written since fall in the last one).
pub async fn full_ranges<A: VerifySource>(
    adapter: &A,
    db: &A::Conn,
    dir: &Direction,
    range_rows: i64,
) -> Result<Vec<KeyRange>, EngineError> {
    let bounds = adapter.sample_bounds(db, dir, range_rows).await?;
    // (lower, upper]: the first open below, the last open above.
    let mut ranges: Vec<KeyRange> = Vec::with_capacity(bounds.len() + 1);
    let mut lower: Option<Vec<String>> = None;
    for upper in bounds.into_iter().map(Some).chain(std::iter::once(None)) {
        ranges.push(KeyRange {
            lower: lower.clone(),
            upper: upper.clone(),
        });
        lower = upper;
    }
    Ok(ranges)
}

/// One range to check: its place in the stored pass, its bounds, and the value of its marks
/// counter read before the check (what the stored result will vouch for).
#[derive(Debug, Clone)]
pub struct ToCheck {
    pub idx: i32,
    pub range: KeyRange,
    pub marks: i64,
}

/// One full verify pass over `dir` while the application keeps writing: drains `capture`,
/// samples bounds, checks every range. Nothing is stored (the phase does that).
pub async fn verify<A: VerifySource + ChangeApplier>(
    adapter: &A,
    pairs: &[(A::Conn, A::Conn)],
    capture: &mut Applier<'_, A>,
    dir: &Direction,
    range_rows: i64,
    counters: &VerifyCounters,
) -> Result<VerifyReport, EngineError> {
    let Some((source_db, _)) = pairs.first() else {
        return Err(EngineError::Missing(
            "verify needs at least one pair of sessions".into(),
        ));
    };
    capture.drain().await?;
    let ranges = full_ranges(adapter, source_db, dir, range_rows).await?;
    let ranges: Vec<ToCheck> = ranges
        .into_iter()
        .enumerate()
        .map(|(i, range)| ToCheck {
            idx: i as i32,
            range,
            marks: 0,
        })
        .collect();
    let total = ranges.len() as u64;
    let (mut report, _) = check(adapter, pairs, capture, dir, &ranges, counters).await?;
    report.ranges_total = total;
    Ok(report)
}

/// Checks `ranges` of `dir` while the application keeps writing (capture is drained by the
/// caller first, and here again before suspects are re-checked). Each range is read under
/// snapshots of its own (one statement per side), never one for the whole pass. Each pair of
/// sessions (source, target) checks every n-th range, so n ranges are read at once: the
/// source side evaluates the mapping and is the slower one, and several ranges in flight keep
/// every core busy. Returns the report (of these ranges) and each range's result.
pub async fn check<A: VerifySource + ChangeApplier>(
    adapter: &A,
    pairs: &[(A::Conn, A::Conn)],
    capture: &mut Applier<'_, A>,
    dir: &Direction,
    ranges: &[ToCheck],
    counters: &VerifyCounters,
) -> Result<(VerifyReport, Vec<RangeResult>), EngineError> {
    let started = Instant::now();
    let Some((source_db, target_db)) = pairs.first() else {
        return Err(EngineError::Missing(
            "verify needs at least one pair of sessions".into(),
        ));
    };
    counters
        .ranges_total
        .store(ranges.len() as u64, std::sync::atomic::Ordering::Relaxed);
    let workers = pairs.iter().enumerate().map(|(w, (src, tgt))| {
        let mine: Vec<&ToCheck> = ranges.iter().skip(w).step_by(pairs.len()).collect();
        check_ranges(adapter, src, tgt, dir, mine, counters)
    });
    let mut report = VerifyReport::default();
    let mut checked: Vec<Checked> = Vec::with_capacity(ranges.len());
    for found in futures_util::future::try_join_all(workers).await? {
        checked.extend(found);
    }
    checked.sort_by_key(|c| c.idx);
    let suspects: Vec<Vec<String>> = checked
        .iter()
        .flat_map(|c| c.suspects.iter().cloned())
        .collect();
    report.ranges = checked.len() as u64;
    report.rows_checked = checked.iter().map(|c| c.rows).sum();
    if !suspects.is_empty() {
        report.rechecked = suspects.len() as u64;
        report.diverged = recheck(adapter, source_db, target_db, capture, dir, suspects).await?;
    }
    let diverged: std::collections::HashSet<&Vec<String>> =
        report.diverged.iter().map(|d| &d.key).collect();
    let results = checked
        .iter()
        .map(|c| RangeResult {
            idx: c.idx,
            source_digest: c.source,
            target_digest: c.target,
            rows: c.rows,
            passed: !c.suspects.iter().any(|k| diverged.contains(k)),
            checked_marks: c.marks,
        })
        .collect();
    report.seconds = started.elapsed().as_secs_f64();
    Ok((report, results))
}

/// What reading one range found.
struct Checked {
    idx: i32,
    marks: i64,
    rows: u64,
    source: [u8; 32],
    target: [u8; 32],
    /// Keys that differed on the first read (re-checked after capture caught up).
    suspects: Vec<Vec<String>>,
}

/// Checks `ranges` on one pair of sessions.
async fn check_ranges<A: VerifySource>(
    adapter: &A,
    source_db: &A::Conn,
    target_db: &A::Conn,
    dir: &Direction,
    ranges: Vec<&ToCheck>,
    counters: &VerifyCounters,
) -> Result<Vec<Checked>, EngineError> {
    let mut out = Vec::with_capacity(ranges.len());
    for to_check in ranges {
        let range = &to_check.range;
        // The fast path reads only the mapped columns: equal ranges give equal bytes.
        let fast = Selection::Range(range);
        let (src, tgt) = tokio::join!(
            read_side(adapter, source_db, dir, Side::Source, fast, Keep::Digest),
            read_side(adapter, target_db, dir, Side::Target, fast, Keep::Digest)
        );
        let (src_hash, _, n) = src?;
        let (tgt_hash, _, _) = tgt?;
        counters
            .rows_checked
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        counters
            .ranges_done
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut suspects: Vec<Vec<String>> = Vec::new();
        if src_hash != tgt_hash {
            // Narrow the range to its rows: read it again keeping each row's key and digest.
            let keyed = Selection::KeyedRange(range);
            let (src, tgt) = tokio::join!(
                read_side(adapter, source_db, dir, Side::Source, keyed, Keep::Rows),
                read_side(adapter, target_db, dir, Side::Target, keyed, Keep::Rows)
            );
            let (_, src_rows, _) = src?;
            let (_, tgt_rows, _) = tgt?;
            let (src_index, tgt_index) = (src_rows.by_key(), tgt_rows.by_key());
            for key in differing(&src_rows, &src_index, &tgt_rows, &tgt_index) {
                suspects.push(key_fields(key)?);
            }
        }
        out.push(Checked {
            idx: to_check.idx,
            marks: to_check.marks,
            rows: n,
            source: *src_hash.as_bytes(),
            target: *tgt_hash.as_bytes(),
            suspects,
        });
    }
    Ok(out)
}

/// Rounds of re-checking before a key counts as diverged. Each round first drains capture, so
/// a key only survives every round if it differs each time capture has passed the moment it was
/// read: a key the application keeps rewriting may differ once or twice, a row changed behind
/// splice's back differs every time.
///
/// A key is confirmed sooner when two rounds in a row read the same source row and the same
/// target row and they differ: the drain between the two reads applied every change committed
/// before the second round started, and the source row did not change in between, so the
/// target should have been its mapping at the second read; it was not, and capture owes it
/// nothing more. Only keys the application keeps rewriting need all the rounds.
const RECHECK_ROUNDS: usize = 5;

async fn recheck<A: VerifySource + ChangeApplier>(
    adapter: &A,
    source_db: &A::Conn,
    target_db: &A::Conn,
    capture: &mut Applier<'_, A>,
    dir: &Direction,
    mut suspects: Vec<Vec<String>>,
) -> Result<Vec<DivergedKey>, EngineError> {
    // Reported in the order the keys were found.
    let order: HashMap<Vec<String>, usize> = suspects
        .iter()
        .enumerate()
        .map(|(i, k)| (k.clone(), i))
        .collect();
    let mut confirmed: Vec<DivergedKey> = Vec::new();
    let mut diverged: Vec<DivergedKey> = Vec::new();
    // What the previous round read of each key still differing: (expected, found).
    let mut previous: HashMap<Vec<String>, (Option<String>, Option<String>)> = HashMap::new();
    for round in 0..RECHECK_ROUNDS {
        capture.drain().await?;
        diverged.clear();
        let mut still = Vec::new();
        let mut read_now = HashMap::new();
        for batch in suspects.chunks(1000) {
            let keys = Selection::Keys(batch);
            let (src, tgt) = tokio::join!(
                read_side(adapter, source_db, dir, Side::Source, keys, Keep::Lines),
                read_side(adapter, target_db, dir, Side::Target, keys, Keep::Lines)
            );
            let (_, src_rows, _) = src?;
            let (_, tgt_rows, _) = tgt?;
            let (src_index, tgt_index) = (src_rows.by_key(), tgt_rows.by_key());
            for key in differing(&src_rows, &src_index, &tgt_rows, &tgt_index) {
                let fields = key_fields(key)?;
                let found = DivergedKey {
                    expected: src_rows.line(&src_index, key),
                    found: tgt_rows.line(&tgt_index, key),
                    key: fields.clone(),
                };
                let seen = (found.expected.clone(), found.found.clone());
                if previous.get(&fields) == Some(&seen) {
                    confirmed.push(found);
                } else {
                    read_now.insert(fields.clone(), seen);
                    diverged.push(found);
                    still.push(fields);
                }
            }
        }
        tracing::debug!(
            round,
            remaining = still.len(),
            confirmed = confirmed.len(),
            "verify re-check"
        );
        if still.is_empty() || round + 1 == RECHECK_ROUNDS {
            break;
        }
        suspects = still;
        previous = read_now;
        tokio::time::sleep(std::time::Duration::from_millis(50 * (round as u64 + 1))).await;
    }
    confirmed.append(&mut diverged);
    confirmed.sort_by_key(|d| order.get(&d.key).copied().unwrap_or(usize::MAX));
    Ok(confirmed)
}
