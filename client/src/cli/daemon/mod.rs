//! `switchboard daemon`: keep a mailbox drained and hand each message to a local program, never
//! losing one and never handing one on twice.
//!
//! ```text
//!            ┌── stay.rs: one reconnecting client ─┐   idle timeout    ┌── poll.rs: connect, ──┐
//!  run() ────┤   (heartbeats, backoff, resends)    ├──────────────────▶│   drain, Bye, sleep   │
//!            └──────────────┬──────────────────────┘◀──────────────────┴──────────┬────────────┘
//!                           │               a poll found traffic                  │
//!                           └───────────── each entry: handler.rs ◀───────────────┘
//!                                   journal.rs ─ sink.rs / exec.rs ─ journal.rs ─ ack
//!  outbox.rs: spooled files sent (stay: a task of their own; poll: first thing in each poll)
//! ```
//!
//! What lives on disk, and why: the state directory (`--state-dir`) holds the journal of handled
//! entries (`journal.rs`) and a lock so that two daemons never share it; the outbox (`--outbox`)
//! holds messages waiting for the broker (`spool.rs` writes them, for `send --spool`, and
//! `outbox.rs` sends them); `--out-dir` and the dead-letter directory hold what the sink produced
//! (`sink.rs`, `exec.rs`). Every file is written atomically (`files.rs`).
//!
//! Stopping (SIGTERM, Ctrl-C) lets the entry in hand finish (a running `--exec` command included),
//! says `Bye`, and exits 0.

mod exec;
mod files;
mod handler;
mod journal;
mod outbox;
mod poll;
mod sink;
pub mod spool;
mod stay;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use clap::{Args, ValueEnum};
use switchboard_client::{Client, ClientOptions, Events, Reconnect};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use self::exec::Exec;
use self::files::{ensure_dir, DirLock, Locked};
use self::handler::Handler;
use self::journal::Journal;
use self::outbox::Outbox;
use self::sink::Sink;
use super::commands::shutdown_signal;
use super::parse_timeout;

/// The state directory's lock file.
const STATE_LOCK: &str = "daemon.lock";

/// How the daemon keeps in touch with the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Stay connected (pinging to keep the connection up) and receive at once.
    Stay,
    /// Connect every `--interval`, drain the mailbox, disconnect.
    Poll,
}

/// The daemon's flags.
#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// How to keep in touch with the broker.
    #[arg(long, value_enum, default_value = "stay")]
    mode: Mode,
    /// Poll mode: the time between polls (seconds, or a duration such as `5m`). Also the polling
    /// interval of stay mode once idle (see --idle-timeout).
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = parse_positive)]
    interval: Duration,
    /// Stay mode: after this long without traffic, disconnect and poll every --interval until a
    /// poll finds traffic, then stay connected again.
    #[arg(long, value_name = "SECS", value_parser = parse_positive)]
    idle_timeout: Option<Duration>,
    /// The shortest wait before reconnecting, and before running a failed --exec command again.
    #[arg(long, value_name = "SECS", default_value = "0.1", value_parser = parse_timeout)]
    backoff_base: Duration,
    /// The longest such wait; waits double from the base up to this, with jitter.
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_timeout)]
    backoff_cap: Duration,
    /// The keepalive to ask the broker for; the daemon pings after half of it without traffic.
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_positive)]
    keepalive: Duration,
    /// Sink: run `sh -c CMD` once per message, body on stdin; acknowledge on exit status 0.
    #[arg(long, value_name = "CMD", conflicts_with = "out_dir")]
    exec: Option<String>,
    /// Sink: write each message into DIR as ID.msg (the body) beside ID.json (its metadata), ID
    /// being the broker message id zero-padded to 20 digits.
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
    /// With --exec: runs per message before it goes to the dead-letter directory.
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    max_attempts: u32,
    /// With --exec: where refused messages go [default: STATE_DIR/dead-letter].
    #[arg(long, value_name = "DIR", requires = "exec")]
    dead_letter_dir: Option<PathBuf>,
    /// Where the journal of handled messages lives [default: $XDG_STATE_HOME/switchboard/ID, or
    /// ~/.local/state/switchboard/ID, or ./.switchboard-state/ID].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Send the messages `send --spool DIR` left in DIR, oldest first, once connected.
    #[arg(long, value_name = "DIR")]
    outbox: Option<PathBuf>,
}

impl DaemonArgs {
    /// What clap cannot check; the message is for a usage error.
    pub fn check(&self) -> Result<(), String> {
        if self.mode == Mode::Poll && self.idle_timeout.is_some() {
            return Err("--idle-timeout is for --mode stay; in poll mode the daemon is never connected for long".into());
        }
        Ok(())
    }
}

/// What the modes share.
pub struct Daemon {
    /// Connection options, without reconnecting (stay mode turns it on for its client).
    opts: ClientOptions,
    backoff: Reconnect,
    interval: Duration,
    idle_timeout: Option<Duration>,
    handler: Handler,
    outbox: Option<Arc<Mutex<Outbox>>>,
    stop: CancellationToken,
}

/// Runs the daemon until SIGTERM or Ctrl-C, or an error it cannot get past.
pub async fn run(mut opts: ClientOptions, args: DaemonArgs) -> anyhow::Result<()> {
    let backoff = Reconnect::new(args.backoff_base, args.backoff_cap);
    opts.keepalive = args.keepalive;
    opts.reconnect = None;
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| default_state_dir(&opts.id));
    ensure_dir(&state_dir, "state directory")?;
    let _state_lock =
        match DirLock::try_exclusive(&state_dir, STATE_LOCK, &format!("daemon {}", opts.id))
            .map_err(|e| {
                anyhow!(
                    "cannot lock the state directory {}: {e}",
                    state_dir.display()
                )
            })? {
            Locked::Taken(lock) => lock,
            Locked::Held(holder) => anyhow::bail!(
                "another daemon ({holder}) uses the state directory {}",
                state_dir.display()
            ),
        };
    let journal = Journal::open(&state_dir, journal::KEEP)
        .map_err(|e| anyhow!("cannot open the journal in {}: {e}", state_dir.display()))?;
    let sink = match (&args.exec, &args.out_dir) {
        (Some(command), _) => Sink::Exec(Exec {
            command: command.clone(),
            max_attempts: args.max_attempts,
            backoff,
            dead_letter_dir: args
                .dead_letter_dir
                .clone()
                .unwrap_or_else(|| state_dir.join("dead-letter")),
        }),
        (None, Some(dir)) => {
            ensure_dir(dir, "out directory")?;
            Sink::OutDir {
                dir: dir.clone(),
                backoff,
            }
        }
        (None, None) => Sink::Stdout,
    };

    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            match shutdown_signal().await {
                Ok(()) => tracing::info!("asked to stop; finishing the entry in hand"),
                Err(e) => tracing::error!(error = %e, "cannot watch for signals; stopping"),
            }
            stop.cancel();
        }
    });
    let outbox = match &args.outbox {
        Some(dir) => match Outbox::open(dir, &opts.id, &stop).await? {
            Some(outbox) => Some(Arc::new(Mutex::new(outbox))),
            None => return Ok(()),
        },
        None => None,
    };
    tracing::info!(
        id = %opts.id,
        server = %opts.server,
        mode = ?args.mode,
        state_dir = %state_dir.display(),
        "daemon starting"
    );
    let daemon = Daemon {
        opts,
        backoff,
        interval: args.interval,
        idle_timeout: args.idle_timeout,
        handler: Handler {
            journal,
            sink,
            stop: stop.clone(),
        },
        outbox,
        stop,
    };
    let mut mode = args.mode;
    let mut wait_first = false;
    loop {
        match mode {
            Mode::Stay => match stay::run(&daemon).await? {
                stay::StayEnd::Stopped => break,
                stay::StayEnd::Idle => {
                    tracing::info!(interval = ?daemon.interval, "switching to polling");
                    mode = Mode::Poll;
                    wait_first = true;
                }
            },
            Mode::Poll => {
                let until_traffic = args.mode == Mode::Stay;
                match poll::run(&daemon, until_traffic, wait_first).await? {
                    poll::PollEnd::Stopped => break,
                    poll::PollEnd::Traffic => {
                        tracing::info!("traffic again; staying connected");
                        mode = Mode::Stay;
                    }
                }
            }
        }
    }
    tracing::info!("daemon stopped");
    Ok(())
}

/// Connects, trying again with backoff while the broker cannot be reached; `None` if stopped first.
async fn connect_until_up(
    daemon: &Daemon,
    opts: ClientOptions,
) -> anyhow::Result<Option<(Client, Events)>> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let connecting = tokio::select! {
            connected = Client::connect(opts.clone()) => connected,
            () = daemon.stop.cancelled() => return Ok(None),
        };
        match connecting {
            Ok((client, events)) => {
                let welcome = client.welcome();
                tracing::info!(server = %opts.server, address = %welcome.address, pending = welcome.pending, "connected");
                return Ok(Some((client, events)));
            }
            Err(e) if e.is_retryable() => {
                let delay = daemon.backoff.delay(attempt);
                tracing::info!(attempt, ?delay, error = %e, "cannot reach the broker; trying again");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = daemon.stop.cancelled() => return Ok(None),
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// `$XDG_STATE_HOME/switchboard/ID`, else `$HOME/.local/state/switchboard/ID` (the XDG default),
/// else `./.switchboard-state/ID`; the id is made safe as one path component.
fn default_state_dir(id: &str) -> PathBuf {
    let absolute = |var: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    let base = if let Some(state) = absolute("XDG_STATE_HOME") {
        state.join("switchboard")
    } else if let Some(home) = absolute("HOME") {
        home.join(".local/state/switchboard")
    } else {
        Path::new(".switchboard-state").to_path_buf()
    };
    base.join(path_component(id))
}

/// A client id as a file name: ASCII letters, digits and `-_.@+` stay, every other byte (and a
/// leading dot) becomes `%XX`, so `a/b` and `..` cannot leave the directory.
fn path_component(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for (i, byte) in id.bytes().enumerate() {
        let plain =
            byte.is_ascii_alphanumeric() || b"-_@+".contains(&byte) || (byte == b'.' && i > 0);
        if plain {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A duration above zero: plain seconds or a duration such as `5m`.
fn parse_positive(text: &str) -> Result<Duration, String> {
    let duration = parse_timeout(text)?;
    if duration.is_zero() {
        return Err("must be more than zero".into());
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn parse(flags: &[&str]) -> Result<DaemonArgs, clap::error::ErrorKind> {
        let mut args = vec!["switchboard", "--id", "bob", "daemon"];
        args.extend_from_slice(flags);
        match Cli::try_parse_from(args).map(|cli| cli.command) {
            Ok(Command::Daemon(daemon)) => Ok(daemon),
            Ok(other) => panic!("parsed as {other:?}"),
            Err(e) => Err(e.kind()),
        }
    }

    #[test]
    fn daemon_flags_have_their_defaults_and_their_rules() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.mode, Mode::Stay);
        assert_eq!(args.interval, Duration::from_secs(60));
        assert_eq!(args.backoff_base, Duration::from_millis(100));
        assert_eq!(args.backoff_cap, Duration::from_secs(30));
        assert_eq!(args.max_attempts, 5);
        assert!(args.exec.is_none() && args.out_dir.is_none() && args.idle_timeout.is_none());

        let args = parse(&["--mode", "poll", "--interval", "5m"]).unwrap();
        assert_eq!(
            (args.mode, args.interval),
            (Mode::Poll, Duration::from_secs(300))
        );
        assert!(args.check().is_ok());
        let args = parse(&["--mode", "poll", "--idle-timeout", "10"]).unwrap();
        assert!(args.check().is_err(), "idle timeout is for stay mode");

        use clap::error::ErrorKind;
        assert_eq!(
            parse(&["--exec", "true", "--out-dir", "x"]).err(),
            Some(ErrorKind::ArgumentConflict)
        );
        assert_eq!(
            parse(&["--dead-letter-dir", "x"]).err(),
            Some(ErrorKind::MissingRequiredArgument)
        );
        assert_eq!(
            parse(&["--max-attempts", "0"]).err(),
            Some(ErrorKind::ValueValidation)
        );
        assert_eq!(
            parse(&["--interval", "0"]).err(),
            Some(ErrorKind::ValueValidation)
        );
    }

    #[test]
    fn ids_become_safe_file_names() {
        assert_eq!(path_component("bob@host-1"), "bob@host-1");
        assert_eq!(path_component("a/b"), "a%2Fb");
        assert_eq!(path_component(".."), "%2E.");
        assert_eq!(path_component("ünï"), "%C3%BCn%C3%AF");
    }
}
