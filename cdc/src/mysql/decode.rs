//! What `mysql_common` leaves to us: MariaDB's own binlog events (GTID 162, GTID list 163,
//! which its event enum does not know), the GTID state they add up to, and turning a key
//! column's binlog value into the neutral [`Value`].

use crate::change::Value;
use mysql_common::value::Value as MyValue;
use std::collections::BTreeMap;
use std::fmt;

/// MariaDB event types `mysql_common` does not parse (see MariaDB's `log_event.h`).
pub(crate) mod mariadb_event {
    // 160 (ANNOTATE_ROWS: the statement behind the row events that follow) and 161
    // (BINLOG_CHECKPOINT) carry nothing a capture needs.
    /// Starts a transaction (event group) and names its GTID.
    pub const GTID: u8 = 162;
    /// The GTID state at the start of a binlog file.
    pub const GTID_LIST: u8 = 163;
    /// `log_bin_compress`: compressed query and row events (165–171).
    pub const FIRST_COMPRESSED: u8 = 165;
    pub const LAST_COMPRESSED: u8 = 171;
}

/// GTID event flag: the group has no terminating COMMIT/XID (DDL and other stand-alone
/// statements).
const FL_STANDALONE: u8 = 1;

/// One MariaDB GTID: `domain-server-sequence`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MariaGtid {
    pub domain: u32,
    pub server: u32,
    pub seq: u64,
}

impl fmt::Display for MariaGtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server, self.seq)
    }
}

/// A MariaDB GTID event's body: the GTID (the server id comes from the event header) and
/// whether the group stands alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MariaGtidEvent {
    pub gtid: MariaGtid,
    pub standalone: bool,
}

/// Decode a GTID event's data (after the 19-byte header, checksum removed):
/// `seq_no: u64, domain_id: u32, flags2: u8, …`.
pub(crate) fn parse_gtid_event(data: &[u8], server: u32) -> Result<MariaGtidEvent, String> {
    if data.len() < 13 {
        return Err(format!(
            "MariaDB GTID event of {} bytes (at least 13 expected)",
            data.len()
        ));
    }
    let seq = u64::from_le_bytes(le_array(&data[0..8]));
    let domain = u32::from_le_bytes(le_array(&data[8..12]));
    let flags = data[12];
    Ok(MariaGtidEvent {
        gtid: MariaGtid {
            domain,
            server,
            seq,
        },
        standalone: flags & FL_STANDALONE != 0,
    })
}

/// Decode a GTID list event's data: `count: u32` (low 28 bits; the top 4 are flags), then
/// `count` × (`domain: u32`, `server: u32`, `seq: u64`).
pub(crate) fn parse_gtid_list_event(data: &[u8]) -> Result<Vec<MariaGtid>, String> {
    if data.len() < 4 {
        return Err("MariaDB GTID list event shorter than its count".into());
    }
    let count = (u32::from_le_bytes(le_array(&data[0..4])) & 0x0FFF_FFFF) as usize;
    let body = &data[4..];
    if body.len() < count * 16 {
        return Err(format!(
            "MariaDB GTID list event announces {count} GTIDs in {} bytes",
            body.len()
        ));
    }
    Ok(body
        .chunks_exact(16)
        .take(count)
        .map(|c| MariaGtid {
            domain: u32::from_le_bytes(le_array(&c[0..4])),
            server: u32::from_le_bytes(le_array(&c[4..8])),
            seq: u64::from_le_bytes(le_array(&c[8..16])),
        })
        .collect())
}

fn le_array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[..N]);
    out
}

/// MariaDB's GTID position: the last GTID of each replication domain (what
/// `@@gtid_binlog_pos` and `BINLOG_GTID_POS()` print, `0-1-42,1-2-7`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct GtidState {
    domains: BTreeMap<u32, MariaGtid>,
}

impl GtidState {
    /// Parse `0-1-42,1-2-7` (empty text: no GTIDs yet).
    pub fn parse(text: &str) -> Result<GtidState, String> {
        let mut state = GtidState::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let mut nums = part.splitn(3, '-').map(str::parse::<u64>);
            let bad = || format!("{part:?} is not a MariaDB GTID (domain-server-sequence)");
            let (Some(Ok(domain)), Some(Ok(server)), Some(Ok(seq))) =
                (nums.next(), nums.next(), nums.next())
            else {
                return Err(bad());
            };
            let (Ok(domain), Ok(server)) = (u32::try_from(domain), u32::try_from(server)) else {
                return Err(bad());
            };
            state.add(MariaGtid {
                domain,
                server,
                seq,
            });
        }
        Ok(state)
    }

    /// The GTID becomes its domain's last one.
    pub fn add(&mut self, gtid: MariaGtid) {
        self.domains.insert(gtid.domain, gtid);
    }

    /// Learn domains from a GTID list without moving a domain already known further back.
    pub fn merge(&mut self, list: &[MariaGtid]) {
        for gtid in list {
            let known = self
                .domains
                .get(&gtid.domain)
                .is_some_and(|k| k.seq >= gtid.seq);
            if !known {
                self.domains.insert(gtid.domain, *gtid);
            }
        }
    }
}

impl fmt::Display for GtidState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, gtid) in self.domains.values().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            gtid.fmt(f)?;
        }
        Ok(())
    }
}

/// How a key column's binlog value becomes a [`Value`], from the column's SQL type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyKind {
    /// Integer types; `bytes` is the storage width (for unsigned values the binlog gives as
    /// negative numbers).
    Int {
        unsigned: bool,
        bytes: u32,
    },
    /// decimal, float, double: the number's text.
    Number,
    /// char, varchar, text: UTF-8 text.
    Text,
    /// binary, varbinary, blob: `\x` and hexadecimal digits, as PostgreSQL prints bytea.
    Binary,
    Date,
    DateTime,
    /// `TIMESTAMP`: seconds since the epoch in the binlog, printed in UTC.
    Timestamp,
    Time,
    Year,
    Bit,
}

impl KeyKind {
    /// The kind for `information_schema.COLUMNS.DATA_TYPE` / `COLUMN_TYPE`, or `None` for a
    /// type a key cannot carry yet (enum, set, json, geometry, …).
    pub fn of(data_type: &str, column_type: &str) -> Option<KeyKind> {
        let unsigned = column_type.to_ascii_lowercase().contains("unsigned");
        Some(match data_type.to_ascii_lowercase().as_str() {
            "tinyint" => KeyKind::Int { unsigned, bytes: 1 },
            "smallint" => KeyKind::Int { unsigned, bytes: 2 },
            "mediumint" => KeyKind::Int { unsigned, bytes: 3 },
            "int" | "integer" => KeyKind::Int { unsigned, bytes: 4 },
            "bigint" => KeyKind::Int { unsigned, bytes: 8 },
            "decimal" | "numeric" | "float" | "double" | "real" => KeyKind::Number,
            "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" => KeyKind::Text,
            "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => {
                KeyKind::Binary
            }
            "date" => KeyKind::Date,
            "datetime" => KeyKind::DateTime,
            "timestamp" => KeyKind::Timestamp,
            "time" => KeyKind::Time,
            "year" => KeyKind::Year,
            "bit" => KeyKind::Bit,
            _ => return None,
        })
    }

    /// The neutral value of `value`, a key column's value as `mysql_common` decoded it.
    pub fn value(self, value: &MyValue) -> Result<Value, String> {
        let unexpected = || format!("unexpected binlog value {value:?} for a {self:?} column");
        Ok(match (self, value) {
            (_, MyValue::NULL) => Value::Null,
            (KeyKind::Int { unsigned, bytes }, MyValue::Int(i)) => {
                if unsigned && *i < 0 {
                    let wide = i128::from(*i) + (1i128 << (8 * bytes));
                    match i64::try_from(wide) {
                        Ok(v) => Value::Int(v),
                        Err(_) => Value::Text(wide.to_string()),
                    }
                } else {
                    Value::Int(*i)
                }
            }
            (KeyKind::Int { .. }, MyValue::UInt(u)) => match i64::try_from(*u) {
                Ok(v) => Value::Int(v),
                Err(_) => Value::Text(u.to_string()),
            },
            (KeyKind::Number, MyValue::Bytes(b)) => Value::Text(utf8(b)),
            (KeyKind::Number, MyValue::Float(f)) => Value::Text(f.to_string()),
            (KeyKind::Number, MyValue::Double(d)) => Value::Text(d.to_string()),
            (KeyKind::Text, MyValue::Bytes(b)) => Value::Text(utf8(b)),
            (KeyKind::Binary, MyValue::Bytes(b)) => {
                let mut text = String::with_capacity(2 + 2 * b.len());
                text.push_str("\\x");
                for byte in b {
                    text.push_str(&format!("{byte:02x}"));
                }
                Value::Text(text)
            }
            (KeyKind::Date, MyValue::Date(y, m, d, ..)) => {
                Value::Text(format!("{y:04}-{m:02}-{d:02}"))
            }
            (KeyKind::DateTime, MyValue::Date(y, m, d, hh, mm, ss, us)) => {
                Value::Text(datetime_text(*y, *m, *d, *hh, *mm, *ss, *us))
            }
            (KeyKind::Timestamp, MyValue::Int(secs)) => Value::Text(unix_text(*secs, 0)),
            (KeyKind::Timestamp, MyValue::Bytes(b)) => {
                // TIMESTAMP2: "seconds" or "seconds.micros".
                let text = utf8(b);
                let (secs, micros) = text.split_once('.').unwrap_or((&text, "0"));
                let secs: i64 = secs.parse().map_err(|_| unexpected())?;
                let micros: u32 = micros.parse().map_err(|_| unexpected())?;
                Value::Text(unix_text(secs, micros))
            }
            (KeyKind::Time, MyValue::Time(neg, days, h, m, s, us)) => {
                let hours = u64::from(*days) * 24 + u64::from(*h);
                let sign = if *neg { "-" } else { "" };
                let mut text = format!("{sign}{hours:02}:{m:02}:{s:02}");
                if *us != 0 {
                    text.push_str(&format!(".{us:06}"));
                }
                Value::Text(text)
            }
            (KeyKind::Year, MyValue::Bytes(b)) => {
                Value::Int(utf8(b).parse().map_err(|_| unexpected())?)
            }
            (KeyKind::Year, MyValue::Int(y)) => Value::Int(*y),
            (KeyKind::Bit, MyValue::Bytes(b)) => {
                let mut v: u64 = 0;
                for byte in b.iter().take(8) {
                    v = (v << 8) | u64::from(*byte);
                }
                match i64::try_from(v) {
                    Ok(v) => Value::Int(v),
                    Err(_) => Value::Text(v.to_string()),
                }
            }
            _ => return Err(unexpected()),
        })
    }
}

fn utf8(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn datetime_text(y: u16, m: u8, d: u8, hh: u8, mm: u8, ss: u8, us: u32) -> String {
    let mut text = format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02}");
    if us != 0 {
        text.push_str(&format!(".{us:06}"));
    }
    text
}

/// Seconds since the epoch as `YYYY-MM-DD HH:MM:SS[.ffffff]` in UTC.
fn unix_text(secs: i64, micros: u32) -> String {
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = crate::change::civil_from_days(days);
    datetime_text(
        u16::try_from(y).unwrap_or(0),
        m as u8,
        d as u8,
        (sod / 3600) as u8,
        ((sod / 60) % 60) as u8,
        (sod % 60) as u8,
        micros,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gtid_events_decode_from_their_raw_bytes() {
        // seq 42, domain 3, flags2 = standalone | group commit, commit id 9.
        let mut data = Vec::new();
        data.extend_from_slice(&42u64.to_le_bytes());
        data.extend_from_slice(&3u32.to_le_bytes());
        data.push(0x03);
        data.extend_from_slice(&9u64.to_le_bytes());
        let event = parse_gtid_event(&data, 7).unwrap();
        assert_eq!(event.gtid.to_string(), "3-7-42");
        assert!(event.standalone);
        data[12] = 0x0c;
        assert!(!parse_gtid_event(&data, 7).unwrap().standalone);
        assert!(parse_gtid_event(&data[..10], 7).is_err());
    }

    #[test]
    fn gtid_lists_decode_and_merge_without_going_back() {
        let mut data = Vec::new();
        data.extend_from_slice(&2u32.to_le_bytes());
        for (domain, server, seq) in [(0u32, 1u32, 10u64), (2, 5, 7)] {
            data.extend_from_slice(&domain.to_le_bytes());
            data.extend_from_slice(&server.to_le_bytes());
            data.extend_from_slice(&seq.to_le_bytes());
        }
        let list = parse_gtid_list_event(&data).unwrap();
        let mut state = GtidState::parse("0-1-12").unwrap();
        state.merge(&list);
        assert_eq!(state.to_string(), "0-1-12,2-5-7");
        state.add(MariaGtid {
            domain: 2,
            server: 5,
            seq: 8,
        });
        assert_eq!(state.to_string(), "0-1-12,2-5-8");
        assert_eq!(GtidState::parse(&state.to_string()).unwrap(), state);
        assert!(GtidState::parse("0-1").is_err());
        assert!(parse_gtid_list_event(&data[..20]).is_err());
    }

    #[test]
    fn key_values_map_like_the_postgresql_side() {
        let int = KeyKind::of("int", "int(10) unsigned").unwrap();
        assert_eq!(
            int.value(&MyValue::Int(-1)).unwrap(),
            Value::Int(4_294_967_295)
        );
        let big = KeyKind::of("bigint", "bigint(20) unsigned").unwrap();
        assert_eq!(
            big.value(&MyValue::Int(-1)).unwrap(),
            Value::Text("18446744073709551615".into())
        );
        assert_eq!(
            KeyKind::Binary
                .value(&MyValue::Bytes(vec![0xde, 0xad]))
                .unwrap(),
            Value::Text("\\xdead".into())
        );
        assert_eq!(
            KeyKind::Timestamp
                .value(&MyValue::Bytes(b"1700000000.500000".to_vec()))
                .unwrap(),
            Value::Text("2023-11-14 22:13:20.500000".into())
        );
        assert_eq!(
            KeyKind::DateTime
                .value(&MyValue::Date(2024, 2, 29, 1, 2, 3, 0))
                .unwrap(),
            Value::Text("2024-02-29 01:02:03".into())
        );
        assert_eq!(KeyKind::of("enum", "enum('a','b')"), None);
        assert_eq!(KeyKind::of("json", "json"), None);
        assert!(KeyKind::Text.value(&MyValue::Int(1)).is_err());
    }
}
