//! Poll mode: connect, send the outbox, drain the mailbox, say `Bye`, sleep; again.
//!
//! Between polls there is no connection at all: the broker shows the client offline and keeps what
//! arrives in its mailbox. A poll handles the `pending` entries the handshake announced, and
//! whatever else arrives meanwhile: it leaves once it has handled at least `pending` entries and
//! nothing more came for [`LINGER`]. Anything delivered but not yet acknowledged when it leaves
//! comes again at the next poll. A poll that cannot connect, or loses its connection, is tried again
//! after a backoff (never longer than the interval).

use std::time::Duration;

use anyhow::anyhow;
use switchboard_client::{Client, CloseReason, ErrorCode, Event, Events};

use crate::daemon::handler::Handled;
use crate::daemon::shared::Daemon;
use crate::exit::BrokerClosed;
use crate::outbox::sender::FlushError;

/// How long a poll waits for more once the announced entries are handled.
const LINGER: Duration = Duration::from_millis(300);

/// How long a poll waits for the next announced entry before it gives up on the rest (an entry may
/// expire, or the broker may be slow); they come at the next poll.
const ENTRY_WAIT: Duration = Duration::from_secs(10);

/// How the polling ended.
#[derive(Debug)]
pub(crate) enum PollEnd {
    /// The daemon was asked to stop.
    Stopped,
    /// A poll found traffic, and the daemon was told to go back to staying connected then.
    Traffic,
}

/// What one poll did.
enum Polled {
    Stopped,
    Done { handled: u64, sent: usize },
}

/// Why one poll failed.
enum PollFailed {
    /// Worth another poll after a pause.
    Retry(anyhow::Error),
    /// The daemon cannot go on.
    Fatal(anyhow::Error),
}

/// Polls every interval (the first at once unless `wait_first`) until stopped or, with
/// `until_traffic`, until a poll handles or sends something.
pub(crate) async fn run(
    daemon: &Daemon,
    until_traffic: bool,
    wait_first: bool,
) -> anyhow::Result<PollEnd> {
    let mut wait = if wait_first {
        daemon.interval
    } else {
        Duration::ZERO
    };
    let mut failures = 0;
    loop {
        if !wait.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = daemon.stop.cancelled() => return Ok(PollEnd::Stopped),
            }
        }
        if daemon.stop.is_cancelled() {
            return Ok(PollEnd::Stopped);
        }
        match poll_once(daemon).await {
            Ok(Polled::Stopped) => return Ok(PollEnd::Stopped),
            Ok(Polled::Done { handled, sent }) => {
                failures = 0;
                tracing::info!(handled, sent, next_in = ?daemon.interval, "poll done; disconnected");
                if until_traffic && (handled > 0 || sent > 0) {
                    return Ok(PollEnd::Traffic);
                }
                wait = daemon.interval;
            }
            Err(PollFailed::Retry(e)) => {
                failures += 1;
                wait = daemon.backoff.delay(failures).min(daemon.interval);
                tracing::info!(attempt = failures, delay = ?wait, error = %e, "poll failed; trying again");
            }
            Err(PollFailed::Fatal(e)) => return Err(e),
        }
    }
}

async fn poll_once(daemon: &Daemon) -> Result<Polled, PollFailed> {
    let (client, mut events) = match Client::connect(daemon.opts.clone()).await {
        Ok(connected) => connected,
        Err(e) if e.is_retryable() => return Err(PollFailed::Retry(e.into())),
        Err(e) => return Err(PollFailed::Fatal(e.into())),
    };
    let pending = client.welcome().pending;
    tracing::debug!(pending, "connected for a poll");
    let polled = drain(daemon, &client, &mut events, pending).await;
    // Bye, and wait for the broker to close: the acks written before it are read.
    let _ = client.close().await;
    polled
}

async fn drain(
    daemon: &Daemon,
    client: &Client,
    events: &mut Events,
    pending: u64,
) -> Result<Polled, PollFailed> {
    let mut sent = 0;
    if let Some(sender) = &daemon.spool_sender {
        match sender.lock().await.flush(client).await {
            Ok(n) => sent = n,
            Err(FlushError::Busy(why)) => {
                tracing::warn!(reason = %why, "the broker did not take a spooled message now; trying at the next poll");
            }
            Err(FlushError::Lost) => {
                return Err(PollFailed::Retry(anyhow!(
                    "the connection ended while sending the outbox"
                )));
            }
            Err(FlushError::Fatal(e)) => tracing::error!(error = %e, "cannot send the outbox"),
        }
    }
    let mut handled = 0;
    loop {
        let wait = if handled < pending {
            ENTRY_WAIT
        } else {
            LINGER
        };
        let event = tokio::select! {
            biased;
            () = daemon.stop.cancelled() => return Ok(Polled::Stopped),
            event = tokio::time::timeout(wait, events.next()) => event,
        };
        let outcome = match event {
            Err(_) => {
                if handled < pending {
                    tracing::warn!(handled, pending, "fewer entries arrived than the broker announced; the rest at the next poll");
                }
                return Ok(Polled::Done { handled, sent });
            }
            Ok(Some(Event::Message(message))) => daemon.handler.message(client, &message).await,
            Ok(Some(Event::Receipt(receipt))) => daemon.handler.receipt(client, &receipt).await,
            // Only a reconnecting client reports these; a poll's client does not reconnect.
            Ok(Some(Event::Disconnected(_) | Event::Reconnected(_))) => continue,
            // Not a mailbox entry: handed over once, not counted.
            Ok(Some(Event::Datagram(d))) => {
                daemon
                    .handler
                    .datagram(&d)
                    .await
                    .map_err(PollFailed::Fatal)?;
                continue;
            }
            Ok(Some(Event::Closed(reason))) => return Err(closed(reason)),
            Ok(None) => {
                return Err(PollFailed::Retry(anyhow!(
                    "the connection to the broker is closed"
                )))
            }
        };
        match outcome.map_err(PollFailed::Fatal)? {
            Handled::Interrupted => return Ok(Polled::Stopped),
            Handled::Acked | Handled::Unacked => handled += 1,
        }
    }
}

/// Another process taking the id over is final (see "Takeover" in `PROTOCOL.md`); other ends are
/// worth another poll.
fn closed(reason: CloseReason) -> PollFailed {
    match reason {
        CloseReason::Broker {
            code: ErrorCode::SessionTakenOver,
            ..
        } => PollFailed::Fatal(BrokerClosed(reason).into()),
        reason => PollFailed::Retry(BrokerClosed(reason).into()),
    }
}
