//! What the admin listener asks the Router: how much waits in the mailboxes, which mailboxes are
//! deepest, what a mailbox holds and who holds what unacknowledged.
//!
//! Every answer is built from what the Router keeps in memory for its limits, in one pass; a read of
//! a mailbox's entries goes to the store thread, stamped like a page read so that an entry on its way
//! out is not shown.

use actix::prelude::*;
use foldhash::HashMap;

use super::usage::Count;
use super::Router;
use crate::store::{Entry, StoreError};

/// Asks for the [`MailboxTotals`].
#[derive(Message, Debug)]
#[rtype(result = "MailboxTotals")]
pub struct Totals;

/// Committed entries over every mailbox, as the Router counts them for the limits.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, MessageResponse)]
pub struct MailboxTotals {
    /// Mailboxes holding at least one entry.
    pub mailboxes: u64,
    pub entries: u64,
    /// Body bytes.
    pub bytes: u64,
}

impl Handler<Totals> for Router {
    type Result = MailboxTotals;

    fn handle(&mut self, _: Totals, _: &mut Context<Self>) -> MailboxTotals {
        let (mailboxes, count) = self.usage.stored_totals();
        MailboxTotals {
            mailboxes,
            entries: count.entries,
            bytes: count.bytes,
        }
    }
}

/// How [`ListMailboxes`] orders the mailboxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MailboxOrder {
    /// Most entries first (ties by id).
    Depth,
    /// Most body bytes first (ties by id).
    Bytes,
    /// By id.
    Id,
}

/// Asks for one page of the non-empty mailboxes, in `order`.
#[derive(Message, Debug)]
#[rtype(result = "MailboxPage")]
pub struct ListMailboxes {
    pub order: MailboxOrder,
    pub offset: usize,
    pub limit: usize,
}

/// One mailbox as the Router counts it (committed entries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxRow {
    pub mailbox: String,
    pub entries: u64,
    pub bytes: u64,
    /// Its owner is connected.
    pub online: bool,
}

/// A page of [`MailboxRow`]s and how many non-empty mailboxes there are in all.
#[derive(Debug, Default, Clone, PartialEq, Eq, MessageResponse)]
pub struct MailboxPage {
    pub total: u64,
    pub rows: Vec<MailboxRow>,
}

impl Handler<ListMailboxes> for Router {
    type Result = MailboxPage;

    fn handle(&mut self, msg: ListMailboxes, _: &mut Context<Self>) -> MailboxPage {
        let all: Vec<(&String, &Count)> = self.usage.stored_iter().collect();
        let total = all.len() as u64;
        let rows = page(all, msg.order, msg.offset, msg.limit)
            .into_iter()
            .map(|(mailbox, count)| MailboxRow {
                online: self.online.contains(mailbox),
                mailbox: mailbox.clone(),
                entries: count.entries,
                bytes: count.bytes,
            })
            .collect();
        MailboxPage { total, rows }
    }
}

/// Entries `offset..offset + limit` of `all` in `order`: a partial selection, then a sort of only
/// the page's part, so the deepest ten of a million mailboxes cost one pass, not a full sort.
fn page<'a>(
    mut all: Vec<(&'a String, &'a Count)>,
    order: MailboxOrder,
    offset: usize,
    limit: usize,
) -> Vec<(&'a String, &'a Count)> {
    let cmp = |a: &(&String, &Count), b: &(&String, &Count)| match order {
        MailboxOrder::Depth => b.1.entries.cmp(&a.1.entries).then(a.0.cmp(b.0)),
        MailboxOrder::Bytes => b.1.bytes.cmp(&a.1.bytes).then(a.0.cmp(b.0)),
        MailboxOrder::Id => a.0.cmp(b.0),
    };
    let end = offset.saturating_add(limit).min(all.len());
    if offset >= end {
        return Vec::new();
    }
    if end < all.len() {
        all.select_nth_unstable_by(end, cmp);
        all.truncate(end);
    }
    all.sort_unstable_by(cmp);
    all.split_off(offset)
}

/// Asks for one mailbox's [`MailboxRow`] (all zero for an empty one).
#[derive(Message, Debug)]
#[rtype(result = "MailboxRow")]
pub struct MailboxInfo(pub String);

impl<A, M> actix::dev::MessageResponse<A, M> for MailboxRow
where
    A: Actor,
    M: Message<Result = MailboxRow>,
{
    fn handle(self, _: &mut A::Context, tx: Option<actix::dev::OneshotSender<M::Result>>) {
        if let Some(tx) = tx {
            let _ = tx.send(self);
        }
    }
}

impl Handler<MailboxInfo> for Router {
    type Result = MailboxRow;

    fn handle(&mut self, msg: MailboxInfo, _: &mut Context<Self>) -> MailboxRow {
        let count = self.usage.stored_count(&msg.0);
        MailboxRow {
            online: self.online.contains(&msg.0),
            mailbox: msg.0,
            entries: count.entries,
            bytes: count.bytes,
        }
    }
}

/// Asks what each connected client holds unacknowledged: entries and body bytes.
#[derive(Message, Debug)]
#[rtype(result = "Windows")]
pub struct ListWindows;

/// Entries and body bytes in flight, by client id.
#[derive(Debug, Default, MessageResponse)]
pub struct Windows(pub HashMap<String, (u64, u64)>);

impl Handler<ListWindows> for Router {
    type Result = Windows;

    fn handle(&mut self, _: ListWindows, _: &mut Context<Self>) -> Windows {
        Windows(self.online.in_use().collect())
    }
}

/// Asks for up to `limit` committed entries of `mailbox` after id `after`, without those on their
/// way out.
#[derive(Message, Debug)]
#[rtype(result = "Result<Vec<Listed>, StoreError>")]
pub struct ReadEntries {
    pub mailbox: String,
    pub after: u64,
    pub limit: usize,
}

/// An entry of a [`ReadEntries`] answer.
#[derive(Debug, Clone)]
pub struct Listed {
    pub entry: Entry,
    /// Handed to its owner's session and not acknowledged yet.
    pub handed_out: bool,
}

impl Handler<ReadEntries> for Router {
    type Result = ResponseActFuture<Self, Result<Vec<Listed>, StoreError>>;

    fn handle(&mut self, msg: ReadEntries, _: &mut Context<Self>) -> Self::Result {
        let stamp = self.deleting.begin_read();
        let store = self.store.clone();
        let mailbox = msg.mailbox.clone();
        Box::pin(
            async move { store.fetch(msg.mailbox, msg.after, msg.limit).await }
                .into_actor(self)
                .map(move |result, router, _| {
                    router.deleting.end_read(stamp);
                    let entries = result?;
                    Ok(entries
                        .into_iter()
                        .filter(|e| !router.deleting.contains(e.id))
                        .map(|entry| Listed {
                            handed_out: router.online.is_out(&mailbox, entry.id),
                            entry,
                        })
                        .collect())
                }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts() -> Vec<(String, Count)> {
        [("a", 1, 50), ("b", 5, 10), ("c", 3, 90), ("d", 5, 5)]
            .into_iter()
            .map(|(m, entries, bytes)| (m.to_owned(), Count { entries, bytes }))
            .collect()
    }

    fn ids(rows: Vec<(&String, &Count)>) -> Vec<String> {
        rows.into_iter().map(|(m, _)| m.clone()).collect()
    }

    #[test]
    fn the_deepest_come_first_and_pages_follow_on() {
        let all = counts();
        let refs = || all.iter().map(|(m, c)| (m, c)).collect::<Vec<_>>();
        assert_eq!(ids(page(refs(), MailboxOrder::Depth, 0, 2)), ["b", "d"]);
        assert_eq!(ids(page(refs(), MailboxOrder::Depth, 2, 2)), ["c", "a"]);
        assert_eq!(ids(page(refs(), MailboxOrder::Bytes, 0, 1)), ["c"]);
        assert_eq!(ids(page(refs(), MailboxOrder::Id, 1, 10)), ["b", "c", "d"]);
        assert!(page(refs(), MailboxOrder::Depth, 4, 10).is_empty());
        assert!(page(refs(), MailboxOrder::Depth, 0, 0).is_empty());
    }
}
