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
