//! What the daemon tests share: a `switchboard-broker` process, `switchboard` processes (one-shot
//! commands and daemons) whose output is collected as it comes, a proxy that can stop passing the
//! daemon's bytes on, and bounded waits. Every wait is for an event (a line, a file, an exit) and
//! fails the test after [`WAIT`] with the name of what it waited for.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// Every wait in these tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(30);

/// Fails the test if `fut` takes longer than [`WAIT`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

/// Waits until `check` holds, looking every 20 ms; the check is of something the test cannot be
/// told about (a file), so it is looked at, but never for longer than [`WAIT`].
pub async fn until(what: &str, mut check: impl FnMut() -> bool) {
    within(what, async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// The lines of a text file; none if it does not exist.
pub fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Whether the daemon's journal in `state` records the entry `id` (lines are `<id> <check>`).
pub fn journal_has(state: &Path, id: &str) -> bool {
    lines(&state.join("handled"))
        .iter()
        .any(|line| line.split(' ').next() == Some(id))
}

/// The names in `dir` ending in `suffix`, sorted; none if it does not exist.
pub fn names(dir: &Path, suffix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.ends_with(suffix) && !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `target/<profile>`, above the test executable in `target/<profile>/deps/`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile> above the test executable")
        .to_path_buf()
}

/// The broker binary. `cargo test -p switchboard-client` does not build other packages' binaries,
/// so under cargo it is built (once per test process; a no-op when fresh); run directly, only when
/// missing.
fn broker_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = profile_dir();
            let path = dir.join("switchboard-broker");
            if std::env::var_os("CARGO").is_none() && path.exists() {
                return path;
            }
            let profile = match dir.file_name().and_then(|p| p.to_str()) {
                Some("debug") => "dev".to_owned(),
                Some(other) => other.to_owned(),
                None => panic!("no profile in {}", dir.display()),
            };
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let built = std::process::Command::new(cargo)
                .args([
                    "build",
                    "--quiet",
                    "-p",
                    "switchboard-broker",
                    "--bin",
                    "switchboard-broker",
                ])
                .args(["--profile", &profile])
                .arg("--target-dir")
                .arg(dir.parent().expect("target directory"))
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .expect("run cargo build");
            assert!(
                built.success() || path.exists(),
                "building switchboard-broker failed"
            );
            path
        })
        .clone()
}

/// Lines a child process writes, collected as they come.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn drain(&self, stream: impl AsyncRead + Unpin + Send + 'static) {
        let log = self.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                log.0.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
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

    /// Waits until `n` lines contain every one of `needles`; shows the log if they never come.
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
}

/// A `switchboard-broker` process on loopback; killed when dropped.
pub struct Broker {
    child: Child,
    addr: SocketAddr,
    pub log: Log,
}

impl Broker {
    /// Starts a broker on port 0 with its store in `data_dir`.
    pub async fn start(data_dir: &Path) -> Broker {
        Self::start_on(data_dir, 0).await
    }

    /// Starts a broker on `port` (to restart one where its clients expect it).
    pub async fn start_on(data_dir: &Path, port: u16) -> Broker {
        std::fs::create_dir_all(data_dir).expect("data dir");
        let mut child = Command::new(broker_binary())
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data_dir)
            .current_dir(data_dir)
            .env("RUST_LOG", "info")
            .env("SWITCHBOARD_LOG__FORMAT", "text")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start switchboard-broker");
        let log = Log::default();
        log.drain(child.stderr.take().expect("stderr"));
        let addr = within("the broker to listen", async {
            loop {
                let found = log.lines().iter().find_map(|line| {
                    let (_, rest) = line.split_once("listening on ")?;
                    rest.split_whitespace().next()?.parse::<SocketAddr>().ok()
                });
                if let Some(addr) = found {
                    return addr;
                }
                if let Ok(Some(exit)) = child.try_wait() {
                    panic!("the broker exited ({exit}):\n{}", log.lines().join("\n"));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        Broker { child, addr, log }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// SIGKILL: a crash.
    pub async fn kill9(mut self) {
        self.child.start_kill().expect("kill the broker");
        within("the killed broker's exit", self.child.wait())
            .await
            .expect("wait for the broker");
    }

    /// SIGTERM, as a service manager stops it; it must exit 0.
    pub async fn terminate(mut self) {
        signal(&self.child, "TERM").await;
        let exit = within("the broker's exit", self.child.wait())
            .await
            .expect("wait for the broker");
        assert!(exit.success(), "the broker exited with {exit}");
    }

    /// Lines of the broker's log about `client`'s sessions that contain `what`.
    pub fn sessions(&self, client: &str, what: &str) -> usize {
        self.log.count(&[&format!("client=\"{client}\""), what])
    }
}

/// Sends `signal` (`TERM`, `KILL`) to a child with `kill`.
async fn signal(child: &Child, signal: &str) {
    let pid = child.id().expect("the child is running");
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .await
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// A `switchboard` command as `id`, talking to `addr`, with the environment cleared of settings.
pub fn switchboard(addr: SocketAddr, id: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    cmd.arg("--server")
        .arg(addr.to_string())
        .args(["--id", id])
        .env_remove("SWITCHBOARD_ID")
        .env_remove("SWITCHBOARD_SERVER")
        .env_remove("SWITCHBOARD_TOKEN")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Runs a one-shot command to its end.
pub async fn run(mut cmd: Command) -> Output {
    within("the command", cmd.output())
        .await
        .expect("run switchboard")
}

/// `send` from `from` to `to`; returns the broker's message id.
pub async fn send(addr: SocketAddr, from: &str, to: &str, body: &str) -> u64 {
    let mut cmd = switchboard(addr, from);
    cmd.args(["send", "--to", to, body]);
    let out = run(cmd).await;
    assert!(out.status.success(), "send failed: {}", text(&out.stderr));
    text(&out.stdout)
        .trim()
        .parse()
        .expect("message id on stdout")
}

/// `send --spool DIR` that must end spooled: exit 0, nothing on stdout, `spooled to DIR/...` on
/// stderr. Returns the spooled file.
pub async fn send_spooled(
    addr: SocketAddr,
    from: &str,
    to: &str,
    body: &str,
    dir: &Path,
) -> PathBuf {
    let mut cmd = switchboard(addr, from);
    cmd.args(["send", "--to", to, "--timeout", "5", "--spool"])
        .arg(dir)
        .arg(body);
    let out = run(cmd).await;
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "send --spool failed: {stderr}");
    assert_eq!(text(&out.stdout), "", "nothing on stdout when spooled");
    let prefix = format!("spooled to {}/", dir.display());
    let line = stderr
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` line in {stderr}"));
    let file = line[prefix.len()..]
        .split_whitespace()
        .next()
        .expect("file name");
    dir.join(file)
}

/// A `switchboard daemon` process; its stderr (logs) and stdout (the default sink) are collected.
pub struct Daemon {
    child: Child,
    pub log: Log,
    stdout: mpsc::UnboundedReceiver<String>,
}

impl Daemon {
    /// Starts `switchboard --id ID daemon ARGS…` with a quick backoff.
    pub fn start(addr: SocketAddr, id: &str, args: &[&str]) -> Daemon {
        let mut cmd = switchboard(addr, id);
        cmd.args(["daemon", "--backoff-base", "0.05", "--backoff-cap", "0.5"])
            .args(args);
        let mut child = cmd.spawn().expect("start the daemon");
        let log = Log::default();
        log.drain(child.stderr.take().expect("stderr"));
        let (tx, stdout) = mpsc::unbounded_channel();
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Daemon { child, log, stdout }
    }

    /// The next JSON line the default sink prints.
    pub async fn next_json(&mut self) -> serde_json::Value {
        let line = match tokio::time::timeout(WAIT, self.stdout.recv()).await {
            Ok(Some(line)) => line,
            Ok(None) => panic!(
                "the daemon's stdout ended; its log:\n{}",
                self.log.lines().join("\n")
            ),
            Err(_) => panic!(
                "timed out after {WAIT:?} waiting for a line from the daemon; its log:\n{}",
                self.log.lines().join("\n")
            ),
        };
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line}: {e}"))
    }

    /// SIGKILL, and wait for it to be gone.
    pub async fn kill9(mut self) {
        self.child.start_kill().expect("kill the daemon");
        within("the killed daemon's exit", self.child.wait())
            .await
            .expect("wait for the daemon");
    }

    /// SIGTERM; the daemon must say goodbye and exit 0.
    pub async fn stop(mut self) {
        if let Ok(Some(exit)) = self.child.try_wait() {
            panic!(
                "the daemon had exited ({exit}):\n{}",
                self.log.lines().join("\n")
            );
        }
        signal(&self.child, "TERM").await;
        let exit = within("the daemon's exit", self.child.wait())
            .await
            .expect("wait for the daemon");
        assert!(
            exit.success(),
            "the daemon exited with {exit}:\n{}",
            self.log.lines().join("\n")
        );
    }
}

/// A TCP proxy in front of the broker that can be frozen: from then on, what clients write is
/// dropped instead of passed on, as if the network lost it (the broker's bytes still pass).
pub struct Proxy {
    pub addr: SocketAddr,
    frozen: Arc<AtomicBool>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let frozen = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&frozen);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(broker) = TcpStream::connect(upstream).await else {
                    continue;
                };
                tokio::spawn(pipe(client, broker, Arc::clone(&flag)));
            }
        });
        Proxy { addr, frozen }
    }

    /// Drops everything clients write from now on.
    pub fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }
}

async fn pipe(client: TcpStream, broker: TcpStream, frozen: Arc<AtomicBool>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut broker_read, mut broker_write) = broker.into_split();
    let upstream = async {
        let mut buf = [0u8; 8192];
        loop {
            match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if !frozen.load(Ordering::SeqCst)
                        && broker_write.write_all(&buf[..n]).await.is_err()
                    {
                        return;
                    }
                }
            }
        }
    };
    let downstream = tokio::io::copy(&mut broker_read, &mut client_write);
    // Whichever side ends first ends the pair, closing both connections.
    tokio::select! {
        () = upstream => {}
        _ = downstream => {}
    }
}
