//! What a benchmark message carries: who sent it, its sequence number and when it left.
//!
//! Every workload writes the same 20-byte header at the front of each body, padded to `--size`:
//! `sender: u32 BE`, `seq: u64 BE`, `sent_ns: u64 BE`. The receiver reads it back to check that each
//! `(sender, seq)` arrived exactly once and to time the trip. Times are nanoseconds since this
//! process started ([`now_ns`]), so sender and receiver must be the same process, as they are here.

use std::sync::OnceLock;
use std::time::Instant;

/// Bytes of the header; a body is never shorter.
pub(crate) const HEADER_LEN: usize = 20;

/// The fields of a body's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub sender: u32,
    pub seq: u64,
    pub sent_ns: u64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds on the monotonic clock since the process first asked.
pub(crate) fn now_ns() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Writes a body of `size` bytes (at least [`HEADER_LEN`]) stamped with the current time into `out`.
pub(crate) fn write(out: &mut Vec<u8>, sender: u32, seq: u64, size: usize) {
    out.clear();
    out.extend_from_slice(&sender.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&now_ns().to_be_bytes());
    out.resize(size.max(HEADER_LEN), b'.');
}

/// A fresh stamped body.
pub(crate) fn make(sender: u32, seq: u64, size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size.max(HEADER_LEN));
    write(&mut out, sender, seq, size);
    out
}

/// Reads the header back; `None` for a body that is too short to be one of ours.
pub(crate) fn read(body: &[u8]) -> Option<Header> {
    let sender = u32::from_be_bytes(body.get(0..4)?.try_into().ok()?);
    let seq = u64::from_be_bytes(body.get(4..12)?.try_into().ok()?);
    let sent_ns = u64::from_be_bytes(body.get(12..20)?.try_into().ok()?);
    Some(Header {
        sender,
        seq,
        sent_ns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_reads_back_what_was_written() {
        let body = make(7, 123_456, 128);
        assert_eq!(body.len(), 128);
        let header = read(&body).unwrap();
        assert_eq!((header.sender, header.seq), (7, 123_456));
        assert!(header.sent_ns <= now_ns());
    }

    #[test]
    fn short_bodies_are_not_ours() {
        assert_eq!(read(b"short"), None);
        assert_eq!(make(1, 1, 4).len(), HEADER_LEN);
    }
}
