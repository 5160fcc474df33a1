//! The remembered sends: `(sender, send_id)` → the broker id the message got and when, so a resend
//! is recognised; and how housekeeping forgets the old ones.
//!
//! Keyed per sender (`sender` → `send_id` → [`Sent`]) so a lookup borrows the sender's name and
//! costs no allocation. The hasher is the standard library's keyed one: send ids are chosen by
//! clients, and a fixed hash would let one client degrade the map for all. Forgetting always means
//! "every send before [`Cut`] X", in the order (accepted at, broker id): the time alone cannot say
//! which sends of one millisecond go (a batch's sends share one), the id can, so the cap on their
//! number forgets exactly the oldest; one cut a frame can carry and replay can repeat.

use foldhash::HashMap;
use std::sync::Arc;

use super::segment::SegmentId;

/// Where forgetting stops: every send whose `(at_ms, message_id)` is below `(ms, id)` is
/// forgotten. `id` 0 is a cut by time alone (`at_ms < ms`), which is what frames written before
/// the id existed say.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Cut {
    pub ms: u64,
    pub id: u64,
}

impl Cut {
    /// Forgets nothing.
    pub(crate) const NONE: Cut = Cut { ms: 0, id: 0 };

    /// Every send accepted before `ms`.
    pub(crate) fn before_ms(ms: u64) -> Cut {
        Cut { ms, id: 0 }
    }

    fn forgets(&self, sent: &Sent) -> bool {
        (sent.at_ms, sent.message_id) < (self.ms, self.id)
    }
}

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

    /// Forgets every send before `cut`, telling `gone` about each.
    pub(super) fn forget_before(&mut self, cut: Cut, mut gone: impl FnMut(&str, Sent)) {
        let mut forgotten = 0;
        self.by_sender.retain(|sender, sends| {
            sends.retain(|_, sent| {
                let keep = !cut.forgets(sent);
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

    /// The cut below which sends must be forgotten so that none was accepted before
    /// `forget_before_ms` and exactly the newest `at_most` (or fewer) remain.
    pub(super) fn cutoff(&self, forget_before_ms: u64, at_most: u64) -> Cut {
        let window = Cut::before_ms(forget_before_ms);
        let mut kept: Vec<(u64, u64)> = self
            .iter()
            .filter(|(_, _, sent)| !window.forgets(sent))
            .map(|(_, _, sent)| (sent.at_ms, sent.message_id))
            .collect();
        let excess = (kept.len() as u64).saturating_sub(at_most) as usize;
        if excess == 0 {
            return window;
        }
        let (_, &mut (ms, id), _) = kept.select_nth_unstable(excess - 1);
        Cut {
            ms,
            id: id.saturating_add(1),
        }
        .max(window)
    }

    /// Whether any send is before `cut`.
    pub(super) fn any_before(&self, cut: Cut) -> bool {
        self.iter().any(|(_, _, sent)| cut.forgets(sent))
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
        assert_eq!(r.cutoff(200, 3), Cut { ms: 200, id: 201 });
        assert_eq!(r.cutoff(0, 10), Cut::NONE);
        let mut gone = Vec::new();
        r.forget_before(r.cutoff(200, 3), |_, s| gone.push(s.at_ms));
        gone.sort_unstable();
        assert_eq!(gone, [100, 200]);
        assert_eq!(r.len(), 3);
        assert!(r.get("alice", 4).is_some());
    }

    #[test]
    fn the_cap_forgets_exactly_the_oldest_even_when_they_share_a_millisecond() {
        let mut r = Remembered::default();
        for id in 1..=6 {
            let sent = Sent {
                message_id: id,
                at_ms: 1_000,
                segment: 1,
            };
            r.insert("alice".into(), id, sent);
        }
        let cut = r.cutoff(0, 3);
        r.forget_before(cut, |_, _| {});
        assert_eq!(r.len(), 3);
        for id in 4..=6 {
            assert!(
                r.get("alice", id).is_some(),
                "send {id} is among the newest 3"
            );
        }
    }
}
