//! The embedded default: one SQLite database file in the data directory.
//!
//! WAL journal with `synchronous=FULL`, so a committed batch survives power loss, not only a process
//! crash. Every [`Batch`] is one `IMMEDIATE` transaction, hence one fsync of the WAL. SQLite integers
//! are signed; ids and timestamps are stored as the same 64 bits reinterpreted, so every `u64`
//! round-trips exactly and the order of ids below 2^63 (all of them in practice) is preserved.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::{Batch, Entry, EntryKind, MailboxStore, StoreError};

/// The database file's name inside the data directory.
pub const DB_FILE: &str = "switchboard.db";

/// The schema this code writes; a file with a newer one is refused rather than misread.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS entries (
    id            INTEGER PRIMARY KEY,
    mailbox       TEXT    NOT NULL,
    kind          INTEGER NOT NULL,
    peer          TEXT    NOT NULL,
    client_msg_id INTEGER NOT NULL,
    message_id    INTEGER NOT NULL,
    sent_at_ms    INTEGER NOT NULL,
    body          BLOB    NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_by_mailbox ON entries (mailbox, id);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
";

/// Mailboxes in a SQLite database.
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
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
    /// threads.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|cause| StoreError::DataDir {
            path: data_dir.to_path_buf(),
            cause,
        })?;
        let path = data_dir.join(DB_FILE);
        let conn = Connection::open(&path)?;
        // WAL must be set outside a transaction; it persists in the file.
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %path.display(), mode, "SQLite refused WAL mode");
        }
        conn.execute_batch(
            "PRAGMA synchronous = FULL;
             PRAGMA auto_vacuum = INCREMENTAL;
             PRAGMA busy_timeout = 5000;",
        )?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::Corrupt {
                id: 0,
                what: format!(
                    "{} has schema version {version}; this broker understands up to {SCHEMA_VERSION}",
                    path.display()
                ),
            });
        }
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))?;
        tracing::info!(path = %path.display(), "opened SQLite store");
        Ok(Self { conn, path })
    }

    /// Where the database file lives.
    pub fn path(&self) -> &Path {
        &self.path
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

fn kind_to_sql(kind: EntryKind) -> i64 {
    match kind {
        EntryKind::Message => 0,
        EntryKind::Receipt => 1,
    }
}

impl MailboxStore for SqliteStore {
    fn commit(&mut self, batch: &Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO entries (id, mailbox, kind, peer, client_msg_id, message_id, sent_at_ms, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            let mut high = 0u64;
            for e in &batch.appends {
                insert.execute(params![
                    to_sql(e.id),
                    e.mailbox,
                    kind_to_sql(e.kind),
                    e.peer,
                    to_sql(e.client_msg_id),
                    to_sql(e.message_id),
                    to_sql(e.sent_at_ms),
                    &e.body[..],
                ])?;
                high = high.max(e.id);
            }
            let mut delete = tx.prepare_cached("DELETE FROM entries WHERE id = ?1")?;
            for id in &batch.deletes {
                delete.execute([to_sql(*id)])?;
            }
            if high > 0 {
                // The high-water mark outlives the entries, so ids are never reused after deletes.
                tx.prepare_cached(
                    "INSERT INTO meta (key, value) VALUES ('last_id', ?1)
                     ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)",
                )?
                .execute([to_sql(high)])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn fetch(&mut self, mailbox: &str, after: u64, limit: usize) -> Result<Vec<Entry>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, kind, peer, client_msg_id, message_id, sent_at_ms, body
             FROM entries WHERE mailbox = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![mailbox, to_sql(after), limit], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, i64>(3)?,
                row.get::<_, i64>(4)?,
                row.get::<_, i64>(5)?,
                row.get::<_, Vec<u8>>(6)?,
            ))
        })?;
        let mut entries = Vec::new();
        for row in rows {
            let (id, kind, peer, client_msg_id, message_id, sent_at_ms, body) = row?;
            let id = from_sql(id);
            let kind = match kind {
                0 => EntryKind::Message,
                1 => EntryKind::Receipt,
                other => {
                    return Err(StoreError::Corrupt {
                        id,
                        what: format!("unknown entry kind {other}"),
                    })
                }
            };
            entries.push(Entry {
                id,
                mailbox: mailbox.to_owned(),
                kind,
                peer,
                client_msg_id: from_sql(client_msg_id),
                message_id: from_sql(message_id),
                sent_at_ms: from_sql(sent_at_ms),
                body: Bytes::from(body),
            });
        }
        Ok(entries)
    }

    fn count(&mut self, mailbox: &str) -> Result<u64, StoreError> {
        let count: i64 = self
            .conn
            .prepare_cached("SELECT count(*) FROM entries WHERE mailbox = ?1")?
            .query_row([mailbox], |row| row.get(0))?;
        Ok(from_sql(count))
    }

    fn last_id(&mut self) -> Result<u64, StoreError> {
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
}
