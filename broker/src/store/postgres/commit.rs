//! How one [`Batch`] becomes one PostgreSQL transaction in a fixed handful of statements.
//!
//! Ids: every append the Router gave a provisional id is stored under an id drawn from the sequence
//! `switchboard_ids`, and reported ([`Renumbered`]). The store's contract asks only that ids WITHIN
//! A MAILBOX increase in commit order (so a reader paging `id > cursor` never skips a late commit),
//! and that is what the order of the statements gives, with no lock every commit shares:
//!
//! 1. The transaction first locks the rows of `switchboard_mailboxes` (what was appended to each
//!    mailbox) of every mailbox it appends to, in name order, in one upsert (the rows it adds its
//!    appends to anyway), and holds them to its end. What it deletes it counts in
//!    `switchboard_removed` instead, so a commit that only deletes from a mailbox (an ack) does not
//!    wait for the commits appending to it.
//! 2. Only then does it draw its ids. The sequence is `CACHE 1`, so its values increase in the order
//!    they are drawn, across all sessions. A later transaction appending to the same mailbox waits
//!    in step 1 until this one has committed (or rolled back), so it draws later and its ids are
//!    higher; and PostgreSQL makes a transaction visible before it releases its locks, so by the time
//!    the later one can commit, this one is visible to every reader. Transactions on different
//!    mailboxes take no lock in common, and their commits flush together (group commit).
//!
//! An engine with one writer gives its own ids (never provisional, from a Router whose store is not
//! shared): one above every id the sequence gave out is kept and the sequence moved on to it, any
//! other renumbered. Moving a sequence is not transactional, so this path is for one writer only;
//! brokers sharing the database always give provisional ids (`router::ids`).
//!
//! A round trip to the server costs far more than a row, so every step takes all of the batch's rows
//! at once as array parameters (`unnest`), through statements prepared once per connection
//! (`statements.rs`), and a commit is five round trips whatever its size: `BEGIN`; one statement
//! ([`open`]) that deletes the entries of earlier batches (`DELETE ... RETURNING`, counted in
//! `switchboard_removed`), locks the appended-to mailboxes' rows in one upsert that returns what was
//! appended to them (what the limits check counts from, less what was removed) and then draws the
//! ids; the sends in one `INSERT ... ON CONFLICT DO NOTHING` (a send it did not insert was sent
//! before: its original is looked up, one more); one statement ([`write`]) that inserts the entries
//! and adds them to the usage; `COMMIT`. An append the same batch deletes is never inserted. The
//! `NOTIFY` follows the commit on its own ([`wake`]). Rows are locked in a fixed order (entries
//! being deleted, then mailboxes' rows sorted by name, then their removal counts sorted by name,
//! then sends sorted by sender and send id), so two brokers committing on one database at once wait
//! for each other instead of deadlocking. A resend that reaches another broker while the original
//! commits waits on the unique key of `switchboard_sent` and then finds the original: it is stored
//! once.
//!
//! Several brokers may remove one entry (an ack on both sides of a takeover, an expiry against an
//! ack): the deletes of earlier batches' entries run first, and a receipt about one of them is stored
//! only if this delete removed it, so a sender hears of each message once. With mailbox limits
//! (`limits.rs`) the messages that do not fit are left out too; both are reported in
//! `CommitOutcome::not_stored`.

use std::collections::{BTreeMap, HashMap, HashSet};

use postgres::types::ToSql;
use postgres::{Client, Transaction};

use super::limits::{self, MailboxLimits};
use super::row::{from_sql, to_sql, Columns};
use super::statements::Statements;
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

/// Per mailbox, (entries, bytes): a change, or what it holds; sorted, so rows lock in one order.
type Usage = BTreeMap<String, (i64, i64)>;

pub(super) fn commit(
    tx: &mut Transaction<'_>,
    st: &Statements,
    batch: &Batch,
    limits: Option<&MailboxLimits>,
    grown: &mut Vec<String>,
) -> Result<CommitOutcome, StoreError> {
    let mut outcome = CommitOutcome::default();
    // Entries of earlier batches go first, so a receipt is stored only if its delete removed them;
    // an append the same batch deletes is never stored at all.
    let given: HashSet<u64> = batch.appends.iter().map(|e| e.id).collect();
    let (now, dropped): (Vec<u64>, Vec<u64>) =
        batch.deletes.iter().partition(|id| !given.contains(id));
    let dropped: HashSet<u64> = dropped.into_iter().collect();
    let provisional = batch.appends.iter().all(|e| e.id >= PROVISIONAL_IDS);
    let draws = if provisional { batch.appends.len() } else { 0 };
    let opened = open(tx, st, &now, &batch.appends, draws)?;
    let appends = if provisional {
        let mut numbered = batch.appends.clone();
        for (e, id) in numbered.iter_mut().zip(opened.ids) {
            renumber(e, id, &mut outcome.renumbered);
        }
        numbered
    } else {
        number(tx, st, &batch.appends, &mut outcome.renumbered)?
    };
    let originals = remember(tx, st, &sends(batch, &appends))?;
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
            limits::refuse(tx, st, limits, &fresh, &opened.totals)?
        }
        None => Default::default(),
    };
    let now: HashSet<u64> = now.into_iter().collect();
    let mut changes = Usage::new();
    let mut fresh = Columns::default();
    for (given, e) in candidates {
        if full.contains(&e.id) || told_already(e, &now, &opened.removed) {
            outcome.not_stored.push(given);
            outcome.renumbered.retain(|r| r.id != given);
            continue;
        }
        if dropped.contains(&given) {
            continue; // stored and deleted in one go
        }
        fresh.push(e);
        change(&mut changes, &e.mailbox, 1, body_len(e));
    }
    write(tx, st, &fresh, &changes)?;
    grown.extend(
        changes
            .into_iter()
            .filter(|(_, (entries, _))| *entries > 0)
            .map(|(mailbox, _)| mailbox),
    );
    // The high-water mark outlives the entries, so ids are never reused after deletes. Every id
    // stored is covered by the sequence (`number`); what a Router with one writer remembered
    // without storing, or reserved, is not. A shared store's Router does neither.
    let high = batch
        .remembered
        .iter()
        .map(|r| r.message_id)
        .filter(|&id| id < PROVISIONAL_IDS)
        .fold(batch.reserve_ids_through, u64::max);
    if high > 0 {
        tx.execute(&st.raise_last_id, &[&to_sql(high)])?;
    }
    Ok(outcome)
}

/// What the commit's first statement did.
#[derive(Default)]
struct Opened {
    /// The ids of the entries it deleted.
    removed: HashSet<u64>,
    /// What the mailboxes whose usage rows it locked hold, its deletes counted.
    totals: Usage,
    /// The ids it drew, in the order drawn.
    ids: Vec<u64>,
}

/// The commit's first statement (`Statements::open`): deletes the entries `deleting` (counting them
/// in their mailboxes' rows of `switchboard_removed`), locks the usage rows of the `appends`'
/// mailboxes in name order, and then draws `draws` ids.
fn open(
    tx: &mut Transaction<'_>,
    st: &Statements,
    deleting: &[u64],
    appends: &[Entry],
    draws: usize,
) -> Result<Opened, StoreError> {
    let mut opened = Opened::default();
    if deleting.is_empty() && appends.is_empty() {
        return Ok(opened);
    }
    let mut ids: Vec<i64> = deleting.iter().map(|&id| to_sql(id)).collect();
    ids.sort_unstable();
    let mut mailboxes: Vec<&str> = appends.iter().map(|e| e.mailbox.as_str()).collect();
    mailboxes.sort_unstable();
    mailboxes.dedup();
    let draws = i64::try_from(draws).unwrap_or(i64::MAX);
    let mut removed_before = Usage::new();
    let mut removing = Usage::new();
    for r in tx.query(&st.open, &[&ids, &mailboxes, &draws])? {
        match r.try_get::<_, i32>(0)? {
            0 => {
                opened
                    .totals
                    .insert(r.try_get(1)?, (r.try_get(2)?, r.try_get(3)?));
            }
            1 => {
                opened.removed.insert(from_sql(r.try_get(2)?));
                let mailbox: &str = r.try_get(1)?;
                change(&mut removing, mailbox, 1, r.try_get(3)?);
            }
            3 => {
                removed_before.insert(r.try_get(1)?, (r.try_get(2)?, r.try_get(3)?));
            }
            _ => opened.ids.push(from_sql(r.try_get(2)?)),
        }
    }
    // What is in each mailbox: appended (the locked row), less removed before (as the statement's
    // snapshot saw it, so a removal committing meanwhile is not counted: the limits err towards
    // full) and removed now.
    for (mailbox, total) in &mut opened.totals {
        for (entries, bytes) in [&removed_before, &removing]
            .iter()
            .filter_map(|u| u.get(mailbox))
        {
            total.0 -= entries;
            total.1 -= bytes;
        }
    }
    if opened.ids.len() as i64 != draws {
        return Err(StoreError::Failed(format!(
            "asked the sequence for {draws} ids, got {}",
            opened.ids.len()
        )));
    }
    opened.ids.sort_unstable();
    Ok(opened)
}

/// The ids `appends` are stored under when a Router with the database to itself gave some of them
/// (see the module documentation); those that differ from the given ones are added to
/// `renumbered`. Runs after [`open`].
fn number(
    tx: &mut Transaction<'_>,
    st: &Statements,
    appends: &[Entry],
    renumbered: &mut Vec<Renumbered>,
) -> Result<Vec<Entry>, StoreError> {
    let mut numbered = appends.to_vec();
    // Ids given by a Router that has the database to itself.
    let mut last = from_sql(tx.query_one(&st.mark, &[])?.try_get(0)?);
    let mut ahead = false; // `last` is above the sequence
    for e in &mut numbered {
        if e.id > last && e.id < PROVISIONAL_IDS {
            last = e.id;
            ahead = true;
            continue;
        }
        if std::mem::take(&mut ahead) {
            tx.query_one(&st.advance, &[&to_sql(last)])?;
        }
        let id = draw(tx, st, 1)?[0];
        renumber(e, id, renumbered);
        last = id;
    }
    if ahead {
        tx.query_one(&st.advance, &[&to_sql(last)])?;
    }
    Ok(numbered)
}

/// `n` ids from the sequence, in the order drawn.
fn draw(tx: &mut Transaction<'_>, st: &Statements, n: usize) -> Result<Vec<u64>, StoreError> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let rows = tx.query(&st.draw, &[&i64::try_from(n).unwrap_or(i64::MAX)])?;
    let mut ids = rows
        .iter()
        .map(|r| Ok(from_sql(r.try_get(0)?)))
        .collect::<Result<Vec<u64>, StoreError>>()?;
    if ids.len() != n {
        return Err(StoreError::Failed(format!(
            "asked the sequence for {n} ids, got {}",
            ids.len()
        )));
    }
    ids.sort_unstable();
    Ok(ids)
}

fn renumber(e: &mut Entry, stored_as: u64, renumbered: &mut Vec<Renumbered>) {
    renumbered.push(Renumbered {
        id: e.id,
        stored_as,
    });
    if e.kind == EntryKind::Message {
        e.message_id = stored_as;
    }
    e.id = stored_as;
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
    let mut sends: Vec<Send<'a>> = all.filter(|s| seen.insert((s.sender, s.send_id))).collect();
    // Unique keys lock in one order too: two brokers storing the same sends at once (resends
    // crossing) wait for each other instead of deadlocking.
    sends.sort_unstable_by(|a, b| (a.sender, a.send_id).cmp(&(b.sender, b.send_id)));
    sends
}

/// Remembers every send not remembered yet; returns, per send, the broker id its message has: its
/// own for a new send, the original's for a resend.
fn remember<'a>(
    tx: &mut Transaction<'_>,
    st: &Statements,
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
    let inserted = tx.execute(&st.remember, &[&senders, &send_ids, &message_ids, &at])?;
    if inserted == sends.len() as u64 {
        return Ok(originals);
    }
    // Some were sent before (or by another broker just now): whatever the rows hold is the original.
    let rows = tx.query(&st.originals, &[&senders, &send_ids])?;
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

fn body_len(e: &Entry) -> i64 {
    i64::try_from(e.body.len()).unwrap_or(i64::MAX)
}

fn change(usage: &mut Usage, mailbox: &str, entries: i64, bytes: i64) {
    let u = match usage.get_mut(mailbox) {
        Some(u) => u,
        None => usage.entry(mailbox.to_owned()).or_default(),
    };
    u.0 += entries;
    u.1 += bytes;
}

/// The commit's last statement (`Statements::write`): inserts `fresh` and adds `appended` to the
/// mailboxes' usage rows (locked since [`open`]).
fn write(
    tx: &mut Transaction<'_>,
    st: &Statements,
    fresh: &Columns<'_>,
    appended: &Usage,
) -> Result<(), StoreError> {
    if fresh.is_empty() {
        return Ok(());
    }
    let mailboxes: Vec<&str> = appended.keys().map(String::as_str).collect();
    let entries: Vec<i64> = appended.values().map(|u| u.0).collect();
    let bytes: Vec<i64> = appended.values().map(|u| u.1).collect();
    let usage: [&(dyn ToSql + Sync); 3] = [&mailboxes, &entries, &bytes];
    let params: Vec<&(dyn ToSql + Sync)> = fresh.params().into_iter().chain(usage).collect();
    tx.execute(&st.write, &params)?;
    Ok(())
}

/// Tells every broker listening which mailboxes a commit appended to, once it has committed, in a
/// transaction of its own. Not in the committing transaction: PostgreSQL serialises the commits of
/// transactions that `NOTIFY` under one lock held through their flushes, which would make every
/// broker's commits take turns again. A transaction that only notifies writes no WAL before its
/// commit record, so it commits without waiting for a flush or the standby. A wake-up is a hint: one
/// lost (the connection broke in between) is logged and caught by the listeners' safety sweep.
pub(super) fn wake(client: &mut Client, st: &Statements, grown: &[String]) {
    if grown.is_empty() {
        return;
    }
    if let Err(error) = client.execute(&st.wake, &[&grown]) {
        tracing::warn!(
            mailboxes = grown.len(),
            %error,
            "could not send the wake-up after a commit; the safety sweep reads those mailboxes"
        );
    }
}
