//! The in-memory index: every live entry's metadata and where its body lies, per mailbox in id
//! order; the expiry order; usage counters; and how much of each segment is still live.
//!
//! Ids grow strictly within a mailbox, so a mailbox is a `VecDeque` searched by binary search, and
//! acknowledgements (mostly of the oldest entries) pop its front. Names (mailboxes, peers) are
//! interned as `Arc<str>`: a million entries from one sender hold one copy of its name.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use foldhash::{HashMap, HashSet};
use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::frame::{append_size, High};
use super::remembered::{Cut, Remembered, Sent};
use super::segment::SegmentId;
use crate::store::{EntryKind, MailboxUsage};
use switchboard_proto::Receipts;

/// What the index keeps of one entry: everything but the body, which stays in its segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Meta {
    pub id: u64,
    pub send_id: u64,
    pub message_id: u64,
    pub sent_at_ms: u64,
    pub expires_at_ms: u64,
    pub peer: Arc<str>,
    /// Where the body starts in its segment (segments are under 4 GiB).
    pub offset: u32,
    pub body_len: u32,
    pub segment: SegmentId,
    pub kind: EntryKind,
    /// Which receipts a message's sender asked for.
    pub receipts: Receipts,
}

/// One mailbox's live entries, in id order.
#[derive(Debug)]
pub(super) struct Mailbox {
    pub name: Arc<str>,
    pub entries: VecDeque<Meta>,
    /// Sum of the body sizes.
    pub bytes: u64,
}

/// What the index knows about one segment.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct SegmentStats {
    /// Record bytes still needed: live entries and remembered sends recorded here.
    pub live: u64,
    /// Older segments holding entries that this segment's deletes removed: while one of them
    /// exists, those tombstones are still needed (compaction carries them forward).
    pub deps: BTreeSet<SegmentId>,
    /// The latest "forget sends before" this segment records (0: none), carried forward when the
    /// segment goes while older ones remain.
    pub forget: Cut,
}

/// The whole in-memory state of a log store.
#[derive(Debug, Default)]
pub(super) struct Index {
    /// Interned client ids. Clients choose them, so these maps hash with foldhash, seeded per
    /// process (a fraction of SipHash's cost; no fixed collisions to aim at).
    names: HashSet<Arc<str>>,
    slots: HashMap<Arc<str>, u32>,
    pub mailboxes: Vec<Mailbox>,
    /// Which mailbox slot holds each live id (ids are ours, so a fast hash is safe).
    owners: FxHashMap<u64, u32>,
    /// `(expires_at_ms, id)` of every live entry that expires.
    expiry: BTreeSet<(u64, u64)>,
    pub sent: Remembered,
    pub segments: BTreeMap<SegmentId, SegmentStats>,
    /// The highest id ever committed or reserved.
    pub last_id: u64,
    /// The highest id ever written (appended or remembered), never one only reserved: the
    /// high-water mark of the identity check (`guard.rs`).
    pub written_id: u64,
    /// The latest "forget sends accepted before this time" applied.
    pub forgot_before: Cut,
}

impl Index {
    /// Both high-water marks as they stand, for a frame that moves neither.
    pub(super) fn high(&self) -> High {
        High {
            last_id: self.last_id,
            written_id: self.written_id,
        }
    }

    /// The shared copy of `name`.
    pub(super) fn intern(&mut self, name: &str) -> Arc<str> {
        if let Some(name) = self.names.get(name) {
            return name.clone();
        }
        let name: Arc<str> = name.into();
        self.names.insert(name.clone());
        name
    }

    /// Drops interned names nothing else uses any more.
    pub(super) fn prune_names(&mut self) {
        let slots = &self.slots;
        self.names
            .retain(|name| Arc::strong_count(name) > 1 + usize::from(slots.contains_key(name)));
    }

    pub(super) fn stats(&mut self, segment: SegmentId) -> &mut SegmentStats {
        self.segments.entry(segment).or_default()
    }

    fn slot(&mut self, mailbox: &str) -> u32 {
        if let Some(&slot) = self.slots.get(mailbox) {
            return slot;
        }
        let name = self.intern(mailbox);
        let slot = self.mailboxes.len() as u32;
        self.mailboxes.push(Mailbox {
            name: name.clone(),
            entries: VecDeque::new(),
            bytes: 0,
        });
        self.slots.insert(name, slot);
        slot
    }

    /// Adds a live entry to `mailbox`, replacing an entry with the same id (a compaction copy).
    pub(super) fn insert(&mut self, mailbox: &str, meta: Meta) {
        self.remove(meta.id);
        let slot = self.slot(mailbox);
        let size = append_size(mailbox, &meta.peer, meta.body_len);
        self.stats(meta.segment).live += size;
        if meta.expires_at_ms != 0 {
            self.expiry.insert((meta.expires_at_ms, meta.id));
        }
        self.owners.insert(meta.id, slot);
        let m = &mut self.mailboxes[slot as usize];
        m.bytes += u64::from(meta.body_len);
        // Ids arrive in increasing order but compaction copies older ones after newer ones.
        match m.entries.back() {
            Some(last) if last.id > meta.id => {
                let at = m.entries.partition_point(|e| e.id < meta.id);
                m.entries.insert(at, meta);
            }
            _ => m.entries.push_back(meta),
        }
    }

    /// Adds a whole mailbox of entries in id order (from a snapshot), faster than one by one.
    pub(super) fn load_mailbox(&mut self, mailbox: &str, mut entries: Vec<Meta>) {
        if !entries.is_sorted_by_key(|e| e.id) {
            entries.sort_unstable_by_key(|e| e.id);
        }
        let slot = self.slot(mailbox);
        self.owners.reserve(entries.len());
        // Live bytes summed per run of one segment: one map lookup per run, not per entry.
        let mut run: Option<(SegmentId, u64)> = None;
        for meta in &entries {
            self.owners.insert(meta.id, slot);
            if meta.expires_at_ms != 0 {
                self.expiry.insert((meta.expires_at_ms, meta.id));
            }
            let size = append_size(mailbox, &meta.peer, meta.body_len);
            match &mut run {
                Some((segment, live)) if *segment == meta.segment => *live += size,
                _ => {
                    if let Some((segment, live)) = run.replace((meta.segment, size)) {
                        self.stats(segment).live += live;
                    }
                }
            }
        }
        if let Some((segment, live)) = run {
            self.stats(segment).live += live;
        }
        let m = &mut self.mailboxes[slot as usize];
        m.bytes += entries.iter().map(|e| u64::from(e.body_len)).sum::<u64>();
        if m.entries.is_empty() {
            // Takes the vector's buffer over: no second copy of a million entries.
            m.entries = VecDeque::from(entries);
        } else {
            m.entries.extend(entries);
        }
    }

    /// Adds every remembered send of one sender (from a snapshot), faster than one by one.
    pub(super) fn load_sends(&mut self, sender: Arc<str>, sends: HashMap<u64, Sent>) {
        let size = super::frame::remembered_size(&sender);
        let mut live: BTreeMap<SegmentId, u64> = BTreeMap::new();
        for sent in sends.values() {
            *live.entry(sent.segment).or_default() += size;
        }
        for (segment, bytes) in live {
            self.stats(segment).live += bytes;
        }
        self.sent.load_sender(sender, sends);
    }

    /// Removes a live entry; returns it if it was there.
    pub(super) fn remove(&mut self, id: u64) -> Option<Meta> {
        let slot = self.owners.remove(&id)?;
        let m = &mut self.mailboxes[slot as usize];
        let at = m.entries.binary_search_by_key(&id, |e| e.id).ok()?;
        let meta = m.entries.remove(at)?;
        m.bytes -= u64::from(meta.body_len);
        if m.entries.is_empty() {
            m.entries = VecDeque::new();
        }
        let size = append_size(&m.name, &meta.peer, meta.body_len);
        if meta.expires_at_ms != 0 {
            self.expiry.remove(&(meta.expires_at_ms, id));
        }
        let stats = self.stats(meta.segment);
        stats.live = stats.live.saturating_sub(size);
        Some(meta)
    }

    /// The entry with `id` and its mailbox's name.
    pub(super) fn get(&self, id: u64) -> Option<(&Arc<str>, &Meta)> {
        let m = &self.mailboxes[*self.owners.get(&id)? as usize];
        let at = m.entries.binary_search_by_key(&id, |e| e.id).ok()?;
        Some((&m.name, &m.entries[at]))
    }

    /// Up to `limit` entries of `mailbox` after id `after`, in order.
    pub(super) fn page(
        &self,
        mailbox: &str,
        after: u64,
        limit: usize,
    ) -> impl Iterator<Item = &Meta> {
        let entries = self
            .slots
            .get(mailbox)
            .map(|&slot| &self.mailboxes[slot as usize].entries);
        let start = entries.map_or(0, |e| e.partition_point(|m| m.id <= after));
        entries
            .into_iter()
            .flat_map(move |e| e.range(start..))
            .take(limit)
    }

    pub(super) fn usage(&self) -> Vec<MailboxUsage> {
        self.mailboxes
            .iter()
            .filter(|m| !m.entries.is_empty())
            .map(|m| MailboxUsage {
                mailbox: m.name.to_string(),
                entries: m.entries.len() as u64,
                bytes: m.bytes,
            })
            .collect()
    }

    /// Ids of up to `limit` entries due by `now_ms`, soonest first.
    pub(super) fn due(&self, now_ms: u64, limit: usize) -> Vec<u64> {
        self.expiry
            .range(..=(now_ms, u64::MAX))
            .take(limit)
            .map(|&(_, id)| id)
            .collect()
    }

    /// Live entries, with their mailbox names.
    pub(super) fn entries(&self) -> impl Iterator<Item = (&Arc<str>, &Meta)> {
        self.mailboxes
            .iter()
            .flat_map(|m| m.entries.iter().map(move |e| (&m.name, e)))
    }

    pub(super) fn len(&self) -> usize {
        self.owners.len()
    }

    /// Bytes of memory the index holds for entries, from capacities (for the memory figures).
    #[cfg(test)]
    pub(super) fn entry_memory_bytes(&self) -> usize {
        let deques: usize = self
            .mailboxes
            .iter()
            .map(|m| m.entries.capacity() * std::mem::size_of::<Meta>())
            .sum();
        deques + self.owners.capacity() * (std::mem::size_of::<(u64, u32)>() + 1)
    }
}
