//! What a frame does to the in-memory index: the one function that commit (after the frame is
//! written) and recovery (while replaying) both run, so the state after a restart is by
//! construction the state before it.

use std::sync::Arc;

use super::frame::{remembered_size, Decoded, REMEMBER};
use super::index::{Index, Meta};
use super::remembered::{Cut, Sent};
use super::segment::SegmentId;

impl Index {
    /// Applies `frame`, found in `segment` with its payload starting at byte `payload_at`.
    pub(super) fn apply(&mut self, frame: &Decoded<'_>, segment: SegmentId, payload_at: u64) {
        self.last_id = self.last_id.max(frame.high.last_id);
        self.written_id = self.written_id.max(frame.high.written_id);
        let forget = frame.forget;
        // A forget carried forward by compaction, if already applied, is not applied again: it
        // would forget sends remembered since the original.
        if forget > Cut::NONE && (!frame.copy || forget > self.forgot_before) {
            self.forgot_before = self.forgot_before.max(forget);
            self.forget_before(forget, segment);
        }
        for r in &frame.remembered {
            let sender = self.intern(r.sender);
            let sent = Sent {
                message_id: r.message_id,
                at_ms: r.at_ms,
                segment,
            };
            self.remember(sender, r.send_id, sent);
            self.last_id = self.last_id.max(r.message_id);
        }
        for a in &frame.appends {
            let peer = self.intern(a.peer);
            if a.flags & REMEMBER != 0 {
                let sent = Sent {
                    message_id: a.id,
                    at_ms: a.sent_at_ms,
                    segment,
                };
                self.remember(peer.clone(), a.send_id, sent);
            }
            // Recovery refuses segments of 4 GiB or more, so every offset fits.
            let offset = (payload_at + a.body_at as u64) as u32;
            let meta = Meta {
                id: a.id,
                send_id: a.send_id,
                message_id: a.message_id,
                sent_at_ms: a.sent_at_ms,
                expires_at_ms: a.expires_at_ms,
                peer,
                offset,
                body_len: a.body_len,
                segment,
                kind: a.kind,
                receipts: a.receipts,
            };
            self.insert(a.mailbox, meta);
            self.last_id = self.last_id.max(a.id);
        }
        for &(id, recorded_in) in &frame.deletes {
            self.remove(id);
            // Kept even when the entry is gone already: a tombstone carried forward by compaction.
            self.depends(segment, recorded_in);
        }
    }

    /// Remembers a send recorded in `sent.segment`, moving its accounting from wherever it was
    /// recorded before.
    fn remember(&mut self, sender: Arc<str>, send_id: u64, sent: Sent) {
        let size = remembered_size(&sender);
        self.stats(sent.segment).live += size;
        if let Some(old) = self.sent.insert(sender, send_id, sent) {
            let stats = self.stats(old.segment);
            stats.live = stats.live.saturating_sub(size);
        }
    }

    fn forget_before(&mut self, cut: Cut, segment: SegmentId) {
        let stats = self.stats(segment);
        stats.forget = stats.forget.max(cut);
        let segments = &mut self.segments;
        self.sent.forget_before(cut, |sender, sent| {
            let stats = segments.entry(sent.segment).or_default();
            stats.live = stats.live.saturating_sub(remembered_size(sender));
        });
    }

    /// Records that `segment` removed something recorded in `older`.
    fn depends(&mut self, segment: SegmentId, older: SegmentId) {
        if older != segment {
            self.stats(segment).deps.insert(older);
        }
    }
}
