//! Turning a [`Batch`] into the frame that records what it does: resends found and left out,
//! entries appended and deleted in the same batch reduced to their remembered send, deletes of ids
//! that are not there dropped.
//!
//! The order of the contract: the batch's remembered sends first (a resend of one in the same
//! batch is a duplicate), then the appends in order (a resend within the batch is a duplicate of
//! the first), then the deletes (which may name appends of this batch).

use foldhash::HashMap;

use rustc_hash::FxHashSet;

use super::frame::{receipt_flags, FrameBuilder, High, REMEMBER};
use super::index::Index;
use super::remembered::Cut;
use crate::store::{Batch, CommitOutcome, Duplicate, Entry, EntryKind};

/// What encoding a batch found.
#[derive(Debug)]
pub(super) struct Encoded {
    pub outcome: CommitOutcome,
    /// Whether the frame changes anything (else nothing needs writing).
    pub changes: bool,
}

/// Encodes `batch` against the state in `index` into `frame`.
pub(super) fn encode(index: &Index, batch: &Batch, frame: &mut FrameBuilder) -> Encoded {
    let high = High {
        last_id: batch.highest_id().max(index.last_id),
        written_id: batch.highest_written_id().max(index.written_id),
    };
    let deletes: FxHashSet<u64> = batch.deletes.iter().copied().collect();
    let mut new_sends: HashMap<(&str, u64), u64> = HashMap::default();
    let mut outcome = CommitOutcome::default();
    let mut records = 0usize;
    frame.start(high, Cut::NONE);
    frame.section();
    for r in &batch.remembered {
        if known(index, &new_sends, &r.sender, r.send_id).is_none() {
            new_sends.insert((&r.sender, r.send_id), r.message_id);
            frame.remembered(&r.sender, r.send_id, r.message_id, r.at_ms);
            records += 1;
        }
    }
    let mut stored: Vec<&Entry> = Vec::with_capacity(batch.appends.len());
    let mut gone_at_once: FxHashSet<u64> = FxHashSet::default();
    for e in &batch.appends {
        let message = e.kind == EntryKind::Message;
        if message {
            if let Some(original) = known(index, &new_sends, &e.peer, e.send_id) {
                outcome.duplicates.push(Duplicate { id: e.id, original });
                continue;
            }
            new_sends.insert((&e.peer, e.send_id), e.id);
        }
        if deletes.contains(&e.id) {
            // Stored and deleted in one go: only the send is left to remember.
            if message {
                frame.remembered(&e.peer, e.send_id, e.id, e.sent_at_ms);
                records += 1;
            }
            gone_at_once.insert(e.id);
            continue;
        }
        stored.push(e);
    }
    frame.section();
    for e in &stored {
        let remember = if e.kind == EntryKind::Message {
            REMEMBER
        } else {
            0
        };
        frame.append(e, remember | receipt_flags(e.receipts));
    }
    records += stored.len();
    frame.section();
    for &id in &deletes {
        if gone_at_once.contains(&id) {
            continue;
        }
        if let Some((_, meta)) = index.get(id) {
            frame.delete(id, meta.segment);
            records += 1;
        }
    }
    Encoded {
        outcome,
        changes: records > 0 || high.last_id > index.last_id,
    }
}

/// The broker id `(sender, send_id)` got, if it is remembered or new in this batch.
fn known(
    index: &Index,
    new: &HashMap<(&str, u64), u64>,
    sender: &str,
    send_id: u64,
) -> Option<u64> {
    index
        .sent
        .get(sender, send_id)
        .map(|s| s.message_id)
        .or_else(|| new.get(&(sender, send_id)).copied())
}
