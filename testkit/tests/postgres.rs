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

/// Run by `a_killed_owner_does_not_leave_its_server_running` in a child process: start a server,
/// say where it is, and wait to be killed. Does nothing in a normal run.
#[test]
fn owner_process_for_the_watchdog_test() -> anyhow::Result<()> {
    if std::env::var_os("SPLICE_TESTKIT_OWNER").is_none() {
        return Ok(());
    }
    let pg = Postgres::start()?;
    println!("data={}", pg.data_dir().display());
    println!("port={}", pg.port());
    std::thread::sleep(std::time::Duration::from_secs(120));
    drop(pg);
    Ok(())
}

#[test]
fn a_killed_owner_does_not_leave_its_server_running() -> anyhow::Result<()> {
    use std::io::BufRead;
    let mut owner = std::process::Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            "owner_process_for_the_watchdog_test",
            "--nocapture",
        ])
        .env("SPLICE_TESTKIT_OWNER", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let stdout = owner
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let (mut data, mut port) = (None, None);
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        if let Some(d) = line.strip_prefix("data=") {
            data = Some(std::path::PathBuf::from(d));
        }
        if let Some(p) = line.strip_prefix("port=") {
            port = Some(p.parse::<u16>()?);
            break;
        }
    }
    let (Some(data), Some(port)) = (data, port) else {
        owner.kill()?;
        anyhow::bail!("the owner process did not report its server");
    };
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    owner.kill()?; // SIGKILL: no Drop runs
    owner.wait()?;
    // A hang guard, not a timing assertion: the watchdog looks once a second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while data.exists() || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the server of a killed owner is still running"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Ok(())
}
