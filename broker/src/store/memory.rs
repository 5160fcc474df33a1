//! The in-memory store: for tests and for deployments that accept losing mailboxes on restart.

use std::collections::{BTreeMap, HashMap};

use super::{Batch, Entry, MailboxStore, StoreError};

/// Mailboxes held in memory. "Durable" means "until the process exits".
#[derive(Debug, Default)]
pub struct MemoryStore {
    mailboxes: HashMap<String, BTreeMap<u64, Entry>>,
    /// Which mailbox holds each id, so deletes by id need no scan.
    owners: HashMap<u64, String>,
    last_id: u64,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

impl MailboxStore for MemoryStore {
    fn commit(&mut self, batch: &Batch) -> Result<(), StoreError> {
        for entry in &batch.appends {
            self.last_id = self.last_id.max(entry.id);
            self.owners.insert(entry.id, entry.mailbox.clone());
            self.mailboxes
                .entry(entry.mailbox.clone())
                .or_default()
                .insert(entry.id, entry.clone());
        }
        for id in &batch.deletes {
            let Some(owner) = self.owners.remove(id) else {
                continue;
            };
            if let Some(mailbox) = self.mailboxes.get_mut(&owner) {
                mailbox.remove(id);
                if mailbox.is_empty() {
                    self.mailboxes.remove(&owner);
                }
            }
        }
        Ok(())
    }

    fn fetch(&mut self, mailbox: &str, after: u64, limit: usize) -> Result<Vec<Entry>, StoreError> {
        let Some(entries) = self.mailboxes.get(mailbox) else {
            return Ok(Vec::new());
        };
        Ok(entries
            .range(after.saturating_add(1)..)
            .take(limit)
            .map(|(_, entry)| entry.clone())
            .collect())
    }

    fn count(&mut self, mailbox: &str) -> Result<u64, StoreError> {
        Ok(self.mailboxes.get(mailbox).map_or(0, |m| m.len() as u64))
    }

    fn last_id(&mut self) -> Result<u64, StoreError> {
        Ok(self.last_id)
    }
}
