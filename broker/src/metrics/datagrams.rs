//! What the broker counts about datagrams: those it took in and handed on, by way, and those it
//! dropped, by reason. Every series is created up front, so counting is one atomic add.

use prometheus::IntCounter;

use super::Registrar;

/// Why a datagram was dropped: the `reason` label of `switchboard_datagrams_dropped_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// The recipient was not connected.
    Offline,
    /// The recipient's queue was full: its oldest datagram made room.
    RecipientSlow,
    TooLarge,
    InvalidRecipient,
    /// The send rules do not let the sender reach the recipient.
    Forbidden,
    RateLimited,
    /// UDP: not a datagram (too short, unknown direction, sequence 0) or a payload that is no
    /// `datagram` frame.
    Malformed,
    /// UDP: a session number no open connection has.
    UnknownSession,
    /// UDP: the MAC is wrong.
    Forged,
    /// UDP: a sequence number already taken, or older than the window.
    Replayed,
    /// UDP: the kernel would not take the datagram for the recipient (its buffer full).
    SendFailed,
}

const DROPPED: [(Dropped, &str); 11] = [
    (Dropped::Offline, "offline"),
    (Dropped::RecipientSlow, "recipient-slow"),
    (Dropped::TooLarge, "too-large"),
    (Dropped::InvalidRecipient, "invalid-recipient"),
    (Dropped::Forbidden, "forbidden"),
    (Dropped::RateLimited, "rate-limited"),
    (Dropped::Malformed, "malformed"),
    (Dropped::UnknownSession, "unknown-session"),
    (Dropped::Forged, "forged"),
    (Dropped::Replayed, "replayed"),
    (Dropped::SendFailed, "send-failed"),
];

/// Which way a datagram came in or went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Udp,
    Tcp,
}

/// The datagram counters.
pub(crate) struct DatagramCounters {
    received: [IntCounter; 2],
    delivered: [IntCounter; 2],
    dropped: Vec<IntCounter>,
}

impl DatagramCounters {
    pub(super) fn new(r: &Registrar) -> Self {
        let ways = ["udp".to_string(), "tcp".to_string()];
        let pair = |v: Vec<IntCounter>| [v[0].clone(), v[1].clone()];
        let names: Vec<String> = DROPPED.iter().map(|(_, n)| n.to_string()).collect();
        Self {
            received: pair(r.labelled(
                "datagrams_received_total",
                "Datagrams taken in from senders, by way (authenticated, before the checks)",
                "via",
                &ways,
            )),
            delivered: pair(r.labelled(
                "datagrams_delivered_total",
                "Datagrams handed to their recipient's socket, by way",
                "via",
                &ways,
            )),
            dropped: r.labelled(
                "datagrams_dropped_total",
                "Datagrams dropped, by reason",
                "reason",
                &names,
            ),
        }
    }

    pub(crate) fn received(&self, via: Via) {
        self.received[via as usize].inc();
    }

    pub(crate) fn delivered(&self, via: Via) {
        self.delivered[via as usize].inc();
    }

    pub(crate) fn dropped(&self, reason: Dropped) {
        if let Some(i) = DROPPED.iter().position(|(r, _)| *r == reason) {
            self.dropped[i].inc();
        }
    }
}
