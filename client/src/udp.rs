//! Datagrams over UDP, when the broker offers it in `hi` (PROTOCOL.md, "Datagrams over UDP").
//!
//! A [`UdpPath`] is one UDP socket connected to the broker's datagram port, with the session's number
//! and key. It sends a `bind` at once and again at every keepalive tick (which also keeps a NAT
//! mapping open); once the broker's `bound` answer arrives, datagrams go out over UDP, and until then
//! over the TCP connection. What arrives is verified (MAC, direction, session, replay window) before
//! it is believed. Only plain connections use it: over TLS the datagrams stay inside TLS.

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use switchboard_proto::datagram::{parse, seal, Direction, DATAGRAM_OVERHEAD};
use switchboard_proto::ReplayWindow;
use switchboard_proto::{BrokerFrame, ClientFrame, DatagramKey, DecodeFrame, EncodeFrame};
use tokio::net::UdpSocket;

/// Room for the largest datagram a broker may send (a 64 KiB body and what surrounds it).
const RECEIVE_BUFFER: usize = 70 * 1024;

/// What one UDP datagram from the broker said.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// The answer to a bind: UDP works both ways.
    Bound,
    Datagram {
        from: String,
        body: Bytes,
    },
    /// Not a genuine datagram of this session, or not one this build reads: dropped.
    Dropped,
}

/// The session's UDP socket and what it knows.
pub(crate) struct UdpPath {
    socket: UdpSocket,
    session: u64,
    key: DatagramKey,
    sent: u64,
    window: ReplayWindow,
    /// The broker answered a bind: datagrams may go out over UDP.
    pub(crate) bound: bool,
    buf: Vec<u8>,
}

impl UdpPath {
    /// A socket connected to `broker`, with the first bind on its way. `None` (and datagrams over
    /// TCP) if the socket cannot be opened.
    pub(crate) async fn open(broker: SocketAddr, session: u64, key: DatagramKey) -> Option<Self> {
        let local: SocketAddr = if broker.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = match UdpSocket::bind(local).await {
            Ok(socket) => socket,
            Err(error) => {
                tracing::debug!(%error, "no udp socket; datagrams go over tcp");
                return None;
            }
        };
        if let Err(error) = socket.connect(broker).await {
            tracing::debug!(%error, %broker, "cannot reach the udp port; datagrams go over tcp");
            return None;
        }
        let mut path = Self {
            socket,
            session,
            key,
            sent: 0,
            window: ReplayWindow::default(),
            bound: false,
            buf: vec![0; RECEIVE_BUFFER],
        };
        // Awaited, unlike later binds: a new socket may not be known writable yet, and `try_send`
        // would then drop the first bind.
        let bind = path.seal(&[]);
        if let Err(error) = path.socket.send(&bind).await {
            tracing::debug!(%error, %broker, "cannot send a bind; datagrams go over tcp");
            return None;
        }
        Some(path)
    }

    /// Sends a bind: registers (again) the address the broker sends this client's datagrams to.
    pub(crate) fn bind(&mut self) {
        let datagram = self.seal(&[]);
        // Lost or refused, the next keepalive tick sends another.
        let _ = self.socket.try_send(&datagram);
    }

    /// Sends a `datagram` frame over UDP; `false` if it did not go (the caller sends it over TCP).
    pub(crate) fn send(&mut self, frame: &ClientFrame) -> bool {
        let mut payload = BytesMut::new();
        frame.encode_map(&mut payload);
        let datagram = self.seal(&payload);
        self.socket.try_send(&datagram).is_ok()
    }

    fn seal(&mut self, payload: &[u8]) -> Vec<u8> {
        self.sent += 1;
        let mut out = Vec::with_capacity(payload.len() + DATAGRAM_OVERHEAD);
        let (session, sequence) = (self.session, self.sent);
        seal(
            &mut out,
            Direction::ToBroker,
            session,
            sequence,
            &self.key,
            payload,
        );
        out
    }

    /// The next datagram from the broker, verified.
    pub(crate) async fn recv(&mut self) -> Incoming {
        let len = match self.socket.recv(&mut self.buf).await {
            Ok(len) => len,
            Err(error) => {
                // An ICMP error for an earlier send (the port closed): nothing arrived.
                tracing::trace!(%error, "udp receive failed");
                return Incoming::Dropped;
            }
        };
        let incoming = self.verify(len);
        if incoming == Incoming::Bound {
            self.bound = true;
        }
        incoming
    }

    fn verify(&mut self, len: usize) -> Incoming {
        let Ok(sealed) = parse(&self.buf[..len]) else {
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

/// The next datagram on `udp`, or never when there is no UDP path.
pub(crate) async fn next(udp: &mut Option<UdpPath>) -> Incoming {
    match udp {
        Some(udp) => udp.recv().await,
        None => std::future::pending().await,
    }
}
