//! Stay mode: a daemon connected all along, across a broker crash, and one that goes idle.

use std::collections::BTreeSet;

use crate::harness::*;

/// An `--exec` command that appends `<message id> <body>` to `file`, one line per run.
pub(crate) fn recorder(file: &std::path::Path) -> String {
    format!(
        "printf '%s %s\\n' \"$SWITCHBOARD_MESSAGE_ID\" \"$(cat)\" >> '{}'",
        file.display()
    )
}

#[tokio::test]
async fn a_staying_daemon_rides_out_a_broker_crash_and_gets_everything_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (data, received, outbox) = (
        dir.path().join("data"),
        dir.path().join("received"),
        dir.path().join("outbox"),
    );
    let broker = Broker::start(&data).await;
    let addr = broker.addr();

    // Bob's daemon runs a command per message; alice's daemon sends what she spools and prints
    // her receipts.
    let bob_state = dir.path().join("bob-state");
    let bob = Daemon::start(
        broker.addr(),
        "bob",
        &[
            "--state-dir",
            bob_state.to_str().unwrap(),
            "--exec",
            &recorder(&received),
        ],
    );
    let alice_state = dir.path().join("alice-state");
    let mut alice = Daemon::start(
        broker.addr(),
        "alice",
        &[
            "--state-dir",
            alice_state.to_str().unwrap(),
            "--outbox",
            outbox.to_str().unwrap(),
        ],
    );
    bob.log.wait_for(1, &["connected", "pending="]).await;
    alice.log.wait_for(1, &["connected", "pending="]).await;

    // Before: one message straight from carol, one through alice's outbox (her daemon holds it, so
    // `send --spool` leaves the message to the daemon rather than take its connection over).
    send(broker.addr(), "carol", "bob", "before, direct").await;
    send_spooled(broker.addr(), "alice", "bob", "before, spooled", &outbox).await;
    until("two messages at bob's command", || {
        lines(&received).len() == 2
    })
    .await;

    // During: the broker crashes; alice spools one more, which waits in her outbox.
    broker.kill9().await;
    let file = send_spooled(addr, "alice", "bob", "during, spooled", &outbox).await;
    assert!(file.exists(), "{} is in the outbox", file.display());

    // After: the broker is back where it was; carol sends again.
    let broker = Broker::start_on(&data, addr.port()).await;
    send(broker.addr(), "carol", "bob", "after, direct").await;
    until("four messages at bob's command", || {
        lines(&received).len() == 4
    })
    .await;
    until("an empty outbox", || names(&outbox, ".json").is_empty()).await;

    // Alice hears that her two spooled messages were delivered.
    for _ in 0..2 {
        let receipt = alice.next_json().await;
        assert_eq!(
            (receipt["type"].as_str(), receipt["status"].as_str()),
            (Some("receipt"), Some("delivered")),
            "{receipt}"
        );
    }
    bob.stop().await;
    alice.stop().await;

    // Exactly once: four runs of the command, four different messages, nothing left at the broker.
    let runs = lines(&received);
    let bodies: BTreeSet<&str> = runs
        .iter()
        .map(|l| l.split_once(' ').expect("id body").1)
        .collect();
    assert_eq!(
        bodies,
        BTreeSet::from([
            "before, direct",
            "before, spooled",
            "during, spooled",
            "after, direct"
        ]),
        "{runs:?}"
    );
    let ids: BTreeSet<&str> = runs
        .iter()
        .map(|l| l.split_once(' ').expect("id body").0)
        .collect();
    assert_eq!(ids.len(), 4, "{runs:?}");
    let mut poll = switchboard(broker.addr(), "bob");
    poll.arg("poll");
    let out = run(poll).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "", "bob's mailbox is empty");
}

#[tokio::test]
async fn an_idle_daemon_polls_and_stays_connected_again_when_traffic_resumes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(&dir.path().join("data")).await;
    let out_dir = dir.path().join("out");
    let state = dir.path().join("state");
    let bob = Daemon::start(
        broker.addr(),
        "bob",
        &[
            "--state-dir",
            state.to_str().unwrap(),
            "--out-dir",
            out_dir.to_str().unwrap(),
            "--idle-timeout",
            "0.5",
            "--interval",
            "0.5",
        ],
    );

    // Silence: the daemon disconnects (the broker sees it go) and polls.
    bob.log.wait_for(1, &["switching to polling"]).await;
    broker
        .output()
        .wait_for(1, &["client=\"bob\"", "client disconnected"])
        .await;

    // A message is picked up by a poll, and the daemon stays connected again.
    let id = send(broker.addr(), "alice", "bob", "wake up").await;
    until("the message in the out directory", || {
        names(&out_dir, ".msg").len() == 1
    })
    .await;
    bob.log
        .wait_for(1, &["traffic again; staying connected"])
        .await;
    let second = send(broker.addr(), "alice", "bob", "while staying").await;
    until("the second message", || names(&out_dir, ".msg").len() == 2).await;
    assert_eq!(
        names(&out_dir, ".msg"),
        [format!("{id:020}.msg"), format!("{second:020}.msg")]
    );
    assert_eq!(
        std::fs::read(out_dir.join(format!("{second:020}.msg"))).unwrap(),
        b"while staying"
    );
    // And once silent again, it goes back to polling.
    bob.log.wait_for(2, &["switching to polling"]).await;
    bob.stop().await;
}
