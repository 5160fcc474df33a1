//! A damaged body in the store (issue 12, finding 3): with SQLite, a page of garbage in the file
//! left its mailbox silent for ever (the broker retried the read every second; the client saw `hi`
//! and then nothing) and failed the commits that carried acks for healthy mailboxes; with the log,
//! a body damaged in a frame a snapshot covers went out as the message. Now the damaged entry is
//! set aside with an `undeliverable` receipt to its sender, the rest of the mailbox flows in order,
//! and the acks in the same commits land. Both embedded engines, as broker processes, the file
//! damaged between two runs.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use switchboard_proto::{BrokerFrame, ClientFrame, ErrorCode, ReceiptStatus, Receipts};
use switchboard_tests::BrokerProcess;

use crate::support::*;

/// How many messages alice sends bob, and which one is damaged.
const MESSAGES: u64 = 12;
const DAMAGED: u64 = 6;
/// Bodies longer than a SQLite page, so each lies partly in overflow pages of its own.
const BODY_BYTES: usize = 12 * 1024;
/// Written inside the damaged message's body, far from its start, to find it in the file.
const MARK: &[u8] = b"<<the-damaged-page-is-here>>";

#[tokio::test]
async fn a_damaged_body_in_the_log_is_set_aside_and_the_rest_of_the_mailbox_flows() {
    damaged_body_is_set_aside(Engine::Log).await;
}

#[tokio::test]
async fn a_damaged_page_in_sqlite_is_set_aside_and_the_rest_of_the_mailbox_flows() {
    damaged_body_is_set_aside(Engine::Sqlite).await;
}

/// Alice sends bob twelve messages while he is offline, and the broker stops cleanly. Bytes of the
/// sixth message's body are overwritten in the store file (for SQLite, the whole page holding
/// them). The broker starts again; bob gets the other eleven in order, whole, and acknowledges
/// them; alice gets an `undeliverable` receipt for the sixth and `delivered` for the eleven. After
/// another restart bob's mailbox holds nothing of it: a new message is the first he gets.
async fn damaged_body_is_set_aside(engine: Engine) {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start(engine, dir.path()).await;
    let (mut alice, _) = Raw::hello(broker.addr(), "alice", 60).await;
    for send_id in 1..=MESSAGES {
        alice
            .send_accepted(send_id, "bob", body(send_id), Receipts::All)
            .await;
    }
    drop(alice);
    broker.terminate().await;

    damage(engine, dir.path());

    let broker = start(engine, dir.path()).await;
    let (mut bob, _) = Raw::hello(broker.addr(), "bob", 60).await;
    for send_id in (1..=MESSAGES).filter(|&n| n != DAMAGED) {
        match bob.recv().await {
            Some(BrokerFrame::Deliver {
                message_id,
                send_id: got,
                body: got_body,
                ..
            }) => {
                assert_eq!(
                    got, send_id,
                    "bob gets the rest in order, without the damaged one"
                );
                assert!(got_body == body(send_id), "message {send_id} arrives whole");
                bob.send(ClientFrame::Ack { id: message_id }).await;
            }
            other => panic!("expected message {send_id}, got {other:?}"),
        }
    }
    let (mut alice, _) = Raw::hello(broker.addr(), "alice", 60).await;
    let mut heard = alice.receipts(MESSAGES as usize).await;
    heard.sort_by_key(|&(send_id, _)| send_id);
    let expected: Vec<_> = (1..=MESSAGES)
        .map(|n| match n {
            DAMAGED => (n, ReceiptStatus::Undeliverable),
            _ => (n, ReceiptStatus::Delivered),
        })
        .collect();
    assert_eq!(heard, expected, "one undeliverable, the rest delivered");
    assert!(
        broker.log().contains("damaged") && broker.log().contains("mailbox=bob"),
        "the damage is logged with the mailbox:\n{}",
        broker.log()
    );
    // Every entry of bob's is gone, the damaged one with its bytes (receipts have no body). The
    // receipts may have gone out early: a send accepted after them is committed after them.
    let marker = Bytes::from_static(b"marker");
    alice
        .send_accepted(99, "carol", marker.clone(), Receipts::None)
        .await;
    let (status, scrape) = crate::admin::get(broker.admin_addr(), "/metrics", None).await;
    assert_eq!(status, 200, "{scrape}");
    assert_eq!(
        crate::admin::sample(&scrape, "switchboard_mailbox_bytes"),
        marker.len() as f64,
        "no bytes are left counted for the entry set aside:\n{scrape}"
    );
    drop((alice, bob));
    broker.terminate().await;

    // The acks committed: after a restart a new message is the first bob gets.
    let broker = start(engine, dir.path()).await;
    let (mut alice, _) = Raw::hello(broker.addr(), "alice", 60).await;
    let body = Bytes::from_static(b"after the damage");
    alice.send_accepted(100, "bob", body, Receipts::None).await;
    let (mut bob, _) = Raw::hello(broker.addr(), "bob", 60).await;
    match bob.recv().await {
        Some(BrokerFrame::Deliver { send_id: 100, .. }) => {}
        other => panic!("expected only the new message, got {other:?}"),
    }
    drop((alice, bob));
    broker.terminate().await;
}

/// Message `n`'s body: its number, then filler; the damaged one carries [`MARK`] in its middle.
fn body(n: u64) -> Bytes {
    let mut body = format!("message {n:02} ").into_bytes();
    body.resize(BODY_BYTES, b'a' + (n % 26) as u8);
    if n == DAMAGED {
        let at = BODY_BYTES / 2;
        body[at..at + MARK.len()].copy_from_slice(MARK);
    }
    Bytes::from(body)
}

/// Overwrites the damaged message's [`MARK`] in the store file: in the log, its bytes (the frame's
/// checksum then fails); in SQLite, the whole page that holds it.
fn damage(engine: Engine, data_dir: &Path) {
    let file = match engine {
        Engine::Log => only_segment(data_dir),
        Engine::Sqlite => data_dir.join("switchboard.db"),
    };
    let mut bytes = std::fs::read(&file).expect("read the store file");
    let at = bytes
        .windows(MARK.len())
        .position(|w| w == MARK)
        .expect("the mark is in the file");
    let range = match engine {
        Engine::Log => at..at + MARK.len(),
        Engine::Sqlite => {
            let page = usize::from(u16::from_be_bytes([bytes[16], bytes[17]]));
            let start = at / page * page;
            start..start + page
        }
    };
    bytes[range].fill(0xa5);
    std::fs::write(&file, bytes).expect("damage the store file");
}

/// The log's one segment file in `data_dir`.
fn only_segment(data_dir: &Path) -> PathBuf {
    let segments: Vec<_> = std::fs::read_dir(data_dir.join("log"))
        .expect("the log directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    assert_eq!(segments.len(), 1, "{segments:?}");
    segments.into_iter().next().expect("a segment")
}

async fn start(engine: Engine, dir: &Path) -> BrokerProcess {
    BrokerProcess::start_configured(dir, |command| {
        command.env("SWITCHBOARD_BROKER_STORE", engine.env());
    })
    .await
}

/// The log's segment truncated under the running broker (a file that lost its bytes): bob's mailbox
/// cannot be read at all, and instead of `hi` and then silence bob hears `mailbox-unreadable` and
/// is disconnected, with the mailbox named in the log; what the index holds stays, and the next
/// connection is told the same.
#[tokio::test]
async fn a_mailbox_that_cannot_be_read_closes_its_session_with_mailbox_unreadable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start(Engine::Log, dir.path()).await;
    let (mut alice, _) = Raw::hello(broker.addr(), "alice", 60).await;
    for send_id in 1..=3 {
        alice
            .send_accepted(send_id, "bob", body(send_id), Receipts::None)
            .await;
    }
    let segment = std::fs::OpenOptions::new()
        .write(true)
        .open(only_segment(dir.path()))
        .expect("open the segment");
    segment.set_len(0).expect("truncate the segment");

    for _ in 0..2 {
        let (mut bob, _) = Raw::hello(broker.addr(), "bob", 60).await;
        assert_closed_with(&bob.until_closed().await, ErrorCode::MailboxUnreadable);
    }
    assert!(
        broker.log().contains("cannot be read") && broker.log().contains("mailbox=bob"),
        "logged with the mailbox:\n{}",
        broker.log()
    );
    drop(alice);
    broker.kill9().await;
}
