//! What the broker said when it let this client in: the `Hi` that answers `Hello`.
//!
//! A leaf of the library: the handshake makes one, the driver keeps the latest, the handle shows it,
//! and [`Event::Reconnected`](crate::Event::Reconnected) carries each new one.

use std::time::Duration;

use switchboard_proto::{DEFAULT_MAX_FRAME, DELIVER_OVERHEAD};

/// The largest frame limit a broker accepts in its settings (`limits.max_frame_bytes`, 64 MiB): an
/// announcement above it is taken as this.
const MAX_ANNOUNCED_FRAME: usize = 64 << 20;

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
    /// The broker's UDP datagram port, when it offers one; the library then sends and receives
    /// datagrams over UDP on plain connections once the broker answered its bind.
    pub udp_port: Option<u16>,
}

impl Welcome {
    /// The largest frame to read and write with this broker: the client's own setting if it has one,
    /// else the broker's limit as announced (whatever the broker accepted from a sender, its
    /// `deliver` fits in that). The announcement is capped at the largest limit a broker may be
    /// configured with, so a broker cannot make the client buffer gigabytes.
    pub(crate) fn max_frame(&self, own: Option<usize>) -> usize {
        if let Some(own) = own {
            return own;
        }
        match usize::try_from(self.max_body_bytes) {
            Ok(0) => DEFAULT_MAX_FRAME,
            Ok(body) => body
                .saturating_add(DELIVER_OVERHEAD)
                .min(MAX_ANNOUNCED_FRAME),
            Err(_) => MAX_ANNOUNCED_FRAME,
        }
    }
}
