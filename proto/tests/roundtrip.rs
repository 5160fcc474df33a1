//! Property tests: every frame the types allow survives encode → decode unchanged, through the
//! length-prefixed codec, split at any byte; and no byte string makes the decoder panic.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use switchboard_proto::{
    BrokerCodec, BrokerFrame, ClientCodec, ClientFrame, ErrorCode, ReceiptStatus, RejectReason,
};
use tokio_util::codec::{Decoder, Encoder};

fn body() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..512).prop_map(Bytes::from)
}

fn text() -> impl Strategy<Value = String> {
    ".{0,40}"
}

fn client_frame() -> impl Strategy<Value = ClientFrame> {
    prop_oneof![
        (any::<u32>(), text(), prop::option::of(text()), any::<u32>()).prop_map(
            |(version, client_id, token, keepalive_secs)| ClientFrame::Hello {
                version,
                client_id,
                token,
                keepalive_secs,
            }
        ),
        (
            any::<u64>(),
            text(),
            body(),
            prop::option::of(any::<u64>()),
            any::<bool>()
        )
            .prop_map(|(send_id, to, body, ttl_ms, fresh)| ClientFrame::Send {
                send_id,
                to,
                body,
                ttl_ms,
                fresh,
                receipts: switchboard_proto::Receipts::All,
            }),
        any::<u64>().prop_map(|id| ClientFrame::Ack { id }),
        Just(ClientFrame::Ping),
        Just(ClientFrame::Bye),
        (text(), body()).prop_map(|(to, body)| ClientFrame::Datagram { to, body }),
    ]
}

fn reject_reason() -> impl Strategy<Value = RejectReason> {
    prop::sample::select(vec![
        RejectReason::InvalidRecipient,
        RejectReason::TooLarge,
        RejectReason::Unavailable,
        RejectReason::MailboxFull,
        RejectReason::Forbidden,
        RejectReason::RateLimited,
    ])
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop::sample::select(vec![
        ErrorCode::BadFrame,
        ErrorCode::FrameTooLarge,
        ErrorCode::HelloRequired,
        ErrorCode::HandshakeTimeout,
        ErrorCode::UnsupportedVersion,
        ErrorCode::InvalidClientId,
        ErrorCode::UnexpectedFrame,
        ErrorCode::SessionTakenOver,
        ErrorCode::KeepaliveTimeout,
        ErrorCode::ShuttingDown,
        ErrorCode::Internal,
        ErrorCode::Unauthorized,
        ErrorCode::Overloaded,
    ])
}

fn broker_frame() -> impl Strategy<Value = BrokerFrame> {
    prop_oneof![
        (
            any::<u32>(),
            any::<u32>(),
            text(),
            any::<u64>(),
            any::<u64>(),
            prop::option::of((any::<u16>(), any::<u64>(), body())),
        )
            .prop_map(
                |(version, keepalive_secs, address, pending, max_body_bytes, udp)| {
                    BrokerFrame::Hi {
                        version,
                        keepalive_secs,
                        address,
                        pending,
                        max_body_bytes,
                        udp_port: udp.as_ref().map(|u| u.0),
                        datagram_session: udp.as_ref().map(|u| u.1),
                        datagram_key: udp.map(|u| u.2),
                    }
                }
            ),
        (any::<u64>(), any::<u64>()).prop_map(|(send_id, message_id)| BrokerFrame::Accepted {
            send_id,
            message_id
        }),
        (any::<u64>(), reject_reason(), text()).prop_map(|(send_id, reason, text)| {
            BrokerFrame::Rejected {
                send_id,
                reason,
                text,
            }
        }),
        (any::<u64>(), text(), any::<u64>(), any::<u64>(), body()).prop_map(
            |(message_id, from, send_id, sent_at_ms, body)| BrokerFrame::Deliver {
                message_id,
                from,
                send_id,
                sent_at_ms,
                body,
            }
        ),
        (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            text(),
            prop::sample::select(vec![
                ReceiptStatus::Delivered,
                ReceiptStatus::Expired,
                ReceiptStatus::Undeliverable,
            ]),
        )
            .prop_map(|(receipt_id, send_id, message_id, to, status)| {
                BrokerFrame::Receipt {
                    receipt_id,
                    send_id,
                    message_id,
                    to,
                    status,
                }
            }),
        Just(BrokerFrame::Pong),
        (error_code(), text()).prop_map(|(code, text)| BrokerFrame::Error { code, text }),
        (text(), body()).prop_map(|(from, body)| BrokerFrame::Datagram { from, body }),
    ]
}

/// Decodes everything in `wire`, fed in two pieces split at `split`.
fn decode_all<C: Decoder>(codec: &mut C, wire: &[u8], split: usize) -> Vec<C::Item>
where
    C::Error: std::fmt::Debug,
{
    let split = split.min(wire.len());
    let mut buf = BytesMut::from(&wire[..split]);
    let mut out = Vec::new();
    while let Some(item) = codec.decode(&mut buf).expect("decodes") {
        out.push(item);
    }
    buf.extend_from_slice(&wire[split..]);
    while let Some(item) = codec.decode(&mut buf).expect("decodes") {
        out.push(item);
    }
    assert!(buf.is_empty(), "bytes left over");
    out
}

proptest! {
    #[test]
    fn client_frames_round_trip(frames in prop::collection::vec(client_frame(), 1..8), split in any::<usize>()) {
        let mut wire = BytesMut::new();
        for frame in &frames {
            ClientCodec::default().encode(frame.clone(), &mut wire).expect("encodes");
        }
        let split = split % (wire.len() + 1);
        prop_assert_eq!(decode_all(&mut BrokerCodec::default(), &wire, split), frames);
    }

    #[test]
    fn broker_frames_round_trip(frames in prop::collection::vec(broker_frame(), 1..8), split in any::<usize>()) {
        let mut wire = BytesMut::new();
        for frame in &frames {
            BrokerCodec::default().encode(frame.clone(), &mut wire).expect("encodes");
        }
        let split = split % (wire.len() + 1);
        prop_assert_eq!(decode_all(&mut ClientCodec::default(), &wire, split), frames);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoders(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let mut buf = BytesMut::from(&bytes[..]);
        let mut codec = BrokerCodec::default();
        while let Ok(Some(_)) = codec.decode(&mut buf) {}
        let mut buf = BytesMut::from(&bytes[..]);
        let mut codec = ClientCodec::default();
        while let Ok(Some(_)) = codec.decode(&mut buf) {}
    }
}
