//! The library against a scripted broker: handshake, sends, deliveries, receipts, keepalive, closing.

mod support;

use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use switchboard_client::{
    Client, ClientError, ClientOptions, CloseReason, ErrorCode, Event, ReceiptStatus, RejectReason,
    SendOptions,
};
use switchboard_proto::{BrokerFrame, ClientFrame, PROTOCOL_VERSION};

use support::*;

async fn connect(
    broker: &MockBroker,
    keepalive_secs: u32,
    pending: u64,
) -> (Client, switchboard_client::Events, Peer) {
    let opts = ClientOptions::new(broker.addr.to_string(), "alice");
    let (connected, (peer, _hello)) = tokio::join!(
        within("connect", Client::connect(opts)),
        broker.welcome(keepalive_secs, pending)
    );
    let (client, events) = connected.expect("connect");
    (client, events, peer)
}

#[test]
fn options_have_documented_defaults() {
    let opts = ClientOptions::new("127.0.0.1:7878", "alice");
    assert_eq!(opts.server, "127.0.0.1:7878");
    assert_eq!(opts.id, "alice");
    assert_eq!(opts.keepalive, Duration::from_secs(30));
    assert_eq!(opts.token, None);
    assert_eq!(opts.max_frame, switchboard_proto::DEFAULT_MAX_FRAME);
    assert_eq!(opts.connect_timeout, Duration::from_secs(10));
    assert_eq!(opts.reconnect, None);
}

#[tokio::test]
async fn a_closed_port_is_a_connect_error_that_reads_well() {
    let addr = closed_port();
    let err = Client::connect(ClientOptions::new(addr.to_string(), "alice"))
        .await
        .expect_err("nothing listens there");
    assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("cannot connect to {addr}: connection refused")
    );
}

#[tokio::test]
async fn an_invalid_id_is_refused_before_connecting() {
    // Nothing listens there: an attempt to connect would be a Connect error instead.
    let addr = closed_port();
    for id in ["", "has space", "bell\u{7}"] {
        let err = Client::connect(ClientOptions::new(addr.to_string(), id))
            .await
            .expect_err("refused");
        assert!(matches!(err, ClientError::InvalidId(_)), "{id:?}: {err:?}");
    }
}

#[tokio::test]
async fn hello_carries_the_options_and_hi_becomes_the_welcome() {
    let broker = MockBroker::start().await;
    let mut opts = ClientOptions::new(broker.addr.to_string(), "alice");
    opts.keepalive = Duration::from_secs(12);
    opts.token = Some("secret".into());
    let (connected, (_peer, hello)) = tokio::join!(Client::connect(opts), broker.welcome(7, 3));
    let (client, _events) = connected.expect("connect");
    assert_eq!(
        hello,
        ClientFrame::Hello {
            version: PROTOCOL_VERSION,
            client_id: "alice".into(),
            token: Some("secret".into()),
            keepalive_secs: 12,
        }
    );
    let welcome = client.welcome();
    assert_eq!(welcome.keepalive, Duration::from_secs(7));
    assert_eq!(welcome.pending, 3);
    assert!(welcome.address.starts_with("127.0.0.1:"), "{welcome:?}");
}

#[tokio::test]
async fn an_error_instead_of_hi_is_a_refusal() {
    let broker = MockBroker::start().await;
    let opts = ClientOptions::new(broker.addr.to_string(), "alice");
    let refuse = async {
        let mut peer = broker.accept().await;
        peer.recv().await.expect("hello");
        peer.send(BrokerFrame::Error {
            code: ErrorCode::UnsupportedVersion,
            text: "version 1 is too old".into(),
        })
        .await;
        peer
    };
    let (connected, _peer) = tokio::join!(Client::connect(opts), refuse);
    let err = connected.expect_err("refused");
    assert!(
        matches!(err, ClientError::Refused { code: ErrorCode::UnsupportedVersion, ref text } if text == "version 1 is too old"),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_broker_that_never_answers_times_out() {
    let broker = MockBroker::start().await;
    let mut opts = ClientOptions::new(broker.addr.to_string(), "alice");
    opts.connect_timeout = Duration::from_millis(200);
    let (connected, _peer) = tokio::join!(Client::connect(opts), broker.accept());
    assert!(matches!(connected, Err(ClientError::Timeout)));
}

#[tokio::test]
async fn pipelined_sends_resolve_with_their_own_answers() {
    let broker = MockBroker::start().await;
    let (client, _events, mut peer) = connect(&broker, 30, 0).await;
    let first = tokio::spawn({
        let client = client.clone();
        async move { client.send("bob", "one").await }
    });
    let second = tokio::spawn({
        let client = client.clone();
        async move { client.send("no such id", "two").await }
    });
    let mut sends = Vec::new();
    while sends.len() < 2 {
        match peer.recv_skipping_pings().await {
            Some(ClientFrame::Send { id, to, body, .. }) => sends.push((id, to, body)),
            other => panic!("expected a send, got {other:?}"),
        }
    }
    assert_ne!(sends[0].0, sends[1].0, "client message ids are unique");
    for (n, (id, to, _)) in sends.iter().enumerate() {
        let answer = if to == "bob" {
            BrokerFrame::Accepted {
                id: *id,
                message_id: 100 + n as u64,
            }
        } else {
            BrokerFrame::Rejected {
                id: *id,
                reason: RejectReason::InvalidRecipient,
                text: "client id contains a space".into(),
            }
        };
        peer.send(answer).await;
    }
    let accepted = within("first send", first)
        .await
        .expect("task")
        .expect("accepted");
    let bob_send = sends
        .iter()
        .position(|(_, to, body)| to == "bob" && &body[..] == b"one")
        .expect("sent to bob");
    assert_eq!(accepted.id, sends[bob_send].0);
    assert_eq!(accepted.message_id, 100 + bob_send as u64);
    let err = within("second send", second)
        .await
        .expect("task")
        .expect_err("rejected");
    assert!(
        matches!(
            err,
            ClientError::Rejected {
                reason: RejectReason::InvalidRecipient,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("invalid-recipient"), "{err}");
}

#[tokio::test]
async fn client_message_ids_start_at_unix_microseconds_and_increase() {
    let broker = MockBroker::start().await;
    let (client, _events, mut peer) = connect(&broker, 30, 0).await;
    let before = UNIX_EPOCH.elapsed().expect("clock").as_micros() as u64;
    let mut last = 0;
    for n in 0..3 {
        let send = client.send("bob", "x");
        let answer = async {
            let Some(ClientFrame::Send { id, .. }) = peer.recv_skipping_pings().await else {
                panic!("expected a send");
            };
            peer.send(BrokerFrame::Accepted { id, message_id: n }).await;
            id
        };
        let (sent, id) = tokio::join!(send, answer);
        assert_eq!(sent.expect("accepted").id, id);
        assert!(id >= before && id > last, "{id} after {last}");
        last = id;
    }
}

#[tokio::test]
async fn a_ttl_reaches_the_wire_in_milliseconds_and_no_ttl_is_left_out() {
    let broker = MockBroker::start().await;
    let (client, _events, mut peer) = connect(&broker, 30, 0).await;
    let cases = [
        (SendOptions::default(), None),
        (
            SendOptions {
                ttl: Some(Duration::from_secs(90)),
            },
            Some(90_000),
        ),
        (
            SendOptions {
                ttl: Some(Duration::from_micros(1_500)),
            },
            Some(2),
        ),
    ];
    for (n, (options, expected)) in cases.into_iter().enumerate() {
        let send = client.send_with("bob", "short-lived", options);
        let answer = async {
            let (id, _, _, ttl_ms) = recv_send(&mut peer).await;
            peer.send(BrokerFrame::Accepted {
                id,
                message_id: n as u64,
            })
            .await;
            ttl_ms
        };
        let (sent, ttl_ms) = tokio::join!(send, answer);
        sent.expect("accepted");
        assert_eq!(ttl_ms, expected, "{options:?}");
    }
}

#[tokio::test]
async fn an_expired_receipt_resolves_a_tracked_send_with_its_status() {
    let broker = MockBroker::start().await;
    let (client, _events, mut peer) = connect(&broker, 30, 0).await;
    let options = SendOptions {
        ttl: Some(Duration::from_secs(1)),
    };
    let track = client.send_and_track_with("bob", "hurry", options);
    let script = async {
        let (id, _, _, ttl_ms) = recv_send(&mut peer).await;
        assert_eq!(ttl_ms, Some(1_000));
        peer.send(BrokerFrame::Accepted { id, message_id: 42 })
            .await;
        peer.send(BrokerFrame::Receipt {
            receipt_id: 43,
            id,
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
    assert_eq!(m.send_id, 7, "the sender's client message id");
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
async fn a_tracked_receipt_resolves_its_future_and_is_acked_by_the_library() {
    let broker = MockBroker::start().await;
    let (client, mut events, mut peer) = connect(&broker, 30, 0).await;
    let track = client.send_and_track("bob", "tracked");
    let script = async {
        let Some(ClientFrame::Send { id, .. }) = peer.recv_skipping_pings().await else {
            panic!("expected a send");
        };
        peer.send(BrokerFrame::Accepted { id, message_id: 42 })
            .await;
        id
    };
    let (tracked, id) = tokio::join!(track, script);
    let tracked = tracked.expect("accepted");
    assert_eq!(tracked.sent.id, id);

    // An untracked receipt first (from an earlier run, say), then the tracked one.
    for (receipt_id, for_id) in [(50, 7), (51, id)] {
        peer.send(BrokerFrame::Receipt {
            receipt_id,
            id: for_id,
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
        (receipt.receipt_id, receipt.id, receipt.to.as_str()),
        (51, id, "bob")
    );
    assert_eq!(
        peer.recv_skipping_pings().await,
        Some(ClientFrame::Ack { id: 51 })
    );

    // Only the untracked receipt is an event, for the user to ack.
    match within("event", events.next()).await {
        Some(Event::Receipt(r)) => assert_eq!((r.receipt_id, r.id), (50, 7)),
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
async fn an_idle_client_pings_at_half_the_agreed_keepalive() {
    let broker = MockBroker::start().await;
    let (_client, _events, mut peer) = connect(&broker, 1, 0).await;
    let started = tokio::time::Instant::now();
    for _ in 0..3 {
        assert_eq!(peer.recv().await, Some(ClientFrame::Ping));
        peer.send(BrokerFrame::Pong).await;
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1_400) && elapsed < Duration::from_millis(2_500),
        "three pings took {elapsed:?}"
    );
}

#[tokio::test]
async fn a_broker_error_ends_the_events_and_fails_pending_sends() {
    let broker = MockBroker::start().await;
    let (client, mut events, mut peer) = connect(&broker, 30, 0).await;
    let send = client.send("bob", "lost in the takeover");
    let script = async {
        assert!(matches!(
            peer.recv_skipping_pings().await,
            Some(ClientFrame::Send { .. })
        ));
        peer.send(BrokerFrame::Error {
            code: ErrorCode::SessionTakenOver,
            text: "another connection logged in as alice".into(),
        })
        .await;
        drop(peer);
    };
    let (sent, ()) = tokio::join!(send, script);
    assert!(matches!(sent, Err(ClientError::Closed)), "{sent:?}");
    match within("closed", events.next()).await {
        Some(Event::Closed(CloseReason::Broker { code, text })) => {
            assert_eq!(code, ErrorCode::SessionTakenOver);
            assert!(text.contains("alice"));
        }
        other => panic!("expected closed, got {other:?}"),
    }
    assert_eq!(within("end", events.next()).await, None);
    assert!(matches!(client.ack(1).await, Err(ClientError::Closed)));
    assert!(matches!(
        client.send("bob", "x").await,
        Err(ClientError::Closed)
    ));
    client
        .close()
        .await
        .expect("closing a closed client is fine");
}

#[tokio::test]
async fn a_broker_that_hangs_up_is_a_disconnect() {
    let broker = MockBroker::start().await;
    let (_client, mut events, peer) = connect(&broker, 30, 0).await;
    drop(peer);
    assert_eq!(
        within("closed", events.next()).await,
        Some(Event::Closed(CloseReason::Disconnected))
    );
    assert_eq!(within("end", events.next()).await, None);
}

#[tokio::test]
async fn close_sends_acks_then_bye_and_waits_for_the_broker() {
    let broker = MockBroker::start().await;
    let (client, _events, mut peer) = connect(&broker, 30, 0).await;
    client.ack(9).await.expect("ack");
    let script = async move {
        assert_eq!(
            peer.recv_skipping_pings().await,
            Some(ClientFrame::Ack { id: 9 })
        );
        assert_eq!(peer.recv_skipping_pings().await, Some(ClientFrame::Bye));
        assert_eq!(
            peer.recv().await,
            None,
            "the client shuts its side after bye"
        );
        drop(peer); // close() waits for this
    };
    let (closed, ()) = tokio::join!(within("close", client.close()), script);
    closed.expect("close");
}

#[tokio::test]
async fn dropping_every_handle_says_bye() {
    let broker = MockBroker::start().await;
    let (client, events, mut peer) = connect(&broker, 30, 0).await;
    let other = client.clone();
    drop(client);
    drop(events);
    // One clone is still alive: the connection stays.
    other.ack(1).await.expect("still connected");
    assert_eq!(
        peer.recv_skipping_pings().await,
        Some(ClientFrame::Ack { id: 1 })
    );
    drop(other);
    assert_eq!(peer.recv_skipping_pings().await, Some(ClientFrame::Bye));
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

#[tokio::test]
async fn a_send_over_the_frame_limit_fails_alone() {
    let broker = MockBroker::start().await;
    let mut opts = ClientOptions::new(broker.addr.to_string(), "alice");
    opts.max_frame = 256;
    let (connected, (mut peer, _)) = tokio::join!(Client::connect(opts), broker.welcome(30, 0));
    let (client, _events) = connected.expect("connect");
    let err = client
        .send("bob", vec![0u8; 1024])
        .await
        .expect_err("too large");
    assert!(matches!(err, ClientError::Codec(_)), "{err:?}");
    client.ack(3).await.expect("the connection carries on");
    assert_eq!(
        peer.recv_skipping_pings().await,
        Some(ClientFrame::Ack { id: 3 })
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
async fn a_dead_connection_fails_sends_even_while_events_go_unread() {
    const EVENTS_CAPACITY: u64 = 1024; // client.rs: the events channel fills up exactly
    let broker = MockBroker::start().await;
    let (client, mut events, mut peer) = connect(&broker, 30, 0).await;
    let send = client.send("bob", "never answered");
    let script = async {
        assert!(matches!(
            peer.recv_skipping_pings().await,
            Some(ClientFrame::Send { .. })
        ));
        for n in 0..EVENTS_CAPACITY {
            peer.send(BrokerFrame::Deliver {
                message_id: n,
                from: "bob".into(),
                send_id: 7,
                sent_at_ms: 0,
                body: Bytes::new(),
            })
            .await;
        }
        peer.send(BrokerFrame::Error {
            code: ErrorCode::Internal,
            text: "gone".into(),
        })
        .await;
        peer
    };
    // Nobody reads events while the send waits; the send still learns the connection is gone.
    let (sent, _peer) = tokio::join!(within("the send to fail", send), script);
    assert!(matches!(sent, Err(ClientError::Closed)), "{sent:?}");
    for _ in 0..EVENTS_CAPACITY {
        assert!(matches!(events.next().await, Some(Event::Message(_))));
    }
    assert!(matches!(
        within("closed", events.next()).await,
        Some(Event::Closed(CloseReason::Broker {
            code: ErrorCode::Internal,
            ..
        }))
    ));
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
    let bytes = switchboard_proto::encode_frame(&old, 1 << 20).expect("encode");
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
async fn library_sends_are_fresh_and_sends_with_a_chosen_id_are_not() {
    let broker = MockBroker::start().await;
    let (client, _events, mut peer) = connect(&broker, 30, 0).await;
    let ttl = SendOptions {
        ttl: Some(Duration::from_secs(5)),
    };
    // (which call, body, whether its first transmission may be delivered before it is on disk)
    let cases: [(&str, &[u8], bool); 5] = [
        ("send", b"one", true),
        ("send_with", b"two", true),
        ("send_and_track", b"three", true),
        ("send_and_track_with", b"four", true),
        ("send_with_id", b"five", false),
    ];
    for (n, (call, body, fresh)) in cases.into_iter().enumerate() {
        let sending = async {
            match call {
                "send" => client.send("bob", body).await.map(|s| s.id),
                "send_with" => client.send_with("bob", body, ttl).await.map(|s| s.id),
                "send_and_track" => client.send_and_track("bob", body).await.map(|t| t.sent.id),
                "send_and_track_with" => client
                    .send_and_track_with("bob", body, ttl)
                    .await
                    .map(|t| t.sent.id),
                _ => client
                    .send_with_id("bob", body, 17, SendOptions::default())
                    .await
                    .map(|s| s.id),
            }
        };
        let answer = async {
            let send = recv_send_frame(&mut peer).await;
            peer.send(BrokerFrame::Accepted {
                id: send.id,
                message_id: n as u64,
            })
            .await;
            send
        };
        let (sent, send) = tokio::join!(within(call, sending), answer);
        assert_eq!(sent.expect("accepted"), send.id, "{call}");
        assert_eq!(&send.body[..], body, "{call}");
        assert_eq!(send.fresh, fresh, "{call}");
    }
}
