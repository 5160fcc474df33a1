//! Poll mode: the daemon is offline between polls, and a broker restart and the outbox lose
//! nothing.

use crate::harness::*;

#[tokio::test]
async fn a_polling_daemon_is_offline_between_polls_and_gets_everything_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let out_dir = dir.path().join("out");
    let outbox = dir.path().join("carol-outbox");
    let broker = Broker::start(&data).await;
    let addr = broker.addr();

    let bob_state = dir.path().join("bob-state");
    let bob = Daemon::start(
        addr,
        "bob",
        &[
            "--mode",
            "poll",
            "--interval",
            "0.5",
            "--state-dir",
            bob_state.to_str().unwrap(),
            "--out-dir",
            out_dir.to_str().unwrap(),
        ],
    );

    // Before: a message waits for the next poll.
    let before = send(addr, "alice", "bob", "before").await;
    until("the first message in the out directory", || {
        names(&out_dir, ".msg").len() == 1
    })
    .await;

    // Between polls the broker has bob offline: each of his sessions ends, again and again.
    broker
        .output()
        .wait_for(3, &["client=\"bob\"", "client disconnected"])
        .await;
    assert!(
        broker.sessions("bob", "client connected")
            <= broker.sessions("bob", "client disconnected") + 1,
        "at most the current poll is connected:\n{}",
        broker.log()
    );

    // During: the broker is stopped; carol, who runs no daemon yet, spools a message.
    broker.terminate().await;
    let spooled = send_spooled(addr, "carol", "bob", "during", &outbox).await;
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&spooled).expect("spooled file")).expect("JSON");
    assert_eq!(
        (
            file["from"].as_str(),
            file["to"].as_str(),
            file["body"].as_str()
        ),
        (Some("carol"), Some("bob"), Some("during"))
    );

    // After: the broker is back on its port; carol's daemon sends her outbox; dave sends directly.
    let broker = Broker::start_on(&data, addr.port()).await;
    let carol_state = dir.path().join("carol-state");
    let mut carol = Daemon::start(
        addr,
        "carol",
        &[
            "--mode",
            "poll",
            "--interval",
            "0.5",
            "--state-dir",
            carol_state.to_str().unwrap(),
            "--outbox",
            outbox.to_str().unwrap(),
        ],
    );
    let after = send(addr, "dave", "bob", "after").await;
    until("three messages in the out directory", || {
        names(&out_dir, ".msg").len() == 3
    })
    .await;
    let receipt = carol.next_json().await;
    assert_eq!(
        (receipt["type"].as_str(), receipt["status"].as_str()),
        (Some("receipt"), Some("delivered")),
        "{receipt}"
    );
    assert_eq!(
        receipt["id"], file["id"],
        "the receipt is for the spooled send"
    );
    assert!(!spooled.exists(), "the outbox file is gone once accepted");
    let bob_log = bob.log.clone();
    bob.stop().await;
    carol.stop().await;

    // Every message once, named in the order the broker accepted them, and the sink ran once per
    // message. (Dave's message may overtake the spooled one: it was sent before carol's daemon ran.)
    let msgs = names(&out_dir, ".msg");
    let body = |name: &String| std::fs::read(out_dir.join(name)).expect("read");
    assert_eq!(msgs[0], format!("{before:020}.msg"));
    assert_eq!(body(&msgs[0]), b"before");
    let after_name = format!("{after:020}.msg");
    assert!(msgs.contains(&after_name), "{msgs:?}");
    assert_eq!(body(&after_name), b"after");
    let during_name = msgs
        .iter()
        .find(|n| **n != msgs[0] && **n != after_name)
        .expect("the spooled one");
    assert_eq!(body(during_name), b"during");
    let meta: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out_dir.join(during_name.replace(".msg", ".json"))).expect("metadata"),
    )
    .expect("JSON");
    assert_eq!(meta["from"], "carol");
    assert_eq!(bob_log.count(&["message handled"]), 3);
    assert_eq!(
        lines(&bob_state.join("handled")).len(),
        3,
        "the journal holds each once"
    );
    let mut poll = switchboard(broker.addr(), "bob");
    poll.arg("poll");
    assert_eq!(text(&run(poll).await.stdout), "", "bob's mailbox is empty");
}
