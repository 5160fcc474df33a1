//! Whether a body a page read returns is the one that was committed.
//!
//! Opening from a snapshot reads only the frames after it, so a byte damaged in an older frame
//! (a bad sector, a stray write) would otherwise go out as the body of a message. Before the
//! first body of a segment this store did not write is handed out, that segment is read once,
//! whole, and every frame's checksum checked; a frame that fails is damaged up to the next offset
//! at which a whole frame starts again. A body in a damaged stretch is reported (the index, from
//! the snapshot or an intact frame, still knows whose entry it is), never returned. Segments
//! written by this process were checked as they were written.

use std::ops::Range;

use rustc_hash::FxHashMap;

use super::frame;
use super::segment::{SegmentId, Segments};

/// What is known of each segment's frames.
#[derive(Debug, Default)]
pub(super) struct Verified {
    /// Segments with an id above this were created by this process.
    opened_head: SegmentId,
    /// Segments read whole, with the damaged stretches found.
    checked: FxHashMap<SegmentId, Vec<Range<u64>>>,
}

impl Verified {
    pub(super) fn new(opened_head: SegmentId) -> Self {
        Self {
            opened_head,
            checked: FxHashMap::default(),
        }
    }

    /// Whether the `len` bytes at `offset` of segment `id` lie in a damaged frame.
    pub(super) fn is_damaged(
        &mut self,
        segments: &Segments,
        id: SegmentId,
        offset: u64,
        len: u64,
    ) -> std::io::Result<bool> {
        let end = offset + len;
        Ok(self
            .damage(segments, id)?
            .iter()
            .any(|d| d.start < end && offset < d.end))
    }

    /// The damaged stretches of segment `id`, read and checked whole the first time it is asked
    /// for. A segment this process created has none.
    pub(super) fn damage(
        &mut self,
        segments: &Segments,
        id: SegmentId,
    ) -> std::io::Result<&[Range<u64>]> {
        if id > self.opened_head {
            return Ok(&[]);
        }
        if let std::collections::hash_map::Entry::Vacant(vacant) = self.checked.entry(id) {
            // Frames appended to the head after this read were written by this process.
            let bytes = segments.read(id, 0, segments.len(id) as usize)?;
            let damaged = damaged_stretches(&bytes);
            if !damaged.is_empty() {
                tracing::error!(
                    file = %segments.path(id).display(), ?damaged,
                    "log segment holds damaged frames; their entries are set aside, the segment is kept"
                );
            }
            vacant.insert(damaged);
        }
        Ok(&self.checked[&id])
    }

    /// Forgets what was known of a segment that was removed.
    pub(super) fn removed(&mut self, id: SegmentId) {
        self.checked.remove(&id);
    }
}

/// The stretches of a segment's `bytes` not covered by a whole frame with a matching checksum.
pub(super) fn damaged_stretches(bytes: &[u8]) -> Vec<Range<u64>> {
    let mut damaged = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        if let Some(len) = frame::valid_frame(&bytes[at..]) {
            at += len;
            continue;
        }
        let start = at;
        at += 1;
        while at < bytes.len() && frame::valid_frame(&bytes[at..]).is_none() {
            at += 1;
        }
        damaged.push(start as u64..at as u64);
    }
    damaged
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::log::frame::FrameBuilder;
    use crate::store::log::remembered::Cut;

    fn frame(last_id: u64) -> Vec<u8> {
        let mut builder = FrameBuilder::default();
        builder.start(
            crate::store::log::frame::High {
                last_id,
                written_id: last_id,
            },
            Cut::NONE,
        );
        for _ in 0..3 {
            builder.section();
        }
        builder.finish().to_vec()
    }

    #[test]
    fn a_damaged_frame_is_one_stretch_and_the_frames_around_it_are_whole() {
        let (a, b, c) = (frame(1), frame(2), frame(3));
        let mut bytes = [a.clone(), b.clone(), c].concat();
        assert!(damaged_stretches(&bytes).is_empty());
        bytes[a.len() + 10] ^= 0xff;
        let b_range = a.len() as u64..(a.len() + b.len()) as u64;
        assert_eq!(damaged_stretches(&bytes), vec![b_range]);
    }
}
