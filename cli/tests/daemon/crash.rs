//! A daemon killed after its sink has a message and before the broker has the acknowledgement does
//! not hand the message on again.

use crate::harness::*;

#[tokio::test]
async fn a_daemon_killed_between_its_sink_and_its_ack_does_not_run_the_sink_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(&dir.path().join("data")).await;
    // Bob's daemon reaches the broker through a proxy that can lose everything he writes.
    let proxy = Proxy::start(broker.addr()).await;
    let (runs, gate) = (dir.path().join("runs"), dir.path().join("gate"));
    // The command records its run, then succeeds once the test opens the gate (10 s at most).
    let exec = format!(
        "echo \"$SWITCHBOARD_MESSAGE_ID\" >> '{runs}'; i=0; while [ ! -e '{gate}' ] && [ \"$i\" -lt 500 ]; do sleep 0.02; i=$((i + 1)); done",
        runs = runs.display(),
        gate = gate.display()
    );
    let state = dir.path().join("state");
    let args = [
        "--state-dir",
        state.to_str().unwrap(),
        "--exec",
        exec.as_str(),
    ];
    let bob = Daemon::start(proxy.addr, "bob", &args);

    let mut cmd = switchboard(broker.addr(), "alice");
    cmd.args([
        "send",
        "--to",
        "bob",
        "--wait-delivered",
        "--timeout",
        "60",
        "only once",
    ]);
    let alice = cmd.spawn().expect("spawn send");

    // The command is running. From now on bob's acknowledgement cannot reach the broker; the
    // command finishes, the daemon records the message as handled, and dies before the broker
    // has the ack.
    until("the command to run", || lines(&runs).len() == 1).await;
    proxy.freeze();
    std::fs::write(&gate, "").expect("open the gate");
    let id = lines(&runs)[0].clone();
    until("the message in the journal", || journal_has(&state, &id)).await;
    bob.kill9().await;

    // Restarted, the daemon gets the message again and only acknowledges it.
    let bob = Daemon::start(broker.addr(), "bob", &args);
    let out = within("alice's receipt", alice.wait_with_output())
        .await
        .expect("send");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().next(), Some(id.as_str()));
    assert_eq!(stdout.lines().nth(1), Some("delivered"));
    bob.log
        .wait_for(
            1,
            &["redelivered, already handled", &format!("message_id={id}")],
        )
        .await;
    assert_eq!(lines(&runs), [id], "the command ran once");
    bob.stop().await;
}
