//! The sending half of a session's UDP path, shared by every `Client` handle once the broker has
//! answered a bind: a datagram is sealed and handed to the socket by the task that sends it, with no
//! hop through the driver task.
//!
//! A datagram after a quiet spell ([`INLINE_GAP`]) leaves at once, in a `sendto` of its own. One
//! that follows closely joins a [`Batch`]: equal-sized datagrams back to back, sent in one `sendmsg`
//! with GSO (`UDP_SEGMENT`, through `quinn_udp`) by the sender itself once the batch is full or the
//! next datagram has another size, else by the path's flusher task ([`UdpSender::flush`]), woken
//! once per batch, which runs as soon as the sending task yields. A flood thus costs one system
//! call per batch (and the broker, with GRO, one buffer per batch), while a lone datagram waits for
//! nothing.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use quinn_udp::{Transmit, UdpSocketState};
use switchboard_proto::datagram::{seal_frame, Direction, DATAGRAM_OVERHEAD, FRAME_ROOM};
use switchboard_proto::{ClientFrame, DatagramKey};
use tokio::net::UdpSocket;
use tokio::sync::Notify;

use super::stats::Counters;

/// A datagram this long after the one before is sent at once; a closer one joins a batch.
const INLINE_GAP: Duration = Duration::from_micros(50);

/// At most this many bytes in one batch: what one UDP datagram (a GSO send) may hold.
const BATCH_BYTES: usize = 65_000;

/// One session's UDP socket (connected to the broker) and what sealing needs.
#[derive(Debug)]
pub(crate) struct UdpSender {
    socket: Arc<UdpSocket>,
    /// What `quinn_udp` learnt of the socket (how many segments a GSO send may carry).
    state: Arc<UdpSocketState>,
    broker: SocketAddr,
    session: u64,
    key: DatagramKey,
    /// The last sequence number used; taken under the batch's lock, so datagrams leave in order.
    sent: AtomicU64,
    /// The broker answered a bind: UDP reaches this client both ways.
    bound: AtomicBool,
    batch: Mutex<Batch>,
    /// Wakes the flusher when a batch has begun.
    pub(super) pending: Notify,
    counters: Arc<Counters>,
}

/// Datagrams sealed but not yet handed to the socket: equal-sized, back to back (the last may be
/// shorter, and then ends the batch).
#[derive(Debug, Default)]
struct Batch {
    bytes: Vec<u8>,
    /// The size of the first, which every other but the last has too.
    segment: usize,
    count: usize,
    /// A shorter one came last: nothing more may join.
    closed: bool,
    /// When the last datagram was sent or queued.
    last: Option<Instant>,
}

impl Batch {
    fn takes(&self, datagram: &[u8], max_segments: usize) -> bool {
        self.count == 0
            || (!self.closed
                && datagram.len() <= self.segment
                && self.count < max_segments
                && self.bytes.len() + datagram.len() <= BATCH_BYTES)
    }

    fn push(&mut self, datagram: &[u8]) {
        if self.count == 0 {
            self.segment = datagram.len();
        }
        self.closed = datagram.len() < self.segment;
        self.bytes.extend_from_slice(datagram);
        self.count += 1;
    }
}

impl UdpSender {
    pub(super) fn new(
        socket: Arc<UdpSocket>,
        state: Arc<UdpSocketState>,
        (broker, session, key): (SocketAddr, u64, DatagramKey),
        counters: Arc<Counters>,
    ) -> Self {
        Self {
            socket,
            state,
            broker,
            session,
            key,
            sent: AtomicU64::new(0),
            bound: AtomicBool::new(false),
            batch: Mutex::default(),
            pending: Notify::new(),
            counters,
        }
    }

    pub(super) fn set_bound(&self) {
        self.bound.store(true, Ordering::Relaxed);
    }

    pub(crate) fn is_bound(&self) -> bool {
        self.bound.load(Ordering::Relaxed)
    }

    /// Seals `frame` (`None`: a bind) under the next sequence number.
    fn seal(&self, frame: Option<&ClientFrame>) -> BytesMut {
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

    fn lock(&self) -> std::sync::MutexGuard<'_, Batch> {
        self.batch.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends a bind: registers (again) the address the broker sends this client's datagrams to.
    /// What waits in the batch leaves first.
    pub(crate) fn bind(&self) {
        let mut batch = self.lock();
        self.send_batch(&mut batch);
        // Lost or refused, the next keepalive tick sends another.
        let _ = self.socket.try_send(&self.seal(None));
    }

    /// Sends a `datagram` frame over UDP, now or in a batch; a socket that will not take it drops
    /// it (counted).
    pub(crate) fn send(&self, frame: &ClientFrame) {
        let mut batch = self.lock();
        let now = Instant::now();
        let quiet = batch.count == 0
            && batch
                .last
                .is_none_or(|last| now.duration_since(last) >= INLINE_GAP);
        batch.last = Some(now);
        let sealed = self.seal(Some(frame));
        if quiet {
            self.counters.sent(self.socket.try_send(&sealed).is_ok(), 1);
            return;
        }
        let max_segments = self.state.max_gso_segments().max(1);
        if !batch.takes(&sealed, max_segments) {
            self.send_batch(&mut batch);
        }
        let began = batch.count == 0;
        batch.push(&sealed);
        if batch.count >= max_segments {
            self.send_batch(&mut batch);
        } else if began {
            self.pending.notify_one();
        }
    }

    /// Hands whatever waits in the batch to the socket (the flusher's job, and a bind's).
    pub(super) fn flush(&self) {
        let mut batch = self.lock();
        self.send_batch(&mut batch);
    }

    fn send_batch(&self, batch: &mut Batch) {
        if batch.count == 0 {
            return;
        }
        let transmit = Transmit {
            destination: self.broker,
            ecn: None,
            contents: &batch.bytes,
            segment_size: (batch.count > 1).then_some(batch.segment),
            src_ip: None,
        };
        let taken = self
            .state
            .try_send(self.socket.as_ref().into(), &transmit)
            .is_ok();
        self.counters.sent(taken, batch.count as u64);
        batch.bytes.clear();
        batch.count = 0;
        batch.closed = false;
    }

    /// Sends a bind, waiting for room in the socket's buffer rather than dropping it; what waits in
    /// the batch leaves first.
    pub(super) async fn send_bind(&self) -> std::io::Result<()> {
        let bind = {
            let mut batch = self.lock();
            self.send_batch(&mut batch);
            self.seal(None)
        };
        self.socket.send(&bind).await.map(|_| ())
    }
}

/// What the handles and the driver share: the current connection's bound UDP path, if any, and the
/// counters.
#[derive(Debug, Default)]
pub(crate) struct UdpShared {
    path: RwLock<Option<Arc<UdpSender>>>,
    pub(crate) counters: Arc<Counters>,
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
        udp.send(frame);
        true
    }

    pub(super) fn set(&self, udp: Option<Arc<UdpSender>>) {
        *self.path.write().unwrap_or_else(PoisonError::into_inner) = udp;
    }
}
