//! Reading a whole SQLite store out, for the log engine's migration of an existing data directory.

use super::{from_sql, RawEntry, SqliteStore, ENTRY_COLUMNS};
use crate::store::{DataDirLock, Entry, MailboxStore, Remembered, StoreError};

/// Everything a SQLite store holds.
#[derive(Debug, Default)]
pub(crate) struct Dump {
    /// Every entry, in id order.
    pub entries: Vec<Entry>,
    pub sent: Vec<Remembered>,
    pub last_id: u64,
    /// The highest id written (`guard.rs`), at most `last_id`.
    pub written_id: u64,
}

impl SqliteStore {
    /// Reads every entry, every remembered send and the high-water mark.
    pub(crate) fn dump(&mut self) -> Result<Dump, StoreError> {
        let last_id = self.last_id()?;
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {ENTRY_COLUMNS}, body FROM entries ORDER BY id"
        ))?;
        let entries = stmt
            .query_map([], |row| RawEntry::read(row, true))?
            .map(|row| row?.into_entry())
            .collect::<Result<_, _>>()?;
        let mut stmt = self
            .conn
            .prepare("SELECT sender, client_msg_id, message_id, at_ms FROM sent ORDER BY at_ms")?;
        let sent = stmt
            .query_map([], |row| {
                Ok(Remembered {
                    sender: row.get(0)?,
                    send_id: from_sql(row.get(1)?),
                    message_id: from_sql(row.get(2)?),
                    at_ms: from_sql(row.get(3)?),
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(Dump {
            entries,
            sent,
            last_id,
            written_id: self.written_id,
        })
    }

    /// Closes the database and hands over the data directory's lock, still held.
    pub(crate) fn into_lock(mut self) -> Result<DataDirLock, StoreError> {
        let lock = self.lock.take();
        drop(self);
        lock.ok_or_else(|| StoreError::Failed("the SQLite store lost its lock".into()))
    }
}
