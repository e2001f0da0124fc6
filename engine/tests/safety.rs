//! No silent loss: verify is exact for every key type, targets with types that have no `=`
//! sync and verify, and planning never runs a mapping outside its rolled-back transaction.

mod common;

use common::*;
use engine::Engine;
use tokio_postgres::Client;

/// One key shape: the key columns' DDL, the key column names, and key values (as SQL
/// expressions, one tuple per row) chosen so their text needs escaping or normalising.
struct KeyShape {
    name: &'static str,
    key_ddl: &'static str,
    key: &'static str,
    values: &'static [&'static str],
}

const SHAPES: &[KeyShape] = &[
    KeyShape {
        name: "text",
        key_ddl: "k text",
        key: "k",
        values: &[
            r"'plain'",
            r"E'back\\slash'",
            r"E'tab\there'",
            r"E'new\nline'",
            r"E'carriage\rreturn'",
            r"'quote''s'",
            r"''",
            r"'ünïcödé'",
            r"E'\\N'",
            r"E'\\x41'",
        ],
    },
    KeyShape {
        name: "bytea",
        key_ddl: "k bytea",
        key: "k",
        values: &[
            "decode('00', 'hex')",
            "decode('5c', 'hex')",
            "decode('09', 'hex')",
            "decode('0a', 'hex')",
            "decode('5c78', 'hex')",
            "decode('', 'hex')",
            "decode('deadbeef', 'hex')",
        ],
    },
    KeyShape {
        name: "uuid",
        key_ddl: "k uuid",
        key: "k",
        values: &[
            "'00000000-0000-0000-0000-000000000000'",
            "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'",
            "'ffffffff-ffff-ffff-ffff-ffffffffffff'",
        ],
    },
    KeyShape {
        name: "numeric",
        key_ddl: "k numeric",
        key: "k",
        values: &[
            "1.50",
            "-0.000001",
            "123456789012345678901234567890.123456789",
            "'NaN'",
            "0",
            "1e-20",
        ],
    },
    KeyShape {
        name: "timestamptz",
        key_ddl: "k timestamptz",
        key: "k",
        values: &[
            "'2024-01-01 00:00:00.123456+05:30'",
            "'1999-12-31 23:59:59.999999-08'",
            "'infinity'",
            "'-infinity'",
            "'0044-03-15 12:00:00 BC'",
        ],
    },
    KeyShape {
        name: "composite",
        key_ddl: "a text, b bytea, c timestamptz",
        key: "a, b, c",
        values: &[
            r"E'x\ty', decode('5c09', 'hex'), '2024-02-29 12:00:00+00'",
            r"E'x\\', decode('00', 'hex'), '2024-02-29 12:00:00+00'",
            r"E'x\ny', decode('', 'hex'), 'infinity'",
            r"'x', decode('5c', 'hex'), '2000-01-01 00:00:00.000001+00'",
        ],
    },
];

fn migration(shape: &KeyShape) -> String {
    format!(
        r#"name = "keys_{name}"
table = "public.keys_{name}"
target = """
CREATE TABLE keys_{name} ({key_ddl}, v text, w integer, PRIMARY KEY ({key}))
"""
[up]
w = "length(v)"
"#,
        name = shape.name,
        key_ddl = shape.key_ddl,
        key = shape.key,
    )
}

/// The table `keys_<name>` with one row per key value (`v` = 'row <n>').
async fn create_keys(db: &Client, shape: &KeyShape) {
    let rows = shape
        .values
        .iter()
        .enumerate()
        .map(|(i, v)| format!("({v}, 'row {i}')"))
        .collect::<Vec<_>>()
        .join(", ");
    db.batch_execute(&format!(
        "CREATE TABLE keys_{name} ({key_ddl}, v text, PRIMARY KEY ({key}));
         INSERT INTO keys_{name} VALUES {rows};
         ANALYZE keys_{name};",
        name = shape.name,
        key_ddl = shape.key_ddl,
        key = shape.key,
    ))
    .await
    .expect("create the keyed table");
}

/// Every key of the shadow table as verify names it: each field's text.
async fn shadow_key_texts(db: &Client, shape: &KeyShape) -> Vec<Vec<String>> {
    let cols = shape
        .key
        .split(", ")
        .map(|c| format!("{c}::text"))
        .collect::<Vec<_>>()
        .join(", ");
    db.query(
        &format!(
            "SELECT {cols} FROM _splice_keys_{}_new ORDER BY {}",
            shape.name, shape.key
        ),
        &[],
    )
    .await
    .expect("read keys")
    .iter()
    .map(|r| (0..r.len()).map(|i| r.get::<_, String>(i)).collect())
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_a_tampered_row_under_every_key_type_and_names_its_key() {
    let db = server();
    let client = connect(&db.url).await;
    // The same session settings verify uses, so `::text` here is the text verify reports.
    client
        .batch_execute("SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET bytea_output = 'hex'")
        .await
        .expect("settings");
    let engine = Engine::new(db.url.clone());
    for shape in SHAPES {
        create_keys(&client, shape).await;
        let name = format!("keys_{}", shape.name);
        engine
            .expand(&migration(shape), &format!("{name}.toml"))
            .await
            .unwrap_or_else(|e| panic!("{name}: expand: {e}"));
        sync_until_caught_up(&engine, &name).await;
        let clean = engine.verify(&name).await.expect("verify");
        assert!(clean.passed(), "{name}: untampered: {clean:?}");
        assert_eq!(clean.rows_checked, shape.values.len() as u64, "{name}");

        // Change every row behind splice's back: each key must be named.
        client
            .batch_execute(&format!(
                "UPDATE _splice_{name}_new SET v = v || ' tampered'"
            ))
            .await
            .expect("tamper");
        let mut expected = shadow_key_texts(&client, shape).await;
        let report = engine.verify(&name).await.expect("verify");
        assert!(!report.passed(), "{name}: tampered rows passed: {report:?}");
        let mut named: Vec<Vec<String>> = report.diverged.iter().map(|d| d.key.clone()).collect();
        named.sort();
        expected.sort();
        assert_eq!(named, expected, "{name}: diverged keys");
        assert!(
            report
                .diverged
                .iter()
                .all(|d| d.expected.is_some() && d.found.is_some()),
            "{name}: {report:?}"
        );
    }
}

/// A database whose clients get `standard_conforming_strings = off` (legacy applications):
/// verify's re-check must still query the exact keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_is_exact_when_the_database_turns_standard_conforming_strings_off() {
    let db = server();
    let client = connect(&db.url).await;
    client
        .batch_execute("ALTER ROLE CURRENT_USER SET standard_conforming_strings = off")
        .await
        .expect("alter database");
    let client = connect(&db.url).await;
    client
        .batch_execute("SET bytea_output = 'hex'")
        .await
        .expect("settings");
    let engine = Engine::new(db.url.clone());
    for shape in SHAPES
        .iter()
        .filter(|s| ["text", "bytea"].contains(&s.name))
    {
        create_keys(&client, shape).await;
        let name = format!("keys_{}", shape.name);
        engine
            .expand(&migration(shape), &format!("{name}.toml"))
            .await
            .unwrap_or_else(|e| panic!("{name}: expand: {e}"));
        sync_until_caught_up(&engine, &name).await;
        assert!(
            engine.verify(&name).await.expect("verify").passed(),
            "{name}"
        );
        client
            .batch_execute(&format!(
                "UPDATE _splice_{name}_new SET v = v || ' tampered'"
            ))
            .await
            .expect("tamper");
        let report = engine.verify(&name).await.expect("verify");
        assert_eq!(
            report.diverged.len(),
            shape.values.len(),
            "{name}: every tampered row is named: {report:?}"
        );
    }
}
