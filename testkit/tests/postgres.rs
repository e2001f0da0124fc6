//! The harness itself: a server starts with logical decoding on, honours settings, and goes
//! away on drop.

use testkit::Postgres;

#[test]
fn a_started_server_has_logical_decoding_and_accepts_queries() -> anyhow::Result<()> {
    let pg = Postgres::start()?;
    assert_eq!(pg.psql("SHOW wal_level")?, "logical");
    assert_eq!(pg.psql("SELECT 1 + 1")?, "2");
    assert!(pg.url().contains(&pg.port().to_string()));
    Ok(())
}

#[test]
fn settings_override_the_defaults() -> anyhow::Result<()> {
    let pg = Postgres::builder()
        .setting("wal_level", "replica")
        .setting("max_replication_slots", "1")
        .start()?;
    assert_eq!(pg.psql("SHOW wal_level")?, "replica");
    assert_eq!(pg.psql("SHOW max_replication_slots")?, "1");
    Ok(())
}

#[test]
fn dropping_the_server_stops_it_and_removes_its_directory() -> anyhow::Result<()> {
    let pg = Postgres::start()?;
    let data = pg.data_dir();
    let port = pg.port();
    assert!(data.exists());
    drop(pg);
    assert!(!data.exists(), "data directory left behind");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "server still listening after drop"
    );
    Ok(())
}

#[test]
fn two_servers_run_side_by_side_on_different_ports() -> anyhow::Result<()> {
    let a = Postgres::start()?;
    let b = Postgres::start()?;
    assert_ne!(a.port(), b.port());
    a.psql("CREATE TABLE only_in_a (id int)")?;
    assert_eq!(
        b.psql("SELECT count(*) FROM pg_class WHERE relname = 'only_in_a'")?,
        "0"
    );
    Ok(())
}
