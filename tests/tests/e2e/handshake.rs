//! Connecting: Hello/Hi, refusals, takeover, keepalive.

use std::time::Duration;

use switchboard_client::{Client, ClientError, ClientOptions, Event};
use switchboard_proto::{BrokerFrame, ClientFrame, ErrorCode, PROTOCOL_VERSION};

use crate::support::*;

#[tokio::test]
async fn hello_gets_hi_with_the_pending_count_and_the_address() {
    let fx = Fixture::new().await;
    let (alice, _alice_events) = fx.connect("alice").await;
    for i in 0..2 {
        alice.send("bob", format!("m{i}")).await.expect("accepted");
    }
    let (_raw, hi) = Raw::hello(fx.addr(), "bob", 30).await;
    let BrokerFrame::Hi {
        version,
        keepalive_secs,
        address,
        pending,
        max_body_bytes,
        ..
    } = hi
    else {
        unreachable!()
    };
    assert_eq!(
        max_body_bytes,
        1_048_576 - 216,
        "the default frame less the widest deliver"
    );
    assert_eq!(version, PROTOCOL_VERSION);
    assert_eq!(keepalive_secs, 30);
    assert!(address.starts_with("127.0.0.1:"), "{address}");
    assert_eq!(pending, 2);
}

#[tokio::test]
async fn the_registry_records_who_is_connected_and_from_where() {
    let fx = Fixture::new().await;
    let (alice, _events) = fx.connect("alice").await;
    let seen = fx
        .broker
        .lookup("alice")
        .await
        .expect("alice is registered");
    assert_eq!(seen.peer.to_string(), alice.welcome().address);
    assert!(fx.broker.lookup("bob").await.is_none());
}

#[tokio::test]
async fn a_wrong_protocol_version_is_refused_clearly() {
    let fx = Fixture::new().await;
    let mut raw = Raw::connect(fx.addr()).await;
    raw.send(ClientFrame::Hello {
        version: 99,
        client_id: "alice".into(),
        token: None,
        keepalive_secs: 30,
    })
    .await;
    let frames = raw.until_closed().await;
    assert!(
        matches!(&frames[..], [BrokerFrame::Error { code: ErrorCode::UnsupportedVersion, text }] if text.contains("99")),
        "{frames:?}"
    );
}

#[tokio::test]
async fn invalid_client_ids_are_refused() {
    let fx = Fixture::new().await;
    for id in ["", "has space", "bell\u{7}", &"x".repeat(129)] {
        let mut raw = Raw::connect(fx.addr()).await;
        raw.send(ClientFrame::Hello {
            version: PROTOCOL_VERSION,
            client_id: id.into(),
            token: None,
            keepalive_secs: 30,
        })
        .await;
        let frames = raw.until_closed().await;
        assert!(
            matches!(
                &frames[..],
                [BrokerFrame::Error {
                    code: ErrorCode::InvalidClientId,
                    ..
                }]
            ),
            "{id:?}: {frames:?}"
        );
    }
    // The library refuses them before connecting.
    let err = Client::connect(ClientOptions::new(fx.addr().to_string(), "has space"))
        .await
        .expect_err("refused");
    assert!(matches!(err, ClientError::InvalidId(_)), "{err}");
}

#[tokio::test]
async fn send_before_hello_is_an_error_and_a_close() {
    let fx = Fixture::new().await;
    let mut raw = Raw::connect(fx.addr()).await;
    raw.send(ClientFrame::Send {
        send_id: 1,
        to: "bob".into(),
        body: "sneaky".into(),
        ttl_ms: None,
        fresh: false,
        receipts: switchboard_proto::Receipts::All,
    })
    .await;
    let frames = raw.until_closed().await;
    assert_closed_with(&frames, ErrorCode::HelloRequired);
    // Nothing was stored for bob.
    let (_bob, hi) = Raw::hello(fx.addr(), "bob", 30).await;
    assert!(matches!(hi, BrokerFrame::Hi { pending: 0, .. }), "{hi:?}");
}

#[tokio::test]
async fn a_silent_connection_is_closed_at_the_handshake_timeout() {
    let fx = Fixture::with(|s| s.limits.handshake_timeout_ms = 300).await;
    let mut raw = Raw::connect(fx.addr()).await;
    let frames = raw.until_closed().await;
    assert_closed_with(&frames, ErrorCode::HandshakeTimeout);
}

#[tokio::test]
async fn a_second_hello_is_unexpected() {
    let fx = Fixture::new().await;
    let (mut raw, _) = Raw::hello(fx.addr(), "alice", 30).await;
    raw.send(ClientFrame::Hello {
        version: PROTOCOL_VERSION,
        client_id: "alice".into(),
        token: None,
        keepalive_secs: 30,
    })
    .await;
    let frames = raw.until_closed().await;
    assert_closed_with(&frames, ErrorCode::UnexpectedFrame);
}

#[tokio::test]
async fn a_client_that_stops_pinging_is_dropped_and_ping_gets_pong() {
    let fx = Fixture::new().await;
    let (mut raw, hi) = Raw::hello(fx.addr(), "sleepy", 1).await;
    assert!(matches!(
        hi,
        BrokerFrame::Hi {
            keepalive_secs: 1,
            ..
        }
    ));
    raw.send(ClientFrame::Ping).await;
    assert_eq!(raw.recv().await, Some(BrokerFrame::Pong));
    // Then silence: the broker closes after 1.5 x 1 s.
    let started = std::time::Instant::now();
    let frames = raw.until_closed().await;
    assert_closed_with(&frames, ErrorCode::KeepaliveTimeout);
    assert!(
        started.elapsed() >= Duration::from_millis(1_400),
        "closed too early"
    );
}

#[tokio::test]
async fn a_library_client_with_a_short_keepalive_stays_connected() {
    let fx = Fixture::new().await;
    let mut opts = ClientOptions::new(fx.addr().to_string(), "steady");
    opts.keepalive = Duration::from_secs(1);
    let (steady, mut events) = within("connect", Client::connect(opts))
        .await
        .expect("connect");
    // Well past 1.5 x keepalive, the connection still carries messages because the library pings.
    let (alice, _ae) = fx.connect("alice").await;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(2_500);
    tokio::time::sleep_until(deadline).await; // elapsed time is the point of this test, not a sync
    alice
        .send("steady", "still there?")
        .await
        .expect("accepted");
    match next_event(&mut events).await {
        Event::Message(m) => assert_eq!(&m.body[..], b"still there?"),
        other => panic!("expected the message, got {other:?}"),
    }
    drop(steady);
}

#[tokio::test]
async fn a_new_connection_takes_over_and_unacked_deliveries_return() {
    let fx = Fixture::new().await;
    let (alice, _ae) = fx.connect("alice").await;
    let (mut first, _) = Raw::hello(fx.addr(), "bob", 30).await;
    alice.send("bob", "one").await.expect("accepted");
    let delivered = first.recv().await.expect("deliver");
    assert!(
        matches!(delivered, BrokerFrame::Deliver { .. }),
        "{delivered:?}"
    );
    // bob connects again without acking: the old connection is told and closed, the message returns.
    let (second, mut events) = fx.connect("bob").await;
    let frames = first.until_closed().await;
    assert_closed_with(&frames, ErrorCode::SessionTakenOver);
    match next_event(&mut events).await {
        Event::Message(m) => {
            assert_eq!(&m.body[..], b"one");
            second.ack(m.message_id).await.expect("ack");
        }
        other => panic!("expected the message again, got {other:?}"),
    }
}
