//! Bytes to frames and back: a 4-byte big-endian length, then a MessagePack map.
//!
//! A length above the maximum is refused as soon as the prefix is read, so a peer announcing 4 GiB
//! costs the reader four bytes, not four gigabytes; a frame that is still arriving has its whole
//! length reserved in the read buffer, so it arrives in few reads. (This is what `tokio_util`'s
//! `LengthDelimitedCodec` did, at a third of the instructions per frame.) The same limit applies
//! when encoding: an oversized frame is an error, never a truncation.

use std::io;
use std::marker::PhantomData;

use bytes::{Buf, BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::decode::{DecodeError, DecodeFrame};
use crate::encode::EncodeFrame;
use crate::frame::{BrokerFrame, ClientFrame};

/// The default largest frame, length prefix excluded: 1 MiB.
pub const DEFAULT_MAX_FRAME: usize = 1024 * 1024;

const PREFIX_LEN: usize = 4;

/// The most a `deliver` frame adds to its body, in bytes: the map with every field at its widest (a
/// 128-byte `from`, every id and time a full `u64`) and a `bin 32` body header. PROTOCOL.md ("Limits")
/// spells out the sum; `max_body_len` is what follows from it.
pub const DELIVER_OVERHEAD: usize = 216;

/// The largest body a broker with the frame limit `max_frame` accepts in a `send`: whatever the
/// sender's id and the broker's numbers, the `deliver` that carries it to its recipient still fits in
/// one frame, so an accepted message can always be delivered. (A `send` adds less than a `deliver`.)
pub fn max_body_len(max_frame: usize) -> usize {
    max_frame.saturating_sub(DELIVER_OVERHEAD)
}

/// Why bytes could not become a frame, or a frame could not become bytes.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    #[error("frame larger than the {max}-byte limit")]
    FrameTooLarge { max: usize },
    /// The bytes are a TLS record, not a frame: the peer speaks TLS and this side does not. (A TLS
    /// record header read as a length prefix is hundreds of megabytes, so it is told apart from a
    /// frame that is merely too large.)
    #[error("the peer speaks TLS, and this connection does not")]
    TlsRecord,
    #[error("malformed frame: {0}")]
    Malformed(#[from] DecodeError),
    /// Only from [`encode_value`]: serde could not write the value.
    #[error("cannot encode frame: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
}

/// Decodes frames of type `D` and encodes frames of type `E`.
#[derive(Debug)]
pub struct FrameCodec<D, E> {
    max_frame: usize,
    _frames: PhantomData<fn(E) -> D>,
}

/// The broker's side: reads client frames, writes broker frames.
pub type BrokerCodec = FrameCodec<ClientFrame, BrokerFrame>;
/// The client's side: reads broker frames, writes client frames.
pub type ClientCodec = FrameCodec<BrokerFrame, ClientFrame>;

impl<D, E> FrameCodec<D, E> {
    /// A codec refusing frames whose body is longer than `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        Self {
            max_frame,
            _frames: PhantomData,
        }
    }

    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Changes the limit, for example to what the broker announced in `hi` once the handshake is
    /// over; frames already buffered are judged by the new limit.
    pub fn set_max_frame(&mut self, max_frame: usize) {
        self.max_frame = max_frame;
    }
}

impl<D, E> Default for FrameCodec<D, E> {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME)
    }
}

impl<D: DecodeFrame, E> Decoder for FrameCodec<D, E> {
    type Item = D;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<D>, CodecError> {
        let Some(prefix) = src.first_chunk::<PREFIX_LEN>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*prefix) as usize;
        if len > self.max_frame {
            if looks_like_tls(src) {
                return Err(CodecError::TlsRecord);
            }
            return Err(CodecError::FrameTooLarge {
                max: self.max_frame,
            });
        }
        if src.len() < PREFIX_LEN + len {
            src.reserve(PREFIX_LEN + len - src.len());
            return Ok(None);
        }
        src.advance(PREFIX_LEN);
        // The frame's bodies share the read buffer rather than being copied out of it.
        let frame = src.split_to(len).freeze();
        Ok(Some(D::decode_frame(&frame)?))
    }
}

impl<D, E: EncodeFrame> Encoder<E> for FrameCodec<D, E> {
    type Error = CodecError;

    fn encode(&mut self, frame: E, dst: &mut BytesMut) -> Result<(), CodecError> {
        encode_into(&frame, self.max_frame, dst)
    }
}

impl<D, E: EncodeFrame> Encoder<&E> for FrameCodec<D, E> {
    type Error = CodecError;

    fn encode(&mut self, frame: &E, dst: &mut BytesMut) -> Result<(), CodecError> {
        encode_into(frame, self.max_frame, dst)
    }
}

/// Whether `src` starts like a TLS record: a content type (change_cipher_spec, alert, handshake or
/// application_data, 0x14 to 0x17) and protocol major version 3.
fn looks_like_tls(src: &[u8]) -> bool {
    matches!(src, [0x14..=0x17, 0x03, ..])
}

/// Writes the length prefix and the MessagePack body straight into `dst`, with no staging copy.
fn encode_into<E: EncodeFrame>(
    frame: &E,
    max: usize,
    dst: &mut BytesMut,
) -> Result<(), CodecError> {
    let start = dst.len();
    dst.put_u32(0);
    frame.encode_map(dst);
    let body_len = dst.len() - start - PREFIX_LEN;
    if body_len > max {
        dst.truncate(start);
        return Err(CodecError::FrameTooLarge { max });
    }
    // body_len <= max, and max is a usize that LengthDelimitedCodec already bounds to u32 prefixes.
    let prefix = u32::try_from(body_len).map_err(|_| CodecError::FrameTooLarge { max })?;
    dst[start..start + PREFIX_LEN].copy_from_slice(&prefix.to_be_bytes());
    Ok(())
}

/// Encodes one frame to a standalone buffer (prefix included): for tests, tools and other languages'
/// test vectors.
pub fn encode_frame<E: EncodeFrame>(frame: &E, max: usize) -> Result<BytesMut, CodecError> {
    let mut dst = BytesMut::new();
    encode_into(frame, max, &mut dst)?;
    Ok(dst)
}

/// Encodes any serde value as a frame (prefix included), the way serde's derive writes it: for tests
/// and tools that must write what this crate's frames cannot, such as an older broker's `deliver`.
pub fn encode_value<T: serde::Serialize>(value: &T, max: usize) -> Result<BytesMut, CodecError> {
    let mut dst = BytesMut::new();
    dst.put_u32(0);
    rmp_serde::encode::write_named(&mut (&mut dst).writer(), value)?;
    let body_len = dst.len() - PREFIX_LEN;
    if body_len > max {
        return Err(CodecError::FrameTooLarge { max });
    }
    let prefix = u32::try_from(body_len).map_err(|_| CodecError::FrameTooLarge { max })?;
    dst[..PREFIX_LEN].copy_from_slice(&prefix.to_be_bytes());
    Ok(dst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::ErrorCode;

    /// The widest `deliver` there can be, with a body of `len` bytes.
    fn widest_deliver(len: usize) -> BrokerFrame {
        BrokerFrame::Deliver {
            message_id: u64::MAX,
            from: "x".repeat(crate::client_id::MAX_CLIENT_ID_LEN),
            send_id: u64::MAX,
            sent_at_ms: u64::MAX,
            body: bytes::Bytes::from(vec![0; len]),
        }
    }

    #[test]
    fn a_tls_record_is_told_apart_from_a_frame_that_is_too_large() {
        let mut codec = BrokerCodec::new(DEFAULT_MAX_FRAME);
        // The first bytes of a TLS 1.2+ ClientHello, read as a length prefix: about 369 MB.
        let mut hello = BytesMut::from(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01][..]);
        assert!(matches!(
            codec.decode(&mut hello),
            Err(CodecError::TlsRecord)
        ));
        let mut huge = BytesMut::from(&[0x7f, 0xff, 0xff, 0xff, 0x00][..]);
        assert!(matches!(
            codec.decode(&mut huge),
            Err(CodecError::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn the_largest_accepted_body_always_fits_its_deliver_exactly() {
        for max_frame in [DEFAULT_MAX_FRAME, 64 * 1024 * 1024, 70_000] {
            let body = max_body_len(max_frame);
            let frame = encode_frame(&widest_deliver(body), max_frame).expect("fits");
            assert_eq!(frame.len(), PREFIX_LEN + max_frame, "the bound is exact");
            assert!(matches!(
                encode_frame(&widest_deliver(body + 1), max_frame),
                Err(CodecError::FrameTooLarge { .. })
            ));
        }
    }

    #[test]
    fn round_trips_through_the_codec() {
        let mut codec = ClientCodec::new(1024);
        let mut buf = BytesMut::new();
        let hello = ClientFrame::Hello {
            version: 1,
            client_id: "alice".into(),
            token: None,
            keepalive_secs: 30,
        };
        codec.encode(hello.clone(), &mut buf).unwrap();
        let mut broker = BrokerCodec::new(1024);
        assert_eq!(broker.decode(&mut buf).unwrap(), Some(hello));
        assert!(buf.is_empty());
    }

    #[test]
    fn partial_frames_wait_for_more_bytes() {
        let bytes = encode_frame(&ClientFrame::Ping, 1024).unwrap();
        let mut codec = BrokerCodec::new(1024);
        let mut buf = BytesMut::from(&bytes[..3]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(&bytes[3..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(ClientFrame::Ping));
    }

    #[test]
    fn a_frame_still_arriving_has_its_whole_length_reserved() {
        let mut codec = BrokerCodec::new(1 << 20);
        let mut buf = BytesMut::from(&[0, 1, 0, 0, 0x81][..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert!(buf.capacity() >= 4 + 65_536, "room for the whole frame");
        assert_eq!(buf.len(), 5, "nothing consumed");
    }

    #[test]
    fn any_value_encodes_as_serde_writes_it_within_the_limit() {
        let ack = ClientFrame::Ack { id: 300 };
        let by_hand = encode_frame(&ack, 1024).unwrap();
        assert_eq!(encode_value(&ack, 1024).unwrap(), by_hand);
        assert!(matches!(
            encode_value(&ack, 4),
            Err(CodecError::FrameTooLarge { max: 4 })
        ));
    }

    #[test]
    fn a_huge_length_prefix_is_refused_at_once() {
        let mut codec = BrokerCodec::new(1024);
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(CodecError::FrameTooLarge { max: 1024 })
        ));
    }

    #[test]
    fn encoding_an_oversized_frame_fails_and_leaves_the_buffer_alone() {
        let mut codec = ClientCodec::new(16);
        let mut buf = BytesMut::from(&b"keep"[..]);
        let send = ClientFrame::Send {
            send_id: 1,
            to: "bob".into(),
            body: vec![0u8; 64].into(),
            ttl_ms: None,
            fresh: false,
            receipts: crate::Receipts::All,
        };
        assert!(matches!(
            codec.encode(send, &mut buf),
            Err(CodecError::FrameTooLarge { max: 16 })
        ));
        assert_eq!(&buf[..], b"keep");
    }

    #[test]
    fn garbage_is_malformed() {
        let mut codec = BrokerCodec::new(1024);
        let mut buf = BytesMut::from(&[0, 0, 0, 3, 0xc1, 0xc1, 0xc1][..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(CodecError::Malformed(_))
        ));
    }

    #[test]
    fn unknown_codes_read_as_unknown() {
        #[derive(serde::Serialize)]
        struct Raw<'a> {
            r#type: &'a str,
            code: &'a str,
            text: &'a str,
        }
        let raw = Raw {
            r#type: "error",
            code: "from-the-future",
            text: "",
        };
        let bytes = rmp_serde::to_vec_named(&raw).unwrap();
        let frame: BrokerFrame = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(
            frame,
            BrokerFrame::Error {
                code: ErrorCode::Unknown,
                text: String::new()
            }
        );
    }
}
