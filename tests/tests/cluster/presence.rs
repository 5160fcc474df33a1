//! One client id, one live session across the cluster: a `hello` on another broker takes the id
//! over (the old session is told `session-taken-over`, what it held comes to the new one in
//! order), a broker killed with `kill -9` does not hold its clients back, and the database's
//! session rows follow: renewed by live brokers, found taken over at renewal when the hint was
//! lost, reaped after the lease when their broker died.

use switchboard_client::{CloseReason, Event, Events};
use switchboard_proto::ErrorCode;

use crate::support::*;

/// A short lease, so reaping and renewals come within a test's bounds (renewals every second).
const SHORT_LEASE: &[(&str, &str)] = &[("SWITCHBOARD_BROKER_CLUSTER__LEASE_SECS", "3")];

/// The broker (node id) holding `client`'s row in the database, if any.
async fn holder(cluster: &Cluster, client: &str) -> Option<String> {
    let (url, client) = (cluster.url().to_owned(), client.to_owned());
    tokio::task::spawn_blocking(move || {
        let mut db = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
        db.query_opt(
            "SELECT node FROM switchboard_sessions WHERE client = $1",
            &[&client],
        )
        .expect("query")
        .map(|row| row.get(0))
    })
    .await
    .expect("the query's thread")
}

/// Runs `sql` on the cluster's database.
async fn execute(cluster: &Cluster, sql: &'static str) {
    let url = cluster.url().to_owned();
    tokio::task::spawn_blocking(move || {
        let mut db = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
        db.batch_execute(sql).expect("statement");
    })
    .await
    .expect("the statement's thread");
}

/// Reads `n` messages without acknowledging them; returns their bodies.
async fn receive(events: &mut Events, n: usize) -> Vec<String> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        match next_event(events).await {
            Event::Message(m) => got.push(String::from_utf8(m.body.to_vec()).expect("utf-8")),
            other => panic!("expected a message, got {other:?}"),
        }
    }
    got
}

/// The next event must be the end of the client, with `code` from the broker.
async fn assert_closed_with(events: &mut Events, code: ErrorCode) {
    match next_event(events).await {
        Event::Closed(CloseReason::Broker { code: got, text }) => {
            assert_eq!(got, code, "closed with {text}")
        }
        other => panic!("expected the broker to close with {code:?}, got {other:?}"),
    }
}

/// alice on node 0 holds three messages unacknowledged; alice connects again through node 1: the
/// session on node 0 is told `session-taken-over`, node 1's gets the three in order, and the
/// database names node 1 as alice's.
#[tokio::test]
async fn a_hello_on_another_node_takes_the_session_over_and_gets_what_the_old_one_held() {
    let Some(cluster) = Cluster::start("takeover across nodes", 2).await else {
        return;
    };
    let (_old, mut old_events) = cluster.connect(0, "alice").await;
    let first_node = holder(&cluster, "alice").await.expect("alice's row");
    let (bob, _bob_events) = cluster.connect(1, "bob").await;
    for body in ["one", "two", "three"] {
        bob.send("alice", body).await.expect("accepted");
    }
    assert_eq!(receive(&mut old_events, 3).await, ["one", "two", "three"]);

    let (new, mut new_events) = cluster.connect(1, "alice").await;
    let second_node = holder(&cluster, "alice").await.expect("alice's row");
    assert_ne!(first_node, second_node, "the row is node 1's once hi came");
    assert_closed_with(&mut old_events, ErrorCode::SessionTakenOver).await;
    let got = receive_and_ack(&new, &mut new_events, 3).await;
    let bodies: Vec<&str> = got.iter().map(|(_, b)| b.as_str()).collect();
    assert_eq!(bodies, ["one", "two", "three"]);
    // Told by the claim's notification, not a renewal (the default lease renews every 5 s).
    let told = ["session taken over by another broker", "alice"];
    assert_eq!(cluster.nodes[0].output().count(&told), 1);
}

/// Node 0 dies (`kill -9`) with alice and carol connected and alice holding a message: alice
/// reconnects through node 1 at once (her row's lease has not run out) and gets the message;
/// carol does not come back, and node 1 reaps her row once its lease ran out.
#[tokio::test]
async fn a_killed_nodes_client_is_admitted_elsewhere_at_once_and_its_rows_are_reaped() {
    let Some(mut cluster) = Cluster::start_with("kill -9 and presence", 2, SHORT_LEASE).await
    else {
        return;
    };
    let (_alice, mut alice_events) = cluster.connect(0, "alice").await;
    let (_carol, _carol_events) = cluster.connect(0, "carol").await;
    let dead_node = holder(&cluster, "carol").await.expect("carol's row");
    let (bob, _bob_events) = cluster.connect(1, "bob").await;
    bob.send("alice", "held").await.expect("accepted");
    assert_eq!(receive(&mut alice_events, 1).await, ["held"]);

    cluster.nodes.remove(0).kill9().await;
    let (alice, mut alice_events) = cluster.connect(0, "alice").await;
    let got = receive_and_ack(&alice, &mut alice_events, 1).await;
    assert_eq!(got[0].1, "held");
    let alive = holder(&cluster, "alice").await.expect("alice's row");
    assert_ne!(alive, dead_node);

    cluster.nodes[0]
        .output()
        .wait_for(1, &["reaped session rows whose lease ran out"])
        .await;
    assert_eq!(holder(&cluster, "carol").await, None, "carol's row reaped");
    assert_eq!(
        holder(&cluster, "alice").await,
        Some(alive),
        "alice's renewed"
    );
}

/// A takeover whose notification never came (here: the row rewritten by hand, as a claim whose
/// hint was lost would leave it): the broker finds it at its next renewal and closes the session.
#[tokio::test]
async fn a_takeover_whose_hint_was_lost_is_found_at_the_next_renewal() {
    let Some(cluster) = Cluster::start_with("takeover found at renewal", 1, SHORT_LEASE).await
    else {
        return;
    };
    let (_alice, mut alice_events) = cluster.connect(0, "alice").await;
    execute(
        &cluster,
        "UPDATE switchboard_sessions SET node = 'elsewhere', session = 1 WHERE client = 'alice'",
    )
    .await;
    assert_closed_with(&mut alice_events, ErrorCode::SessionTakenOver).await;
    assert_eq!(
        holder(&cluster, "alice").await.as_deref(),
        Some("elsewhere"),
        "the closing session leaves the other broker's row alone"
    );
}
