//! Bad input gets a clear error and a close; everyone else carries on and nothing stored is lost.

use switchboard_client::{ClientError, Event};
use switchboard_proto::{ClientFrame, ErrorCode, RejectReason};

use crate::support::*;

/// Alice has a message stored for bob, and a live conversation with carol, while something misbehaves.
struct Bystanders {
    alice: switchboard_client::Client,
    carol: switchboard_client::Client,
    carol_events: switchboard_client::Events,
    _alice_events: switchboard_client::Events,
}

impl Bystanders {
    async fn new(fx: &Fixture) -> Self {
        let (alice, _alice_events) = fx.connect("alice").await;
        let (carol, carol_events) = fx.connect("carol").await;
        alice
            .send("bob", "stored before the trouble")
            .await
            .expect("accepted");
        Bystanders {
            alice,
            carol,
            carol_events,
            _alice_events,
        }
    }

    /// Carol still receives live messages and bob's stored message is still there.
    async fn still_fine(mut self, fx: &Fixture) {
        self.alice
            .send("carol", "still here?")
            .await
            .expect("accepted");
        match next_event(&mut self.carol_events).await {
            Event::Message(m) => {
                assert_eq!(&m.body[..], b"still here?");
                self.carol.ack(m.message_id).await.expect("ack");
            }
            other => panic!("expected a message, got {other:?}"),
        }
        let (bob, mut bob_events) = fx.connect("bob").await;
        match next_event(&mut bob_events).await {
            Event::Message(m) => {
                assert_eq!(&m.body[..], b"stored before the trouble");
                bob.ack(m.message_id).await.expect("ack");
            }
            other => panic!("expected the stored message, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn garbage_bytes_get_bad_frame() {
    let fx = Fixture::new().await;
    let bystanders = Bystanders::new(&fx).await;
    let mut raw = Raw::connect(fx.addr()).await;
    raw.send_bytes(&[0, 0, 0, 8, 0xc1, 0xc1, 0xde, 0xad, 0xbe, 0xef, 0xff, 0x00])
        .await;
    let frames = raw.until_closed().await;
    assert_closed_with(&frames, ErrorCode::BadFrame);
    bystanders.still_fine(&fx).await;
}

#[tokio::test]
async fn a_four_gigabyte_length_prefix_gets_frame_too_large() {
    let fx = Fixture::new().await;
    let bystanders = Bystanders::new(&fx).await;
    let (mut raw, _) = Raw::hello(fx.addr(), "mallory", 30).await;
    raw.send_bytes(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3]).await;
    let frames = raw.until_closed().await;
    assert_closed_with(&frames, ErrorCode::FrameTooLarge);
    bystanders.still_fine(&fx).await;
}

#[tokio::test]
async fn a_frame_over_the_limit_gets_frame_too_large() {
    let fx = Fixture::with(|s| s.limits.max_frame_bytes = 1024).await;
    let bystanders = Bystanders::new(&fx).await;
    let (mut raw, _) = Raw::hello(fx.addr(), "mallory", 30).await;
    // Encode with a codec that allows it, so the bytes really go out.
    let frame = switchboard_proto::encode_frame(
        &ClientFrame::Send {
            send_id: 1,
            to: "bob".into(),
            body: vec![7u8; 2048].into(),
            ttl_ms: None,
            fresh: false,
            receipts: switchboard_proto::Receipts::All,
        },
        usize::MAX >> 1,
    )
    .expect("encode");
    raw.send_bytes(&frame).await;
    let frames = raw.until_closed().await;
    assert_closed_with(&frames, ErrorCode::FrameTooLarge);
    bystanders.still_fine(&fx).await;
}

/// `value` as a frame on the wire (length prefix, named MessagePack map), whatever its shape: for
/// frames the protocol does not define.
fn framed(value: &impl serde::Serialize) -> Vec<u8> {
    let body = rmp_serde::to_vec_named(value).expect("encode");
    let mut bytes = u32::try_from(body.len())
        .expect("fits")
        .to_be_bytes()
        .to_vec();
    bytes.extend_from_slice(&body);
    bytes
}

#[tokio::test]
async fn an_unknown_frame_kind_and_wrong_types_get_bad_frame() {
    let fx = Fixture::new().await;
    let bystanders = Bystanders::new(&fx).await;
    #[derive(serde::Serialize)]
    struct Odd {
        r#type: &'static str,
        id: &'static str,
    }
    for odd in [
        Odd {
            r#type: "teleport",
            id: "1",
        },
        Odd {
            r#type: "ack",
            id: "not a number",
        },
    ] {
        let (mut raw, _) = Raw::hello(fx.addr(), "mallory", 30).await;
        raw.send_bytes(&framed(&odd)).await;
        let frames = raw.until_closed().await;
        assert_closed_with(&frames, ErrorCode::BadFrame);
    }
    bystanders.still_fine(&fx).await;
}

#[tokio::test]
async fn a_send_to_an_invalid_recipient_is_rejected_not_fatal() {
    let fx = Fixture::new().await;
    let (alice, _ae) = fx.connect("alice").await;
    let err = alice.send("no such id", "x").await.expect_err("rejected");
    assert!(
        matches!(
            err,
            ClientError::Rejected {
                reason: RejectReason::InvalidRecipient,
                ..
            }
        ),
        "{err}"
    );
    // The connection carries on.
    alice.send("bob", "fine").await.expect("accepted");
}

#[tokio::test]
async fn an_invalid_utf8_client_id_gets_bad_frame() {
    let fx = Fixture::new().await;
    let bystanders = Bystanders::new(&fx).await;
    let mut raw = Raw::connect(fx.addr()).await;
    // {"type": "hello", "version": 1, "client_id": <str with bytes ff fe>, "token": nil,
    //  "keepalive_secs": 30}
    let mut body = vec![0x85, 0xa4];
    body.extend_from_slice(b"type");
    body.push(0xa5);
    body.extend_from_slice(b"hello");
    body.push(0xa7);
    body.extend_from_slice(b"version");
    body.push(0x01);
    body.push(0xa9);
    body.extend_from_slice(b"client_id");
    body.extend_from_slice(&[0xa2, 0xff, 0xfe]);
    body.push(0xa5);
    body.extend_from_slice(b"token");
    body.push(0xc0);
    body.push(0xae);
    body.extend_from_slice(b"keepalive_secs");
    body.push(30);
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    raw.send_bytes(&frame).await;
    assert_closed_with(&raw.until_closed().await, ErrorCode::BadFrame);
    bystanders.still_fine(&fx).await;
}

#[tokio::test]
async fn a_truncated_frame_then_hang_up_harms_nobody() {
    let fx = Fixture::new().await;
    let bystanders = Bystanders::new(&fx).await;
    let (mut raw, _) = Raw::hello(fx.addr(), "mallory", 30).await;
    // Announces 100 bytes, sends 5, hangs up.
    raw.send_bytes(&[0, 0, 0, 100, 0x82, 0xa4, b't', b'y', b'p'])
        .await;
    drop(raw);
    bystanders.still_fine(&fx).await;
}

#[tokio::test]
async fn thousands_of_silent_connections_do_not_stop_the_others() {
    const SILENT: usize = 5_000;
    let fx = Fixture::with(|s| s.limits.handshake_timeout_ms = 60_000).await;
    let bystanders = Bystanders::new(&fx).await;
    let mut silent = Vec::with_capacity(SILENT);
    for _ in 0..SILENT {
        silent.push(Raw::connect(fx.addr()).await);
    }
    // All of them are open and waiting for a hello while the others carry on (each step of
    // `still_fine` is bounded; how fast it stays is for the benchmark tool to say).
    bystanders.still_fine(&fx).await;
    drop(silent);
}

/// A body that fits a `send` frame but not the `deliver` carrying it (which adds the sender's id and
/// the broker's numbers) used to be accepted and then block its recipient's mailbox for ever. Now the
/// largest body is announced in `hi`, one byte more is `too-large`, and a body of exactly that size,
/// from a sender with the longest id there is, reaches its recipient, with what was sent after it.
/// A broker process (issue 12, finding 2).
#[tokio::test]
async fn the_largest_accepted_body_is_delivered_and_one_byte_more_is_too_large() {
    use switchboard_proto::BrokerFrame;

    let dir = tempfile::tempdir().expect("tempdir");
    let broker = switchboard_tests::BrokerProcess::start(dir.path()).await;
    let sender = "s".repeat(switchboard_proto::client_id::MAX_CLIENT_ID_LEN);
    let (mut raw, hi) = Raw::hello(broker.addr(), &sender, 30).await;
    let BrokerFrame::Hi { max_body_bytes, .. } = hi else {
        panic!("expected hi, got {hi:?}");
    };
    let max = usize::try_from(max_body_bytes).expect("fits");
    let send = |send_id, len| ClientFrame::Send {
        send_id,
        to: "bob".into(),
        body: vec![b'x'; len].into(),
        ttl_ms: None,
        fresh: false,
        receipts: switchboard_proto::Receipts::All,
    };
    raw.send(send(1, max + 1)).await;
    match raw.recv().await {
        Some(BrokerFrame::Rejected {
            send_id: 1,
            reason: RejectReason::TooLarge,
            text,
        }) => assert!(text.contains(&max.to_string()), "{text}"),
        other => panic!("expected too-large, got {other:?}"),
    }
    raw.send(send(2, max)).await;
    raw.send(send(3, 1)).await;
    for send_id in [2, 3] {
        match raw.recv().await {
            Some(BrokerFrame::Accepted { send_id: got, .. }) => assert_eq!(got, send_id),
            other => panic!("expected accepted {send_id}, got {other:?}"),
        }
    }

    let (mut bob, _) = Raw::hello(broker.addr(), "bob", 30).await;
    for len in [max, 1] {
        match bob.recv().await {
            Some(BrokerFrame::Deliver {
                message_id,
                from,
                body,
                ..
            }) => {
                assert_eq!((from.as_str(), body.len()), (sender.as_str(), len));
                bob.send(ClientFrame::Ack { id: message_id }).await;
            }
            other => panic!("expected a message of {len} bytes, got {other:?}"),
        }
    }
    drop((raw, bob));
    broker.terminate().await;
}

/// A broker configured for bodies larger than the client library's default frame (1 MiB) says so in
/// `hi`, and clients on default options follow it: what the broker accepted, its recipient receives.
#[tokio::test]
async fn clients_follow_the_frame_limit_the_broker_announces() {
    let fx = Fixture::with(|s| s.limits.max_frame_bytes = 4 << 20).await;
    let (alice, _alice_events) = fx.connect("alice").await;
    let (bob, mut bob_events) = fx.connect("bob").await;
    let body = vec![b'x'; 3 << 20];
    alice
        .send("bob", body.clone())
        .await
        .expect("a 3 MiB body is accepted");
    match next_event(&mut bob_events).await {
        Event::Message(m) => {
            assert_eq!(m.body.len(), body.len());
            bob.ack(m.message_id).await.expect("ack");
        }
        other => panic!("expected the 3 MiB message, got {other:?}"),
    }
}

/// A decoding error quotes the peer's bytes (`unknown variant ...`): a frame kind as long as a whole
/// frame still gets its one-line `bad-frame` answer, not a silent close.
#[tokio::test]
async fn a_huge_unknown_frame_kind_still_gets_a_short_bad_frame() {
    #[derive(serde::Serialize)]
    struct Odd {
        r#type: String,
    }
    let fx = Fixture::new().await;
    let bystanders = Bystanders::new(&fx).await;
    let (mut raw, _) = Raw::hello(fx.addr(), "mallory", 30).await;
    let odd = Odd {
        // As long as a frame allows: the error quoting it would not fit in one.
        r#type: "t".repeat(1_048_500),
    };
    raw.send_bytes(&framed(&odd)).await;
    let frames = raw.until_closed().await;
    assert_closed_with(&frames, ErrorCode::BadFrame);
    bystanders.still_fine(&fx).await;
}
