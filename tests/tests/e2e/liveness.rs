//! Live clients are never dropped for silence they did not keep (issue 12, finding 7): liveness counts
//! bytes, not frames, and is judged after reading what waits in the socket. Before the fix, 10 of 10
//! clients with a 4 s keepalive were dropped with `keepalive-timeout` after a 20 s SIGSTOP/SIGCONT of
//! the broker although their pings sat in the sockets, and a frame arriving slowly counted as silence.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use switchboard_proto::{
    encode_frame, BrokerFrame, ClientCodec, ClientFrame, DEFAULT_MAX_FRAME, PROTOCOL_VERSION,
};
use switchboard_tests::BrokerProcess;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::support::*;

/// Clients pinging through the pause.
const CLIENTS: usize = 8;
/// How often each pings: well within the 1 s keepalive (1.5 s of silence closes a connection).
const PING_EVERY: Duration = Duration::from_millis(300);
/// How long the broker is stopped: more than twice the 1.5 s limit.
const PAUSE: Duration = Duration::from_secs(4);

/// Eight clients with a 1 s keepalive ping every 300 ms; the broker is stopped for 4 s and continued.
/// Their pings sat in the sockets the whole time, so every client keeps its connection and hears
/// `pong` again; none is told `keepalive-timeout`.
#[tokio::test]
async fn clients_whose_pings_wait_in_the_socket_survive_a_sigstop_of_the_broker() {
    let dir = tempfile::tempdir().expect("tempdir");
    short_keepalive(dir.path());
    let broker = BrokerProcess::start(dir.path()).await;
    let mut readers = Vec::new();
    let mut pingers = Vec::new();
    for i in 0..CLIENTS {
        let (mut read, mut write) = hello(&broker, &format!("client-{i}")).await;
        expect_hi(&mut read).await;
        let pinged = Arc::new(AtomicUsize::new(0));
        let counter = pinged.clone();
        pingers.push(tokio::spawn(async move {
            let mut every = tokio::time::interval(PING_EVERY);
            loop {
                every.tick().await;
                if write.send(ClientFrame::Ping).await.is_err() {
                    return;
                }
                counter.fetch_add(1, Ordering::SeqCst);
            }
        }));
        readers.push((read, pinged));
    }
    signal(&broker, "-STOP").await;
    tokio::time::sleep(PAUSE).await; // The scenario: a broker that does not run for this long.
    let waiting: Vec<usize> = readers
        .iter()
        .map(|(_, p)| p.load(Ordering::SeqCst))
        .collect();
    signal(&broker, "-CONT").await;
    for (i, (read, _)) in readers.iter_mut().enumerate() {
        // A pong for every ping sent before the broker went on (they waited in the socket), then for
        // three sent after, and nothing else.
        for _ in 0..waiting[i] + 3 {
            match within("a pong after the pause", read.next()).await {
                Some(Ok(BrokerFrame::Pong)) => {}
                other => panic!(
                    "client-{i}: expected pong, got {other:?}:\n{}",
                    broker.log()
                ),
            }
        }
    }
    pingers.iter().for_each(|p| p.abort());
    assert_eq!(
        broker.output().count(&["keepalive-timeout"]),
        0,
        "{}",
        broker.log()
    );
}

/// A client with a 1 s keepalive sends a 3,000-byte `send` 100 bytes at a time, one chunk every
/// 100 ms: no frame is complete for 3 s, but bytes keep arriving, so it is not silence. The send is
/// accepted.
#[tokio::test]
async fn a_frame_arriving_slowly_is_not_silence() {
    let dir = tempfile::tempdir().expect("tempdir");
    short_keepalive(dir.path());
    let broker = BrokerProcess::start(dir.path()).await;
    let mut stream = within("tcp connect", TcpStream::connect(broker.addr()))
        .await
        .expect("tcp connect");
    let hello = encode_frame(&hello_frame("slow"), DEFAULT_MAX_FRAME).expect("encode");
    stream.write_all(&hello).await.expect("write hello");
    let send = ClientFrame::Send {
        send_id: 1,
        to: "bob".into(),
        body: vec![b'x'; 3000].into(),
        ttl_ms: None,
        fresh: true,
        receipts: switchboard_proto::Receipts::All,
    };
    let frame = encode_frame(&send, DEFAULT_MAX_FRAME).expect("encode");
    let (read, mut write) = stream.into_split();
    let mut read = FramedRead::new(read, ClientCodec::default());
    expect_hi(&mut read).await;
    for chunk in frame.chunks(100) {
        tokio::time::sleep(Duration::from_millis(100)).await; // The scenario: a slow uplink.
        if write.write_all(chunk).await.is_err() {
            break; // Closed by the broker: the next read says why.
        }
    }
    match within("the answer to the slow send", read.next()).await {
        Some(Ok(BrokerFrame::Accepted { send_id: 1, .. })) => {}
        other => panic!("expected accepted, got {other:?}:\n{}", broker.log()),
    }
}

type Reader = FramedRead<tokio::net::tcp::OwnedReadHalf, ClientCodec>;
type Writer = FramedWrite<tokio::net::tcp::OwnedWriteHalf, ClientCodec>;

/// A connection that has sent `hello` with a 1 s keepalive, split into its reading and writing halves.
async fn hello(broker: &BrokerProcess, id: &str) -> (Reader, Writer) {
    let stream = within("tcp connect", TcpStream::connect(broker.addr()))
        .await
        .expect("tcp connect");
    let (read, write) = stream.into_split();
    let mut write = FramedWrite::new(write, ClientCodec::default());
    within("hello", write.send(hello_frame(id)))
        .await
        .expect("write hello");
    (FramedRead::new(read, ClientCodec::default()), write)
}

fn hello_frame(id: &str) -> ClientFrame {
    ClientFrame::Hello {
        version: PROTOCOL_VERSION,
        client_id: id.into(),
        token: None,
        keepalive_secs: 1,
    }
}

async fn expect_hi(read: &mut Reader) {
    match within("hi", read.next()).await {
        Some(Ok(BrokerFrame::Hi { .. })) => {}
        other => panic!("expected hi, got {other:?}"),
    }
}

/// A `settings.toml` in the broker's working directory (its data directory) that lets a client agree
/// a 1 s keepalive.
fn short_keepalive(dir: &Path) {
    std::fs::write(dir.join("settings.toml"), "[keepalive]\nmin_secs = 1\n")
        .expect("write settings.toml");
}

/// `kill SIGNAL` to the broker process.
async fn signal(broker: &BrokerProcess, signal: &str) {
    let status = tokio::process::Command::new("kill")
        .args([signal, &broker.pid().to_string()])
        .status();
    let status = within("kill", status).await.expect("run kill");
    assert!(status.success(), "kill {signal} failed");
}
