//! What the daemon tests share: a `switchboard-broker` process, `switchboard` processes (one-shot
//! commands and daemons) whose output is collected as it comes, a proxy that can stop passing the
//! daemon's bytes on, and bounded waits. Every wait is for an event (a line, a file, an exit) and
//! fails the test after [`WAIT`] with the name of what it waited for.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// Every wait in these tests is bounded by this.
pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// Fails the test if `fut` takes longer than [`WAIT`] (longer than the workspace's default bound:
/// these tests restart brokers and daemons).
pub(crate) async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    switchboard_tests::within_for(WAIT, what, fut).await
}

/// Waits until `check` holds, looking every 20 ms; the check is of something the test cannot be
/// told about (a file), so it is looked at, but never for longer than [`WAIT`].
pub(crate) async fn until(what: &str, mut check: impl FnMut() -> bool) {
    within(what, async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// The lines of a text file; none if it does not exist.
pub(crate) fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Whether the daemon's journal in `state` records the entry `id` (lines are `<id> <check>`).
pub(crate) fn journal_has(state: &Path, id: &str) -> bool {
    lines(&state.join("handled"))
        .iter()
        .any(|line| line.split(' ').next() == Some(id))
}

/// The names in `dir` ending in `suffix`, sorted; none if it does not exist.
pub(crate) fn names(dir: &Path, suffix: &str) -> Vec<String> {
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

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The broker child process and log collection are shared with the workspace's other process-level
/// tests.
pub(crate) use switchboard_tests::{BrokerProcess as Broker, Log};

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
pub(crate) fn switchboard(addr: SocketAddr, id: &str) -> Command {
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
pub(crate) async fn run(mut cmd: Command) -> Output {
    within("the command", cmd.output())
        .await
        .expect("run switchboard")
}

/// `send` from `from` to `to`; returns the broker's message id.
pub(crate) async fn send(addr: SocketAddr, from: &str, to: &str, body: &str) -> u64 {
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
pub(crate) async fn send_spooled(
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
pub(crate) struct Daemon {
    child: Child,
    pub log: Log,
    stdout: mpsc::UnboundedReceiver<String>,
}

impl Daemon {
    /// A broker with its data in `dir/data`, and bob's daemon (default sink) with its state in
    /// `dir/state`, the start most tests share. Returns the broker, the daemon and the state dir.
    pub(crate) async fn bob_with_broker(dir: &Path) -> (Broker, Daemon, PathBuf) {
        let broker = Broker::start(&dir.join("data")).await;
        let state = dir.join("state");
        let state_arg = state.to_str().expect("a UTF-8 path");
        let bob = Daemon::start(broker.addr(), "bob", &["--state-dir", state_arg]);
        (broker, bob, state)
    }

    /// Starts `switchboard --id ID daemon ARGS…` with a quick backoff.
    pub(crate) fn start(addr: SocketAddr, id: &str, args: &[&str]) -> Daemon {
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
    pub(crate) async fn next_json(&mut self) -> serde_json::Value {
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

    /// SIGHUP, as `systemctl reload` sends it.
    pub(crate) async fn hangup(&self) {
        signal(&self.child, "HUP").await;
    }

    /// SIGKILL, and wait for it to be gone.
    pub(crate) async fn kill9(mut self) {
        self.child.start_kill().expect("kill the daemon");
        within("the killed daemon's exit", self.child.wait())
            .await
            .expect("wait for the daemon");
    }

    /// SIGTERM; the daemon must say goodbye and exit 0.
    pub(crate) async fn stop(mut self) {
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
pub(crate) struct Proxy {
    pub addr: SocketAddr,
    frozen: Arc<AtomicBool>,
}

impl Proxy {
    pub(crate) async fn start(upstream: SocketAddr) -> Proxy {
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
    pub(crate) fn freeze(&self) {
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
