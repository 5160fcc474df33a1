//! A prototype engine on fjall, an LSM-tree: is a log-structured key-value store a better home for
//! mailboxes than SQLite's B-tree? (Measured in ARCHITECTURE.md, "Choosing the store engine".)
//!
//! One fjall database in `data_dir/fjall` with a keyspace per kind of record (`codec.rs` has the
//! layout): `entries` by (mailbox, id), `locators` by id (so a delete by id needs no scan), `expiry`
//! by (time, id), `sent` by (sender, send id) and `sent_by_time`, per-mailbox `usage`, and `meta`
//! (the id high-water mark and the number of remembered sends). Every [`Batch`] is one fjall write
//! batch, hence one journal write; with `durability = "fsync"` the journal is fsynced
//! (`PersistMode::SyncAll`) before the commit returns, with `"os"` only handed to the OS.
//!
//! Only the store thread writes, so a commit reads the committed state plus its own batch (kept in
//! maps beside the write batch) without a transaction. An entry appended and deleted in the same
//! batch is never written: fjall gives every item of a batch the same sequence number, so an insert
//! and a tombstone of one key in one batch would not be ordered.

mod codec;

use std::collections::{HashMap, HashSet};
use std::path::Path;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, OwnedWriteBatch, PersistMode};

use self::codec::{
    entry_value, locator, named_key, pair_key, pair_value, read_entry, read_locator, read_pair,
    time_key, u64_at,
};
use super::{
    Batch, CommitOutcome, DataDirLock, Duplicate, Durability, Entry, EntryKind, ExpiredEntry,
    MailboxStore, MailboxUsage, Maintenance, MaintenanceReport, StoreError,
};

/// The database's directory inside the data directory.
pub(super) const FJALL_DIR: &str = "fjall";

const LAST_ID: &[u8] = b"last_id";
const SENT_COUNT: &[u8] = b"sent_count";

/// fjall's errors as the store's: every one of them means the engine cannot go on.
fn failed(error: fjall::Error) -> StoreError {
    StoreError::Failed(format!("fjall: {error}"))
}

/// Mailboxes in a fjall database.
pub struct FjallStore {
    db: Database,
    entries: Keyspace,
    locators: Keyspace,
    expiry: Keyspace,
    sent: Keyspace,
    sent_by_time: Keyspace,
    usage: Keyspace,
    meta: Keyspace,
    persist: PersistMode,
    /// `meta`'s high-water mark, kept here so a commit need not read it.
    last_id: u64,
    /// `meta`'s number of remembered sends, for `maintain`'s cap.
    sent_count: u64,
    /// Held while the store is open: a second broker on the same directory is refused.
    _lock: DataDirLock,
}

impl std::fmt::Debug for FjallStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FjallStore")
            .field("last_id", &self.last_id)
            .finish()
    }
}

impl FjallStore {
    /// Opens (creating if needed) `data_dir/fjall`; fjall replays its journal, so a database left by
    /// a crash opens with every committed batch and nothing of one that was not.
    pub fn open(data_dir: &Path, durability: Durability) -> Result<Self, StoreError> {
        let lock = DataDirLock::acquire(data_dir)?;
        let db = Database::builder(data_dir.join(FJALL_DIR))
            .open()
            .map_err(failed)?;
        let keyspace = |name: &str| db.keyspace(name, KeyspaceCreateOptions::default);
        let mut store = Self {
            entries: keyspace("entries").map_err(failed)?,
            locators: keyspace("locators").map_err(failed)?,
            expiry: keyspace("expiry").map_err(failed)?,
            sent: keyspace("sent").map_err(failed)?,
            sent_by_time: keyspace("sent_by_time").map_err(failed)?,
            usage: keyspace("usage").map_err(failed)?,
            meta: keyspace("meta").map_err(failed)?,
            db,
            persist: match durability {
                Durability::Fsync => PersistMode::SyncAll,
                Durability::Os => PersistMode::Buffer,
            },
            last_id: 0,
            sent_count: 0,
            _lock: lock,
        };
        store.last_id = store.counter(LAST_ID)?;
        store.sent_count = store.counter(SENT_COUNT)?;
        tracing::info!(path = %data_dir.join(FJALL_DIR).display(), ?durability, "opened fjall store");
        Ok(store)
    }

    fn counter(&self, key: &[u8]) -> Result<u64, StoreError> {
        let value = self.meta.get(key).map_err(failed)?;
        Ok(value.and_then(|v| u64_at(&v, 0)).unwrap_or(0))
    }
}

/// What one commit has written so far, beside fjall's write batch (which cannot be read back).
struct Pending {
    writes: OwnedWriteBatch,
    /// Sends remembered by this batch: send key → message id.
    sends: HashMap<Vec<u8>, u64>,
    /// Per mailbox, the change in (entries, bytes).
    usage: HashMap<String, (i64, i64)>,
}

impl FjallStore {
    /// Remembers a send unless it is known already; returns the original's id if it is.
    fn remember(
        &self,
        pending: &mut Pending,
        sender: &str,
        send_id: u64,
        message_id: u64,
        at_ms: u64,
    ) -> Result<Option<u64>, StoreError> {
        let key = named_key(sender, send_id);
        if let Some(&original) = pending.sends.get(&key) {
            return Ok(Some(original));
        }
        if let Some(value) = self.sent.get(&key).map_err(failed)? {
            return Ok(read_pair(&value).map(|(original, _)| original));
        }
        let w = &mut pending.writes;
        w.insert(&self.sent, key.clone(), pair_value(message_id, at_ms));
        w.insert(&self.sent_by_time, time_key(at_ms, &key), []);
        pending.sends.insert(key, message_id);
        Ok(None)
    }

    fn put_entry(&self, pending: &mut Pending, e: &Entry) {
        let w = &mut pending.writes;
        w.insert(&self.entries, named_key(&e.mailbox, e.id), entry_value(e));
        w.insert(&self.locators, e.id.to_be_bytes(), locator(e));
        if e.expires_at_ms > 0 {
            w.insert(
                &self.expiry,
                pair_key(e.expires_at_ms, e.id),
                e.mailbox.as_bytes(),
            );
        }
        let u = pending.usage.entry(e.mailbox.clone()).or_default();
        u.0 += 1;
        u.1 += e.body.len() as i64;
    }

    fn delete_entry(&self, pending: &mut Pending, id: u64) -> Result<(), StoreError> {
        let Some(value) = self.locators.get(id.to_be_bytes()).map_err(failed)? else {
            return Ok(());
        };
        let (mailbox, body_len, expires_at_ms) = read_locator(id, &value)?;
        let w = &mut pending.writes;
        w.remove(&self.entries, named_key(&mailbox, id));
        w.remove(&self.locators, id.to_be_bytes());
        if expires_at_ms > 0 {
            w.remove(&self.expiry, pair_key(expires_at_ms, id));
        }
        let u = pending.usage.entry(mailbox).or_default();
        u.0 -= 1;
        u.1 -= body_len as i64;
        Ok(())
    }

    /// Adds the batch's usage changes to the stored counts; an emptied mailbox loses its row.
    fn write_usage(&self, pending: &mut Pending) -> Result<(), StoreError> {
        for (mailbox, (entries, bytes)) in std::mem::take(&mut pending.usage) {
            if entries == 0 && bytes == 0 {
                continue;
            }
            let stored = self.usage.get(mailbox.as_bytes()).map_err(failed)?;
            let (old_entries, old_bytes) = stored.and_then(|v| read_pair(&v)).unwrap_or((0, 0));
            let new_entries = (old_entries as i64).saturating_add(entries);
            let new_bytes = (old_bytes as i64).saturating_add(bytes).max(0) as u64;
            if new_entries <= 0 {
                pending.writes.remove(&self.usage, mailbox.into_bytes());
            } else {
                let value = pair_value(new_entries as u64, new_bytes);
                pending
                    .writes
                    .insert(&self.usage, mailbox.into_bytes(), value);
            }
        }
        Ok(())
    }
}

impl MailboxStore for FjallStore {
    fn commit(&mut self, batch: &Batch) -> Result<CommitOutcome, StoreError> {
        let mut outcome = CommitOutcome::default();
        if batch.is_empty() {
            return Ok(outcome);
        }
        let mut pending = Pending {
            writes: self.db.batch().durability(Some(self.persist)),
            sends: HashMap::new(),
            usage: HashMap::new(),
        };
        let mut high = batch.reserve_ids_through.max(self.last_id);
        for r in &batch.remembered {
            high = high.max(r.message_id);
            self.remember(&mut pending, &r.sender, r.send_id, r.message_id, r.at_ms)?;
        }
        let mut deletes: HashSet<u64> = batch.deletes.iter().copied().collect();
        for e in &batch.appends {
            high = high.max(e.id);
            if e.kind == EntryKind::Message {
                let known = self.remember(&mut pending, &e.peer, e.send_id, e.id, e.sent_at_ms)?;
                if let Some(original) = known {
                    outcome.duplicates.push(Duplicate { id: e.id, original });
                    continue;
                }
            }
            // Appended and deleted in one go: it never reaches the disk.
            if !deletes.remove(&e.id) {
                self.put_entry(&mut pending, e);
            }
        }
        for id in deletes {
            self.delete_entry(&mut pending, id)?;
        }
        self.write_usage(&mut pending)?;
        let sent_count = self.sent_count + pending.sends.len() as u64;
        if sent_count != self.sent_count {
            pending
                .writes
                .insert(&self.meta, SENT_COUNT, sent_count.to_be_bytes());
        }
        if high > self.last_id {
            pending
                .writes
                .insert(&self.meta, LAST_ID, high.to_be_bytes());
        }
        pending.writes.commit().map_err(failed)?;
        self.last_id = high;
        self.sent_count = sent_count;
        Ok(outcome)
    }

    fn fetch(&mut self, mailbox: &str, after: u64, limit: usize) -> Result<Vec<Entry>, StoreError> {
        let Some(first) = after.checked_add(1) else {
            return Ok(Vec::new());
        };
        let range = named_key(mailbox, first)..=named_key(mailbox, u64::MAX);
        let mut entries = Vec::new();
        for guard in self.entries.range(range).take(limit) {
            let (key, value) = guard.into_inner().map_err(failed)?;
            let id = u64_at(&key, key.len().saturating_sub(8)).unwrap_or(0);
            entries.push(read_entry(mailbox, id, &value, true)?.0);
        }
        Ok(entries)
    }

    fn usage(&mut self) -> Result<Vec<MailboxUsage>, StoreError> {
        let mut usage = Vec::new();
        for guard in self.usage.iter() {
            let (key, value) = guard.into_inner().map_err(failed)?;
            let (entries, bytes) = read_pair(&value).unwrap_or((0, 0));
            if entries > 0 {
                usage.push(MailboxUsage {
                    mailbox: String::from_utf8_lossy(&key).into_owned(),
                    entries,
                    bytes,
                });
            }
        }
        Ok(usage)
    }

    fn expired(&mut self, now_ms: u64, limit: usize) -> Result<Vec<ExpiredEntry>, StoreError> {
        let mut due = Vec::new();
        for guard in self
            .expiry
            .range(pair_key(1, 0)..=pair_key(now_ms, u64::MAX))
        {
            if due.len() >= limit {
                break;
            }
            let (key, mailbox) = guard.into_inner().map_err(failed)?;
            let id = u64_at(&key, 8).unwrap_or(0);
            let mailbox = String::from_utf8_lossy(&mailbox).into_owned();
            let Some(value) = self.entries.get(named_key(&mailbox, id)).map_err(failed)? else {
                continue;
            };
            let (entry, body_len) = read_entry(&mailbox, id, &value, false)?;
            due.push(ExpiredEntry { entry, body_len });
        }
        Ok(due)
    }

    fn sent(&mut self, sender: &str, send_id: u64) -> Result<Option<u64>, StoreError> {
        let value = self.sent.get(named_key(sender, send_id)).map_err(failed)?;
        Ok(value.and_then(|v| read_pair(&v)).map(|(id, _)| id))
    }

    fn maintain(&mut self, what: &Maintenance) -> Result<MaintenanceReport, StoreError> {
        let mut writes = self.db.batch().durability(Some(self.persist));
        let mut remaining = self.sent_count;
        let mut over_cap = None;
        let mut cap_ties = None;
        for guard in self.sent_by_time.iter() {
            let key = guard.key().map_err(failed)?;
            let at = u64_at(&key, 0).unwrap_or(0);
            // Oldest first: first the sends past their time, then the oldest beyond the cap
            // (with every send of the same millisecond, as the other engines do).
            if at >= what.forget_sent_before_ms {
                let excess =
                    over_cap.get_or_insert(remaining.saturating_sub(what.remember_at_most));
                if *excess > 0 {
                    *excess -= 1;
                    cap_ties = Some(at);
                } else if cap_ties != Some(at) {
                    break;
                }
            }
            writes.remove(&self.sent, key[8..].to_vec());
            writes.remove(&self.sent_by_time, key);
            remaining = remaining.saturating_sub(1);
        }
        let forgotten = self.sent_count - remaining;
        if forgotten > 0 {
            writes.insert(&self.meta, SENT_COUNT, remaining.to_be_bytes());
            writes.commit().map_err(failed)?;
            self.sent_count = remaining;
        }
        // fjall compacts in the background; there are no pages to hand back by hand.
        Ok(MaintenanceReport {
            forgotten,
            reclaimed_pages: 0,
        })
    }

    fn last_id(&mut self) -> Result<u64, StoreError> {
        Ok(self.last_id)
    }
}

#[cfg(test)]
pub(crate) mod tests;
