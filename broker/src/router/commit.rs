//! What goes to the store in the next commit, and who waits for it.
//!
//! At most one commit is in flight; everything that arrives meanwhile collects in the next batch, so
//! one transaction and one fsync cover many messages. When the batch leaves:
//! - an append acknowledged while it was collecting (handed out early) is not stored at all: the
//!   batch carries only its send, `remembered`, so a later resend is still recognised;
//! - an append handed out early and not acknowledged yet is kept back for the next batch, once
//!   (`carried`), since its ack is usually on the way. The caller says which entries may be kept back:
//!   only those of an owner with nothing waiting, so what stays out is always newer than what goes
//!   in, and each mailbox stays in id order in the store.

use std::mem;

use rustc_hash::{FxHashMap, FxHashSet};
use switchboard_proto::RejectReason;
use tokio::sync::oneshot;

use crate::store::{Batch, CommitOutcome, Entry, EntryKind, Remembered};

/// Answers owed to senders, by the id their message got.
pub(super) type Answers = FxHashMap<u64, oneshot::Sender<Result<u64, RejectReason>>>;

/// A batch on its way to the store, with what the Router needs when it lands. `appended` and
/// `deletes` repeat the batch's, which goes to the store thread.
pub(super) struct Commit {
    pub(super) batch: Batch,
    pub(super) appended: Vec<Entry>,
    pub(super) deletes: Vec<u64>,
    pub(super) answers: Answers,
}

/// The batch collecting for the next commit, and the one commit in flight.
#[derive(Default)]
pub(super) struct CommitQueue {
    batch: Batch,
    /// Where each append of `batch` sits in `batch.appends`.
    index: FxHashMap<u64, usize>,
    /// Submitters waiting for `batch`.
    accepted: Answers,
    /// Appends acknowledged before their batch left: they are not stored.
    acked: FxHashSet<u64>,
    /// Entries handed out early and not yet acknowledged that stayed out of one batch already; the
    /// next batch writes them.
    carried: FxHashSet<u64>,
    committing: bool,
}

impl CommitQueue {
    /// Whether a commit is in flight.
    pub(super) fn committing(&self) -> bool {
        self.committing
    }

    /// Whether there is nothing to commit.
    pub(super) fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }

    /// Queues `entry`, in id order.
    pub(super) fn push(&mut self, entry: Entry) {
        self.index.insert(entry.id, self.batch.appends.len());
        self.batch.appends.push(entry);
    }

    /// The answer to the sender of message `id`, once its batch is committed.
    pub(super) fn answer_when_committed(
        &mut self,
        id: u64,
    ) -> oneshot::Receiver<Result<u64, RejectReason>> {
        let (tx, rx) = oneshot::channel();
        self.accepted.insert(id, tx);
        rx
    }

    /// Queues the delete of entry `id`.
    pub(super) fn delete(&mut self, id: u64) {
        self.batch.deletes.push(id);
    }

    /// The collecting batch's append `id`.
    pub(super) fn get(&self, id: u64) -> Option<&Entry> {
        self.index
            .get(&id)
            .and_then(|&at| self.batch.appends.get(at))
    }

    /// Whether `id` is an append of the collecting batch (not committing, not stored).
    pub(super) fn is_collecting(&self, id: u64) -> bool {
        self.index.contains_key(&id)
    }

    /// The collecting batch's appends for `owner` not acknowledged yet, in id order.
    pub(super) fn unacked_for<'a>(&'a self, owner: &'a str) -> impl Iterator<Item = &'a Entry> {
        self.batch
            .appends
            .iter()
            .filter(move |e| e.mailbox == owner && !self.acked.contains(&e.id))
    }

    /// Whether the collecting batch holds `sender`'s message `send_id` (so a resend of it will
    /// be recognised by the store and needs no room).
    pub(super) fn holds_send(&self, sender: &str, send_id: u64) -> bool {
        self.batch
            .appends
            .iter()
            .any(|e| e.kind == EntryKind::Message && e.peer == sender && e.send_id == send_id)
    }

    /// Append `id`, handed out early, was acknowledged while its batch was collecting: it will not be
    /// stored, so its sender hears `Accepted` now.
    pub(super) fn acked(&mut self, id: u64) {
        self.acked.insert(id);
        if let Some(tx) = self.accepted.remove(&id) {
            let _ = tx.send(Ok(id));
        }
    }

    /// The collecting batch leaves for the store, carrying `reserve_ids_through`; `keep_back` says
    /// which of its appends are out early, unacknowledged, and may wait for the next batch.
    pub(super) fn take(
        &mut self,
        reserve_ids_through: u64,
        keep_back: impl Fn(&Entry) -> bool,
    ) -> Commit {
        self.committing = true;
        // The next batch starts with room for as much as this one held, and the maps keep theirs:
        // no growing and rehashing from nothing at every batch.
        let mut next = Batch::default();
        next.appends.reserve(self.batch.appends.len());
        let mut batch = mem::replace(&mut self.batch, next);
        let room = self.accepted.len();
        let mut answers = mem::replace(
            &mut self.accepted,
            Answers::with_capacity_and_hasher(room, Default::default()),
        );
        self.index.clear();
        let mut kept = Vec::new();
        let room = Vec::with_capacity(batch.appends.len());
        let appends = mem::replace(&mut batch.appends, room);
        for entry in appends {
            if self.acked.contains(&entry.id) {
                self.carried.remove(&entry.id);
                if entry.kind == EntryKind::Message {
                    batch.remembered.push(remembered(entry));
                }
            } else if self.carried.remove(&entry.id) || !keep_back(&entry) {
                batch.appends.push(entry);
            } else {
                self.carried.insert(entry.id);
                kept.push(entry);
            }
        }
        self.acked.clear();
        for entry in kept {
            if let Some(tx) = answers.remove(&entry.id) {
                self.accepted.insert(entry.id, tx);
            }
            self.push(entry);
        }
        batch.reserve_ids_through = reserve_ids_through;
        Commit {
            appended: batch.appends.clone(),
            deletes: batch.deletes.clone(),
            batch,
            answers,
        }
    }

    /// The commit in flight has landed (or failed).
    pub(super) fn landed(&mut self) {
        self.committing = false;
    }
}

/// Only the send of a message acknowledged before it was stored, for resends.
fn remembered(entry: Entry) -> Remembered {
    Remembered {
        sender: entry.peer,
        send_id: entry.send_id,
        message_id: entry.id,
        at_ms: entry.sent_at_ms,
    }
}

/// Tells the senders of a committed batch their message's id; a resend the store recognised hears
/// the original's, a message a shared store did not store `mailbox-full` (only messages have
/// senders waiting). Returns the resends, by the id they were given, with the original's.
pub(super) fn answer(answers: Answers, outcome: &CommitOutcome) -> FxHashMap<u64, u64> {
    let duplicates: FxHashMap<u64, u64> = outcome
        .duplicates
        .iter()
        .map(|d| (d.id, d.original))
        .collect();
    let renumbered: FxHashMap<u64, u64> = outcome
        .renumbered
        .iter()
        .map(|r| (r.id, r.stored_as))
        .collect();
    for (id, tx) in answers {
        if outcome.not_stored.contains(&id) {
            let _ = tx.send(Err(RejectReason::MailboxFull));
            continue;
        }
        let told = duplicates.get(&id).or(renumbered.get(&id)).copied();
        let _ = tx.send(Ok(told.unwrap_or(id)));
    }
    duplicates
}

/// Nothing of a failed batch happened: its senders hear `unavailable` and nothing is claimed.
pub(super) fn answer_failed(answers: Answers) {
    for (_, tx) in answers {
        let _ = tx.send(Err(RejectReason::Unavailable));
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{entry, receipt};
    use super::*;
    use crate::store::Duplicate;

    fn ids(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|e| e.id).collect()
    }

    #[test]
    fn an_ack_before_the_batch_leaves_stores_only_the_remembered_send() {
        let mut queue = CommitQueue::default();
        queue.push(entry(1, "bob", 5));
        let mut answer = queue.answer_when_committed(1);
        queue.push(receipt(2, "alice", 0));
        queue.acked(1);
        queue.acked(2);
        assert_eq!(
            answer.try_recv().unwrap(),
            Ok(1),
            "alice hears Accepted at once"
        );
        let commit = queue.take(0, |_| false);
        assert!(
            commit.batch.appends.is_empty(),
            "neither entry touches the disk"
        );
        assert!(commit.appended.is_empty());
        let sent = entry(1, "bob", 5);
        assert_eq!(
            commit.batch.remembered,
            [Remembered {
                sender: sent.peer,
                send_id: sent.send_id,
                message_id: 1,
                at_ms: sent.sent_at_ms,
            }],
            "only the message's send, for resends; the receipt leaves no trace"
        );
    }

    #[test]
    fn an_unacknowledged_early_entry_is_kept_back_once_with_its_answer() {
        let mut queue = CommitQueue::default();
        queue.push(entry(1, "bob", 1));
        let mut answer = queue.answer_when_committed(1);
        queue.push(entry(2, "carol", 1));

        let first = queue.take(0, |e| e.mailbox == "bob");
        assert_eq!(ids(&first.batch.appends), [2]);
        assert!(
            !first.answers.contains_key(&1),
            "bob's sender waits for the next batch"
        );
        assert!(queue.is_collecting(1) && !queue.is_empty());
        queue.landed();

        let second = queue.take(0, |_| true);
        assert_eq!(ids(&second.batch.appends), [1], "kept back once only");
        commit_ok(second);
        assert_eq!(answer.try_recv().unwrap(), Ok(1));
    }

    #[test]
    fn a_kept_back_entry_acknowledged_in_time_is_not_stored() {
        let mut queue = CommitQueue::default();
        queue.push(entry(1, "bob", 1));
        let _ = queue.take(0, |_| true);
        queue.landed();
        queue.acked(1);
        let commit = queue.take(0, |_| true);
        assert!(commit.batch.appends.is_empty());
        assert_eq!(commit.batch.remembered.len(), 1);
        assert!(queue.carried.is_empty());
    }

    #[test]
    fn appends_leave_in_id_order_with_the_deletes_and_the_reservation() {
        let mut queue = CommitQueue::default();
        for id in 1..=5 {
            queue.push(entry(id, "bob", 1));
        }
        queue.delete(0);
        let commit = queue.take(1 << 20, |_| false);
        assert_eq!(ids(&commit.batch.appends), [1, 2, 3, 4, 5]);
        assert_eq!(ids(&commit.appended), [1, 2, 3, 4, 5]);
        assert_eq!((commit.batch.deletes, commit.deletes), (vec![0], vec![0]));
        assert_eq!(commit.batch.reserve_ids_through, 1 << 20);
        assert!(queue.committing() && queue.is_empty());
    }

    #[test]
    fn a_sender_hears_the_id_a_shared_store_stored_its_message_under() {
        let mut queue = CommitQueue::default();
        let provisional = crate::store::PROVISIONAL_IDS + 1;
        let mut sent = entry(1, "bob", 1);
        sent.id = provisional;
        queue.push(sent);
        let mut accepted = queue.answer_when_committed(provisional);
        let commit = queue.take(0, |_| false);
        let outcome = CommitOutcome {
            renumbered: vec![crate::store::Renumbered {
                id: provisional,
                stored_as: 42,
            }],
            ..Default::default()
        };
        assert!(answer(commit.answers, &outcome).is_empty());
        assert_eq!(accepted.try_recv().unwrap(), Ok(42));
    }

    #[test]
    fn the_collecting_batch_answers_what_it_holds() {
        let mut queue = CommitQueue::default();
        queue.push(entry(1, "bob", 1));
        queue.push(entry(2, "carol", 1));
        queue.push(entry(3, "bob", 1));
        queue.acked(3);
        assert_eq!(queue.get(2).map(|e| e.id), Some(2));
        assert!(queue.holds_send("alice", 10) && !queue.holds_send("alice", 40));
        assert_eq!(
            ids(&queue.unacked_for("bob").cloned().collect::<Vec<_>>()),
            [1]
        );
    }

    #[test]
    fn a_recognised_resend_hears_the_originals_id_and_a_failure_unavailable() {
        let mut queue = CommitQueue::default();
        queue.push(entry(5, "bob", 1));
        queue.push(entry(6, "bob", 1));
        let (mut five, mut six) = (
            queue.answer_when_committed(5),
            queue.answer_when_committed(6),
        );
        let commit = queue.take(0, |_| false);
        let outcome = CommitOutcome {
            duplicates: vec![Duplicate { id: 6, original: 2 }],
            ..Default::default()
        };
        let duplicates = answer(commit.answers, &outcome);
        assert_eq!(
            (five.try_recv().unwrap(), six.try_recv().unwrap()),
            (Ok(5), Ok(2))
        );
        assert_eq!(duplicates.get(&6), Some(&2));

        queue.landed();
        queue.push(entry(7, "bob", 1));
        let mut seven = queue.answer_when_committed(7);
        answer_failed(queue.take(0, |_| false).answers);
        assert_eq!(seven.try_recv().unwrap(), Err(RejectReason::Unavailable));
    }

    fn commit_ok(commit: Commit) {
        answer(commit.answers, &CommitOutcome::default());
    }
}
