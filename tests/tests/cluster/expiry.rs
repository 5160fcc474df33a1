//! Expiry across brokers: one broker sweeps at a time, and each sender hears `expired` once for each
//! message, on whichever broker it is connected to.

use std::time::Duration;

use switchboard_client::{Client, Event, Events, SendOptions};
use switchboard_proto::ReceiptStatus;

use crate::support::*;

/// Messages each sender sends to bob, who never connects.
const EACH: usize = 3;

/// Sends `EACH` messages to bob that expire at once; returns their message ids.
async fn send_expiring(client: &Client) -> Vec<u64> {
    let options = SendOptions {
        ttl: Some(Duration::from_millis(1)),
        ..SendOptions::default()
    };
    let mut ids = Vec::with_capacity(EACH);
    for i in 0..EACH {
        let sent = client
            .send_with("bob", format!("{i}"), options)
            .await
            .expect("accepted");
        ids.push(sent.message_id);
    }
    ids
}

/// Reads receipts, acknowledging each, until one is `delivered`; returns the message ids of the
/// `expired` ones before it, in arrival order.
async fn expired_before_delivered(client: &Client, events: &mut Events) -> Vec<u64> {
    let mut expired = Vec::new();
    loop {
        match next_event(events).await {
            Event::Receipt(r) => {
                client.ack(r.receipt_id).await.expect("ack the receipt");
                match r.status {
                    ReceiptStatus::Expired => expired.push(r.message_id),
                    ReceiptStatus::Delivered => return expired,
                    other => panic!("unexpected receipt {other:?}"),
                }
            }
            other => panic!("expected a receipt, got {other:?}"),
        }
    }
}

/// alice (node 0) and carol (node 1) send bob three messages each that expire at once: each sender
/// gets one `expired` receipt per message, through its own node, and none twice (a `delivered`
/// receipt sent after them comes next); one broker removed them all.
#[tokio::test]
async fn one_broker_sweeps_and_each_sender_hears_expired_once() {
    let Some(cluster) = Cluster::start("expiry across nodes", 2).await else {
        return;
    };
    let (alice, mut alice_events) = cluster.connect(0, "alice").await;
    let (carol, mut carol_events) = cluster.connect(1, "carol").await;
    let (from_alice, from_carol) = tokio::join!(send_expiring(&alice), send_expiring(&carol));

    // Each sender's last word: a message dave (online) acknowledges once the expiries are told.
    let (dave, mut dave_events) = cluster.connect(1, "dave").await;
    for (client, events, sent) in [
        (&alice, &mut alice_events, &from_alice),
        (&carol, &mut carol_events, &from_carol),
    ] {
        let mut told = Vec::new();
        while told.len() < EACH {
            match next_event(events).await {
                Event::Receipt(r) if r.status == ReceiptStatus::Expired => {
                    client.ack(r.receipt_id).await.expect("ack the receipt");
                    told.push(r.message_id);
                }
                other => panic!("expected an expired receipt, got {other:?}"),
            }
        }
        told.sort_unstable();
        assert_eq!(&told, sent, "one expired receipt per message");
        client.send("dave", "last").await.expect("accepted");
        receive_and_ack(&dave, &mut dave_events, 1).await;
        let again = expired_before_delivered(client, events).await;
        assert!(again.is_empty(), "expired told twice: {again:?}");
    }
    let sweepers = cluster
        .nodes
        .iter()
        .filter(|node| {
            node.output()
                .count(&["expired messages and receipts removed"])
                > 0
        })
        .count();
    assert_eq!(sweepers, 1, "one broker swept");
}
