//! The async runtimes the commands run on. Each command picks the kind that suits its work.

use tokio::runtime::{Builder, Runtime};

/// The runtime could not start (the OS refused a thread, the timer or the I/O driver).
#[derive(Debug, thiserror::Error)]
#[error("cannot start the async runtime: {0}")]
pub struct RuntimeError(std::io::Error);

/// One thread, for commands that are one task driving database sessions, where the work is the
/// server's. On a multi-threaded runtime every message a connection task hands to the task
/// reading it is a wake-up across threads; that cost verify a third of its client CPU
/// (docs/benchmarks.md).
pub fn current_thread() -> Result<Runtime, RuntimeError> {
    Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(RuntimeError)
}

/// Worker threads, for commands whose tasks must run at the same time (a reader that keeps
/// draining a socket while another task works): `worker_threads` of them (at least one), or
/// one per core when `None`.
pub fn multi_thread(worker_threads: Option<usize>) -> Result<Runtime, RuntimeError> {
    let mut builder = Builder::new_multi_thread();
    if let Some(n) = worker_threads {
        builder.worker_threads(n.max(1));
    }
    builder.enable_all().build().map_err(RuntimeError)
}
