//! Connecting to MySQL/MariaDB, checking the preconditions of a binlog capture (each with its
//! fix), reading the captured tables' keys, and the slot table splice keeps its positions in.

use super::decode::KeyKind;
use crate::change::{BinlogPosition, TableName};
use crate::error::CdcError;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, Row, SslOpts};
use std::time::Duration;

/// The database splice keeps its MySQL/MariaDB state in.
pub const SPLICE_DATABASE: &str = "splice";
/// `splice.cdc_slots`: one row per slot, the last acknowledged position.
pub const SLOTS_TABLE: &str = "cdc_slots";
/// `splice.cdc_marker`: an applier's write here marks its transaction (see [`marker_sql`]).
pub const MARKER_TABLE: &str = "cdc_marker";

/// `ssl-mode` in a MySQL URL, as the `mysql` client spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MySqlSslMode {
    Disabled,
    /// Encrypt, without checking the server's certificate.
    Required,
    /// Encrypt and check the certificate against `ssl-ca` (not the host name).
    VerifyCa,
    /// Encrypt and check the certificate and the host name.
    VerifyIdentity,
}

/// Where and how to connect: a `mysql://` or `mariadb://` URL, with `ssl-mode` and `ssl-ca`
/// read by splice and everything else by `mysql_async`.
#[derive(Clone, Debug)]
pub struct MySqlTarget {
    opts: Opts,
    ssl_mode: MySqlSslMode,
}

impl MySqlTarget {
    /// `mysql://user[:password]@host[:port][/database][?ssl-mode=REQUIRED&ssl-ca=ca.pem]`;
    /// `mariadb://` is the same.
    pub fn from_url(url: &str) -> Result<MySqlTarget, CdcError> {
        let bad = |why: &str| CdcError::MySqlUrl(redact(url), why.to_string());
        let rest = url
            .strip_prefix("mysql://")
            .or_else(|| url.strip_prefix("mariadb://"))
            .ok_or_else(|| bad("it must start with mysql:// or mariadb://"))?;
        let (base, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut ssl_mode = MySqlSslMode::Disabled;
        let mut ssl_ca = None;
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key.to_ascii_lowercase().replace('_', "-").as_str() {
                "ssl-mode" | "sslmode" => {
                    ssl_mode = match value.to_ascii_uppercase().replace('-', "_").as_str() {
                        "DISABLED" | "DISABLE" => MySqlSslMode::Disabled,
                        "REQUIRED" | "REQUIRE" => MySqlSslMode::Required,
                        "VERIFY_CA" => MySqlSslMode::VerifyCa,
                        "VERIFY_IDENTITY" | "VERIFY_FULL" => MySqlSslMode::VerifyIdentity,
                        "PREFERRED" | "PREFER" => {
                            return Err(bad(
                                "ssl-mode=PREFERRED (TLS if the server offers it) is not \
                                 supported: say ssl-mode=REQUIRED, VERIFY_CA or VERIFY_IDENTITY \
                                 to encrypt, or DISABLED not to",
                            ))
                        }
                        _ => {
                            return Err(bad("ssl-mode must be DISABLED, REQUIRED, VERIFY_CA or \
                                 VERIFY_IDENTITY"))
                        }
                    }
                }
                "ssl-ca" | "sslrootcert" => ssl_ca = Some(value.to_string()),
                _ => kept.push(pair),
            }
        }
        let url = if kept.is_empty() {
            format!("mysql://{base}")
        } else {
            format!("mysql://{base}?{}", kept.join("&"))
        };
        let opts = Opts::from_url(&url).map_err(|e| bad(&e.to_string()))?;
        let ssl = match ssl_mode {
            MySqlSslMode::Disabled => None,
            MySqlSslMode::Required => Some(
                SslOpts::default()
                    .with_danger_accept_invalid_certs(true)
                    .with_danger_skip_domain_validation(true),
            ),
            MySqlSslMode::VerifyCa | MySqlSslMode::VerifyIdentity => {
                let ca = ssl_ca.clone().ok_or_else(|| {
                    bad("ssl-mode=VERIFY_CA and VERIFY_IDENTITY need ssl-ca=<CA certificate file>")
                })?;
                Some(
                    SslOpts::default()
                        .with_root_certs(vec![std::path::PathBuf::from(ca).into()])
                        .with_danger_skip_domain_validation(ssl_mode == MySqlSslMode::VerifyCa),
                )
            }
        };
        let opts = OptsBuilder::from_opts(opts)
            .ssl_opts(ssl)
            .prefer_socket(false)
            .into();
        Ok(MySqlTarget { opts, ssl_mode })
    }

    /// `host:port` for messages.
    pub fn describe(&self) -> String {
        format!("{}:{}", self.opts.ip_or_hostname(), self.opts.tcp_port())
    }

    pub fn ssl_mode(&self) -> MySqlSslMode {
        self.ssl_mode
    }

    /// The database the URL names, if any.
    pub fn database(&self) -> Option<&str> {
        self.opts.db_name()
    }

    /// A new session.
    pub async fn connect(&self) -> Result<Conn, CdcError> {
        if self.ssl_mode != MySqlSslMode::Disabled {
            // mysql_async builds its TLS configuration from rustls's process-wide provider;
            // with both ring and aws-lc-rs compiled in, none is chosen by itself. Ring is the
            // one the PostgreSQL side uses; a provider installed earlier stays.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        Conn::new(self.opts.clone())
            .await
            .map_err(|e| CdcError::mysql(format!("connecting to MySQL at {}", self.describe()), &e))
    }
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Which server: MariaDB has its own GTIDs, privileges and functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    MariaDb,
    MySql,
}

impl Flavor {
    /// The server behind `SELECT VERSION()`'s answer (`10.11.14-MariaDB-…` or `8.0.36`).
    pub fn of_version(version: &str) -> Flavor {
        if version.to_ascii_lowercase().contains("mariadb") {
            Flavor::MariaDb
        } else {
            Flavor::MySql
        }
    }
}

pub(crate) async fn query_opt_string(
    conn: &mut Conn,
    sql: &str,
    context: &str,
) -> Result<Option<String>, CdcError> {
    let row: Option<Row> = conn
        .query_first(sql)
        .await
        .map_err(|e| CdcError::mysql(context, &e))?;
    Ok(row.and_then(|row| {
        row.get_opt::<Option<String>, _>(0)
            .and_then(Result::ok)
            .flatten()
    }))
}

async fn variable(conn: &mut Conn, name: &str) -> Result<Option<String>, CdcError> {
    query_opt_string(
        conn,
        &format!("SELECT CAST(@@GLOBAL.{name} AS CHAR)"),
        &format!("reading {name}"),
    )
    .await
}

/// What [`check_server`] found.
#[derive(Clone, Debug)]
pub(crate) struct ServerFacts {
    pub flavor: Flavor,
    pub user: String,
}

/// How long binlogs must be kept at least, when the server expires them at all.
pub const MIN_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// Check what a binlog capture needs from the server and the user, without changing anything:
/// log_bin, binlog_format=ROW, binlog_row_image=FULL, server_id, retention, and the grants.
pub(crate) async fn check_server(conn: &mut Conn) -> Result<ServerFacts, CdcError> {
    let version = query_opt_string(conn, "SELECT VERSION()", "reading the server version")
        .await?
        .unwrap_or_default();
    let flavor = Flavor::of_version(&version);
    let user = query_opt_string(conn, "SELECT CURRENT_USER()", "reading the current user")
        .await?
        .unwrap_or_default();
    let user = match user.rsplit_once('@') {
        Some((name, host)) => format!("'{name}'@'{host}'"),
        None => format!("'{user}'"),
    };
    let log_bin = variable(conn, "log_bin").await?.unwrap_or_default();
    if !(log_bin == "1" || log_bin.eq_ignore_ascii_case("ON")) {
        return Err(CdcError::BinlogOff);
    }
    let format = variable(conn, "binlog_format").await?.unwrap_or_default();
    if !format.eq_ignore_ascii_case("ROW") {
        return Err(CdcError::BinlogFormatNotRow { current: format });
    }
    let image = variable(conn, "binlog_row_image")
        .await?
        .unwrap_or_default();
    if !image.eq_ignore_ascii_case("FULL") {
        return Err(CdcError::BinlogRowImageNotFull { current: image });
    }
    if variable(conn, "server_id").await?.as_deref() == Some("0") {
        return Err(CdcError::NoServerId);
    }
    check_retention(conn).await?;
    check_grants(conn, flavor, &user).await?;
    Ok(ServerFacts { flavor, user })
}

async fn check_retention(conn: &mut Conn) -> Result<(), CdcError> {
    let needed = MIN_RETENTION.as_secs();
    let seconds = variable(conn, "binlog_expire_logs_seconds")
        .await
        .ok()
        .flatten()
        .and_then(|s| s.parse::<u64>().ok());
    let (setting, current) = match seconds {
        Some(s) => ("binlog_expire_logs_seconds", s),
        None => {
            // Servers before binlog_expire_logs_seconds: expire_logs_days.
            let days = variable(conn, "expire_logs_days")
                .await
                .ok()
                .flatten()
                .and_then(|s| s.parse::<f64>().ok())
                .unwrap_or(0.0);
            ("expire_logs_days", (days * 86_400.0) as u64)
        }
    };
    if current != 0 && current < needed {
        let fix = if setting == "expire_logs_days" {
            "7".to_string()
        } else {
            (7 * 86_400).to_string()
        };
        return Err(CdcError::BinlogRetentionTooShort {
            setting: setting.into(),
            current: humanize(current),
            needed: humanize(needed),
            fix,
        });
    }
    Ok(())
}

fn humanize(secs: u64) -> String {
    if secs % 3600 == 0 {
        format!("{}h", secs / 3600)
    } else {
        format!("{secs}s")
    }
}

/// REPLICATION SLAVE (to read the binlog) from the grants; BINLOG MONITOR (MariaDB) or
/// REPLICATION CLIENT (MySQL) by trying what it allows (`SHOW BINARY LOGS`).
async fn check_grants(conn: &mut Conn, flavor: Flavor, user: &str) -> Result<(), CdcError> {
    let grants: Vec<String> = conn
        .query("SHOW GRANTS")
        .await
        .map_err(|e| CdcError::mysql("reading the user's grants (SHOW GRANTS)", &e))?;
    let global: Vec<String> = grants
        .iter()
        .map(|g| g.to_ascii_uppercase())
        .filter(|g| g.contains(" ON *.* "))
        .collect();
    let has = |privilege: &str| {
        global
            .iter()
            .any(|g| g.contains("ALL PRIVILEGES") || g.contains(privilege))
    };
    if !has("REPLICATION SLAVE") {
        return Err(CdcError::MissingGrant {
            user: user.into(),
            grant: "REPLICATION SLAVE".into(),
            what: "read the binlog".into(),
            fix: format!("run GRANT REPLICATION SLAVE ON *.* TO {user} as an administrator"),
        });
    }
    if let Err(e) = conn.query_drop("SHOW BINARY LOGS").await {
        let monitor = match flavor {
            Flavor::MariaDb => "BINLOG MONITOR",
            Flavor::MySql => "REPLICATION CLIENT",
        };
        return match e {
            mysql_async::Error::Server(ref s) if s.code == 1227 || s.code == 1044 => {
                Err(CdcError::MissingGrant {
                    user: user.into(),
                    grant: monitor.into(),
                    what: "list the binlogs (SHOW BINARY LOGS, SHOW MASTER STATUS)".into(),
                    fix: format!("run GRANT {monitor} ON *.* TO {user} as an administrator"),
                })
            }
            e => Err(CdcError::mysql(
                "listing the binlogs (SHOW BINARY LOGS)",
                &e,
            )),
        };
    }
    Ok(())
}

/// A captured table: its key columns (ordinal positions, 0-based, in key order) and their
/// kinds, and how many columns it has.
#[derive(Clone, Debug)]
pub(crate) struct CapturedTable {
    pub table: TableName,
    pub key: Vec<KeyColumn>,
    pub columns: usize,
    /// Other column counts its rows may have (`MySqlSourceConfig::other_shapes`).
    pub also_columns: Vec<usize>,
}

#[derive(Clone, Debug)]
pub(crate) struct KeyColumn {
    pub name: String,
    pub index: usize,
    pub kind: KeyKind,
}

/// `database.table` quoted with backticks.
pub fn quote_mysql(table: &TableName) -> String {
    format!(
        "`{}`.`{}`",
        table.schema.replace('`', "``"),
        table.name.replace('`', "``")
    )
}

/// Check that `table` exists, is a base table and has a primary key of supported types.
pub(crate) async fn check_table(
    conn: &mut Conn,
    table: &TableName,
) -> Result<CapturedTable, CdcError> {
    let kind: Option<String> = conn
        .exec_first(
            "SELECT TABLE_TYPE FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (&table.schema, &table.name),
        )
        .await
        .map_err(|e| CdcError::mysql(format!("looking up table {table}"), &e))?;
    match kind.as_deref() {
        None => {
            return Err(CdcError::TableMissing {
                table: table.clone(),
            })
        }
        Some("BASE TABLE") | Some("SYSTEM VERSIONED") => {}
        Some(other) => {
            return Err(CdcError::NotATable {
                table: table.clone(),
                kind: other.to_ascii_lowercase(),
            })
        }
    }
    let columns: Vec<(String, u64, String, String)> = conn
        .exec(
            "SELECT COLUMN_NAME, ORDINAL_POSITION, DATA_TYPE, COLUMN_TYPE \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
             ORDER BY ORDINAL_POSITION",
            (&table.schema, &table.name),
        )
        .await
        .map_err(|e| CdcError::mysql(format!("reading the columns of {table}"), &e))?;
    let key_names: Vec<String> = conn
        .exec(
            "SELECT COLUMN_NAME FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND INDEX_NAME = 'PRIMARY' \
             ORDER BY SEQ_IN_INDEX",
            (&table.schema, &table.name),
        )
        .await
        .map_err(|e| CdcError::mysql(format!("reading the primary key of {table}"), &e))?;
    if key_names.is_empty() {
        return Err(CdcError::NoPrimaryKey {
            table: table.clone(),
            quoted: quote_mysql(table),
        });
    }
    let mut key = Vec::new();
    for name in key_names {
        let Some((index, (_, _, data_type, column_type))) = columns
            .iter()
            .enumerate()
            .find(|(_, (column, ..))| column.eq_ignore_ascii_case(&name))
        else {
            return Err(CdcError::Protocol(format!(
                "primary key column {name} of {table} is not among its columns"
            )));
        };
        let kind =
            KeyKind::of(data_type, column_type).ok_or_else(|| CdcError::UnsupportedKeyType {
                table: table.clone(),
                column: name.clone(),
                sql_type: column_type.clone(),
            })?;
        key.push(KeyColumn { name, index, kind });
    }
    Ok(CapturedTable {
        table: table.clone(),
        key,
        columns: columns.len(),
        also_columns: Vec::new(),
    })
}

/// The server's current binlog file and offset (`SHOW MASTER STATUS`).
pub(crate) async fn master_status(conn: &mut Conn) -> Result<(String, u64), CdcError> {
    let row: Option<Row> = match conn.query_first("SHOW MASTER STATUS").await {
        // MySQL 8.4 removed it in favour of SHOW BINARY LOG STATUS (not run here).
        Err(mysql_async::Error::Server(ref s)) if s.code == 1064 => conn
            .query_first("SHOW BINARY LOG STATUS")
            .await
            .map_err(|e| {
                CdcError::mysql("reading the binlog position (SHOW BINARY LOG STATUS)", &e)
            })?,
        other => other
            .map_err(|e| CdcError::mysql("reading the binlog position (SHOW MASTER STATUS)", &e))?,
    };
    let row = row.ok_or(CdcError::BinlogOff)?;
    let file: Option<String> = row.get_opt(0).and_then(Result::ok);
    let pos: Option<u64> = row.get_opt(1).and_then(Result::ok);
    match (file, pos) {
        (Some(file), Some(pos)) => Ok((file, pos)),
        _ => Err(CdcError::Protocol(
            "SHOW MASTER STATUS did not give a file and a position".into(),
        )),
    }
}

/// The binlog files the server still has, with their sizes (`SHOW BINARY LOGS`).
pub(crate) async fn binary_logs(conn: &mut Conn) -> Result<Vec<(String, u64)>, CdcError> {
    let rows: Vec<Row> = conn
        .query("SHOW BINARY LOGS")
        .await
        .map_err(|e| CdcError::mysql("listing the binlogs (SHOW BINARY LOGS)", &e))?;
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            let file: String = row.get_opt(0)?.ok()?;
            let size: u64 = row.get_opt(1)?.ok()?;
            Some((file, size))
        })
        .collect())
}

/// The GTID state at a binlog position: MariaDB's `BINLOG_GTID_POS()`; MySQL has no such
/// function, so an empty set (positions there are file:offset only).
pub(crate) async fn gtid_at(
    conn: &mut Conn,
    flavor: Flavor,
    file: &str,
    offset: u64,
) -> Result<String, CdcError> {
    if flavor == Flavor::MySql {
        return Ok(String::new());
    }
    let gtid: Option<Option<String>> = conn
        .exec_first("SELECT BINLOG_GTID_POS(?, ?)", (file, offset))
        .await
        .map_err(|e| CdcError::mysql("reading the GTID position (BINLOG_GTID_POS)", &e))?;
    Ok(gtid.flatten().unwrap_or_default())
}

/// Refuse a stored position the server no longer has (purged, or past the end of its file).
pub(crate) async fn check_not_purged(
    conn: &mut Conn,
    slot: &str,
    position: &BinlogPosition,
) -> Result<(), CdcError> {
    let logs = binary_logs(conn).await?;
    let purged = |why: String| CdcError::PositionPurged {
        slot: slot.into(),
        position: position.to_string(),
        why,
    };
    match logs.iter().find(|(file, _)| *file == position.file) {
        Some((_, size)) if *size >= position.offset => Ok(()),
        Some((_, size)) => Err(purged(format!(
            "{} is only {size} bytes long: the binlog was reset or replaced",
            position.file
        ))),
        None => Err(purged(match logs.first() {
            Some((oldest, _)) => format!(
                "{} is not among its binlogs; the oldest it has is {oldest}",
                position.file
            ),
            None => format!("{} is not among its binlogs", position.file),
        })),
    }
}

/// Whether the `splice` database exists.
pub(crate) async fn schema_exists(conn: &mut Conn) -> Result<bool, CdcError> {
    let found: Option<String> = conn
        .exec_first(
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
            (SPLICE_DATABASE,),
        )
        .await
        .map_err(|e| CdcError::mysql("looking for the splice database", &e))?;
    Ok(found.is_some())
}

/// Create the `splice` database with the slot and marker tables, if missing.
pub(crate) async fn ensure_schema(conn: &mut Conn, user: &str) -> Result<(), CdcError> {
    let statements = [
        format!("CREATE DATABASE IF NOT EXISTS `{SPLICE_DATABASE}`"),
        format!(
            "CREATE TABLE IF NOT EXISTS `{SPLICE_DATABASE}`.`{SLOTS_TABLE}` (\
             slot VARCHAR(64) NOT NULL PRIMARY KEY, \
             binlog_file VARCHAR(255) NOT NULL, \
             binlog_offset BIGINT UNSIGNED NOT NULL, \
             gtid TEXT NOT NULL, \
             created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), \
             updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) ENGINE=InnoDB"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS `{SPLICE_DATABASE}`.`{MARKER_TABLE}` (\
             origin VARCHAR(64) NOT NULL PRIMARY KEY, \
             txns BIGINT UNSIGNED NOT NULL DEFAULT 0) ENGINE=InnoDB"
        ),
    ];
    for sql in statements {
        conn.query_drop(&sql).await.map_err(|e| match e {
            mysql_async::Error::Server(ref s) if s.code == 1044 || s.code == 1142 => {
                CdcError::MissingGrant {
                    user: user.into(),
                    grant: format!("privileges on the {SPLICE_DATABASE} database"),
                    what: format!("keep its slot positions in the {SPLICE_DATABASE} database"),
                    fix: format!(
                        "run GRANT ALL ON `{SPLICE_DATABASE}`.* TO {user} as an administrator"
                    ),
                }
            }
            e => CdcError::mysql(format!("creating splice's tables ({sql})"), &e),
        })?;
    }
    Ok(())
}

/// Drop the `splice` database again if this open created it and nothing else is in it.
pub(crate) async fn drop_schema_if_unused(conn: &mut Conn) {
    let sql = format!(
        "SELECT (SELECT COUNT(*) FROM `{SPLICE_DATABASE}`.`{SLOTS_TABLE}`) + \
         (SELECT COUNT(*) FROM `{SPLICE_DATABASE}`.`{MARKER_TABLE}`) + \
         (SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{SPLICE_DATABASE}' \
          AND TABLE_NAME NOT IN ('{SLOTS_TABLE}', '{MARKER_TABLE}'))"
    );
    if let Ok(Some(0u64)) = conn.query_first::<u64, _>(sql).await {
        if let Err(e) = conn
            .query_drop(format!("DROP DATABASE `{SPLICE_DATABASE}`"))
            .await
        {
            tracing::warn!("could not drop the splice database after a failed start: {e}");
        }
    }
}

/// The stored position of `slot`, if it exists.
pub(crate) async fn load_slot(
    conn: &mut Conn,
    slot: &str,
) -> Result<Option<BinlogPosition>, CdcError> {
    let row: Option<(String, u64, String)> = conn
        .exec_first(
            format!(
                "SELECT binlog_file, binlog_offset, gtid FROM `{SPLICE_DATABASE}`.`{SLOTS_TABLE}` \
                 WHERE slot = ?"
            ),
            (slot,),
        )
        .await
        .map_err(|e| CdcError::mysql(format!("reading slot {slot}"), &e))?;
    Ok(row.map(|(file, offset, gtid)| BinlogPosition::new(file, offset, gtid)))
}

/// Create the slot at `position`.
pub(crate) async fn create_slot(
    conn: &mut Conn,
    slot: &str,
    position: &BinlogPosition,
) -> Result<(), CdcError> {
    conn.exec_drop(
        format!(
            "INSERT INTO `{SPLICE_DATABASE}`.`{SLOTS_TABLE}` (slot, binlog_file, binlog_offset, gtid) \
             VALUES (?, ?, ?, ?)"
        ),
        (slot, &position.file, position.offset, &position.gtid),
    )
    .await
    .map_err(|e| CdcError::mysql(format!("creating slot {slot}"), &e))
}

/// Store `position` as the slot's acknowledged position.
pub(crate) async fn store_slot(
    conn: &mut Conn,
    slot: &str,
    position: &BinlogPosition,
) -> Result<(), CdcError> {
    conn.exec_drop(
        format!(
            "UPDATE `{SPLICE_DATABASE}`.`{SLOTS_TABLE}` SET binlog_file = ?, binlog_offset = ?, \
             gtid = ?, updated_at = CURRENT_TIMESTAMP(6) WHERE slot = ?"
        ),
        (&position.file, position.offset, &position.gtid, slot),
    )
    .await
    .map_err(|e| CdcError::mysql(format!("storing the position of slot {slot}"), &e))
}

/// Remove the slot's row.
pub(crate) async fn delete_slot(conn: &mut Conn, slot: &str) -> Result<(), CdcError> {
    let sql = format!("DELETE FROM `{SPLICE_DATABASE}`.`{SLOTS_TABLE}` WHERE slot = ?");
    match conn.exec_drop(sql, (slot,)).await {
        Ok(()) => Ok(()),
        // No splice database or table: nothing to remove.
        Err(mysql_async::Error::Server(ref s)) if s.code == 1049 || s.code == 1146 => Ok(()),
        Err(e) => Err(CdcError::mysql(format!("removing slot {slot}"), &e)),
    }
}

/// The advisory lock that keeps two readers off one slot.
pub(crate) fn slot_lock_name(slot: &str) -> String {
    let name = format!("splice.cdc.{slot}");
    if name.len() <= 64 {
        name
    } else {
        format!("splice.cdc.{:016x}", fnv1a(slot.as_bytes()))
    }
}

/// Take the slot's lock on `conn` for as long as the session lives.
pub(crate) async fn lock_slot(conn: &mut Conn, slot: &str) -> Result<(), CdcError> {
    let name = slot_lock_name(slot);
    let got: Option<Option<i64>> = conn
        .exec_first("SELECT GET_LOCK(?, 0)", (&name,))
        .await
        .map_err(|e| CdcError::mysql(format!("locking slot {slot}"), &e))?;
    if got.flatten() == Some(1) {
        return Ok(());
    }
    let holder: Option<Option<u64>> = conn
        .exec_first("SELECT IS_USED_LOCK(?)", (&name,))
        .await
        .map_err(|e| CdcError::mysql(format!("locking slot {slot}"), &e))?;
    Err(CdcError::BinlogSlotInUse {
        slot: slot.into(),
        connection: holder.flatten().unwrap_or(0),
    })
}

/// The server id splice registers with for `slot`: stable per slot, distinct between slots,
/// and in a range (0x5A000000…) real servers rarely use.
pub(crate) fn replica_server_id(slot: &str) -> u32 {
    0x5A00_0000 | (fnv1a(slot.as_bytes()) as u32 & 0x00FF_FFFF)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The SQL an applier runs inside each of its transactions so that a stream skipping
/// `origin` skips the transaction (see the crate docs, "the marker"). The `splice.cdc_marker`
/// table exists once any binlog capture was opened on the server.
pub fn marker_sql(origin: &str) -> String {
    format!(
        "INSERT INTO `{SPLICE_DATABASE}`.`{MARKER_TABLE}` (origin, txns) VALUES ('{}', 1) \
         ON DUPLICATE KEY UPDATE txns = txns + 1",
        origin.replace('\\', "\\\\").replace('\'', "''")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_take_ssl_mode_and_refuse_what_they_cannot_do() {
        let t = MySqlTarget::from_url("mariadb://app:pw@db.internal:3307/shop").unwrap();
        assert_eq!(t.describe(), "db.internal:3307");
        assert_eq!(t.ssl_mode(), MySqlSslMode::Disabled);
        let t = MySqlTarget::from_url("mysql://app@db/shop?ssl-mode=REQUIRED").unwrap();
        assert_eq!(t.ssl_mode(), MySqlSslMode::Required);
        let e = MySqlTarget::from_url("mysql://app:secret@db/shop?ssl-mode=PREFERRED")
            .unwrap_err()
            .to_string();
        assert!(e.contains("REQUIRED") && !e.contains("secret"), "{e}");
        let e = MySqlTarget::from_url("mysql://app@db/?ssl-mode=VERIFY_CA")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ssl-ca"), "{e}");
        assert!(MySqlTarget::from_url("postgres://app@db/shop").is_err());
    }

    #[test]
    fn slot_locks_and_server_ids_are_stable_and_bounded() {
        assert_eq!(slot_lock_name("tail"), "splice.cdc.tail");
        assert!(slot_lock_name(&"x".repeat(63)).len() <= 64);
        assert_eq!(replica_server_id("a"), replica_server_id("a"));
        assert_ne!(replica_server_id("a"), replica_server_id("b"));
        assert_ne!(replica_server_id("a"), 0);
    }

    #[test]
    fn the_marker_quotes_its_origin() {
        assert!(marker_sql("o'k").contains("VALUES ('o''k', 1)"));
    }
}
