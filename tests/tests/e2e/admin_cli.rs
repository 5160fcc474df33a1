//! `switchboard-broker admin ...` as an operator runs it, against a running broker: the deepest
//! mailboxes, remove and purge (the senders get their receipts), kick, status, and the exit codes
//! that tell a script the broker is unreachable (3), the token is wrong (4) or the id unknown (5).

use bytes::Bytes;
use serde_json::Value;
use switchboard_proto::{ErrorCode, ReceiptStatus};
use switchboard_tests::binary;

use crate::admin_api::receipts;
use crate::support::*;

/// What one run of the command printed, and its exit code.
pub(crate) struct Run {
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// Runs `switchboard-broker admin --admin TARGET ARGS` with `token` (or none) in the environment;
/// `target` is `ip:port` or `https://ip:port`.
pub(crate) async fn admin(target: &str, token: Option<&str>, args: &[&str]) -> Run {
    let mut command = tokio::process::Command::new(binary("switchboard-broker"));
    command
        .args(["admin", "--admin", target])
        .args(args)
        .env_remove("SWITCHBOARD_ADMIN")
        .env_remove("SWITCHBOARD_ADMIN_CA")
        .env_remove("SWITCHBOARD_ADMIN_TOKEN")
        .kill_on_drop(true);
    if let Some(token) = token {
        command.env("SWITCHBOARD_ADMIN_TOKEN", token);
    }
    let out = within("switchboard-broker admin", command.output())
        .await
        .expect("the command runs");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Builds the binary first (a no-op when fresh), so no client idles past its keepalive meanwhile.
pub(crate) fn built() {
    binary("switchboard-broker");
}

impl Run {
    #[track_caller]
    pub(crate) fn ok(self) -> String {
        assert_eq!(self.code, Some(0), "{}{}", self.stdout, self.stderr);
        self.stdout
    }
}

/// Alice fills seven mailboxes to different depths. `mailboxes --top 5` lists the five deepest,
/// deepest first (also as JSON); `remove` takes one of bob's messages and `purge` the rest, and
/// alice gets a `removed` receipt for each; `clients` and `status` show her.
#[tokio::test]
async fn an_operator_finds_the_deepest_mailboxes_and_empties_one() {
    built();
    let fx = Fixture::new().await;
    let admin_addr = &fx.broker.admin.expect("admin on").to_string();
    let (alice, mut alice_events) = fx.connect("alice").await;
    let mut to_bob = Vec::new();
    for (to, n) in [
        ("bob", 5),
        ("carol", 1),
        ("dave", 3),
        ("erin", 2),
        ("frank", 4),
        ("gina", 6),
        ("hal", 1),
    ] {
        for i in 0..n {
            let accepted = within("send", alice.send(to, Bytes::from(format!("{to} {i}"))))
                .await
                .expect("accepted");
            if to == "bob" {
                to_bob.push(accepted.message_id);
            }
        }
    }

    let table = admin(admin_addr, None, &["mailboxes", "--top", "5"])
        .await
        .ok();
    let ids: Vec<&str> = table
        .lines()
        .skip(1)
        .take(5)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(ids, ["gina", "bob", "frank", "dave", "erin"], "{table}");
    assert!(table.contains("5 of 7 non-empty mailboxes"), "{table}");
    let json: Value = serde_json::from_str(
        &admin(admin_addr, None, &["--json", "mailboxes", "--top", "2"])
            .await
            .ok(),
    )
    .expect("--json prints JSON");
    assert_eq!(json["mailboxes"][1]["id"], "bob");
    assert_eq!(json["mailboxes"][1]["entries"], 5);

    let first = to_bob[0].to_string();
    let removed = admin(admin_addr, None, &["remove", "bob", &first])
        .await
        .ok();
    assert!(removed.contains("1 removed"), "{removed}");
    assert_eq!(
        receipts(&alice, &mut alice_events, 1).await,
        [(to_bob[0], ReceiptStatus::Removed)]
    );
    let purged = admin(admin_addr, None, &["purge", "bob"]).await.ok();
    assert!(purged.contains("4 removed, 4 senders told"), "{purged}");
    let expected: Vec<_> = to_bob[1..]
        .iter()
        .map(|&id| (id, ReceiptStatus::Removed))
        .collect();
    assert_eq!(receipts(&alice, &mut alice_events, 4).await, expected);
    let listing = admin(admin_addr, None, &["mailbox", "bob"]).await.ok();
    assert!(listing.starts_with("bob: 0 entries"), "{listing}");

    let clients = admin(admin_addr, None, &["clients"]).await.ok();
    assert!(
        clients.lines().any(|l| l.starts_with("alice  127.0.0.1:")),
        "{clients}"
    );
    let status = admin(admin_addr, None, &["status"]).await.ok();
    assert!(
        status.contains("connections 1 ") && status.contains("deepest mailboxes:"),
        "{status}"
    );
}

/// `kick` disconnects carol with `kicked`; kicking her again, or anyone unknown, exits 5.
#[tokio::test]
async fn kick_disconnects_and_an_unknown_client_exits_5() {
    built();
    let fx = Fixture::new().await;
    let admin_addr = &fx.broker.admin.expect("admin on").to_string();
    let (mut carol, _) = Raw::hello(fx.addr(), "carol", 30).await;
    let kicked = admin(admin_addr, None, &["kick", "carol"]).await.ok();
    assert_eq!(kicked, "kicked carol\n");
    assert_closed_with(&carol.until_closed().await, ErrorCode::Kicked);
    fx.broker.gone("carol").await;
    let again = admin(admin_addr, None, &["kick", "carol"]).await;
    assert_eq!(again.code, Some(5), "{}", again.stderr);
    assert!(
        again.stderr.contains("carol is not connected"),
        "{}",
        again.stderr
    );
}

/// A broker that is not there exits 3; a token missing or wrong exits 4; the right one works.
#[tokio::test]
async fn the_exit_code_says_unreachable_or_unauthorized() {
    built();
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    }; // Dropped: nothing listens there now.
    let gone = admin(&closed.to_string(), None, &["status"]).await;
    assert_eq!(gone.code, Some(3), "{}", gone.stderr);
    assert!(
        gone.stderr.contains("cannot reach the admin listener"),
        "{}",
        gone.stderr
    );

    let fx = Fixture::with(|s| s.admin.token = "cli-token".into()).await;
    let admin_addr = &fx.broker.admin.expect("admin on").to_string();
    for token in [None, Some("wrong")] {
        let refused = admin(admin_addr, token, &["clients"]).await;
        assert_eq!(refused.code, Some(4), "{}", refused.stderr);
        assert!(
            refused.stderr.contains("SWITCHBOARD_ADMIN_TOKEN"),
            "{}",
            refused.stderr
        );
    }
    admin(admin_addr, Some("cli-token"), &["clients"])
        .await
        .ok();
}
