//! The UDP listener: datagrams in, each proven before anything in it is believed.
//!
//! One tokio task on its own arbiter reads the socket. For each datagram, in order: its layout
//! (`switchboard_proto::datagram::parse`), the session it names (open now), its MAC under that
//! session's key (constant time), its sequence number (the replay window); only then its payload.
//! A datagram failing any check is dropped without a reply and counted. An authenticated one
//! registers its source address as where the session receives its datagrams; an empty one (`bind`)
//! is answered with an empty one (`bound`), so the client knows UDP reaches it both ways.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use switchboard_proto::datagram::{parse, Direction};
use switchboard_proto::{ClientFrame, DecodeFrame};
use tokio::net::UdpSocket;

use super::peer::lock;
use super::Datagrams;
use crate::metrics::{Dropped, Via};

/// Enough for the largest datagram the settings allow, and then some: a larger one is cut by the
/// kernel, fails its MAC and is dropped.
const RECEIVE_BUFFER: usize = 70 * 1024;

/// Reads datagrams until the socket fails or the task is stopped (with its arbiter, at shutdown).
pub(crate) async fn run(socket: UdpSocket, datagrams: Arc<Datagrams>) {
    let mut buf = vec![0u8; RECEIVE_BUFFER];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((len, from)) => datagrams.on_udp(&buf[..len], from),
            Err(error) => {
                // ICMP errors for earlier sends surface here on some systems; keep reading.
                tracing::debug!(%error, "udp receive failed");
            }
        }
    }
}

impl Datagrams {
    /// One datagram from `addr`: checked, then a bind or a datagram to route.
    pub(crate) fn on_udp(&self, bytes: &[u8], addr: SocketAddr) {
        if let Err(reason) = self.take_udp(bytes, addr) {
            tracing::trace!(%addr, ?reason, "udp datagram dropped");
            self.dropped(reason);
        }
    }

    fn take_udp(&self, bytes: &[u8], addr: SocketAddr) -> Result<(), Dropped> {
        let sealed = parse(bytes).map_err(|_| Dropped::Malformed)?;
        if sealed.direction != Direction::ToBroker {
            return Err(Dropped::Malformed);
        }
        let peer = self
            .session(sealed.session)
            .ok_or(Dropped::UnknownSession)?;
        if !sealed.verify(&peer.key) {
            return Err(Dropped::Forged);
        }
        {
            let mut udp = lock(&peer.udp);
            if !udp.window.accept(sealed.sequence) {
                return Err(Dropped::Replayed);
            }
            udp.addr = Some(addr);
        }
        if sealed.payload.is_empty() {
            let socket = self.udp.as_ref().ok_or(Dropped::SendFailed)?;
            return self.send_udp(socket, &peer, addr, None);
        }
        let payload = Bytes::copy_from_slice(sealed.payload);
        match ClientFrame::decode_frame(&payload) {
            Ok(ClientFrame::Datagram { to, body }) => {
                self.route(&peer, to, body, Via::Udp);
                Ok(())
            }
            _ => Err(Dropped::Malformed),
        }
    }
}
