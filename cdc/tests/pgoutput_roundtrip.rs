//! Property tests for the pgoutput decoder: every message the encoder can produce decodes back
//! to itself, and no byte string makes the decoder panic.

use cdc::pgoutput::{
    decode, encode, Begin, Column, Commit, Delete, Insert, LogicalMessage, Message, OldTuple,
    Origin, Relation, ReplicaIdentity, Truncate, TupleValue, Type, Update,
};
use cdc::Lsn;
use proptest::collection::vec;
use proptest::prelude::*;

fn lsn() -> impl Strategy<Value = Lsn> {
    any::<u64>().prop_map(Lsn)
}

/// Names as the server sends them: any UTF-8 without NUL.
fn name() -> impl Strategy<Value = String> {
    "[^\u{0}]{0,12}"
}

fn tuple_value() -> impl Strategy<Value = TupleValue> {
    prop_oneof![
        Just(TupleValue::Null),
        Just(TupleValue::UnchangedToast),
        vec(any::<u8>(), 0..40).prop_map(TupleValue::Text),
        vec(any::<u8>(), 0..40).prop_map(TupleValue::Binary),
    ]
}

fn tuple() -> impl Strategy<Value = Vec<TupleValue>> {
    vec(tuple_value(), 0..8)
}

fn old_tuple() -> impl Strategy<Value = OldTuple> {
    prop_oneof![
        tuple().prop_map(OldTuple::Key),
        tuple().prop_map(OldTuple::Full)
    ]
}

fn replica_identity() -> impl Strategy<Value = ReplicaIdentity> {
    prop_oneof![
        Just(ReplicaIdentity::Default),
        Just(ReplicaIdentity::Nothing),
        Just(ReplicaIdentity::Full),
        Just(ReplicaIdentity::Index),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (lsn(), any::<i64>(), any::<u32>()).prop_map(|(final_lsn, commit_time, xid)| {
            Message::Begin(Begin {
                final_lsn,
                commit_time,
                xid,
            })
        }),
        (any::<u8>(), lsn(), lsn(), any::<i64>()).prop_map(
            |(flags, commit_lsn, end_lsn, commit_time)| Message::Commit(Commit {
                flags,
                commit_lsn,
                end_lsn,
                commit_time,
            })
        ),
        (lsn(), name()).prop_map(|(commit_lsn, name)| Message::Origin(Origin { commit_lsn, name })),
        (
            any::<u32>(),
            name(),
            name(),
            replica_identity(),
            vec((any::<bool>(), name(), any::<u32>(), any::<i32>()), 0..6)
        )
            .prop_map(|(oid, namespace, name, replica_identity, columns)| {
                Message::Relation(Relation {
                    oid,
                    namespace,
                    name,
                    replica_identity,
                    columns: columns
                        .into_iter()
                        .map(|(is_key, name, type_oid, type_modifier)| Column {
                            is_key,
                            name,
                            type_oid,
                            type_modifier,
                        })
                        .collect(),
                })
            }),
        (any::<u32>(), name(), name()).prop_map(|(oid, namespace, name)| Message::Type(Type {
            oid,
            namespace,
            name
        })),
        (any::<u32>(), tuple())
            .prop_map(|(relation, new)| Message::Insert(Insert { relation, new })),
        (any::<u32>(), proptest::option::of(old_tuple()), tuple())
            .prop_map(|(relation, old, new)| Message::Update(Update { relation, old, new })),
        (any::<u32>(), old_tuple())
            .prop_map(|(relation, old)| Message::Delete(Delete { relation, old })),
        (any::<u8>(), vec(any::<u32>(), 0..5))
            .prop_map(|(options, relations)| Message::Truncate(Truncate { options, relations })),
        (any::<bool>(), lsn(), name(), vec(any::<u8>(), 0..30)).prop_map(
            |(transactional, lsn, prefix, content)| Message::Message(LogicalMessage {
                transactional,
                lsn,
                prefix,
                content,
            })
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn every_encoded_message_decodes_to_itself(message in message()) {
        let bytes = encode(&message);
        prop_assert_eq!(decode(&bytes), Ok(message));
    }

    #[test]
    fn a_message_cut_short_or_extended_is_an_error(message in message(), extra in 1usize..4) {
        let bytes = encode(&message);
        let cut = bytes.len() - 1;
        prop_assert!(decode(&bytes[..cut]).is_err());
        let mut longer = bytes.clone();
        longer.extend(std::iter::repeat_n(0u8, extra));
        prop_assert!(decode(&longer).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes in vec(any::<u8>(), 0..64), tag in prop::sample::select(b"BCORYIUDTMX".to_vec())) {
        let mut message = vec![tag];
        message.extend(bytes);
        let _ = decode(&message);
    }
}
