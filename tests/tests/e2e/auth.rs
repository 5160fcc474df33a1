//! Credentials, address and send rules, the safe default, and the connection and send limits.

use std::path::PathBuf;

use bytes::Bytes;
use switchboard_broker::auth::{hash_token, ClientEntry, CredentialsFile};
use switchboard_broker::Broker;
use switchboard_client::{Client, ClientError, ClientOptions};
use switchboard_proto::{BrokerFrame, ClientFrame, ErrorCode, RejectReason, PROTOCOL_VERSION};

use crate::support::*;

/// One client in a test credentials file: id, token, networks, may_send_to.
type Cred<'a> = (&'a str, &'a str, &'a [&'a str], Option<&'a [&'a str]>);

/// Writes a credentials file into `dir` and returns its path.
fn credentials(dir: &std::path::Path, clients: &[Cred<'_>]) -> PathBuf {
    let path = dir.join("credentials.toml");
    let file = CredentialsFile {
        clients: clients
            .iter()
            .map(|(id, token, networks, may_send_to)| {
                let entry = ClientEntry {
                    hash: hash_token(token).expect("hash"),
                    networks: networks.iter().map(|n| n.to_string()).collect(),
                    may_send_to: may_send_to.map(|to| to.iter().map(|t| t.to_string()).collect()),
                };
                (id.to_string(), entry)
            })
            .collect(),
    };
    file.save(&path).expect("save credentials");
    path
}

async fn hello(raw: &mut Raw, id: &str, token: Option<&str>) {
    raw.send(ClientFrame::Hello {
        version: PROTOCOL_VERSION,
        client_id: id.into(),
        token: token.map(Into::into),
        keepalive_secs: 30,
    })
    .await;
}

async fn refused(fx: &Fixture, id: &str, token: Option<&str>) {
    let mut raw = Raw::connect(fx.addr()).await;
    hello(&mut raw, id, token).await;
    assert_closed_with(&raw.until_closed().await, ErrorCode::Unauthorized);
}

#[tokio::test]
async fn tokens_and_send_rules_are_enforced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = credentials(
        dir.path(),
        &[
            (
                "alice",
                "alice-token",
                &["127.0.0.0/8", "::1"],
                Some(&["bob"]),
            ),
            ("bob", "bob-token", &[], None),
        ],
    );
    let fx = Fixture::with(|s| {
        s.auth.credentials_file = file.clone();
        s.auth.failure_delay_ms = 100;
    })
    .await;
    refused(&fx, "alice", None).await;
    refused(&fx, "alice", Some("bob-token")).await;
    refused(&fx, "mallory", Some("alice-token")).await;

    let mut opts = ClientOptions::new(fx.addr().to_string(), "alice");
    opts.token = Some("alice-token".into());
    let (alice, _ae) = within("alice connects", Client::connect(opts))
        .await
        .expect("right token");
    alice.send("bob", "allowed").await.expect("accepted");
    let err = alice
        .send("carol", "not allowed")
        .await
        .expect_err("forbidden");
    assert!(
        matches!(
            err,
            ClientError::Rejected {
                reason: RejectReason::Forbidden,
                ..
            }
        ),
        "{err}"
    );

    let mut opts = ClientOptions::new(fx.addr().to_string(), "bob");
    opts.token = Some("bob-token".into());
    let (bob, _be) = within("bob connects", Client::connect(opts))
        .await
        .expect("right token");
    assert_eq!(bob.welcome().pending, 1);
}

#[tokio::test]
async fn an_address_rule_refuses_the_right_token_from_elsewhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = credentials(dir.path(), &[("alice", "t", &["10.0.0.0/8"], None)]);
    let fx = Fixture::with(|s| {
        s.auth.credentials_file = file.clone();
        s.auth.failure_delay_ms = 50;
    })
    .await;
    refused(&fx, "alice", Some("t")).await;
}

#[test]
fn an_open_broker_will_not_listen_on_a_public_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = settings(dir.path());
    s.listen = "0.0.0.0:0".into();
    let result = actix_rt::System::new().block_on(Broker::start(s));
    let err = result.err().expect("refused").to_string();
    assert!(err.contains("allow_anonymous"), "{err}");
}

#[test]
fn a_broker_with_credentials_will_not_send_tokens_in_clear_over_a_public_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = settings(dir.path());
    s.listen = "0.0.0.0:0".into();
    s.auth.credentials_file = credentials(dir.path(), &[("alice", "t", &[], None)]);
    let result = actix_rt::System::new().block_on(Broker::start(s));
    let err = result.err().expect("refused").to_string();
    assert!(err.contains("allow_cleartext_tokens"), "{err}");
}

#[tokio::test]
async fn connections_over_the_limit_are_told_overloaded() {
    let fx = Fixture::with(|s| s.limits.max_connections = 2).await;
    let (_a, _) = Raw::hello(fx.addr(), "a", 30).await;
    let (_b, _) = Raw::hello(fx.addr(), "b", 30).await;
    let mut third = Raw::connect(fx.addr()).await;
    assert_closed_with(&third.until_closed().await, ErrorCode::Overloaded);
}

#[tokio::test]
async fn a_flooding_sender_is_rate_limited_not_disconnected() {
    let fx = Fixture::with(|s| s.limits.max_sends_per_sec = 5).await;
    let (mut alice, _) = Raw::hello(fx.addr(), "alice", 30).await;
    for send_id in 0..40 {
        alice
            .send(ClientFrame::Send {
                send_id,
                to: "bob".into(),
                body: Bytes::from_static(b"flood"),
                ttl_ms: None,
                fresh: false,
                receipts: switchboard_proto::Receipts::All,
            })
            .await;
    }
    let (mut accepted, mut limited) = (0, 0);
    for _ in 0..40 {
        match alice.recv().await {
            Some(BrokerFrame::Accepted { .. }) => accepted += 1,
            Some(BrokerFrame::Rejected {
                reason: RejectReason::RateLimited,
                ..
            }) => limited += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        accepted >= 5 && limited > 0,
        "accepted {accepted}, limited {limited}"
    );
    alice.send(ClientFrame::Ping).await;
    assert_eq!(alice.recv().await, Some(BrokerFrame::Pong));
    let (_bob, hi) = Raw::hello(fx.addr(), "bob", 30).await;
    assert!(
        matches!(hi, BrokerFrame::Hi { pending, .. } if pending == accepted),
        "{hi:?}"
    );
}

#[tokio::test]
async fn new_connections_per_address_are_rate_limited() {
    let fx = Fixture::with(|s| s.limits.max_connects_per_sec_per_ip = 1).await;
    let (mut first, _) = Raw::hello(fx.addr(), "first", 30).await;
    // The bucket holds one second's worth, so a second connection at once is dropped unanswered.
    let mut second = Raw::connect(fx.addr()).await;
    assert_eq!(second.until_closed().await, []);
    first.send(ClientFrame::Ping).await;
    assert_eq!(first.recv().await, Some(BrokerFrame::Pong));
}
