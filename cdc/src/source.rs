//! `ChangeSource`: what every change source (PostgreSQL logical decoding now, MySQL/MariaDB
//! binlog later) offers the engine: whole transactions in commit order, acknowledgements, lag,
//! and a clean stop.

use crate::change::{Position, Transaction};
use crate::error::CdcError;
use std::future::Future;
use std::time::Duration;

/// How far a consumer is behind its source.
#[derive(Clone, Debug, PartialEq)]
pub struct Lag {
    /// The source's current write position.
    pub source_position: Position,
    /// The last position the consumer acknowledged (what a restart resumes after).
    pub acked_position: Position,
    /// Log bytes between the two.
    pub bytes: u64,
    /// Age of the oldest commit received but not yet acknowledged; zero when everything
    /// received is acknowledged.
    pub behind: Duration,
}

/// A resumable stream of committed transactions.
///
/// Contract:
/// - [`next_transaction`](ChangeSource::next_transaction) yields whole transactions in commit
///   order, each at most once per session. It is cancel-safe: dropping its future (e.g. under
///   `tokio::time::timeout`) loses nothing.
/// - [`ack`](ChangeSource::ack) a transaction's `position` once the whole transaction is durably
///   handled. Acknowledging a position acknowledges every transaction before it. The source
///   only ever tells the server what was acknowledged.
/// - A source reopened on the same slot (or binlog checkpoint) continues with the first
///   transaction not acknowledged. After [`close`](ChangeSource::close) nothing acknowledged is
///   delivered again; after a crash, transactions acknowledged in the last moments before it
///   may be (at-least-once).
pub trait ChangeSource: Send {
    /// The next committed transaction; `Ok(None)` once the source was stopped.
    fn next_transaction(
        &mut self,
    ) -> impl Future<Output = Result<Option<Transaction>, CdcError>> + Send;

    /// Acknowledge everything up to and including the transaction at `position`.
    fn ack(&mut self, position: &Position) -> Result<(), CdcError>;

    /// The source's position against the last acknowledged one.
    fn lag(&mut self) -> impl Future<Output = Result<Lag, CdcError>> + Send;

    /// Prepares the source so that reopening it later starts reading near the last
    /// acknowledged position rather than far behind it (PostgreSQL decodes everything from the
    /// slot's restart point again, and that point only moves at a running-transactions record
    /// the stream has read and confirmed). Returns true when it wrote such a record: it takes
    /// effect once the consumer has read past it and acknowledged what follows (a drain).
    /// Sources that resume exactly where they were acknowledged do nothing.
    fn mark_restart_point(&mut self) -> impl Future<Output = Result<bool, CdcError>> + Send {
        async { Ok(false) }
    }

    /// Stop cleanly: make sure the server has every acknowledgement, then disconnect. The slot
    /// (or checkpoint) stays for the next run.
    fn close(self) -> impl Future<Output = Result<(), CdcError>> + Send;

    /// Stop cleanly and remove what the source created on the server (PostgreSQL: the slot and
    /// the publication). Nothing can resume afterwards.
    fn close_and_drop(self) -> impl Future<Output = Result<(), CdcError>> + Send;
}
