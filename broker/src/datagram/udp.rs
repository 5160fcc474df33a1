//! The UDP listener: datagrams in, each proven before anything in it is believed.
//!
//! A tokio task on its own arbiter reads each of the port's sockets (`udp.readers`), up to
//! `quinn_udp::BATCH_SIZE` datagrams per `recvmmsg` (a GRO train, datagrams the kernel coalesced,
//! is split at its stride; an empty datagram is one too, and dropped as malformed). For each
//! datagram, in order: its layout (`switchboard_proto::datagram::parse`), the session it names (open
//! now), its MAC under that session's key (constant time), its sequence number (the replay window);
//! only then its payload. A datagram failing any check is dropped without a reply and counted. An
//! authenticated one registers its source address as where the session receives its datagrams; an
//! empty one (`bind`) is answered with an empty one (`bound`), so the client knows UDP reaches it
//! both ways. What a batch sends over UDP leaves together once the batch is read ([`Outbox`]), so a
//! `bound` still follows every datagram its client sent before the bind.

use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use quinn_udp::{RecvMeta, UdpSocketState, BATCH_SIZE};
use switchboard_proto::datagram::{parse, Direction};
use switchboard_proto::{ClientFrame, DecodeFrame};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use super::outbox::allow_fragments;
use super::peer::lock;
use super::{Datagrams, Directory, Outbox};
use crate::metrics::{Dropped, Via};

/// Room for one buffer of a batch: the largest datagram the settings allow, or a GRO train (at most
/// 64 KiB), and then some: a larger datagram is cut by the kernel, fails its MAC and is dropped.
const RECEIVE_BUFFER: usize = 70 * 1024;

/// Reads datagrams until the socket fails or the task is stopped (with its arbiter, at shutdown).
pub(crate) async fn run(socket: UdpSocket, datagrams: Arc<Datagrams>) {
    let state = match UdpSocketState::new((&socket).into()) {
        Ok(state) => state,
        Err(error) => {
            tracing::error!(%error, "cannot set up the udp listener");
            return;
        }
    };
    allow_fragments(&socket);
    let mut storage = vec![0u8; RECEIVE_BUFFER * BATCH_SIZE];
    let mut meta = [RecvMeta::default(); BATCH_SIZE];
    let mut out = Outbox::default();
    let mut bufs: Vec<IoSliceMut<'_>> = storage
        .chunks_mut(RECEIVE_BUFFER)
        .map(IoSliceMut::new)
        .collect();
    loop {
        let read = socket
            .async_io(Interest::READABLE, || {
                state.recv((&socket).into(), &mut bufs, &mut meta)
            })
            .await;
        match read {
            Ok(count) => {
                let directory = datagrams.directory();
                for (buf, meta) in bufs.iter().zip(&meta).take(count) {
                    for datagram in datagrams_in(&buf[..meta.len], meta.stride) {
                        datagrams.on_udp(&directory, datagram, meta.addr, &mut out);
                    }
                }
                drop(directory);
                datagrams.flush(&mut out);
            }
            Err(error) => {
                // ICMP errors for earlier sends surface here on some systems; keep reading.
                tracing::debug!(%error, "udp receive failed");
            }
        }
    }
}

/// The datagrams in one buffer of a batch: a GRO train cut at its stride, or the one datagram
/// (empty ones included, which a plain split would skip).
fn datagrams_in(buf: &[u8], stride: usize) -> impl Iterator<Item = &[u8]> {
    let empty = buf.is_empty().then_some(buf);
    buf.chunks(stride.max(1)).chain(empty)
}

impl Datagrams {
    /// One datagram from `addr`: checked, then a bind or a datagram to route; what it sends over
    /// UDP goes into `out`.
    pub(crate) fn on_udp(
        &self,
        directory: &Directory<'_>,
        bytes: &[u8],
        addr: SocketAddr,
        out: &mut Outbox,
    ) {
        if let Err(reason) = self.take_udp(directory, bytes, addr, out) {
            tracing::trace!(%addr, ?reason, "udp datagram dropped");
            self.dropped(reason);
        }
    }

    fn take_udp(
        &self,
        directory: &Directory<'_>,
        bytes: &[u8],
        addr: SocketAddr,
        out: &mut Outbox,
    ) -> Result<(), Dropped> {
        let sealed = parse(bytes).map_err(|_| Dropped::Malformed)?;
        if sealed.direction != Direction::ToBroker {
            return Err(Dropped::Malformed);
        }
        let peer = directory
            .sessions
            .get(&sealed.session)
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
            self.udp.as_ref().ok_or(Dropped::SendFailed)?;
            out.push(peer.clone(), addr, None);
            return Ok(());
        }
        let payload = Bytes::copy_from_slice(sealed.payload);
        match ClientFrame::decode_frame(&payload) {
            Ok(ClientFrame::Datagram { to, body }) => {
                self.route(&directory.clients, peer, to, body, Via::Udp, out);
                Ok(())
            }
            _ => Err(Dropped::Malformed),
        }
    }
}
