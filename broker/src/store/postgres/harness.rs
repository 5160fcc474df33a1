//! A PostgreSQL server of the test's own: `initdb` and `pg_ctl` in a temporary directory, on a
//! loopback port, stopped and removed when the last handle to it drops.
//!
//! Shared by the broker's unit tests and the e2e tests (feature `test-support`). PostgreSQL refuses
//! to run as root, and CI runs as root: then the server runs as the `postgres` user that Debian's
//! package creates, and the directory is handed to it. Where PostgreSQL is not installed,
//! [`TestPostgres::shared_or_skip`] says so and the test skips, unless the environment variable `CI`
//! is set: then it fails, so CI can never pass without running these tests. Everything here blocks:
//! from async code, call it on the blocking pool.

use std::ffi::CString;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

mod standby;

pub use self::standby::TestReplicated;

/// Why no test server could be had.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// PostgreSQL's programs are not installed: a reason to skip, outside CI.
    #[error("PostgreSQL is not installed ({0}); install Debian's `postgresql` package")]
    Missing(String),
    #[error("{what}: {cause}")]
    Io { what: String, cause: std::io::Error },
    #[error("{command} failed: {output}")]
    Command { command: String, output: String },
    /// Debug, not Display: the client's Display is only "db error", the server's words are inside.
    #[error("postgres: {0:?}")]
    Client(#[from] postgres::Error),
}

/// A running PostgreSQL server in a temporary directory; stopped when dropped.
pub struct TestPostgres {
    bin: PathBuf,
    /// Holds the data directory and the server's log; removed after the server stopped.
    dir: TempDir,
    port: u16,
    /// The user the server runs as when we are root: (uid, gid) of `postgres`.
    run_as: Option<(u32, u32)>,
}

/// One fresh database on a [`TestPostgres`]; holds the server up while it lives.
pub struct TestDatabase {
    /// The libpq connection string of this database.
    pub url: String,
    /// Its name on the server.
    pub name: String,
    pub server: Arc<TestPostgres>,
}

/// The server tests in this process share, while any of them holds it.
static SHARED: Mutex<Weak<TestPostgres>> = Mutex::new(Weak::new());

/// Numbers the databases made in this process.
static DATABASES: AtomicU64 = AtomicU64::new(0);

impl TestPostgres {
    /// Starts a server of its own (for tests that stop or kill it).
    pub fn start() -> Result<Self, HarnessError> {
        let server = Self::unstarted()?;
        let data = server.data_dir();
        server.run(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "--auth=trust".as_ref(),
                "--no-sync".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
            ],
        )?;
        server.pg_ctl_start()?;
        Ok(server)
    }

    /// A server with a directory and a port, not yet initialised or started.
    fn unstarted() -> Result<Self, HarnessError> {
        let bin = find_bin()?;
        let run_as = run_as()?;
        let dir = TempDir::new()?;
        if let Some((uid, gid)) = run_as {
            chown(dir.path(), uid, gid)?;
        }
        Ok(Self {
            bin,
            dir,
            port: free_port()?,
            run_as,
        })
    }

    /// The server every test of this process shares, started by the first that asks.
    pub fn shared() -> Result<Arc<Self>, HarnessError> {
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(server) = shared.upgrade() {
            return Ok(server);
        }
        let server = Arc::new(Self::start()?);
        *shared = Arc::downgrade(&server);
        Ok(server)
    }

    /// A fresh database on the shared server, or `None` (said on stderr) when PostgreSQL is not
    /// installed and `CI` is unset. Panics on any other failure, and when `CI` is set.
    pub fn shared_or_skip(test: &str) -> Option<TestDatabase> {
        or_skip(test, Self::shared().and_then(|server| server.database()))
    }

    /// A server of the test's own, or `None` like [`shared_or_skip`](Self::shared_or_skip).
    pub fn start_or_skip(test: &str) -> Option<Arc<Self>> {
        or_skip(test, Self::start().map(Arc::new))
    }

    /// A new, empty database on this server.
    pub fn database(self: &Arc<Self>) -> Result<TestDatabase, HarnessError> {
        let n = DATABASES.fetch_add(1, Ordering::Relaxed);
        let name = format!("switchboard_{}_{n}", std::process::id());
        let mut admin = postgres::Client::connect(&self.url("postgres"), postgres::NoTls)?;
        admin.batch_execute(&format!("CREATE DATABASE {name}"))?;
        Ok(TestDatabase {
            url: self.url(&name),
            name,
            server: self.clone(),
        })
    }

    /// The connection string of database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={name} connect_timeout=10",
            self.port
        )
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server at once, as a crash would (`pg_ctl stop -m immediate`).
    pub fn kill(&self) -> Result<(), HarnessError> {
        self.pg_ctl(&["stop", "-m", "immediate", "-w"])
    }

    /// Starts the server again after [`kill`](Self::kill), on the same port.
    pub fn restart(&self) -> Result<(), HarnessError> {
        self.pg_ctl_start()
    }

    /// Turns TLS on with the certificate chain `cert_pem` and its key `key_pem` (PEM), and returns
    /// once new connections are offered it. The server reloads its configuration; nothing restarts.
    pub fn enable_tls(&self, cert_pem: &str, key_pem: &str) -> Result<(), HarnessError> {
        use std::os::unix::fs::PermissionsExt;
        let data = self.data_dir();
        for (name, pem) in [("server.crt", cert_pem), ("server.key", key_pem)] {
            let path = data.join(name);
            let what = format!("cannot write {}", path.display());
            std::fs::write(&path, pem).map_err(|cause| io(&what, cause))?;
            // PostgreSQL refuses a key that others may read.
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(|cause| io(&what, cause))?;
            if let Some((uid, gid)) = self.run_as {
                chown(&path, uid, gid)?;
            }
        }
        let mut admin = postgres::Client::connect(&self.url("postgres"), postgres::NoTls)?;
        admin.batch_execute("ALTER SYSTEM SET ssl = on")?;
        admin.batch_execute("SELECT pg_reload_conf()")?;
        for _ in 0..200 {
            let mut probe = postgres::Client::connect(&self.url("postgres"), postgres::NoTls)?;
            let ssl: String = probe.query_one("SHOW ssl", &[])?.get(0);
            if ssl == "on" {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Err(HarnessError::Command {
            command: "pg_reload_conf".into(),
            output: format!(
                "ssl is still off 10 s after the reload; server log: {}",
                self.log_tail()
            ),
        })
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn pg_ctl_start(&self) -> Result<(), HarnessError> {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} \
             -c fsync=off -c shared_buffers=16MB -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        let log = log.to_string_lossy();
        self.pg_ctl(&["start", "-w", "-t", "60", "-l", &log, "-o", &options])
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), HarnessError> {
        let data = self.data_dir();
        let mut all: Vec<&std::ffi::OsStr> = vec!["-D".as_ref(), data.as_os_str()];
        all.extend(args.iter().map(std::ffi::OsStr::new));
        self.run("pg_ctl", &all)
    }

    /// Runs one of PostgreSQL's programs, as the server's user; fails with its output.
    fn run(&self, program: &str, args: &[&std::ffi::OsStr]) -> Result<(), HarnessError> {
        let mut command = Command::new(self.bin.join(program));
        command.args(args).current_dir(self.dir.path());
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid).env("HOME", self.dir.path());
        }
        let output = command
            .output()
            .map_err(|cause| io(&format!("cannot run {program}"), cause))?;
        if output.status.success() {
            return Ok(());
        }
        Err(HarnessError::Command {
            command: program.into(),
            output: self.describe(&output),
        })
    }

    /// A failed command's output, and the end of the server's log.
    fn describe(&self, output: &Output) -> String {
        format!(
            "{}\n{}\n{}\nserver log:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.log_tail()
        )
    }

    /// The last lines of the server's log.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

/// What a test does without PostgreSQL: skips, saying so, unless `CI` is set; fails otherwise.
// A test's skip is said where the test's other output goes; the broker's own code logs instead.
#[allow(clippy::print_stderr)]
fn or_skip<T>(test: &str, made: Result<T, HarnessError>) -> Option<T> {
    or_skip_in(test, made, std::env::var_os("CI").is_some())
}

/// [`or_skip`], told whether this is CI.
#[allow(clippy::print_stderr)]
fn or_skip_in<T>(test: &str, made: Result<T, HarnessError>, ci: bool) -> Option<T> {
    match made {
        Ok(made) => Some(made),
        Err(HarnessError::Missing(why)) if !ci => {
            eprintln!("{test}: skipped: PostgreSQL is not installed ({why})");
            None
        }
        Err(e) => panic!("{test}: no PostgreSQL to test against: {e}"),
    }
}

impl Drop for TestPostgres {
    #[allow(clippy::print_stderr)] // see `or_skip`
    fn drop(&mut self) {
        if let Err(e) = self.pg_ctl(&["stop", "-m", "fast", "-w"]) {
            // Already stopped by a test (`kill`), or it will not stop: nothing more to do here.
            eprintln!("stopping the test PostgreSQL: {e}");
        }
    }
}

/// A directory of its own under the system's temporary directory, removed when dropped. (Not the
/// `tempfile` crate: a dependency here would build the broker twice, with and without it.)
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self, HarnessError> {
        static MADE: AtomicU64 = AtomicU64::new(0);
        let n = MADE.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("switchboard-pg-{}-{n}", std::process::id()));
        // A directory left by an earlier process with the same pid is stale.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path)
            .map_err(|cause| io(&format!("cannot make {}", path.display()), cause))?;
        Ok(Self(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Where PostgreSQL's programs are: Debian's newest `/usr/lib/postgresql/N/bin`, else `PATH`.
fn find_bin() -> Result<PathBuf, HarnessError> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|d| {
            let version = d.file_name().to_str()?.parse().ok()?;
            let bin = d.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .find(|dir| dir.join("initdb").exists() && dir.join("pg_ctl").exists())
        .ok_or_else(|| {
            HarnessError::Missing("no initdb in /usr/lib/postgresql/*/bin or on PATH".into())
        })
}

/// The `postgres` user's (uid, gid) when we are root, who may not run the server; `None` otherwise.
fn run_as() -> Result<Option<(u32, u32)>, HarnessError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = CString::new("postgres").map_err(|e| io("user name", e.into()))?;
    // SAFETY: `name` is a valid C string; the result is read at once, before any other call that
    // could reuse getpwnam's static buffer.
    let user = unsafe { libc::getpwnam(name.as_ptr()) };
    if user.is_null() {
        return Err(HarnessError::Missing(
            "running as root and there is no `postgres` user to run the server as".into(),
        ));
    }
    // SAFETY: non-null, as checked.
    let (uid, gid) = unsafe { ((*user).pw_uid, (*user).pw_gid) };
    Ok(Some((uid, gid)))
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<(), HarnessError> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .map_err(|cause| io(&format!("cannot chown {}", path.display()), cause))
}

/// A loopback port nobody listens on right now.
fn free_port() -> Result<u16, HarnessError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|cause| io("cannot find a free port", cause))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|cause| io("cannot find a free port", cause))
}

fn io(what: &str, cause: std::io::Error) -> HarnessError {
    HarnessError::Io {
        what: what.into(),
        cause,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_postgres_a_test_skips_outside_ci_and_fails_in_ci() {
        let missing = || Err::<(), _>(HarnessError::Missing("no initdb".into()));
        assert_eq!(or_skip_in("t", missing(), false), None);
        let in_ci = std::panic::catch_unwind(|| or_skip_in("t", missing(), true));
        assert!(in_ci.is_err(), "in CI a missing PostgreSQL fails the test");
        let broken = || Err::<(), _>(io("initdb", std::io::ErrorKind::Other.into()));
        assert!(std::panic::catch_unwind(|| or_skip_in("t", broken(), false)).is_err());
    }
}
