//! The admin listener, spoken to over HTTP as Prometheus, a load balancer and an operator would:
//! the counters move with real traffic, the probes answer, and a token guards a public address.

use std::net::SocketAddr;
use std::process::Stdio;

use bytes::Bytes;
use switchboard_broker::Broker;
use switchboard_client::Event;
use switchboard_proto::ReceiptStatus;
use switchboard_tests::BrokerProcess;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

/// One HTTP/1.1 `GET` (with `token` as a bearer token); the status and the body.
pub(crate) async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    request(addr, "GET", path, token).await
}

/// One HTTP/1.1 request without a body (with `token` as a bearer token); the status and the body.
pub(crate) async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, String) {
    let mut stream = within("admin connect", tokio::net::TcpStream::connect(addr))
        .await
        .expect("admin connect");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n{auth}\r\n"
    );
    within("admin request", stream.write_all(request.as_bytes()))
        .await
        .expect("write request");
    let mut response = Vec::new();
    within("admin response", stream.read_to_end(&mut response))
        .await
        .expect("read response");
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").expect("a response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    (status, body.to_owned())
}

/// The value of the sample `series` (name and labels, exactly) in a scrape.
pub(crate) fn sample(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no `{series}` in\n{scrape}"))
}

/// Alice sends three messages to bob, who acknowledges them; the scrape shows three accepted, three
/// delivered, three `delivered` receipts, both connections, bytes both ways and store commits, and
/// `promtool check metrics` accepts it.
#[tokio::test]
async fn the_counters_follow_real_traffic_and_promtool_accepts_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(dir.path()).await;
    let (alice, mut alice_events) = connect(broker.addr(), "alice").await;
    let (bob, mut bob_events) = connect(broker.addr(), "bob").await;
    for i in 0..3 {
        within("send", alice.send("bob", Bytes::from(format!("m{i}"))))
            .await
            .expect("accepted");
    }
    for _ in 0..3 {
        match next_event(&mut bob_events).await {
            Event::Message(m) => bob.ack(m.message_id).await.expect("ack"),
            other => panic!("expected a message, got {other:?}"),
        }
    }
    for _ in 0..3 {
        match next_event(&mut alice_events).await {
            Event::Receipt(r) => assert_eq!(r.status, ReceiptStatus::Delivered),
            other => panic!("expected a receipt, got {other:?}"),
        }
    }
    let (status, scrape) = get(broker.admin_addr(), "/metrics", None).await;
    assert_eq!(status, 200, "{scrape}");
    assert_eq!(sample(&scrape, "switchboard_messages_accepted_total"), 3.0);
    assert_eq!(sample(&scrape, "switchboard_messages_delivered_total"), 3.0);
    assert_eq!(
        sample(&scrape, "switchboard_receipts_total{status=\"delivered\"}"),
        3.0
    );
    assert_eq!(sample(&scrape, "switchboard_connections_open"), 2.0);
    assert!(sample(&scrape, "switchboard_connections_total") >= 2.0);
    assert!(sample(&scrape, "switchboard_received_bytes_total") > 0.0);
    assert!(sample(&scrape, "switchboard_sent_bytes_total") > 0.0);
    assert!(sample(&scrape, "switchboard_store_commit_seconds_count") > 0.0);
    assert!(sample(&scrape, "switchboard_process_resident_memory_bytes") > 0.0);
    promtool_accepts(&scrape).await;
}

/// `promtool check metrics` (Debian's `prometheus` package) on `scrape`.
async fn promtool_accepts(scrape: &str) {
    let mut child = match tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(error) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "promtool is missing ({error}); .ci/run installs Debian's prometheus package"
            );
            eprintln!("skipped the promtool check: promtool is not installed ({error})");
            return;
        }
    };
    let mut stdin = child.stdin.take().expect("stdin");
    within("promtool input", stdin.write_all(scrape.as_bytes()))
        .await
        .expect("write to promtool");
    drop(stdin);
    let out = within("promtool", child.wait_with_output())
        .await
        .expect("promtool ran");
    assert!(
        out.status.success(),
        "promtool refused the scrape: {}{}\n{scrape}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn the_probes_say_live_and_ready() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = TestBroker::start(settings(dir.path())).await;
    let admin = broker.admin.expect("admin on");
    assert_eq!(get(admin, "/healthz", None).await, (200, "ok\n".into()));
    assert_eq!(get(admin, "/readyz", None).await, (200, "ready\n".into()));
    assert_eq!(get(admin, "/nothing", None).await.0, 404);
}

/// On a non-loopback address the admin listener needs a token: without one the broker refuses to
/// start, naming the keys.
#[test]
fn an_admin_listener_off_loopback_without_a_token_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = settings(dir.path());
    s.admin.listen = "0.0.0.0:0".into();
    let refused = actix_rt::System::new().block_on(Broker::start(s));
    let err = refused.err().expect("refused").to_string();
    assert!(
        err.contains("admin.listen") && err.contains("admin.token"),
        "{err}"
    );
}

/// With a token, a request without it or with another gets 401; the probes stay open. (Plain HTTP
/// off loopback, as behind a TLS-terminating proxy: `admin_tls` tests the TLS.)
#[tokio::test]
async fn a_token_guards_an_admin_listener_off_loopback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = settings(dir.path());
    s.admin.listen = "0.0.0.0:0".into();
    s.admin.token = "s3cret-admin".into();
    s.admin.allow_plaintext = true;
    let broker = TestBroker::start(s).await;
    let port = broker.admin.expect("admin on").port();
    let admin: SocketAddr = ([127, 0, 0, 1], port).into();
    assert_eq!(get(admin, "/metrics", None).await.0, 401);
    assert_eq!(get(admin, "/metrics", Some("s3cret-admiN")).await.0, 401);
    assert_eq!(get(admin, "/metrics", Some("s3cret-admin")).await.0, 200);
    assert_eq!(get(admin, "/healthz", None).await.0, 200);
    assert_eq!(get(admin, "/readyz", None).await.0, 200);
}
