//! Reading and committing around a damaged page, so that one damaged entry costs only itself.
//!
//! SQLite checks no page against a checksum; a damaged page shows as `SQLITE_CORRUPT` when a read
//! or a delete walks into it. A body of more than a page lies in a chain of overflow pages, and the
//! columns stored before it (which entry it is, whose, which send) in the table's own page: when a
//! page read fails on damage, the page is read again without bodies and each body on its own, so
//! the entries whose bodies cannot be read are named and the rest of the page comes back whole. A
//! merged commit that fails on damage is tried again without the deletes that cannot be done (each
//! tried alone in a transaction that is rolled back), so acknowledgements of healthy entries, in
//! any mailbox, still commit; each of those is then deleted without reading its body, in a
//! transaction of its own, or, if even that fails, stays in the file.

use rusqlite::{params, OptionalExtension};

use super::{commit, from_sql, to_sql, RawEntry, SqliteStore};
use crate::store::error::sqlite_damage;
use crate::store::{Batch, CommitOutcome, Entry, StoreError};

/// The columns stored before `body`, which a damaged body does not hide, as
/// [`RawEntry::read_head`] reads them.
const HEAD_COLUMNS: &str = "id, mailbox, kind, peer, client_msg_id, message_id, sent_at_ms";

impl SqliteStore {
    /// A page read again after it failed with `error`, a damage error: the page with the
    /// entries whose bodies cannot be read left empty, reported as [`StoreError::DamagedEntries`];
    /// the page itself if every body reads. Fails with `error` when not even the entries' heads
    /// can be read.
    pub(super) fn fetch_around_damage(
        &mut self,
        mailbox: &str,
        after: u64,
        limit: usize,
        error: StoreError,
    ) -> Result<Vec<Entry>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let heads: Vec<RawEntry> = {
            let Ok(mut stmt) = self.conn.prepare_cached(&format!(
                "SELECT {HEAD_COLUMNS} FROM entries
                 WHERE mailbox = ?1 AND id > ?2 ORDER BY id LIMIT ?3"
            )) else {
                return Err(error);
            };
            let rows = stmt.query_map(params![mailbox, to_sql(after), limit], RawEntry::read_head);
            match rows.and_then(|rows| rows.collect()) {
                Ok(heads) => heads,
                Err(_) => return Err(error),
            }
        };
        let mut rest = self
            .conn
            .prepare_cached("SELECT body, expires_at_ms, receipts FROM entries WHERE id = ?1")?;
        let mut page = Vec::with_capacity(heads.len());
        let mut damaged = Vec::new();
        for mut raw in heads {
            let read = rest
                .query_row([raw.id], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
                .optional();
            match read {
                Ok(Some((body, expires_at_ms, receipts))) => {
                    (raw.body, raw.expires_at_ms, raw.receipts) = (body, expires_at_ms, receipts);
                }
                Ok(None) => continue,
                Err(cause) if sqlite_damage(&cause) => {
                    damaged.push(from_sql(raw.id));
                }
                Err(cause) => return Err(cause.into()),
            }
            page.push(raw.into_entry()?);
        }
        StoreError::unless_damaged(mailbox, page, damaged, error.to_string())
    }

    /// `batch` committed again after it failed with `error`, a damage error, without the deletes
    /// that cannot be done as a batch does them (counting the bytes they free); each of those is
    /// then deleted on its own, uncounted, if the damage allows. Fails with `error` if every
    /// delete can be done (the damage is elsewhere).
    pub(super) fn commit_around_damage(
        &mut self,
        batch: &Batch,
        error: StoreError,
    ) -> Result<CommitOutcome, StoreError> {
        let mut undeletable = Vec::new();
        for &id in &batch.deletes {
            let tx = self.conn.transaction()?;
            let deleted = tx
                .prepare_cached("DELETE FROM entries WHERE id = ?1 RETURNING mailbox, length(body)")
                .and_then(|mut stmt| {
                    let mut rows = stmt.query([to_sql(id)])?;
                    while rows.next()?.is_some() {}
                    Ok(())
                });
            drop(tx); // Rolled back: this only asks whether the delete can be done.
            match deleted {
                Err(cause) if sqlite_damage(&cause) => undeletable.push(id),
                _ => {}
            }
        }
        if undeletable.is_empty() {
            return Err(error);
        }
        let mut healthy = batch.clone();
        healthy.deletes.retain(|id| !undeletable.contains(id));
        let outcome = commit::commit(&mut self.conn, &self.sql, &healthy)?;
        for id in undeletable {
            match self.delete_damaged(id) {
                Ok(()) => tracing::warn!(
                    entry = id, "deleted an entry on a damaged page of the SQLite file; its mailbox's byte count stays high until it empties"
                ),
                Err(cause) => tracing::error!(
                    entry = id, %cause, "an entry on a damaged page of the SQLite file cannot be deleted; it stays"
                ),
            }
        }
        Ok(outcome)
    }

    /// Deletes entry `id` without reading its body, counting it out of its mailbox's entries (its
    /// bytes are unknown). After a crash before this commits the entry is still there.
    fn delete_damaged(&mut self, id: u64) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        let mailbox: Option<String> = tx
            .query_row(
                "SELECT mailbox FROM entries WHERE id = ?1",
                [to_sql(id)],
                |row| row.get(0),
            )
            .optional()?;
        let Some(mailbox) = mailbox else {
            return Ok(());
        };
        tx.execute("DELETE FROM entries WHERE id = ?1", [to_sql(id)])?;
        tx.execute(
            "UPDATE mailboxes SET entries = entries - 1 WHERE mailbox = ?1",
            [&mailbox],
        )?;
        tx.execute(
            "DELETE FROM mailboxes WHERE mailbox = ?1 AND entries <= 0",
            [&mailbox],
        )?;
        tx.commit()?;
        Ok(())
    }
}
