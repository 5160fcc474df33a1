//! How a frame becomes bytes: its MessagePack map written straight into the output buffer.
//!
//! The bytes are exactly those serde's derive and `rmp_serde::encode::write_named` wrote (the tests
//! compare the two on every kind of frame, and PROTOCOL.md's vectors pin them): `type` first, then
//! the fields in declaration order, integers and lengths in their shortest form, text as `str`,
//! bodies as `bin`, `None` as `nil` except the optional `send` fields left out when absent or false.
//! Written by hand, a frame costs a few comparisons per field instead of serde's calls through
//! `io::Write` for every key and value.

use bytes::{BufMut, BytesMut};

use crate::frame::{BrokerFrame, ClientFrame, Receipts};

/// A frame type the codec can write: [`ClientFrame`] and [`BrokerFrame`].
pub trait EncodeFrame {
    /// Appends the frame's MessagePack map (no length prefix) to `dst`.
    fn encode_map(&self, dst: &mut BytesMut);
}

fn map(dst: &mut BytesMut, entries: u8) {
    debug_assert!(entries < 16, "every frame is a fixmap");
    dst.put_u8(0x80 | entries);
}

fn uint(dst: &mut BytesMut, value: u64) {
    if value < 0x80 {
        dst.put_u8(value as u8);
    } else if let Ok(v) = u8::try_from(value) {
        dst.put_slice(&[0xcc, v]);
    } else if let Ok(v) = u16::try_from(value) {
        dst.put_u8(0xcd);
        dst.put_u16(v);
    } else if let Ok(v) = u32::try_from(value) {
        dst.put_u8(0xce);
        dst.put_u32(v);
    } else {
        dst.put_u8(0xcf);
        dst.put_u64(value);
    }
}

fn str(dst: &mut BytesMut, text: &str) {
    let len = text.len();
    if len < 32 {
        dst.put_u8(0xa0 | len as u8);
    } else if let Ok(len) = u8::try_from(len) {
        dst.put_slice(&[0xd9, len]);
    } else if let Ok(len) = u16::try_from(len) {
        dst.put_u8(0xda);
        dst.put_u16(len);
    } else {
        dst.put_u8(0xdb);
        dst.put_u32(len as u32);
    }
    dst.put_slice(text.as_bytes());
}

fn bin(dst: &mut BytesMut, bytes: &[u8]) {
    let len = bytes.len();
    if let Ok(len) = u8::try_from(len) {
        dst.put_slice(&[0xc4, len]);
    } else if let Ok(len) = u16::try_from(len) {
        dst.put_u8(0xc5);
        dst.put_u16(len);
    } else {
        dst.put_u8(0xc6);
        dst.put_u32(len as u32);
    }
    dst.put_slice(bytes);
}

/// A key (or the `type`): every name the protocol has is a fixstr.
fn key(dst: &mut BytesMut, name: &'static str) {
    debug_assert!(name.len() < 32);
    dst.put_u8(0xa0 | name.len() as u8);
    dst.put_slice(name.as_bytes());
}

/// The map header and its `type` entry.
fn start(dst: &mut BytesMut, entries: u8, kind: &'static str) {
    map(dst, entries);
    key(dst, "type");
    key(dst, kind);
}

/// A `datagram` either way: the peer (`to` or `from`) and the body.
fn datagram(dst: &mut BytesMut, peer_key: &'static str, peer: &str, body: &[u8]) {
    start(dst, 3, "datagram");
    key(dst, peer_key);
    str(dst, peer);
    key(dst, "body");
    bin(dst, body);
}

impl EncodeFrame for ClientFrame {
    fn encode_map(&self, dst: &mut BytesMut) {
        match self {
            ClientFrame::Hello {
                version,
                client_id,
                token,
                keepalive_secs,
            } => {
                start(dst, 5, "hello");
                key(dst, "version");
                uint(dst, u64::from(*version));
                key(dst, "client_id");
                str(dst, client_id);
                key(dst, "token");
                match token {
                    Some(token) => str(dst, token),
                    None => dst.put_u8(0xc0),
                }
                key(dst, "keepalive_secs");
                uint(dst, u64::from(*keepalive_secs));
            }
            ClientFrame::Send {
                send_id,
                to,
                body,
                ttl_ms,
                fresh,
                receipts,
            } => {
                let all = *receipts == Receipts::All;
                start(
                    dst,
                    4 + u8::from(ttl_ms.is_some()) + u8::from(*fresh) + u8::from(!all),
                    "send",
                );
                key(dst, "id");
                uint(dst, *send_id);
                key(dst, "to");
                str(dst, to);
                key(dst, "body");
                bin(dst, body);
                if let Some(ttl_ms) = ttl_ms {
                    key(dst, "ttl_ms");
                    uint(dst, *ttl_ms);
                }
                if *fresh {
                    key(dst, "fresh");
                    dst.put_u8(0xc3);
                }
                if !all {
                    key(dst, "receipts");
                    str(dst, receipts.as_str());
                }
            }
            ClientFrame::Ack { id } => {
                start(dst, 2, "ack");
                key(dst, "id");
                uint(dst, *id);
            }
            ClientFrame::Ping => start(dst, 1, "ping"),
            ClientFrame::Bye => start(dst, 1, "bye"),
            ClientFrame::Datagram { to, body } => datagram(dst, "to", to, body),
        }
    }
}

impl EncodeFrame for BrokerFrame {
    fn encode_map(&self, dst: &mut BytesMut) {
        match self {
            BrokerFrame::Deliver {
                message_id,
                from,
                send_id,
                sent_at_ms,
                body,
            } => {
                start(dst, 6, "deliver");
                key(dst, "message_id");
                uint(dst, *message_id);
                key(dst, "from");
                str(dst, from);
                key(dst, "send_id");
                uint(dst, *send_id);
                key(dst, "sent_at_ms");
                uint(dst, *sent_at_ms);
                key(dst, "body");
                bin(dst, body);
            }
            BrokerFrame::Accepted {
                send_id,
                message_id,
            } => {
                start(dst, 3, "accepted");
                key(dst, "id");
                uint(dst, *send_id);
                key(dst, "message_id");
                uint(dst, *message_id);
            }
            BrokerFrame::Receipt {
                receipt_id,
                send_id,
                message_id,
                to,
                status,
            } => {
                start(dst, 6, "receipt");
                key(dst, "receipt_id");
                uint(dst, *receipt_id);
                key(dst, "id");
                uint(dst, *send_id);
                key(dst, "message_id");
                uint(dst, *message_id);
                key(dst, "to");
                str(dst, to);
                key(dst, "status");
                str(dst, status.as_str());
            }
            BrokerFrame::Rejected {
                send_id,
                reason,
                text,
            } => {
                start(dst, 4, "rejected");
                key(dst, "id");
                uint(dst, *send_id);
                key(dst, "reason");
                str(dst, reason.as_str());
                key(dst, "text");
                str(dst, text);
            }
            BrokerFrame::Hi {
                version,
                keepalive_secs,
                address,
                pending,
                max_body_bytes,
                udp_port,
                datagram_session,
                datagram_key,
            } => {
                let offered = u8::from(udp_port.is_some())
                    + u8::from(datagram_session.is_some())
                    + u8::from(datagram_key.is_some());
                start(dst, 6 + offered, "hi");
                key(dst, "version");
                uint(dst, u64::from(*version));
                key(dst, "keepalive_secs");
                uint(dst, u64::from(*keepalive_secs));
                key(dst, "address");
                str(dst, address);
                key(dst, "pending");
                uint(dst, *pending);
                key(dst, "max_body_bytes");
                uint(dst, *max_body_bytes);
                if let Some(port) = udp_port {
                    key(dst, "udp_port");
                    uint(dst, u64::from(*port));
                }
                if let Some(session) = datagram_session {
                    key(dst, "datagram_session");
                    uint(dst, *session);
                }
                if let Some(datagram_key) = datagram_key {
                    key(dst, "datagram_key");
                    bin(dst, datagram_key);
                }
            }
            BrokerFrame::Pong => start(dst, 1, "pong"),
            BrokerFrame::Error { code, text } => {
                start(dst, 3, "error");
                key(dst, "code");
                str(dst, code.as_str());
                key(dst, "text");
                str(dst, text);
            }
            BrokerFrame::Datagram { from, body } => datagram(dst, "from", from, body),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use proptest::prelude::*;
    use serde::Serialize;

    use super::EncodeFrame;
    use crate::frame::{BrokerFrame, ClientFrame, ErrorCode, ReceiptStatus, RejectReason};

    /// The bytes serde's derive wrote, which the wire keeps.
    fn same_as_serde<F: EncodeFrame + Serialize + std::fmt::Debug>(frame: &F) {
        let mut ours = bytes::BytesMut::new();
        frame.encode_map(&mut ours);
        let serde = rmp_serde::to_vec_named(frame).unwrap();
        assert_eq!(&ours[..], &serde[..], "{frame:?}");
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof!["\\PC{0,40}", (0..70_000usize).prop_map(|n| "x".repeat(n))]
    }

    fn body() -> impl Strategy<Value = Bytes> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..300),
            (0..70_000usize).prop_map(|n| vec![1; n])
        ]
        .prop_map(Bytes::from)
    }

    fn int() -> impl Strategy<Value = u64> {
        prop_oneof![0..300u64, 0..70_000u64, 0..5_000_000_000u64, any::<u64>()]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn client_frames_are_written_as_serde_wrote_them(
            (a, b, v, k) in (int(), int(), any::<u32>(), any::<u32>()),
            (t, u, body) in (text(), proptest::option::of(text()), body()),
            (ttl, fresh) in (proptest::option::of(int()), any::<bool>()),
        ) {
            same_as_serde(&ClientFrame::Hello { version: v, client_id: t.clone(), token: u, keepalive_secs: k });
            same_as_serde(&ClientFrame::Send { send_id: a, to: t.clone(), body: body.clone(), ttl_ms: ttl, fresh, receipts: crate::Receipts::All });
            same_as_serde(&ClientFrame::Ack { id: b });
            same_as_serde(&ClientFrame::Datagram { to: t.clone(), body: body.clone() });
        }

        #[test]
        fn broker_frames_are_written_as_serde_wrote_them(
            (a, b, c, v) in (int(), int(), int(), any::<u32>()),
            (t, body) in (text(), body()),
        ) {
            same_as_serde(&BrokerFrame::Hi { version: v, keepalive_secs: v, address: t.clone(), pending: a, max_body_bytes: b, udp_port: None, datagram_session: None, datagram_key: None });
            same_as_serde(&BrokerFrame::Hi { version: v, keepalive_secs: v, address: t.clone(), pending: a, max_body_bytes: b, udp_port: Some(v as u16), datagram_session: Some(c), datagram_key: Some(body.clone()) });
            same_as_serde(&BrokerFrame::Datagram { from: t.clone(), body: body.clone() });
            same_as_serde(&BrokerFrame::Accepted { send_id: a, message_id: b });
            same_as_serde(&BrokerFrame::Deliver { message_id: a, from: t.clone(), send_id: b, sent_at_ms: c, body });
            same_as_serde(&BrokerFrame::Receipt { receipt_id: a, send_id: b, message_id: c, to: t.clone(), status: ReceiptStatus::Expired });
            same_as_serde(&BrokerFrame::Rejected { send_id: a, reason: RejectReason::MailboxFull, text: t.clone() });
            same_as_serde(&BrokerFrame::Error { code: ErrorCode::Unknown, text: t });
        }
    }

    #[test]
    fn frames_without_fields_are_written_as_serde_wrote_them() {
        same_as_serde(&ClientFrame::Ping);
        same_as_serde(&ClientFrame::Bye);
        same_as_serde(&BrokerFrame::Pong);
        same_as_serde(&BrokerFrame::Receipt {
            receipt_id: 1,
            send_id: 2,
            message_id: 3,
            to: "bob".into(),
            status: ReceiptStatus::Unknown,
        });
    }
}
