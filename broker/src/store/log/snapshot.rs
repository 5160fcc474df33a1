//! The index snapshot: the whole in-memory index in one checksummed file, with the log position it
//! covers, so an open reads one file and replays only the frames after it instead of the whole log.
//!
//! Written at a clean close and by housekeeping once enough was logged since the last one; always
//! to a temporary file that is fsynced and renamed over the old one, so a crash leaves the old
//! snapshot or the new, never half of one. A snapshot is only an accelerator: the log alone always
//! holds everything, so one that is missing, damaged or does not match the log is logged and
//! ignored. Layout (little-endian):
//!
//! ```text
//! magic "SBLOGSN3", u32 segment, u64 offset (the position covered), u64 start and u32 crc of
//! the frame ending there (0, 0: none), u64 last_id, u64 written_id, 2 × u64 forgot_before
//! (ms, id)
//! u32 n, n × str name                       (every name below is an index into this table)
//! u32 n, n × (u32 segment, 2 × u64 forget (ms, id), u32 k, k × u32 dep)
//! u32 n, n × (u32 mailbox, u32 k, k × entry: u64 id, u8 kind, u8 receipts, u32 peer,
//!             u64 send_id,
//!             u64 message_id, u64 sent_at_ms, u64 expires_at_ms, u32 segment, u32 offset, u32 len)
//! u32 n, n × (u32 sender, u32 k, k × (u64 send_id, u64 message_id, u64 at_ms, u32 segment))
//! u32 crc32c of everything before it
//! ```

use foldhash::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use super::frame::{kind_byte, kind_from, receipt_flags, receipts_from, Reader};
use super::index::{Index, Meta};
use super::remembered::{Cut, Sent};
use super::segment::{sync_dir, SegmentId, Segments};
use crate::store::StoreError;

const FILE: &str = "index.snap";
const TEMP: &str = "index.snap.tmp";
/// Version 2 added each entry's receipt choice, version 3 the id in the forget cuts
/// (`remembered::Cut`), version 4 the highest id written (`guard.rs`); an older snapshot is
/// foreign, and the store reads the whole log instead, once.
const MAGIC: &[u8; 8] = b"SBLOGSN4";

/// A loaded snapshot: the index as it was once every frame before `segment`/`offset` applied.
pub(super) struct Snapshot {
    pub index: Index,
    pub segment: SegmentId,
    pub offset: u64,
    /// Where the frame ending at `offset` starts, and its checksum.
    pub last_frame: Option<(u64, u32)>,
}

/// Writes a snapshot of `index`, which covers the log up to the end of the head.
pub(super) fn write(segments: &Segments, index: &Index) -> Result<(), StoreError> {
    let dir = segments.dir();
    let io = |cause| StoreError::Io {
        path: dir.join(TEMP),
        cause,
    };
    segments.sync_head().map_err(io)?;
    let bytes = encode(index, segments);
    let mut file = std::fs::File::create(dir.join(TEMP)).map_err(io)?;
    file.write_all(&bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(dir.join(TEMP), dir.join(FILE)).map_err(io)?;
    sync_dir(dir).map_err(io)
}

fn encode(index: &Index, segments: &Segments) -> Vec<u8> {
    let mut w = Writer::default();
    w.buf.extend_from_slice(MAGIC);
    w.u32(segments.head());
    w.u64(segments.head_len());
    let (last_start, last_crc) = segments.last_frame().unwrap_or((0, 0));
    w.u64(last_start);
    w.u32(last_crc);
    w.u64(index.last_id);
    w.u64(index.written_id);
    w.u64(index.forgot_before.ms);
    w.u64(index.forgot_before.id);
    let mut names: HashMap<*const u8, u32> = HashMap::default();
    let mut table: Vec<Arc<str>> = Vec::new();
    let mut name = |n: &Arc<str>, table: &mut Vec<Arc<str>>| -> u32 {
        *names.entry(n.as_ptr()).or_insert_with(|| {
            table.push(n.clone());
            (table.len() - 1) as u32
        })
    };
    // Names first (into a side buffer), since the table precedes what refers to it.
    let mut body = Writer::default();
    body.u32(index.segments.len() as u32);
    for (id, stats) in &index.segments {
        body.u32(*id);
        body.u64(stats.forget.ms);
        body.u64(stats.forget.id);
        body.u32(stats.deps.len() as u32);
        stats.deps.iter().for_each(|d| body.u32(*d));
    }
    let mailboxes: Vec<_> = index
        .mailboxes
        .iter()
        .filter(|m| !m.entries.is_empty())
        .collect();
    body.u32(mailboxes.len() as u32);
    for m in mailboxes {
        body.u32(name(&m.name, &mut table));
        body.u32(m.entries.len() as u32);
        for e in &m.entries {
            body.u64(e.id);
            body.buf.push(kind_byte(e.kind));
            body.buf.push(receipt_flags(e.receipts));
            body.u32(name(&e.peer, &mut table));
            for v in [e.send_id, e.message_id, e.sent_at_ms, e.expires_at_ms] {
                body.u64(v);
            }
            for v in [e.segment, e.offset, e.body_len] {
                body.u32(v);
            }
        }
    }
    let senders: Vec<_> = index.sent.senders().collect();
    body.u32(senders.len() as u32);
    for (sender, sends) in senders {
        body.u32(name(sender, &mut table));
        body.u32(sends.len() as u32);
        for (send_id, s) in sends {
            for v in [*send_id, s.message_id, s.at_ms] {
                body.u64(v);
            }
            body.u32(s.segment);
        }
    }
    w.u32(table.len() as u32);
    for n in table {
        w.u32(n.len() as u32);
        w.buf.extend_from_slice(n.as_bytes());
    }
    w.buf.extend_from_slice(&body.buf);
    let crc = crc32c::crc32c(&w.buf);
    w.u32(crc);
    w.buf
}

#[derive(Default)]
struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
}

/// The snapshot in `dir`, if there is a valid one; a damaged one is logged and ignored.
pub(super) fn load(dir: &Path) -> Option<Snapshot> {
    let path = dir.join(FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(error) => {
            tracing::warn!(file = %path.display(), %error, "cannot read the log snapshot; replaying the whole log");
            return None;
        }
    };
    match decode(&bytes) {
        Ok(snapshot) => Some(snapshot),
        Err(why) => {
            tracing::warn!(file = %path.display(), why, "the log snapshot is damaged; replaying the whole log");
            None
        }
    }
}

fn decode(bytes: &[u8]) -> Result<Snapshot, String> {
    let body_len = bytes
        .len()
        .checked_sub(4)
        .filter(|&n| n >= MAGIC.len())
        .ok_or("too short")?;
    let (body, crc) = bytes.split_at(body_len);
    if crc32c::crc32c(body) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
        return Err("checksum does not match".into());
    }
    if &body[..MAGIC.len()] != MAGIC {
        return Err("not a snapshot of this version".into());
    }
    let mut r = Reader::new(body, MAGIC.len());
    let segment = r.u32()?;
    let offset = r.u64()?;
    let last_start = r.u64()?;
    let last_crc = r.u32()?;
    let mut index = Index::default();
    index.last_id = r.u64()?;
    index.written_id = r.u64()?;
    index.forgot_before = Cut {
        ms: r.u64()?,
        id: r.u64()?,
    };
    let mut names = Vec::new();
    for _ in 0..r.u32()? {
        let len = r.u32()? as usize;
        let text = std::str::from_utf8(r.take(len)?).map_err(|_| "a name is not UTF-8")?;
        names.push(index.intern(text));
    }
    let name = |i: u32| names.get(i as usize).cloned().ok_or("bad name index");
    for _ in 0..r.u32()? {
        let id = r.u32()?;
        let forget = Cut {
            ms: r.u64()?,
            id: r.u64()?,
        };
        let deps = (0..r.u32()?).map(|_| r.u32()).collect::<Result<_, _>>()?;
        let stats = index.stats(id);
        stats.deps = deps;
        stats.forget = forget;
    }
    for _ in 0..r.u32()? {
        let mailbox = name(r.u32()?)?;
        let n = r.u32()? as usize;
        let mut entries = Vec::with_capacity(n.min(r.remaining() / 57));
        for _ in 0..n {
            entries.push(meta(&mut r, &name)?);
        }
        index.load_mailbox(&mailbox, entries);
    }
    for _ in 0..r.u32()? {
        let sender = name(r.u32()?)?;
        let n = r.u32()? as usize;
        let mut sends =
            HashMap::with_capacity_and_hasher(n.min(r.remaining() / 28), Default::default());
        for _ in 0..n {
            let send_id = r.u64()?;
            let (message_id, at_ms) = (r.u64()?, r.u64()?);
            let segment = r.u32()?;
            let sent = Sent {
                message_id,
                at_ms,
                segment,
            };
            sends.insert(send_id, sent);
        }
        index.load_sends(sender, sends);
    }
    if r.remaining() != 0 {
        return Err("bytes after the last record".into());
    }
    Ok(Snapshot {
        index,
        segment,
        offset,
        last_frame: (offset > 0).then_some((last_start, last_crc)),
    })
}

/// One entry of the snapshot.
fn meta(
    r: &mut Reader<'_>,
    name: &impl Fn(u32) -> Result<Arc<str>, &'static str>,
) -> Result<Meta, String> {
    let id = r.u64()?;
    let kind = kind_from(r.take(1)?[0]).ok_or_else(|| format!("entry {id}: unknown kind"))?;
    let receipts = receipts_from(r.take(1)?[0])
        .ok_or_else(|| format!("entry {id}: unknown receipt choice"))?;
    let peer = name(r.u32()?)?;
    let (send_id, message_id) = (r.u64()?, r.u64()?);
    let (sent_at_ms, expires_at_ms) = (r.u64()?, r.u64()?);
    let (segment, offset, body_len) = (r.u32()?, r.u32()?, r.u32()?);
    Ok(Meta {
        id,
        send_id,
        message_id,
        sent_at_ms,
        expires_at_ms,
        peer,
        offset,
        body_len,
        segment,
        kind,
        receipts,
    })
}
