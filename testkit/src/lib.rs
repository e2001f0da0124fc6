//! Throwaway database servers for tests and benchmarks: each test starts its own PostgreSQL
//! (or MariaDB) from the installed server binaries, on a free loopback port, in a temporary directory that
//! is removed when the handle drops.
//!
//! What it is for: every splice test that needs a real database (`cdc`, `engine`, the binary's
//! end-to-end tests) and the benchmark scripts. What it is not for: anything a user runs.
//!
//! ```no_run
//! let pg = testkit::Postgres::start()?;
//! println!("{}", pg.url()); // postgres://postgres@127.0.0.1:PORT/postgres
//! # Ok::<(), anyhow::Error>(())
//! ```
//!
//! Beside the servers: [`connect`], a SQL session on one, [`orders_divergence_sql`], the
//! example migration's row-by-row check written independently of splice, and [`cpu_seconds`],
//! a process's CPU time for the benchmarks.
//!
//! [`MariaDb`] is the MariaDB one (Debian's `mariadb-server`, 10.11 here), with the same shape:
//! `start()`, `url()` (`mysql://root@127.0.0.1:PORT/`), `port()`, settings, stop on drop; its
//! binlog is row-based with full row images and GTIDs.

mod client;
mod cpu;
mod mariadb;
mod orders;
mod postgres;
mod process;
mod tls;

pub use client::connect;
pub use cpu::cpu_seconds;
pub use mariadb::{MariaDb, MariaDbBuilder};
pub use orders::orders_divergence_sql;
pub use postgres::{Postgres, PostgresBuilder};
pub use tls::{IssuedCert, TestCa};
