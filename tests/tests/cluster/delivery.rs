//! Messages between clients on different brokers of one cluster: live, offline, receipts, resends,
//! and order when two brokers commit into one mailbox at once.

use switchboard_client::{Event, SendOptions};
use switchboard_proto::ReceiptStatus;

use crate::support::*;

/// Messages each sender in that test sends.
const EACH: usize = 50;

/// Sends `0`..`EACH` to bob, one after the other.
async fn send_all(client: &switchboard_client::Client) {
    for i in 0..EACH {
        client.send("bob", format!("{i}")).await.expect("accepted");
    }
}

fn bodies(got: &[(String, String)]) -> Vec<&str> {
    got.iter().map(|(_, body)| body.as_str()).collect()
}

/// bob is on node 0, alice on node 1; alice sends ten messages; bob receives them at once, in
/// order, and alice gets ten receipts through her own node.
#[tokio::test]
async fn a_message_crosses_to_a_recipient_online_on_the_other_node_and_its_receipt_comes_back() {
    let Some(cluster) = Cluster::start("cross-node live delivery", 2).await else {
        return;
    };
    let (bob, mut bob_events) = cluster.connect(0, "bob").await;
    let (alice, _alice_events) = cluster.connect(1, "alice").await;
    let mut receipts = Vec::new();
    let mut sent = Vec::new();
    for i in 0..10 {
        let tracked = alice
            .send_and_track("bob", format!("m{i}"))
            .await
            .expect("accepted");
        sent.push(format!("m{i}"));
        receipts.push(tracked);
    }
    let got = receive_and_ack(&bob, &mut bob_events, 10).await;
    assert_eq!(bodies(&got), sent);
    for tracked in receipts {
        let receipt = within("a receipt from the other node", tracked.receipt)
            .await
            .expect("receipt");
        assert_eq!(receipt.status, ReceiptStatus::Delivered);
        assert_eq!(receipt.message_id, tracked.sent.message_id);
    }
}

/// alice sends three messages through node 0 while bob is offline; bob connects to node 1 and
/// drains them in order.
#[tokio::test]
async fn a_mailbox_filled_through_one_node_drains_through_the_other() {
    let Some(cluster) = Cluster::start("offline drain across nodes", 2).await else {
        return;
    };
    let (alice, _alice_events) = cluster.connect(0, "alice").await;
    for body in ["one", "two", "three"] {
        alice.send("bob", body).await.expect("accepted");
    }
    let (bob, mut bob_events) = cluster.connect(1, "bob").await;
    let got = receive_and_ack(&bob, &mut bob_events, 3).await;
    assert_eq!(bodies(&got), ["one", "two", "three"]);
}

/// alice sends with a chosen id through node 0, then again (as after a lost answer) through
/// node 1: both answers name the same message, and bob gets it once.
#[tokio::test]
async fn a_resend_through_the_other_node_is_stored_once() {
    let Some(cluster) = Cluster::start("resend across nodes", 2).await else {
        return;
    };
    let (first, _first_events) = cluster.connect(0, "alice").await;
    let original = first
        .send_with_id("bob", "only once", 42, SendOptions::default())
        .await
        .expect("accepted");
    first.close().await.expect("close");
    let (again, _again_events) = cluster.connect(1, "alice").await;
    let resent = again
        .send_with_id("bob", "only once", 42, SendOptions::default())
        .await
        .expect("accepted");
    assert_eq!(resent.message_id, original.message_id);
    again.send("bob", "after").await.expect("accepted");
    let (bob, mut bob_events) = cluster.connect(0, "bob").await;
    let got = receive_and_ack(&bob, &mut bob_events, 2).await;
    assert_eq!(bodies(&got), ["only once", "after"]);
}

/// alice on node 0 and carol on node 1 send to bob (on node 0) at the same time: the two
/// brokers' commits interleave in the one mailbox, and bob still gets every message, once, each
/// sender's in the order sent.
#[tokio::test]
async fn two_nodes_sending_into_one_mailbox_at_once_lose_nothing_and_keep_each_senders_order() {
    let Some(cluster) = Cluster::start("interleaved commits", 2).await else {
        return;
    };
    let (bob, mut bob_events) = cluster.connect(0, "bob").await;
    let (alice, _a) = cluster.connect(0, "alice").await;
    let (carol, _c) = cluster.connect(1, "carol").await;
    tokio::join!(send_all(&alice), send_all(&carol));
    let got = receive_and_ack(&bob, &mut bob_events, 2 * EACH).await;
    for sender in ["alice", "carol"] {
        let theirs: Vec<usize> = got
            .iter()
            .filter(|(from, _)| from == sender)
            .map(|(_, body)| body.parse().expect("a number"))
            .collect();
        assert_eq!(theirs, (0..EACH).collect::<Vec<_>>(), "{sender}'s messages");
    }
    // Nothing more comes: a last message is next.
    let (alice, _a) = cluster.connect(1, "alice2").await;
    alice.send("bob", "last").await.expect("accepted");
    match next_event(&mut bob_events).await {
        Event::Message(m) => assert_eq!(&m.body[..], b"last"),
        other => panic!("expected the last message, got {other:?}"),
    }
}

/// `hi.pending` counts what the mailbox holds in the database, not what the answering broker stored
/// itself: alice fills bob's mailbox through node 0 while he is offline, and bob, connecting to
/// node 1, hears 3 (it heard 0). Once he has drained it there, node 0, which stored the three, says 0
/// (it said 3, and `switchboard poll` waited for three entries that never came).
#[tokio::test]
async fn hi_counts_the_mailbox_as_the_database_holds_it_whichever_node_answers() {
    let Some(cluster) = Cluster::start("pending across nodes", 2).await else {
        return;
    };
    let (alice, _alice_events) = cluster.connect(0, "alice").await;
    for body in ["one", "two", "three"] {
        alice.send("bob", body).await.expect("accepted");
    }
    let (bob, mut bob_events) = cluster.connect(1, "bob").await;
    assert_eq!(bob.welcome().pending, 3, "node 1 counts what node 0 stored");
    receive_and_ack(&bob, &mut bob_events, 3).await;
    bob.close().await.expect("close");
    let url = cluster.url().to_owned();
    let emptied = blocking(move || {
        let mut db = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
        (0..200).any(|_| {
            let held: i64 = db
                .query_one(
                    "SELECT count(*) FROM switchboard_entries WHERE mailbox = 'bob'",
                    &[],
                )
                .expect("count")
                .get(0);
            held == 0 || {
                std::thread::sleep(std::time::Duration::from_millis(50));
                false
            }
        })
    })
    .await;
    assert!(emptied, "bob's acks reach the database");
    let (bob, _bob_events) = cluster.connect(0, "bob").await;
    assert_eq!(
        bob.welcome().pending,
        0,
        "node 0 no longer counts what was deleted through node 1"
    );
}
