//! How full each mailbox is, and whether it may take one more message.
//!
//! A mailbox's use is what the store holds (committed) plus what is queued or committing: a burst
//! of sends must not slip past the limit just because none of it has reached the store yet. The
//! counts are only entries and body bytes, one small record per non-empty mailbox, so the limits cost
//! no store read on the path of a message.

use foldhash::HashMap;

use crate::store::MailboxUsage;

/// Entries and body bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Count {
    pub(super) entries: u64,
    pub(super) bytes: u64,
}

/// The most one mailbox may hold (`mailbox.max_messages`, `mailbox.max_bytes`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub(super) entries: u64,
    pub(super) bytes: u64,
}

/// Why a mailbox cannot take a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Over {
    /// The body alone is larger than any mailbox may hold.
    TooLarge,
    /// The mailbox is at its limit.
    Full,
}

/// Per-mailbox use, stored and queued. Keyed by client ids, which peers choose, so a hash seeded per
/// process (foldhash), not the unseeded Fx hash used for the broker's own ids.
pub(super) struct Usage {
    limits: Limits,
    /// Committed use of every non-empty mailbox.
    stored: HashMap<String, Count>,
    /// Appends queued or committing, per mailbox. A record that falls to zero stays until
    /// [`Usage::forget_idle`], so a mailbox whose messages come and go (the common case, acked before
    /// their batch leaves) costs no key allocation per message.
    queued: HashMap<String, Queued>,
}

/// What is queued or committing for one mailbox.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Queued {
    count: Count,
    /// Of those, receipts: never a resend the store could turn away, so each one is sure to reach
    /// its owner, and `Hi.pending` counts them.
    receipts: u64,
}

impl Usage {
    /// `stored` is the store's per-mailbox usage at start-up.
    pub(super) fn new(limits: Limits, stored: Vec<MailboxUsage>) -> Self {
        let stored = stored
            .into_iter()
            .map(|u| {
                let count = Count {
                    entries: u.entries,
                    bytes: u.bytes,
                };
                (u.mailbox, count)
            })
            .collect();
        Self {
            limits,
            stored,
            queued: HashMap::default(),
        }
    }

    /// Non-empty mailboxes and what they hold together, committed (for the admin listener; one pass
    /// over the mailboxes, so it is asked for per scrape, never per message).
    pub(super) fn stored_totals(&self) -> (u64, Count) {
        let total = self.stored.values().fold(Count::default(), |sum, c| Count {
            entries: sum.entries + c.entries,
            bytes: sum.bytes + c.bytes,
        });
        (self.stored.len() as u64, total)
    }

    /// Every non-empty mailbox and what it holds, committed (for the admin listener's listing).
    pub(super) fn stored_iter(&self) -> impl Iterator<Item = (&String, &Count)> {
        self.stored.iter()
    }

    /// Whether `mailbox` may take a message of `len` body bytes.
    pub(super) fn check(&self, mailbox: &str, len: u64) -> Result<(), Over> {
        if len > self.limits.bytes {
            return Err(Over::TooLarge);
        }
        let used = self.in_use(mailbox);
        if used.entries >= self.limits.entries || used.bytes.saturating_add(len) > self.limits.bytes
        {
            return Err(Over::Full);
        }
        Ok(())
    }

    /// An append of `len` bytes (a receipt or not) is queued for `mailbox`.
    pub(super) fn queue(&mut self, mailbox: &str, len: u64, receipt: bool) {
        let queued = match self.queued.get_mut(mailbox) {
            Some(queued) => queued,
            None => self.queued.entry(mailbox.to_owned()).or_default(),
        };
        queued.count.entries += 1;
        queued.count.bytes += len;
        queued.receipts += u64::from(receipt);
    }

    /// A queued append left the queue: its commit landed (stored or not), or it was acknowledged
    /// before its batch left and will never be stored.
    pub(super) fn unqueue(&mut self, mailbox: &str, len: u64, receipt: bool) {
        if let Some(queued) = self.queued.get_mut(mailbox) {
            queued.count.entries = queued.count.entries.saturating_sub(1);
            queued.count.bytes = queued.count.bytes.saturating_sub(len);
            queued.receipts = queued.receipts.saturating_sub(u64::from(receipt));
        }
    }

    /// Forgets the mailboxes with nothing queued (the Router's maintenance timer calls this), so the
    /// map holds the mailboxes that had traffic lately, not every mailbox that ever had.
    pub(super) fn forget_idle(&mut self) {
        self.queued.retain(|_, queued| queued.count.entries > 0);
    }

    /// Receipts queued or committing for `mailbox`: not stored yet, but sure to be handed to it.
    pub(super) fn queued_receipts(&self, mailbox: &str) -> u64 {
        self.queued.get(mailbox).map_or(0, |q| q.receipts)
    }

    /// An append of `len` bytes to `mailbox` is committed.
    pub(super) fn stored(&mut self, mailbox: &str, len: u64) {
        add(&mut self.stored, mailbox, len);
    }

    /// A delete of an entry of `len` bytes from `mailbox` is committed.
    pub(super) fn removed(&mut self, mailbox: &str, len: u64) {
        sub(&mut self.stored, mailbox, len);
    }

    /// What the store holds for `mailbox`.
    pub(super) fn stored_count(&self, mailbox: &str) -> Count {
        self.stored.get(mailbox).copied().unwrap_or_default()
    }

    /// How many entries the store holds for `mailbox`.
    pub(super) fn stored_entries(&self, mailbox: &str) -> u64 {
        self.stored.get(mailbox).map_or(0, |c| c.entries)
    }

    /// Entries and bytes `mailbox` holds or will hold once queued writes commit.
    fn in_use(&self, mailbox: &str) -> Count {
        let stored = self.stored.get(mailbox).copied().unwrap_or_default();
        let queued = self
            .queued
            .get(mailbox)
            .map(|q| q.count)
            .unwrap_or_default();
        Count {
            entries: stored.entries + queued.entries,
            bytes: stored.bytes + queued.bytes,
        }
    }
}

fn add(map: &mut HashMap<String, Count>, mailbox: &str, bytes: u64) {
    let count = match map.get_mut(mailbox) {
        Some(count) => count,
        None => map.entry(mailbox.to_owned()).or_default(),
    };
    count.entries += 1;
    count.bytes += bytes;
}

/// Takes one entry of `bytes` off; a mailbox with no entries left leaves the map.
fn sub(map: &mut HashMap<String, Count>, mailbox: &str, bytes: u64) {
    if let Some(count) = map.get_mut(mailbox) {
        count.entries = count.entries.saturating_sub(1);
        count.bytes = count.bytes.saturating_sub(bytes);
        if count.entries == 0 {
            map.remove(mailbox);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(entries: u64, bytes: u64) -> Usage {
        Usage::new(Limits { entries, bytes }, vec![])
    }

    #[test]
    fn a_body_larger_than_a_whole_mailbox_is_too_large_not_full() {
        let u = usage(10, 100);
        assert_eq!(u.check("bob", 101), Err(Over::TooLarge));
        assert_eq!(u.check("bob", 100), Ok(()));
    }

    #[test]
    fn queued_appends_count_against_the_limits_before_they_are_stored() {
        let mut u = usage(2, 100);
        u.queue("bob", 10, false);
        u.queue("bob", 10, false);
        assert_eq!(u.check("bob", 1), Err(Over::Full), "two entries queued");
        assert_eq!(u.check("carol", 1), Ok(()), "limits are per mailbox");

        let mut u = usage(10, 100);
        u.queue("bob", 60, false);
        u.stored("bob", 30);
        assert_eq!(u.check("bob", 10), Ok(()));
        assert_eq!(
            u.check("bob", 11),
            Err(Over::Full),
            "60 queued + 30 stored + 11"
        );
    }

    #[test]
    fn start_up_usage_counts_as_stored() {
        let stored = vec![MailboxUsage {
            mailbox: "bob".into(),
            entries: 3,
            bytes: 30,
        }];
        let u = Usage::new(
            Limits {
                entries: 3,
                bytes: 100,
            },
            stored,
        );
        assert_eq!(u.stored_entries("bob"), 3);
        assert_eq!(u.check("bob", 1), Err(Over::Full));
    }

    /// Every way an entry leaves brings the counts back to zero, so a mailbox emptied by acks takes
    /// messages again and the maps hold only non-empty mailboxes.
    #[test]
    fn usage_counts_back_to_zero_after_acks() {
        let mut u = usage(2, 100);
        // Acknowledged before its batch left: queued, then unqueued, never stored.
        u.queue("bob", 40, false);
        u.unqueue("bob", 40, false);
        // Committed, then acknowledged and its delete committed.
        u.queue("bob", 50, false);
        u.unqueue("bob", 50, false);
        u.stored("bob", 50);
        u.removed("bob", 50);
        assert_eq!(u.in_use("bob"), Count::default());
        u.forget_idle();
        assert!(u.stored.is_empty() && u.queued.is_empty());
        assert_eq!(u.check("bob", 100), Ok(()));
    }

    #[test]
    fn queued_receipts_are_counted_until_they_leave_the_queue() {
        let mut u = usage(10, 100);
        u.queue("alice", 0, true);
        u.queue("alice", 5, false);
        u.queue("alice", 0, true);
        assert_eq!(u.queued_receipts("alice"), 2, "messages are not counted");
        assert_eq!(u.queued_receipts("bob"), 0);
        u.unqueue("alice", 0, true);
        u.unqueue("alice", 5, false);
        assert_eq!(u.queued_receipts("alice"), 1);
        u.unqueue("alice", 0, true);
        u.unqueue("alice", 0, true);
        assert_eq!(u.queued_receipts("alice"), 0, "never below zero");
        u.forget_idle();
        assert!(u.queued.is_empty(), "no entry kept for an empty mailbox");
    }

    #[test]
    fn counts_never_go_below_zero() {
        let mut u = usage(2, 100);
        u.removed("bob", 10);
        u.unqueue("bob", 10, false);
        u.stored("bob", 5);
        u.removed("bob", 50);
        assert_eq!(u.in_use("bob"), Count::default());
    }
}
