//! The library against a scripted broker, one connection at a time: the handshake, sends,
//! deliveries and receipts, keepalive, and the ways a connection ends.

#[path = "../support/mod.rs"]
mod support;

mod closing;
mod connecting;
mod receiving;
mod sending;

use support::{within, MockBroker, Peer};
use switchboard_client::{Client, ClientOptions};

pub(crate) async fn connect(
    broker: &MockBroker,
    keepalive_secs: u32,
    pending: u64,
) -> (Client, switchboard_client::Events, Peer) {
    let opts = ClientOptions::new(broker.addr.to_string(), "alice");
    let (connected, (peer, _hello)) = tokio::join!(
        within("connect", Client::connect(opts)),
        broker.welcome(keepalive_secs, pending)
    );
    let (client, events) = connected.expect("connect");
    (client, events, peer)
}
