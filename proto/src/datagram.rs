//! What one UDP datagram carries, and how either side knows it is genuine.
//!
//! UDP source addresses are forged trivially, so a datagram proves itself: it names the TCP session
//! it belongs to (the number `hi` gave), carries a sequence number that only increases, and ends in a
//! MAC under that session's key. The layout (PROTOCOL.md, "Datagrams over UDP"):
//!
//! ```text
//! offset  size  field
//! 0       1     direction: 1 client to broker, 2 broker to client
//! 1       8     session number, u64 big-endian
//! 9       8     sequence number, u64 big-endian, from 1, strictly increasing per direction
//! 17      n     payload: nothing (`bind`, or the broker's answer to it) or one MessagePack frame map
//! 17+n    16    the first 16 bytes of HMAC-SHA256(key, bytes 0 .. 17+n)
//! ```
//!
//! [`parse`] only cuts the bytes at those offsets; nothing in them is trusted before [`Sealed::verify`]
//! (constant time) and the [`ReplayWindow`] have passed.

use bytes::{BufMut, BytesMut};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::EncodeFrame;

/// Bytes before the payload: direction, session, sequence.
pub const HEADER_LEN: usize = 17;
/// Bytes of the truncated MAC at the end.
pub const MAC_LEN: usize = 16;
/// Everything a datagram adds to its payload.
pub const DATAGRAM_OVERHEAD: usize = HEADER_LEN + MAC_LEN;
/// Bytes a `datagram` frame map takes beyond its two strings (keys and MessagePack headers), at
/// most: with [`DATAGRAM_OVERHEAD`], the room to allocate for a sealed datagram at once.
pub const FRAME_ROOM: usize = 40;
/// Length of a session's datagram key.
pub const KEY_LEN: usize = 32;
/// How far behind the newest sequence number a datagram may arrive and still be taken (once).
pub const REPLAY_WINDOW: u64 = 64;

/// Which way a datagram travels. Part of what the MAC covers, so a datagram cannot be reflected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    ToBroker = 1,
    ToClient = 2,
}

/// Why bytes are not a datagram at all (before any key is looked at).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatagramError {
    #[error("{0} bytes are shorter than a datagram's {DATAGRAM_OVERHEAD}-byte header and MAC")]
    Truncated(usize),
    #[error("unknown direction byte {0:#04x}")]
    Direction(u8),
    #[error("sequence number 0 is never sent")]
    ZeroSequence,
}

/// A session's datagram key. Its `Debug` never shows it.
///
/// It keeps HMAC's keyed state (the inner and outer pads already hashed) beside the bytes: every
/// datagram clones that state instead of hashing the pads again, which halves what a MAC costs.
#[derive(Clone)]
pub struct DatagramKey {
    bytes: [u8; KEY_LEN],
    keyed: Hmac<Sha256>,
}

impl DatagramKey {
    pub fn new(bytes: [u8; KEY_LEN]) -> Self {
        // HMAC takes a key of any length, so this cannot fail.
        let keyed = match Hmac::<Sha256>::new_from_slice(&bytes) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC accepts keys of every length"),
        };
        Self { bytes, keyed }
    }

    /// The key from `hi.datagram_key`; `None` unless it is exactly [`KEY_LEN`] bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self::new)
    }

    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }

    fn mac(&self) -> Hmac<Sha256> {
        self.keyed.clone()
    }
}

impl PartialEq for DatagramKey {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for DatagramKey {}

impl std::fmt::Debug for DatagramKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DatagramKey(..)")
    }
}

/// A datagram cut at its offsets, not yet verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sealed<'a> {
    pub direction: Direction,
    pub session: u64,
    pub sequence: u64,
    /// Empty for `bind` (and the broker's answer to it); else one frame map.
    pub payload: &'a [u8],
    signed: &'a [u8],
    mac: &'a [u8],
}

/// Cuts `bytes` into header, payload and MAC. Trusts nothing: see [`Sealed::verify`].
pub fn parse(bytes: &[u8]) -> Result<Sealed<'_>, DatagramError> {
    if bytes.len() < DATAGRAM_OVERHEAD {
        return Err(DatagramError::Truncated(bytes.len()));
    }
    let (signed, mac) = bytes.split_at(bytes.len() - MAC_LEN);
    let direction = match signed[0] {
        1 => Direction::ToBroker,
        2 => Direction::ToClient,
        other => return Err(DatagramError::Direction(other)),
    };
    let word = |at: usize| {
        let mut b = [0; 8];
        b.copy_from_slice(&signed[at..at + 8]);
        u64::from_be_bytes(b)
    };
    let (session, sequence) = (word(1), word(9));
    if sequence == 0 {
        return Err(DatagramError::ZeroSequence);
    }
    Ok(Sealed {
        direction,
        session,
        sequence,
        payload: &signed[HEADER_LEN..],
        signed,
        mac,
    })
}

impl Sealed<'_> {
    /// Whether the MAC is the one `key` gives these bytes; compared in constant time.
    pub fn verify(&self, key: &DatagramKey) -> bool {
        let mut mac = key.mac();
        mac.update(self.signed);
        mac.verify_truncated_left(self.mac).is_ok()
    }
}

/// Appends the datagram carrying `payload` to `dst`: header, payload, MAC.
pub fn seal(
    dst: &mut Vec<u8>,
    direction: Direction,
    session: u64,
    sequence: u64,
    key: &DatagramKey,
    payload: &[u8],
) {
    let start = dst.len();
    dst.reserve(DATAGRAM_OVERHEAD + payload.len());
    dst.put_u8(direction as u8);
    dst.put_u64(session);
    dst.put_u64(sequence);
    dst.put_slice(payload);
    let mut mac = key.mac();
    mac.update(&dst[start..]);
    let tag = mac.finalize().into_bytes();
    dst.put_slice(&tag[..MAC_LEN]);
}

/// Appends the datagram carrying `frame` (or nothing, for a bind and its answer) to `dst`, encoding
/// the frame in place: one buffer per datagram, where [`seal`] needs the payload encoded first.
/// `dst` is best made with the room it needs (the frame's body and names, and
/// [`DATAGRAM_OVERHEAD`]), so that it is allocated once.
pub fn seal_frame(
    dst: &mut BytesMut,
    direction: Direction,
    session: u64,
    sequence: u64,
    key: &DatagramKey,
    frame: Option<&impl EncodeFrame>,
) {
    let start = dst.len();
    dst.put_u8(direction as u8);
    dst.put_u64(session);
    dst.put_u64(sequence);
    if let Some(frame) = frame {
        frame.encode_map(dst);
    }
    let mut mac = key.mac();
    mac.update(&dst[start..]);
    let tag = mac.finalize().into_bytes();
    dst.put_slice(&tag[..MAC_LEN]);
}

/// Which sequence numbers a receiver has taken: the newest, and a bitmap of the
/// [`REPLAY_WINDOW`] before it (the anti-replay window of IPsec, RFC 4303 §3.4.3). A datagram is
/// taken once; one older than the window is refused, since it cannot be told from a replay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    newest: u64,
    /// Bit `i` set: `newest - i` was taken.
    seen: u64,
}

impl ReplayWindow {
    /// Takes `sequence` if it is new; `false` for a replay or one too old. Call only after the
    /// MAC checked out, or a forger could move the window.
    pub fn accept(&mut self, sequence: u64) -> bool {
        if sequence > self.newest {
            let shift = sequence - self.newest;
            self.seen = if shift >= REPLAY_WINDOW {
                1
            } else {
                (self.seen << shift) | 1
            };
            self.newest = sequence;
            return true;
        }
        let age = self.newest - sequence;
        if age >= REPLAY_WINDOW || self.seen & (1 << age) != 0 {
            return false;
        }
        self.seen |= 1 << age;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> DatagramKey {
        DatagramKey::new([7; KEY_LEN])
    }

    fn sealed(sequence: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        seal(&mut out, Direction::ToBroker, 42, sequence, &key(), payload);
        out
    }

    #[test]
    fn a_sealed_datagram_parses_and_verifies() {
        let bytes = sealed(3, b"\x81\xa4type\xa4ping");
        let d = parse(&bytes).unwrap();
        assert_eq!(
            (d.direction, d.session, d.sequence),
            (Direction::ToBroker, 42, 3)
        );
        assert_eq!(d.payload, b"\x81\xa4type\xa4ping");
        assert!(d.verify(&key()));
        assert!(!d.verify(&DatagramKey::new([8; KEY_LEN])));
    }

    #[test]
    fn a_frame_sealed_in_place_is_the_frame_sealed_after_encoding() {
        let frame = crate::ClientFrame::Datagram {
            to: "bob".into(),
            body: bytes::Bytes::from_static(b"hi"),
        };
        let mut payload = BytesMut::new();
        frame.encode_map(&mut payload);
        let mut in_place = BytesMut::new();
        seal_frame(
            &mut in_place,
            Direction::ToBroker,
            42,
            9,
            &key(),
            Some(&frame),
        );
        let mut after = Vec::new();
        seal(&mut after, Direction::ToBroker, 42, 9, &key(), &payload);
        assert_eq!(&in_place[..], &after[..]);
        let mut bind = BytesMut::new();
        seal_frame(
            &mut bind,
            Direction::ToBroker,
            42,
            10,
            &key(),
            None::<&crate::ClientFrame>,
        );
        assert_eq!(&bind[..], &sealed(10, b"")[..]);
    }

    #[test]
    fn any_changed_byte_fails_the_mac() {
        let bytes = sealed(1, b"hello");
        for i in 0..bytes.len() {
            let mut forged = bytes.clone();
            forged[i] ^= 0x01;
            if let Ok(d) = parse(&forged) {
                assert!(!d.verify(&key()), "byte {i} changed and still verified");
            }
        }
    }

    #[test]
    fn short_and_malformed_bytes_are_refused() {
        assert_eq!(parse(&[1; 32]), Err(DatagramError::Truncated(32)));
        let mut bytes = sealed(1, b"");
        assert!(parse(&bytes).is_ok(), "an empty payload is a bind");
        bytes[0] = 9;
        assert_eq!(parse(&bytes), Err(DatagramError::Direction(9)));
        let zero = sealed(0, b"");
        assert_eq!(parse(&zero), Err(DatagramError::ZeroSequence));
    }

    #[test]
    fn the_window_takes_each_number_once_and_nothing_too_old() {
        let mut w = ReplayWindow::default();
        assert!(w.accept(1));
        assert!(!w.accept(1), "replay");
        assert!(w.accept(5));
        assert!(w.accept(3), "late but inside the window");
        assert!(!w.accept(3), "late replay");
        assert!(w.accept(100));
        assert!(w.accept(100 - REPLAY_WINDOW + 1));
        assert!(!w.accept(100 - REPLAY_WINDOW), "older than the window");
        assert!(!w.accept(5));
        assert!(w.accept(u64::MAX));
        assert!(!w.accept(u64::MAX));
    }
}
