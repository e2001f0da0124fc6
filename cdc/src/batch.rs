//! Taking a [`ChangeSource`]'s transactions in batches: wait for a first transaction, then take
//! whatever else is already there, for a moment at most, up to a limit. A consumer that handles
//! and acknowledges a batch at a time (one write and flush for `splice cdc tail`, one apply and
//! commit for the engine's applier) pays its per-batch cost once per batch, not per transaction,
//! and a quiet stream still gets each transaction handled within `linger` of its arrival.
//!
//! ```no_run
//! use cdc::{next_batch, BatchLimits, ChangeSource, PgChangeStream};
//! use std::time::Duration;
//! # async fn run(mut stream: PgChangeStream) -> Result<(), cdc::CdcError> {
//! let limits = BatchLimits {
//!     max_txns: 2000,
//!     max_changes: 5000,
//!     linger: Duration::from_millis(2),
//! };
//! loop {
//!     let batch = next_batch(&mut stream, Duration::from_secs(1), &limits).await?;
//!     for txn in &batch.transactions {
//!         // handle txn
//!     }
//!     if let Some(position) = batch.last_position() {
//!         stream.ack(position)?;
//!     }
//!     if batch.ended {
//!         break;
//!     }
//! }
//! # Ok(()) }
//! ```

use crate::change::{Position, Transaction};
use crate::error::CdcError;
use crate::source::ChangeSource;
use std::future::Future;
use std::time::Duration;

/// Limits of one batch. A batch ends after the transaction that brings it to `max_txns`
/// transactions or `max_changes` changes, or once `linger` has passed since its first
/// transaction arrived, whichever comes first. Transactions are never split: one transaction
/// with more than `max_changes` changes is a batch of its own, and a batch holds at least one
/// transaction whenever one arrived (even with a limit of 0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchLimits {
    pub max_txns: usize,
    pub max_changes: usize,
    /// How long after the first transaction the batch keeps taking what arrives.
    pub linger: Duration,
}

/// What one [`next_batch`] call gathered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    /// Whole transactions, in the order the source delivered them (commit order). Empty when
    /// nothing arrived within the wait, or the source ended first.
    pub transactions: Vec<Transaction>,
    /// The source returned `Ok(None)`: it was stopped and delivers nothing more.
    pub ended: bool,
}

impl Batch {
    /// The position to acknowledge once the whole batch is handled: its last transaction's.
    pub fn last_position(&self) -> Option<&Position> {
        self.transactions.last().map(|txn| &txn.position)
    }

    /// Changes in all of the batch's transactions.
    pub fn changes(&self) -> usize {
        self.transactions.iter().map(|txn| txn.changes.len()).sum()
    }
}

/// The source failed. `gathered` holds the transactions the batch had taken before the
/// failure, in order; none of them was acknowledged, so a consumer may handle and acknowledge
/// them, or drop them and have a reopened source deliver them again.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct BatchError {
    pub error: CdcError,
    pub gathered: Vec<Transaction>,
}

impl From<BatchError> for CdcError {
    /// The source's error, dropping what was gathered.
    fn from(e: BatchError) -> CdcError {
        e.error
    }
}

/// Waits up to `wait` for the first transaction, then takes what the source already has
/// (lingering at most `limits.linger` after the first) until a limit of `limits` is reached.
///
/// Returns an empty batch when nothing arrived within `wait`, and `ended` when the source
/// returned `Ok(None)` (with what was taken before). While waiting for the first transaction
/// the call is cancel-safe like [`ChangeSource::next_transaction`]; once it has taken one,
/// cancelling it drops what it took (unacknowledged, so a reopened source delivers it again).
pub async fn next_batch<S: ChangeSource>(
    source: &mut S,
    wait: Duration,
    limits: &BatchLimits,
) -> Result<Batch, BatchError> {
    next_batch_until(source, wait, limits, |_| false).await
}

/// [`next_batch`], ending the batch at once after a transaction for which `last` is true (a
/// consumer that waits for one — a drain's marker — does not linger after it arrived).
pub async fn next_batch_until<S: ChangeSource>(
    source: &mut S,
    wait: Duration,
    limits: &BatchLimits,
    last: impl Fn(&Transaction) -> bool,
) -> Result<Batch, BatchError> {
    let mut batch = Batch::default();
    let first = match tokio::time::timeout(wait, source.next_transaction()).await {
        Err(_idle) => return Ok(batch),
        Ok(Ok(Some(txn))) => txn,
        Ok(Ok(None)) => {
            batch.ended = true;
            return Ok(batch);
        }
        Ok(Err(error)) => {
            return Err(BatchError {
                error,
                gathered: Vec::new(),
            })
        }
    };
    let started = tokio::time::Instant::now();
    let mut changes = 0;
    let mut txn = first;
    loop {
        changes += txn.changes.len();
        let ends = last(&txn);
        batch.transactions.push(txn);
        if ends || batch.transactions.len() >= limits.max_txns || changes >= limits.max_changes {
            return Ok(batch);
        }
        // Take what is already here. Otherwise nap rather than wait on the stream: while nobody
        // waits on it, the source's reader fills it without waking us for every message, and
        // the next look takes many transactions at once. The nap ends the batch's time at the
        // latest (next_transaction is cancel-safe, so the look that found nothing lost
        // nothing).
        let next = loop {
            // Unconstrained: the runtime's cooperative budget would otherwise report an empty
            // stream after a hundred or so messages and turn every look into a nap.
            if let Some(next) =
                poll_once(tokio::task::unconstrained(source.next_transaction())).await
            {
                break Some(next);
            }
            match limits.linger.checked_sub(started.elapsed()) {
                Some(left) if !left.is_zero() => tokio::time::sleep(left).await,
                _ => break None,
            }
        };
        match next {
            None => return Ok(batch),
            Some(Ok(Some(next))) => txn = next,
            Some(Ok(None)) => {
                batch.ended = true;
                return Ok(batch);
            }
            Some(Err(error)) => {
                return Err(BatchError {
                    error,
                    gathered: batch.transactions,
                })
            }
        }
    }
}

/// Poll `future` once: its output if it is ready now, `None` (dropping it) if it would wait.
async fn poll_once<F: Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| match future.as_mut().poll(cx) {
        std::task::Poll::Ready(output) => std::task::Poll::Ready(Some(output)),
        std::task::Poll::Pending => std::task::Poll::Ready(None),
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::{Change, Op, TableName, Timestamp, Value};
    use crate::lsn::Lsn;
    use crate::source::Lag;
    use std::collections::VecDeque;
    use tokio::time::Instant;

    /// What the test source delivers at a moment after its creation.
    enum Item {
        Txn(Transaction),
        Fail,
    }

    /// A source that delivers scripted transactions, each once its moment has come, and then
    /// either ends (`Ok(None)`) or waits forever. Cancel-safe: an item leaves the queue only
    /// when it is returned.
    struct Scripted {
        start: Instant,
        items: VecDeque<(Duration, Item)>,
        ends: bool,
    }

    impl Scripted {
        fn new(ends: bool) -> Scripted {
            Scripted {
                start: Instant::now(),
                items: VecDeque::new(),
                ends,
            }
        }

        /// Transaction `id` with `changes` changes, delivered `at` after the start.
        fn txn(mut self, at: Duration, id: u64, changes: usize) -> Scripted {
            self.items
                .push_back((at, Item::Txn(transaction(id, changes))));
            self
        }

        fn fail(mut self, at: Duration) -> Scripted {
            self.items.push_back((at, Item::Fail));
            self
        }
    }

    fn transaction(id: u64, changes: usize) -> Transaction {
        let position = Position::Lsn(Lsn(id * 100));
        Transaction {
            position: position.clone(),
            commit_position: Position::Lsn(Lsn(id * 100 - 10)),
            committed_at: Timestamp { unix_micros: 0 },
            origin: None,
            source_id: id,
            changes: (0..changes)
                .map(|i| Change {
                    op: Op::Insert,
                    table: TableName::new("public", "t"),
                    key: vec![("id".to_string(), Value::Int(i as i64))],
                    old_key: None,
                    position: position.clone(),
                    committed_at: Timestamp { unix_micros: 0 },
                    origin: None,
                })
                .collect(),
        }
    }

    impl ChangeSource for Scripted {
        async fn next_transaction(&mut self) -> Result<Option<Transaction>, CdcError> {
            let Some((at, _)) = self.items.front() else {
                if self.ends {
                    return Ok(None);
                }
                return std::future::pending().await;
            };
            tokio::time::sleep_until(self.start + *at).await;
            match self.items.pop_front() {
                Some((_, Item::Txn(txn))) => Ok(Some(txn)),
                Some((_, Item::Fail)) => Err(CdcError::Protocol("scripted failure".into())),
                None => Ok(None),
            }
        }

        fn ack(&mut self, _: &Position) -> Result<(), CdcError> {
            Ok(())
        }

        async fn lag(&mut self) -> Result<Lag, CdcError> {
            Ok(Lag {
                source_position: Position::Lsn(Lsn(0)),
                acked_position: Position::Lsn(Lsn(0)),
                bytes: 0,
                behind: Duration::ZERO,
            })
        }

        async fn close(self) -> Result<(), CdcError> {
            Ok(())
        }

        async fn close_and_drop(self) -> Result<(), CdcError> {
            Ok(())
        }
    }

    const MS: Duration = Duration::from_millis(1);

    fn limits(max_txns: usize, max_changes: usize, linger: Duration) -> BatchLimits {
        BatchLimits {
            max_txns,
            max_changes,
            linger,
        }
    }

    fn ids(batch: &Batch) -> Vec<u64> {
        batch.transactions.iter().map(|t| t.source_id).collect()
    }

    // Paused time: the runtime jumps to the next timer whenever every task waits, so these
    // tests are exact about time and take none.

    #[tokio::test(start_paused = true)]
    async fn nothing_within_the_wait_is_an_empty_batch_and_loses_nothing() {
        let mut source = Scripted::new(false).txn(100 * MS, 1, 1);
        let wide = limits(100, 100, 10 * MS);
        let t0 = Instant::now();
        let batch = next_batch(&mut source, 50 * MS, &wide).await.unwrap();
        assert_eq!(batch, Batch::default());
        assert_eq!(t0.elapsed(), 50 * MS, "it waited the whole wait");
        let batch = next_batch(&mut source, 100 * MS, &wide).await.unwrap();
        assert_eq!(ids(&batch), [1]);
        assert!(!batch.ended);
    }

    #[tokio::test(start_paused = true)]
    async fn max_txns_ends_a_batch_and_the_rest_comes_next_in_order() {
        let mut source = Scripted::new(false);
        for id in 1..=5 {
            source = source.txn(Duration::ZERO, id, 1);
        }
        let two = limits(2, 100, 10 * MS);
        let mut seen = Vec::new();
        for expected in [2, 2, 1] {
            let batch = next_batch(&mut source, 50 * MS, &two).await.unwrap();
            assert_eq!(batch.transactions.len(), expected);
            seen.extend(ids(&batch));
        }
        assert_eq!(seen, [1, 2, 3, 4, 5]);
    }

    #[tokio::test(start_paused = true)]
    async fn max_changes_ends_a_batch_after_the_transaction_reaching_it() {
        let mut source = Scripted::new(false)
            .txn(Duration::ZERO, 1, 3)
            .txn(Duration::ZERO, 2, 3)
            .txn(Duration::ZERO, 3, 3)
            .txn(Duration::ZERO, 4, 10)
            .txn(Duration::ZERO, 5, 1);
        let five = limits(100, 5, 10 * MS);
        let batch = next_batch(&mut source, 50 * MS, &five).await.unwrap();
        assert_eq!(ids(&batch), [1, 2], "3 changes, then 6 >= 5");
        assert_eq!(batch.changes(), 6);
        let batch = next_batch(&mut source, 50 * MS, &five).await.unwrap();
        assert_eq!(ids(&batch), [3, 4], "a transaction is never split");
        let batch = next_batch(&mut source, 50 * MS, &five).await.unwrap();
        assert_eq!(ids(&batch), [5]);

        let mut source = Scripted::new(false)
            .txn(Duration::ZERO, 1, 1)
            .txn(Duration::ZERO, 2, 1);
        let zero = limits(0, 0, 10 * MS);
        let batch = next_batch(&mut source, 50 * MS, &zero).await.unwrap();
        assert_eq!(ids(&batch), [1], "at least one transaction");
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_takes_what_arrives_within_linger_of_its_first_transaction() {
        let mut source = Scripted::new(false)
            .txn(10 * MS, 1, 1)
            .txn(11 * MS, 2, 1)
            .txn(12 * MS, 3, 1)
            .txn(13 * MS, 4, 1)
            .txn(30 * MS, 5, 1);
        let linger = limits(100, 100, 2 * MS);
        let t0 = Instant::now();
        let batch = next_batch(&mut source, 50 * MS, &linger).await.unwrap();
        assert_eq!(ids(&batch), [1, 2, 3], "what arrived by 10 ms + 2 ms");
        assert_eq!(t0.elapsed(), 12 * MS);
        let batch = next_batch(&mut source, 50 * MS, &linger).await.unwrap();
        assert_eq!(ids(&batch), [4], "nothing more within 2 ms of the 4th");
        assert_eq!(t0.elapsed(), 15 * MS);
        let batch = next_batch(&mut source, 50 * MS, &linger).await.unwrap();
        assert_eq!(ids(&batch), [5]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_ends_at_once_after_the_transaction_it_waits_for() {
        let mut source = Scripted::new(false)
            .txn(10 * MS, 1, 1)
            .txn(10 * MS, 2, 1)
            .txn(11 * MS, 3, 1)
            .txn(12 * MS, 4, 1);
        let linger = limits(100, 100, 20 * MS);
        let t0 = Instant::now();
        let batch = next_batch_until(&mut source, 50 * MS, &linger, |t| t.source_id == 2)
            .await
            .unwrap();
        assert_eq!(
            ids(&batch),
            [1, 2],
            "up to the one waited for, not lingering after it"
        );
        assert_eq!(t0.elapsed(), 10 * MS);
        let batch = next_batch(&mut source, 50 * MS, &linger).await.unwrap();
        assert_eq!(ids(&batch), [3, 4]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_with_no_linger_takes_only_what_is_ready_now() {
        let mut source = Scripted::new(false)
            .txn(Duration::ZERO, 1, 1)
            .txn(Duration::ZERO, 2, 1)
            .txn(MS, 3, 1);
        let now = limits(100, 100, Duration::ZERO);
        let batch = next_batch(&mut source, 50 * MS, &now).await.unwrap();
        assert_eq!(ids(&batch), [1, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_ended_source_is_reported_with_what_came_before() {
        let mut source = Scripted::new(true).txn(Duration::ZERO, 1, 1).txn(MS, 2, 1);
        let wide = limits(100, 100, 10 * MS);
        let batch = next_batch(&mut source, 50 * MS, &wide).await.unwrap();
        assert_eq!(ids(&batch), [1, 2]);
        assert!(batch.ended);
        let batch = next_batch(&mut source, 50 * MS, &wide).await.unwrap();
        assert!(batch.transactions.is_empty());
        assert!(batch.ended);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_returns_what_was_gathered_before_it() {
        let mut source = Scripted::new(false)
            .txn(Duration::ZERO, 1, 1)
            .txn(Duration::ZERO, 2, 1)
            .fail(MS);
        let wide = limits(100, 100, 10 * MS);
        let err = next_batch(&mut source, 50 * MS, &wide).await.unwrap_err();
        assert!(matches!(err.error, CdcError::Protocol(_)), "{err}");
        let gathered: Vec<u64> = err.gathered.iter().map(|t| t.source_id).collect();
        assert_eq!(gathered, [1, 2]);

        let mut source = Scripted::new(false).fail(Duration::ZERO);
        let err = next_batch(&mut source, 50 * MS, &wide).await.unwrap_err();
        assert!(err.gathered.is_empty());
        assert_eq!(
            CdcError::from(err).to_string(),
            "replication stream: scripted failure"
        );
    }
}
