//! What this client's datagrams did: counted where they leave, arrive or are lost on this side, so
//! a program (and the bench) can tell its own losses from the network's and the broker's.

use std::ops::AddAssign;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// This client's datagram counts since it connected, across reconnects
/// ([`Client::datagram_stats`](crate::Client::datagram_stats)).
///
/// What the broker dropped (offline recipient, rate limit, a full queue) is counted by the broker;
/// what the kernel dropped (a full socket buffer) by neither: sent minus what the recipients
/// received minus these drops and the broker's is that.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DatagramStats {
    /// Sent over UDP.
    pub sent_udp: u64,
    /// Sent as `datagram` frames on the TCP connection (before the bind was answered, or without
    /// UDP).
    pub sent_tcp: u64,
    /// Dropped on sending: while disconnected, or the UDP socket's buffer was full.
    pub send_dropped: u64,
    /// Handed to [`Events`](crate::Events).
    pub received: u64,
    /// Arrived while the program had [`Events`](crate::Events) full: dropped (the newest), so a
    /// slow reader loses datagrams and never stalls its messages.
    pub dropped_slow_reader: u64,
    /// Arrived over UDP but not genuine (MAC, session, replay window) or not readable: dropped.
    pub dropped_invalid: u64,
}

/// Sums the counts of several clients (or of one client's connections).
impl AddAssign for DatagramStats {
    fn add_assign(&mut self, other: Self) {
        self.sent_udp += other.sent_udp;
        self.sent_tcp += other.sent_tcp;
        self.send_dropped += other.send_dropped;
        self.received += other.received;
        self.dropped_slow_reader += other.dropped_slow_reader;
        self.dropped_invalid += other.dropped_invalid;
    }
}

/// The counters behind [`DatagramStats`], shared by the handles, the driver and the UDP reader.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) sent_udp: AtomicU64,
    pub(crate) sent_tcp: AtomicU64,
    pub(crate) send_dropped: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) dropped_slow_reader: AtomicU64,
    pub(crate) dropped_invalid: AtomicU64,
}

impl Counters {
    pub(crate) fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts `count` datagrams handed to the UDP socket, or dropped because it would not take them.
    pub(crate) fn sent(&self, taken: bool, count: u64) {
        let counter = if taken {
            &self.sent_udp
        } else {
            &self.send_dropped
        };
        counter.fetch_add(count, Ordering::Relaxed);
    }

    /// Counts a datagram written to the TCP connection.
    pub(crate) fn sent_on_tcp(&self) {
        Self::count(&self.sent_tcp);
    }

    /// Counts a datagram that came on the TCP connection.
    pub(crate) fn received_on_tcp(&self) {
        Self::count(&self.received);
    }

    pub(crate) fn snapshot(&self) -> DatagramStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DatagramStats {
            sent_udp: get(&self.sent_udp),
            sent_tcp: get(&self.sent_tcp),
            send_dropped: get(&self.send_dropped),
            received: get(&self.received),
            dropped_slow_reader: get(&self.dropped_slow_reader),
            dropped_invalid: get(&self.dropped_invalid),
        }
    }
}
