//! Mailbox limits in cluster mode: whether a message still fits its mailbox, counted inside the
//! committing transaction from the database's totals, not from one broker's view of them.
//!
//! Each broker's Router counts only what it saw, so against a mailbox that several brokers fill (and
//! others empty) its counts are stale both ways. The check therefore runs in the commit: after the
//! transaction took the `stored_id` lock, which every transaction that appends takes, so no other
//! append can commit between the count and this one's, the rows of `switchboard_mailboxes` are the
//! mailboxes' true totals. One statement reads them (only when the batch has messages); the batch's
//! own appends are counted in order on top, receipts always stored (as on one broker: no receipt is
//! lost to a full mailbox). A refused message was already remembered as a send earlier in the
//! transaction, so its row of `switchboard_sent` is deleted again: a resend must not be answered with
//! the id of a message that was never stored. An ack committing in the same batch is not counted as
//! room (its delete runs after the appends): the check errs towards `mailbox-full` by at most a batch.

use std::collections::{HashMap, HashSet};

use postgres::Transaction;

use super::row::to_sql;
use crate::store::{Entry, EntryKind, StoreError};

/// The most one mailbox may hold (`mailbox.max_messages`, `mailbox.max_bytes`), checked in the
/// transaction when several brokers share the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailboxLimits {
    pub entries: u64,
    pub bytes: u64,
}

/// Of `fresh` (the batch's new appends as stored, in order), the ids of the messages their mailbox
/// has no room for; their sends are forgotten again.
pub(super) fn refuse(
    tx: &mut Transaction<'_>,
    limits: &MailboxLimits,
    fresh: &[&Entry],
) -> Result<HashSet<u64>, StoreError> {
    let mut mailboxes: Vec<&str> = fresh
        .iter()
        .filter(|e| e.kind == EntryKind::Message)
        .map(|e| e.mailbox.as_str())
        .collect();
    if mailboxes.is_empty() {
        return Ok(HashSet::new());
    }
    mailboxes.sort_unstable();
    mailboxes.dedup();
    let rows = tx.query(
        "SELECT mailbox, entries, bytes FROM switchboard_mailboxes WHERE mailbox = ANY($1)",
        &[&mailboxes],
    )?;
    let mut used: HashMap<String, (u64, u64)> = mailboxes
        .iter()
        .map(|m| ((*m).to_owned(), (0, 0)))
        .collect();
    for r in rows {
        let (entries, bytes): (i64, i64) = (r.try_get(1)?, r.try_get(2)?);
        used.insert(r.try_get(0)?, (entries.max(0) as u64, bytes.max(0) as u64));
    }
    let full = over(limits, fresh, used);
    if !full.is_empty() {
        let refused: Vec<&Entry> = fresh
            .iter()
            .filter(|e| full.contains(&e.id))
            .copied()
            .collect();
        forget_sends(tx, &refused)?;
        tracing::debug!(
            refused = refused.len(),
            "mailbox limit reached in the transaction"
        );
    }
    Ok(full)
}

/// Counts `fresh` in order on top of `used` (entries, bytes per mailbox); returns the ids of the
/// messages that would take their mailbox past `limits`, which are not counted.
fn over(
    limits: &MailboxLimits,
    fresh: &[&Entry],
    mut used: HashMap<String, (u64, u64)>,
) -> HashSet<u64> {
    let mut full = HashSet::new();
    for e in fresh {
        let Some((entries, bytes)) = used.get_mut(e.mailbox.as_str()) else {
            continue; // a mailbox with receipts only: never refused
        };
        let len = e.body.len() as u64;
        let room = *entries < limits.entries && bytes.saturating_add(len) <= limits.bytes;
        if e.kind == EntryKind::Message && !room {
            full.insert(e.id);
        } else {
            *entries += 1;
            *bytes += len;
        }
    }
    full
}

/// Deletes the sends `remember` stored for `refused`, matching their message ids (a row of the same
/// send with another id is an original, and stays).
fn forget_sends(tx: &mut Transaction<'_>, refused: &[&Entry]) -> Result<(), StoreError> {
    let senders: Vec<&str> = refused.iter().map(|e| e.peer.as_str()).collect();
    let send_ids: Vec<i64> = refused.iter().map(|e| to_sql(e.send_id)).collect();
    let ids: Vec<i64> = refused.iter().map(|e| to_sql(e.id)).collect();
    tx.execute(
        "DELETE FROM switchboard_sent s
         USING unnest($1::text[], $2::bigint[], $3::bigint[]) AS r (sender, send_id, message_id)
         WHERE s.sender = r.sender AND s.send_id = r.send_id AND s.message_id = r.message_id",
        &[&senders, &send_ids, &ids],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::entry;

    const LIMITS: MailboxLimits = MailboxLimits {
        entries: 3,
        bytes: 100,
    };

    #[test]
    fn messages_past_the_limit_are_refused_and_receipts_always_fit() {
        let one = entry(1, "bob", "x");
        let two = entry(2, "bob", "x");
        let mut receipt = entry(3, "bob", "");
        receipt.kind = EntryKind::Delivered;
        let four = entry(4, "bob", "x");
        let carol = entry(5, "carol", "x");
        let used = HashMap::from([("bob".to_owned(), (2, 2)), ("carol".to_owned(), (0, 0))]);
        let full = over(&LIMITS, &[&one, &two, &receipt, &four, &carol], used);
        assert_eq!(
            full,
            HashSet::from([2, 4]),
            "one more fits bob; the receipt always"
        );
    }

    #[test]
    fn the_byte_limit_counts_the_body() {
        let big = entry(1, "bob", &"b".repeat(60));
        let small = entry(2, "bob", "s");
        let used = HashMap::from([("bob".to_owned(), (0, 50))]);
        assert_eq!(
            over(&LIMITS, &[&big, &small], used),
            HashSet::from([1]),
            "the big one does not fit, the small one still does"
        );
    }
}
