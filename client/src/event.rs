//! What the broker tells a client without being asked: messages, receipts, and the state of the
//! connection.
//!
//! Events come out of [`Events`] in the order the broker sent them, which within a mailbox is entry id
//! order. The channel behind it is bounded: a program that stops reading events stops the connection
//! from reading the socket too, so memory stays bounded and the broker's window does the rest.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::Stream;
use switchboard_proto::{ErrorCode, ReceiptStatus};
use tokio::sync::mpsc;

use crate::welcome::Welcome;

/// One thing that happened on the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A message for this client. Acknowledge it with [`Client::ack`](crate::Client::ack) and its
    /// `message_id` once handled, or it is delivered again on the next connection.
    Message(Message),
    /// News about a message this client sent with [`Client::send`](crate::Client::send), or on an
    /// earlier connection. Acknowledge it with its `receipt_id`.
    Receipt(Receipt),
    /// A datagram for this client ([`Client::send_datagram`](crate::Client::send_datagram) on the
    /// sender's side): sent while this client was connected, never stored, nothing to acknowledge.
    Datagram(Datagram),
    /// The connection was lost and the client is reconnecting; only with
    /// [`ClientOptions::reconnect`](crate::ClientOptions::reconnect). Sends keep waiting and new ones
    /// queue until [`Event::Reconnected`]. Messages and receipts not acknowledged before the loss are
    /// delivered again after it.
    Disconnected(CloseReason),
    /// The client is connected again: `Hello` was answered with this `Hi`, whose `pending` counts
    /// what waits in the mailbox now, redeliveries included.
    Reconnected(Welcome),
    /// The client has ended for good; this is always the last event.
    Closed(CloseReason),
}

/// A datagram delivered to this client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// The sender's client id.
    pub from: String,
    pub body: Bytes,
}

/// A message delivered to this client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The broker's id for the message; the id to acknowledge.
    pub message_id: u64,
    /// The sender's client id.
    pub from: String,
    /// The sender's send id ([`Sent::send_id`](crate::Sent::send_id) on its side).
    ///
    /// With `from` it names the message across broker crashes: a message the broker handed out
    /// early, before it was on disk, can come again after a broker crash, resent by its sender, under
    /// a new `message_id` but with the same `from` and `send_id` (see "Early delivery" in
    /// `PROTOCOL.md`). A program that must not handle a message twice remembers `(from, send_id)` as
    /// well as `message_id`. 0 from brokers older than this field; then only `message_id` tells
    /// deliveries apart.
    pub send_id: u64,
    /// When the broker accepted the message (millisecond precision).
    pub sent_at: SystemTime,
    /// The message exactly as the sender sent it.
    pub body: Bytes,
}

/// What happened to a message this client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The mailbox entry holding the receipt; the id to acknowledge.
    pub receipt_id: u64,
    /// The send id, as in [`Sent::send_id`](crate::Sent::send_id).
    pub send_id: u64,
    /// The broker's id for the message, as in [`Sent::message_id`](crate::Sent::message_id).
    pub message_id: u64,
    /// The recipient the message was sent to.
    pub to: String,
    /// What happened to it.
    pub status: ReceiptStatus,
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// This side ended it: [`Client::close`](crate::Client::close) was called, or every `Client`
    /// handle was dropped.
    Local,
    /// The broker sent an `Error` frame and closed the connection.
    Broker {
        /// The broker's error code.
        code: ErrorCode,
        /// The broker's explanation, for people.
        text: String,
    },
    /// The broker closed the connection without saying why.
    Disconnected,
    /// Reading or writing the socket failed, or the broker sent bytes that are not a frame.
    Failed(String),
}

impl CloseReason {
    /// Whether the connection ended because this side asked it to.
    pub fn is_local(&self) -> bool {
        matches!(self, CloseReason::Local)
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Local => f.write_str("connection closed by the client"),
            CloseReason::Broker { code, text } => {
                write!(f, "connection closed by the broker: {code}: {text}")
            }
            CloseReason::Disconnected => f.write_str("connection closed by the broker"),
            CloseReason::Failed(why) => write!(f, "connection failed: {why}"),
        }
    }
}

/// The receiving end of a client's events; see [`Event`].
///
/// After [`Event::Closed`], [`Events::next`] returns `None`. Dropping `Events` does not close the
/// connection, but whatever arrives afterwards is dropped unacknowledged and comes back next time.
#[derive(Debug)]
pub struct Events {
    rx: mpsc::Receiver<Event>,
}

impl Events {
    pub(crate) fn new(rx: mpsc::Receiver<Event>) -> Self {
        Self { rx }
    }

    /// The next event, or `None` once the connection has ended and its last event was read.
    pub async fn next(&mut self) -> Option<Event> {
        self.rx.recv().await
    }
}

impl Stream for Events {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.rx.poll_recv(cx)
    }
}

/// The sending end of the events: events wait here, in order, until the channel has room.
///
/// While anything waits, the session does not read the socket, so at most one frame's event is ever
/// queued here beside the few that report the connection's state.
pub(crate) struct EventQueue {
    tx: mpsc::Sender<Event>,
    queue: VecDeque<Event>,
    /// False once the `Events` receiver is gone; what arrives then is dropped, unacknowledged.
    open: bool,
}

impl EventQueue {
    pub(crate) fn new(tx: mpsc::Sender<Event>) -> Self {
        Self {
            tx,
            queue: VecDeque::new(),
            open: true,
        }
    }

    /// Queues `event` for the program, unless nobody reads events any more.
    pub(crate) fn push(&mut self, event: Event) {
        if self.open {
            self.queue.push_back(event);
        } else {
            tracing::debug!(?event, "dropping an event nobody reads");
        }
    }

    /// The channel itself, for the UDP reader, which hands datagrams over without waiting.
    pub(crate) fn sender(&self) -> mpsc::Sender<Event> {
        self.tx.clone()
    }

    /// Whether events wait for room in the channel.
    pub(crate) fn is_waiting(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Forgets the queued events: they were not delivered, and what was unacknowledged comes again.
    pub(crate) fn clear(&mut self) {
        self.queue.clear();
    }

    /// Moves the first queued event into the channel once there is room. Cancel-safe: the event
    /// leaves the queue only once room is reserved.
    pub(crate) async fn pass_on(&mut self) {
        match self.tx.reserve().await {
            Ok(permit) => {
                if let Some(event) = self.queue.pop_front() {
                    permit.send(event);
                }
            }
            Err(_) => {
                tracing::debug!("events receiver dropped; further deliveries are not acknowledged");
                self.open = false;
                self.queue.clear();
            }
        }
    }

    /// Hands every queued event to the program, waiting for room; ends at once if `Events` is
    /// dropped.
    pub(crate) async fn flush(mut self) {
        while let Some(event) = self.queue.pop_front() {
            if self.tx.send(event).await.is_err() {
                return;
            }
        }
    }
}

/// Milliseconds since the Unix epoch as a time; the epoch itself for a value the platform cannot
/// represent, rather than a panic.
pub(crate) fn time_from_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH
        .checked_add(Duration::from_millis(ms))
        .unwrap_or(UNIX_EPOCH)
}
