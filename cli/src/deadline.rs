//! How long a command may take: a [`Deadline`] bounds a whole command and names what it was
//! waiting for when it runs out, and [`connect`] names the server when the handshake times out.

use std::time::Duration;

use anyhow::anyhow;
use switchboard_client::{Client, ClientError, ClientOptions, Events};
use tokio::time::Instant;

/// Connects, naming the server if the handshake times out.
pub(crate) async fn connect(opts: ClientOptions) -> anyhow::Result<(Client, Events)> {
    let server = opts.server.clone();
    Client::connect(opts).await.map_err(|e| match e {
        ClientError::Timeout => anyhow!("timed out connecting to {server}"),
        e => e.into(),
    })
}

/// An optional point in time that bounds a whole command.
pub(crate) struct Deadline {
    at: Option<(Instant, Duration)>,
}

impl Deadline {
    pub(crate) fn after(timeout: Option<Duration>) -> Self {
        Self {
            at: timeout.map(|t| (Instant::now() + t, t)),
        }
    }

    /// Runs `fut`, failing with `timed out after … waiting for <what>` at the deadline.
    pub(crate) async fn bound<T>(
        &self,
        what: &str,
        fut: impl std::future::Future<Output = T>,
    ) -> anyhow::Result<T> {
        match self.at {
            None => Ok(fut.await),
            Some((at, total)) => tokio::time::timeout_at(at, fut).await.map_err(|_| {
                anyhow!(
                    "timed out after {} waiting for {what}",
                    humantime::format_duration(total)
                )
            }),
        }
    }
}
