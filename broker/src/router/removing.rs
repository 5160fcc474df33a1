//! What an operator removes by hand (the admin API's remove and purge): committed entries of one
//! mailbox leave the way expired ones do, each message's sender getting a `removed` receipt in the
//! same batch.
//!
//! The entries are read from the store (stamped, like a page read) and decided on when the read is
//! back: one already on its way out is left alone, and one handed to its owner's session and not
//! acknowledged yet is left to that delivery (it is counted as `busy`; kick the client first to
//! remove it). Entries still collecting for their first commit are not seen; they are stored
//! within milliseconds and a second call finds them. The answer comes once the batch carrying the
//! deletes is durable.

use actix::prelude::*;

use super::Router;
use crate::store::{Entry, EntryKind, StoreError};

/// Entries read per purge step.
pub const PURGE_PAGE: usize = 512;

/// Which entries of a mailbox to remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Entry `id` only.
    One(u64),
    /// Up to [`PURGE_PAGE`] entries with an id above this (one step of a purge).
    After(u64),
}

/// Asks the Router to remove entries of `mailbox`.
#[derive(Message, Debug)]
#[rtype(result = "Result<Removal, RemoveError>")]
pub struct Remove {
    pub mailbox: String,
    pub target: Target,
}

/// What one [`Remove`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Removal {
    /// Entries removed (messages and receipts).
    pub removed: u64,
    /// Of those, messages whose sender was sent a `removed` receipt.
    pub receipts: u64,
    /// Entries left because they are handed out and await their ack.
    pub busy: u64,
    /// Entries the store read returned.
    pub read: usize,
    /// The highest id read: the next purge step starts after it.
    pub last_read: u64,
}

/// Why a [`Remove`] did nothing.
#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    #[error("reading the mailbox failed: {0}")]
    Read(#[from] StoreError),
    #[error("the commit of the removal failed; nothing was removed")]
    Commit,
}

impl Handler<Remove> for Router {
    type Result = ResponseActFuture<Self, Result<Removal, RemoveError>>;

    fn handle(&mut self, msg: Remove, _: &mut Context<Self>) -> Self::Result {
        let stamp = self.deleting.begin_read();
        let store = self.store.clone();
        let (after, limit, only) = match msg.target {
            Target::One(id) => (id.saturating_sub(1), 1, Some(id)),
            Target::After(after) => (after, PURGE_PAGE, None),
        };
        let mailbox = msg.mailbox;
        Box::pin(
            async move { store.fetch(mailbox, after, limit).await }
                .into_actor(self)
                .map(move |result, router, ctx| {
                    router.deleting.end_read(stamp);
                    let mut read = result?;
                    let (count, last_read) = (read.len(), read.last().map_or(after, |e| e.id));
                    read.retain(|e| only.is_none_or(|id| e.id == id));
                    let removal = router.remove_entries(read);
                    let landed = (removal.removed > 0).then(|| {
                        let mark = router.ids.next();
                        let landed = router.queue.answer_when_committed(mark);
                        router.commit_pending(ctx);
                        landed
                    });
                    Ok((
                        Removal {
                            read: count,
                            last_read,
                            ..removal
                        },
                        landed,
                    ))
                })
                .then(|result: Result<_, RemoveError>, _, _| {
                    actix::fut::wrap_future(async move {
                        let (removal, landed) = result?;
                        if let Some(landed) = landed {
                            match landed.await {
                                Ok(Ok(_)) => {}
                                _ => return Err(RemoveError::Commit),
                            }
                        }
                        Ok(removal)
                    })
                }),
        )
    }
}

impl Router {
    /// Queues the delete of each of `entries` that is neither leaving nor handed out, with a
    /// `removed` receipt for each message's sender.
    fn remove_entries(&mut self, entries: Vec<Entry>) -> Removal {
        let mut removal = Removal::default();
        for entry in entries {
            if self.deleting.contains(entry.id) {
                continue;
            }
            if self.online.is_out(&entry.mailbox, entry.id) {
                removal.busy += 1;
                continue;
            }
            removal.removed += 1;
            self.delete(entry.id, entry.mailbox.clone(), entry.body.len() as u64);
            if entry.kind == EntryKind::Message {
                removal.receipts += 1;
                let about = entry.id;
                self.queue_receipt(
                    EntryKind::Removed,
                    entry.peer,
                    entry.mailbox,
                    entry.send_id,
                    about,
                );
            }
        }
        removal
    }
}
