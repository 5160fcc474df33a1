//! Mailbox limits across brokers: checked in the committing transaction against what every broker
//! stored, so two brokers filling one mailbox at once stop at the limit together.

use switchboard_client::{Client, ClientError};
use switchboard_proto::RejectReason;

use crate::support::*;

/// The mailbox limit of that test, in messages.
const LIMIT: usize = 20;

/// Sends `LIMIT` messages to bob, one after the other; returns how many were accepted. Every other
/// answer must be `mailbox-full`.
async fn send_until_full(client: &Client, who: &str) -> usize {
    let mut accepted = 0;
    for i in 0..LIMIT {
        match client.send("bob", format!("{who} {i}")).await {
            Ok(_) => accepted += 1,
            Err(ClientError::Rejected {
                reason: RejectReason::MailboxFull,
                ..
            }) => {}
            Err(other) => {
                panic!("{who}'s send {i}: expected accepted or mailbox-full, got {other}")
            }
        }
    }
    accepted
}

/// bob is offline with a limit of 20 messages; alice (node 0) and carol (node 1) each send 20 at
/// the same time: exactly 20 are accepted in all, the rest hear `mailbox-full`, and bob, connecting,
/// gets exactly the 20. Once he has acknowledged them, a send fits again.
#[tokio::test]
async fn two_brokers_filling_one_mailbox_stop_at_its_limit_together() {
    let limit = LIMIT.to_string();
    let env = [("SWITCHBOARD_BROKER_MAILBOX__MAX_MESSAGES", limit.as_str())];
    let Some(cluster) = Cluster::start_with("mailbox limit across nodes", 2, &env).await else {
        return;
    };
    let (alice, _a) = cluster.connect(0, "alice").await;
    let (carol, _c) = cluster.connect(1, "carol").await;
    let (from_alice, from_carol) = tokio::join!(
        send_until_full(&alice, "alice"),
        send_until_full(&carol, "carol")
    );
    assert_eq!(
        from_alice + from_carol,
        LIMIT,
        "accepted through node 0: {from_alice}, node 1: {from_carol}"
    );

    let (bob, mut bob_events) = cluster.connect(0, "bob").await;
    let got = receive_and_ack(&bob, &mut bob_events, LIMIT).await;
    assert_eq!(got.len(), LIMIT);
    // Nothing more is in the mailbox: a new message, accepted once the acks made room, is next.
    within("room again", async {
        loop {
            match carol.send("bob", "after").await {
                Ok(_) => break,
                Err(ClientError::Rejected {
                    reason: RejectReason::MailboxFull,
                    ..
                }) => tokio::task::yield_now().await,
                Err(other) => panic!("expected accepted, got {other}"),
            }
        }
    })
    .await;
    let last = receive_and_ack(&bob, &mut bob_events, 1).await;
    assert_eq!(last[0].1, "after");
}
