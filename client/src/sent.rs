//! What a send is given and what it gives back: [`SendOptions`] in, [`Sent`] out, and for a tracked
//! send the [`ReceiptFuture`] of its receipt.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::error::ClientError;
use crate::event::Receipt;
use crate::Receipts;

/// How to send one message; [`SendOptions::default`] is what [`Client::send`](crate::Client::send)
/// uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendOptions {
    /// How long the broker keeps the message undelivered before removing it (the sender then gets a
    /// receipt with status [`ReceiptStatus::Expired`](crate::ReceiptStatus::Expired)); counted from
    /// acceptance, in whole milliseconds rounded up. `None` leaves it to the broker, which by default
    /// keeps a message until it is delivered.
    pub ttl: Option<Duration>,
    /// Which receipts to ask for: every one ([`Receipts::All`], the default), only `delivered`, or
    /// none (for a sender that never reads them: its mailbox then holds nothing for it). A tracked
    /// send must ask for all.
    pub receipts: Receipts,
}

/// A message the broker has stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sent {
    /// The send id (`id` in `Send` on the wire); receipts carry it.
    pub send_id: u64,
    /// The broker's id for the message; the recipient sees it.
    pub message_id: u64,
}

/// A message the broker has stored, and the receipt to come.
#[derive(Debug)]
pub struct Tracked {
    /// The ids of the stored message.
    pub sent: Sent,
    /// Resolves when the recipient has acknowledged the message.
    pub receipt: ReceiptFuture,
}

/// The receipt for a tracked message. The library acknowledges it to the broker itself.
///
/// Fails with [`ClientError::Closed`] if the client ends first; the receipt is then delivered on a
/// later connection as an ordinary [`Event::Receipt`](crate::Event::Receipt). With
/// [`ClientOptions::reconnect`](crate::ClientOptions::reconnect) a lost connection is not an end:
/// the receipt comes from the mailbox after the reconnect and resolves this future then.
#[derive(Debug)]
#[must_use = "a receipt future does nothing unless awaited"]
pub struct ReceiptFuture {
    rx: oneshot::Receiver<Receipt>,
}

impl ReceiptFuture {
    /// The future of the receipt the driver will hand to the other end of `rx`.
    pub(crate) fn new(rx: oneshot::Receiver<Receipt>) -> Self {
        Self { rx }
    }
}

impl Future for ReceiptFuture {
    type Output = Result<Receipt, ClientError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|received| received.map_err(|_| ClientError::Closed))
    }
}
