//! How old the waiting entries are: the questions the admin listener asks the store thread for its
//! oldest-entry-age gauge and its mailbox listing, answered there (never on an actor thread).

use tokio::sync::oneshot;

use super::{MailboxStore, StoreError};

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// A question about the oldest entries, with where its answer goes.
pub(super) enum Oldest {
    /// When the oldest entry of any mailbox was accepted.
    Any(Reply<Option<u64>>),
    /// When the oldest entry of each of these mailboxes was accepted.
    Each(Vec<String>, Reply<Vec<Option<u64>>>),
}

impl Oldest {
    /// Answers on the store thread; a caller that stopped waiting is no error.
    pub(super) fn answer(self, store: &mut dyn MailboxStore) {
        match self {
            Oldest::Any(reply) => {
                let _ = reply.send(store.oldest_sent_at_ms());
            }
            Oldest::Each(mailboxes, reply) => {
                let heads = mailboxes
                    .iter()
                    .map(|m| Ok(store.fetch(m, 0, 1)?.first().map(|e| e.sent_at_ms)))
                    .collect();
                let _ = reply.send(heads);
            }
        }
    }
}
