//! Sends: pipelined answers, send ids, time to live, the frame limit, and which sends go out
//! `fresh`.

use std::time::{Duration, UNIX_EPOCH};

use switchboard_client::{Client, ClientError, ClientOptions, RejectReason, SendOptions};
use switchboard_proto::{BrokerFrame, ClientFrame};

use crate::connect;
use crate::support::*;

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
            Some(ClientFrame::Send {
                send_id, to, body, ..
            }) => sends.push((send_id, to, body)),
            other => panic!("expected a send, got {other:?}"),
        }
    }
    assert_ne!(sends[0].0, sends[1].0, "send ids are unique");
    for (n, (send_id, to, _)) in sends.iter().enumerate() {
        let answer = if to == "bob" {
            BrokerFrame::Accepted {
                send_id: *send_id,
                message_id: 100 + n as u64,
            }
        } else {
            BrokerFrame::Rejected {
                send_id: *send_id,
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
    assert_eq!(accepted.send_id, sends[bob_send].0);
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
async fn send_ids_start_at_unix_microseconds_and_increase() {
    let broker = MockBroker::start().await;
    let (client, _events, mut peer) = connect(&broker, 30, 0).await;
    let before = UNIX_EPOCH.elapsed().expect("clock").as_micros() as u64;
    let mut last = 0;
    for n in 0..3 {
        let send = client.send("bob", "x");
        let answer = async {
            let Some(ClientFrame::Send { send_id, .. }) = peer.recv_skipping_pings().await else {
                panic!("expected a send");
            };
            peer.send(BrokerFrame::Accepted {
                send_id,
                message_id: n,
            })
            .await;
            send_id
        };
        let (sent, send_id) = tokio::join!(send, answer);
        assert_eq!(sent.expect("accepted").send_id, send_id);
        assert!(
            send_id >= before && send_id > last,
            "{send_id} after {last}"
        );
        last = send_id;
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
                ..Default::default()
            },
            Some(90_000),
        ),
        (
            SendOptions {
                ttl: Some(Duration::from_micros(1_500)),
                ..Default::default()
            },
            Some(2),
        ),
    ];
    for (n, (options, expected)) in cases.into_iter().enumerate() {
        let send = client.send_with("bob", "short-lived", options);
        let answer = async {
            let (send_id, _, _, ttl_ms) = recv_send(&mut peer).await;
            peer.send(BrokerFrame::Accepted {
                send_id,
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
async fn a_send_over_the_frame_limit_fails_alone() {
    let broker = MockBroker::start().await;
    let mut opts = ClientOptions::new(broker.addr.to_string(), "alice");
    opts.max_frame = Some(256);
    let (connected, (mut peer, _)) = tokio::join!(Client::connect(opts), broker.welcome(30, 0));
    let (client, _events) = connected.expect("connect");
    let err = within("the oversized send", client.send("bob", vec![0u8; 1024]))
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
async fn library_sends_are_fresh_and_sends_with_a_chosen_id_are_not() {
    let broker = MockBroker::start().await;
    let (client, _events, mut peer) = connect(&broker, 30, 0).await;
    let ttl = SendOptions {
        ttl: Some(Duration::from_secs(5)),
        ..Default::default()
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
                "send" => client.send("bob", body).await.map(|s| s.send_id),
                "send_with" => client.send_with("bob", body, ttl).await.map(|s| s.send_id),
                "send_and_track" => client
                    .send_and_track("bob", body)
                    .await
                    .map(|t| t.sent.send_id),
                "send_and_track_with" => client
                    .send_and_track_with("bob", body, ttl)
                    .await
                    .map(|t| t.sent.send_id),
                _ => client
                    .send_with_id("bob", body, 17, SendOptions::default())
                    .await
                    .map(|s| s.send_id),
            }
        };
        let answer = async {
            let send = recv_send_frame(&mut peer).await;
            peer.send(BrokerFrame::Accepted {
                send_id: send.send_id,
                message_id: n as u64,
            })
            .await;
            send
        };
        let (sent, send) = tokio::join!(within(call, sending), answer);
        assert_eq!(sent.expect("accepted"), send.send_id, "{call}");
        assert_eq!(&send.body[..], body, "{call}");
        assert_eq!(send.fresh, fresh, "{call}");
    }
}
