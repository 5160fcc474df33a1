//! An entry that can no longer be delivered never blocks its mailbox (issue 12, finding 2): after
//! `limits.max_frame_bytes` was lowered, a stored message whose `deliver` exceeds the new limit is
//! removed with an `undeliverable` receipt to its sender, and the rest of the mailbox flows.

use std::path::Path;

use bytes::Bytes;
use switchboard_proto::{BrokerFrame, ClientFrame, ReceiptStatus};
use switchboard_tests::BrokerProcess;

use crate::support::*;

/// The frame limit alice's messages were accepted under, and the lower one bob connects under.
const FIRST_LIMIT: usize = 8192;
const LOWERED_LIMIT: usize = 4096;

/// Bob is offline; alice sends a 6,000-byte message and then a small one under an 8 KiB frame limit.
/// The operator lowers the limit to 4 KiB and restarts. Bob connects and receives the small message
/// (before the fix he got `hi` and was closed without a word, again and again); alice gets an
/// `undeliverable` receipt for the large one and a `delivered` receipt for the small one.
#[tokio::test]
async fn a_message_too_large_for_a_lowered_frame_limit_is_set_aside_with_a_receipt() {
    let dir = tempfile::tempdir().expect("tempdir");
    frame_limit(dir.path(), FIRST_LIMIT);
    let broker = BrokerProcess::start(dir.path()).await;
    let (mut alice, _) = Raw::hello(broker.addr(), "alice", 60).await;
    for (send_id, body) in [(1, vec![b'x'; 6000]), (2, b"after".to_vec())] {
        alice.send(send(send_id, body)).await;
        match alice.recv().await {
            Some(BrokerFrame::Accepted { send_id: got, .. }) if got == send_id => {}
            other => panic!("expected accepted for send {send_id}, got {other:?}"),
        }
    }
    drop(alice);
    broker.terminate().await;

    frame_limit(dir.path(), LOWERED_LIMIT);
    let broker = BrokerProcess::start(dir.path()).await;
    let (mut bob, _) = Raw::hello(broker.addr(), "bob", 60).await;
    match bob.recv().await {
        Some(BrokerFrame::Deliver {
            message_id, body, ..
        }) => {
            assert_eq!(&body[..], b"after");
            bob.send(ClientFrame::Ack { id: message_id }).await;
        }
        other => panic!(
            "expected the small message, got {other:?}:\n{}",
            broker.log()
        ),
    }
    let (mut alice, _) = Raw::hello(broker.addr(), "alice", 60).await;
    let mut statuses = Vec::new();
    while statuses.len() < 2 {
        match alice.recv().await {
            Some(BrokerFrame::Receipt {
                receipt_id,
                send_id,
                status,
                ..
            }) => {
                statuses.push((send_id, status));
                alice.send(ClientFrame::Ack { id: receipt_id }).await;
            }
            other => panic!("expected receipts, got {other:?}:\n{}", broker.log()),
        }
    }
    statuses.sort_by_key(|(send_id, _)| *send_id);
    assert_eq!(
        statuses,
        [
            (1, ReceiptStatus::Undeliverable),
            (2, ReceiptStatus::Delivered)
        ]
    );
    assert_eq!(
        broker
            .output()
            .count(&["cannot be delivered", "mailbox=bob"]),
        1,
        "{}",
        broker.log()
    );
}

/// A `settings.toml` in the broker's working directory (its data directory) with this frame limit.
fn frame_limit(dir: &Path, max_frame_bytes: usize) {
    let text = format!("[limits]\nmax_frame_bytes = {max_frame_bytes}\n");
    std::fs::write(dir.join("settings.toml"), text).expect("write settings.toml");
}

fn send(send_id: u64, body: Vec<u8>) -> ClientFrame {
    ClientFrame::Send {
        send_id,
        to: "bob".into(),
        body: Bytes::from(body),
        ttl_ms: None,
        fresh: true,
        receipts: switchboard_proto::Receipts::All,
    }
}
