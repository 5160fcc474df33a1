//! The embedded default: one SQLite database file in the data directory.
//!
//! WAL journal; with `durability = "fsync"` every commit is fsynced (`synchronous=FULL`) and survives
//! power loss, with `"os"` it is handed to the OS (`synchronous=NORMAL`) and survives a broker crash.
//! Every [`Batch`] is one `IMMEDIATE` transaction, hence at most one fsync of the WAL, written in a
//! handful of multi-row statements whatever its size (`commit.rs`); the tables and how an older file
//! is migrated are in `schema.rs`.
//!
//! Besides the entries the file holds per-mailbox usage (so start-up costs one row per mailbox,
//! never a scan of the entries) and the remembered sends that make a resend idempotent.
//! SQLite integers are signed; ids and timestamps are stored as the same 64 bits reinterpreted, so
//! every `u64` round-trips exactly and the order of ids below 2^63 (all of them in practice) holds.

mod commit;
mod damage;
mod guard;
mod schema;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use switchboard_proto::Receipts;

use crate::store::entry::{receipts_code, receipts_from_code};

use self::commit::Sql;
use super::{
    Batch, CommitOutcome, DataDirLock, Durability, Entry, EntryKind, ExpiredEntry, MailboxStore,
    MailboxUsage, Maintenance, MaintenanceReport, StoreError,
};

/// The database file's name inside the data directory.
pub(crate) const DB_FILE: &str = "switchboard.db";

/// Free pages handed back to the file system per maintenance run, to keep each run short.
const VACUUM_PAGES_PER_RUN: u64 = 4_096;

/// Mailboxes in a SQLite database.
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    /// The write path's statement texts.
    sql: Sql,
    /// Held while the store is open: a second broker on the same directory is refused. Taken
    /// out only when a migration hands it to the log store.
    lock: Option<DataDirLock>,
    durability: Durability,
    /// The data directory's record of this file's id and high-water mark (`guard.rs`); set once
    /// the open has checked it.
    identity: Option<crate::store::identity::Identity>,
    /// The highest id committed in an append or a remembered send (the `meta` row `written_id`,
    /// `guard.rs`): the high-water mark the identity check compares.
    written_id: u64,
    /// Entries on damaged pages that could not be deleted and were set aside in place
    /// (`damage.rs`): no read returns them.
    set_aside: rustc_hash::FxHashSet<u64>,
    /// The lock file and the database file as they were at open: a commit into a file removed or
    /// replaced since is refused (`store/watch.rs`).
    watch: Option<crate::store::watch::Watch>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) `data_dir/switchboard.db`. Blocks on disk: call it off the actor
    /// threads. SQLite replays the WAL on open, so a file left by a crash opens with every committed
    /// batch and nothing of a batch that was not.
    pub fn open(data_dir: &Path, durability: Durability) -> Result<Self, StoreError> {
        Self::open_with(data_dir, durability, false)
    }

    /// [`SqliteStore::open`], accepting (`accept_loss`) a file that was emptied, replaced or lost
    /// its newest commits instead of refusing it; the loss is logged as an error.
    pub fn open_with(
        data_dir: &Path,
        durability: Durability,
        accept_loss: bool,
    ) -> Result<Self, StoreError> {
        let lock = DataDirLock::acquire(data_dir)?;
        let path = data_dir.join(DB_FILE);
        let new = std::fs::metadata(&path).map_or(true, |m| m.len() == 0);
        let conn = Connection::open(&path)?;
        if new {
            // Must precede the first table of a new file. Not on an existing one: there it changes
            // nothing but still opens a write transaction, which a start on a full disk, after a
            // crash during a checkpoint, cannot have.
            conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL")?;
        }
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Incompatible(format!(
                "{}: SQLite refused WAL mode (got {mode})",
                path.display()
            )));
        }
        let synchronous = match durability {
            Durability::Fsync => "FULL",
            Durability::Os => "NORMAL",
        };
        conn.execute_batch(&format!(
            "PRAGMA synchronous = {synchronous};
             PRAGMA busy_timeout = 5000;
             PRAGMA journal_size_limit = 67108864;
             PRAGMA cache_size = -65536;
             PRAGMA temp_store = MEMORY;"
        ))?;
        conn.set_prepared_statement_cache_capacity(Sql::statements());
        let mut store = Self {
            conn,
            path,
            sql: Sql::new(),
            lock: Some(lock),
            durability,
            identity: None,
            written_id: 0,
            set_aside: Default::default(),
            watch: None,
        };
        schema::migrate(&mut store.conn, &store.path)?;
        store.load_set_aside()?;
        store.check_identity(data_dir, accept_loss)?;
        tracing::info!(path = %store.path.display(), ?durability, "opened SQLite store");
        Ok(store)
    }
}

/// Stores a `u64` in SQLite's signed 64-bit integer, bit for bit.
fn to_sql(value: u64) -> i64 {
    value as i64
}

/// Reads back what [`to_sql`] stored.
fn from_sql(value: i64) -> u64 {
    value as u64
}

/// The kind's number, which the PostgreSQL engine stores too (`store/postgres/row.rs`).
pub(in crate::store) fn kind_to_sql(kind: EntryKind) -> i64 {
    i64::from(kind.code())
}

pub(in crate::store) fn kind_from_sql(id: u64, kind: i64) -> Result<EntryKind, StoreError> {
    u8::try_from(kind)
        .ok()
        .and_then(EntryKind::from_code)
        .ok_or_else(|| StoreError::Corrupt {
            id,
            what: format!("unknown entry kind {kind}"),
        })
}

/// The `receipts` column: which receipts a message's sender asked for ([`receipts_code`]).
pub(in crate::store) fn receipts_to_sql(receipts: Receipts) -> i64 {
    i64::from(receipts_code(receipts))
}

pub(in crate::store) fn receipts_from_sql(id: u64, value: i64) -> Result<Receipts, StoreError> {
    u8::try_from(value)
        .ok()
        .and_then(receipts_from_code)
        .ok_or_else(|| StoreError::Corrupt {
            id,
            what: format!("unknown receipt choice {value}"),
        })
}

/// The columns every entry query selects, in the order [`RawEntry::read`] expects.
const ENTRY_COLUMNS: &str =
    "id, mailbox, kind, peer, client_msg_id, message_id, sent_at_ms, expires_at_ms, receipts";

/// An entry row before its kind is checked (row closures can only fail with SQLite errors).
struct RawEntry {
    id: i64,
    mailbox: String,
    kind: i64,
    peer: String,
    send_id: i64,
    message_id: i64,
    sent_at_ms: i64,
    expires_at_ms: i64,
    receipts: i64,
    body: Vec<u8>,
}

impl RawEntry {
    /// Reads [`ENTRY_COLUMNS`], plus the body if it was selected as the next column.
    fn read(row: &Row<'_>, with_body: bool) -> rusqlite::Result<Self> {
        let mut raw = Self::read_head(row)?;
        raw.expires_at_ms = row.get(7)?;
        raw.receipts = row.get(8)?;
        if with_body {
            raw.body = row.get(9)?;
        }
        Ok(raw)
    }

    /// Reads the first seven of [`ENTRY_COLUMNS`], those stored before the body; the rest are 0
    /// (no expiry, all receipts) and the body empty.
    fn read_head(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            mailbox: row.get(1)?,
            kind: row.get(2)?,
            peer: row.get(3)?,
            send_id: row.get(4)?,
            message_id: row.get(5)?,
            sent_at_ms: row.get(6)?,
            expires_at_ms: 0,
            receipts: 0,
            body: Vec::new(),
        })
    }

    fn into_entry(self) -> Result<Entry, StoreError> {
        let id = from_sql(self.id);
        Ok(Entry {
            id,
            mailbox: self.mailbox,
            kind: kind_from_sql(id, self.kind)?,
            peer: self.peer,
            send_id: from_sql(self.send_id),
            message_id: from_sql(self.message_id),
            sent_at_ms: from_sql(self.sent_at_ms),
            expires_at_ms: from_sql(self.expires_at_ms),
            receipts: receipts_from_sql(id, self.receipts)?,
            body: Bytes::from(self.body),
        })
    }
}

impl SqliteStore {
    /// Up to `limit` entries of `mailbox` after `after`, bodies included.
    fn fetch_page(
        &mut self,
        mailbox: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {ENTRY_COLUMNS}, body FROM entries
             WHERE mailbox = ?1 AND id > ?2 ORDER BY id LIMIT ?3"
        ))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![mailbox, to_sql(after), limit], |row| {
            RawEntry::read(row, true)
        })?;
        let page = rows
            .map(|row| row?.into_entry())
            .collect::<Result<_, _>>()?;
        drop(stmt);
        Ok(self.without_set_aside(page))
    }
}

impl MailboxStore for SqliteStore {
    fn commit(&mut self, batch: &Batch) -> Result<CommitOutcome, StoreError> {
        self.usable()?;
        let outcome = match commit::commit(&mut self.conn, &self.sql, batch) {
            Err(error) if error.is_damage() => self.commit_around_damage(batch, error),
            done => done,
        }?;
        // Committed, and with `synchronous = FULL` the WAL is fsynced: the mark may follow.
        self.written_id = self.written_id.max(batch.highest_written_id());
        if let Some(identity) = self.identity.as_mut() {
            identity.committed(self.written_id);
        }
        Ok(outcome)
    }

    fn fetch(&mut self, mailbox: &str, after: u64, limit: usize) -> Result<Vec<Entry>, StoreError> {
        match self.fetch_page(mailbox, after, limit) {
            Err(error) if error.is_damage() => {
                self.fetch_around_damage(mailbox, after, limit, error)
            }
            page => page,
        }
    }

    fn usage(&mut self) -> Result<Vec<MailboxUsage>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT mailbox, entries, bytes FROM mailboxes WHERE entries > 0")?;
        let rows = stmt.query_map([], |row| {
            Ok(MailboxUsage {
                mailbox: row.get(0)?,
                entries: row.get::<_, i64>(1)?.max(0) as u64,
                bytes: row.get::<_, i64>(2)?.max(0) as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn expired(&mut self, now_ms: u64, limit: usize) -> Result<Vec<ExpiredEntry>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {ENTRY_COLUMNS}, length(body) FROM entries
             WHERE expires_at_ms > 0 AND expires_at_ms <= ?1 ORDER BY expires_at_ms LIMIT ?2"
        ))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![to_sql(now_ms), limit], |row| {
            Ok((RawEntry::read(row, false)?, row.get::<_, i64>(9)?))
        })?;
        let expired: Vec<ExpiredEntry> = rows
            .map(|row| {
                let (raw, body_len) = row?;
                Ok(ExpiredEntry {
                    entry: raw.into_entry()?,
                    body_len: body_len.max(0) as u64,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        drop(stmt);
        // Set aside with an `undeliverable` receipt already: never expired as well.
        Ok(expired
            .into_iter()
            .filter(|e| !self.set_aside.contains(&e.entry.id))
            .collect())
    }

    fn sent(&mut self, sender: &str, send_id: u64) -> Result<Option<u64>, StoreError> {
        let id: Option<i64> = self
            .conn
            .prepare_cached("SELECT message_id FROM sent WHERE sender = ?1 AND client_msg_id = ?2")?
            .query_row(params![sender, to_sql(send_id)], |row| row.get(0))
            .optional()?;
        Ok(id.map(from_sql))
    }

    fn maintain(&mut self, what: &Maintenance) -> Result<MaintenanceReport, StoreError> {
        self.usable()?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut forgotten = tx
            .prepare_cached("DELETE FROM sent WHERE at_ms < ?1")?
            .execute([to_sql(what.forget_sent_before_ms)])? as u64;
        let remembered: i64 = tx.query_row("SELECT count(*) FROM sent", [], |row| row.get(0))?;
        let excess = (remembered.max(0) as u64).saturating_sub(what.remember_at_most);
        if excess > 0 {
            // Exactly the oldest `excess`, in acceptance order: a batch's sends share one time,
            // their ids tell them apart.
            forgotten += tx
                .prepare_cached(
                    "DELETE FROM sent WHERE (sender, client_msg_id) IN
                     (SELECT sender, client_msg_id FROM sent ORDER BY at_ms, message_id LIMIT ?1)",
                )?
                .execute([to_sql(excess)])? as u64;
        }
        tx.commit()?;
        let free: i64 = self
            .conn
            .query_row("PRAGMA freelist_count", [], |row| row.get(0))?;
        let reclaimed = (free.max(0) as u64).min(VACUUM_PAGES_PER_RUN);
        if reclaimed > 0 {
            self.conn
                .execute_batch(&format!("PRAGMA incremental_vacuum({reclaimed})"))?;
        }
        self.record_mark_or_warn();
        Ok(MaintenanceReport {
            forgotten,
            reclaimed_pages: reclaimed,
        })
    }

    fn last_id(&mut self) -> Result<u64, StoreError> {
        // The readiness check asks this: a store that cannot commit is not ready.
        self.usable()?;
        let mark: Option<i64> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'last_id'", [], |row| {
                row.get(0)
            })
            .optional()?;
        let max: Option<i64> = self
            .conn
            .query_row("SELECT max(id) FROM entries", [], |row| row.get(0))?;
        Ok(from_sql(mark.unwrap_or(0)).max(from_sql(max.unwrap_or(0))))
    }

    fn oldest_sent_at_ms(&mut self) -> Result<Option<u64>, StoreError> {
        // The lowest id is the entry accepted first: one step down the primary key, a few more
        // past entries set aside in place (`damage.rs`).
        let skip = i64::try_from(self.set_aside.len()).unwrap_or(i64::MAX);
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, sent_at_ms FROM entries ORDER BY id LIMIT ?1 + 1")?;
        let rows = stmt.query_map([skip], |row| {
            Ok((from_sql(row.get(0)?), from_sql(row.get(1)?)))
        })?;
        for row in rows {
            let (id, sent_at_ms): (u64, u64) = row?;
            if !self.set_aside.contains(&id) {
                return Ok(Some(sent_at_ms));
            }
        }
        Ok(None)
    }
}

mod dump;
pub(crate) use dump::Dump;
pub(crate) use guard::ENGINE;

#[cfg(test)]
pub(crate) mod tests;
