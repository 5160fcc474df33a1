//! What the process-level tests share: the workspace's binaries, a `switchboard-broker` child
//! process on loopback, and bounded waits.
//!
//! The end-to-end tests in `tests/e2e/` run the broker in-process; the tests that need a real
//! process (the command-line tools, `kill -9`) start one with [`BrokerProcess`]. Every wait is
//! bounded, so a broker that hangs fails the test with the name of what it was waiting for instead
//! of hanging the run.

use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The default bound on every wait.
pub const WAIT: Duration = Duration::from_secs(20);

/// How many of the broker's last log lines a failure message shows.
const LOG_TAIL: usize = 200;

/// Fails the test if `fut` takes longer than [`WAIT`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    within_for(WAIT, what, fut).await
}

/// Fails the test if `fut` takes longer than `limit`.
pub async fn within_for<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// The workspace's binaries and the package each belongs to.
const BINARIES: [(&str, &str); 2] = [
    ("switchboard-broker", "switchboard-broker"),
    ("switchboard", "switchboard-cli"),
];

/// The path of the workspace binary `name` (`switchboard-broker` or `switchboard`), next to the
/// test executable in `target/<profile>/`.
///
/// `cargo test -p switchboard-tests` does not build other packages' binaries, so a test could run
/// a stale broker. Under cargo (`CARGO` is set) the binary is therefore built once per test
/// process, a no-op when it is fresh; run directly, the test builds it only when it is missing.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let path = profile_dir().join(name);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if built.iter().any(|b| b == name) {
        return path;
    }
    if std::env::var_os("CARGO").is_some() || !path.exists() {
        build(name);
    }
    assert!(
        path.exists(),
        "{} is missing after the build",
        path.display()
    );
    built.push(name.to_owned());
    path
}

/// `target/<profile>`: the test executable is `target/<profile>/deps/<test>-<hash>`.
fn profile_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        exe.parent()
            .and_then(Path::parent)
            .expect("target/<profile> above the test executable")
            .to_path_buf()
    })
}

/// Builds `name` into the target directory and profile this test was built for.
fn build(name: &str) {
    let package = BINARIES
        .iter()
        .find(|(bin, _)| *bin == name)
        .map(|(_, package)| *package)
        .unwrap_or_else(|| panic!("{name} is not a workspace binary"));
    let dir = profile_dir();
    let profile = match dir.file_name().and_then(|p| p.to_str()) {
        Some("debug") => "dev",
        Some(other) => other,
        None => panic!("no profile in {}", dir.display()),
    };
    let target_dir = dir.parent().expect("target directory");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = std::process::Command::new(cargo);
    // `cargo test` sets these for the test process, not for itself; a build script that watches
    // them (ring's) would see them change between this build and the next `cargo test`, and
    // rebuild everything above it both times.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let per_package = [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
        ];
        if per_package.iter().any(|p| key.starts_with(p))
            || key == "CARGO_PRIMARY_PACKAGE"
            || key == "CARGO_TARGET_TMPDIR"
        {
            command.env_remove(key.as_ref());
        }
    }
    let status = command
        .args([
            "build",
            "--quiet",
            "-p",
            package,
            "--bin",
            name,
            "--profile",
            profile,
        ])
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo build");
    assert!(status.success(), "building {name} failed");
}

/// A `switchboard-broker` process listening on loopback with its data in a directory of the test's.
///
/// Dropping it kills the process.
pub struct BrokerProcess {
    child: Child,
    addr: SocketAddr,
    log: Log,
}

/// The address in the first log line that says `"{what}ADDR"` (`admin listener at `), if it has come
/// yet.
fn address_in(log: &Log, what: &str) -> Option<SocketAddr> {
    log.lines().iter().find_map(|line| {
        let (_, rest) = line.split_once(what)?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Lines a child process writes, collected as they come by a task that drains the stream (so the
/// child never blocks on a full pipe).
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    /// Starts collecting `stream`, line by line.
    pub fn drain(&self, stream: impl tokio::io::AsyncRead + Unpin + Send + 'static) {
        let log = self.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                log.push(line);
            }
        });
    }

    fn push(&self, line: String) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(line);
    }

    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many lines contain every one of `needles`.
    pub fn count(&self, needles: &[&str]) -> usize {
        self.lines()
            .iter()
            .filter(|line| needles.iter().all(|n| line.contains(n)))
            .count()
    }

    /// Waits until `n` lines contain every one of `needles`, looking every 20 ms (a log cannot
    /// notify); shows the log if they never come within [`WAIT`].
    pub async fn wait_for(&self, n: usize, needles: &[&str]) {
        let log = self.clone();
        let waited = tokio::time::timeout(WAIT, async {
            while log.count(needles) < n {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        if waited.is_err() {
            panic!(
                "timed out after {WAIT:?} waiting for {n} log line(s) with {needles:?} in:\n{}",
                self.lines().join("\n")
            );
        }
    }

    /// The last lines, indented, for a failure message.
    fn tail(&self) -> String {
        let lines = self.lines();
        let skip = lines.len().saturating_sub(LOG_TAIL);
        lines[skip..].iter().map(|l| format!("  | {l}\n")).collect()
    }
}

impl BrokerProcess {
    /// Starts a broker on 127.0.0.1 port 0 with its store in `data_dir`; returns once it listens.
    pub async fn start(data_dir: &Path) -> BrokerProcess {
        Self::start_on(data_dir, 0).await
    }

    /// Starts a broker on 127.0.0.1:`port` with its store in `data_dir`; returns once it listens.
    ///
    /// The working directory is `data_dir`, so no `settings.toml` of the workspace is read.
    pub async fn start_on(data_dir: &Path, port: u16) -> BrokerProcess {
        Self::spawn(data_dir, port, None, |_| {}).await
    }

    /// Starts a broker like [`BrokerProcess::start`], with `configure` having the last word on its
    /// command (more arguments, environment: `RUST_LOG` removed so `log.level` applies, say).
    pub async fn start_configured(
        data_dir: &Path,
        configure: impl FnOnce(&mut Command),
    ) -> BrokerProcess {
        Self::spawn(data_dir, 0, None, configure).await
    }

    /// Starts a broker like [`BrokerProcess::start`] with settings given as environment variables
    /// (`SWITCHBOARD_BROKER_STORE=postgres`, say).
    pub async fn start_with_env(data_dir: &Path, env: &[(&str, &str)]) -> BrokerProcess {
        Self::start_configured(data_dir, |command| {
            command.envs(env.iter().copied());
        })
        .await
    }

    /// Starts a broker like [`BrokerProcess::start`] that may open at most `descriptors` files
    /// (`ulimit -n`, soft and hard), as on a machine whose limit is too low for its settings.
    pub async fn start_with_descriptor_limit(data_dir: &Path, descriptors: u64) -> BrokerProcess {
        Self::spawn(data_dir, 0, Some(descriptors), |_| {}).await
    }

    async fn spawn(
        data_dir: &Path,
        port: u16,
        descriptors: Option<u64>,
        configure: impl FnOnce(&mut Command),
    ) -> BrokerProcess {
        std::fs::create_dir_all(data_dir).expect("create the data directory");
        // `binary` may run a `cargo build`: on a blocking thread, so the test's runtime keeps
        // serving whatever connections the test already has open.
        let program = tokio::task::spawn_blocking(|| binary("switchboard-broker"))
            .await
            .expect("find the broker binary");
        let mut command = match descriptors {
            None => Command::new(program),
            Some(limit) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
                    .arg(program);
                sh
            }
        };
        command
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data_dir)
            .current_dir(data_dir)
            .env("RUST_LOG", "info")
            .env("SWITCHBOARD_BROKER_LOG__FORMAT", "text")
            // Each broker's admin listener on a port of its own (`admin_addr`).
            .env("SWITCHBOARD_BROKER_ADMIN__LISTEN", "127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        configure(&mut command);
        let mut child = command.spawn().expect("start switchboard-broker");
        let stderr = child.stderr.take().expect("stderr");
        let log = Log::default();
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        // Keep draining the log so the broker never blocks on a full pipe.
        tokio::spawn(drain_log(BufReader::new(stderr), log.clone(), addr_tx));
        match tokio::time::timeout(WAIT, addr_rx).await {
            Ok(Ok(addr)) => BrokerProcess { child, addr, log },
            Ok(Err(_)) => {
                let exit = within("the broker's exit", child.wait()).await;
                panic!(
                    "the broker exited ({exit:?}) before listening:\n{}",
                    log.tail()
                );
            }
            Err(_) => panic!("the broker did not listen within {WAIT:?}:\n{}", log.tail()),
        }
    }

    /// The broker's process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the broker is running")
    }

    /// The address the broker listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address of the broker's admin listener (logged before `listening on`).
    pub fn admin_addr(&self) -> SocketAddr {
        address_in(&self.log, "admin listener at ")
            .unwrap_or_else(|| panic!("no admin listener in the log:\n{}", self.log()))
    }

    /// The broker's last log lines (up to 200), oldest first, for failure messages.
    pub fn log(&self) -> String {
        self.log.tail()
    }

    /// Everything the broker has logged so far.
    pub fn output(&self) -> &Log {
        &self.log
    }

    /// Lines of the broker's log about `client`'s sessions that contain `what`.
    pub fn sessions(&self, client: &str, what: &str) -> usize {
        self.log.count(&[&format!("client=\"{client}\""), what])
    }

    /// SIGKILL, then waits for the process to be gone: a crash, with no chance to clean up.
    ///
    /// Fails the test if the broker had already exited on its own.
    pub async fn kill9(mut self) {
        if let Ok(Some(exit)) = self.child.try_wait() {
            panic!("the broker died on its own ({exit}):\n{}", self.log());
        }
        self.child.start_kill().expect("send SIGKILL");
        let exit = within("the killed broker's exit", self.child.wait())
            .await
            .expect("wait for the broker");
        assert_eq!(
            exit.signal(),
            Some(9),
            "the broker exited with {exit} instead of dying of SIGKILL:\n{}",
            self.log()
        );
    }

    /// SIGTERM, as an operator's service manager would; the broker must exit 0.
    pub async fn terminate(mut self) {
        let pid = self.child.id().expect("the broker is running");
        let status = within(
            "kill -TERM",
            Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status(),
        )
        .await
        .expect("run kill");
        assert!(status.success(), "kill -TERM {pid} failed: {status}");
        let exit: ExitStatus = within("the broker's exit after SIGTERM", self.child.wait())
            .await
            .expect("wait for the broker");
        assert!(
            exit.success(),
            "the broker exited with {exit}:\n{}",
            self.log()
        );
    }
}

/// Reads the broker's stderr to its end, sending the address of its `listening on ADDR` line on
/// `addr` and keeping every line in `log`.
async fn drain_log(
    stderr: BufReader<tokio::process::ChildStderr>,
    log: Log,
    addr: tokio::sync::oneshot::Sender<SocketAddr>,
) {
    let mut addr = Some(addr);
    let mut lines = stderr.lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some((_, rest)) = line.split_once("listening on ") {
            let parsed = rest.split_whitespace().next().and_then(|a| a.parse().ok());
            if let (Some(parsed), Some(tx)) = (parsed, addr.take()) {
                let _ = tx.send(parsed);
            }
        }
        log.push(line);
    }
}
