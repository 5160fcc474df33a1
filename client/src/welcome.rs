//! What the broker said when it let this client in: the `Hi` that answers `Hello`.
//!
//! A leaf of the library: the handshake makes one, the driver keeps the latest, the handle shows it,
//! and [`Event::Reconnected`](crate::Event::Reconnected) carries each new one.

use std::time::Duration;

/// What the broker said in `Hi`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// The agreed keepalive; the client pings when it has sent nothing for half of it.
    pub keepalive: Duration,
    /// This client's address as the broker sees it, `ip:port`.
    pub address: String,
    /// Entries (messages and receipts) waiting in the mailbox at the handshake; they arrive first.
    pub pending: u64,
    /// The largest body the broker accepts in a send (longer ones are rejected `too-large`); 0 from
    /// a broker too old to say.
    pub max_body_bytes: u64,
}
