//! The data directory removed under a running broker (issue 12, finding 4): the broker used to go
//! on answering `accepted` into deleted files, without a log line. Now the store notices at its
//! next commit, senders hear `unavailable`, the broker logs an error and `/readyz` answers 503.
//! Both embedded engines, as broker processes.

use bytes::Bytes;
use switchboard_proto::{BrokerFrame, ClientFrame, Receipts, RejectReason};
use switchboard_tests::BrokerProcess;

use crate::admin::get;
use crate::support::*;

#[tokio::test]
async fn a_log_stores_directory_removed_while_running_turns_sends_unavailable() {
    removed_while_running("log").await;
}

#[tokio::test]
async fn a_sqlite_stores_directory_removed_while_running_turns_sends_unavailable() {
    removed_while_running("sqlite").await;
}

/// Alice's first send is accepted and the broker is ready; then `rm -rf` of the data directory.
/// Her next three sends are answered `unavailable`, not `accepted`; the broker logs the directory
/// as gone, and `/readyz` says 503.
async fn removed_while_running(store: &str) {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("data");
    let broker = BrokerProcess::start_with_env(&dir, &[("SWITCHBOARD_BROKER_STORE", store)]).await;
    let (mut alice, _) = Raw::hello(broker.addr(), "alice", 60).await;
    assert!(
        matches!(send(&mut alice, 1).await, BrokerFrame::Accepted { .. }),
        "the first send is accepted"
    );
    assert_eq!(get(broker.admin_addr(), "/readyz", None).await.0, 200);

    std::fs::remove_dir_all(&dir).expect("rm -rf the data directory");
    for send_id in 2..=4 {
        match send(&mut alice, send_id).await {
            BrokerFrame::Rejected {
                reason: RejectReason::Unavailable,
                ..
            } => {}
            other => panic!("send {send_id} after rm -rf: expected unavailable, got {other:?}"),
        }
    }
    broker
        .output()
        .wait_for(1, &["ERROR", "removed or replaced"])
        .await;
    let (status, body) = get(broker.admin_addr(), "/readyz", None).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("data directory is gone"), "{body}");
}

/// Alice sends bob one message; the broker's answer.
async fn send(alice: &mut Raw, send_id: u64) -> BrokerFrame {
    alice
        .send(ClientFrame::Send {
            send_id,
            to: "bob".into(),
            body: Bytes::from_static(b"into a directory that may be gone"),
            ttl_ms: None,
            fresh: false,
            receipts: Receipts::None,
        })
        .await;
    alice.recv().await.expect("an answer to the send")
}
