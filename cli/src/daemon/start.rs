//! Starting the daemon: its state directory and lock, the journal, the sink, the outbox, the stop
//! signal; then the modes, in turn, until it is stopped.

use std::path::Path;
use std::sync::Arc;

use anyhow::anyhow;
use switchboard_client::{ClientOptions, Reconnect};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::daemon::args::{DaemonArgs, Mode};
use crate::daemon::exec::Exec;
use crate::daemon::handler::Handler;
use crate::daemon::journal::{Journal, KEEP};
use crate::daemon::poll::{self, PollEnd};
use crate::daemon::shared::Daemon;
use crate::daemon::sink::Sink;
use crate::daemon::state_dir::default_state_dir;
use crate::daemon::stay::{self, StayEnd};
use crate::files::{ensure_dir, DirLock, Locked};
use crate::outbox::sender::SpoolSender;
use crate::stdio::shutdown_signal;

/// The state directory's lock file.
const STATE_LOCK: &str = "daemon.lock";

/// Runs the daemon until SIGTERM or Ctrl-C, or an error it cannot get past.
pub(crate) async fn run(mut opts: ClientOptions, args: DaemonArgs) -> anyhow::Result<()> {
    let backoff = Reconnect::new(args.backoff_base, args.backoff_cap);
    opts.keepalive = args.keepalive;
    opts.reconnect = None;
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| default_state_dir(&opts.id));
    ensure_dir(&state_dir, "state directory")?;
    let _state_lock = lock_state_dir(&state_dir, &opts.id)?;
    let journal = Journal::open(&state_dir, KEEP)
        .map_err(|e| anyhow!("cannot open the journal in {}: {e}", state_dir.display()))?;
    let sink = sink(&args, &state_dir, backoff)?;
    let stop = stop_on_signal();
    let spool_sender = match &args.outbox {
        Some(dir) => match SpoolSender::open(dir, &opts.id, &stop).await? {
            Some(sender) => Some(Arc::new(Mutex::new(sender))),
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
            datagrams: !args.no_datagrams,
        },
        spool_sender,
        stop,
    };
    switch_modes(&daemon, args.mode).await?;
    tracing::info!("daemon stopped");
    Ok(())
}

/// Takes the state directory's lock, so that two daemons never share a journal.
fn lock_state_dir(state_dir: &Path, id: &str) -> anyhow::Result<DirLock> {
    let locked =
        DirLock::try_exclusive(state_dir, STATE_LOCK, &format!("daemon {id}")).map_err(|e| {
            anyhow!(
                "cannot lock the state directory {}: {e}",
                state_dir.display()
            )
        })?;
    match locked {
        Locked::Taken(lock) => Ok(lock),
        Locked::Held(holder) => anyhow::bail!(
            "another daemon ({holder}) uses the state directory {}",
            state_dir.display()
        ),
    }
}

/// The sink the flags ask for: `--exec`, `--out-dir` (created if need be), or stdout.
fn sink(args: &DaemonArgs, state_dir: &Path, backoff: Reconnect) -> anyhow::Result<Sink> {
    Ok(match (&args.exec, &args.out_dir) {
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
    })
}

/// A token cancelled on SIGTERM or Ctrl-C (or at once, if signals cannot be watched). SIGHUP, which
/// `systemctl reload` and a closed terminal send, is logged and otherwise ignored: the daemon has
/// nothing to reload, and its default action would kill the daemon with the entry in hand.
fn stop_on_signal() -> CancellationToken {
    ignore_hangups();
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
    stop
}

fn ignore_hangups() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::info!("SIGHUP received; the daemon has nothing to reload and goes on");
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot watch SIGHUP; it would stop the daemon"),
    }
}

/// Runs the modes until stopped, starting with `first`. Stay mode with an idle timeout hands over to
/// polling when idle, and polling hands back to staying connected when a poll finds traffic.
async fn switch_modes(daemon: &Daemon, first: Mode) -> anyhow::Result<()> {
    let mut mode = first;
    let mut wait_first = false;
    loop {
        match mode {
            Mode::Stay => match stay::run(daemon).await? {
                StayEnd::Stopped => return Ok(()),
                StayEnd::Idle => {
                    tracing::info!(interval = ?daemon.interval, "switching to polling");
                    mode = Mode::Poll;
                    wait_first = true;
                }
            },
            Mode::Poll => {
                let until_traffic = first == Mode::Stay;
                match poll::run(daemon, until_traffic, wait_first).await? {
                    PollEnd::Stopped => return Ok(()),
                    PollEnd::Traffic => {
                        tracing::info!("traffic again; staying connected");
                        mode = Mode::Stay;
                    }
                }
            }
        }
    }
}
