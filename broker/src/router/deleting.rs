//! Which entries are on their way out, so no page read hands them out again.
//!
//! An acknowledged (or expired) entry's delete is queued, then committed; until then the store still
//! holds it, and a quick reconnect would read it back. So its id is kept here and page reads skip it.
//! A read that started before the delete committed may still return the entry, so the id leaves only
//! once every read started before that commit has come back: each read is stamped with the number of
//! commits completed when it started, and commit N's ids wait for every read stamped below N.

use std::collections::{BTreeMap, VecDeque};

use rustc_hash::FxHashMap;

/// An entry whose delete is queued or committing.
struct Leaving {
    mailbox: String,
    body_len: u64,
}

/// When a store read started, in commits completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ReadStamp(u64);

/// The entries whose delete is queued or committing, and the store reads that may still see them.
#[derive(Default)]
pub(super) struct Deleting {
    entries: FxHashMap<u64, Leaving>,
    /// Commits completed so far; a read is stamped with this when it starts.
    commits_done: u64,
    /// Store reads under way (page reads, expiry sweeps), counted by their start stamp.
    reads: BTreeMap<u64, usize>,
    /// Ids deleted by commit N, waiting for every read stamped before N to come back.
    releasing: VecDeque<(u64, Vec<u64>)>,
}

impl Deleting {
    /// The delete of entry `id` of `mailbox` is queued.
    pub(super) fn insert(&mut self, id: u64, mailbox: String, body_len: u64) {
        self.entries.insert(id, Leaving { mailbox, body_len });
    }

    /// Whether entry `id` is on its way out.
    pub(super) fn contains(&self, id: u64) -> bool {
        self.entries.contains_key(&id)
    }

    /// The mailbox and body size of entry `id`, if it is on its way out.
    pub(super) fn get(&self, id: u64) -> Option<(&str, u64)> {
        self.entries
            .get(&id)
            .map(|l| (l.mailbox.as_str(), l.body_len))
    }

    /// How many entries of `mailbox` are on their way out.
    pub(super) fn count_in(&self, mailbox: &str) -> u64 {
        self.entries
            .values()
            .filter(|l| l.mailbox == mailbox)
            .count() as u64
    }

    /// A store read starts; hand the stamp back to [`Deleting::end_read`].
    pub(super) fn begin_read(&mut self) -> ReadStamp {
        *self.reads.entry(self.commits_done).or_default() += 1;
        ReadStamp(self.commits_done)
    }

    /// A store read came back.
    pub(super) fn end_read(&mut self, stamp: ReadStamp) {
        if let Some(count) = self.reads.get_mut(&stamp.0) {
            *count -= 1;
            if *count == 0 {
                self.reads.remove(&stamp.0);
            }
        }
        self.release_ready();
    }

    /// A commit carrying the deletes `ids` has landed (or failed): they leave once no older read can
    /// return them.
    pub(super) fn commit_landed(&mut self, ids: Vec<u64>) {
        self.commits_done += 1;
        if !ids.is_empty() {
            self.releasing.push_back((self.commits_done, ids));
        }
        self.release_ready();
    }

    fn release_ready(&mut self) {
        let oldest_read = self.reads.keys().next().copied().unwrap_or(u64::MAX);
        while self
            .releasing
            .front()
            .is_some_and(|(commit, _)| *commit <= oldest_read)
        {
            if let Some((_, ids)) = self.releasing.pop_front() {
                for id in ids {
                    self.entries.remove(&id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{entry, FakeSession};
    use super::super::window::{Window, WindowSize};
    use super::*;

    fn delete(deleting: &mut Deleting, id: u64) {
        deleting.insert(id, "bob".into(), 1);
    }

    /// Bob acknowledges entry 2 while a page read of his mailbox is under way; its delete commits
    /// before the read comes back with the old state. The read must not hand entry 2 out again.
    #[test]
    fn a_page_read_never_hands_out_an_entry_whose_delete_is_committing() {
        let mut deleting = Deleting::default();
        let session = FakeSession::default();
        let size = WindowSize {
            entries: 8,
            bytes: 100,
            page: 8,
        };
        let mut window = Window::new(1, session.clone(), size);
        let page = window.next_page().unwrap();
        let read = deleting.begin_read();
        delete(&mut deleting, 2);
        deleting.commit_landed(vec![2]);
        let stale = (1..=3).map(|id| entry(id, "bob", 1)).collect();
        window
            .page_read(stale, page.limit, |id| deleting.contains(id))
            .unwrap();
        deleting.end_read(read);
        assert_eq!(session.ids(), [1, 3]);
        assert!(window.handed_through(3));
        assert!(!deleting.contains(2), "no read can return it any more");
    }

    #[test]
    fn an_id_stays_until_every_read_older_than_its_commit_is_back() {
        let mut deleting = Deleting::default();
        let older = deleting.begin_read();
        delete(&mut deleting, 7);
        assert!(deleting.contains(7), "queued");
        deleting.commit_landed(vec![7]);
        let newer = deleting.begin_read(); // started after the commit: cannot see 7
        assert!(deleting.contains(7), "the older read may still return it");
        deleting.end_read(older);
        assert!(!deleting.contains(7), "only a newer read is out");
        deleting.end_read(newer);
    }

    #[test]
    fn commits_release_in_order_as_their_reads_come_back() {
        let mut deleting = Deleting::default();
        let first = deleting.begin_read();
        delete(&mut deleting, 1);
        deleting.commit_landed(vec![1]);
        let second = deleting.begin_read();
        delete(&mut deleting, 2);
        deleting.commit_landed(vec![2]);
        deleting.end_read(second);
        assert!(
            deleting.contains(1) && deleting.contains(2),
            "the first read is out"
        );
        deleting.end_read(first);
        assert!(!deleting.contains(1) && !deleting.contains(2));
    }

    #[test]
    fn without_reads_a_committed_delete_leaves_at_once() {
        let mut deleting = Deleting::default();
        delete(&mut deleting, 1);
        deleting.insert(2, "carol".into(), 5);
        assert_eq!(deleting.count_in("bob"), 1);
        assert_eq!(deleting.get(2), Some(("carol", 5)));
        deleting.commit_landed(vec![1]);
        assert!(!deleting.contains(1));
        assert!(deleting.contains(2), "its commit has not landed");
    }
}
