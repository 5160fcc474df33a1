//! The broker's UDP socket (its batched receive and send), and the datagrams sealed for it during one batch.
//!
//! The listener reads up to `quinn_udp::BATCH_SIZE` datagrams with one `recvmmsg`; what they route
//! over UDP waits in an [`Outbox`] and is sealed and sent once the batch is done, not one `sendto`
//! each: grouped by recipient (in order within each), and a run of equal-sized datagrams to one
//! address leaves in one `sendmsg` with GSO (`UDP_SEGMENT`), which the kernel splits into datagrams
//! again (or hands whole to a receiver that asked for GRO). A full socket buffer drops what did not
//! fit, never waits.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use quinn_udp::{Transmit, UdpSocketState};
use switchboard_proto::datagram::{seal_frame, Direction};
use switchboard_proto::BrokerFrame;

use super::peer::{lock, Peer};
use crate::metrics::{Dropped, Metrics, Via};

/// At most this many bytes in one GSO send: what one UDP datagram may hold.
const GSO_BYTES: usize = 65_000;

/// The socket the broker sends datagrams from, with what `quinn_udp` learnt of it (whether GSO
/// works).
pub(crate) struct UdpOut {
    socket: std::net::UdpSocket,
    state: UdpSocketState,
}

impl UdpOut {
    /// Takes `socket` (bound, non-blocking) for sending. `quinn_udp` sets it to refuse IP
    /// fragmentation; the kernel's default (fragment what exceeds the path MTU) is put back, so a
    /// `max_body_bytes` raised above the path MTU behaves as it did with plain `sendto`.
    pub(crate) fn new(socket: std::net::UdpSocket) -> std::io::Result<Self> {
        let state = UdpSocketState::new((&socket).into())?;
        allow_fragments(&socket);
        Ok(Self { socket, state })
    }

    pub(crate) fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Sends `contents` (datagrams of `segment` bytes, the last maybe shorter) to `to`.
    fn send(&self, to: SocketAddr, contents: &[u8], segment: usize) -> std::io::Result<()> {
        let transmit = Transmit {
            destination: to,
            ecn: None,
            contents,
            segment_size: (contents.len() > segment).then_some(segment),
            src_ip: None,
        };
        self.state.try_send((&self.socket).into(), &transmit)
    }
}

/// Puts back the kernel's default IP fragmentation where `quinn_udp` forbade it
/// (`switchboard_proto::fragments`).
pub(super) fn allow_fragments(socket: &(impl std::os::fd::AsRawFd + std::os::fd::AsFd)) {
    let ipv4 = socket2::SockRef::from(socket)
        .local_addr()
        .is_ok_and(|addr| addr.is_ipv4());
    if let Err(error) = switchboard_proto::fragments::allow_fragments(socket, ipv4) {
        tracing::debug!(%error, "cannot allow ip fragmentation on the udp socket");
    }
}

/// A datagram (or a `bound` answer: `None`) waiting for the end of the batch, sealed only then.
struct Pending {
    peer: Arc<Peer>,
    to: SocketAddr,
    frame: Option<BrokerFrame>,
}

/// What a batch sends over UDP, sent together by [`Outbox::flush`].
#[derive(Default)]
pub(crate) struct Outbox {
    pending: Vec<Pending>,
    /// One recipient's datagrams, sealed back to back, so that a GSO run is a slice of it with no
    /// copy; kept between batches.
    sealed: BytesMut,
    /// Where each of them ends in `sealed`.
    ends: Vec<usize>,
}

impl Outbox {
    /// Queues `frame` for `peer` at `to` (`None`: a `bound` answer).
    pub(super) fn push(&mut self, peer: Arc<Peer>, to: SocketAddr, frame: Option<BrokerFrame>) {
        self.pending.push(Pending { peer, to, frame });
    }

    /// Sends everything queued, per recipient in order. A recipient's datagrams are sealed (their
    /// sequence numbers taken) and sent under its lock, so another thread's datagram to it (from a
    /// TCP session) never overtakes them by more than its replay window. What the socket refused is
    /// dropped and counted (`send_failed`).
    pub(crate) fn flush(&mut self, out: &UdpOut, metrics: &Metrics) {
        // Stable: each recipient's datagrams keep their order.
        self.pending.sort_by_key(|p| (p.to, p.peer.session));
        let mut rest = std::mem::take(&mut self.pending);
        let mut at = 0;
        while let Some(first) = rest.get(at) {
            let len = rest[at..]
                .iter()
                .take_while(|p| p.to == first.to && Arc::ptr_eq(&p.peer, &first.peer))
                .count();
            self.send_to_one(out, metrics, &rest[at..at + len]);
            at += len;
        }
        rest.clear();
        self.pending = rest;
    }

    /// Seals and sends the datagrams of `group`, all for one recipient at one address.
    fn send_to_one(&mut self, out: &UdpOut, metrics: &Metrics, group: &[Pending]) {
        let (peer, to) = (&group[0].peer, group[0].to);
        let mut udp = lock(&peer.udp);
        self.sealed.clear();
        self.ends.clear();
        for pending in group {
            udp.sent += 1;
            seal_frame(
                &mut self.sealed,
                Direction::ToClient,
                peer.session,
                udp.sent,
                &peer.key,
                pending.frame.as_ref(),
            );
            self.ends.push(self.sealed.len());
        }
        let max_segments = out.state.max_gso_segments().max(1);
        let mut at = 0;
        while at < group.len() {
            let taken = gso_run(&self.ends, at, max_segments);
            let start = start_of(&self.ends, at);
            let segment = self.ends[at] - start;
            let sent = out.send(to, &self.sealed[start..self.ends[at + taken - 1]], segment);
            if let Err(error) = &sent {
                tracing::debug!(%error, addr = %to, datagrams = taken, "cannot send datagrams");
            }
            for pending in &group[at..at + taken] {
                match sent {
                    Ok(()) if pending.frame.is_some() => metrics.datagrams.delivered(Via::Udp),
                    Ok(()) => {}
                    Err(_) => metrics.datagrams.dropped(Dropped::SendFailed),
                }
            }
            at += taken;
        }
    }
}

/// Where datagram `i` starts, of those that end at `ends`.
fn start_of(ends: &[usize], i: usize) -> usize {
    i.checked_sub(1).map_or(0, |before| ends[before])
}

/// How many datagrams from the `at`-th (at least one) go in one GSO send: equal-sized, the last
/// maybe shorter. `ends[i]` is where datagram `i` ends.
fn gso_run(ends: &[usize], at: usize, max_segments: usize) -> usize {
    let len = |i: usize| ends[i] - start_of(ends, i);
    let segment = len(at);
    let mut taken = 1;
    let mut bytes = segment;
    while at + taken < ends.len() {
        let next = len(at + taken);
        if next > segment || taken >= max_segments || bytes + next > GSO_BYTES {
            break;
        }
        bytes += next;
        taken += 1;
        if next < segment {
            break;
        }
    }
    taken
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::time::Duration;

    use bytes::Bytes;
    use switchboard_proto::datagram::parse;
    use switchboard_proto::{ClientId, DatagramKey, DecodeFrame};

    use super::*;
    use crate::auth::Grant;

    fn recipient(name: &str, session: u64) -> (Arc<Peer>, UdpSocket) {
        let id = ClientId::new(name.to_string()).unwrap();
        let key = DatagramKey::new([session as u8; 32]);
        let peer = Peer::new(id, session, session, key, Grant::default(), (0, 8));
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        (Arc::new(peer), socket)
    }

    fn datagram(len: usize) -> Option<BrokerFrame> {
        Some(BrokerFrame::Datagram {
            from: "alice".into(),
            body: Bytes::from(vec![len as u8; len]),
        })
    }

    /// What `socket` received: each datagram's sequence number and body length (0 for `bound`),
    /// after its MAC is checked under `peer`'s key.
    fn received(peer: &Peer, socket: &UdpSocket, count: usize) -> Vec<(u64, usize)> {
        let mut buf = [0u8; 2048];
        (0..count)
            .map(|_| {
                let len = socket.recv(&mut buf).expect("a datagram within 5 s");
                let sealed = parse(&buf[..len]).expect("a datagram's layout");
                assert!(sealed.verify(&peer.key), "sealed under the recipient's key");
                assert_eq!(sealed.session, peer.session);
                if sealed.payload.is_empty() {
                    return (sealed.sequence, 0);
                }
                match BrokerFrame::decode_frame(&Bytes::copy_from_slice(sealed.payload)) {
                    Ok(BrokerFrame::Datagram { body, .. }) => (sealed.sequence, body.len()),
                    other => panic!("expected a datagram frame, got {other:?}"),
                }
            })
            .collect()
    }

    #[test]
    fn a_batch_reaches_each_recipient_whole_in_order_and_numbered_in_order() {
        let sending = UdpSocket::bind("127.0.0.1:0").unwrap();
        sending.set_nonblocking(true).unwrap();
        let out = UdpOut::new(sending).unwrap();
        let (bob, bob_socket) = recipient("bob", 1);
        let (carol, carol_socket) = recipient("carol", 2);
        let (to_bob, to_carol) = (
            bob_socket.local_addr().unwrap(),
            carol_socket.local_addr().unwrap(),
        );
        let mut outbox = Outbox::default();
        // Bob's interleaved with Carol's: equal sizes (one GSO run), a shorter one ending it, then
        // longer ones starting the next; Carol's begin with a `bound` answer.
        let bobs = [100, 100, 100, 60, 300, 300];
        for (i, &len) in bobs.iter().enumerate() {
            outbox.push(bob.clone(), to_bob, datagram(len));
            if i % 2 == 0 {
                let frame = if i == 0 { None } else { datagram(50) };
                outbox.push(carol.clone(), to_carol, frame);
            }
        }
        outbox.flush(&out, &Metrics::new());

        let expected: Vec<(u64, usize)> = (1..).zip(bobs).collect();
        assert_eq!(received(&bob, &bob_socket, bobs.len()), expected);
        assert_eq!(
            received(&carol, &carol_socket, 3),
            vec![(1, 0), (2, 50), (3, 50)]
        );
    }
}
