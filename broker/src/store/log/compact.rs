//! Reclaiming space under churn: a sealed segment nothing live needs is deleted; one that is mostly
//! dead is compacted, its live entries and remembered sends copied into the head as an ordinary
//! frame (same ids, so `last_id` and the order are unchanged) and the old file deleted.
//!
//! A segment whose deletes removed entries recorded in an older segment that still exists carries
//! those tombstones forward into the copy: without them a replay would bring the entries back. Its
//! latest "forget sends before" time is carried forward the same way while older segments remain.

use bytes::Bytes;

use super::frame::{self, receipt_flags, REMEMBER};
use super::remembered::Cut;
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
        let len = store.segments.len(id);
        if stats.live > 0 && stats.live * 4 >= len * COMPACT_BELOW_LIVE_QUARTERS {
            continue;
        }
        let older_remain = store.segments.ids().next().is_some_and(|first| first < id);
        let forget = if older_remain {
            stats.forget
        } else {
            Cut::NONE
        };
        let needs_tombstones = stats
            .deps
            .iter()
            .any(|&dep| dep != id && store.segments.contains(dep));
        let needed = stats.live > 0 || needs_tombstones;
        let damaged = match needed {
            true => store
                .verified
                .damage(&store.segments, id)
                .map(|d| !d.is_empty()),
            false => Ok(false),
        };
        if damaged.map_err(|cause| store.io_error(id, cause))? {
            // Copying it forward would give its damaged bodies a valid checksum: it stays.
            continue;
        }
        let bytes = if needed {
            let bytes = store
                .segments
                .read(id, 0, len as usize)
                .map_err(|cause| store.io_error(id, cause))?;
            Some(Bytes::from(bytes))
        } else {
            None
        };
        if bytes.is_some() || forget > Cut::NONE {
            copy_forward(store, id, bytes.unwrap_or_default(), forget)?;
        }
        store
            .segments
            .remove(id)
            .map_err(|cause| store.io_error(id, cause))?;
        store.index.segments.remove(&id);
        store.verified.removed(id);
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

/// The tombstones in segment `id` (its bytes) that are still needed: those of entries recorded
/// in an older segment that still exists.
fn needed_tombstones(store: &LogStore, id: SegmentId, bytes: &[u8]) -> Vec<(u64, u32)> {
    let mut needed = Vec::new();
    let mut at = 0;
    while let Some(len) = frame::valid_frame(&bytes[at..]) {
        if let Ok(decoded) = frame::decode(&bytes[at + frame::HEADER..at + len]) {
            needed.extend(
                decoded
                    .deletes
                    .into_iter()
                    .filter(|&(_, seg)| seg != id && store.segments.contains(seg)),
            );
        }
        at += len;
    }
    needed
}

/// Copies everything segment `id` (`bytes`, empty if nothing is needed from it) still holds that
/// is needed into the head, as one frame: live entries, remembered sends, tombstones of older
/// segments, and its forget time.
fn copy_forward(
    store: &mut LogStore,
    id: SegmentId,
    bytes: Bytes,
    forget: Cut,
) -> Result<(), StoreError> {
    let tombstones = needed_tombstones(store, id, &bytes);
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
        let flags = if moves { REMEMBER } else { 0 } | receipt_flags(meta.receipts);
        entries.push((super::entry(mailbox, meta, body), flags));
    }
    let carried: std::collections::HashSet<(&str, u64)> = entries
        .iter()
        .filter(|(_, flags)| flags & REMEMBER != 0)
        .map(|(e, _)| (e.peer.as_str(), e.send_id))
        .collect();
    let frame = &mut store.frame;
    frame.start_copy(index.high(), forget);
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
    for (deleted, recorded_in) in tombstones {
        frame.delete(deleted, recorded_in);
    }
    store.write_frame()
}
