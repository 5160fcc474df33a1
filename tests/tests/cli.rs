//! The command-line tools as a user runs them: a `switchboard-broker` process and `switchboard`
//! processes talking to it over loopback.

use std::net::SocketAddr;
use std::process::{Output, Stdio};

use switchboard_tests::{binary, within, BrokerProcess};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{ChildStdout, Command};

fn switchboard(addr: SocketAddr, id: Option<&str>) -> Command {
    let mut cmd = Command::new(binary("switchboard"));
    cmd.arg("--server").arg(addr.to_string());
    if let Some(id) = id {
        cmd.args(["--id", id]);
    }
    cmd.env_remove("SWITCHBOARD_ID")
        .env_remove("SWITCHBOARD_SERVER")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

async fn run(mut cmd: Command) -> Output {
    within("the command", cmd.output())
        .await
        .expect("run switchboard")
}

async fn run_with_stdin(mut cmd: Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input).await.expect("write stdin");
    drop(stdin);
    within("the command", child.wait_with_output())
        .await
        .expect("wait")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    text(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

async fn send(addr: SocketAddr, from: &str, to: &str, body: &str) -> u64 {
    send_with(addr, from, to, body, &[]).await
}

/// `send` with `flags` before the text.
async fn send_with(addr: SocketAddr, from: &str, to: &str, body: &str, flags: &[&str]) -> u64 {
    let mut cmd = switchboard(addr, Some(from));
    cmd.args(["send", "--to", to]).args(flags).arg(body);
    let out = run(cmd).await;
    assert!(out.status.success(), "send failed: {}", text(&out.stderr));
    text(&out.stdout)
        .trim()
        .parse()
        .expect("message id on stdout")
}

async fn poll(addr: SocketAddr, id: &str) -> Vec<serde_json::Value> {
    let mut cmd = switchboard(addr, Some(id));
    cmd.arg("poll");
    let out = run(cmd).await;
    assert!(out.status.success(), "poll failed: {}", text(&out.stderr));
    json_lines(&out.stdout)
}

#[tokio::test]
async fn offline_bob_polls_his_mail_even_across_a_broker_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(dir.path()).await;
    let first = send(broker.addr(), "alice", "bob", "hello bob").await;
    let second = send(broker.addr(), "alice", "bob", "are you there?").await;
    assert!(second > first);

    let lines = poll(broker.addr(), "bob").await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["type"], "message");
    assert_eq!(lines[0]["id"], first);
    assert_eq!(lines[0]["from"], "alice");
    assert_eq!(lines[0]["body"], "hello bob");
    assert!(lines[0]["sent_at"]
        .as_str()
        .expect("sent_at")
        .ends_with('Z'));
    assert_eq!(lines[1]["body"], "are you there?");
    assert!(
        poll(broker.addr(), "bob").await.is_empty(),
        "acknowledged mail is gone"
    );

    // Mail sent before a restart is still there after it; this one asks for its receipt.
    send_with(
        broker.addr(),
        "alice",
        "bob",
        "after the restart",
        &["--receipts", "all"],
    )
    .await;
    broker.terminate().await;
    let broker = BrokerProcess::start(dir.path()).await;
    let lines = poll(broker.addr(), "bob").await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["body"], "after the restart");

    // The receipt alice asked for waited for her; the plain sends asked for none (a send-only
    // client's mailbox holds nothing for it).
    let receipts = poll(broker.addr(), "alice").await;
    assert_eq!(receipts.len(), 1, "{receipts:?}");
    assert!(receipts
        .iter()
        .all(|r| r["type"] == "receipt" && r["to"] == "bob" && r["status"] == "delivered"));
    broker.terminate().await;
}

async fn next_json(lines: &mut Lines<BufReader<ChildStdout>>) -> serde_json::Value {
    let line = within("a line from listen", lines.next_line())
        .await
        .expect("read listen output")
        .expect("listen exited");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line}: {e}"))
}

/// Bob's `listen`, once attached: a message sent before he connected proves it when it shows up.
async fn bob_listening(addr: SocketAddr) -> (tokio::process::Child, Lines<BufReader<ChildStdout>>) {
    send(addr, "alice", "bob", "first").await;
    let mut listener = switchboard(addr, Some("bob"))
        .arg("listen")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn listen");
    let mut lines = BufReader::new(listener.stdout.take().expect("stdout")).lines();
    assert_eq!(next_json(&mut lines).await["body"], "first");
    (listener, lines)
}

#[tokio::test]
async fn listening_bob_gets_messages_live_and_alice_waits_for_delivery() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(dir.path()).await;
    let (mut listener, mut lines) = bob_listening(broker.addr()).await;

    let mut cmd = switchboard(broker.addr(), Some("alice"));
    cmd.args(["send", "--to", "bob", "--wait-delivered", "--timeout", "10"]);
    let out = run_with_stdin(cmd, &[0xff, 0xfe, 0x00, b'x']).await;
    assert!(out.status.success(), "send failed: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let mut printed = stdout.lines();
    let id: u64 = printed.next().expect("id line").parse().expect("id");
    assert_eq!(printed.next(), Some("delivered"));

    let line = next_json(&mut lines).await;
    assert_eq!(line["id"], id);
    assert!(line.get("body").is_none());
    assert_eq!(line["body_b64"], "//4AeA==");
    listener.kill().await.expect("stop listen");
    broker.terminate().await;
}

#[tokio::test]
async fn errors_are_one_line_with_the_right_exit_code() {
    // Nothing listens on this port once the listener is dropped.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = closed.local_addr().expect("addr");
    drop(closed);
    let mut cmd = switchboard(addr, Some("alice"));
    cmd.args(["send", "--to", "bob", "hi"]);
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.starts_with(&format!("error: cannot connect to {addr}")),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");

    // A missing --id is a usage error.
    let mut cmd = switchboard(addr, None);
    cmd.args(["send", "--to", "bob", "hi"]);
    assert_eq!(run(cmd).await.status.code(), Some(2));

    // A rejection exits 1 with the reason.
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(dir.path()).await;
    let mut cmd = switchboard(broker.addr(), Some("alice"));
    cmd.args(["send", "--to", "not valid", "hi"]);
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("invalid-recipient"),
        "{}",
        text(&out.stderr)
    );
    broker.terminate().await;
}

/// With a broker configured for larger frames than the CLI's default (1 MiB), the CLI follows what
/// the broker announces: a 3 MiB message goes in with `send` and comes out with `poll`.
#[tokio::test]
async fn the_cli_sends_and_receives_bodies_as_large_as_the_broker_takes() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The broker process runs in its data directory and reads the settings file there.
    std::fs::write(
        dir.path().join("settings.toml"),
        "[limits]\nmax_frame_bytes = 4194304\n",
    )
    .expect("settings");
    let broker = BrokerProcess::start(dir.path()).await;
    let body = "x".repeat(3 << 20);
    let mut cmd = switchboard(broker.addr(), Some("alice"));
    cmd.args(["send", "--to", "bob"]);
    let out = run_with_stdin(cmd, body.as_bytes()).await;
    assert!(out.status.success(), "send failed: {}", text(&out.stderr));
    let mut cmd = switchboard(broker.addr(), Some("bob"));
    cmd.arg("poll")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = run(cmd).await;
    assert!(out.status.success(), "poll failed: {}", text(&out.stderr));
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["body"].as_str().map(str::len), Some(body.len()));
}

/// README, "Datagrams: sent, not kept": bob listens, alice sends a datagram, bob prints it; bob
/// gone, alice's next datagram is gone too and bob's mailbox is unchanged.
#[tokio::test]
async fn the_readme_datagram_example_works_as_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(dir.path()).await;
    let (mut listener, mut lines) = bob_listening(broker.addr()).await;

    let send_datagram = |body: &'static str| {
        let mut cmd = switchboard(broker.addr(), Some("alice"));
        cmd.args(["send", "--datagram", "--to", "bob", body]);
        run(cmd)
    };
    let out = send_datagram("position 52.37,4.89").await;
    assert!(out.status.success(), "send failed: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "", "nothing is said of delivery");
    assert_eq!(
        next_json(&mut lines).await,
        serde_json::json!({"type": "datagram", "from": "alice", "body": "position 52.37,4.89"})
    );

    listener.kill().await.expect("stop listen");
    let out = send_datagram("nobody hears this").await;
    assert!(out.status.success(), "send failed: {}", text(&out.stderr));
    assert_eq!(
        poll(broker.addr(), "bob").await,
        Vec::<serde_json::Value>::new()
    );
    broker.terminate().await;
}
