//! Dedupe that forgets only what it should (issue 12, finding 9), on broker processes: the
//! `max_remembered` cap used to delete by `at_ms <= cutoff`, and sends of one batch share a
//! millisecond, so a cap of 3 forgot all of six pipelined sends; and a wall clock set two days
//! ahead forgot every remembered send at the next maintenance pass, so a resend was stored twice.
//!
//! The maintenance pass runs every `dedupe.maintenance_ms` (100 ms here); each pass logs
//! `store maintenance` at debug level, which is what the tests wait for. The clock jump takes
//! libfaketime (Debian's `libfaketime`): without it the test says why it skips, and under `CI` it
//! fails instead.

use std::path::Path;

use bytes::Bytes;
use futures_util::SinkExt;
use switchboard_proto::{BrokerFrame, ClientFrame, Receipts};
use switchboard_tests::{within, BrokerProcess};

use crate::support::*;

/// The log filter that shows each maintenance pass.
const MAINTENANCE_LOG: &str = "info,switchboard_broker::router::housekeeping=debug";
const PASS: &str = "store maintenance";

/// Where Debian's libfaketime lives.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// With a cap of 50, alice pipelines 100 sends in one write (so many share a millisecond) and
/// waits for two maintenance passes. She then resends all 100: the newest 50 are recognised (the
/// original ids come back), the oldest 50 were forgotten (new ids), exactly.
#[tokio::test]
async fn the_cap_forgets_exactly_the_oldest_sends_even_when_they_share_a_millisecond() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start_configured(dir.path(), |command| {
        command
            .env("RUST_LOG", MAINTENANCE_LOG)
            .env("SWITCHBOARD_BROKER_DEDUPE__MAX_REMEMBERED", "50")
            .env("SWITCHBOARD_BROKER_DEDUPE__MAINTENANCE_MS", "100");
    })
    .await;
    let (mut alice, _) = Raw::hello(broker.addr(), "alice", 60).await;
    let first = send_all(&mut alice, 1..=100).await;
    two_more_passes(&broker).await;
    // The newest first: resends of the oldest are new sends, which the cap would count first.
    let newest = send_all(&mut alice, 51..=100).await;
    assert_eq!(newest, first[50..], "the newest 50 are recognised");
    let oldest = send_all(&mut alice, 1..=50).await;
    for (send_id, (was, now)) in (1..=50).zip(first.iter().zip(&oldest)) {
        assert_ne!(was, now, "send {send_id} is among the oldest 50: forgotten");
    }
    drop(alice);
    broker.terminate().await;
}

/// The broker runs under libfaketime. Alice sends three messages; after two maintenance passes
/// the broker's wall clock is set two days ahead (the dedupe window is one day), and after two
/// more she resends them: each is recognised, the original id comes back, and bob gets each once.
/// A fourth message, sent after the jump, shows that the broker saw the new time.
#[tokio::test]
async fn a_wall_clock_two_days_ahead_does_not_forget_the_remembered_sends() {
    if !Path::new(LIBFAKETIME).exists() {
        let why = format!("the wall-clock jump takes libfaketime ({LIBFAKETIME})");
        assert!(
            std::env::var_os("CI").is_none(),
            "{why}, and CI must run it"
        );
        eprintln!("skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = dir.path().join("faketime");
    std::fs::write(&clock, "+0\n").expect("write the fake clock");
    let data = dir.path().join("data");
    let broker = BrokerProcess::start_configured(&data, |command| {
        command
            .env("LD_PRELOAD", LIBFAKETIME)
            .env("FAKETIME_TIMESTAMP_FILE", &clock)
            .env("FAKETIME_NO_CACHE", "1")
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .env("RUST_LOG", MAINTENANCE_LOG)
            .env("SWITCHBOARD_BROKER_DEDUPE__MAINTENANCE_MS", "100");
    })
    .await;
    let (mut alice, _) = Raw::hello(broker.addr(), "alice", 60).await;
    let first = send_all(&mut alice, 1..=3).await;
    two_more_passes(&broker).await;
    std::fs::write(&clock, "+2d\n").expect("set the fake clock ahead");
    let jumped = send_all(&mut alice, 4..=4).await;
    two_more_passes(&broker).await;
    let again = send_all(&mut alice, 1..=3).await;
    assert_eq!(first, again, "every resend is recognised after the jump");

    let (mut bob, _) = Raw::hello(broker.addr(), "bob", 60).await;
    let mut got = Vec::new();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    while got.len() < 4 {
        match bob.recv().await {
            Some(BrokerFrame::Deliver {
                message_id,
                sent_at_ms,
                ..
            }) => {
                if message_id == jumped[0] {
                    assert!(
                        sent_at_ms > now_ms + 36 * 3_600_000,
                        "the broker accepted the fourth message two days ahead"
                    );
                }
                got.push(message_id);
                bob.send(ClientFrame::Ack { id: message_id }).await;
            }
            other => panic!("expected a message, got {other:?}"),
        }
    }
    let mut expected = first.clone();
    expected.extend(&jumped);
    assert_eq!(got, expected, "bob gets each message once");
    drop((alice, bob));
    broker.terminate().await;
}

/// Writes a `send` to bob for each of `send_ids` in one go (pipelined, not waiting for answers),
/// then reads their answers; returns the message ids, in order.
async fn send_all(alice: &mut Raw, send_ids: std::ops::RangeInclusive<u64>) -> Vec<u64> {
    let n = send_ids.clone().count();
    for send_id in send_ids {
        let frame = ClientFrame::Send {
            send_id,
            to: "bob".into(),
            body: Bytes::from(format!("message {send_id}")),
            ttl_ms: None,
            fresh: false,
            receipts: Receipts::None,
        };
        within("frame feed", alice.framed.feed(frame))
            .await
            .expect("frame feed");
    }
    within("flush", SinkExt::<ClientFrame>::flush(&mut alice.framed))
        .await
        .expect("flush");
    let mut ids = Vec::with_capacity(n);
    while ids.len() < n {
        match alice.recv().await {
            Some(BrokerFrame::Accepted { message_id, .. }) => ids.push(message_id),
            other => panic!("expected accepted, got {other:?}"),
        }
    }
    ids
}

/// Waits for two maintenance passes after this point: the second began after everything
/// committed before the call.
async fn two_more_passes(broker: &BrokerProcess) {
    let seen = broker.output().count(&[PASS]);
    broker.output().wait_for(seen + 2, &[PASS]).await;
}
