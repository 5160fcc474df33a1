//! When reconnecting stops, and when it goes on: errors it cannot cure end the client, a failed
//! attempt is tried again, and a close while reconnecting ends it at once.

use switchboard_client::{ClientError, CloseReason, ErrorCode, Event};
use switchboard_proto::{BrokerFrame, ClientFrame};

use crate::support::*;
use crate::{connect, disconnected, next, spawn_send};

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
