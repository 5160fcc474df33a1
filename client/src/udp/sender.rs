//! The sending half of a session's UDP path, shared by every `Client` handle once the broker has
//! answered a bind: a datagram is sealed and handed to the socket by the task that sends it, with no
//! hop through the driver task.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use bytes::BytesMut;
use switchboard_proto::datagram::{seal_frame, Direction, DATAGRAM_OVERHEAD, FRAME_ROOM};
use switchboard_proto::{ClientFrame, DatagramKey};
use tokio::net::UdpSocket;

use super::stats::Counters;

/// One session's UDP socket (connected to the broker) and what sealing needs.
#[derive(Debug)]
pub(crate) struct UdpSender {
    socket: Arc<UdpSocket>,
    session: u64,
    key: DatagramKey,
    /// The last sequence number used. Handles on several threads may seal at once: each takes its
    /// own number, and the broker's replay window takes them in any order within its width.
    sent: AtomicU64,
    /// The broker answered a bind: UDP reaches this client both ways.
    bound: AtomicBool,
}

impl UdpSender {
    pub(super) fn new(socket: Arc<UdpSocket>, session: u64, key: DatagramKey) -> Self {
        Self {
            socket,
            session,
            key,
            sent: AtomicU64::new(0),
            bound: AtomicBool::new(false),
        }
    }

    pub(super) fn set_bound(&self) {
        self.bound.store(true, Ordering::Relaxed);
    }

    pub(crate) fn is_bound(&self) -> bool {
        self.bound.load(Ordering::Relaxed)
    }

    /// Seals `frame` (`None`: a bind) under the next sequence number.
    pub(super) fn seal(&self, frame: Option<&ClientFrame>) -> BytesMut {
        let sequence = self.sent.fetch_add(1, Ordering::Relaxed) + 1;
        let room = match frame {
            Some(ClientFrame::Datagram { to, body }) => FRAME_ROOM + to.len() + body.len(),
            _ => 0,
        };
        let mut out = BytesMut::with_capacity(DATAGRAM_OVERHEAD + room);
        seal_frame(
            &mut out,
            Direction::ToBroker,
            self.session,
            sequence,
            &self.key,
            frame,
        );
        out
    }

    /// Sends a bind: registers (again) the address the broker sends this client's datagrams to.
    pub(crate) fn bind(&self) {
        // Lost or refused, the next keepalive tick sends another.
        let _ = self.socket.try_send(&self.seal(None));
    }

    /// Sends a `datagram` frame over UDP; `false` if the socket would not take it now.
    pub(crate) fn send(&self, frame: &ClientFrame) -> bool {
        self.socket.try_send(&self.seal(Some(frame))).is_ok()
    }

    /// Sends a bind, waiting for room in the socket's buffer rather than dropping it.
    pub(super) async fn send_bind(&self) -> std::io::Result<()> {
        self.socket.send(&self.seal(None)).await.map(|_| ())
    }
}

/// What the handles and the driver share: the current connection's bound UDP path, if any, and the
/// counters.
#[derive(Debug, Default)]
pub(crate) struct UdpShared {
    path: RwLock<Option<Arc<UdpSender>>>,
    pub(crate) counters: Counters,
}

impl UdpShared {
    /// Sends a `datagram` frame over UDP from the calling task if a bound path exists, and says
    /// whether one did; `false` leaves it to the driver (and the TCP connection). A socket that
    /// will not take it now drops it: a flood never spills onto the TCP connection.
    pub(crate) fn send(&self, frame: &ClientFrame) -> bool {
        let path = self.path.read().unwrap_or_else(PoisonError::into_inner);
        let Some(udp) = path.as_ref() else {
            return false;
        };
        self.counters.sent(udp.send(frame));
        true
    }

    pub(super) fn set(&self, udp: Option<Arc<UdpSender>>) {
        *self.path.write().unwrap_or_else(PoisonError::into_inner) = udp;
    }
}
