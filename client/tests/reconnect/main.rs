//! Reconnecting against a scripted broker: a lost connection is noticed, the client says `Hello`
//! again, unanswered sends go out again in order, and errors that reconnecting cannot cure end it.
//!
//! Every scenario synchronises on events and frames; the backoff is kept short (10 to 100 ms) so the
//! reconnects themselves are quick, and every wait is bounded by `switchboard_tests::WAIT`.

#[path = "../support/mod.rs"]
mod support;

mod giving_up;
mod receipts;
mod resending;

use std::time::Duration;

use support::{within, MockBroker, Peer};
use switchboard_client::{
    Client, ClientError, ClientOptions, CloseReason, Event, Events, Reconnect, Sent,
};

pub(crate) fn reconnecting(broker: &MockBroker) -> ClientOptions {
    let mut opts = ClientOptions::new(broker.addr.to_string(), "alice");
    opts.reconnect = Some(Reconnect::new(
        Duration::from_millis(10),
        Duration::from_millis(100),
    ));
    opts
}

pub(crate) async fn connect(broker: &MockBroker) -> (Client, Events, Peer) {
    let (connected, (peer, _hello)) = tokio::join!(
        within("connect", Client::connect(reconnecting(broker))),
        broker.welcome(30, 0)
    );
    let (client, events) = connected.expect("connect");
    (client, events, peer)
}

pub(crate) async fn next(events: &mut Events) -> Event {
    within("an event", events.next())
        .await
        .expect("the events ended")
}

/// Waits for the client to notice the loss; a hang-up reads as a disconnect or a reset.
pub(crate) async fn disconnected(events: &mut Events) -> CloseReason {
    match next(events).await {
        Event::Disconnected(reason) => reason,
        other => panic!("expected disconnected, got {other:?}"),
    }
}

pub(crate) fn spawn_send(
    client: &Client,
    body: &'static str,
) -> tokio::task::JoinHandle<Result<Sent, ClientError>> {
    let client = client.clone();
    tokio::spawn(async move { client.send("bob", body).await })
}

#[test]
fn backoff_ceilings_double_from_base_and_stop_at_cap() {
    let policy = Reconnect::new(Duration::from_millis(100), Duration::from_secs(1));
    let ceilings: Vec<u64> = (1..=6)
        .map(|attempt| policy.ceiling(attempt).as_millis() as u64)
        .collect();
    assert_eq!(ceilings, [100, 200, 400, 800, 1_000, 1_000]);
    assert_eq!(policy.ceiling(1_000), Duration::from_secs(1));
    let spinning = Reconnect::new(Duration::ZERO, Duration::ZERO);
    assert_eq!(spinning.ceiling(1), Reconnect::MIN_DELAY);
    assert_eq!(
        ClientOptions::new("x:1", "a").reconnect,
        None,
        "off by default"
    );
}
