//! Stay mode: one reconnecting client, kept alive with pings, handling entries as they arrive.
//!
//! The first connection is retried here with backoff (the library retries only connections it has
//! had); after that the library reconnects by itself and reports `Disconnected` and `Reconnected`.
//! With `--idle-timeout`, a connection that carried nothing (no entry, no spooled send) for that long
//! is closed with `Bye` and the daemon switches to polling (`poll.rs`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use switchboard_client::{Client, Event, Events, Reconnect};
use tokio::sync::{Mutex, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::daemon::handler::Handled;
use crate::daemon::shared::{connect_until_up, Daemon};
use crate::exit::BrokerClosed;
use crate::outbox::sender::{FlushError, SpoolSender};

/// How often a connected daemon looks for new files in its outbox.
const OUTBOX_SCAN: Duration = Duration::from_millis(500);

/// How a stay ended.
#[derive(Debug)]
pub(crate) enum StayEnd {
    /// The daemon was asked to stop.
    Stopped,
    /// Nothing happened for the idle timeout; poll now.
    Idle,
}

/// Connects and stays connected until stopped, idle, or ended for good.
pub(crate) async fn run(daemon: &Daemon) -> anyhow::Result<StayEnd> {
    let mut opts = daemon.opts.clone();
    opts.reconnect = Some(daemon.backoff);
    let Some((client, mut events)) = connect_until_up(daemon, opts).await? else {
        return Ok(StayEnd::Stopped);
    };
    let activity = Arc::new(Notify::new());
    let reconnected = Arc::new(Notify::new());
    let outbox_stop = daemon.stop.child_token();
    let outbox = daemon.spool_sender.clone().map(|sender| {
        tokio::spawn(send_outbox(
            sender,
            client.clone(),
            daemon.backoff,
            Arc::clone(&reconnected),
            Arc::clone(&activity),
            outbox_stop.clone(),
        ))
    });
    let end = serve(daemon, &client, &mut events, &activity, &reconnected).await;
    outbox_stop.cancel();
    if let Some(task) = outbox {
        let _ = task.await;
    }
    // Bye: whatever was handled is acknowledged by now, the rest comes again next time.
    client.close().await?;
    end
}

async fn serve(
    daemon: &Daemon,
    client: &Client,
    events: &mut Events,
    activity: &Notify,
    reconnected: &Notify,
) -> anyhow::Result<StayEnd> {
    // Without an idle timeout the timer is never armed.
    let idle = daemon.idle_timeout.unwrap_or(Duration::MAX);
    let idle_timer = tokio::time::sleep(idle.min(FAR));
    tokio::pin!(idle_timer);
    loop {
        tokio::select! {
            biased;
            () = daemon.stop.cancelled() => return Ok(StayEnd::Stopped),
            event = events.next() => {
                let handled = match event {
                    Some(Event::Message(message)) => daemon.handler.message(client, &message).await?,
                    Some(Event::Receipt(receipt)) => daemon.handler.receipt(client, &receipt).await?,
                    // Not a mailbox entry: handed over once, nothing to acknowledge.
                    Some(Event::Datagram(d)) => {
                        daemon.handler.datagram(&d).await?;
                        continue;
                    }
                    Some(Event::Disconnected(reason)) => {
                        tracing::warn!(%reason, "lost the broker; reconnecting");
                        continue;
                    }
                    Some(Event::Reconnected(welcome)) => {
                        tracing::info!(address = %welcome.address, pending = welcome.pending, "reconnected");
                        reconnected.notify_one();
                        continue;
                    }
                    Some(Event::Closed(reason)) => return Err(BrokerClosed(reason).into()),
                    None => return Err(anyhow!("the connection to the broker is closed")),
                };
                if handled == Handled::Interrupted {
                    return Ok(StayEnd::Stopped);
                }
                idle_timer.as_mut().reset(Instant::now() + idle.min(FAR));
            }
            () = activity.notified() => idle_timer.as_mut().reset(Instant::now() + idle.min(FAR)),
            () = &mut idle_timer, if daemon.idle_timeout.is_some() => {
                tracing::info!(idle = ?idle, "nothing for the idle timeout; disconnecting");
                return Ok(StayEnd::Idle);
            }
        }
    }
}

/// A timer far enough away to mean "never", and near enough for `Instant` arithmetic.
const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Sends the outbox now, every [`OUTBOX_SCAN`] and after each reconnect, until stopped or the
/// client ends.
async fn send_outbox(
    sender: Arc<Mutex<SpoolSender>>,
    client: Client,
    backoff: Reconnect,
    reconnected: Arc<Notify>,
    activity: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut refused = 0;
    loop {
        let flushed = {
            let mut sender = sender.lock().await;
            tokio::select! {
                flushed = sender.flush(&client) => flushed,
                () = stop.cancelled() => return,
            }
        };
        let wait = match flushed {
            Ok(sent) => {
                refused = 0;
                if sent > 0 {
                    activity.notify_one();
                }
                OUTBOX_SCAN
            }
            Err(FlushError::Lost) => return,
            Err(FlushError::Busy(why)) => {
                refused += 1;
                let delay = backoff.delay(refused);
                tracing::warn!(reason = %why, ?delay, "the broker did not take a spooled message now; trying again");
                delay
            }
            Err(FlushError::Fatal(e)) => {
                refused += 1;
                let delay = backoff.delay(refused);
                tracing::error!(error = %e, ?delay, "cannot send the outbox; trying again");
                delay
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = reconnected.notified() => {}
            () = stop.cancelled() => return,
        }
    }
}
