//! The Switchboard wire protocol, shared by the broker and every client.
//!
//! A connection carries frames: a 4-byte big-endian length followed by that many bytes of MessagePack,
//! encoded with field names (maps, not arrays) so that any language's MessagePack library can read them.
//! [`frame`] defines what a frame says, [`codec`] cuts bytes into frames and back, [`decode`] and
//! [`encode`] read and write one frame's map by hand (serde's derive stays on the frames for other
//! uses, and the tests hold the two to the same bytes), and [`client_id`] holds the one rule both
//! sides must agree on about names; [`datagram`] is the layout of a UDP datagram and its MAC. `PROTOCOL.md` at the repository root is the
//! specification; its test vectors are checked against this crate by `tests/vectors.rs`.

pub mod client_id;
pub mod codec;
pub mod datagram;
pub mod decode;
pub mod encode;
pub mod fragments;
pub mod frame;
mod msgpack;

pub use client_id::{ClientId, InvalidClientId};
pub use codec::{
    encode_frame, encode_value, max_body_len, BrokerCodec, ClientCodec, CodecError, FrameCodec,
    DEFAULT_MAX_FRAME, DELIVER_OVERHEAD,
};
pub use datagram::{DatagramError, DatagramKey, Direction, ReplayWindow, Sealed};
pub use decode::{DecodeError, DecodeFrame};
pub use encode::EncodeFrame;
pub use frame::{
    BrokerFrame, ClientFrame, ErrorCode, ReceiptStatus, Receipts, RejectReason, PROTOCOL_VERSION,
};
