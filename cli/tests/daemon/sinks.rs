//! The sinks: JSON lines on stdout, and a command that keeps failing until its message is a dead
//! letter, acknowledged no earlier than that.

use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use crate::harness::*;

#[tokio::test]
async fn the_default_sink_prints_json_lines_as_listen_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, mut bob, state) = Daemon::bob_with_broker(dir.path()).await;
    let id = send(broker.addr(), "alice", "bob", "hello bob").await;
    let line = bob.next_json().await;
    assert_eq!(line["type"], "message");
    assert_eq!(line["id"], id);
    assert_eq!(line["from"], "alice");
    assert_eq!(line["body"], "hello bob");
    assert!(line["sent_at"].as_str().expect("sent_at").ends_with('Z'));

    // A body that is not UTF-8, sent from stdin, comes out as base64.
    let mut cmd = switchboard(broker.addr(), "alice");
    cmd.args(["send", "--to", "bob"]).stdin(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn send");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(&[0xff, 0xfe, 0x00, b'x'])
        .await
        .expect("write stdin");
    drop(stdin);
    let out = within("send", child.wait_with_output())
        .await
        .expect("send");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let line = bob.next_json().await;
    assert_eq!(line["body_b64"], "//4AeA==");
    assert!(line.get("body").is_none());
    bob.stop().await;
    assert_eq!(lines(&state.join("handled")).len(), 2);
}

#[tokio::test]
async fn a_failing_command_is_retried_then_dead_lettered_and_only_then_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(&dir.path().join("data")).await;
    let (count, runs, gate) = (
        dir.path().join("count"),
        dir.path().join("runs"),
        dir.path().join("gate"),
    );
    // Every run fails. The third, the last the first daemon allows, waits for the gate first (for
    // 10 s at most), so that the test can kill the daemon while the message is still its to retry.
    let script = dir.path().join("refuse.sh");
    std::fs::write(
        &script,
        format!(
            r#"n=$(( $(cat '{count}' 2>/dev/null || echo 0) + 1 ))
echo "$n" > '{count}'
echo "$SWITCHBOARD_MESSAGE_ID $SWITCHBOARD_ATTEMPT $(cat)" >> '{runs}'
if [ "$n" -eq 3 ]; then
  i=0; while [ ! -e '{gate}' ] && [ "$i" -lt 500 ]; do sleep 0.02; i=$((i + 1)); done
fi
echo "refused run $n" >&2
exit 7
"#,
            count = count.display(),
            runs = runs.display(),
            gate = gate.display()
        ),
    )
    .expect("write the script");
    let state = dir.path().join("state");
    let dead = dir.path().join("dead");
    let exec = format!("sh '{}'", script.display());
    let args = [
        "--state-dir",
        state.to_str().unwrap(),
        "--exec",
        exec.as_str(),
        "--max-attempts",
        "3",
        "--dead-letter-dir",
        dead.to_str().unwrap(),
    ];
    let bob = Daemon::start(broker.addr(), "bob", &args);

    // Alice waits for the receipt, which comes only once bob acknowledges.
    let mut cmd = switchboard(broker.addr(), "alice");
    cmd.args([
        "send",
        "--to",
        "bob",
        "--wait-delivered",
        "--timeout",
        "60",
        "doomed",
    ]);
    let alice = cmd.spawn().expect("spawn send");

    // Two runs failed and the third is under way: killed now, the daemon must not have let go of it.
    until("the third run", || lines(&runs).len() == 3).await;
    assert!(names(&dead, ".msg").is_empty(), "not dead-lettered yet");
    bob.kill9().await;

    // A new daemon gets the message again, and gives it three runs of its own.
    let bob = Daemon::start(broker.addr(), "bob", &args);
    let out = within("alice's receipt", alice.wait_with_output())
        .await
        .expect("send");
    std::fs::write(&gate, "").expect("open the gate");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let id: u64 = stdout.lines().next().expect("id").parse().expect("id");
    assert_eq!(stdout.lines().nth(1), Some("delivered"));

    let runs = lines(&runs);
    let expected: Vec<String> = [1, 2, 3, 1, 2, 3]
        .iter()
        .map(|attempt| format!("{id} {attempt} doomed"))
        .collect();
    assert_eq!(
        runs, expected,
        "redelivered after the kill, three runs per daemon"
    );
    assert_eq!(names(&dead, ".msg"), [format!("{id:020}.msg")]);
    assert_eq!(
        std::fs::read(dead.join(format!("{id:020}.msg"))).unwrap(),
        b"doomed"
    );
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dead.join(format!("{id:020}.json"))).unwrap())
            .unwrap();
    assert_eq!(record["message_id"], id);
    assert_eq!(record["from"], "alice");
    let attempts = record["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 3, "{record}");
    assert!(attempts.iter().all(|a| a["exit_code"] == 7), "{record}");
    assert_eq!(attempts[2]["stderr"], "refused run 6\n");
    assert!(journal_has(&state, &id.to_string()));
    bob.stop().await;
}

/// The stdout sink prints a datagram's line; with `--no-datagrams` it is dropped and the messages
/// around it still come.
#[tokio::test]
async fn the_daemon_hands_datagrams_to_its_sink_or_drops_them_with_no_datagrams() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(&dir.path().join("data")).await;
    let send_datagram = |to: &'static str, body: &'static str| {
        let mut cmd = switchboard(broker.addr(), "alice");
        cmd.args(["send", "--datagram", "--to", to, body]);
        run(cmd)
    };
    for (id, flags, datagram_printed) in [
        ("bob", &[][..], true),
        ("carol", &["--no-datagrams"][..], false),
    ] {
        let state = dir.path().join(format!("{id}-state"));
        let mut args = vec!["--state-dir", state.to_str().unwrap()];
        args.extend_from_slice(flags);
        let mut daemon = Daemon::start(broker.addr(), id, &args);
        send(broker.addr(), "alice", id, "before").await;
        assert_eq!(
            daemon.next_json().await["body"],
            "before",
            "{id} is connected"
        );
        let out = send_datagram(id, "a reading").await;
        assert!(out.status.success(), "send failed: {}", text(&out.stderr));
        send(broker.addr(), "alice", id, "after").await;
        if datagram_printed {
            assert_eq!(
                daemon.next_json().await,
                serde_json::json!({"type": "datagram", "from": "alice", "body": "a reading"})
            );
        }
        assert_eq!(daemon.next_json().await["body"], "after", "{id}");
        daemon.stop().await;
    }
}
