//! `switchboard-broker store check` says whether the store on disk is whole and, if not, what is
//! damaged (issue 12, findings 3 and 4: a damaged store used to be found only by a broker that then
//! stalled on it). Exit codes: 0 whole, 1 damaged, 2 not checked.

use std::path::Path;

use bytes::Bytes;
use switchboard_proto::{BrokerFrame, ClientFrame};
use switchboard_tests::{binary, BrokerProcess};

use crate::support::*;

/// A broker stores two messages and stops; the check finds the store whole. While a broker runs on
/// the directory, the check refuses (exit 2). One byte of the first frame is then changed on disk:
/// the check says the store is damaged, naming the segment file and the byte offset (exit 1).
#[tokio::test]
async fn store_check_finds_a_whole_store_whole_and_names_a_damaged_frame() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(dir.path()).await;
    let (mut alice, _) = Raw::hello(broker.addr(), "alice", 60).await;
    for send_id in 1..=2 {
        alice
            .send(ClientFrame::Send {
                send_id,
                to: "bob".into(),
                body: Bytes::from_static(b"a message to keep"),
                ttl_ms: None,
                fresh: false,
                receipts: switchboard_proto::Receipts::All,
            })
            .await;
        match alice.recv().await {
            Some(BrokerFrame::Accepted { .. }) => {}
            other => panic!("expected accepted, got {other:?}"),
        }
    }
    let (code, out) = store_check(dir.path()).await;
    assert_eq!(code, 2, "a running broker holds the directory:\n{out}");
    assert!(out.contains("in use"), "{out}");
    drop(alice);
    broker.terminate().await;

    let (code, out) = store_check(dir.path()).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("whole") && out.contains("2 entries"), "{out}");

    let segment = first_segment(dir.path());
    let mut bytes = std::fs::read(&segment).expect("read the segment");
    bytes[12] ^= 0xff; // Inside the first frame's payload: its checksum no longer matches.
    std::fs::write(&segment, bytes).expect("damage the segment");
    let (code, out) = store_check(dir.path()).await;
    assert_eq!(code, 1, "{out}");
    let name = segment.file_name().and_then(|n| n.to_str()).expect("name");
    assert!(
        out.contains("DAMAGED") && out.contains(name) && out.contains("byte 0"),
        "{out}"
    );
}

/// Runs `switchboard-broker --data-dir DIR store check`; its exit code and everything it printed.
async fn store_check(data_dir: &Path) -> (i32, String) {
    let program = tokio::task::spawn_blocking(|| binary("switchboard-broker"))
        .await
        .expect("find the broker binary");
    let output = tokio::process::Command::new(program)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["store", "check"])
        .current_dir(data_dir)
        .output();
    let output = within("store check", output)
        .await
        .expect("run store check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

/// The oldest segment file of the log in `data_dir`.
fn first_segment(data_dir: &Path) -> std::path::PathBuf {
    let mut segments: Vec<_> = std::fs::read_dir(data_dir.join("log"))
        .expect("the log directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segments.sort();
    segments.into_iter().next().expect("a segment")
}
