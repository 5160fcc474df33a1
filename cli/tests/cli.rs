//! The `switchboard` binary against a scripted broker: output, acknowledgements, exit codes.

// The scripted broker the library's tests use (until the test helpers move into `switchboard-tests`).
#[path = "../../client/tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::process::{Output, Stdio};

use bytes::Bytes;
use switchboard_proto::{
    BrokerFrame, ClientFrame, ErrorCode, ReceiptStatus, Receipts, RejectReason,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use support::*;

fn switchboard(addr: SocketAddr, id: Option<&str>) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    cmd.arg("--server").arg(addr.to_string());
    if let Some(id) = id {
        cmd.args(["--id", id]);
    }
    cmd.env_remove("SWITCHBOARD_ID")
        .env_remove("SWITCHBOARD_SERVER")
        .env_remove("SWITCHBOARD_TOKEN")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

fn spawn(mut cmd: Command) -> Child {
    cmd.spawn().expect("spawn switchboard")
}

async fn finish(child: Child) -> Output {
    within("the command to exit", child.wait_with_output())
        .await
        .expect("wait")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Reads the client's frames up to and including `Bye`, skipping pings.
async fn until_bye(peer: &mut Peer) -> Vec<ClientFrame> {
    let mut frames = Vec::new();
    loop {
        match peer.recv_skipping_pings().await {
            Some(ClientFrame::Bye) => return frames,
            Some(frame) => frames.push(frame),
            None => panic!("closed without bye after {frames:?}"),
        }
    }
}

/// Answers the next `Send` with `Accepted` as `message_id`; returns its send id, its body and the
/// receipts it asked for.
async fn accept_send(peer: &mut Peer, message_id: u64) -> (u64, Bytes, Receipts) {
    match peer.recv_skipping_pings().await {
        Some(ClientFrame::Send {
            send_id,
            body,
            receipts,
            ..
        }) => {
            peer.send(BrokerFrame::Accepted {
                send_id,
                message_id,
            })
            .await;
            (send_id, body, receipts)
        }
        other => panic!("expected a send, got {other:?}"),
    }
}

/// A message from alice, as the broker delivers it (sent at the epoch).
fn from_alice(message_id: u64, send_id: u64, body: impl Into<Bytes>) -> BrokerFrame {
    BrokerFrame::Deliver {
        message_id,
        from: "alice".into(),
        send_id,
        sent_at_ms: 0,
        body: body.into(),
    }
}

/// Sends the running command `signal` (`-INT`, `-TERM`), as a terminal or a service manager would.
async fn send_signal(child: &Child, signal: &str) {
    let pid = child.id().expect("pid");
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .await
        .expect("run kill");
    assert!(status.success());
}

#[tokio::test]
async fn a_closed_port_is_one_error_line_and_exit_1() {
    let addr = closed_port();
    let mut cmd = switchboard(addr, Some("alice"));
    cmd.args(["send", "--to", "bob", "hi"]);
    let out = finish(spawn(cmd)).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!("error: cannot connect to {addr}: connection refused\n")
    );
    assert!(out.stdout.is_empty());
}

#[tokio::test]
async fn a_missing_id_is_a_usage_error() {
    let mut cmd = switchboard(closed_port(), None);
    cmd.args(["send", "--to", "bob", "hi"]);
    let out = finish(spawn(cmd)).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[tokio::test]
async fn send_prints_the_message_id_once_accepted_and_says_bye() {
    let broker = MockBroker::start().await;
    let mut cmd = switchboard(broker.addr, Some("alice"));
    cmd.args(["send", "--to", "bob", "hello bob"]);
    let child = spawn(cmd);
    let (mut peer, _) = broker.welcome(30, 0).await;
    let (_, body, receipts) = accept_send(&mut peer, 42).await;
    assert_eq!(&body[..], b"hello bob");
    assert_eq!(receipts, Receipts::None, "nothing will read a receipt");
    assert!(until_bye(&mut peer).await.is_empty());
    drop(peer);
    let out = finish(child).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "42\n");
}

#[tokio::test]
async fn send_from_stdin_waits_for_delivery() {
    let broker = MockBroker::start().await;
    let mut cmd = switchboard(broker.addr, Some("alice"));
    cmd.args(["send", "--to", "bob", "--wait-delivered", "--timeout", "10"])
        .stdin(Stdio::piped());
    let mut child = spawn(cmd);
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(&[0xff, 0xfe, 0x00, b'x'])
        .await
        .expect("write stdin");
    drop(stdin);

    let (mut peer, _) = broker.welcome(30, 0).await;
    let (send_id, body, receipts) = accept_send(&mut peer, 42).await;
    assert_eq!(&body[..], [0xff, 0xfe, 0x00, b'x']);
    assert_eq!(receipts, Receipts::All, "it waits for the receipt");
    peer.send(BrokerFrame::Receipt {
        receipt_id: 43,
        send_id,
        message_id: 42,
        to: "bob".into(),
        status: ReceiptStatus::Delivered,
    })
    .await;
    assert_eq!(until_bye(&mut peer).await, [ClientFrame::Ack { id: 43 }]);
    drop(peer);
    let out = finish(child).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "42\ndelivered\n");
}

#[tokio::test]
async fn send_ttl_reaches_the_wire_and_an_expiry_is_printed() {
    let broker = MockBroker::start().await;
    let mut cmd = switchboard(broker.addr, Some("alice"));
    cmd.args([
        "send",
        "--to",
        "bob",
        "--ttl",
        "90s",
        "--wait-delivered",
        "hi",
    ]);
    let child = spawn(cmd);
    let (mut peer, _) = broker.welcome(30, 0).await;
    let (send_id, _, _, ttl_ms) = recv_send(&mut peer).await;
    assert_eq!(ttl_ms, Some(90_000));
    peer.send(BrokerFrame::Accepted {
        send_id,
        message_id: 42,
    })
    .await;
    peer.send(BrokerFrame::Receipt {
        receipt_id: 43,
        send_id,
        message_id: 42,
        to: "bob".into(),
        status: ReceiptStatus::Expired,
    })
    .await;
    assert_eq!(until_bye(&mut peer).await, [ClientFrame::Ack { id: 43 }]);
    drop(peer);
    let out = finish(child).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "42\nexpired\n");
    assert_eq!(
        text(&out.stderr),
        "error: message 42 was not delivered: expired\n"
    );
}

#[tokio::test]
async fn send_ttl_in_plain_seconds_and_without_one() {
    for (ttl, expected) in [(Some("45"), Some(45_000)), (None, None)] {
        let broker = MockBroker::start().await;
        let mut cmd = switchboard(broker.addr, Some("alice"));
        cmd.args(["send", "--to", "bob"]);
        if let Some(ttl) = ttl {
            cmd.args(["--ttl", ttl]);
        }
        cmd.arg("hi");
        let child = spawn(cmd);
        let (mut peer, _) = broker.welcome(30, 0).await;
        let (send_id, _, _, ttl_ms) = recv_send(&mut peer).await;
        assert_eq!(ttl_ms, expected, "--ttl {ttl:?}");
        peer.send(BrokerFrame::Accepted {
            send_id,
            message_id: 1,
        })
        .await;
        assert!(until_bye(&mut peer).await.is_empty());
        drop(peer);
        let out = finish(child).await;
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
}

#[tokio::test]
async fn a_zero_or_unreadable_ttl_is_a_usage_error() {
    for ttl in ["0", "soon"] {
        let mut cmd = switchboard(closed_port(), Some("alice"));
        cmd.args(["send", "--to", "bob", "--ttl", ttl, "hi"]);
        let out = finish(spawn(cmd)).await;
        assert_eq!(out.status.code(), Some(2), "{ttl}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains("--ttl"), "{}", text(&out.stderr));
    }
}

#[tokio::test]
async fn a_rejected_send_names_the_reason() {
    let broker = MockBroker::start().await;
    let mut cmd = switchboard(broker.addr, Some("alice"));
    cmd.args(["send", "--to", "not valid", "hi"]);
    let child = spawn(cmd);
    let (mut peer, _) = broker.welcome(30, 0).await;
    let Some(ClientFrame::Send { send_id, .. }) = peer.recv_skipping_pings().await else {
        panic!("expected a send");
    };
    peer.send(BrokerFrame::Rejected {
        send_id,
        reason: RejectReason::InvalidRecipient,
        text: "client id contains a space".into(),
    })
    .await;
    let out = finish(child).await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.starts_with("error: ") && err.contains("invalid-recipient"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[tokio::test]
async fn send_gives_up_at_the_timeout() {
    let broker = MockBroker::start().await;
    let mut cmd = switchboard(broker.addr, Some("alice"));
    cmd.args(["send", "--to", "bob", "--timeout", "300ms", "hi"]);
    let child = spawn(cmd);
    let (_peer, _) = broker.welcome(30, 0).await; // never answers the send
    let out = finish(child).await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.starts_with("error: timed out after 300ms"), "{err}");
}

#[tokio::test]
async fn poll_prints_and_acks_what_was_pending_then_leaves() {
    let broker = MockBroker::start().await;
    let mut cmd = switchboard(broker.addr, Some("bob"));
    cmd.arg("poll");
    let child = spawn(cmd);
    let (mut peer, _) = broker.welcome(30, 2).await;
    peer.send(BrokerFrame::Deliver {
        message_id: 42,
        from: "alice".into(),
        send_id: 7,
        sent_at_ms: 1_700_000_000_123,
        body: Bytes::from_static(b"hello bob"),
    })
    .await;
    peer.send(BrokerFrame::Receipt {
        receipt_id: 44,
        send_id: 1_700_000_000_000_001,
        message_id: 43,
        to: "carol".into(),
        status: ReceiptStatus::Delivered,
    })
    .await;
    assert_eq!(
        until_bye(&mut peer).await,
        [ClientFrame::Ack { id: 42 }, ClientFrame::Ack { id: 44 }]
    );
    drop(peer);
    let out = finish(child).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        concat!(
            r#"{"type":"message","id":42,"from":"alice","send_id":7,"sent_at":"2023-11-14T22:13:20.123Z","body":"hello bob"}"#,
            "\n",
            r#"{"type":"receipt","id":1700000000000001,"message_id":43,"to":"carol","status":"delivered"}"#,
            "\n"
        )
    );
}

#[tokio::test]
async fn poll_with_nothing_pending_prints_nothing() {
    let broker = MockBroker::start().await;
    let mut cmd = switchboard(broker.addr, Some("bob"));
    cmd.arg("poll");
    let child = spawn(cmd);
    let (mut peer, _) = broker.welcome(30, 0).await;
    assert!(until_bye(&mut peer).await.is_empty());
    drop(peer);
    let out = finish(child).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
}

#[tokio::test]
async fn listen_prints_each_message_then_acks_and_leaves_on_sigint() {
    let broker = MockBroker::start().await;
    let mut cmd = switchboard(broker.addr, Some("bob"));
    cmd.arg("listen");
    let mut child = spawn(cmd);
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let (mut peer, _) = broker.welcome(30, 0).await;
    for n in 0..2u64 {
        peer.send(from_alice(10 + n, 7, format!("live {n}"))).await;
        let line = within("a line", lines.next_line())
            .await
            .expect("read")
            .expect("a line");
        let value: serde_json::Value = serde_json::from_str(&line).expect("JSON");
        assert_eq!(value["body"], format!("live {n}"));
        assert_eq!(value["sent_at"], "1970-01-01T00:00:00.000Z");
        assert_eq!(
            peer.recv_skipping_pings().await,
            Some(ClientFrame::Ack { id: 10 + n })
        );
    }
    send_signal(&child, "-INT").await;
    assert!(until_bye(&mut peer).await.is_empty());
    drop(peer);
    let out = finish(child).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// Runs `cmd` against `broker`, which welcomes it, then ends the connection with error `code`
/// and `text`; the command's output once it has exited.
async fn ended_by(broker: &MockBroker, cmd: Command, code: ErrorCode, text: &str) -> Output {
    let child = spawn(cmd);
    let (mut peer, _) = broker.welcome(30, 0).await;
    peer.send(BrokerFrame::Error {
        code,
        text: text.into(),
    })
    .await;
    drop(peer);
    finish(child).await
}

#[tokio::test]
async fn listen_exits_1_when_the_broker_ends_the_connection() {
    let broker = MockBroker::start().await;
    let mut cmd = switchboard(broker.addr, Some("bob"));
    cmd.arg("listen");
    let out = ended_by(
        &broker,
        cmd,
        ErrorCode::ShuttingDown,
        "the broker is shutting down",
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "error: connection closed by the broker: shutting-down: the broker is shutting down\n"
    );
}

/// The daemon prints message `id` (from `from`, send `send_id`) as its next line, then acknowledges it.
async fn printed_then_acked(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    peer: &mut Peer,
    id: u64,
    from: &str,
    send_id: u64,
) {
    let line = within("a printed message", lines.next_line())
        .await
        .expect("read")
        .expect("a line");
    let value: serde_json::Value = serde_json::from_str(&line).expect("JSON");
    assert_eq!(
        (&value["id"], &value["from"], &value["send_id"]),
        (&id.into(), &from.into(), &send_id.into())
    );
    assert_eq!(
        peer.recv_skipping_pings().await,
        Some(ClientFrame::Ack { id })
    );
}

#[tokio::test]
async fn the_daemon_runs_its_sink_once_for_a_message_resent_under_a_new_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let broker = MockBroker::start().await;
    let mut cmd = switchboard(broker.addr, Some("bob"));
    cmd.args(["daemon", "--backoff-base", "0.01", "--backoff-cap", "0.1"])
        .arg("--state-dir")
        .arg(&state);
    let mut child = spawn(cmd);
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let deliver = |message_id, from: &str, send_id, sent_at_ms| BrokerFrame::Deliver {
        message_id,
        from: from.into(),
        send_id,
        sent_at_ms,
        body: Bytes::from(format!("{from} {send_id}")),
    };

    // Delivered early and acknowledged; then the broker crashes before the message was on disk.
    let (mut first, _) = broker.welcome(30, 0).await;
    first.send(deliver(42, "alice", 7, 1_000)).await;
    printed_then_acked(&mut lines, &mut first, 42, "alice", 7).await;
    drop(first);

    // Alice sent it again; the restarted broker delivers it under a new id and time. The daemon
    // only acknowledges it. The same send id from another sender is another message.
    let (mut second, _) = broker.welcome(30, 2).await;
    second.send(deliver(57, "alice", 7, 2_000)).await;
    assert_eq!(
        second.recv_skipping_pings().await,
        Some(ClientFrame::Ack { id: 57 }),
        "the second copy is acknowledged so the broker forgets it"
    );
    second.send(deliver(58, "carol", 7, 2_001)).await;
    printed_then_acked(&mut lines, &mut second, 58, "carol", 7).await;

    send_signal(&child, "-TERM").await;
    assert!(until_bye(&mut second).await.is_empty());
    drop(second);
    let out = finish(child).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        within("the end of stdout", lines.next_line())
            .await
            .expect("read"),
        None,
        "the sink ran once per message"
    );
    let journal = std::fs::read_to_string(state.join("handled")).expect("journal");
    assert_eq!(journal, "42 1000 7 alice\n58 2001 7 carol\n");
}

/// Under systemd (`Restart=always`) a daemon that exits 1 on `session-taken-over` comes back and
/// takes the id back, every `RestartSec`: it exits 3 instead, which the unit does not restart on.
#[tokio::test]
async fn a_daemon_whose_id_is_taken_over_exits_3_and_says_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = MockBroker::start().await;
    let mut cmd = switchboard(broker.addr, Some("bob"));
    cmd.args(["daemon", "--state-dir"]).arg(dir.path());
    let taken = "client id bob connected again from 127.0.0.1:1";
    let out = ended_by(&broker, cmd, ErrorCode::SessionTakenOver, taken).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("session-taken-over") && err.contains("not retrying"),
        "{err}"
    );
}

/// A refused token does not get better by retrying either: exit 4.
#[tokio::test]
async fn a_daemon_refused_as_unauthorized_exits_4() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = MockBroker::start().await;
    let mut cmd = switchboard(broker.addr, Some("bob"));
    cmd.args(["daemon", "--state-dir"]).arg(dir.path());
    let child = spawn(cmd);
    let mut peer = broker.accept().await;
    peer.recv().await.expect("hello");
    peer.send(BrokerFrame::Error {
        code: ErrorCode::Unauthorized,
        text: "not authorized".into(),
    })
    .await;
    drop(peer);
    let out = finish(child).await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("unauthorized"),
        "{}",
        text(&out.stderr)
    );
}

/// `SWITCHBOARD_TLS` takes the spellings people use: the first bytes on the wire are a TLS
/// ClientHello (a handshake record, 0x16) for 1/yes/on/true, and a plain frame for 0/no/off/false.
#[tokio::test]
async fn switchboard_tls_takes_the_usual_boolean_spellings() {
    use tokio::io::AsyncReadExt;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    for (value, tls) in [
        ("1", true),
        ("yes", true),
        ("on", true),
        ("true", true),
        ("0", false),
        ("no", false),
        ("off", false),
        ("false", false),
    ] {
        let mut cmd = switchboard(addr, Some("alice"));
        cmd.env("SWITCHBOARD_TLS", value)
            .args(["send", "--to", "bob", "--timeout", "5", "hi"]);
        let child = spawn(cmd);
        let (mut socket, _) = within("the connection", listener.accept())
            .await
            .expect("accept");
        let mut first = [0u8; 1];
        within("the first byte", socket.read_exact(&mut first))
            .await
            .expect("read");
        assert_eq!(first[0] == 0x16, tls, "SWITCHBOARD_TLS={value}");
        drop(socket);
        let out = finish(child).await;
        assert_eq!(out.status.code(), Some(1), "{value}: {}", text(&out.stderr));
    }
}

/// `send --spool` refuses what no broker would take, rather than spooling it to be refused later:
/// an invalid recipient, or (with the broker away) a body over the frame limit. Exit 1, nothing
/// spooled; a good message is spooled as before.
#[tokio::test]
async fn send_spool_refuses_an_invalid_recipient_and_an_oversized_body() {
    let dir = tempfile::tempdir().expect("tempdir");
    let outbox = dir.path().join("outbox");
    let addr = closed_port();
    let spooled_files = || {
        std::fs::read_dir(&outbox)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                    .count()
            })
            .unwrap_or(0)
    };

    let mut cmd = switchboard(addr, Some("alice"));
    cmd.args(["send", "--to", "not an id", "--spool"])
        .arg(&outbox)
        .arg("hi");
    let out = finish(spawn(cmd)).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("not an id"),
        "{}",
        text(&out.stderr)
    );

    let mut cmd = switchboard(addr, Some("alice"));
    cmd.args(["--max-frame", "1024", "send", "--to", "bob", "--spool"])
        .arg(&outbox)
        .arg("x".repeat(2000));
    let out = finish(spawn(cmd)).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("not spooled"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(spooled_files(), 0, "nothing was spooled");

    let mut cmd = switchboard(addr, Some("alice"));
    cmd.args(["send", "--to", "bob", "--spool"])
        .arg(&outbox)
        .arg("hi");
    let out = finish(spawn(cmd)).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(spooled_files(), 1, "a good message is spooled");
}

/// `listen --count N` prints and acknowledges exactly N entries, then says `Bye`: what came after
/// them is neither printed nor acknowledged (unlike `listen | head -n N`).
#[tokio::test]
async fn listen_count_acknowledges_exactly_what_it_printed() {
    let broker = MockBroker::start().await;
    let mut cmd = switchboard(broker.addr, Some("bob"));
    cmd.args(["listen", "--count", "2"]);
    let child = spawn(cmd);
    let (mut peer, _) = broker.welcome(30, 3).await;
    for n in 0..3u64 {
        peer.send(from_alice(20 + n, n, format!("m{n}"))).await;
    }
    assert_eq!(
        until_bye(&mut peer).await,
        [ClientFrame::Ack { id: 20 }, ClientFrame::Ack { id: 21 }]
    );
    drop(peer);
    let out = finish(child).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert_eq!(printed.lines().count(), 2, "{printed}");
    assert!(!printed.contains("m2"), "{printed}");
}

/// `listen --timeout` listens that long and leaves cleanly; with `--count`, running out of time
/// first is an error that says how far it got.
#[tokio::test]
async fn listen_timeout_ends_listening_and_bounds_a_count() {
    let broker = MockBroker::start().await;
    let mut cmd = switchboard(broker.addr, Some("bob"));
    cmd.args(["listen", "--timeout", "0.3"]);
    let child = spawn(cmd);
    let (mut peer, _) = broker.welcome(30, 0).await;
    assert!(until_bye(&mut peer).await.is_empty());
    drop(peer);
    let out = finish(child).await;
    assert!(out.status.success(), "{}", text(&out.stderr));

    let mut cmd = switchboard(broker.addr, Some("bob"));
    // Long enough that the one message surely arrives first, even on a loaded machine.
    cmd.args(["listen", "--count", "2", "--timeout", "2"]);
    let child = spawn(cmd);
    let (mut peer, _) = broker.welcome(30, 1).await;
    peer.send(from_alice(30, 1, "only one")).await;
    assert_eq!(until_bye(&mut peer).await, [ClientFrame::Ack { id: 30 }]);
    drop(peer);
    let out = finish(child).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("with 1 of 2 entries"),
        "{}",
        text(&out.stderr)
    );
}
