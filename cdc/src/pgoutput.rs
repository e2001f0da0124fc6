//! The `pgoutput` logical replication message format (protocol version 1): a pure decoder from
//! bytes to [`Message`], and the matching encoder (used by the property tests and by tools that
//! fabricate streams). No I/O here.
//!
//! Reference: "Logical Replication Message Formats" in the PostgreSQL documentation.

use crate::lsn::Lsn;

/// One pgoutput message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Begin(Begin),
    Commit(Commit),
    Origin(Origin),
    Relation(Relation),
    Type(Type),
    Insert(Insert),
    Update(Update),
    Delete(Delete),
    Truncate(Truncate),
    /// A `pg_logical_emit_message()` message.
    Message(LogicalMessage),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Begin {
    /// The LSN of the transaction's commit record (the commit's start).
    pub final_lsn: Lsn,
    /// Microseconds since 2000-01-01.
    pub commit_time: i64,
    pub xid: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commit {
    pub flags: u8,
    /// The start of the commit record.
    pub commit_lsn: Lsn,
    /// The end of the commit record: where a restarted stream resumes after this transaction.
    pub end_lsn: Lsn,
    pub commit_time: i64,
}

/// The replication origin of the transaction that follows its Begin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub commit_lsn: Lsn,
    pub name: String,
}

/// `REPLICA IDENTITY` of a relation, as the catalog's `relreplident` letter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicaIdentity {
    /// `d`: the primary key.
    Default,
    /// `n`: nothing.
    Nothing,
    /// `f`: the whole row.
    Full,
    /// `i`: a chosen unique index.
    Index,
}

impl ReplicaIdentity {
    pub fn from_byte(b: u8) -> Option<ReplicaIdentity> {
        Some(match b {
            b'd' => ReplicaIdentity::Default,
            b'n' => ReplicaIdentity::Nothing,
            b'f' => ReplicaIdentity::Full,
            b'i' => ReplicaIdentity::Index,
            _ => return None,
        })
    }

    pub fn as_byte(self) -> u8 {
        match self {
            ReplicaIdentity::Default => b'd',
            ReplicaIdentity::Nothing => b'n',
            ReplicaIdentity::Full => b'f',
            ReplicaIdentity::Index => b'i',
        }
    }
}

/// Describes a table before the first change to it in a session (and again after it changes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relation {
    pub oid: u32,
    /// The schema; the server sends an empty string for `pg_catalog`.
    pub namespace: String,
    pub name: String,
    pub replica_identity: ReplicaIdentity,
    pub columns: Vec<Column>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    /// True when the column is part of the replica identity key.
    pub is_key: bool,
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
}

/// Describes a non-built-in data type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Type {
    pub oid: u32,
    pub namespace: String,
    pub name: String,
}

/// One column's value in a tuple.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TupleValue {
    Null,
    /// A TOASTed value the change did not touch: the server does not send it.
    UnchangedToast,
    /// Text format.
    Text(Vec<u8>),
    /// Binary format (only when the stream asked for `binary`).
    Binary(Vec<u8>),
}

/// A row image: one value per column of the relation.
pub type Tuple = Vec<TupleValue>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Insert {
    pub relation: u32,
    pub new: Tuple,
}

/// The old row image an update or delete carries, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OldTuple {
    /// `K`: only the replica identity key columns (others are null).
    Key(Tuple),
    /// `O`: the whole old row (`REPLICA IDENTITY FULL`).
    Full(Tuple),
}

impl OldTuple {
    pub fn tuple(&self) -> &Tuple {
        match self {
            OldTuple::Key(t) | OldTuple::Full(t) => t,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Update {
    pub relation: u32,
    /// Present when the key changed, a key column was stored out of line, or the identity is FULL.
    pub old: Option<OldTuple>,
    pub new: Tuple,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delete {
    pub relation: u32,
    pub old: OldTuple,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Truncate {
    /// Bit 1: CASCADE, bit 2: RESTART IDENTITY.
    pub options: u8,
    pub relations: Vec<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogicalMessage {
    pub transactional: bool,
    pub lsn: Lsn,
    pub prefix: String,
    pub content: Vec<u8>,
}

/// The bytes were not a well-formed pgoutput message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty pgoutput message")]
    Empty,
    #[error("unknown pgoutput message type {0:?}")]
    UnknownTag(char),
    #[error("pgoutput {message} message ends early (wanted {wanted} more bytes at offset {at})")]
    Truncated {
        message: &'static str,
        at: usize,
        wanted: usize,
    },
    #[error("pgoutput {message} message: {what}")]
    Malformed { message: &'static str, what: String },
    #[error("pgoutput {message} message has {extra} bytes after its end")]
    Trailing { message: &'static str, extra: usize },
}

/// Decode one pgoutput message (the payload of one XLogData).
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    let (&tag, _) = bytes.split_first().ok_or(DecodeError::Empty)?;
    let name = message_name(tag).ok_or(DecodeError::UnknownTag(char::from(tag)))?;
    let mut r = Reader {
        buf: bytes,
        at: 1,
        message: name,
    };
    let message = match tag {
        b'B' => Message::Begin(Begin {
            final_lsn: Lsn(r.u64()?),
            commit_time: r.i64()?,
            xid: r.u32()?,
        }),
        b'C' => Message::Commit(Commit {
            flags: r.u8()?,
            commit_lsn: Lsn(r.u64()?),
            end_lsn: Lsn(r.u64()?),
            commit_time: r.i64()?,
        }),
        b'O' => Message::Origin(Origin {
            commit_lsn: Lsn(r.u64()?),
            name: r.cstring()?,
        }),
        b'R' => {
            let oid = r.u32()?;
            let namespace = r.cstring()?;
            let name = r.cstring()?;
            let ident = r.u8()?;
            let replica_identity = ReplicaIdentity::from_byte(ident)
                .ok_or_else(|| r.malformed(format!("replica identity {:?}", char::from(ident))))?;
            let count = r.count16()?;
            let mut columns = Vec::with_capacity(count.min(1600));
            for _ in 0..count {
                columns.push(Column {
                    is_key: r.u8()? & 1 == 1,
                    name: r.cstring()?,
                    type_oid: r.u32()?,
                    type_modifier: r.i32()?,
                });
            }
            Message::Relation(Relation {
                oid,
                namespace,
                name,
                replica_identity,
                columns,
            })
        }
        b'Y' => Message::Type(Type {
            oid: r.u32()?,
            namespace: r.cstring()?,
            name: r.cstring()?,
        }),
        b'I' => {
            let relation = r.u32()?;
            r.expect(b'N')?;
            Message::Insert(Insert {
                relation,
                new: r.tuple()?,
            })
        }
        b'U' => {
            let relation = r.u32()?;
            let old = match r.u8()? {
                b'K' => {
                    let old = OldTuple::Key(r.tuple()?);
                    r.expect(b'N')?;
                    Some(old)
                }
                b'O' => {
                    let old = OldTuple::Full(r.tuple()?);
                    r.expect(b'N')?;
                    Some(old)
                }
                b'N' => None,
                other => {
                    return Err(r.malformed(format!(
                        "expected K, O or N before a tuple, got {:?}",
                        char::from(other)
                    )))
                }
            };
            Message::Update(Update {
                relation,
                old,
                new: r.tuple()?,
            })
        }
        b'D' => {
            let relation = r.u32()?;
            let old = match r.u8()? {
                b'K' => OldTuple::Key(r.tuple()?),
                b'O' => OldTuple::Full(r.tuple()?),
                other => {
                    return Err(r.malformed(format!(
                        "expected K or O before the old tuple, got {:?}",
                        char::from(other)
                    )))
                }
            };
            Message::Delete(Delete { relation, old })
        }
        b'T' => {
            let count = r.u32()?;
            let options = r.u8()?;
            let mut relations = Vec::with_capacity((count as usize).min(1024));
            for _ in 0..count {
                relations.push(r.u32()?);
            }
            Message::Truncate(Truncate { options, relations })
        }
        b'M' => {
            let flags = r.u8()?;
            let lsn = Lsn(r.u64()?);
            let prefix = r.cstring()?;
            let len = r.u32()? as usize;
            Message::Message(LogicalMessage {
                transactional: flags & 1 == 1,
                lsn,
                prefix,
                content: r.take(len)?.to_vec(),
            })
        }
        _ => return Err(DecodeError::UnknownTag(char::from(tag))),
    };
    if r.at != bytes.len() {
        return Err(DecodeError::Trailing {
            message: name,
            extra: bytes.len() - r.at,
        });
    }
    Ok(message)
}

fn message_name(tag: u8) -> Option<&'static str> {
    Some(match tag {
        b'B' => "Begin",
        b'C' => "Commit",
        b'O' => "Origin",
        b'R' => "Relation",
        b'Y' => "Type",
        b'I' => "Insert",
        b'U' => "Update",
        b'D' => "Delete",
        b'T' => "Truncate",
        b'M' => "Message",
        _ => return None,
    })
}

/// A cursor over one message; every read checks the length.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
    message: &'static str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.buf.len())
            .ok_or(DecodeError::Truncated {
                message: self.message,
                at: self.at,
                wanted: n,
            })?;
        let out = &self.buf[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    fn count16(&mut self) -> Result<usize, DecodeError> {
        let n = i16::from_be_bytes(self.array()?);
        usize::try_from(n).map_err(|_| self.malformed(format!("negative column count {n}")))
    }

    fn cstring(&mut self) -> Result<String, DecodeError> {
        let rest = &self.buf[self.at..];
        let len = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(DecodeError::Truncated {
                message: self.message,
                at: self.at,
                wanted: rest.len() + 1,
            })?;
        let s = std::str::from_utf8(&rest[..len])
            .map_err(|e| self.malformed(format!("string is not UTF-8: {e}")))?
            .to_string();
        self.at += len + 1;
        Ok(s)
    }

    fn expect(&mut self, want: u8) -> Result<(), DecodeError> {
        let got = self.u8()?;
        if got != want {
            return Err(self.malformed(format!(
                "expected {:?}, got {:?}",
                char::from(want),
                char::from(got)
            )));
        }
        Ok(())
    }

    fn tuple(&mut self) -> Result<Tuple, DecodeError> {
        let count = self.count16()?;
        let mut values = Vec::with_capacity(count.min(1600));
        for _ in 0..count {
            values.push(match self.u8()? {
                b'n' => TupleValue::Null,
                b'u' => TupleValue::UnchangedToast,
                b't' => {
                    let len = self.u32()? as usize;
                    TupleValue::Text(self.take(len)?.to_vec())
                }
                b'b' => {
                    let len = self.u32()? as usize;
                    TupleValue::Binary(self.take(len)?.to_vec())
                }
                other => {
                    return Err(
                        self.malformed(format!("unknown tuple value kind {:?}", char::from(other)))
                    )
                }
            });
        }
        Ok(values)
    }

    fn malformed(&self, what: String) -> DecodeError {
        DecodeError::Malformed {
            message: self.message,
            what,
        }
    }
}

/// Encode a message the way the server does. The inverse of [`decode`].
pub fn encode(message: &Message) -> Vec<u8> {
    let mut w = Vec::with_capacity(64);
    match message {
        Message::Begin(m) => {
            w.push(b'B');
            w.extend(m.final_lsn.0.to_be_bytes());
            w.extend(m.commit_time.to_be_bytes());
            w.extend(m.xid.to_be_bytes());
        }
        Message::Commit(m) => {
            w.push(b'C');
            w.push(m.flags);
            w.extend(m.commit_lsn.0.to_be_bytes());
            w.extend(m.end_lsn.0.to_be_bytes());
            w.extend(m.commit_time.to_be_bytes());
        }
        Message::Origin(m) => {
            w.push(b'O');
            w.extend(m.commit_lsn.0.to_be_bytes());
            put_cstring(&mut w, &m.name);
        }
        Message::Relation(m) => {
            w.push(b'R');
            w.extend(m.oid.to_be_bytes());
            put_cstring(&mut w, &m.namespace);
            put_cstring(&mut w, &m.name);
            w.push(m.replica_identity.as_byte());
            w.extend(count16(m.columns.len()).to_be_bytes());
            for c in &m.columns {
                w.push(u8::from(c.is_key));
                put_cstring(&mut w, &c.name);
                w.extend(c.type_oid.to_be_bytes());
                w.extend(c.type_modifier.to_be_bytes());
            }
        }
        Message::Type(m) => {
            w.push(b'Y');
            w.extend(m.oid.to_be_bytes());
            put_cstring(&mut w, &m.namespace);
            put_cstring(&mut w, &m.name);
        }
        Message::Insert(m) => {
            w.push(b'I');
            w.extend(m.relation.to_be_bytes());
            w.push(b'N');
            put_tuple(&mut w, &m.new);
        }
        Message::Update(m) => {
            w.push(b'U');
            w.extend(m.relation.to_be_bytes());
            match &m.old {
                Some(OldTuple::Key(t)) => {
                    w.push(b'K');
                    put_tuple(&mut w, t);
                }
                Some(OldTuple::Full(t)) => {
                    w.push(b'O');
                    put_tuple(&mut w, t);
                }
                None => {}
            }
            w.push(b'N');
            put_tuple(&mut w, &m.new);
        }
        Message::Delete(m) => {
            w.push(b'D');
            w.extend(m.relation.to_be_bytes());
            let (tag, t) = match &m.old {
                OldTuple::Key(t) => (b'K', t),
                OldTuple::Full(t) => (b'O', t),
            };
            w.push(tag);
            put_tuple(&mut w, t);
        }
        Message::Truncate(m) => {
            w.push(b'T');
            w.extend(
                u32::try_from(m.relations.len())
                    .unwrap_or(u32::MAX)
                    .to_be_bytes(),
            );
            w.push(m.options);
            for oid in &m.relations {
                w.extend(oid.to_be_bytes());
            }
        }
        Message::Message(m) => {
            w.push(b'M');
            w.push(u8::from(m.transactional));
            w.extend(m.lsn.0.to_be_bytes());
            put_cstring(&mut w, &m.prefix);
            w.extend(
                u32::try_from(m.content.len())
                    .unwrap_or(u32::MAX)
                    .to_be_bytes(),
            );
            w.extend(&m.content);
        }
    }
    w
}

fn count16(n: usize) -> i16 {
    i16::try_from(n).unwrap_or(i16::MAX)
}

fn put_cstring(w: &mut Vec<u8>, s: &str) {
    w.extend(s.as_bytes());
    w.push(0);
}

fn put_tuple(w: &mut Vec<u8>, t: &Tuple) {
    w.extend(count16(t.len()).to_be_bytes());
    for v in t {
        match v {
            TupleValue::Null => w.push(b'n'),
            TupleValue::UnchangedToast => w.push(b'u'),
            TupleValue::Text(b) => {
                w.push(b't');
                w.extend(u32::try_from(b.len()).unwrap_or(u32::MAX).to_be_bytes());
                w.extend(b);
            }
            TupleValue::Binary(b) => {
                w.push(b'b');
                w.extend(u32::try_from(b.len()).unwrap_or(u32::MAX).to_be_bytes());
                w.extend(b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_an_insert_as_the_server_sends_it() {
        // I, relation 16384, N, 2 columns: text "1", null
        let bytes = b"I\x00\x00\x40\x00N\x00\x02t\x00\x00\x00\x011n";
        assert_eq!(
            decode(bytes),
            Ok(Message::Insert(Insert {
                relation: 16384,
                new: vec![TupleValue::Text(b"1".to_vec()), TupleValue::Null],
            }))
        );
    }

    #[test]
    fn a_truncated_message_is_an_error_not_a_panic() {
        let full = encode(&Message::Begin(Begin {
            final_lsn: Lsn(1),
            commit_time: 2,
            xid: 3,
        }));
        for cut in 0..full.len() {
            assert!(decode(&full[..cut]).is_err(), "cut at {cut} decoded");
        }
        assert!(decode(b"Z").is_err());
    }
}
