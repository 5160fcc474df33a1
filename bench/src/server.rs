//! The broker under test as a child process, and what `/proc` says about a server's memory.
//!
//! [`BrokerProcess::start`] runs `switchboard-broker` on 127.0.0.1 port 0 in a data directory of the
//! bench's choosing, with settings passed as `SWITCHBOARD_BROKER_*` environment variables, and waits (with a
//! timeout) for its `listening on ADDR` log line; the time from spawn to that line is the start-up
//! time the large-mailbox workload reports. The broker's log goes to `broker.log` next to the data
//! directory. The child is killed if the bench drops it without stopping it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

/// How to run the broker.
#[derive(Debug, Clone)]
pub(crate) struct BrokerConfig {
    pub bin: PathBuf,
    /// Extra environment, `SWITCHBOARD_BROKER_*` settings among it.
    pub env: Vec<(String, String)>,
    pub start_timeout: Duration,
}

impl BrokerConfig {
    /// `switchboard-broker` next to this executable (the same cargo target directory).
    pub(crate) fn default_bin() -> anyhow::Result<PathBuf> {
        let exe = std::env::current_exe().context("cannot find the bench's own executable")?;
        let dir = exe
            .parent()
            .ok_or_else(|| anyhow!("{} has no directory", exe.display()))?;
        Ok(dir.join("switchboard-broker"))
    }
}

/// A running broker child process.
pub(crate) struct BrokerProcess {
    child: Child,
    pub addr: SocketAddr,
    pub pid: u32,
    /// From spawn to the `listening on` line.
    pub started_in: Duration,
}

impl BrokerProcess {
    /// Starts the broker on `data_dir` (its log goes to `data_dir/../broker.log`, appended).
    pub(crate) async fn start(config: &BrokerConfig, data_dir: &Path) -> anyhow::Result<Self> {
        if !config.bin.is_file() {
            bail!(
                "no broker binary at {}; build it first: cargo build --release -p switchboard-broker \
                 (or pass --broker-bin)",
                config.bin.display()
            );
        }
        let workdir = data_dir.parent().unwrap_or(data_dir).to_path_buf();
        let log_path = workdir.join("broker.log");
        let mut cmd = Command::new(&config.bin);
        cmd.arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir)
            // No settings.toml is picked up by accident: the working directory is the bench's own.
            .current_dir(&workdir)
            .env_remove("RUST_LOG")
            // Not the default admin port: a broker the user runs may hold it.
            .env("SWITCHBOARD_BROKER_ADMIN__LISTEN", "127.0.0.1:0")
            .envs(config.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let spawned = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", config.bin.display()))?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("the broker exited at once"))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| anyhow!("no broker stderr"))?;
        let (tx, rx) = oneshot::channel();
        tokio::spawn(follow_log(stderr, log_path.clone(), tx));
        let listening = tokio::select! {
            found = tokio::time::timeout(config.start_timeout, rx) => found,
            status = child.wait() => {
                bail!("the broker exited during start-up ({}); see {}", status?, log_path.display())
            }
        };
        let addr = match listening {
            Ok(Ok((addr, at))) => (addr, at),
            Ok(Err(_)) => bail!(
                "the broker's log ended before `listening on`; see {}",
                log_path.display()
            ),
            Err(_) => bail!(
                "the broker did not log `listening on` within {:?}; see {}",
                config.start_timeout,
                log_path.display()
            ),
        };
        Ok(Self {
            child,
            addr: addr.0,
            pid,
            started_in: addr.1.duration_since(spawned),
        })
    }

    /// SIGTERM, then waits up to `grace` for a clean exit (SIGKILL after that). Returns how long the
    /// broker took to exit.
    pub(crate) async fn stop(mut self, grace: Duration) -> anyhow::Result<Duration> {
        let asked = Instant::now();
        // SAFETY: kill(2) with a pid we spawned and have not yet reaped; it cannot be reused.
        if unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) } != 0 {
            bail!(
                "cannot signal the broker: {}",
                std::io::Error::last_os_error()
            );
        }
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => {
                let status = status?;
                if !status.success() {
                    eprintln!("warning: the broker exited with {status}");
                }
                Ok(asked.elapsed())
            }
            Err(_) => {
                self.child.kill().await?;
                bail!("the broker did not exit within {grace:?} of SIGTERM; killed it")
            }
        }
    }
}

/// Copies the broker's stderr to `log_path` and reports the address of the first `listening on`.
async fn follow_log(
    stderr: tokio::process::ChildStderr,
    log_path: PathBuf,
    tx: oneshot::Sender<(SocketAddr, Instant)>,
) {
    let mut log = match tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .await
    {
        Ok(file) => Some(file),
        Err(e) => {
            eprintln!("warning: cannot write {}: {e}", log_path.display());
            None
        }
    };
    let mut tx = Some(tx);
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(addr) = tx.is_some().then(|| listening_addr(&line)).flatten() {
            if let Some(tx) = tx.take() {
                let _ = tx.send((addr, Instant::now()));
            }
        }
        if let Some(file) = log.as_mut() {
            let _ = file.write_all(line.as_bytes()).await;
            let _ = file.write_all(b"\n").await;
        }
    }
}

/// The address in a `listening on ADDR` log line (text or JSON format).
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    let token = rest.split(|c: char| c.is_whitespace() || c == '"').next()?;
    token.parse().ok()
}

/// Memory figures of a process, from `/proc/PID/status`, in bytes.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Memory {
    /// Resident set now (`VmRSS`).
    pub rss: u64,
    /// Peak resident set since start or the last [`reset_peak`] (`VmHWM`).
    pub peak: u64,
}

/// Reads `VmRSS` and `VmHWM` of `pid`.
pub(crate) fn memory(pid: u32) -> anyhow::Result<Memory> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .ok_or_else(|| anyhow!("{path} has no {name}"))?;
        let kb: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .with_context(|| format!("cannot read {name} in {path}"))?;
        Ok(kb * 1024)
    };
    Ok(Memory {
        rss: field("VmRSS:")?,
        peak: field("VmHWM:")?,
    })
}

/// Resets the peak resident set (`VmHWM`) of `pid` to its current size (Linux `clear_refs` 5).
pub(crate) fn reset_peak(pid: u32) -> anyhow::Result<()> {
    let path = format!("/proc/{pid}/clear_refs");
    std::fs::write(&path, "5").with_context(|| format!("cannot write {path}"))
}

/// Raises this process's open-file limit to its hard limit (children inherit it), so thousands of
/// connections fit. Returns the limit now in force.
pub(crate) fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        limit.rlim_cur = limit.rlim_max;
        let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    limit.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_address_in_text_and_json_logs() {
        let text = "2026-01-01T00:00:00Z  INFO switchboard_broker::server: listening on 127.0.0.1:4242 address=127.0.0.1:4242";
        assert_eq!(
            listening_addr(text),
            Some("127.0.0.1:4242".parse().unwrap())
        );
        let json = r#"{"fields":{"message":"listening on 127.0.0.1:99","address":"127.0.0.1:99"}}"#;
        assert_eq!(listening_addr(json), Some("127.0.0.1:99".parse().unwrap()));
        assert_eq!(listening_addr("opened SQLite store"), None);
    }

    #[test]
    fn reads_its_own_memory() {
        let m = memory(std::process::id()).unwrap();
        assert!(m.rss > 0 && m.peak >= m.rss);
    }
}
