//! The journal's memory: the last entries handled, looked up by key and by origin.

use std::collections::{HashSet, VecDeque};

use crate::daemon::journal::entry::{Entry, Key, Origin, Seen};

/// The last `keep` entries, in the order they were recorded, and their keys and origins for lookup.
/// No two remembered entries share a key or an origin, so forgetting the oldest entry forgets
/// exactly its own.
pub(crate) struct Memory {
    /// How many entries are remembered.
    pub keep: usize,
    keys: HashSet<Key>,
    origins: HashSet<Origin>,
    /// The remembered entries, oldest first: what a compacted file holds.
    pub order: VecDeque<Entry>,
}

impl Memory {
    /// Remembers nothing yet, and at most `keep` entries.
    pub(crate) fn new(keep: usize) -> Memory {
        Memory {
            keep,
            keys: HashSet::new(),
            origins: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    /// Whether, and how, the entry is remembered.
    pub(crate) fn seen(&self, entry: &Entry) -> Option<Seen> {
        if self.keys.contains(&entry.key) {
            Some(Seen::Redelivered)
        } else if entry
            .origin
            .as_ref()
            .is_some_and(|origin| self.origins.contains(origin))
        {
            Some(Seen::Resent)
        } else {
            None
        }
    }

    /// Remembers an entry not seen yet, forgetting the oldest beyond `keep`; false if it was seen.
    pub(crate) fn remember(&mut self, entry: Entry) -> bool {
        if self.seen(&entry).is_some() {
            return false;
        }
        self.keys.insert(entry.key);
        if let Some(origin) = &entry.origin {
            self.origins.insert(origin.clone());
        }
        self.order.push_back(entry);
        while self.order.len() > self.keep {
            if let Some(old) = self.order.pop_front() {
                self.keys.remove(&old.key);
                if let Some(origin) = &old.origin {
                    self.origins.remove(origin);
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u64, send_id: u64) -> Entry {
        Entry {
            key: Key {
                id,
                check: 1_000 + id,
            },
            origin: Some(Origin {
                from: "alice".into(),
                send_id,
            }),
        }
    }

    #[test]
    fn forgetting_the_oldest_entry_forgets_its_key_and_its_origin_and_nothing_else() {
        let mut memory = Memory::new(2);
        assert!(memory.remember(entry(1, 101)));
        assert!(memory.remember(entry(2, 102)));
        assert!(!memory.remember(entry(2, 102)), "seen already");
        assert!(
            !memory.remember(entry(9, 101)),
            "the same origin under another id"
        );
        assert!(memory.remember(entry(3, 103)));
        assert_eq!(memory.seen(&entry(1, 999)), None, "key forgotten");
        assert_eq!(memory.seen(&entry(99, 101)), None, "origin forgotten");
        assert_eq!(memory.seen(&entry(2, 999)), Some(Seen::Redelivered));
        assert_eq!(memory.seen(&entry(99, 103)), Some(Seen::Resent));
        assert_eq!(memory.order.len(), 2);
    }
}
