//! The in-memory store: for tests and for deployments that accept losing mailboxes on restart.

use std::collections::{BTreeMap, HashMap};

use super::{
    Batch, CommitOutcome, Duplicate, Entry, EntryKind, ExpiredEntry, MailboxStore, MailboxUsage,
    Maintenance, MaintenanceReport, StoreError,
};

/// A remembered send: the broker id it got and when.
#[derive(Debug, Clone, Copy)]
struct Sent {
    message_id: u64,
    at_ms: u64,
}

/// Mailboxes held in memory. "Durable" means "until the process exits".
#[derive(Debug, Default)]
pub struct MemoryStore {
    mailboxes: HashMap<String, BTreeMap<u64, Entry>>,
    /// Which mailbox holds each id, so deletes by id need no scan.
    owners: HashMap<u64, String>,
    sent: HashMap<(String, u64), Sent>,
    last_id: u64,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

impl MailboxStore for MemoryStore {
    fn commit(&mut self, batch: &Batch) -> Result<CommitOutcome, StoreError> {
        let mut outcome = CommitOutcome::default();
        self.last_id = self.last_id.max(batch.reserve_ids_through);
        for r in &batch.remembered {
            self.last_id = self.last_id.max(r.message_id);
            self.sent
                .entry((r.sender.clone(), r.send_id))
                .or_insert(Sent {
                    message_id: r.message_id,
                    at_ms: r.at_ms,
                });
        }
        for entry in &batch.appends {
            self.last_id = self.last_id.max(entry.id);
            if entry.kind == EntryKind::Message {
                let key = (entry.peer.clone(), entry.send_id);
                if let Some(sent) = self.sent.get(&key) {
                    outcome.duplicates.push(Duplicate {
                        id: entry.id,
                        original: sent.message_id,
                    });
                    continue;
                }
                self.sent.insert(
                    key,
                    Sent {
                        message_id: entry.id,
                        at_ms: entry.sent_at_ms,
                    },
                );
            }
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
        Ok(outcome)
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

    fn usage(&mut self) -> Result<Vec<MailboxUsage>, StoreError> {
        Ok(self
            .mailboxes
            .iter()
            .map(|(mailbox, entries)| MailboxUsage {
                mailbox: mailbox.clone(),
                entries: entries.len() as u64,
                bytes: entries.values().map(|e| e.body.len() as u64).sum(),
            })
            .collect())
    }

    fn expired(&mut self, now_ms: u64, limit: usize) -> Result<Vec<ExpiredEntry>, StoreError> {
        let mut due: Vec<&Entry> = self
            .mailboxes
            .values()
            .flat_map(BTreeMap::values)
            .filter(|e| e.expires_at_ms != 0 && e.expires_at_ms <= now_ms)
            .collect();
        due.sort_by_key(|e| (e.expires_at_ms, e.id));
        Ok(due
            .into_iter()
            .take(limit)
            .map(|e| ExpiredEntry {
                body_len: e.body.len() as u64,
                entry: Entry {
                    body: bytes::Bytes::new(),
                    ..e.clone()
                },
            })
            .collect())
    }

    fn sent(&mut self, sender: &str, send_id: u64) -> Result<Option<u64>, StoreError> {
        Ok(self
            .sent
            .get(&(sender.to_owned(), send_id))
            .map(|s| s.message_id))
    }

    fn maintain(&mut self, what: &Maintenance) -> Result<MaintenanceReport, StoreError> {
        let before = self.sent.len();
        self.sent
            .retain(|_, sent| sent.at_ms >= what.forget_sent_before_ms);
        let excess = (self.sent.len() as u64).saturating_sub(what.remember_at_most);
        if excess > 0 {
            // Exactly the oldest `excess`, in acceptance order (a batch's sends share one time).
            let mut order: Vec<(u64, u64)> = self
                .sent
                .values()
                .map(|s| (s.at_ms, s.message_id))
                .collect();
            order.sort_unstable();
            let keep_from = order[(excess - 1) as usize];
            self.sent
                .retain(|_, sent| (sent.at_ms, sent.message_id) > keep_from);
        }
        Ok(MaintenanceReport {
            forgotten: (before - self.sent.len()) as u64,
            reclaimed_pages: 0,
        })
    }

    fn last_id(&mut self) -> Result<u64, StoreError> {
        Ok(self.last_id)
    }
}
