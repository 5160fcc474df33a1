//! A broker short of file descriptors tells every client it cannot take `overloaded` rather than
//! leaving it hanging (issue 12, finding 8: with `ulimit -n 256` and 1,000 connections, 129 connected
//! and heard nothing and 638 timed out).

use futures_util::future::join_all;
use switchboard_proto::{BrokerFrame, ErrorCode};
use switchboard_tests::BrokerProcess;

use crate::support::*;

/// Clients that connect at once, more than the descriptor limit below allows.
const CLIENTS: usize = 200;
/// The broker's `ulimit -n`.
const DESCRIPTORS: u64 = 128;

/// With `ulimit -n 128` and the default `limits.max_connections` (50,000), the broker lowers the
/// limit with a warning at start; 200 clients connecting at once and staying connected each hear `hi`
/// or `overloaded`, and none is left without an answer.
#[tokio::test]
async fn short_of_descriptors_every_client_hears_hi_or_overloaded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start_with_descriptor_limit(dir.path(), DESCRIPTORS).await;
    assert_eq!(
        broker
            .output()
            .count(&["limits.max_connections", "lowered"]),
        1,
        "{}",
        broker.log()
    );
    every_client_hears_hi_or_overloaded(&broker).await;
}

/// When the descriptors run out although the connection limit was not reached (the limit dropped
/// under a running broker, or other files took them), the waiting connections are still accepted,
/// told `overloaded` and closed, instead of hanging in the backlog.
#[tokio::test]
async fn out_of_descriptors_below_the_connection_limit_still_answers() {
    let Some(prlimit) = program_on_path("prlimit") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "prlimit (util-linux) is missing"
        );
        eprintln!("skipped: prlimit (util-linux) is not installed");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = BrokerProcess::start(dir.path()).await;
    let status = tokio::process::Command::new(prlimit)
        .arg(format!("--pid={}", broker.pid()))
        .arg(format!("--nofile={DESCRIPTORS}:{DESCRIPTORS}"))
        .status();
    assert!(within("prlimit", status)
        .await
        .expect("run prlimit")
        .success());
    every_client_hears_hi_or_overloaded(&broker).await;
    assert!(
        broker
            .output()
            .count(&["out of file descriptors; refusing"])
            > 0,
        "{}",
        broker.log()
    );
}

/// [`CLIENTS`] clients connect at once and stay connected; each must hear `hi` or `overloaded`, and
/// some of each.
async fn every_client_hears_hi_or_overloaded(broker: &BrokerProcess) {
    let addr = broker.addr();
    let answers = join_all((0..CLIENTS).map(|i| async move {
        let mut raw = Raw::connect(addr).await;
        raw.send(switchboard_proto::ClientFrame::Hello {
            version: switchboard_proto::PROTOCOL_VERSION,
            client_id: format!("client-{i}"),
            token: None,
            keepalive_secs: 60,
        })
        .await;
        let first = raw.recv().await;
        (raw, first)
    }))
    .await;
    let (mut hi, mut overloaded) = (0, 0);
    for (_, first) in &answers {
        match first {
            Some(BrokerFrame::Hi { .. }) => hi += 1,
            Some(BrokerFrame::Error {
                code: ErrorCode::Overloaded,
                ..
            }) => overloaded += 1,
            other => panic!(
                "expected hi or overloaded, got {other:?}:\n{}",
                broker.log()
            ),
        }
    }
    assert!(hi > 0 && overloaded > 0, "hi {hi}, overloaded {overloaded}");
    assert_eq!(hi + overloaded, CLIENTS);
}

/// `name`'s path if it is on `PATH`.
fn program_on_path(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    })
}
