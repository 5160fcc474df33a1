//! Which stored entries can never be delivered, and how they are set aside so they do not block their
//! mailbox.
//!
//! Every `send` is held to a body limit under which its `deliver` fits one frame, so an entry the
//! broker accepted fits the frame limit it was accepted under. If the operator lowers
//! `limits.max_frame_bytes` afterwards, an entry stored before may no longer fit: a session could never
//! write it, and everything behind it in the mailbox would wait for ever. So a page read checks what it
//! read against the current limit, and an entry that does not fit is removed, like an acknowledged one,
//! with an `undeliverable` receipt to its sender in the same batch. The rest of the page flows.

use switchboard_proto::{encode_frame, max_body_len, BrokerFrame};

use super::Router;
use crate::store::{Damaged, Entry, EntryKind};

/// Whether `entry`'s `deliver` frame fits in `max_frame` bytes. Receipts always fit (no body, ids of at
/// most 128 bytes); a body within [`max_body_len`] fits whatever the ids, so only a body above it is
/// encoded to find out exactly.
pub(super) fn fits(entry: &Entry, max_frame: usize) -> bool {
    if entry.kind != EntryKind::Message || entry.body.len() <= max_body_len(max_frame) {
        return true;
    }
    let deliver = BrokerFrame::Deliver {
        message_id: entry.id,
        from: entry.peer.clone(),
        send_id: entry.send_id,
        sent_at_ms: entry.sent_at_ms,
        body: entry.body.clone(),
    };
    encode_frame(&deliver, max_frame).is_ok()
}

impl Router {
    /// Sets aside every entry of `page` that cannot be delivered under the current frame limit: queues
    /// its delete and its sender's `undeliverable` receipt. The entries stay in `page`; being on their
    /// way out, the window skips them. Returns whether any was set aside (a commit is then due).
    pub(super) fn set_aside_undeliverable(&mut self, page: &[Entry]) -> bool {
        let max_frame = self.config.max_frame_bytes;
        let mut any = false;
        for entry in page {
            if fits(entry, max_frame) || self.deleting.contains(entry.id) {
                continue;
            }
            tracing::warn!(
                mailbox = %entry.mailbox,
                entry = entry.id,
                sender = %entry.peer,
                body_bytes = entry.body.len(),
                max_frame_bytes = max_frame,
                "entry cannot be delivered under the current frame limit; removed, its sender gets an undeliverable receipt"
            );
            self.delete(entry.id, entry.mailbox.clone(), entry.body.len() as u64);
            self.tell_sender(EntryKind::Undeliverable, entry);
            any = true;
        }
        any
    }

    /// Sets aside the entries of `page` named in `damaged` (their stored bodies cannot be read
    /// back) as [`Router::set_aside_undeliverable`] does, once each: a store that cannot delete
    /// one either (a damaged SQLite page) keeps it but records it as set aside, and never returns
    /// it again, after a restart too; the Router skips it meanwhile. The mailbox's counts drop by
    /// the entry and its stored body length. Returns whether any was set aside.
    pub(super) fn set_aside_damaged(&mut self, page: &[Entry], damaged: &[Damaged]) -> bool {
        let mut any = false;
        for (entry, body_len) in page.iter().filter_map(|e| {
            let d = damaged.iter().find(|d| d.id == e.id)?;
            Some((e, d.body_len))
        }) {
            if !self.damaged.insert(entry.id) {
                continue;
            }
            tracing::error!(
                mailbox = %entry.mailbox,
                entry = entry.id,
                sender = %entry.peer,
                "stored body is damaged; removed, its sender gets an undeliverable receipt"
            );
            // Its body is empty here; the store said how long it was, for the byte count.
            self.delete(entry.id, entry.mailbox.clone(), body_len);
            self.tell_sender(EntryKind::Undeliverable, entry);
            any = true;
        }
        any
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::entry;
    use super::*;

    #[test]
    fn a_body_within_the_limit_fits_and_one_beyond_the_frame_does_not() {
        let max = 2048;
        assert!(fits(&entry(1, "bob", max_body_len(max)), max));
        assert!(!fits(&entry(1, "bob", max), max));
    }

    #[test]
    fn a_body_just_above_the_body_limit_fits_when_the_ids_are_short() {
        let max = 2048;
        assert!(fits(&entry(1, "bob", max_body_len(max) + 100), max));
    }
}
