//! Process plumbing shared by every server kind: which OS user a server runs as, free ports,
//! the scratch directory, and stopping a child.

use anyhow::{bail, Context, Result};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The OS account a server process runs as. Database servers refuse to run as root, so when
/// the tests run as root the servers run as the `postgres` account (the one the distribution
/// packages create) and own their directories.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RunAs {
    pub uid: u32,
    pub gid: u32,
    /// True when we switch users (we are root); false when we run as ourselves.
    pub switch: bool,
}

impl RunAs {
    pub(crate) fn for_server(account: &str) -> Result<RunAs> {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        if euid != 0 {
            // SAFETY: getegid has no preconditions.
            let egid = unsafe { libc::getegid() };
            return Ok(RunAs {
                uid: euid,
                gid: egid,
                switch: false,
            });
        }
        let name = std::ffi::CString::new(account).context("account name has a NUL byte")?;
        // SAFETY: getpwnam reads a static buffer; we copy the two integers out at once and
        // tests that start servers concurrently only ever look up the same account.
        let pw = unsafe { libc::getpwnam(name.as_ptr()) };
        if pw.is_null() {
            bail!(
                "running as root, and there is no `{account}` account to run the server as; \
                 install the server package (it creates the account) or run the tests as a normal user"
            );
        }
        // SAFETY: pw is non-null and points at a valid passwd record.
        let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
        Ok(RunAs {
            uid,
            gid,
            switch: true,
        })
    }

    /// Make `cmd` run as this account.
    pub(crate) fn apply(&self, cmd: &mut Command) {
        if self.switch {
            cmd.uid(self.uid).gid(self.gid);
            // HOME of root is not readable by the server account; some tools look at it.
            cmd.env("HOME", "/tmp");
        }
    }

    /// Give `path` (recursively) to this account.
    pub(crate) fn chown_tree(&self, path: &Path) -> Result<()> {
        if !self.switch {
            return Ok(());
        }
        chown_recursive(path, self.uid, self.gid)
            .with_context(|| format!("giving {} to uid {}", path.display(), self.uid))
    }
}

fn chown_recursive(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    let meta = std::fs::symlink_metadata(path)?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_recursive(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// A loopback port nobody listens on right now. Another process can take it before the server
/// binds it; callers retry the start with a new port when the bind fails.
pub(crate) fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
    Ok(listener.local_addr()?.port())
}

/// The root of every scratch directory: `$SPLICE_TESTKIT_DIR`, or `<tmp>/splice-testkit`.
/// It lives outside the work tree because the server account must be able to reach it.
pub(crate) fn scratch_root() -> Result<PathBuf> {
    let root = match std::env::var_os("SPLICE_TESTKIT_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::temp_dir().join("splice-testkit"),
    };
    std::fs::create_dir_all(&root)
        .with_context(|| format!("creating scratch directory {}", root.display()))?;
    // Other accounts (the server's) must be able to traverse it.
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o1777));
    Ok(root)
}

/// A new, empty, uniquely named directory under the scratch root.
pub(crate) fn unique_dir(prefix: &str) -> Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let root = scratch_root()?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = root.join(format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Send `signal` to the child, wait up to `grace` for it to exit, then kill it outright.
pub(crate) fn stop_child(child: &mut Child, signal: libc::c_int, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill on our own child's pid.
        unsafe {
            libc::kill(pid, signal);
        }
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The last `n` lines of a log file, for error messages.
pub(crate) fn log_tail(path: &Path, n: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(_) => String::from("(no log)"),
    }
}

/// Tears a throwaway server down: its watchdog first (so it does not act on the kill), then the
/// server with `signal`, then its directory unless `SPLICE_TESTKIT_KEEP` is set. When a test
/// panicked, the server's own log goes to stderr first (the test's output keeps it): an
/// intermittent failure then carries the server's account of what it did.
pub(crate) fn tear_down(
    watchdog: &mut Option<Child>,
    server: &mut Option<Child>,
    signal: i32,
    dir: &Path,
    log: &Path,
) {
    if std::thread::panicking() && server.is_some() {
        eprintln!(
            "--- the last lines of the server log {} ---\n{}\n--- end of the server log ---",
            log.display(),
            log_tail(log, 60)
        );
    }
    if let Some(mut watchdog) = watchdog.take() {
        let _ = watchdog.kill();
        let _ = watchdog.wait();
    }
    if let Some(mut child) = server.take() {
        stop_child(&mut child, signal, Duration::from_secs(10));
    }
    if std::env::var_os("SPLICE_TESTKIT_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// What a SQL client printed for `sql`, trimmed; its error output when it failed.
pub(crate) fn client_output(tool: &str, sql: &str, out: std::process::Output) -> Result<String> {
    if !out.status.success() {
        bail!(
            "{tool} failed on {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
