//! What one online session may be handed next: its delivery window, cursor and backlog.
//!
//! A session holds at most `limits.window` entries (and `limits.window_bytes` body bytes)
//! unacknowledged. Its **cursor** says that every entry of the mailbox with an id at or below it has
//! been handed to this session; its **backlog** flag says the store may hold entries above the cursor
//! that were not. A client that attaches starts at cursor 0 with a backlog, and its mailbox is read a
//! page at a time in id order; an entry committed while there is a backlog is not handed over
//! directly but found by a later page read, so everything that waited goes out before anything newer.
//! Memory per client is bounded by the window whatever the size of its mailbox.

use rustc_hash::FxHashMap;

use crate::store::{Entry, EntryKind};
use switchboard_proto::{ErrorCode, Receipts};

/// Where a window's entries go: the session's bounded mailbox (a `Recipient<Deliver>`), or a fake
/// in unit tests.
pub(super) trait Outlet {
    /// Hands `entry` over without waiting.
    fn offer(&self, entry: Entry) -> Handed;

    /// Closes the session with an error frame.
    fn refuse(&self, code: ErrorCode, text: String);
}

/// What became of an entry offered to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Handed {
    Yes,
    /// Not now: no room in the window, something older goes first, or the session's mailbox is full
    /// (the window should prevent that). The entry waits where it is.
    Later,
    /// The session has stopped; its client went away.
    Gone,
}

/// The session behind a window has stopped.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Gone;

/// The size of every session's window, from the settings.
#[derive(Debug, Clone, Copy)]
pub(super) struct WindowSize {
    /// Entries handed out and not acknowledged, at most.
    pub(super) entries: usize,
    /// Their body bytes, at most (an entry larger than this still goes out, alone).
    pub(super) bytes: u64,
    /// Entries one page read asks for, at most.
    pub(super) page: usize,
}

/// What the Router remembers of an entry it handed out, to write the receipt when it is acknowledged.
#[derive(Debug)]
pub(super) struct InFlight {
    pub(super) kind: EntryKind,
    pub(super) sender: String,
    pub(super) send_id: u64,
    pub(super) body_len: u64,
    /// Which receipts the message's sender asked for.
    pub(super) receipts: Receipts,
}

/// A page read to start: the entries of the mailbox after `after`, at most `limit` of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PageRequest {
    pub(super) after: u64,
    pub(super) limit: usize,
}

/// Delivery state of one connected client.
pub(super) struct Window<S> {
    pub(super) conn_id: u64,
    session: S,
    size: WindowSize,
    in_flight: FxHashMap<u64, InFlight>,
    /// Body bytes of the entries in flight.
    in_flight_bytes: u64,
    /// Every entry of the mailbox with an id at or below this has been handed to this session.
    cursor: u64,
    /// The store may hold entries above `cursor` that were not handed out.
    backlog: bool,
    /// A page read is under way.
    fetching: bool,
    /// A commit landed entries for this client while a page read was under way, so a short page does
    /// not prove the backlog empty.
    arrived_while_fetching: bool,
}

impl<S: Outlet> Window<S> {
    /// A fresh session: nothing handed out yet, and the whole mailbox to read.
    pub(super) fn new(conn_id: u64, session: S, size: WindowSize) -> Self {
        Self {
            conn_id,
            session,
            size,
            in_flight: FxHashMap::default(),
            in_flight_bytes: 0,
            cursor: 0,
            backlog: true,
            fetching: false,
            arrived_while_fetching: false,
        }
    }

    /// Whether entry `id` is with this session and not acknowledged.
    pub(super) fn is_out(&self, id: u64) -> bool {
        self.in_flight.contains_key(&id)
    }

    /// The entries with this session and not acknowledged.
    pub(super) fn in_flight_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.in_flight.keys().copied()
    }

    /// Entries and body bytes handed out and not acknowledged.
    pub(super) fn in_use(&self) -> (u64, u64) {
        (self.in_flight.len() as u64, self.in_flight_bytes)
    }

    /// Whether entry `id` (or a newer one) has been handed to this session already.
    pub(super) fn handed_through(&self, id: u64) -> bool {
        id <= self.cursor
    }

    /// Whether this session has been handed every entry the store holds for it: no backlog, no page
    /// read under way.
    pub(super) fn caught_up(&self) -> bool {
        !self.backlog && !self.fetching
    }

    /// Whether the window has room for one more entry of `len` body bytes. An empty window always has
    /// room, so an entry larger than the byte window still goes out, alone.
    pub(super) fn has_room(&self, len: u64) -> bool {
        self.in_flight.is_empty()
            || (self.in_flight.len() < self.size.entries
                && self.in_flight_bytes.saturating_add(len) <= self.size.bytes)
    }

    /// Gives `entry` to the session, advancing the cursor only if it was taken. The caller checks
    /// [`Window::has_room`] first.
    pub(super) fn hand_out(&mut self, entry: Entry) -> Handed {
        let id = entry.id;
        let in_flight = InFlight {
            kind: entry.kind,
            sender: entry.peer.clone(),
            send_id: entry.send_id,
            body_len: entry.body.len() as u64,
            receipts: entry.receipts,
        };
        let handed = self.session.offer(entry);
        match handed {
            Handed::Yes => {
                self.in_flight_bytes += in_flight.body_len;
                self.in_flight.insert(id, in_flight);
                self.cursor = id;
            }
            Handed::Later => {
                tracing::warn!(
                    entry = id,
                    "session mailbox full; the entry waits in the store"
                );
                self.backlog = true;
            }
            Handed::Gone => {}
        }
        handed
    }

    /// Closes the session with an error frame; its client hears why it gets nothing more.
    pub(super) fn refuse(&self, code: ErrorCode, text: String) {
        self.session.refuse(code, text);
    }

    /// The session acknowledged `id`; what it was, if it was in flight.
    pub(super) fn acked(&mut self, id: u64) -> Option<InFlight> {
        let done = self.in_flight.remove(&id)?;
        self.in_flight_bytes = self.in_flight_bytes.saturating_sub(done.body_len);
        Some(done)
    }

    /// A commit just stored `entry` of this mailbox: whether to hand it over now. If not, it stays in
    /// the store, marked as backlog for a page read to find (unless it went out already).
    pub(super) fn takes_committed(&mut self, entry: &Entry) -> bool {
        if entry.id <= self.cursor {
            return false; // Handed out early, or by a page read that finished first.
        }
        if self.fetching {
            self.arrived_while_fetching = true;
            return false;
        }
        if self.backlog || !self.has_room(entry.body.len() as u64) {
            self.backlog = true;
            return false;
        }
        true
    }

    /// The store may hold entries above the cursor (another broker on a shared store committed
    /// some, or the safety sweep asks): a page read will look, or look again if one is under way.
    pub(super) fn more_stored(&mut self) {
        if self.fetching {
            self.arrived_while_fetching = true;
        } else {
            self.backlog = true;
        }
    }

    /// The page read to start now, if there is a backlog, none is under way, and at least half the
    /// window is free (so pages are not read one entry at a time).
    pub(super) fn next_page(&mut self) -> Option<PageRequest> {
        let half_full = self.in_flight.len() > self.size.entries / 2
            || self.in_flight_bytes > self.size.bytes / 2;
        if !self.backlog || self.fetching || half_full {
            return None;
        }
        self.fetching = true;
        self.arrived_while_fetching = false;
        let free = self.size.entries.saturating_sub(self.in_flight.len());
        Some(PageRequest {
            after: self.cursor,
            limit: free.min(self.size.page),
        })
    }

    /// The page read failed; it is tried again later.
    pub(super) fn page_failed(&mut self) {
        self.fetching = false;
    }

    /// Hands out, in order, what a page read (asked for `limit` entries) returned, as far as the
    /// window has room. Entries `deleting` says are on their way out are skipped, never handed out:
    /// they were acknowledged already. A short page ends the backlog, unless a commit landed entries
    /// for this mailbox during the read.
    pub(super) fn page_read(
        &mut self,
        page: Vec<Entry>,
        limit: usize,
        deleting: impl Fn(u64) -> bool,
    ) -> Result<(), Gone> {
        self.fetching = false;
        let short = page.len() < limit;
        self.backlog = !short || self.arrived_while_fetching;
        for entry in page {
            if entry.id <= self.cursor {
                continue; // Handed out straight from a commit that finished first.
            }
            if deleting(entry.id) {
                self.cursor = entry.id;
                continue;
            }
            if !self.has_room(entry.body.len() as u64) {
                self.backlog = true; // The rest of the page is read again once acks make room.
                break;
            }
            match self.hand_out(entry) {
                Handed::Yes => {}
                Handed::Later => break,
                Handed::Gone => return Err(Gone),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{entry, FakeSession};
    use super::*;

    fn size() -> WindowSize {
        WindowSize {
            entries: 3,
            bytes: 100,
            page: 8,
        }
    }

    fn window(session: &FakeSession) -> Window<FakeSession> {
        Window::new(1, session.clone(), size())
    }

    /// Offers entries the way every caller does (room first), acknowledging now and then; the
    /// window's entries and bytes stay within their limits throughout.
    #[test]
    fn the_window_never_exceeds_its_entries_or_bytes() {
        let session = FakeSession::default();
        let mut w = window(&session);
        for id in 1..=200u64 {
            let len = (id * 37 % 60) as usize; // 0..59 bytes, in no particular order
            let e = entry(id, "bob", len);
            if w.has_room(len as u64) {
                assert_eq!(w.hand_out(e), Handed::Yes);
            }
            assert!(w.in_flight.len() <= size().entries, "entries at id {id}");
            assert!(w.in_flight_bytes <= size().bytes, "bytes at id {id}");
            assert_eq!(
                w.in_flight_bytes,
                w.in_flight.values().map(|f| f.body_len).sum::<u64>()
            );
            if id % 3 == 0 {
                let oldest = w.in_flight.keys().min().copied();
                if let Some(oldest) = oldest {
                    w.acked(oldest);
                }
            }
        }
    }

    #[test]
    fn an_entry_larger_than_the_byte_window_goes_out_alone() {
        let session = FakeSession::default();
        let mut w = window(&session);
        assert!(w.has_room(500), "an empty window takes anything");
        assert_eq!(w.hand_out(entry(1, "bob", 500)), Handed::Yes);
        assert!(!w.has_room(0), "nothing goes out beside it");
        w.acked(1);
        assert!(w.has_room(0));
    }

    #[test]
    fn an_entry_not_taken_does_not_move_the_cursor_and_leaves_a_backlog() {
        let session = FakeSession::default();
        let mut w = window(&session);
        w.page_read(vec![], 8, |_| false).unwrap();
        assert!(w.caught_up());
        session.fill_up();
        assert_eq!(w.hand_out(entry(1, "bob", 1)), Handed::Later);
        assert!(!w.handed_through(1));
        assert!(
            !w.caught_up(),
            "the entry is read back from the store later"
        );
        session.close();
        assert_eq!(w.hand_out(entry(1, "bob", 1)), Handed::Gone);
    }

    #[test]
    fn a_new_session_reads_its_mailbox_from_the_start_a_window_at_a_time() {
        let session = FakeSession::default();
        let mut w = window(&session);
        assert!(!w.caught_up());
        let page = w.next_page().unwrap();
        assert_eq!(page, PageRequest { after: 0, limit: 3 });
        assert_eq!(w.next_page(), None, "one page read at a time");
        let stored: Vec<Entry> = (1..=3).map(|id| entry(id, "bob", 1)).collect();
        w.page_read(stored, page.limit, |_| false).unwrap();
        assert_eq!(session.ids(), [1, 2, 3]);
        assert!(!w.caught_up(), "a full page: there may be more");
        assert_eq!(w.next_page(), None, "the window is full");
        w.acked(1);
        w.acked(2);
        assert_eq!(w.next_page(), Some(PageRequest { after: 3, limit: 2 }));
    }

    #[test]
    fn a_short_page_ends_the_backlog_unless_entries_arrived_during_the_read() {
        let session = FakeSession::default();
        let mut w = window(&session);
        w.next_page().unwrap();
        assert!(!w.takes_committed(&entry(5, "bob", 1)), "found by the read");
        w.page_read(vec![], 3, |_| false).unwrap();
        assert!(!w.caught_up(), "entry 5 may not be in the page");
        w.next_page().unwrap();
        w.page_read(vec![entry(5, "bob", 1)], 3, |_| false).unwrap();
        assert!(w.caught_up());
        assert!(
            w.takes_committed(&entry(6, "bob", 1)),
            "caught up: straight from the commit"
        );
        assert!(
            !w.takes_committed(&entry(5, "bob", 1)),
            "handed out already"
        );
    }

    /// Entries reach the session in id order: from pages, from commits, and across a backlog.
    #[test]
    fn entries_reach_the_session_in_id_order() {
        let session = FakeSession::default();
        let mut w = window(&session);
        w.next_page().unwrap();
        w.page_read(vec![entry(1, "bob", 1)], 3, |_| false).unwrap();
        for id in 2..=6 {
            let e = entry(id, "bob", 1);
            if w.takes_committed(&e) {
                w.hand_out(e);
            }
        }
        // 2 and 3 went straight out; 4 found a full window, so 4, 5, 6 wait in the store.
        assert_eq!(session.ids(), [1, 2, 3]);
        w.acked(1);
        w.acked(2);
        let page = w.next_page().unwrap();
        let rest = (page.after + 1..=6)
            .map(|id| entry(id, "bob", 1))
            .take(page.limit)
            .collect();
        w.page_read(rest, page.limit, |_| false).unwrap();
        assert_eq!(session.ids(), [1, 2, 3, 4, 5]);
        let ids = session.ids();
        assert!(ids.windows(2).all(|p| p[0] < p[1]));
    }
}
