//! Which queued entries go to their owner before their commit, and in what order.
//!
//! A fresh send (the sender's first attempt, so certainly not a resend the store would recognise)
//! and every receipt may reach an online owner as soon as it is queued, when the owner is **caught
//! up**: every older entry of the mailbox went to this session already, so none is in the store
//! unread, none in the committing batch unhanded (`committing_waiting`), none queued and waiting
//! (`waiting`). An entry that finds no room, or something older in the way, waits in its owner's
//! queue and goes out, still before its commit, when an ack makes room or after the next commit. An
//! entry that may not go out early (a possible resend, or an id not covered by a committed
//! reservation) stops the queue until its commit; it then reaches the owner like any committed entry.

use std::collections::VecDeque;

use foldhash::{HashMap, HashSet};
use rustc_hash::FxHashMap;

use super::commit::CommitQueue;
use super::window::{Gone, Handed, Outlet, Window};
use crate::store::Entry;

/// An append of the collecting batch that its online owner has not been handed yet.
#[derive(Debug, Clone, Copy)]
struct Waiting {
    id: u64,
    may_go_early: bool,
}

/// Per owner, what of the collecting batch waits for it, and who must wait for the committing batch.
/// Keyed by client ids, which peers choose, so a hash seeded per process (foldhash).
#[derive(Default)]
pub(super) struct Early {
    /// Per online owner, the appends of the collecting batch not handed out yet, in id order.
    waiting: HashMap<String, VecDeque<Waiting>>,
    /// Owners with entries in the committing batch that were not handed out: nothing newer of theirs
    /// goes out before that commit lands.
    committing_waiting: HashSet<String>,
}

impl Early {
    /// `entry` was just queued: hands it to its owner's `window` now if it may go early and the
    /// owner is caught up with room; otherwise it waits, if the owner is online.
    pub(super) fn admit<S: Outlet>(
        &mut self,
        entry: &Entry,
        may_go_early: bool,
        window: Option<&mut Window<S>>,
    ) -> Result<(), Gone> {
        let Some(window) = window else {
            return Ok(()); // Offline: the entry waits in the store.
        };
        if may_go_early {
            match self.offer(entry, window) {
                Handed::Yes => return Ok(()),
                Handed::Gone => return Err(Gone),
                Handed::Later => {}
            }
        }
        // Its owner is online and did not get it: it waits, and so does everything after it.
        let waiting = Waiting {
            id: entry.id,
            may_go_early,
        };
        match self.waiting.get_mut(entry.mailbox.as_str()) {
            Some(queue) => queue.push_back(waiting),
            None => {
                let queue = VecDeque::from([waiting]);
                self.waiting.insert(entry.mailbox.clone(), queue);
            }
        }
        Ok(())
    }

    /// Whether the owner of `window` has been handed every older entry of its mailbox: none stored
    /// and not read yet, none committing and not handed out, none queued and waiting.
    pub(super) fn caught_up<S: Outlet>(&self, owner: &str, window: &Window<S>) -> bool {
        self.nothing_older_outside_the_queue(owner, window)
            && self.waiting.get(owner).is_none_or(VecDeque::is_empty)
    }

    /// Whether `owner` has entries of the committing batch it was not handed.
    pub(super) fn behind_commit(&self, owner: &str) -> bool {
        self.committing_waiting.contains(owner)
    }

    /// Hands out, in order, the entries waiting for `owner` that may go early, as far as they now
    /// can. Without this, one entry that missed its chance would hold back every later one of its
    /// mailbox until they are all committed, and under steady load that never ends.
    pub(super) fn catch_up<S: Outlet>(
        &mut self,
        owner: &str,
        window: Option<&mut Window<S>>,
        queued: &CommitQueue,
    ) -> Result<(), Gone> {
        let Some(window) = window else {
            if let Some(queue) = self.waiting.get_mut(owner) {
                queue.clear();
            }
            return Ok(());
        };
        if !self.nothing_older_outside_the_queue(owner, window) {
            return Ok(());
        }
        let Some(queue) = self.waiting.get_mut(owner) else {
            return Ok(());
        };
        while let Some(&Waiting { id, may_go_early }) = queue.front() {
            if window.handed_through(id) {
                queue.pop_front();
                continue;
            }
            let Some(entry) = queued.get(id) else {
                queue.pop_front();
                continue;
            };
            if !may_go_early || !window.has_room(entry.body.len() as u64) {
                return Ok(());
            }
            match window.hand_out(entry.clone()) {
                Handed::Yes => {
                    queue.pop_front();
                }
                Handed::Later => return Ok(()),
                Handed::Gone => return Err(Gone),
            }
        }
        Ok(())
    }

    /// A new session for `owner`: none of the queued entries has been handed to it, so all of them
    /// (less those acknowledged already) wait for it in order, behind anything committing. Only those
    /// that were waiting keep their leave to go out early; the others (whether they went out to the old
    /// session or were queued while the owner was away) wait for their commit, which is always safe.
    pub(super) fn requeue(&mut self, owner: &str, queued: &CommitQueue) {
        let old: FxHashMap<u64, bool> = self
            .waiting
            .remove(owner)
            .unwrap_or_default()
            .into_iter()
            .map(|w| (w.id, w.may_go_early))
            .collect();
        let queue: VecDeque<Waiting> = queued
            .unacked_for(owner)
            .map(|e| Waiting {
                id: e.id,
                may_go_early: old.get(&e.id).copied().unwrap_or(false),
            })
            .collect();
        if !queue.is_empty() {
            self.waiting.insert(owner.to_owned(), queue);
        }
        if queued.committing() {
            self.committing_waiting.insert(owner.to_owned());
        }
    }

    /// The collecting batch leaves for the store: whoever had entries waiting in it now waits for
    /// that commit.
    pub(super) fn batch_left(&mut self) {
        self.committing_waiting = self
            .waiting
            .drain()
            .filter(|(_, queue)| !queue.is_empty())
            .map(|(owner, _)| owner)
            .collect();
    }

    /// The commit in flight has landed; returns the owners to [`Early::catch_up`].
    pub(super) fn commit_landed(&mut self) -> Vec<String> {
        self.committing_waiting.clear();
        self.waiting
            .iter()
            .filter(|(_, queue)| !queue.is_empty())
            .map(|(owner, _)| owner.clone())
            .collect()
    }

    /// Whether every older entry of `owner`'s mailbox outside its queue went to this session: none in
    /// the store unread (no backlog, no page read), none committing and not handed out.
    fn nothing_older_outside_the_queue<S: Outlet>(&self, owner: &str, window: &Window<S>) -> bool {
        window.caught_up() && !self.behind_commit(owner)
    }

    /// Hands `entry` to its owner now if the owner is caught up and has room.
    fn offer<S: Outlet>(&self, entry: &Entry, window: &mut Window<S>) -> Handed {
        if !self.caught_up(&entry.mailbox, window) || !window.has_room(entry.body.len() as u64) {
            return Handed::Later;
        }
        window.hand_out(entry.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{entry, Bob, FakeSession};
    use super::super::window::WindowSize;
    use super::*;

    #[test]
    fn a_caught_up_owner_with_room_gets_a_fresh_entry_at_once() {
        let mut bob = Bob::online(4);
        bob.send(true);
        bob.send(true);
        assert_eq!(bob.got(), [1, 2]);
    }

    #[test]
    fn an_entry_without_room_waits_and_goes_out_in_order_when_an_ack_makes_room() {
        let mut bob = Bob::online(1);
        bob.send(true);
        bob.send(true);
        bob.send(true);
        assert_eq!(bob.got(), [1], "the window is full");
        bob.ack(1);
        assert_eq!(bob.got(), [1, 2], "2 before 3, still before its commit");
        bob.ack(2);
        assert_eq!(bob.got(), [1, 2, 3]);
    }

    #[test]
    fn an_entry_that_may_not_go_early_stops_the_queue_until_its_commit() {
        let mut bob = Bob::online(4);
        bob.send(true);
        bob.send(false); // a possible resend
        bob.send(true);
        assert_eq!(bob.got(), [1], "3 does not overtake 2");
        bob.commit_leaves();
        bob.commit_lands();
        assert_eq!(bob.got(), [1, 2, 3]);
    }

    #[test]
    fn nothing_newer_overtakes_what_waits_for_the_committing_batch() {
        let mut bob = Bob::online(1);
        bob.send(true);
        bob.send(true); // waits: no room
        bob.commit_leaves();
        bob.ack(1); // room, but 2 is committing
        bob.send(true);
        assert_eq!(bob.got(), [1], "3 waits behind 2");
        bob.commit_lands();
        assert_eq!(bob.got(), [1, 2], "2 from its commit; 3 finds no room");
        bob.ack(2);
        assert_eq!(bob.got(), [1, 2, 3]);
    }

    /// Under any pattern of room, acks and commits, bob receives his entries in id order, each once.
    #[test]
    fn order_per_recipient_holds_across_acks_and_commits() {
        let mut bob = Bob::online(2);
        for step in 0..300u64 {
            bob.send(step % 7 != 3);
            if step % 2 == 0 {
                let oldest = bob
                    .got()
                    .into_iter()
                    .find(|&id| bob.window.as_ref().unwrap().is_out(id));
                if let Some(id) = oldest {
                    bob.ack(id);
                }
            }
            match step % 5 {
                0 if !bob.queue.committing() => bob.commit_leaves(),
                3 if bob.queue.committing() => bob.commit_lands(),
                _ => {}
            }
        }
        bob.commit_leaves();
        bob.commit_lands();
        while let Some(id) = bob
            .got()
            .into_iter()
            .find(|&id| bob.window.as_ref().unwrap().is_out(id))
        {
            bob.ack(id);
        }
        let got = bob.got();
        assert_eq!(
            got.len(),
            300,
            "every entry reached bob once all was committed"
        );
        assert!(
            got.windows(2).all(|p| p[0] < p[1]),
            "in order, each once: {got:?}"
        );
    }

    #[test]
    fn after_a_takeover_only_entries_that_were_waiting_keep_their_leave_to_go_early() {
        let mut bob = Bob::online(1);
        bob.send(true); // handed to the old session
        bob.send(true); // waiting, may go early
        bob.send(false); // waiting, may not
        let session = FakeSession::default();
        let size = WindowSize {
            entries: 4,
            bytes: 1_000,
            page: 4,
        };
        let mut window = Window::new(2, session.clone(), size);
        window.page_read(vec![], 4, |_| false).unwrap();
        bob.window = Some(window);
        bob.early.requeue("bob", &bob.queue);
        bob.early
            .catch_up("bob", bob.window.as_mut(), &bob.queue)
            .unwrap();
        assert!(
            session.ids().is_empty(),
            "entry 1 went to the old session: it waits for its commit"
        );
        let kinds: Vec<(u64, bool)> = bob.early.waiting["bob"]
            .iter()
            .map(|w| (w.id, w.may_go_early))
            .collect();
        assert_eq!(kinds, [(1, false), (2, true), (3, false)]);
    }

    #[test]
    fn an_offline_owner_queues_nothing_and_a_closed_session_is_reported() {
        let mut early = Early::default();
        early
            .admit::<FakeSession>(&entry(1, "bob", 1), true, None)
            .unwrap();
        assert!(early.waiting.is_empty());

        let mut bob = Bob::online(4);
        bob.session.close();
        let e = entry(1, "bob", 1);
        assert_eq!(bob.early.admit(&e, true, bob.window.as_mut()), Err(Gone));
    }
}
