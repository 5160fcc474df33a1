//! How a connection ends: closed by the client or by dropping it, ended by the broker, or dead
//! under pending calls.

use bytes::Bytes;
use switchboard_client::{ClientError, CloseReason, ErrorCode, Event};
use switchboard_proto::{BrokerFrame, ClientFrame};

use crate::connect;
use crate::support::*;

#[tokio::test]
async fn close_sends_acks_then_bye_and_waits_for_the_broker() {
    let broker = MockBroker::start().await;
    let (client, _events, mut peer) = connect(&broker, 30, 0).await;
    client.ack(9).await.expect("ack");
    let script = async move {
        assert_eq!(
            peer.recv_skipping_pings().await,
            Some(ClientFrame::Ack { id: 9 })
        );
        assert_eq!(peer.recv_skipping_pings().await, Some(ClientFrame::Bye));
        assert_eq!(
            peer.recv().await,
            None,
            "the client shuts its side after bye"
        );
        drop(peer); // close() waits for this
    };
    let (closed, ()) = tokio::join!(within("close", client.close()), script);
    closed.expect("close");
}

#[tokio::test]
async fn dropping_every_handle_says_bye() {
    let broker = MockBroker::start().await;
    let (client, events, mut peer) = connect(&broker, 30, 0).await;
    let other = client.clone();
    drop(client);
    drop(events);
    // One clone is still alive: the connection stays.
    other.ack(1).await.expect("still connected");
    assert_eq!(
        peer.recv_skipping_pings().await,
        Some(ClientFrame::Ack { id: 1 })
    );
    drop(other);
    assert_eq!(peer.recv_skipping_pings().await, Some(ClientFrame::Bye));
}

#[tokio::test]
async fn a_broker_error_ends_the_events_and_fails_pending_sends() {
    let broker = MockBroker::start().await;
    let (client, mut events, mut peer) = connect(&broker, 30, 0).await;
    let send = client.send("bob", "lost in the takeover");
    let script = async {
        assert!(matches!(
            peer.recv_skipping_pings().await,
            Some(ClientFrame::Send { .. })
        ));
        peer.send(BrokerFrame::Error {
            code: ErrorCode::SessionTakenOver,
            text: "another connection logged in as alice".into(),
        })
        .await;
        drop(peer);
    };
    let (sent, ()) = tokio::join!(send, script);
    assert!(matches!(sent, Err(ClientError::Closed)), "{sent:?}");
    match within("closed", events.next()).await {
        Some(Event::Closed(CloseReason::Broker { code, text })) => {
            assert_eq!(code, ErrorCode::SessionTakenOver);
            assert!(text.contains("alice"));
        }
        other => panic!("expected closed, got {other:?}"),
    }
    assert_eq!(within("end", events.next()).await, None);
    assert!(matches!(client.ack(1).await, Err(ClientError::Closed)));
    assert!(matches!(
        client.send("bob", "x").await,
        Err(ClientError::Closed)
    ));
    client
        .close()
        .await
        .expect("closing a closed client is fine");
}

#[tokio::test]
async fn a_broker_that_hangs_up_is_a_disconnect() {
    let broker = MockBroker::start().await;
    let (_client, mut events, peer) = connect(&broker, 30, 0).await;
    drop(peer);
    assert_eq!(
        within("closed", events.next()).await,
        Some(Event::Closed(CloseReason::Disconnected))
    );
    assert_eq!(within("end", events.next()).await, None);
}

#[tokio::test]
async fn a_dead_connection_fails_sends_even_while_events_go_unread() {
    const EVENTS_CAPACITY: u64 = 1024; // client.rs: the events channel fills up exactly
    let broker = MockBroker::start().await;
    let (client, mut events, mut peer) = connect(&broker, 30, 0).await;
    let send = client.send("bob", "never answered");
    let script = async {
        assert!(matches!(
            peer.recv_skipping_pings().await,
            Some(ClientFrame::Send { .. })
        ));
        for n in 0..EVENTS_CAPACITY {
            peer.send(BrokerFrame::Deliver {
                message_id: n,
                from: "bob".into(),
                send_id: 7,
                sent_at_ms: 0,
                body: Bytes::new(),
            })
            .await;
        }
        peer.send(BrokerFrame::Error {
            code: ErrorCode::Internal,
            text: "gone".into(),
        })
        .await;
        peer
    };
    // Nobody reads events while the send waits; the send still learns the connection is gone.
    let (sent, _peer) = tokio::join!(within("the send to fail", send), script);
    assert!(matches!(sent, Err(ClientError::Closed)), "{sent:?}");
    for _ in 0..EVENTS_CAPACITY {
        assert!(matches!(events.next().await, Some(Event::Message(_))));
    }
    assert!(matches!(
        within("closed", events.next()).await,
        Some(Event::Closed(CloseReason::Broker {
            code: ErrorCode::Internal,
            ..
        }))
    ));
}
