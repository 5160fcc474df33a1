//! One entry from the mailbox, from arrival to acknowledgement:
//!
//! ```text
//!  deliver ──▶ in the journal? ── yes ─────────────────────────────▶ ack
//!                  │ no
//!                  ▼
//!               sink ── interrupted / fatal ──▶ (no ack: the broker keeps it)
//!                  │ handled or dead-lettered
//!                  ▼
//!               journal (fsync) ──▶ ack
//! ```
//!
//! The journal is written before the ack, so a daemon killed between the two finds the id at the
//! next delivery and acknowledges it without running the sink again. "In the journal" also covers a
//! message that comes again under a new message id because the broker crashed before it was on disk
//! and its sender sent it again: the journal knows it by its sender and `send_id` (`journal/`), and
//! this copy too is only acknowledged, so that the broker forgets it.

use switchboard_client::{Client, ClientError, Datagram, Message, Receipt};
use tokio_util::sync::CancellationToken;

use crate::daemon::delivered::{Delivered, SinkError};
use crate::daemon::journal::entry::{Entry, Seen};
use crate::daemon::journal::Journal;
use crate::daemon::sink::Sink;

/// The journal, the sink, and the daemon's stop signal.
pub(crate) struct Handler {
    pub journal: Journal,
    pub sink: Sink,
    pub stop: CancellationToken,
    /// Datagrams go to the sink (false with `--no-datagrams`: dropped).
    pub datagrams: bool,
}

/// How handling one entry ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Handled {
    /// Handled (now or before) and acknowledged.
    Acked,
    /// Handled, but the client ended (or the daemon is stopping) before the ack was written; the
    /// entry comes again and is only acknowledged then.
    Unacked,
    /// The daemon is stopping; the entry was not handled.
    Interrupted,
}

impl Handler {
    /// Hands a datagram to the sink, once: no journal, no ack, no retry. Only a sink that can take
    /// nothing more (stdout closed) is an error.
    pub(crate) async fn datagram(&self, datagram: &Datagram) -> anyhow::Result<()> {
        if !self.datagrams {
            tracing::debug!(from = %datagram.from, "datagram dropped (--no-datagrams)");
            return Ok(());
        }
        match self.sink.datagram(datagram).await {
            Ok(()) => Ok(()),
            Err(SinkError::Fatal(error)) => Err(error),
            Err(SinkError::Interrupted) => Ok(()),
        }
    }

    /// Hands a message to the sink unless the journal says it was, then acknowledges it.
    pub(crate) async fn message(
        &self,
        client: &Client,
        message: &Message,
    ) -> anyhow::Result<Handled> {
        let id = message.message_id;
        let entry = Entry::message(message);
        match self.journal.seen(&entry) {
            Some(Seen::Redelivered) => {
                tracing::info!(
                    message_id = id,
                    "redelivered, already handled; acknowledging"
                );
                return self.ack(client, id).await;
            }
            Some(Seen::Resent) => {
                tracing::info!(
                    message_id = id,
                    from = %message.from,
                    send_id = message.send_id,
                    "sent again under a new message id (after a broker crash), already handled; acknowledging"
                );
                return self.ack(client, id).await;
            }
            None => {}
        }
        match self.sink.message(message, &self.stop).await {
            Ok(Delivered::Handled) => {
                tracing::info!(message_id = id, from = %message.from, bytes = message.body.len(), "message handled");
            }
            Ok(Delivered::DeadLettered(path)) => {
                tracing::warn!(message_id = id, path = %path.display(), "message moved to the dead-letter directory");
            }
            Err(SinkError::Interrupted) => return Ok(Handled::Interrupted),
            Err(SinkError::Fatal(e)) => return Err(e),
        }
        self.remember(entry).await;
        self.ack(client, id).await
    }

    /// Hands a receipt to the sink (only stdout shows it) unless already handled, then acknowledges.
    pub(crate) async fn receipt(
        &self,
        client: &Client,
        receipt: &Receipt,
    ) -> anyhow::Result<Handled> {
        let id = receipt.receipt_id;
        let entry = Entry::receipt(receipt);
        if self.journal.seen(&entry).is_none() {
            match self.sink.receipt(receipt).await {
                Ok(()) => {}
                Err(SinkError::Interrupted) => return Ok(Handled::Interrupted),
                Err(SinkError::Fatal(e)) => return Err(e),
            }
            self.remember(entry).await;
        }
        self.ack(client, id).await
    }

    /// Records a handled entry. A journal that cannot be written only widens the window for a
    /// duplicate after a crash; the entry is acknowledged all the same rather than handled again.
    async fn remember(&self, entry: Entry) {
        let id = entry.key.id;
        if let Err(e) = self.journal.record(entry).await {
            tracing::error!(entry = id, error = %e, "cannot record the entry in the journal; acknowledging it anyway");
        }
    }
}

impl Handler {
    /// Acknowledges `id`. While the library reconnects, an ack waits for the next connection; a
    /// daemon asked to stop meanwhile does not wait for it (the entry is in the journal, so its
    /// redelivery is only acknowledged). The ack is queued before the stop is looked at, so a stop
    /// that came during the sink still lets it go out ahead of the `Bye`.
    async fn ack(&self, client: &Client, id: u64) -> anyhow::Result<Handled> {
        let acked = tokio::select! {
            biased;
            acked = client.ack(id) => acked,
            () = self.stop.cancelled() => return Ok(Handled::Unacked),
        };
        match acked {
            Ok(()) => Ok(Handled::Acked),
            Err(ClientError::Closed) => {
                tracing::debug!(entry = id, "the connection ended before the ack");
                Ok(Handled::Unacked)
            }
            Err(e) => Err(e.into()),
        }
    }
}
