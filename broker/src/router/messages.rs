//! What the Router is asked and what it answers: the actix messages sessions and the server send it,
//! and [`Deliver`], the one it sends back to a session.
//!
//! These are the Router's whole public surface besides [`super::Router::new`] and
//! [`super::RouterConfig`]; everything behind them is private to the `router` folder.

use actix::prelude::*;
use bytes::Bytes;
use switchboard_proto::{ClientId, ErrorCode, Receipts, RejectReason};

use super::window::{Handed, Outlet};
use super::{now_ms, RouterConfig};
use crate::registry::Kick;
use crate::store::{Entry, EntryKind, StoreError};

/// A session's request to store and route a message.
#[derive(Message)]
#[rtype(result = "Result<u64, RejectReason>")]
pub struct Submit {
    pub from: ClientId,
    pub send_id: u64,
    pub to: ClientId,
    pub body: Bytes,
    /// Time to live asked for by the sender; `None` or 0 for the broker's default.
    pub ttl_ms: Option<u64>,
    /// The sender says this is its first attempt (`Send.fresh`): the message may be handed out
    /// before it is on disk.
    pub fresh: bool,
    /// Which receipts the sender wants (`Send.receipts`); kept with the message.
    pub receipts: Receipts,
}

impl Submit {
    /// The entry this message becomes, numbered `id`, accepted now.
    pub(super) fn into_entry(self, id: u64, config: &RouterConfig) -> Entry {
        let now = now_ms();
        Entry {
            id,
            mailbox: self.to.into_string(),
            kind: EntryKind::Message,
            peer: self.from.into_string(),
            send_id: self.send_id,
            message_id: id,
            sent_at_ms: now,
            expires_at_ms: config.expiry(now, self.ttl_ms),
            receipts: self.receipts,
            body: self.body,
        }
    }
}

/// An entry handed to the session of its mailbox's owner, to be written to the socket.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Deliver(pub Entry);

/// The client behind a session came online; start flushing its mailbox. Answers how many entries
/// wait in it.
#[derive(Message)]
#[rtype(result = "Result<u64, StoreError>")]
pub struct Attach {
    pub client: ClientId,
    pub conn_id: u64,
    pub session: Recipient<Deliver>,
    /// How the Router closes the session with an error (its mailbox cannot be read).
    pub kick: Recipient<Kick>,
}

/// The session `conn_id` of `client` has ended; what it held unacknowledged stays in the mailbox.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Detach {
    pub client: ClientId,
    pub conn_id: u64,
}

/// `client` has handled entry `id`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Ack {
    pub client: ClientId,
    pub conn_id: u64,
    pub id: u64,
}

/// Resolves once every queued write has been committed (used by shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain;

/// Stops the Router, releasing its store handle (the last step of shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

/// A session takes entries with `try_send` into its bounded mailbox (sized to the window), never a
/// silent `do_send`: a full mailbox leaves the entry in the store, a closed one means the client left.
impl Outlet for SessionLink {
    fn offer(&self, entry: Entry) -> Handed {
        match self.deliver.try_send(Deliver(entry)) {
            Ok(()) => Handed::Yes,
            Err(SendError::Full(_)) => Handed::Later,
            Err(SendError::Closed(_)) => Handed::Gone,
        }
    }

    fn refuse(&self, code: ErrorCode, text: String) {
        // A control message, as the Registry's kick: the session closes at once, so it cannot
        // pile up; a session that stopped already has nothing to hear.
        self.kick.do_send(Kick { code, text });
    }
}

/// An attached session as the Router holds it.
pub(super) struct SessionLink {
    pub(super) deliver: Recipient<Deliver>,
    pub(super) kick: Recipient<Kick>,
}
