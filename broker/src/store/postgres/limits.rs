//! Mailbox limits in cluster mode: whether a message still fits its mailbox, counted inside the
//! committing transaction from the database's totals, not from one broker's view of them.
//!
//! Each broker's Router counts only what it saw, so against a mailbox that several brokers fill (and
//! others empty) its counts are stale both ways. The check therefore runs in the commit
//! (`commit.rs`), on what the transaction's first statement found: what was appended to each
//! mailbox, from the row it locked (every commit appending to the mailbox locks it to its end, so no
//! other append can land between the count and this one's), less what was removed from it, as the
//! statement's snapshot saw `switchboard_removed`, and less this batch's own deletes. A removal
//! committing meanwhile is not counted as room yet: the check errs towards `mailbox-full`, never
//! past the limit. The batch's own appends are counted in order on top, receipts always stored (as
//! on one broker: no receipt is lost to a full mailbox); it costs no statement. A refused message
//! was already remembered as a send earlier in the transaction, so its row of `switchboard_sent` is
//! deleted again: a resend must not be answered with the id of a message that was never stored.

use std::collections::{BTreeMap, HashMap, HashSet};

use postgres::Transaction;

use super::row::to_sql;
use super::statements::Statements;
use crate::store::{Entry, EntryKind, StoreError};

/// The most one mailbox may hold (`mailbox.max_messages`, `mailbox.max_bytes`), checked in the
/// transaction when several brokers share the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailboxLimits {
    pub entries: u64,
    pub bytes: u64,
}

/// Of `fresh` (the batch's new appends as stored, in order), the ids of the messages their mailbox
/// has no room for, counted on top of `totals` (the locked rows' entries and bytes); their sends
/// are forgotten again.
pub(super) fn refuse(
    tx: &mut Transaction<'_>,
    st: &Statements,
    limits: &MailboxLimits,
    fresh: &[&Entry],
    totals: &BTreeMap<String, (i64, i64)>,
) -> Result<HashSet<u64>, StoreError> {
    let used: HashMap<String, (u64, u64)> = fresh
        .iter()
        .filter(|e| e.kind == EntryKind::Message)
        .map(|e| {
            let (entries, bytes) = totals.get(&e.mailbox).copied().unwrap_or_default();
            (
                e.mailbox.clone(),
                (entries.max(0) as u64, bytes.max(0) as u64),
            )
        })
        .collect();
    if used.is_empty() {
        return Ok(HashSet::new());
    }
    let full = over(limits, fresh, used);
    if !full.is_empty() {
        let refused: Vec<&Entry> = fresh
            .iter()
            .filter(|e| full.contains(&e.id))
            .copied()
            .collect();
        forget_sends(tx, st, &refused)?;
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
fn forget_sends(
    tx: &mut Transaction<'_>,
    st: &Statements,
    refused: &[&Entry],
) -> Result<(), StoreError> {
    let senders: Vec<&str> = refused.iter().map(|e| e.peer.as_str()).collect();
    let send_ids: Vec<i64> = refused.iter().map(|e| to_sql(e.send_id)).collect();
    let ids: Vec<i64> = refused.iter().map(|e| to_sql(e.id)).collect();
    tx.execute(&st.forget, &[&senders, &send_ids, &ids])?;
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
