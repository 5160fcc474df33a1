//! What the unit tests of the router's parts share: a session that records what it is handed,
//! entries to hand it, and a miniature of the Router's glue around the early path. No actix, no
//! sockets, no store.

use std::cell::RefCell;
use std::rc::Rc;

use bytes::Bytes;

use super::commit::CommitQueue;
use super::early::Early;
use super::window::{Handed, Outlet, Window, WindowSize};
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

    fn refuse(&self, _: switchboard_proto::ErrorCode, _: String) {
        self.close();
    }
}

/// A message from alice to `mailbox` with a body of `len` bytes; alice's send id is `id * 10`.
pub(super) fn entry(id: u64, mailbox: &str, len: usize) -> Entry {
    Entry {
        id,
        mailbox: mailbox.into(),
        kind: EntryKind::Message,
        peer: "alice".into(),
        send_id: id * 10,
        message_id: id,
        sent_at_ms: 1_700_000_000_000 + id,
        expires_at_ms: 0,
        body: Bytes::from(vec![b'x'; len]),
        receipts: switchboard_proto::Receipts::All,
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

/// Bob online with a window of `room` entries, caught up, and the Router's glue around the
/// parts: queue and admit, ack and page read, commit and land.
pub(super) struct Bob {
    pub(super) early: Early,
    pub(super) queue: CommitQueue,
    pub(super) window: Option<Window<FakeSession>>,
    pub(super) session: FakeSession,
    next_id: u64,
    committing: Vec<Entry>,
    /// What the store holds of bob's mailbox (deletes are left out: page reads start past them).
    stored: Vec<Entry>,
}

impl Bob {
    pub(super) fn online(room: usize) -> Self {
        let session = FakeSession::default();
        let size = WindowSize {
            entries: room,
            bytes: 1_000,
            page: room,
        };
        let mut window = Window::new(1, session.clone(), size);
        window.page_read(vec![], room, |_| false).unwrap(); // an empty mailbox
        Self {
            early: Early::default(),
            queue: CommitQueue::default(),
            window: Some(window),
            session,
            next_id: 0,
            committing: vec![],
            stored: vec![],
        }
    }

    pub(super) fn send(&mut self, may_go_early: bool) -> u64 {
        self.next_id += 1;
        let e = entry(self.next_id, "bob", 1);
        self.early
            .admit(&e, may_go_early, self.window.as_mut())
            .unwrap();
        self.queue.push(e);
        self.next_id
    }

    pub(super) fn ack(&mut self, id: u64) {
        assert!(self.window.as_mut().unwrap().acked(id).is_some());
        if self.queue.is_collecting(id) {
            self.queue.acked(id);
        }
        self.early
            .catch_up("bob", self.window.as_mut(), &self.queue)
            .unwrap();
        self.refill();
    }

    fn refill(&mut self) {
        let window = self.window.as_mut().unwrap();
        while let Some(page) = window.next_page() {
            let entries = self.stored.iter().filter(|e| e.id > page.after);
            let entries = entries.take(page.limit).cloned().collect();
            window.page_read(entries, page.limit, |_| false).unwrap();
        }
    }

    pub(super) fn commit_leaves(&mut self) {
        self.early.batch_left();
        let (early, window) = (&self.early, self.window.as_ref().unwrap());
        let commit = self.queue.take(0, |e| {
            !early.behind_commit(&e.mailbox) && window.is_out(e.id)
        });
        self.committing = commit.appended;
    }

    pub(super) fn commit_lands(&mut self) {
        self.queue.landed();
        let window = self.window.as_mut().unwrap();
        for e in std::mem::take(&mut self.committing) {
            self.stored.push(e.clone());
            if window.takes_committed(&e) {
                window.hand_out(e);
            }
        }
        for owner in self.early.commit_landed() {
            self.early
                .catch_up(&owner, self.window.as_mut(), &self.queue)
                .unwrap();
        }
    }

    pub(super) fn got(&self) -> Vec<u64> {
        self.session.ids()
    }
}
