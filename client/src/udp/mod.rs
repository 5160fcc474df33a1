//! Datagrams over UDP, when the broker offers it in `hi` (PROTOCOL.md, "Datagrams over UDP").
//!
//! A [`UdpPath`] is one UDP socket connected to the broker's datagram port, with the session's number
//! and key. It sends a `bind` at once and again at every keepalive tick (which also keeps a NAT
//! mapping open); once the broker's `bound` answer arrives, its [`UdpSender`] is published in
//! [`UdpShared`] and every `Client` handle seals and sends its datagrams itself, over UDP; until then
//! they go through the driver, over the TCP connection. A task of its own reads the socket, everything
//! ready at once (`quinn_udp`: up to `BATCH_SIZE` datagrams per `recvmmsg`, and a train the broker
//! sent with GSO split at its stride) before it waits again: what arrives is verified (MAC, direction, session, replay window) before it is believed, and goes
//! straight into [`Events`](crate::Events), or is dropped and counted if the program has not read
//! the ones before. Only plain connections use it: over TLS the datagrams stay inside TLS.
//!
//! Closing drains it first ([`UdpPath::drain`]): one more bind, and its answer awaited, so that what
//! was sent over UDP before `close` reaches the broker before the session (and its key) ends.

mod sender;
mod stats;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::io::IoSliceMut;

use bytes::Bytes;
use quinn_udp::{RecvMeta, UdpSocketState, BATCH_SIZE};
use switchboard_proto::datagram::{parse, Direction};
use switchboard_proto::ReplayWindow;
use switchboard_proto::{BrokerFrame, DatagramKey, DecodeFrame};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub(crate) use self::sender::{UdpSender, UdpShared};
use self::stats::Counters;
pub use self::stats::DatagramStats;
use crate::event::{Datagram, Event};

/// Room for the largest datagram a broker may send (a 64 KiB body and what surrounds it), or a GSO
/// train of smaller ones (at most 64 KiB): one buffer of a batch.
const RECEIVE_BUFFER: usize = 70 * 1024;

/// How long closing waits for the broker to answer the last bind ([`UdpPath::drain`]): a lost bind
/// or answer costs a close this much, no more.
const DRAIN_LIMIT: Duration = Duration::from_millis(500);

/// Where `hi` said datagrams may go, kept by the handshake until the driver opens the path.
#[derive(Debug, Clone)]
pub(crate) struct UdpOffer {
    pub(crate) broker: SocketAddr,
    pub(crate) session: u64,
    pub(crate) key: DatagramKey,
}

/// What one UDP datagram from the broker said.
#[derive(Debug, PartialEq, Eq)]
enum Incoming {
    /// The answer to a bind: UDP works both ways.
    Bound,
    Datagram {
        from: String,
        body: Bytes,
    },
    /// Not a genuine datagram of this session, or not one this build reads: dropped.
    Dropped,
}

/// The session's UDP socket: its sender, the task reading it and the one sending its batches.
pub(crate) struct UdpPath {
    pub(crate) sender: Arc<UdpSender>,
    reader: JoinHandle<()>,
    flusher: JoinHandle<()>,
    shared: Arc<UdpShared>,
    /// How many `bound` answers the reader has seen.
    answers: watch::Receiver<u64>,
}

impl UdpPath {
    /// A socket connected to the broker, with the first bind on its way and its reader started.
    /// `None` (and datagrams over TCP) if the socket cannot be opened.
    pub(crate) async fn open(
        offer: UdpOffer,
        buffer: usize,
        shared: Arc<UdpShared>,
        events: mpsc::Sender<Event>,
    ) -> Option<Self> {
        let UdpOffer {
            broker,
            session,
            key,
        } = offer;
        let opened = socket(broker, buffer).and_then(|socket| {
            let state = UdpSocketState::new((&socket).into())?;
            // Fragmentation as with a plain socket (`switchboard_proto::fragments`).
            let ipv4 = broker.is_ipv4();
            if let Err(error) = switchboard_proto::fragments::allow_fragments(&socket, ipv4) {
                tracing::debug!(%error, "cannot allow ip fragmentation on the udp socket");
            }
            Ok((socket, state))
        });
        let (socket, state) = match opened {
            Ok((socket, state)) => (Arc::new(socket), Arc::new(state)),
            Err(error) => {
                tracing::debug!(%error, %broker, "no udp socket to the broker; datagrams go over tcp");
                return None;
            }
        };
        let sender = Arc::new(UdpSender::new(
            socket.clone(),
            state.clone(),
            (broker, session, key.clone()),
            shared.counters.clone(),
        ));
        // Awaited, unlike later binds: a new socket may not be known writable yet, and `try_send`
        // would then drop the first bind.
        if let Err(error) = sender.send_bind().await {
            tracing::debug!(%error, %broker, "cannot send a bind; datagrams go over tcp");
            return None;
        }
        let (answered, answers) = watch::channel(0);
        let reader = Reader {
            socket,
            state,
            session,
            key,
            window: ReplayWindow::default(),
            sender: sender.clone(),
            shared: shared.clone(),
            events,
            answered,
        };
        let flusher = tokio::spawn(flush(sender.clone()));
        Some(Self {
            sender,
            reader: tokio::spawn(reader.run()),
            flusher,
            shared,
            answers,
        })
    }

    /// Sends a bind and waits (at most [`DRAIN_LIMIT`]) for its answer. The broker reads its UDP
    /// socket in order, so once the answer is back every datagram sent before the bind has been
    /// taken, and the session may end without them meeting an ended key. Nothing to wait for
    /// before the first answer: until then datagrams went on the TCP connection, ahead of `bye`.
    pub(crate) async fn drain(&mut self) {
        if !self.sender.is_bound() {
            return;
        }
        let seen = *self.answers.borrow_and_update();
        if self.sender.send_bind().await.is_err() {
            return;
        }
        let answered = self.answers.wait_for(|n| *n > seen);
        if tokio::time::timeout(DRAIN_LIMIT, answered).await.is_err() {
            tracing::debug!("no answer to the closing bind; closing anyway");
        }
    }

    /// Ends the path: the handles stop sending on it, and its reader has stopped once this returns
    /// (so nothing it read can follow the connection's last event).
    pub(crate) async fn stop(mut self) {
        self.shared.set(None);
        self.sender.flush();
        self.flusher.abort();
        self.reader.abort();
        let _ = (&mut self.reader).await;
    }
}

impl Drop for UdpPath {
    fn drop(&mut self) {
        self.flusher.abort();
        self.reader.abort();
    }
}

/// Sends each batch the handles began but did not fill ([`UdpSender`]), once the task that began
/// it yields.
async fn flush(sender: Arc<UdpSender>) {
    loop {
        sender.pending.notified().await;
        sender.flush();
    }
}

/// A UDP socket connected to `broker`, its buffers asked to be `buffer` bytes each (the kernel caps
/// them at `net.core.rmem_max`/`wmem_max`): a burst then waits in the kernel rather than being lost.
fn socket(broker: SocketAddr, buffer: usize) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(broker),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    if let Err(error) = socket
        .set_recv_buffer_size(buffer)
        .and_then(|()| socket.set_send_buffer_size(buffer))
    {
        tracing::debug!(%error, buffer, "cannot size the udp socket's buffers; the kernel's default stays");
    }
    let local: SocketAddr = if broker.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    socket.bind(&local.into())?;
    socket.connect(&broker.into())?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}

/// The task reading the socket.
struct Reader {
    socket: Arc<UdpSocket>,
    /// What `quinn_udp` knows of the socket (GRO on), for batched reads.
    state: Arc<UdpSocketState>,
    session: u64,
    key: DatagramKey,
    window: ReplayWindow,
    sender: Arc<UdpSender>,
    shared: Arc<UdpShared>,
    events: mpsc::Sender<Event>,
    answered: watch::Sender<u64>,
}

impl Reader {
    async fn run(mut self) {
        let mut storage = vec![0u8; RECEIVE_BUFFER * BATCH_SIZE];
        let mut meta = [RecvMeta::default(); BATCH_SIZE];
        let mut bufs: Vec<IoSliceMut<'_>> = storage
            .chunks_mut(RECEIVE_BUFFER)
            .map(IoSliceMut::new)
            .collect();
        loop {
            let (socket, state) = (&self.socket, &self.state);
            let read = socket
                .async_io(Interest::READABLE, || {
                    state.recv(socket.as_ref().into(), &mut bufs, &mut meta)
                })
                .await;
            let count = match read {
                Ok(count) => count,
                Err(error) => {
                    // An ICMP error for an earlier send (the port closed): nothing arrived.
                    tracing::trace!(%error, "udp receive failed");
                    continue;
                }
            };
            for (buf, meta) in bufs.iter().zip(&meta).take(count) {
                // An empty datagram is not genuine, and a split would skip it: counted here.
                if meta.len == 0 && !self.take(&[]) {
                    return;
                }
                for datagram in buf[..meta.len].chunks(meta.stride.max(1)) {
                    if !self.take(datagram) {
                        return;
                    }
                }
            }
        }
    }

    /// One datagram from the socket; `false` once nobody reads events any more.
    fn take(&mut self, datagram: &[u8]) -> bool {
        let incoming = self.verify(datagram);
        let counters = &self.shared.counters;
        match incoming {
            Incoming::Bound => {
                self.answered.send_modify(|n| *n += 1);
                if !self.sender.is_bound() {
                    self.sender.set_bound();
                    self.shared.set(Some(self.sender.clone()));
                }
            }
            Incoming::Datagram { from, body } => {
                match self
                    .events
                    .try_send(Event::Datagram(Datagram { from, body }))
                {
                    Ok(()) => Counters::count(&counters.received),
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        Counters::count(&counters.dropped_slow_reader);
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return false,
                }
            }
            Incoming::Dropped => Counters::count(&counters.dropped_invalid),
        }
        true
    }

    fn verify(&mut self, bytes: &[u8]) -> Incoming {
        let Ok(sealed) = parse(bytes) else {
            return Incoming::Dropped;
        };
        if sealed.direction != Direction::ToClient
            || sealed.session != self.session
            || !sealed.verify(&self.key)
            || !self.window.accept(sealed.sequence)
        {
            return Incoming::Dropped;
        }
        if sealed.payload.is_empty() {
            return Incoming::Bound;
        }
        match BrokerFrame::decode_frame(&Bytes::copy_from_slice(sealed.payload)) {
            Ok(BrokerFrame::Datagram { from, body }) => Incoming::Datagram { from, body },
            _ => Incoming::Dropped,
        }
    }
}
