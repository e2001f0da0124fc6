//! `splice cdc tail mysql://…` end to end: the real binary against a throwaway MariaDB 10.11.

use serde_json::Value;
use std::process::{Command, Output};
use testkit::MariaDb;

/// `splice ARGS` with no database URL in the environment.
fn splice(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_splice"))
        .args(args)
        .env_remove("SPLICE_DATABASE_URL")
        .env_remove("DATABASE_URL")
        .output()
        .expect("the splice binary runs")
}

fn lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn tail_follows_the_binlog_and_a_second_run_continues_where_the_first_stopped() {
    let db = MariaDb::start().expect("mariadb starts");
    db.sql(
        "CREATE DATABASE shop; \
         CREATE TABLE shop.orders (id INT PRIMARY KEY, v VARCHAR(10)) ENGINE=InnoDB",
    )
    .unwrap();
    let url = db.url().replace("mysql://", "mariadb://");
    // Creates the slot at the current position; nothing written yet.
    let out = splice(&[
        "cdc",
        "tail",
        &url,
        "--table",
        "shop.orders",
        "--slot",
        "audit",
        "--idle-timeout",
        "100ms",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    assert!(
        stderr(&out).contains("created slot audit"),
        "{}",
        stderr(&out)
    );

    db.sql("INSERT INTO shop.orders VALUES (1, 'a')").unwrap();
    db.sql(
        "BEGIN; UPDATE shop.orders SET id = 2 WHERE id = 1; \
         INSERT INTO shop.orders VALUES (3, 'c'); COMMIT",
    )
    .unwrap();
    db.sql("DELETE FROM shop.orders WHERE id = 3").unwrap();

    let out = splice(&[
        "cdc",
        "tail",
        "--database-url",
        &db.url(),
        "--table",
        "shop.orders",
        "--slot",
        "audit",
        "--limit",
        "2",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let printed = lines(&out);
    // The 2nd change is in the transaction of the key update and the insert: printed whole.
    assert_eq!(printed.len(), 3, "{printed:?}");
    assert_eq!(printed[0]["op"], "insert");
    assert_eq!(printed[0]["table"], "shop.orders");
    assert_eq!(printed[0]["key"]["id"], 1);
    assert_eq!(printed[1]["op"], "update");
    assert_eq!(printed[1]["key"]["id"], 2);
    assert_eq!(printed[1]["old_key"]["id"], 1);
    assert_eq!(printed[2]["key"]["id"], 3);
    assert_eq!(printed[1]["position"], printed[2]["position"]);
    let position = printed[2]["position"].as_str().unwrap();
    assert!(
        position.starts_with("binlog.") && position.contains(":") && position.contains("@0-1-"),
        "{position}"
    );
    assert!(printed[0]["committed_at"].as_str().unwrap().ends_with('Z'));

    // The second run prints the delete only: nothing acknowledged comes again.
    let out = splice(&[
        "cdc",
        "tail",
        &db.url(),
        "--table",
        "shop.orders",
        "--slot",
        "audit",
        "--idle-timeout",
        "300ms",
        "--drop-slot",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let printed = lines(&out);
    assert_eq!(printed.len(), 1, "{printed:?}");
    assert_eq!(printed[0]["op"], "delete");
    assert_eq!(printed[0]["key"]["id"], 3);
    assert!(
        stderr(&out).contains("removed slot audit"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        db.sql("SELECT COUNT(*) FROM splice.cdc_slots").unwrap(),
        "0"
    );
}

#[test]
fn tail_names_the_fix_for_a_statement_binlog_and_a_table_without_its_database() {
    let db = MariaDb::start().expect("mariadb starts");
    db.sql("CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY)")
        .unwrap();
    let out = splice(&["cdc", "tail", &db.url(), "--table", "t"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("DATABASE.TABLE"), "{}", stderr(&out));

    db.sql("SET GLOBAL binlog_format = 'STATEMENT'").unwrap();
    let out = splice(&["cdc", "tail", &db.url(), "--table", "shop.t"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("SET GLOBAL binlog_format = 'ROW'"),
        "{}",
        stderr(&out)
    );

    let out = splice(&[
        "cdc",
        "tail",
        &format!("{}?ssl-mode=PREFERRED", db.url()),
        "--table",
        "shop.t",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("ssl-mode=REQUIRED"),
        "{}",
        stderr(&out)
    );
}
