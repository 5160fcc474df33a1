//! Reconnecting against a scripted broker: a lost connection is noticed, the client says `Hello`
//! again, unanswered sends go out again in order, and errors that reconnecting cannot cure end it.
//!
//! Every scenario synchronises on events and frames; the backoff is kept short (10 to 100 ms) so the
//! reconnects themselves are quick, and every wait is bounded by `support::WAIT`.

mod support;

use std::time::Duration;

use bytes::Bytes;
use switchboard_client::{
    Client, ClientError, ClientOptions, CloseReason, ErrorCode, Event, Events, ReceiptStatus,
    Reconnect, SendOptions, Sent,
};
use switchboard_proto::{BrokerFrame, ClientFrame, PROTOCOL_VERSION};

use support::*;

fn reconnecting(broker: &MockBroker) -> ClientOptions {
    let mut opts = ClientOptions::new(broker.addr.to_string(), "alice");
    opts.reconnect = Some(Reconnect::new(
        Duration::from_millis(10),
        Duration::from_millis(100),
    ));
    opts
}

async fn connect(broker: &MockBroker) -> (Client, Events, Peer) {
    let (connected, (peer, _hello)) = tokio::join!(
        within("connect", Client::connect(reconnecting(broker))),
        broker.welcome(30, 0)
    );
    let (client, events) = connected.expect("connect");
    (client, events, peer)
}

async fn next(events: &mut Events) -> Event {
    within("an event", events.next())
        .await
        .expect("the events ended")
}

/// Waits for the client to notice the loss; a hang-up reads as a disconnect or a reset.
async fn disconnected(events: &mut Events) -> CloseReason {
    match next(events).await {
        Event::Disconnected(reason) => reason,
        other => panic!("expected disconnected, got {other:?}"),
    }
}

fn spawn_send(
    client: &Client,
    body: &'static str,
) -> tokio::task::JoinHandle<Result<Sent, ClientError>> {
    let client = client.clone();
    tokio::spawn(async move { client.send("bob", body).await })
}

#[test]
fn backoff_ceilings_double_from_base_and_stop_at_cap() {
    let policy = Reconnect::new(Duration::from_millis(100), Duration::from_secs(1));
    let ceilings: Vec<u64> = (1..=6)
        .map(|attempt| policy.ceiling(attempt).as_millis() as u64)
        .collect();
    assert_eq!(ceilings, [100, 200, 400, 800, 1_000, 1_000]);
    assert_eq!(policy.ceiling(1_000), Duration::from_secs(1));
    let spinning = Reconnect::new(Duration::ZERO, Duration::ZERO);
    assert_eq!(spinning.ceiling(1), Reconnect::MIN_DELAY);
    assert_eq!(
        ClientOptions::new("x:1", "a").reconnect,
        None,
        "off by default"
    );
}

#[tokio::test]
async fn a_send_cut_off_before_its_answer_is_sent_again_and_answered_on_the_next_connection() {
    let broker = MockBroker::start().await;
    let (client, mut events, mut first) = connect(&broker).await;
    let ttl = SendOptions {
        ttl: Some(Duration::from_secs(90)),
    };
    let send = tokio::spawn({
        let client = client.clone();
        async move { client.send_with("bob", "hello bob", ttl).await }
    });

    // The broker reads the send, and the connection breaks before it answers.
    let (id, to, body, ttl_ms) = recv_send(&mut first).await;
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
        (id, to, body, ttl_ms),
        "the same send: id, recipient, body and ttl"
    );
    second
        .send(BrokerFrame::Accepted { id, message_id: 42 })
        .await;
    let sent = within("the send", send)
        .await
        .expect("task")
        .expect("accepted on the second connection");
    assert_eq!((sent.id, sent.message_id), (id, 42));

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
            Some(ClientFrame::Send { id, body, .. }) => {
                let message_id = 101 + sends.len() as u64;
                sends.push((id, body));
                second.send(BrokerFrame::Accepted { id, message_id }).await;
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
async fn a_tracked_receipt_survives_a_reconnect_and_is_not_shown_twice() {
    let broker = MockBroker::start().await;
    let (client, mut events, mut first) = connect(&broker).await;

    // Both tracked sends are stored; the first one's receipt arrives and the library acks it.
    let mut tracked = Vec::new();
    for message_id in [42, 43] {
        let track = client.send_and_track("bob", "tracked");
        let answer = async {
            let (id, ..) = recv_send(&mut first).await;
            first.send(BrokerFrame::Accepted { id, message_id }).await;
        };
        let (track, ()) = tokio::join!(track, answer);
        tracked.push(track.expect("accepted"));
    }
    let late = tracked.pop().expect("two");
    let early = tracked.pop().expect("two");
    first
        .send(BrokerFrame::Receipt {
            receipt_id: 50,
            id: early.sent.id,
            message_id: 42,
            to: "bob".into(),
            status: ReceiptStatus::Delivered,
        })
        .await;
    let receipt = within("early receipt", early.receipt)
        .await
        .expect("receipt");
    assert_eq!(receipt.receipt_id, 50);
    assert_eq!(
        first.recv_skipping_pings().await,
        Some(ClientFrame::Ack { id: 50 })
    );
    drop(first);
    disconnected(&mut events).await;

    // The broker never read that ack: receipt 50 comes again, then the late one, then a message.
    let (mut second, _) = broker.welcome(30, 3).await;
    for (receipt_id, id, message_id) in [(50, early.sent.id, 42), (52, late.sent.id, 43)] {
        second
            .send(BrokerFrame::Receipt {
                receipt_id,
                id,
                message_id,
                to: "bob".into(),
                status: ReceiptStatus::Expired,
            })
            .await;
    }
    second
        .send(BrokerFrame::Deliver {
            message_id: 53,
            from: "bob".into(),
            send_id: 7,
            sent_at_ms: 0,
            body: Bytes::from_static(b"after the break"),
        })
        .await;

    let receipt = within("late receipt", late.receipt)
        .await
        .expect("the receipt future waited through the reconnect");
    assert_eq!(
        (receipt.receipt_id, receipt.status),
        (52, ReceiptStatus::Expired)
    );
    assert_eq!(
        second.recv_skipping_pings().await,
        Some(ClientFrame::Ack { id: 50 })
    );
    assert_eq!(
        second.recv_skipping_pings().await,
        Some(ClientFrame::Ack { id: 52 })
    );
    assert!(matches!(next(&mut events).await, Event::Reconnected(_)));
    match next(&mut events).await {
        Event::Message(m) => assert_eq!(m.message_id, 53),
        other => panic!("expected the message, not a tracked receipt again: {other:?}"),
    }
}

#[tokio::test]
async fn session_taken_over_ends_the_client_without_reconnecting() {
    let broker = MockBroker::start().await;
    let (client, mut events, mut peer) = connect(&broker).await;
    let send = spawn_send(&client, "lost in the takeover");
    recv_send(&mut peer).await;
    peer.send(BrokerFrame::Error {
        code: ErrorCode::SessionTakenOver,
        text: "another connection logged in as alice".into(),
    })
    .await;
    drop(peer);

    // Closed comes first and last: the session ended without trying again.
    match next(&mut events).await {
        Event::Closed(CloseReason::Broker { code, .. }) => {
            assert_eq!(code, ErrorCode::SessionTakenOver)
        }
        other => panic!("expected closed, got {other:?}"),
    }
    assert_eq!(within("end", events.next()).await, None);
    let sent = within("the send", send).await.expect("task");
    assert!(matches!(sent, Err(ClientError::Closed)), "{sent:?}");
    assert!(matches!(
        client.send("bob", "x").await,
        Err(ClientError::Closed)
    ));
    assert!(matches!(client.ack(1).await, Err(ClientError::Closed)));
}

#[tokio::test]
async fn a_refused_hello_on_reconnect_ends_the_client() {
    let broker = MockBroker::start().await;
    let (client, mut events, mut first) = connect(&broker).await;
    let send = spawn_send(&client, "never stored");
    recv_send(&mut first).await;
    drop(first);
    disconnected(&mut events).await;

    let mut second = broker.accept().await;
    assert!(matches!(
        second.recv().await,
        Some(ClientFrame::Hello { .. })
    ));
    second
        .send(BrokerFrame::Error {
            code: ErrorCode::UnsupportedVersion,
            text: "version 1 is too old".into(),
        })
        .await;
    match next(&mut events).await {
        Event::Closed(CloseReason::Broker { code, .. }) => {
            assert_eq!(code, ErrorCode::UnsupportedVersion)
        }
        other => panic!("expected closed, got {other:?}"),
    }
    let sent = within("the send", send).await.expect("task");
    assert!(matches!(sent, Err(ClientError::Closed)), "{sent:?}");
}

#[tokio::test]
async fn a_failed_reconnect_attempt_is_tried_again() {
    let broker = MockBroker::start().await;
    let (client, mut events, first) = connect(&broker).await;
    drop(first);
    disconnected(&mut events).await;

    // The first attempt meets an overloaded broker that hangs up at once; a later one gets in.
    drop(broker.accept().await);
    let (mut second, _) = broker.welcome(30, 0).await;
    assert!(matches!(next(&mut events).await, Event::Reconnected(_)));
    client.ack(9).await.expect("ack on the new connection");
    assert_eq!(
        second.recv_skipping_pings().await,
        Some(ClientFrame::Ack { id: 9 })
    );
}

#[tokio::test]
async fn close_while_reconnecting_ends_at_once_and_fails_what_waits() {
    let broker = MockBroker::start().await;
    let (client, mut events, first) = connect(&broker).await;
    drop(first);
    disconnected(&mut events).await;
    let send = spawn_send(&client, "never sent");
    within("close", client.close()).await.expect("close");
    assert_eq!(next(&mut events).await, Event::Closed(CloseReason::Local));
    let sent = within("the send", send).await.expect("task");
    assert!(matches!(sent, Err(ClientError::Closed)), "{sent:?}");
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
    let (id, ..) = recv_send(&mut second).await;
    assert_eq!(id, newer_id);
    second
        .send(BrokerFrame::Accepted { id, message_id: 5 })
        .await;
    let (id, ..) = recv_send(&mut second).await;
    assert_eq!(id, 17);
    second
        .send(BrokerFrame::Accepted { id, message_id: 6 })
        .await;
    let sent = within("the older send", older).await.expect("task");
    assert_eq!(
        sent.expect("accepted"),
        Sent {
            id: 17,
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
    assert_eq!(spooled_first.id, 17);
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
        let id = before.id;
        assert_eq!(
            again,
            SendFrame {
                fresh: false,
                ..before
            },
            "the same id, recipient, body and ttl, as a resend"
        );
        second
            .send(BrokerFrame::Accepted {
                id,
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
            id: later_first.id,
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
