//! What the broker delivers: messages and receipts become events, tracked receipts resolve their
//! futures, and an unread event stream holds reading back without losing anything.

use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use switchboard_client::{Client, ClientOptions, CloseReason, Event, ReceiptStatus, SendOptions};
use switchboard_proto::{BrokerFrame, ClientFrame, PROTOCOL_VERSION};

use crate::connect;
use crate::support::*;

#[tokio::test]
async fn deliveries_become_message_events_and_acks_go_back() {
    let broker = MockBroker::start().await;
    let (client, mut events, mut peer) = connect(&broker, 30, 1).await;
    peer.send(BrokerFrame::Deliver {
        message_id: 42,
        from: "bob".into(),
        send_id: 7,
        sent_at_ms: 1_700_000_000_123,
        body: Bytes::from_static(b"hi alice"),
    })
    .await;
    let Some(Event::Message(m)) = within("event", events.next()).await else {
        panic!("expected a message");
    };
    assert_eq!(m.message_id, 42);
    assert_eq!(m.from, "bob");
    assert_eq!(m.send_id, 7, "the sender's send id");
    assert_eq!(&m.body[..], b"hi alice");
    assert_eq!(
        m.sent_at,
        UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)
    );
    client.ack(m.message_id).await.expect("ack");
    assert_eq!(
        peer.recv_skipping_pings().await,
        Some(ClientFrame::Ack { id: 42 })
    );
}

#[tokio::test]
async fn a_delivery_in_the_same_packet_as_hi_is_not_held_back() {
    use tokio::io::AsyncWriteExt;
    let broker = MockBroker::start().await;
    let opts = ClientOptions::new(broker.addr.to_string(), "bob");
    let script = async {
        let mut peer = broker.accept().await;
        peer.recv().await.expect("hello");
        let mut bytes = Vec::new();
        for frame in [
            BrokerFrame::Hi {
                version: PROTOCOL_VERSION,
                keepalive_secs: 30,
                address: "127.0.0.1:1".into(),
                pending: 1,
                max_body_bytes: 0,
                udp_port: None,
                datagram_session: None,
                datagram_key: None,
            },
            BrokerFrame::Deliver {
                message_id: 42,
                from: "alice".into(),
                send_id: 7,
                sent_at_ms: 0,
                body: Bytes::from_static(b"right behind hi"),
            },
        ] {
            bytes.extend_from_slice(
                &switchboard_proto::encode_frame(&frame, 1 << 20).expect("encode"),
            );
        }
        peer.framed
            .get_mut()
            .write_all(&bytes)
            .await
            .expect("write");
        peer
    };
    let (connected, _peer) = tokio::join!(Client::connect(opts), script);
    let (_client, mut events) = connected.expect("connect");
    match within("the delivery", events.next()).await {
        Some(Event::Message(m)) => assert_eq!(&m.body[..], b"right behind hi"),
        other => panic!("expected the delivery, got {other:?}"),
    }
}

#[tokio::test]
async fn a_delivery_from_a_broker_without_send_ids_has_send_id_zero() {
    use tokio::io::AsyncWriteExt;

    /// A `deliver` as brokers older than `send_id` write it.
    #[derive(serde::Serialize)]
    #[serde(tag = "type", rename_all = "snake_case")]
    enum OlderBrokerFrame {
        Deliver {
            message_id: u64,
            from: String,
            sent_at_ms: u64,
            body: Bytes,
        },
    }

    let broker = MockBroker::start().await;
    let (_client, mut events, mut peer) = connect(&broker, 30, 1).await;
    let old = OlderBrokerFrame::Deliver {
        message_id: 42,
        from: "bob".into(),
        sent_at_ms: 0,
        body: Bytes::from_static(b"from the past"),
    };
    let bytes = switchboard_proto::encode_value(&old, 1 << 20).expect("encode");
    peer.framed
        .get_mut()
        .write_all(&bytes)
        .await
        .expect("write");
    match within("the delivery", events.next()).await {
        Some(Event::Message(m)) => {
            assert_eq!((m.message_id, m.send_id), (42, 0));
            assert_eq!(&m.body[..], b"from the past");
        }
        other => panic!("expected the delivery, got {other:?}"),
    }
}

#[tokio::test]
async fn a_tracked_receipt_resolves_its_future_and_is_acked_by_the_library() {
    let broker = MockBroker::start().await;
    let (client, mut events, mut peer) = connect(&broker, 30, 0).await;
    let track = client.send_and_track("bob", "tracked");
    let script = async {
        let Some(ClientFrame::Send { send_id, .. }) = peer.recv_skipping_pings().await else {
            panic!("expected a send");
        };
        peer.send(BrokerFrame::Accepted {
            send_id,
            message_id: 42,
        })
        .await;
        send_id
    };
    let (tracked, send_id) = tokio::join!(track, script);
    let tracked = tracked.expect("accepted");
    assert_eq!(tracked.sent.send_id, send_id);

    // An untracked receipt first (from an earlier run, say), then the tracked one.
    for (receipt_id, for_id) in [(50, 7), (51, send_id)] {
        peer.send(BrokerFrame::Receipt {
            receipt_id,
            send_id: for_id,
            message_id: 40 + receipt_id,
            to: "bob".into(),
            status: ReceiptStatus::Delivered,
        })
        .await;
    }
    let receipt = within("tracked receipt", tracked.receipt)
        .await
        .expect("receipt");
    assert_eq!(
        (receipt.receipt_id, receipt.send_id, receipt.to.as_str()),
        (51, send_id, "bob")
    );
    assert_eq!(
        peer.recv_skipping_pings().await,
        Some(ClientFrame::Ack { id: 51 })
    );

    // Only the untracked receipt is an event, for the user to ack.
    match within("event", events.next()).await {
        Some(Event::Receipt(r)) => assert_eq!((r.receipt_id, r.send_id), (50, 7)),
        other => panic!("expected the untracked receipt, got {other:?}"),
    }
    let hang_up = async {
        assert_eq!(peer.recv_skipping_pings().await, Some(ClientFrame::Bye));
        drop(peer);
    };
    let (closed, ()) = tokio::join!(within("close", client.close()), hang_up);
    closed.expect("close");
    assert!(matches!(
        within("closed", events.next()).await,
        Some(Event::Closed(CloseReason::Local))
    ));
}

#[tokio::test]
async fn an_expired_receipt_resolves_a_tracked_send_with_its_status() {
    let broker = MockBroker::start().await;
    let (client, _events, mut peer) = connect(&broker, 30, 0).await;
    let options = SendOptions {
        ttl: Some(Duration::from_secs(1)),
        ..Default::default()
    };
    let track = client.send_and_track_with("bob", "hurry", options);
    let script = async {
        let (send_id, _, _, ttl_ms) = recv_send(&mut peer).await;
        assert_eq!(ttl_ms, Some(1_000));
        peer.send(BrokerFrame::Accepted {
            send_id,
            message_id: 42,
        })
        .await;
        peer.send(BrokerFrame::Receipt {
            receipt_id: 43,
            send_id,
            message_id: 42,
            to: "bob".into(),
            status: ReceiptStatus::Expired,
        })
        .await;
    };
    let (tracked, ()) = tokio::join!(track, script);
    let receipt = within("receipt", tracked.expect("accepted").receipt)
        .await
        .expect("receipt");
    assert_eq!(receipt.status, ReceiptStatus::Expired);
    assert_eq!(receipt.status.as_str(), "expired");
}

#[tokio::test]
async fn an_unread_event_stream_holds_back_reading_but_loses_nothing() {
    const MANY: u64 = 1500; // more than the events channel holds
    let broker = MockBroker::start().await;
    let (client, mut events, mut peer) = connect(&broker, 30, MANY).await;
    let flood = async {
        for n in 0..MANY {
            peer.send(BrokerFrame::Deliver {
                message_id: n,
                from: "bob".into(),
                send_id: 7,
                sent_at_ms: 0,
                body: Bytes::from(n.to_string()),
            })
            .await;
        }
        peer
    };
    let read = async {
        // Let the channel fill up before reading anything.
        tokio::time::sleep(Duration::from_millis(200)).await;
        for n in 0..MANY {
            match within("event", events.next()).await {
                Some(Event::Message(m)) => {
                    assert_eq!(m.message_id, n);
                    client.ack(n).await.expect("ack");
                }
                other => panic!("expected message {n}, got {other:?}"),
            }
        }
    };
    let (mut peer, ()) = tokio::join!(flood, read);
    for n in 0..MANY {
        assert_eq!(
            peer.recv_skipping_pings().await,
            Some(ClientFrame::Ack { id: n })
        );
    }
}
