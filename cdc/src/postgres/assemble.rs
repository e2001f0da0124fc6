//! Turns decoded pgoutput messages into whole [`Transaction`]s: keeps the relation cache, picks
//! each change's key columns, and fills a TOASTed unchanged key column from the old key. Pure:
//! no I/O, so the stream can stay cancel-safe by keeping all state here.

use crate::change::{Change, Key, Op, Position, TableName, Timestamp, Transaction, Value};
use crate::error::CdcError;
use crate::pgoutput::{Begin, Commit, Message, OldTuple, Relation, Tuple, TupleValue};
use std::collections::HashMap;

/// A relation as the stream last described it, with the positions of its key columns.
#[derive(Debug)]
struct RelationInfo {
    table: TableName,
    columns: Vec<(String, u32)>,
    key: Vec<usize>,
}

#[derive(Debug)]
struct OpenTransaction {
    begin: Begin,
    origin: Option<String>,
    changes: Vec<PendingChange>,
}

/// A change whose position (the transaction's end) is known only at commit.
#[derive(Debug)]
struct PendingChange {
    op: Op,
    table: TableName,
    key: Key,
    old_key: Option<Key>,
}

#[derive(Debug, Default)]
pub(crate) struct Assembler {
    relations: HashMap<u32, RelationInfo>,
    /// Key columns learnt from the catalog; they win over the Relation message's key flags
    /// (which mark every column under REPLICA IDENTITY FULL).
    keys: HashMap<TableName, Vec<String>>,
    open: Option<OpenTransaction>,
}

impl Assembler {
    pub(crate) fn set_key(&mut self, table: TableName, key: Vec<String>) {
        self.keys.insert(table, key);
    }

    /// True between transactions.
    pub(crate) fn is_idle(&self) -> bool {
        self.open.is_none()
    }

    pub(crate) fn begin(&mut self, begin: Begin) -> Result<(), CdcError> {
        if let Some(open) = &self.open {
            return Err(CdcError::Protocol(format!(
                "Begin of xid {} while xid {} is still open",
                begin.xid, open.begin.xid
            )));
        }
        self.open = Some(OpenTransaction {
            begin,
            origin: None,
            changes: Vec::new(),
        });
        Ok(())
    }

    /// Take one message from inside a transaction (or a Relation/Type between them).
    pub(crate) fn message(&mut self, message: Message) -> Result<(), CdcError> {
        match message {
            Message::Begin(b) => self.begin(b),
            Message::Commit(_) => Err(CdcError::Protocol(
                "Commit must go through Assembler::commit".into(),
            )),
            Message::Relation(r) => {
                self.relation(r);
                Ok(())
            }
            Message::Type(_) | Message::Message(_) => Ok(()),
            Message::Origin(o) => {
                self.open_mut("Origin")?.origin = Some(o.name);
                Ok(())
            }
            Message::Insert(m) => {
                let rel = self.relation_info(m.relation)?;
                let key = rel.key_of(&m.new, None)?;
                let change = PendingChange {
                    op: Op::Insert,
                    table: rel.table.clone(),
                    key,
                    old_key: None,
                };
                self.push(change)
            }
            Message::Update(m) => {
                let rel = self.relation_info(m.relation)?;
                let old = m.old.as_ref().map(OldTuple::tuple);
                let key = rel.key_of(&m.new, old)?;
                let old_key = match old {
                    Some(old) => Some(rel.key_of(old, None)?).filter(|k| *k != key),
                    None => None,
                };
                let change = PendingChange {
                    op: Op::Update,
                    table: rel.table.clone(),
                    key,
                    old_key,
                };
                self.push(change)
            }
            Message::Delete(m) => {
                let rel = self.relation_info(m.relation)?;
                let key = rel.key_of(m.old.tuple(), None)?;
                let change = PendingChange {
                    op: Op::Delete,
                    table: rel.table.clone(),
                    key,
                    old_key: None,
                };
                self.push(change)
            }
            Message::Truncate(m) => {
                for oid in m.relations {
                    let table = self.relation_info(oid)?.table.clone();
                    self.push(PendingChange {
                        op: Op::Truncate,
                        table,
                        key: Vec::new(),
                        old_key: None,
                    })?;
                }
                Ok(())
            }
        }
    }

    /// Close the open transaction.
    pub(crate) fn commit(&mut self, commit: Commit) -> Result<Transaction, CdcError> {
        let open = self.open.take().ok_or_else(|| {
            CdcError::Protocol(format!("Commit at {} without a Begin", commit.commit_lsn))
        })?;
        let position = Position::Lsn(commit.end_lsn);
        let committed_at = Timestamp::from_pg_micros(commit.commit_time);
        let changes = open
            .changes
            .into_iter()
            .map(|c| Change {
                op: c.op,
                table: c.table,
                key: c.key,
                old_key: c.old_key,
                position: position.clone(),
                committed_at,
                origin: open.origin.clone(),
            })
            .collect();
        Ok(Transaction {
            position,
            commit_position: Position::Lsn(commit.commit_lsn),
            committed_at,
            origin: open.origin,
            source_id: u64::from(open.begin.xid),
            changes,
        })
    }

    fn relation(&mut self, r: Relation) {
        // The server sends "" for pg_catalog.
        let schema = if r.namespace.is_empty() {
            "pg_catalog".to_string()
        } else {
            r.namespace
        };
        let table = TableName::new(schema, r.name);
        let names: Vec<&str> = r.columns.iter().map(|c| c.name.as_str()).collect();
        let from_catalog = self.keys.get(&table).and_then(|key| {
            key.iter()
                .map(|k| names.iter().position(|n| n == k))
                .collect::<Option<Vec<usize>>>()
        });
        let key = from_catalog.unwrap_or_else(|| {
            r.columns
                .iter()
                .enumerate()
                .filter(|(_, c)| c.is_key)
                .map(|(i, _)| i)
                .collect()
        });
        let columns = r
            .columns
            .into_iter()
            .map(|c| (c.name, c.type_oid))
            .collect();
        self.relations.insert(
            r.oid,
            RelationInfo {
                table,
                columns,
                key,
            },
        );
    }

    fn relation_info(&self, oid: u32) -> Result<&RelationInfo, CdcError> {
        self.relations.get(&oid).ok_or_else(|| {
            CdcError::Protocol(format!(
                "change to relation {oid} before its Relation message"
            ))
        })
    }

    fn open_mut(&mut self, what: &str) -> Result<&mut OpenTransaction, CdcError> {
        self.open
            .as_mut()
            .ok_or_else(|| CdcError::Protocol(format!("{what} message outside a transaction")))
    }

    fn push(&mut self, change: PendingChange) -> Result<(), CdcError> {
        self.open_mut("change")?.changes.push(change);
        Ok(())
    }

    /// The commit LSN of the open transaction, if any.
    #[cfg(test)]
    pub(crate) fn open_final_lsn(&self) -> Option<crate::lsn::Lsn> {
        self.open.as_ref().map(|o| o.begin.final_lsn)
    }
}

impl RelationInfo {
    /// The key of `tuple`; a key column the server left out as unchanged TOAST is taken from
    /// `fallback` (the old key the server logs in that case).
    fn key_of(&self, tuple: &Tuple, fallback: Option<&Tuple>) -> Result<Key, CdcError> {
        self.key
            .iter()
            .map(|&i| {
                let (name, type_oid) = self.columns.get(i).ok_or_else(|| {
                    CdcError::Protocol(format!("{}: key column {i} out of range", self.table))
                })?;
                let mut value = tuple.get(i);
                if matches!(value, Some(TupleValue::UnchangedToast)) {
                    value = fallback.and_then(|old| old.get(i));
                }
                let value = match value {
                    Some(TupleValue::Null) => Value::Null,
                    Some(TupleValue::Text(bytes)) => typed_value(*type_oid, bytes),
                    Some(TupleValue::Binary(_)) => {
                        return Err(CdcError::Protocol(format!(
                            "{}.{name}: binary values are not requested",
                            self.table
                        )))
                    }
                    Some(TupleValue::UnchangedToast) | None => {
                        return Err(CdcError::Protocol(format!(
                            "{}: key column {name} missing from the row image",
                            self.table
                        )))
                    }
                };
                Ok((name.clone(), value))
            })
            .collect()
    }
}

/// Type a text-format value by its type OID: integers and booleans become JSON-friendly
/// values, everything else stays text.
fn typed_value(type_oid: u32, bytes: &[u8]) -> Value {
    let text = String::from_utf8_lossy(bytes);
    match type_oid {
        // bool
        16 => match text.as_ref() {
            "t" => Value::Bool(true),
            "f" => Value::Bool(false),
            _ => Value::Text(text.into_owned()),
        },
        // int8, int2, int4, oid
        20 | 21 | 23 | 26 => text
            .parse::<i64>()
            .map(Value::Int)
            .unwrap_or_else(|_| Value::Text(text.into_owned())),
        _ => Value::Text(text.into_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lsn::Lsn;
    use crate::pgoutput::{Column, Insert, ReplicaIdentity, Update};

    fn relation() -> Message {
        Message::Relation(Relation {
            oid: 7,
            namespace: "public".into(),
            name: "t".into(),
            replica_identity: ReplicaIdentity::Default,
            columns: vec![
                Column {
                    is_key: true,
                    name: "id".into(),
                    type_oid: 23,
                    type_modifier: -1,
                },
                Column {
                    is_key: false,
                    name: "body".into(),
                    type_oid: 25,
                    type_modifier: -1,
                },
            ],
        })
    }

    fn text(s: &str) -> TupleValue {
        TupleValue::Text(s.as_bytes().to_vec())
    }

    #[test]
    fn an_update_that_moves_the_key_reports_the_old_key() {
        let mut a = Assembler::default();
        a.message(relation()).unwrap();
        a.begin(Begin {
            final_lsn: Lsn(10),
            commit_time: 0,
            xid: 1,
        })
        .unwrap();
        assert_eq!(a.open_final_lsn(), Some(Lsn(10)));
        a.message(Message::Insert(Insert {
            relation: 7,
            new: vec![text("1"), text("x")],
        }))
        .unwrap();
        a.message(Message::Update(Update {
            relation: 7,
            old: Some(OldTuple::Key(vec![text("1"), TupleValue::Null])),
            new: vec![text("2"), TupleValue::UnchangedToast],
        }))
        .unwrap();
        let txn = a
            .commit(Commit {
                flags: 0,
                commit_lsn: Lsn(10),
                end_lsn: Lsn(20),
                commit_time: 0,
            })
            .unwrap();
        assert_eq!(txn.position, Position::Lsn(Lsn(20)));
        assert_eq!(txn.changes[0].key, vec![("id".into(), Value::Int(1))]);
        assert_eq!(txn.changes[1].key, vec![("id".into(), Value::Int(2))]);
        assert_eq!(
            txn.changes[1].old_key,
            Some(vec![("id".into(), Value::Int(1))])
        );
        assert!(a.is_idle());
    }

    #[test]
    fn a_toasted_unchanged_key_comes_from_the_old_key() {
        let mut a = Assembler::default();
        a.message(relation()).unwrap();
        a.begin(Begin {
            final_lsn: Lsn(10),
            commit_time: 0,
            xid: 1,
        })
        .unwrap();
        a.message(Message::Update(Update {
            relation: 7,
            old: Some(OldTuple::Key(vec![text("5"), TupleValue::Null])),
            new: vec![TupleValue::UnchangedToast, text("y")],
        }))
        .unwrap();
        let txn = a
            .commit(Commit {
                flags: 0,
                commit_lsn: Lsn(10),
                end_lsn: Lsn(20),
                commit_time: 0,
            })
            .unwrap();
        assert_eq!(txn.changes[0].key, vec![("id".into(), Value::Int(5))]);
        assert_eq!(txn.changes[0].old_key, None);
    }
}
