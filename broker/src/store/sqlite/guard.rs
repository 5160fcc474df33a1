//! SQLite's side of a store that checks itself (`store/identity.rs`): its store id in the `meta`
//! table of the database file, compared at open with the data directory's `IDENTITY.sqlite`, and
//! the high-water mark recorded after a maintenance pass and at a clean close, and after every
//! commit in `MARK.sqlite` with `durability = "fsync"` (`store/mark.rs`).
//!
//! The id lives in the database file, so a file emptied (truncated to 0), deleted, or replaced by
//! another store's takes its id with it; the mark catches a file restored from an older copy or one
//! whose WAL was lost (after a `kill -9` too, with `durability = "fsync"`). The mark is the `meta`
//! row `written_id`, which every commit raises to the highest id it writes in the same transaction
//! (`commit.rs`); a file made before the row counts from its last id until its first commit.

use std::path::Path;

use rusqlite::OptionalExtension;

use super::{from_sql, to_sql, SqliteStore};
use crate::store::identity::{Found, Identity};
use crate::store::watch::Watch;
use crate::store::{Durability, StoreError};

/// The engine's name in the identity file's name and in messages.
pub(crate) const ENGINE: &str = "sqlite";

impl SqliteStore {
    /// Compares the opened database with `data_dir`'s identity file; refuses one that is not the
    /// one recorded unless `accept_loss`.
    pub(super) fn check_identity(
        &mut self,
        data_dir: &Path,
        accept_loss: bool,
    ) -> Result<(), StoreError> {
        let store_id: Option<i64> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'store_id'", [], |row| {
                row.get(0)
            })
            .optional()?;
        self.written_id = self.read_written_id()?;
        let found = Found {
            store_id: store_id.map(from_sql),
            high_water: self.written_id,
        };
        let checked = Identity::check(data_dir, ENGINE, found, accept_loss)?;
        if let Some(mark) = checked.raise_last_id_to {
            // Ids the lost commits used, or reserved, are never handed out again.
            self.conn.execute(
                "INSERT INTO meta (key, value) VALUES ('last_id', ?1), ('written_id', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)",
                [to_sql(mark)],
            )?;
            self.written_id = self.written_id.max(mark);
        }
        // On a full disk the store must still start and deliver what it holds: the id and the
        // mark are written when there is room (the mark at the next pass that finds some).
        let written = match checked.write_store_id {
            Some(id) => self
                .conn
                .execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('store_id', ?1)",
                    [to_sql(id)],
                )
                .map(drop),
            None => Ok(()),
        };
        self.identity = checked.kept(ENGINE, written, self.durability);
        self.record_mark_or_warn();
        let lock = data_dir.join(crate::store::lock::LOCK_FILE);
        self.watch = Some(Watch::new(&[&lock, &self.path])?);
        Ok(())
    }

    /// [`SqliteStore::record_mark`], a failure (no space, say) only logged: the next pass retries.
    pub(super) fn record_mark_or_warn(&mut self) {
        if let Err(error) = self.record_mark() {
            tracing::warn!(%error, "cannot record the SQLite store's high-water mark; retrying at the next pass");
        }
    }

    /// Fails once the data directory or the database file is gone or replaced; every commit is
    /// refused from then on.
    pub(super) fn usable(&mut self) -> Result<(), StoreError> {
        match self.watch.as_mut() {
            Some(watch) => watch.check(),
            None => Ok(()),
        }
    }

    /// The highest id the file says it wrote: the row `written_id`, or for a file made before
    /// it, its last id (which covers every id it wrote, and a reservation). Either way at least
    /// its highest entry id.
    fn read_written_id(&mut self) -> Result<u64, StoreError> {
        let (written, last, highest): (Option<i64>, Option<i64>, Option<i64>) =
            self.conn.query_row(
                "SELECT (SELECT value FROM meta WHERE key = 'written_id'),
                        (SELECT value FROM meta WHERE key = 'last_id'),
                        (SELECT max(id) FROM entries)",
                [],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )?;
        let counted = written.or(last).map_or(0, from_sql);
        Ok(counted.max(highest.map_or(0, from_sql)))
    }

    /// Records the highest id written as the high-water mark if it moved, once it is on disk:
    /// with `durability = "os"` only a checkpoint (which fsyncs the WAL first) makes it so.
    pub(super) fn record_mark(&mut self) -> Result<(), StoreError> {
        self.usable()?; // Fails, and records nothing, once the directory is gone.
        let high_water = self.written_id;
        if !self.identity.as_ref().is_some_and(|i| i.behind(high_water)) {
            return Ok(());
        }
        if self.durability == Durability::Os {
            let (busy, log, done): (i64, i64, i64) =
                self.conn
                    .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
                        Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                    })?;
            if busy != 0 || done < log {
                return Ok(()); // Not all on disk yet: the next pass records it.
            }
        }
        match self.identity.as_mut() {
            Some(identity) => identity.record(high_water),
            None => Ok(()),
        }
    }
}

impl Drop for SqliteStore {
    /// A clean close records the high-water mark.
    fn drop(&mut self) {
        self.record_mark_or_warn();
    }
}
