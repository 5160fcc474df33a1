//! How one [`Batch`] becomes one PostgreSQL transaction in a fixed handful of statements.
//!
//! Ids first: the transaction locks the row `stored_id` (the highest id stored so far) and stores
//! each append under its own id if that is above the mark and not provisional, else under the next
//! id above it ([`Renumbered`]). The lock is held to the commit, so ids increase in commit order
//! across every broker on the database, and a reader paging `id > cursor` never skips a late commit.
//! The same lock makes commits of several brokers take turns: the price of that order.
//!
//! A round trip to the server costs far more than a row, so every step takes all of the batch's rows
//! at once as array parameters (`unnest`): the sends in one `INSERT ... ON CONFLICT DO NOTHING
//! RETURNING` (a send it did not insert was sent before: its original is looked up), the entries in
//! one `INSERT`, the deletes in one `DELETE ... RETURNING` (which also tells the usage what left), the
//! usage in one upsert, the high-water mark in one `UPDATE`. Rows are locked in a fixed order
//! (mailboxes sorted by name), so two brokers committing on one database at once wait for each other
//! instead of deadlocking. A resend that reaches another broker while the original commits waits on
//! the unique key of `switchboard_sent` and then finds the original: it is stored once.
//!
//! Several brokers may remove one entry (an ack on both sides of a takeover, an expiry against an
//! ack): the deletes of earlier batches' entries run before the appends, and a receipt about one of
//! them is stored only if this delete removed it, so a sender hears of each message once. With
//! mailbox limits (`limits.rs`) the messages that do not fit are left out too; both are reported in
//! `CommitOutcome::not_stored`.

use std::collections::{BTreeMap, HashMap, HashSet};

use postgres::Transaction;

use super::limits::{self, MailboxLimits};
use super::row::{self, from_sql, to_sql, Columns};
use crate::store::{
    Batch, CommitOutcome, Duplicate, Entry, EntryKind, Renumbered, StoreError, PROVISIONAL_IDS,
};

/// The channel every commit notifies with the names of the mailboxes it appended to, so brokers
/// with their owners online read them (`crate::cluster`).
pub const WAKE_CHANNEL: &str = "switchboard_wake";

/// A send of the batch: who sent which send id, the broker id it got, and when.
struct Send<'a> {
    sender: &'a str,
    send_id: u64,
    message_id: u64,
    at_ms: u64,
}

/// Per mailbox, the change of (entries, bytes) in this batch; sorted, so rows lock in one order.
type UsageDelta = BTreeMap<String, (i64, i64)>;

pub(super) fn commit(
    tx: &mut Transaction<'_>,
    batch: &Batch,
    limits: Option<&MailboxLimits>,
) -> Result<CommitOutcome, StoreError> {
    let mut outcome = CommitOutcome::default();
    let appends = number(tx, &batch.appends, &mut outcome.renumbered)?;
    let originals = remember(tx, &sends(batch, &appends))?;
    let mut candidates = Vec::with_capacity(appends.len());
    for (given, e) in batch.appends.iter().zip(&appends) {
        let original = match e.kind {
            EntryKind::Message => originals
                .get(&(e.peer.as_str(), e.send_id))
                .copied()
                .unwrap_or(e.id),
            _ => e.id,
        };
        if original == e.id {
            candidates.push((given.id, e));
        } else {
            outcome.duplicates.push(Duplicate {
                id: given.id,
                original,
            });
            outcome.renumbered.retain(|r| r.id != given.id);
        }
    }
    let full = match limits {
        Some(limits) => {
            let fresh: Vec<&Entry> = candidates.iter().map(|(_, e)| *e).collect();
            limits::refuse(tx, limits, &fresh)?
        }
        None => Default::default(),
    };
    let stored_as: HashMap<u64, u64> = outcome
        .renumbered
        .iter()
        .map(|r| (r.id, r.stored_as))
        .collect();
    // Entries of earlier batches go first, so a receipt is stored only if its delete removed them.
    let appended: HashSet<u64> = appends.iter().map(|e| e.id).collect();
    let (now, after): (Vec<u64>, Vec<u64>) = batch
        .deletes
        .iter()
        .map(|id| stored_as.get(id).copied().unwrap_or(*id))
        .partition(|id| !appended.contains(id));
    let mut usage = UsageDelta::new();
    let removed = delete(tx, &now, &mut usage)?;
    let now: HashSet<u64> = now.into_iter().collect();
    let mut fresh = Columns::default();
    for (given, e) in candidates {
        if full.contains(&e.id) || told_already(e, &now, &removed) {
            outcome.not_stored.push(given);
            outcome.renumbered.retain(|r| r.id != given);
            continue;
        }
        fresh.push(e);
        change(&mut usage, &e.mailbox, 1, body_len(e));
    }
    if !fresh.is_empty() {
        tx.execute(row::INSERT, &fresh.params())?;
    }
    delete(tx, &after, &mut usage)?;
    write_usage(tx, &usage)?;
    wake(tx, &usage)?;
    let high = batch
        .remembered
        .iter()
        .map(|r| r.message_id)
        .chain(appends.iter().map(|e| e.id))
        .filter(|&id| id < PROVISIONAL_IDS)
        .fold(batch.reserve_ids_through, u64::max);
    if high > 0 {
        // The high-water mark outlives the entries, so ids are never reused after deletes.
        tx.execute(
            "UPDATE switchboard_meta SET value = greatest(value, $1) WHERE key = 'last_id'",
            &[&to_sql(high)],
        )?;
    }
    Ok(outcome)
}

/// The ids `appends` are stored under, in commit order (see the module documentation); those that
/// differ from the given ones are added to `renumbered`.
fn number(
    tx: &mut Transaction<'_>,
    appends: &[Entry],
    renumbered: &mut Vec<Renumbered>,
) -> Result<Vec<Entry>, StoreError> {
    if appends.is_empty() {
        return Ok(Vec::new());
    }
    let mark: i64 = tx
        .query_one(
            "SELECT value FROM switchboard_meta WHERE key = 'stored_id' FOR UPDATE",
            &[],
        )?
        .try_get(0)?;
    let mut last = from_sql(mark);
    let mut numbered = Vec::with_capacity(appends.len());
    for e in appends {
        let mut e = e.clone();
        if e.id <= last || e.id >= PROVISIONAL_IDS {
            let stored_as = last + 1;
            renumbered.push(Renumbered {
                id: e.id,
                stored_as,
            });
            if e.kind == EntryKind::Message {
                e.message_id = stored_as;
            }
            e.id = stored_as;
        }
        last = e.id;
        numbered.push(e);
    }
    tx.execute(
        "UPDATE switchboard_meta SET value = $1 WHERE key = 'stored_id'",
        &[&to_sql(last)],
    )?;
    Ok(numbered)
}

/// Tells every broker listening which mailboxes gained entries; delivered only if this commits.
fn wake(tx: &mut Transaction<'_>, usage: &UsageDelta) -> Result<(), StoreError> {
    let grown: Vec<&str> = usage
        .iter()
        .filter(|(_, &(entries, _))| entries > 0)
        .map(|(mailbox, _)| mailbox.as_str())
        .collect();
    if !grown.is_empty() {
        tx.execute(
            "SELECT pg_notify($1, m) FROM unnest($2::text[]) AS m",
            &[&WAKE_CHANNEL, &grown],
        )?;
    }
    Ok(())
}

/// The batch's sends, remembered ones first, each `(sender, send_id)` once: a later one in the
/// same batch is a resend of the first.
fn sends<'a>(batch: &'a Batch, appends: &'a [Entry]) -> Vec<Send<'a>> {
    let all = batch
        .remembered
        .iter()
        .map(|r| Send {
            sender: &r.sender,
            send_id: r.send_id,
            message_id: r.message_id,
            at_ms: r.at_ms,
        })
        .chain(
            appends
                .iter()
                .filter(|e| e.kind == EntryKind::Message)
                .map(|e| Send {
                    sender: &e.peer,
                    send_id: e.send_id,
                    message_id: e.id,
                    at_ms: e.sent_at_ms,
                }),
        );
    let mut seen = std::collections::HashSet::new();
    all.filter(|s| seen.insert((s.sender, s.send_id))).collect()
}

/// Remembers every send not remembered yet; returns, per send, the broker id its message has: its
/// own for a new send, the original's for a resend.
fn remember<'a>(
    tx: &mut Transaction<'_>,
    sends: &[Send<'a>],
) -> Result<HashMap<(&'a str, u64), u64>, StoreError> {
    let mut originals: HashMap<(&str, u64), u64> = sends
        .iter()
        .map(|s| ((s.sender, s.send_id), s.message_id))
        .collect();
    if sends.is_empty() {
        return Ok(originals);
    }
    let senders: Vec<&str> = sends.iter().map(|s| s.sender).collect();
    let send_ids: Vec<i64> = sends.iter().map(|s| to_sql(s.send_id)).collect();
    let message_ids: Vec<i64> = sends.iter().map(|s| to_sql(s.message_id)).collect();
    let at: Vec<i64> = sends.iter().map(|s| to_sql(s.at_ms)).collect();
    let inserted = tx.execute(
        "INSERT INTO switchboard_sent (sender, send_id, message_id, at_ms)
         SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[])
         ON CONFLICT (sender, send_id) DO NOTHING",
        &[&senders, &send_ids, &message_ids, &at],
    )?;
    if inserted == sends.len() as u64 {
        return Ok(originals);
    }
    // Some were sent before (or by another broker just now): whatever the rows hold is the original.
    let rows = tx.query(
        "SELECT s.sender, s.send_id, s.message_id FROM switchboard_sent s
         JOIN unnest($1::text[], $2::bigint[]) AS b (sender, send_id)
           ON s.sender = b.sender AND s.send_id = b.send_id",
        &[&senders, &send_ids],
    )?;
    let mut stored = HashMap::with_capacity(rows.len());
    for r in rows {
        let sender: String = r.try_get(0)?;
        stored.insert((sender, from_sql(r.try_get(1)?)), from_sql(r.try_get(2)?));
    }
    for s in sends {
        if let Some(&original) = stored.get(&(s.sender.to_owned(), s.send_id)) {
            originals.insert((s.sender, s.send_id), original);
        }
    }
    Ok(originals)
}

/// Whether `e` is a receipt about an entry this batch deletes (`deleting`) that was gone already
/// (not in `removed`): another broker removed it first (an ack on both sides of a takeover, an
/// expiry against an ack, two sweeps) and stored the receipt that tells of it, so the sender hears
/// of each message once.
fn told_already(e: &Entry, deleting: &HashSet<u64>, removed: &HashSet<u64>) -> bool {
    e.kind.is_receipt() && !removed.contains(&e.message_id) && deleting.contains(&e.message_id)
}

/// Deletes the entries `ids` that exist, counting what left into `usage`; returns their ids.
fn delete(
    tx: &mut Transaction<'_>,
    ids: &[u64],
    usage: &mut UsageDelta,
) -> Result<HashSet<u64>, StoreError> {
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let mut ids: Vec<i64> = ids.iter().map(|&id| to_sql(id)).collect();
    ids.sort_unstable();
    let rows = tx.query(
        "DELETE FROM switchboard_entries WHERE id = ANY($1) RETURNING id, mailbox, length(body)",
        &[&ids],
    )?;
    let mut removed = HashSet::with_capacity(rows.len());
    for r in rows {
        removed.insert(from_sql(r.try_get(0)?));
        let mailbox: &str = r.try_get(1)?;
        let bytes: i32 = r.try_get(2)?;
        change(usage, mailbox, -1, -i64::from(bytes));
    }
    Ok(removed)
}

fn body_len(e: &Entry) -> i64 {
    i64::try_from(e.body.len()).unwrap_or(i64::MAX)
}

fn change(usage: &mut UsageDelta, mailbox: &str, entries: i64, bytes: i64) {
    let u = match usage.get_mut(mailbox) {
        Some(u) => u,
        None => usage.entry(mailbox.to_owned()).or_default(),
    };
    u.0 += entries;
    u.1 += bytes;
}

/// Adds the batch's changes to each mailbox's row, in name order; mailboxes now empty lose theirs.
fn write_usage(tx: &mut Transaction<'_>, usage: &UsageDelta) -> Result<(), StoreError> {
    let changed: Vec<(&str, i64, i64)> = usage
        .iter()
        .filter(|(_, &(entries, bytes))| entries != 0 || bytes != 0)
        .map(|(mailbox, &(entries, bytes))| (mailbox.as_str(), entries, bytes))
        .collect();
    if changed.is_empty() {
        return Ok(());
    }
    let mailboxes: Vec<&str> = changed.iter().map(|c| c.0).collect();
    let entries: Vec<i64> = changed.iter().map(|c| c.1).collect();
    let bytes: Vec<i64> = changed.iter().map(|c| c.2).collect();
    tx.execute(
        "INSERT INTO switchboard_mailboxes (mailbox, entries, bytes)
         SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[])
         ON CONFLICT (mailbox) DO UPDATE
         SET entries = switchboard_mailboxes.entries + excluded.entries,
             bytes = switchboard_mailboxes.bytes + excluded.bytes",
        &[&mailboxes, &entries, &bytes],
    )?;
    if entries.iter().any(|&n| n < 0) {
        tx.execute(
            "DELETE FROM switchboard_mailboxes WHERE mailbox = ANY($1) AND entries <= 0",
            &[&mailboxes],
        )?;
    }
    Ok(())
}
