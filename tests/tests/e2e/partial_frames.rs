//! Half-sent frames cannot exhaust the broker's memory (issue 12, finding 5: 1,000 connections that
//! send 1 MiB − 1 byte of a 1 MiB frame added 1.17 GB to the broker): every partial frame larger than a
//! read buffer is charged to one budget, `limits.max_partial_frames_bytes`, and a connection that
//! cannot get its frame's share is told `overloaded` and closed.

use futures_util::StreamExt;
use switchboard_proto::{
    encode_frame, BrokerFrame, ClientCodec, ClientFrame, ErrorCode, DEFAULT_MAX_FRAME,
    PROTOCOL_VERSION,
};
use switchboard_tests::BrokerProcess;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;

use crate::support::*;

/// The budget: room for three of the frames below (1,000,034 bytes each), not four.
const BUDGET: usize = 3_670_016;
/// Uploads started at once.
const UPLOADS: usize = 10;
/// What each sends of its frame before it stalls.
const FIRST_PART: usize = 64 * 1024;

/// Ten clients each start a 1 MB `send` and stall after 64 KiB. Three fit the 3.5 MiB budget; the
/// other seven hear `overloaded` and are closed. The three then finish their sends and are accepted,
/// and once they are done a new client's 1 MB send goes through too: the budget came back.
#[tokio::test]
async fn stalled_uploads_beyond_the_budget_hear_overloaded_and_the_rest_go_through() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = format!("[limits]\nmax_partial_frames_bytes = {BUDGET}\n");
    std::fs::write(dir.path().join("settings.toml"), settings).expect("write settings.toml");
    let broker = BrokerProcess::start(dir.path()).await;
    let frame = encode_frame(&large_send(), DEFAULT_MAX_FRAME).expect("encode");

    // Each upload's broker frames come to one channel, tagged with its number.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut writers = Vec::new();
    for i in 0..UPLOADS {
        let (mut read, mut write) = hello(&broker, &format!("uploader-{i}")).await;
        within("the first part", write.write_all(&frame[..FIRST_PART]))
            .await
            .expect("write");
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(Ok(frame)) = read.next().await {
                let _ = tx.send((i, frame));
            }
        });
        writers.push(write);
    }
    let mut refused = Vec::new();
    while refused.len() < UPLOADS - 3 {
        match within("the refusals", rx.recv()).await {
            Some((
                i,
                BrokerFrame::Error {
                    code: ErrorCode::Overloaded,
                    ..
                },
            )) => refused.push(i),
            other => panic!("expected overloaded, got {other:?}:\n{}", broker.log()),
        }
    }
    // The three that fit the budget finish their frames: each is accepted, and none was refused.
    let held: Vec<usize> = (0..UPLOADS).filter(|i| !refused.contains(i)).collect();
    for &i in &held {
        within("the rest", writers[i].write_all(&frame[FIRST_PART..]))
            .await
            .expect("write");
    }
    let mut accepted = Vec::new();
    while accepted.len() < held.len() {
        match within("accepted", rx.recv()).await {
            Some((i, BrokerFrame::Accepted { send_id: 1, .. })) => accepted.push(i),
            other => panic!("expected accepted, got {other:?}:\n{}", broker.log()),
        }
    }
    accepted.sort_unstable();
    assert_eq!(accepted, held);
    // The budget came back: a new client's whole frame goes through.
    let (mut read, mut write) = hello(&broker, "late").await;
    within("a whole frame", write.write_all(&frame))
        .await
        .expect("write");
    match within("accepted", read.next()).await {
        Some(Ok(BrokerFrame::Accepted { send_id: 1, .. })) => {}
        other => panic!("the budget did not come back: {other:?}:\n{}", broker.log()),
    }
}

fn large_send() -> ClientFrame {
    ClientFrame::Send {
        send_id: 1,
        to: "bob".into(),
        body: vec![b'x'; 1_000_000].into(),
        ttl_ms: None,
        fresh: true,
        receipts: switchboard_proto::Receipts::All,
    }
}

type Reader = FramedRead<OwnedReadHalf, ClientCodec>;

/// A connection that has said `hello` and heard `hi`: its frames, and its socket to write bytes to.
async fn hello(broker: &BrokerProcess, id: &str) -> (Reader, OwnedWriteHalf) {
    let stream = within("tcp connect", TcpStream::connect(broker.addr()))
        .await
        .expect("tcp connect");
    let (read, mut write) = stream.into_split();
    let hello = ClientFrame::Hello {
        version: PROTOCOL_VERSION,
        client_id: id.into(),
        token: None,
        keepalive_secs: 60,
    };
    let bytes = encode_frame(&hello, DEFAULT_MAX_FRAME).expect("encode");
    within("hello", write.write_all(&bytes))
        .await
        .expect("hello");
    let mut read = FramedRead::new(read, ClientCodec::default());
    match within("hi", read.next()).await {
        Some(Ok(BrokerFrame::Hi { .. })) => (read, write),
        other => panic!("expected hi, got {other:?}"),
    }
}
