//! What a lost connection leaves unanswered goes out again on the next one: in the order the sends
//! were made, with their ids, and no longer `fresh`.

use std::time::Duration;

use switchboard_client::{ClientError, CloseReason, ErrorCode, Event, SendOptions, Sent};
use switchboard_proto::{BrokerFrame, ClientFrame, PROTOCOL_VERSION};

use crate::support::*;
use crate::{connect, disconnected, next, spawn_send};

#[tokio::test]
async fn a_send_cut_off_before_its_answer_is_sent_again_and_answered_on_the_next_connection() {
    let broker = MockBroker::start().await;
    let (client, mut events, mut first) = connect(&broker).await;
    let ttl = SendOptions {
        ttl: Some(Duration::from_secs(90)),
        ..Default::default()
    };
    let send = tokio::spawn({
        let client = client.clone();
        async move { client.send_with("bob", "hello bob", ttl).await }
    });

    // The broker reads the send, and the connection breaks before it answers.
    let (send_id, to, body, ttl_ms) = recv_send(&mut first).await;
    assert_eq!(
        (to.as_str(), &body[..], ttl_ms),
        ("bob", &b"hello bob"[..], Some(90_000))
    );
    drop(first);
    disconnected(&mut events).await;

    let (mut second, hello) = broker.welcome(30, 2).await;
    assert_eq!(
        hello,
        ClientFrame::Hello {
            version: PROTOCOL_VERSION,
            client_id: "alice".into(),
            token: None,
            keepalive_secs: 30,
        }
    );
    assert_eq!(
        recv_send(&mut second).await,
        (send_id, to, body, ttl_ms),
        "the same send: send id, recipient, body and ttl"
    );
    second
        .send(BrokerFrame::Accepted {
            send_id,
            message_id: 42,
        })
        .await;
    let sent = within("the send", send)
        .await
        .expect("task")
        .expect("accepted on the second connection");
    assert_eq!((sent.send_id, sent.message_id), (send_id, 42));

    match next(&mut events).await {
        Event::Reconnected(welcome) => {
            assert_eq!(welcome.pending, 2);
            assert_eq!(client.welcome(), welcome, "welcome() is the latest hi");
        }
        other => panic!("expected reconnected, got {other:?}"),
    }
}

#[tokio::test]
async fn sends_made_during_the_outage_follow_the_resent_ones_in_order() {
    let broker = MockBroker::start().await;
    let (client, mut events, mut first) = connect(&broker).await;
    let one = spawn_send(&client, "one");
    let (one_id, ..) = recv_send(&mut first).await;
    let two = spawn_send(&client, "two");
    let (two_id, ..) = recv_send(&mut first).await;
    first
        .send(BrokerFrame::Error {
            code: ErrorCode::ShuttingDown,
            text: "the broker is shutting down".into(),
        })
        .await;
    drop(first);
    assert!(matches!(
        disconnected(&mut events).await,
        CloseReason::Broker {
            code: ErrorCode::ShuttingDown,
            ..
        }
    ));

    // Made while no connection is up: two sends (joined, so "three" is taken first) and an ack.
    let later = tokio::spawn({
        let client = client.clone();
        async move { tokio::join!(client.send("bob", "three"), client.send("bob", "four")) }
    });
    let ack = tokio::spawn({
        let client = client.clone();
        async move { client.ack(7).await }
    });

    let (mut second, _) = broker.welcome(30, 0).await;
    let mut sends = Vec::new();
    let mut acks = Vec::new();
    while sends.len() < 4 {
        match second.recv_skipping_pings().await {
            Some(ClientFrame::Send { send_id, body, .. }) => {
                let message_id = 101 + sends.len() as u64;
                sends.push((send_id, body));
                second
                    .send(BrokerFrame::Accepted {
                        send_id,
                        message_id,
                    })
                    .await;
            }
            Some(ClientFrame::Ack { id }) => acks.push(id),
            other => panic!("expected sends and an ack, got {other:?}"),
        }
    }
    let bodies: Vec<&[u8]> = sends.iter().map(|(_, body)| &body[..]).collect();
    assert_eq!(bodies, [&b"one"[..], b"two", b"three", b"four"]);
    assert_eq!(
        (sends[0].0, sends[1].0),
        (one_id, two_id),
        "resent with their ids"
    );
    assert!(sends.windows(2).all(|w| w[0].0 < w[1].0), "{sends:?}");

    let message_id = |task: Result<Sent, ClientError>| task.expect("sent").message_id;
    assert_eq!(message_id(within("one", one).await.expect("task")), 101);
    assert_eq!(message_id(within("two", two).await.expect("task")), 102);
    let (three, four) = within("three and four", later).await.expect("task");
    assert_eq!((message_id(three), message_id(four)), (103, 104));
    within("the ack", ack)
        .await
        .expect("task")
        .expect("an ack made while disconnected is written on the next connection");
    if acks.is_empty() {
        acks.push(match second.recv_skipping_pings().await {
            Some(ClientFrame::Ack { id }) => id,
            other => panic!("expected the ack, got {other:?}"),
        });
    }
    assert_eq!(acks, [7]);
    assert!(matches!(next(&mut events).await, Event::Reconnected(_)));
}

#[tokio::test]
async fn sends_with_caller_chosen_ids_keep_their_ids_and_the_order_they_were_made_in() {
    let broker = MockBroker::start().await;
    let (client, mut events, mut first) = connect(&broker).await;
    // A library-numbered send first, then one whose id (chosen long ago, say) is far lower.
    let newer = spawn_send(&client, "numbered by the library");
    let (newer_id, ..) = recv_send(&mut first).await;
    let older = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .send_with_id("bob", "stored earlier", 17, SendOptions::default())
                .await
        }
    });
    let (older_id, _, body, _) = recv_send(&mut first).await;
    assert_eq!((older_id, &body[..]), (17, &b"stored earlier"[..]));
    assert!(newer_id > older_id);

    // The same id again while the first is unanswered fails at once and sends nothing.
    let again = within(
        "a duplicate id",
        client.send_with_id("bob", "other", 17, SendOptions::default()),
    )
    .await;
    assert!(
        matches!(again, Err(ClientError::DuplicateId(17))),
        "{again:?}"
    );

    // Both go out again after a reconnect, in the order they were made.
    drop(first);
    disconnected(&mut events).await;
    let (mut second, _) = broker.welcome(30, 0).await;
    let (send_id, ..) = recv_send(&mut second).await;
    assert_eq!(send_id, newer_id);
    second
        .send(BrokerFrame::Accepted {
            send_id,
            message_id: 5,
        })
        .await;
    let (send_id, ..) = recv_send(&mut second).await;
    assert_eq!(send_id, 17);
    second
        .send(BrokerFrame::Accepted {
            send_id,
            message_id: 6,
        })
        .await;
    let sent = within("the older send", older).await.expect("task");
    assert_eq!(
        sent.expect("accepted"),
        Sent {
            send_id: 17,
            message_id: 6
        }
    );
    let sent = within("the newer send", newer).await.expect("task");
    assert_eq!(sent.expect("accepted").message_id, 5);
}

#[tokio::test]
async fn a_library_send_goes_out_fresh_and_its_resends_do_not() {
    let broker = MockBroker::start().await;
    let (client, mut events, mut first) = connect(&broker).await;

    // Library-numbered sends are first attempts; a caller-chosen id may be a resend and never is.
    let plain = spawn_send(&client, "plain");
    let plain_first = recv_send_frame(&mut first).await;
    assert!(plain_first.fresh, "{plain_first:?}");
    let tracked = tokio::spawn({
        let client = client.clone();
        let ttl = SendOptions {
            ttl: Some(Duration::from_secs(90)),
            ..Default::default()
        };
        async move { client.send_and_track_with("bob", "tracked", ttl).await }
    });
    let tracked_first = recv_send_frame(&mut first).await;
    assert!(tracked_first.fresh, "{tracked_first:?}");
    assert_eq!(tracked_first.ttl_ms, Some(90_000));
    let spooled = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .send_with_id("bob", "spooled", 17, SendOptions::default())
                .await
        }
    });
    let spooled_first = recv_send_frame(&mut first).await;
    assert_eq!(spooled_first.send_id, 17);
    assert!(!spooled_first.fresh, "{spooled_first:?}");

    // The connection breaks before any answer: each goes out again, as the same send but not fresh.
    drop(first);
    disconnected(&mut events).await;
    // Made during the outage, this one never went out: its first attempt is fresh, on the next link.
    let later = spawn_send(&client, "made while away");
    let (mut second, _) = broker.welcome(30, 0).await;
    for (n, before) in [plain_first, tracked_first, spooled_first]
        .into_iter()
        .enumerate()
    {
        let again = recv_send_frame(&mut second).await;
        let send_id = before.send_id;
        assert_eq!(
            again,
            SendFrame {
                fresh: false,
                ..before
            },
            "the same send id, recipient, body and ttl, as a resend"
        );
        second
            .send(BrokerFrame::Accepted {
                send_id,
                message_id: 40 + n as u64,
            })
            .await;
    }
    let later_first = recv_send_frame(&mut second).await;
    assert_eq!(&later_first.body[..], b"made while away");
    assert!(later_first.fresh, "{later_first:?}");
    assert!(matches!(next(&mut events).await, Event::Reconnected(_)));

    // Lost once more before its answer, it too is a resend from now on.
    drop(second);
    disconnected(&mut events).await;
    let (mut third, _) = broker.welcome(30, 0).await;
    let again = recv_send_frame(&mut third).await;
    assert_eq!(
        again,
        SendFrame {
            fresh: false,
            ..later_first.clone()
        }
    );
    third
        .send(BrokerFrame::Accepted {
            send_id: later_first.send_id,
            message_id: 43,
        })
        .await;

    let message_id = |task: Result<Sent, ClientError>| task.expect("sent").message_id;
    assert_eq!(message_id(within("plain", plain).await.expect("task")), 40);
    let tracked = within("tracked", tracked)
        .await
        .expect("task")
        .expect("accepted");
    assert_eq!(tracked.sent.message_id, 41);
    assert_eq!(
        message_id(within("spooled", spooled).await.expect("task")),
        42
    );
    assert_eq!(message_id(within("later", later).await.expect("task")), 43);
}
