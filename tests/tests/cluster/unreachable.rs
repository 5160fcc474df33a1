//! The database goes away under running brokers and comes back: sends are answered `unavailable`
//! and nothing is claimed, the brokers keep their clients, say they are not ready, reconnect by
//! themselves with backoff, and serve again once it is back, losing nothing.

use std::time::Duration;

use switchboard_client::{ClientError, Event, SendOptions};
use switchboard_proto::RejectReason;
use switchboard_tests::within_for;

use crate::support::*;

/// How long the brokers may take to notice the database is back (their backoff is at most 2 s).
const RECOVERY: Duration = Duration::from_secs(30);

/// Waits until node `admin`'s `/readyz` answers `status`, asking every 50 ms (a probe cannot
/// notify).
async fn readyz_becomes(admin: std::net::SocketAddr, status: u16) {
    within_for(RECOVERY, &format!("/readyz to answer {status}"), async {
        while readyz(admin).await != status {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

/// bob is online on node 1, carol offline, alice on node 0. PostgreSQL is stopped as a crash
/// would (`pg_ctl stop -m immediate`): alice's send is rejected `unavailable`, both nodes' `/readyz`
/// say 503, every connection stays up, node 0 logs its attempts with their backoff. PostgreSQL
/// comes back: the nodes are ready again by themselves, alice's same send (same send id) is
/// accepted and bob gets it once, carol drains what was stored before the outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_are_unavailable_while_the_database_is_down_and_service_resumes_by_itself() {
    let Some(server) = own_server("database unreachable").await else {
        return;
    };
    let db = {
        let server = server.clone();
        blocking(move || server.database()).await.expect("database")
    };
    let cluster = Cluster::on(db.url.clone(), 2, &[], Box::new(db)).await;
    let (bob, mut bob_events) = cluster.connect(1, "bob").await;
    let (alice, mut alice_events) = cluster.connect(0, "alice").await;
    alice.send("carol", "kept").await.expect("accepted");
    alice.send("bob", "before").await.expect("accepted");
    assert_eq!(
        receive_and_ack(&bob, &mut bob_events, 1).await[0].1,
        "before"
    );

    let stopping = server.clone();
    blocking(move || stopping.kill())
        .await
        .expect("stop PostgreSQL");
    let during = alice
        .send_with_id("bob", "during", 7, SendOptions::default())
        .await;
    match during {
        Err(ClientError::Rejected {
            reason: RejectReason::Unavailable,
            ..
        }) => {}
        other => panic!("a send with the database down must be unavailable, got {other:?}"),
    }
    for node in &cluster.nodes {
        readyz_becomes(node.admin_addr(), 503).await;
    }
    cluster.nodes[0]
        .output()
        .wait_for(
            1,
            &["cannot connect to PostgreSQL", "attempt=", "retry_in_ms="],
        )
        .await;

    let starting = server.clone();
    blocking(move || starting.restart())
        .await
        .expect("start PostgreSQL again");
    for node in &cluster.nodes {
        readyz_becomes(node.admin_addr(), 200).await;
    }
    cluster.nodes[0]
        .output()
        .wait_for(1, &["reconnected to PostgreSQL", "down_ms="])
        .await;
    // The same clients, on the same connections: the brokers never dropped them.
    let resent = alice
        .send_with_id("bob", "during", 7, SendOptions::default())
        .await
        .expect("accepted once the database is back");
    alice.send("bob", "after").await.expect("accepted");
    let got = receive_and_ack(&bob, &mut bob_events, 2).await;
    assert_eq!(
        got.iter().map(|(_, b)| b.as_str()).collect::<Vec<_>>(),
        ["during", "after"],
        "the send rejected during the outage was not stored; its resend is stored once"
    );
    let (carol, mut carol_events) = cluster.connect(1, "carol").await;
    assert_eq!(
        receive_and_ack(&carol, &mut carol_events, 1).await[0].1,
        "kept"
    );
    // alice's receipts for what bob acknowledged come on her one connection, nothing closed it.
    let mut delivered = Vec::new();
    while delivered.len() < 3 {
        match next_event(&mut alice_events).await {
            Event::Receipt(r) => {
                delivered.push(r.message_id);
                alice.ack(r.receipt_id).await.expect("ack");
            }
            other => panic!("alice expected receipts, got {other:?}"),
        }
    }
    assert!(delivered.contains(&resent.message_id));
}
