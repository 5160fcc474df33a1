//! The live dashboard (`GET /`) in a real browser: headless Chromium loads the page from a broker
//! carrying traffic, and the numbers it shows match the API's and move with the traffic; a
//! screenshot is left in `target/admin-dashboard.png`. Without Chromium (Debian's `chromium`, which
//! `.ci/run` installs) the test says so and skips, or fails when `CI` is set.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde_json::Value;
use switchboard_client::{Client, Event, Events};

use crate::admin_api::{api_with, receipts};
use crate::support::*;

/// The browser on `PATH`, if any.
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// How long one run of Chromium may take.
const CHROMIUM_WAIT: std::time::Duration = std::time::Duration::from_secs(90);

/// Runs headless Chromium on `url` with `args` (a fresh profile each time, nothing from the
/// network but the broker); returns its stdout.
async fn browse(browser: &Path, url: &str, args: &[&str]) -> String {
    let profile = tempfile::tempdir().expect("profile dir");
    // A browser's start is the slowest step of the suite on two loaded cores (seen over 20 s).
    let out = switchboard_tests::within_for(
        CHROMIUM_WAIT,
        "chromium",
        tokio::process::Command::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--virtual-time-budget=3000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(args)
            .arg(url)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `data-value` of the element `id` in a dumped DOM.
fn shown(dom: &str, id: &str) -> String {
    let tag = dom
        .split_once(&format!("id=\"{id}\""))
        .and_then(|(_, rest)| rest.split_once('>'))
        .map(|(attrs, _)| attrs)
        .unwrap_or_else(|| panic!("no element `{id}` in\n{dom}"));
    tag.split_once("data-value=\"")
        .and_then(|(_, v)| v.split_once('"'))
        .map(|(v, _)| v.to_owned())
        .unwrap_or_else(|| panic!("`{id}` shows nothing: {tag}"))
}

/// Alice sends `n` messages to bob, who acknowledges each; returns once alice has every receipt.
async fn traffic(
    alice: &Client,
    alice_events: &mut Events,
    bob: &Client,
    bob_events: &mut Events,
    n: usize,
) {
    for i in 0..n {
        within("send", alice.send("bob", Bytes::from(format!("m{i}"))))
            .await
            .expect("accepted");
    }
    for _ in 0..n {
        match next_event(bob_events).await {
            Event::Message(m) => bob.ack(m.message_id).await.expect("ack"),
            other => panic!("expected a message, got {other:?}"),
        }
    }
    receipts(alice, alice_events, n).await;
}

/// The read-only token the page is given (`/#token=...`): all the dashboard needs.
const READ_TOKEN: &str = "dashboard-read-token";

async fn status(admin: SocketAddr) -> Value {
    let (code, status) = api_with(admin, "GET", "/api/v1/status", Some(READ_TOKEN)).await;
    assert_eq!(code, 200, "{status}");
    status
}

/// The page's numbers are the API's: totals, connections, waiting entries, the deepest mailbox.
#[track_caller]
fn assert_page_matches(dom: &str, status: &Value) {
    for (id, value) in [
        ("accepted-total", &status["totals"]["accepted"]),
        ("delivered-total", &status["totals"]["delivered"]),
        ("connections", &status["connections"]),
        ("entries", &status["mailboxes"]["entries"]),
        ("mailboxes", &status["mailboxes"]["count"]),
        ("version", &status["version"]),
    ] {
        let value = value
            .as_str()
            .map_or_else(|| value.to_string(), str::to_owned);
        assert_eq!(shown(dom, id), value, "`{id}` on the page");
    }
}

/// Bob and alice trade messages while carol's mailbox fills; the dashboard, loaded twice in
/// Chromium with only the read-only token, shows what the API says each time, and the totals have
/// moved in between.
#[tokio::test]
async fn the_dashboard_shows_the_live_numbers_in_a_real_browser() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is missing; .ci/run installs Debian's chromium package"
        );
        eprintln!("skipped the dashboard test: chromium is not installed");
        return;
    };
    let fx = Fixture::with(|s| {
        s.admin.token = "dashboard-full-token".into();
        s.admin.read_token = READ_TOKEN.into();
    })
    .await;
    let admin = fx.broker.admin.expect("admin on");
    let url = format!("http://{admin}/#token={READ_TOKEN}");
    let (alice, mut alice_events) = fx.connect("alice").await;
    let (bob, mut bob_events) = fx.connect("bob").await;
    for i in 0..3 {
        within("send", alice.send("carol", Bytes::from(format!("c{i}"))))
            .await
            .expect("accepted");
    }
    traffic(&alice, &mut alice_events, &bob, &mut bob_events, 20).await;

    let dom = browse(&browser, &url, &["--dump-dom"]).await;
    let before = status(admin).await;
    assert_eq!(before["totals"]["accepted"], 23);
    assert_page_matches(&dom, &before);
    assert!(
        dom.contains("data-id=\"carol\""),
        "carol is among the deepest:\n{dom}"
    );

    traffic(&alice, &mut alice_events, &bob, &mut bob_events, 10).await;
    // The plot needs two samples of the counters (one a second): wait for the API to have one.
    within("a second of rates", async {
        while status(admin).await["history"]
            .as_array()
            .is_none_or(Vec::is_empty)
        {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await;
    let dom = browse(&browser, &url, &["--dump-dom"]).await;
    let after = status(admin).await;
    assert_eq!(after["totals"]["accepted"], 33, "the totals moved");
    assert_page_matches(&dom, &after);
    let points: usize = dom
        .split_once("data-points=\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .and_then(|(n, _)| n.parse().ok())
        .expect("the plot says how many points it has");
    assert!(points >= 1, "the plot shows the rates");

    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/admin-dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let screenshot = format!("--screenshot={}", shot.display());
    browse(
        &browser,
        &url,
        &[&screenshot, "--window-size=1280,860", "--hide-scrollbars"],
    )
    .await;
    let png = std::fs::read(&shot).expect("the screenshot was written");
    assert!(png.starts_with(b"\x89PNG"), "a PNG at {}", shot.display());
}
