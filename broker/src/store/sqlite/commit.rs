//! How one [`Batch`] becomes one SQLite transaction in as few statements as it allows.
//!
//! A statement costs SQLite a fixed amount (reset, bind, step, the program's prologue) besides the
//! rows it touches, so rows go in multi-row statements: the sends of the batch in `INSERT ... ON
//! CONFLICT DO NOTHING` (when fewer rows went in than were given, the chunk's sends are looked up: a
//! message whose send holds another id is a resend), the entries in one `INSERT`, the deletes in `DELETE ... WHERE id IN (...) RETURNING` (which also
//! tells the usage what left). A batch is cut into chunks of a few fixed sizes ([`CHUNKS`]), so every
//! statement text is one of a handful and is prepared once ([`Sql`], `prepare_cached`). Usage and
//! the high-water mark are written once per batch: per mailbox touched, and once. The inserts say
//! `OR ROLLBACK`: a failed row fails the whole batch anyway, and without it SQLite keeps a statement
//! journal of every multi-row statement so that it could undo just that statement.

use std::collections::HashMap;

use rusqlite::{Transaction, TransactionBehavior};
use rustc_hash::FxHashSet;

use super::{from_sql, kind_to_sql, receipts_to_sql, to_sql};
use crate::store::{Batch, CommitOutcome, Duplicate, Entry, EntryKind, StoreError};

/// Rows per multi-row statement, largest first: a batch of n rows takes at most one statement per
/// size. 64 rows of 10 parameters stay far below SQLite's limit of 32,766 variables.
const CHUNKS: [usize; 7] = [64, 32, 16, 8, 4, 2, 1];

/// The statement texts of every chunk size, built once when the store opens.
pub(super) struct Sql {
    remember: Vec<String>,
    insert: Vec<String>,
    delete: Vec<String>,
}

impl Sql {
    pub(super) fn new() -> Self {
        let each = |head: &str, row: &str, tail: &str| -> Vec<String> {
            CHUNKS
                .iter()
                .map(|&n| format!("{head}{}{tail}", vec![row; n].join(",")))
                .collect()
        };
        Self {
            remember: each(
                "INSERT OR ROLLBACK INTO sent (sender, client_msg_id, message_id, at_ms) VALUES ",
                "(?,?,?,?)",
                " ON CONFLICT (sender, client_msg_id) DO NOTHING",
            ),
            insert: each(
                "INSERT OR ROLLBACK INTO entries (id, mailbox, kind, peer, client_msg_id, message_id, sent_at_ms,
                                      expires_at_ms, receipts, body) VALUES ",
                "(?,?,?,?,?,?,?,?,?,?)",
                "",
            ),
            delete: each(
                "DELETE FROM entries WHERE id IN (",
                "?",
                ") RETURNING mailbox, length(body)",
            ),
        }
    }

    /// Statements the store may hold prepared at once: every chunk size of each, and the few others.
    pub(super) fn statements() -> usize {
        3 * CHUNKS.len() + 16
    }
}

/// Calls `f` on consecutive chunks of `items`, each of a size in [`CHUNKS`], with that size's index.
fn chunked<T>(
    mut items: &[T],
    mut f: impl FnMut(usize, &[T]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    while !items.is_empty() {
        let size = CHUNKS
            .iter()
            .position(|&n| n <= items.len())
            .unwrap_or(CHUNKS.len() - 1);
        let (head, rest) = items.split_at(CHUNKS[size].min(items.len()));
        f(size, head)?;
        items = rest;
    }
    Ok(())
}

/// A send to remember: (sender, send id, message id, time).
type SendRow<'a> = (&'a str, u64, u64, u64);

/// Per mailbox, the change of (entries, bytes) in this batch.
type UsageDelta = HashMap<String, (i64, i64)>;

pub(super) fn commit(
    conn: &mut rusqlite::Connection,
    sql: &Sql,
    batch: &Batch,
) -> Result<CommitOutcome, StoreError> {
    let mut outcome = CommitOutcome::default();
    if batch.is_empty() {
        return Ok(outcome);
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let sends: Vec<SendRow<'_>> = batch
        .remembered
        .iter()
        .map(|r| (r.sender.as_str(), r.send_id, r.message_id, r.at_ms))
        .chain(
            batch
                .appends
                .iter()
                .filter(|e| e.kind == EntryKind::Message)
                .map(|e| (e.peer.as_str(), e.send_id, e.id, e.sent_at_ms)),
        )
        .collect();
    let new = remember(&tx, sql, &sends)?;
    let mut fresh = Vec::with_capacity(batch.appends.len());
    for e in &batch.appends {
        if e.kind != EntryKind::Message || new.contains(&e.id) {
            fresh.push(e);
        } else {
            let original = tx
                .prepare_cached(
                    "SELECT message_id FROM sent WHERE sender = ?1 AND client_msg_id = ?2",
                )?
                .query_row((&e.peer, to_sql(e.send_id)), |row| row.get::<_, i64>(0))?;
            outcome.duplicates.push(Duplicate {
                id: e.id,
                original: from_sql(original),
            });
        }
    }
    let mut usage = UsageDelta::new();
    insert(&tx, sql, &fresh, &mut usage)?;
    delete(&tx, sql, &batch.deletes, &mut usage)?;
    write_usage(&tx, usage)?;
    let high = batch.highest_id();
    if high > 0 {
        // The highest id written, for the identity check (`guard.rs`); before the last id moves,
        // since a store made before this row starts it from its last id (a reservation
        // included), so the row never goes below a mark recorded from that.
        tx.prepare_cached(
            "INSERT INTO meta (key, value) VALUES ('written_id', max(?1, coalesce(
                 (SELECT value FROM meta WHERE key = 'last_id'), 0)))
             ON CONFLICT (key) DO UPDATE SET value = max(value, ?1)",
        )?
        .execute([to_sql(batch.highest_written_id())])?;
        // The high-water mark outlives the entries, so ids are never reused after deletes.
        tx.prepare_cached(
            "INSERT INTO meta (key, value) VALUES ('last_id', ?1)
             ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)",
        )?
        .execute([to_sql(high)])?;
    }
    tx.commit()?;
    Ok(outcome)
}

/// Remembers every send not remembered yet; returns the message ids of those it remembered (a
/// message whose id is missing is a resend). A chunk whose rows all went in (the usual case) needs
/// nothing more; otherwise each of its sends is looked up: it is new if the row holds its own id.
fn remember(
    tx: &Transaction<'_>,
    sql: &Sql,
    sends: &[SendRow<'_>],
) -> Result<FxHashSet<u64>, StoreError> {
    let mut new = FxHashSet::default();
    new.reserve(sends.len());
    chunked(sends, |size, chunk| {
        let mut stmt = tx.prepare_cached(&sql.remember[size])?;
        for (i, &(sender, send_id, message_id, at_ms)) in chunk.iter().enumerate() {
            let at = 4 * i;
            stmt.raw_bind_parameter(at + 1, sender)?;
            stmt.raw_bind_parameter(at + 2, to_sql(send_id))?;
            stmt.raw_bind_parameter(at + 3, to_sql(message_id))?;
            stmt.raw_bind_parameter(at + 4, to_sql(at_ms))?;
        }
        if stmt.raw_execute()? == chunk.len() {
            new.extend(chunk.iter().map(|&(_, _, message_id, _)| message_id));
            return Ok(());
        }
        let mut holder = tx.prepare_cached(
            "SELECT message_id FROM sent WHERE sender = ?1 AND client_msg_id = ?2",
        )?;
        for &(sender, send_id, message_id, _) in chunk {
            let stored: i64 = holder.query_row((sender, to_sql(send_id)), |row| row.get(0))?;
            if from_sql(stored) == message_id {
                new.insert(message_id);
            }
        }
        Ok(())
    })?;
    Ok(new)
}

fn insert(
    tx: &Transaction<'_>,
    sql: &Sql,
    entries: &[&Entry],
    usage: &mut UsageDelta,
) -> Result<(), StoreError> {
    chunked(entries, |size, chunk| {
        let mut stmt = tx.prepare_cached(&sql.insert[size])?;
        for (i, e) in chunk.iter().enumerate() {
            let at = 10 * i;
            stmt.raw_bind_parameter(at + 1, to_sql(e.id))?;
            stmt.raw_bind_parameter(at + 2, e.mailbox.as_str())?;
            stmt.raw_bind_parameter(at + 3, kind_to_sql(e.kind))?;
            stmt.raw_bind_parameter(at + 4, e.peer.as_str())?;
            stmt.raw_bind_parameter(at + 5, to_sql(e.send_id))?;
            stmt.raw_bind_parameter(at + 6, to_sql(e.message_id))?;
            stmt.raw_bind_parameter(at + 7, to_sql(e.sent_at_ms))?;
            stmt.raw_bind_parameter(at + 8, to_sql(e.expires_at_ms))?;
            stmt.raw_bind_parameter(at + 9, receipts_to_sql(e.receipts))?;
            stmt.raw_bind_parameter(at + 10, &e.body[..])?;
            change(usage, &e.mailbox, 1, e.body.len() as i64);
        }
        stmt.raw_execute()?;
        Ok(())
    })
}

fn delete(
    tx: &Transaction<'_>,
    sql: &Sql,
    ids: &[u64],
    usage: &mut UsageDelta,
) -> Result<(), StoreError> {
    chunked(ids, |size, chunk| {
        let mut stmt = tx.prepare_cached(&sql.delete[size])?;
        for (i, &id) in chunk.iter().enumerate() {
            stmt.raw_bind_parameter(i + 1, to_sql(id))?;
        }
        let mut rows = stmt.raw_query();
        while let Some(row) = rows.next()? {
            let mailbox = row.get_ref(0)?.as_str().map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
            })?;
            let bytes: i64 = row.get(1)?;
            change(usage, mailbox, -1, -bytes);
        }
        Ok(())
    })
}

fn change(usage: &mut UsageDelta, mailbox: &str, entries: i64, bytes: i64) {
    let u = match usage.get_mut(mailbox) {
        Some(u) => u,
        None => usage.entry(mailbox.to_owned()).or_default(),
    };
    u.0 += entries;
    u.1 += bytes;
}

/// Adds the batch's changes to each mailbox's row; a mailbox that lost entries and is now empty
/// loses its row.
fn write_usage(tx: &Transaction<'_>, usage: UsageDelta) -> Result<(), StoreError> {
    let mut add = tx.prepare_cached(
        "INSERT INTO mailboxes (mailbox, entries, bytes) VALUES (?1, ?2, ?3)
         ON CONFLICT (mailbox) DO UPDATE
         SET entries = entries + excluded.entries, bytes = bytes + excluded.bytes",
    )?;
    let mut drop_empty =
        tx.prepare_cached("DELETE FROM mailboxes WHERE mailbox = ?1 AND entries <= 0")?;
    for (mailbox, (entries, bytes)) in usage {
        if entries == 0 && bytes == 0 {
            continue;
        }
        add.execute((&mailbox, entries, bytes))?;
        if entries < 0 {
            drop_empty.execute([&mailbox])?;
        }
    }
    Ok(())
}
