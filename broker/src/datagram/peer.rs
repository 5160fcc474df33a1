//! One connected client as the datagram path sees it: its session number and key, what it may send,
//! where it listens over UDP, and the small queue of datagrams on their way to its TCP connection.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Instant;

use bytes::Bytes;
use switchboard_proto::{ClientId, DatagramKey, ReplayWindow};
use tokio::sync::Notify;

use crate::auth::Grant;
use crate::rate::TokenBucket;

/// Queued datagrams' room an empty queue keeps, so a steady trickle does not allocate per datagram.
const KEPT_WHEN_EMPTY: usize = 4;

/// A datagram waiting for its recipient's session to write it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Queued {
    pub from: String,
    pub body: Bytes,
}

/// What the UDP side knows of a session; behind one lock, taken once per datagram.
#[derive(Debug, Default)]
pub(super) struct UdpState {
    /// Where the client's last authenticated datagram came from; datagrams go there once set.
    pub addr: Option<SocketAddr>,
    /// The sequence numbers taken from the client.
    pub window: ReplayWindow,
    /// The last sequence number the broker used towards the client.
    pub sent: u64,
}

/// A connected client, shared by its session, every sender's route to it and the UDP listener.
pub(crate) struct Peer {
    pub(crate) client: ClientId,
    pub(super) conn_id: u64,
    pub(crate) session: u64,
    pub(crate) key: DatagramKey,
    pub(super) grant: Grant,
    pub(super) rate: Mutex<TokenBucket>,
    /// `datagrams.max_per_sec` is 0: no bucket to take from (nor a clock to read) per datagram.
    unlimited: bool,
    pub(super) udp: Mutex<UdpState>,
    inbox: Mutex<VecDeque<Queued>>,
    capacity: usize,
    /// Wakes the session when its inbox gains a datagram.
    pub(crate) wake: Notify,
}

impl Peer {
    pub(super) fn new(
        client: ClientId,
        conn_id: u64,
        session: u64,
        key: DatagramKey,
        grant: Grant,
        (rate, capacity): (u64, usize),
    ) -> Self {
        Self {
            client,
            conn_id,
            session,
            key,
            grant,
            rate: Mutex::new(TokenBucket::new(rate, Instant::now())),
            unlimited: rate == 0,
            udp: Mutex::new(UdpState::default()),
            // Nothing reserved: most sessions never get a datagram over TCP, and 16 queued ones
            // reserved up front were 896 bytes of every idle connection (BENCHMARKS.md, idle).
            inbox: Mutex::new(VecDeque::new()),
            capacity,
            wake: Notify::new(),
        }
    }

    /// Queues a datagram for the TCP connection; a full queue loses its oldest. Says whether one was
    /// lost.
    pub(super) fn queue(&self, datagram: Queued) -> bool {
        let lost = {
            let mut inbox = lock(&self.inbox);
            let lost = inbox.len() >= self.capacity && inbox.pop_front().is_some();
            inbox.push_back(datagram);
            lost
        };
        self.wake.notify_one();
        lost
    }

    /// The oldest queued datagram, for the session to write. Once the queue is empty it gives back
    /// what a burst made it reserve beyond [`KEPT_WHEN_EMPTY`], so a connection that is idle again
    /// costs what it did before.
    pub(crate) fn next_queued(&self) -> Option<Queued> {
        let mut inbox = lock(&self.inbox);
        let next = inbox.pop_front();
        if next.is_none() && inbox.capacity() > KEPT_WHEN_EMPTY {
            inbox.shrink_to(KEPT_WHEN_EMPTY);
        }
        next
    }

    /// Whether a datagram still waits (the session tries again later).
    pub(crate) fn has_queued(&self) -> bool {
        !lock(&self.inbox).is_empty()
    }

    /// Takes one token of this sender's datagram rate.
    pub(super) fn take_rate(&self) -> bool {
        self.unlimited || lock(&self.rate).take(Instant::now())
    }
}

/// A lock whose holder cannot leave its data half-changed (every critical section here is a few
/// field updates), so a poisoned one is taken as it is.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(capacity: usize) -> Peer {
        let id = ClientId::new("bob".to_string()).unwrap();
        let key = DatagramKey::new([1; 32]);
        Peer::new(id, 1, 1, key, Grant::default(), (0, capacity))
    }

    fn datagram(n: u8) -> Queued {
        Queued {
            from: "alice".into(),
            body: Bytes::from(vec![n]),
        }
    }

    #[test]
    fn a_full_queue_loses_its_oldest_datagram() {
        let bob = peer(2);
        assert!(!bob.queue(datagram(1)));
        assert!(!bob.queue(datagram(2)));
        assert!(bob.queue(datagram(3)), "the first one made room");
        assert_eq!(bob.next_queued(), Some(datagram(2)));
        assert_eq!(bob.next_queued(), Some(datagram(3)));
        assert!(!bob.has_queued());
    }

    #[test]
    fn an_idle_queue_holds_no_room_and_gives_back_what_a_burst_took() {
        let bob = peer(64);
        assert_eq!(lock(&bob.inbox).capacity(), 0, "nothing reserved up front");
        for n in 0..64 {
            bob.queue(datagram(n));
        }
        assert!(lock(&bob.inbox).capacity() >= 64);
        while bob.next_queued().is_some() {}
        assert!(lock(&bob.inbox).capacity() <= KEPT_WHEN_EMPTY);
    }
}
