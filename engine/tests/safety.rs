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

/// `events` has json, xml and point columns (types without `=`); the new shape keeps them and
/// adds a column, so the applier's upsert compares rows holding them.
const EVENTS_V2: &str = r#"name = "events_v2"
table = "public.events"
target = """
CREATE TABLE events (
    id      bigint PRIMARY KEY,
    payload json,
    doc     xml,
    at      point,
    body    jsonb,
    size    integer
)
"""
[up]
body = "payload::jsonb"
size = "length(payload::text)"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_with_json_xml_and_point_columns_syncs_under_updates_and_verifies() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let db = server();
    let client = connect(&db.url).await;
    client
        .batch_execute(
            "CREATE TABLE events (id bigint PRIMARY KEY, payload json, doc xml, at point);
             INSERT INTO events
             SELECT g, json_build_object('n', g, 'tags', json_build_array('a', g % 7)),
                    xmlelement(name e, xmlattributes(g AS n), 'event ' || g),
                    point(g / 3.0, -g)
             FROM generate_series(1, 2000) g;",
        )
        .await
        .expect("create events");
    let engine = Engine::new(db.url.clone());
    engine
        .expand(EVENTS_V2, "events_v2.toml")
        .await
        .expect("expand");

    // Updates of every such column (and inserts and deletes) while backfill and capture run.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let url = db.url.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let c = connect(&url).await;
            let mut n: i64 = 0;
            while !stop.load(Ordering::Relaxed) {
                let id = (n * 37) % 2000 + 1;
                let sql = match n % 5 {
                    0 => format!(
                        "UPDATE events SET payload = '{{\"n\": {n},  \"spaced\" : true}}' \
                         WHERE id = {id}"
                    ),
                    1 => format!(
                        "UPDATE events SET doc = '<e n=\"{n}\">changed</e>' WHERE id = {id}"
                    ),
                    2 => format!("UPDATE events SET at = point({n}, 0.1) WHERE id = {id}"),
                    3 => format!(
                        "INSERT INTO events VALUES ({}, '[1, 2]', '<new/>', '(1,2)')",
                        100_000 + n
                    ),
                    _ => format!("DELETE FROM events WHERE id = {}", id + 1),
                };
                c.batch_execute(&sql).await.expect("write");
                n += 1;
                if n % 20 == 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                }
            }
            n
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    sync_until_caught_up(&engine, "events_v2").await;
    stop.store(true, Ordering::Relaxed);
    let writes = writer.await.expect("writer");
    assert!(writes > 50, "the writer ran: {writes}");
    // The same value written twice is re-synced without error and without a change.
    client
        .batch_execute("UPDATE events SET payload = payload, doc = doc, at = at WHERE id <= 100")
        .await
        .expect("rewrite");
    sync_until_caught_up(&engine, "events_v2").await;

    let report = engine.verify("events_v2").await.expect("verify");
    assert!(report.passed(), "{report:?}");
    // Independently of splice: every row, by its text.
    let differing: i64 = client
        .query_one(
            "SELECT count(*) FROM events o FULL JOIN _splice_events_v2_new n USING (id)
             WHERE (o.payload::text, o.doc::text, o.at::text, o.payload::jsonb,
                    length(o.payload::text))
                   IS DISTINCT FROM (n.payload::text, n.doc::text, n.at::text, n.body, n.size)",
            &[],
        )
        .await
        .expect("compare")
        .get(0);
    assert_eq!(differing, 0);
}

/// Whether table `name` exists.
async fn exists(db: &Client, name: &str) -> bool {
    db.query_one("SELECT to_regclass($1::text) IS NOT NULL", &[&name])
        .await
        .expect("to_regclass")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_never_runs_statements_smuggled_into_a_mapping() {
    let db = server();
    let client = connect(&db.url).await;
    create_orders(&client, 10).await;
    client
        .batch_execute("CREATE TABLE x (id int); INSERT INTO x VALUES (1)")
        .await
        .expect("create x");
    let engine = Engine::new(db.url.clone());
    let smuggled = [
        // The issue's example.
        "1; COMMIT; DROP TABLE x; SELECT 1",
        // One that closes the planning SELECT first, so every statement of it parses.
        "'EUR')::char(3) FROM public.orders s; COMMIT; DROP TABLE x; SELECT ('EUR'",
    ];
    for expr in smuggled {
        let spec = ORDERS_V2.replace(
            "currency = \"coalesce(currency, 'EUR')\"",
            &format!("currency = \"{}\"", expr.replace('"', "\\\"")),
        );
        let spec = engine::MigrationSpec::parse(&spec, "evil.toml").expect("spec");
        assert_eq!(spec.up["currency"], expr);
        let err = engine.plan(&spec).await.expect_err("refused");
        let message = err.to_string();
        assert!(
            exists(&client, "public.x").await,
            "{expr}: table x was dropped"
        );
        assert!(
            message.contains("[up] currency") && message.contains(expr),
            "{expr}: the error names the mapping: {message}"
        );
        assert!(
            matches!(err, engine::EngineError::Plan(_)),
            "{expr}: {err:?}"
        );
        // Nothing planned was kept: the planning transaction was not committed by the file.
        assert!(
            !exists(&client, "public._splice_orders_v2_new").await,
            "{expr}: the shadow table of the planning transaction was committed"
        );
    }
    let err = engine
        .plan(
            &engine::MigrationSpec::parse(
                &ORDERS_V2.replace(
                    "currency = \"coalesce(currency, 'EUR')\"",
                    "currency = \"1; COMMIT; DROP TABLE x; SELECT 1\"",
                ),
                "evil.toml",
            )
            .expect("spec"),
        )
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("one SQL expression"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_compiles_every_statement_sync_will_run() {
    let db = server();
    let client = connect(&db.url).await;
    create_orders(&client, 10).await;
    let engine = Engine::new(db.url.clone());
    // An aggregate compiles on its own over the whole table, but not in backfill's per-row
    // INSERT … SELECT: that must fail at plan time, not at the first chunk.
    let spec = ORDERS_V2.replace("(amount * 100)::bigint", "count(*)");
    let err = engine
        .plan(&engine::MigrationSpec::parse(&spec, "agg.toml").expect("spec"))
        .await
        .expect_err("the backfill statement does not compile");
    let message = err.to_string();
    assert!(matches!(err, engine::EngineError::Plan(_)), "{err:?}");
    assert!(
        message.contains("sync (old → new): the backfill chunk does not compile")
            && message.contains("GROUP BY"),
        "{message}"
    );
    assert!(!exists(&client, "public._splice_orders_v2_new").await);
    // The same for the reverse direction's statements.
    let spec = ORDERS_V2.replace("amount_cents / 100.0", "sum(amount_cents) / 100.0");
    let err = engine
        .plan(&engine::MigrationSpec::parse(&spec, "agg.toml").expect("spec"))
        .await
        .expect_err("the reverse statements do not compile");
    assert!(
        err.to_string()
            .contains("reverse sync (new → old, after cutover): the backfill chunk"),
        "{err}"
    );
    engine
        .plan(&engine::MigrationSpec::parse(ORDERS_V2, "ok.toml").expect("spec"))
        .await
        .expect("the example compiles");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splice_refuses_a_schema_of_its_own_name_that_another_role_controls() {
    use engine::postgres::catalog::ensure_own_schema;
    let db = server();
    let admin = connect(&db.url).await;
    admin
        .batch_execute(
            "CREATE ROLE runner LOGIN; CREATE ROLE mallory LOGIN;
             GRANT CREATE ON DATABASE postgres TO runner, mallory;",
        )
        .await
        .expect("roles");
    let runner = connect(&db.pg.url_as("runner", "postgres")).await;
    let mallory = connect(&db.pg.url_as("mallory", "postgres")).await;

    // Missing: created, owned by the runner; again: nothing to do.
    ensure_own_schema(&runner, "splice").await.expect("created");
    ensure_own_schema(&runner, "splice")
        .await
        .expect("idempotent");
    let owner: String = admin
        .query_one(
            "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'splice'",
            &[],
        )
        .await
        .expect("owner")
        .get(0);
    assert_eq!(owner, "runner");

    // Someone else's schema of that name is refused, and named with its owner.
    mallory
        .batch_execute("CREATE SCHEMA splice_quarantine")
        .await
        .expect("mallory's schema");
    let err = ensure_own_schema(&runner, "splice_quarantine")
        .await
        .expect_err("foreign-owned");
    assert!(
        matches!(err, engine::EngineError::ForeignSchema { .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("splice_quarantine") && message.contains("owned by mallory"),
        "{message}"
    );

    // The runner's own schema that lets others create objects in it is refused too.
    runner
        .batch_execute("GRANT CREATE ON SCHEMA splice TO PUBLIC")
        .await
        .expect("grant");
    let err = ensure_own_schema(&runner, "splice")
        .await
        .expect_err("open to everyone");
    assert!(err.to_string().contains("grants CREATE to PUBLIC"), "{err}");
    runner
        .batch_execute("REVOKE CREATE ON SCHEMA splice FROM PUBLIC")
        .await
        .expect("revoke");
    ensure_own_schema(&runner, "splice")
        .await
        .expect("own again");
}
