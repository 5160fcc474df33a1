//! The remembered sends: `(sender, send_id)` → the broker id the message got and when, so a resend
//! is recognised; and how housekeeping forgets the old ones.
//!
//! Keyed per sender (`sender` → `send_id` → [`Sent`]) so a lookup borrows the sender's name and
//! costs no allocation. The hasher is the standard library's keyed one: send ids are chosen by
//! clients, and a fixed hash would let one client degrade the map for all. Forgetting always means
//! "every send accepted before time X", one number a frame can carry and replay can repeat.

use foldhash::HashMap;
use std::sync::Arc;

use super::segment::SegmentId;

/// One remembered send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Sent {
    pub message_id: u64,
    pub at_ms: u64,
    /// The segment whose record keeps this send across a restart.
    pub segment: SegmentId,
}

/// Every remembered send.
#[derive(Debug, Default)]
pub(super) struct Remembered {
    by_sender: HashMap<Arc<str>, HashMap<u64, Sent>>,
    len: usize,
}

impl Remembered {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn get(&self, sender: &str, send_id: u64) -> Option<&Sent> {
        self.by_sender.get(sender)?.get(&send_id)
    }

    /// Remembers a send; returns the one it replaces (the same send, recorded again by compaction).
    pub(super) fn insert(&mut self, sender: Arc<str>, send_id: u64, sent: Sent) -> Option<Sent> {
        let old = self
            .by_sender
            .entry(sender)
            .or_default()
            .insert(send_id, sent);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Adds a sender's sends wholesale (from a snapshot, where each send appears once).
    pub(super) fn load_sender(&mut self, sender: Arc<str>, sends: HashMap<u64, Sent>) {
        let added = sends.len();
        let old = self.by_sender.insert(sender, sends);
        self.len = self.len + added - old.map_or(0, |o| o.len());
    }

    /// Forgets every send accepted before `before_ms`, telling `gone` about each.
    pub(super) fn forget_before(&mut self, before_ms: u64, mut gone: impl FnMut(&str, Sent)) {
        let mut forgotten = 0;
        self.by_sender.retain(|sender, sends| {
            sends.retain(|_, sent| {
                let keep = sent.at_ms >= before_ms;
                if !keep {
                    forgotten += 1;
                    gone(sender, *sent);
                }
                keep
            });
            !sends.is_empty()
        });
        self.len -= forgotten;
    }

    /// The time before which sends must be forgotten so that none is older than
    /// `forget_before_ms` and at most `at_most` remain (ties at the cut go too, as in every engine).
    pub(super) fn cutoff(&self, forget_before_ms: u64, at_most: u64) -> u64 {
        let mut times: Vec<u64> = self
            .iter()
            .map(|(_, _, sent)| sent.at_ms)
            .filter(|&at| at >= forget_before_ms)
            .collect();
        let excess = (times.len() as u64).saturating_sub(at_most) as usize;
        if excess == 0 {
            return forget_before_ms;
        }
        let (_, cut, _) = times.select_nth_unstable(excess - 1);
        cut.saturating_add(1).max(forget_before_ms)
    }

    /// Whether any send is older than `before_ms`.
    pub(super) fn any_before(&self, before_ms: u64) -> bool {
        self.iter().any(|(_, _, sent)| sent.at_ms < before_ms)
    }

    /// Every send: its sender, send id and what is remembered.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&Arc<str>, u64, &Sent)> {
        self.by_sender
            .iter()
            .flat_map(|(sender, sends)| sends.iter().map(move |(id, sent)| (sender, *id, sent)))
    }

    /// Every sender with its sends, for the snapshot.
    pub(super) fn senders(&self) -> impl Iterator<Item = (&Arc<str>, &HashMap<u64, Sent>)> {
        self.by_sender.iter()
    }

    /// Bytes of memory the map holds, from its capacities (for the memory figures).
    #[cfg(test)]
    pub(super) fn memory_bytes(&self) -> usize {
        let per_send = std::mem::size_of::<(u64, Sent)>() + 1;
        let per_sender = std::mem::size_of::<(Arc<str>, HashMap<u64, Sent>)>() + 1;
        self.by_sender.capacity() * per_sender
            + self
                .by_sender
                .values()
                .map(|s| s.capacity() * per_send)
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(at_ms: u64) -> Sent {
        Sent {
            message_id: at_ms,
            at_ms,
            segment: 1,
        }
    }

    #[test]
    fn the_cutoff_keeps_at_most_the_newest() {
        let mut r = Remembered::default();
        for at in 1..=5 {
            r.insert("alice".into(), at, sent(at * 100));
        }
        assert_eq!(r.cutoff(200, 3), 201);
        assert_eq!(r.cutoff(0, 10), 0);
        let mut gone = Vec::new();
        r.forget_before(201, |_, s| gone.push(s.at_ms));
        gone.sort_unstable();
        assert_eq!(gone, [100, 200]);
        assert_eq!(r.len(), 3);
        assert!(r.get("alice", 4).is_some());
    }
}
