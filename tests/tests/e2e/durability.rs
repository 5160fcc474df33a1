//! Idempotent resends, mailbox limits and expiry: the promises behind `Accepted` (GUARANTEES.md).

use std::time::Duration;

use bytes::Bytes;
use switchboard_client::{Client, ClientOptions, Event, Events, Reconnect};
use switchboard_proto::{BrokerFrame, ClientFrame, ReceiptStatus, Receipts, RejectReason};

use crate::support::*;

fn send(send_id: u64, to: &str, body: &str, ttl_ms: Option<u64>) -> ClientFrame {
    ClientFrame::Send {
        send_id,
        to: to.into(),
        body: Bytes::copy_from_slice(body.as_bytes()),
        ttl_ms,
        fresh: false,
        receipts: Receipts::All,
    }
}

/// Sends `frame` and returns the broker's answer to it (`Accepted` or `Rejected`).
async fn answer(raw: &mut Raw, frame: ClientFrame) -> BrokerFrame {
    raw.send(frame).await;
    loop {
        match raw.recv().await {
            Some(frame @ (BrokerFrame::Accepted { .. } | BrokerFrame::Rejected { .. })) => {
                return frame
            }
            Some(BrokerFrame::Receipt { .. }) => continue,
            other => panic!("expected an answer to the send, got {other:?}"),
        }
    }
}

async fn accepted(raw: &mut Raw, frame: ClientFrame) -> u64 {
    match answer(raw, frame).await {
        BrokerFrame::Accepted { message_id, .. } => message_id,
        other => panic!("expected accepted, got {other:?}"),
    }
}

/// Reads `n` deliveries, acknowledging each; returns their bodies.
async fn drain(raw: &mut Raw, n: usize) -> Vec<String> {
    let mut bodies = Vec::new();
    while bodies.len() < n {
        match raw.recv().await {
            Some(BrokerFrame::Deliver {
                message_id, body, ..
            }) => {
                bodies.push(String::from_utf8_lossy(&body).into_owned());
                raw.send(ClientFrame::Ack { id: message_id }).await;
            }
            other => panic!("expected a delivery, got {other:?}"),
        }
    }
    bodies
}

#[tokio::test]
async fn a_resent_send_is_stored_once_even_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = TestBroker::start(settings(dir.path())).await;
    let (mut alice, _) = Raw::hello(broker.addr, "alice", 30).await;
    let original = accepted(&mut alice, send(77, "bob", "only once", None)).await;
    // The connection drops before alice trusts the answer; she resends on a new one.
    drop(alice);
    let (mut alice, _) = Raw::hello(broker.addr, "alice", 30).await;
    assert_eq!(
        accepted(&mut alice, send(77, "bob", "only once", None)).await,
        original
    );
    // Twice in a row on one connection, too.
    let second = accepted(&mut alice, send(78, "bob", "second", None)).await;
    assert_eq!(
        accepted(&mut alice, send(78, "bob", "second", None)).await,
        second
    );
    drop(alice);
    broker.stop().await;

    let broker = TestBroker::start(settings(dir.path())).await;
    let (mut alice, _) = Raw::hello(broker.addr, "alice", 30).await;
    assert_eq!(
        accepted(&mut alice, send(77, "bob", "only once", None)).await,
        original
    );
    let (mut bob, hi) = Raw::hello(broker.addr, "bob", 30).await;
    assert!(matches!(hi, BrokerFrame::Hi { pending: 2, .. }), "{hi:?}");
    assert_eq!(drain(&mut bob, 2).await, ["only once", "second"]);
    // Nothing more: a ping is answered before any further delivery could be.
    bob.send(ClientFrame::Ping).await;
    assert_eq!(bob.recv().await, Some(BrokerFrame::Pong));
    broker.stop().await;
}

#[tokio::test]
async fn a_full_mailbox_rejects_new_sends_and_loses_nothing() {
    let fx = Fixture::with(|s| {
        s.mailbox.max_messages = 3;
        s.mailbox.max_bytes = 64;
    })
    .await;
    let (mut alice, _) = Raw::hello(fx.addr(), "alice", 30).await;
    let mut stored = Vec::new();
    for i in 1..=3 {
        stored.push(accepted(&mut alice, send(i, "bob", &format!("m{i}"), None)).await);
    }
    match answer(&mut alice, send(4, "bob", "m4", None)).await {
        BrokerFrame::Rejected {
            send_id: 4, reason, ..
        } => {
            assert_eq!(reason, RejectReason::MailboxFull)
        }
        other => panic!("expected mailbox-full, got {other:?}"),
    }
    // A resend of a stored message is still answered with its id, full or not.
    assert_eq!(
        accepted(&mut alice, send(2, "bob", "m2", None)).await,
        stored[1]
    );
    // Other mailboxes are unaffected; a body over the byte limit is too large anywhere.
    accepted(&mut alice, send(5, "carol", "fine", None)).await;
    match answer(&mut alice, send(6, "carol", &"x".repeat(65), None)).await {
        BrokerFrame::Rejected {
            send_id: 6, reason, ..
        } => assert_eq!(reason, RejectReason::TooLarge),
        other => panic!("expected too-large, got {other:?}"),
    }

    let (mut bob, _) = Raw::hello(fx.addr(), "bob", 30).await;
    assert_eq!(drain(&mut bob, 3).await, ["m1", "m2", "m3"]);
    // bob's acks free the mailbox in the same commit that stores alice's receipts, so once alice
    // holds all three receipts there is room again.
    for _ in 0..3 {
        match alice.recv().await {
            Some(BrokerFrame::Receipt { status, .. }) => {
                assert_eq!(status, ReceiptStatus::Delivered)
            }
            other => panic!("expected a receipt, got {other:?}"),
        }
    }
    accepted(&mut alice, send(7, "bob", "m4 again", None)).await;
    assert_eq!(drain(&mut bob, 1).await, ["m4 again"]);
}

#[tokio::test]
async fn an_expired_message_is_removed_and_its_sender_told() {
    let fx = Fixture::with(|s| s.mailbox.expiry_sweep_ms = 20).await;
    let (mut alice, _) = Raw::hello(fx.addr(), "alice", 30).await;
    let short = accepted(&mut alice, send(1, "bob", "short-lived", Some(50))).await;
    let kept = accepted(&mut alice, send(2, "bob", "kept", None)).await;
    // bob is away; the first message expires and alice hears of it.
    let (receipt_id, send_id, message_id, to, status) = match alice.recv().await {
        Some(BrokerFrame::Receipt {
            receipt_id,
            send_id,
            message_id,
            to,
            status,
        }) => (receipt_id, send_id, message_id, to, status),
        other => panic!("expected a receipt, got {other:?}"),
    };
    assert_eq!(
        (send_id, message_id, to.as_str(), status),
        (1, short, "bob", ReceiptStatus::Expired)
    );
    alice.send(ClientFrame::Ack { id: receipt_id }).await;

    let (mut bob, hi) = Raw::hello(fx.addr(), "bob", 30).await;
    assert!(matches!(hi, BrokerFrame::Hi { pending: 1, .. }), "{hi:?}");
    match bob.recv().await {
        Some(BrokerFrame::Deliver { message_id, .. }) => assert_eq!(message_id, kept),
        other => panic!("expected the kept message, got {other:?}"),
    }
}

#[tokio::test]
async fn the_default_ttl_applies_when_a_send_gives_none() {
    let fx = Fixture::with(|s| {
        s.mailbox.expiry_sweep_ms = 20;
        s.mailbox.default_ttl_secs = 1;
    })
    .await;
    let (mut alice, _) = Raw::hello(fx.addr(), "alice", 30).await;
    let sent = accepted(&mut alice, send(1, "bob", "fleeting", None)).await;
    match alice.recv().await {
        Some(BrokerFrame::Receipt {
            message_id, status, ..
        }) => assert_eq!((message_id, status), (sent, ReceiptStatus::Expired)),
        other => panic!("expected an expired receipt, got {other:?}"),
    }
}

#[tokio::test]
async fn a_reconnecting_library_client_rides_out_a_broker_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = TestBroker::start(settings(dir.path())).await;
    let addr = broker.addr;
    let mut opts = ClientOptions::new(addr.to_string(), "alice");
    opts.reconnect = Some(Reconnect::new(
        Duration::from_millis(10),
        Duration::from_millis(200),
    ));
    let (alice, mut alice_events) = within("connect", Client::connect(opts))
        .await
        .expect("connect");
    for i in 0..5 {
        alice
            .send("bob", format!("before {i}"))
            .await
            .expect("accepted");
    }
    broker.stop().await;
    match next_event(&mut alice_events).await {
        Event::Disconnected(_) => {}
        other => panic!("expected a disconnect, got {other:?}"),
    }
    // Sends made while the broker is down wait, and go out in order once it is back.
    let during: Vec<_> = (0..5)
        .map(|i| {
            let alice = alice.clone();
            tokio::spawn(async move { alice.send("bob", format!("during {i}")).await })
        })
        .collect();
    let mut restarted = settings(dir.path());
    restarted.listen = addr.to_string();
    let broker = TestBroker::start(restarted).await;
    for send in during {
        within("a send made during the outage", send)
            .await
            .expect("task")
            .expect("accepted");
    }
    let (bob, mut be) = connect(broker.addr, "bob").await;
    let mut got = receive_and_ack_all(&bob, &mut be, 10).await;
    let (before, mut during): (Vec<String>, Vec<String>) =
        got.drain(..).partition(|b| b.starts_with("before"));
    assert_eq!(
        before,
        (0..5).map(|i| format!("before {i}")).collect::<Vec<_>>()
    );
    during.sort();
    assert_eq!(
        during,
        (0..5).map(|i| format!("during {i}")).collect::<Vec<_>>()
    );
    broker.stop().await;
}

async fn receive_and_ack_all(client: &Client, events: &mut Events, n: usize) -> Vec<String> {
    let mut bodies = Vec::new();
    while bodies.len() < n {
        if let Event::Message(m) = next_event(events).await {
            bodies.push(String::from_utf8_lossy(&m.body).into_owned());
            client.ack(m.message_id).await.expect("ack");
        }
    }
    bodies
}

/// A client that only sends never collects its receipts: `mailbox.receipt_ttl_secs` removes them, so
/// its mailbox does not grow without end, and nobody is told (no receipt for a receipt).
#[tokio::test]
async fn an_uncollected_receipt_expires_without_a_word() {
    let fx = Fixture::with(|s| {
        s.mailbox.expiry_sweep_ms = 20;
        s.mailbox.receipt_ttl_secs = 1;
    })
    .await;
    let (mut alice, _) = Raw::hello(fx.addr(), "alice", 30).await;
    accepted(&mut alice, send(1, "bob", "for bob", None)).await;
    alice.send(ClientFrame::Bye).await;
    let (mut bob, _) = Raw::hello(fx.addr(), "bob", 30).await;
    assert_eq!(drain(&mut bob, 1).await, ["for bob"]);
    // bob's ack leaves alice's receipt as the one entry stored; the sweep removes it within the ttl.
    let admin = fx.broker.admin.expect("the admin listener is on");
    let entries = || async {
        let (_, scrape) = crate::admin::get(admin, "/metrics", None).await;
        crate::admin::sample(&scrape, "switchboard_mailbox_entries")
    };
    within("the receipt to be stored", async {
        while entries().await != 1.0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    within("the receipt to expire", async {
        while entries().await != 0.0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let (mut alice, hi) = Raw::hello(fx.addr(), "alice", 30).await;
    assert!(matches!(hi, BrokerFrame::Hi { pending: 0, .. }), "{hi:?}");
    alice.send(ClientFrame::Ping).await;
    assert_eq!(
        alice.recv().await,
        Some(BrokerFrame::Pong),
        "no receipt comes"
    );
}

fn send_asking(send_id: u64, body: &str, ttl_ms: Option<u64>, receipts: Receipts) -> ClientFrame {
    ClientFrame::Send {
        send_id,
        to: "bob".into(),
        body: Bytes::copy_from_slice(body.as_bytes()),
        ttl_ms,
        fresh: false,
        receipts,
    }
}

/// The next receipt `raw` gets: its send id and status.
async fn next_receipt(raw: &mut Raw) -> (u64, ReceiptStatus) {
    match raw.recv().await {
        Some(BrokerFrame::Receipt {
            send_id, status, ..
        }) => (send_id, status),
        other => panic!("expected a receipt, got {other:?}"),
    }
}

/// `receipts: none` and `delivered` are kept with the message, across a restart: bob acknowledges
/// three messages in order and alice hears only of the one that asked for every receipt. (Receipts
/// are queued in the order of the acks, so the first receipt to arrive proves the others never came.)
#[tokio::test]
async fn a_sender_gets_only_the_receipts_it_asked_for_even_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = TestBroker::start(settings(dir.path())).await;
    let (mut alice, _) = Raw::hello(broker.addr, "alice", 30).await;
    for (id, receipts) in [(1, Receipts::None), (2, Receipts::Delivered)] {
        accepted(&mut alice, send_asking(id, "quiet", None, receipts)).await;
    }
    accepted(&mut alice, send_asking(3, "loud", None, Receipts::All)).await;
    alice.send(ClientFrame::Bye).await;
    broker.stop().await;

    let broker = TestBroker::start(settings(dir.path())).await;
    let (mut bob, _) = Raw::hello(broker.addr, "bob", 30).await;
    assert_eq!(drain(&mut bob, 3).await, ["quiet", "quiet", "loud"]);
    let (mut alice, _) = Raw::hello(broker.addr, "alice", 30).await;
    assert_eq!(
        next_receipt(&mut alice).await,
        (2, ReceiptStatus::Delivered)
    );
    assert_eq!(
        next_receipt(&mut alice).await,
        (3, ReceiptStatus::Delivered)
    );
    alice.send(ClientFrame::Ping).await;
    assert_eq!(
        alice.recv().await,
        Some(BrokerFrame::Pong),
        "nothing for send 1"
    );
}

/// `receipts: delivered` leaves out the `expired` receipt: the message expires unnoticed, and the
/// next receipt alice gets is about a later message.
#[tokio::test]
async fn delivered_only_means_no_expired_receipt() {
    let fx = Fixture::with(|s| s.mailbox.expiry_sweep_ms = 20).await;
    let (mut alice, _) = Raw::hello(fx.addr(), "alice", 30).await;
    accepted(
        &mut alice,
        send_asking(1, "brief", Some(30), Receipts::Delivered),
    )
    .await;
    accepted(
        &mut alice,
        send_asking(2, "brief too", Some(30), Receipts::All),
    )
    .await;
    assert_eq!(next_receipt(&mut alice).await, (2, ReceiptStatus::Expired));
}
