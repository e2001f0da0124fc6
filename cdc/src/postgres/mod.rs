//! The PostgreSQL change source: logical decoding with the built-in `pgoutput` plugin over a
//! replication connection, turned into whole transactions with per-transaction acknowledgements.

mod assemble;
pub mod connect;
mod pgpass;
mod setup;
pub mod tls;

pub use connect::{connect, ConnectError, PgTarget};
pub use setup::{capture_preconditions, CaptureName};
pub use tls::{SslMode, TlsSettings, TrustRoots};

use crate::change::{Position, TableName, Timestamp, Transaction};
use crate::error::CdcError;
use crate::lsn::Lsn;
use crate::pgoutput;
use crate::source::{ChangeSource, Lag};
use assemble::Assembler;
use pgwire_replication::{ReplicationClient, ReplicationConfig, ReplicationEvent};
use std::collections::{HashSet, VecDeque};
use std::time::Duration;
use tokio::task::JoinHandle;
use tracing::{debug, info, info_span, Instrument};

/// How to open a [`PgChangeStream`].
#[derive(Clone, Debug)]
pub struct PgSourceConfig {
    /// `postgres://user[:password]@host[:port]/database` (libpq URL or key=value form).
    pub database_url: String,
    /// Names the slot and the publication.
    pub name: CaptureName,
    /// The tables to capture; each must exist and have a primary key or replica identity.
    pub tables: Vec<TableName>,
    /// Transactions written under any of these replication origins are skipped (and
    /// acknowledged on the consumer's behalf). The engine's applier writes under
    /// `splice_<migration>` so its own writes do not come back.
    pub skip_origins: Vec<String>,
    /// When true the slot must exist already ([`CdcError::SlotMissing`] otherwise): a consumer
    /// whose copy depends on every change since the slot was created never has it re-created
    /// "from now".
    pub resume_only: bool,
    /// How soon an acknowledgement reaches the server (the replication client coalesces
    /// acknowledgements within this interval).
    pub status_interval: Duration,
}

impl PgSourceConfig {
    pub fn new(database_url: impl Into<String>, name: CaptureName, tables: Vec<TableName>) -> Self {
        PgSourceConfig {
            database_url: database_url.into(),
            name,
            tables,
            skip_origins: Vec::new(),
            resume_only: false,
            status_interval: Duration::from_millis(200),
        }
    }

    /// Refuse to create the slot: it must exist (see [`PgSourceConfig::resume_only`]).
    pub fn resume_only(mut self) -> Self {
        self.resume_only = true;
        self
    }

    /// Skip transactions written under replication origin `origin`.
    pub fn skip_origin(mut self, origin: impl Into<String>) -> Self {
        self.skip_origins.push(origin.into());
        self
    }
}

/// A received transaction not yet acknowledged.
#[derive(Debug)]
struct Unacked {
    end: Lsn,
    committed_at: Timestamp,
    /// False for transactions the stream skipped itself (origin filter, nothing captured):
    /// those are acknowledged as soon as everything before them is.
    delivered: bool,
}

/// A running PostgreSQL change stream. Open it with [`PgChangeStream::open`], read with
/// [`ChangeSource::next_transaction`], acknowledge with [`ChangeSource::ack`], stop with
/// [`ChangeSource::close`].
pub struct PgChangeStream {
    replication: ReplicationClient,
    sql: tokio_postgres::Client,
    sql_task: JoinHandle<()>,
    name: CaptureName,
    assembler: Assembler,
    skip_origins: HashSet<String>,
    unacked: VecDeque<Unacked>,
    /// The last position handed to the replication client to report.
    acked: Lsn,
    /// The end of the newest delivered transaction.
    delivered: Lsn,
    /// The server's WAL end from its last keepalive.
    server_wal_end: Lsn,
    /// The running-transactions record [`ChangeSource::mark_restart_point`] last wrote.
    restart_record: Option<Lsn>,
    /// This open created the slot.
    created_slot: bool,
}

/// A reopened stream decodes the WAL from the slot's restart point again (about 4 ms per MB
/// of a bulk load on 2 cores); past this much, [`ChangeSource::mark_restart_point`] moves it.
/// 4 MB: after 1% of a 1,000,000-row table changed, sync's re-sync and the changes themselves
/// left about 6 MB between the restart point and the WAL's end, and the next command (the
/// verify right before cutover) spent 0.03–0.05 s decoding it again on open, as long as the
/// rest of an incremental pass. Writing the record costs a few milliseconds at a close.
const RESTART_LAG_BYTES: u64 = 4 << 20;

impl std::fmt::Debug for PgChangeStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgChangeStream")
            .field("name", &self.name)
            .field("acked", &self.acked)
            .field("delivered", &self.delivered)
            .finish_non_exhaustive()
    }
}

/// Connect an ordinary SQL session.
async fn connect_sql(
    database_url: &str,
) -> Result<(tokio_postgres::Client, JoinHandle<()>), CdcError> {
    Ok(PgTarget::from_url(database_url)?.connect().await?)
}

/// The replication client's settings, from the same URL (and the same TLS settings and
/// password resolution as the SQL sessions).
async fn replication_config(
    database_url: &str,
    name: &CaptureName,
    start: Lsn,
    status_interval: Duration,
) -> Result<ReplicationConfig, CdcError> {
    let target = PgTarget::from_url(database_url)?;
    let config = target.config();
    let user = config
        .get_user()
        .map(str::to_string)
        .unwrap_or_else(|| "postgres".into());
    let password = config
        .get_password()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_default();
    let database = config
        .get_dbname()
        .map(str::to_string)
        .unwrap_or_else(|| user.clone());
    // `hostaddr` is where to connect; the host name is still what TLS checks.
    Ok(ReplicationConfig::new(
        target.address(),
        user,
        password,
        database,
        name.slot(),
        name.publication(),
    )
    .with_port(target.port())
    .with_tls(target.replication_tls().await?)
    .with_start_lsn(start.into())
    // Never report less than what the server already has.
    .with_ack_lsn(start.into())
    .with_status_interval(status_interval)
    .with_wakeup_interval(Duration::from_secs(5))
    .with_application_name(config.get_application_name().map_or_else(
        || format!("splice {}", name.slot()),
        |a| format!("{a} ({})", name.slot()),
    )))
}

impl PgChangeStream {
    /// Check the preconditions, create (or reuse) the publication and slot, and start
    /// streaming from the first transaction the slot has not confirmed. If anything fails after
    /// the slot or publication was created, both are dropped again.
    pub async fn open(config: PgSourceConfig) -> Result<PgChangeStream, CdcError> {
        let span = info_span!("cdc.open", slot = %config.name);
        async move {
            let (sql, sql_task) = connect_sql(&config.database_url).await?;
            match Self::open_on(&config, &sql).await {
                Ok(parts) => Ok(PgChangeStream {
                    replication: parts.replication,
                    sql,
                    sql_task,
                    name: config.name.clone(),
                    assembler: parts.assembler,
                    skip_origins: config.skip_origins.iter().cloned().collect(),
                    unacked: VecDeque::new(),
                    acked: parts.start,
                    delivered: parts.start,
                    server_wal_end: parts.start,
                    restart_record: None,
                    created_slot: parts.created_slot,
                }),
                Err((error, created)) => {
                    // Leave nothing behind from a failed start. The same session undoes it: a
                    // new one may be refused for the very reason the start failed.
                    created.undo(&sql, &config.name).await;
                    sql_task.abort();
                    Err(error)
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn open_on(
        config: &PgSourceConfig,
        sql: &tokio_postgres::Client,
    ) -> Result<Started, (CdcError, Created)> {
        let name = &config.name;
        let mut created = Created::default();
        // The checks only read: sent at once (one session pipelines them), the server's
        // problems reported before the tables'.
        let (existing, captured) = futures_util::join!(
            setup::check_server(sql, name),
            futures_util::future::join_all(
                config.tables.iter().map(|t| setup::check_table(sql, t))
            )
        );
        let existing = existing.map_err(|e| (e, created.clone()))?;
        let mut assembler = Assembler::default();
        for captured in captured {
            let captured = captured.map_err(|e| (e, created.clone()))?;
            assembler.set_key(captured.table, captured.key);
        }
        // The publication must exist before the slot: pgoutput looks it up as of each
        // decoded transaction, and one created later is "missing" for earlier WAL.
        created.publication = setup::ensure_publication(sql, name, &config.tables)
            .await
            .map_err(|e| (e, created.clone()))?;
        let start = match existing {
            Some(slot) => slot.confirmed_flush,
            None if config.resume_only => {
                return Err((
                    CdcError::SlotMissing {
                        slot: name.slot().to_string(),
                    },
                    created,
                ))
            }
            None => {
                let lsn = setup::create_slot(sql, name)
                    .await
                    .map_err(|e| (e, created.clone()))?;
                created.slot = true;
                info!(slot = %name, %lsn, "created replication slot");
                lsn
            }
        };
        let fail = |e: CdcError| (e, created.clone());
        let repl_config =
            replication_config(&config.database_url, name, start, config.status_interval)
                .await
                .map_err(fail)?;
        let mut replication = ReplicationClient::connect(repl_config)
            .await
            .map_err(|e| fail(CdcError::replication_connect(&e)))?;
        replication
            .wait_started()
            .await
            .map_err(|e| fail(CdcError::replication(&e)))?;
        info!(slot = %name, %start, "streaming");
        Ok(Started {
            replication,
            assembler,
            start,
            created_slot: created.slot,
        })
    }

    /// The slot and publication name.
    pub fn name(&self) -> &CaptureName {
        &self.name
    }

    /// Whether this open created the slot (else it resumed one that existed).
    pub fn created_slot(&self) -> bool {
        self.created_slot
    }

    /// The last acknowledged position.
    pub fn acked_position(&self) -> Position {
        Position::Lsn(self.acked)
    }

    /// Add a table to the running stream (`ALTER PUBLICATION … ADD TABLE`): its changes
    /// committed after this returns are delivered. Checks the table like `open` does.
    pub async fn add_table(&mut self, table: &TableName) -> Result<(), CdcError> {
        let captured = setup::check_table(&self.sql, table).await?;
        setup::add_to_publication(&self.sql, &self.name, table).await?;
        self.assembler.set_key(captured.table, captured.key);
        info!(slot = %self.name, %table, "added table to the stream");
        Ok(())
    }

    /// Acknowledge leading transactions the stream skipped itself.
    fn advance_over_skipped(&mut self) {
        while let Some(front) = self.unacked.front() {
            if front.delivered {
                break;
            }
            self.acked = self.acked.max(front.end);
            self.unacked.pop_front();
        }
        self.replication.update_applied_lsn(self.acked.into());
    }

    /// Wait until the server's slot shows every acknowledgement (its confirmed_flush_lsn).
    async fn wait_acks_confirmed(&mut self, timeout: Duration) -> Result<(), CdcError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let confirmed = setup::confirmed_flush(&self.sql, &self.name).await?;
            if confirmed.is_some_and(|c| c >= self.acked) {
                return Ok(());
            }
            if !self.replication.is_running() || tokio::time::Instant::now() > deadline {
                return Err(CdcError::Replication {
                    detail: format!(
                        "the server did not confirm position {} (the session ended, or {timeout:?} \
                         passed; the slot has {}); the next run may repeat transactions after it",
                        self.acked,
                        confirmed.map(|c| c.to_string()).unwrap_or("nothing".into())
                    ),
                });
            }
            // The status message goes out on the client's interval; a short poll costs a
            // catalog read, a long one adds to every command that closes a stream.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    async fn stop(&mut self) -> Result<(), CdcError> {
        self.advance_over_skipped();
        let confirmed = self.wait_acks_confirmed(Duration::from_secs(30)).await;
        let shutdown = self.replication.shutdown().await;
        confirmed?;
        shutdown.map_err(|e| CdcError::replication(&e))
    }
}

/// A started replication session, before it becomes a stream.
struct Started {
    replication: ReplicationClient,
    assembler: Assembler,
    start: Lsn,
    created_slot: bool,
}

/// What a start created, to undo when the start fails.
#[derive(Clone, Debug, Default)]
struct Created {
    publication: bool,
    slot: bool,
}

impl Created {
    async fn undo(&self, sql: &tokio_postgres::Client, name: &CaptureName) {
        if self.slot {
            // The failed replication session may still hold the slot for a moment.
            if let Err(e) = setup::drop_slot(sql, name, Duration::from_secs(5)).await {
                tracing::warn!("could not drop slot {name} after a failed start: {e}");
            }
        }
        if self.publication {
            if let Err(e) = setup::drop_publication(sql, name).await {
                tracing::warn!("could not drop publication {name} after a failed start: {e}");
            }
        }
    }
}

/// Drop a capture's slot and publication (after a migration finishes or is rolled back).
/// Waits briefly for a stream that just stopped to release the slot; missing ones are fine.
pub async fn drop_capture(database_url: &str, name: &CaptureName) -> Result<(), CdcError> {
    let (sql, task) = connect_sql(database_url).await?;
    let result = setup::drop_slot_and_publication(&sql, name, Duration::from_secs(10)).await;
    task.abort();
    result
}

impl ChangeSource for PgChangeStream {
    async fn next_transaction(&mut self) -> Result<Option<Transaction>, CdcError> {
        loop {
            // Cancel-safe: recv() is, and all state lives in `self`.
            let event = self
                .replication
                .recv()
                .await
                .map_err(|e| CdcError::replication(&e))?;
            let Some(event) = event else {
                return Ok(None);
            };
            match event {
                ReplicationEvent::Begin {
                    final_lsn,
                    xid,
                    commit_time_micros,
                } => self.assembler.begin(pgoutput::Begin {
                    final_lsn: final_lsn.into(),
                    commit_time: commit_time_micros,
                    xid,
                })?,
                ReplicationEvent::XLogData { data, .. } => {
                    self.assembler.message(pgoutput::decode(&data)?)?;
                }
                ReplicationEvent::Commit {
                    lsn,
                    end_lsn,
                    commit_time_micros,
                } => {
                    let txn = self.assembler.commit(pgoutput::Commit {
                        flags: 0,
                        commit_lsn: lsn.into(),
                        end_lsn: end_lsn.into(),
                        commit_time: commit_time_micros,
                    })?;
                    let end = Lsn::from(end_lsn);
                    let skip = txn.changes.is_empty()
                        || txn
                            .origin
                            .as_ref()
                            .is_some_and(|o| self.skip_origins.contains(o));
                    self.unacked.push_back(Unacked {
                        end,
                        committed_at: txn.committed_at,
                        delivered: !skip,
                    });
                    if skip {
                        debug!(xid = txn.source_id, origin = ?txn.origin, "skipped transaction");
                        self.advance_over_skipped();
                        continue;
                    }
                    self.delivered = end;
                    return Ok(Some(txn));
                }
                ReplicationEvent::KeepAlive { wal_end, .. } => {
                    let wal_end = Lsn::from(wal_end);
                    self.server_wal_end = self.server_wal_end.max(wal_end);
                    // Everything the server decoded up to its keepalive has reached us (the
                    // connection is ordered). With nothing open or unacknowledged, the WAL
                    // up to there holds nothing for us: confirm it so the server can recycle
                    // it and the lag reads zero. PostgreSQL's own apply worker does the same.
                    if self.assembler.is_idle() && self.unacked.is_empty() && wal_end > self.acked {
                        self.acked = wal_end;
                        self.replication.update_applied_lsn(wal_end.into());
                    }
                }
                ReplicationEvent::Message { .. } | ReplicationEvent::StoppedAt { .. } => {}
            }
        }
    }

    fn ack(&mut self, position: &Position) -> Result<(), CdcError> {
        let Position::Lsn(lsn) = position else {
            return Err(CdcError::BadAck {
                position: position.to_string(),
                why: "a PostgreSQL source acknowledges LSNs, not binlog positions".into(),
            });
        };
        let lsn = *lsn;
        if lsn > self.delivered {
            return Err(CdcError::BadAck {
                position: position.to_string(),
                why: format!(
                    "it is past the last delivered transaction ({})",
                    self.delivered
                ),
            });
        }
        while self.unacked.front().is_some_and(|u| u.end <= lsn) {
            self.unacked.pop_front();
        }
        self.acked = self.acked.max(lsn);
        self.advance_over_skipped();
        Ok(())
    }

    async fn lag(&mut self) -> Result<Lag, CdcError> {
        let row = self
            .sql
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await
            .map_err(|e| CdcError::db("reading the current WAL position", &e))?;
        let current: String = row.get(0);
        let current: Lsn = current
            .parse()
            .map_err(|e| CdcError::Protocol(format!("pg_current_wal_lsn: {e}")))?;
        let current = current.max(self.server_wal_end);
        let behind = self
            .unacked
            .iter()
            .find(|u| u.delivered)
            .map(|u| u.committed_at.until(Timestamp::now()))
            .unwrap_or_default();
        Ok(Lag {
            source_position: Position::Lsn(current),
            acked_position: Position::Lsn(self.acked),
            bytes: current.bytes_since(self.acked),
            behind,
        })
    }

    async fn mark_restart_point(&mut self) -> Result<bool, CdcError> {
        let Some((restart, confirmed, end)) =
            setup::restart_confirmed_and_end(&self.sql, &self.name).await?
        else {
            return Ok(false);
        };
        // A record already read past moves the point there once the server has the
        // acknowledgement (close waits for it); one not read yet will move it later.
        let restart = match self.restart_record {
            Some(record) if record <= self.acked => restart.max(record),
            Some(_) => return Ok(false),
            None => restart,
        };
        // Measured to the WAL's end, not to the last acknowledgement: a reopen decodes what
        // came after it too (the applier's own writes, which follow the changes it applied).
        if self.acked.max(confirmed).max(end).bytes_since(restart) < RESTART_LAG_BYTES {
            return Ok(false);
        }
        // Best effort: without it a reopen is slower, never wrong.
        match setup::log_restart_record(&self.sql, &self.name).await {
            Ok(lsn) => {
                debug!(slot = %self.name, %restart, record = %lsn, "wrote a restart point");
                self.restart_record = Some(lsn);
                Ok(true)
            }
            Err(e) => {
                debug!(slot = %self.name, "could not write a restart point: {e}");
                Ok(false)
            }
        }
    }

    async fn close(mut self) -> Result<(), CdcError> {
        let result = self.stop().await;
        self.sql_task.abort();
        result
    }

    async fn close_and_drop(mut self) -> Result<(), CdcError> {
        let stopped = self.stop().await;
        let dropped =
            setup::drop_slot_and_publication(&self.sql, &self.name, Duration::from_secs(10)).await;
        self.sql_task.abort();
        stopped.and(dropped)
    }
}
