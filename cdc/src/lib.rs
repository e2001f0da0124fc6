//! Change capture for splice: every committed change to the captured tables, as "key K of table
//! T changed", delivered as whole transactions in commit order with resumable positions.
//!
//! What it is for: feeding the engine's applier (which re-reads each changed key from the
//! source of truth) and `splice cdc tail`. What it is not for: row images or replaying values —
//! a change carries the key, not the row — and it never imports the engine.
//!
//! One trait, [`ChangeSource`], one item type, [`Transaction`] of [`Change`]s. The PostgreSQL
//! source is [`PgChangeStream`]; the MySQL/MariaDB binlog source is [`MySqlChangeStream`].
//! [`next_batch`] takes any source's transactions a batch at a time.
//!
//! ```no_run
//! use cdc::{CaptureName, ChangeSource, PgChangeStream, PgSourceConfig, TableName};
//! # async fn run() -> Result<(), cdc::CdcError> {
//! let config = PgSourceConfig::new(
//!     "postgres://app@db/app",
//!     CaptureName::for_migration("orders_v2")?,
//!     vec![TableName::new("public", "orders")],
//! )
//! .skip_origin("splice_orders_v2");
//! let mut stream = PgChangeStream::open(config).await?;
//! while let Some(txn) = stream.next_transaction().await? {
//!     for change in &txn.changes {
//!         println!("{:?} {} {:?}", change.op, change.table, change.key);
//!     }
//!     stream.ack(&txn.position)?; // only once the transaction is durably handled
//! }
//! stream.close().await?;
//! # Ok(()) }
//! ```
//!
//! ## PostgreSQL: how it works
//! Logical decoding with the built-in `pgoutput` plugin (protocol version 1). The slot and the
//! publication share one name ([`CaptureName`]). The replication connection is
//! `pgwire-replication` (pinned `=0.5.0`): it does startup, SCRAM, CopyBoth, keepalive replies
//! and standby status updates, and hands over each XLogData payload untouched, except Begin and
//! Commit, which it pre-parses (we keep every field we need: final LSN, xid, commit LSN, end
//! LSN, commit time). Everything else — Relation, Type, Origin, Insert, Update, Delete,
//! Truncate — is decoded by [`pgoutput`], our own pure decoder.
//!
//! Acknowledgements: the position of a transaction is the end of its commit record; the client
//! reports the last acknowledged one as the slot's confirmed flush position, so a restart
//! resumes with the first unacknowledged transaction. [`ChangeSource::close`] waits until the
//! server's slot shows the last acknowledgement before disconnecting, so nothing acknowledged
//! comes back after a clean stop.

//! ## MySQL/MariaDB: how it works
//! [`MySqlChangeStream`] reads the row-based binlog as a replica does (`mysql_async`'s binlog
//! stream; `mysql_common` parses row events; MariaDB's GTID and GTID-list events, which its
//! enum lacks, are decoded from their raw bytes in `mysql::decode`). A transaction's position
//! is a [`BinlogPosition`]: the file and offset past its commit event, and the GTID position
//! after it. The slot is a row of `splice.cdc_slots` on the same server, updated with what the
//! consumer acknowledged; a resumed slot whose file the server purged is refused, never resumed
//! from a later position.
//!
//! **The marker.** MySQL has no replication origins, so a consumer writing back to the server
//! (the engine's applier) marks each of its transactions with a row write to
//! `splice.cdc_marker` ([`marker_sql`]) inside the transaction; the stream gives the transaction
//! that origin, and skips it when the origin is in `skip_origins`. A row, rather than a session
//! annotation, because the row event sits in the binlog inside the very transaction it marks,
//! whatever the server's settings: statement annotations (`binlog_annotate_row_events`,
//! `binlog_rows_query_log_events`) can be turned off, and session tricks (`sql_log_bin=0`) would
//! hide the writes from real replicas too. The cost: one row update per applier transaction.

pub mod batch;
pub mod change;
pub mod error;
pub mod lsn;
pub mod mysql;
pub mod pgoutput;
pub mod postgres;
pub mod source;

pub use batch::{next_batch, next_batch_until, Batch, BatchError, BatchLimits};
pub use change::{
    quote_ident, BinlogPosition, Change, Key, Op, Position, TableName, Timestamp, Transaction,
    Value,
};
pub use error::{describe_mysql_error, describe_pg_error, CdcError};
pub use lsn::Lsn;
pub use mysql::{
    binlog_preconditions, drop_binlog_slot, marker_sql, MySqlChangeStream, MySqlSourceConfig,
};
pub use postgres::{
    capture_preconditions, connect, drop_capture, CaptureName, ConnectError, PgChangeStream,
    PgSourceConfig, PgTarget, SslMode,
};
pub use source::{ChangeSource, Lag};
