//! A tracked receipt across a reconnect: it resolves its future once, and is not shown as an
//! event when the broker delivers it again.

use bytes::Bytes;
use switchboard_client::{Event, ReceiptStatus};
use switchboard_proto::{BrokerFrame, ClientFrame};

use crate::support::*;
use crate::{connect, disconnected, next};

#[tokio::test]
async fn a_tracked_receipt_survives_a_reconnect_and_is_not_shown_twice() {
    let broker = MockBroker::start().await;
    let (client, mut events, mut first) = connect(&broker).await;

    // Both tracked sends are stored; the first one's receipt arrives and the library acks it.
    let mut tracked = Vec::new();
    for message_id in [42, 43] {
        let track = client.send_and_track("bob", "tracked");
        let answer = async {
            let (send_id, ..) = recv_send(&mut first).await;
            first
                .send(BrokerFrame::Accepted {
                    send_id,
                    message_id,
                })
                .await;
        };
        let (track, ()) = tokio::join!(track, answer);
        tracked.push(track.expect("accepted"));
    }
    let late = tracked.pop().expect("two");
    let early = tracked.pop().expect("two");
    first
        .send(BrokerFrame::Receipt {
            receipt_id: 50,
            send_id: early.sent.send_id,
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
    for (receipt_id, send_id, message_id) in
        [(50, early.sent.send_id, 42), (52, late.sent.send_id, 43)]
    {
        second
            .send(BrokerFrame::Receipt {
                receipt_id,
                send_id,
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
