//! The MySQL/MariaDB change source: the row-based binlog read as a replica reads it
//! (`COM_REGISTER_SLAVE` + `COM_BINLOG_DUMP` through `mysql_async`), turned into whole
//! transactions with per-transaction acknowledgements, and a named position (a "slot") that
//! splice keeps in `splice.cdc_slots` on the same server.

mod decode;
pub mod setup;

pub use setup::{marker_sql, quote_mysql, Flavor, MySqlSslMode, MySqlTarget, MIN_RETENTION};

use crate::change::{BinlogPosition, Change, Key, Op, Position, TableName, Timestamp, Transaction};
use crate::error::CdcError;
use crate::source::{ChangeSource, Lag};
use decode::{mariadb_event, GtidState};
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest, Conn};
use mysql_common::binlog::consts::EventType;
use mysql_common::binlog::events::{
    Event, EventData, QueryEvent, RotateEvent, RowsEventData, XidEvent,
};
use mysql_common::binlog::row::BinlogRow;
use mysql_common::binlog::value::BinlogValue;
use setup::{CapturedTable, SPLICE_DATABASE};
use std::collections::{HashMap, HashSet, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tracing::{debug, info, info_span, Instrument};

/// How to open a [`MySqlChangeStream`].
#[derive(Clone, Debug)]
pub struct MySqlSourceConfig {
    /// `mysql://user[:password]@host[:port]/[?ssl-mode=…]` (or `mariadb://…`).
    pub database_url: String,
    /// The slot: the row of `splice.cdc_slots` holding the last acknowledged position.
    pub slot: String,
    /// The tables to capture, as `database.table`; each must exist and have a primary key.
    pub tables: Vec<TableName>,
    /// Transactions marked with any of these origins (see [`marker_sql`]) are skipped, and
    /// acknowledged on the consumer's behalf.
    pub skip_origins: Vec<String>,
    /// When true the slot must exist already ([`CdcError::SlotMissing`] otherwise).
    pub resume_only: bool,
    /// How often an idle server sends a heartbeat.
    pub heartbeat: Duration,
    /// Column counts a captured table's rows may also have besides the table's own when the
    /// stream opens: another table that takes (or took) its name within the stream, as a
    /// swap by `RENAME TABLE` does. Rows of any other count stop the stream
    /// ([`CdcError::TableChanged`]). The key columns must sit at the same positions in both.
    pub other_shapes: Vec<(TableName, usize)>,
}

impl MySqlSourceConfig {
    pub fn new(
        database_url: impl Into<String>,
        slot: impl Into<String>,
        tables: Vec<TableName>,
    ) -> Self {
        MySqlSourceConfig {
            database_url: database_url.into(),
            slot: slot.into(),
            tables,
            skip_origins: Vec::new(),
            resume_only: false,
            heartbeat: Duration::from_secs(1),
            other_shapes: Vec::new(),
        }
    }

    /// Accept rows of `table` with `columns` columns too (see
    /// [`MySqlSourceConfig::other_shapes`]).
    pub fn other_shape(mut self, table: TableName, columns: usize) -> Self {
        self.other_shapes.push((table, columns));
        self
    }

    /// Refuse to create the slot: it must exist.
    pub fn resume_only(mut self) -> Self {
        self.resume_only = true;
        self
    }

    /// Skip transactions marked with `origin`.
    pub fn skip_origin(mut self, origin: impl Into<String>) -> Self {
        self.skip_origins.push(origin.into());
        self
    }
}

/// A received transaction not yet acknowledged.
#[derive(Debug)]
struct Unacked {
    end: BinlogPosition,
    committed_at: Timestamp,
    /// False for transactions the stream skipped itself (marker, nothing captured).
    delivered: bool,
}

/// A transaction being read.
#[derive(Debug)]
struct Building {
    /// No COMMIT/XID ends it: the next statement does (MariaDB DDL).
    standalone: bool,
    committed_at: Timestamp,
    source_id: u64,
    origin: Option<String>,
    changes: Vec<Change>,
}

/// What the background writer of slot positions has done.
#[derive(Clone, Debug, Default)]
struct Written {
    position: Option<BinlogPosition>,
    error: Option<String>,
}

/// Keeps the slot's row up to date with the acknowledged position, on a session of its own,
/// coalescing acknowledgements that arrive while a write is under way or within
/// [`PositionWriter::EVERY`] of the last one. Each write is a durable commit on the source: a
/// consumer acknowledging every transaction of a busy application would otherwise add one
/// commit for each of the application's group commits. A crash repeats at most that much
/// (delivery is at least once); [`PositionWriter::flush`] writes at once.
struct PositionWriter {
    tx: watch::Sender<Option<BinlogPosition>>,
    written: watch::Receiver<Written>,
    /// Wakes the writer from its wait between writes: a flush waits for the position.
    urgent: Arc<Notify>,
    task: JoinHandle<()>,
}

impl PositionWriter {
    /// The least time between two writes of the slot's row, unless a flush asks.
    const EVERY: Duration = Duration::from_millis(200);

    fn spawn(mut conn: Conn, slot: String) -> PositionWriter {
        let (tx, mut rx) = watch::channel::<Option<BinlogPosition>>(None);
        let (written_tx, written) = watch::channel(Written::default());
        let urgent = Arc::new(Notify::new());
        let woken = urgent.clone();
        let task = tokio::spawn(async move {
            let mut retry = false;
            let mut last_write: Option<tokio::time::Instant> = None;
            loop {
                if !retry && rx.changed().await.is_err() {
                    break;
                }
                if let Some(due) = last_write.map(|at| at + Self::EVERY) {
                    tokio::select! {
                        _ = tokio::time::sleep_until(due) => {}
                        _ = woken.notified() => {}
                    }
                }
                let Some(position) = rx.borrow_and_update().clone() else {
                    retry = false;
                    continue;
                };
                last_write = Some(tokio::time::Instant::now());
                match setup::store_slot(&mut conn, &slot, &position).await {
                    Ok(()) => {
                        retry = false;
                        written_tx.send_modify(|w| {
                            w.position = Some(position);
                            w.error = None;
                        });
                    }
                    Err(e) => {
                        retry = true;
                        written_tx.send_modify(|w| w.error = Some(e.to_string()));
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
            let _ = conn.disconnect().await;
        });
        PositionWriter {
            tx,
            written,
            urgent,
            task,
        }
    }

    /// Store `position` and wait until it is stored.
    async fn flush(&mut self, position: &BinlogPosition, timeout: Duration) -> Result<(), String> {
        self.tx.send_replace(Some(position.clone()));
        self.urgent.notify_one();
        let done = self
            .written
            .wait_for(|w| w.position.as_ref().is_some_and(|p| p >= position) || w.error.is_some());
        match tokio::time::timeout(timeout, done).await {
            Ok(Ok(w)) if w.position.as_ref().is_some_and(|p| p >= position) => Ok(()),
            Ok(Ok(w)) => Err(w.error.clone().unwrap_or_default()),
            Ok(Err(_)) => Err("the position writer stopped".into()),
            Err(_) => Err(format!("{timeout:?} passed")),
        }
    }
}

/// A running MySQL/MariaDB binlog change stream. Open it with [`MySqlChangeStream::open`], read
/// with [`ChangeSource::next_transaction`], acknowledge with [`ChangeSource::ack`], stop with
/// [`ChangeSource::close`].
pub struct MySqlChangeStream {
    binlog: BinlogStream,
    /// Holds the slot's lock; answers `lag`.
    sql: Conn,
    writer: PositionWriter,
    slot: String,
    flavor: Flavor,
    tables: HashMap<(String, String), CapturedTable>,
    skip_origins: HashSet<String>,
    /// The binlog file being read.
    file: String,
    gtid: GtidState,
    /// Where this session started reading: events ending at or before it were read before.
    start: BinlogPosition,
    building: Option<Building>,
    unacked: VecDeque<Unacked>,
    acked: BinlogPosition,
    delivered: BinlogPosition,
    created_slot: bool,
    /// A format description event arrived (events after it have their checksums removed).
    seen_format: bool,
    /// The server's id of the binlog session, to end it on close.
    binlog_connection: u32,
}

impl std::fmt::Debug for MySqlChangeStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MySqlChangeStream")
            .field("slot", &self.slot)
            .field("acked", &self.acked)
            .field("delivered", &self.delivered)
            .finish_non_exhaustive()
    }
}

/// What a start created, to undo when the start fails.
#[derive(Clone, Copy, Debug, Default)]
struct Created {
    schema: bool,
    slot: bool,
}

impl MySqlChangeStream {
    /// Check the preconditions, create (or resume) the slot, and start reading the binlog from
    /// the slot's position. A resumed slot whose position the server purged is refused. If
    /// anything fails after the slot was created, it is removed again.
    pub async fn open(config: MySqlSourceConfig) -> Result<MySqlChangeStream, CdcError> {
        let span = info_span!("cdc.open", slot = %config.slot);
        async move {
            crate::postgres::CaptureName::exact(&config.slot)?;
            let target = MySqlTarget::from_url(&config.database_url)?;
            let mut sql = target.connect().await?;
            let mut created = Created::default();
            match Self::open_on(&config, &target, &mut sql, &mut created).await {
                Ok(parts) => Ok(MySqlChangeStream {
                    binlog: parts.binlog,
                    sql,
                    writer: parts.writer,
                    slot: config.slot.clone(),
                    flavor: parts.flavor,
                    tables: parts.tables,
                    skip_origins: config.skip_origins.iter().cloned().collect(),
                    file: parts.start.file.clone(),
                    gtid: parts.gtid,
                    start: parts.start.clone(),
                    building: None,
                    unacked: VecDeque::new(),
                    acked: parts.start.clone(),
                    delivered: parts.start,
                    created_slot: created.slot,
                    seen_format: false,
                    binlog_connection: parts.binlog_connection,
                }),
                Err(error) => {
                    // Leave nothing behind from a failed start, undone on the same session.
                    if created.slot {
                        if let Err(e) = setup::delete_slot(&mut sql, &config.slot).await {
                            tracing::warn!(
                                "could not remove slot {} after a failed start: {e}",
                                config.slot
                            );
                        }
                    }
                    if created.schema {
                        setup::drop_schema_if_unused(&mut sql).await;
                    }
                    let _ = sql.disconnect().await;
                    Err(error)
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn open_on(
        config: &MySqlSourceConfig,
        target: &MySqlTarget,
        sql: &mut Conn,
        created: &mut Created,
    ) -> Result<Started, CdcError> {
        let facts = setup::check_server(sql).await?;
        let mut tables = HashMap::new();
        for table in &config.tables {
            let mut captured = setup::check_table(sql, table).await?;
            captured.also_columns = config
                .other_shapes
                .iter()
                .filter(|(t, _)| t == table)
                .map(|(_, n)| *n)
                .collect();
            tables.insert((table.schema.clone(), table.name.clone()), captured);
        }
        setup::lock_slot(sql, &config.slot).await?;
        created.schema = !setup::schema_exists(sql).await?;
        setup::ensure_schema(sql, &facts.user).await?;
        let start = match setup::load_slot(sql, &config.slot).await? {
            Some(stored) => {
                setup::check_not_purged(sql, &config.slot, &stored).await?;
                stored
            }
            None if config.resume_only => {
                return Err(CdcError::SlotMissing {
                    slot: config.slot.clone(),
                })
            }
            None => {
                let (file, offset) = setup::master_status(sql).await?;
                let gtid = setup::gtid_at(sql, facts.flavor, &file, offset).await?;
                let start = BinlogPosition::new(file, offset, gtid);
                setup::create_slot(sql, &config.slot, &start).await?;
                created.slot = true;
                info!(slot = %config.slot, position = %start, "created slot");
                start
            }
        };
        let gtid = match facts.flavor {
            Flavor::MariaDb => GtidState::parse(&start.gtid).map_err(CdcError::Protocol)?,
            Flavor::MySql => GtidState::default(),
        };
        let mut binlog_conn = target.connect().await?;
        if facts.flavor == Flavor::MariaDb {
            // Without it the server rewrites GTID events as BEGIN queries.
            binlog_conn
                .query_drop("SET @mariadb_slave_capability = 4")
                .await
                .map_err(|e| CdcError::mysql("announcing GTID support", &e))?;
        }
        let heartbeat_ns = config.heartbeat.as_nanos().max(1_000_000);
        binlog_conn
            .query_drop(format!("SET @master_heartbeat_period = {heartbeat_ns}"))
            .await
            .map_err(|e| CdcError::mysql("asking for heartbeats", &e))?;
        let binlog_connection = binlog_conn.id();
        let request = BinlogStreamRequest::new(setup::replica_server_id(&config.slot))
            .with_filename(start.file.as_bytes())
            .with_pos(start.offset);
        let binlog = binlog_conn
            .get_binlog_stream(request)
            .await
            .map_err(|e| CdcError::mysql("starting to read the binlog", &e))?;
        let mut writer_conn = target.connect().await?;
        // Where allowed, the slot's own writes stay out of the binlog.
        let _ = writer_conn.query_drop("SET SESSION sql_log_bin = 0").await;
        let writer = PositionWriter::spawn(writer_conn, config.slot.clone());
        info!(slot = %config.slot, position = %start, "streaming");
        Ok(Started {
            binlog,
            binlog_connection,
            writer,
            flavor: facts.flavor,
            tables,
            start,
            gtid,
        })
    }

    /// The slot name.
    pub fn slot(&self) -> &str {
        &self.slot
    }

    /// Whether this open created the slot (else it resumed one).
    pub fn created_slot(&self) -> bool {
        self.created_slot
    }

    /// The last acknowledged position.
    pub fn acked_position(&self) -> Position {
        Position::Binlog(self.acked.clone())
    }

    /// MariaDB or MySQL.
    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    fn here(&self, offset: u64) -> BinlogPosition {
        BinlogPosition::new(self.file.clone(), offset, self.gtid.to_string())
    }

    /// Acknowledge leading transactions the stream skipped itself.
    fn advance_over_skipped(&mut self) {
        while let Some(front) = self.unacked.front() {
            if front.delivered {
                break;
            }
            if front.end > self.acked {
                self.acked = front.end.clone();
            }
            self.unacked.pop_front();
        }
    }

    /// One binlog event; a transaction when it ends one.
    fn handle(&mut self, event: &Event) -> Result<Option<Transaction>, CdcError> {
        let header = event.header();
        let kind = header.event_type_raw();
        let log_pos = u64::from(header.log_pos());
        // Fake events (log_pos 0) and the file's head re-sent when reading starts mid-file.
        let replayed =
            log_pos == 0 || (self.file == self.start.file && log_pos <= self.start.offset);
        let bad =
            |what: String| CdcError::Protocol(format!("binlog {}:{log_pos}: {what}", self.file));
        match kind {
            k if k == EventType::ROTATE_EVENT as u8 => {
                let rotate: RotateEvent<'_> = event
                    .read_event()
                    .map_err(|e| bad(format!("rotate event: {e}")))?;
                let mut name = rotate.name_raw().to_vec();
                if !self.seen_format && ends_with_checksum(event) {
                    // The dump's first (fake) rotate comes before the format description, so
                    // its checksum was taken for part of the name.
                    name.truncate(name.len().saturating_sub(4));
                }
                self.file = String::from_utf8_lossy(&name).into_owned();
                return Ok(None);
            }
            k if k == EventType::FORMAT_DESCRIPTION_EVENT as u8 => self.seen_format = true,
            mariadb_event::GTID => {
                let gtid =
                    decode::parse_gtid_event(event.data(), header.server_id()).map_err(bad)?;
                if self.building.is_some() {
                    return Err(bad("a GTID event inside a transaction".into()));
                }
                self.gtid.add(gtid.gtid);
                self.building = Some(Building {
                    standalone: gtid.standalone,
                    committed_at: Timestamp {
                        unix_micros: i64::from(header.timestamp()) * 1_000_000,
                    },
                    source_id: gtid.gtid.seq,
                    origin: None,
                    changes: Vec::new(),
                });
                return Ok(None);
            }
            mariadb_event::GTID_LIST if !replayed => {
                let list = decode::parse_gtid_list_event(event.data()).map_err(bad)?;
                self.gtid.merge(&list);
            }
            mariadb_event::FIRST_COMPRESSED..=mariadb_event::LAST_COMPRESSED => {
                return Err(CdcError::Protocol(format!(
                    "binlog {}:{log_pos} holds a compressed event (log_bin_compress=ON); splice \
                     reads uncompressed binlogs: SET GLOBAL log_bin_compress = OFF (and in \
                     my.cnf), then start the capture again",
                    self.file
                )))
            }
            k if k == EventType::QUERY_EVENT as u8 => {
                let query: QueryEvent<'_> = event
                    .read_event()
                    .map_err(|e| bad(format!("query event: {e}")))?;
                return self.query(&query, header.timestamp(), log_pos, header.event_size());
            }
            k if k == EventType::XID_EVENT as u8 => {
                let xid: XidEvent = event
                    .read_event()
                    .map_err(|e| bad(format!("xid event: {e}")))?;
                let Some(mut building) = self.building.take() else {
                    return Err(bad("a commit (XID) outside a transaction".into()));
                };
                if building.source_id == 0 {
                    building.source_id = xid.xid;
                }
                return Ok(Some(self.finish(building, log_pos, header.event_size())));
            }
            k if k == EventType::XA_PREPARE_LOG_EVENT as u8 => {
                // MariaDB ends a prepared XA group with this event; XA COMMIT follows later.
                return self.xa(log_pos, header.event_size());
            }
            k if is_rows_event(k) => {
                self.rows(event, log_pos)?;
                return Ok(None);
            }
            _ => {}
        }
        // Nothing of ours is open or waiting: the binlog up to here holds nothing for the
        // consumer, and a restart may begin after it.
        if !replayed && self.building.is_none() && self.unacked.is_empty() {
            let here = self.here(log_pos);
            if here > self.acked {
                self.acked = here;
            }
        }
        Ok(None)
    }

    fn query(
        &mut self,
        query: &QueryEvent<'_>,
        timestamp: u32,
        log_pos: u64,
        size: u32,
    ) -> Result<Option<Transaction>, CdcError> {
        let text = query.query();
        let upper = text.trim().to_ascii_uppercase();
        let committed_at = Timestamp {
            unix_micros: i64::from(timestamp) * 1_000_000,
        };
        if upper == "BEGIN" || upper == "START TRANSACTION" {
            if self.building.is_none() {
                self.building = Some(Building {
                    standalone: false,
                    committed_at,
                    source_id: 0,
                    origin: None,
                    changes: Vec::new(),
                });
            }
            return Ok(None);
        }
        if upper == "COMMIT" || upper == "ROLLBACK" {
            // Non-transactional tables end with COMMIT (or ROLLBACK, their changes stay).
            return match self.building.take() {
                Some(building) => Ok(Some(self.finish(building, log_pos, size))),
                None => Ok(None),
            };
        }
        if [
            "SAVEPOINT",
            "ROLLBACK TO",
            "RELEASE SAVEPOINT",
            "XA START",
            "XA BEGIN",
            "XA END",
        ]
        .iter()
        .any(|p| upper.starts_with(p))
        {
            return Ok(None);
        }
        if upper.starts_with("XA ") {
            return self.xa(log_pos, size);
        }
        match self.building.take() {
            Some(building) if !building.standalone && is_dml(&upper) => {
                // Row changes logged as a statement: statement-based logging.
                Err(CdcError::StatementLogged {
                    position: self.here(log_pos).to_string(),
                })
            }
            Some(building) if !building.standalone => {
                // Another statement inside a transaction (the CREATE of CREATE TABLE … SELECT,
                // whose rows follow as row events): the transaction goes on.
                self.building = Some(building);
                Ok(None)
            }
            building => {
                // A statement standing alone (DDL). TRUNCATE of a captured table is a change.
                let mut building = building.unwrap_or(Building {
                    standalone: true,
                    committed_at,
                    source_id: 0,
                    origin: None,
                    changes: Vec::new(),
                });
                if let Some(table) = truncated_table(&text, &query.schema()) {
                    if self
                        .tables
                        .contains_key(&(table.schema.clone(), table.name.clone()))
                    {
                        building.changes.push(Change {
                            op: Op::Truncate,
                            table,
                            key: Vec::new(),
                            old_key: None,
                            position: Position::Lsn(crate::lsn::Lsn::ZERO),
                            committed_at: building.committed_at,
                            origin: None,
                        });
                    }
                }
                Ok(Some(self.finish(building, log_pos, size)))
            }
        }
    }

    /// The end of an XA group (XA PREPARE; XA COMMIT/ROLLBACK of a prepared one). The
    /// prepared changes commit later, in another group: holding them until then is not built,
    /// so a group that touched a captured table stops the stream rather than deliver it at the
    /// wrong moment. Others end here, with nothing to deliver.
    fn xa(&mut self, log_pos: u64, size: u32) -> Result<Option<Transaction>, CdcError> {
        let building = self.building.take();
        if building.as_ref().is_some_and(|b| !b.changes.is_empty()) {
            return Err(CdcError::Protocol(format!(
                "binlog {}:{log_pos}: an XA transaction changed a captured table; the binlog \
                 source does not follow XA transactions yet: keep XA transactions away from \
                 the captured tables while capturing",
                self.file
            )));
        }
        Ok(building.map(|b| self.finish(b, log_pos, size)))
    }

    fn rows(&mut self, event: &Event, log_pos: u64) -> Result<(), CdcError> {
        let file = self.file.clone();
        let bad = |what: String| CdcError::Protocol(format!("binlog {file}:{log_pos}: {what}"));
        let Some(EventData::RowsEvent(rows)) = event
            .read_data()
            .map_err(|e| bad(format!("rows event: {e}")))?
        else {
            return Err(bad("not a rows event".into()));
        };
        let Some(building) = self.building.as_mut() else {
            return Err(bad("row changes outside a transaction".into()));
        };
        let tme = self
            .binlog
            .get_tme(rows.table_id())
            .ok_or_else(|| bad(format!("no table map for table id {}", rows.table_id())))?;
        let database = tme.database_name();
        let name = tme.table_name();
        if database == SPLICE_DATABASE && name == setup::MARKER_TABLE {
            for row in rows.rows(tme) {
                let (before, after) = row.map_err(|e| bad(format!("marker row: {e}")))?;
                if let Some(row) = after.as_ref().or(before.as_ref()) {
                    if let Some(BinlogValue::Value(mysql_common::value::Value::Bytes(origin))) =
                        row.as_ref(0)
                    {
                        building.origin = Some(String::from_utf8_lossy(origin).into_owned());
                    }
                }
            }
            return Ok(());
        }
        let Some(captured) = self.tables.get(&(database.to_string(), name.to_string())) else {
            return Ok(());
        };
        let position = BinlogPosition::new(file.clone(), log_pos, String::new());
        let count = tme.columns_count() as usize;
        if count != captured.columns && !captured.also_columns.contains(&count) {
            return Err(CdcError::TableChanged {
                table: captured.table.clone(),
                position: position.to_string(),
                what: format!(
                    "the binlog has {} columns, the table had {} when the capture started",
                    tme.columns_count(),
                    captured.columns
                ),
            });
        }
        let op = match &rows {
            RowsEventData::WriteRowsEventV1(_) | RowsEventData::WriteRowsEvent(_) => Op::Insert,
            RowsEventData::UpdateRowsEventV1(_)
            | RowsEventData::UpdateRowsEvent(_)
            | RowsEventData::PartialUpdateRowsEvent(_) => Op::Update,
            RowsEventData::DeleteRowsEventV1(_) | RowsEventData::DeleteRowsEvent(_) => Op::Delete,
        };
        for row in rows.rows(tme) {
            let (before, after) =
                row.map_err(|e| bad(format!("row of {}: {e}", captured.table)))?;
            let before = before.as_ref().map(|r| key_of(captured, r)).transpose()?;
            let after = after.as_ref().map(|r| key_of(captured, r)).transpose()?;
            let (key, old_key) = match (op, before, after) {
                (Op::Insert, _, Some(after)) => (after, None),
                (Op::Delete, Some(before), _) => (before, None),
                (Op::Update, Some(before), Some(after)) => {
                    let changed = before != after;
                    (after, changed.then_some(before))
                }
                _ => {
                    return Err(bad(format!(
                        "a {op:?} row of {} without its image",
                        captured.table
                    )))
                }
            };
            building.changes.push(Change {
                op,
                table: captured.table.clone(),
                key,
                old_key,
                // Set when the transaction ends.
                position: Position::Lsn(crate::lsn::Lsn::ZERO),
                committed_at: building.committed_at,
                origin: None,
            });
        }
        Ok(())
    }

    fn finish(&mut self, building: Building, log_pos: u64, size: u32) -> Transaction {
        let end = self.here(log_pos);
        let commit = self.here(log_pos.saturating_sub(u64::from(size)));
        let position = Position::Binlog(end);
        let mut changes = building.changes;
        for change in &mut changes {
            change.position = position.clone();
            change.origin = building.origin.clone();
        }
        Transaction {
            position,
            commit_position: Position::Binlog(commit),
            committed_at: building.committed_at,
            origin: building.origin,
            source_id: building.source_id,
            changes,
        }
    }

    async fn stop(&mut self) -> Result<(), CdcError> {
        self.advance_over_skipped();
        let acked = self.acked.clone();
        self.writer
            .flush(&acked, Duration::from_secs(30))
            .await
            .map_err(|why| CdcError::Replication {
                detail: format!(
                    "could not store position {acked} in slot {} ({why}); the next run may \
                     repeat transactions after the last stored one",
                    self.slot
                ),
            })
    }

    async fn disconnect(self) {
        let MySqlChangeStream {
            binlog,
            mut sql,
            writer,
            binlog_connection,
            slot,
            ..
        } = self;
        drop(writer.tx);
        let _ = tokio::time::timeout(Duration::from_secs(5), writer.task).await;
        // The server's dump thread only notices a closed socket when it next sends: end it
        // now, so it holds no binlog file open (PURGE skips files a reader uses).
        let _ = sql
            .query_drop(format!("KILL CONNECTION {binlog_connection}"))
            .await;
        let _ = tokio::time::timeout(Duration::from_secs(2), binlog.close()).await;
        // Released here rather than by the disconnect, which the server finishes on its own
        // time: the next reader of the slot may start as soon as this returns.
        let _ = sql
            .exec_drop("SELECT RELEASE_LOCK(?)", (setup::slot_lock_name(&slot),))
            .await;
        let _ = tokio::time::timeout(Duration::from_secs(2), sql.disconnect()).await;
    }
}

/// A started binlog session, before it becomes a stream.
struct Started {
    binlog: BinlogStream,
    binlog_connection: u32,
    writer: PositionWriter,
    flavor: Flavor,
    tables: HashMap<(String, String), CapturedTable>,
    start: BinlogPosition,
    gtid: GtidState,
}

/// Whether the event's last four bytes are a CRC32 of the rest (header included).
fn ends_with_checksum(event: &Event) -> bool {
    let data = event.data();
    if data.len() < 4 {
        return false;
    }
    let header = event.header();
    let (body, sum) = data.split_at(data.len() - 4);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header.timestamp().to_le_bytes());
    hasher.update(&[header.event_type_raw()]);
    hasher.update(&header.server_id().to_le_bytes());
    hasher.update(&header.event_size().to_le_bytes());
    hasher.update(&header.log_pos().to_le_bytes());
    hasher.update(&header.flags_raw().to_le_bytes());
    hasher.update(body);
    hasher.finalize().to_le_bytes() == [sum[0], sum[1], sum[2], sum[3]]
}

fn is_rows_event(kind: u8) -> bool {
    [
        EventType::WRITE_ROWS_EVENT_V1,
        EventType::UPDATE_ROWS_EVENT_V1,
        EventType::DELETE_ROWS_EVENT_V1,
        EventType::WRITE_ROWS_EVENT,
        EventType::UPDATE_ROWS_EVENT,
        EventType::DELETE_ROWS_EVENT,
        EventType::PARTIAL_UPDATE_ROWS_EVENT,
    ]
    .iter()
    .any(|t| *t as u8 == kind)
}

/// The key of `row` (a row image of `table`).
fn key_of(table: &CapturedTable, row: &BinlogRow) -> Result<Key, CdcError> {
    table
        .key
        .iter()
        .map(|column| {
            let value = match row.as_ref(column.index) {
                Some(BinlogValue::Value(v)) => column.kind.value(v),
                Some(_) => Err(format!("key column {} holds JSON", column.name)),
                None => Err(format!(
                    "key column {} is missing from the row image (binlog_row_image is not FULL \
                     in the session that wrote it: SET GLOBAL binlog_row_image = 'FULL')",
                    column.name
                )),
            }
            .map_err(|why| CdcError::Protocol(format!("{}: {why}", table.table)))?;
            Ok((column.name.clone(), value))
        })
        .collect()
}

/// Whether an (upper-cased) statement changes rows: what a row-based binlog never holds as a
/// statement.
fn is_dml(upper: &str) -> bool {
    let mut text = upper.trim_start();
    // Leading comments (`/* … */`), as tools write them.
    while let Some(rest) = text.strip_prefix("/*") {
        match rest.find("*/") {
            Some(end) => text = rest[end + 2..].trim_start(),
            None => return false,
        }
    }
    [
        "INSERT",
        "UPDATE",
        "DELETE",
        "REPLACE",
        "LOAD DATA",
        "LOAD XML",
        "CALL",
    ]
    .iter()
    .any(|verb| text.starts_with(verb))
}

/// The table a `TRUNCATE [TABLE] name` statement empties, resolved against `schema`.
fn truncated_table(statement: &str, schema: &str) -> Option<TableName> {
    let mut words = statement.split_whitespace();
    if !words.next()?.eq_ignore_ascii_case("TRUNCATE") {
        return None;
    }
    let mut name = words.next()?;
    if name.eq_ignore_ascii_case("TABLE") {
        name = words.next()?;
    }
    let name = name.trim_end_matches(';');
    let unquote = |part: &str| part.trim_matches('`').replace("``", "`");
    match name.split_once("`.`").or_else(|| name.split_once('.')) {
        Some((db, table)) => Some(TableName::new(unquote(db), unquote(table))),
        None => Some(TableName::new(schema, unquote(name))),
    }
}

/// Remove a slot's row (after the capture is no longer needed). Missing is fine.
pub async fn drop_binlog_slot(database_url: &str, slot: &str) -> Result<(), CdcError> {
    let target = MySqlTarget::from_url(database_url)?;
    let mut conn = target.connect().await?;
    let result = setup::delete_slot(&mut conn, slot).await;
    let _ = conn.disconnect().await;
    result
}

/// Check the server-wide preconditions of a binlog capture (log_bin, binlog_format,
/// binlog_row_image, server_id, retention, grants) without creating anything.
pub async fn binlog_preconditions(database_url: &str) -> Result<Flavor, CdcError> {
    let target = MySqlTarget::from_url(database_url)?;
    let mut conn = target.connect().await?;
    let result = setup::check_server(&mut conn).await;
    let _ = conn.disconnect().await;
    result.map(|facts| facts.flavor)
}

/// The binlog server error that means the file to read is gone.
fn purged_error(slot: &str, position: &BinlogPosition, e: &mysql_async::Error) -> Option<CdcError> {
    match e {
        mysql_async::Error::Server(s) if s.code == 1236 => Some(CdcError::PositionPurged {
            slot: slot.into(),
            position: position.to_string(),
            why: s.message.clone(),
        }),
        _ => None,
    }
}

impl ChangeSource for MySqlChangeStream {
    async fn next_transaction(&mut self) -> Result<Option<Transaction>, CdcError> {
        use futures_core::Stream;
        loop {
            // Cancel-safe: the binlog stream keeps a partly read packet, and every other piece
            // of state lives in `self`.
            let event = std::future::poll_fn(|cx| Pin::new(&mut self.binlog).poll_next(cx)).await;
            let event =
                match event {
                    // The dump never ends by itself (it was not asked to): the server ended it.
                    None => {
                        return Err(CdcError::Replication {
                            detail: "the server ended the binlog stream (it shut down, or the \
                                     reader's connection was killed); open the stream again to \
                                     resume from the last acknowledged position"
                                .into(),
                        })
                    }
                    Some(Err(e)) => {
                        return Err(purged_error(&self.slot, &self.acked, &e).unwrap_or_else(
                            || CdcError::Replication {
                                detail: crate::error::describe_mysql_error(&e),
                            },
                        ))
                    }
                    Some(Ok(event)) => event,
                };
            let Some(txn) = self.handle(&event)? else {
                continue;
            };
            let Position::Binlog(end) = &txn.position else {
                continue;
            };
            let skip = txn.changes.is_empty()
                || txn
                    .origin
                    .as_ref()
                    .is_some_and(|o| self.skip_origins.contains(o));
            self.unacked.push_back(Unacked {
                end: end.clone(),
                committed_at: txn.committed_at,
                delivered: !skip,
            });
            if skip {
                debug!(id = txn.source_id, origin = ?txn.origin, "skipped transaction");
                self.advance_over_skipped();
                continue;
            }
            self.delivered = end.clone();
            return Ok(Some(txn));
        }
    }

    fn ack(&mut self, position: &Position) -> Result<(), CdcError> {
        let Position::Binlog(position) = position else {
            return Err(CdcError::BadAck {
                position: position.to_string(),
                why: "a binlog source acknowledges binlog positions, not LSNs".into(),
            });
        };
        if *position > self.delivered {
            return Err(CdcError::BadAck {
                position: position.to_string(),
                why: format!(
                    "it is past the last delivered transaction ({})",
                    self.delivered
                ),
            });
        }
        while self.unacked.front().is_some_and(|u| u.end <= *position) {
            self.unacked.pop_front();
        }
        if *position > self.acked {
            self.acked = position.clone();
        }
        self.advance_over_skipped();
        self.writer.tx.send_replace(Some(self.acked.clone()));
        Ok(())
    }

    async fn lag(&mut self) -> Result<Lag, CdcError> {
        let (file, offset) = setup::master_status(&mut self.sql).await?;
        let current = BinlogPosition::new(file, offset, String::new());
        let bytes = if current.file == self.acked.file {
            current.offset.saturating_sub(self.acked.offset)
        } else {
            let logs = setup::binary_logs(&mut self.sql).await?;
            let (from, to) = (self.acked.file_sequence(), current.file_sequence());
            logs.iter()
                .map(|(file, size)| {
                    (
                        BinlogPosition::new(file.clone(), 0, "").file_sequence(),
                        *size,
                    )
                })
                .filter(|(seq, _)| *seq >= from && *seq < to)
                .map(|(seq, size)| {
                    if seq == from {
                        size.saturating_sub(self.acked.offset)
                    } else {
                        size
                    }
                })
                .sum::<u64>()
                + current.offset
        };
        let behind = self
            .unacked
            .iter()
            .find(|u| u.delivered)
            .map(|u| u.committed_at.until(Timestamp::now()))
            .unwrap_or_default();
        Ok(Lag {
            source_position: Position::Binlog(current),
            acked_position: Position::Binlog(self.acked.clone()),
            bytes,
            behind,
        })
    }

    async fn close(mut self) -> Result<(), CdcError> {
        let result = self.stop().await;
        self.disconnect().await;
        result
    }

    async fn close_and_drop(mut self) -> Result<(), CdcError> {
        let stopped = self.stop().await;
        let dropped = setup::delete_slot(&mut self.sql, &self.slot).await;
        self.disconnect().await;
        stopped.and(dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_statements_name_their_table() {
        assert_eq!(
            truncated_table("TRUNCATE TABLE `shop`.`orders`", "x"),
            Some(TableName::new("shop", "orders"))
        );
        assert_eq!(
            truncated_table("truncate orders", "shop"),
            Some(TableName::new("shop", "orders"))
        );
        assert_eq!(
            truncated_table("ALTER TABLE orders ADD c INT", "shop"),
            None
        );
    }
}
