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
//! transaction of its own, its mailbox's counts lowered by it and its stored length (which the
//! row's header holds, so `length(body)` reads no overflow page). If even that delete fails, the
//! entry stays in the file but is **set aside in place**: its id goes into the table `set_aside`
//! (made the first time one is needed, so a healthy file never has it) with the same counts
//! lowered, and no read returns it again, after a restart too, so its sender, who had its
//! `undeliverable` receipt, never hears of it twice.

use rusqlite::{params, OptionalExtension};

use super::{commit, from_sql, to_sql, RawEntry, SqliteStore};
use crate::store::error::sqlite_damage;
use crate::store::{Batch, CommitOutcome, Damaged, Entry, StoreError};

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
            if self.set_aside.contains(&from_sql(raw.id)) {
                continue;
            }
            let read = rest
                .query_row([raw.id], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
                .optional();
            match read {
                Ok(Some((body, expires_at_ms, receipts))) => {
                    (raw.body, raw.expires_at_ms, raw.receipts) = (body, expires_at_ms, receipts);
                }
                Ok(None) => continue,
                Err(cause) if sqlite_damage(&cause) => {
                    damaged.push(Damaged {
                        id: from_sql(raw.id),
                        body_len: stored_len(&self.conn, raw.id),
                    });
                }
                Err(cause) => return Err(cause.into()),
            }
            page.push(raw.into_entry()?);
        }
        StoreError::unless_damaged(mailbox, page, damaged, error.to_string())
    }

    /// Reads which entries were set aside in place (see the module documentation), at open.
    pub(super) fn load_set_aside(&mut self) -> Result<(), StoreError> {
        let exists: Option<i64> = self
            .conn
            .query_row(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'set_aside'",
                [],
                |row| row.get(0),
            )
            .optional()?;
        if exists.is_none() {
            return Ok(());
        }
        let mut stmt = self.conn.prepare("SELECT id FROM set_aside")?;
        let ids = stmt.query_map([], |row| row.get::<_, i64>(0))?;
        for id in ids {
            self.set_aside.insert(from_sql(id?));
        }
        if !self.set_aside.is_empty() {
            tracing::warn!(
                entries = self.set_aside.len(),
                "the SQLite file keeps entries on damaged pages that were set aside; they are never read again"
            );
        }
        Ok(())
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
            match self.delete_damaged(id, false) {
                Ok(()) => tracing::warn!(
                    entry = id,
                    "deleted an entry on a damaged page of the SQLite file"
                ),
                Err(cause) => match self.delete_damaged(id, true) {
                    Ok(()) => tracing::error!(
                        entry = id, %cause, "an entry on a damaged page of the SQLite file cannot be deleted; it stays in the file, set aside: never read again"
                    ),
                    Err(error) => tracing::error!(
                        entry = id, %cause, %error, "an entry on a damaged page of the SQLite file can neither be deleted nor set aside; it is skipped until the broker restarts"
                    ),
                },
            }
        }
        Ok(outcome)
    }

    /// Deletes entry `id` without reading its body, or with `in_place` records it in `set_aside`
    /// instead; either way counts it and its stored length out of its mailbox. After a crash
    /// before this commits the entry is still there, and read again.
    pub(super) fn delete_damaged(&mut self, id: u64, in_place: bool) -> Result<(), StoreError> {
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
        if self.set_aside.contains(&id) {
            return Ok(());
        }
        let len = stored_len(&tx, to_sql(id));
        if in_place {
            tx.execute_batch("CREATE TABLE IF NOT EXISTS set_aside (id INTEGER PRIMARY KEY)")?;
            tx.execute("INSERT OR IGNORE INTO set_aside VALUES (?1)", [to_sql(id)])?;
        } else {
            tx.execute("DELETE FROM entries WHERE id = ?1", [to_sql(id)])?;
        }
        tx.execute(
            "UPDATE mailboxes SET entries = entries - 1, bytes = max(bytes - ?2, 0)
             WHERE mailbox = ?1",
            params![&mailbox, to_sql(len)],
        )?;
        tx.execute(
            "DELETE FROM mailboxes WHERE mailbox = ?1 AND entries <= 0",
            [&mailbox],
        )?;
        tx.commit()?;
        if in_place {
            self.set_aside.insert(id);
        }
        Ok(())
    }

    /// Drops the entries set aside in place from a page that read whole (a damaged body read
    /// back after all).
    pub(super) fn without_set_aside(&self, mut page: Vec<Entry>) -> Vec<Entry> {
        if !self.set_aside.is_empty() {
            page.retain(|e| !self.set_aside.contains(&e.id));
        }
        page
    }
}

/// The stored length of entry `id`'s body, from the row's header (no overflow page read); 0 if
/// not even that can be read.
fn stored_len(conn: &rusqlite::Connection, id: i64) -> u64 {
    conn.query_row(
        "SELECT length(body) FROM entries WHERE id = ?1",
        [id],
        |row| row.get::<_, i64>(0),
    )
    .map_or(0, |len| len.max(0) as u64)
}
