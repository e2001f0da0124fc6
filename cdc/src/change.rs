//! The neutral items every change source delivers: a [`Transaction`] of [`Change`]s, each naming
//! a table and a key, with a resumable [`Position`]. Nothing here knows about PostgreSQL or MySQL
//! beyond the `Position` variants.

use crate::lsn::Lsn;
use serde::{Serialize, Serializer};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What happened to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Insert,
    Update,
    Delete,
    /// Every row of the table went away; the change carries no key.
    Truncate,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
            Op::Truncate => "truncate",
        }
    }
}

/// A table's schema-qualified name, as the catalog spells it (no quoting).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    pub schema: String,
    pub name: String,
}

impl TableName {
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> TableName {
        TableName {
            schema: schema.into(),
            name: name.into(),
        }
    }

    /// `schema.table`, or `table` meaning `public.table`. No quoting: the parts are taken as
    /// the catalog spells them.
    pub fn parse(text: &str) -> Option<TableName> {
        let text = text.trim();
        let (schema, name) = match text.split_once('.') {
            Some((schema, name)) => (schema, name),
            None => ("public", text),
        };
        if schema.is_empty() || name.is_empty() || name.contains('.') {
            return None;
        }
        Some(TableName::new(schema, name))
    }

    /// The name quoted for SQL: `"schema"."name"`.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

impl Serialize for TableName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Quotes an SQL identifier (PostgreSQL's double quotes; the engine's PostgreSQL adapter uses
/// this one too).
pub fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// One key column's value, typed just enough to print as JSON: integers and booleans as such,
/// everything else (numeric, text, uuid, timestamps…) as the source's text form.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Text(String),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Text(t) => f.write_str(t),
        }
    }
}

/// A key: the key columns in key order, with their values.
pub type Key = Vec<(String, Value)>;

/// Where a source is in its log. Acknowledge a transaction's [`Transaction::position`]; a
/// restarted source continues with the first transaction after the last acknowledged one.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Position {
    /// PostgreSQL: the end of a transaction's commit record in the WAL.
    Lsn(Lsn),
    /// MySQL/MariaDB: the end of a transaction's last event in the binlog, with the server's
    /// GTID state after it.
    Binlog(BinlogPosition),
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Lsn(lsn) => lsn.fmt(f),
            Position::Binlog(binlog) => binlog.fmt(f),
        }
    }
}

/// The text was neither an LSN nor a binlog position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a position (expected an LSN like 0/16B3748 or a binlog position like \
     binlog.000003:1234@0-1-42)"
)]
pub struct ParsePositionError(pub String);

impl std::str::FromStr for Position {
    type Err = ParsePositionError;

    /// The form `Display` prints (`0/16B3748` for PostgreSQL, `binlog.000003:1234@0-1-42` for
    /// MySQL/MariaDB), for positions kept in a checkpoint.
    fn from_str(s: &str) -> Result<Position, Self::Err> {
        if s.contains(':') {
            return s
                .parse()
                .map(Position::Binlog)
                .map_err(|_| ParsePositionError(s.to_string()));
        }
        s.parse()
            .map(Position::Lsn)
            .map_err(|_| ParsePositionError(s.to_string()))
    }
}

impl Serialize for Position {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A place in a MySQL/MariaDB binlog: a file and a byte offset in it (where the next event
/// starts), and the GTID set the server had executed up to there (MariaDB: the last GTID of
/// each replication domain, `0-1-42,1-2-7`; MySQL: `uuid:1-42`). Printed as
/// `binlog.000003:1234@0-1-42` (without `@…` when the set is unknown).
///
/// Ordered by file sequence number, then offset: the GTID text rides along.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BinlogPosition {
    pub file: String,
    pub offset: u64,
    pub gtid: String,
}

impl BinlogPosition {
    pub fn new(file: impl Into<String>, offset: u64, gtid: impl Into<String>) -> BinlogPosition {
        BinlogPosition {
            file: file.into(),
            offset,
            gtid: gtid.into(),
        }
    }

    /// The numeric suffix of the file name (`binlog.000003` → 3); binlog files of one server
    /// share a base name and count up.
    pub fn file_sequence(&self) -> u64 {
        self.file
            .rsplit_once('.')
            .and_then(|(_, n)| n.parse().ok())
            .unwrap_or(0)
    }
}

impl PartialOrd for BinlogPosition {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for BinlogPosition {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.file_sequence(), &self.file, self.offset, &self.gtid).cmp(&(
            other.file_sequence(),
            &other.file,
            other.offset,
            &other.gtid,
        ))
    }
}

impl fmt::Display for BinlogPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.offset)?;
        if !self.gtid.is_empty() {
            write!(f, "@{}", self.gtid)?;
        }
        Ok(())
    }
}

impl std::str::FromStr for BinlogPosition {
    type Err = ParsePositionError;

    fn from_str(s: &str) -> Result<BinlogPosition, ParsePositionError> {
        let err = || ParsePositionError(s.to_string());
        let (place, gtid) = s.trim().split_once('@').unwrap_or((s.trim(), ""));
        let (file, offset) = place.rsplit_once(':').ok_or_else(err)?;
        let offset = offset.parse().map_err(|_| err())?;
        if file.is_empty() {
            return Err(err());
        }
        Ok(BinlogPosition::new(file, offset, gtid))
    }
}

/// A moment, to the microsecond, in UTC. Prints as RFC 3339 (`2026-11-22T02:13:16.123456Z`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    /// Microseconds since 1970-01-01T00:00:00Z.
    pub unix_micros: i64,
}

/// Microseconds from the Unix epoch to PostgreSQL's epoch, 2000-01-01.
const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

impl Timestamp {
    /// From PostgreSQL's wire form: microseconds since 2000-01-01.
    pub fn from_pg_micros(micros: i64) -> Timestamp {
        Timestamp {
            unix_micros: micros.saturating_add(PG_EPOCH_UNIX_MICROS),
        }
    }

    pub fn now() -> Timestamp {
        Timestamp::from(SystemTime::now())
    }

    /// Time from `self` to `later`, zero if `later` is earlier.
    pub fn until(self, later: Timestamp) -> Duration {
        let micros = later.unix_micros.saturating_sub(self.unix_micros).max(0);
        Duration::from_micros(micros.unsigned_abs())
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Timestamp {
        let unix_micros = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX),
        };
        Timestamp { unix_micros }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.unix_micros.div_euclid(1_000_000);
        let micros = self.unix_micros.rem_euclid(1_000_000);
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
            sod / 3600,
            (sod / 60) % 60,
            sod % 60
        )
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The text was not an RFC 3339 UTC timestamp as [`Timestamp`] prints it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a UTC timestamp like 2026-11-22T02:13:16.123456Z")]
pub struct ParseTimestampError(pub String);

impl std::str::FromStr for Timestamp {
    type Err = ParseTimestampError;

    /// `YYYY-MM-DDTHH:MM:SS[.fraction]Z`.
    fn from_str(s: &str) -> Result<Timestamp, ParseTimestampError> {
        let err = || ParseTimestampError(s.to_string());
        let body = s.strip_suffix('Z').ok_or_else(err)?;
        let (date, time) = body.split_once('T').ok_or_else(err)?;
        let mut d = date
            .splitn(3, '-')
            .map(|p| p.parse::<i64>().map_err(|_| err()));
        let (y, m, day) = (
            d.next().ok_or_else(err)??,
            d.next().ok_or_else(err)??,
            d.next().ok_or_else(err)??,
        );
        let (hms, fraction) = time.split_once('.').unwrap_or((time, ""));
        let mut t = hms
            .splitn(3, ':')
            .map(|p| p.parse::<i64>().map_err(|_| err()));
        let (hh, mm, ss) = (
            t.next().ok_or_else(err)??,
            t.next().ok_or_else(err)??,
            t.next().ok_or_else(err)??,
        );
        if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
            return Err(err());
        }
        if !fraction.bytes().all(|b| b.is_ascii_digit()) || fraction.len() > 9 {
            return Err(err());
        }
        let micros: i64 = format!("{fraction:0<6}")[..6].parse().map_err(|_| err())?;
        let secs = days_from_civil(y, m, day) * 86_400 + hh * 3600 + mm * 60 + ss;
        Ok(Timestamp {
            unix_micros: secs * 1_000_000 + micros,
        })
    }
}

/// (year, month, day) to days since 1970-01-01 (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// One committed change to one key (or, for a truncate, to a whole table).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub op: Op,
    pub table: TableName,
    /// The row's key after the change (for a delete: the deleted row's key; for a truncate:
    /// empty). The key columns are the primary key, or the replica identity's columns.
    pub key: Key,
    /// The key before an update, only when the update changed it.
    pub old_key: Option<Key>,
    /// The position of the transaction holding this change (what to acknowledge).
    pub position: Position,
    pub committed_at: Timestamp,
    /// The replication origin the writing session had set, if any.
    pub origin: Option<String>,
}

/// A committed transaction, whole. Sources deliver them in commit order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    /// Acknowledge this once the whole transaction is durably handled. PostgreSQL: the end of
    /// the commit record.
    pub position: Position,
    /// Where the commit happened. PostgreSQL: the start of the commit record.
    pub commit_position: Position,
    pub committed_at: Timestamp,
    pub origin: Option<String>,
    /// The source's transaction id (PostgreSQL: the xid), for logs.
    pub source_id: u64,
    pub changes: Vec<Change>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_print_as_rfc3339_utc() {
        assert_eq!(
            Timestamp { unix_micros: 0 }.to_string(),
            "1970-01-01T00:00:00.000000Z"
        );
        assert_eq!(
            Timestamp::from_pg_micros(0).to_string(),
            "2000-01-01T00:00:00.000000Z"
        );
        // 2026-11-22T02:13:16.5Z
        assert_eq!(
            Timestamp {
                unix_micros: 1_795_313_596_500_000
            }
            .to_string(),
            "2026-11-22T02:13:16.500000Z"
        );
        assert_eq!(
            Timestamp {
                unix_micros: 951_782_400_000_000
            }
            .to_string(),
            "2000-02-29T00:00:00.000000Z"
        );
    }

    #[test]
    fn timestamps_parse_what_they_print() {
        for micros in [
            0,
            1_795_313_596_500_000,
            951_782_400_000_001,
            -86_400_000_000,
        ] {
            let t = Timestamp {
                unix_micros: micros,
            };
            assert_eq!(t.to_string().parse::<Timestamp>(), Ok(t));
        }
        assert_eq!(
            "2026-11-22T02:13:16Z"
                .parse::<Timestamp>()
                .map(|t| t.unix_micros),
            Ok(1_795_313_596_000_000)
        );
        assert!("2026-11-22 02:13:16".parse::<Timestamp>().is_err());
        assert!("2026-13-22T02:13:16Z".parse::<Timestamp>().is_err());
    }

    #[test]
    fn binlog_positions_print_parse_and_order_by_file_number() {
        let p: Position = "binlog.000003:1234@0-1-42,1-2-7".parse().unwrap();
        assert_eq!(
            p,
            Position::Binlog(BinlogPosition::new("binlog.000003", 1234, "0-1-42,1-2-7"))
        );
        assert_eq!(p.to_string(), "binlog.000003:1234@0-1-42,1-2-7");
        let plain: Position = "binlog.000003:99".parse().unwrap();
        assert_eq!(plain.to_string(), "binlog.000003:99");
        assert_eq!(
            "0/16B3748".parse::<Position>().unwrap().to_string(),
            "0/16B3748"
        );
        assert!("binlog.000003:x".parse::<Position>().is_err());
        let a = BinlogPosition::new("b.999999", 900, "");
        let b = BinlogPosition::new("b.1000000", 4, "");
        assert!(a < b, "file numbers compare as numbers");
        assert!(BinlogPosition::new("b.000001", 5, "") < BinlogPosition::new("b.000001", 50, ""));
    }

    #[test]
    fn table_names_parse_with_public_as_the_default_schema() {
        assert_eq!(TableName::parse("t"), Some(TableName::new("public", "t")));
        assert_eq!(TableName::parse("s.t"), Some(TableName::new("s", "t")));
        assert_eq!(TableName::parse("a.b.c"), None);
        assert_eq!(TableName::parse(".t"), None);
        assert_eq!(
            TableName::new("s", "we\"ird").quoted(),
            "\"s\".\"we\"\"ird\""
        );
    }
}
