//! `CdcError`: every way change capture can fail, each worded to name the problem and the fix.

use crate::change::TableName;

#[derive(Debug, thiserror::Error)]
pub enum CdcError {
    // ── preconditions, checked before anything is created ──
    #[error(
        "wal_level is {current}; set wal_level=logical in postgresql.conf \
         (or ALTER SYSTEM SET wal_level = logical) and restart the server"
    )]
    WalLevelNotLogical { current: String },

    #[error(
        "no free replication slot: {used} of max_replication_slots={max} are in use; drop an \
         unused slot (SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE \
         NOT active) or raise max_replication_slots in postgresql.conf and restart the server"
    )]
    NoFreeReplicationSlot { used: i64, max: i64 },

    #[error(
        "no free WAL sender: {used} of max_wal_senders={max} are in use; raise max_wal_senders \
         in postgresql.conf and restart the server, or stop an idle replication client"
    )]
    NoFreeWalSender { used: i64, max: i64 },

    #[error(
        "role {role} may not stream changes: it has neither the REPLICATION attribute nor \
         superuser; run ALTER ROLE {role} WITH REPLICATION as a superuser (Amazon RDS and \
         Aurora: GRANT rds_replication TO {role}; see docs/connecting.md for other platforms)"
    )]
    MissingReplicationPrivilege { role: String },

    #[error(
        "table {table} does not exist; create it, or check the schema and spelling (SCHEMA.TABLE)"
    )]
    TableMissing { table: TableName },

    #[error("{table} is a {kind}, not a table; only ordinary tables can be captured")]
    NotATable { table: TableName, kind: String },

    #[error(
        "table {table} has no primary key and no replica identity, so updates and deletes cannot \
         name their row; add a primary key, or run ALTER TABLE {quoted} REPLICA IDENTITY USING \
         INDEX <a unique index on NOT NULL columns> (or REPLICA IDENTITY FULL)"
    )]
    NoReplicaIdentity { table: TableName, quoted: String },

    #[error(
        "replication slot {slot} is in use by another process (pid {pid}); stop that consumer, \
         or pick another name with --slot"
    )]
    SlotInUse { slot: String, pid: i32 },

    #[error(
        "replication slot {slot} exists but is not a logical pgoutput slot on this database \
         ({what}); drop it (SELECT pg_drop_replication_slot('{slot}')) or pick another name"
    )]
    SlotMismatch { slot: String, what: String },

    #[error(
        "replication slot {slot} was invalidated (wal_status = lost): the server removed WAL it \
         still needed (max_slot_wal_keep_size), so changes in it are gone; drop the slot \
         (SELECT pg_drop_replication_slot('{slot}')) and start the capture again from a known \
         state"
    )]
    SlotInvalidated { slot: String },

    #[error(
        "replication slot {slot} does not exist, but this capture must continue from where it \
         stopped (it was dropped, or lost in a failover); changes since then were not captured"
    )]
    SlotMissing { slot: String },

    #[error("{name:?} cannot name a slot: use 1 to 63 lowercase letters, digits and underscores")]
    InvalidName { name: String },

    // ── MySQL/MariaDB preconditions ──
    #[error(
        "the server writes no binary log (log_bin is OFF); start it with a binlog: add \
         log_bin=mysql-bin under [mysqld] in my.cnf and restart the server"
    )]
    BinlogOff,

    #[error(
        "binlog_format is {current}; splice needs row events: run SET GLOBAL binlog_format = \
         'ROW' (it applies to new sessions: reconnect the application's pool) and set \
         binlog_format=ROW in my.cnf so a restart keeps it"
    )]
    BinlogFormatNotRow { current: String },

    #[error(
        "binlog_row_image is {current}; splice needs FULL: run SET GLOBAL binlog_row_image = \
         'FULL' (new sessions) and set binlog_row_image=FULL in my.cnf. (With MINIMAL an \
         update's after image holds only the changed columns and its before image only the key, \
         so the rows the engine re-reads cannot be checked against the log)"
    )]
    BinlogRowImageNotFull { current: String },

    #[error(
        "server_id is 0, and a server without one cannot serve a binlog reader; set server_id to \
         a unique non-zero number under [mysqld] in my.cnf and restart the server"
    )]
    NoServerId,

    #[error("user {user} may not {what}: it lacks {grant}; {fix}")]
    MissingGrant {
        user: String,
        grant: String,
        what: String,
        fix: String,
    },

    #[error(
        "the server deletes binlogs after {current} ({setting}), sooner than the {needed} a \
         capture needs to survive a stop; raise it: SET GLOBAL {setting} = {fix} (and in my.cnf)"
    )]
    BinlogRetentionTooShort {
        setting: String,
        current: String,
        needed: String,
        fix: String,
    },

    #[error(
        "table {table} has no primary key, so updates and deletes cannot name their row; add \
         one: ALTER TABLE {quoted} ADD PRIMARY KEY (<NOT NULL columns that identify a row>)"
    )]
    NoPrimaryKey { table: TableName, quoted: String },

    #[error(
        "column {column} of {table}'s primary key has type {sql_type}, which splice cannot \
         carry as a key value yet (supported: integer, decimal, float, character, binary, \
         date and time types); capture a table with another key"
    )]
    UnsupportedKeyType {
        table: TableName,
        column: String,
        sql_type: String,
    },

    #[error(
        "binlog position {position} that slot {slot} must resume from is gone from the server \
         ({why}); the changes since then cannot be read, so the capture cannot continue. Keep \
         binlogs longer (binlog_expire_logs_seconds), then start over: remove the slot (DELETE \
         FROM splice.cdc_slots WHERE slot = '{slot}', or `splice cdc tail … --drop-slot`) and \
         capture again from a known state"
    )]
    PositionPurged {
        slot: String,
        position: String,
        why: String,
    },

    #[error(
        "slot {slot} is in use by another reader (connection {connection}); stop that \
         consumer, or pick another name with --slot"
    )]
    BinlogSlotInUse { slot: String, connection: u64 },

    #[error(
        "the transaction at binlog position {position} was logged as SQL statements, not rows \
         (its session ran with binlog_format=STATEMENT or MIXED), so splice cannot tell which \
         rows it changed. Make sure every session logs rows: SET GLOBAL binlog_format = 'ROW', \
         and revoke the right to change it per session (SUPER / BINLOG ADMIN) from applications; \
         then remove the slot and capture again from a known state"
    )]
    StatementLogged { position: String },

    #[error(
        "the definition of captured table {table} changed at binlog position {position} \
         ({what}); restart the capture (a running capture follows a fixed table definition)"
    )]
    TableChanged {
        table: TableName,
        position: String,
        what: String,
    },

    #[error("{0:?} is not a MySQL URL: {1}")]
    MySqlUrl(String, String),

    // ── runtime ──
    #[error("{0}")]
    Connect(#[from] crate::postgres::ConnectError),

    #[error("{context}: {detail}")]
    Database { context: String, detail: String },

    #[error("replication stream: {detail}")]
    Replication { detail: String },

    #[error("replication stream: {0}")]
    Decode(#[from] crate::pgoutput::DecodeError),

    #[error("replication stream: {0}")]
    Protocol(String),

    #[error("cannot acknowledge {position}: {why}")]
    BadAck { position: String, why: String },
}

impl CdcError {
    /// True for the errors found before anything was created: the operator must change the
    /// server, the role or the table.
    pub fn is_precondition(&self) -> bool {
        matches!(
            self,
            CdcError::WalLevelNotLogical { .. }
                | CdcError::NoFreeReplicationSlot { .. }
                | CdcError::NoFreeWalSender { .. }
                | CdcError::MissingReplicationPrivilege { .. }
                | CdcError::TableMissing { .. }
                | CdcError::NotATable { .. }
                | CdcError::NoReplicaIdentity { .. }
                | CdcError::SlotInUse { .. }
                | CdcError::SlotMismatch { .. }
                | CdcError::InvalidName { .. }
                | CdcError::BinlogOff
                | CdcError::BinlogFormatNotRow { .. }
                | CdcError::BinlogRowImageNotFull { .. }
                | CdcError::NoServerId
                | CdcError::MissingGrant { .. }
                | CdcError::BinlogRetentionTooShort { .. }
                | CdcError::NoPrimaryKey { .. }
                | CdcError::UnsupportedKeyType { .. }
                | CdcError::BinlogSlotInUse { .. }
                | CdcError::MySqlUrl(..)
        )
    }

    pub(crate) fn db(context: impl Into<String>, e: &tokio_postgres::Error) -> CdcError {
        CdcError::Database {
            context: context.into(),
            detail: describe_pg_error(e),
        }
    }

    /// The replication connection could not start. TLS problems are usually caught by the SQL
    /// session opened before it, with the same settings; what is left is named as TLS.
    pub(crate) fn replication_connect(e: &pgwire_replication::PgWireError) -> CdcError {
        match e {
            pgwire_replication::PgWireError::Tls(detail) => CdcError::Replication {
                detail: format!(
                    "TLS on the replication connection failed: {detail}; check sslmode, \
                     sslrootcert, sslcert and sslkey"
                ),
            },
            other => CdcError::replication(other),
        }
    }

    pub(crate) fn replication(e: &pgwire_replication::PgWireError) -> CdcError {
        CdcError::Replication {
            detail: e.to_string(),
        }
    }
}

impl CdcError {
    pub(crate) fn mysql(context: impl Into<String>, e: &mysql_async::Error) -> CdcError {
        CdcError::Database {
            context: context.into(),
            detail: describe_mysql_error(e),
        }
    }
}

/// The server's message and code (`ERROR 1227 (42000): Access denied…`), or the driver's.
pub fn describe_mysql_error(e: &mysql_async::Error) -> String {
    match e {
        mysql_async::Error::Server(s) => format!("ERROR {} ({}): {}", s.code, s.state, s.message),
        other => other.to_string(),
    }
}

/// The server's own message (with detail and hint) rather than the driver's wrapper.
pub fn describe_pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = db.message().to_string();
            if let Some(detail) = db.detail() {
                s.push_str(&format!(" ({detail})"));
            }
            if let Some(hint) = db.hint() {
                s.push_str(&format!("; hint: {hint}"));
            }
            s
        }
        None => {
            let mut s = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(inner) = source {
                s.push_str(&format!(": {inner}"));
                source = inner.source();
            }
            s
        }
    }
}
