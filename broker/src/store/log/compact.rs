//! Reclaiming space under churn: a sealed segment nothing live needs is deleted; one that is mostly
//! dead is compacted, its live entries and remembered sends copied into the head as an ordinary
//! frame (same ids, so `last_id` and the order are unchanged) and the old file deleted.
//!
//! A segment whose deletes (or forgets) removed records of an older segment that still exists must
//! stay: without its tombstones a replay would bring those records back. Segments are visited
//! oldest first, so the older ones it waits for usually go in the same pass.

use bytes::Bytes;

use super::frame::REMEMBER;
use super::segment::SegmentId;
use super::LogStore;
use crate::store::{Entry, EntryKind, StoreError};

/// A sealed segment with less than this share of its bytes live (1/4) is compacted.
const COMPACT_BELOW_LIVE_QUARTERS: u64 = 1;

/// Deletes and compacts what it can; returns the bytes freed on disk.
pub(super) fn reclaim(store: &mut LogStore) -> Result<u64, StoreError> {
    if store.segments.head_len() == 0 {
        // The high-water mark may live only in an older segment until the head has a frame.
        return Ok(0);
    }
    let head = store.segments.head();
    let sealed: Vec<SegmentId> = store.segments.ids().filter(|&id| id < head).collect();
    let mut freed = 0;
    for id in sealed {
        let stats = store.index.segments.get(&id).cloned().unwrap_or_default();
        let waits = stats
            .deps
            .iter()
            .any(|&dep| dep != id && store.segments.contains(dep));
        if waits {
            continue;
        }
        let len = store.segments.len(id);
        if stats.live > 0 && stats.live * 4 >= len * COMPACT_BELOW_LIVE_QUARTERS {
            continue;
        }
        if stats.live > 0 {
            copy_live(store, id, len)?;
        }
        store
            .segments
            .remove(id)
            .map_err(|cause| store.io_error(id, cause))?;
        store.index.segments.remove(&id);
        tracing::debug!(
            segment = id,
            bytes = len,
            live = stats.live,
            "log segment reclaimed"
        );
        freed += len;
    }
    Ok(freed)
}

/// Copies everything live in segment `id` (`len` bytes) into the head, as one frame.
fn copy_live(store: &mut LogStore, id: SegmentId, len: u64) -> Result<(), StoreError> {
    let bytes = store
        .segments
        .read(id, 0, len as usize)
        .map_err(|cause| store.io_error(id, cause))?;
    let bytes = Bytes::from(bytes);
    let index = &store.index;
    let mut entries: Vec<(Entry, u8)> = Vec::new();
    for (mailbox, meta) in index.entries().filter(|(_, m)| m.segment == id) {
        let at = meta.offset as usize;
        let body = bytes.slice(at..at + meta.body_len as usize);
        // The send moves with its entry when this segment holds its record.
        let moves = meta.kind == EntryKind::Message
            && index
                .sent
                .get(&meta.peer, meta.send_id)
                .is_some_and(|s| s.message_id == meta.id && s.segment == id);
        let flags = if moves { REMEMBER } else { 0 };
        entries.push((super::entry(mailbox, meta, body), flags));
    }
    let carried: std::collections::HashSet<(&str, u64)> = entries
        .iter()
        .filter(|(_, flags)| flags & REMEMBER != 0)
        .map(|(e, _)| (e.peer.as_str(), e.send_id))
        .collect();
    let frame = &mut store.frame;
    frame.start(index.last_id, 0);
    frame.section();
    for (sender, send_id, sent) in index.sent.iter() {
        if sent.segment == id && !carried.contains(&(&**sender, send_id)) {
            frame.remembered(sender, send_id, sent.message_id, sent.at_ms);
        }
    }
    frame.section();
    for (entry, flags) in &entries {
        frame.append(entry, *flags);
    }
    frame.section();
    store.write_frame()
}
