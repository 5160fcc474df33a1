//! Opening a log: the snapshot (if there is a valid one) plus the frames after it, or every frame
//! from the oldest segment; and what a damaged frame means depending on where it is.
//!
//! Only the newest segment can end in a torn write (a sealed segment is fsynced before the head
//! moves on), so a bad frame there, with nothing valid behind it, is a write the crash interrupted:
//! it is cut off and the file truncated to the last whole frame. A bad frame anywhere else, or one
//! in the newest segment followed by a valid frame (damage, not a torn write), is refused with the
//! file and the offset: the store never skips data silently.

use std::path::Path;

use super::frame::{self, Header, HEADER};
use super::index::Index;
use super::segment::{self, SegmentId, Segments};
use super::snapshot;
use crate::store::StoreError;

/// A log opened and its index rebuilt.
pub(super) struct Recovered {
    pub segments: Segments,
    pub index: Index,
    /// Bytes of frames replayed (what a new snapshot would save the next open).
    pub replayed_bytes: u64,
}

/// Why a replay from a snapshot did not work.
enum ReplayError {
    /// The snapshot does not describe this log; a full replay will.
    Stale(String),
    Store(StoreError),
}

impl From<StoreError> for ReplayError {
    fn from(error: StoreError) -> Self {
        ReplayError::Store(error)
    }
}

/// Opens the log in `dir` (creating its first segment if there is none) and rebuilds the index.
pub(super) fn recover(dir: &Path, segment_bytes: u64) -> Result<Recovered, StoreError> {
    let io = |cause| StoreError::Io {
        path: dir.to_path_buf(),
        cause,
    };
    let mut ids = segment::list(dir).map_err(io)?;
    if ids.is_empty() {
        Segments::create(dir, 1).map_err(io)?;
        ids.push(1);
    }
    let (index, replayed) = match snapshot::load(dir) {
        Some(snap) => {
            let mut index = snap.index;
            let from = Position {
                segment: snap.segment,
                offset: snap.offset,
                last_frame: snap.last_frame,
            };
            match replay(dir, &ids, &mut index, from, Mode::Open) {
                Ok(replayed) => (index, replayed),
                Err(ReplayError::Store(error)) => return Err(error),
                Err(ReplayError::Stale(why)) => {
                    tracing::warn!(dir = %dir.display(), why, "the log snapshot does not match the log; replaying the whole log");
                    full_replay(dir, &ids, Mode::Open)?.0
                }
            }
        }
        None => full_replay(dir, &ids, Mode::Open)?.0,
    };
    let segments = Segments::open(
        dir,
        &ids,
        replayed.head_len,
        replayed.last_frame,
        segment_bytes,
    )
    .map_err(io)?;
    Ok(Recovered {
        segments,
        index,
        replayed_bytes: replayed.bytes,
    })
}

/// Where a replay starts: a segment, an offset in it, and the frame that must end there.
struct Position {
    segment: SegmentId,
    offset: u64,
    last_frame: Option<(u64, u32)>,
}

/// What a replay found.
pub(super) struct Replayed {
    head_len: u64,
    /// Where the head's last frame starts, and its checksum.
    last_frame: Option<(u64, u32)>,
    pub(super) bytes: u64,
    /// A torn tail found (and, opening, cut off).
    torn: Option<TornTail>,
}

/// Whether a replay opens the log (and cuts off a torn tail) or only checks it (and reports one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Open,
    Check,
}

/// A torn write at the end of the newest segment: what opening the log would cut off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    pub path: std::path::PathBuf,
    pub offset: u64,
    pub bytes: u64,
}

/// Replays every segment from the first into a fresh index.
pub(super) fn full_replay(
    dir: &Path,
    ids: &[SegmentId],
    mode: Mode,
) -> Result<((Index, Replayed), Option<TornTail>), StoreError> {
    let mut index = Index::default();
    let from = Position {
        segment: ids[0],
        offset: 0,
        last_frame: None,
    };
    match replay(dir, ids, &mut index, from, mode) {
        Ok(replayed) => {
            let torn = replayed.torn.clone();
            Ok(((index, replayed), torn))
        }
        Err(ReplayError::Store(error)) => Err(error),
        Err(ReplayError::Stale(why)) => Err(StoreError::Incompatible(format!(
            "the log in {} is inconsistent: {why}",
            dir.display()
        ))),
    }
}

/// Applies every frame from `from` on.
fn replay(
    dir: &Path,
    ids: &[SegmentId],
    index: &mut Index,
    from: Position,
    mode: Mode,
) -> Result<Replayed, ReplayError> {
    let Position {
        segment: from,
        offset,
        last_frame,
    } = from;
    let newest = ids[ids.len() - 1];
    if from > newest {
        return Err(ReplayError::Stale(format!(
            "it covers segment {from}, the newest is {newest}"
        )));
    }
    let mut replayed = Replayed {
        head_len: 0,
        last_frame: None,
        bytes: 0,
        torn: None,
    };
    for &id in ids.iter().filter(|&&id| id >= from) {
        let path = dir.join(segment::file_name(id));
        // From a snapshot, only the frame it ends with and what follows are read.
        let base = match (id == from, last_frame) {
            (true, Some((start, _))) => start.min(offset),
            (true, None) => offset,
            (false, _) => 0,
        };
        let bytes = read_from(&path, base)?;
        let start = if id == from { offset - base } else { 0 } as usize;
        if id == from {
            let last_frame = last_frame.map(|(at, crc)| (at - base, crc));
            check_covered(&path, &bytes, start, last_frame).map_err(ReplayError::Stale)?;
        }
        let mut last = None;
        let at_base = |at: u64| at + base;
        let newest = (id == newest).then_some(mode);
        let (end, torn) = replay_segment(&path, &bytes, base, start, newest, |payload, at| {
            let decoded =
                frame::decode(payload).map_err(|what| corrupt(&path, at_base(at), &what))?;
            index.apply(&decoded, id, at_base(at) + HEADER as u64);
            last = Some((at_base(at), frame_crc(&bytes[at as usize..])));
            Ok(())
        })?;
        replayed.torn = replayed.torn.take().or(torn);
        replayed.bytes += (end - start) as u64;
        replayed.head_len = base + end as u64;
        replayed.last_frame = last.or(if id == from { last_frame } else { None });
    }
    check_locations(index, ids).map_err(ReplayError::Stale)?;
    Ok(replayed)
}

/// Calls `apply` with each frame's payload and start in `bytes` (the file from byte `base` on)
/// from `start`; returns where the last whole frame ends, and the torn tail after it if any. In the
/// newest segment (`newest` is the replay's mode there) a torn tail is cut off (the file truncated)
/// when opening, only reported when checking.
fn replay_segment(
    path: &Path,
    bytes: &[u8],
    base: u64,
    start: usize,
    newest: Option<Mode>,
    mut apply: impl FnMut(&[u8], u64) -> Result<(), StoreError>,
) -> Result<(usize, Option<TornTail>), StoreError> {
    let mut at = start;
    while at < bytes.len() {
        let rest = &bytes[at..];
        if let Some(len) = frame::valid_frame(rest) {
            apply(&rest[HEADER..len], at as u64)?;
            at += len;
            continue;
        }
        let what = damage(rest);
        let offset = base + at as u64;
        let Some(mode) = newest.filter(|_| is_torn_tail(rest)) else {
            return Err(corrupt(path, offset, what));
        };
        let dropped = bytes.len() - at;
        if mode == Mode::Open {
            tracing::warn!(file = %path.display(), offset, dropped_bytes = dropped, what, "cut off a torn write at the end of the log");
            truncate(path, offset)?;
        }
        let torn = TornTail {
            path: path.to_path_buf(),
            offset,
            bytes: dropped as u64,
        };
        return Ok((at, Some(torn)));
    }
    Ok((at, None))
}

/// Segment `path` from byte `base` on (nothing if it is shorter).
fn read_from(path: &Path, base: u64) -> Result<Vec<u8>, StoreError> {
    use std::io::{Read as _, Seek as _};
    let io = |cause| StoreError::Io {
        path: path.to_path_buf(),
        cause,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len >= u64::from(u32::MAX) {
        return Err(corrupt(path, 0, "larger than a segment can be"));
    }
    let mut bytes = Vec::with_capacity(len.saturating_sub(base) as usize);
    file.seek(std::io::SeekFrom::Start(base)).map_err(io)?;
    file.read_to_end(&mut bytes).map_err(io)?;
    Ok(bytes)
}

fn truncate(path: &Path, len: u64) -> Result<(), StoreError> {
    let io = |cause| StoreError::Io {
        path: path.to_path_buf(),
        cause,
    };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io)?;
    file.set_len(len).map_err(io)?;
    file.sync_all().map_err(io)
}

/// What is wrong with the frame at the start of `rest`, which is not valid.
fn damage(rest: &[u8]) -> &'static str {
    match frame::header(rest) {
        Header::Short => "the frame is cut short",
        Header::BadLength => "the frame has an impossible length",
        Header::Frame { .. } => "the frame's checksum does not match",
    }
}

/// Whether an invalid frame at the start of `rest` is a torn write: nothing valid follows it.
/// A frame whose length is intact and whose successor is valid was damaged after it was written.
fn is_torn_tail(rest: &[u8]) -> bool {
    match frame::header(rest) {
        Header::Short | Header::BadLength => true,
        Header::Frame { len, .. } => frame::valid_frame(&rest[HEADER + len..]).is_none(),
    }
}

/// The checksum in the frame header at the start of `bytes` (which holds a valid frame).
fn frame_crc(bytes: &[u8]) -> u32 {
    u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]])
}

/// Whether `bytes` (segment `path`) is the log a snapshot covering `offset` bytes of it, ending
/// with `last_frame`, was taken of.
fn check_covered(
    path: &Path,
    bytes: &[u8],
    offset: usize,
    last_frame: Option<(u64, u32)>,
) -> Result<(), String> {
    if offset > bytes.len() {
        return Err(format!(
            "it covers {offset} bytes of {}, which has {}",
            path.display(),
            bytes.len()
        ));
    }
    let Some((start, crc)) = last_frame else {
        return Ok(());
    };
    let start = start as usize;
    let matches = bytes.get(start..offset).is_some_and(|frame| {
        frame::valid_frame(frame) == Some(frame.len()) && frame_crc(frame) == crc
    });
    if matches {
        Ok(())
    } else {
        Err(format!(
            "the frame it ends with is not at byte {start} of {}",
            path.display()
        ))
    }
}

fn corrupt(path: &Path, offset: u64, what: &str) -> StoreError {
    StoreError::LogCorrupt {
        path: path.to_path_buf(),
        offset,
        what: what.to_owned(),
    }
}

/// Every live entry and remembered send must lie in a segment that exists.
fn check_locations(index: &mut Index, ids: &[SegmentId]) -> Result<(), String> {
    let exists = |id: &SegmentId| ids.binary_search(id).is_ok();
    if let Some((_, meta)) = index.entries().find(|(_, m)| !exists(&m.segment)) {
        return Err(format!(
            "entry {} lies in segment {}, which is gone",
            meta.id, meta.segment
        ));
    }
    if let Some((sender, id, sent)) = index.sent.iter().find(|(_, _, s)| !exists(&s.segment)) {
        return Err(format!(
            "the send {id} of {sender} is recorded in segment {}, which is gone",
            sent.segment
        ));
    }
    index.segments.retain(|id, _| exists(id));
    Ok(())
}
