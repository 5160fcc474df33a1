//! What a `switchboard-broker` process tells systemd: the test binds the `NOTIFY_SOCKET` itself (a
//! unix datagram socket, as systemd does) and reads what arrives.

use std::path::Path;

use switchboard_tests::BrokerProcess;
use tokio::net::UnixDatagram;

use crate::support::within;

/// The next notification, as its `KEY=VALUE` lines.
async fn next(socket: &UnixDatagram) -> Vec<String> {
    let mut buf = vec![0u8; 4096];
    let n = within("a notification", socket.recv(&mut buf))
        .await
        .expect("recv");
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .map(str::to_string)
        .collect()
}

/// Notifications until one that holds `line`, skipping watchdog pings; returns it.
async fn until(socket: &UnixDatagram, line: &str) -> Vec<String> {
    loop {
        let got = next(socket).await;
        if got.iter().any(|l| l == line) {
            return got;
        }
        assert_eq!(
            got,
            ["WATCHDOG=1"],
            "unexpected notification waiting for {line}"
        );
    }
}

async fn broker(dir: &Path, socket: &Path, watchdog_usec: Option<&str>) -> BrokerProcess {
    let (socket, watchdog) = (socket.to_path_buf(), watchdog_usec.map(str::to_string));
    BrokerProcess::start_configured(&dir.join("data"), move |cmd| {
        cmd.env("NOTIFY_SOCKET", socket);
        match watchdog {
            Some(usec) => cmd.env("WATCHDOG_USEC", usec),
            None => cmd.env_remove("WATCHDOG_USEC"),
        };
    })
    .await
}

/// READY once listening, the watchdog pinged (every half of `WATCHDOG_USEC`), RELOADING then READY
/// around a SIGHUP, STOPPING at SIGTERM.
#[tokio::test]
async fn the_broker_tells_systemd_ready_reloading_stopping_and_pings_the_watchdog() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
    let broker = broker(dir.path(), &path, Some("200000")).await;
    assert_eq!(next(&socket).await, ["READY=1"]);
    assert_eq!(next(&socket).await, ["WATCHDOG=1"]);
    assert_eq!(next(&socket).await, ["WATCHDOG=1"]);

    let status = tokio::process::Command::new("kill")
        .args(["-HUP", &broker.pid().to_string()])
        .status()
        .await
        .expect("kill -HUP");
    assert!(status.success());
    let reloading = until(&socket, "RELOADING=1").await;
    assert!(
        reloading.iter().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "{reloading:?}"
    );
    until(&socket, "READY=1").await;
    broker.terminate().await;
    until(&socket, "STOPPING=1").await;
}

/// Without `WATCHDOG_USEC` nothing but READY and STOPPING comes.
#[tokio::test]
async fn without_a_watchdog_the_broker_does_not_ping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
    let broker = broker(dir.path(), &path, None).await;
    assert_eq!(next(&socket).await, ["READY=1"]);
    broker.terminate().await;
    assert_eq!(next(&socket).await, ["STOPPING=1"]);
}
