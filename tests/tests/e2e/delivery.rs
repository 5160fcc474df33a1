//! Messages: online relay, offline mailboxes, order, receipts, restarts, flow control.

use std::collections::HashMap;

use switchboard_client::{Client, Event, Events};
use switchboard_proto::{BrokerFrame, ClientFrame, ReceiptStatus};

use crate::support::*;

/// Reads `n` messages, acknowledging each; returns their bodies as text.
async fn receive_and_ack(client: &Client, events: &mut Events, n: usize) -> Vec<String> {
    let mut bodies = Vec::with_capacity(n);
    while bodies.len() < n {
        match next_event(events).await {
            Event::Message(m) => {
                bodies.push(String::from_utf8(m.body.to_vec()).expect("utf-8 body"));
                client.ack(m.message_id).await.expect("ack");
            }
            other => panic!("expected a message, got {other:?}"),
        }
    }
    bodies
}

/// Reads `n` receipts, acknowledging each; returns the send ids they name.
async fn receipts(client: &Client, events: &mut Events, n: usize) -> Vec<u64> {
    let mut ids = Vec::with_capacity(n);
    while ids.len() < n {
        match next_event(events).await {
            Event::Receipt(r) => {
                assert_eq!(r.status, ReceiptStatus::Delivered);
                ids.push(r.send_id);
                client.ack(r.receipt_id).await.expect("ack receipt");
            }
            other => panic!("expected a receipt, got {other:?}"),
        }
    }
    ids
}

#[tokio::test]
async fn alice_to_online_bob_is_accepted_delivered_and_receipted() {
    let fx = Fixture::new().await;
    let (bob, mut bob_events) = fx.connect("bob").await;
    let (alice, _alice_events) = fx.connect("alice").await;

    let tracked = alice
        .send_and_track("bob", "hello bob")
        .await
        .expect("accepted");
    match next_event(&mut bob_events).await {
        Event::Message(m) => {
            assert_eq!(m.from, "alice");
            assert_eq!(&m.body[..], b"hello bob");
            assert_eq!(m.message_id, tracked.sent.message_id);
            bob.ack(m.message_id).await.expect("ack");
        }
        other => panic!("expected a message, got {other:?}"),
    }
    let receipt = within("receipt", tracked.receipt).await.expect("receipt");
    assert_eq!(receipt.send_id, tracked.sent.send_id);
    assert_eq!(receipt.message_id, tracked.sent.message_id);
    assert_eq!(receipt.to, "bob");
    assert_eq!(receipt.status, ReceiptStatus::Delivered);
}

#[tokio::test]
async fn bob_offline_gets_three_in_order_and_alice_gets_three_receipts() {
    let fx = Fixture::new().await;
    let (alice, mut alice_events) = fx.connect("alice").await;
    let mut sent = Vec::new();
    for body in ["one", "two", "three"] {
        sent.push(alice.send("bob", body).await.expect("accepted").send_id);
    }

    let (bob, mut bob_events) = fx.connect("bob").await;
    assert_eq!(bob.welcome().pending, 3);
    assert_eq!(
        receive_and_ack(&bob, &mut bob_events, 3).await,
        ["one", "two", "three"]
    );
    assert_eq!(receipts(&alice, &mut alice_events, 3).await, sent);
}

#[tokio::test]
async fn receipts_wait_for_an_offline_sender() {
    let fx = Fixture::new().await;
    let (alice, alice_events) = fx.connect("alice").await;
    let sent = alice
        .send("bob", "ping me back")
        .await
        .expect("accepted")
        .send_id;
    alice.close().await.expect("close");
    drop(alice_events);

    let (bob, mut bob_events) = fx.connect("bob").await;
    receive_and_ack(&bob, &mut bob_events, 1).await;
    // The broker handles a session's frames in order and commits in order: once bob's next send is
    // accepted, the receipt his ack produced is stored too.
    bob.send("zed", "after the ack").await.expect("accepted");

    let (alice, mut alice_events) = fx.connect("alice").await;
    assert_eq!(alice.welcome().pending, 1);
    assert_eq!(receipts(&alice, &mut alice_events, 1).await, [sent]);
}

#[tokio::test]
async fn messages_sent_during_a_flush_arrive_after_the_flushed_ones() {
    // A small window and page force the flush to go in many rounds.
    let fx = Fixture::with(|s| {
        s.limits.window = 8;
        s.limits.page_size = 5;
    })
    .await;
    let (alice, _ae) = fx.connect("alice").await;
    for i in 0..100 {
        alice
            .send("bob", format!("old {i:03}"))
            .await
            .expect("accepted");
    }
    let (bob, mut bob_events) = fx.connect("bob").await;
    let mut got = receive_and_ack(&bob, &mut bob_events, 10).await;
    // The flush is under way; newer messages must queue behind the rest of the mailbox.
    for i in 0..20 {
        alice
            .send("bob", format!("new {i:03}"))
            .await
            .expect("accepted");
    }
    got.extend(receive_and_ack(&bob, &mut bob_events, 110).await);
    let expected: Vec<String> = (0..100)
        .map(|i| format!("old {i:03}"))
        .chain((0..20).map(|i| format!("new {i:03}")))
        .collect();
    assert_eq!(got, expected);
}

#[tokio::test]
async fn a_clean_restart_keeps_every_mailbox_and_receipt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = TestBroker::start(settings(dir.path())).await;
    let (alice, ae) = connect(broker.addr, "alice").await;
    for i in 0..3 {
        alice
            .send("bob", format!("to bob {i}"))
            .await
            .expect("accepted");
    }
    alice.send("carol", "to carol").await.expect("accepted");
    drop((alice, ae));
    broker.stop().await;

    let broker = TestBroker::start(settings(dir.path())).await;
    let (bob, mut be) = connect(broker.addr, "bob").await;
    assert_eq!(bob.welcome().pending, 3);
    assert_eq!(
        receive_and_ack(&bob, &mut be, 3).await,
        ["to bob 0", "to bob 1", "to bob 2"]
    );
    let (carol, mut ce) = connect(broker.addr, "carol").await;
    assert_eq!(receive_and_ack(&carol, &mut ce, 1).await, ["to carol"]);
    drop((bob, be, carol, ce));
    broker.stop().await;

    // The receipts for alice were stored too, and survive another restart.
    let broker = TestBroker::start(settings(dir.path())).await;
    let (alice, mut ae) = connect(broker.addr, "alice").await;
    assert_eq!(alice.welcome().pending, 4);
    assert_eq!(receipts(&alice, &mut ae, 4).await.len(), 4);
    broker.stop().await;
}

#[tokio::test]
async fn a_hundred_clients_sending_to_each_other_get_everything_exactly_once() {
    const CLIENTS: usize = 100;
    const PEERS: usize = 9; // each client sends one message to each of the next nine
    let fx = Fixture::new().await;
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        clients.push(fx.connect(&format!("client-{i:03}")).await);
    }
    let mut receivers = Vec::new();
    for (i, (client, events)) in clients.into_iter().enumerate() {
        for k in 1..=PEERS {
            let to = format!("client-{:03}", (i + k) % CLIENTS);
            client
                .send(&to, format!("{i}->{to}"))
                .await
                .expect("accepted");
        }
        receivers.push(tokio::spawn(async move {
            let mut events = events;
            let mut seen: HashMap<String, usize> = HashMap::new();
            while seen.values().sum::<usize>() < PEERS {
                match next_event(&mut events).await {
                    Event::Message(m) => {
                        *seen
                            .entry(String::from_utf8_lossy(&m.body).into_owned())
                            .or_default() += 1;
                        client.ack(m.message_id).await.expect("ack");
                    }
                    Event::Receipt(r) => client.ack(r.receipt_id).await.expect("ack receipt"),
                    other => panic!("unexpected {other:?}"),
                }
            }
            (i, seen)
        }));
    }
    for receiver in receivers {
        let (i, seen) = within("receiver", receiver).await.expect("receiver task");
        let me = format!("client-{i:03}");
        let expected: HashMap<String, usize> = (1..=PEERS)
            .map(|k| (format!("{}->{me}", (i + CLIENTS - k) % CLIENTS), 1))
            .collect();
        assert_eq!(seen, expected, "{me}");
    }
}

#[tokio::test]
async fn a_consumer_that_never_acks_holds_at_most_the_window_and_loses_nothing() {
    let fx = Fixture::with(|s| s.limits.window = 4).await;
    let (alice, _ae) = fx.connect("alice").await;
    let (mut lazy, _) = Raw::hello(fx.addr(), "bob", 30).await;
    for i in 0..20 {
        alice
            .send("bob", format!("m{i:02}"))
            .await
            .expect("accepted");
    }
    for i in 0..4 {
        match lazy.recv().await {
            Some(BrokerFrame::Deliver { body, .. }) => {
                assert_eq!(&body[..], format!("m{i:02}").as_bytes())
            }
            other => panic!("expected delivery {i}, got {other:?}"),
        }
    }
    // Frames arrive in order: a Pong straight after the fourth delivery proves no fifth was sent.
    lazy.send(ClientFrame::Ping).await;
    assert_eq!(lazy.recv().await, Some(BrokerFrame::Pong));
    drop(lazy);

    // A well-behaved bob then gets all twenty, in order, nothing lost.
    let (bob, mut be) = fx.connect("bob").await;
    let expected: Vec<String> = (0..20).map(|i| format!("m{i:02}")).collect();
    assert_eq!(receive_and_ack(&bob, &mut be, 20).await, expected);
}

#[tokio::test]
async fn a_consumer_that_stops_reading_its_socket_is_disconnected_and_loses_nothing() {
    const MESSAGES: usize = 300; // 300 x 64 KiB: far more than the kernel buffers on loopback
    let fx = Fixture::with(|s| {
        s.limits.window = 1_000;
        s.limits.window_bytes = 32 << 20;
        s.limits.max_outgoing_bytes = 40 << 20;
        s.limits.write_timeout_ms = 300;
    })
    .await;
    let (alice, _ae) = fx.connect("alice").await;
    // bob says hello and then never reads a byte.
    let (stuck, _) = Raw::hello(fx.addr(), "bob", 30).await;
    for i in 0..MESSAGES {
        let mut body = format!("{i:04}").into_bytes();
        body.resize(64 * 1024, b'.');
        alice.send("bob", body).await.expect("accepted");
    }
    // The broker gives up on the stuck connection once its socket takes nothing for 300 ms.
    fx.broker.gone("bob").await;
    drop(stuck);

    let (bob, mut be) = fx.connect("bob").await;
    let got: Vec<String> = receive_and_ack(&bob, &mut be, MESSAGES)
        .await
        .into_iter()
        .map(|body| body[..4].to_string())
        .collect();
    let expected: Vec<String> = (0..MESSAGES).map(|i| format!("{i:04}")).collect();
    assert_eq!(got, expected);
}
