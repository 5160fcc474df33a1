//! What the unit tests of the router's parts share: a session that records what it is handed, and
//! entries to hand it. No actix, no sockets, no store.

use std::cell::RefCell;
use std::rc::Rc;

use bytes::Bytes;

use super::window::{Handed, Outlet};
use crate::store::{Entry, EntryKind};

/// A session's mailbox as the window sees it: it takes entries until it is full or closed.
#[derive(Clone, Default)]
pub(super) struct FakeSession(Rc<RefCell<Inner>>);

#[derive(Default)]
struct Inner {
    got: Vec<Entry>,
    full: bool,
    closed: bool,
}

impl FakeSession {
    /// The ids handed to this session so far, in the order they came.
    pub(super) fn ids(&self) -> Vec<u64> {
        self.0.borrow().got.iter().map(|e| e.id).collect()
    }

    /// From now on the session's mailbox is full.
    pub(super) fn fill_up(&self) {
        self.0.borrow_mut().full = true;
    }

    /// From now on the session has stopped.
    pub(super) fn close(&self) {
        self.0.borrow_mut().closed = true;
    }
}

impl Outlet for FakeSession {
    fn offer(&self, entry: Entry) -> Handed {
        let mut inner = self.0.borrow_mut();
        if inner.closed {
            Handed::Gone
        } else if inner.full {
            Handed::Later
        } else {
            inner.got.push(entry);
            Handed::Yes
        }
    }
}

/// A message from alice to `mailbox` with a body of `len` bytes; alice's send id is `id * 10`.
pub(super) fn entry(id: u64, mailbox: &str, len: usize) -> Entry {
    Entry {
        id,
        mailbox: mailbox.into(),
        kind: EntryKind::Message,
        peer: "alice".into(),
        client_msg_id: id * 10,
        message_id: id,
        sent_at_ms: 1_700_000_000_000 + id,
        expires_at_ms: 0,
        body: Bytes::from(vec![b'x'; len]),
    }
}

/// A receipt in `mailbox` for message `of`.
pub(super) fn receipt(id: u64, mailbox: &str, of: u64) -> Entry {
    Entry {
        kind: EntryKind::Delivered,
        peer: "bob".into(),
        message_id: of,
        body: Bytes::new(),
        ..entry(id, mailbox, 0)
    }
}
