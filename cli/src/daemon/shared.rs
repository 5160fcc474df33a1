//! What both modes (`stay.rs`, `poll.rs`) work with: the running [`Daemon`], and connecting until
//! the broker is up.

use std::sync::Arc;
use std::time::Duration;

use switchboard_client::{Client, ClientOptions, Events, Reconnect};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::daemon::handler::Handler;
use crate::outbox::sender::SpoolSender;

/// What the modes share.
pub(crate) struct Daemon {
    /// Connection options, without reconnecting (stay mode turns it on for its client).
    pub opts: ClientOptions,
    pub backoff: Reconnect,
    pub interval: Duration,
    pub idle_timeout: Option<Duration>,
    pub handler: Handler,
    pub spool_sender: Option<Arc<Mutex<SpoolSender>>>,
    pub stop: CancellationToken,
}

/// Connects, trying again with backoff while the broker cannot be reached; `None` if stopped first.
pub(crate) async fn connect_until_up(
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
