//! How one committed batch looks on disk: a frame `[len u32][crc32c u32][payload]`, all integers
//! little-endian, and the payload's hand-written binary layout.
//!
//! A frame is the unit of atomicity: recovery keeps a frame whole or drops it whole, so a batch is
//! durable exactly when its frame is. The payload holds what the batch *did*, already resolved
//! against the store's state (duplicates left out, deletes of absent ids left out), so replaying it
//! needs no decisions:
//!
//! ```text
//! u8  kind (1 = a batch, 2 = a copy made by compaction or migration; 3 and 4 the same with
//!     forget_id below; plus 16 with written_id below)
//! u64 last_id            the store's last id once this frame applies (reservations included)
//! u64 written_id         kinds plus 16 only: the highest id written (appended or remembered) by
//!                        this frame or any before it, which the store's identity check compares
//!                        (`guard.rs`); frames without it count their last_id
//! u64 forget_before_ms   remembered sends older than this are forgotten (0: none)
//! u64 forget_id          kinds 3 and 4 only: sends accepted in the millisecond forget_before_ms
//!                        with a broker id below this are forgotten too (the cap on remembered
//!                        sends cuts inside a millisecond; kinds 1 and 2 mean 0)
//! u32 n, n × remembered: str sender, u64 send_id, u64 message_id, u64 at_ms
//! u32 n, n × append:     u64 id, u8 kind, u8 flags, str mailbox, str peer, u64 send_id,
//!                        u64 message_id, u64 sent_at_ms, u64 expires_at_ms, u32 body_len, body
//! u32 n, n × delete:     u64 id, u32 segment (where the deleted entry was recorded)
//! ```
//!
//! (`str` is `u32 len` + UTF-8 bytes.) An append's kind: 0 a message, 1 a `delivered` receipt, 2 an
//! `expired` one, 4 an `undeliverable` one. The append flag [`REMEMBER`] says the append also records
//! its sender's send as remembered; a copy made by compaction may leave it out. Flag bits 1–2 hold
//! the receipts a message's sender asked for (0 all, 1 delivered only, 2 none; see
//! [`receipt_flags`]), so frames written before the choice existed read as "all".

use super::remembered::Cut;
use crate::store::entry::{receipts_code, receipts_from_code};
use crate::store::{Entry, EntryKind};
use switchboard_proto::Receipts;

/// Bytes before the payload: its length and its checksum.
pub(super) const HEADER: usize = 8;
/// The smallest payload a frame can have (kind, last_id, forget, three empty sections).
pub(super) const MIN_PAYLOAD: usize = 1 + 8 + 8 + 4 * 3;
/// Payload kind of a batch's frame.
const KIND_BATCH: u8 = 1;
/// Payload kind of a frame that copies records forward (compaction, migration).
const KIND_COPY: u8 = 2;
/// [`KIND_BATCH`] and [`KIND_COPY`] whose forget cut carries an id (`remembered::Cut`); written
/// only when it does, so every other frame reads as before.
const KIND_BATCH_CUT: u8 = 3;
const KIND_COPY_CUT: u8 = 4;
/// Added to the kind when `written_id` follows `last_id` (every frame written now).
const WITH_WRITTEN: u8 = 16;
/// Append flag: the append also remembers `(peer, send_id)` → `id`.
pub(super) const REMEMBER: u8 = 1;
/// Where the receipt choice sits among an append's flags.
const RECEIPTS_SHIFT: u8 = 1;
const RECEIPTS_MASK: u8 = 0b110;

/// The append flag bits that record `receipts`.
pub(super) fn receipt_flags(receipts: Receipts) -> u8 {
    receipts_code(receipts) << RECEIPTS_SHIFT
}

/// The receipt choice an append's flags record, if they record one.
pub(super) fn receipts_from(flags: u8) -> Option<Receipts> {
    receipts_from_code((flags & RECEIPTS_MASK) >> RECEIPTS_SHIFT)
}

/// Builds one frame in a buffer that is reused from commit to commit.
#[derive(Debug, Default)]
pub(super) struct FrameBuilder {
    buf: Vec<u8>,
    /// Where the current section's count sits, and how many records it has so far.
    section: Option<(usize, u32)>,
}

/// The two high-water marks a frame carries: the store's last id and its highest written id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct High {
    /// The highest id committed or reserved: ids are handed out above it.
    pub last_id: u64,
    /// The highest id written (appended or remembered), never one only reserved.
    pub written_id: u64,
}

impl FrameBuilder {
    /// Starts a new frame for a batch, forgetting the previous one.
    pub(super) fn start(&mut self, high: High, forget: Cut) {
        self.begin(false, high, forget);
    }

    /// Starts a new frame of records copied forward.
    pub(super) fn start_copy(&mut self, high: High, forget: Cut) {
        self.begin(true, high, forget);
    }

    fn begin(&mut self, copy: bool, high: High, forget: Cut) {
        self.buf.clear();
        self.buf.extend_from_slice(&[0; HEADER]);
        let kind = match (copy, forget.id != 0) {
            (false, false) => KIND_BATCH,
            (true, false) => KIND_COPY,
            (false, true) => KIND_BATCH_CUT,
            (true, true) => KIND_COPY_CUT,
        };
        self.buf.push(kind + WITH_WRITTEN);
        self.u64(high.last_id);
        self.u64(high.written_id);
        self.u64(forget.ms);
        if forget.id != 0 {
            self.u64(forget.id);
        }
        self.section = None;
    }

    /// Closes the open section (if any) and opens the next; sections come in the order
    /// remembered, appends, deletes.
    pub(super) fn section(&mut self) {
        self.close_section();
        self.section = Some((self.buf.len(), 0));
        self.buf.extend_from_slice(&[0; 4]);
    }

    fn close_section(&mut self) {
        if let Some((at, count)) = self.section.take() {
            self.buf[at..at + 4].copy_from_slice(&count.to_le_bytes());
        }
    }

    fn counted(&mut self) {
        if let Some((_, count)) = &mut self.section {
            *count += 1;
        }
    }

    pub(super) fn remembered(&mut self, sender: &str, send_id: u64, message_id: u64, at_ms: u64) {
        self.counted();
        self.str(sender);
        self.u64(send_id);
        self.u64(message_id);
        self.u64(at_ms);
    }

    pub(super) fn append(&mut self, entry: &Entry, flags: u8) {
        self.counted();
        self.u64(entry.id);
        self.buf.push(kind_byte(entry.kind));
        self.buf.push(flags);
        self.str(&entry.mailbox);
        self.str(&entry.peer);
        for value in [
            entry.send_id,
            entry.message_id,
            entry.sent_at_ms,
            entry.expires_at_ms,
        ] {
            self.u64(value);
        }
        self.bytes(&entry.body);
    }

    pub(super) fn delete(&mut self, id: u64, segment: u32) {
        self.counted();
        self.u64(id);
        self.buf.extend_from_slice(&segment.to_le_bytes());
    }

    /// Closes the frame: fills in its length and checksum and returns it whole.
    pub(super) fn finish(&mut self) -> &[u8] {
        self.close_section();
        let payload_len = (self.buf.len() - HEADER) as u32;
        let crc = crc32c::crc32c(&self.buf[HEADER..]);
        self.buf[0..4].copy_from_slice(&payload_len.to_le_bytes());
        self.buf[4..8].copy_from_slice(&crc.to_le_bytes());
        &self.buf
    }

    fn u64(&mut self, value: u64) {
        self.buf.extend_from_slice(&value.to_le_bytes());
    }

    fn bytes(&mut self, value: &[u8]) {
        self.buf
            .extend_from_slice(&(value.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(value);
    }

    fn str(&mut self, value: &str) {
        self.bytes(value.as_bytes());
    }
}

pub(super) fn kind_byte(kind: EntryKind) -> u8 {
    kind.code()
}

pub(super) fn kind_from(byte: u8) -> Option<EntryKind> {
    EntryKind::from_code(byte)
}

/// What the header at the start of `bytes` says, or why there is no whole frame there.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Header {
    /// A frame whose payload is `bytes[HEADER..HEADER + len]` with checksum `crc`.
    Frame { len: usize, crc: u32 },
    /// Fewer bytes than the header, or than the length it announces.
    Short,
    /// A length no frame can have.
    BadLength,
}

/// Reads the frame header at the start of `bytes`.
pub(super) fn header(bytes: &[u8]) -> Header {
    let Some(head) = bytes.get(..HEADER) else {
        return Header::Short;
    };
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if len < MIN_PAYLOAD {
        return Header::BadLength;
    }
    if bytes.len() - HEADER < len {
        return Header::Short;
    }
    Header::Frame { len, crc }
}

/// Whether the whole frame at the start of `bytes` is there and its checksum matches; its length
/// (header included) if so.
pub(super) fn valid_frame(bytes: &[u8]) -> Option<usize> {
    match header(bytes) {
        Header::Frame { len, crc } if crc32c::crc32c(&bytes[HEADER..HEADER + len]) == crc => {
            Some(HEADER + len)
        }
        _ => None,
    }
}

/// A remembered send as a frame holds it.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct RememberedRecord<'a> {
    pub sender: &'a str,
    pub send_id: u64,
    pub message_id: u64,
    pub at_ms: u64,
}

/// An append as a frame holds it; the body stays in the payload, at `body_at`.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct AppendRecord<'a> {
    pub id: u64,
    pub kind: EntryKind,
    pub flags: u8,
    /// The receipt choice recorded in `flags`.
    pub receipts: Receipts,
    pub mailbox: &'a str,
    pub peer: &'a str,
    pub send_id: u64,
    pub message_id: u64,
    pub sent_at_ms: u64,
    pub expires_at_ms: u64,
    /// Offset of the body in the payload.
    pub body_at: usize,
    pub body_len: u32,
}

/// A decoded payload; strings borrow from it.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Decoded<'a> {
    /// Records copied forward rather than a batch: its forget time may have been applied already.
    pub copy: bool,
    pub high: High,
    /// Remembered sends before this are forgotten (`Cut::NONE`: none).
    pub forget: Cut,
    pub remembered: Vec<RememberedRecord<'a>>,
    pub appends: Vec<AppendRecord<'a>>,
    /// Ids deleted, each with the segment that recorded the entry.
    pub deletes: Vec<(u64, u32)>,
}

/// Decodes a payload whose checksum matched; an error says what is malformed (a checksum that
/// matches over a malformed payload means a bug or deliberate damage, never a torn write).
pub(super) fn decode(payload: &[u8]) -> Result<Decoded<'_>, String> {
    let mut r = Reader {
        buf: payload,
        at: 0,
    };
    let kind = r.u8()?;
    let with_written = kind & WITH_WRITTEN != 0;
    let (copy, with_id) = match kind & !WITH_WRITTEN {
        KIND_BATCH => (false, false),
        KIND_COPY => (true, false),
        KIND_BATCH_CUT => (false, true),
        KIND_COPY_CUT => (true, true),
        _ => return Err("unknown frame kind".into()),
    };
    let last_id = r.u64()?;
    // A frame from before the field: its last id covers every id written, and a reservation.
    let written_id = if with_written { r.u64()? } else { last_id };
    let ms = r.u64()?;
    let id = if with_id { r.u64()? } else { 0 };
    let mut frame = Decoded {
        copy,
        high: High {
            last_id,
            written_id,
        },
        forget: Cut { ms, id },
        ..Decoded::default()
    };
    for _ in 0..r.u32()? {
        frame.remembered.push(RememberedRecord {
            sender: r.str()?,
            send_id: r.u64()?,
            message_id: r.u64()?,
            at_ms: r.u64()?,
        });
    }
    for _ in 0..r.u32()? {
        frame.appends.push(r.append()?);
    }
    for _ in 0..r.u32()? {
        frame.deletes.push((r.u64()?, r.u32()?));
    }
    if r.at != payload.len() {
        return Err(format!(
            "{} bytes after the last record",
            payload.len() - r.at
        ));
    }
    Ok(frame)
}

/// Reads little-endian values off a byte slice, saying where it ran out (frames and snapshots).
pub(super) struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// A reader of `buf` from byte `at`.
    pub(super) fn new(buf: &'a [u8], at: usize) -> Self {
        Self { buf, at }
    }

    pub(super) fn remaining(&self) -> usize {
        self.buf.len() - self.at
    }

    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&end| end <= self.buf.len());
        let Some(end) = end else {
            return Err(format!("record runs past the payload at byte {}", self.at));
        };
        let bytes = &self.buf[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    pub(super) fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    pub(super) fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(super) fn u64(&mut self) -> Result<u64, String> {
        let mut value = [0; 8];
        value.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(value))
    }

    fn str(&mut self) -> Result<&'a str, String> {
        let len = self.u32()? as usize;
        let at = self.at;
        std::str::from_utf8(self.take(len)?).map_err(|_| format!("invalid UTF-8 at byte {at}"))
    }

    fn append(&mut self) -> Result<AppendRecord<'a>, String> {
        let id = self.u64()?;
        let kind = kind_from(self.u8()?).ok_or_else(|| format!("entry {id}: unknown kind"))?;
        let flags = self.u8()?;
        let receipts =
            receipts_from(flags).ok_or_else(|| format!("entry {id}: unknown receipt choice"))?;
        let mailbox = self.str()?;
        let peer = self.str()?;
        let (send_id, message_id) = (self.u64()?, self.u64()?);
        let (sent_at_ms, expires_at_ms) = (self.u64()?, self.u64()?);
        let body_len = self.u32()?;
        let body_at = self.at;
        self.take(body_len as usize)?;
        Ok(AppendRecord {
            id,
            kind,
            flags,
            receipts,
            mailbox,
            peer,
            send_id,
            message_id,
            sent_at_ms,
            expires_at_ms,
            body_at,
            body_len,
        })
    }
}

/// Bytes an append record takes, body included: what a live entry keeps alive in its segment.
pub(super) fn append_size(mailbox: &str, peer: &str, body_len: u32) -> u64 {
    (8 + 2 + 4 * 3 + 8 * 4) as u64 + mailbox.len() as u64 + peer.len() as u64 + body_len as u64
}

/// Bytes a remembered record takes: what a remembered send keeps alive in its segment.
pub(super) fn remembered_size(sender: &str) -> u64 {
    (4 + 8 * 3) as u64 + sender.len() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::entry;

    #[test]
    fn a_frame_decodes_to_what_was_built() {
        let mut b = FrameBuilder::default();
        b.start(
            High {
                last_id: 42,
                written_id: 9,
            },
            Cut { ms: 7, id: 3 },
        );
        b.section();
        b.remembered("alice", 1, 2, 3);
        b.section();
        let e = entry(9, "bob", "hello");
        b.append(&e, REMEMBER);
        b.section();
        b.delete(5, 1);
        b.delete(6, 2);
        let frame = b.finish().to_vec();
        assert_eq!(valid_frame(&frame), Some(frame.len()));
        let payload = &frame[HEADER..];
        let d = decode(payload).unwrap();
        assert_eq!(
            (d.high.last_id, d.high.written_id, d.forget),
            (42, 9, Cut { ms: 7, id: 3 })
        );
        assert_eq!(d.remembered[0].sender, "alice");
        let a = &d.appends[0];
        assert_eq!(
            (a.id, a.mailbox, a.peer, a.flags),
            (9, "bob", "alice", REMEMBER)
        );
        let body = &payload[a.body_at..a.body_at + a.body_len as usize];
        assert_eq!(body, b"hello");
        assert_eq!(d.deletes, [(5, 1), (6, 2)]);
    }

    #[test]
    fn a_frame_from_before_the_written_id_counts_its_last_id_as_written() {
        let mut payload = vec![KIND_BATCH];
        payload.extend_from_slice(&77u64.to_le_bytes());
        payload.extend_from_slice(&0u64.to_le_bytes());
        payload.extend_from_slice(&[0; 12]);
        let d = decode(&payload).unwrap();
        assert_eq!(
            d.high,
            High {
                last_id: 77,
                written_id: 77
            }
        );
    }

    #[test]
    fn a_damaged_frame_is_not_valid() {
        let mut b = FrameBuilder::default();
        b.start(High::default(), Cut::NONE);
        b.section();
        b.section();
        b.section();
        let frame = b.finish().to_vec();
        assert_eq!(header(&frame[..frame.len() - 1]), Header::Short);
        assert_eq!(header(&[0; 12]), Header::BadLength);
        let mut flipped = frame.clone();
        flipped[HEADER + 3] ^= 1;
        assert_eq!(valid_frame(&flipped), None);
    }
}
