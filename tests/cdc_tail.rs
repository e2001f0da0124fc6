//! `splice cdc tail` end to end: the real binary against a throwaway PostgreSQL.

use serde_json::Value;
use std::process::{Command, Output};
use testkit::Postgres;

/// `splice cdc tail ARGS` with no database URL in the environment unless given.
fn tail(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_splice"));
    cmd.args(["cdc", "tail"])
        .args(args)
        .env_remove("SPLICE_DATABASE_URL")
        .env_remove("DATABASE_URL");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("the splice binary runs")
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

/// A server with table `t` and the default slot already created (so writes after this are
/// captured).
fn server_with_slot() -> Postgres {
    let pg = Postgres::start().expect("postgres starts");
    pg.psql("CREATE TABLE t (id int PRIMARY KEY, v text)")
        .expect("table created");
    let out = tail(
        &[
            "--database-url",
            &pg.url(),
            "--table",
            "public.t",
            "--idle-timeout",
            "100ms",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stdout.is_empty(), "nothing was written yet");
    pg
}

#[test]
fn tail_prints_one_json_line_per_change_and_stops_after_the_transaction_holding_the_nth() {
    let pg = server_with_slot();
    pg.psql("INSERT INTO t VALUES (1, 'a')").unwrap();
    pg.psql("BEGIN; INSERT INTO t VALUES (2, 'b'); INSERT INTO t VALUES (3, 'c'); COMMIT;")
        .unwrap();
    pg.psql("INSERT INTO t VALUES (4, 'd')").unwrap();

    let url = pg.url();
    let out = tail(
        &["--database-url", &url, "--table", "t", "--limit", "2"],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let printed = lines(&out);
    // The 2nd change is in the transaction of ids 2 and 3: it is printed whole.
    assert_eq!(printed.len(), 3);
    let ids: Vec<i64> = printed
        .iter()
        .map(|l| l["key"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![1, 2, 3]);
    let first = &printed[0];
    assert_eq!(first["op"], "insert");
    assert_eq!(first["table"], "public.t");
    assert!(first.get("old_key").is_none());
    let position = first["position"].as_str().unwrap();
    let (hi, lo) = position.split_once('/').unwrap();
    assert!(u32::from_str_radix(hi, 16).is_ok() && u32::from_str_radix(lo, 16).is_ok());
    let committed_at = first["committed_at"].as_str().unwrap();
    assert!(
        committed_at.len() == 27 && committed_at.ends_with('Z'),
        "{committed_at}"
    );
    assert_eq!(
        printed[1]["position"], printed[2]["position"],
        "one transaction, one position"
    );

    // What was printed was acknowledged: the next run starts after it.
    let out = tail(
        &["--database-url", &url, "--table", "t", "--limit", "1"],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let printed = lines(&out);
    assert_eq!(printed.len(), 1);
    assert_eq!(printed[0]["key"]["id"], 4);
}

#[test]
fn tail_shows_old_key_only_when_an_update_changed_the_key() {
    let pg = server_with_slot();
    pg.psql("INSERT INTO t VALUES (1, 'a')").unwrap();
    pg.psql("UPDATE t SET v = 'b' WHERE id = 1").unwrap();
    pg.psql("UPDATE t SET id = 10 WHERE id = 1").unwrap();
    pg.psql("DELETE FROM t WHERE id = 10").unwrap();
    let out = tail(
        &["--database-url", &pg.url(), "--table", "t", "--limit", "4"],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let printed = lines(&out);
    let ops: Vec<&str> = printed.iter().map(|l| l["op"].as_str().unwrap()).collect();
    assert_eq!(ops, vec!["insert", "update", "update", "delete"]);
    assert!(printed[1].get("old_key").is_none());
    assert_eq!(printed[2]["key"]["id"], 10);
    assert_eq!(printed[2]["old_key"]["id"], 1);
    assert_eq!(printed[3]["key"]["id"], 10);
}

#[test]
fn tail_exits_zero_after_the_idle_timeout_with_what_arrived() {
    let pg = server_with_slot();
    pg.psql("INSERT INTO t VALUES (1, 'a')").unwrap();
    let out = tail(
        &[
            "--database-url",
            &pg.url(),
            "--table",
            "t",
            "--idle-timeout",
            "300ms",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(lines(&out).len(), 1);
}

#[test]
fn tail_takes_the_url_from_splice_database_url_then_database_url() {
    let pg = server_with_slot();
    pg.psql("INSERT INTO t VALUES (1, 'a')").unwrap();
    let url = pg.url();
    let out = tail(
        &["--table", "t", "--limit", "1"],
        &[
            ("SPLICE_DATABASE_URL", &url),
            ("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(lines(&out)[0]["key"]["id"], 1);

    pg.psql("INSERT INTO t VALUES (2, 'b')").unwrap();
    let out = tail(&["--table", "t", "--limit", "1"], &[("DATABASE_URL", &url)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(lines(&out)[0]["key"]["id"], 2);

    let out = tail(&["--table", "t"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("SPLICE_DATABASE_URL"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn tail_with_drop_slot_leaves_no_slot_or_publication() {
    let pg = server_with_slot();
    let out = tail(
        &[
            "--database-url",
            &pg.url(),
            "--table",
            "t",
            "--idle-timeout",
            "100ms",
            "--drop-slot",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        pg.psql("SELECT count(*) FROM pg_replication_slots")
            .unwrap(),
        "0"
    );
    assert_eq!(pg.psql("SELECT count(*) FROM pg_publication").unwrap(), "0");
}

#[test]
fn tail_errors_name_the_problem_and_the_fix_and_exit_2() {
    let pg = Postgres::start().unwrap();
    pg.psql("CREATE TABLE loose (v text)").unwrap();
    let url = pg.url();

    let out = tail(&["--database-url", &url, "--table", "public.nowhere"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("table public.nowhere does not exist"),
        "{}",
        stderr(&out)
    );

    let out = tail(&["--database-url", &url, "--table", "loose"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("REPLICA IDENTITY"),
        "{}",
        stderr(&out)
    );

    let out = tail(&["--database-url", &url, "--table", "a.b.c"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("SCHEMA.TABLE"), "{}", stderr(&out));

    let out = tail(
        &[
            "--database-url",
            &url,
            "--table",
            "t",
            "--slot",
            "Not Valid",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("lowercase letters"),
        "{}",
        stderr(&out)
    );

    let out = tail(
        &[
            "--database-url",
            "postgres://postgres@127.0.0.1:1/postgres",
            "--table",
            "t",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("could not connect"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        pg.psql("SELECT count(*) FROM pg_replication_slots")
            .unwrap(),
        "0"
    );
}

#[test]
fn tail_help_shows_an_example() {
    let out = Command::new(env!("CARGO_BIN_EXE_splice"))
        .args(["cdc", "tail", "--help"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("Examples:"), "{help}");
    assert!(help.contains("splice cdc tail --database-url"), "{help}");
    assert!(help.contains("--limit"), "{help}");
}
