//! The two admin roles against a real broker: `admin.read_token` reads counts and metadata and is
//! refused (403, with a JSON error body) a peek at bodies and every action, which change nothing;
//! `admin.token` may do all of it; no token, or an unknown one, is 401. The admin CLI tells a
//! refusal for the read-only token apart (exit 6).

use bytes::Bytes;
use serde_json::Value;
use switchboard_proto::ReceiptStatus;

use crate::admin::{request, sample};
use crate::admin_api::{api_with, receipts};
use crate::admin_cli::admin;
use crate::support::*;

const FULL: &str = "roles-full-token";
const READ: &str = "roles-read-token";

/// A broker whose admin listener has both tokens.
async fn with_both_tokens() -> Fixture {
    Fixture::with(|s| {
        s.admin.token = FULL.into();
        s.admin.read_token = READ.into();
    })
    .await
}

/// A 403 with a JSON body that says the full token is needed.
#[track_caller]
fn assert_forbidden(what: &str, (status, body): (u16, Value)) {
    assert_eq!(status, 403, "{what}: {body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("read admin token") && error.contains("admin.token"),
        "{what}: {body}"
    );
}

/// Alice leaves two messages for bob; carol is online. With the read-only token the operator's
/// monitoring sees the status, the clients, the mailboxes, bob's entries (sizes, no bodies) and
/// the metrics; a peek, a kick, a remove and a purge are each refused, and bob still holds both
/// messages and carol is still connected. The full token then peeks, removes and kicks.
#[tokio::test]
async fn the_read_token_sees_counts_but_no_bodies_and_changes_nothing() {
    let fx = with_both_tokens().await;
    let admin = fx.broker.admin.expect("admin on");
    let (alice, mut alice_events) = fx.connect("alice").await;
    let mut to_bob = Vec::new();
    for body in ["one", "two"] {
        let accepted = within("send", alice.send("bob", Bytes::from(body)))
            .await
            .expect("accepted");
        to_bob.push(accepted.message_id);
    }
    let (_carol, _carol_events) = fx.connect("carol").await;
    let read = |method, path| api_with(admin, method, path, Some(READ));

    let (status, value) = read("GET", "/api/v1/status").await;
    assert_eq!((status, value["connections"].as_u64()), (200, Some(2)));
    let (status, clients) = read("GET", "/api/v1/clients").await;
    assert_eq!(status, 200);
    assert_eq!(clients.as_array().map(Vec::len), Some(2), "{clients}");
    let (status, boxes) = read("GET", "/api/v1/mailboxes").await;
    assert_eq!(
        (status, &boxes["mailboxes"][0]["id"]),
        (200, &Value::from("bob"))
    );
    let (status, bob) = read("GET", "/api/v1/mailboxes/bob").await;
    assert_eq!((status, bob["entries"].as_u64()), (200, Some(2)), "{bob}");
    assert_eq!(bob["page"][0]["body_bytes"], 3, "{bob}");
    assert!(bob["page"][0].get("body_peek_base64").is_none(), "{bob}");
    let (status, metrics) = request(admin, "GET", "/metrics", Some(READ)).await;
    assert_eq!(status, 200);
    assert_eq!(sample(&metrics, "switchboard_messages_accepted_total"), 2.0);
    let (status, _) = request(admin, "GET", "/api/v1/openapi.json", Some(READ)).await;
    assert_eq!(status, 200);

    assert_forbidden("peek", read("GET", "/api/v1/mailboxes/bob?peek=8").await);
    assert_forbidden("kick", read("POST", "/api/v1/clients/carol/kick").await);
    assert_forbidden("purge", read("POST", "/api/v1/mailboxes/bob/purge").await);
    let entry = format!("/api/v1/mailboxes/bob/entries/{}", to_bob[0]);
    assert_forbidden("remove", read("DELETE", &entry).await);
    let (_, bob) = read("GET", "/api/v1/mailboxes/bob").await;
    assert_eq!(bob["entries"], 2, "nothing was removed: {bob}");
    assert!(
        fx.broker.lookup("carol").await.is_some(),
        "carol is still connected"
    );

    let full = |method, path| api_with(admin, method, path, Some(FULL));
    let (status, peeked) = full("GET", "/api/v1/mailboxes/bob?peek=8").await;
    assert_eq!(status, 200, "{peeked}");
    assert!(
        peeked["page"][0]["body_peek_base64"].is_string(),
        "{peeked}"
    );
    let (status, removed) = full("DELETE", &entry).await;
    assert_eq!(
        (status, removed["removed"].as_u64()),
        (200, Some(1)),
        "{removed}"
    );
    assert_eq!(
        receipts(&alice, &mut alice_events, 1).await,
        [(to_bob[0], ReceiptStatus::Removed)]
    );
    let (status, _) = full("POST", "/api/v1/clients/carol/kick").await;
    assert_eq!(status, 200);
    fx.broker.gone("carol").await;
}

/// No token, an unknown one, or the read token spelled with a different case: 401 everywhere a
/// token is needed; the probes and the dashboard page stay open.
#[tokio::test]
async fn without_a_known_token_every_guarded_path_is_401() {
    let fx = with_both_tokens().await;
    let admin = fx.broker.admin.expect("admin on");
    for token in [None, Some("nobody"), Some("ROLES-READ-TOKEN")] {
        for (method, path) in [
            ("GET", "/metrics"),
            ("GET", "/api/v1/status"),
            ("GET", "/api/v1/mailboxes/bob"),
            ("POST", "/api/v1/clients/carol/kick"),
        ] {
            let (status, body) = request(admin, method, path, token).await;
            assert_eq!(status, 401, "{method} {path} with {token:?}: {body}");
        }
    }
    for path in ["/healthz", "/readyz", "/"] {
        assert_eq!(request(admin, "GET", path, None).await.0, 200, "{path}");
    }
}

/// The CLI with the read-only token lists the mailboxes, and a kick or a peek exits 6 with the
/// broker's reason; the full token kicks.
#[tokio::test]
async fn the_cli_with_the_read_token_exits_6_on_an_action() {
    crate::admin_cli::built();
    let fx = with_both_tokens().await;
    let admin_addr = fx.broker.admin.expect("admin on").to_string();
    let (_carol, _carol_events) = fx.connect("carol").await;
    admin(&admin_addr, Some(READ), &["mailboxes"]).await.ok();
    for args in [&["kick", "carol"][..], &["mailbox", "bob", "--peek", "4"]] {
        let refused = admin(&admin_addr, Some(READ), args).await;
        assert_eq!(refused.code, Some(6), "{args:?}: {}", refused.stderr);
        assert!(refused.stderr.contains("forbidden"), "{}", refused.stderr);
    }
    let kicked = admin(&admin_addr, Some(FULL), &["kick", "carol"])
        .await
        .ok();
    assert_eq!(kicked, "kicked carol\n");
}
