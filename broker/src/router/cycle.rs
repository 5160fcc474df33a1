//! The commit cycle, the actor's side of `commit.rs`: at most one commit in flight, the next batch
//! leaving as soon as it lands, and what a landed commit settles: its senders' answers, the mailbox
//! counts, the deletes page reads may forget, and the entries its owners now get.

use actix::prelude::*;

use super::commit::{self, Commit};
use super::Router;
use rustc_hash::FxHashMap;

use crate::store::{CommitOutcome, Entry, EntryKind, StoreError};

impl Router {
    /// Sends what is queued to the store unless a commit is already under way.
    pub(super) fn commit_pending(&mut self, ctx: &mut Context<Self>) {
        if self.queue.committing() {
            return;
        }
        if self.queue.is_empty() {
            self.drained.drain(..).for_each(|tx| {
                let _ = tx.send(());
            });
            return;
        }
        self.early.batch_left();
        let reserve = self.ids.reservation_due().unwrap_or(0);
        let (early, online) = (&self.early, &self.online);
        // Out early and unacknowledged: its ack is likely on the way, so it may wait for the next
        // batch, unless its owner has entries waiting in this one.
        let commit = self.queue.take(reserve, |entry| {
            !early.behind_commit(&entry.mailbox) && online.is_out(&entry.mailbox, entry.id)
        });
        let Commit {
            batch,
            appended,
            deletes,
            answers,
        } = commit;
        let store = self.store.clone();
        async move { store.commit(batch).await }
            .into_actor(self)
            .map(move |result, router, ctx| {
                if result.is_ok() {
                    router.ids.reservation_committed(reserve);
                }
                let grown = router.committed(result, appended, deletes, answers);
                router.wake(&grown, ctx);
                for owner in router.early.commit_landed() {
                    router.catch_up(&owner);
                }
                router.commit_pending(ctx);
            })
            .spawn(ctx);
    }

    /// A commit landed: answer its senders, settle the counts, hand its entries to their owners.
    fn committed(
        &mut self,
        result: Result<CommitOutcome, StoreError>,
        appended: Vec<Entry>,
        deletes: Vec<u64>,
        answers: commit::Answers,
    ) -> Vec<String> {
        self.queue.landed();
        for entry in &appended {
            let receipt = entry.kind.is_receipt();
            self.usage
                .unqueue(&entry.mailbox, entry.body.len() as u64, receipt);
        }
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(error) => {
                // Nothing of the batch happened. Senders hear `unavailable`; acknowledged entries are
                // still stored and are handed out again on the client's next connection.
                tracing::error!(%error, entries = appended.len(), "store commit failed; senders get Rejected(unavailable)");
                commit::answer_failed(answers);
                for entry in &appended {
                    self.online.not_stored(entry);
                }
                self.deleting.commit_landed(deletes);
                return Vec::new();
            }
        };
        let duplicates = commit::answer(answers, &outcome);
        for &id in &deletes {
            if let Some((mailbox, len)) = self.deleting.get(id) {
                self.usage.removed(mailbox, len);
            }
        }
        self.deleting.commit_landed(deletes);
        let stored_as: FxHashMap<u64, u64> = outcome
            .renumbered
            .iter()
            .map(|r| (r.id, r.stored_as))
            .collect();
        let mut grown = Vec::new();
        for mut entry in appended {
            if duplicates.contains_key(&entry.id) {
                tracing::debug!(sender = %entry.peer, send_id = entry.send_id, "resend recognised; stored once");
                self.online.not_stored(&entry);
                continue;
            }
            if outcome.not_stored.contains(&entry.id) {
                // A shared store's: a message past the mailbox limit (its sender was told), or a
                // receipt about an entry another broker removed first.
                self.online.not_stored(&entry);
                continue;
            }
            self.usage.stored(&entry.mailbox, entry.body.len() as u64);
            if let Some(&id) = stored_as.get(&entry.id) {
                entry.id = id;
                if entry.kind == EntryKind::Message {
                    entry.message_id = id;
                }
            }
            if self.config.shared_store {
                // Another broker may have committed to this mailbox in between: read it in order.
                grown.push(entry.mailbox);
            } else {
                self.arrived(entry);
            }
        }
        grown
    }
}
