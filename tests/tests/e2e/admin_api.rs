//! The admin JSON API against a real broker: the operator sees who is connected and which
//! mailboxes are deepest, reads a mailbox, removes a poison message and purges a mailbox (the
//! senders get `removed` receipts), and kicks a client (it gets `kicked`). A token guards it all.

use std::net::SocketAddr;

use bytes::Bytes;
use serde_json::Value;
use switchboard_client::{Client, Event, Events};
use switchboard_proto::{BrokerFrame, ClientFrame, ErrorCode, ReceiptStatus};

use crate::admin::request;
use crate::support::*;

/// A request whose answer must be JSON; the status and the value.
pub(crate) async fn api(admin: SocketAddr, method: &str, path: &str) -> (u16, Value) {
    api_with(admin, method, path, None).await
}

pub(crate) async fn api_with(
    admin: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, Value) {
    let (status, body) = request(admin, method, path, token).await;
    let value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("{method} {path}: {status} not JSON ({e}): {body}"));
    (status, value)
}

/// Alice sends `count` messages to `to`; returns their broker ids.
async fn send_many(alice: &Client, to: &str, count: usize) -> Vec<u64> {
    let mut ids = Vec::new();
    for i in 0..count {
        let accepted = within("send", alice.send(to, Bytes::from(format!("{to}-{i}"))))
            .await
            .expect("accepted");
        ids.push(accepted.message_id);
    }
    ids
}

/// The next `n` receipts alice gets, each acknowledged: `(message_id, status)`.
pub(crate) async fn receipts(
    alice: &Client,
    events: &mut Events,
    n: usize,
) -> Vec<(u64, ReceiptStatus)> {
    let mut got = Vec::new();
    while got.len() < n {
        match next_event(events).await {
            Event::Receipt(r) => {
                alice.ack(r.receipt_id).await.expect("ack receipt");
                got.push((r.message_id, r.status));
            }
            other => panic!("expected a receipt, got {other:?}"),
        }
    }
    got.sort_unstable_by_key(|(id, _)| *id);
    got
}

fn ids_of(page: &Value, key: &str, field: &str) -> Vec<Value> {
    page[key]
        .as_array()
        .unwrap_or_else(|| panic!("no `{key}` in {page}"))
        .iter()
        .map(|row| row[field].clone())
        .collect()
}

/// Bob and carol are offline; alice sends three to bob and one to carol. The operator lists the
/// clients and the mailboxes (bob deepest), reads bob's mailbox with a peek, removes one of bob's
/// messages and purges the rest: alice hears `removed` for each, and bob's mailbox is gone.
#[tokio::test]
async fn an_operator_lists_reads_removes_and_purges() {
    let fx = Fixture::new().await;
    let admin = fx.broker.admin.expect("admin on");
    let (alice, mut alice_events) = fx.connect("alice").await;
    let to_bob = send_many(&alice, "bob", 3).await;
    send_many(&alice, "carol", 1).await;

    let (status, clients) = api(admin, "GET", "/api/v1/clients").await;
    assert_eq!(status, 200, "{clients}");
    let alice_row = &clients[0];
    assert_eq!(alice_row["id"], "alice", "{clients}");
    assert!(alice_row["address"]
        .as_str()
        .is_some_and(|a| a.starts_with("127.0.0.1:")));
    assert!(alice_row["bytes_in"].as_u64() > Some(0) && alice_row["bytes_out"].as_u64() > Some(0));

    let (status, page) = api(admin, "GET", "/api/v1/mailboxes").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(ids_of(&page, "mailboxes", "id"), ["bob", "carol"]);
    assert_eq!(ids_of(&page, "mailboxes", "entries"), [3, 1]);
    assert_eq!(page["mailboxes"][0]["online"], false);
    assert!(
        page["mailboxes"][0]["oldest_entry_age_secs"].is_u64(),
        "{page}"
    );
    let (_, top) = api(admin, "GET", "/api/v1/mailboxes?limit=1&offset=1").await;
    assert_eq!(ids_of(&top, "mailboxes", "id"), ["carol"]);

    let (status, bob) = api(admin, "GET", "/api/v1/mailboxes/bob?peek=3").await;
    assert_eq!(status, 200, "{bob}");
    assert_eq!(
        ids_of(&bob, "page", "id"),
        to_bob.iter().map(|&id| Value::from(id)).collect::<Vec<_>>()
    );
    let first = &bob["page"][0];
    assert_eq!(
        (&first["kind"], &first["peer"]),
        (&"message".into(), &"alice".into())
    );
    assert_eq!(first["body_bytes"], 5, "`bob-0`");
    assert_eq!(first["body_peek_base64"], "Ym9i", "base64 of `bob`");

    let remove = format!("/api/v1/mailboxes/bob/entries/{}", to_bob[0]);
    let (status, removed) = api(admin, "DELETE", &remove).await;
    assert_eq!(status, 200, "{removed}");
    assert_eq!(
        (removed["removed"].as_u64(), removed["receipts"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(
        receipts(&alice, &mut alice_events, 1).await,
        [(to_bob[0], ReceiptStatus::Removed)]
    );
    let (status, again) = api(admin, "DELETE", &remove).await;
    assert_eq!(status, 404, "gone already: {again}");

    let (status, purged) = api(admin, "POST", "/api/v1/mailboxes/bob/purge").await;
    assert_eq!(status, 200, "{purged}");
    assert_eq!(purged["removed"], 2, "{purged}");
    let expected: Vec<_> = to_bob[1..]
        .iter()
        .map(|&id| (id, ReceiptStatus::Removed))
        .collect();
    assert_eq!(receipts(&alice, &mut alice_events, 2).await, expected);
    // Alice's mailbox may still hold receipts whose acks are on their way to the store.
    let (_, page) = api(admin, "GET", "/api/v1/mailboxes?sort=id").await;
    let left = ids_of(&page, "mailboxes", "id");
    assert!(
        !left.contains(&"bob".into()) && left.contains(&"carol".into()),
        "bob's mailbox is empty: {page}"
    );

    let (_, scrape) = request(admin, "GET", "/metrics", None).await;
    assert!(
        scrape.contains("switchboard_receipts_total{status=\"removed\"} 3"),
        "{scrape}"
    );
    assert!(
        scrape.contains("switchboard_mailbox_oldest_entry_age_seconds "),
        "{scrape}"
    );
}

/// Carol holds a message unacknowledged: removing it is refused (409) while her delivery is under
/// way. The operator kicks her (she gets `kicked`), and then the removal goes through.
#[tokio::test]
async fn a_message_handed_out_is_removed_only_after_its_client_is_kicked() {
    let fx = Fixture::new().await;
    let admin = fx.broker.admin.expect("admin on");
    let (alice, mut alice_events) = fx.connect("alice").await;
    let [id] = send_many(&alice, "carol", 1).await[..] else {
        panic!("one id")
    };
    let (mut carol, _) = Raw::hello(fx.addr(), "carol", 30).await;
    match carol.recv().await {
        Some(BrokerFrame::Deliver { message_id, .. }) => assert_eq!(message_id, id),
        other => panic!("expected a delivery, got {other:?}"),
    }
    let remove = format!("/api/v1/mailboxes/carol/entries/{id}");
    let (status, busy) = api(admin, "DELETE", &remove).await;
    assert_eq!(status, 409, "{busy}");
    let (_, listed) = api(admin, "GET", "/api/v1/mailboxes/carol").await;
    assert_eq!(listed["page"][0]["handed_out"], true, "{listed}");
    assert_eq!(listed["online"], true, "{listed}");

    let (status, kicked) = api(admin, "POST", "/api/v1/clients/carol/kick").await;
    assert_eq!(status, 200, "{kicked}");
    assert_closed_with(&carol.until_closed().await, ErrorCode::Kicked);
    fx.broker.gone("carol").await;

    let (status, removed) = api(admin, "DELETE", &remove).await;
    assert_eq!(status, 200, "{removed}");
    assert_eq!(
        receipts(&alice, &mut alice_events, 1).await,
        [(id, ReceiptStatus::Removed)]
    );
    // An ack from a stale connection changes nothing: carol's next session finds nothing.
    let (mut carol, hi) = Raw::hello(fx.addr(), "carol", 30).await;
    assert!(matches!(hi, BrokerFrame::Hi { pending: 0, .. }), "{hi:?}");
    carol.send(ClientFrame::Bye).await;
}

/// What the API answers to what it cannot do: an unknown client or entry (404), a bad id or
/// query (400), and, with a token set, any API request without it (401).
#[tokio::test]
async fn the_api_says_what_it_cannot_do() {
    let fx = Fixture::with(|s| s.admin.token = "adm1n".into()).await;
    let admin = fx.broker.admin.expect("admin on");
    let token = Some("adm1n");
    for (method, path) in [
        ("GET", "/api/v1/status"),
        ("GET", "/api/v1/clients"),
        ("GET", "/api/v1/mailboxes"),
        ("POST", "/api/v1/mailboxes/bob/purge"),
        ("POST", "/api/v1/clients/bob/kick"),
    ] {
        assert_eq!(
            request(admin, method, path, None).await.0,
            401,
            "{method} {path}"
        );
        assert_eq!(
            request(admin, method, path, Some("wrong")).await.0,
            401,
            "{method} {path}"
        );
    }
    let (status, body) = api_with(admin, "POST", "/api/v1/clients/nobody/kick", token).await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("nobody")),
        "{body}"
    );
    let (status, _) = api_with(admin, "DELETE", "/api/v1/mailboxes/bob/entries/7", token).await;
    assert_eq!(status, 404);
    let (status, _) = api_with(admin, "GET", "/api/v1/mailboxes/bad%20id", token).await;
    assert_eq!(status, 400);
    let (status, _) = request(admin, "GET", "/api/v1/mailboxes?sort=sideways", token).await;
    assert_eq!(status, 400);
    let (status, purged) = api_with(admin, "POST", "/api/v1/mailboxes/bob/purge", token).await;
    assert_eq!(
        (status, &purged["removed"]),
        (200, &Value::from(0)),
        "an empty mailbox"
    );
}
